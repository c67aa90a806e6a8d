//! Golden folders for `rewrite`: each `tests/rewrite/<case>/` holds `in.eml`, `request.toml`,
//! `expected.eml` (the exact output of `apply`) and `plan.txt` (the milter operations and
//! outcomes). On a mismatch the test writes `actual.eml` / `actual-plan.txt` beside them and
//! fails naming the file. `MARKGATE_BLESS=1` writes the expected files instead.
//!
//! Every case also goes through the round-trip properties in `markgate::fuzzing::rewrite`
//! (output parses, non-text parts byte-identical, disclaimer once, apply twice == apply once).

use std::fmt::Write as _;
use std::fs;
use std::ops::Range;
use std::path::{Path, PathBuf};

use markgate::fuzzing::rewrite::{GPMS_DISCLAIMER, check_roundtrip};
use markgate::rewrite::{
    DisclaimerEdit, EditPlan, HeaderOp, LabelHeader, Placement, RewriteRequest, SignedAction,
    SubjectEdit, SubjectPosition,
};
use serde::Deserialize;

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RequestFile {
    label: Option<HeaderFile>,
    #[serde(default)]
    strip: Vec<String>,
    subject: Option<SubjectFile>,
    disclaimer: Option<DisclaimerFile>,
    #[serde(default)]
    extra: Vec<HeaderFile>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HeaderFile {
    name: String,
    value: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SubjectFile {
    marking: String,
    position: String,
    /// Byte ranges into the decoded subject, as `[start, end]` pairs.
    #[serde(default)]
    existing: Vec<[usize; 2]>,
    /// Instead of byte ranges: substrings of the decoded subject that are markings.
    #[serde(default)]
    existing_text: Vec<String>,
    #[serde(default)]
    on_signed: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DisclaimerFile {
    text: Option<String>,
    html: Option<String>,
    #[serde(default)]
    placement: Option<String>,
    #[serde(default)]
    marker: String,
    #[serde(default)]
    signed: Option<String>,
}

fn to_request(f: RequestFile, decoded_subject: &str) -> RewriteRequest {
    RewriteRequest {
        label_header: f.label.map(|h| LabelHeader {
            name: h.name,
            value: h.value,
        }),
        strip_headers: f.strip,
        subject: f.subject.map(|s| {
            let mut existing: Vec<Range<usize>> = s.existing.iter().map(|[a, b]| *a..*b).collect();
            for t in &s.existing_text {
                let mut from = 0;
                while let Some(i) = decoded_subject[from..].find(t.as_str()) {
                    existing.push(from + i..from + i + t.len());
                    from += i + t.len();
                }
            }
            SubjectEdit {
                marking: s.marking,
                position: match s.position.as_str() {
                    "prefix" => SubjectPosition::Prefix,
                    "bracketed" => SubjectPosition::Bracketed,
                    "suffix" => SubjectPosition::Suffix,
                    other => panic!("unknown subject position {other}"),
                },
                existing,
                on_signed: s.on_signed,
            }
        }),
        disclaimer: f.disclaimer.map(|d| DisclaimerEdit {
            text: d.text.unwrap_or_else(|| GPMS_DISCLAIMER.to_string()),
            html: d.html,
            placement: match d.placement.as_deref().unwrap_or("append") {
                "append" => Placement::Append,
                "prepend" => Placement::Prepend,
                other => panic!("unknown placement {other}"),
            },
            marker: d.marker,
            signed_action: match d.signed.as_deref().unwrap_or("skip") {
                "skip" => SignedAction::Skip,
                "wrap" => SignedAction::Wrap,
                "reject" => SignedAction::Reject,
                other => panic!("unknown signed action {other}"),
            },
        }),
        extra_headers: f
            .extra
            .into_iter()
            .map(|h| LabelHeader {
                name: h.name,
                value: h.value,
            })
            .collect(),
    }
}

/// The first Subject of `raw`, decoded the way rewrite decodes it.
fn decoded_subject(raw: &[u8]) -> String {
    let shape = markgate::inspect::mime::analyze(raw, None);
    let headers = markgate::rewrite::headers_from_raw(raw, shape.body_offset);
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(b"Subject"))
        .map(|(_, v)| markgate::rewrite::decode_subject(v))
        .unwrap_or_default()
}

fn describe(plan: &EditPlan) -> String {
    let mut s = String::new();
    for op in &plan.header_ops {
        let _ = match op {
            HeaderOp::Add { name, value } => {
                writeln!(s, "addheader {name}: {:?}", String::from_utf8_lossy(value))
            }
            HeaderOp::Insert { index, name, value } => writeln!(
                s,
                "insheader {index} {name}: {:?}",
                String::from_utf8_lossy(value)
            ),
            HeaderOp::Change { index, name, value } => writeln!(
                s,
                "chgheader {index} {name}: {:?}",
                String::from_utf8_lossy(value)
            ),
            HeaderOp::Delete { index, name } => writeln!(s, "chgheader {index} {name}: (delete)"),
        };
    }
    let _ = writeln!(
        s,
        "replbody: {}",
        match &plan.body {
            Some(b) => format!("{} bytes", b.len()),
            None => "no".into(),
        }
    );
    let _ = writeln!(s, "must_reject: {:?}", plan.must_reject);
    let _ = writeln!(s, "subject: {:?}", plan.subject);
    for o in &plan.disclaimer {
        let _ = writeln!(s, "disclaimer: {o:?}");
    }
    s
}

fn compare(
    dir: &Path,
    expected: &str,
    actual_name: &str,
    actual: &[u8],
    failures: &mut Vec<String>,
) {
    let path = dir.join(expected);
    if std::env::var_os("MARKGATE_BLESS").is_some() {
        fs::write(&path, actual).expect("write expected file");
        return;
    }
    let actual_path = dir.join(actual_name);
    match fs::read(&path) {
        Ok(want) if want == actual => {
            let _ = fs::remove_file(&actual_path);
        }
        Ok(_) => {
            fs::write(&actual_path, actual).expect("write actual file");
            failures.push(format!(
                "{} differs; see {}",
                path.display(),
                actual_path.display()
            ));
        }
        Err(_) => {
            fs::write(&actual_path, actual).expect("write actual file");
            failures.push(format!(
                "{} is missing; output written to {}",
                path.display(),
                actual_path.display()
            ));
        }
    }
}

fn case_dirs() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/rewrite");
    let mut dirs: Vec<PathBuf> = fs::read_dir(&root)
        .expect("tests/rewrite exists")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.join("in.eml").is_file())
        .collect();
    dirs.sort();
    dirs
}

#[test]
fn golden_cases() {
    let dirs = case_dirs();
    assert!(
        dirs.len() >= 20,
        "expected the golden cases, found {}",
        dirs.len()
    );
    let mut failures = Vec::new();
    for dir in &dirs {
        let raw = fs::read(dir.join("in.eml")).expect("read in.eml");
        let text = fs::read_to_string(dir.join("request.toml")).unwrap_or_default();
        let file: RequestFile = toml::from_str(&text)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.join("request.toml").display()));
        let request_for = |m: &[u8]| {
            let file: RequestFile = toml::from_str(&text).expect("parsed once already");
            to_request(file, &decoded_subject(m))
        };
        drop(file);
        match check_roundtrip(&raw, &request_for) {
            Ok(rt) => {
                compare(dir, "expected.eml", "actual.eml", &rt.output, &mut failures);
                compare(
                    dir,
                    "plan.txt",
                    "actual-plan.txt",
                    describe(&rt.plan).as_bytes(),
                    &mut failures,
                );
            }
            Err(e) => failures.push(format!("{}: {e}", dir.display())),
        }
    }
    assert!(
        failures.is_empty(),
        "golden failures:\n{}",
        failures.join("\n")
    );
}
