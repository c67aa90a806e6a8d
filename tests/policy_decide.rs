//! decide() tables over the shipped policies: facts built by the real inspect code from header
//! lists, envelopes varied, every outcome's rule ids asserted.

use markgate::inspect::{forward, markings};
use markgate::policy::decide::{Delivery, DisclaimerDecision, HeaderAction, LevelSource, Verdict};
use markgate::policy::{
    Decision, Direction, Envelope, Facts, FoundMarking, Label, MarkingSource, MarkingStatus,
    Policy, SubjectForm, decide,
};

fn policy(file: &str) -> Policy {
    let path = format!("{}/policies/{file}", env!("CARGO_MANIFEST_DIR"));
    Policy::from_file(std::path::Path::new(&path)).expect("loads")
}

fn facts(p: &Policy, headers: &[(&str, &str)]) -> Facts {
    let hs: Vec<(&[u8], &[u8])> = headers
        .iter()
        .map(|(n, v)| (n.as_bytes(), v.as_bytes()))
        .collect();
    let m = markings::find(p, hs.iter().copied());
    Facts {
        subject: m.subject,
        markings: m.markings,
        forward: forward::evidence(p, hs.iter().copied()),
        disclaimer_present: false,
        signed_or_encrypted: false,
        route_headers: Vec::new(),
        ..Facts::default()
    }
}

fn out(from: &str, rcpts: &[&str]) -> Envelope {
    Envelope {
        sender: from.into(),
        recipients: rcpts.iter().map(|s| s.to_string()).collect(),
        client_ip: Some("127.0.0.1".parse().unwrap()),
        auth_user: None,
        daemon_name: Some("ORIGINATING".into()),
        next_hops: Vec::new(),
    }
}

fn inbound(from: &str, rcpts: &[&str]) -> Envelope {
    Envelope {
        client_ip: Some("198.51.100.7".parse().unwrap()),
        ..out(from, rcpts)
    }
}

const ALICE: &str = "alice.smith@example-council.gcsx.gov.uk";
const BOB: &str = "bob.jones@partner.gcsx.gov.uk";
const NET: &str = "friend@mailbox.example.com";

fn rejected_by(d: &Decision) -> Option<(&str, u16, &str)> {
    match &d.verdict {
        Verdict::Reject { reply, rule } => {
            Some((rule.as_str(), reply.code, reply.enhanced.as_str()))
        }
        _ => None,
    }
}

fn disclaimer_added(d: &Decision) -> bool {
    matches!(d.disclaimer, DisclaimerDecision::Add { .. })
}

#[test]
fn gpms_unmarked_gets_disclaimer_and_no_label() {
    let p = policy("uk-gpms.toml");
    let f = facts(&p, &[("Subject", "Agenda for Thursday")]);
    let d = decide(&p, &f, &out(ALICE, &[BOB, NET]));
    assert_eq!(d.direction, Direction::Outbound);
    assert_eq!(d.verdict, Verdict::Accept);
    assert_eq!(d.effective.source, LevelSource::Assumed);
    assert_eq!(d.effective.level_name, "UNCLASSIFIED");
    assert!(d.labels.header.is_none() && d.labels.subject.is_none());
    assert!(d.labels.reason.contains("never invents"));
    assert!(disclaimer_added(&d));
    assert_eq!(
        d.rule_ids,
        [
            "GPMS-UNMARKED",
            "ceiling:*.gcsx.gov.uk",
            "ceiling:default",
            "COCO-MONITORING"
        ]
    );
}

#[test]
fn gpms_protect_to_gcsx_gets_header_label() {
    let p = policy("uk-gpms.toml");
    let f = facts(
        &p,
        &[("Subject", "PROTECT - PERSONAL: Case conference notes")],
    );
    let d = decide(&p, &f, &out(ALICE, &[BOB]));
    assert_eq!(d.verdict, Verdict::Accept);
    let h = d.labels.header.as_ref().expect("header label");
    assert_eq!(
        (h.name.as_str(), h.value.as_str(), h.action),
        (
            "X-Protective-Marking",
            "PROTECT - PERSONAL",
            HeaderAction::Add
        )
    );
    let s = d.labels.subject.as_ref().expect("subject label");
    assert_eq!(s.marking, "PROTECT - PERSONAL");
    assert_eq!(s.new_subject, None, "already carries the canonical marking");
    assert!(disclaimer_added(&d));
    assert_eq!(d.recipients[0].delivery, Delivery::Deliver);
    assert_eq!(d.recipients[0].rules, ["ceiling:*.gcsx.gov.uk"]);
    assert!(d.rule_ids.contains(&"write".to_owned()));
}

#[test]
fn gpms_header_only_gets_subject_and_normalised_header() {
    let p = policy("uk-gpms.toml");
    let f = facts(
        &p,
        &[
            ("Subject", "RE: FW: Case notes"),
            ("X-Protective-Marking", "restricted - medical"),
        ],
    );
    let d = decide(&p, &f, &out(ALICE, &[BOB]));
    assert_eq!(d.verdict, Verdict::Accept);
    assert_eq!(d.effective.level_name, "RESTRICTED");
    assert_eq!(d.effective.source, LevelSource::Header);
    let h = d.labels.header.as_ref().unwrap();
    assert_eq!(h.value, "RESTRICTED - MEDICAL");
    assert_eq!(h.action, HeaderAction::Replace { existing: 1 });
    assert_eq!(
        d.labels.subject.as_ref().unwrap().new_subject.as_deref(),
        Some("RE: FW: RESTRICTED - MEDICAL: Case notes")
    );
}

#[test]
fn gpms_subject_variant_is_normalised_without_stacking() {
    let p = policy("uk-gpms.toml");
    let f = facts(
        &p,
        &[
            (
                "Subject",
                "=?UTF-8?Q?RE:_PROTECT-PERSONAL_-_caf=C3=A9_notes?=",
            ),
            ("X-Protective-Marking", "PROTECT - PERSONAL"),
        ],
    );
    assert_eq!(
        f.subject.as_deref(),
        Some("RE: PROTECT-PERSONAL - café notes")
    );
    let d = decide(&p, &f, &out(ALICE, &[BOB]));
    assert_eq!(d.verdict, Verdict::Accept, "{:?}", d.hits);
    assert_eq!(d.labels.header.as_ref().unwrap().action, HeaderAction::Keep);
    assert_eq!(
        d.labels.subject.as_ref().unwrap().new_subject.as_deref(),
        Some("RE: PROTECT - PERSONAL: café notes")
    );
    // The byte range points into the decoded subject.
    let m = f.markings.iter().find(|m| !m.source.is_header()).unwrap();
    assert_eq!(
        &f.subject.as_ref().unwrap()[m.range.clone().unwrap()],
        "PROTECT-PERSONAL"
    );
}

#[test]
fn gpms_above_ceiling_rejects_whole_message() {
    let p = policy("uk-gpms.toml");
    let f = facts(
        &p,
        &[("Subject", "RESTRICTED: Planning enforcement file 2009/123")],
    );
    let d = decide(&p, &f, &out(ALICE, &[BOB, NET]));
    assert_eq!(rejected_by(&d), Some(("GPMS-ABOVE-CEILING", 550, "5.7.1")));
    assert_eq!(d.recipients[1].rules, ["GPMS-ABOVE-CEILING"]);
    assert!(d.recipients[1].reason.contains("ceiling is UNCLASSIFIED"));
    assert!(d.labels.header.is_none());
    assert!(!disclaimer_added(&d));
    // nhs.net is exact; mail.nhs.net is not covered by it.
    let d = decide(&p, &f, &out(ALICE, &["gp@nhs.net"]));
    assert_eq!(d.verdict, Verdict::Accept);
    let d = decide(&p, &f, &out(ALICE, &["gp@mail.nhs.net"]));
    assert_eq!(rejected_by(&d).map(|r| r.0), Some("GPMS-ABOVE-CEILING"));
}

#[test]
fn gpms_conflict_and_multiple() {
    let p = policy("uk-gpms.toml");
    let f = facts(
        &p,
        &[
            ("Subject", "RESTRICTED: Board minutes"),
            ("X-Protective-Marking", "PROTECT"),
        ],
    );
    let d = decide(&p, &f, &out(ALICE, &[BOB]));
    assert_eq!(rejected_by(&d), Some(("GPMS-CONFLICT", 550, "5.7.1")));
    assert_eq!(d.effective.level_name, "RESTRICTED", "precedence = highest");
    let f = facts(
        &p,
        &[
            ("Subject", "x"),
            ("X-Protective-Marking", "PROTECT"),
            ("x-protective-marking", "RESTRICTED"),
        ],
    );
    let d = decide(&p, &f, &out(ALICE, &[BOB]));
    assert_eq!(rejected_by(&d).map(|r| r.0), Some("GPMS-MULTIPLE"));
    assert_eq!(
        f.markings[1].source,
        MarkingSource::Header {
            name: "X-Protective-Marking".into(),
            index: 2
        }
    );
}

#[test]
fn gpms_malformed_and_unknown() {
    let p = policy("uk-gpms.toml");
    let f = facts(&p, &[("Subject", "PROTECT - PERSNAL: x")]);
    assert_eq!(f.markings[0].status, MarkingStatus::Malformed);
    assert_eq!(f.markings[0].rejected_codes, ["uk.qualifier.unknown"]);
    let d = decide(&p, &f, &out(ALICE, &[BOB]));
    assert_eq!(rejected_by(&d).map(|r| r.0), Some("GPMS-MALFORMED"));
    let d = decide(&p, &f, &inbound("x@elsewhere.example", &[ALICE]));
    assert_eq!(d.verdict, Verdict::Accept);
    assert_eq!(d.hits[0].rule, "GPMS-MALFORMED-IN");
    let f = facts(
        &p,
        &[
            ("Subject", "x"),
            (
                "X-Protective-Marking",
                "VER=2024.1, NS=gov.au, SEC=OFFICIAL",
            ),
        ],
    );
    assert_eq!(f.markings[0].status, MarkingStatus::Unknown);
    let d = decide(&p, &f, &out(ALICE, &[BOB]));
    assert_eq!(rejected_by(&d).map(|r| r.0), Some("GPMS-UNKNOWN"));
}

#[test]
fn gpms_auto_forward_down_whatever_the_marking() {
    let p = policy("uk-gpms.toml");
    let exchange = [
        ("Subject", "FW: RESTRICTED: Safeguarding referral 4471"),
        (
            "X-MS-Exchange-Inbox-Rules-Loop",
            "alice.smith@example-council.gcsx.gov.uk",
        ),
        (
            "X-MS-Exchange-Generated-Message-Source",
            "Mailbox Rules Agent",
        ),
        ("Auto-Submitted", "auto-forwarded"),
    ];
    let f = facts(&p, &exchange);
    assert_eq!(f.forward.score, 260);
    let d = decide(&p, &f, &out(ALICE, &[NET]));
    let ids: Vec<&str> = d.hits.iter().map(|h| h.rule.as_str()).collect();
    assert_eq!(ids, ["AUTOFWD-DOWN", "GPMS-ABOVE-CEILING"]);
    // The forward rule's reply: the sender must remove the mailbox rule, not readdress mail.
    assert_eq!(rejected_by(&d).map(|r| r.0), Some("AUTOFWD-DOWN"));
    // Unmarked: only the forward rule.
    let f = facts(
        &p,
        &[
            ("Subject", "Newsletter"),
            ("X-Forwarded-To", NET),
            ("X-Forwarded-For", "a b"),
        ],
    );
    let d = decide(&p, &f, &out(ALICE, &[NET]));
    assert_eq!(rejected_by(&d), Some(("AUTOFWD-DOWN", 550, "5.7.1")));
    // To a domain at the council's own level: allowed.
    let d = decide(&p, &f, &out(ALICE, &[BOB]));
    assert_eq!(d.verdict, Verdict::Accept);
    // Each signal alone: weights 100 fire, weaker ones do not.
    for (h, v, fires) in [
        ("X-MS-Exchange-ForwardingLoop", "alice@x;f7a17af6", true),
        ("X-Sieve-Redirected-From", "alice@x", true),
        ("X-MS-Exchange-Inbox-Rules-Loop", "alice@x", true),
        ("Auto-Submitted", "auto-forwarded", true),
        ("Auto-Submitted", "auto-replied", false),
        (
            "X-MS-Exchange-Generated-Message-Source",
            "Mailbox Rules Agent",
            false,
        ),
        ("Resent-From", "alice@x", false),
        ("X-Forwarded-For", "a b", false),
    ] {
        let f = facts(&p, &[("Subject", "x"), (h, v)]);
        let d = decide(&p, &f, &out(ALICE, &[NET]));
        assert_eq!(rejected_by(&d).is_some(), fires, "{h}: {v}");
    }
    let f = facts(
        &p,
        &[
            ("Subject", "x"),
            ("Resent-From", "a@x"),
            ("Resent-To", "b@y"),
            ("X-Forwarded-For", "a b"),
        ],
    );
    assert_eq!(f.forward.score, 100, "Resent-* counts once");
}

#[test]
fn gpms_inbound_forged_label_is_stripped() {
    let p = policy("uk-gpms.toml");
    let f = facts(
        &p,
        &[("Subject", "Invoice"), ("X-Protective-Marking", "PROTECT")],
    );
    let d = decide(&p, &f, &inbound(ALICE, &[ALICE]));
    assert_eq!(d.direction, Direction::Inbound);
    assert_eq!(d.verdict, Verdict::Accept);
    assert!(d.hits.iter().any(|h| h.rule == "GPMS-FORGED"));
    assert_eq!(d.strip_headers, ["X-Protective-Marking"]);
    assert!(
        d.labels.header.is_none(),
        "labels are written outbound only"
    );
    assert!(!disclaimer_added(&d), "the disclaimer is outbound only");
    // A genuine partner label is kept.
    let d = decide(&p, &f, &inbound(BOB, &[ALICE]));
    assert!(d.strip_headers.is_empty());
    assert!(!d.hits.iter().any(|h| h.rule == "GPMS-FORGED"));
}

#[test]
fn gpms_direction_by_authentication() {
    let p = policy("uk-gpms.toml");
    let f = facts(&p, &[("Subject", "hello")]);
    let mut env = inbound(ALICE, &[NET]);
    env.auth_user = Some("alice".into());
    let d = decide(&p, &f, &env);
    assert_eq!(d.direction, Direction::Outbound);
    assert!(d.direction_reason.contains("authenticated as alice"));
    env.auth_user = Some(String::new());
    assert_eq!(decide(&p, &f, &env).direction, Direction::Inbound);
    env.client_ip = Some("::ffff:127.0.0.1".parse().unwrap());
    assert_eq!(decide(&p, &f, &env).direction, Direction::Outbound);
}

#[test]
fn direction_by_daemon_name() {
    let text = std::fs::read_to_string(format!(
        "{}/policies/uk-gpms.toml",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
    .replacen(
        "outbound_when = [\"network\", \"authenticated\"]",
        "outbound_when = [\"daemon\"]\noutbound_daemons = [\"ORIGINATING\"]",
        1,
    );
    let p = Policy::from_str("daemon.toml", &text).expect("loads");
    let f = facts(&p, &[("Subject", "hello")]);
    let mut env = inbound(ALICE, &[NET]);
    env.daemon_name = Some("ORIGINATING".into());
    let d = decide(&p, &f, &env);
    assert_eq!(d.direction, Direction::Outbound);
    assert_eq!(
        d.direction_reason,
        "received by the MTA service ORIGINATING"
    );
    env.daemon_name = Some("smtpd".into());
    assert_eq!(decide(&p, &f, &env).direction, Direction::Inbound);
    let broken = text.replacen("outbound_daemons = [\"ORIGINATING\"]", "", 1);
    let e = Policy::from_str("daemon.toml", &broken).expect_err("daemon without names");
    assert!(e.to_string().contains("without `outbound_daemons`"), "{e}");
}

#[test]
fn stacked_subject_markings_collapse_to_one() {
    let p = policy("uk-gpms.toml");
    for (subject, want) in [
        (
            "PROTECT - PERSONAL: RE: PROTECT - PERSONAL: notes",
            "RE: PROTECT - PERSONAL: notes",
        ),
        (
            "RE: [PROTECT - PERSONAL] RE: PROTECT - PERSONAL: notes",
            "RE: RE: PROTECT - PERSONAL: notes",
        ),
        (
            "RE: PROTECT - PERSONAL: PROTECT - PERSONAL: notes",
            "RE: PROTECT - PERSONAL: notes",
        ),
    ] {
        let f = facts(&p, &[("Subject", subject)]);
        assert_eq!(f.markings.len(), 2, "{subject}: {:?}", f.markings);
        let d = decide(&p, &f, &out(ALICE, &[BOB]));
        assert_eq!(
            d.verdict,
            Verdict::Accept,
            "{subject}: identical markings are not a conflict"
        );
        assert_eq!(
            d.labels.subject.as_ref().unwrap().new_subject.as_deref(),
            Some(want),
            "{subject}"
        );
    }
    // Different stacked markings are the "multiple" situation.
    let f = facts(&p, &[("Subject", "PROTECT: RE: RESTRICTED: notes")]);
    let d = decide(&p, &f, &out(ALICE, &[BOB]));
    assert_eq!(rejected_by(&d).map(|r| r.0), Some("GPMS-MULTIPLE"));
}

#[test]
fn gpms_disclaimer_present_or_signed() {
    let p = policy("uk-gpms.toml");
    let mut f = facts(&p, &[("Subject", "RE: Agenda")]);
    f.disclaimer_present = true;
    let d = decide(&p, &f, &out(ALICE, &[BOB]));
    assert!(
        matches!(&d.disclaimer, DisclaimerDecision::Skip { reason, .. } if reason.contains("already present"))
    );
    f.disclaimer_present = false;
    f.signed_or_encrypted = true;
    let d = decide(&p, &f, &out(ALICE, &[BOB]));
    assert!(
        matches!(&d.disclaimer, DisclaimerDecision::Skip { reason, .. } if reason.contains("signed"))
    );
}

#[test]
fn shadow_mode_changes_nothing_but_reports() {
    let text = std::fs::read_to_string(format!(
        "{}/policies/uk-gpms.toml",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
    .replacen("mode = \"enforce\"", "mode = \"shadow\"", 1);
    let p = Policy::from_str("shadow.toml", &text).expect("loads");
    let f = facts(&p, &[("Subject", "RESTRICTED: file")]);
    let d = decide(&p, &f, &out(ALICE, &[BOB, NET]));
    assert_eq!(d.verdict, Verdict::Accept);
    assert!(d.labels.header.is_none());
    assert!(!disclaimer_added(&d));
    let s = d.shadow.as_ref().expect("shadow report");
    assert_eq!(s.header, "X-Markgate-Shadow");
    assert!(matches!(&s.verdict, Verdict::Reject { rule, .. } if rule == "GPMS-ABOVE-CEILING"));
    assert!(
        s.value
            .starts_with("would reject 550 5.7.1 (rule GPMS-ABOVE-CEILING)"),
        "{}",
        s.value
    );
    let f = facts(&p, &[("Subject", "PROTECT: file")]);
    let d = decide(&p, &f, &out(ALICE, &[BOB]));
    let s = d.shadow.as_ref().unwrap();
    assert_eq!(
        s.value,
        "would accept; label; add disclaimer; policy uk-gpms"
    );
    assert!(s.labels.header.is_some());
}

#[test]
fn gsc_removes_only_offending_recipients() {
    let p = policy("uk-gsc.toml");
    let f = facts(
        &p,
        &[("Subject", "Official Sensitive Personal Data: Referral 4471")],
    );
    assert_eq!(
        f.markings[0].status,
        MarkingStatus::Valid,
        "{:?}",
        f.markings[0].diagnostics
    );
    let env = out("a@example-department.gov.uk", &["b@other.gov.uk", NET]);
    let d = decide(&p, &f, &env);
    assert_eq!(d.verdict, Verdict::Accept);
    assert_eq!(d.recipients[0].delivery, Delivery::Deliver);
    assert_eq!(d.recipients[1].delivery, Delivery::Remove);
    assert_eq!(d.recipients[1].rules, ["GSC-ABOVE-CEILING"]);
    assert!(
        d.sender_notice
            .as_ref()
            .unwrap()
            .contains("rule GSC-ABOVE-CEILING")
    );
    assert_eq!(
        d.labels.subject.as_ref().unwrap().new_subject.as_deref(),
        Some("OFFICIAL-SENSITIVE PERSONAL DATA: Referral 4471")
    );
    // Everyone removed: refuse instead.
    let d = decide(&p, &f, &out("a@example-department.gov.uk", &[NET]));
    assert_eq!(rejected_by(&d), Some(("GSC-ABOVE-CEILING", 550, "5.7.1")));
    // SECRET never leaves, even to government domains.
    let f = facts(&p, &[("Subject", "SECRET: x")]);
    let d = decide(
        &p,
        &f,
        &out("a@example-department.gov.uk", &["b@other.gov.uk"]),
    );
    assert_eq!(rejected_by(&d).map(|r| r.0), Some("GSC-SECRET"));
    // OFFICIAL is unmarked-equivalent: no labels.
    let f = facts(&p, &[("Subject", "OFFICIAL: x")]);
    let d = decide(&p, &f, &out("a@example-department.gov.uk", &[NET]));
    assert_eq!(d.verdict, Verdict::Accept);
    assert!(d.labels.header.is_none());
}

#[test]
fn epms_outbound() {
    let p = policy("au-epms.toml");
    let me = "carol@agency.gov.au";
    // Unmarked outbound is refused: markgate does not choose for the sender.
    let f = facts(&p, &[("Subject", "Lunch")]);
    let d = decide(&p, &f, &out(me, &["dave@department.gov.au"]));
    assert_eq!(rejected_by(&d), Some(("EPMS-UNMARKED", 550, "5.7.1")));
    // Subject only: the header is added with ORIGIN from the sender.
    let f = facts(
        &p,
        &[(
            "Subject",
            "RE: Tender [SEC=OFFICIAL:Sensitive, ACCESS=Legal-Privilege]",
        )],
    );
    let d = decide(&p, &f, &out(me, &["dave@department.gov.au"]));
    assert_eq!(d.verdict, Verdict::Accept);
    let h = d.labels.header.as_ref().unwrap();
    assert_eq!(
        h.value,
        "VER=2024.1, NS=gov.au, SEC=OFFICIAL:Sensitive, ACCESS=Legal-Privilege, ORIGIN=carol@agency.gov.au"
    );
    assert_eq!(h.action, HeaderAction::Add);
    assert_eq!(d.labels.subject.as_ref().unwrap().new_subject, None);
    // Header without ORIGIN (accepted variant): rewritten with one; subject stacked markings collapse.
    let mut env = out(me, &["dave@department.gov.au"]);
    env.auth_user = Some("carol.jones@agency.gov.au".into());
    let f = facts(
        &p,
        &[
            ("Subject", "RE: RE: Budget [SEC=OFFICIAL] [SEC=OFFICIAL]"),
            (
                "X-Protective-Marking",
                "VER=2024.1, NS=gov.au, SEC=OFFICIAL",
            ),
        ],
    );
    let d = decide(&p, &f, &env);
    assert_eq!(d.verdict, Verdict::Accept, "{:?}", d.hits);
    let h = d.labels.header.as_ref().unwrap();
    assert_eq!(
        h.value,
        "VER=2024.1, NS=gov.au, SEC=OFFICIAL, ORIGIN=carol.jones@agency.gov.au"
    );
    assert_eq!(h.action, HeaderAction::Replace { existing: 1 });
    let s = d.labels.subject.as_ref().unwrap();
    assert_eq!(s.form, SubjectForm::SecSuffix);
    assert_eq!(
        s.new_subject.as_deref(),
        Some("RE: RE: Budget [SEC=OFFICIAL]")
    );
    // Header and subject disagree.
    let f = facts(
        &p,
        &[
            ("Subject", "x [SEC=PROTECTED]"),
            (
                "X-Protective-Marking",
                "VER=2024.1, NS=gov.au, SEC=OFFICIAL, ORIGIN=carol@agency.gov.au",
            ),
        ],
    );
    let d = decide(&p, &f, &out(me, &["dave@department.gov.au"]));
    assert_eq!(rejected_by(&d).map(|r| r.0), Some("EPMS-CONFLICT"));
    assert_eq!(
        d.effective.level_name, "OFFICIAL",
        "the header takes precedence"
    );
    // PROTECTED to the internet.
    let f = facts(&p, &[("Subject", "x [SEC=PROTECTED]")]);
    let d = decide(&p, &f, &out(me, &[NET]));
    assert_eq!(rejected_by(&d).map(|r| r.0), Some("EPMS-ABOVE-CEILING"));
    // Malformed (ASD Blueprint issue #29 spelling).
    let f = facts(&p, &[("Subject", "x [SEC=OFFICIAL-Sensitive]")]);
    let d = decide(&p, &f, &out(me, &["dave@department.gov.au"]));
    assert_eq!(rejected_by(&d).map(|r| r.0), Some("EPMS-MALFORMED"));
    let f = facts(&p, &[("Subject", "x [SEC=D04FB6C2]")]);
    let d = decide(&p, &f, &out(me, &["dave@department.gov.au"]));
    assert_eq!(rejected_by(&d).map(|r| r.0), Some("EPMS-UNKNOWN"));
    let f = facts(
        &p,
        &[("Subject", "x [SEC=OFFICIAL, ACCESS=Personal-Privacy]")],
    );
    let d = decide(&p, &f, &out(me, &["dave@department.gov.au"]));
    assert_eq!(rejected_by(&d).map(|r| r.0), Some("EPMS-MALFORMED"));
}

#[test]
fn epms_inbound_forged_origin() {
    let p = policy("au-epms.toml");
    let f = facts(
        &p,
        &[
            ("Subject", "x"),
            (
                "X-Protective-Marking",
                "VER=2024.1, NS=gov.au, SEC=OFFICIAL, ORIGIN=boss@agency.gov.au",
            ),
        ],
    );
    let d = decide(
        &p,
        &f,
        &inbound("someone@evil.example", &["carol@agency.gov.au"]),
    );
    assert!(d.hits.iter().any(|h| h.rule == "EPMS-FORGED"));
    assert_eq!(d.strip_headers, ["X-Protective-Marking"]);
    let f = facts(
        &p,
        &[
            ("Subject", "x"),
            (
                "X-Protective-Marking",
                "VER=2024.1, NS=gov.au, SEC=OFFICIAL, ORIGIN=dave@department.gov.au",
            ),
        ],
    );
    let d = decide(
        &p,
        &f,
        &inbound("dave@department.gov.au", &["carol@agency.gov.au"]),
    );
    assert!(d.strip_headers.is_empty());
    assert_eq!(d.verdict, Verdict::Accept);
}

/// decide() is total: nonsense facts (out-of-range levels and ranges, empty envelopes) give a
/// decision, never a panic.
#[test]
fn decide_is_total() {
    for file in ["uk-gpms.toml", "uk-gsc.toml", "au-epms.toml"] {
        let p = policy(file);
        let label = Label {
            level: 99,
            level_name: "NONSENSE".into(),
            qualifiers: vec!["Q".into()],
            canonical: "NONSENSE".into(),
            epms: None,
        };
        let weird = FoundMarking {
            source: MarkingSource::Subject {
                form: SubjectForm::Prefix,
            },
            raw: "x".into(),
            #[allow(clippy::reversed_empty_ranges)]
            range: Some(50..2),
            remove_range: Some(3..1000),
            status: MarkingStatus::Valid,
            label: Some(label),
            diagnostics: vec![],
            rejected_codes: vec![],
        };
        let f = Facts {
            subject: Some("é".into()),
            markings: vec![
                weird.clone(),
                FoundMarking {
                    source: MarkingSource::Header {
                        name: "X-Protective-Marking".into(),
                        index: 1,
                    },
                    ..weird
                },
            ],
            ..Facts::default()
        };
        for env in [
            Envelope::default(),
            out("", &["", "@", "a@", "<>", "x@y@z"]),
            inbound("<a@b>", &["c"]),
        ] {
            let d = decide(&p, &f, &env);
            assert_eq!(d.recipients.len(), env.recipients.len());
            let _ = markgate::policy::render::text("m", &f, &d);
            let _ = markgate::policy::render::json("m", &f, &d);
        }
        let d = decide(&p, &Facts::default(), &Envelope::default());
        assert!(d.recipients.is_empty());
    }
}

#[test]
fn gpms_inbound_above_own_level_is_refused() {
    let p = policy("uk-gpms.toml");
    let f = facts(&p, &[("Subject", "SECRET: plans")]);
    let d = decide(&p, &f, &inbound(BOB, &[ALICE]));
    assert_eq!(
        rejected_by(&d),
        Some(("GPMS-ABOVE-CEILING-IN", 550, "5.7.1"))
    );
    let f = facts(&p, &[("Subject", "RESTRICTED: plans")]);
    let d = decide(&p, &f, &inbound(BOB, &[ALICE]));
    assert_eq!(d.verdict, Verdict::Accept);
    assert_eq!(d.recipients[0].ceiling_from, "own");
}

#[test]
fn bracketed_subject_form_is_written_with_brackets() {
    let text = std::fs::read_to_string(format!(
        "{}/policies/uk-gpms.toml",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
    .replacen(
        "subject = \"prefix\"\n\n[domains]",
        "subject = \"bracketed\"\n\n[domains]",
        1,
    );
    let p = Policy::from_str("bracketed.toml", &text).expect("loads");
    assert_eq!(p.write.subject, Some(SubjectForm::Bracketed));
    let f = facts(&p, &[("Subject", "RE: PROTECT - PERSONAL: notes")]);
    let d = decide(&p, &f, &out(ALICE, &[BOB]));
    let s = d.labels.subject.as_ref().unwrap();
    assert_eq!(
        s.marking, "PROTECT - PERSONAL",
        "the writer adds the brackets"
    );
    assert_eq!(s.existing, vec![std::ops::Range { start: 4, end: 22 }]);
    assert_eq!(
        s.new_subject.as_deref(),
        Some("RE: [PROTECT - PERSONAL] notes")
    );
    let f = facts(&p, &[("Subject", "RE: [PROTECT - PERSONAL] notes")]);
    let d = decide(&p, &f, &out(ALICE, &[BOB]));
    assert_eq!(d.labels.subject.as_ref().unwrap().new_subject, None);
}
