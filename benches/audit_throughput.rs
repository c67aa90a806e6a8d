//! Cost of the audit: records per second with `sync = "batch"`, `"none"` and `"always"`, in
//! the same run, on the file system of `$TMPDIR` (or `--dir DIR`).
//!
//! `cargo bench --bench audit_throughput` (or `-- --records 20000 --producers 64 --dir /var/tmp`)
//!
//! Each mode is run twice: with many concurrent producers (like milter connections finishing
//! messages at the same time, where group commit shares fsyncs) and with one producer waiting
//! for each ack (the worst case for group commit: every record pays its own fsync).

use std::path::PathBuf;
use std::time::Instant;

use markgate::audit::record::*;
use markgate::audit::{self, AuditConfig, AuditEvent, SyncMode};

fn message(n: u64) -> MessageRecord {
    MessageRecord {
        queue_id: Some(format!("4Q{n:08X}")),
        message_id: Some(format!("<msg{n}@dept.gov.uk>")),
        client_addr: Some("192.0.2.10".into()),
        client_name: Some("mx1.dept.gov.uk".into()),
        sender: "alice@dept.gov.uk".into(),
        recipients: vec![
            RecipientOutcome {
                address: "bob@partner.gov.uk".into(),
                ..Default::default()
            },
            RecipientOutcome {
                address: "carol@partner.gov.uk".into(),
                ..Default::default()
            },
        ],
        direction: Direction::Outbound,
        markings: vec![MarkingFound {
            location: "subject".into(),
            raw: "[OFFICIAL-SENSITIVE]".into(),
            level: Some("OFFICIAL-SENSITIVE".into()),
            valid: true,
            ..Default::default()
        }],
        effective_level: Some("OFFICIAL-SENSITIVE".into()),
        label_required: true,
        edits: vec![Edit::LabelHeader {
            name: "X-Protective-Marking".into(),
            value: "VER=2012, NS=gov.uk, SEC=OFFICIAL-SENSITIVE".into(),
            rule: Some("labels.header".into()),
        }],
        policy_digest: policy_digest(b"policy"),
        ..Default::default()
    }
}

struct Run {
    mode: SyncMode,
    producers: u64,
    records: u64,
    secs: f64,
    fsyncs: u64,
    bytes: u64,
}

async fn run(dir: &std::path::Path, mode: SyncMode, producers: u64, records: u64) -> Run {
    let path = dir.join(format!("bench-{mode:?}-{producers}.jsonl"));
    let _ = std::fs::remove_file(&path);
    let mut cfg = AuditConfig {
        path: path.clone(),
        sync: mode,
        host: Some("bench".into()),
        ..AuditConfig::default()
    };
    cfg.syslog.enabled = false;
    let h = audit::start(&cfg).expect("start audit writer");
    let per = records / producers;
    let t = Instant::now();
    let mut tasks = Vec::new();
    for p in 0..producers {
        let h = h.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..per {
                let ev = AuditEvent::MessageDecision(Box::new(message(p * per + i)));
                h.record(ev).await.expect("ack");
            }
        }));
    }
    for task in tasks {
        task.await.expect("producer");
    }
    let secs = t.elapsed().as_secs_f64();
    let stats = h.stats();
    h.shutdown().await.expect("shutdown");
    let bytes = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
    let _ = std::fs::remove_file(&path);
    Run {
        mode,
        producers,
        records: per * producers,
        secs,
        fsyncs: stats.fsyncs,
        bytes,
    }
}

fn main() {
    let mut records = 20_000u64;
    let mut producers = 64u64;
    let mut dir: Option<PathBuf> = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--records" => records = args.next().and_then(|v| v.parse().ok()).unwrap_or(records),
            "--producers" => {
                producers = args
                    .next()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(producers)
            }
            "--dir" => dir = args.next().map(PathBuf::from),
            _ => {} // cargo bench passes --bench
        }
    }
    let tmp = tempfile::tempdir_in(dir.unwrap_or_else(std::env::temp_dir)).expect("tempdir");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    println!(
        "audit throughput in {} ({} records per run)",
        tmp.path().display(),
        records
    );
    println!(
        "{:<7} {:>9} {:>10} {:>12} {:>8} {:>14} {:>10}",
        "sync", "producers", "records", "records/s", "fsyncs", "records/fsync", "bytes/rec"
    );
    rt.block_on(async {
        for producers in [producers, 1] {
            for mode in [SyncMode::Batch, SyncMode::None, SyncMode::Always] {
                // One producer with an fsync per record is slow: fewer records keep it short.
                let n = if producers == 1 && mode != SyncMode::None {
                    records / 10
                } else {
                    records
                };
                let r = run(tmp.path(), mode, producers, n).await;
                println!(
                    "{:<7} {:>9} {:>10} {:>12.0} {:>8} {:>14.1} {:>10}",
                    format!("{:?}", r.mode).to_lowercase(),
                    r.producers,
                    r.records,
                    r.records as f64 / r.secs,
                    r.fsyncs,
                    if r.fsyncs == 0 {
                        0.0
                    } else {
                        r.records as f64 / r.fsyncs as f64
                    },
                    r.bytes / r.records.max(1)
                );
            }
        }
    });
}
