//! Replays every committed fuzz input (`fuzz/corpus/<target>/` and
//! `fuzz/regressions/<target>/`) through its target body, so the corpora and the crash
//! reproducers run as ordinary tests without cargo-fuzz or a nightly toolchain.
//!
//! Other areas extend [`TARGETS`] with a row per fuzz target they add.

use std::path::Path;

/// A fuzz target body.
type Body = fn(&[u8]);

/// (target name as in `fuzz/Cargo.toml`, its body).
const TARGETS: &[(&str, Body)] = &[
    ("frame", markgate::fuzzing::milter::frame),
    ("session", markgate::fuzzing::milter::session),
    ("policy_toml", markgate::fuzzing::policy::policy_toml),
    ("label_uk_gpms", markgate::fuzzing::policy::label_uk_gpms),
    ("label_uk_gsc", markgate::fuzzing::policy::label_uk_gsc),
    ("label_au_epms", markgate::fuzzing::policy::label_au_epms),
    ("markings", markgate::fuzzing::policy::markings_and_decide),
    ("inspect", markgate::fuzzing::rewrite::fuzz_inspect),
    (
        "rewrite",
        markgate::fuzzing::rewrite::fuzz_rewrite_roundtrip,
    ),
    ("large", markgate::fuzzing::large::fuzz_large),
    ("vendor_purview", markgate::fuzzing::vendor::vendor_purview),
    ("vendor_titus", markgate::fuzzing::vendor::vendor_titus),
    (
        "vendor_boldon_james",
        markgate::fuzzing::vendor::vendor_boldon_james,
    ),
    (
        "vendor_janusseal",
        markgate::fuzzing::vendor::vendor_janusseal,
    ),
    ("evidence", markgate::fuzzing::evidence::evidence_trail),
    ("thread_refs", markgate::fuzzing::thread::thread_refs),
];

fn inputs(dir: &Path) -> Vec<std::path::PathBuf> {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<_> = rd
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
}

#[test]
fn replay_corpora_and_regressions() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    for (name, body) in TARGETS {
        let mut ran = 0;
        for kind in ["corpus", "regressions"] {
            for file in inputs(&root.join(kind).join(name)) {
                let data = std::fs::read(&file).unwrap();
                let result = std::panic::catch_unwind(|| body(&data));
                assert!(result.is_ok(), "{name}: {} panicked", file.display());
                ran += 1;
            }
        }
        assert!(ran > 0, "no corpus files for fuzz target {name}");
        println!("{name}: replayed {ran} inputs");
    }
}
