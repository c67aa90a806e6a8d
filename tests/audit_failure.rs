//! An audit file that cannot be written: the ack is an error (the caller answers 4xx), the
//! writer recovers by itself when the sink works again and records the outage; `fail_open`
//! acknowledges instead. Disk full is simulated with a tiny tmpfs when mounting is permitted.

mod audit_support;

use std::path::{Path, PathBuf};
use std::process::Command;

use markgate::audit::event::EventKind;
use markgate::audit::record::Record;
use markgate::audit::{self, AuditError, AuditEvent, SinkHealth, SyncMode, verify_files};

fn msg(n: u64) -> AuditEvent {
    AuditEvent::MessageDecision(Box::new(audit_support::message(n)))
}

fn kinds(path: &Path) -> Vec<EventKind> {
    audit_support::lines(path)
        .iter()
        .map(|l| {
            Record::from_line(l.as_bytes())
                .expect("record")
                .event
                .kind()
        })
        .collect()
}

#[tokio::test]
async fn unwritable_path_gives_error_acks_and_recovers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("audit.jsonl");
    let rotated = dir.path().join("audit.jsonl.1");
    let h = audit::start(&audit_support::config(&path, SyncMode::Batch)).expect("start");
    let health = h.health();
    h.record(msg(0)).await.expect("ack");

    // The file is rotated away and its path becomes unusable (a directory): even root cannot
    // open it, so this works in every test environment.
    std::fs::rename(&path, &rotated).expect("rename");
    std::fs::create_dir(&path).expect("mkdir");
    assert!(h.reopen().await.is_err());
    for n in 1..=3 {
        match h.record(msg(n)).await {
            Err(AuditError::Sink { path: p, error }) => {
                assert!(p.ends_with("audit.jsonl"));
                assert!(!error.is_empty());
            }
            other => panic!("expected a sink error, got {other:?}"),
        }
    }
    let stats = h.stats();
    assert!(!stats.healthy);
    assert_eq!(stats.failed_records, 3);
    assert!(matches!(&*health.borrow(), SinkHealth::Failing { .. }));

    // The sink works again: the next record goes through, after the trouble/recovered pair.
    std::fs::remove_dir(&path).expect("rmdir");
    let ack = h.record(msg(4)).await.expect("recovered");
    assert_eq!(ack.seq, Some(4), "seq 2 and 3 are the writer's own records");
    assert!(h.stats().healthy);
    assert_eq!(*health.borrow(), SinkHealth::Healthy);
    h.shutdown().await.expect("shutdown");
    assert_eq!(
        kinds(&path),
        vec![
            EventKind::AuditSinkTrouble,
            EventKind::AuditSinkRecovered,
            EventKind::MessageDecision
        ]
    );
    let recovered = Record::from_line(audit_support::lines(&path)[1].as_bytes()).expect("record");
    match recovered.event {
        AuditEvent::AuditSinkRecovered(r) => assert_eq!(r.failed_records, 3),
        other => panic!("unexpected {other:?}"),
    }
    let r = verify_files(&[&rotated, &path]);
    assert!(r.ok(), "{r}");
}

#[tokio::test]
async fn fail_open_acknowledges_unaudited() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("audit.jsonl");
    let rotated = dir.path().join("audit.jsonl.1");
    let mut cfg = audit_support::config(&path, SyncMode::Batch);
    cfg.fail_open = true;
    let h = audit::start(&cfg).expect("start");
    h.record(msg(0)).await.expect("ack");
    std::fs::rename(&path, &rotated).expect("rename");
    std::fs::create_dir(&path).expect("mkdir");
    let _ = h.reopen().await;
    let ack = h.record(msg(1)).await.expect("fail open: Ok");
    assert_eq!(ack.seq, None, "not written");
    assert!(!ack.durable);
    std::fs::remove_dir(&path).expect("rmdir");
    h.record(msg(2)).await.expect("ack");
    h.shutdown().await.expect("shutdown");
    let lines = audit_support::lines(&path);
    let trouble = Record::from_line(lines[0].as_bytes()).expect("record");
    match trouble.event {
        AuditEvent::AuditSinkTrouble(t) => assert!(t.fail_open),
        other => panic!("unexpected {other:?}"),
    }
    assert!(verify_files(&[&rotated, &path]).ok());
}

/// A tmpfs mounted for the test, unmounted on drop.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Result<Self, String> {
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .output()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if out.status.success() {
            Ok(Tmpfs(dir.to_path_buf()))
        } else {
            Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
        }
    }

    fn resize(&self, size: &str) {
        let ok = Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(&self.0)
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        assert!(ok, "remount {}", self.0.display());
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disk_full_gives_error_acks_and_recovers() {
    // Preallocating too: then zero-filling the next segment is what fails, and the failed
    // batch's cut also removes the zeros.
    for (mode, preallocate) in [
        (SyncMode::Batch, 0),
        (SyncMode::Always, 0),
        (SyncMode::Batch, 8192),
        (SyncMode::Always, 8192),
    ] {
        if !disk_full_case(mode, preallocate).await {
            return;
        }
    }
}

/// One disk-full round; false when mounting is not permitted (skipped with a reason).
async fn disk_full_case(mode: SyncMode, preallocate: u64) -> bool {
    let dir = tempfile::tempdir().expect("tempdir");
    let mnt = dir.path().join("mnt");
    std::fs::create_dir(&mnt).expect("mkdir");
    let fs = match Tmpfs::mount(&mnt, "64k") {
        Ok(fs) => fs,
        Err(e) => {
            println!(
                "SKIP disk_full_gives_error_acks_and_recovers: cannot mount a tmpfs ({e}); the unwritable-path test covers the error path"
            );
            return false;
        }
    };
    let path = mnt.join("audit.jsonl");
    let mut config = audit_support::config(&path, mode);
    config.preallocate = preallocate;
    let h = audit::start(&config).expect("start");
    // Concurrent producers, so failures hit whole batches, not only single records.
    let mut acked: Vec<u64> = Vec::new();
    let mut refused = 0u64;
    for round in 0..200u64 {
        let mut tasks = Vec::new();
        for n in 0..4 {
            let h = h.clone();
            tasks.push(tokio::spawn(
                async move { h.record(msg(round * 4 + n)).await },
            ));
        }
        for t in tasks {
            match t.await.expect("join") {
                Ok(ack) => acked.push(ack.seq.expect("written")),
                Err(AuditError::Sink { error, .. }) => {
                    assert!(error.contains("No space left"), "{error}");
                    refused += 1;
                }
                Err(other) => panic!("unexpected {other:?}"),
            }
        }
        if refused > 0 {
            break;
        }
    }
    assert!(
        acked.len() > 10 && refused > 0,
        "{mode:?}: acked {}, refused {refused}",
        acked.len()
    );
    // A smaller batch may still fit; fill the disk to the last byte with single records.
    while let Ok(ack) = h.record(msg(50_000)).await {
        acked.push(ack.seq.expect("written"));
    }
    assert!(
        h.record(msg(99_999)).await.is_err(),
        "still full: still refused"
    );
    // The file holds only whole records, and every acknowledged one.
    let r = verify_files(&[&path]);
    assert!(
        r.ok(),
        "{mode:?}: a failed batch leaves no partial line: {r}"
    );
    let in_file: Vec<u64> = audit_support::lines(&path)
        .iter()
        .map(|l| Record::from_line(l.as_bytes()).expect("record").seq)
        .collect();
    assert!(
        acked.iter().all(|s| in_file.contains(s)),
        "{mode:?}: every ack is in the file"
    );
    let last_seq = r.last_seq.expect("records");

    fs.resize("4m");
    let ack = h
        .record(msg(100_000))
        .await
        .expect("recovered after the disk grew");
    assert_eq!(
        ack.seq,
        Some(last_seq + 3),
        "after the trouble/recovered pair"
    );
    h.shutdown().await.expect("shutdown");
    let k = kinds(&path);
    assert_eq!(
        &k[k.len() - 3..],
        &[
            EventKind::AuditSinkTrouble,
            EventKind::AuditSinkRecovered,
            EventKind::MessageDecision
        ]
    );
    let r = verify_files(&[&path]);
    assert!(r.ok(), "{r}");
    drop(h);
    drop(fs);
    true
}
