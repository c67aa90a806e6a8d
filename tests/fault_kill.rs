//! markgate killed with SIGKILL in the middle of a stream of messages through a real Postfix,
//! then restarted (issue 7, robustness): every message Postfix accepted is delivered exactly
//! once, none is delivered that Postfix did not accept, and none gets through without markgate
//! having handled it (Postfix answers 4xx while markgate is down: `milter_default_action =
//! tempfail`).
//!
//! The daemon is the built binary (`CARGO_BIN_EXE_markgate`) so it can be killed. The kill and
//! the restart are driven by events (messages accepted, tempfails seen), not by sleeps.
//! `MARKGATE_FAULT_LONG=1` sends more messages and kills three times.

mod support;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use support::daemon::Daemon;
use support::peers;
use support::postfix::{Postfix, PostfixConfig, TOOLS};
use support::smtp::Smtp;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fate {
    Accepted,
    Tempfailed,
}

/// One SMTP session sending one message; what Postfix answered at the first refusal or at the
/// end of DATA.
fn send_one(port: u16, n: usize) -> (Fate, String) {
    let (mut s, greeting) = Smtp::connect(port);
    if greeting.code / 100 == 4 {
        return (Fate::Tempfailed, greeting.text());
    }
    let steps = [
        "EHLO client.example-council.gcsx.gov.uk".to_string(),
        "MAIL FROM:<alice.smith@example-council.gcsx.gov.uk>".to_string(),
        "RCPT TO:<bob.jones@partner.gcsx.gov.uk>".to_string(),
    ];
    for step in &steps {
        let r = s.command(step);
        match r.code / 100 {
            2 => {}
            4 => return (Fate::Tempfailed, r.text()),
            _ => panic!("{step} answered {}", r.text()),
        }
    }
    let message = format!(
        "From: Alice Smith <alice.smith@example-council.gcsx.gov.uk>\r\nTo: bob.jones@partner.gcsx.gov.uk\r\n\
         Subject: PROTECT: fault stream {n}\r\nMessage-ID: <fault-{n}@example-council.gcsx.gov.uk>\r\n\r\n\
         Message {n} of the fault stream.\r\n"
    );
    let (go, done) = s.data(message.as_bytes());
    let r = match done {
        Some(r) => r,
        None if go.code / 100 == 4 => return (Fate::Tempfailed, go.text()),
        None => panic!("DATA answered {}", go.text()),
    };
    let _ = s.command("QUIT");
    match r.code / 100 {
        2 => (Fate::Accepted, r.text()),
        4 => (Fate::Tempfailed, r.text()),
        _ => panic!("message {n} answered {}", r.text()),
    }
}

#[test]
fn sigkill_mid_stream_loses_nothing_and_lets_nothing_through_unhandled() {
    if !peers::available("fault_kill", TOOLS, true) {
        return;
    }
    let long = std::env::var_os("MARKGATE_FAULT_LONG").is_some();
    let (total, kills) = if long { (600, 3) } else { (90, 1) };

    let mut daemon = Daemon::start("");
    // Does this build label mail yet? The pass-through daemon says at start that it does not;
    // once the policy pipeline is in, every delivered message must carry the label header.
    let enforcing = !daemon.log().contains("passes unchanged");
    let pf = Postfix::start(PostfixConfig {
        extra: vec![("milter_macro_daemon_name".into(), "ORIGINATING".into())],
        ..PostfixConfig::with_milter(daemon.spec.clone())
    });

    let fates: Arc<Mutex<HashMap<usize, Fate>>> = Arc::default();
    let accepted = Arc::new(AtomicUsize::new(0));
    let tempfailed = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicBool::new(false));
    // How many kills have happened. The stream keeps flowing while the daemon is killed (so a
    // kill can land in the middle of a message), but once a kill is due it slows down, and it
    // never runs out before the kill: on a busy machine the watching thread may not be
    // scheduled for a while, and a fast stream could otherwise finish first.
    let killed = Arc::new(AtomicUsize::new(0));
    let kill_target = move |k: usize| k * total / (kills + 2);
    let sender = {
        let (fates, accepted, tempfailed, done, killed) = (
            Arc::clone(&fates),
            Arc::clone(&accepted),
            Arc::clone(&tempfailed),
            Arc::clone(&done),
            Arc::clone(&killed),
        );
        let port = pf.smtp_port;
        std::thread::spawn(move || {
            for n in 0..total {
                let next = killed.load(Ordering::SeqCst) + 1;
                if next <= kills && accepted.load(Ordering::SeqCst) >= kill_target(next) {
                    std::thread::sleep(Duration::from_millis(25));
                    let deadline = Instant::now() + Duration::from_secs(120);
                    while total - n < 4
                        && killed.load(Ordering::SeqCst) < next
                        && Instant::now() < deadline
                    {
                        std::thread::sleep(Duration::from_millis(10));
                    }
                }
                let (fate, _) = send_one(port, n);
                match fate {
                    Fate::Accepted => accepted.fetch_add(1, Ordering::SeqCst),
                    Fate::Tempfailed => tempfailed.fetch_add(1, Ordering::SeqCst),
                };
                fates.lock().expect("fates").insert(n, fate);
            }
            done.store(true, Ordering::SeqCst);
        })
    };

    let wait_for = |what: &str, cond: &dyn Fn() -> bool| {
        let deadline = Instant::now() + Duration::from_secs(120);
        while !cond() {
            assert!(
                !done.load(Ordering::SeqCst) || cond(),
                "the stream ended before {what}"
            );
            assert!(Instant::now() < deadline, "gave up waiting for {what}");
            std::thread::sleep(Duration::from_millis(10));
        }
    };
    for k in 1..=kills {
        let target = kill_target(k);
        wait_for("enough accepted messages", &|| {
            accepted.load(Ordering::SeqCst) >= target
        });
        daemon.kill();
        killed.store(k, Ordering::SeqCst);
        let seen = tempfailed.load(Ordering::SeqCst);
        wait_for("Postfix to tempfail while markgate is down", &|| {
            tempfailed.load(Ordering::SeqCst) >= seen + 2
        });
        daemon.restart();
    }
    sender.join().expect("sender thread");

    let fates = fates.lock().expect("fates").clone();
    let accepted_ids: Vec<usize> = (0..total)
        .filter(|n| fates.get(n) == Some(&Fate::Accepted))
        .collect();
    assert!(
        tempfailed.load(Ordering::SeqCst) >= 2 * kills,
        "the outage was not exercised"
    );
    let delivered = pf.wait_delivered(accepted_ids.len(), Duration::from_secs(120));
    // Give a duplicate time to show up (a second delivery would follow the first closely).
    pf.flush();
    std::thread::sleep(Duration::from_millis(500));
    let delivered = if pf.delivered().len() > delivered.len() {
        pf.delivered()
    } else {
        delivered
    };

    let mut count: HashMap<usize, usize> = HashMap::new();
    for d in &delivered {
        let id = d
            .header("Message-ID")
            .and_then(|v| {
                v.trim()
                    .strip_prefix("<fault-")?
                    .split('@')
                    .next()?
                    .parse()
                    .ok()
            })
            .unwrap_or_else(|| panic!("a delivered message without our Message-ID: {d:?}"));
        *count.entry(id).or_default() += 1;
        if enforcing {
            assert!(
                d.header("X-Protective-Marking").is_some(),
                "message {id} was delivered without its label"
            );
        }
    }
    for n in &accepted_ids {
        assert_eq!(
            count.get(n).copied().unwrap_or(0),
            1,
            "message {n} was accepted by Postfix but delivered {} times",
            count.get(n).copied().unwrap_or(0)
        );
    }
    for (n, c) in &count {
        assert_eq!(
            fates.get(n),
            Some(&Fate::Accepted),
            "message {n} was delivered {c} time(s) though Postfix did not accept it"
        );
    }
    // Issue 5: every message Postfix accepted has its audit record, made durable before markgate
    // answered, even though markgate was killed with SIGKILL in the middle of the stream; and the
    // chain still verifies (a record cut off by the kill is flagged and resumed, never silent).
    if enforcing {
        let audit = daemon.dir().join("audit.jsonl");
        let loaded = markgate::audit::load_records(&[&audit]).expect("read the audit trail");
        let audited: std::collections::HashSet<String> = loaded
            .records
            .iter()
            .filter_map(|r| match &r.event {
                markgate::audit::AuditEvent::MessageDecision(m) => m.message_id.clone(),
                _ => None,
            })
            .collect();
        for n in &accepted_ids {
            let id = format!("<fault-{n}@example-council.gcsx.gov.uk>");
            assert!(
                audited.contains(&id),
                "message {n} was accepted by Postfix but has no audit record"
            );
        }
        let verify = markgate::audit::verify_files(&[&audit]);
        assert_eq!(
            verify.exit_code(),
            0,
            "audit chain after SIGKILL:\n{verify}"
        );
    }
    // Every accepted message went through a markgate session: Postfix logs no milter skip.
    let log = pf.maillog();
    assert!(
        !log.contains("milter_default_action = accept"),
        "Postfix let mail through without the milter:\n{log}"
    );
    eprintln!(
        "{} sent, {} accepted and delivered once each, {} tempfailed during {kills} kill(s){}",
        total,
        accepted_ids.len(),
        tempfailed.load(Ordering::SeqCst),
        if enforcing {
            ", every one labelled"
        } else {
            " (pass-through build: no label to check)"
        }
    );
}
