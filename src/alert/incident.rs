//! What an incident is: the kinds the security team is alerted about, and one occurrence.
//!
//! The policy (through the filter) decides *which* decisions are incidents and builds an
//! [`Incident`]; this module only names them. [`IncidentKind::defaults`] is the set the issue
//! asks for when the policy says nothing. [`ErrorBurst`] turns single internal errors into the
//! "repeated internal errors" incident.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// The closed set of incident kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IncidentKind {
    /// Marked mail auto-forwarded toward a lower domain was blocked.
    BlockedAutoForward,
    /// Marked mail was sent to a domain whose ceiling is below its level.
    AboveCeiling,
    /// A label only inside systems may set arrived from outside.
    ForgedLabel,
    /// The audit trail could not be written.
    AuditFailure,
    /// Internal errors repeated beyond a threshold within a window.
    RepeatedInternalErrors,
    /// An EPMS ORIGIN named someone other than the sender (a copied or forged label).
    OriginMismatch,
}

impl IncidentKind {
    /// The kinds alerted on when the policy does not say otherwise: all of them.
    pub fn defaults() -> Vec<IncidentKind> {
        vec![
            IncidentKind::BlockedAutoForward,
            IncidentKind::AboveCeiling,
            IncidentKind::ForgedLabel,
            IncidentKind::AuditFailure,
            IncidentKind::RepeatedInternalErrors,
            IncidentKind::OriginMismatch,
        ]
    }

    /// The incident a decision's rule hit raises, by its situation (`None`: not an incident).
    /// Blocking situations only count when the rule did not simply accept.
    pub fn for_hit(situation: &str, accepted: bool) -> Option<IncidentKind> {
        match situation {
            "auto-forward-down" if !accepted => Some(IncidentKind::BlockedAutoForward),
            "above-ceiling" if !accepted => Some(IncidentKind::AboveCeiling),
            "forged-label" => Some(IncidentKind::ForgedLabel),
            "origin-mismatch" => Some(IncidentKind::OriginMismatch),
            _ => None,
        }
    }

    /// A short title for people.
    pub fn title(self) -> &'static str {
        match self {
            IncidentKind::BlockedAutoForward => "blocked auto-forward of marked mail",
            IncidentKind::AboveCeiling => "marked mail sent above a domain's ceiling",
            IncidentKind::ForgedLabel => "forged label from outside",
            IncidentKind::AuditFailure => "audit trail failure",
            IncidentKind::RepeatedInternalErrors => "repeated internal errors",
            IncidentKind::OriginMismatch => "label ORIGIN is not the sender",
        }
    }

    /// The snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            IncidentKind::BlockedAutoForward => "blocked_auto_forward",
            IncidentKind::AboveCeiling => "above_ceiling",
            IncidentKind::ForgedLabel => "forged_label",
            IncidentKind::AuditFailure => "audit_failure",
            IncidentKind::RepeatedInternalErrors => "repeated_internal_errors",
            IncidentKind::OriginMismatch => "origin_mismatch",
        }
    }
}

impl std::fmt::Display for IncidentKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One incident, with what the security team needs to find the evidence (never message text).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Incident {
    /// What.
    pub kind: IncidentKind,
    /// When it happened, RFC 3339 UTC.
    pub time: String,
    /// One line for people (`OFFICIAL-SENSITIVE mail auto-forwarded to gmail.com blocked`).
    pub summary: String,
    /// Queue id of the message concerned.
    pub queue_id: Option<String>,
    /// Message-ID of the message concerned.
    pub message_id: Option<String>,
    /// Envelope sender.
    pub sender: Option<String>,
    /// Recipients concerned.
    pub recipients: Vec<String>,
    /// Effective level.
    pub level: Option<String>,
    /// Rule id.
    pub rule: Option<String>,
    /// The audit record with the full decision, when known.
    pub audit_seq: Option<u64>,
    /// Further facts, one per line.
    pub details: Vec<String>,
}

impl Incident {
    /// An incident of `kind` now, with a summary; fill the other fields as known.
    pub fn new(kind: IncidentKind, summary: impl Into<String>) -> Self {
        Incident {
            kind,
            time: crate::audit::record::now_rfc3339(),
            summary: summary.into(),
            queue_id: None,
            message_id: None,
            sender: None,
            recipients: Vec::new(),
            level: None,
            rule: None,
            audit_seq: None,
            details: Vec::new(),
        }
    }
}

/// Counts internal errors and says when they become the "repeated internal errors" incident:
/// `threshold` errors within `window`. After firing it stays quiet for one window, so a storm
/// raises one incident per window, not one per error.
#[derive(Debug, Clone)]
pub struct ErrorBurst {
    threshold: usize,
    window: Duration,
    seen: VecDeque<Instant>,
    quiet_until: Option<Instant>,
}

impl ErrorBurst {
    /// `threshold` (at least 1) errors within `window`.
    pub fn new(threshold: usize, window: Duration) -> Self {
        ErrorBurst {
            threshold: threshold.max(1),
            window,
            seen: VecDeque::new(),
            quiet_until: None,
        }
    }

    /// Note one error at `now`; true when this error completes a burst.
    pub fn note(&mut self, now: Instant) -> bool {
        while let Some(&first) = self.seen.front() {
            if now.duration_since(first) > self.window {
                self.seen.pop_front();
            } else {
                break;
            }
        }
        self.seen.push_back(now);
        if self.quiet_until.is_some_and(|q| now < q) {
            return false;
        }
        if self.seen.len() >= self.threshold {
            self.quiet_until = Some(now + self.window);
            self.seen.clear();
            return true;
        }
        false
    }
}
