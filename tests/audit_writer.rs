//! The writer: group commit shares fsyncs, sync modes, chain continuation across restart,
//! rotation and reopen, crash-fragment recovery, syslog forwarding.

mod audit_support;

use std::os::unix::net::UnixDatagram;
use std::time::Duration;

use markgate::audit::event::{DaemonStart, EventKind};
use markgate::audit::record::{GENESIS_PREV, Record, line_hash};
use markgate::audit::verify::ProblemKind;
use markgate::audit::{self, AuditEvent, SyncMode, verify_files};

fn msg(n: u64) -> AuditEvent {
    AuditEvent::MessageDecision(Box::new(audit_support::message(n)))
}

fn records(path: &std::path::Path) -> Vec<Record> {
    audit_support::lines(path)
        .iter()
        .map(|l| Record::from_line(l.as_bytes()).expect("record"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn queued_records_share_one_fsync() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("audit.jsonl");
    let (handle, writer) =
        audit::open(&audit_support::config(&path, SyncMode::Batch)).expect("open");
    // 100 producers enqueue before the writer runs: they must all land in one group commit.
    let mut tasks = Vec::new();
    for n in 0..100 {
        let h = handle.clone();
        tasks.push(tokio::spawn(async move { h.record(msg(n)).await }));
    }
    while handle.queue_depth() < 100 {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    writer.spawn().expect("spawn");
    let mut seqs = Vec::new();
    for t in tasks {
        let ack = t.await.expect("join").expect("ack");
        assert!(ack.durable);
        seqs.push(ack.seq.expect("seq"));
    }
    seqs.sort_unstable();
    assert_eq!(seqs, (1..=100).collect::<Vec<u64>>());
    let stats = handle.stats();
    assert_eq!(stats.fsyncs, 1, "one fsync for the whole group: {stats:?}");
    assert_eq!(stats.batches, 1);
    assert_eq!(stats.records_written, 100);

    // Live traffic: 50 producers x 20 records; every ack is durable, fsyncs are shared.
    let mut tasks = Vec::new();
    for p in 0..50u64 {
        let h = handle.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..20 {
                h.record(msg(1000 + p * 20 + i)).await.expect("ack");
            }
        }));
    }
    for t in tasks {
        t.await.expect("join");
    }
    let stats = handle.stats();
    assert_eq!(stats.records_written, 1100);
    assert!(
        stats.fsyncs < 1000,
        "group commit must share fsyncs: {stats:?}"
    );
    assert_eq!(
        stats.fsyncs, stats.batches,
        "batch mode: one fsync per batch"
    );
    handle.shutdown().await.expect("shutdown");
    let report = verify_files(&[&path]);
    assert!(report.ok(), "{report}");
    assert_eq!(report.records, 1100);
    assert!(report.starts_at_genesis);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lone_record_is_written_by_its_producer_and_a_dropped_one_still_lands() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("audit.jsonl");
    let (handle, writer) =
        audit::open(&audit_support::config(&path, SyncMode::Batch)).expect("open");
    // Before the writer runs, records wait in the queue: none is written by its producer.
    let early = {
        let h = handle.clone();
        tokio::spawn(async move { h.record(msg(0)).await })
    };
    while handle.queue_depth() < 1 {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    assert_eq!(handle.stats().records_written, 0);
    writer.spawn().expect("spawn");
    assert_eq!(early.await.expect("join").expect("ack").seq, Some(1));
    assert_eq!(handle.stats().inline_records, 0, "{:?}", handle.stats());

    // The writer idle, lone records: written and synced on the producer's own thread. (The
    // thread may still hold its lock for a moment after answering record 1; then a record is
    // queued, as it must be: so ask for most, not all.)
    for n in 1..=20 {
        let ack = handle.record(msg(n)).await.expect("ack");
        assert_eq!(ack.seq, Some(n + 1));
        assert!(ack.durable);
    }
    let stats = handle.stats();
    assert!(stats.inline_records >= 10, "{stats:?}");
    assert_eq!(stats.fsyncs, 21, "one fsync per lone record: {stats:?}");

    // A record whose producer stops waiting (its connection closed) is written all the same.
    let pending = handle.submit(msg(21)).await.expect("submit");
    assert_eq!(
        handle.stats().records_written,
        21,
        "nothing handed over before the wait"
    );
    drop(pending);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while handle.stats().records_written < 22 {
        assert!(std::time::Instant::now() < deadline, "{:?}", handle.stats());
        tokio::time::sleep(Duration::from_millis(2)).await;
    }

    // After the shutdown nothing is written, by the thread or by a producer.
    handle.shutdown().await.expect("shutdown");
    assert_eq!(
        handle.record(msg(22)).await.expect_err("closed"),
        audit::AuditError::Closed
    );
    let report = verify_files(&[&path]);
    assert!(report.ok(), "{report}");
    assert_eq!(report.records, 22);
}

#[tokio::test]
async fn sync_modes_count_fsyncs() {
    for (mode, expect_durable) in [(SyncMode::Always, true), (SyncMode::None, false)] {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("audit.jsonl");
        let (handle, writer) = audit::open(&audit_support::config(&path, mode)).expect("open");
        let mut tasks = Vec::new();
        for n in 0..10 {
            let h = handle.clone();
            tasks.push(tokio::spawn(async move { h.record(msg(n)).await }));
        }
        while handle.queue_depth() < 10 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        writer.spawn().expect("spawn");
        for t in tasks {
            assert_eq!(t.await.expect("join").expect("ack").durable, expect_durable);
        }
        let stats = handle.stats();
        match mode {
            SyncMode::Always => assert_eq!(stats.fsyncs, 10, "{stats:?}"),
            _ => assert_eq!(stats.fsyncs, 0, "{stats:?}"),
        }
        handle.shutdown().await.expect("shutdown");
        assert!(verify_files(&[&path]).ok());
    }
}

#[tokio::test]
async fn chain_continues_after_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    // The directory is created on first start, as for the built-in /var/log/markgate.
    let path = dir.path().join("log/markgate/audit.jsonl");
    let cfg = audit_support::config(&path, SyncMode::Batch);
    let h = audit::start(&cfg).expect("start");
    for n in 0..3 {
        h.record(msg(n)).await.expect("ack");
    }
    h.shutdown().await.expect("shutdown");
    assert!(matches!(
        h.record(msg(9)).await,
        Err(audit::AuditError::Closed)
    ));

    let h = audit::start(&cfg).expect("restart");
    let ack = h.record(msg(3)).await.expect("ack");
    assert_eq!(ack.seq, Some(4));
    h.shutdown().await.expect("shutdown");
    let recs = records(&path);
    assert_eq!(recs.len(), 4);
    assert_eq!(recs[0].prev, GENESIS_PREV);
    let lines = audit_support::lines(&path);
    assert_eq!(recs[3].prev, line_hash(lines[2].as_bytes()));
    assert!(verify_files(&[&path]).ok());
}

#[tokio::test]
async fn size_rotation_keeps_the_chain_across_files() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("audit.jsonl");
    let mut cfg = audit_support::config(&path, SyncMode::Always);
    cfg.max_size = 4096;
    cfg.keep = 3;
    let h = audit::start(&cfg).expect("start");
    for n in 0..40 {
        h.record(msg(n)).await.expect("ack");
    }
    h.shutdown().await.expect("shutdown");
    let stats = h.stats();
    assert!(stats.rotations >= 3, "{stats:?}");
    let f1 = audit::writer::numbered(&path, 1);
    let f2 = audit::writer::numbered(&path, 2);
    let f3 = audit::writer::numbered(&path, 3);
    assert!(!audit::writer::numbered(&path, 4).exists(), "keep = 3");
    for f in [&f3, &f2, &f1, &path] {
        let len = std::fs::metadata(f).expect("file").len();
        assert!(len <= 4096, "{} is {len} bytes", f.display());
    }
    let report = verify_files(&[&f3, &f2, &f1, &path]);
    assert!(report.ok(), "{report}");
    assert_eq!(report.last_seq, Some(40));
    // The first record of each newer file links to the last line of the older one.
    let last_of_f1 = audit_support::lines(&f1).pop().expect("line");
    assert_eq!(records(&path)[0].prev, line_hash(last_of_f1.as_bytes()));
    // Given in the wrong order, the files do not verify.
    let wrong = verify_files(&[&f1, &f2, &f3, &path]);
    assert!(!wrong.ok());
    assert_eq!(wrong.problems[0].kind, ProblemKind::Reordered);
}

#[tokio::test]
async fn reopen_after_logrotate_and_restart_from_rotated_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("audit.jsonl");
    let rotated = dir.path().join("audit.jsonl.1");
    let cfg = audit_support::config(&path, SyncMode::Batch);
    let h = audit::start(&cfg).expect("start");
    for n in 0..5 {
        h.record(msg(n)).await.expect("ack");
    }
    // logrotate: rename, then SIGUSR1 -> reopen.
    std::fs::rename(&path, &rotated).expect("rename");
    h.reopen().await.expect("reopen");
    for n in 5..8 {
        h.record(msg(n)).await.expect("ack");
    }
    h.shutdown().await.expect("shutdown");
    assert_eq!(audit_support::lines(&rotated).len(), 5);
    assert_eq!(audit_support::lines(&path).len(), 3);
    let report = verify_files(&[&rotated, &path]);
    assert!(report.ok(), "{report}");

    // Rotated away while stopped: a restart finds the chain in FILE.1.
    let older = dir.path().join("audit.jsonl.2");
    std::fs::rename(&rotated, &older).expect("rename");
    std::fs::rename(&path, &rotated).expect("rename");
    let h = audit::start(&cfg).expect("restart");
    assert_eq!(h.record(msg(8)).await.expect("ack").seq, Some(9));
    h.shutdown().await.expect("shutdown");
    let report = verify_files(&[&older, &rotated, &path]);
    assert!(report.ok(), "{report}");
    assert_eq!(report.records, 9);
}

#[tokio::test]
async fn crash_fragment_is_flagged_then_documented_on_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("audit.jsonl");
    let cfg = audit_support::config(&path, SyncMode::Batch);
    let h = audit::start(&cfg).expect("start");
    for n in 0..4 {
        h.record(msg(n)).await.expect("ack");
    }
    h.shutdown().await.expect("shutdown");
    // A crash in the middle of writing record 5.
    let mut bytes = std::fs::read(&path).expect("read");
    let fragment = b"{\"seq\":5,\"prev\":\"abc".to_vec();
    bytes.extend_from_slice(&fragment);
    std::fs::write(&path, &bytes).expect("write");

    let before = verify_files(&[&path]);
    assert!(!before.ok());
    let p = before.first_problem().expect("problem");
    assert_eq!(p.kind, ProblemKind::Truncated);
    assert_eq!(p.line, 5);

    let h = audit::start(&cfg).expect("restart");
    let ack = h.record(msg(5)).await.expect("ack");
    assert_eq!(ack.seq, Some(6), "seq 5 is the chain_resumed record");
    h.shutdown().await.expect("shutdown");

    let lines = audit_support::lines(&path);
    assert_eq!(
        lines[4].as_bytes(),
        &fragment[..],
        "the fragment is kept as found"
    );
    let resumed = Record::from_line(lines[5].as_bytes()).expect("record");
    assert_eq!(resumed.event.kind(), EventKind::AuditChainResumed);
    assert_eq!(resumed.seq, 5);
    assert_eq!(resumed.prev, line_hash(lines[3].as_bytes()));
    let after = verify_files(&[&path]);
    assert!(after.ok(), "{after}");
    assert_eq!(after.warnings.len(), 1);
    assert_eq!(after.warnings[0].kind, ProblemKind::RecoveredTruncation);
    assert_eq!(after.warnings[0].line, 5);
}

#[tokio::test]
async fn records_are_forwarded_to_syslog() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("audit.jsonl");
    let sock_path = dir.path().join("log.sock");
    let sock = UnixDatagram::bind(&sock_path).expect("bind");
    sock.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let mut cfg = audit_support::config(&path, SyncMode::Batch);
    cfg.syslog.enabled = true;
    cfg.syslog.socket = sock_path.clone();
    cfg.syslog.facility = "local3".into();
    let h = audit::start(&cfg).expect("start");
    h.record(AuditEvent::DaemonStart(DaemonStart {
        pid: 1,
        ..Default::default()
    }))
    .await
    .expect("ack");
    h.record(msg(1)).await.expect("ack");
    let mut buf = vec![0u8; 65536];
    let n = sock.recv(&mut buf).expect("datagram");
    let first = String::from_utf8_lossy(&buf[..n]).to_string();
    // local3 (19) * 8 + info (6) = 158
    assert!(first.starts_with("<158>1 "), "{first}");
    assert!(first.contains(" gw-test markgate "), "{first}");
    assert!(
        first.contains("[markgate@32473 seq=\"1\" event=\"daemon_start\" severity=\"info\""),
        "{first}"
    );
    let line = &audit_support::lines(&path)[0];
    assert!(first.ends_with(line.as_str()), "the JSON line is the MSG");
    assert!(first.contains(&format!("hash=\"{}\"", line_hash(line.as_bytes()))));
    let n = sock.recv(&mut buf).expect("datagram");
    let second = String::from_utf8_lossy(&buf[..n]).to_string();
    // local3 * 8 + notice (5) = 157: the decision removed a recipient.
    assert!(second.starts_with("<157>1 "), "{second}");
    assert!(second.contains("security_event=\"true\""), "{second}");

    // The syslog daemon disappears: records are still written, drops are counted.
    drop(sock);
    std::fs::remove_file(&sock_path).expect("rm");
    h.record(msg(2)).await.expect("ack even without syslog");
    h.shutdown().await.expect("shutdown");
    let stats = h.stats();
    assert_eq!(stats.syslog_sent, 2);
    assert_eq!(stats.syslog_dropped, 1);
    assert_eq!(audit_support::lines(&path).len(), 3);
}

#[tokio::test]
async fn recovery_reads_back_across_large_records_and_damage() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("audit.jsonl");
    let cfg = audit_support::config(&path, SyncMode::Batch);
    let h = audit::start(&cfg).expect("start");
    h.record(msg(0)).await.expect("ack");
    // A record far larger than the 64 KiB blocks recovery reads backwards in.
    let mut big = audit_support::message(1);
    big.recipients = (0..3000)
        .map(|i| markgate::audit::record::RecipientOutcome {
            address: format!("user{i}@partner.gov.uk"),
            ..Default::default()
        })
        .collect();
    h.record(AuditEvent::MessageDecision(Box::new(big)))
        .await
        .expect("ack");
    h.shutdown().await.expect("shutdown");
    assert!(std::fs::metadata(&path).expect("meta").len() > 200_000);
    let rec = audit::writer::recover(&path).expect("recover");
    assert_eq!(rec.seq, 2);
    assert_eq!(
        rec.hash,
        line_hash(audit_support::lines(&path)[1].as_bytes())
    );
    assert_eq!(rec.fragment, None);

    // A damaged complete line at the end: the chain resumes after the last valid record and
    // verify reports the damage.
    let mut lines = audit_support::lines(&path);
    lines.push("not a record".into());
    audit_support::write_lines(&path, &lines);
    let rec = audit::writer::recover(&path).expect("recover");
    assert_eq!((rec.seq, rec.skipped_bad_lines), (2, 1));
    let h = audit::start(&cfg).expect("restart");
    assert_eq!(h.record(msg(3)).await.expect("ack").seq, Some(3));
    h.shutdown().await.expect("shutdown");
    let r = verify_files(&[&path]);
    assert_eq!(
        r.first_problem().expect("problem").kind,
        ProblemKind::Malformed
    );
    assert_eq!(r.first_problem().expect("problem").line, 3);

    // An empty file and a missing file start a new chain.
    let empty = dir.path().join("empty.jsonl");
    std::fs::write(&empty, b"").expect("write");
    let rec = audit::writer::recover(&empty).expect("recover");
    assert_eq!((rec.seq, rec.hash.as_str()), (0, GENESIS_PREV));
    let rec = audit::writer::recover(&dir.path().join("none.jsonl")).expect("recover");
    assert_eq!(rec.seq, 0);
}

/// On a multi-thread runtime the answers come back through a dispatcher task on that runtime
/// (see `Mailbox` in the writer). When that runtime is shut down the writer must go back to
/// answering directly, and a later runtime (of either flavour) must still get every answer.
#[test]
fn answers_reach_producers_when_the_dispatching_runtime_is_gone() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("audit.jsonl");
    let handle = audit::start(&audit_support::config(&path, SyncMode::Batch)).expect("start");
    let multi = || {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime")
    };
    let burst = |h: audit::AuditHandle, from: u64| async move {
        let mut tasks = Vec::new();
        for n in from..from + 40 {
            let h = h.clone();
            tasks.push(tokio::spawn(async move { h.record(msg(n)).await }));
        }
        let mut seqs = Vec::new();
        for t in tasks {
            let ack = t.await.expect("join").expect("ack");
            assert!(ack.durable);
            seqs.push(ack.seq.expect("seq"));
        }
        seqs
    };
    let within = |secs| Duration::from_secs(secs);

    // First runtime: starts the dispatcher; every producer is answered.
    let first = multi();
    let seqs = first.block_on(async {
        tokio::time::timeout(within(30), burst(handle.clone(), 0))
            .await
            .expect("answers on the first runtime")
    });
    assert_eq!(seqs.len(), 40);
    drop(first);

    // Its dispatcher is gone with it: a second multi-thread runtime still gets its answers.
    let second = multi();
    let seqs = second.block_on(async {
        tokio::time::timeout(within(30), burst(handle.clone(), 100))
            .await
            .expect("answers on the second runtime")
    });
    assert_eq!(seqs.len(), 40);

    // A current-thread runtime is answered directly, also while the second one's dispatcher
    // runs.
    let single = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    single.block_on(async {
        let ack = tokio::time::timeout(within(30), handle.record(msg(500)))
            .await
            .expect("answer on a current-thread runtime")
            .expect("ack");
        assert_eq!(ack.seq, Some(81));
    });
    second.block_on(async {
        handle.shutdown().await.expect("shutdown");
    });
    drop(second);
    let report = verify_files(&[&path]);
    assert!(report.ok(), "{report}");
    assert_eq!(report.records, 81);
}
