//! What a decision leaves behind besides the answer: the audit record (every recipient's
//! outcome, the markings, the edits made and skipped, the verdict and its rule ids) and the
//! incidents raised to the security team.
//!
//! Must not: decide, answer the MTA, or write anything; it only describes an [`Evaluation`].
//! Never the body: only what the policy and the rewrite plan say about it.

use crate::alert::{Incident, IncidentKind};
use crate::audit::record::{
    Cause, Direction as AuditDirection, Edit, Finding, ForwardEvidence as AuditForward,
    MarkingFound, MessageRecord, Mode as AuditMode, RecipientOutcome as AuditRecipient,
    RecipientStatus, Verdict as AuditVerdict,
};
use crate::policy::decide::{
    Delivery, Direction, DisclaimerDecision, LevelSource, Verdict as PolicyVerdict,
};
use crate::policy::{self, MarkingStatus, Mode, Policy};
use crate::rewrite::{DisclaimerOutcome, HeaderOp, SubjectOutcome};

use super::{Evaluation, MessageMeta, reply_text};

fn cause_of(situation: &str) -> Cause {
    match situation {
        "auto-forward-down" => Cause::AutoForward,
        "above-ceiling" => Cause::AboveCeiling,
        "forged-label" => Cause::ForgedLabel,
        "conflict" | "multiple" => Cause::LabelConflict,
        "malformed" | "unknown" => Cause::InvalidMarking,
        _ => Cause::Policy,
    }
}

/// The audit record of one decision: every recipient's outcome, markings, level, forward
/// evidence, edits, verdict and reply, rule ids, mode and policy digest. Never the body.
pub fn audit_record(policy: &Policy, eval: &Evaluation, meta: &MessageMeta) -> MessageRecord {
    let d = &eval.decision;
    let shadow = d.shadow.as_ref();
    // In shadow mode the record says what would have happened to each recipient.
    let decided_recipients = shadow.map_or(&d.recipients, |s| &s.recipients);
    let decided_verdict = shadow.map_or(&eval.verdict, |s| &s.verdict);
    let refused = !eval.delivers();
    let recipients = decided_recipients
        .iter()
        .map(|r| {
            let hit = d
                .hits
                .iter()
                .find(|h| h.recipient.as_deref() == Some(r.address.as_str()));
            let status = if refused {
                RecipientStatus::Rejected
            } else if r.delivery == Delivery::Remove && shadow.is_none() {
                RecipientStatus::Removed
            } else {
                RecipientStatus::Delivered
            };
            AuditRecipient {
                address: r.address.clone(),
                status,
                cause: hit
                    .filter(|h| h.action != policy::Action::Accept)
                    .map(|h| cause_of(&h.situation)),
                rule: r.rules.first().cloned(),
                reason: Some(r.reason.clone()).filter(|s| !s.is_empty()),
                ceiling: Some(r.ceiling.clone()),
            }
        })
        .collect();
    let markings = eval
        .facts
        .markings
        .iter()
        .map(|m| MarkingFound {
            location: m.source.location(),
            raw: m.raw.clone(),
            scheme: Some(policy.scheme.name.clone()),
            level: m.label.as_ref().map(|l| l.level_name.clone()),
            valid: m.status == MarkingStatus::Valid,
            diagnostics: m
                .diagnostics
                .iter()
                .map(|g| format!("{}: {}", g.code, g.message))
                .collect(),
        })
        .collect();
    let marked = d.effective.source != LevelSource::Assumed;
    // Required: the policy writes labels on mail of this direction and level. Present: every
    // label it writes is already there as it would write it. Judged on the labels an enforced,
    // delivered message would get, because a refused (or shadow) decision carries none.
    let w = &policy.write;
    let label_required = marked
        && d.effective.level >= w.from_level
        && (w.header.is_some() || w.subject.is_some())
        && w.direction.includes(d.direction);
    let label_present = label_required && {
        let would_write =
            policy::decide::labels_if_delivered(policy, &eval.facts, &eval.envelope, d);
        (w.header.is_none()
            || would_write
                .header
                .as_ref()
                .is_some_and(|h| h.action == policy::decide::HeaderAction::Keep))
            && (w.subject.is_none()
                || would_write
                    .subject
                    .as_ref()
                    .is_some_and(|s| s.new_subject.is_none()))
    };
    let f = &eval.facts.forward;
    let forward = Some(AuditForward {
        signals: f.hits.iter().map(|h| h.signal.clone()).collect(),
        score: f64::from(f.score),
        threshold: f64::from(f.threshold),
        is_forward: f.is_forward(),
    });
    let findings = d
        .hits
        .iter()
        .filter(|h| h.recipient.is_none() && h.situation != "unmarked")
        .map(|h| Finding {
            cause: cause_of(&h.situation),
            detail: h.detail.clone(),
            rule: Some(h.rule.clone()),
        })
        .collect();
    let (smtp, verdict_rules, verdict) = match decided_verdict {
        PolicyVerdict::Accept => (None, d.rule_ids.clone(), AuditVerdict::Accept),
        PolicyVerdict::Reject { reply, rule } => (
            Some(reply_text(reply)),
            vec![rule.clone()],
            AuditVerdict::Reject,
        ),
        PolicyVerdict::Tempfail { reply, rule } => (
            Some(reply_text(reply)),
            vec![rule.clone()],
            AuditVerdict::Tempfail,
        ),
        PolicyVerdict::Quarantine { rule, .. } => {
            (None, vec![rule.clone()], AuditVerdict::Quarantine)
        }
    };
    MessageRecord {
        queue_id: meta.queue_id.clone(),
        message_id: meta.message_id.clone(),
        client_addr: eval.envelope.client_ip.map(crate::policy::domains::ip_text),
        client_name: meta.client_name.clone(),
        helo: meta.helo.clone(),
        auth_user: eval.envelope.auth_user.clone(),
        sender: eval.envelope.sender.clone(),
        recipients,
        direction: match d.direction {
            Direction::Outbound => AuditDirection::Outbound,
            Direction::Inbound => AuditDirection::Inbound,
        },
        markings,
        effective_level: marked.then(|| d.effective.level_name.clone()),
        label_required,
        label_present,
        forward,
        findings,
        edits: edits(eval),
        verdict,
        smtp_reply: smtp,
        verdict_rules,
        mode: match d.mode {
            Mode::Enforce => AuditMode::Enforce,
            Mode::Shadow => AuditMode::Shadow,
        },
        policy_digest: d.policy_digest.clone(),
        size: meta.size,
    }
}

/// The edits made (enforce) or that would have been made (shadow), never body text.
fn edits(eval: &Evaluation) -> Vec<Edit> {
    let d = &eval.decision;
    let mut out = Vec::new();
    if let Some(s) = &d.shadow {
        out.push(Edit::Header {
            action: "add".into(),
            name: s.header.clone(),
            value: s.value.clone(),
            rule: None,
        });
        if let Some(h) = s
            .labels
            .header
            .as_ref()
            .filter(|h| h.action != policy::decide::HeaderAction::Keep)
        {
            out.push(Edit::LabelHeader {
                name: h.name.clone(),
                value: h.value.clone(),
                rule: Some("write".into()),
            });
        }
        if let Some(sub) = &s.labels.subject
            && let Some(new) = &sub.new_subject
        {
            out.push(Edit::Subject {
                old: eval.facts.subject.clone().unwrap_or_default(),
                new: new.clone(),
                rule: Some("write".into()),
            });
        }
        match &s.disclaimer {
            DisclaimerDecision::Add { rule, .. } => out.push(Edit::Disclaimer {
                parts: vec!["(shadow mode: not added)".into()],
                rule: Some(rule.clone()),
            }),
            DisclaimerDecision::Skip { rule, reason } => {
                out.push(disclaimer_skip(reason, rule));
            }
        }
        return out;
    }
    let Some(plan) = &eval.plan else {
        return out;
    };
    let label_name = d.labels.header.as_ref().map(|h| h.name.as_str());
    for op in &plan.header_ops {
        let (action, name, value) = match op {
            HeaderOp::Add { name, value } => ("add", name, value.as_slice()),
            HeaderOp::Insert { name, value, .. } => ("insert", name, value.as_slice()),
            HeaderOp::Change { name, value, .. } => ("change", name, value.as_slice()),
            HeaderOp::Delete { name, .. } => ("delete", name, &[][..]),
        };
        if name.eq_ignore_ascii_case("Subject") {
            continue; // recorded from the subject outcome below, decoded
        }
        let value = String::from_utf8_lossy(value).into_owned();
        if Some(name.as_str())
            .is_some_and(|n| label_name.is_some_and(|l| l.eq_ignore_ascii_case(n)))
            && action != "delete"
        {
            out.push(Edit::LabelHeader {
                name: name.clone(),
                value,
                rule: Some("write".into()),
            });
        } else {
            let rule = d
                .strip_headers
                .iter()
                .any(|s| s.eq_ignore_ascii_case(name))
                .then(|| "inbound.labels".to_owned());
            out.push(Edit::Header {
                action: action.into(),
                name: name.clone(),
                value,
                rule,
            });
        }
    }
    if let SubjectOutcome::Changed { from, to } = &plan.subject {
        out.push(Edit::Subject {
            old: from.clone().unwrap_or_default(),
            new: to.clone(),
            rule: Some("write".into()),
        });
    }
    match &d.disclaimer {
        DisclaimerDecision::Skip { rule, reason } => out.push(disclaimer_skip(reason, rule)),
        DisclaimerDecision::Add { rule, .. } => {
            let mut parts = Vec::new();
            let mut present = false;
            let mut skipped = Vec::new();
            for o in &plan.disclaimer {
                match o {
                    DisclaimerOutcome::Added { part, .. } => parts.push(part_name(eval, *part)),
                    DisclaimerOutcome::AddedNewPart => parts.push("new text/plain part".into()),
                    DisclaimerOutcome::Wrapped { kind } => parts.push(format!("wrapped {kind}")),
                    DisclaimerOutcome::AlreadyPresent { .. } => present = true,
                    DisclaimerOutcome::Skipped { reason, .. } => {
                        skipped.push(format!("{reason:?}"));
                    }
                    DisclaimerOutcome::MustReject { kind } => {
                        skipped.push(format!("{kind}: refused"));
                    }
                }
            }
            if !parts.is_empty() {
                out.push(Edit::Disclaimer {
                    parts,
                    rule: Some(rule.clone()),
                });
            } else if present {
                out.push(Edit::DisclaimerPresent {
                    rule: Some(rule.clone()),
                });
            }
            if !skipped.is_empty() {
                out.push(Edit::DisclaimerSkipped {
                    reason: skipped.join("; "),
                    rule: Some(rule.clone()),
                });
            }
        }
    }
    out
}

fn disclaimer_skip(reason: &str, rule: &str) -> Edit {
    if reason.starts_with("already present") {
        Edit::DisclaimerPresent {
            rule: Some(rule.to_owned()),
        }
    } else {
        Edit::DisclaimerSkipped {
            reason: reason.to_owned(),
            rule: Some(rule.to_owned()),
        }
    }
}

/// `text/plain` or `text/html` for a part index of the message's MIME shape.
fn part_name(eval: &Evaluation, part: usize) -> String {
    eval.shape
        .parts
        .get(part)
        .map_or_else(|| format!("part {part}"), |p| p.content_type.clone())
}

/// The incidents a decision raises (one per kind): blocked auto-forwards, mail above a
/// domain's ceiling, forged labels. In shadow mode nothing was blocked; the summary says so.
pub fn incidents(eval: &Evaluation, meta: &MessageMeta) -> Vec<Incident> {
    let d = &eval.decision;
    let mut out: Vec<Incident> = Vec::new();
    for h in &d.hits {
        let accepted = h.action == policy::Action::Accept;
        let Some(kind) = IncidentKind::for_hit(&h.situation, accepted) else {
            continue;
        };
        if let Some(i) = out.iter_mut().find(|i| i.kind == kind) {
            if let Some(r) = &h.recipient
                && !i.recipients.contains(r)
            {
                i.recipients.push(r.clone());
            }
            i.details.push(h.detail.clone());
            continue;
        }
        let level = (d.effective.source != LevelSource::Assumed).then(|| {
            d.effective
                .marking
                .clone()
                .unwrap_or(d.effective.level_name.clone())
        });
        let mut summary = format!(
            "{}: {} from {}",
            kind.title(),
            level.as_deref().unwrap_or("unmarked mail"),
            if eval.envelope.sender.is_empty() {
                "<>"
            } else {
                &eval.envelope.sender
            }
        );
        if d.shadow.is_some() {
            summary.push_str(" (shadow mode: not blocked)");
        }
        let mut i = Incident::new(kind, summary);
        i.queue_id = meta.queue_id.clone();
        i.message_id = meta.message_id.clone();
        i.sender = Some(eval.envelope.sender.clone());
        i.recipients = h.recipient.iter().cloned().collect();
        i.level = level;
        i.rule = Some(h.rule.clone());
        i.details.push(h.detail.clone());
        out.push(i);
    }
    out
}
