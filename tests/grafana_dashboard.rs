//! `packaging/grafana/markgate.json` queries only what markgate exports: every metric name and
//! label in the dashboard's PromQL is checked against a real scrape of the metrics endpoint
//! (served in-process on loopback, after one of each recorded event, so every family has
//! samples).

use std::collections::BTreeSet;
use std::time::Duration;

use markgate::metrics::Metrics;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const DASHBOARD: &str = include_str!("../packaging/grafana/markgate.json");

/// Metric and label names a PromQL expression refers to.
#[derive(Debug, Default)]
struct Refs {
    metrics: BTreeSet<String>,
    labels: BTreeSet<String>,
}

const KEYWORDS: &[&str] = &[
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "bool",
    "and",
    "or",
    "unless",
    "offset",
];
const LABEL_LISTS: &[&str] = &[
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
];

/// Aggregation operators: `sum by (x) (...)` puts the clause before the parenthesis.
const AGGREGATIONS: &[&str] = &[
    "sum",
    "min",
    "max",
    "avg",
    "group",
    "stddev",
    "stdvar",
    "count",
    "count_values",
    "bottomk",
    "topk",
    "quantile",
    "limitk",
    "limit_ratio",
];

fn ident_start(c: u8) -> bool {
    c.is_ascii_alphabetic() || c == b'_' || c == b':'
}

fn ident_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_' || c == b':'
}

fn skip_string(b: &[u8], mut i: usize) -> usize {
    let q = b[i];
    i += 1;
    while i < b.len() && b[i] != q {
        if b[i] == b'\\' {
            i += 1;
        }
        i += 1;
    }
    i + 1
}

fn read_ident(b: &[u8], mut i: usize) -> (String, usize) {
    let start = i;
    while i < b.len() && ident_char(b[i]) {
        i += 1;
    }
    (String::from_utf8_lossy(&b[start..i]).into_owned(), i)
}

fn next_non_space(b: &[u8], mut i: usize) -> Option<u8> {
    while i < b.len() && b[i].is_ascii_whitespace() {
        i += 1;
    }
    b.get(i).copied()
}

/// A small PromQL scanner: enough to tell metric names from functions, keywords, label names,
/// strings, durations, numbers and Grafana variables.
fn refs(expr: &str, out: &mut Refs) {
    let b = expr.as_bytes();
    let mut i = 0;
    let mut label_list_next = false;
    while i < b.len() {
        let c = b[i];
        if c == b'"' || c == b'\'' || c == b'`' {
            i = skip_string(b, i);
        } else if c == b'{' {
            // Matchers: label op "value", ...
            i += 1;
            while i < b.len() && b[i] != b'}' {
                if b[i] == b'"' || b[i] == b'\'' || b[i] == b'`' {
                    i = skip_string(b, i);
                } else if ident_start(b[i]) {
                    let (name, j) = read_ident(b, i);
                    out.labels.insert(name);
                    i = j;
                } else {
                    i += 1;
                }
            }
            i += 1;
        } else if c == b'[' {
            while i < b.len() && b[i] != b']' {
                i += 1;
            }
            i += 1;
        } else if c == b'$' {
            i += 1;
            while i < b.len() && ident_char(b[i]) {
                i += 1;
            }
        } else if c.is_ascii_digit() || (c == b'.' && b.get(i + 1).is_some_and(u8::is_ascii_digit))
        {
            while i < b.len()
                && (b[i].is_ascii_alphanumeric()
                    || b[i] == b'.'
                    || ((b[i] == b'-' || b[i] == b'+') && matches!(b[i - 1], b'e' | b'E')))
            {
                i += 1;
            }
        } else if c == b'(' && label_list_next {
            label_list_next = false;
            i += 1;
            while i < b.len() && b[i] != b')' {
                if ident_start(b[i]) {
                    let (name, j) = read_ident(b, i);
                    out.labels.insert(name);
                    i = j;
                } else {
                    i += 1;
                }
            }
            i += 1;
        } else if ident_start(c) {
            let (word, j) = read_ident(b, i);
            i = j;
            if KEYWORDS.contains(&word.as_str()) {
                label_list_next = LABEL_LISTS.contains(&word.as_str());
            } else if AGGREGATIONS.contains(&word.as_str()) || next_non_space(b, i) == Some(b'(') {
                // A function (sum, rate, histogram_quantile, topk, clamp_min, changes, ...).
            } else {
                out.metrics.insert(word);
            }
        } else {
            i += 1;
        }
    }
}

fn collect_exprs(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, v) in m {
                match (k.as_str(), v) {
                    ("expr", serde_json::Value::String(s)) => out.push(s.clone()),
                    _ => collect_exprs(v, out),
                }
            }
        }
        serde_json::Value::Array(a) => a.iter().for_each(|x| collect_exprs(x, out)),
        _ => {}
    }
}

/// `label_values(metric, label)` in template variables.
fn template_refs(dash: &serde_json::Value, out: &mut Refs) {
    for var in dash["templating"]["list"].as_array().expect("templating") {
        let q = match &var["query"] {
            serde_json::Value::String(s) => s.clone(),
            serde_json::Value::Object(o) => o
                .get("query")
                .and_then(|q| q.as_str())
                .unwrap_or_default()
                .to_string(),
            _ => String::new(),
        };
        if let Some(args) = q
            .strip_prefix("label_values(")
            .and_then(|r| r.strip_suffix(')'))
        {
            let (metric, label) = args.split_once(',').expect("label_values(metric, label)");
            out.metrics.insert(metric.trim().to_string());
            out.labels.insert(label.trim().to_string());
        }
    }
}

/// One of everything the daemon records, so every family has a sample.
fn exercise(m: &Metrics) {
    m.message_decided(
        "outbound",
        "PROTECT",
        "accept",
        &["write", "COCO-MONITORING"],
        Duration::from_millis(2),
    );
    m.message_decided(
        "outbound",
        "RESTRICTED",
        "reject",
        &["AUTOFWD-DOWN"],
        Duration::from_millis(3),
    );
    m.message_decided("unknown", "none", "tempfail", &[], Duration::from_millis(1));
    m.reload(true);
    m.reload(false);
    m.audit_fsync(Duration::from_micros(800));
    m.audit_queue_depth(3);
    m.alert_backlog(1);
    let _guard = m.connection_guard();
}

async fn scrape(m: Metrics) -> String {
    let listener = markgate::metrics::bind("127.0.0.1:0".parse().expect("addr"))
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(m.serve(listener, async move {
        let _ = rx.await;
    }));
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .expect("request");
    let mut body = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), s.read_to_end(&mut body))
        .await
        .expect("scrape in time")
        .expect("read");
    let _ = tx.send(());
    let _ = server.await;
    let text = String::from_utf8(body).expect("utf8");
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    text
}

/// Sample names and label names in an exposition.
fn exported(text: &str) -> (BTreeSet<String>, BTreeSet<String>) {
    let body = text.split("\r\n\r\n").nth(1).expect("body");
    let mut names = BTreeSet::new();
    let mut labels = BTreeSet::new();
    for line in body
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let end = line.find(['{', ' ']).expect("sample");
        names.insert(line[..end].to_string());
        if line.as_bytes()[end] == b'{' {
            let close = line.find('}').expect("labels end");
            for pair in line[end + 1..close].split(',') {
                if let Some((k, _)) = pair.split_once('=') {
                    labels.insert(k.trim().to_string());
                }
            }
        }
    }
    (names, labels)
}

#[test]
fn the_scanner_tells_metrics_from_the_rest() {
    let mut r = Refs::default();
    refs(
        r#"histogram_quantile(0.99, sum by (le) (rate(m_bucket{instance=~"$instance",verdict!="a{b}"}[$__rate_interval]))) / clamp_min(sum(rate(x_total[5m] offset 1h)), 1e-9) > bool 2"#,
        &mut r,
    );
    assert_eq!(
        r.metrics.iter().collect::<Vec<_>>(),
        ["m_bucket", "x_total"]
    );
    assert_eq!(
        r.labels.iter().collect::<Vec<_>>(),
        ["instance", "le", "verdict"]
    );
}

#[tokio::test]
async fn every_dashboard_query_uses_exported_metrics_and_labels() {
    let dash: serde_json::Value = serde_json::from_str(DASHBOARD).expect("dashboard JSON");
    assert_eq!(dash["uid"], "markgate");
    let mut exprs = Vec::new();
    collect_exprs(&dash, &mut exprs);
    assert!(exprs.len() >= 15, "{exprs:?}");
    let mut r = Refs::default();
    for e in &exprs {
        refs(e, &mut r);
    }
    template_refs(&dash, &mut r);

    let m = Metrics::new();
    exercise(&m);
    let text = scrape(m).await;
    let (names, labels) = exported(&text);

    let missing: Vec<_> = r.metrics.iter().filter(|n| !names.contains(*n)).collect();
    assert!(
        missing.is_empty(),
        "the dashboard queries metrics the endpoint does not export: {missing:?}\nexported: {names:?}"
    );
    // `instance` and `job` are added by Prometheus at scrape time.
    let missing: Vec<_> = r
        .labels
        .iter()
        .filter(|l| !labels.contains(*l) && !matches!(l.as_str(), "instance" | "job"))
        .collect();
    assert!(
        missing.is_empty(),
        "the dashboard uses labels the endpoint does not export: {missing:?}\nexported: {labels:?}"
    );
    // What the dashboard is for: decisions, refusals by rule, tempfails, audit flush latency,
    // reloads.
    for needed in [
        "markgate_messages_total",
        "markgate_refusals_total",
        "markgate_audit_fsync_duration_seconds_bucket",
        "markgate_reloads_total",
    ] {
        assert!(r.metrics.contains(needed), "dashboard lacks {needed}");
    }
    assert!(exprs.iter().any(|e| e.contains("verdict=\"tempfail\"")));
    assert!(
        exprs
            .iter()
            .any(|e| e.contains("sum by (rule)") && e.contains("refusals"))
    );
    // The refusal counter counts the reject by its rule, not the accepted mail's rules.
    let body = text.split("\r\n\r\n").nth(1).expect("body");
    assert!(
        body.contains("markgate_refusals_total{rule=\"AUTOFWD-DOWN\"} 1"),
        "{body}"
    );
    assert!(
        !body.contains("markgate_refusals_total{rule=\"write\"}"),
        "{body}"
    );
}
