//! The audit disk fails after markgate has sent a message's modifications to a real Postfix
//! (issue 15): markgate sends large header and body edits as soon as they are decided and holds
//! back only the final answer until the audit record is durable. When the record cannot be
//! written (the audit file system is full), the final answer is a 4xx: Postfix must then drop
//! the edits it already applied, deliver nothing (neither the edited nor the original
//! message), and refuse the message to the SMTP client with a 4xx so the client retries. The
//! retry, once the disk has room again, is delivered exactly once, edited.
//!
//! The audit trail lives on a tiny tmpfs that the test fills (a real ENOSPC, no fault hook in
//! the daemon). Needs root (Postfix's master, and `mount`); skipped with a reason outside CI
//! when that is not possible, and a failure in CI.

mod support;

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use support::daemon::Daemon;
use support::peers;
use support::postfix::{Postfix, PostfixConfig, TOOLS};
use support::smtp::Smtp;

/// A small tmpfs mounted for the test, unmounted when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Result<Self, String> {
        let out = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0755"),
                "tmpfs",
            ])
            .arg(dir)
            .output()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if out.status.success() {
            Ok(Tmpfs(dir.to_path_buf()))
        } else {
            Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
        }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Fill the file system holding `path` to the last byte.
fn fill(path: &Path) {
    let mut f = std::fs::File::create(path).expect("create the filler");
    let block = vec![0x55u8; 4096];
    loop {
        if f.write_all(&block).is_err() {
            break;
        }
    }
    // Whatever is left is smaller than a block; take it byte by byte.
    while f.write_all(&[0x55]).is_ok() && f.flush().is_ok() {}
}

/// One SMTP session with one message; the reply to the end of DATA (or the first refusal).
fn send(port: u16, n: usize, attempt: u32) -> (u16, String) {
    let (mut s, greeting) = Smtp::connect(port);
    if greeting.code / 100 != 2 {
        return (greeting.code, greeting.text());
    }
    for step in [
        "EHLO client.example-council.gcsx.gov.uk",
        "MAIL FROM:<alice.smith@example-council.gcsx.gov.uk>",
        "RCPT TO:<bob.jones@partner.gcsx.gov.uk>",
    ] {
        let r = s.command(step);
        if r.code / 100 != 2 {
            return (r.code, r.text());
        }
    }
    // A body of ~80 KB: the new body (with the disclaimer) is more than one REPLBODY packet,
    // so markgate sends it ahead of the verdict (smaller edits wait for the verdict).
    let mut message = format!(
        "From: Alice Smith <alice.smith@example-council.gcsx.gov.uk>\r\nTo: bob.jones@partner.gcsx.gov.uk\r\n\
         Subject: PROTECT: audit disk {n}\r\nMessage-ID: <audit-disk-{n}@example-council.gcsx.gov.uk>\r\n\
         X-Attempt: {attempt}\r\n\r\nMessage {n}, attempt {attempt}.\r\n"
    );
    for line in 0..1000 {
        message.push_str(&format!(
            "Line {line:04} of the report: figures for the quarter follow in the annex.......\r\n"
        ));
    }
    let (go, done) = s.data(message.as_bytes());
    let r = done.unwrap_or(go);
    let _ = s.command("QUIT");
    (r.code, r.text())
}

#[test]
fn audit_disk_failing_after_the_edits_were_sent_delivers_nothing_and_the_retry_gets_through() {
    if !peers::available("fault_audit_disk", TOOLS, true) {
        return;
    }
    let dir = tempfile::Builder::new()
        .prefix("markgate-auditdisk.")
        .tempdir_in("/tmp")
        .expect("tempdir");
    let mnt = dir.path().join("audit");
    std::fs::create_dir(&mnt).expect("mkdir");
    let fs = match Tmpfs::mount(&mnt, "512k") {
        Ok(fs) => fs,
        Err(e) => {
            assert!(
                !peers::required(),
                "real peers are required (CI) but a tmpfs cannot be mounted: {e}"
            );
            eprintln!("SKIPPED fault_audit_disk: cannot mount a tmpfs ({e})");
            return;
        }
    };
    let audit = mnt.join("audit.jsonl");
    let daemon = Daemon::start_with_audit(&audit, "[logging]\nlevel = \"debug\"");
    let pf = Postfix::start(PostfixConfig {
        extra: vec![("milter_macro_daemon_name".into(), "ORIGINATING".into())],
        ..PostfixConfig::with_milter(daemon.spec.clone())
    });

    // The disk works: the message is edited (label header) and delivered.
    let (code, text) = send(pf.smtp_port, 0, 1);
    assert_eq!(code, 250, "message 0: {text}\n{}", daemon.log());
    let first = pf.wait_delivered(1, Duration::from_secs(60));
    assert!(
        first[0].header("X-Protective-Marking").is_some(),
        "the edits reach Postfix: {first:?}"
    );

    // The audit disk fills up. The audit file's last page may still take a record or two, so
    // send until messages are refused; every accepted one must be delivered, no refused one.
    // Whether a refused message's edits went out before its record failed is a race between
    // the connection and the writer thread (ENOSPC comes back at once), so send until one
    // refusal shows the staged path: its connection's stretch of the log (messages go one at a
    // time) has the staged send before the audit failure.
    fill(&mnt.join("filler"));
    let mut accepted = vec![0usize];
    let mut refused: Vec<usize> = Vec::new();
    let mut staged = None;
    for n in 1..=40 {
        let (code, text) = send(pf.smtp_port, n, 1);
        match code / 100 {
            2 => accepted.push(n),
            4 => {
                assert!(text.starts_with("451"), "a 4xx the client retries: {text}");
                refused.push(n);
                let log = daemon.log();
                let failure = log
                    .rfind("audit record not written")
                    .unwrap_or_else(|| panic!("the refusal is the audit failure:\n{log}"));
                let conn_start = log[..failure]
                    .rfind("milter connection accepted")
                    .expect("the refused message's connection is logged");
                if log[conn_start..failure]
                    .contains("modifications sent ahead of the pending verdict")
                {
                    staged = Some(n);
                    break;
                }
                if refused.len() >= 15 {
                    break;
                }
            }
            _ => panic!("message {n}: {code} {text}"),
        }
    }
    assert!(
        !refused.is_empty(),
        "no message was refused with the audit disk full:\n{}",
        daemon.log()
    );
    let failed = staged.unwrap_or_else(|| {
        panic!(
            "none of {} refused messages had its edits sent ahead of the audit failure:\n{}",
            refused.len(),
            daemon.log()
        )
    });

    // The disk has room again: the client's retries go through.
    std::fs::remove_file(mnt.join("filler")).expect("remove the filler");
    for &n in &refused {
        let (code, text) = send(pf.smtp_port, n, 2);
        assert_eq!(code, 250, "the retry of message {n}: {text}");
    }
    let total = accepted.len() + refused.len();
    let mut delivered = pf.wait_delivered(total, Duration::from_secs(60));
    // Give a stray delivery of a refused attempt time to show up.
    pf.flush();
    std::thread::sleep(Duration::from_millis(500));
    if pf.delivered().len() > delivered.len() {
        delivered = pf.delivered();
    }
    let ids: Vec<(String, String)> = delivered
        .iter()
        .map(|d| {
            (
                d.header("Message-ID").unwrap_or_default().trim().to_owned(),
                d.header("X-Attempt").unwrap_or_default().trim().to_owned(),
            )
        })
        .collect();
    assert_eq!(delivered.len(), total, "{ids:?}");
    for n in &refused {
        let failed_id = format!("<audit-disk-{n}@example-council.gcsx.gov.uk>");
        let of_failed: Vec<&(String, String)> =
            ids.iter().filter(|(m, _)| *m == failed_id).collect();
        assert_eq!(
            of_failed,
            vec![&(failed_id.clone(), "2".to_owned())],
            "only the retry of refused message {n} is delivered (message {failed} had its edits \
             sent ahead), neither edited nor unedited copy of the first attempt"
        );
    }
    for d in &delivered {
        assert!(
            d.header("X-Protective-Marking").is_some(),
            "every delivered message is edited: {d:?}"
        );
    }
    for n in &accepted {
        let id = format!("<audit-disk-{n}@example-council.gcsx.gov.uk>");
        assert_eq!(ids.iter().filter(|(m, _)| *m == id).count(), 1, "{id}");
    }

    // The audit trail holds whole records only and chains across the outage.
    drop(pf);
    drop(daemon);
    let report = markgate::audit::verify_files(&[&audit]);
    assert!(report.ok(), "{report}");
    drop(fs);
}
