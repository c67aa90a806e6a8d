//! Best-effort forwarding of audit records to the local syslog daemon or journald.
//!
//! Each record goes as one datagram to a unix datagram socket (`/dev/log` by default), either
//! as RFC 5424 (header, one `[markgate@32473 …]` structured-data element with `seq`, `event`,
//! `severity`, `security_event` and `hash`, then the JSON line as MSG) or in the traditional local
//! format `syslog(3)` uses. The socket is non-blocking: when the daemon is slow or absent the
//! datagram is dropped and counted, so the audit writer never waits for syslog. While the
//! socket cannot be reached (no syslog daemon, journald restarting) a new connection is tried
//! at most once per [`RECONNECT_INTERVAL`]; records in between are dropped and counted without
//! being formatted, so an absent daemon costs no system calls per record. The file, not
//! syslog, is the record of truth; syslog gives a SIEM a copy across gateways and anchors the
//! newest hash outside the file. Nothing here touches the audit file.

use std::io;
use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::config::{SyslogConfig, SyslogFormat, facility_code};
use super::event::Severity;

/// The IANA private enterprise number used in the structured-data id. 32473 is the number
/// RFC 5612 reserves for documentation; a deployment that wants its own can change the SD-ID
/// in its SIEM parser, the element layout stays the same.
pub const SD_ID: &str = "markgate@32473";

/// How long a socket that could not be reached is left alone before the next attempt.
pub const RECONNECT_INTERVAL: Duration = Duration::from_secs(1);

/// Counters for the forwarder.
#[derive(Debug, Default)]
pub struct SyslogStats {
    /// Datagrams handed to the socket.
    pub sent: AtomicU64,
    /// Datagrams dropped (socket absent, full or refusing).
    pub dropped: AtomicU64,
}

/// What one forwarded record says about itself, besides its JSON line.
#[derive(Debug, Clone, Copy)]
pub struct LineMeta<'a> {
    /// Chain position.
    pub seq: u64,
    /// Event kind name.
    pub event: &'a str,
    /// Severity.
    pub severity: Severity,
    /// Information-security event flag.
    pub security_event: bool,
    /// Hash of this line (the next record's `prev`).
    pub hash: &'a str,
    /// The record's RFC 3339 time.
    pub time: &'a str,
}

/// A non-blocking forwarder owned by the audit writer.
#[derive(Debug)]
pub struct SyslogForwarder {
    socket_path: PathBuf,
    socket: Option<UnixDatagram>,
    facility: u8,
    app_name: String,
    hostname: String,
    format: SyslogFormat,
    pid: u32,
    stats: Arc<SyslogStats>,
    failing: bool,
    /// When the last attempt to reach the socket failed (no new attempt before
    /// [`RECONNECT_INTERVAL`] has passed).
    last_failure: Option<Instant>,
}

impl SyslogForwarder {
    /// A forwarder for a validated config (an unknown facility falls back to `mail`).
    pub fn new(config: &SyslogConfig, hostname: &str, stats: Arc<SyslogStats>) -> Self {
        SyslogForwarder {
            socket_path: config.socket.clone(),
            socket: None,
            facility: facility_code(&config.facility).unwrap_or(2),
            app_name: config.app_name.clone(),
            hostname: sanitize(hostname, 255),
            format: config.format,
            pid: std::process::id(),
            stats,
            failing: false,
            last_failure: None,
        }
    }

    /// Send one record's line; never blocks, never fails the caller.
    pub fn forward(&mut self, meta: &LineMeta<'_>, json_line: &[u8]) {
        if self.socket.is_none()
            && self
                .last_failure
                .is_some_and(|t| t.elapsed() < RECONNECT_INTERVAL)
        {
            self.stats.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let datagram = self.format_datagram(meta, json_line);
        match self.send(&datagram) {
            Ok(()) => {
                self.stats.sent.fetch_add(1, Ordering::Relaxed);
                if self.failing {
                    tracing::info!(socket = %self.socket_path.display(), "syslog forwarding works again");
                    self.failing = false;
                }
                self.last_failure = None;
            }
            Err(e) => {
                self.stats.dropped.fetch_add(1, Ordering::Relaxed);
                // A full socket buffer (the daemon is slow) keeps the connection; anything
                // else drops it and a new one is tried after RECONNECT_INTERVAL (journald
                // restarts, the daemon is not running).
                if e.kind() != io::ErrorKind::WouldBlock {
                    self.socket = None;
                    self.last_failure = Some(Instant::now());
                }
                if !self.failing {
                    tracing::warn!(socket = %self.socket_path.display(), error = %e,
                        "syslog forwarding failed; audit records are still written to the file");
                    self.failing = true;
                }
            }
        }
    }

    fn send(&mut self, datagram: &[u8]) -> io::Result<()> {
        if self.socket.is_none() {
            let s = UnixDatagram::unbound()?;
            s.set_nonblocking(true)?;
            s.connect(&self.socket_path)?;
            self.socket = Some(s);
        }
        match &self.socket {
            Some(s) => s.send(datagram).map(|_| ()),
            None => Err(io::Error::other("no socket")),
        }
    }

    /// The datagram bytes for a record (public for tests and for SIEM parser authors).
    pub fn format_datagram(&self, meta: &LineMeta<'_>, json_line: &[u8]) -> Vec<u8> {
        let pri = u16::from(self.facility) * 8 + u16::from(meta.severity.syslog_code());
        let json = json_line.strip_suffix(b"\n").unwrap_or(json_line);
        let mut out = Vec::with_capacity(json.len() + 256);
        match self.format {
            SyslogFormat::Rfc5424 => {
                // <PRI>VERSION SP TIMESTAMP SP HOSTNAME SP APP-NAME SP PROCID SP MSGID SP SD SP MSG
                let head = format!(
                    "<{pri}>1 {} {} {} {} {} [{SD_ID} seq=\"{}\" event=\"{}\" severity=\"{}\" security_event=\"{}\" hash=\"{}\"] ",
                    meta.time,
                    nil_if_empty(&self.hostname),
                    sanitize(&self.app_name, 48),
                    self.pid,
                    sanitize(meta.event, 32),
                    meta.seq,
                    sd_escape(meta.event),
                    meta.severity.as_str(),
                    meta.security_event,
                    sd_escape(meta.hash),
                );
                out.extend_from_slice(head.as_bytes());
                // RFC 5424 §6.4: a UTF-8 MSG starts with the BOM.
                out.extend_from_slice("\u{feff}".as_bytes());
            }
            SyslogFormat::Bsd => {
                let stamp = time::OffsetDateTime::now_utc();
                let ts = bsd_timestamp(stamp);
                out.extend_from_slice(
                    format!("<{pri}>{ts} {}[{}]: ", self.app_name, self.pid).as_bytes(),
                );
            }
        }
        out.extend_from_slice(json);
        out
    }
}

fn nil_if_empty(s: &str) -> &str {
    if s.is_empty() { "-" } else { s }
}

/// Header fields are PRINTUSASCII without spaces, bounded in length.
fn sanitize(s: &str, max: usize) -> String {
    let cleaned: String = s
        .chars()
        .filter(|c| c.is_ascii_graphic())
        .take(max)
        .collect();
    if cleaned.is_empty() {
        "-".into()
    } else {
        cleaned
    }
}

/// PARAM-VALUE escaping (RFC 5424 §6.3.3): `"`, `\` and `]` are escaped.
fn sd_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '"' | '\\' | ']') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

fn bsd_timestamp(t: time::OffsetDateTime) -> String {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let month = MONTHS[usize::from(u8::from(t.month())) - 1];
    format!(
        "{month} {:>2} {:02}:{:02}:{:02}",
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta() -> LineMeta<'static> {
        LineMeta {
            seq: 3,
            event: "reload_failed",
            severity: Severity::Error,
            security_event: true,
            hash: "ab]c\"d",
            time: "2026-11-22T10:00:00Z",
        }
    }

    #[test]
    fn rfc5424_layout_and_escaping() {
        let cfg = SyslogConfig {
            facility: "authpriv".into(),
            ..SyslogConfig::default()
        };
        let f = SyslogForwarder::new(&cfg, "gw 1", Arc::default());
        let d = String::from_utf8(f.format_datagram(&meta(), b"{\"seq\":3}\n")).expect("utf8");
        // authpriv (10) * 8 + error (3) = 83; the space in the host name is dropped.
        let head = format!(
            "<83>1 2026-11-22T10:00:00Z gw1 markgate {} reload_failed ",
            std::process::id()
        );
        assert!(d.starts_with(&head), "{d}");
        assert!(d.contains(r#"hash="ab\]c\"d"]"#), "{d}");
        assert!(d.ends_with("\u{feff}{\"seq\":3}"), "{d}");
    }

    #[test]
    fn an_unreachable_socket_is_retried_after_the_interval_only() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("log.sock");
        let cfg = SyslogConfig {
            socket: path.clone(),
            ..SyslogConfig::default()
        };
        let stats = Arc::new(SyslogStats::default());
        let mut f = SyslogForwarder::new(&cfg, "gw1", stats.clone());
        f.forward(&meta(), b"{}");
        assert!(f.last_failure.is_some(), "the failed attempt is remembered");
        // The daemon appears, but within the interval nothing is tried: dropped and counted.
        let sock = UnixDatagram::bind(&path).expect("bind");
        sock.set_nonblocking(true).expect("nonblocking");
        f.forward(&meta(), b"{}");
        assert_eq!(stats.dropped.load(Ordering::Relaxed), 2);
        let mut buf = [0u8; 4096];
        assert!(sock.recv(&mut buf).is_err(), "nothing was sent");
        // Once the interval has passed the next record connects and goes out.
        f.last_failure = Instant::now().checked_sub(RECONNECT_INTERVAL);
        f.forward(&meta(), b"{}");
        assert_eq!(stats.sent.load(Ordering::Relaxed), 1);
        assert!(sock.recv(&mut buf).is_ok(), "the record arrived");
        assert!(f.last_failure.is_none());
    }

    #[test]
    fn bsd_layout() {
        let cfg = SyslogConfig {
            format: SyslogFormat::Bsd,
            ..SyslogConfig::default()
        };
        let f = SyslogForwarder::new(&cfg, "gw1", Arc::default());
        let d = String::from_utf8(f.format_datagram(&meta(), b"{}")).expect("utf8");
        // mail (2) * 8 + error (3) = 19
        assert!(d.starts_with("<19>"), "{d}");
        assert!(
            d.ends_with(&format!(" markgate[{}]: {{}}", std::process::id())),
            "{d}"
        );
    }
}
