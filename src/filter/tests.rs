//! The pipeline and the handler without sockets: decisions of the shipped default policy,
//! variants of it (remove-recipients, shadow mode), the outcome's modification order, the audit
//! record, and the 4xx answers for internal and audit failures.

use std::borrow::Cow;

use super::*;
use crate::alert::IncidentKind;
use crate::audit::record::{
    Cause, Direction as AuditDirection, Edit, Mode as AuditMode, RecipientStatus,
    Verdict as AuditVerdict,
};
use crate::policy::BUILTIN_POLICY;
use crate::policy::decide::Direction;

const COUNCIL: &str = "alice@example-council.gcsx.gov.uk";
const PARTNER: &str = "bob@partner.gcsx.gov.uk";
const INTERNET: &str = "carol@gmail.com";

fn builtin() -> Policy {
    Policy::builtin().expect("the built-in policy loads")
}

/// The built-in policy with one piece of text replaced (the replacement must apply).
fn variant(from: &str, to: &str) -> Policy {
    assert!(BUILTIN_POLICY.contains(from), "{from:?} not in the policy");
    Policy::from_str("variant.toml", &BUILTIN_POLICY.replacen(from, to, 1)).expect("loads")
}

fn removing_policy() -> Policy {
    variant(
        "when = \"above-ceiling\"\ndirection = \"outbound\"\naction = \"reject\"",
        "when = \"above-ceiling\"\ndirection = \"outbound\"\naction = \"remove-recipients\"",
    )
}

fn shadow_policy() -> Policy {
    variant("mode = \"enforce\"", "mode = \"shadow\"")
}

fn outbound(from: &str, to: &[&str]) -> Envelope {
    Envelope {
        sender: from.into(),
        recipients: to.iter().map(|s| s.to_string()).collect(),
        client_ip: Some("127.0.0.1".parse().unwrap()),
        auth_user: None,
        daemon_name: None,
        next_hops: Vec::new(),
    }
}

fn inbound(from: &str, to: &[&str]) -> Envelope {
    Envelope {
        client_ip: Some("192.0.2.7".parse().unwrap()),
        ..outbound(from, to)
    }
}

fn msg(subject: &str, extra: &str, body: &str) -> Vec<u8> {
    format!(
        "From: {COUNCIL}\r\nTo: someone\r\nSubject: {subject}\r\nMessage-ID: <t@x>\r\n{extra}\r\n{body}"
    )
    .into_bytes()
}

fn run(policy: &Policy, env: Envelope, raw: &[u8]) -> Evaluation {
    evaluate(policy, env, &RawSource::new(raw)).expect("evaluates")
}

fn count(hay: &[u8], needle: &str) -> usize {
    String::from_utf8_lossy(hay).matches(needle).count()
}

const DISCLAIMER_WORDS: &str = "may be subject to recording";

#[test]
fn restricted_to_partner_gets_both_labels_and_the_disclaimer() {
    let p = builtin();
    let e = run(
        &p,
        outbound(COUNCIL, &[PARTNER]),
        &msg("RESTRICTED: figures", "", "Hi\r\n"),
    );
    assert!(e.body_inspected);
    assert_eq!(e.verdict, PolicyVerdict::Accept);
    let out = e.output().unwrap();
    assert_eq!(count(&out, "X-Protective-Marking: RESTRICTED\r\n"), 1);
    assert_eq!(count(&out, "Subject: RESTRICTED: figures\r\n"), 1);
    assert_eq!(count(&out, DISCLAIMER_WORDS), 1);
}

#[test]
fn a_protect_subject_without_prefix_gets_the_canonical_prefix() {
    let p = builtin();
    let e = run(
        &p,
        outbound(COUNCIL, &[PARTNER]),
        &msg("RE: [PROTECT - PERSONAL] case notes", "", "x\r\n"),
    );
    let out = String::from_utf8(e.output().unwrap()).unwrap();
    assert!(
        out.contains("X-Protective-Marking: PROTECT - PERSONAL\r\n"),
        "{out}"
    );
    // One marking in the subject, never stacked.
    let subject = out.lines().find(|l| l.starts_with("Subject:")).unwrap();
    assert_eq!(subject.matches("PROTECT").count(), 1, "{subject}");
}

#[test]
fn restricted_to_the_internet_is_refused_with_the_policys_550() {
    let p = builtin();
    let e = run(
        &p,
        outbound(COUNCIL, &[INTERNET]),
        &msg("RESTRICTED: x", "", "x\r\n"),
    );
    let PolicyVerdict::Reject { reply, rule } = &e.verdict else {
        panic!("{:?}", e.verdict)
    };
    assert_eq!((reply.code, reply.enhanced.as_str()), (550, "5.7.1"));
    assert_eq!(rule, "GPMS-ABOVE-CEILING");
    assert!(e.plan.is_none() && e.output().is_none());
    // A refused message is decided from its headers alone.
    assert!(!e.body_inspected);
    let out = outcome(&e, &RawSource::new(b""), &[], &SpillPolicy::default()).unwrap();
    let Verdict::Reject(Some(r)) = &out.verdict else {
        panic!("{:?}", out.verdict)
    };
    assert_eq!(r.code, 550);
    assert!(r.lines.join(" ").contains("GPMS-ABOVE-CEILING"));
    assert!(out.modifications.is_empty());
}

#[test]
fn unmarked_mail_gets_the_disclaimer_once_and_a_second_pass_changes_nothing() {
    let p = builtin();
    let e = run(
        &p,
        outbound(COUNCIL, &[INTERNET]),
        &msg("lunch", "", "see you\r\n"),
    );
    assert_eq!(e.verdict, PolicyVerdict::Accept);
    let out = e.output().unwrap();
    assert_eq!(count(&out, DISCLAIMER_WORDS), 1);
    assert_eq!(
        count(&out, "X-Protective-Marking"),
        0,
        "never invent a marking"
    );
    let again = run(&p, outbound(COUNCIL, &[INTERNET]), &out);
    assert!(again.plan.as_ref().unwrap().is_empty(), "{:?}", again.plan);
    assert_eq!(again.output().unwrap(), out);
}

#[test]
fn exchange_auto_forward_of_restricted_mail_to_the_internet_is_refused() {
    let p = builtin();
    let raw = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/corpus/autoforward-exchange-restricted.eml"
    ))
    .expect("corpus file");
    let e = run(
        &p,
        outbound(
            "alice.smith@example-council.gcsx.gov.uk",
            &["bob.private@mailbox.example.com"],
        ),
        &raw,
    );
    let PolicyVerdict::Reject { reply, .. } = &e.verdict else {
        panic!("{:?}", e.verdict)
    };
    assert_eq!(reply.code, 550);
    assert!(e.facts.forward.is_forward());
    let incidents = incidents(&e, &MessageMeta::default());
    assert!(
        incidents
            .iter()
            .any(|i| i.kind == IncidentKind::BlockedAutoForward),
        "{incidents:?}"
    );
}

#[test]
fn one_recipient_above_its_ceiling_is_removed_and_the_sender_told() {
    let p = removing_policy();
    let e = run(
        &p,
        outbound(COUNCIL, &[PARTNER, INTERNET]),
        &msg("RESTRICTED: x", "", "x\r\n"),
    );
    assert_eq!(e.verdict, PolicyVerdict::Accept);
    assert_eq!(e.removed(), vec![INTERNET]);
    let sent = vec![
        (PARTNER.to_owned(), format!("<{PARTNER}>").into_bytes()),
        (INTERNET.to_owned(), format!("<{INTERNET}>").into_bytes()),
    ];
    let raw = msg("RESTRICTED: x", "", "x\r\n");
    let out = outcome(&e, &RawSource::new(&raw), &sent, &SpillPolicy::default()).unwrap();
    assert_eq!(out.verdict, Verdict::Continue);
    // Header edits first, then one body replacement, then the removal.
    let kinds: Vec<&str> = out
        .modifications
        .iter()
        .map(|m| match m {
            Modification::AddHeader { .. }
            | Modification::InsertHeader { .. }
            | Modification::ChangeHeader { .. } => "header",
            Modification::ReplaceBody(_) => "body",
            Modification::DeleteRecipient { .. } => "delrcpt",
            _ => "other",
        })
        .collect();
    assert_eq!(kinds, vec!["header", "body", "delrcpt"]);
    let Some(Modification::DeleteRecipient { recipient }) = out.modifications.last() else {
        unreachable!()
    };
    assert_eq!(recipient, format!("<{INTERNET}>").as_bytes());
    let notice = sender_notice(&e).expect("a notice");
    assert_eq!(notice.to, COUNCIL);
    assert!(notice.body.contains(INTERNET) && notice.body.contains("GPMS-ABOVE-CEILING"));
    assert!(
        incidents(&e, &MessageMeta::default())
            .iter()
            .any(|i| i.kind == IncidentKind::AboveCeiling && i.recipients == vec![INTERNET])
    );
    let rec = audit_record(&p, &e, &MessageMeta::default());
    let statuses: Vec<_> = rec.recipients.iter().map(|r| (r.status, r.cause)).collect();
    assert_eq!(
        statuses,
        vec![
            (RecipientStatus::Delivered, None),
            (RecipientStatus::Removed, Some(Cause::AboveCeiling))
        ]
    );
}

#[test]
fn the_null_sender_never_gets_a_notice() {
    let p = removing_policy();
    let e = run(
        &p,
        outbound("", &[PARTNER, INTERNET]),
        &msg("RESTRICTED: x", "", "x\r\n"),
    );
    assert_eq!(e.removed(), vec![INTERNET]);
    assert_eq!(sender_notice(&e), None);
}

#[test]
fn shadow_mode_changes_nothing_but_one_header() {
    let p = shadow_policy();
    let raw = msg("RESTRICTED: x", "", "x\r\n");
    let e = run(&p, outbound(COUNCIL, &[INTERNET]), &raw);
    assert_eq!(e.verdict, PolicyVerdict::Accept);
    let plan = e.plan.as_ref().unwrap();
    assert!(plan.body.is_none());
    assert_eq!(plan.header_ops.len(), 1, "{:?}", plan.header_ops);
    let HeaderOp::Add { name, value } = &plan.header_ops[0] else {
        panic!("{:?}", plan.header_ops)
    };
    assert_eq!(name, &p.shadow_header);
    assert!(
        String::from_utf8_lossy(value).contains("would reject"),
        "{value:?}"
    );
    let rec = audit_record(&p, &e, &MessageMeta::default());
    assert_eq!(rec.mode, AuditMode::Shadow);
    assert_eq!(
        rec.verdict,
        AuditVerdict::Reject,
        "the record says what would have happened"
    );
}

#[test]
fn inbound_forged_own_label_is_stripped_and_no_disclaimer_added() {
    let p = builtin();
    let raw = msg(
        "hello",
        "X-Protective-Marking: RESTRICTED\r\n",
        "from outside\r\n",
    );
    let e = run(
        &p,
        inbound(COUNCIL, &["carol@example-council.gcsx.gov.uk"]),
        &raw,
    );
    assert_eq!(e.decision.direction, Direction::Inbound);
    let out = e.output().unwrap();
    assert_eq!(count(&out, DISCLAIMER_WORDS), 0);
    assert!(
        e.decision
            .hits
            .iter()
            .any(|h| h.situation == "forged-label"),
        "{:?}",
        e.decision.hits
    );
    assert_eq!(
        count(&out, "X-Protective-Marking"),
        0,
        "{}",
        String::from_utf8_lossy(&out)
    );
    assert!(
        incidents(&e, &MessageMeta::default())
            .iter()
            .any(|i| i.kind == IncidentKind::ForgedLabel)
    );
}

#[test]
fn the_audit_record_has_what_an_investigator_needs() {
    let p = builtin();
    let e = run(
        &p,
        outbound(COUNCIL, &[PARTNER]),
        &msg("RESTRICTED: x", "", "x\r\n"),
    );
    let meta = MessageMeta {
        queue_id: Some("ABC123".into()),
        message_id: Some("<t@x>".into()),
        size: Some(99),
        ..MessageMeta::default()
    };
    let r = audit_record(&p, &e, &meta);
    assert_eq!(r.queue_id.as_deref(), Some("ABC123"));
    assert_eq!(r.sender, COUNCIL);
    assert_eq!(r.direction, AuditDirection::Outbound);
    assert_eq!(r.effective_level.as_deref(), Some("RESTRICTED"));
    assert!(r.label_required && !r.label_present);
    assert_eq!(r.markings.len(), 1);
    assert_eq!(r.markings[0].location, "subject");
    assert!(
        r.edits
            .iter()
            .any(|e| matches!(e, Edit::LabelHeader { value, .. } if value == "RESTRICTED"))
    );
    assert!(r.edits.iter().any(|e| matches!(e, Edit::Disclaimer { .. })));
    assert_eq!(r.verdict, AuditVerdict::Accept);
    assert_eq!(r.policy_digest, p.digest);
    assert!(r.verdict_rules.contains(&"COCO-MONITORING".to_string()));
}

fn transaction(raw_headers: &[(&str, &str)], body: &[u8], rcpts: &[&str]) -> Transaction {
    let conn = ConnectionFacts {
        addr: Some("127.0.0.1".parse().unwrap()),
        hostname: b"localhost".to_vec(),
        ..ConnectionFacts::default()
    };
    let mut t = Transaction::new(&conn, SpillPolicy::default());
    t.mail_from(format!("<{COUNCIL}>").as_bytes(), &[]).unwrap();
    for r in rcpts {
        t.rcpt_to(format!("<{r}>").as_bytes(), &[]).unwrap();
    }
    for (n, v) in raw_headers {
        t.header(n.as_bytes(), v.as_bytes()).unwrap();
    }
    t.body_chunk(body).unwrap();
    t
}

fn conn() -> ConnectionFacts {
    ConnectionFacts {
        addr: Some("127.0.0.1".parse().unwrap()),
        hostname: b"localhost".to_vec(),
        ..ConnectionFacts::default()
    }
}

/// An audit writer on `path` with the default settings and no syslog copy.
fn audit_at(path: &std::path::Path) -> crate::audit::AuditHandle {
    crate::audit::start(&crate::audit::AuditConfig {
        path: path.to_path_buf(),
        syslog: crate::audit::SyslogConfig {
            enabled: false,
            ..Default::default()
        },
        ..Default::default()
    })
    .unwrap()
}

#[tokio::test]
async fn the_handler_writes_the_audit_record_before_answering() {
    let dir = tempfile::tempdir().unwrap();
    let audit = audit_at(&dir.path().join("audit.jsonl"));
    let f = Filter::fixed(builtin(), Config::default(), Some(audit.clone()));
    let c = conn();
    let mut m = f.begin_message(&c).unwrap();
    let t = transaction(&[("Subject", "RESTRICTED: x")], b"body\r\n", &[PARTNER]);
    // Move the prepared transaction into the message the handler started.
    m.tx = t;
    let out = f.end_of_message(&c, m).await.unwrap();
    assert_eq!(out.verdict, Verdict::Continue);
    assert!(
        out.modifications
            .iter()
            .any(|m| matches!(m, Modification::ReplaceBody(_)))
    );
    let text = std::fs::read_to_string(dir.path().join("audit.jsonl")).unwrap();
    assert_eq!(text.lines().count(), 1, "{text}");
    assert!(text.contains("\"message_decision\"") && text.contains("RESTRICTED"));
    audit.shutdown().await.unwrap();
    assert!(crate::audit::verify_files(&[dir.path().join("audit.jsonl")]).ok());
}

/// The modifications are handed over before the record is written, and the verdict's first
/// poll (the milter layer's, with a no-op waker) leaves it unwritten: so a large new body goes
/// to the MTA while the writer syncs, not after.
#[tokio::test]
async fn the_record_is_written_only_once_the_modifications_are_out() {
    use crate::milter::handler::LaterVerdict;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let audit = audit_at(&path);
    let f = Filter::fixed(builtin(), Config::default(), Some(audit.clone()));
    let c = conn();
    let mut m = f.begin_message(&c).unwrap();
    m.tx = transaction(&[("Subject", "RESTRICTED: x")], b"body\r\n", &[PARTNER]);
    let staged = f.end_of_message_staged(&c, m).await.unwrap();
    assert!(!staged.modifications.is_empty());
    let LaterVerdict::Later(mut later) = staged.verdict else {
        panic!("the verdict waits for the record");
    };
    let lines = || {
        std::fs::read_to_string(&path)
            .unwrap_or_default()
            .lines()
            .count()
    };
    assert_eq!(
        lines(),
        0,
        "nothing written before the modifications are out"
    );
    let waker = std::task::Waker::noop();
    let first = later
        .as_mut()
        .poll(&mut std::task::Context::from_waker(waker));
    assert!(
        first.is_pending(),
        "the first poll must not write the record"
    );
    assert_eq!(lines(), 0);
    assert_eq!(later.await.unwrap().verdict, Verdict::Continue);
    assert_eq!(lines(), 1, "the verdict comes once the record is written");
    audit.shutdown().await.unwrap();
}

#[tokio::test]
async fn an_audit_failure_answers_451() {
    let dir = tempfile::tempdir().unwrap();
    let audit = audit_at(&dir.path().join("audit.jsonl"));
    audit.shutdown().await.unwrap();
    let f = Filter::fixed(builtin(), Config::default(), Some(audit));
    let c = conn();
    let mut m = f.begin_message(&c).unwrap();
    m.tx = transaction(&[("Subject", "hello")], b"body\r\n", &[PARTNER]);
    let out = f.end_of_message(&c, m).await.unwrap();
    let Verdict::Tempfail(Some(r)) = &out.verdict else {
        panic!("{:?}", out.verdict)
    };
    assert_eq!(r.code, 451);
    assert!(out.modifications.is_empty());
}

/// A source whose body cannot be read (a spill file gone bad).
struct BrokenBody(Vec<u8>);

impl MessageSource for BrokenBody {
    fn headers(&self) -> Vec<(&[u8], &[u8])> {
        vec![(b"Subject", b"RESTRICTED: x")]
    }
    fn head(&self) -> Cow<'_, [u8]> {
        Cow::Borrowed(&self.0)
    }
    fn whole(&self) -> io::Result<Cow<'_, [u8]>> {
        Err(io::Error::other("spill file truncated"))
    }
    fn whole_len(&self) -> u64 {
        self.0.len() as u64
    }
}

#[test]
fn an_unreadable_body_is_an_error_not_a_pass() {
    let p = builtin();
    let src = BrokenBody(b"Subject: RESTRICTED: x\r\n\r\n".to_vec());
    match evaluate(&p, outbound(COUNCIL, &[PARTNER]), &src) {
        Err(PipelineError::Body(e)) => assert!(e.to_string().contains("truncated")),
        other => panic!("{other:?}"),
    }
    // A message refused from its headers alone never needs the body.
    let e = evaluate(&p, outbound(COUNCIL, &[INTERNET]), &src).expect("decided from headers");
    assert!(matches!(e.verdict, PolicyVerdict::Reject { .. }));
}

/// The `message decided` line is the verdict's tail, with an audit trail and without one:
/// nothing is logged when the verdict is known, the line comes when the milter layer runs the
/// tail after sending the answer.
#[tokio::test]
async fn the_decided_line_is_left_for_after_the_answer() {
    use crate::milter::handler::LaterVerdict;
    let dir = tempfile::tempdir().unwrap();
    let audit = audit_at(&dir.path().join("audit.jsonl"));
    for trail in [Some(audit.clone()), None] {
        let (logs, _guard) = crate::test_logs::Logs::capture();
        let f = Filter::fixed(builtin(), Config::default(), trail.clone());
        let c = conn();
        let mut m = f.begin_message(&c).unwrap();
        m.tx = transaction(&[("Subject", "RESTRICTED: x")], b"body\r\n", &[PARTNER]);
        let staged = f.end_of_message_staged(&c, m).await.unwrap();
        let LaterVerdict::Later(later) = staged.verdict else {
            panic!("the verdict carries its tail (audit: {})", trail.is_some());
        };
        let settled = later.await.unwrap();
        assert_eq!(settled.verdict, Verdict::Continue);
        assert!(
            !logs.text().contains("message decided"),
            "nothing logged before the answer: {}",
            logs.text()
        );
        let then = settled
            .then
            .expect("the log line is left for after the answer");
        then();
        assert_eq!(
            logs.text().matches("message decided").count(),
            1,
            "{}",
            logs.text()
        );
    }
    audit.shutdown().await.unwrap();
}

#[test]
fn the_policy_snapshot_is_taken_at_mail_and_kept() {
    let f = Filter::fixed(builtin(), Config::default(), None);
    let c = conn();
    let m = f.begin_message(&c).unwrap();
    let before = Arc::clone(&m.live);
    // A reload swaps the cell; the message keeps the policy it started with.
    let fresh = Live {
        config: Config::default(),
        policy: Arc::new(shadow_policy()),
        policy_digest: "new".into(),
        generation: 1,
    };
    f.live.store(Arc::new(fresh));
    assert!(Arc::ptr_eq(&before, &m.live));
    assert_eq!(f.begin_message(&c).unwrap().live.generation, 1);
}

// ---------------------------------------------------------------------------------------------
// A panic inside the pipeline, on each of the paths end_of_message can take: inline (small
// in-memory body), the blocking pool (large in-memory body) and the blocking pool reading a
// spilled body. Driven over a real milter connection so "the connection keeps working" is
// proven by the next message on the same connection.
// ---------------------------------------------------------------------------------------------

mod pipeline_panic {
    use bytes::Bytes;

    use super::*;
    use crate::milter::command::{Command, ConnectAddress};
    use crate::milter::conn::{ConnConfig, serve_connection};
    use crate::milter::flags::{Actions, Offer, Protocol, Wants};
    use crate::milter::mta::MtaClient;
    use crate::milter::reply::Reply;

    /// The text of the injected panic: it must reach the log and never the audit trail.
    const PANIC_TEXT: &str = "injected pipeline panic for a test";

    fn b(s: &[u8]) -> Bytes {
        Bytes::copy_from_slice(s)
    }

    /// One message as Postfix sends it (leading space in header values, the queue id in the
    /// end-of-message macros, ABORT afterwards); returns the end-of-message answer.
    async fn message<S>(
        mta: &mut MtaClient<S>,
        queue_id: &str,
        subject: &str,
        body: &[u8],
    ) -> Vec<Reply>
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    {
        let mut cmds = vec![
            Command::Mail {
                sender: b(format!("<{COUNCIL}>").as_bytes()),
                args: vec![],
            },
            Command::Rcpt {
                recipient: b(format!("<{PARTNER}>").as_bytes()),
                args: vec![],
            },
            Command::Header {
                name: b(b"From"),
                value: b(format!(" {COUNCIL}").as_bytes()),
            },
            Command::Header {
                name: b(b"Subject"),
                value: b(format!(" {subject}").as_bytes()),
            },
            Command::EndOfHeaders,
        ];
        cmds.extend(body.chunks(65_535).map(|c| Command::Body(b(c))));
        cmds.push(Command::Macro {
            stage: b'E',
            pairs: vec![(b(b"i"), b(queue_id.as_bytes()))],
        });
        for cmd in &cmds {
            assert!(mta.step(cmd).await.unwrap().is_empty(), "{cmd:?}");
        }
        let answer = mta
            .command(&Command::EndOfMessage(Bytes::new()))
            .await
            .unwrap();
        mta.send(&Command::Abort).await.unwrap();
        answer
    }

    /// Two messages on one connection, the first with a subject that makes the pipeline
    /// panic, the second ordinary; `body` is the body of both. Returns the two answers, the
    /// audit records and the log.
    async fn panic_then_ordinary(
        body: &[u8],
        spill_threshold: usize,
    ) -> (Vec<Reply>, Vec<Reply>, Vec<serde_json::Value>, String) {
        // The connection and its handler run on the test's current-thread runtime, so a
        // thread-local subscriber sees their log lines.
        let (logs, _guard) = crate::test_logs::Logs::capture();

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let audit = audit_at(&path);
        let mut config = Config::default();
        config.limits.spill_threshold = spill_threshold;
        config.limits.spill_directory = Some(dir.path().to_path_buf());
        let filter = Filter::fixed(builtin(), config, Some(audit.clone())).with_fault(|tx| {
            if tx
                .first_header("Subject")
                .is_some_and(|h| h.value.windows(5).any(|w| w == b"PANIC"))
            {
                panic!("{PANIC_TEXT}");
            }
        });

        let (ours, theirs) = tokio::io::duplex(1 << 20);
        let (_stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let conn_config = Arc::new(ConnConfig {
            max_frame_size: 1 << 20,
            read_timeout: Duration::from_secs(30),
            eom_timeout: Duration::from_secs(30),
            progress_interval: Duration::ZERO,
            wants: Wants::default(),
        });
        let server = tokio::spawn(serve_connection(
            theirs,
            "duplex".into(),
            Arc::new(filter),
            conn_config,
            stop_rx,
        ));
        let mut mta = MtaClient::new(ours);
        mta.negotiate(Offer {
            version: 6,
            actions: Actions::ALL,
            protocol: Protocol::ALL,
        })
        .await
        .unwrap();
        mta.step(&Command::Connect {
            hostname: b(b"localhost"),
            address: ConnectAddress::Inet {
                port: 40000,
                address: b(b"127.0.0.1"),
            },
        })
        .await
        .unwrap();
        mta.step(&Command::Helo {
            name: b(b"localhost"),
        })
        .await
        .unwrap();

        let first = message(&mut mta, "PANIC1", "PANIC please", body).await;
        let second = message(&mut mta, "CALM2", "RESTRICTED: figures", body).await;
        mta.send(&Command::Quit).await.unwrap();
        assert!(mta.recv().await.unwrap().is_none(), "closed after QUIT");
        server.await.unwrap();
        audit.shutdown().await.unwrap();

        assert!(crate::audit::verify_files(std::slice::from_ref(&path)).ok());
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            !text.contains(PANIC_TEXT),
            "the panic message stays out of the audit trail: {text}"
        );
        let records = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let log = logs.text();
        (first, second, records, log)
    }

    fn assert_tempfailed_by_the_filter(answer: &[Reply]) {
        let [Reply::ReplyCode(text)] = answer else {
            panic!("one 451 reply expected: {answer:?}")
        };
        let text = String::from_utf8_lossy(text);
        assert!(
            text.starts_with("451 4.3.0 markgate could not process this message (internal error)"),
            "{text}"
        );
    }

    fn assert_decided_normally(answer: &[Reply]) {
        assert_eq!(answer.last(), Some(&Reply::Continue), "{answer:?}");
        assert!(
            answer
                .iter()
                .any(|r| matches!(r, Reply::AddHeader { name, value }
                if &name[..] == b"X-Protective-Marking" && &value[..] == b" RESTRICTED")),
            "{answer:?}"
        );
        assert!(
            answer.iter().any(|r| matches!(r, Reply::ReplaceBody(_))),
            "{answer:?}"
        );
    }

    /// The internal_error record for the panicked message, then the ordinary decision.
    fn assert_audited(records: &[serde_json::Value], place: &str) {
        let events: Vec<&str> = records
            .iter()
            .map(|r| r["event"].as_str().unwrap())
            .collect();
        assert_eq!(
            events,
            ["internal_error", "message_decision"],
            "{records:?}"
        );
        let e = &records[0]["data"];
        assert_eq!(e["component"], "filter");
        assert_eq!(e["queue_id"], "PANIC1");
        assert_eq!(
            e["error"],
            format!("the decision pipeline panicked ({place}); the details are in the daemon log")
        );
        assert!(
            e["smtp_reply"]
                .as_str()
                .unwrap()
                .starts_with("451 4.3.0 markgate could not process"),
            "{e}"
        );
        assert_eq!(records[0]["severity"], "error");
        assert_eq!(records[1]["data"]["queue_id"], "CALM2");
        assert_eq!(records[1]["data"]["verdict"], "accept");
    }

    fn assert_logged(log: &str, place: &str) {
        let line = log
            .lines()
            .find(|l| l.contains("the decision pipeline panicked; answering 4xx"))
            .unwrap_or_else(|| panic!("no error line in the log:\n{log}"));
        assert!(line.contains("ERROR"), "{line}");
        assert!(line.contains("queue_id=\"PANIC1\""), "{line}");
        assert!(line.contains(&format!("place=\"{place}\"")), "{line}");
        assert!(line.contains(PANIC_TEXT), "{line}");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn inline_panic_is_451_audited_and_the_connection_goes_on() {
        let body = b"Figures attached.\r\n".to_vec();
        assert!(body.len() as u64 <= INLINE_BODY_LIMIT);
        let (first, second, records, log) = panic_then_ordinary(&body, 1 << 20).await;
        assert_tempfailed_by_the_filter(&first);
        assert_decided_normally(&second);
        assert_audited(&records, "inline");
        assert_logged(&log, "inline");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn blocking_pool_panic_is_451_audited_and_the_connection_goes_on() {
        // Above the inline limit, below the spill threshold: decided in memory on the pool.
        let body = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcde\r\n"
            .repeat(5 * 1024)
            .into_bytes();
        assert!(body.len() as u64 > INLINE_BODY_LIMIT);
        let (first, second, records, log) = panic_then_ordinary(&body, 1 << 20).await;
        assert_tempfailed_by_the_filter(&first);
        assert_decided_normally(&second);
        assert_audited(&records, "blocking pool");
        assert_logged(&log, "blocking pool");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn spilled_body_panic_is_451_audited_and_the_connection_goes_on() {
        // A spilled body always goes to the pool, whatever its size.
        let body = "spilled line of text for the pool path, long enough to matter\r\n"
            .repeat(2 * 1024)
            .into_bytes();
        assert!(body.len() as u64 <= INLINE_BODY_LIMIT);
        let (first, second, records, log) = panic_then_ordinary(&body, 4096).await;
        assert_tempfailed_by_the_filter(&first);
        assert_decided_normally(&second);
        assert_audited(&records, "blocking pool");
        assert_logged(&log, "blocking pool");
    }
}
