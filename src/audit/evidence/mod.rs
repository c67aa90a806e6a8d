//! `markgate audit report --evidence`: compliance evidence for an assessor, from audit files.
//!
//! Owns the evidence report: it verifies the hash chain first ([`super::verify`]), then streams
//! the JSON-lines files once, aggregating as it reads (never holding the records), into an
//! [`Evidence`] value that renders as HTML with inline SVG charts ([`html`], [`svg`]), as
//! Markdown ([`md`]) or as JSON (serde). Decisions are mapped to controls through the rule →
//! control map each `policy_loaded` record carries for its policy digest (the policy's
//! `controls` keys, see [`crate::policy::controls`]); a policy given with `--policy` adds its
//! own map. Incidents are derived from the decisions that raise them (blocked auto-forwards,
//! above-ceiling mail, forged labels) and matched with the `alert_delivered` records that name
//! them, so the incident → alert time and the CoCo-11 24-hour bound come from the trail alone.
//!
//! Must not: write anything but its output, decide anything about mail, or trust a broken
//! chain silently (the verification result is the first thing every format shows).

mod cells;
pub mod collect;
pub mod html;
pub mod md;
pub mod svg;

use std::path::Path;

use serde::Serialize;
use time::OffsetDateTime;

use super::verify::{VerifyReport, verify_files};
use crate::policy::ControlMap;

pub use collect::Collector;

/// The 24-hour bound of SIA CoCo-11 (incident reporting), in seconds.
pub const INCIDENT_BOUND_SECS: f64 = 24.0 * 3600.0;
/// How many rules and senders the "top" charts show.
pub const TOP_N: usize = 10;
/// At most this many problems of a broken chain are listed (the first is what matters).
pub const MAX_CHAIN_PROBLEMS: usize = 20;

/// Output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// A self-contained page: inline CSS and SVG, no script, nothing fetched.
    Html,
    /// Markdown tables (charts as tables).
    Md,
    /// The [`Evidence`] value as JSON.
    Json,
}

impl Format {
    /// `html`, `md` (or `markdown`), `json`.
    pub fn from_name(s: &str) -> Option<Format> {
        match s {
            "html" => Some(Format::Html),
            "md" | "markdown" => Some(Format::Md),
            "json" => Some(Format::Json),
            _ => None,
        }
    }
}

/// A policy known besides the trail's `policy_loaded` records (`--policy`).
#[derive(Debug, Clone, Default)]
pub struct KnownPolicy {
    /// Its digest, as decisions cite it.
    pub digest: String,
    /// `policy.name`.
    pub name: Option<String>,
    /// `policy.version`.
    pub version: Option<String>,
    /// Rule id → control ids.
    pub controls: ControlMap,
}

/// The chain verification, as the report shows it.
#[derive(Debug, Clone, Serialize)]
pub struct ChainResult {
    /// Whether the chain is intact (warnings allowed).
    pub intact: bool,
    /// Records checked.
    pub records: u64,
    /// First and last `seq`.
    pub first_seq: Option<u64>,
    /// Last `seq`.
    pub last_seq: Option<u64>,
    /// Hash of the last line: compare with the syslog copy.
    pub last_hash: Option<String>,
    /// Whether the files start at `seq` 1.
    pub starts_at_genesis: bool,
    /// Files checked, oldest first.
    pub files: Vec<String>,
    /// The first problems (`kind`, `file`, `line`, `seq`, `detail`), first first.
    pub problems: Vec<super::verify::Problem>,
    /// How many problems there were in all.
    pub problem_count: usize,
    /// Warnings (documented crash fragments).
    pub warnings: Vec<super::verify::Problem>,
    /// The first bad line as found (at most 400 characters), when there is one.
    pub first_bad_line: Option<String>,
}

impl ChainResult {
    fn from_verify(v: VerifyReport) -> Self {
        let first_bad_line = v.problems.first().and_then(|p| excerpt(&p.file, p.line));
        ChainResult {
            intact: v.ok(),
            records: v.records,
            first_seq: v.first_seq,
            last_seq: v.last_seq,
            last_hash: v.last_hash.clone(),
            starts_at_genesis: v.starts_at_genesis,
            files: v
                .files
                .iter()
                .map(|f| f.path.display().to_string())
                .collect(),
            problem_count: v.problems.len(),
            problems: v.problems.into_iter().take(MAX_CHAIN_PROBLEMS).collect(),
            warnings: v.warnings,
            first_bad_line,
        }
    }
}

/// Line `line` (1-based) of `file`, cut to 400 characters, read again by streaming.
fn excerpt(file: &Path, line: u64) -> Option<String> {
    use std::io::BufRead as _;
    if line == 0 {
        return None;
    }
    let f = std::fs::File::open(file).ok()?;
    let mut reader = std::io::BufReader::new(f);
    let mut buf = Vec::new();
    for _ in 0..line {
        buf.clear();
        if reader.read_until(b'\n', &mut buf).ok()? == 0 {
            return None;
        }
    }
    let text = String::from_utf8_lossy(&buf);
    let text = text.trim_end_matches('\n');
    Some(match text.char_indices().nth(400) {
        Some((i, _)) => format!("{}…", &text[..i]),
        None => text.to_string(),
    })
}

/// One control's row.
#[derive(Debug, Clone, Serialize)]
pub struct ControlRow {
    /// The control id (`CoCo-4.1-autoforward`, `ISM-0565`).
    pub id: String,
    /// `GCSX CoCo 4.1`, `SIA CoCo`, `ISM`.
    pub framework: String,
    /// The requirement in a sentence.
    pub requirement: String,
    /// Rule ids that enforce it (from the policies in force during the period).
    pub rules: Vec<String>,
    /// Messages a rule of this control acted on (cited by the decision).
    pub messages: u64,
    /// Of which in shadow mode (recorded, not enforced).
    pub shadow_messages: u64,
    /// Incidents attributed to the control.
    pub incidents: u64,
    /// Incidents with a delivered alert.
    pub alerted: u64,
    /// Incident → alert time, median, seconds.
    pub latency_p50_secs: Option<f64>,
    /// Incident → alert time, worst, seconds.
    pub latency_max_secs: Option<f64>,
    /// Incidents whose alert was given up (undeliverable).
    pub undeliverable: u64,
    /// Incidents with no alert in the trail, raised more than 24 h before its end.
    pub unalerted_overdue: u64,
    /// Incidents with no alert yet, raised less than 24 h before the trail's end.
    pub pending: u64,
    /// `met`, `not met`, or `no incidents`: every incident alerted within 24 h.
    pub bound_24h: String,
    /// `enforced`, `no activity`, `no rule` (nothing in the policy names it), or
    /// `exceptions` (with the figures saying which).
    pub status: String,
}

/// A policy in force during part of the period.
#[derive(Debug, Clone, Serialize)]
pub struct PolicyPeriod {
    /// The digest decisions cite.
    pub digest: String,
    /// `policy.name`, from its `policy_loaded` record.
    pub name: Option<String>,
    /// `policy.version`.
    pub version: Option<String>,
    /// First decision under it in the period.
    pub from: String,
    /// Last decision under it in the period.
    pub to: String,
    /// Decisions under it.
    pub messages: u64,
    /// Whether a rule → control map was known for it.
    pub mapped: bool,
}

/// One policy load, reload, or refused reload.
#[derive(Debug, Clone, Serialize)]
pub struct PolicyEvent {
    /// Record time.
    pub time: String,
    /// Record `seq`.
    pub seq: u64,
    /// `start`, `reload` or `reload failed`.
    pub trigger: String,
    /// The policy file.
    pub path: String,
    /// Digest loaded (for a failure: the digest kept in force).
    pub digest: String,
    /// `policy.name`.
    pub name: Option<String>,
    /// `policy.version`.
    pub version: Option<String>,
    /// Rules mapped to controls in it.
    pub mapped_rules: usize,
    /// For a refused reload: why.
    pub error: Option<String>,
}

/// Audit-trail health in the period.
#[derive(Debug, Clone, Default, Serialize)]
pub struct TrailHealth {
    /// `audit_sink_trouble` records (outages).
    pub outages: u64,
    /// Records refused during outages (their mail was tempfailed).
    pub refused_during_outages: u64,
    /// Documented crash fragments.
    pub chain_resumed: u64,
    /// Internal errors.
    pub internal_errors: u64,
    /// Incidents dropped because the alert queue was full.
    pub alerts_dropped: u64,
    /// Lines that were not records (see the chain result).
    pub unparsed_lines: u64,
}

/// The whole evidence report.
#[derive(Debug, Clone, Serialize)]
pub struct Evidence {
    /// When the report was made.
    pub generated: String,
    /// markgate's version that made it.
    pub generator: String,
    /// Start of the period (inclusive), if bounded.
    pub since: Option<String>,
    /// End of the period (exclusive), if bounded.
    pub until: Option<String>,
    /// First and last record time in the period.
    pub first_record: Option<String>,
    /// Last record time in the period.
    pub last_record: Option<String>,
    /// Gateway host names seen.
    pub hosts: Vec<String>,
    /// The chain verification.
    pub chain: ChainResult,
    /// Records in the period.
    pub records: u64,
    /// Decisions in the period.
    pub messages: u64,
    /// Information-security events in the period.
    pub security_events: u64,
    /// The controls table.
    pub controls: Vec<ControlRow>,
    /// Decisions under a policy digest with no known rule → control map.
    pub unmapped_messages: u64,
    /// Decisions per UTC day and outcome (`accepted`, `recipients removed`, `rejected`,
    /// `tempfailed`, `quarantined`, `discarded`, `shadow`).
    pub per_day: Vec<(String, Vec<(String, u64)>)>,
    /// Decisions by effective level (`unmarked` when none), most first.
    pub by_level: Vec<(String, u64)>,
    /// Rules behind refusals (whole message or recipients), most first.
    pub top_refused_rules: Vec<(String, u64)>,
    /// Senders of refused mail, most first (`<>` for the null sender).
    pub top_refused_senders: Vec<(String, u64)>,
    /// Whether the sender tally hit its cap (then later new senders count as `(others)`).
    pub senders_capped: bool,
    /// Policies in force, by first decision.
    pub policies: Vec<PolicyPeriod>,
    /// Loads, reloads and refused reloads, in order.
    pub policy_events: Vec<PolicyEvent>,
    /// Trail health.
    pub health: TrailHealth,
}

impl Evidence {
    /// Whether the report is clean enough to exit 0: the chain is intact.
    pub fn chain_intact(&self) -> bool {
        self.chain.intact
    }

    /// Render in `format`.
    pub fn render(&self, format: Format) -> String {
        match format {
            Format::Html => html::render(self),
            Format::Md => md::render(self),
            Format::Json => serde_json::to_string_pretty(self)
                .unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}")),
        }
    }
}

/// Verify the chain of `paths` (oldest first), then stream them into the evidence for the
/// period `since` (inclusive) .. `until` (exclusive). A file that cannot be read is named as a
/// chain problem (`unreadable`) and left out of the figures; an error only if the chain check
/// could read it and the pass cannot.
pub fn evidence<P: AsRef<Path> + Sync>(
    paths: &[P],
    since: Option<OffsetDateTime>,
    until: Option<OffsetDateTime>,
    known: &[KnownPolicy],
) -> std::io::Result<Evidence> {
    // The chain check and the figures each read the files; they run side by side (the check
    // is mostly hashing, the figures mostly parsing), and the report waits for both.
    std::thread::scope(|scope| {
        let check = scope.spawn(|| verify_files(paths));
        let mut c = Collector::new(since, until, known);
        let mut read_error = None;
        for p in paths {
            if let Err(e) = c.read_file(p.as_ref()) {
                read_error.get_or_insert(e);
            }
        }
        let verified = check
            .join()
            .map_err(|_| std::io::Error::other("the chain check panicked"))?;
        let chain = ChainResult::from_verify(verified);
        // A file the check could not read either is a chain problem at the top of the
        // report; the figures come from the files that could be read.
        match read_error {
            Some(e) if chain.intact => Err(e),
            _ => Ok(c.finish(chain)),
        }
    })
}

/// Nearest-rank percentile of sorted values.
pub(crate) fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

/// `1 h 02 min`, `45 s`, `2 d 3 h` for people.
pub fn human_duration(secs: f64) -> String {
    let s = secs.max(0.0).round() as u64;
    if s < 60 {
        format!("{s} s")
    } else if s < 3600 {
        format!("{} min {:02} s", s / 60, s % 60)
    } else if s < 86_400 {
        format!("{} h {:02} min", s / 3600, (s % 3600) / 60)
    } else {
        format!("{} d {} h", s / 86_400, (s % 86_400) / 3600)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let v = [1.0, 2.0, 3.0, 4.0];
        assert_eq!(percentile(&v, 50.0), Some(2.0));
        assert_eq!(percentile(&v, 100.0), Some(4.0));
        assert_eq!(percentile(&[7.0], 50.0), Some(7.0));
        assert_eq!(percentile(&[], 50.0), None);
    }

    #[test]
    fn durations_read_well() {
        assert_eq!(human_duration(42.4), "42 s");
        assert_eq!(human_duration(3723.0), "1 h 02 min");
        assert_eq!(human_duration(90_000.0), "1 d 1 h");
    }
}
