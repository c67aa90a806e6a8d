//! The closed vocabulary of audit events.
//!
//! Every line in the audit file is one [`AuditEvent`]: a message decision or a daemon event.
//! The set is closed on purpose (an enum, never a free string) so that `verify`, `report` and a
//! SIEM can rely on it; adding a kind is a format change noted in `docs/audit-format.md`.
//! Each kind has a [`Severity`] and a flag saying whether it is an *information-security event*
//! in the sense of the CoCo audit control ("user activities, exceptions and information
//! security events"). This module decides nothing about mail; it only names what happened.

use serde::{Deserialize, Serialize};

use super::record::MessageRecord;
use crate::alert::Incident;

/// How serious an event is. Ordered from least to most serious; the names and numbers follow
/// syslog (RFC 5424 §6.2.1) so forwarding needs no table of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// Routine: a message passed, the daemon started.
    Info,
    /// Worth a look: a policy decision that changed mail, a policy (re)load.
    Notice,
    /// Something degraded but service continues.
    Warning,
    /// Something failed; mail may have been tempfailed.
    Error,
    /// The evidence trail itself is at risk (audit sink down).
    Critical,
}

impl Severity {
    /// The RFC 5424 severity number (0 = emergency … 7 = debug).
    pub fn syslog_code(self) -> u8 {
        match self {
            Severity::Info => 6,
            Severity::Notice => 5,
            Severity::Warning => 4,
            Severity::Error => 3,
            Severity::Critical => 2,
        }
    }

    /// The lower-case name used in the JSON record.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Notice => "notice",
            Severity::Warning => "warning",
            Severity::Error => "error",
            Severity::Critical => "critical",
        }
    }
}

/// The kind of an event without its data: the closed vocabulary itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// The end-of-message decision for one message (see [`MessageRecord`]).
    MessageDecision,
    /// The daemon started serving.
    DaemonStart,
    /// The daemon is stopping (graceful shutdown).
    DaemonStop,
    /// A policy was loaded (at start or by a successful reload).
    PolicyLoaded,
    /// A reload was asked for and failed; the old configuration stays in force.
    ReloadFailed,
    /// The audit file could not be written; written once the sink works again, paired with
    /// [`EventKind::AuditSinkRecovered`].
    AuditSinkTrouble,
    /// The audit file is writable again after an outage.
    AuditSinkRecovered,
    /// At start-up the audit file ended in an incomplete line (a crash mid-write); the chain
    /// resumes after the last complete record. See `docs/audit-format.md`.
    AuditChainResumed,
    /// An internal error answered a message with a tempfail, or broke a background task.
    InternalError,
    /// An incident alert was handed to the mail relay.
    AlertDelivered,
    /// An incident alert could not be delivered within the configured time and was given up.
    AlertUndeliverable,
    /// Incidents were dropped because the alert queue was full.
    AlertsDropped,
    /// The thread ledger (`crate::ledger`) could not be asked or written: once per outage.
    LedgerUnavailable,
    /// The thread ledger answers again after an outage.
    LedgerRecovered,
}

impl EventKind {
    /// Every kind, in declaration order (for tests, docs and reports).
    pub const ALL: [EventKind; 14] = [
        EventKind::MessageDecision,
        EventKind::DaemonStart,
        EventKind::DaemonStop,
        EventKind::PolicyLoaded,
        EventKind::ReloadFailed,
        EventKind::AuditSinkTrouble,
        EventKind::AuditSinkRecovered,
        EventKind::AuditChainResumed,
        EventKind::InternalError,
        EventKind::AlertDelivered,
        EventKind::AlertUndeliverable,
        EventKind::AlertsDropped,
        EventKind::LedgerUnavailable,
        EventKind::LedgerRecovered,
    ];

    /// The snake_case name used in the `event` field of the JSON record.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::MessageDecision => "message_decision",
            EventKind::DaemonStart => "daemon_start",
            EventKind::DaemonStop => "daemon_stop",
            EventKind::PolicyLoaded => "policy_loaded",
            EventKind::ReloadFailed => "reload_failed",
            EventKind::AuditSinkTrouble => "audit_sink_trouble",
            EventKind::AuditSinkRecovered => "audit_sink_recovered",
            EventKind::AuditChainResumed => "audit_chain_resumed",
            EventKind::InternalError => "internal_error",
            EventKind::AlertDelivered => "alert_delivered",
            EventKind::AlertUndeliverable => "alert_undeliverable",
            EventKind::AlertsDropped => "alerts_dropped",
            EventKind::LedgerUnavailable => "ledger_unavailable",
            EventKind::LedgerRecovered => "ledger_recovered",
        }
    }

    /// The severity of the kind when nothing in the data raises it (see
    /// [`AuditEvent::severity`] for the one kind whose severity depends on its data).
    pub fn base_severity(self) -> Severity {
        match self {
            EventKind::MessageDecision | EventKind::DaemonStart | EventKind::DaemonStop => {
                Severity::Info
            }
            EventKind::AlertDelivered => Severity::Info,
            EventKind::PolicyLoaded => Severity::Notice,
            EventKind::AuditSinkRecovered | EventKind::AuditChainResumed => Severity::Warning,
            EventKind::ReloadFailed
            | EventKind::InternalError
            | EventKind::AlertUndeliverable
            | EventKind::AlertsDropped => Severity::Error,
            EventKind::AuditSinkTrouble => Severity::Critical,
            EventKind::LedgerUnavailable => Severity::Error,
            EventKind::LedgerRecovered => Severity::Warning,
        }
    }

    /// Whether the kind is always an information-security event. Policy changes, gaps or risks
    /// in the evidence trail and undelivered incident alerts are; routine daemon life is not.
    pub fn base_security_event(self) -> bool {
        match self {
            EventKind::MessageDecision
            | EventKind::DaemonStart
            | EventKind::DaemonStop
            | EventKind::InternalError => false,
            EventKind::PolicyLoaded
            | EventKind::ReloadFailed
            | EventKind::AuditSinkTrouble
            | EventKind::AuditSinkRecovered
            | EventKind::AuditChainResumed
            | EventKind::AlertDelivered
            | EventKind::AlertUndeliverable
            | EventKind::AlertsDropped
            | EventKind::LedgerUnavailable
            | EventKind::LedgerRecovered => true,
        }
    }
}

impl std::fmt::Display for EventKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One audit event with its data. Serialized adjacently tagged: `"event": "<kind>"` and
/// `"data": {…}` inside the record (see [`super::record::Record`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", content = "data", rename_all = "snake_case")]
pub enum AuditEvent {
    /// See [`EventKind::MessageDecision`].
    MessageDecision(Box<MessageRecord>),
    /// See [`EventKind::DaemonStart`].
    DaemonStart(DaemonStart),
    /// See [`EventKind::DaemonStop`].
    DaemonStop(DaemonStop),
    /// See [`EventKind::PolicyLoaded`].
    PolicyLoaded(PolicyLoaded),
    /// See [`EventKind::ReloadFailed`].
    ReloadFailed(ReloadFailed),
    /// See [`EventKind::AuditSinkTrouble`].
    AuditSinkTrouble(SinkTrouble),
    /// See [`EventKind::AuditSinkRecovered`].
    AuditSinkRecovered(SinkRecovered),
    /// See [`EventKind::AuditChainResumed`].
    AuditChainResumed(ChainResumed),
    /// See [`EventKind::InternalError`].
    InternalError(InternalError),
    /// See [`EventKind::AlertDelivered`].
    AlertDelivered(AlertDelivered),
    /// See [`EventKind::AlertUndeliverable`].
    AlertUndeliverable(AlertUndeliverable),
    /// See [`EventKind::AlertsDropped`].
    AlertsDropped(AlertsDropped),
    /// See [`EventKind::LedgerUnavailable`].
    LedgerUnavailable(LedgerUnavailable),
    /// See [`EventKind::LedgerRecovered`].
    LedgerRecovered(LedgerRecovered),
}

impl AuditEvent {
    /// The kind of this event.
    pub fn kind(&self) -> EventKind {
        match self {
            AuditEvent::MessageDecision(_) => EventKind::MessageDecision,
            AuditEvent::DaemonStart(_) => EventKind::DaemonStart,
            AuditEvent::DaemonStop(_) => EventKind::DaemonStop,
            AuditEvent::PolicyLoaded(_) => EventKind::PolicyLoaded,
            AuditEvent::ReloadFailed(_) => EventKind::ReloadFailed,
            AuditEvent::AuditSinkTrouble(_) => EventKind::AuditSinkTrouble,
            AuditEvent::AuditSinkRecovered(_) => EventKind::AuditSinkRecovered,
            AuditEvent::AuditChainResumed(_) => EventKind::AuditChainResumed,
            AuditEvent::InternalError(_) => EventKind::InternalError,
            AuditEvent::AlertDelivered(_) => EventKind::AlertDelivered,
            AuditEvent::AlertUndeliverable(_) => EventKind::AlertUndeliverable,
            AuditEvent::AlertsDropped(_) => EventKind::AlertsDropped,
            AuditEvent::LedgerUnavailable(_) => EventKind::LedgerUnavailable,
            AuditEvent::LedgerRecovered(_) => EventKind::LedgerRecovered,
        }
    }

    /// The severity written into the record. A message decision is `notice` when it changed
    /// the fate of the mail (anything but a plain accept, a recipient not delivered, or a
    /// finding) and `info` otherwise; every other kind has a fixed severity.
    pub fn severity(&self) -> Severity {
        match self {
            AuditEvent::MessageDecision(m) if m.is_notable() => Severity::Notice,
            other => other.kind().base_severity(),
        }
    }

    /// Whether this event is an information-security event. A message decision is one when
    /// it blocked, removed or rejected anything, or found a problem with a marking.
    pub fn is_security_event(&self) -> bool {
        match self {
            AuditEvent::MessageDecision(m) => m.is_notable(),
            other => other.kind().base_security_event(),
        }
    }
}

/// Data of [`EventKind::DaemonStart`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DaemonStart {
    /// Listen specs in force (`inet:127.0.0.1:8895`).
    pub listen: Vec<String>,
    /// The daemon config file, if one was given.
    pub config_path: Option<String>,
    /// The audit file path in force.
    pub audit_path: String,
    /// Process id.
    pub pid: u32,
}

/// Data of [`EventKind::DaemonStop`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DaemonStop {
    /// Why (`SIGTERM`, `SIGINT`, `fatal error: …`).
    pub reason: String,
    /// Messages still in flight when the shutdown deadline passed (tempfailed by the MTA).
    pub abandoned_transactions: u64,
}

/// Data of [`EventKind::PolicyLoaded`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyLoaded {
    /// The policy file.
    pub path: String,
    /// Lower-case hex SHA-256 of the policy file's bytes (see [`super::record::policy_digest`]);
    /// with `include`, of the policy and its fragments (markgate-policy(5)).
    pub digest: String,
    /// `start` or `reload`.
    pub trigger: String,
    /// The policy's own name/version string, if it declares one.
    pub policy_name: Option<String>,
    /// `policy.version`, if the policy declares one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy_version: Option<String>,
    /// Rule id (as `message_decision` records cite it) → the control ids it enforces, from the
    /// policy's `controls` keys; the evidence report maps decisions under this digest through
    /// it. Empty (and left out of the line) for a policy that names no controls.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub controls: std::collections::BTreeMap<String, Vec<String>>,
}

/// Data of [`EventKind::ReloadFailed`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReloadFailed {
    /// The file that failed.
    pub path: String,
    /// The error for people (file:line:col and what was expected).
    pub error: String,
    /// Digest of the policy that stays in force.
    pub kept_digest: String,
}

/// Data of [`EventKind::AuditSinkTrouble`]. Written when the sink works again, so `since` (the
/// first failure) is earlier than the record's own `time`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SinkTrouble {
    /// The audit file.
    pub path: String,
    /// RFC 3339 time of the first failure.
    pub since: String,
    /// The first error seen (`No space left on device (os error 28)`).
    pub error: String,
    /// Whether the writer was configured to fail open during the outage.
    pub fail_open: bool,
}

/// Data of [`EventKind::AuditSinkRecovered`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SinkRecovered {
    /// The audit file.
    pub path: String,
    /// RFC 3339 time of the first failure of the outage.
    pub since: String,
    /// Records refused during the outage (their messages were tempfailed; with
    /// `fail_open = true`, they were let through and are missing from the file).
    pub failed_records: u64,
    /// Seconds from the first failure to recovery.
    pub outage_seconds: f64,
}

/// Data of [`EventKind::AuditChainResumed`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChainResumed {
    /// The file whose tail was incomplete.
    pub path: String,
    /// Length in bytes of the incomplete final line (kept in the file, newline-terminated).
    pub fragment_len: u64,
    /// Lower-case hex SHA-256 of the fragment bytes (without the newline the writer added).
    pub fragment_sha256: String,
    /// The `seq` of the last complete record, after which the chain resumes.
    pub resumed_after_seq: u64,
}

/// Data of [`EventKind::InternalError`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct InternalError {
    /// Where (`filter`, `rewrite`, `alert`, `conn`).
    pub component: String,
    /// The error text.
    pub error: String,
    /// The queue id of the message it hit, if any.
    pub queue_id: Option<String>,
    /// What the MTA was told (`451 4.3.0 …`), if a message was answered.
    pub smtp_reply: Option<String>,
}

/// Data of [`EventKind::AlertDelivered`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlertDelivered {
    /// The alert mail's Message-ID.
    pub message_id: String,
    /// Security-team addresses it went to.
    pub to: Vec<String>,
    /// How many incidents it carried (1 in immediate mode, more in a digest).
    pub incidents: u64,
    /// Their kinds, one per incident, in order.
    pub kinds: Vec<crate::alert::IncidentKind>,
    /// Delivery attempts it took.
    pub attempts: u32,
    /// Each incident it carried: when it was raised and which decision raised it, so the
    /// incident-to-alert time can be measured from the trail (the report's CoCo-11 evidence).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub incident_refs: Vec<IncidentRef>,
}

/// One incident carried by an alert mail ([`AlertDelivered::incident_refs`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IncidentRef {
    /// The incident's kind.
    pub kind: Option<crate::alert::IncidentKind>,
    /// When it was raised, RFC 3339 UTC (the incident's own `time`).
    pub raised: String,
    /// The `seq` of the audit record of the decision that raised it, when known.
    pub audit_seq: Option<u64>,
    /// The policy rule id behind it, when there is one.
    pub rule: Option<String>,
}

impl IncidentRef {
    /// The reference to `incident`.
    pub fn of(incident: &Incident) -> Self {
        IncidentRef {
            kind: Some(incident.kind),
            raised: incident.time.clone(),
            audit_seq: incident.audit_seq,
            rule: incident.rule.clone(),
        }
    }
}

/// Data of [`EventKind::AlertUndeliverable`]: the whole incident, so nothing is lost.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlertUndeliverable {
    /// The incident that could not be sent.
    pub incident: Incident,
    /// Delivery attempts made.
    pub attempts: u32,
    /// The last error from the relay.
    pub last_error: String,
}

/// Data of [`EventKind::AlertsDropped`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlertsDropped {
    /// Incidents refused because the alert queue was full, since the last such record.
    pub count: u64,
}

/// Data of [`EventKind::LedgerUnavailable`]: the first failure of an outage of the thread
/// ledger. One record per outage, however many messages it touches.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerUnavailable {
    /// `sqlite:/var/lib/markgate/ledger.sqlite` or `redis://host:port/db`.
    pub backend: String,
    /// The first error (`timed out after 500ms`, `database is locked`, `Connection refused`).
    pub error: String,
    /// The policy's `on_unavailable` in force: `fail-open` (mail decided without thread
    /// memory) or `tempfail` (mail answered 4xx until recovery).
    pub on_unavailable: String,
}

/// Data of [`EventKind::LedgerRecovered`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LedgerRecovered {
    /// As in [`LedgerUnavailable::backend`].
    pub backend: String,
    /// RFC 3339 time of the first failure of the outage.
    pub since: String,
    /// Seconds from the first failure to recovery.
    pub outage_seconds: f64,
    /// Messages decided without thread memory during the outage (fail-open).
    pub unchecked_messages: u64,
    /// Messages answered 4xx because of the outage (tempfail).
    pub tempfailed_messages: u64,
    /// Ledger entries that could not be written during the outage.
    pub lost_entries: u64,
}
