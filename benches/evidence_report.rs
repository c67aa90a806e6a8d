//! The evidence report at scale: generate an audit trail of 1 million records (a month of a
//! busy gateway: labelled, refused, auto-forward and above-ceiling mail, alerts, reloads),
//! then time `markgate audit report --evidence --format html` on it and measure its peak
//! memory with `/usr/bin/time -v`. The target is under 30 s and under 200 MiB.
//!
//! `cargo bench --bench evidence_report` (or `-- --records 200000 --dir /var/tmp/ev --keep`)
//!
//! The trail is written under `target/evidence-bench/` (never in the repository) and reused
//! by later runs with the same record count; `--fresh` writes it again. Not a test: it
//! prints the figures, and exits 1 when a target is missed. Under `cargo test --all-targets`
//! (no `--bench` argument, an unoptimized build) it only smoke-runs 3000 records.

use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use markgate::alert::IncidentKind;
use markgate::audit::AuditEvent;
use markgate::audit::event::{AlertDelivered, IncidentRef, PolicyLoaded};
use markgate::audit::record::*;
use markgate::policy::{BUILTIN_POLICY, Policy};

const TARGET_SECS: f64 = 30.0;
const TARGET_MIB: f64 = 200.0;

struct Args {
    /// `cargo bench` passes `--bench`; `cargo test --all-targets` does not.
    bench: bool,
    records: u64,
    dir: PathBuf,
    fresh: bool,
    format: String,
}

fn args() -> Args {
    let mut a = Args {
        bench: std::env::args().any(|x| x == "--bench"),
        records: 1_000_000,
        dir: PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/evidence-bench"),
        fresh: false,
        format: "html".into(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(x) = it.next() {
        match x.as_str() {
            "--records" => a.records = it.next().and_then(|v| v.parse().ok()).unwrap_or(a.records),
            "--dir" => a.dir = it.next().map(PathBuf::from).unwrap_or(a.dir),
            "--format" => a.format = it.next().unwrap_or(a.format),
            "--fresh" => a.fresh = true,
            _ => {} // cargo bench passes --bench
        }
    }
    if !a.bench {
        a.records = a.records.min(3000);
        a.dir = a.dir.with_file_name("evidence-bench-smoke");
    }
    a
}

struct Writer<W: Write> {
    out: W,
    seq: u64,
    prev: String,
}

impl<W: Write> Writer<W> {
    fn push(&mut self, time: &str, event: AuditEvent) -> u64 {
        self.seq += 1;
        let r = Record::new(
            self.seq,
            std::mem::take(&mut self.prev),
            time.into(),
            "gw1.council.gcsx.gov.uk".into(),
            event,
        );
        let line = r.to_line().expect("serialize");
        self.prev = line_hash(&line);
        self.out.write_all(&line).expect("write");
        self.out.write_all(b"\n").expect("write");
        self.seq
    }
}

fn time_at(secs: u64) -> String {
    // 2026-11-01T00:00:00Z plus `secs`.
    let t = time::OffsetDateTime::from_unix_timestamp(1_793_491_200 + secs as i64).expect("time");
    format_time(t)
}

fn rcpt(address: &str) -> RecipientOutcome {
    RecipientOutcome {
        address: address.into(),
        ..Default::default()
    }
}

/// One decision of a realistic mix, by `n`.
fn decision(n: u64, digest: &str) -> MessageRecord {
    let sender = format!("user{}@council.gcsx.gov.uk", n % 5000);
    let mut m = MessageRecord {
        queue_id: Some(format!("4Q{n:010X}")),
        message_id: Some(format!("<{n}.mail@council.gcsx.gov.uk>")),
        client_addr: Some("10.1.2.3".into()),
        client_name: Some("exch1.council.gcsx.gov.uk".into()),
        helo: Some("exch1.council.gcsx.gov.uk".into()),
        auth_user: Some(format!("user{}", n % 5000)),
        sender,
        recipients: vec![
            rcpt("a.person@partner.gcsx.gov.uk"),
            rcpt("b.person@other.gsi.gov.uk"),
        ],
        direction: Direction::Outbound,
        markings: vec![MarkingFound {
            location: "subject".into(),
            raw: "PROTECT".into(),
            scheme: Some("uk-gpms".into()),
            level: Some("PROTECT".into()),
            valid: true,
            diagnostics: vec![],
        }],
        effective_level: Some("PROTECT".into()),
        label_required: true,
        forward: Some(ForwardEvidence {
            signals: vec![],
            score: 0.0,
            threshold: 50.0,
            is_forward: false,
        }),
        edits: vec![
            Edit::LabelHeader {
                name: "X-Protective-Marking".into(),
                value: "PROTECT".into(),
                rule: Some("write".into()),
            },
            Edit::Subject {
                old: "Quarterly figures".into(),
                new: "PROTECT: Quarterly figures".into(),
                rule: Some("write".into()),
            },
            Edit::Disclaimer {
                parts: vec!["text/plain".into(), "text/html".into()],
                rule: Some("COCO-MONITORING".into()),
            },
        ],
        policy_digest: digest.into(),
        size: Some(20_000 + n % 50_000),
        ..Default::default()
    };
    match n % 100 {
        0..=59 => {}
        60..=84 => {
            m.direction = Direction::Inbound;
            m.markings.clear();
            m.effective_level = None;
            m.label_required = false;
            m.edits.clear();
        }
        85..=91 => {
            m.verdict = Verdict::Reject;
            m.smtp_reply = Some("550 5.7.1 marking could not be read (rule GPMS-MALFORMED)".into());
            m.verdict_rules = vec!["GPMS-MALFORMED".into()];
            m.markings[0].valid = false;
            m.markings[0].raw = "PROTECTED".into();
            m.effective_level = None;
            m.edits.clear();
        }
        92..=95 => {
            m.effective_level = Some("RESTRICTED".into());
            m.recipients[1] = RecipientOutcome {
                address: format!("home{}@gmail.com", n % 700),
                status: RecipientStatus::Removed,
                cause: Some(Cause::AutoForward),
                rule: Some("AUTOFWD-DOWN".into()),
                reason: Some("auto-forward of RESTRICTED to a lower domain".into()),
                ceiling: Some("UNCLASSIFIED".into()),
            };
        }
        96..=97 => {
            m.effective_level = Some("CONFIDENTIAL".into());
            m.verdict = Verdict::Reject;
            m.verdict_rules = vec!["GPMS-ABOVE-CEILING".into()];
            m.recipients[0].status = RecipientStatus::Rejected;
            m.recipients[0].cause = Some(Cause::AboveCeiling);
            m.recipients[0].rule = Some("GPMS-ABOVE-CEILING".into());
            m.edits.clear();
        }
        _ => {
            m.effective_level = None;
            m.label_required = false;
            m.markings.clear();
            m.edits.truncate(0);
            m.edits.push(Edit::Disclaimer {
                parts: vec!["text/plain".into()],
                rule: Some("COCO-MONITORING".into()),
            });
        }
    }
    m
}

fn generate(path: &Path, records: u64) {
    let policy = Policy::from_str("uk-gpms.toml", BUILTIN_POLICY).expect("policy");
    let f = std::fs::File::create(path).expect("create trail");
    let mut w = Writer {
        out: BufWriter::with_capacity(1 << 20, f),
        seq: 0,
        prev: GENESIS_PREV.to_string(),
    };
    let span = 30 * 86_400u64; // a month
    let step = span as f64 / records.max(1) as f64;
    let mut digest = policy.digest.clone();
    let mut generation = 0u32;
    let load = |w: &mut Writer<_>, t: u64, digest: &str, trigger: &str, g: u32| {
        w.push(
            &time_at(t),
            AuditEvent::PolicyLoaded(PolicyLoaded {
                path: "/etc/markgate/policy.toml".into(),
                digest: digest.into(),
                trigger: trigger.into(),
                policy_name: Some(policy.name.clone()),
                policy_version: Some(format!("2026.{g}")),
                controls: policy.control_map(),
            }),
        );
    };
    load(&mut w, 0, &digest, "start", 0);
    let mut n = 0u64;
    while w.seq < records {
        let t = (n as f64 * step) as u64;
        // A reload every week.
        if t / (7 * 86_400) > u64::from(generation) {
            generation += 1;
            digest = policy_digest(format!("{}{generation}", policy.digest).as_bytes());
            load(&mut w, t, &digest, "reload", generation);
        }
        let time = time_at(t);
        let m = decision(n, &digest);
        let kind = match n % 100 {
            92..=95 => Some((IncidentKind::BlockedAutoForward, "AUTOFWD-DOWN")),
            96..=97 => Some((IncidentKind::AboveCeiling, "GPMS-ABOVE-CEILING")),
            _ => None,
        };
        let seq = w.push(&time, AuditEvent::MessageDecision(Box::new(m)));
        if let Some((kind, rule)) = kind
            && w.seq < records
        {
            // Alerts go out 5 s .. ~2 min after the incident.
            w.push(
                &time_at(t + 5 + n % 120),
                AuditEvent::AlertDelivered(AlertDelivered {
                    message_id: format!("<alert.{n}@gw1>"),
                    to: vec!["soc@council.gcsx.gov.uk".into()],
                    incidents: 1,
                    kinds: vec![kind],
                    attempts: 1,
                    incident_refs: vec![IncidentRef {
                        kind: Some(kind),
                        raised: time.clone(),
                        audit_seq: Some(seq),
                        rule: Some(rule.into()),
                    }],
                }),
            );
        }
        n += 1;
    }
    w.out.flush().expect("flush");
}

fn main() {
    let a = args();
    std::fs::create_dir_all(&a.dir).expect("bench dir");
    let trail = a.dir.join(format!("audit-{}.jsonl", a.records));
    if a.fresh || !trail.is_file() {
        let t0 = Instant::now();
        generate(&trail, a.records);
        eprintln!(
            "generated {} records in {:.1} s: {}",
            a.records,
            t0.elapsed().as_secs_f64(),
            trail.display()
        );
    }
    let size = std::fs::metadata(&trail).map(|m| m.len()).unwrap_or(0);
    let out = a.dir.join(format!("report.{}", a.format));
    let bin = env!("CARGO_BIN_EXE_markgate");
    let report_args = [
        "audit",
        "report",
        "--evidence",
        "--format",
        &a.format,
        "-o",
        out.to_str().expect("path"),
        trail.to_str().expect("path"),
    ];
    let gnu_time = Path::new("/usr/bin/time");
    let t0 = Instant::now();
    let output = if gnu_time.is_file() {
        Command::new(gnu_time)
            .arg("-v")
            .arg(bin)
            .args(report_args)
            .output()
    } else {
        Command::new(bin).args(report_args).output()
    }
    .expect("run markgate");
    let secs = t0.elapsed().as_secs_f64();
    let stderr = String::from_utf8_lossy(&output.stderr);
    let rss_kib: Option<f64> = stderr
        .lines()
        .find_map(|l| l.trim().strip_prefix("Maximum resident set size (kbytes):"))
        .and_then(|v| v.trim().parse().ok());
    if !output.status.success() {
        eprintln!("{stderr}");
        std::process::exit(1);
    }
    let mib = rss_kib.map(|k| k / 1024.0);
    println!(
        "evidence report ({}): {} records, {:.0} MiB of JSON lines -> {} bytes in {secs:.1} s ({:.0} records/s), max RSS {}",
        a.format,
        a.records,
        size as f64 / (1024.0 * 1024.0),
        std::fs::metadata(&out).map(|m| m.len()).unwrap_or(0),
        a.records as f64 / secs,
        mib.map_or_else(
            || "unknown (no /usr/bin/time)".into(),
            |m| format!("{m:.1} MiB")
        ),
    );
    if !a.bench {
        println!("(smoke run of an unoptimized build: no targets checked)");
        return;
    }
    let mut ok = true;
    if a.records >= 1_000_000 && secs > TARGET_SECS {
        println!("MISSED: more than {TARGET_SECS} s");
        ok = false;
    }
    if mib.is_some_and(|m| m > TARGET_MIB) {
        println!("MISSED: more than {TARGET_MIB} MiB");
        ok = false;
    }
    if !ok {
        std::process::exit(1);
    }
}
