//! `markgate audit report --evidence`: a generated audit trail of known content, reported as
//! JSON, Markdown and HTML through the real binary. The HTML is opened in a real headless
//! Chromium: the rendered DOM must hold the expected figures, and a screenshot must not be
//! blank. A broken chain must be reported in red with its first bad record, and exit 1.
//!
//! Chromium is a real peer: missing, the browser test is skipped locally and fails in CI
//! (`scripts/test.sh` installs it).

mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use markgate::alert::IncidentKind;
use markgate::audit::AuditEvent;
use markgate::audit::event::{AlertDelivered, IncidentRef, PolicyLoaded, ReloadFailed};
use markgate::audit::record::*;

const DAY1: &str = "2026-11-20";
const DAY2: &str = "2026-11-21";
const DAY3: &str = "2026-11-22";

/// Builds a hash-chained trail the way the writer does.
struct Chain {
    lines: Vec<String>,
    prev: String,
}

impl Chain {
    fn new() -> Self {
        Chain {
            lines: Vec::new(),
            prev: GENESIS_PREV.to_string(),
        }
    }

    /// Append `event` at `time`; its `seq`.
    fn push(&mut self, time: &str, event: AuditEvent) -> u64 {
        let seq = self.lines.len() as u64 + 1;
        let r = Record::new(
            seq,
            self.prev.clone(),
            time.into(),
            "gw1.example".into(),
            event,
        );
        let line = String::from_utf8(r.to_line().expect("line")).expect("utf8");
        self.prev = line_hash(line.as_bytes());
        self.lines.push(line);
        seq
    }

    fn write(&self, path: &Path) {
        let mut text = self.lines.join("\n");
        text.push('\n');
        std::fs::write(path, text).expect("write trail");
    }
}

fn digest(n: u8) -> String {
    policy_digest(format!("policy {n}").as_bytes())
}

fn controls_map(extra: bool) -> BTreeMap<String, Vec<String>> {
    let mut m = BTreeMap::new();
    let mut put = |r: &str, cs: &[&str]| {
        m.insert(
            r.to_string(),
            cs.iter().map(|c| c.to_string()).collect::<Vec<_>>(),
        );
    };
    put("AUTOFWD-DOWN", &["CoCo-4.1-autoforward", "CoCo-11"]);
    put("GPMS-MALFORMED", &["CoCo-4.1-awareness"]);
    put("GPMS-ABOVE-CEILING", &["CoCo-4.1-awareness", "CoCo-11"]);
    put("write", &["CoCo-4.1-labels"]);
    put("COCO-MONITORING", &["CoCo-4.1-disclaimer"]);
    if extra {
        put("GPMS-CONFLICT", &["CoCo-4.1-awareness"]);
    }
    m
}

fn rcpt(addr: &str) -> RecipientOutcome {
    RecipientOutcome {
        address: addr.into(),
        ..Default::default()
    }
}

fn base(sender: &str, digest: &str) -> MessageRecord {
    MessageRecord {
        sender: sender.into(),
        recipients: vec![rcpt("someone@partner.gov.uk")],
        direction: Direction::Outbound,
        policy_digest: digest.into(),
        ..Default::default()
    }
}

fn labelled(digest: &str) -> MessageRecord {
    MessageRecord {
        effective_level: Some("PROTECT".into()),
        label_required: true,
        edits: vec![
            Edit::LabelHeader {
                name: "X-Protective-Marking".into(),
                value: "PROTECT".into(),
                rule: Some("write".into()),
            },
            Edit::Disclaimer {
                parts: vec!["text/plain".into()],
                rule: Some("COCO-MONITORING".into()),
            },
        ],
        ..base("alice@council.gcsx.gov.uk", digest)
    }
}

fn malformed(digest: &str) -> MessageRecord {
    MessageRecord {
        verdict: Verdict::Reject,
        smtp_reply: Some("550 5.7.1 marking could not be read".into()),
        verdict_rules: vec!["GPMS-MALFORMED".into()],
        ..base("bad@council.gcsx.gov.uk", digest)
    }
}

fn autoforward(digest: &str) -> MessageRecord {
    MessageRecord {
        effective_level: Some("RESTRICTED".into()),
        recipients: vec![RecipientOutcome {
            address: "home@gmail.com".into(),
            status: RecipientStatus::Removed,
            cause: Some(Cause::AutoForward),
            rule: Some("AUTOFWD-DOWN".into()),
            ..Default::default()
        }],
        ..base("fwd@council.gcsx.gov.uk", digest)
    }
}

fn alert(refs: Vec<IncidentRef>) -> AuditEvent {
    AuditEvent::AlertDelivered(AlertDelivered {
        message_id: "<alert@gw1>".into(),
        to: vec!["soc@council.gcsx.gov.uk".into()],
        incidents: refs.len() as u64,
        kinds: refs.iter().filter_map(|r| r.kind).collect(),
        attempts: 1,
        incident_refs: refs,
    })
}

fn iref(kind: IncidentKind, raised: &str, seq: u64, rule: &str) -> IncidentRef {
    IncidentRef {
        kind: Some(kind),
        raised: raised.into(),
        audit_seq: Some(seq),
        rule: Some(rule.into()),
    }
}

fn msg(m: MessageRecord) -> AuditEvent {
    AuditEvent::MessageDecision(Box::new(m))
}

/// The trail of known content (figures in [`check_full_json`]):
/// day 1 under policy 1: 10 labelled PROTECT mails, 3 refused malformed markings, 2 blocked
/// auto-forwards alerted 30 s and 90 s later; day 2 after a reload to policy 2 (version "2"):
/// 5 unmarked inbound mails, 1 above-ceiling refusal alerted 26 h later, a refused reload;
/// day 3: 1 blocked auto-forward with no alert yet (1 h before the trail ends).
fn known_trail() -> Chain {
    let (d1, d2) = (digest(1), digest(2));
    let mut c = Chain::new();
    c.push(
        &format!("{DAY1}T00:00:00Z"),
        AuditEvent::PolicyLoaded(PolicyLoaded {
            path: "/etc/markgate/policy.toml".into(),
            digest: d1.clone(),
            trigger: "start".into(),
            policy_name: Some("uk-gpms".into()),
            policy_version: Some("1".into()),
            controls: controls_map(false),
        }),
    );
    for i in 0..10 {
        c.push(&format!("{DAY1}T08:{i:02}:00Z"), msg(labelled(&d1)));
    }
    for i in 0..3 {
        c.push(&format!("{DAY1}T09:{i:02}:00Z"), msg(malformed(&d1)));
    }
    let t1 = format!("{DAY1}T10:00:00Z");
    let s1 = c.push(&t1, msg(autoforward(&d1)));
    c.push(
        &format!("{DAY1}T10:00:30Z"),
        alert(vec![iref(
            IncidentKind::BlockedAutoForward,
            &t1,
            s1,
            "AUTOFWD-DOWN",
        )]),
    );
    let t2 = format!("{DAY1}T11:00:00Z");
    let s2 = c.push(&t2, msg(autoforward(&d1)));
    c.push(
        &format!("{DAY1}T11:01:30Z"),
        alert(vec![iref(
            IncidentKind::BlockedAutoForward,
            &t2,
            s2,
            "AUTOFWD-DOWN",
        )]),
    );

    c.push(
        &format!("{DAY2}T00:00:00Z"),
        AuditEvent::PolicyLoaded(PolicyLoaded {
            path: "/etc/markgate/policy.toml".into(),
            digest: d2.clone(),
            trigger: "reload".into(),
            policy_name: Some("uk-gpms".into()),
            policy_version: Some("2".into()),
            controls: controls_map(true),
        }),
    );
    for i in 0..5 {
        let mut m = base("partner@example.org", &d2);
        m.direction = Direction::Inbound;
        c.push(&format!("{DAY2}T08:{i:02}:00Z"), msg(m));
    }
    let t3 = format!("{DAY2}T10:00:00Z");
    let s3 = c.push(
        &t3,
        msg(MessageRecord {
            effective_level: Some("CONFIDENTIAL".into()),
            verdict: Verdict::Reject,
            verdict_rules: vec!["GPMS-ABOVE-CEILING".into()],
            recipients: vec![RecipientOutcome {
                address: "x@gmail.com".into(),
                status: RecipientStatus::Rejected,
                cause: Some(Cause::AboveCeiling),
                rule: Some("GPMS-ABOVE-CEILING".into()),
                ..Default::default()
            }],
            ..base("boss@council.gcsx.gov.uk", &d2)
        }),
    );
    c.push(
        &format!("{DAY2}T12:00:00Z"),
        AuditEvent::ReloadFailed(ReloadFailed {
            path: "/etc/markgate/policy.toml".into(),
            error: "policy.toml:12:7: rule[3].controls: found unknown control `ISM-9999`".into(),
            kept_digest: d2.clone(),
        }),
    );
    c.push(&format!("{DAY3}T11:00:00Z"), msg(autoforward(&d2)));
    c.push(
        &format!("{DAY3}T12:00:00Z"),
        alert(vec![iref(
            IncidentKind::AboveCeiling,
            &t3,
            s3,
            "GPMS-ABOVE-CEILING",
        )]),
    );
    c
}

/// [`known_trail`] written to `audit.jsonl` in `dir`.
fn known_trail_in(dir: &Path) -> PathBuf {
    let trail = dir.join("audit.jsonl");
    known_trail().write(&trail);
    trail
}

fn tmpdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("markgate-evidence-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("tmpdir");
    d
}

fn markgate(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_markgate"))
        .args(args)
        .output()
        .expect("run markgate");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `markgate audit report --evidence ARGS… FILES…`.
fn evidence(args: &[&str], files: &[&Path]) -> (i32, String, String) {
    let mut all = vec!["audit", "report", "--evidence"];
    all.extend_from_slice(args);
    all.extend(files.iter().map(|f| path(f)));
    markgate(&all)
}

fn path(p: &Path) -> &str {
    p.to_str().expect("path")
}

fn row<'a>(json: &'a serde_json::Value, id: &str) -> &'a serde_json::Value {
    json["controls"]
        .as_array()
        .expect("controls")
        .iter()
        .find(|r| r["id"] == id)
        .unwrap_or_else(|| panic!("no row {id}"))
}

fn check_row(
    json: &serde_json::Value,
    id: &str,
    messages: u64,
    incidents: u64,
    (p50, max): (Option<f64>, Option<f64>),
    bound: &str,
    status: &str,
) {
    let r = row(json, id);
    assert_eq!(r["messages"], messages, "{id} messages: {r}");
    assert_eq!(r["incidents"], incidents, "{id} incidents: {r}");
    assert_eq!(r["latency_p50_secs"].as_f64(), p50, "{id} p50: {r}");
    assert_eq!(r["latency_max_secs"].as_f64(), max, "{id} max: {r}");
    assert_eq!(r["bound_24h"], bound, "{id} bound: {r}");
    assert_eq!(r["status"], status, "{id} status: {r}");
}

fn check_full_json(j: &serde_json::Value) {
    assert_eq!(j["chain"]["intact"], true, "{}", j["chain"]);
    assert_eq!(j["chain"]["records"], 28);
    assert_eq!(j["records"], 28);
    assert_eq!(j["messages"], 22);
    check_row(
        j,
        "CoCo-4.1-labels",
        10,
        0,
        (None, None),
        "no incidents",
        "enforced",
    );
    check_row(
        j,
        "CoCo-4.1-disclaimer",
        10,
        0,
        (None, None),
        "no incidents",
        "enforced",
    );
    check_row(
        j,
        "CoCo-4.1-autoforward",
        3,
        3,
        (Some(30.0), Some(90.0)),
        "pending",
        "enforced",
    );
    check_row(
        j,
        "CoCo-4.1-awareness",
        4,
        1,
        (Some(93_600.0), Some(93_600.0)),
        "not met",
        "exceptions",
    );
    check_row(
        j,
        "CoCo-4.1-audit",
        22,
        0,
        (None, None),
        "no incidents",
        "enforced",
    );
    check_row(
        j,
        "CoCo-11",
        4,
        4,
        (Some(90.0), Some(93_600.0)),
        "not met",
        "exceptions",
    );
    check_row(j, "ISM-0565", 0, 0, (None, None), "no incidents", "no rule");
    assert_eq!(row(j, "CoCo-4.1-autoforward")["pending"], 1);
    assert_eq!(
        row(j, "CoCo-4.1-awareness")["rules"],
        serde_json::json!(["GPMS-ABOVE-CEILING", "GPMS-CONFLICT", "GPMS-MALFORMED"])
    );
    // Charts' data.
    let day = |d: &str| -> serde_json::Value {
        j["per_day"]
            .as_array()
            .expect("per_day")
            .iter()
            .find(|x| x[0] == d)
            .map(|x| x[1].clone())
            .unwrap_or_else(|| panic!("no day {d}"))
    };
    let count = |row: &serde_json::Value, outcome: &str| -> u64 {
        row.as_array()
            .expect("row")
            .iter()
            .find(|x| x[0] == outcome)
            .and_then(|x| x[1].as_u64())
            .expect("outcome")
    };
    let d1 = day(DAY1);
    assert_eq!(count(&d1, "accepted"), 10);
    assert_eq!(count(&d1, "rejected"), 3);
    assert_eq!(count(&d1, "recipients removed"), 2);
    assert_eq!(count(&day(DAY2), "accepted"), 5);
    assert_eq!(count(&day(DAY2), "rejected"), 1);
    assert_eq!(count(&day(DAY3), "recipients removed"), 1);
    assert_eq!(
        j["top_refused_rules"],
        serde_json::json!([
            ["AUTOFWD-DOWN", 3],
            ["GPMS-MALFORMED", 3],
            ["GPMS-ABOVE-CEILING", 1]
        ])
    );
    assert_eq!(
        j["top_refused_senders"],
        serde_json::json!([
            ["bad@council.gcsx.gov.uk", 3],
            ["fwd@council.gcsx.gov.uk", 3],
            ["boss@council.gcsx.gov.uk", 1]
        ])
    );
    assert_eq!(
        j["by_level"],
        serde_json::json!([
            ["PROTECT", 10],
            ["unmarked", 8],
            ["RESTRICTED", 3],
            ["CONFIDENTIAL", 1]
        ])
    );
    // Policy periods and the reloads.
    let pols = j["policies"].as_array().expect("policies");
    assert_eq!(pols.len(), 2);
    assert_eq!(pols[0]["digest"], digest(1));
    assert_eq!(pols[0]["messages"], 15);
    assert_eq!(pols[0]["version"], "1");
    assert_eq!(pols[1]["digest"], digest(2));
    assert_eq!(pols[1]["messages"], 7);
    assert_eq!(pols[1]["version"], "2");
    let ev: Vec<&str> = j["policy_events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| e["trigger"].as_str().expect("trigger"))
        .collect();
    assert_eq!(ev, ["start", "reload", "reload failed"]);
}

#[test]
fn json_holds_the_known_figures() {
    let dir = tmpdir("json");
    let trail = known_trail_in(&dir);
    let (code, out, err) = evidence(&["--format", "json"], &[&trail]);
    assert_eq!(code, 0, "{err}");
    let j: serde_json::Value = serde_json::from_str(&out).expect("json");
    check_full_json(&j);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_period_counts_only_its_days_but_late_alerts_still_count() {
    let dir = tmpdir("period");
    let trail = known_trail_in(&dir);
    let (code, out, err) = evidence(
        &["--format", "json", "--since", DAY2, "--until", DAY2],
        &[&trail],
    );
    assert_eq!(code, 0, "{err}");
    let j: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(j["messages"], 6);
    // The above-ceiling refusal of day 2 was alerted on day 3, 26 h later: measured, not met.
    check_row(
        &j,
        "CoCo-11",
        1,
        1,
        (Some(93_600.0), Some(93_600.0)),
        "not met",
        "exceptions",
    );
    check_row(
        &j,
        "CoCo-4.1-labels",
        0,
        0,
        (None, None),
        "no incidents",
        "no activity",
    );
    let ev = j["policy_events"].as_array().expect("events");
    assert_eq!(
        ev.len(),
        2,
        "the reload and the refused reload of day 2: {ev:?}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn markdown_has_the_sections_and_the_table() {
    let dir = tmpdir("md");
    let trail = known_trail_in(&dir);
    let out_file = dir.join("report.md");
    let (code, _, err) = evidence(&["--format", "md", "-o", path(&out_file)], &[&trail]);
    assert_eq!(code, 0, "{err}");
    let md = std::fs::read_to_string(&out_file).expect("md");
    assert!(md.contains("## Audit trail integrity: verified"), "{md}");
    assert!(
        md.contains("Hash chain intact: 28 records, seq 1 to 28."),
        "{md}"
    );
    let coco11 = md
        .lines()
        .find(|l| l.starts_with("| CoCo-11 "))
        .expect("CoCo-11 row");
    let cells: Vec<&str> = coco11.split(" | ").collect();
    assert_eq!(
        cells[2],
        "(incident alerts), AUTOFWD-DOWN, GPMS-ABOVE-CEILING"
    );
    assert_eq!(cells[3], "4");
    assert_eq!(cells[4], "4");
    assert_eq!(cells[5], "1 min 30 s");
    assert_eq!(cells[6], "1 d 2 h");
    assert_eq!(cells[7], "not met");
    assert!(md.contains("| AUTOFWD-DOWN | 3 |"), "{md}");
    assert!(
        md.contains(&format!("| {DAY1} | 10 | 2 | 3 | 0 | 0 | 0 | 0 |")),
        "{md}"
    );
    assert!(md.contains("reload refused: policy.toml:12:7"), "{md}");
    let _ = std::fs::remove_dir_all(dir);
}

/// Change one byte of line 5: the chain breaks there.
fn break_line_5(trail: &Path) {
    let text = std::fs::read_to_string(trail).expect("read");
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    lines[4] = lines[4].replace("alice@", "mallory@");
    std::fs::write(trail, lines.join("\n") + "\n").expect("write");
}

#[test]
fn a_broken_chain_is_reported_first_in_every_format_and_exits_1() {
    let dir = tmpdir("broken");
    let trail = known_trail_in(&dir);
    break_line_5(&trail);
    let t = trail.to_str().expect("path");

    let (code, out, err) = markgate(&["audit", "report", "--evidence", "--format", "json", t]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("chain is broken"), "{err}");
    let j: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(j["chain"]["intact"], false);
    assert_eq!(j["chain"]["problems"][0]["kind"], "edited");
    assert_eq!(j["chain"]["problems"][0]["line"], 5);
    assert_eq!(j["chain"]["problems"][0]["seq"], 5);
    assert!(
        j["chain"]["first_bad_line"]
            .as_str()
            .expect("line")
            .contains("mallory@"),
        "{}",
        j["chain"]
    );

    let (code, md, _) = markgate(&["audit", "report", "--evidence", "--format", "md", t]);
    assert_eq!(code, 1);
    let first_heading = md.lines().find(|l| l.starts_with("## ")).expect("heading");
    assert_eq!(first_heading, "## Audit trail integrity: **BROKEN**");
    assert!(
        md.contains(&format!("**First bad record**: edited at `{t}:5` (seq 5)")),
        "{md}"
    );

    let (code, html, _) = markgate(&["audit", "report", "--evidence", t]);
    assert_eq!(code, 1);
    let chain_at = html.find("id=\"chain\"").expect("chain section");
    let controls_at = html.find("id=\"controls\"").expect("controls");
    assert!(chain_at < controls_at, "the verification comes first");
    assert!(html.contains("<section id=\"chain\" class=\"broken\">"));
    assert!(
        html.contains(&format!("<code>{t}:5</code> (seq 5)")),
        "first bad record named"
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_missing_file_is_a_chain_problem_not_a_missing_report() {
    let dir = tmpdir("missing");
    let trail = known_trail_in(&dir);
    let gone = dir.join("audit.jsonl.1");
    let (code, out, _) = evidence(&["--format", "json"], &[&gone, &trail]);
    assert_eq!(code, 1);
    let j: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(j["chain"]["intact"], false);
    assert_eq!(j["chain"]["problems"][0]["kind"], "unreadable");
    assert_eq!(j["messages"], 22, "the readable file still counts");
    let _ = std::fs::remove_dir_all(dir);
}

/// The cells of the controls-table row of `id` in a DOM, by class: `messages` → "3".
fn dom_cells(dom: &str, id: &str) -> BTreeMap<String, String> {
    let start = dom
        .find(&format!("<tr data-control=\"{id}\">"))
        .unwrap_or_else(|| panic!("row {id} not in the DOM"));
    let end = start + dom[start..].find("</tr>").expect("row end");
    let row = &dom[start..end];
    let mut out = BTreeMap::new();
    let mut rest = row;
    while let Some(i) = rest.find("<td class=\"") {
        rest = &rest[i + 11..];
        let q = rest.find('"').expect("class end");
        let class = rest[..q].to_string();
        let gt = rest.find('>').expect("td open end");
        let close = rest.find("</td>").expect("td close");
        let text = rest[gt + 1..close].to_string();
        out.insert(class, text);
        rest = &rest[close..];
    }
    out
}

struct Browser {
    bin: PathBuf,
    profile: PathBuf,
}

impl Browser {
    fn cmd(&self) -> Command {
        let mut c = Command::new(&self.bin);
        c.args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-extensions",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
        ])
        .arg(format!("--user-data-dir={}", self.profile.display()))
        .env("HOME", &self.profile);
        c
    }
}

fn browser(dir: &Path) -> Option<Browser> {
    if !support::peers::available("audit_evidence (headless Chromium)", &["chromium"], false) {
        eprintln!(
            "(Chromium: apt-get install -y --no-install-recommends chromium fonts-dejavu-core)"
        );
        return None;
    }
    let profile = dir.join("chromium-profile");
    std::fs::create_dir_all(&profile).expect("profile");
    Some(Browser {
        bin: support::peers::tool("chromium"),
        profile,
    })
}

/// Mean and variance of the luminance of an RGB(A) PNG.
fn luminance_stats(png_path: &Path) -> (u32, u32, f64, f64) {
    let decoder = png::Decoder::new(std::fs::File::open(png_path).expect("png"));
    let mut reader = decoder.read_info().expect("png header");
    let mut buf = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut buf).expect("png frame");
    let channels = match info.color_type {
        png::ColorType::Rgb => 3,
        png::ColorType::Rgba => 4,
        png::ColorType::Grayscale => 1,
        png::ColorType::GrayscaleAlpha => 2,
        other => panic!("unexpected colour type {other:?}"),
    };
    assert_eq!(info.bit_depth, png::BitDepth::Eight);
    let px = &buf[..info.buffer_size()];
    let lum: Vec<f64> = px
        .chunks(channels)
        .map(|p| {
            if channels >= 3 {
                0.299 * f64::from(p[0]) + 0.587 * f64::from(p[1]) + 0.114 * f64::from(p[2])
            } else {
                f64::from(p[0])
            }
        })
        .collect();
    let n = lum.len() as f64;
    let mean = lum.iter().sum::<f64>() / n;
    let var = lum.iter().map(|l| (l - mean) * (l - mean)).sum::<f64>() / n;
    (info.width, info.height, mean, var)
}

#[test]
fn html_renders_in_chromium_with_the_expected_figures() {
    let dir = tmpdir("chromium");
    let Some(browser) = browser(&dir) else {
        return;
    };
    let trail = known_trail_in(&dir);
    let page = dir.join("report.html");
    let (code, _, err) = evidence(&["--format", "html", "-o", path(&page)], &[&trail]);
    assert_eq!(code, 0, "{err}");
    let html = std::fs::read_to_string(&page).expect("html");
    assert!(!html.contains("<script"), "no JavaScript");
    assert!(
        !html.contains("http://") || !html.contains("src=\"http"),
        "nothing fetched"
    );
    assert!(!html.contains("src="), "no external resources");
    assert_eq!(html.matches("<svg").count(), 4, "four charts");

    let url = format!("file://{}", page.display());
    let out = browser
        .cmd()
        .arg("--dump-dom")
        .arg(&url)
        .output()
        .expect("run chromium");
    let dom = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && dom.contains("</html>"),
        "chromium --dump-dom failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        dom.contains("<section id=\"chain\" class=\"ok\">"),
        "chain verified"
    );
    assert!(dom.contains("<dd id=\"total-messages\">22</dd>"));
    let c = dom_cells(&dom, "CoCo-11");
    assert_eq!(c["n messages"], "4");
    assert_eq!(c["n incidents"], "4");
    assert_eq!(c["n p50"], "1 min 30 s");
    assert_eq!(c["n max"], "1 d 2 h");
    assert_eq!(c["bound not-met"], "not met");
    let c = dom_cells(&dom, "CoCo-4.1-autoforward");
    assert_eq!(c["n messages"], "3");
    assert_eq!(c["n incidents"], "3");
    assert_eq!(c["n p50"], "30 s");
    assert_eq!(c["n max"], "1 min 30 s");
    assert_eq!(c["bound pending"], "pending");
    assert_eq!(c["rules mono"], "AUTOFWD-DOWN");
    let c = dom_cells(&dom, "CoCo-4.1-labels");
    assert_eq!(c["n messages"], "10");
    assert!(c["status enforced"].starts_with("enforced"));
    let c = dom_cells(&dom, "ISM-0565");
    assert_eq!(c["n messages"], "0");
    assert!(c["status no-rule"].starts_with("no rule"));
    assert!(
        dom.contains(&digest(2)),
        "policy digest of the second period"
    );

    let shot = dir.join("report.png");
    let out = browser
        .cmd()
        .arg(format!("--screenshot={}", shot.display()))
        .arg("--window-size=1200,1800")
        .arg(&url)
        .output()
        .expect("run chromium");
    assert!(
        shot.is_file(),
        "no screenshot: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (w, h, mean, var) = luminance_stats(&shot);
    assert_eq!((w, h), (1200, 1800));
    // A blank (all white or all one colour) page has no variance; text, tables and charts do.
    assert!(
        var > 200.0,
        "screenshot looks blank: mean {mean:.1}, variance {var:.1}"
    );
    assert!(mean > 150.0, "mostly a light page: mean {mean:.1}");
    if let Ok(keep) = std::env::var("MARKGATE_EVIDENCE_SCREENSHOT") {
        std::fs::copy(&shot, keep).expect("keep screenshot");
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_broken_chain_renders_red_in_chromium() {
    let dir = tmpdir("chromium-broken");
    let Some(browser) = browser(&dir) else {
        return;
    };
    let trail = known_trail_in(&dir);
    let page = dir.join("report.html");
    break_line_5(&trail);
    let (code, _, _) = evidence(&["-o", path(&page)], &[&trail]);
    assert_eq!(code, 1);
    let shot = dir.join("broken.png");
    // A small window: only the top of the page, where the red verification box is.
    let out = browser
        .cmd()
        .arg(format!("--screenshot={}", shot.display()))
        .arg("--window-size=1000,300")
        .arg(format!("file://{}", page.display()))
        .output()
        .expect("run chromium");
    assert!(shot.is_file(), "{}", String::from_utf8_lossy(&out.stderr));
    let decoder = png::Decoder::new(std::fs::File::open(&shot).expect("png"));
    let mut reader = decoder.read_info().expect("png header");
    let mut buf = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut buf).expect("frame");
    let channels = if info.color_type == png::ColorType::Rgba {
        4
    } else {
        3
    };
    let reddish = buf[..info.buffer_size()]
        .chunks(channels)
        .filter(|p| {
            p[0] > 180 && p[1] < 120 && p[2] < 120
                || (p[0] > 240 && p[1] < 240 && p[1] > 200 && p[2] < 240 && p[0] > p[2] + 8)
        })
        .count();
    assert!(
        reddish > 1000,
        "the broken-chain box should be red at the top of the page ({reddish} red pixels)"
    );
    let _ = std::fs::remove_dir_all(dir);
}
