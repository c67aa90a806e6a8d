//! The audit record schema: one JSON object per line, hash-chained.
//!
//! A [`Record`] is the envelope every line shares (`seq`, `prev`, `time`, `host`, `version`,
//! `severity`, `security_event`, `event`, `data`); [`MessageRecord`] is the data of a message
//! decision. Everything here is plain data (strings, vectors, small enums) so the filter can fill
//! it from the policy's `Decision` without this module knowing the policy types. The message
//! body is never part of a record.
//!
//! # What is hashed
//!
//! A line is the record serialized by `serde_json` (compact, fields in declaration order) and
//! terminated by one `\n`. `prev` of record *n* is the lower-case hex SHA-256 of the exact bytes of
//! line *n − 1* **without** its terminating `\n`. The first record of a new chain has `seq = 1`
//! and `prev` = 64 zeros ([`GENESIS_PREV`]). `seq` increases by one per record, across rotated
//! files. Verification never re-serializes: it hashes the bytes as they are in the file, so any
//! edit of a line (even whitespace) breaks the link to the next one. The full definition, with
//! the rules for rotation and crash recovery, is in `docs/audit-format.md`.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::event::{AuditEvent, EventKind, Severity};

/// `prev` of the first record of a chain: 64 zeros.
pub const GENESIS_PREV: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// The schema version written in `format` (bumped when a field changes meaning).
pub const FORMAT_VERSION: u32 = 1;

/// One audit line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// Position in the chain, from 1, never reused.
    pub seq: u64,
    /// Hex SHA-256 of the previous line's bytes (see the module documentation).
    pub prev: String,
    /// UTC time the writer stamped the record, RFC 3339 (`2026-11-22T18:55:01.123456Z`).
    pub time: String,
    /// The gateway host name.
    pub host: String,
    /// markgate's version.
    pub version: String,
    /// Schema version ([`FORMAT_VERSION`]).
    pub format: u32,
    /// Severity of the event.
    pub severity: Severity,
    /// Whether this is an information-security event.
    pub security_event: bool,
    /// The event: serialized as `"event": "<kind>", "data": {…}`.
    #[serde(flatten)]
    pub event: AuditEvent,
}

impl Record {
    /// Build a record for `event` at chain position `seq` after a line hashing to `prev`.
    pub fn new(seq: u64, prev: String, time: String, host: String, event: AuditEvent) -> Self {
        Record {
            seq,
            prev,
            time,
            host,
            version: env!("CARGO_PKG_VERSION").to_string(),
            format: FORMAT_VERSION,
            severity: event.severity(),
            security_event: event.is_security_event(),
            event,
        }
    }

    /// The line bytes for this record, without the terminating newline.
    pub fn to_line(&self) -> Result<Vec<u8>, serde_json::Error> {
        serde_json::to_vec(self)
    }

    /// Parse one line (with or without its newline).
    pub fn from_line(line: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(strip_newline(line))
    }
}

/// An event serialized by its producer, ready to be chained by the writer.
///
/// The writer must stamp `seq`, `prev` and `time` in order, but everything an event contributes
/// to its line (`"event":…,"data":{…}`) is independent of the chain, so producers serialize it
/// on their own threads and the writer only prepends the envelope ([`EncodedEvent::line`]),
/// hashes and writes. The bytes are exactly what `serde_json` makes of the whole [`Record`]
/// (`tests` below compare the two), so the file format and the hashes do not change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodedEvent {
    /// The event's kind.
    pub kind: EventKind,
    /// The record's severity.
    pub severity: Severity,
    /// The record's information-security flag.
    pub security_event: bool,
    /// `{"event":"<kind>","data":{…}}` as serialized on its own; the line takes it without
    /// the opening brace.
    object: Vec<u8>,
}

impl EncodedEvent {
    /// Serialize `event`.
    pub fn new(event: &AuditEvent) -> Result<Self, serde_json::Error> {
        // A message decision is about 1.2 KB: one allocation instead of a growth chain.
        let mut object = Vec::with_capacity(2048);
        match event {
            // The one event every message makes: written by hand, to the same bytes.
            AuditEvent::MessageDecision(m) => super::json::message_decision(m, &mut object),
            _ => serde_json::to_writer(&mut object, event)?,
        }
        if object.first() != Some(&b'{') || object.len() < 2 {
            return Err(serde::ser::Error::custom(
                "an audit event must serialize as a JSON object",
            ));
        }
        Ok(EncodedEvent {
            kind: event.kind(),
            severity: event.severity(),
            security_event: event.is_security_event(),
            object,
        })
    }

    /// The line bytes (without the terminating newline) of this event as record `seq` after
    /// a line hashing to `prev`: identical to `Record::new(seq, prev, time, host, event)
    /// .to_line()`.
    pub fn line(&self, seq: u64, prev: &str, time: &str, host: &str) -> Vec<u8> {
        use super::json::{string, unsigned};
        let mut out = Vec::with_capacity(self.object.len() + 192 + host.len());
        out.extend_from_slice(b"{\"seq\":");
        unsigned(seq, &mut out);
        out.extend_from_slice(b",\"prev\":");
        string(prev, &mut out);
        out.extend_from_slice(b",\"time\":");
        string(time, &mut out);
        out.extend_from_slice(b",\"host\":");
        string(host, &mut out);
        out.extend_from_slice(b",\"version\":");
        string(env!("CARGO_PKG_VERSION"), &mut out);
        out.extend_from_slice(b",\"format\":");
        unsigned(u64::from(FORMAT_VERSION), &mut out);
        out.extend_from_slice(b",\"severity\":\"");
        out.extend_from_slice(self.severity.as_str().as_bytes());
        out.extend_from_slice(b"\",\"security_event\":");
        out.extend_from_slice(if self.security_event {
            b"true"
        } else {
            b"false"
        });
        out.push(b',');
        out.extend_from_slice(&self.object[1..]);
        out
    }
}

/// The chain link: lower-case hex SHA-256 of a line's bytes, excluding a trailing `\n`.
pub fn line_hash(line: &[u8]) -> String {
    hex(&Sha256::digest(strip_newline(line)))
}

/// Lower-case hex SHA-256 of a policy file's bytes, as written in `policy_digest`.
pub fn policy_digest(policy_text: &[u8]) -> String {
    hex(&Sha256::digest(policy_text))
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[usize::from(b >> 4)] as char);
        out.push(DIGITS[usize::from(b & 0x0f)] as char);
    }
    out
}

fn strip_newline(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\n").unwrap_or(line)
}

/// The current UTC time as RFC 3339 with microseconds.
pub fn now_rfc3339() -> String {
    match crate::utc::now() {
        Some(stamp) => stamp_rfc3339(&stamp),
        None => format_time(time::OffsetDateTime::now_utc()),
    }
}

/// A stamp as [`format_time`] writes the same moment, without the calendar arithmetic: the
/// `time` crate's RFC 3339 drops the fraction's trailing zeros, and the dot when none is left.
fn stamp_rfc3339(stamp: &crate::utc::Stamp) -> String {
    let digits = crate::utc::six_digits(stamp.micros);
    let kept = digits.iter().rposition(|d| *d != b'0').map_or(0, |i| i + 1);
    let mut out = String::with_capacity(crate::utc::SECOND_LEN + 8);
    out.push_str(stamp.second_str());
    if kept > 0 {
        out.push('.');
        out.push_str(std::str::from_utf8(&digits[..kept]).unwrap_or(""));
    }
    out.push('Z');
    out
}

/// Format a time as the records do: UTC, RFC 3339, microsecond precision.
pub fn format_time(t: time::OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    let micros = t.nanosecond() / 1_000 * 1_000;
    let t = t.replace_nanosecond(micros).unwrap_or(t);
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| t.unix_timestamp().to_string())
}

/// Which way a message travels relative to the protected domains.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// From outside to a protected domain.
    Inbound,
    /// From a protected domain to outside.
    Outbound,
    /// Between protected domains.
    Internal,
    /// Neither end is a protected domain (relay), or not determined.
    #[default]
    Unknown,
}

/// Whether the policy's decisions were enforced or only recorded.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Decisions are applied to the mail.
    #[default]
    Enforce,
    /// Decisions are recorded, the mail passes unchanged (a trial run of a policy).
    Shadow,
}

/// The end-of-message answer given to the MTA.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Accepted (possibly with edits and some recipients removed).
    #[default]
    Accept,
    /// Rejected with a 5xx.
    Reject,
    /// Tempfailed with a 4xx.
    Tempfail,
    /// Accepted and silently dropped.
    Discard,
    /// Accepted into the MTA's hold queue.
    Quarantine,
}

/// What happened to one recipient.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum RecipientStatus {
    /// Left in the envelope.
    #[default]
    Delivered,
    /// Removed from the envelope after DATA (`SMFIR_DELRCPT`); the sender may be notified.
    Removed,
    /// Refused (at RCPT time, or with the whole message).
    Rejected,
}

/// Why a recipient was not delivered, or why a message was flagged, in the closed terms the
/// report and the CoCo evidence section count.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Cause {
    /// Marked mail auto-forwarded to a domain with a lower ceiling.
    AutoForward,
    /// Marked mail addressed to a domain whose classification ceiling is below its level.
    AboveCeiling,
    /// A marking arrived from outside that only an inside system may set.
    ForgedLabel,
    /// Subject and headers carry markings that disagree.
    LabelConflict,
    /// A marking could not be parsed or is not allowed by the policy.
    InvalidMarking,
    /// Marked mail without the labels the policy requires, not fixable.
    MissingLabel,
    /// Any other policy rule.
    Policy,
}

/// One recipient and its own outcome.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecipientOutcome {
    /// The envelope address as the MTA gave it (without angle brackets).
    pub address: String,
    /// Delivered, removed or rejected.
    pub status: RecipientStatus,
    /// Why, in closed terms, when not plainly delivered (or when a shadow-mode rule fired).
    pub cause: Option<Cause>,
    /// The policy rule id behind the outcome.
    pub rule: Option<String>,
    /// The reason for people.
    pub reason: Option<String>,
    /// The ceiling of the recipient's domain, when the policy has one.
    pub ceiling: Option<String>,
}

/// One marking found in the message.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MarkingFound {
    /// Where: `subject`, `header:X-Protective-Marking`, `body`.
    pub location: String,
    /// The raw text as found (a marking, never the body around it).
    pub raw: String,
    /// The scheme it parsed as (`uk-gpms`, `uk-gsc-2014`, `au-epms`), if any.
    pub scheme: Option<String>,
    /// The level it parsed as, if any.
    pub level: Option<String>,
    /// Whether it is a valid marking under the policy.
    pub valid: bool,
    /// Parser and policy diagnostics for people.
    pub diagnostics: Vec<String>,
}

/// The evidence that a message is an automatic forward.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ForwardEvidence {
    /// Signal names that fired (`resent-headers`, `auto-submitted`, `x-ms-exchange-inbox-rules`).
    pub signals: Vec<String>,
    /// The summed score.
    pub score: f64,
    /// The policy's threshold the score was compared with.
    pub threshold: f64,
    /// Whether the message was judged an automatic forward.
    pub is_forward: bool,
}

/// One edit made to the message (never the body text itself).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Edit {
    /// A label header added or replaced.
    LabelHeader {
        /// Header name.
        name: String,
        /// Header value.
        value: String,
        /// Rule id.
        rule: Option<String>,
    },
    /// The subject marker added or corrected.
    Subject {
        /// Subject before.
        old: String,
        /// Subject after.
        new: String,
        /// Rule id.
        rule: Option<String>,
    },
    /// The monitoring disclaimer added.
    Disclaimer {
        /// Which MIME part(s) (`text/plain`, `text/html`, `wrapped`).
        parts: Vec<String>,
        /// Rule id.
        rule: Option<String>,
    },
    /// The disclaimer was due and is already in the message (nothing added).
    DisclaimerPresent {
        /// Rule id.
        rule: Option<String>,
    },
    /// The disclaimer was due but could not or must not be added.
    DisclaimerSkipped {
        /// Why (`signed message`, `undecodable part`, `policy fallback`).
        reason: String,
        /// Rule id.
        rule: Option<String>,
    },
    /// Any other header edit (`SMFIR_ADDHEADER`/`CHGHEADER`/`INSHEADER`).
    Header {
        /// `add`, `change`, `insert` or `delete`.
        action: String,
        /// Header name.
        name: String,
        /// New value (empty for a delete).
        value: String,
        /// Rule id.
        rule: Option<String>,
    },
}

/// A finding about the message as a whole (label conflicts, invalid markings, forgeries).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Finding {
    /// What, in closed terms.
    pub cause: Cause,
    /// For people.
    pub detail: String,
    /// Rule id.
    pub rule: Option<String>,
}

/// The data of a message-decision record: what an investigator needs, never the body.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MessageRecord {
    /// The MTA's queue id (macro `i`).
    pub queue_id: Option<String>,
    /// The Message-ID header, as found.
    pub message_id: Option<String>,
    /// SMTP client address.
    pub client_addr: Option<String>,
    /// SMTP client host name as the MTA resolved it.
    pub client_name: Option<String>,
    /// The HELO/EHLO name.
    pub helo: Option<String>,
    /// SASL-authenticated user (`{auth_authen}`), if any.
    pub auth_user: Option<String>,
    /// Envelope sender (empty string for the null sender).
    pub sender: String,
    /// Every recipient with its own outcome.
    pub recipients: Vec<RecipientOutcome>,
    /// Which way the message travels.
    pub direction: Direction,
    /// Markings found (where, raw text, diagnostics).
    pub markings: Vec<MarkingFound>,
    /// The effective level the policy settled on, if the message is marked.
    pub effective_level: Option<String>,
    /// Whether the policy writes labels on mail of this direction and level (PROTECT or
    /// higher, outbound, in the shipped UK policy).
    pub label_required: bool,
    /// Whether every label the policy writes was already on the message, as the policy writes
    /// it, before any edit (judged the same way for a refused or shadow-mode message).
    pub label_present: bool,
    /// Forward evidence, when the inspector looked.
    pub forward: Option<ForwardEvidence>,
    /// Findings about the message (label conflicts, invalid markings, forged labels…).
    pub findings: Vec<Finding>,
    /// Every edit made (or that would have been made, in shadow mode).
    pub edits: Vec<Edit>,
    /// The final answer.
    pub verdict: Verdict,
    /// The SMTP reply text sent with a reject/tempfail (`550 5.7.1 …`).
    pub smtp_reply: Option<String>,
    /// The rule ids behind the verdict.
    pub verdict_rules: Vec<String>,
    /// Enforce or shadow.
    pub mode: Mode,
    /// Hex SHA-256 of the policy text in force ([`policy_digest`]).
    pub policy_digest: String,
    /// Message size in bytes as received (not the content).
    pub size: Option<u64>,
}

impl MessageRecord {
    /// Whether the decision is worth a security analyst's attention: anything but a plain
    /// accept, a recipient not delivered, a finding, or a shadow-mode rule that would have fired.
    pub fn is_notable(&self) -> bool {
        self.verdict != Verdict::Accept
            || !self.findings.is_empty()
            || self
                .recipients
                .iter()
                .any(|r| r.status != RecipientStatus::Delivered || r.cause.is_some())
    }

    /// The domain of an address (`user@Example.org` → `example.org`), empty if none.
    pub fn domain_of(address: &str) -> String {
        address
            .rsplit_once('@')
            .map(|(_, d)| d.trim_end_matches('>').to_ascii_lowercase())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::event::{DaemonStart, InternalError, SinkTrouble};

    /// Record times from the per-second cache read as the `time` crate writes them, whatever
    /// the fraction's trailing zeros.
    #[test]
    fn cached_times_are_the_formatters_times() {
        for secs in [0u64, 951_868_799, 1_796_601_600, 253_402_300_799] {
            for micros in [
                0u32, 1, 10, 100, 100_000, 120_000, 123_456, 500_010, 999_999,
            ] {
                let since = std::time::Duration::new(secs, micros * 1_000);
                let stamp = crate::utc::at(since).expect("in range");
                let nanos = i128::from(secs) * 1_000_000_000 + i128::from(micros) * 1_000;
                let t = time::OffsetDateTime::from_unix_timestamp_nanos(nanos).expect("valid");
                assert_eq!(stamp_rfc3339(&stamp), format_time(t), "{secs}.{micros:06}");
            }
        }
        let now = now_rfc3339();
        assert!(now.ends_with('Z') && now.len() >= 20, "{now}");
    }

    /// The producer-side encoding must give the very bytes `serde_json` gives for the whole
    /// record, or the hashes of old and new lines would not be comparable.
    #[test]
    fn encoded_event_lines_are_the_serialized_records() {
        let message = MessageRecord {
            queue_id: Some("4Q\"x\\y".into()),
            sender: "alice@example.org".into(),
            verdict: Verdict::Reject,
            smtp_reply: Some("550 5.7.1 «no»\u{1}".into()),
            verdict_rules: vec!["r1".into(), "ceiling:x".into()],
            mode: Mode::Shadow,
            size: Some(2048),
            ..MessageRecord::default()
        };
        let events = [
            AuditEvent::MessageDecision(Box::new(message)),
            AuditEvent::MessageDecision(Box::default()),
            AuditEvent::DaemonStart(DaemonStart::default()),
            AuditEvent::AuditSinkTrouble(SinkTrouble {
                path: "/var/log/\"a\"\n".into(),
                since: "t".into(),
                error: "disk full".into(),
                fail_open: true,
            }),
            AuditEvent::InternalError(InternalError {
                component: "conn".into(),
                error: "tab\there".into(),
                queue_id: None,
                smtp_reply: Some("451 4.3.0 x".into()),
            }),
        ];
        for (i, event) in events.into_iter().enumerate() {
            let seq = 1 + i as u64 * 1_000_003;
            let prev = line_hash(format!("line {i}").as_bytes());
            let time = "2026-11-22T10:00:00.123456Z";
            let host = if i % 2 == 0 { "gw1" } else { "gw \"2\"" };
            let encoded = EncodedEvent::new(&event).expect("encode");
            assert_eq!(encoded.kind, event.kind());
            assert_eq!(encoded.severity, event.severity());
            assert_eq!(encoded.security_event, event.is_security_event());
            let line = encoded.line(seq, &prev, time, host);
            let record = Record::new(seq, prev, time.into(), host.into(), event);
            let expected = record.to_line().expect("to_line");
            assert_eq!(
                String::from_utf8_lossy(&line),
                String::from_utf8_lossy(&expected)
            );
            assert_eq!(Record::from_line(&line).expect("parses"), record);
        }
    }
}
