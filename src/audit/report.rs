//! `markgate audit report`: figures for a period, for a security team and a CoCo assessor.
//!
//! [`report`] summarizes records (read with [`load_records`]) between `since` (inclusive) and
//! `until` (exclusive): counts by direction, level, verdict, mode and rule; blocked auto-forwards
//! and above-ceiling attempts with sender and destination domain; label conflicts, invalid and
//! forged markings; the top senders of blocked mail; and a CoCo evidence section mapping each
//! control markgate covers to the period's figures. [`Report::render_text`] is for people,
//! `serde_json` of [`Report`] for tools. This module reads records; it does not check the
//! chain (that is [`super::verify`]) and decides nothing.
//!
//! Counting rules: a shadow-mode record's verdict is what *would* have happened, so it counts
//! in `by_verdict` but never as blocked, refused or as an added disclaimer; a refused message
//! (reject, tempfail, discard) counts as refused in the warning and label controls, never as
//! labelled or missing a warning; only outbound mail counts towards the warning control.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::Path;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::event::AuditEvent;
use super::record::{
    Cause, Edit, MessageRecord, Mode, RecipientStatus, Record, Verdict, format_time,
};

/// How many senders "top senders of blocked mail" lists.
pub const TOP_SENDERS: usize = 10;

/// Parse a `--since`/`--until` argument: RFC 3339 (`2026-11-22T09:00:00Z`) or a UTC date
/// (`2026-11-22`). A date means the start of that day for `since` and the start of the next day
/// for `until`, so `--since D --until D` covers the whole day D.
pub fn parse_time_bound(text: &str, is_until: bool) -> Result<OffsetDateTime, String> {
    let text = text.trim();
    if let Ok(t) = OffsetDateTime::parse(text, &Rfc3339) {
        return Ok(t);
    }
    let fmt = time::macros::format_description!("[year]-[month]-[day]");
    match time::Date::parse(text, &fmt) {
        Ok(d) => {
            let day = if is_until {
                d.next_day()
                    .ok_or_else(|| format!("{text:?}: date out of range"))?
            } else {
                d
            };
            Ok(day.midnight().assume_utc())
        }
        Err(_) => Err(format!(
            "{text:?}: expected an RFC 3339 time (2026-11-22T09:00:00Z) or a date (2026-11-22)"
        )),
    }
}

/// Records read from files, with the lines that were not records counted.
#[derive(Debug, Clone, Default)]
pub struct Loaded {
    /// Records in file order.
    pub records: Vec<Record>,
    /// Lines that did not parse (run `verify` to see where).
    pub skipped_lines: u64,
}

/// Read every record of `paths` (oldest first). A file that cannot be opened is an error.
pub fn load_records<P: AsRef<Path>>(paths: &[P]) -> std::io::Result<Loaded> {
    let mut out = Loaded::default();
    for p in paths {
        let f = File::open(p.as_ref())
            .map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", p.as_ref().display())))?;
        let mut reader = BufReader::new(f);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            if reader.read_until(b'\n', &mut buf)? == 0 {
                break;
            }
            if buf.iter().all(|&b| b == 0) {
                // Unused preallocated space at the end of a live file (`[audit] preallocate`).
                break;
            }
            match Record::from_line(&buf) {
                Ok(r) => out.records.push(r),
                Err(_) => out.skipped_lines += 1,
            }
        }
    }
    Ok(out)
}

/// One blocked (or, in shadow mode, would-be-blocked) attempt, per recipient.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attempt {
    /// Record time.
    pub time: String,
    /// Queue id.
    pub queue_id: Option<String>,
    /// Envelope sender.
    pub sender: String,
    /// Recipient's domain.
    pub destination_domain: String,
    /// Effective level of the message.
    pub level: Option<String>,
    /// Rule id.
    pub rule: Option<String>,
    /// Whether the recipient was kept from the mail (false in shadow mode).
    pub blocked: bool,
}

/// One message-level finding.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FindingRow {
    /// Record time.
    pub time: String,
    /// Queue id.
    pub queue_id: Option<String>,
    /// Envelope sender.
    pub sender: String,
    /// What was found.
    pub detail: String,
    /// Rule id.
    pub rule: Option<String>,
}

/// One CoCo control and the period's evidence for it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CocoControl {
    /// Short id used in this report (`audit`, `no-auto-forward`, `monitoring-warning`, `labels`).
    pub id: String,
    /// MUST or SHOULD.
    pub strength: String,
    /// The requirement in a sentence.
    pub requirement: String,
    /// Named figures for the period.
    pub figures: Vec<(String, u64)>,
    /// `met`, `exceptions` (with the figures saying which), or `no activity`.
    pub status: String,
}

/// The report for a period.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    /// Start of the period (inclusive), RFC 3339, if bounded.
    pub since: Option<String>,
    /// End of the period (exclusive), RFC 3339, if bounded.
    pub until: Option<String>,
    /// Records in the period.
    pub records: u64,
    /// Message decisions in the period.
    pub messages: u64,
    /// Information-security events in the period.
    pub security_events: u64,
    /// Records by event kind.
    pub by_event: BTreeMap<String, u64>,
    /// Messages by direction.
    pub by_direction: BTreeMap<String, u64>,
    /// Messages by effective level (`unmarked` when none).
    pub by_level: BTreeMap<String, u64>,
    /// Messages by verdict.
    pub by_verdict: BTreeMap<String, u64>,
    /// Messages by mode.
    pub by_mode: BTreeMap<String, u64>,
    /// Messages per rule id that fired (each rule once per message).
    pub by_rule: BTreeMap<String, u64>,
    /// Auto-forward attempts of marked mail, per recipient.
    pub blocked_forwards: Vec<Attempt>,
    /// Marked mail addressed above a domain's ceiling, per recipient.
    pub above_ceiling: Vec<Attempt>,
    /// Messages whose markings disagree.
    pub label_conflicts: Vec<FindingRow>,
    /// Invalid markings.
    pub invalid_markings: Vec<FindingRow>,
    /// Labels only an inside system may set, arriving from outside.
    pub forged_labels: Vec<FindingRow>,
    /// Senders of blocked mail, most first.
    pub top_blocked_senders: Vec<(String, u64)>,
    /// The CoCo evidence section.
    pub coco: Vec<CocoControl>,
}

#[derive(Default)]
struct Tally {
    audit_trouble: u64,
    refused_during_outage: u64,
    chain_resumed: u64,
    internal_errors: u64,
    alerts_undeliverable: u64,
    forward_marked: u64,
    forward_blocked: u64,
    forward_passed: u64,
    disclaimer_added: u64,
    disclaimer_present: u64,
    disclaimer_skipped: u64,
    disclaimer_shadow: u64,
    outbound: u64,
    outbound_refused: u64,
    label_required: u64,
    label_present: u64,
    label_applied: u64,
    label_refused: u64,
    label_missing: u64,
}

/// Summarize `records` between `since` (inclusive) and `until` (exclusive).
pub fn report(
    records: &[Record],
    since: Option<OffsetDateTime>,
    until: Option<OffsetDateTime>,
) -> Report {
    let mut r = Report {
        since: since.map(format_time),
        until: until.map(format_time),
        ..Report::default()
    };
    let mut t = Tally::default();
    let mut blocked_senders: HashMap<String, u64> = HashMap::new();

    for rec in records {
        let Ok(at) = OffsetDateTime::parse(&rec.time, &Rfc3339) else {
            continue;
        };
        if since.is_some_and(|s| at < s) || until.is_some_and(|u| at >= u) {
            continue;
        }
        r.records += 1;
        if rec.security_event {
            r.security_events += 1;
        }
        *r.by_event
            .entry(rec.event.kind().as_str().to_string())
            .or_default() += 1;
        match &rec.event {
            AuditEvent::MessageDecision(m) => {
                r.messages += 1;
                message(&mut r, &mut t, &mut blocked_senders, &rec.time, m);
            }
            AuditEvent::AuditSinkTrouble(_) => t.audit_trouble += 1,
            AuditEvent::AuditSinkRecovered(s) => t.refused_during_outage += s.failed_records,
            AuditEvent::AuditChainResumed(_) => t.chain_resumed += 1,
            AuditEvent::InternalError(_) => t.internal_errors += 1,
            AuditEvent::AlertUndeliverable(_) => t.alerts_undeliverable += 1,
            _ => {}
        }
    }

    let mut top: Vec<(String, u64)> = blocked_senders.into_iter().collect();
    top.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    top.truncate(TOP_SENDERS);
    r.top_blocked_senders = top;
    r.coco = coco(&r, &t);
    r
}

fn message(
    r: &mut Report,
    t: &mut Tally,
    blocked_senders: &mut HashMap<String, u64>,
    time: &str,
    m: &MessageRecord,
) {
    *r.by_direction.entry(name(&m.direction)).or_default() += 1;
    *r.by_level
        .entry(
            m.effective_level
                .clone()
                .unwrap_or_else(|| "unmarked".into()),
        )
        .or_default() += 1;
    *r.by_verdict.entry(name(&m.verdict)).or_default() += 1;
    *r.by_mode.entry(name(&m.mode)).or_default() += 1;

    let mut rules: Vec<&str> = m.verdict_rules.iter().map(String::as_str).collect();
    rules.extend(m.recipients.iter().filter_map(|x| x.rule.as_deref()));
    rules.extend(m.findings.iter().filter_map(|x| x.rule.as_deref()));
    rules.extend(m.edits.iter().filter_map(edit_rule));
    rules.sort_unstable();
    rules.dedup();
    for rule in rules {
        *r.by_rule.entry(rule.to_string()).or_default() += 1;
    }

    // The record's verdict is what happened to the message, or in shadow mode what would
    // have happened: then nothing was refused or blocked, and every recipient got the mail.
    let would_refuse = matches!(
        m.verdict,
        Verdict::Reject | Verdict::Tempfail | Verdict::Discard
    );
    let enforced = m.mode == Mode::Enforce;
    let refused = enforced && would_refuse;
    let whole_blocked = enforced && (refused || m.verdict == Verdict::Quarantine);
    let mut any_blocked = whole_blocked;
    let mut forward_seen = false;
    for rcpt in &m.recipients {
        let blocked = whole_blocked || rcpt.status != RecipientStatus::Delivered;
        any_blocked |= blocked;
        let attempt = || Attempt {
            time: time.to_string(),
            queue_id: m.queue_id.clone(),
            sender: m.sender.clone(),
            destination_domain: MessageRecord::domain_of(&rcpt.address),
            level: m.effective_level.clone(),
            rule: rcpt.rule.clone(),
            blocked,
        };
        match rcpt.cause {
            Some(Cause::AutoForward) => {
                forward_seen = true;
                r.blocked_forwards.push(attempt());
                if blocked {
                    t.forward_blocked += 1;
                } else {
                    t.forward_passed += 1;
                }
            }
            Some(Cause::AboveCeiling) => r.above_ceiling.push(attempt()),
            _ => {}
        }
    }
    if forward_seen
        || (m.forward.as_ref().is_some_and(|f| f.is_forward) && m.effective_level.is_some())
    {
        t.forward_marked += 1;
    }
    if any_blocked {
        *blocked_senders.entry(m.sender.clone()).or_default() += 1;
    }

    let row = |detail: String, rule: Option<String>| FindingRow {
        time: time.to_string(),
        queue_id: m.queue_id.clone(),
        sender: m.sender.clone(),
        detail,
        rule,
    };
    for f in &m.findings {
        match f.cause {
            Cause::LabelConflict => r
                .label_conflicts
                .push(row(f.detail.clone(), f.rule.clone())),
            Cause::InvalidMarking => r
                .invalid_markings
                .push(row(f.detail.clone(), f.rule.clone())),
            Cause::ForgedLabel => r.forged_labels.push(row(f.detail.clone(), f.rule.clone())),
            _ => {}
        }
    }
    // Invalid markings the policy did not turn into a finding still count.
    if !m.findings.iter().any(|f| f.cause == Cause::InvalidMarking) {
        for mk in m.markings.iter().filter(|mk| !mk.valid) {
            let mut detail = format!("{}: {:?}", mk.location, mk.raw);
            if !mk.diagnostics.is_empty() {
                detail.push_str(" — ");
                detail.push_str(&mk.diagnostics.join("; "));
            }
            r.invalid_markings.push(row(detail, None));
        }
    }

    // Only outbound mail needs the warning: an inbound record's "skipped, the disclaimer is
    // for outbound mail" is not an exception. A refused message is never delivered, so it
    // needs neither the warning nor labels: it is counted as refused, not by its (empty)
    // edits or its label flags. A shadow-mode message went out unchanged, so a would-be
    // refusal (recorded as "disclaimer skipped: refused") left without the warning.
    if m.direction == super::record::Direction::Outbound {
        t.outbound += 1;
        if refused {
            t.outbound_refused += 1;
        } else if would_refuse {
            t.disclaimer_shadow += 1;
        } else {
            for e in &m.edits {
                match e {
                    Edit::Disclaimer { .. } if !enforced => t.disclaimer_shadow += 1,
                    Edit::Disclaimer { .. } => t.disclaimer_added += 1,
                    Edit::DisclaimerPresent { .. } => t.disclaimer_present += 1,
                    Edit::DisclaimerSkipped { .. } => t.disclaimer_skipped += 1,
                    _ => {}
                }
            }
        }
    }
    if m.label_required {
        t.label_required += 1;
        let applied = enforced
            && m.edits
                .iter()
                .any(|e| matches!(e, Edit::LabelHeader { .. } | Edit::Subject { .. }));
        if refused {
            t.label_refused += 1;
        } else if m.label_present {
            t.label_present += 1;
        } else if applied {
            t.label_applied += 1;
        } else {
            t.label_missing += 1;
        }
    }
}

fn edit_rule(e: &Edit) -> Option<&str> {
    match e {
        Edit::LabelHeader { rule, .. }
        | Edit::Subject { rule, .. }
        | Edit::Disclaimer { rule, .. }
        | Edit::DisclaimerPresent { rule }
        | Edit::DisclaimerSkipped { rule, .. }
        | Edit::Header { rule, .. } => rule.as_deref(),
    }
}

fn coco(r: &Report, t: &Tally) -> Vec<CocoControl> {
    let status = |activity: u64, exceptions: u64| {
        if exceptions > 0 {
            "exceptions".to_string()
        } else if activity == 0 {
            "no activity".to_string()
        } else {
            "met".to_string()
        }
    };
    let audit_exceptions = t.audit_trouble + t.chain_resumed;
    vec![
        CocoControl {
            id: "audit".into(),
            strength: "MUST".into(),
            requirement: "Audit logs recording user activities, exceptions and information \
                          security events are produced to assist investigations"
                .into(),
            figures: vec![
                ("records".into(), r.records),
                ("message decisions".into(), r.messages),
                ("information-security events".into(), r.security_events),
                ("internal errors recorded".into(), t.internal_errors),
                ("audit sink outages".into(), t.audit_trouble),
                (
                    "messages tempfailed during outages".into(),
                    t.refused_during_outage,
                ),
                (
                    "crash-truncated records (documented)".into(),
                    t.chain_resumed,
                ),
                (
                    "undeliverable incident alerts".into(),
                    t.alerts_undeliverable,
                ),
            ],
            status: status(r.records, audit_exceptions),
        },
        CocoControl {
            id: "no-auto-forward".into(),
            strength: "MUST".into(),
            requirement: "Marked mail is not automatically forwarded to a domain of lower \
                          classification"
                .into(),
            figures: vec![
                (
                    "auto-forwards of marked mail detected".into(),
                    t.forward_marked,
                ),
                ("recipients blocked".into(), t.forward_blocked),
                (
                    "recipients let through (shadow mode)".into(),
                    t.forward_passed,
                ),
                (
                    "above-ceiling attempts".into(),
                    r.above_ceiling.len() as u64,
                ),
            ],
            status: status(t.forward_marked, t.forward_passed),
        },
        CocoControl {
            id: "monitoring-warning".into(),
            strength: "SHOULD".into(),
            requirement: "Outgoing mail carries a warning that it may be monitored".into(),
            figures: vec![
                ("outbound messages".into(), t.outbound),
                (
                    "outbound messages refused (no warning needed)".into(),
                    t.outbound_refused,
                ),
                ("disclaimers added".into(), t.disclaimer_added),
                ("disclaimer already present".into(), t.disclaimer_present),
                (
                    "disclaimers skipped (reason in each record)".into(),
                    t.disclaimer_skipped,
                ),
                (
                    "disclaimers not added (shadow mode)".into(),
                    t.disclaimer_shadow,
                ),
            ],
            status: status(t.outbound, t.disclaimer_skipped + t.disclaimer_shadow),
        },
        CocoControl {
            id: "labels".into(),
            strength: "MUST".into(),
            requirement: "Mail marked PROTECT or higher carries the required labels".into(),
            figures: vec![
                ("messages requiring labels".into(), t.label_required),
                ("already labelled".into(), t.label_present),
                ("labels applied".into(), t.label_applied),
                ("refused, so never delivered".into(), t.label_refused),
                ("passed without labels".into(), t.label_missing),
            ],
            status: status(t.label_required, t.label_missing),
        },
    ]
}

impl Report {
    /// The report for people.
    pub fn render_text(&self) -> String {
        use std::fmt::Write as _;
        let mut s = String::new();
        let bound = |b: &Option<String>| b.clone().unwrap_or_else(|| "-".into());
        let _ = writeln!(s, "markgate audit report");
        let _ = writeln!(
            s,
            "period: {} .. {} (until exclusive)",
            bound(&self.since),
            bound(&self.until)
        );
        let _ = writeln!(
            s,
            "records: {}   messages: {}   information-security events: {}",
            self.records, self.messages, self.security_events
        );
        let table = |s: &mut String, title: &str, m: &BTreeMap<String, u64>| {
            let _ = writeln!(s, "\n{title}:");
            if m.is_empty() {
                let _ = writeln!(s, "  (none)");
            }
            let mut rows: Vec<(&String, &u64)> = m.iter().collect();
            rows.sort_by(|a, b| b.1.cmp(a.1).then_with(|| a.0.cmp(b.0)));
            for (k, v) in rows {
                let _ = writeln!(s, "  {v:>8}  {k}");
            }
        };
        table(&mut s, "events", &self.by_event);
        table(&mut s, "by direction", &self.by_direction);
        table(&mut s, "by level", &self.by_level);
        table(&mut s, "by verdict", &self.by_verdict);
        table(&mut s, "by mode", &self.by_mode);
        table(&mut s, "by rule", &self.by_rule);
        let attempts = |s: &mut String, title: &str, rows: &[Attempt]| {
            let _ = writeln!(s, "\n{title}: {}", rows.len());
            for a in rows {
                let _ = writeln!(
                    s,
                    "  {}  {}  {} -> {}  level {}  rule {}  {}",
                    a.time,
                    a.queue_id.as_deref().unwrap_or("-"),
                    if a.sender.is_empty() { "<>" } else { &a.sender },
                    a.destination_domain,
                    a.level.as_deref().unwrap_or("-"),
                    a.rule.as_deref().unwrap_or("-"),
                    if a.blocked {
                        "blocked"
                    } else {
                        "NOT blocked (shadow)"
                    }
                );
            }
        };
        attempts(
            &mut s,
            "auto-forwards of marked mail",
            &self.blocked_forwards,
        );
        attempts(&mut s, "above-ceiling attempts", &self.above_ceiling);
        let findings = |s: &mut String, title: &str, rows: &[FindingRow]| {
            let _ = writeln!(s, "\n{title}: {}", rows.len());
            for f in rows {
                let _ = writeln!(
                    s,
                    "  {}  {}  {}  {}  rule {}",
                    f.time,
                    f.queue_id.as_deref().unwrap_or("-"),
                    if f.sender.is_empty() { "<>" } else { &f.sender },
                    f.detail,
                    f.rule.as_deref().unwrap_or("-")
                );
            }
        };
        findings(&mut s, "label conflicts", &self.label_conflicts);
        findings(&mut s, "invalid markings", &self.invalid_markings);
        findings(&mut s, "forged labels from outside", &self.forged_labels);
        let _ = writeln!(s, "\ntop senders of blocked mail:");
        if self.top_blocked_senders.is_empty() {
            let _ = writeln!(s, "  (none)");
        }
        for (sender, n) in &self.top_blocked_senders {
            let _ = writeln!(
                s,
                "  {n:>8}  {}",
                if sender.is_empty() { "<>" } else { sender }
            );
        }
        let _ = writeln!(s, "\nCoCo evidence:");
        for c in &self.coco {
            let _ = writeln!(
                s,
                "  [{}] {} ({}): {}",
                c.status, c.id, c.strength, c.requirement
            );
            for (k, v) in &c.figures {
                let _ = writeln!(s, "      {v:>8}  {k}");
            }
        }
        s
    }

    /// The report as pretty JSON.
    pub fn render_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
    }
}

/// The snake_case name of a small enum, taken from its serde form.
fn name<T: Serialize>(v: &T) -> String {
    match serde_json::to_value(v) {
        Ok(serde_json::Value::String(s)) => s,
        _ => "unknown".into(),
    }
}
