//! `report`: counts, attempts, findings, top senders and the CoCo section over a period;
//! `--since`/`--until` parsing; `[audit]` config defaults and errors.

mod audit_support;

use markgate::audit::event::{InternalError, SinkRecovered, SinkTrouble};
use markgate::audit::record::*;
use markgate::audit::{
    self, AuditConfig, AuditEvent, SyncMode, load_records, parse_time_bound, report,
};

fn rec(seq: u64, time: &str, event: AuditEvent) -> Record {
    Record::new(seq, GENESIS_PREV.into(), time.into(), "gw1".into(), event)
}

fn msg(m: MessageRecord) -> AuditEvent {
    AuditEvent::MessageDecision(Box::new(m))
}

fn sample() -> Vec<Record> {
    // 1: outbound auto-forward, one recipient removed (audit_support::message).
    let forward = audit_support::message(1);
    // 2: an inbound message with a forged label and conflicting markings, rejected.
    let mut forged = audit_support::message(2);
    forged.direction = Direction::Inbound;
    forged.sender = "mallory@example.com".into();
    forged.recipients = vec![RecipientOutcome {
        address: "bob@dept.gov.uk".into(),
        status: RecipientStatus::Rejected,
        cause: Some(Cause::ForgedLabel),
        rule: Some("inbound.forged".into()),
        ..Default::default()
    }];
    forged.findings = vec![
        Finding {
            cause: Cause::ForgedLabel,
            detail: "SECRET label from outside".into(),
            rule: Some("inbound.forged".into()),
        },
        Finding {
            cause: Cause::LabelConflict,
            detail: "subject OFFICIAL, header SECRET".into(),
            rule: Some("labels.conflict".into()),
        },
    ];
    forged.verdict = Verdict::Reject;
    forged.smtp_reply = Some("550 5.7.1 label not accepted from outside".into());
    forged.verdict_rules = vec!["inbound.forged".into()];
    forged.edits.clear();
    forged.label_required = false;
    // 3: above-ceiling attempt in shadow mode, invalid marking, disclaimer added.
    let mut shadow = audit_support::message(3);
    shadow.mode = Mode::Shadow;
    shadow.forward = None;
    shadow.recipients = vec![RecipientOutcome {
        address: "carol@contractor.co.uk".into(),
        status: RecipientStatus::Delivered,
        cause: Some(Cause::AboveCeiling),
        rule: Some("ceiling.contractor".into()),
        ceiling: Some("OFFICIAL".into()),
        ..Default::default()
    }];
    shadow.markings.push(MarkingFound {
        location: "header:X-Protective-Marking".into(),
        raw: "SEC=OFFICIAL-SENSITVE".into(),
        valid: false,
        diagnostics: vec!["unknown level OFFICIAL-SENSITVE".into()],
        ..Default::default()
    });
    shadow.edits = vec![Edit::Disclaimer {
        parts: vec!["(shadow mode: not added)".into()],
        rule: Some("disclaimer.outbound".into()),
    }];
    // 4: a plain unmarked message, outside the period.
    let mut old = audit_support::message(4);
    old.recipients.truncate(1);
    old.effective_level = None;
    old.markings.clear();
    old.label_required = false;
    vec![
        rec(1, "2026-11-20T23:59:59Z", msg(old)),
        rec(2, "2026-11-21T08:00:00Z", msg(forward)),
        rec(3, "2026-11-21T09:00:00Z", msg(forged)),
        rec(4, "2026-11-21T10:00:00.25Z", msg(shadow)),
        rec(
            5,
            "2026-11-21T11:00:00Z",
            AuditEvent::AuditSinkTrouble(SinkTrouble::default()),
        ),
        rec(
            6,
            "2026-11-21T11:00:00Z",
            AuditEvent::AuditSinkRecovered(SinkRecovered {
                failed_records: 4,
                ..Default::default()
            }),
        ),
        rec(
            7,
            "2026-11-21T12:00:00Z",
            AuditEvent::InternalError(InternalError::default()),
        ),
        rec(8, "2026-11-22T00:00:00Z", msg(audit_support::message(8))),
    ]
}

#[test]
fn report_counts_a_day() {
    let since = parse_time_bound("2026-11-21", false).expect("since");
    let until = parse_time_bound("2026-11-21", true).expect("until");
    let r = report(&sample(), Some(since), Some(until));
    assert_eq!(r.since.as_deref(), Some("2026-11-21T00:00:00Z"));
    assert_eq!(r.until.as_deref(), Some("2026-11-22T00:00:00Z"));
    assert_eq!(r.records, 6, "records 2..=7");
    assert_eq!(r.messages, 3);
    assert_eq!(r.by_direction.get("outbound"), Some(&2));
    assert_eq!(r.by_direction.get("inbound"), Some(&1));
    assert_eq!(r.by_verdict.get("accept"), Some(&2));
    assert_eq!(r.by_verdict.get("reject"), Some(&1));
    assert_eq!(r.by_mode.get("shadow"), Some(&1));
    assert_eq!(r.by_level.get("OFFICIAL-SENSITIVE"), Some(&3));
    assert_eq!(r.by_rule.get("forward.block-lower"), Some(&1));
    assert_eq!(
        r.by_rule.get("inbound.forged"),
        Some(&1),
        "each rule once per message"
    );
    assert_eq!(r.by_event.get("internal_error"), Some(&1));

    assert_eq!(r.blocked_forwards.len(), 1);
    let f = &r.blocked_forwards[0];
    assert_eq!(
        (f.sender.as_str(), f.destination_domain.as_str(), f.blocked),
        ("alice@dept.gov.uk", "gmail.com", true)
    );
    assert_eq!(r.above_ceiling.len(), 1);
    let a = &r.above_ceiling[0];
    assert_eq!(
        (a.destination_domain.as_str(), a.blocked),
        ("contractor.co.uk", false)
    );
    assert_eq!(r.forged_labels.len(), 1);
    assert_eq!(r.label_conflicts.len(), 1);
    assert_eq!(r.invalid_markings.len(), 1);
    assert!(r.invalid_markings[0].detail.contains("OFFICIAL-SENSITVE"));
    assert_eq!(
        r.top_blocked_senders,
        vec![
            ("alice@dept.gov.uk".to_string(), 1),
            ("mallory@example.com".to_string(), 1)
        ]
    );

    let coco = |id: &str| r.coco.iter().find(|c| c.id == id).expect("control").clone();
    let audit = coco("audit");
    assert_eq!(audit.status, "exceptions", "an outage happened");
    assert!(
        audit
            .figures
            .contains(&("messages tempfailed during outages".into(), 4))
    );
    let fwd = coco("no-auto-forward");
    assert_eq!(fwd.status, "met");
    assert!(fwd.figures.contains(&("recipients blocked".into(), 1)));
    assert!(fwd.figures.contains(&("above-ceiling attempts".into(), 1)));
    let warn = coco("monitoring-warning");
    assert_eq!(warn.strength, "SHOULD");
    // The shadow-mode message only says what would have been added.
    assert!(warn.figures.contains(&("disclaimers added".into(), 0)));
    assert!(
        warn.figures
            .contains(&("disclaimers not added (shadow mode)".into(), 1))
    );
    assert!(
        warn.figures
            .contains(&("disclaimer already present".into(), 1))
    );
    assert!(
        warn.figures
            .contains(&("disclaimers skipped (reason in each record)".into(), 0))
    );
    assert_eq!(warn.status, "exceptions");
    let labels = coco("labels");
    assert!(
        labels
            .figures
            .contains(&("messages requiring labels".into(), 2))
    );
    assert!(labels.figures.contains(&("labels applied".into(), 1)));
    assert!(
        labels
            .figures
            .contains(&("passed without labels".into(), 1)),
        "the shadow-mode one"
    );
    assert_eq!(labels.status, "exceptions");

    let text = r.render_text();
    println!("{text}"); // visible with --nocapture: a sample of what people read
    for needle in [
        "by verdict:",
        "auto-forwards of marked mail: 1",
        "alice@dept.gov.uk -> gmail.com",
        "NOT blocked (shadow)",
        "label conflicts: 1",
        "top senders of blocked mail:",
        "CoCo evidence:",
        "[exceptions] labels (MUST)",
    ] {
        assert!(text.contains(needle), "missing {needle:?} in\n{text}");
    }
    let json: serde_json::Value = serde_json::from_str(&r.render_json()).expect("json");
    assert_eq!(json["messages"], 3);
    assert_eq!(json["coco"][1]["id"], "no-auto-forward");
}

#[test]
fn unbounded_report_sees_everything() {
    let r = report(&sample(), None, None);
    assert_eq!(r.records, 8);
    assert_eq!(r.messages, 5);
    assert_eq!(r.by_level.get("unmarked"), Some(&1));
}

#[test]
fn time_bounds_parse_rfc3339_and_dates() {
    let t = parse_time_bound("2026-11-22T09:30:00+01:00", false).expect("rfc3339");
    assert_eq!(format_time(t), "2026-11-22T08:30:00Z");
    let d = parse_time_bound("2026-12-31", true).expect("date");
    assert_eq!(format_time(d), "2027-01-01T00:00:00Z");
    let err = parse_time_bound("yesterday", false).expect_err("bad");
    assert!(err.contains("expected an RFC 3339 time"), "{err}");
}

#[tokio::test]
async fn report_over_written_files() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("audit.jsonl");
    let h = audit::start(&audit_support::config(&path, SyncMode::Batch)).expect("start");
    for n in 0..5 {
        h.record(msg(audit_support::message(n))).await.expect("ack");
    }
    h.shutdown().await.expect("shutdown");
    let loaded = load_records(&[&path]).expect("load");
    assert_eq!(loaded.records.len(), 5);
    assert_eq!(loaded.skipped_lines, 0);
    let r = report(&loaded.records, None, None);
    assert_eq!(r.blocked_forwards.len(), 5);
    assert!(load_records(&[dir.path().join("missing")]).is_err());
}

#[test]
fn audit_config_defaults_and_errors() {
    let c = AuditConfig::default();
    assert_eq!(c.path.to_str(), Some(audit::DEFAULT_AUDIT_PATH));
    assert_eq!(c.path.to_str(), Some("/var/log/markgate/audit.jsonl"));
    assert_eq!(c.sync, SyncMode::Batch);
    assert!(!c.fail_open);
    assert!(c.validate().is_ok());
    let parsed: AuditConfig = toml::from_str(
        "path = \"/tmp/a.jsonl\"\nsync = \"always\"\nmax_size = 1048576\nkeep = 3\nfile_mode = 0o600\n[syslog]\nfacility = \"authpriv\"\nformat = \"bsd\"\n",
    )
    .expect("toml");
    assert_eq!(parsed.sync, SyncMode::Always);
    assert_eq!(parsed.file_mode, 0o600);
    assert!(parsed.validate().is_ok());
    let unknown = toml::from_str::<AuditConfig>("fail_opn = true\n").expect_err("unknown key");
    assert!(unknown.to_string().contains("fail_opn"), "{unknown}");
    let bad_sync = toml::from_str::<AuditConfig>("sync = \"sometimes\"\n").expect_err("bad sync");
    assert!(bad_sync.to_string().contains("sometimes"), "{bad_sync}");
    let keep0 = AuditConfig {
        keep: 0,
        ..AuditConfig::default()
    };
    assert!(keep0.validate().expect_err("keep").contains("audit.keep"));
    let mut bad_fac = AuditConfig::default();
    bad_fac.syslog.facility = "mail2".into();
    assert!(
        bad_fac
            .validate()
            .expect_err("facility")
            .contains("audit.syslog.facility")
    );
}

// ---------------------------------------------------------------------------------------------
// The counters over records the production filter wrote for real decisions (uk-gpms, built-in),
// in enforce and in shadow mode.
// ---------------------------------------------------------------------------------------------

mod from_the_filter {
    use std::net::IpAddr;

    use markgate::config::Config;
    use markgate::filter::Filter;
    use markgate::milter::handler::{ConnectionFacts, Handler, MessageSink, Verdict as Answer};
    use markgate::policy::{BUILTIN_POLICY, Policy};

    use super::*;

    const COUNCIL: &str = "alice@example-council.gcsx.gov.uk";
    const PARTNER: &str = "bob@partner.gcsx.gov.uk";
    const INTERNET: &str = "carol@gmail.com";
    const INSIDE: &str = "127.0.0.1";
    const OUTSIDE: &str = "192.0.2.7";

    /// One message through the filter's handler, as the milter layer would hand it over.
    async fn send(
        filter: &Filter,
        client: &str,
        from: &str,
        to: &str,
        headers: &[(&str, &str)],
    ) -> Answer {
        let conn = ConnectionFacts {
            addr: Some(client.parse::<IpAddr>().expect("ip")),
            hostname: b"client.test".to_vec(),
            ..ConnectionFacts::default()
        };
        let mut m = filter.begin_message(&conn).expect("begin");
        m.mail_from(format!("<{from}>").as_bytes(), &[])
            .expect("mail");
        m.rcpt_to(format!("<{to}>").as_bytes(), &[]).expect("rcpt");
        m.header(b"From", from.as_bytes()).expect("header");
        m.header(b"To", to.as_bytes()).expect("header");
        for (n, v) in headers {
            m.header(n.as_bytes(), v.as_bytes()).expect("header");
        }
        m.body_chunk(b"See the figures.\r\n").expect("body");
        filter
            .end_of_message(&conn, m)
            .await
            .expect("answered")
            .verdict
    }

    fn figure(r: &audit::Report, control: &str, name: &str) -> u64 {
        let c = r
            .coco
            .iter()
            .find(|c| c.id == control)
            .unwrap_or_else(|| panic!("no control {control}"));
        c.figures
            .iter()
            .find(|(n, _)| n == name)
            .unwrap_or_else(|| panic!("no figure {name:?} in {c:?}"))
            .1
    }

    fn status(r: &audit::Report, control: &str) -> String {
        r.coco
            .iter()
            .find(|c| c.id == control)
            .expect("control")
            .status
            .clone()
    }

    #[tokio::test]
    async fn refused_inbound_and_shadow_messages_are_counted_for_what_they_are() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("audit.jsonl");
        let writer = audit::start(&audit_support::config(&path, SyncMode::Batch)).expect("start");
        let enforce = Filter::fixed(
            Policy::builtin().expect("built-in"),
            Config::default(),
            Some(writer.clone()),
        );
        let shadow_text = BUILTIN_POLICY.replacen("mode = \"enforce\"", "mode = \"shadow\"", 1);
        assert_ne!(shadow_text, BUILTIN_POLICY);
        let shadow = Filter::fixed(
            Policy::from_str("shadow.toml", &shadow_text).expect("shadow policy"),
            Config::default(),
            Some(writer.clone()),
        );
        let restricted = [("Subject", "RESTRICTED: figures")];
        let labelled = [
            ("Subject", "RESTRICTED: figures"),
            ("X-Protective-Marking", "RESTRICTED"),
        ];

        // Enforce mode, outbound: refused above the ceiling; already labelled; labelled by
        // markgate; unmarked. Inbound: a PROTECT mail from outside (labels and the warning
        // are for outbound mail only).
        let refused = send(&enforce, INSIDE, COUNCIL, INTERNET, &restricted).await;
        assert!(
            matches!(&refused, Answer::Reject(Some(r)) if r.code == 550),
            "{refused:?}"
        );
        for (to, headers) in [
            (PARTNER, &labelled[..]),
            (PARTNER, &restricted[..]),
            (INTERNET, &[("Subject", "lunch")][..]),
        ] {
            let v = send(&enforce, INSIDE, COUNCIL, to, headers).await;
            assert_eq!(v, Answer::Continue, "{headers:?}");
        }
        let inbound = send(
            &enforce,
            OUTSIDE,
            "dave@example.org",
            COUNCIL,
            &[("Subject", "PROTECT: minutes")],
        )
        .await;
        assert_eq!(inbound, Answer::Continue);
        // Shadow mode, outbound: would be refused; would get the warning.
        for headers in [&restricted[..], &[("Subject", "lunch")][..]] {
            let v = send(&shadow, INSIDE, COUNCIL, INTERNET, headers).await;
            assert_eq!(v, Answer::Continue, "shadow mode changes no verdict");
        }
        writer.shutdown().await.expect("shutdown");

        let loaded = load_records(&[&path]).expect("load");
        assert_eq!(loaded.skipped_lines, 0);
        assert_eq!(loaded.records.len(), 7);
        let records: Vec<&MessageRecord> = loaded
            .records
            .iter()
            .map(|r| match &r.event {
                AuditEvent::MessageDecision(m) => &**m,
                other => panic!("{other:?}"),
            })
            .collect();
        // The records themselves: the refused one needed labels and did not have them both;
        // the inbound one needs none under a policy that labels outbound mail only.
        assert_eq!(records[0].verdict, Verdict::Reject);
        assert!(records[0].label_required && !records[0].label_present);
        assert!(records[1].label_required && records[1].label_present);
        assert!(records[2].label_required && !records[2].label_present);
        assert!(!records[3].label_required, "unmarked");
        assert_eq!(records[4].direction, Direction::Inbound);
        assert!(!records[4].label_required, "{:?}", records[4]);
        assert_eq!(
            (records[5].mode, records[5].verdict),
            (Mode::Shadow, Verdict::Reject)
        );
        assert!(records[5].label_required && !records[5].label_present);

        let r = report(&loaded.records, None, None);
        assert_eq!(r.messages, 7);
        assert_eq!(r.by_verdict.get("reject"), Some(&2), "one real, one shadow");
        assert_eq!(r.by_mode.get("shadow"), Some(&2));
        // Above the ceiling: blocked in enforce mode, let through in shadow mode.
        let attempts: Vec<(&str, bool)> = r
            .above_ceiling
            .iter()
            .map(|a| (a.destination_domain.as_str(), a.blocked))
            .collect();
        assert_eq!(attempts, vec![("gmail.com", true), ("gmail.com", false)]);
        assert_eq!(r.top_blocked_senders, vec![(COUNCIL.to_string(), 1)]);

        assert_eq!(figure(&r, "labels", "messages requiring labels"), 4);
        assert_eq!(
            figure(&r, "labels", "already labelled"),
            1,
            "the refused message is not 'already labelled'"
        );
        assert_eq!(figure(&r, "labels", "labels applied"), 1);
        assert_eq!(figure(&r, "labels", "refused, so never delivered"), 1);
        assert_eq!(
            figure(&r, "labels", "passed without labels"),
            1,
            "the shadow-mode one"
        );
        assert_eq!(figure(&r, "monitoring-warning", "outbound messages"), 6);
        assert_eq!(
            figure(
                &r,
                "monitoring-warning",
                "outbound messages refused (no warning needed)"
            ),
            1
        );
        assert_eq!(figure(&r, "monitoring-warning", "disclaimers added"), 3);
        assert_eq!(
            figure(
                &r,
                "monitoring-warning",
                "disclaimers skipped (reason in each record)"
            ),
            0,
            "neither the inbound nor a refused message skips the warning"
        );
        assert_eq!(
            figure(
                &r,
                "monitoring-warning",
                "disclaimers not added (shadow mode)"
            ),
            2
        );

        // Enforce mode alone: every control met, none with a refused or inbound exception.
        let enforced: Vec<Record> = loaded
            .records
            .iter()
            .filter(
                |r| matches!(&r.event, AuditEvent::MessageDecision(m) if m.mode == Mode::Enforce),
            )
            .cloned()
            .collect();
        let r = report(&enforced, None, None);
        assert_eq!(r.messages, 5);
        assert_eq!(status(&r, "labels"), "met", "{:?}", r.coco);
        assert_eq!(status(&r, "monitoring-warning"), "met", "{:?}", r.coco);
        assert_eq!(figure(&r, "labels", "passed without labels"), 0);
    }
}
