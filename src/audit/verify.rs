//! `markgate audit verify`: check the hash chain of one or more audit files.
//!
//! Files are given oldest first (`FILE.2 FILE.1 FILE`) and checked as one chain: every record's
//! `seq` must be the previous one plus one and its `prev` the SHA-256 of the previous line's
//! exact bytes (see [`super::record`] and `docs/audit-format.md`). The report names the first
//! problem, and every later one, with file and line: an edited record (its hash no longer
//! matches the next record's `prev`), a missing record (a `seq` gap), records out of order, a
//! line that is not a record, and a truncated final line. An incomplete line that the writer
//! documented at its next start (an `audit_chain_resumed` record naming the fragment's hash) is
//! a *warning*, not a failure: the chain around it is intact and it was never acknowledged.
//!
//! Exit status for the CLI: [`VerifyReport::exit_code`] is 0 when there is no problem
//! (warnings allowed) and 1 otherwise, including a file that cannot be read.
//!
//! What a hash chain cannot show on its own: removing records from the *end* of the newest
//! file, or editing the newest record. The report therefore prints the last `seq` and hash, to
//! compare with the copy forwarded to syslog (each datagram carries `seq` and `hash`). This
//! module only reads.

use std::collections::HashSet;
use std::fmt;
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::record::{GENESIS_PREV, hex};

/// At most this many problems are listed (the first one is what matters).
pub const MAX_PROBLEMS: usize = 1000;

/// What is wrong at a place in the chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProblemKind {
    /// The file could not be opened or read.
    Unreadable,
    /// A complete line that is not an audit record.
    Malformed,
    /// The final line of a file is incomplete (no newline, or cut mid-record).
    Truncated,
    /// A record's content no longer matches the next record's `prev`: it was edited.
    Edited,
    /// One or more `seq` values are missing: records were deleted.
    Missing,
    /// A record appears out of `seq` order (moved or duplicated), or files are out of order.
    Reordered,
    /// A chain that claims to start (`seq` 1) does not start from the genesis hash.
    BadStart,
    /// Warning only: an incomplete line from a crash, documented by the following
    /// `audit_chain_resumed` record.
    RecoveredTruncation,
}

/// One finding, located.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Problem {
    /// What.
    pub kind: ProblemKind,
    /// The file.
    pub file: PathBuf,
    /// 1-based line number in that file (0 for a whole-file problem).
    pub line: u64,
    /// The `seq` concerned, when known.
    pub seq: Option<u64>,
    /// For people.
    pub detail: String,
}

/// Per-file figures.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileSummary {
    /// The file.
    pub path: PathBuf,
    /// Lines read.
    pub lines: u64,
    /// Valid records.
    pub records: u64,
    /// First and last `seq` in the file.
    pub first_seq: Option<u64>,
    /// Last `seq` in the file.
    pub last_seq: Option<u64>,
}

/// The outcome of a verification.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerifyReport {
    /// Files in the order checked.
    pub files: Vec<FileSummary>,
    /// Valid records across all files.
    pub records: u64,
    /// `seq` of the first record checked.
    pub first_seq: Option<u64>,
    /// `seq` of the last record checked.
    pub last_seq: Option<u64>,
    /// Hash of the last record's line: compare with the syslog copy or an external anchor.
    pub last_hash: Option<String>,
    /// Whether the chain starts at its genesis (`seq` 1); otherwise older files were not given.
    pub starts_at_genesis: bool,
    /// Problems, first first. Empty means the chain is intact.
    pub problems: Vec<Problem>,
    /// Findings that do not break the chain (documented crash recovery).
    pub warnings: Vec<Problem>,
}

impl VerifyReport {
    /// Whether the chain is intact.
    pub fn ok(&self) -> bool {
        self.problems.is_empty()
    }

    /// The CLI's exit status: 0 intact, 1 any problem.
    pub fn exit_code(&self) -> i32 {
        if self.ok() { 0 } else { 1 }
    }

    /// The first problem, if any.
    pub fn first_problem(&self) -> Option<&Problem> {
        self.problems.first()
    }

    fn problem(
        &mut self,
        kind: ProblemKind,
        file: &Path,
        line: u64,
        seq: Option<u64>,
        detail: String,
    ) {
        let p = Problem {
            kind,
            file: file.to_path_buf(),
            line,
            seq,
            detail,
        };
        if kind == ProblemKind::RecoveredTruncation {
            self.warnings.push(p);
        } else if self.problems.len() < MAX_PROBLEMS {
            self.problems.push(p);
        }
    }
}

/// The fields verification reads from a line; anything else in the record is covered by the
/// hash but not interpreted, so newer record kinds verify too.
#[derive(Deserialize)]
struct Link {
    seq: u64,
    prev: String,
    #[serde(default)]
    event: Option<String>,
    #[serde(default)]
    data: Option<LinkData>,
}

#[derive(Deserialize, Default)]
struct LinkData {
    #[serde(default)]
    fragment_sha256: Option<String>,
    #[serde(default)]
    resumed_after_seq: Option<u64>,
}

/// A line that is not a record (malformed or an incomplete tail), waiting to see whether the
/// next record documents it.
struct Orphan {
    file: PathBuf,
    line: u64,
    hash: String,
    truncated: bool,
}

struct Prev {
    seq: u64,
    hash: String,
    file: PathBuf,
    line: u64,
}

/// Verify the chain across `paths`, given oldest first.
pub fn verify_files<P: AsRef<Path>>(paths: &[P]) -> VerifyReport {
    let mut report = VerifyReport::default();
    let mut prev: Option<Prev> = None;
    let mut orphans: Vec<Orphan> = Vec::new();
    // Every seq seen, to tell "moved" from "deleted" when a gap appears.
    let all_seqs = collect_seqs(paths);
    let mut seen: HashSet<u64> = HashSet::new();

    for path in paths {
        let path = path.as_ref();
        let mut summary = FileSummary {
            path: path.to_path_buf(),
            lines: 0,
            records: 0,
            first_seq: None,
            last_seq: None,
        };
        let file = match File::open(path) {
            Ok(f) => f,
            Err(e) => {
                report.problem(
                    ProblemKind::Unreadable,
                    path,
                    0,
                    None,
                    format!("cannot open: {e}"),
                );
                report.files.push(summary);
                continue;
            }
        };
        let mut reader = BufReader::new(file);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match reader.read_until(b'\n', &mut buf) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) => {
                    report.problem(
                        ProblemKind::Unreadable,
                        path,
                        summary.lines + 1,
                        None,
                        format!("read error: {e}"),
                    );
                    break;
                }
            }
            let complete = buf.last() == Some(&b'\n');
            if !complete {
                // Zeros a preallocating writer keeps ahead of the data (`[audit] preallocate`)
                // are unused space, not a record: skip them, and do not count them in a torn
                // record either.
                let data = buf.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
                if data == 0 {
                    break;
                }
                buf.truncate(data);
            }
            summary.lines += 1;
            let lineno = summary.lines;
            let bytes = if complete {
                &buf[..buf.len() - 1]
            } else {
                &buf[..]
            };
            let hash = hex(&Sha256::digest(bytes));
            let link: Option<Link> = if complete {
                serde_json::from_slice(bytes).ok()
            } else {
                None
            };
            let Some(mut link) = link else {
                orphans.push(Orphan {
                    file: path.to_path_buf(),
                    line: lineno,
                    hash,
                    truncated: !complete,
                });
                continue;
            };

            // Lines before this record that are not records: documented crash fragments or damage.
            let resumed = link.event.as_deref() == Some("audit_chain_resumed");
            let data = link.data.take().unwrap_or_default();
            let orphan_count = orphans.len();
            for o in orphans.drain(..) {
                let documented = resumed
                    && orphan_count == 1
                    && data.fragment_sha256.as_deref() == Some(o.hash.as_str())
                    && data.resumed_after_seq == prev.as_ref().map(|p| p.seq);
                if documented {
                    report.problem(
                        ProblemKind::RecoveredTruncation,
                        &o.file,
                        o.line,
                        None,
                        format!(
                            "incomplete record from a crash, kept as found; the chain resumes at \
                             seq {} ({}:{})",
                            link.seq,
                            path.display(),
                            lineno
                        ),
                    );
                } else if o.truncated {
                    report.problem(
                        ProblemKind::Truncated,
                        &o.file,
                        o.line,
                        None,
                        "the final line is incomplete (truncated file or a crash mid-write) and \
                         no audit_chain_resumed record documents it"
                            .into(),
                    );
                } else {
                    report.problem(
                        ProblemKind::Malformed,
                        &o.file,
                        o.line,
                        None,
                        "line is not an audit record (edited or corrupted)".into(),
                    );
                }
            }

            match &prev {
                None => {
                    report.first_seq = Some(link.seq);
                    report.starts_at_genesis = link.seq == 1;
                    if link.seq == 1 && link.prev != GENESIS_PREV {
                        report.problem(
                            ProblemKind::BadStart,
                            path,
                            lineno,
                            Some(1),
                            "seq 1 does not start from the genesis hash (64 zeros)".into(),
                        );
                    }
                }
                Some(p) => check_link(
                    &mut report,
                    p,
                    &link,
                    path,
                    lineno,
                    orphan_count,
                    &all_seqs,
                    &seen,
                ),
            }
            seen.insert(link.seq);
            summary.records += 1;
            summary.first_seq.get_or_insert(link.seq);
            summary.last_seq = Some(link.seq);
            report.records += 1;
            report.last_seq = Some(link.seq);
            report.last_hash = Some(hash.clone());
            prev = Some(Prev {
                seq: link.seq,
                hash,
                file: path.to_path_buf(),
                line: lineno,
            });
        }
        report.files.push(summary);
    }
    for o in orphans {
        let (kind, detail) = if o.truncated {
            (
                ProblemKind::Truncated,
                "the final line is incomplete (a crash mid-write, or the file was cut); the \
                 writer documents it with an audit_chain_resumed record at its next start",
            )
        } else {
            (
                ProblemKind::Malformed,
                "line is not an audit record (edited or corrupted)",
            )
        };
        report.problem(kind, &o.file, o.line, None, detail.into());
    }
    report
}

#[allow(clippy::too_many_arguments)]
fn check_link(
    report: &mut VerifyReport,
    p: &Prev,
    link: &Link,
    path: &Path,
    lineno: u64,
    orphans_before: usize,
    all_seqs: &HashSet<u64>,
    seen: &HashSet<u64>,
) {
    let here = format!("{}:{}", path.display(), lineno);
    let there = format!("{}:{}", p.file.display(), p.line);
    if link.seq == p.seq + 1 {
        if link.prev != p.hash {
            report.problem(
                ProblemKind::Edited,
                &p.file,
                p.line,
                Some(p.seq),
                format!(
                    "record seq {} at {there} does not hash to the prev of seq {} at {here}: \
                     one of them was edited",
                    p.seq, link.seq
                ),
            );
        }
    } else if link.seq > p.seq + 1 {
        // A malformed line in between already explains one missing record.
        if orphans_before > 0 && link.seq == p.seq + 1 + orphans_before as u64 {
            return;
        }
        let first_missing = p.seq + 1;
        let last_missing = link.seq - 1;
        let moved = (first_missing..=last_missing.min(first_missing + 10_000))
            .any(|s| all_seqs.contains(&s) && !seen.contains(&s));
        let (kind, what) = if moved {
            (
                ProblemKind::Reordered,
                "appear later in the chain: records were moved",
            )
        } else {
            (
                ProblemKind::Missing,
                "are missing: records were deleted (or a file was left out)",
            )
        };
        let range = if first_missing == last_missing {
            format!("seq {first_missing}")
        } else {
            format!("seq {first_missing}..={last_missing}")
        };
        report.problem(
            kind,
            path,
            lineno,
            Some(link.seq),
            format!(
                "between {there} (seq {}) and {here} (seq {}), {range} {what}",
                p.seq, link.seq
            ),
        );
    } else {
        let hint = if path != p.file {
            " (files must be given oldest first: FILE.2 FILE.1 FILE)"
        } else {
            ""
        };
        report.problem(
            ProblemKind::Reordered,
            path,
            lineno,
            Some(link.seq),
            format!(
                "seq {} at {here} comes after seq {} at {there}: out of order or duplicated{hint}",
                link.seq, p.seq
            ),
        );
    }
}

fn collect_seqs<P: AsRef<Path>>(paths: &[P]) -> HashSet<u64> {
    #[derive(Deserialize)]
    struct Seq {
        seq: u64,
    }
    let mut out = HashSet::new();
    for path in paths {
        let Ok(f) = File::open(path.as_ref()) else {
            continue;
        };
        let mut reader = BufReader::new(f);
        let mut buf = Vec::new();
        while let Ok(n) = reader.read_until(b'\n', &mut buf) {
            if n == 0 {
                break;
            }
            if let Ok(s) = serde_json::from_slice::<Seq>(&buf) {
                out.insert(s.seq);
            }
            buf.clear();
        }
    }
    out
}

impl fmt::Display for VerifyReport {
    /// The report for people, as `markgate audit verify` prints it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for s in &self.files {
            match (s.first_seq, s.last_seq) {
                (Some(a), Some(b)) => writeln!(
                    f,
                    "{}: {} records, seq {a}..={b} ({} lines)",
                    s.path.display(),
                    s.records,
                    s.lines
                )?,
                _ => writeln!(f, "{}: no records ({} lines)", s.path.display(), s.lines)?,
            }
        }
        if let (Some(a), Some(b)) = (self.first_seq, self.last_seq) {
            let start = if self.starts_at_genesis {
                "from the genesis"
            } else {
                "older records are in files not given"
            };
            writeln!(
                f,
                "chain: {} records, seq {a}..={b} ({start})",
                self.records
            )?;
        }
        if let Some(h) = &self.last_hash {
            writeln!(
                f,
                "last hash: {h} (compare with the syslog copy of seq {})",
                self.last_seq.unwrap_or(0)
            )?;
        }
        for w in &self.warnings {
            writeln!(f, "warning: {}:{}: {}", w.file.display(), w.line, w.detail)?;
        }
        if self.problems.is_empty() {
            writeln!(f, "OK: the chain is intact")
        } else {
            if let Some(p) = self.problems.first() {
                writeln!(
                    f,
                    "FAILED: first problem at {}:{}: {}",
                    p.file.display(),
                    p.line,
                    p.detail
                )?;
            }
            for p in self.problems.iter().skip(1) {
                writeln!(f, "  also {}:{}: {}", p.file.display(), p.line, p.detail)?;
            }
            if self.problems.len() >= MAX_PROBLEMS {
                writeln!(f, "  (only the first {MAX_PROBLEMS} problems are listed)")?;
            }
            Ok(())
        }
    }
}
