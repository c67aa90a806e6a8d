//! The config file exactly as serde reads it: every key optional (missing = default), unknown
//! keys refused, spans kept where a later check must point at a value.

use std::ops::Range;
use std::path::PathBuf;

use serde::Deserialize;
use toml::Spanned;

use super::units::{ByteSize, HumanDuration, OctalMode};
use super::{Config, LogFormat, LogLevel, MIN_FRAME_SIZE};
use crate::milter::ListenSpec;

/// A failed check: where, and what was found / expected.
pub(super) type CheckError = (Range<usize>, String);

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    listen: Option<Spanned<String>>,
    policy: Option<Spanned<String>>,
    #[serde(default)]
    socket: RawSocket,
    #[serde(default)]
    limits: RawLimits,
    #[serde(default)]
    timeouts: RawTimeouts,
    #[serde(default)]
    logging: RawLogging,
    audit: Option<Spanned<crate::audit::AuditConfig>>,
    alerts: Option<Spanned<crate::alert::AlertConfig>>,
    #[serde(default)]
    metrics: RawMetrics,
    #[serde(default)]
    ledger: RawLedger,
}

/// `[ledger]` (issue 12): where thread memory lives. Checked in [`RawLedger::check`].
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLedger {
    backend: Option<Spanned<String>>,
    path: Option<Spanned<String>>,
    url: Option<Spanned<String>>,
    prefix: Option<Spanned<String>>,
    timeout: Option<Spanned<HumanDuration>>,
}

impl RawLedger {
    fn check(
        self,
        mut l: crate::ledger::LedgerConfig,
        eom: std::time::Duration,
    ) -> Result<crate::ledger::LedgerConfig, CheckError> {
        use crate::ledger::BackendKind;
        if let Some(v) = self.backend {
            l.backend = match v.get_ref().as_str() {
                "sqlite" => BackendKind::Sqlite,
                "redis" => BackendKind::Redis,
                "off" => BackendKind::Off,
                other => {
                    return Err((
                        v.span(),
                        format!("found \"{other}\", expected \"sqlite\", \"redis\" or \"off\""),
                    ));
                }
            };
        }
        if let Some(v) = self.path {
            l.path = absolute_path(v, "the ledger's SQLite file")?;
            l.path_configured = true;
        }
        if let Some(v) = self.url {
            let span = v.span();
            let url = non_empty(v, "a Redis URL such as \"redis://127.0.0.1:6379/\"")?;
            if !["redis://", "rediss://", "redis+unix://", "unix://"]
                .iter()
                .any(|p| url.starts_with(p))
            {
                return Err((
                    span,
                    format!(
                        "found \"{url}\", expected a Redis URL: redis://[:PASSWORD@]HOST[:PORT][/DB], \
                         rediss://… (TLS) or unix:///path/to/redis.sock"
                    ),
                ));
            }
            l.url = url;
        }
        if let Some(v) = self.prefix {
            l.prefix = non_empty(v, "a key prefix such as \"markgate:ledger:\"")?;
        }
        if let Some(v) = self.timeout {
            let span = v.span();
            let t = positive(Some(v), l.timeout, "timeout")?;
            if t >= eom {
                return Err((
                    span,
                    format!(
                        "found {}, expected a ledger timeout shorter than `[timeouts] eom` ({})",
                        HumanDuration(t),
                        HumanDuration(eom)
                    ),
                ));
            }
            l.timeout = t;
        }
        Ok(l)
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMetrics {
    listen: Option<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSocket {
    mode: Option<OctalMode>,
    owner: Option<Spanned<String>>,
    group: Option<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    max_frame_size: Option<Spanned<ByteSize>>,
    max_connections: Option<Spanned<i64>>,
    spill_threshold: Option<Spanned<ByteSize>>,
    spill_directory: Option<Spanned<String>>,
    max_in_memory_message: Option<Spanned<ByteSize>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTimeouts {
    read: Option<Spanned<HumanDuration>>,
    eom: Option<Spanned<HumanDuration>>,
    progress: Option<Spanned<HumanDuration>>,
    shutdown_grace: Option<Spanned<HumanDuration>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLogging {
    level: Option<LogLevel>,
    format: Option<LogFormat>,
}

fn non_empty(v: Spanned<String>, what: &str) -> Result<String, CheckError> {
    if v.get_ref().trim().is_empty() {
        return Err((
            v.span(),
            format!("found an empty string, expected {what} (leave the key out for the default)"),
        ));
    }
    Ok(v.into_inner())
}

fn absolute_path(v: Spanned<String>, what: &str) -> Result<PathBuf, CheckError> {
    let span = v.span();
    let s = non_empty(v, what)?;
    let p = PathBuf::from(&s);
    if !p.is_absolute() {
        return Err((
            span,
            format!("found the relative path \"{s}\", expected {what} as an absolute path"),
        ));
    }
    Ok(p)
}

fn positive(
    d: Option<Spanned<HumanDuration>>,
    default: std::time::Duration,
    key: &str,
) -> Result<std::time::Duration, CheckError> {
    match d {
        None => Ok(default),
        Some(v) if v.get_ref().0.is_zero() => Err((
            v.span(),
            format!("found a zero duration for `{key}`, expected a duration greater than zero"),
        )),
        Some(v) => Ok(v.into_inner().0),
    }
}

fn to_usize(v: Spanned<ByteSize>, key: &str) -> Result<usize, CheckError> {
    let span = v.span();
    usize::try_from(v.into_inner().0)
        .map_err(|_| (span, format!("`{key}` is too large for this machine")))
}

impl RawConfig {
    /// Fill the gaps from `default` and check what serde cannot.
    pub(super) fn check(self, default: Config) -> Result<Config, CheckError> {
        let mut c = default;
        if let Some(v) = self.listen {
            let span = v.span();
            let text = non_empty(v, "a listen spec such as \"inet:127.0.0.1:8895\"")?;
            c.listen = ListenSpec::parse(&text).map_err(|e| (span, e.to_string()))?;
        }
        if let Some(v) = self.policy {
            c.policy = Some(PathBuf::from(non_empty(v, "the path of a policy file")?));
        }

        if let Some(m) = self.socket.mode {
            c.socket.mode = m.0;
        }
        if let Some(v) = self.socket.owner {
            c.socket.owner = Some(non_empty(v, "a user name or numeric uid")?);
        }
        if let Some(v) = self.socket.group {
            c.socket.group = Some(non_empty(v, "a group name or numeric gid")?);
        }

        let l = self.limits;
        if let Some(v) = l.max_frame_size {
            let span = v.span();
            let n = to_usize(v, "max_frame_size")?;
            if n < MIN_FRAME_SIZE {
                return Err((
                    span,
                    format!(
                        "found {n} bytes, expected at least {MIN_FRAME_SIZE} (\"64KiB\"): Postfix \
                         sends body chunks of up to 65535 bytes"
                    ),
                ));
            }
            c.limits.max_frame_size = n;
        }
        if let Some(v) = l.max_connections {
            let n = *v.get_ref();
            c.limits.max_connections = usize::try_from(n)
                .ok()
                .filter(|&n| n >= 1)
                .ok_or_else(|| (v.span(), format!("found {n}, expected at least 1")))?;
        }
        if let Some(v) = l.spill_threshold {
            c.limits.spill_threshold = to_usize(v, "spill_threshold")?;
        }
        if let Some(v) = l.spill_directory {
            c.limits.spill_directory = Some(absolute_path(v, "a directory")?);
        }
        if let Some(v) = l.max_in_memory_message {
            c.limits.max_in_memory_message = v.into_inner().0;
        }

        let t = self.timeouts;
        c.timeouts.read = positive(t.read, c.timeouts.read, "read")?;
        let eom_span = t.eom.as_ref().map(|v| v.span());
        c.timeouts.eom = positive(t.eom, c.timeouts.eom, "eom")?;
        let progress_span = t.progress.as_ref().map(|v| v.span());
        // Zero is allowed here: it turns PROGRESS off.
        if let Some(v) = t.progress {
            c.timeouts.progress = v.into_inner().0;
        }
        c.timeouts.shutdown_grace = positive(
            t.shutdown_grace,
            c.timeouts.shutdown_grace,
            "shutdown_grace",
        )?;
        if !c.timeouts.progress.is_zero() && c.timeouts.progress >= c.timeouts.eom {
            // A progress interval at or above the deadline would never be sent: the MTA's own
            // timer (Sendmail R=, Postfix milter_content_timeout) is what it exists to reset.
            let span = progress_span.or(eom_span).unwrap_or(0..0);
            return Err((
                span,
                format!(
                    "`progress` ({}) must be shorter than `eom` ({})",
                    HumanDuration(c.timeouts.progress),
                    HumanDuration(c.timeouts.eom)
                ),
            ));
        }

        if let Some(v) = self.logging.level {
            c.logging.level = v;
        }
        if let Some(v) = self.logging.format {
            c.logging.format = v;
        }
        if let Some(v) = self.audit {
            let span = v.span();
            let audit = v.into_inner();
            audit.validate().map_err(|e| (span, e))?;
            c.audit = audit;
        }
        if let Some(v) = self.alerts {
            let span = v.span();
            let alerts = v.into_inner();
            crate::alert::AlertSettings::from_config(&alerts).map_err(|e| (span, e))?;
            c.alerts = alerts;
        }

        if let Some(v) = self.metrics.listen {
            let span = v.span();
            let text = non_empty(v, "a loopback address such as \"127.0.0.1:9195\"")?;
            let addr: std::net::SocketAddr = text.parse().map_err(|_| {
                (
                    span.clone(),
                    format!(
                        "found \"{text}\", expected ADDRESS:PORT such as \"127.0.0.1:9195\" or \
                         \"[::1]:9195\""
                    ),
                )
            })?;
            if !addr.ip().is_loopback() {
                return Err((
                    span,
                    format!(
                        "found the non-loopback address \"{text}\", expected a loopback address \
                         (127.0.0.1 or [::1]): the metrics endpoint has no authentication"
                    ),
                ));
            }
            c.metrics.listen = Some(addr);
        }
        c.ledger = self.ledger.check(c.ledger, c.timeouts.eom)?;
        Ok(c)
    }
}
