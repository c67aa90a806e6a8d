//! `verify`: passes untouched files and catches an edited, deleted, reordered or truncated
//! record, within a file and across rotation, naming file and line.

mod audit_support;

use std::path::{Path, PathBuf};

use markgate::audit::verify::ProblemKind;
use markgate::audit::{self, AuditEvent, SyncMode, verify_files};

/// Write `n` records with size rotation; return the files oldest first.
async fn chain(dir: &Path, n: u64) -> Vec<PathBuf> {
    let path = dir.join("audit.jsonl");
    let mut cfg = audit_support::config(&path, SyncMode::Batch);
    cfg.max_size = 6000;
    cfg.keep = 20;
    let h = audit::start(&cfg).expect("start");
    for i in 0..n {
        h.record(AuditEvent::MessageDecision(Box::new(
            audit_support::message(i),
        )))
        .await
        .expect("ack");
    }
    h.shutdown().await.expect("shutdown");
    let mut files: Vec<PathBuf> = (1..=20)
        .rev()
        .map(|i| audit::writer::numbered(&path, i))
        .filter(|p| p.exists())
        .collect();
    files.push(path);
    assert!(files.len() >= 3, "the test wants rotation: {files:?}");
    files
}

#[tokio::test]
async fn untouched_files_pass() {
    let dir = tempfile::tempdir().expect("tempdir");
    let files = chain(dir.path(), 30).await;
    let r = verify_files(&files);
    assert!(r.ok(), "{r}");
    assert_eq!(r.exit_code(), 0);
    assert_eq!(r.records, 30);
    assert_eq!(r.first_seq, Some(1));
    assert_eq!(r.last_seq, Some(30));
    let text = r.to_string();
    assert!(text.contains("OK: the chain is intact"), "{text}");
    // A suffix of the rotated set also verifies (older files deleted by retention).
    let r = verify_files(&files[1..]);
    assert!(r.ok(), "{r}");
    assert!(!r.starts_at_genesis);
}

#[tokio::test]
async fn edited_record_is_caught() {
    let dir = tempfile::tempdir().expect("tempdir");
    let files = chain(dir.path(), 30).await;
    let target = &files[1];
    let mut lines = audit_support::lines(target);
    // Change one recipient address, keep the JSON valid.
    lines[1] = lines[1].replacen("alice.home@gmail.com", "alice.home@gmail.co", 1);
    audit_support::write_lines(target, &lines);
    let r = verify_files(&files);
    println!("{r}"); // visible with --nocapture: what `markgate audit verify` prints
    assert_eq!(r.exit_code(), 1);
    let p = r.first_problem().expect("problem");
    assert_eq!(p.kind, ProblemKind::Edited, "{r}");
    assert_eq!(&p.file, target);
    assert_eq!(p.line, 2);
    assert!(
        r.to_string().contains(&format!("{}:2", target.display())),
        "{r}"
    );
}

#[tokio::test]
async fn edit_that_breaks_json_is_caught() {
    let dir = tempfile::tempdir().expect("tempdir");
    let files = chain(dir.path(), 12).await;
    let target = &files[0];
    let mut lines = audit_support::lines(target);
    let keep = lines[0].len() - 3;
    lines[0].truncate(keep);
    audit_support::write_lines(target, &lines);
    let r = verify_files(&files);
    let p = r.first_problem().expect("problem");
    assert_eq!(p.kind, ProblemKind::Malformed, "{r}");
    assert_eq!((&p.file, p.line), (target, 1));
}

#[tokio::test]
async fn deleted_record_is_caught() {
    let dir = tempfile::tempdir().expect("tempdir");
    let files = chain(dir.path(), 30).await;
    let target = &files[1];
    let mut lines = audit_support::lines(target);
    lines.remove(1);
    audit_support::write_lines(target, &lines);
    let r = verify_files(&files);
    let p = r.first_problem().expect("problem");
    assert_eq!(p.kind, ProblemKind::Missing, "{r}");
    assert_eq!((&p.file, p.line), (target, 2));
    assert!(p.detail.contains("missing"), "{}", p.detail);
}

#[tokio::test]
async fn deleted_rotated_file_in_the_middle_is_caught() {
    let dir = tempfile::tempdir().expect("tempdir");
    let files = chain(dir.path(), 30).await;
    let mut given = files.clone();
    given.remove(1);
    let r = verify_files(&given);
    let p = r.first_problem().expect("problem");
    assert_eq!(p.kind, ProblemKind::Missing, "{r}");
    assert_eq!((&p.file, p.line), (&files[2], 1));
}

#[tokio::test]
async fn reordered_records_are_caught() {
    let dir = tempfile::tempdir().expect("tempdir");
    let files = chain(dir.path(), 30).await;
    let target = &files[1];
    let mut lines = audit_support::lines(target);
    lines.swap(0, 1);
    audit_support::write_lines(target, &lines);
    let r = verify_files(&files);
    let p = r.first_problem().expect("problem");
    assert_eq!(p.kind, ProblemKind::Reordered, "{r}");
    assert_eq!((&p.file, p.line), (target, 1));
}

#[tokio::test]
async fn record_moved_across_files_is_caught() {
    let dir = tempfile::tempdir().expect("tempdir");
    let files = chain(dir.path(), 30).await;
    let mut a = audit_support::lines(&files[0]);
    let mut b = audit_support::lines(&files[1]);
    let moved = a.pop().expect("line");
    b.insert(1, moved);
    audit_support::write_lines(&files[0], &a);
    audit_support::write_lines(&files[1], &b);
    let r = verify_files(&files);
    let p = r.first_problem().expect("problem");
    assert_eq!(p.kind, ProblemKind::Reordered, "{r}");
    assert_eq!((&p.file, p.line), (&files[1], 1));
}

#[tokio::test]
async fn truncated_record_is_caught() {
    let dir = tempfile::tempdir().expect("tempdir");
    let files = chain(dir.path(), 30).await;
    // Cut the newest file in the middle of its last record.
    let last = files.last().expect("file");
    let bytes = std::fs::read(last).expect("read");
    let n_lines = bytes.iter().filter(|&&b| b == b'\n').count() as u64;
    std::fs::write(last, &bytes[..bytes.len() - 40]).expect("write");
    let r = verify_files(&files);
    let p = r.first_problem().expect("problem");
    assert_eq!(p.kind, ProblemKind::Truncated, "{r}");
    assert_eq!((&p.file, p.line), (last, n_lines));

    // A rotated file cut mid-record is caught too, with the file that was cut.
    let dir = tempfile::tempdir().expect("tempdir");
    let files = chain(dir.path(), 30).await;
    let bytes = std::fs::read(&files[0]).expect("read");
    std::fs::write(&files[0], &bytes[..bytes.len() - 10]).expect("write");
    let r = verify_files(&files);
    let p = r.first_problem().expect("problem");
    assert_eq!(p.kind, ProblemKind::Truncated, "{r}");
    assert_eq!(&p.file, &files[0]);
}

#[tokio::test]
async fn forged_genesis_and_unreadable_files_fail() {
    let dir = tempfile::tempdir().expect("tempdir");
    let files = chain(dir.path(), 10).await;
    let mut lines = audit_support::lines(&files[0]);
    lines[0] = lines[0].replacen("\"prev\":\"0000", "\"prev\":\"1111", 1);
    audit_support::write_lines(&files[0], &lines);
    let r = verify_files(&files);
    assert_eq!(
        r.first_problem().expect("problem").kind,
        ProblemKind::BadStart,
        "{r}"
    );

    let r = verify_files(&[dir.path().join("nope.jsonl")]);
    assert_eq!(
        r.first_problem().expect("problem").kind,
        ProblemKind::Unreadable
    );
    assert_eq!(r.exit_code(), 1);
}
