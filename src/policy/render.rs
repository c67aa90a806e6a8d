//! Decisions for people and machines: what `markgate policy test` prints.
//!
//! [`text`] is a short report (markings found and where, effective level, per-recipient outcome
//! with rule ids, labels and disclaimer that would be added); [`json`] is the same as a JSON
//! value (`--json`). Both are pure formatting of [`Facts`] and [`Decision`].

use std::fmt::Write as _;

use super::decide::{Decision, Delivery, DisclaimerDecision, HeaderAction, Verdict};
use super::facts::{Facts, MarkingSource};

/// A human-readable report for one message.
pub fn text(message: &str, facts: &Facts, d: &Decision) -> String {
    let mut o = String::new();
    let _ = writeln!(o, "message: {message}");
    let _ = writeln!(o, "policy: {} ({:?} mode)", d.policy, d.mode);
    let _ = writeln!(o, "direction: {:?} — {}", d.direction, d.direction_reason);
    if facts.markings.is_empty() {
        let _ = writeln!(o, "markings: none");
    } else {
        let _ = writeln!(o, "markings:");
        for m in &facts.markings {
            let place = match &m.source {
                MarkingSource::Header { name, index } => format!("header {name} #{index}"),
                MarkingSource::Subject { form } => format!("subject ({form:?})"),
                MarkingSource::Vendor {
                    vendor,
                    header,
                    key,
                } => {
                    format!("vendor {vendor} ({header}, label {key})")
                }
            };
            let level = m
                .label
                .as_ref()
                .map_or("-".to_owned(), |l| l.canonical.clone());
            let _ = writeln!(o, "  - {place}: `{}` → {level} [{:?}]", m.raw, m.status);
            for diag in &m.diagnostics {
                let flag = if m.rejected_codes.contains(&diag.code) {
                    "not accepted"
                } else {
                    "accepted"
                };
                let _ = writeln!(o, "      {} ({flag}): {}", diag.code, diag.message);
            }
        }
    }
    if !facts.forward.hits.is_empty() {
        let _ = writeln!(
            o,
            "forward evidence: score {} (threshold {})",
            facts.forward.score, facts.forward.threshold
        );
        for h in &facts.forward.hits {
            let _ = writeln!(
                o,
                "  - {} +{}: {}: {}",
                h.signal, h.weight, h.header, h.value
            );
        }
    }
    let e = &d.effective;
    let _ = writeln!(
        o,
        "effective level: {} ({:?}{})",
        e.level_name,
        e.source,
        e.marking
            .as_ref()
            .map_or(String::new(), |m| format!(", marking `{m}`"))
    );
    for h in &d.hits {
        let _ = writeln!(
            o,
            "rule {}: {} → {:?}: {}",
            h.rule, h.situation, h.action, h.detail
        );
    }
    let _ = writeln!(o, "recipients:");
    for r in &d.recipients {
        let what = match r.delivery {
            Delivery::Deliver => "deliver",
            Delivery::Remove => "REMOVE",
        };
        let _ = writeln!(
            o,
            "  - {}: {what} (ceiling {} from {}; rules {}): {}",
            r.address,
            r.ceiling,
            r.ceiling_from,
            r.rules.join(", "),
            r.reason
        );
    }
    let _ = writeln!(o, "verdict: {}", verdict_text(&d.verdict));
    if let Some(n) = &d.sender_notice {
        let _ = writeln!(o, "sender notice: {n}");
    }
    match (&d.labels.header, &d.labels.subject) {
        (None, None) => {
            let _ = writeln!(o, "labels: none ({})", d.labels.reason);
        }
        (h, s) => {
            if let Some(h) = h {
                let act = match h.action {
                    HeaderAction::Keep => "keep".to_owned(),
                    HeaderAction::Add => "add".to_owned(),
                    HeaderAction::Replace { existing } => format!("replace {existing}"),
                };
                let _ = writeln!(o, "label header ({act}): {}: {}", h.name, h.value);
            }
            if let Some(s) = s {
                match &s.new_subject {
                    Some(ns) => {
                        let _ = writeln!(o, "subject: {ns}");
                    }
                    None => {
                        let _ = writeln!(o, "subject: unchanged (already carries `{}`)", s.marking);
                    }
                }
            }
        }
    }
    for h in &d.labels.extra {
        let _ = writeln!(o, "vendor label header (add): {}: {}", h.name, h.value);
    }
    if let Some(e) = &d.effective.expired {
        let _ = writeln!(
            o,
            "expired: EXPIRES={} passed, {} treated as {}",
            e.expires, e.from, e.to
        );
    }
    for h in &d.strip_headers {
        let _ = writeln!(o, "strip header: {h}");
    }
    match &d.disclaimer {
        DisclaimerDecision::Add {
            rule,
            position,
            signed,
            ..
        } => {
            let _ = writeln!(
                o,
                "disclaimer: add ({position:?}, rule {rule}{})",
                signed.map_or(String::new(), |s| format!(", signed mail: {s:?}"))
            );
        }
        DisclaimerDecision::Skip { reason, .. } => {
            let _ = writeln!(o, "disclaimer: not added ({reason})");
        }
    }
    if let Some(s) = &d.shadow {
        let _ = writeln!(o, "shadow: {}: {}", s.header, s.value);
    }
    let _ = writeln!(o, "rule ids: {}", d.rule_ids.join(", "));
    o
}

fn verdict_text(v: &Verdict) -> String {
    match v {
        Verdict::Accept => "accept".into(),
        Verdict::Reject { reply, rule } => format!(
            "reject {} {} {} (rule {rule})",
            reply.code, reply.enhanced, reply.text
        ),
        Verdict::Tempfail { reply, rule } => format!(
            "tempfail {} {} {} (rule {rule})",
            reply.code, reply.enhanced, reply.text
        ),
        Verdict::Quarantine { reason, rule } => format!("quarantine: {reason} (rule {rule})"),
    }
}

/// The same report as JSON: `{ "message", "facts", "decision" }`.
pub fn json(message: &str, facts: &Facts, d: &Decision) -> serde_json::Value {
    serde_json::json!({
        "message": message,
        "facts": facts,
        "decision": d,
    })
}
