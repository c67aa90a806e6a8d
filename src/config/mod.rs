//! Daemon settings: where markgate listens, socket permissions, limits, timeouts, logging, and
//! which policy file to load.
//!
//! Owns: the daemon config file format (TOML), its built-in default (what `markgate run` uses
//! without `--config`), and turning mistakes into errors that name file, line, column, what was
//! found and what was expected. Unknown keys are errors, so a typo never silently falls back to a
//! default.
//!
//! Must not: know policy rules (the policy language lives in `policy/`; only its file path is
//! here), open sockets or files other than the config file itself.
//!
//! Shape: raw serde structs ([`raw`]) → checked [`Config`]. Every key, with its default and why,
//! is shown in `config/markgate.toml`; a test keeps that file and [`Config::default`] equal.

mod error;
mod raw;
pub mod units;

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

pub use error::{ConfigError, Located};

use crate::milter::{ListenSpec, ServerConfig};
use crate::transaction::{DEFAULT_SPILL_THRESHOLD, SpillPolicy};

/// Where `markgate run` listens when nothing else is configured: loopback only, so a first start
/// never exposes the milter to the network.
pub const DEFAULT_LISTEN: &str = "inet:127.0.0.1:8895";

/// The name used in errors about the built-in default.
pub const BUILT_IN: &str = "<built-in>";

/// The checked daemon configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Where to listen (written `inet:127.0.0.1:8895`, `unix:/path`, `inet:8895@127.0.0.1`,
    /// `local:/path`, `inet6:…`).
    pub listen: ListenSpec,
    /// The policy file; `None` means the built-in default policy.
    pub policy: Option<PathBuf>,
    pub socket: Socket,
    pub limits: Limits,
    pub timeouts: Timeouts,
    pub logging: Logging,
    /// `[audit]`: the audit trail (owned by `audit::config`, embedded here so one file
    /// configures the daemon).
    pub audit: crate::audit::AuditConfig,
    /// `[alerts]`: incident alerts and the relay that also carries sender notices.
    pub alerts: crate::alert::AlertConfig,
    pub metrics: MetricsSettings,
    /// `[ledger]`: thread memory's store (owned by `crate::ledger`).
    pub ledger: crate::ledger::LedgerConfig,
}

/// The Prometheus/OpenMetrics endpoint (see `crate::metrics`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MetricsSettings {
    /// Loopback address to serve `GET /metrics` on; `None` (the default) serves nothing.
    pub listen: Option<std::net::SocketAddr>,
}

/// Ownership and permissions of a unix-domain listening socket (ignored for inet listeners).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Socket {
    /// Permission bits, e.g. `0o660` so that the MTA's group can connect.
    pub mode: u32,
    /// User to own the socket; `None` leaves the daemon's user.
    pub owner: Option<String>,
    /// Group to own the socket (on Debian: `postfix`); `None` leaves the daemon's group.
    pub group: Option<String>,
}

/// Resource limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Largest milter frame accepted, checked before allocating.
    pub max_frame_size: usize,
    /// Most MTA connections served at once.
    pub max_connections: usize,
    /// Bodies above this size go to a temporary file.
    pub spill_threshold: usize,
    /// Where spill files are created; `None` means `$TMPDIR` (else `/tmp`).
    pub spill_directory: Option<PathBuf>,
    /// A spilled message that cannot be judged from a reduced copy (`crate::large`) is read
    /// into memory when it is at most this size, else answered 451.
    pub max_in_memory_message: u64,
}

/// Timeouts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Timeouts {
    /// Longest silence from the MTA on an open connection before it is closed.
    pub read: Duration,
    /// Longest time the filter may take to decide a message before it is tempfailed.
    pub eom: Duration,
    /// While the filter works, how often to tell the MTA we are still alive (SMFIR_PROGRESS);
    /// zero sends none.
    pub progress: Duration,
    /// On SIGTERM/SIGINT, how long in-flight messages may take to finish.
    pub shutdown_grace: Duration,
}

/// Logging (to stderr).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Logging {
    pub level: LogLevel,
    pub format: LogFormat,
}

/// The most detailed log level written; see `telemetry` for what each level is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    Error,
    Warn,
    Info,
    Debug,
    Trace,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One human-readable line per event.
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

/// The smallest frame cap that still admits Postfix's body chunks (up to 65535 bytes of data plus
/// the command byte).
pub const MIN_FRAME_SIZE: usize = 65536;

/// The built-in listen address, parsed.
fn default_listen() -> ListenSpec {
    ListenSpec::Tcp {
        host: "127.0.0.1".into(),
        port: 8895,
    }
}

impl Default for Config {
    /// The protocol engine's own defaults (see `milter::ServerConfig`, which explains each) plus
    /// markgate's: listen on loopback, built-in policy, 1 MiB spill threshold, `info` text logs.
    fn default() -> Self {
        let server = ServerConfig::default();
        Config {
            listen: default_listen(),
            policy: None,
            socket: Socket {
                mode: server.socket_mode,
                owner: server.socket_owner,
                group: server.socket_group,
            },
            limits: Limits {
                max_frame_size: server.max_frame_size,
                max_connections: server.max_connections,
                spill_threshold: DEFAULT_SPILL_THRESHOLD,
                spill_directory: None,
                max_in_memory_message: crate::large::DEFAULT_MAX_IN_MEMORY,
            },
            timeouts: Timeouts {
                read: server.read_timeout,
                eom: server.eom_timeout,
                progress: server.progress_interval,
                shutdown_grace: server.shutdown_grace,
            },
            logging: Logging {
                level: LogLevel::Info,
                format: LogFormat::Text,
            },
            audit: crate::audit::AuditConfig::default(),
            alerts: crate::alert::AlertConfig::default(),
            metrics: MetricsSettings::default(),
            ledger: crate::ledger::LedgerConfig::default(),
        }
    }
}

impl Config {
    /// Read and check a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            file: path.to_path_buf(),
            source,
        })?;
        Config::parse(&text, &path.display().to_string())
    }

    /// Check config text; `file` names it in errors.
    pub fn parse(text: &str, file: &str) -> Result<Config, ConfigError> {
        let raw: raw::RawConfig = toml::from_str(text).map_err(|e| {
            ConfigError::at(file, text, e.span(), e.message().trim_end().to_string())
        })?;
        raw.check(Config::default())
            .map_err(|(span, message)| ConfigError::at(file, text, Some(span), message))
    }

    /// The protocol engine's settings.
    pub fn server_config(&self) -> ServerConfig {
        ServerConfig {
            max_frame_size: self.limits.max_frame_size,
            max_connections: self.limits.max_connections,
            read_timeout: self.timeouts.read,
            eom_timeout: self.timeouts.eom,
            progress_interval: self.timeouts.progress,
            shutdown_grace: self.timeouts.shutdown_grace,
            socket_mode: self.socket.mode,
            socket_owner: self.socket.owner.clone(),
            socket_group: self.socket.group.clone(),
        }
    }

    /// The bounded-memory limits for large messages (for `filter::evaluate_with`).
    pub fn large_limits(&self) -> crate::large::Limits {
        crate::large::Limits {
            max_in_memory: self.limits.max_in_memory_message,
            ..crate::large::Limits::default()
        }
    }

    /// How message bodies are stored (for `Transaction::new`).
    pub fn spill_policy(&self) -> SpillPolicy {
        SpillPolicy {
            threshold: self.limits.spill_threshold,
            directory: self.limits.spill_directory.clone(),
        }
    }
}

#[cfg(test)]
mod tests;
