//! Helpers shared by the audit and alert integration tests.
#![allow(dead_code)]

use std::path::Path;

use markgate::alert::{Incident, IncidentKind};
use markgate::audit::event::*;
use markgate::audit::record::*;
use markgate::audit::{AuditConfig, AuditEvent, SyncMode};

/// An audit config writing to `path`, syslog off (tests must not spam the host's syslog).
pub fn config(path: &Path, sync: SyncMode) -> AuditConfig {
    let mut c = AuditConfig {
        path: path.to_path_buf(),
        sync,
        host: Some("gw-test".into()),
        ..AuditConfig::default()
    };
    c.syslog.enabled = false;
    c
}

/// A realistic message decision: an OFFICIAL-SENSITIVE mail auto-forwarded to a lower domain,
/// one recipient removed, labels added.
pub fn message(n: u64) -> MessageRecord {
    MessageRecord {
        queue_id: Some(format!("4Q{n:08X}")),
        message_id: Some(format!("<msg{n}@dept.gov.uk>")),
        client_addr: Some("192.0.2.10".into()),
        client_name: Some("mx1.dept.gov.uk".into()),
        helo: Some("mx1.dept.gov.uk".into()),
        auth_user: Some("alice".into()),
        sender: "alice@dept.gov.uk".into(),
        recipients: vec![
            RecipientOutcome {
                address: "bob@partner.gov.uk".into(),
                status: RecipientStatus::Delivered,
                ..Default::default()
            },
            RecipientOutcome {
                address: "alice.home@gmail.com".into(),
                status: RecipientStatus::Removed,
                cause: Some(Cause::AutoForward),
                rule: Some("forward.block-lower".into()),
                reason: Some(
                    "auto-forward of OFFICIAL-SENSITIVE to a domain with ceiling OFFICIAL".into(),
                ),
                ceiling: Some("OFFICIAL".into()),
            },
        ],
        direction: Direction::Outbound,
        markings: vec![MarkingFound {
            location: "subject".into(),
            raw: "[OFFICIAL-SENSITIVE]".into(),
            scheme: Some("uk-gsc-2014".into()),
            level: Some("OFFICIAL-SENSITIVE".into()),
            valid: true,
            diagnostics: vec![],
        }],
        effective_level: Some("OFFICIAL-SENSITIVE".into()),
        label_required: true,
        label_present: false,
        forward: Some(ForwardEvidence {
            signals: vec!["resent-headers".into(), "x-ms-exchange-inbox-rules".into()],
            score: 7.5,
            threshold: 5.0,
            is_forward: true,
        }),
        findings: vec![],
        edits: vec![
            Edit::LabelHeader {
                name: "X-Protective-Marking".into(),
                value: "VER=2012, NS=gov.uk, SEC=OFFICIAL-SENSITIVE".into(),
                rule: Some("labels.header".into()),
            },
            Edit::DisclaimerPresent {
                rule: Some("disclaimer.outbound".into()),
            },
        ],
        verdict: Verdict::Accept,
        smtp_reply: None,
        verdict_rules: vec![],
        mode: Mode::Enforce,
        policy_digest: policy_digest(b"[policy]\nname = \"test\"\n"),
        size: Some(2048 + n),
    }
}

/// One sample event of every kind, in [`EventKind::ALL`] order.
pub fn one_of_each() -> Vec<AuditEvent> {
    vec![
        AuditEvent::MessageDecision(Box::new(message(1))),
        AuditEvent::DaemonStart(DaemonStart {
            listen: vec!["inet:127.0.0.1:8895".into()],
            config_path: Some("/etc/markgate/markgate.toml".into()),
            audit_path: "/var/log/markgate/audit.jsonl".into(),
            pid: 4242,
        }),
        AuditEvent::DaemonStop(DaemonStop {
            reason: "SIGTERM".into(),
            abandoned_transactions: 0,
        }),
        AuditEvent::PolicyLoaded(PolicyLoaded {
            path: "/etc/markgate/policy.toml".into(),
            digest: policy_digest(b"x"),
            trigger: "start".into(),
            policy_name: Some("uk-gsc-2014".into()),
            ..Default::default()
        }),
        AuditEvent::ReloadFailed(ReloadFailed {
            path: "/etc/markgate/policy.toml".into(),
            error: "policy.toml:12:7: expected a level name, found \"SECRETT\"".into(),
            kept_digest: policy_digest(b"x"),
        }),
        AuditEvent::AuditSinkTrouble(SinkTrouble {
            path: "/var/log/markgate/audit.jsonl".into(),
            since: "2026-11-22T10:00:00Z".into(),
            error: "No space left on device (os error 28)".into(),
            fail_open: false,
        }),
        AuditEvent::AuditSinkRecovered(SinkRecovered {
            path: "/var/log/markgate/audit.jsonl".into(),
            since: "2026-11-22T10:00:00Z".into(),
            failed_records: 3,
            outage_seconds: 12.5,
        }),
        AuditEvent::AuditChainResumed(ChainResumed {
            path: "/var/log/markgate/audit.jsonl".into(),
            fragment_len: 17,
            fragment_sha256: line_hash(b"{\"seq\":9,\"prev\":"),
            resumed_after_seq: 8,
        }),
        AuditEvent::InternalError(InternalError {
            component: "rewrite".into(),
            error: "undecodable part".into(),
            queue_id: Some("4QABC".into()),
            smtp_reply: Some("451 4.3.0 try again later".into()),
        }),
        AuditEvent::AlertDelivered(AlertDelivered {
            message_id: "<alert.1@gw>".into(),
            to: vec!["soc@dept.gov.uk".into()],
            incidents: 1,
            kinds: vec![IncidentKind::BlockedAutoForward],
            attempts: 1,
            ..Default::default()
        }),
        AuditEvent::AlertUndeliverable(AlertUndeliverable {
            incident: Incident::new(IncidentKind::ForgedLabel, "forged label from outside"),
            attempts: 5,
            last_error: "connection refused".into(),
        }),
        AuditEvent::AlertsDropped(AlertsDropped { count: 2 }),
        AuditEvent::LedgerUnavailable(LedgerUnavailable {
            backend: "sqlite:/var/lib/markgate/ledger.sqlite".into(),
            error: "database is locked".into(),
            on_unavailable: "fail-open".into(),
        }),
        AuditEvent::LedgerRecovered(LedgerRecovered {
            backend: "sqlite:/var/lib/markgate/ledger.sqlite".into(),
            since: "2026-11-22T10:00:00Z".into(),
            outage_seconds: 4.5,
            unchecked_messages: 7,
            tempfailed_messages: 0,
            lost_entries: 2,
        }),
    ]
}

/// The lines of a file.
pub fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

/// Write `lines` (each newline-terminated) to `path`.
pub fn write_lines(path: &Path, lines: &[String]) {
    let mut s = String::new();
    for l in lines {
        s.push_str(l);
        s.push('\n');
    }
    std::fs::write(path, s).expect("write test file");
}
