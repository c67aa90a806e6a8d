//! The manual pages in packaging/man/ stay in step with what they document:
//! markgate(8) with the CLI definition, markgate.toml(5) with every key of
//! config/markgate.toml, markgate-policy(5) with docs/markgate-policy.5.md.

use std::path::Path;
use std::process::Command;

fn repo(path: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

#[test]
fn markgate_8_is_the_page_the_cli_generates() {
    let committed = std::fs::read(repo("packaging/man/markgate.8")).expect("read markgate.8");
    let generated = markgate::cli::manpage().expect("render");
    assert!(
        committed == generated,
        "packaging/man/markgate.8 is out of date with the CLI; regenerate it with\n  \
         cargo run -q -- manpage > packaging/man/markgate.8"
    );
    let text = String::from_utf8(generated).expect("utf-8 roff");
    assert!(
        text.starts_with(".ie \\n(.g .ds Aq") || text.contains(".TH markgate 8"),
        "{text}"
    );
    assert!(text.contains(".SS \"markgate run\""));
    assert!(text.contains("SIGHUP"));
}

/// Every key shown in the documented example config (commented or not), and every section,
/// appears in markgate.toml(5) as a bold term.
#[test]
fn markgate_toml_5_documents_every_key_of_the_example_config() {
    let example = std::fs::read_to_string(repo("config/markgate.toml")).expect("example");
    let page = std::fs::read_to_string(repo("packaging/man/markgate.toml.5")).expect("page");
    let mut missing = Vec::new();
    let mut checked = 0;
    for line in example.lines() {
        let l = line.trim_start_matches('#').trim();
        if let Some(section) = l.strip_prefix('[').and_then(|r| r.strip_suffix(']')) {
            checked += 1;
            if !page.contains(&format!(".SH [{section}]")) {
                missing.push(format!("[{section}]"));
            }
            continue;
        }
        // `key = value` with a plain key (prose lines have spaces before the `=`).
        let Some((key, _)) = l.split_once(" = ") else {
            continue;
        };
        if key.is_empty() || !key.chars().all(|c| c.is_ascii_lowercase() || c == '_') {
            continue;
        }
        checked += 1;
        if !page.contains(&format!(".B {key}\n")) && !page.contains(&format!(".BR {key} ")) {
            missing.push(key.to_string());
        }
    }
    assert!(
        checked >= 15,
        "only {checked} keys found in the example; parser broken?"
    );
    assert!(missing.is_empty(), "not in markgate.toml(5): {missing:?}");
}

#[test]
fn markgate_policy_5_is_converted_from_the_markdown_reference() {
    let page =
        std::fs::read_to_string(repo("packaging/man/markgate-policy.5")).expect("policy page");
    assert!(page.contains(".TH MARKGATE-POLICY 5"));
    let md = std::fs::read_to_string(repo("docs/markgate-policy.5.md")).expect("markdown");
    // Every second-level heading of the markdown is a section of the page.
    for heading in md.lines().filter_map(|l| l.strip_prefix("## ")) {
        assert!(
            page.contains(&format!(".SH {}", heading.trim())),
            "section {heading:?} missing: run packaging/man/policy-page.sh"
        );
    }
    // With the converter at hand, the committed page must be exactly its output.
    if Command::new("go-md2man").arg("--help").output().is_err() {
        eprintln!(
            "go-md2man not installed (apt-get install go-md2man): compared section headings only"
        );
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    for d in ["packaging/man", "docs"] {
        std::fs::create_dir_all(dir.path().join(d)).expect("mkdir");
    }
    for f in [
        "Cargo.toml",
        "docs/markgate-policy.5.md",
        "packaging/man/policy-page.sh",
    ] {
        std::fs::copy(repo(f), dir.path().join(f)).expect("copy");
    }
    let status = Command::new("sh")
        .arg(dir.path().join("packaging/man/policy-page.sh"))
        .status()
        .expect("run policy-page.sh");
    assert!(status.success());
    let fresh = std::fs::read_to_string(dir.path().join("packaging/man/markgate-policy.5"))
        .expect("fresh page");
    assert!(
        fresh == page,
        "packaging/man/markgate-policy.5 is out of date: run packaging/man/policy-page.sh"
    );
}
