//! OpenDKIM's `miltertest` plays the MTA against markgate's server running in this process,
//! driven by the Lua scripts in `tests/miltertest/`. An independent MTA-side implementation, so
//! a misunderstanding shared by our server and our own test client still shows up here.
//!
//! Needs `miltertest` (Debian package); skipped with a reason when missing, failing in CI.

mod support;

use std::process::Command;

use markgate::milter::{Modification, NewBody, Outcome, Verdict};
use markgate::transaction::SpillPolicy;

use support::markgate::{Milter, TestHandler};
use support::peers;

const SCRIPT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/miltertest/transaction.lua"
);

fn run_script(milter: &Milter, mode: &str) {
    let out = Command::new(peers::tool("miltertest"))
        .arg("-D")
        .arg(format!("SOCK={}", milter.libmilter_spec()))
        .arg("-D")
        .arg(format!("MODE={mode}"))
        .arg("-s")
        .arg(SCRIPT)
        .output()
        .expect("run miltertest");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.contains(&format!("transaction.lua: PASS ({mode})")),
        "miltertest {mode} failed ({:?}):\n{stdout}\n{stderr}",
        out.status
    );
    // Both messages on the connection were checked.
    assert!(
        stdout.contains("ok MTQID1") && stdout.contains("ok MTQID2"),
        "{stdout}"
    );
}

fn spill() -> SpillPolicy {
    SpillPolicy {
        threshold: 1024 * 1024,
        directory: None,
    }
}

/// The production filter: two full transactions on one connection pass untouched.
#[test]
fn miltertest_production_filter_passes_mail_untouched() {
    if !peers::available(
        "miltertest_production_filter_passes_mail_untouched",
        &["miltertest"],
        false,
    ) {
        return;
    }
    let milter = Milter::start_tcp(support::markgate::passing_filter(1024 * 1024));
    run_script(&milter, "pass");
}

/// A handler that reports what it saw and edits header, subject and body: miltertest sees the
/// edits for each of the two messages, each describing its own message.
#[test]
fn miltertest_sees_each_messages_edits() {
    if !peers::available(
        "miltertest_sees_each_messages_edits",
        &["miltertest"],
        false,
    ) {
        return;
    }
    let handler = TestHandler::new(spill(), |t| {
        let lossy = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        let qid = lossy(t.queue_id().unwrap_or(b"?"));
        let subject = t
            .first_header("Subject")
            .map(|h| (h.occurrence, h.value.clone()));
        let mut modifications = vec![Modification::AddHeader {
            name: "X-Markgate-Test".into(),
            value: format!(
                "seen {qid} from <{}> rcpts {} headers {}",
                lossy(t.sender().map(|s| s.bare()).unwrap_or(b"?")),
                t.recipients().len(),
                t.headers().len()
            )
            .into_bytes(),
        }];
        if let Some((index, value)) = subject {
            modifications.push(Modification::ChangeHeader {
                index,
                name: "Subject".into(),
                value: [b"[EDITED] ".as_slice(), &value].concat(),
            });
        }
        modifications.push(Modification::ReplaceBody(NewBody::Bytes(
            format!("Replaced body for {qid}.\r\n").into(),
        )));
        Outcome {
            verdict: Verdict::Continue,
            modifications,
        }
    });
    let milter = Milter::start_tcp(handler);
    run_script(&milter, "edit");
}
