//! Operational metrics and the Prometheus/OpenMetrics text endpoint that serves them.
//!
//! Owns: the metric families markgate exports, the typed [`Metrics`] handle the rest of the
//! daemon records into, and a deliberately tiny HTTP/1.1 responder for `GET /metrics` (no web
//! framework: one path, bounded request size, timeouts, `Connection: close`). The exposition
//! format comes from the `prometheus-client` crate.
//!
//! Must not: decide anything about mail, or slow it down. Recording is a few atomic adds; the
//! endpoint runs on its own task and refuses to listen anywhere but loopback, because it has no
//! authentication (put a reverse proxy in front of it to scrape from elsewhere).
//!
//! Label values come from closed sets (directions, verdicts, the policy's levels and rule ids),
//! but they are still capped in length and in number of series per family, so a policy with a
//! mistake cannot blow up memory: past the cap, new series are counted under `other`.
//! Reference: the OpenMetrics text format; packaging/README.md lists every metric.

use std::fmt::Write as _;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tracing::{debug, warn};

/// Longest label value kept; longer ones are cut (at a character boundary).
const MAX_LABEL_LEN: usize = 64;
/// Most series per labelled family before new label sets are folded into `other`.
const MAX_SERIES: usize = 2000;
/// Largest HTTP request head accepted (request line + headers).
const MAX_REQUEST: usize = 8 * 1024;
/// Time a scraper has to send its request, and to read the answer.
const HTTP_TIMEOUT: Duration = Duration::from_secs(10);
/// Scrapes served at once; more wait for a slot (the kernel backlog holds them).
const MAX_SCRAPES: usize = 8;

/// The OpenMetrics content type that `prometheus-client`'s text encoder produces.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MessageLabels {
    direction: String,
    level: String,
    verdict: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RuleLabels {
    rule: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VersionLabels {
    version: String,
}

struct Inner {
    registry: Registry,
    messages: Family<MessageLabels, Counter>,
    message_series: AtomicUsize,
    rule_hits: Family<RuleLabels, Counter>,
    rule_series: AtomicUsize,
    refusals: Family<RuleLabels, Counter>,
    refusal_series: AtomicUsize,
    recent_messages: Recent<3>,
    recent_rules: Recent<1>,
    recent_refusals: Recent<1>,
    latency: Histogram,
    connections_open: Gauge,
    connections: Counter,
    reloads: Family<ResultLabels, Counter>,
    audit_queue_depth: Gauge,
    audit_fsync: Histogram,
    audit_fsyncs: Counter,
    audit_gather_waits: Counter,
    alert_backlog: Gauge,
}

/// The handle every part of the daemon records into. Cloning is cheap (one `Arc`).
#[derive(Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// A fresh set of metrics, all at zero.
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("markgate");
        let messages = Family::<MessageLabels, Counter>::default();
        registry.register(
            "messages",
            "Messages decided, by direction, effective level and verdict",
            messages.clone(),
        );
        let rule_hits = Family::<RuleLabels, Counter>::default();
        registry.register(
            "rule_hits",
            "Decisions that cited each policy rule id (a message can cite several)",
            rule_hits.clone(),
        );
        let refusals = Family::<RuleLabels, Counter>::default();
        registry.register(
            "refusals",
            "Messages refused whole (reject, discard, quarantine), by each rule id the decision cites",
            refusals.clone(),
        );
        // 0.5 ms .. ~16 s: a decision is normally well under a millisecond; the top buckets
        // catch spills, slow fsyncs and the eom timeout.
        let latency = Histogram::new(exponential_buckets(0.0005, 2.0, 16));
        registry.register_with_unit(
            "message_duration",
            "Time from end-of-message to the final answer, per message",
            Unit::Seconds,
            latency.clone(),
        );
        let connections_open = Gauge::default();
        registry.register(
            "connections_open",
            "Milter connections from the MTA open now",
            connections_open.clone(),
        );
        let connections = Counter::default();
        registry.register(
            "connections",
            "Milter connections accepted since start",
            connections.clone(),
        );
        let reloads = Family::<ResultLabels, Counter>::default();
        registry.register(
            "reloads",
            "Configuration and policy reloads, by result (ok, failed)",
            reloads.clone(),
        );
        let audit_queue_depth = Gauge::default();
        registry.register(
            "audit_queue_depth",
            "Audit records waiting for the writer task",
            audit_queue_depth.clone(),
        );
        // 0.1 ms .. ~3 s.
        let audit_fsync = Histogram::new(exponential_buckets(0.0001, 2.0, 16));
        registry.register_with_unit(
            "audit_fsync_duration",
            "Time audit group commits spent in fsync (the latest one, sampled on each poll of the writer)",
            Unit::Seconds,
            audit_fsync.clone(),
        );
        let audit_fsyncs = Counter::default();
        registry.register(
            "audit_fsyncs",
            "Audit fsyncs made (with sync = batch each covers a group of records)",
            audit_fsyncs.clone(),
        );
        let audit_gather_waits = Counter::default();
        registry.register(
            "audit_gather_waits",
            "Waits of the audit writer after a batch of [audit] gather_after records",
            audit_gather_waits.clone(),
        );
        let alert_backlog = Gauge::default();
        registry.register(
            "alert_backlog",
            "Incident alerts waiting to be delivered to the security team",
            alert_backlog.clone(),
        );
        let build_info = Family::<VersionLabels, Gauge>::default();
        build_info
            .get_or_create(&VersionLabels {
                version: env!("CARGO_PKG_VERSION").to_string(),
            })
            .set(1);
        registry.register("build_info", "markgate's version (always 1)", build_info);

        Metrics {
            inner: Arc::new(Inner {
                registry,
                messages,
                message_series: AtomicUsize::new(0),
                rule_hits,
                rule_series: AtomicUsize::new(0),
                refusals,
                refusal_series: AtomicUsize::new(0),
                recent_messages: Recent::default(),
                recent_rules: Recent::default(),
                recent_refusals: Recent::default(),
                latency,
                connections_open,
                connections,
                reloads,
                audit_queue_depth,
                audit_fsync,
                audit_fsyncs,
                audit_gather_waits,
                alert_backlog,
            }),
        }
    }

    /// One message was answered. `direction` (e.g. `inbound`, `outbound`), `level` (the
    /// policy's canonical level name, or `none`), `verdict` (`accept`, `reject`, `tempfail`,
    /// `quarantine`, `discard`, `shadow`), the rule ids the decision cites, and the time from
    /// end-of-message to the answer.
    pub fn message_decided(
        &self,
        direction: &str,
        level: &str,
        verdict: &str,
        rules: &[&str],
        latency: Duration,
    ) {
        let i = &self.inner;
        i.recent_messages.inc([direction, level, verdict], || {
            let mut labels = MessageLabels {
                direction: label(direction),
                level: label(level),
                verdict: label(verdict),
            };
            if !admit(&i.messages, &labels, &i.message_series) {
                labels = MessageLabels {
                    direction: "other".into(),
                    level: "other".into(),
                    verdict: "other".into(),
                };
            }
            i.messages.get_or_create(&labels).clone()
        });
        // Whole-message refusals, by rule: what a dashboard shows as "refusals by rule".
        let refused = matches!(verdict, "reject" | "discard" | "quarantine");
        for rule in rules {
            if refused {
                i.recent_refusals.inc([rule], || {
                    rule_counter(&i.refusals, rule, &i.refusal_series)
                });
            }
            i.recent_rules
                .inc([rule], || rule_counter(&i.rule_hits, rule, &i.rule_series));
        }
        i.latency.observe(latency.as_secs_f64());
    }

    /// An MTA connection was accepted.
    pub fn connection_opened(&self) {
        self.inner.connections.inc();
        self.inner.connections_open.inc();
    }

    /// An MTA connection ended (for every [`connection_opened`](Self::connection_opened)).
    pub fn connection_closed(&self) {
        self.inner.connections_open.dec();
    }

    /// [`connection_opened`](Self::connection_opened) now and
    /// [`connection_closed`](Self::connection_closed) when the guard is dropped, so an early
    /// return or a panic in the connection task cannot leave the gauge high.
    pub fn connection_guard(&self) -> ConnectionGuard {
        self.connection_opened();
        ConnectionGuard {
            metrics: self.clone(),
        }
    }

    /// A reload finished, successfully or not.
    pub fn reload(&self, ok: bool) {
        let result = if ok { "ok" } else { "failed" };
        self.inner
            .reloads
            .get_or_create(&ResultLabels {
                result: result.into(),
            })
            .inc();
    }

    /// Audit records waiting to be written now.
    pub fn audit_queue_depth(&self, n: usize) {
        self.inner
            .audit_queue_depth
            .set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    /// One audit group commit's fsync took this long.
    pub fn audit_fsync(&self, took: Duration) {
        self.inner.audit_fsync.observe(took.as_secs_f64());
    }

    /// The audit writer made `fsyncs` more fsyncs and `waits` more gather waits.
    pub fn audit_counts(&self, fsyncs: u64, waits: u64) {
        self.inner.audit_fsyncs.inc_by(fsyncs);
        self.inner.audit_gather_waits.inc_by(waits);
    }

    /// Alerts waiting to be delivered now.
    pub fn alert_backlog(&self, n: usize) {
        self.inner
            .alert_backlog
            .set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    /// Keep the audit and alert gauges current: every `every`, read the audit writer's queue
    /// depth and latest fsync time (one histogram sample per poll in which fsyncs happened) and
    /// the alert sender's backlog (raised, not yet delivered or given up). Runs until
    /// `shutdown` completes.
    pub async fn follow(
        self,
        audit: Option<crate::audit::AuditHandle>,
        alerts: Option<crate::alert::AlertHandle>,
        every: Duration,
        shutdown: impl Future<Output = ()> + Send,
    ) {
        tokio::pin!(shutdown);
        let start = audit.as_ref().map(|a| a.stats()).unwrap_or_default();
        let (mut fsyncs_seen, mut waits_seen) = (start.fsyncs, start.gather_waits);
        // What happened before the first poll (the start-up records) counts too.
        self.audit_counts(start.fsyncs, start.gather_waits);
        loop {
            tokio::select! {
                _ = &mut shutdown => return,
                _ = tokio::time::sleep(every) => {}
            }
            if let Some(a) = &audit {
                let s = a.stats();
                self.audit_queue_depth(s.queue_depth);
                self.audit_counts(
                    s.fsyncs.saturating_sub(fsyncs_seen),
                    s.gather_waits.saturating_sub(waits_seen),
                );
                waits_seen = waits_seen.max(s.gather_waits);
                if s.fsyncs > fsyncs_seen {
                    fsyncs_seen = s.fsyncs;
                    self.audit_fsync(Duration::from_micros(s.last_fsync_micros));
                }
            }
            if let Some(al) = &alerts {
                let st = al.stats();
                let raised = st.raised.load(Ordering::Relaxed);
                let done = st.incidents_delivered.load(Ordering::Relaxed)
                    + st.undeliverable.load(Ordering::Relaxed);
                self.alert_backlog(
                    usize::try_from(raised.saturating_sub(done)).unwrap_or(usize::MAX),
                );
            }
        }
    }

    /// The whole exposition, as a scrape would get it.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.inner.registry).is_err() {
            // Encoding into a String cannot fail on I/O; a formatting error means a bug in a
            // metric implementation, so say so rather than serve half a page.
            out.clear();
            let _ = writeln!(out, "# markgate: metrics encoding failed");
            out.push_str("# EOF\n");
        }
        out
    }

    /// Serve `GET /metrics` on `listener` until `shutdown` completes.
    pub async fn serve(self, listener: TcpListener, shutdown: impl Future<Output = ()> + Send) {
        let slots = Arc::new(Semaphore::new(MAX_SCRAPES));
        tokio::pin!(shutdown);
        loop {
            let accepted = tokio::select! {
                _ = &mut shutdown => return,
                a = listener.accept() => a,
            };
            match accepted {
                Ok((stream, peer)) => {
                    let Ok(permit) = slots.clone().acquire_owned().await else {
                        return;
                    };
                    let metrics = self.clone();
                    tokio::spawn(async move {
                        if let Err(e) = metrics.answer(stream).await {
                            debug!(%peer, error = %e, "metrics request failed");
                        }
                        drop(permit);
                    });
                }
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    warn!(error = %e, "metrics endpoint: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }

    async fn answer(&self, mut stream: TcpStream) -> io::Result<()> {
        let head = match tokio::time::timeout(HTTP_TIMEOUT, read_head(&mut stream)).await {
            Ok(r) => r?,
            Err(_) => return Err(io::Error::new(io::ErrorKind::TimedOut, "request timed out")),
        };
        let response = match head {
            Head::TooLarge => simple(431, "Request Header Fields Too Large"),
            Head::Closed => return Ok(()),
            Head::Complete(bytes) => self.route(&bytes),
        };
        match tokio::time::timeout(HTTP_TIMEOUT, async {
            stream.write_all(&response).await?;
            stream.shutdown().await
        })
        .await
        {
            Ok(r) => r,
            Err(_) => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "response timed out",
            )),
        }
    }

    fn route(&self, head: &[u8]) -> Vec<u8> {
        let Some(line) = head.split(|&b| b == b'\n').next() else {
            return simple(400, "Bad Request");
        };
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let mut parts = line.split(|&b| b == b' ');
        let (Some(method), Some(target), Some(version), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return simple(400, "Bad Request");
        };
        if !version.starts_with(b"HTTP/1.") {
            return simple(505, "HTTP Version Not Supported");
        }
        // Scrapers may add a query string; the path alone decides.
        let path = target.split(|&b| b == b'?').next().unwrap_or(target);
        if path != b"/metrics" {
            return simple(404, "Not Found");
        }
        let head_only = match method {
            b"GET" => false,
            b"HEAD" => true,
            _ => {
                let mut r = simple(405, "Method Not Allowed");
                insert_header(&mut r, "Allow: GET, HEAD");
                return r;
            }
        };
        let body = self.render();
        let mut out = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: {CONTENT_TYPE}\r\nContent-Length: {}\r\n\
             Cache-Control: no-store\r\nConnection: close\r\n\r\n",
            body.len()
        )
        .into_bytes();
        if !head_only {
            out.extend_from_slice(body.as_bytes());
        }
        out
    }
}

/// Decrements the open-connections gauge when dropped. See [`Metrics::connection_guard`].
#[derive(Debug)]
pub struct ConnectionGuard {
    metrics: Metrics,
}

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.metrics.connection_closed();
    }
}

/// Bind the metrics endpoint. Only loopback addresses are accepted: the endpoint has no
/// authentication and shows rule ids and traffic volumes.
pub async fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    if !addr.ip().is_loopback() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "metrics listen address {addr} is not loopback; the endpoint has no \
                 authentication, so use 127.0.0.1 or [::1] and a proxy to scrape from elsewhere"
            ),
        ));
    }
    TcpListener::bind(addr).await
}

enum Head {
    Complete(Vec<u8>),
    TooLarge,
    Closed,
}

/// Read up to the blank line that ends an HTTP request head, never more than [`MAX_REQUEST`].
async fn read_head(stream: &mut TcpStream) -> io::Result<Head> {
    let mut buf = Vec::with_capacity(512);
    let mut chunk = [0u8; 1024];
    loop {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(Head::Closed);
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = find_end(&buf) {
            buf.truncate(end);
            return Ok(Head::Complete(buf));
        }
        if buf.len() >= MAX_REQUEST {
            return Ok(Head::TooLarge);
        }
    }
}

fn find_end(buf: &[u8]) -> Option<usize> {
    if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
        return Some(p);
    }
    // Tolerate bare-LF clients (curl never does this, hand-typed requests do).
    buf.windows(2).position(|w| w == b"\n\n")
}

fn simple(code: u16, reason: &str) -> Vec<u8> {
    let body = format!("{code} {reason}\n");
    format!(
        "HTTP/1.1 {code} {reason}\r\nContent-Type: text/plain; charset=utf-8\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

fn insert_header(response: &mut Vec<u8>, header: &str) {
    if let Some(p) = response.windows(2).position(|w| w == b"\r\n") {
        let at = p + 2;
        let mut h = header.as_bytes().to_vec();
        h.extend_from_slice(b"\r\n");
        response.splice(at..at, h);
    }
}

/// Whether `labels` may be counted under its own series: it already exists, or the family is
/// still under [`MAX_SERIES`]. (Two threads adding the same new series at once may both count
/// it, which only makes the cap a little stricter.)
fn admit<S>(family: &Family<S, Counter>, labels: &S, series: &AtomicUsize) -> bool
where
    S: Clone + std::hash::Hash + Eq,
{
    if family.get(labels).is_some() {
        return true;
    }
    if series.load(Ordering::Relaxed) >= MAX_SERIES {
        return false;
    }
    series.fetch_add(1, Ordering::Relaxed);
    true
}

/// The series of `family` for `rule` (or `other` once the family is full).
fn rule_counter(family: &Family<RuleLabels, Counter>, rule: &str, series: &AtomicUsize) -> Counter {
    let mut l = RuleLabels { rule: label(rule) };
    if !admit(family, &l, series) {
        l.rule = "other".into();
    }
    family.get_or_create(&l).clone()
}

/// The counters of the label values counted last, found again by comparing the values. The
/// family's own way, for every message, builds the label set (a `String` per label) and
/// hashes it twice (SipHash): about 4 000 instructions a message. A cached counter is the
/// family's series itself (a `Counter` clone shares its value), so what is exposed is the same.
struct Recent<const K: usize> {
    entries: std::sync::Mutex<Vec<([String; K], Counter)>>,
}

/// Label sets kept per [`Recent`]: more than a policy's levels times verdicts in practice; an
/// unusual mix only costs the family's own lookup for what falls out.
const RECENT: usize = 32;

impl<const K: usize> Default for Recent<K> {
    fn default() -> Self {
        Recent {
            entries: std::sync::Mutex::new(Vec::new()),
        }
    }
}

impl<const K: usize> Recent<K> {
    /// Count one for `key`; `series` finds its counter in the family when it is not cached.
    fn inc(&self, key: [&str; K], series: impl FnOnce() -> Counter) {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        let found = entries
            .iter()
            .find(|(k, _)| k.iter().zip(key).all(|(a, b)| a == b));
        if let Some((_, counter)) = found {
            counter.inc();
            return;
        }
        let counter = series();
        counter.inc();
        if entries.len() >= RECENT {
            entries.remove(0);
        }
        entries.push((key.map(str::to_owned), counter));
    }
}

fn label(value: &str) -> String {
    if value.is_empty() {
        return "none".into();
    }
    if value.len() <= MAX_LABEL_LEN {
        return value.to_string();
    }
    let mut end = MAX_LABEL_LEN;
    while !value.is_char_boundary(end) {
        end -= 1;
    }
    value[..end].to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{IpAddr, Ipv4Addr};

    async fn start(metrics: &Metrics) -> (SocketAddr, tokio::sync::oneshot::Sender<()>) {
        let listener = bind(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0))
            .await
            .expect("bind loopback");
        let addr = listener.local_addr().expect("addr");
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(metrics.clone().serve(listener, async move {
            let _ = rx.await;
        }));
        (addr, tx)
    }

    async fn http(addr: SocketAddr, request: &[u8]) -> String {
        let mut s = TcpStream::connect(addr).await.expect("connect");
        s.write_all(request).await.expect("write");
        let mut out = Vec::new();
        s.read_to_end(&mut out).await.expect("read");
        String::from_utf8(out).expect("utf-8 response")
    }

    fn body(response: &str) -> &str {
        response
            .split_once("\r\n\r\n")
            .map(|(_, b)| b)
            .unwrap_or("")
    }

    /// The value of the sample line that starts with `series ` exactly.
    fn sample(exposition: &str, series: &str) -> Option<f64> {
        exposition.lines().find_map(|l| {
            l.strip_prefix(series)
                .and_then(|rest| rest.strip_prefix(' '))
                .and_then(|v| v.trim().parse().ok())
        })
    }

    #[tokio::test]
    async fn scrape_over_http_reports_what_was_recorded() {
        let m = Metrics::new();
        let (addr, _stop) = start(&m).await;
        for _ in 0..3 {
            m.message_decided(
                "outbound",
                "RESTRICTED",
                "accept",
                &["labels.mandatory", "disclaimer.outbound"],
                Duration::from_micros(700),
            );
        }
        m.message_decided(
            "outbound",
            "RESTRICTED",
            "reject",
            &["ceiling.exceeded"],
            Duration::from_millis(3),
        );
        let g1 = m.connection_guard();
        let _g2 = m.connection_guard();
        drop(g1);
        m.reload(true);
        m.reload(false);
        m.reload(false);
        m.audit_queue_depth(17);
        m.audit_fsync(Duration::from_millis(2));
        m.audit_counts(5, 2);
        m.audit_counts(1, 0);
        m.alert_backlog(4);

        let r = http(addr, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").await;
        assert!(r.starts_with("HTTP/1.1 200 OK\r\n"), "{r}");
        assert!(r.contains(CONTENT_TYPE));
        let b = body(&r);
        let len: usize = r
            .lines()
            .find_map(|l| l.strip_prefix("Content-Length: "))
            .and_then(|v| v.trim().parse().ok())
            .expect("content length");
        assert_eq!(len, b.len());
        let s = |series: &str| sample(b, series);
        assert_eq!(
            s(
                r#"markgate_messages_total{direction="outbound",level="RESTRICTED",verdict="accept"}"#
            ),
            Some(3.0)
        );
        assert_eq!(
            s(
                r#"markgate_messages_total{direction="outbound",level="RESTRICTED",verdict="reject"}"#
            ),
            Some(1.0)
        );
        assert_eq!(
            s(r#"markgate_rule_hits_total{rule="labels.mandatory"}"#),
            Some(3.0)
        );
        assert_eq!(
            s(r#"markgate_rule_hits_total{rule="ceiling.exceeded"}"#),
            Some(1.0)
        );
        assert_eq!(s("markgate_message_duration_seconds_count"), Some(4.0));
        // 3 × 0.7 ms fall in the le=0.001 bucket; the 3 ms one does not.
        assert_eq!(
            s(r#"markgate_message_duration_seconds_bucket{le="0.001"}"#),
            Some(3.0)
        );
        assert_eq!(s("markgate_connections_open"), Some(1.0));
        assert_eq!(s("markgate_connections_total"), Some(2.0));
        assert_eq!(s(r#"markgate_reloads_total{result="ok"}"#), Some(1.0));
        assert_eq!(s(r#"markgate_reloads_total{result="failed"}"#), Some(2.0));
        assert_eq!(s("markgate_audit_queue_depth"), Some(17.0));
        assert_eq!(s("markgate_audit_fsync_duration_seconds_count"), Some(1.0));
        assert_eq!(s("markgate_audit_fsyncs_total"), Some(6.0));
        assert_eq!(s("markgate_audit_gather_waits_total"), Some(2.0));
        assert_eq!(s("markgate_alert_backlog"), Some(4.0));
        assert_eq!(
            s(&format!(
                r#"markgate_build_info{{version="{}"}}"#,
                env!("CARGO_PKG_VERSION")
            )),
            Some(1.0)
        );
        assert!(b.ends_with("# EOF\n"));
    }

    #[tokio::test]
    async fn other_paths_methods_and_garbage_get_http_errors() {
        let m = Metrics::new();
        let (addr, _stop) = start(&m).await;
        let r = http(addr, b"GET / HTTP/1.1\r\n\r\n").await;
        assert!(r.starts_with("HTTP/1.1 404 "), "{r}");
        let r = http(addr, b"GET /metricsx HTTP/1.1\r\n\r\n").await;
        assert!(r.starts_with("HTTP/1.1 404 "), "{r}");
        let r = http(addr, b"POST /metrics HTTP/1.1\r\n\r\n").await;
        assert!(r.starts_with("HTTP/1.1 405 "), "{r}");
        assert!(r.contains("Allow: GET, HEAD\r\n"), "{r}");
        let r = http(addr, b"HEAD /metrics HTTP/1.0\r\n\r\n").await;
        assert!(r.starts_with("HTTP/1.1 200 OK"), "{r}");
        assert_eq!(body(&r), "");
        let r = http(addr, b"GET /metrics?x=1 HTTP/1.1\r\n\r\n").await;
        assert!(r.starts_with("HTTP/1.1 200 OK"), "{r}");
        let r = http(addr, b"hello\r\n\r\n").await;
        assert!(r.starts_with("HTTP/1.1 400 "), "{r}");
        let r = http(addr, b"GET /metrics SPDY/3\r\n\r\n").await;
        assert!(r.starts_with("HTTP/1.1 505 "), "{r}");
    }

    #[tokio::test]
    async fn an_oversized_request_is_refused_without_reading_it_all() {
        let m = Metrics::new();
        let (addr, _stop) = start(&m).await;
        let mut req = b"GET /metrics HTTP/1.1\r\n".to_vec();
        while req.len() < MAX_REQUEST + 100 {
            req.extend_from_slice(b"X-Padding: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n");
        }
        req.extend_from_slice(b"\r\n");
        let r = http(addr, &req).await;
        assert!(r.starts_with("HTTP/1.1 431 "), "{r}");
    }

    #[tokio::test]
    async fn non_loopback_addresses_are_refused() {
        let e = bind("0.0.0.0:0".parse().expect("addr"))
            .await
            .expect_err("must refuse");
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
        assert!(e.to_string().contains("not loopback"));
        let l = bind("[::1]:0".parse().expect("addr")).await;
        // IPv6 loopback may be absent in a container; refusal must not be our doing.
        if let Err(e) = l {
            assert_ne!(e.kind(), io::ErrorKind::InvalidInput);
        }
    }

    #[tokio::test]
    async fn shutdown_stops_the_endpoint() {
        let m = Metrics::new();
        let listener = bind("127.0.0.1:0".parse().expect("addr"))
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(m.serve(listener, async move {
            let _ = rx.await;
        }));
        tx.send(()).expect("send");
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("serve returns")
            .expect("no panic");
        assert!(TcpStream::connect(addr).await.is_err());
    }

    #[test]
    fn counts_are_exact_when_more_label_sets_are_counted_than_are_cached() {
        // Three rounds over twice as many label sets as a cache keeps, so every set is found
        // in the cache some times and falls out of it others.
        let m = Metrics::new();
        let levels: Vec<String> = (0..RECENT).map(|i| format!("LEVEL-{i}")).collect();
        for round in 1..=3 {
            for level in &levels {
                for verdict in ["accept", "reject"] {
                    let rule = format!("rule.{level}");
                    m.message_decided("outbound", level, verdict, &[&rule], Duration::ZERO);
                }
            }
            let text = m.render();
            for level in &levels {
                for verdict in ["accept", "reject"] {
                    let series = format!(
                        r#"markgate_messages_total{{direction="outbound",level="{level}",verdict="{verdict}"}}"#
                    );
                    assert_eq!(sample(&text, &series), Some(f64::from(round)), "{series}");
                }
                let hits = format!(r#"markgate_rule_hits_total{{rule="rule.{level}"}}"#);
                assert_eq!(sample(&text, &hits), Some(f64::from(2 * round)), "{hits}");
                let refusals = format!(r#"markgate_refusals_total{{rule="rule.{level}"}}"#);
                assert_eq!(
                    sample(&text, &refusals),
                    Some(f64::from(round)),
                    "{refusals}"
                );
            }
        }
        // Each label set is one series, however often it left the cache and came back.
        assert_eq!(
            m.inner.message_series.load(Ordering::Relaxed),
            2 * levels.len()
        );
    }

    #[test]
    fn labels_are_capped_in_length_and_series() {
        let long = "é".repeat(100);
        assert!(label(&long).len() <= MAX_LABEL_LEN);
        assert_eq!(label(""), "none");
        let m = Metrics::new();
        for i in 0..(MAX_SERIES + 10) {
            let rule = format!("r{i}");
            m.message_decided("in", "L", "accept", &[&rule], Duration::ZERO);
        }
        assert_eq!(m.inner.rule_series.load(Ordering::Relaxed), MAX_SERIES);
        let text = m.render();
        assert_eq!(
            sample(&text, r#"markgate_rule_hits_total{rule="other"}"#),
            Some(10.0)
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn follow_reports_the_audit_writer_queue_and_fsyncs() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut cfg = crate::audit::AuditConfig {
            path: dir.path().join("audit.jsonl"),
            ..crate::audit::AuditConfig::default()
        };
        cfg.syslog.enabled = false;
        let audit = crate::audit::start(&cfg).expect("audit");
        let m = Metrics::new();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(m.clone().follow(
            Some(audit.clone()),
            Some(crate::alert::AlertHandle::disabled()),
            Duration::from_millis(10),
            async move {
                let _ = rx.await;
            },
        ));
        for i in 0..5 {
            audit
                .record(crate::audit::AuditEvent::PolicyLoaded(
                    crate::audit::event::PolicyLoaded {
                        path: format!("p{i}"),
                        digest: "d".into(),
                        trigger: "start".into(),
                        policy_name: None,
                        ..Default::default()
                    },
                ))
                .await
                .expect("record");
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let text = m.render();
            // Five records one after the other: five fsyncs, none a large batch.
            if sample(&text, "markgate_audit_fsync_duration_seconds_count").unwrap_or(0.0) >= 1.0
                && sample(&text, "markgate_audit_fsyncs_total") == Some(5.0)
            {
                assert_eq!(sample(&text, "markgate_audit_queue_depth"), Some(0.0));
                assert_eq!(sample(&text, "markgate_alert_backlog"), Some(0.0));
                assert_eq!(
                    sample(&text, "markgate_audit_gather_waits_total"),
                    Some(0.0)
                );
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "no fsync sample: {text}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        tx.send(()).expect("stop");
        task.await.expect("follow ends");
        audit.shutdown().await.expect("shutdown");
    }
}
