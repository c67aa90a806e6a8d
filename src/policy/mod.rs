//! The classification policy: the TOML language security officers write, its loader, the label
//! grammars, and `decide()`.
//!
//! Loading is three stages: [`raw`] reads TOML into a tree where every key and value keeps its
//! byte span; [`compile`] validates it (collecting every problem, each with file, line, column,
//! what was found and what was expected) and builds the immutable [`Policy`] (levels resolved,
//! regexes compiled, domains in lookup maps); nothing later can fail on the policy's account.
//! [`decide()`] is a pure function of the policy, the message [`Facts`] (from `inspect`) and the
//! [`Envelope`]. [`render`] formats decisions for `markgate policy test`.
//!
//! Must not: do I/O (except [`Policy::from_file`], [`Policy::from_file_text`] and
//! [`check_file`], the one clearly separated place that reads the policy file and the fragments
//! it includes), log, or touch the message. The language is documented key by key
//! in `docs/markgate-policy.5.md`; the shipped policies are in `policies/`.

pub mod agreement;
mod compile;
pub mod controls;
pub mod decide;
pub mod domains;
pub mod error;
pub mod expiry;
pub mod facts;
mod include;
pub mod labels;
pub mod model;
pub mod notice;
pub mod origin;
mod raw;
pub mod release;
pub mod render;
pub mod routes;
pub mod thread;
pub mod vendor;

use std::path::Path;

pub use controls::{Control, ControlMap};
pub use decide::{Decision, Direction, decide, decide_in_thread};
pub use error::{LoadErrors, Problem, Severity};
pub use facts::{
    Envelope, Facts, ForwardEvidence, ForwardHit, FoundMarking, Label, MarkingSource,
    MarkingStatus, NextHop,
};
pub use model::*;

/// The built-in default policy's text (UK GPMS / GCSX CoCo 4.1), used when no policy is
/// configured.
pub const BUILTIN_POLICY: &str = include_str!("../../policies/uk-gpms.toml");
/// Its name in messages.
pub const BUILTIN_NAME: &str = "<built-in uk-gpms>";

impl Policy {
    /// Load a policy from text. `name` (usually the file path) is used in error messages.
    /// Text given this way has no directory to resolve fragments against, so an `include` in
    /// it is reported as an error; use [`Policy::from_file`].
    pub fn from_str(name: &str, text: &str) -> Result<Policy, LoadErrors> {
        compile::compile(name, text, None, &mut |_: &Path| {
            Err(
                "this policy was given as text, not as a file, so it cannot include fragments"
                    .to_owned(),
            )
        })
    }

    /// Load the policy file `path` whose text has already been read (the reload reads the
    /// bytes once), reading the fragments it includes from the disk now.
    pub fn from_file_text(path: &Path, text: &str) -> Result<Policy, LoadErrors> {
        let identity = std::fs::canonicalize(path)
            .ok()
            .map(|p| p.display().to_string());
        compile::compile(
            &path.display().to_string(),
            text,
            identity,
            &mut read_fragment,
        )
    }

    /// Read and load a policy file (and the fragments it includes).
    pub fn from_file(path: &Path) -> Result<Policy, LoadErrors> {
        let name = path.display().to_string();
        match std::fs::read(path) {
            Ok(bytes) => match String::from_utf8(bytes) {
                Ok(text) => Policy::from_file_text(path, &text),
                Err(e) => {
                    let src = error::SourceText::new(&name, &String::from_utf8_lossy(e.as_bytes()));
                    let at = e.utf8_error().valid_up_to();
                    Err(LoadErrors {
                        problems: vec![src.problem(
                            at..at,
                            "",
                            "bytes that are not UTF-8".into(),
                            "a UTF-8 text file".into(),
                        )],
                    })
                }
            },
            Err(e) => Err(LoadErrors {
                problems: vec![Problem {
                    severity: Severity::Error,
                    file: name,
                    line: 0,
                    column: 0,
                    key: String::new(),
                    found: format!("a file that cannot be read ({e})"),
                    expected: "a readable policy file".into(),
                    included_from: Vec::new(),
                }],
            }),
        }
    }

    /// The built-in default (`policies/uk-gpms.toml`, compiled into the binary).
    pub fn builtin() -> Result<Policy, LoadErrors> {
        Policy::from_str(BUILTIN_NAME, BUILTIN_POLICY)
    }
}

/// Read one fragment for `include`: its canonical path (so a cycle through a symlink or a
/// `..` is still one file) and its text.
fn read_fragment(path: &Path) -> Result<(String, String), String> {
    let identity = std::fs::canonicalize(path).map_err(|e| e.to_string())?;
    let bytes = std::fs::read(&identity).map_err(|e| e.to_string())?;
    let text = String::from_utf8(bytes).map_err(|e| {
        format!(
            "not UTF-8 text: the byte at offset {} is not",
            e.utf8_error().valid_up_to()
        )
    })?;
    Ok((identity.display().to_string(), text))
}

/// The result of checking a policy for `markgate check`: every problem, formatted for people.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CheckReport {
    /// The file checked.
    pub file: String,
    /// The fragments it includes, in load order (when it loads).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub fragments: Vec<String>,
    /// Every error and warning, in file order.
    pub problems: Vec<Problem>,
}

impl CheckReport {
    /// True when the policy loads (warnings allowed): `markgate check` exits 0.
    pub fn ok(&self) -> bool {
        !self.problems.iter().any(|p| p.severity == Severity::Error)
    }

    /// One `file:line:col: error: key: found …, expected …` line per problem, then a summary.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for p in &self.problems {
            out.push_str(&p.to_string());
            out.push('\n');
        }
        let errors = self
            .problems
            .iter()
            .filter(|p| p.severity == Severity::Error)
            .count();
        let warnings = self.problems.len() - errors;
        if errors == 0 {
            let fragments = if self.fragments.is_empty() {
                String::new()
            } else {
                format!("; fragments read: {}", self.fragments.join(", "))
            };
            out.push_str(&format!(
                "{}: policy OK ({warnings} warning(s)){fragments}\n",
                self.file
            ));
        } else {
            out.push_str(&format!(
                "{}: {errors} error(s), {warnings} warning(s)\n",
                self.file
            ));
        }
        out
    }
}

/// Check a policy file (the I/O entry point for `markgate check --policy FILE`). The daemon
/// config is checked by `config::`; the CLI combines both reports.
pub fn check_file(path: &Path) -> CheckReport {
    report(path.display().to_string(), Policy::from_file(path))
}

/// Check policy text (for tests and the built-in default).
pub fn check_str(name: &str, text: &str) -> CheckReport {
    report(name.to_owned(), Policy::from_str(name, text))
}

fn report(file: String, result: Result<Policy, LoadErrors>) -> CheckReport {
    let (problems, fragments) = match result {
        Ok(p) => (p.warnings, p.fragments),
        Err(e) => (e.problems, Vec::new()),
    };
    CheckReport {
        file,
        fragments,
        problems,
    }
}
