//! `[audit] preallocate` (issue 15): the writer keeps zero-filled space ahead of the data and
//! overwrites it, so each `fdatasync` has no size change to commit. The live file then ends in
//! NUL bytes. These tests hold the promises that come with that: verify and report read a live
//! file as if the zeros were not there; rotation (by size and by logrotate's rename + reopen)
//! and shutdown leave files that end with their last record; a writer starting on a file a
//! crashed writer left (zeros, a torn record before them) resumes the chain at the true end.

mod audit_support;

use std::path::Path;

use markgate::audit::record::Record;
use markgate::audit::verify::ProblemKind;
use markgate::audit::{self, AuditConfig, AuditEvent, SyncMode, load_records, verify_files};

fn msg(n: u64) -> AuditEvent {
    AuditEvent::MessageDecision(Box::new(audit_support::message(n)))
}

fn config(path: &Path, preallocate: u64) -> AuditConfig {
    AuditConfig {
        preallocate,
        ..audit_support::config(path, SyncMode::Batch)
    }
}

/// (file length, length without the trailing NUL bytes)
fn lengths(path: &Path) -> (usize, usize) {
    let bytes = std::fs::read(path).expect("read");
    let data = bytes.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
    (bytes.len(), data)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_preallocated_file_reads_as_its_records_and_is_trimmed_at_shutdown() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("audit.jsonl");
    let h = audit::start(&config(&path, 64 * 1024)).expect("start");
    let mut acked = Vec::new();
    for n in 0..200 {
        acked.push(h.record(msg(n)).await.expect("ack").seq.expect("seq"));
    }
    let (len, data) = lengths(&path);
    assert!(
        len > data,
        "zeros ahead of the data while running ({len} vs {data})"
    );
    assert!(
        len - data <= 64 * 1024 + 4096,
        "at most one segment ahead plus a record"
    );
    let r = verify_files(&[&path]);
    assert!(r.ok(), "a live preallocated file verifies: {r}");
    assert_eq!(r.last_seq, acked.last().copied());
    let loaded = load_records(&[&path]).expect("load");
    assert_eq!(loaded.records.len(), 200);
    assert_eq!(loaded.skipped_lines, 0, "the zeros are not a line");

    h.shutdown().await.expect("shutdown");
    let (len, data) = lengths(&path);
    assert_eq!(len, data, "no zeros after a clean shutdown");
    assert!(std::fs::read(&path).expect("read").ends_with(b"\n"));
    assert!(verify_files(&[&path]).ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_and_reopen_leave_files_that_end_with_their_last_record() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("audit.jsonl");
    let cfg = AuditConfig {
        max_size: 40 * 1024,
        keep: 50,
        ..config(&path, 16 * 1024)
    };
    let h = audit::start(&cfg).expect("start");
    for n in 0..150 {
        h.record(msg(n)).await.expect("ack");
    }
    // logrotate: rename, then SIGUSR1 (reopen).
    let moved = dir.path().join("audit.jsonl-20261206");
    std::fs::rename(&path, &moved).expect("rename");
    h.record(msg(1000))
        .await
        .expect("ack into the renamed file");
    h.reopen().await.expect("reopen");
    // Fewer than a file's worth, so the size-based rotations all come before the rename.
    for n in 2000..2020 {
        h.record(msg(n)).await.expect("ack");
    }
    h.shutdown().await.expect("shutdown");

    let mut rotated: Vec<_> = (1..=50)
        .map(|i| audit::writer::numbered(&path, i))
        .filter(|p| p.exists())
        .collect();
    assert!(rotated.len() >= 2, "size-based rotation happened");
    rotated.reverse(); // oldest first
    for p in rotated.iter().chain([&moved, &path]) {
        let (len, data) = lengths(p);
        assert_eq!(len, data, "{} ends with its last record", p.display());
    }
    let mut files: Vec<&Path> = rotated.iter().map(|p| p.as_path()).collect();
    files.push(&moved);
    files.push(&path);
    let r = verify_files(&files);
    assert!(r.ok(), "{r}");
    assert_eq!(
        r.records, 171,
        "every record, in one chain across the files"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_writer_starting_after_a_crash_mid_segment_resumes_at_the_true_end() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("audit.jsonl");
    let h = audit::start(&config(&path, 64 * 1024)).expect("start");
    for n in 0..20 {
        h.record(msg(n)).await.expect("ack");
    }
    h.shutdown().await.expect("shutdown");
    // What a crash mid-segment leaves: the records, half of an unacknowledged one, zeros.
    let mut bytes = std::fs::read(&path).expect("read");
    let torn = b"{\"seq\":21,\"prev\":\"abc".to_vec();
    bytes.extend_from_slice(&torn);
    bytes.extend_from_slice(&vec![0u8; 50_000]);
    std::fs::write(&path, &bytes).expect("write");
    let r = verify_files(&[&path]);
    assert_eq!(
        r.problems.iter().map(|p| p.kind).collect::<Vec<_>>(),
        vec![ProblemKind::Truncated],
        "the torn record is reported, the zeros are not: {r}"
    );

    for prealloc in [64 * 1024, 0] {
        let h = audit::start(&config(&path, prealloc)).expect("restart");
        let ack = h.record(msg(100 + prealloc)).await.expect("ack");
        h.shutdown().await.expect("shutdown");
        if prealloc > 0 {
            assert_eq!(ack.seq, Some(22), "after the audit_chain_resumed record");
        }
    }
    let (len, data) = lengths(&path);
    assert_eq!(len, data);
    let r = verify_files(&[&path]);
    assert!(r.ok(), "the torn record is documented by the restart: {r}");
    let kinds: Vec<String> = audit_support::lines(&path)
        .iter()
        .filter_map(|l| Record::from_line(l.as_bytes()).ok())
        .map(|r| r.event.kind().as_str().to_owned())
        .collect();
    assert_eq!(kinds.len(), 23, "{kinds:?}");
    assert_eq!(kinds[20], "audit_chain_resumed");
}
