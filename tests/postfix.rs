//! End-to-end tests against a real Postfix on loopback (see `support::postfix`): swaks (or a
//! small SMTP client) → private Postfix → markgate's milter server, running in this process →
//! smtp-sink, which writes every delivered message to a file that the test reads back.
//!
//! Needs root and `postfix`, `swaks` (Debian packages). Without them each test prints why it is
//! skipped, unless real peers are required (`CI=true` or `MARKGATE_REQUIRE_REAL_PEERS=1`), in
//! which case it fails. `scripts/test.sh` installs them.

mod support;

use std::io::{Read, Seek, Write};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use markgate::milter::{ListenSpec, Modification, NewBody, Outcome, ServerConfig, Verdict};
use markgate::transaction::{SpillPolicy, Transaction};

use support::markgate::{Milter, TestHandler, socket_dir, test_server_config};
use support::peers;
use support::ports;
use support::postfix::{Postfix, PostfixConfig, TOOLS, crlf_to_lf, parse_headers};
use support::smtp::Smtp;

const DELIVERY: Duration = Duration::from_secs(60);

fn peers_ok(test: &str) -> bool {
    peers::available(test, TOOLS, true)
}

fn spill(threshold: usize) -> SpillPolicy {
    SpillPolicy {
        threshold,
        directory: None,
    }
}

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A message with the headers Postfix would otherwise add itself (Date, Message-ID, From), a
/// folded header, a repeated header, and body lines that exercise dot-stuffing, blank lines,
/// trailing spaces and 8-bit text. CRLF line ends.
fn sample_message(subject: &str) -> Vec<u8> {
    let mut m = String::new();
    m.push_str("From: Alice Example <alice@example.org>\r\n");
    m.push_str("To: bob@example.net, carol@example.com\r\n");
    m.push_str(&format!("Subject: {subject}\r\n"));
    m.push_str("Date: Sun, 22 Nov 2026 10:00:00 +0000\r\n");
    m.push_str("Message-ID: <sample.1@example.org>\r\n");
    m.push_str("MIME-Version: 1.0\r\n");
    m.push_str("Content-Type: text/plain; charset=utf-8\r\n");
    m.push_str("Content-Transfer-Encoding: 8bit\r\n");
    m.push_str("X-Folded: first part\r\n\tsecond part\r\n   third part\r\n");
    m.push_str("X-Repeat: one\r\n");
    m.push_str("X-Repeat: two\r\n");
    m.push_str("\r\n");
    m.push_str("Hello Bob,\r\n");
    m.push_str(".a line that starts with a dot\r\n");
    m.push_str("..and one with two\r\n");
    m.push_str("\r\n");
    m.push_str("trailing spaces   \r\n");
    m.push_str("Grüße, 8-bit text: £ € ✓\r\n");
    m.push_str("\r\n");
    m.push_str("-- \r\nAlice\r\n");
    m.into_bytes()
}

fn split_message(m: &[u8]) -> (&[u8], &[u8]) {
    let i = m
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("header/body separator");
    (&m[..i + 2], &m[i + 4..])
}

/// The delivered headers without Postfix's own Received line at the top (which the milter never
/// sees), after checking it is there.
fn without_postfix_received(headers: Vec<(String, String)>) -> Vec<(String, String)> {
    let (first, rest) = headers
        .split_first()
        .expect("delivered message has headers");
    assert_eq!(first.0, "Received", "{headers:?}");
    assert!(
        first.1.contains("by testbed.localdomain (Postfix)"),
        "{first:?}"
    );
    rest.to_vec()
}

/// The pieces of a message a test handler reports back, to check what markgate saw.
fn describe(t: &Transaction) -> String {
    format!(
        "seen {} from <{}> rcpts {} headers {} body {}",
        lossy(t.queue_id().unwrap_or(b"?")),
        lossy(t.sender().map(|s| s.bare()).unwrap_or(b"?")),
        t.recipients().len(),
        t.headers().len(),
        t.body_len()
    )
}

/// The harness itself, without any milter: a message sent with swaks arrives in the sink with
/// its envelope and body.
#[test]
fn harness_relays_to_the_sink_without_a_milter() {
    if !peers_ok("harness_relays_to_the_sink_without_a_milter") {
        return;
    }
    let pf = Postfix::start(PostfixConfig::default());
    let r = pf.swaks(&[
        "--from",
        "alice@example.org",
        "--to",
        "bob@example.net,carol@example.com",
        "--header",
        "Subject: harness check",
        "--body",
        "hello",
    ]);
    assert_eq!(r.code, 0, "{}", r.dialog);
    let got = pf.wait_delivered(1, DELIVERY);
    assert_eq!(got.len(), 1);
    let m = &got[0];
    assert!(
        m.mail_args.starts_with("<alice@example.org>"),
        "{}",
        m.mail_args
    );
    let mut rcpts = m.recipients();
    rcpts.sort();
    assert_eq!(rcpts, vec!["bob@example.net", "carol@example.com"]);
    assert_eq!(m.header("Subject").as_deref(), Some("harness check"));
    assert!(m.body().starts_with(b"hello\n"), "{:?}", lossy(m.body()));
}

/// markgate's production filter lets a message through byte for byte: same header list (names,
/// values, order, folding) and same body.
#[test]
fn message_passes_through_unchanged() {
    if !peers_ok("message_passes_through_unchanged") {
        return;
    }
    let milter = Milter::start_tcp(support::markgate::passing_filter(1024 * 1024));
    let pf = Postfix::start(PostfixConfig::with_milter(milter.postfix_spec()));
    let msg = sample_message("unchanged please");
    let r = pf.send_data(
        "alice@example.org",
        &["bob@example.net", "carol@example.com"],
        &msg,
    );
    assert_eq!(r.code, 0, "{}", r.dialog);
    let got = pf.wait_delivered(1, DELIVERY);
    let d = &got[0];
    let (head, body) = split_message(&msg);
    assert_eq!(without_postfix_received(d.headers()), parse_headers(head));
    assert_eq!(d.body(), crlf_to_lf(body).as_slice(), "body changed");
    let mut rcpts = d.recipients();
    rcpts.sort();
    assert_eq!(rcpts, vec!["bob@example.net", "carol@example.com"]);
    assert!(pf.maillog().contains("status=sent"));
}

/// A handler's header addition, subject change (SMFIR_CHGHEADER) and body replacement arrive
/// exactly as asked, everything else untouched; the handler saw the envelope, the headers, the
/// body and the client facts Postfix passed on (faked with XCLIENT).
#[test]
fn handler_edits_arrive_exactly() {
    if !peers_ok("handler_edits_arrive_exactly") {
        return;
    }
    let seen = Arc::new(Mutex::new(Vec::<String>::new()));
    let seen_in = Arc::clone(&seen);
    let handler = TestHandler::new(spill(1024 * 1024), move |t| {
        let conn = t.connection();
        seen_in.lock().unwrap().push(format!(
            "{} client {} [{}] auth {}",
            describe(t),
            lossy(&conn.hostname),
            conn.addr.map(|a| a.to_string()).unwrap_or_default(),
            lossy(t.macros().get("auth_authen").unwrap_or(b"-")),
        ));
        let subject = t.first_header("Subject").expect("a Subject header");
        Outcome {
            verdict: Verdict::Continue,
            modifications: vec![
                Modification::AddHeader {
                    name: "X-Markgate-Test".into(),
                    value: format!("added for {}", lossy(t.queue_id().unwrap_or(b"?"))).into(),
                },
                Modification::ChangeHeader {
                    index: subject.occurrence,
                    name: "Subject".into(),
                    value: [b"[EDITED] ".as_slice(), &subject.value].concat(),
                },
                Modification::ReplaceBody(NewBody::Bytes(Bytes::from_static(
                    b"Replaced body.\r\n.starts with a dot\r\n\r\nlast line\r\n",
                ))),
            ],
        }
    });
    let milter = Milter::start_tcp(handler);
    let pf = Postfix::start(PostfixConfig::with_milter(milter.postfix_spec()));
    let msg = sample_message("please edit me");
    let r = pf.send_data_with(
        "alice@example.org",
        &["bob@example.net"],
        &msg,
        &[
            "--xclient",
            "ADDR=192.0.2.10 NAME=mail.example.com LOGIN=alice",
        ],
    );
    assert_eq!(r.code, 0, "{}", r.dialog);
    let got = pf.wait_delivered(1, DELIVERY);
    let d = &got[0];

    let qid = d.queue_id().expect("queue id in Postfix's Received");
    let (head, _) = split_message(&msg);
    let mut want: Vec<(String, String)> = parse_headers(head)
        .into_iter()
        .map(|(n, v)| {
            if n == "Subject" {
                (n, format!("[EDITED] {v}"))
            } else {
                (n, v)
            }
        })
        .collect();
    want.push(("X-Markgate-Test".into(), format!("added for {qid}")));
    assert_eq!(without_postfix_received(d.headers()), want);
    assert_eq!(
        d.body(),
        b"Replaced body.\n.starts with a dot\n\nlast line\n".as_slice()
    );

    let (_, body) = split_message(&msg);
    let seen = seen.lock().unwrap();
    assert_eq!(
        *seen,
        vec![format!(
            "seen {qid} from <alice@example.org> rcpts 1 headers 11 body {} client mail.example.com [192.0.2.10] auth alice",
            body.len()
        )]
    );
}

fn big_body(lines: usize) -> Vec<u8> {
    let mut b = Vec::with_capacity(lines * 80);
    for i in 0..lines {
        // Varying lengths, a leading dot now and then, never more than 998 bytes a line.
        let dot = if i % 97 == 0 { "." } else { "" };
        writeln!(
            b,
            "{dot}line {i:07} {}\r",
            "abcdefghijklmnopqrstuvwxyz0123456789".repeat(i % 5 + 1)
        )
        .unwrap();
    }
    b
}

/// A message over the spill threshold goes through markgate's production filter intact.
#[test]
fn message_larger_than_the_spill_threshold_passes_intact() {
    if !peers_ok("message_larger_than_the_spill_threshold_passes_intact") {
        return;
    }
    let milter = Milter::start_tcp(support::markgate::passing_filter(64 * 1024));
    let pf = Postfix::start(PostfixConfig::with_milter(milter.postfix_spec()));
    let body = big_body(30_000);
    assert!(body.len() > 3 * 1024 * 1024, "{}", body.len());
    let mut msg = b"From: alice@example.org\r\nTo: bob@example.net\r\nSubject: big\r\n\
        Date: Sun, 22 Nov 2026 10:00:00 +0000\r\nMessage-ID: <big@example.org>\r\n\r\n"
        .to_vec();
    msg.extend_from_slice(&body);
    let r = pf.send_data("alice@example.org", &["bob@example.net"], &msg);
    assert_eq!(r.code, 0, "{}", r.dialog);
    let got = pf.wait_delivered(1, DELIVERY);
    assert!(
        got[0].body() == crlf_to_lf(&body).as_slice(),
        "the big body changed on the way ({} bytes delivered, {} sent)",
        got[0].body().len(),
        body.len()
    );
}

/// Over the spill threshold the handler really gets a spilled body, reads it back, and can
/// stream a replacement from a file (several REPLBODY chunks): body + trailer arrives intact.
#[test]
fn spilled_body_is_read_back_and_replaced_from_a_file() {
    if !peers_ok("spilled_body_is_read_back_and_replaced_from_a_file") {
        return;
    }
    let spilled = Arc::new(AtomicBool::new(false));
    let spilled_in = Arc::clone(&spilled);
    let handler = TestHandler::new(spill(64 * 1024), move |t| {
        spilled_in.store(t.is_spilled(), Ordering::SeqCst);
        let mut file = tempfile::tempfile().expect("temp file");
        std::io::copy(&mut t.body_reader(), &mut file).expect("copy body");
        file.write_all(b"-- \r\nappended by the test handler\r\n")
            .expect("append");
        file.rewind().expect("rewind");
        Outcome {
            verdict: Verdict::Continue,
            modifications: vec![Modification::ReplaceBody(NewBody::File(file))],
        }
    });
    let milter = Milter::start_tcp(handler);
    let pf = Postfix::start(PostfixConfig::with_milter(milter.postfix_spec()));
    let body = big_body(20_000);
    let mut msg =
        b"From: alice@example.org\r\nTo: bob@example.net\r\nSubject: big edit\r\n\r\n".to_vec();
    msg.extend_from_slice(&body);
    let r = pf.send_data("alice@example.org", &["bob@example.net"], &msg);
    assert_eq!(r.code, 0, "{}", r.dialog);
    let got = pf.wait_delivered(1, DELIVERY);
    assert!(spilled.load(Ordering::SeqCst), "the body was not spilled");
    let mut want = crlf_to_lf(&body);
    want.extend_from_slice(b"-- \nappended by the test handler\n");
    assert!(
        got[0].body() == want.as_slice(),
        "replacement differs ({} bytes delivered, {} expected)",
        got[0].body().len(),
        want.len()
    );
}

/// A large PROTECT message through markgate's production filter (built-in policy, 64 KiB
/// spill threshold): judged from a reduced copy, its new body copied back from the spill file
/// and streamed to Postfix in REPLBODY chunks. What arrives is exactly what `markgate policy
/// test`'s path (`filter::evaluate` on the whole message in memory) makes of it.
#[test]
fn a_large_labelled_message_gets_the_streamed_body_the_in_memory_path_makes() {
    if !peers_ok("a_large_labelled_message_gets_the_streamed_body_the_in_memory_path_makes") {
        return;
    }
    use base64::Engine as _;
    let policy = markgate::policy::Policy::builtin().expect("built-in policy");
    let mut config = markgate::config::Config::default();
    config.limits.spill_threshold = 64 * 1024;
    let filter = markgate::filter::Filter::fixed(policy.clone(), config, None);
    let milter = Milter::start_tcp(filter);
    let pf = Postfix::start(PostfixConfig::with_milter(milter.postfix_spec()));

    let from = "alice.smith@example-council.gcsx.gov.uk";
    let to = "bob.jones@partner.gcsx.gov.uk";
    let mut msg = format!(
        "From: {from}\r\nTo: {to}\r\nSubject: PROTECT: the archive\r\n\
         Date: Sun, 22 Nov 2026 10:00:00 +0000\r\nMessage-ID: <large@example-council.gcsx.gov.uk>\r\n\
         MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"zz\"\r\n\r\n\
         --zz\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
    )
    .into_bytes();
    msg.extend_from_slice(&big_body(20_000));
    msg.extend_from_slice(
        b"--zz\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\n",
    );
    let data: Vec<u8> = (0..2_000_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let b64 = base64::engine::general_purpose::STANDARD.encode(&data);
    for line in b64.as_bytes().chunks(76) {
        msg.extend_from_slice(line);
        msg.extend_from_slice(b"\r\n");
    }
    msg.extend_from_slice(b"--zz--\r\n");

    let envelope = markgate::policy::Envelope {
        sender: from.into(),
        recipients: vec![to.into()],
        client_ip: Some("127.0.0.1".parse().expect("ip")),
        auth_user: None,
        daemon_name: None,
        next_hops: Vec::new(),
    };
    let eval =
        markgate::filter::evaluate(&policy, envelope, &markgate::filter::RawSource::new(&msg))
            .expect("evaluate");
    let expected = eval.output().expect("delivered");
    let (_, expected_body) = split_message(&expected);

    let r = pf.send_data(from, &[to], &msg);
    assert_eq!(r.code, 0, "{}", r.dialog);
    let got = pf.wait_delivered(1, DELIVERY);
    assert!(
        got[0]
            .headers()
            .iter()
            .any(|(n, v)| n.eq_ignore_ascii_case("X-Protective-Marking") && v.contains("PROTECT")),
        "no label header: {:?}",
        got[0].headers()
    );
    let want = crlf_to_lf(expected_body);
    assert!(
        got[0].body() == want.as_slice(),
        "the delivered body is not the in-memory path's ({} bytes delivered, {} expected)",
        got[0].body().len(),
        want.len()
    );
    let disclaimer = b"may be subject to recording and/or monitoring";
    let count = got[0]
        .body()
        .windows(disclaimer.len())
        .filter(|w| w == disclaimer)
        .count();
    assert_eq!(count, 1, "the disclaimer is not there exactly once");
}

/// With markgate stopped, Postfix answers 451 (milter_default_action = tempfail) and queues
/// nothing; once markgate is back on the same port, the client's retry is delivered, once.
#[test]
fn stopped_milter_means_451_and_delivery_once_it_is_back() {
    if !peers_ok("stopped_milter_means_451_and_delivery_once_it_is_back") {
        return;
    }
    let port = ports::free_port();
    let milter = Milter::start_tcp_on(port, support::markgate::passing_filter(1024 * 1024));
    let pf = Postfix::start(PostfixConfig::with_milter(milter.postfix_spec()));
    milter.stop();
    assert!(ports::wait_closed(port, 10), "markgate still listening");

    let msg = sample_message("sent while markgate was down");
    let r = pf.send_data("alice@example.org", &["bob@example.net"], &msg);
    assert_ne!(r.code, 0, "swaks should fail: {}", r.dialog);
    let mail_reply = r.reply_to("MAIL FROM").unwrap_or_default();
    assert!(
        mail_reply.starts_with("451 4.7.1"),
        "MAIL FROM answered {mail_reply:?}\n{}",
        r.dialog
    );
    let log = pf.wait_log("milter-reject: MAIL", DELIVERY);
    eprintln!("--- SMTP reply to MAIL FROM with markgate stopped:\n{mail_reply}");
    eprintln!("--- Postfix log with markgate stopped:");
    for line in log.lines().filter(|l| l.to_lowercase().contains("milter")) {
        eprintln!("{line}");
    }
    assert!(log.contains(&format!(
        "connect to Milter service inet:127.0.0.1:{port}: Connection refused"
    )));
    assert!(log.contains("451 4.7.1 Service unavailable - try again later"));
    assert!(pf.queue().contains("Mail queue is empty"), "{}", pf.queue());
    assert_eq!(pf.delivered().len(), 0);

    let _back = Milter::start_tcp_on(port, support::markgate::passing_filter(1024 * 1024));
    let r = pf.send_data("alice@example.org", &["bob@example.net"], &msg);
    assert_eq!(r.code, 0, "{}", r.dialog);
    let got = pf.wait_delivered(1, DELIVERY);
    assert_eq!(got.len(), 1);
    let (_, body) = split_message(&msg);
    assert_eq!(got[0].body(), crlf_to_lf(body).as_slice());
}

/// SIGTERM-style graceful shutdown while a message is being decided: markgate stops accepting,
/// finishes that message (the client gets 250 and the message is delivered), then exits.
#[test]
fn graceful_shutdown_finishes_the_message_in_flight() {
    if !peers_ok("graceful_shutdown_finishes_the_message_in_flight") {
        return;
    }
    let handler = TestHandler::new(spill(1024 * 1024), |_| Outcome {
        verdict: Verdict::Continue,
        modifications: vec![Modification::AddHeader {
            name: "X-Markgate-Test".into(),
            value: b"decided during shutdown".to_vec(),
        }],
    })
    .with_delay(Duration::from_secs(2));
    let deciding = handler.deciding();
    let milter = Milter::start_tcp(handler);
    let port = milter.port().expect("tcp port");
    let pf = Arc::new(Postfix::start(PostfixConfig::with_milter(
        milter.postfix_spec(),
    )));
    let sender = {
        let pf = Arc::clone(&pf);
        std::thread::spawn(move || {
            pf.send_data(
                "alice@example.org",
                &["bob@example.net"],
                &sample_message("in flight at shutdown"),
            )
        })
    };
    let deadline = std::time::Instant::now() + DELIVERY;
    while deciding.load(Ordering::SeqCst) == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the message never reached markgate"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    // Returns once the server has finished: the message in flight first.
    milter.stop();
    assert!(!ports::is_listening(port), "still accepting after shutdown");
    let r = sender.join().expect("sender thread");
    assert_eq!(r.code, 0, "{}", r.dialog);
    let got = pf.wait_delivered(1, DELIVERY);
    assert_eq!(
        got[0].header("X-Markgate-Test").as_deref(),
        Some("decided during shutdown")
    );
}

/// Mail Postfix accepted was filtered before it was queued: held in the queue
/// (`defer_transports`), it is delivered by a flush with its edits even after markgate stopped.
#[test]
fn queued_mail_is_delivered_by_a_flush_after_markgate_stopped() {
    if !peers_ok("queued_mail_is_delivered_by_a_flush_after_markgate_stopped") {
        return;
    }
    let handler = TestHandler::new(spill(1024 * 1024), |_| Outcome {
        verdict: Verdict::Continue,
        modifications: vec![Modification::AddHeader {
            name: "X-Markgate-Test".into(),
            value: b"filtered before queueing".to_vec(),
        }],
    });
    let milter = Milter::start_tcp(handler);
    let pf = Postfix::start(PostfixConfig {
        extra: vec![("defer_transports".into(), "smtp".into())],
        ..PostfixConfig::with_milter(milter.postfix_spec())
    });
    let r = pf.send_data(
        "alice@example.org",
        &["bob@example.net"],
        &sample_message("held in the queue"),
    );
    assert_eq!(r.code, 0, "{}", r.dialog);
    pf.wait_log("status=deferred", DELIVERY);
    assert!(pf.queue().contains("bob@example.net"), "{}", pf.queue());
    milter.stop();

    pf.flush();
    let got = pf.wait_delivered(1, DELIVERY);
    assert_eq!(
        got[0].header("X-Markgate-Test").as_deref(),
        Some("filtered before queueing")
    );
}

/// Older Postfix setups may still say `milter_protocol = 2`: markgate negotiates down and its
/// header and body edits still arrive.
#[test]
fn milter_protocol_2_still_gets_edits() {
    if !peers_ok("milter_protocol_2_still_gets_edits") {
        return;
    }
    let handler = TestHandler::new(spill(1024 * 1024), |t| {
        let subject = t.first_header("Subject").expect("Subject");
        Outcome {
            verdict: Verdict::Continue,
            modifications: vec![
                Modification::AddHeader {
                    name: "X-Markgate-Test".into(),
                    value: b"protocol 2".to_vec(),
                },
                Modification::ChangeHeader {
                    index: subject.occurrence,
                    name: "Subject".into(),
                    value: b"[EDITED] v2".to_vec(),
                },
                Modification::ReplaceBody(NewBody::Bytes(Bytes::from_static(b"v2 body\r\n"))),
            ],
        }
    });
    let milter = Milter::start_tcp(handler);
    let pf = Postfix::start(PostfixConfig {
        protocol: 2,
        ..PostfixConfig::with_milter(milter.postfix_spec())
    });
    let r = pf.send_data(
        "alice@example.org",
        &["bob@example.net"],
        &sample_message("old protocol"),
    );
    assert_eq!(r.code, 0, "{}", r.dialog);
    let got = pf.wait_delivered(1, DELIVERY);
    assert_eq!(
        got[0].header("X-Markgate-Test").as_deref(),
        Some("protocol 2")
    );
    assert_eq!(got[0].header("Subject").as_deref(), Some("[EDITED] v2"));
    assert_eq!(got[0].body(), b"v2 body\n");
}

/// Locally submitted mail (the pickup path, `non_smtpd_milters`) that arrives while markgate is
/// down stays in Postfix's maildrop and is delivered by itself once markgate is back.
#[test]
fn local_submission_waits_for_markgate_and_is_delivered() {
    if !peers::available(
        "local_submission_waits_for_markgate_and_is_delivered",
        &["postfix", "postqueue", "smtp-sink", "sendmail"],
        true,
    ) {
        return;
    }
    let port = ports::free_port();
    let milter_spec = format!("inet:127.0.0.1:{port}");
    let pf = Postfix::start(PostfixConfig {
        non_smtpd: true,
        ..PostfixConfig::with_milter(milter_spec)
    });
    let msg = b"From: alice@example.org\r\nTo: bob@example.net\r\nSubject: local\r\n\r\nqueued locally\r\n";
    let (code, out) = pf.sendmail("alice@example.org", &["bob@example.net"], msg);
    assert_eq!(code, 0, "sendmail: {out}");
    let log = pf.wait_log(
        &format!("connect to Milter service inet:127.0.0.1:{port}: Connection refused"),
        DELIVERY,
    );
    eprintln!("--- Postfix log for a local submission with markgate down:");
    for line in log
        .lines()
        .filter(|l| l.to_lowercase().contains("milter") || l.contains("pickup"))
    {
        eprintln!("{line}");
    }
    assert_eq!(pf.delivered().len(), 0);

    let seen = Arc::new(AtomicUsize::new(0));
    let seen_in = Arc::clone(&seen);
    let _milter = Milter::start_tcp_on(
        port,
        TestHandler::new(spill(1024 * 1024), move |_| {
            seen_in.fetch_add(1, Ordering::SeqCst);
            Outcome::pass()
        }),
    );
    let got = pf.wait_delivered(1, DELIVERY);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].header("Subject").as_deref(), Some("local"));
    assert_eq!(got[0].body(), b"queued locally\n");
    assert!(
        seen.load(Ordering::SeqCst) >= 1,
        "markgate never saw the message"
    );
}

/// Several messages on one SMTP connection (with an RSET between two of them): markgate gets a
/// fresh transaction for each and its edits land on the right message.
#[test]
fn several_messages_per_smtp_connection() {
    if !peers_ok("several_messages_per_smtp_connection") {
        return;
    }
    let handler = TestHandler::new(spill(1024 * 1024), |t| {
        let subject = t
            .first_header("Subject")
            .map(|h| lossy(&h.value))
            .unwrap_or_default();
        Outcome {
            verdict: Verdict::Continue,
            modifications: vec![Modification::AddHeader {
                name: "X-Markgate-Test".into(),
                value: format!("{} subject {subject}", describe(t)).into_bytes(),
            }],
        }
    });
    let milter = Milter::start_tcp(handler);
    let pf = Postfix::start(PostfixConfig::with_milter(milter.postfix_spec()));
    let (mut smtp, greeting) = Smtp::connect(pf.smtp_port);
    assert_eq!(greeting.code, 220);
    assert_eq!(smtp.command("EHLO client.example.org").code, 250);
    let bodies = ["first body\r\n", "second body, longer\r\n", "third\r\n"];
    for (i, body) in bodies.iter().enumerate() {
        let msg = format!(
            "From: s{i}@example.org\r\nTo: r{i}@example.net\r\nSubject: message {i}\r\n\r\n{body}"
        );
        let to: Vec<String> = (0..=i).map(|k| format!("r{i}.{k}@example.net")).collect();
        let to: Vec<&str> = to.iter().map(String::as_str).collect();
        let reply = smtp.send(&format!("s{i}@example.org"), &to, msg.as_bytes());
        assert_eq!(reply.code, 250, "{}", smtp.transcript.join("\n"));
        if i == 0 {
            assert_eq!(smtp.command("RSET").code, 250);
        }
    }
    assert_eq!(smtp.command("QUIT").code, 221);

    let got = pf.wait_delivered(3, DELIVERY);
    assert_eq!(got.len(), 3);
    let mut tags: Vec<String> = got
        .iter()
        .map(|d| {
            let qid = d.queue_id().unwrap_or_default();
            let tag = d.header("X-Markgate-Test").unwrap_or_default();
            assert!(tag.starts_with(&format!("seen {qid} ")), "{tag} vs {qid}");
            tag.split_once(' ')
                .map(|(_, rest)| rest.split_once(' ').map_or("", |x| x.1).to_string())
                .unwrap_or_default()
        })
        .collect();
    tags.sort();
    // 5 headers: the 3 sent plus the Message-Id and Date that Postfix's cleanup adds before the
    // milter sees the message.
    assert_eq!(
        tags,
        vec![
            "from <s0@example.org> rcpts 1 headers 5 body 12 subject message 0",
            "from <s1@example.org> rcpts 2 headers 5 body 21 subject message 1",
            "from <s2@example.org> rcpts 3 headers 5 body 7 subject message 2",
        ]
    );
    assert!(
        pf.maillog()
            .contains("ehlo=1 mail=3 rcpt=6 data=3 rset=1 quit=1"),
        "{}",
        pf.maillog()
    );
}

/// markgate on a unix socket owned by group postfix with mode 0660: Postfix connects and the
/// edit arrives.
#[test]
fn unix_socket_listener() {
    if !peers_ok("unix_socket_listener") {
        return;
    }
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let (_dir, path) = socket_dir();
    let config = ServerConfig {
        socket_mode: 0o660,
        socket_group: Some("postfix".into()),
        ..test_server_config()
    };
    let handler = TestHandler::new(spill(1024 * 1024), |_| Outcome {
        verdict: Verdict::Continue,
        modifications: vec![Modification::AddHeader {
            name: "X-Markgate-Test".into(),
            value: b"via unix socket".to_vec(),
        }],
    });
    let milter = Milter::start(ListenSpec::Unix(path.clone()), config, handler);
    let meta = std::fs::metadata(&path).expect("socket exists");
    assert_eq!(meta.permissions().mode() & 0o777, 0o660);
    let postfix_gid: u32 = std::fs::read_to_string("/etc/group")
        .unwrap()
        .lines()
        .find_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            (f.first() == Some(&"postfix")).then(|| f.get(2).and_then(|g| g.parse().ok()))?
        })
        .expect("group postfix");
    assert_eq!(meta.gid(), postfix_gid);

    let pf = Postfix::start(PostfixConfig::with_milter(milter.postfix_spec()));
    let r = pf.send_data(
        "alice@example.org",
        &["bob@example.net"],
        &sample_message("over a unix socket"),
    );
    assert_eq!(r.code, 0, "{}", r.dialog);
    let got = pf.wait_delivered(1, DELIVERY);
    assert_eq!(
        got[0].header("X-Markgate-Test").as_deref(),
        Some("via unix socket")
    );
    drop(pf);
    milter.stop();
    assert!(!path.exists(), "socket file left behind");
}

/// The `markgate` binary itself, as the README starts it (here on a free port rather than
/// 8895, so parallel runs do not collide, and with the audit trail in a temporary directory):
/// under the built-in policy unmarked mail from the organisation's network keeps its headers
/// and gains the monitoring disclaimer once, the decision is audited, and SIGTERM stops it
/// cleanly with exit status 0.
#[test]
fn markgate_binary_in_front_of_postfix() {
    if !peers_ok("markgate_binary_in_front_of_postfix") {
        return;
    }
    let port = ports::free_port();
    let audit_dir = tempfile::tempdir().expect("tempdir");
    let audit = audit_dir.path().join("audit.jsonl");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_markgate"))
        .args(["run", "--listen", &format!("inet:127.0.0.1:{port}")])
        .arg("--audit-log")
        .arg(&audit)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start markgate");
    assert!(ports::wait_listening(port, 20), "markgate did not listen");
    let pf = Postfix::start(PostfixConfig::with_milter(format!("inet:127.0.0.1:{port}")));
    let msg = sample_message("through the binary");
    let r = pf.send_data("alice@example.org", &["bob@example.net"], &msg);
    assert_eq!(r.code, 0, "{}", r.dialog);
    let got = pf.wait_delivered(1, DELIVERY);
    let (head, body) = split_message(&msg);
    assert_eq!(
        without_postfix_received(got[0].headers()),
        parse_headers(head)
    );
    let delivered = got[0].body();
    assert!(
        delivered.starts_with(&crlf_to_lf(body)),
        "original body kept"
    );
    let text = String::from_utf8_lossy(delivered);
    assert_eq!(
        text.matches("may be subject to recording and/or monitoring")
            .count(),
        1,
        "{text}"
    );

    let st = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(st.success());
    let status = child.wait().expect("wait for markgate");
    let mut stdout = String::new();
    let mut stderr = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut stdout)
        .unwrap();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert_eq!(status.code(), Some(0), "{stderr}");
    assert_eq!(stdout, "", "markgate run must not write to stdout");
    assert!(stderr.contains("markgate started"), "{stderr}");
    assert!(stderr.contains("message decided"), "{stderr}");
    assert!(
        stderr.contains(&audit.display().to_string()),
        "audit path logged: {stderr}"
    );
    assert!(stderr.contains("markgate stopped"), "{stderr}");
    let records = std::fs::read_to_string(&audit).expect("audit file");
    assert!(records.contains("\"message_decision\""), "{records}");
}
