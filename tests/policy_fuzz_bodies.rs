//! A deterministic mutation run over the policy fuzz bodies, seeded from their committed corpora
//! (a cheap stand-in for the long cargo-fuzz runs, so every `cargo test` shakes the parsers; the
//! corpora themselves replay in `tests/fuzz_replay.rs`).

use std::path::PathBuf;

use markgate::fuzzing::policy as bodies;

fn corpus(name: &str) -> Vec<Vec<u8>> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(name);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("corpus dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    files.sort();
    files
        .iter()
        .map(|p| std::fs::read(p).expect("readable seed"))
        .collect()
}

/// xorshift: deterministic, no dependency.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

const TOKENS: &[&str] = &[
    "SEC=",
    "CAVEAT=",
    "ACCESS=",
    "EXPIRES=",
    "DOWNTO=",
    "NOTE=",
    "ORIGIN=",
    "VER=",
    "NS=",
    ",",
    ", ",
    "\\",
    "\\,",
    "[",
    "]",
    ":",
    " - ",
    "-",
    " ",
    "\n ",
    "OFFICIAL",
    "OFFICIAL:Sensitive",
    "PROTECTED",
    "TOP-SECRET",
    "SH:",
    "RI:",
    "REL/",
    "REL ",
    "AUS",
    "PROTECT",
    "PERSONAL",
    "RESTRICTED",
    "NOT PROTECTIVELY MARKED",
    "OFFICIAL-SENSITIVE",
    "RECIPIENTS ONLY",
    "UK ",
    "RE: ",
    "FW:",
    "é",
    "\u{0}",
    "2024-01-01",
    "a@b.gov.au",
    "=?UTF-8?B?UkU6?=",
];

fn mutate(rng: &mut Rng, seed: &[u8]) -> Vec<u8> {
    let mut v = seed.to_vec();
    for _ in 0..1 + rng.below(4) {
        let at = rng.below(v.len() + 1);
        match rng.below(4) {
            0 => {
                let t = TOKENS[rng.below(TOKENS.len())].as_bytes();
                v.splice(at..at, t.iter().copied());
            }
            1 if !v.is_empty() => {
                let end = (at + rng.below(8)).min(v.len());
                v.drain(at.min(end)..end);
            }
            2 => v.insert(at, (rng.next() & 0xff) as u8),
            _ => {
                let t = TOKENS[rng.below(TOKENS.len())].as_bytes();
                v.extend_from_slice(t);
            }
        }
    }
    v
}

#[test]
fn deterministic_mutations() {
    let mut labels = corpus("label_uk_gpms");
    labels.extend(corpus("label_au_epms"));
    labels.extend(corpus("markings"));
    let policies = corpus("policy_toml");
    // MARKGATE_FUZZ_SCALE=N multiplies the rounds for a longer local shake.
    let scale: usize = std::env::var("MARKGATE_FUZZ_SCALE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1);
    let seed = std::env::var("MARKGATE_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed_1234_abcd_0001);
    let mut rng = Rng(seed | 1);
    for _ in 0..4000 * scale {
        let seed = &labels[rng.below(labels.len())];
        let input = mutate(&mut rng, seed);
        bodies::label_uk_gpms(&input);
        bodies::label_uk_gsc(&input);
        bodies::label_au_epms(&input);
    }
    for _ in 0..300 * scale {
        let seed = &policies[rng.below(policies.len())];
        let input = mutate(&mut rng, seed);
        bodies::policy_toml(&input);
    }
}
