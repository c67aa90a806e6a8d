//! Properties of inspect and rewrite over every message we have: the golden inputs (which
//! include every file of the shared corpus), the committed fuzz corpora, and deterministic
//! mutations of them (a poor man's fuzzer that runs in the normal test suite; the real fuzz
//! targets live in `fuzz/`).

use std::fs;
use std::path::{Path, PathBuf};

use markgate::fuzzing::rewrite::{
    check_roundtrip, default_request, fuzz_inspect, fuzz_rewrite_roundtrip, untouched_parts,
};
use markgate::inspect::mime::{self, PartRole};
use markgate::rewrite::{DisclaimerOutcome, SignedAction};

fn inputs() -> Vec<(PathBuf, Vec<u8>)> {
    read_inputs(&[
        "tests/rewrite",
        "fuzz/corpus/inspect",
        "fuzz/corpus/rewrite",
    ])
}

/// The golden inputs only (every shared-corpus file plus our own cases): the mutation seeds.
fn golden_inputs() -> Vec<(PathBuf, Vec<u8>)> {
    read_inputs(&["tests/rewrite"])
}

fn read_inputs(dirs: &[&str]) -> Vec<(PathBuf, Vec<u8>)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut out = Vec::new();
    for dir in dirs {
        let Ok(entries) = fs::read_dir(root.join(dir)) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            let file = if p.is_dir() { p.join("in.eml") } else { p };
            if let Ok(b) = fs::read(&file) {
                out.push((file, b));
            }
        }
    }
    out.sort();
    assert!(out.len() >= 40, "inputs found: {}", out.len());
    out
}

#[test]
fn fuzz_corpora_replay() {
    for (path, raw) in inputs() {
        let result = std::panic::catch_unwind(|| {
            fuzz_inspect(&raw);
            fuzz_rewrite_roundtrip(&raw);
        });
        assert!(result.is_ok(), "{} broke a property", path.display());
    }
}

#[test]
fn every_input_round_trips() {
    for (path, raw) in golden_inputs() {
        fuzz_inspect(&raw);
        for action in [SignedAction::Skip, SignedAction::Wrap, SignedAction::Reject] {
            let mut req = default_request();
            if let Some(d) = &mut req.disclaimer {
                d.signed_action = action;
            }
            if let Err(e) = check_roundtrip(&raw, &|_| req.clone()) {
                panic!("{}: {action:?}: {e}", path.display());
            }
        }
    }
}

#[test]
fn attachments_are_byte_identical_in_the_mixed_corpus_message() {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/rewrite/corpus-mixed-attachments/in.eml");
    let raw = fs::read(path).expect("corpus copy");
    let rt = check_roundtrip(&raw, &|_| default_request()).expect("round trip");
    let before = untouched_parts(&raw, &rt.shape);
    assert_eq!(before.len(), 2, "PDF and CSV");
    let out_shape = mime::analyze(&rt.output, None);
    let after = untouched_parts(&rt.output, &out_shape);
    assert_eq!(before, after);
    // The PDF decodes to the same bytes too (not just the same base64).
    let pdf = out_shape
        .parts
        .iter()
        .find(|p| p.content_type == "application/pdf")
        .expect("pdf part");
    assert_eq!(pdf.role, PartRole::Attachment);
    assert!(
        rt.plan
            .disclaimer
            .iter()
            .all(|o| matches!(o, DisclaimerOutcome::Added { .. }))
    );
}

#[test]
fn disclaimer_found_in_quoted_reply_is_not_added_again() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/rewrite/corpus-reply-with-quoted-disclaimer/in.eml");
    let raw = fs::read(path).expect("corpus copy");
    let shape = mime::analyze(&raw, Some(markgate::fuzzing::rewrite::GPMS_DISCLAIMER));
    assert_eq!(shape.disclaimer_present, Some(true));
    let rt = check_roundtrip(&raw, &|_| default_request()).expect("round trip");
    assert!(rt.plan.body.is_none());
}

/// xorshift64*: deterministic, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }
}

const TOKENS: &[&[u8]] = &[
    b"\r\n",
    b"\n",
    b"--",
    b"=",
    b"=\r\n",
    b"</body>",
    b"<body>",
    b"Content-Type: multipart/mixed; boundary=\"x\"\r\n",
    b"Content-Transfer-Encoding: base64\r\n",
    b"Content-Transfer-Encoding: quoted-printable\r\n",
    b"charset=iso-8859-1",
    b"charset=utf-16",
    b"\xff\xfe",
    b"\xc3\xa9",
    b"=?UTF-8?Q?=C3=A9?=",
    b"-----BEGIN PGP MESSAGE-----\r\n",
    b"Content-Type: message/rfc822\r\n\r\n",
    b"Subject: RE: RESTRICTED: x\r\n",
];

fn mutate(rng: &mut Rng, input: &[u8]) -> Vec<u8> {
    let mut v = input.to_vec();
    for _ in 0..=rng.below(4) {
        let at = rng.below(v.len() + 1);
        match rng.below(5) {
            0 if !v.is_empty() => {
                let i = rng.below(v.len());
                v[i] = (rng.next() & 0xff) as u8;
            }
            1 if !v.is_empty() => {
                let end = (at + rng.below(64)).min(v.len());
                v.drain(at..end);
            }
            2 if !v.is_empty() => {
                let start = rng.below(v.len());
                let end = (start + rng.below(128)).min(v.len());
                let chunk = v[start..end].to_vec();
                v.splice(at..at, chunk);
            }
            _ => {
                let t = TOKENS[rng.below(TOKENS.len())];
                v.splice(at..at, t.iter().copied());
            }
        }
    }
    v
}

#[test]
fn mutated_inputs_keep_the_properties() {
    // MARKGATE_MUTATIONS=N runs N mutations per input (default 60, quick enough for CI).
    let rounds: usize = std::env::var("MARKGATE_MUTATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(60);
    let seed: u64 = std::env::var("MARKGATE_MUTATION_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0x9E37_79B9_7F4A_7C15);
    let mut rng = Rng(seed);
    let inputs = golden_inputs();
    for (path, raw) in &inputs {
        for round in 0..rounds {
            let m = mutate(&mut rng, raw);
            let result = std::panic::catch_unwind(|| {
                fuzz_inspect(&m);
                fuzz_rewrite_roundtrip(&m);
            });
            if result.is_err() {
                let dump = std::env::temp_dir().join("markgate-rewrite-mutation.eml");
                let _ = fs::write(&dump, &m);
                panic!(
                    "mutation {round} of {} broke a property; input written to {}",
                    path.display(),
                    dump.display()
                );
            }
        }
    }
}
