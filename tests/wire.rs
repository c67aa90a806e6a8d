//! Wire tests: the milter server in-process (port 0 or a unix socket) driven by a raw
//! MTA-side client, byte for byte where the protocol notes give layouts (§10).

mod common;

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use common::*;
use markgate::milter::ServerConfig;
use markgate::milter::command::Command;
use markgate::milter::flags::{Actions, Offer, Protocol};
use markgate::milter::mta::MtaClient;
use markgate::milter::reply::Reply;

fn encode(replies: &[Reply]) -> Vec<u8> {
    let mut b = BytesMut::new();
    for r in replies {
        r.encode(&mut b);
    }
    b.to_vec()
}

#[tokio::test]
async fn postfix_v6_negotiation_and_one_edited_message_byte_exact() {
    let mut srv = start_tcp().await;
    let mut mta = Mta::negotiate(srv.tcp_client().await, postfix_offer()).await;
    assert_eq!(mta.version, 6);
    assert_eq!(mta.actions, 0x1ff, "all actions incl. SETSYMLIST");
    // NR for every event before EOM, NODATA, NOUNKNOWN, HDR_LEADSPC; nothing we need removed.
    assert_eq!(mta.protocol, 0x1f_f380);
    assert_eq!(mta.protocol & 0x7f, 0, "CONNECT..EOH all still sent");
    let lists: Vec<(u32, &[u8])> = mta.macros.iter().map(|(s, l)| (*s, &l[..])).collect();
    assert_eq!(
        lists,
        vec![
            (
                0,
                &b"j {daemon_name} {daemon_addr} {client_addr} {client_name} {client_port} _"[..]
            ),
            (
                2,
                b"i {auth_type} {auth_authen} {auth_author} {mail_addr} {mail_host} {mail_mailer}"
            ),
            (3, b"i {rcpt_addr} {rcpt_host} {rcpt_mailer}"),
            (5, b"i {daemon_name}"),
        ]
    );
    mta.connect("vm").await;
    let answer = mta.message("edit@example.org", b"Hello body\r\n").await;
    // HDR_LEADSPC negotiated: we put the space back in header values we write.
    let expected: Vec<u8> = [
        &b"\0\0\0\x13hX-Label\0 OFFICIAL\0"[..],
        b"\0\0\0\x1bi\0\0\0\0X-Ins0\0 inserted at 0\0",
        b"\0\0\0\x24m\0\0\0\x01Subject\0 [OFFICIAL] probe test\0",
        b"\0\0\0\x11m\0\0\0\x01Message-Id\0\0",
        b"\0\0\0\x13bnew body\r\nline 2\r\n",
        b"\0\0\0\x13-<bob@example.net>\0",
        b"\0\0\0\x01c",
    ]
    .concat();
    assert_eq!(encode(&answer), expected);
    let seen = srv.handler.seen.lock().unwrap()[0].clone();
    assert_eq!(seen.sender, b"<edit@example.org>");
    assert_eq!(seen.sender_args, vec![b"SIZE=213".to_vec()]);
    assert_eq!(
        seen.rcpts,
        vec![
            b"<carol@example.net>".to_vec(),
            b"<bob@example.net>".to_vec()
        ]
    );
    // The sink never sees the space after the colon; folding stays bare LF.
    assert_eq!(
        seen.headers,
        vec![
            (b"Subject".to_vec(), b"probe test".to_vec()),
            (b"Message-Id".to_vec(), b"<1@example.org>".to_vec()),
            (b"X-Folded".to_vec(), b"first part\n\tsecond part".to_vec()),
            (b"X-Tight".to_vec(), b"nospace".to_vec()),
        ]
    );
    assert_eq!(seen.body, b"Hello body\r\n");
    assert_eq!(seen.facts.hostname, b"[127.0.0.1]");
    assert_eq!(seen.facts.addr, Some("127.0.0.1".parse().unwrap()));
    assert_eq!(seen.facts.port, 35892);
    assert_eq!(seen.facts.helo.as_deref(), Some(&b"vm"[..]));
    assert_eq!(seen.macros.get("j"), Some(&b"mx.example"[..]));
    assert_eq!(seen.macros.get("i"), Some(&b"QID1"[..]));
    assert_eq!(seen.macros.get("mail_addr"), Some(&b"edit@example.org"[..]));
    mta.quit().await;
    srv.shutdown();
    srv.task.await.unwrap().unwrap();
}

#[tokio::test]
async fn v2_mta_gets_a_reply_to_every_event_and_no_leading_space() {
    let srv = start_tcp().await;
    let offer = Offer {
        version: 2,
        actions: Actions(0x3f),
        protocol: Protocol(0x7f),
    };
    let mut mta = Mta::negotiate(srv.tcp_client().await, offer).await;
    assert_eq!(mta.version, 2);
    assert_eq!(mta.actions, 0x3f & 0xff);
    assert_eq!(
        mta.protocol, 0,
        "no NR bits, no NO* bits we want are offered by v2"
    );
    assert!(mta.macros.is_empty(), "no SETSYMLIST offered, so no lists");
    // Mta::step reads a `c` for every event since no NR bit was agreed.
    mta.connect("vm").await;
    let answer = mta.message("edit@example.org", b"x\r\n").await;
    // Without LEADSPC the MTA adds the space; we send values bare.
    assert_eq!(
        answer[0],
        Reply::AddHeader {
            name: b(b"X-Label"),
            value: b(b"OFFICIAL")
        }
    );
    assert_eq!(answer.last(), Some(&Reply::Continue));
    let seen = srv.handler.seen.lock().unwrap()[0].clone();
    assert_eq!(seen.headers[0].1, b"probe test");
    mta.quit().await;
}

#[tokio::test]
async fn actions_and_protocol_zero_mean_v1_defaults() {
    let srv = start_tcp().await;
    let offer = Offer {
        version: 2,
        actions: Actions(0),
        protocol: Protocol(0),
    };
    let mut mta = Mta::negotiate(srv.tcp_client().await, offer).await;
    assert_eq!(mta.actions, 0x0f);
    assert_eq!(mta.protocol & !0x3f, 0);
    assert!(mta.macros.is_empty());
    mta.connect("vm").await;
    assert_eq!(
        mta.message("a@example.org", b"x\r\n").await,
        vec![Reply::Continue]
    );
    mta.quit().await;
}

#[tokio::test]
async fn version_one_mta_is_refused_and_closed() {
    let srv = start_tcp().await;
    let mut c = srv.tcp_client().await;
    c.send(&Command::OptNeg(Offer {
        version: 1,
        actions: Actions(0x0f),
        protocol: Protocol(0x3f),
    }))
    .await
    .unwrap();
    expect_closed(&mut c).await;
}

#[tokio::test]
async fn edits_the_mta_did_not_grant_are_a_tempfail_never_dropped() {
    let srv = start_tcp().await;
    let offer = Offer {
        version: 6,
        actions: Actions(Actions::ADDHDRS.0 | Actions::CHGHDRS.0),
        protocol: Protocol(0x1fffff),
    };
    let mut mta = Mta::negotiate(srv.tcp_client().await, offer).await;
    assert_eq!(mta.actions, 0x11);
    assert!(mta.macros.is_empty(), "SETSYMLIST not offered: no lists");
    mta.connect("vm").await;
    let answer = mta.message("edit@example.org", b"x\r\n").await;
    assert!(is_tempfail(&answer), "{answer:?}");
    // The connection goes on.
    mta.abort().await;
    assert_eq!(
        mta.message("a@example.org", b"x\r\n").await,
        vec![Reply::Continue]
    );
    mta.quit().await;
}

#[tokio::test]
async fn partial_nr_flags_are_honoured() {
    let srv = start_tcp().await;
    // No NR_HDR and no NR_RCPT offered: those get replies, the rest do not.
    let offer = Offer {
        version: 6,
        actions: Actions(0x1ff),
        protocol: Protocol(0x1fffff & !0x80 & !0x8000),
    };
    let mut mta = Mta::negotiate(srv.tcp_client().await, offer).await;
    assert_eq!(mta.protocol & 0x8080, 0);
    mta.connect("vm").await;
    mta.step(macro_cmd(b'M', &[])).await;
    mta.client
        .send(&Command::Mail {
            sender: b(b"<a@b>"),
            args: vec![],
        })
        .await
        .unwrap();
    let r = mta
        .client
        .command(&Command::Rcpt {
            recipient: b(b"<c@d>"),
            args: vec![],
        })
        .await
        .unwrap();
    assert_eq!(r, vec![Reply::Continue]);
    let r = mta
        .client
        .command(&Command::Header {
            name: b(b"Subject"),
            value: b(b" x"),
        })
        .await
        .unwrap();
    assert_eq!(r, vec![Reply::Continue]);
    mta.client.send(&Command::EndOfHeaders).await.unwrap();
    let r = mta
        .client
        .command(&Command::EndOfMessage(Bytes::new()))
        .await
        .unwrap();
    assert_eq!(
        r,
        vec![Reply::Continue],
        "exactly one reply to EOM, nothing stray before"
    );
    mta.quit().await;
}

#[tokio::test]
async fn several_messages_per_connection_with_macros_reset() {
    let srv = start_tcp().await;
    let mut mta = srv.postfix_session().await;
    assert_eq!(
        mta.message("one@example.org", b"1\r\n").await,
        vec![Reply::Continue]
    );
    mta.abort().await;
    // Second message without a MAIL macro packet and with MAIL after EOM (no ABORT between
    // the 2nd and 3rd, as miltertest does).
    mta.client
        .send(&Command::Mail {
            sender: b(b"<two@example.org>"),
            args: vec![],
        })
        .await
        .unwrap();
    assert_eq!(mta.content(b"2\r\n").await, vec![Reply::Continue]);
    assert_eq!(
        mta.message("three@example.org", b"").await,
        vec![Reply::Continue]
    );
    mta.quit().await;
    let seen = srv.handler.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 3);
    assert_eq!(
        seen[0].macros.get("mail_addr"),
        Some(&b"one@example.org"[..])
    );
    assert_eq!(
        seen[1].macros.get("mail_addr"),
        None,
        "message macros reset"
    );
    assert_eq!(
        seen[1].macros.get("j"),
        Some(&b"mx.example"[..]),
        "connection macros kept"
    );
    assert_eq!(seen[1].sender, b"<two@example.org>");
    assert_eq!(seen[1].body, b"2\r\n");
    assert_eq!(
        seen[2].rcpts.len(),
        2,
        "recipients do not leak between messages"
    );
    assert_eq!(seen[2].body, b"", "zero-length body: no BODY packet");
}

#[tokio::test]
async fn abort_mid_body_then_a_clean_message() {
    let srv = start_tcp().await;
    let mut mta = srv.postfix_session().await;
    mta.envelope("first@example.org").await;
    mta.step(Command::Header {
        name: b(b"Subject"),
        value: b(b" a"),
    })
    .await;
    mta.step(Command::EndOfHeaders).await;
    mta.step(Command::Body(b(b"partial"))).await;
    mta.abort().await;
    mta.abort().await;
    let answer = mta.message("second@example.org", b"whole\r\n").await;
    assert_eq!(answer, vec![Reply::Continue]);
    mta.quit().await;
    let seen = srv.handler.seen.lock().unwrap().clone();
    assert_eq!(
        seen.len(),
        1,
        "the aborted message never reached end_of_message"
    );
    assert_eq!(seen[0].body, b"whole\r\n");
    assert_eq!(seen[0].headers.len(), 4);
    assert_eq!(*srv.handler.begun.lock().unwrap(), 2);
}

#[tokio::test]
async fn connection_without_mail_unknown_and_helo_after_mail() {
    let srv = start_tcp().await;
    let mut mta = srv.postfix_session().await;
    mta.step(Command::Unknown { line: b(b"XFOO") }).await;
    mta.step(Command::Mail {
        sender: b(b"<x@example.org>"),
        args: vec![],
    })
    .await;
    mta.step(Command::Rcpt {
        recipient: b(b"<y@example.org>"),
        args: vec![],
    })
    .await;
    // HELO after MAIL without ABORT ends the transaction implicitly.
    mta.step(Command::Helo { name: b(b"again") }).await;
    mta.quit().await;
    assert!(srv.handler.seen.lock().unwrap().is_empty());
}

#[tokio::test]
async fn quit_nc_keeps_the_connection_for_a_new_session() {
    let srv = start_tcp().await;
    let mut mta = Mta::negotiate(srv.tcp_client().await, postfix_offer()).await;
    mta.connect("first").await;
    assert_eq!(
        mta.message("a@example.org", b"x\r\n").await,
        vec![Reply::Continue]
    );
    mta.client.send(&Command::QuitNoClose).await.unwrap();
    // CONNECT again without OPTNEG.
    mta.connect("second").await;
    assert_eq!(
        mta.message("b@example.org", b"y\r\n").await,
        vec![Reply::Continue]
    );
    mta.quit().await;
    let seen = srv.handler.seen.lock().unwrap().clone();
    assert_eq!(seen[1].facts.helo.as_deref(), Some(&b"second"[..]));
}

#[tokio::test]
async fn handler_error_is_451_and_the_next_message_works() {
    let srv = start_tcp().await;
    let mut mta = srv.postfix_session().await;
    let answer = mta.message("error@example.org", b"x\r\n").await;
    assert!(is_tempfail(&answer), "{answer:?}");
    assert!(
        !String::from_utf8_lossy(&encode(&answer)).contains("audit"),
        "internal error text never reaches the MTA"
    );
    mta.abort().await;
    mta.still_accepts().await;
    mta.quit().await;
}

#[tokio::test]
async fn handler_panic_is_451_and_the_connection_keeps_working() {
    let srv = start_tcp().await;
    let mut mta = srv.postfix_session().await;
    let answer = mta.message("panic@example.org", b"x\r\n").await;
    assert!(is_tempfail(&answer), "{answer:?}");
    mta.abort().await;
    mta.still_accepts().await;
    mta.quit().await;
}

#[tokio::test]
async fn sink_failures_and_begin_failures_are_451() {
    let srv = start_tcp().await;
    let mut mta = srv.postfix_session().await;
    assert!(is_tempfail(
        &mta.message("hdrfail@example.org", b"x\r\n").await
    ));
    mta.abort().await;
    assert!(is_tempfail(
        &mta.message("bodypanic@example.org", b"x\r\n").await
    ));
    mta.abort().await;
    mta.still_accepts().await;
    mta.quit().await;

    let mut mta = Mta::negotiate(srv.tcp_client().await, postfix_offer()).await;
    mta.connect("beginfail").await;
    assert!(is_tempfail(&mta.message("ok@example.org", b"x\r\n").await));
    mta.quit().await;
    // Only the ok message reached end_of_message.
    assert_eq!(srv.handler.seen.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn eom_timeout_sends_progress_then_451() {
    let srv = start_tcp().await;
    let mut mta = srv.postfix_session().await;
    let answer = mta.message("slow@example.org", b"x\r\n").await;
    let (last, before) = answer.split_last().unwrap();
    assert!(
        before.len() >= 2,
        "PROGRESS every 200 ms for 1 s: {answer:?}"
    );
    assert!(before.iter().all(|r| *r == Reply::Progress), "{answer:?}");
    assert!(is_tempfail(std::slice::from_ref(last)), "{answer:?}");
    mta.abort().await;
    mta.still_accepts().await;
    mta.quit().await;
}

/// A staged answer with large modifications (a new body of more than one REPLBODY packet):
/// they reach the MTA while the verdict is still pending (the test holds it back until it has
/// read them), then the verdict follows; a verdict that fails after the modifications were
/// sent is a 451 (on which the MTA drops them).
#[tokio::test]
async fn large_modifications_go_out_before_a_pending_verdict_and_a_failed_verdict_is_451() {
    let srv = start_tcp().await;
    let mut mta = srv.postfix_session().await;
    for (sender, ok) in [
        ("laterbig@example.org", true),
        ("laterbigfail@example.org", false),
    ] {
        mta.envelope(sender).await;
        mta.content_sent(b"x\r\n").await;
        // The header and the 150 000-byte body (three REPLBODY packets) arrive while the
        // verdict cannot have been decided yet.
        let mods = mta.packets(4).await;
        assert!(matches!(mods[0], Reply::AddHeader { .. }), "{sender}");
        let body: Vec<u8> = mods[1..]
            .iter()
            .flat_map(|r| match r {
                Reply::ReplaceBody(b) => b.to_vec(),
                other => panic!("{sender}: {other:?}"),
            })
            .collect();
        assert_eq!(body, big_body(), "{sender}");
        srv.handler.gate.notify_one();
        let rest = mta.client.read_answer().await.unwrap();
        if ok {
            assert_eq!(rest, vec![Reply::Continue], "{sender}");
        } else {
            assert!(is_tempfail(&rest), "{sender}: {rest:?}");
        }
        mta.abort().await;
    }
    mta.still_accepts().await;
    mta.quit().await;
}

/// Small modifications wait for the pending verdict and leave in the same write (sending a
/// few hundred bytes ahead costs the MTA a wake-up and saves it nothing); when the verdict
/// fails they are not sent at all.
#[tokio::test]
async fn small_modifications_wait_for_the_pending_verdict_and_are_dropped_when_it_fails() {
    // No PROGRESS (it would carry the held-back modifications out with it) and time to spare.
    let config = ServerConfig {
        progress_interval: Duration::ZERO,
        eom_timeout: Duration::from_secs(30),
        ..test_config()
    };
    let srv = start("inet:127.0.0.1:0", config).await;
    let mut mta = srv.postfix_session().await;
    let edits = mta.message("edit@example.org", b"x\r\n").await;
    mta.abort().await;
    for (sender, ok) in [
        ("later@example.org", true),
        ("laterfail@example.org", false),
    ] {
        mta.envelope(sender).await;
        mta.content_sent(b"x\r\n").await;
        // Nothing arrives while the verdict is held back (a wait that cannot fail spuriously:
        // a slow server sends nothing either).
        let early = tokio::time::timeout(Duration::from_millis(300), mta.client.recv()).await;
        assert!(
            early.is_err(),
            "{sender}: nothing before the verdict: {early:?}"
        );
        srv.handler.gate.notify_one();
        let answer = mta.client.read_answer().await.unwrap();
        if ok {
            assert_eq!(
                answer, edits,
                "{sender}: the edits and the verdict, together"
            );
        } else {
            assert!(is_tempfail(&answer), "{sender}: only the 451: {answer:?}");
        }
        mta.abort().await;
    }
    mta.quit().await;
}

/// The handler's work after its verdict (markgate's log line) runs once the answer has been
/// written: the MTA reads the answer while that work is still waiting for it. When the milter
/// layer answers 451 instead of the handler's verdict, the work is not run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn work_after_a_verdict_runs_once_the_mta_has_the_answer_and_not_after_a_451() {
    let srv = start_tcp().await;
    let mut mta = srv.postfix_session().await;
    let edits = mta.message("edit@example.org", b"x\r\n").await;
    mta.abort().await;
    let answer = mta.message("laterafter@example.org", b"x\r\n").await;
    srv.handler.after.answer_read();
    assert_eq!(answer, edits, "the edits and the verdict");
    mta.abort().await;
    // The connection is served in order: its next answer comes after the work has ended.
    mta.still_accepts().await;
    assert_eq!(*srv.handler.after.ran.lock().unwrap(), vec![true]);

    let answer = mta.message("laterafterbad@example.org", b"x\r\n").await;
    assert!(is_tempfail(&answer), "only the 451: {answer:?}");
    mta.abort().await;
    mta.still_accepts().await;
    assert_eq!(
        *srv.handler.after.ran.lock().unwrap(),
        vec![true],
        "the work of a verdict that was not sent does not run"
    );
    mta.quit().await;
}

/// A pending verdict is under the end-of-message rules: PROGRESS while it is slow, 451 when it
/// outlasts the timeout or panics, and the connection goes on. Large modifications went out
/// first; small ones leave with the first PROGRESS.
#[tokio::test]
async fn a_slow_or_panicking_pending_verdict_gets_progress_then_451() {
    let srv = start_tcp().await;
    let mut mta = srv.postfix_session().await;
    for (sender, mods) in [
        ("laterslow@example.org", 6),
        ("laterbigslow@example.org", 4),
    ] {
        let answer = mta.message(sender, b"x\r\n").await;
        let (last, before) = answer.split_last().unwrap();
        assert!(is_tempfail(std::slice::from_ref(last)), "{answer:?}");
        let progress = before.iter().filter(|r| **r == Reply::Progress).count();
        assert!(progress >= 2, "PROGRESS every 200 ms for 1 s: {answer:?}");
        assert_eq!(before.len(), mods + progress, "{sender}: {answer:?}");
        assert!(
            before[..mods].iter().all(|r| *r != Reply::Progress),
            "{sender}: the modifications first: {answer:?}"
        );
        mta.abort().await;
    }
    for sender in ["laterpanic@example.org", "laterbigpanic@example.org"] {
        let answer = mta.message(sender, b"x\r\n").await;
        assert!(
            is_tempfail(std::slice::from_ref(answer.last().unwrap())),
            "{answer:?}"
        );
        mta.abort().await;
    }
    mta.still_accepts().await;
    mta.quit().await;
}

#[tokio::test]
async fn reject_text_is_sent_as_one_replycode() {
    let srv = start_tcp().await;
    let mut mta = srv.postfix_session().await;
    let answer = mta.message("reject@example.org", b"x\r\n").await;
    assert_eq!(
        encode(&answer),
        b"\0\0\0\x32y550 5.7.1 carol is not cleared for 100%% of this\0".to_vec()
    );
    mta.quit().await;
}

#[tokio::test]
async fn file_body_is_sent_in_contiguous_chunks_of_at_most_65535() {
    let srv = start_tcp().await;
    let mut mta = srv.postfix_session().await;
    let big = vec![b'q'; 200_000];
    let answer = mta.message("bigbody@example.org", &big).await;
    let (last, mods) = answer.split_last().unwrap();
    assert_eq!(*last, Reply::Continue);
    let mut body = Vec::new();
    for m in mods {
        match m {
            Reply::ReplaceBody(c) => {
                assert!(c.len() <= 65_535);
                body.extend_from_slice(c);
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(mods.len(), 3);
    assert_eq!(body, big_body());
    assert_eq!(srv.handler.seen.lock().unwrap()[0].body, big);
    mta.quit().await;
}

#[tokio::test]
async fn oversized_frame_closes_the_connection() {
    let srv = start(
        "inet:127.0.0.1:0",
        ServerConfig {
            max_frame_size: 1024,
            ..test_config()
        },
    )
    .await;
    let mut mta = srv.postfix_session().await;
    mta.envelope("a@example.org").await;
    mta.client
        .send(&Command::Header {
            name: b(b"X-Big"),
            value: Bytes::from(vec![b'v'; 2000]),
        })
        .await
        .unwrap();
    expect_closed(&mut mta.client).await;
    // A header frame over 64 KiB passes with the default cap.
    let srv = start_tcp().await;
    let mut mta = srv.postfix_session().await;
    mta.envelope("a@example.org").await;
    mta.step(Command::Header {
        name: b(b"X-Big"),
        value: Bytes::from(vec![b'v'; 100_000]),
    })
    .await;
    assert_eq!(mta.content(b"x\r\n").await, vec![Reply::Continue]);
    assert_eq!(
        srv.handler.seen.lock().unwrap()[0].headers[0].1.len(),
        100_000
    );
}

#[tokio::test]
async fn garbage_and_protocol_violations_close_the_connection() {
    let srv = start_tcp().await;
    let mut c = srv.tcp_client().await;
    c.send_raw(b"GET / HTTP/1.0\r\n\r\n").await.unwrap();
    expect_closed(&mut c).await;

    let mut c = srv.tcp_client().await;
    c.send_raw(&[0, 0, 0, 0]).await.unwrap();
    expect_closed(&mut c).await;

    // Unknown command code.
    let mut mta = Mta::negotiate(srv.tcp_client().await, postfix_offer()).await;
    mta.client.send_raw(&[0, 0, 0, 1, b'Z']).await.unwrap();
    expect_closed(&mut mta.client).await;

    // A header before MAIL.
    let mut mta = srv.postfix_session().await;
    mta.client
        .send(&Command::Header {
            name: b(b"Subject"),
            value: b(b"x"),
        })
        .await
        .unwrap();
    expect_closed(&mut mta.client).await;

    // A truncated CONNECT payload.
    let mut mta = Mta::negotiate(srv.tcp_client().await, postfix_offer()).await;
    mta.client.send_raw(b"\0\0\0\x05Chost").await.unwrap();
    expect_closed(&mut mta.client).await;

    // The server still serves others.
    let mut mta = srv.postfix_session().await;
    assert_eq!(
        mta.message("a@example.org", b"x\r\n").await,
        vec![Reply::Continue]
    );
    mta.quit().await;
}

#[tokio::test]
async fn read_timeout_closes_an_idle_connection() {
    let srv = start(
        "inet:127.0.0.1:0",
        ServerConfig {
            read_timeout: Duration::from_millis(300),
            ..test_config()
        },
    )
    .await;
    let mut mta = srv.postfix_session().await;
    expect_closed(&mut mta.client).await;
}

/// Timeouts configured far beyond any wait (`read = "18446744073709551615s"`) are far
/// deadlines, not an overflow: the connection serves messages and shuts down as usual.
#[tokio::test]
async fn huge_timeouts_serve_messages_and_shut_down() {
    let mut srv = start(
        "inet:127.0.0.1:0",
        ServerConfig {
            read_timeout: Duration::MAX,
            eom_timeout: Duration::MAX,
            shutdown_grace: Duration::MAX,
            ..test_config()
        },
    )
    .await;
    let mut mta = srv.postfix_session().await;
    for _ in 0..2 {
        assert_eq!(
            mta.message("a@example.org", b"x\r\n").await,
            vec![Reply::Continue]
        );
    }
    mta.quit().await;
    srv.shutdown();
    let stopped = tokio::time::timeout(Duration::from_secs(10), &mut srv.task).await;
    assert!(matches!(stopped, Ok(Ok(Ok(())))), "{stopped:?}");
}

#[tokio::test]
async fn unix_socket_mode_stale_file_and_removal() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("markgate.sock");
    // A stale socket left by a dead process.
    drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
    assert!(path.exists());
    let mut srv = start(
        &format!("unix:{}", path.display()),
        ServerConfig {
            socket_mode: 0o600,
            socket_group: Some("root".into()),
            ..test_config()
        },
    )
    .await;
    let meta = std::fs::metadata(&path).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    // A second instance on the same live socket is refused.
    let spec = markgate::milter::ListenSpec::Unix(path.clone());
    let err = markgate::milter::Server::bind(&spec, test_config())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::AddrInUse);

    let client = MtaClient::connect_unix(&path).await.unwrap();
    let mut mta = Mta::negotiate(client, postfix_offer()).await;
    mta.connect("vm").await;
    assert_eq!(
        mta.message("a@example.org", b"x\r\n").await,
        vec![Reply::Continue]
    );
    mta.quit().await;
    srv.shutdown();
    srv.task.await.unwrap().unwrap();
    assert!(!path.exists(), "socket removed on shutdown");

    // A regular file at the path is never removed.
    std::fs::write(&path, b"not a socket").unwrap();
    let err = markgate::milter::Server::bind(&spec, test_config())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::AlreadyExists);
    assert!(path.exists());
}

#[tokio::test]
async fn connection_cap_defers_accepting_never_drops() {
    let srv = start(
        "inet:127.0.0.1:0",
        ServerConfig {
            max_connections: 1,
            ..test_config()
        },
    )
    .await;
    let first = Mta::negotiate(srv.tcp_client().await, postfix_offer()).await;
    let mut second = srv.tcp_client().await;
    second
        .send(&Command::OptNeg(postfix_offer()))
        .await
        .unwrap();
    let waited = tokio::time::timeout(Duration::from_millis(300), second.recv()).await;
    assert!(
        waited.is_err(),
        "second connection must wait while the cap is reached"
    );
    first.quit().await;
    let r = tokio::time::timeout(Duration::from_secs(5), second.recv())
        .await
        .expect("served once a slot frees")
        .unwrap();
    assert!(matches!(r, Some(Reply::OptNeg { .. })));
}

#[tokio::test]
async fn graceful_shutdown_lets_an_in_flight_message_finish() {
    let mut srv = start_tcp().await;
    let mut mta = srv.postfix_session().await;
    mta.envelope("wait@example.org").await;
    // Idle connection: closed promptly at shutdown.
    let mut idle = Mta::negotiate(srv.tcp_client().await, postfix_offer()).await;
    idle.connect("vm").await;
    // Let the server see the commands before shutting down.
    tokio::time::sleep(Duration::from_millis(100)).await;
    srv.shutdown();
    expect_closed(&mut idle.client).await;
    // The in-flight message still completes (handler takes 400 ms).
    let answer = mta.content(b"x\r\n").await;
    let (last, progress) = answer.split_last().unwrap();
    assert_eq!(*last, Reply::Continue);
    assert!(progress.iter().all(|r| *r == Reply::Progress), "{answer:?}");
    // ...and then the connection is closed at the message boundary.
    expect_closed(&mut mta.client).await;
    tokio::time::timeout(Duration::from_secs(5), srv.task)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    // New connections are refused.
    let addr = srv.addr.unwrap();
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}
