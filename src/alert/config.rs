//! The `[alerts]` section of the daemon config and its validated, runtime form.
//!
//! ```toml
//! [alerts]
//! enabled = false                  # true needs `to`
//! to = ["security-team@example.gov.uk"]
//! from = "markgate@localhost"
//! mode = "immediate"               # immediate | digest
//! window = 300                     # seconds; the digest period
//! max_mails_per_hour = 20          # rate limit; incidents beyond it wait and go as one digest
//! give_up_after = 3600             # seconds; then the incident is logged and audited as undeliverable
//! retry_initial = 10               # seconds; first retry delay, doubled per failure
//! retry_max = 600                  # seconds; cap of the retry delay
//! queue = 1024                     # incidents waiting; beyond it they are counted and reported
//! subject_prefix = "[markgate]"
//!
//! [alerts.relay]
//! host = "127.0.0.1"               # the local Postfix by default
//! port = 25
//! starttls = "none"                # none | opportunistic | required
//! # username = "markgate"
//! # password_file = "/etc/markgate/relay-password"   # or password = "…" (prefer the file)
//! timeout = 30                     # seconds per SMTP conversation
//! ```

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The longest time any `[alerts]` duration may be.
const MAX_SECONDS: u64 = 365 * 86_400;

/// Immediately (one mail per incident, rate permitting) or one digest per window.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertMode {
    /// One mail per incident as soon as the rate limit allows.
    #[default]
    Immediate,
    /// One mail per `window` with every incident of the window.
    Digest,
}

/// How the relay connection is protected.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StartTls {
    /// Plain SMTP (the default, for a local relay on loopback).
    #[default]
    None,
    /// STARTTLS when offered, plain otherwise.
    Opportunistic,
    /// STARTTLS or no delivery.
    Required,
}

/// `[alerts.relay]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RelayConfig {
    /// Default `127.0.0.1`.
    pub host: String,
    /// Default 25.
    pub port: u16,
    /// Default `none`.
    pub starttls: StartTls,
    /// SMTP AUTH user; no AUTH when absent.
    pub username: Option<String>,
    /// SMTP AUTH password (prefer `password_file`).
    pub password: Option<String>,
    /// File holding the password (first line).
    pub password_file: Option<PathBuf>,
    /// Seconds per SMTP conversation. Default 30.
    pub timeout: u64,
}

impl Default for RelayConfig {
    fn default() -> Self {
        RelayConfig {
            host: "127.0.0.1".into(),
            port: 25,
            starttls: StartTls::None,
            username: None,
            password: None,
            password_file: None,
            timeout: 30,
        }
    }
}

/// `[alerts]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AlertConfig {
    /// Default `false`.
    pub enabled: bool,
    /// Security-team addresses; required when enabled.
    pub to: Vec<String>,
    /// Default `markgate@localhost`.
    pub from: String,
    /// Default `immediate`.
    pub mode: AlertMode,
    /// Digest window, seconds. Default 300.
    pub window: u64,
    /// Mails per hour at most. Default 20.
    pub max_mails_per_hour: u32,
    /// Seconds after which an undelivered incident is given up (logged + audited). Default 3600.
    pub give_up_after: u64,
    /// First retry delay, seconds. Default 10.
    pub retry_initial: u64,
    /// Retry delay cap, seconds. Default 600.
    pub retry_max: u64,
    /// Incident queue bound. Default 1024.
    pub queue: usize,
    /// Subject prefix. Default `[markgate]`.
    pub subject_prefix: String,
    /// The relay.
    pub relay: RelayConfig,
}

impl Default for AlertConfig {
    fn default() -> Self {
        AlertConfig {
            enabled: false,
            to: Vec::new(),
            from: "markgate@localhost".into(),
            mode: AlertMode::Immediate,
            window: 300,
            max_mails_per_hour: 20,
            give_up_after: 3600,
            retry_initial: 10,
            retry_max: 600,
            queue: 1024,
            subject_prefix: "[markgate]".into(),
            relay: RelayConfig::default(),
        }
    }
}

/// The validated settings the alert task runs on (durations at full resolution, so tests can
/// use milliseconds).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlertSettings {
    /// Recipients.
    pub to: Vec<lettre::message::Mailbox>,
    /// Sender.
    pub from: lettre::message::Mailbox,
    /// Mode.
    pub mode: AlertMode,
    /// Digest window.
    pub window: Duration,
    /// Mails allowed per `rate_period`.
    pub max_mails: u32,
    /// The rate-limit period (an hour from the config).
    pub rate_period: Duration,
    /// Give-up time.
    pub give_up_after: Duration,
    /// First retry delay.
    pub retry_initial: Duration,
    /// Retry delay cap.
    pub retry_max: Duration,
    /// Queue bound.
    pub queue: usize,
    /// Subject prefix.
    pub subject_prefix: String,
    /// Relay host.
    pub relay_host: String,
    /// Relay port.
    pub relay_port: u16,
    /// STARTTLS.
    pub starttls: StartTls,
    /// Credentials (user, password).
    pub credentials: Option<(String, String)>,
    /// Per-conversation timeout.
    pub relay_timeout: Duration,
    /// Host name for the mail text.
    pub host: String,
}

impl AlertSettings {
    /// Validate `[alerts]`; the error names the key and what was expected.
    pub fn from_config(c: &AlertConfig) -> Result<Self, String> {
        if c.enabled && c.to.is_empty() {
            return Err(
                "alerts.to: expected at least one address when alerts.enabled = true".into(),
            );
        }
        let to =
            c.to.iter()
                .map(|a| {
                    a.parse()
                        .map_err(|e| format!("alerts.to: {a:?} is not a mail address ({e})"))
                })
                .collect::<Result<Vec<_>, _>>()?;
        let from = c
            .from
            .parse()
            .map_err(|e| format!("alerts.from: {:?} is not a mail address ({e})", c.from))?;
        // Bounded above too: the alert task adds these to clock readings and doubles the
        // retry wait, which a number near 2^64 seconds would overflow.
        let positive = |key: &str, v: u64| {
            if v == 0 {
                Err(format!(
                    "alerts.{key}: expected a number of seconds above 0"
                ))
            } else if v > MAX_SECONDS {
                Err(format!(
                    "alerts.{key}: found {v}, expected at most {MAX_SECONDS} seconds (a year)"
                ))
            } else {
                Ok(Duration::from_secs(v))
            }
        };
        if c.max_mails_per_hour == 0 {
            return Err("alerts.max_mails_per_hour: expected at least 1".into());
        }
        if c.queue == 0 {
            return Err("alerts.queue: expected at least 1".into());
        }
        if c.relay.host.is_empty() {
            return Err("alerts.relay.host: expected a host name or address".into());
        }
        let password = match (&c.relay.password, &c.relay.password_file) {
            (Some(_), Some(_)) => {
                return Err("alerts.relay: give password or password_file, not both".into());
            }
            (Some(p), None) => Some(p.clone()),
            (None, Some(f)) => Some(
                std::fs::read_to_string(f)
                    .map_err(|e| format!("alerts.relay.password_file: {}: {e}", f.display()))?
                    .lines()
                    .next()
                    .unwrap_or_default()
                    .to_string(),
            ),
            (None, None) => None,
        };
        let credentials = match (&c.relay.username, password) {
            (Some(u), Some(p)) => Some((u.clone(), p)),
            (None, None) => None,
            (Some(_), None) => {
                return Err(
                    "alerts.relay.username: a password or password_file is needed too".into(),
                );
            }
            (None, Some(_)) => {
                return Err("alerts.relay.password: a username is needed too".into());
            }
        };
        Ok(AlertSettings {
            to,
            from,
            mode: c.mode,
            window: positive("window", c.window)?,
            max_mails: c.max_mails_per_hour,
            rate_period: Duration::from_secs(3600),
            give_up_after: positive("give_up_after", c.give_up_after)?,
            retry_initial: positive("retry_initial", c.retry_initial)?,
            retry_max: positive("retry_max", c.retry_max)?,
            queue: c.queue,
            subject_prefix: c.subject_prefix.clone(),
            relay_host: c.relay.host.clone(),
            relay_port: c.relay.port,
            starttls: c.relay.starttls,
            credentials,
            relay_timeout: positive("relay.timeout", c.relay.timeout)?,
            host: std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|s| s.trim().to_string())
                .unwrap_or_else(|_| "localhost".into()),
        })
    }
}
