//! Durability: a child process writes records from many producers and prints each
//! acknowledged `seq`; the parent kills it with SIGKILL mid-stream. Every acknowledged record
//! must be in the file, and the file must verify (a torn final line is flagged, then
//! documented by the next writer start).
//!
//! The child is this same test binary re-executed (`current_exe()`) with
//! `MARKGATE_AUDIT_CHILD=<file>` set, running only `child_writer`; with
//! `MARKGATE_AUDIT_PREALLOC=<bytes>` it writes with `[audit] preallocate` (issue 15), so the
//! kill lands in the middle of a zero-filled segment. When the test runs as root it drops the
//! page cache before reading the file back.

mod audit_support;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};

use markgate::audit::record::Record;
use markgate::audit::verify::ProblemKind;
use markgate::audit::{self, AuditEvent, SyncMode, verify_files};

const CHILD_ENV: &str = "MARKGATE_AUDIT_CHILD";
const PREALLOC_ENV: &str = "MARKGATE_AUDIT_PREALLOC";

fn config(path: &Path, preallocate: u64) -> audit::AuditConfig {
    audit::AuditConfig {
        preallocate,
        ..audit_support::config(path, SyncMode::Batch)
    }
}

/// The child's body; a no-op unless re-executed by `kill_9_loses_no_acknowledged_record`.
#[test]
fn child_writer() {
    let Ok(path) = std::env::var(CHILD_ENV) else {
        return;
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let prealloc = std::env::var(PREALLOC_ENV)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    rt.block_on(async move {
        let h = audit::start(&config(Path::new(&path), prealloc)).expect("start");
        let mut tasks = Vec::new();
        for p in 0..16u64 {
            let h = h.clone();
            tasks.push(tokio::spawn(async move {
                let mut n = p * 1_000_000;
                loop {
                    n += 1;
                    let ack = h
                        .record(AuditEvent::MessageDecision(Box::new(
                            audit_support::message(n),
                        )))
                        .await
                        .expect("ack");
                    // Printed only after the ack: the parent's list is "what the MTA was told".
                    println!("ACK {}", ack.seq.expect("seq"));
                }
            }));
        }
        for t in tasks {
            let _ = t.await;
        }
    });
}

#[test]
fn kill_9_loses_no_acknowledged_record() {
    if std::env::var(CHILD_ENV).is_ok() {
        return;
    }
    kill_rounds(0);
}

/// The same with `preallocate`: each kill lands inside a zero-filled segment (checked), and
/// neither the zeros nor the kill lose an acknowledged record.
#[test]
fn kill_9_mid_segment_loses_no_acknowledged_record_with_preallocation() {
    if std::env::var(CHILD_ENV).is_ok() {
        return;
    }
    kill_rounds(256 * 1024);
}

/// Ask the kernel to drop clean cached pages, so what is read back comes from the disk (only
/// as root; elsewhere a no-op).
fn drop_page_cache() {
    let _ = std::fs::write("/proc/sys/vm/drop_caches", "3");
}

fn kill_rounds(prealloc: u64) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("audit.jsonl");
    for round in 0..3 {
        let mut child = Command::new(std::env::current_exe().expect("exe"))
            .args(["--exact", "child_writer", "--nocapture", "--test-threads=1"])
            .env(CHILD_ENV, &path)
            .env(PREALLOC_ENV, prealloc.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn child");
        let stdout = child.stdout.take().expect("stdout");
        let mut reader = BufReader::new(stdout);
        let mut acked = BTreeSet::new();
        let mut line = String::new();
        // Let it run until a few thousand records are acknowledged, then SIGKILL.
        while acked.len() < 3000 {
            line.clear();
            if reader.read_line(&mut line).expect("read") == 0 {
                panic!("child ended early");
            }
            if let Some(n) = line.trim().strip_prefix("ACK ") {
                acked.insert(n.parse::<u64>().expect("seq"));
            }
        }
        child.kill().expect("kill -9");
        // Acks printed before the kill are still in the pipe.
        loop {
            line.clear();
            match reader.read_line(&mut line) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    if let Some(Ok(n)) = line.trim().strip_prefix("ACK ").map(str::parse::<u64>) {
                        acked.insert(n);
                    }
                }
            }
        }
        let _ = child.wait();
        drop_page_cache();

        let bytes = std::fs::read(&path).expect("read audit file");
        if prealloc > 0 {
            assert_eq!(
                bytes.last(),
                Some(&0),
                "round {round}: the kill left preallocated zeros behind"
            );
        }
        let in_file: BTreeSet<u64> = bytes
            .split(|&b| b == b'\n')
            .filter_map(|l| Record::from_line(l).ok())
            .map(|r| r.seq)
            .collect();
        let lost: Vec<&u64> = acked.difference(&in_file).collect();
        assert!(
            lost.is_empty(),
            "round {round}: acknowledged but not in the file: {lost:?}"
        );

        let report = verify_files(&[&path]);
        let only_torn_tail = report
            .problems
            .iter()
            .all(|p| p.kind == ProblemKind::Truncated)
            && report.problems.len() <= 1;
        assert!(report.ok() || only_torn_tail, "round {round}: {report}");
        println!(
            "round {round}: {} acknowledged, {} records in the file, torn tail: {}",
            acked.len(),
            in_file.len(),
            !report.ok()
        );
    }
    // A writer starting on the file documents any torn tail; the whole chain then verifies.
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let h = audit::start(&config(&path, prealloc)).expect("restart");
        h.record(AuditEvent::MessageDecision(Box::new(
            audit_support::message(0),
        )))
        .await
        .expect("ack");
        h.shutdown().await.expect("shutdown");
    });
    let report = verify_files(&[&path]);
    assert!(report.ok(), "{report}");
}
