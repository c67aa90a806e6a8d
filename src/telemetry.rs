//! Operational logging: where log lines go and what each level means.
//!
//! Owns: installing the global `tracing` subscriber (stderr; text or JSON; a maximum level) once
//! at start-up. Must not: write audit records (the audit trail is a separate, tamper-evident
//! record in `audit/`), or print anything to stdout.
//!
//! What each level is for — keep to it when adding log lines:
//! - `error`: markgate failed to do its job: it could not listen, a message was answered with a
//!   temporary failure because of an internal error, panic or timeout, a durable write failed.
//!   An operator should look at every one.
//! - `warn`: something outside markgate misbehaved and markgate coped: the MTA sent a malformed
//!   or oversized frame (the connection was closed), a message could not be parsed as the policy
//!   expected, a setting is unusual.
//! - `info`: the daemon's life (start, where it listens, stop) and one line per message decision
//!   (queue id, verdict). Safe to keep on in production.
//! - `debug`: per-connection and per-stage detail for diagnosing an installation.
//! - `trace`: everything, including protocol frames; very verbose and may contain addresses and
//!   header values, so only for short investigations.

use std::io::IsTerminal;

mod clock;
mod plain;

use tracing::level_filters::LevelFilter;

use crate::config::{LogFormat, LogLevel, Logging};

/// The global subscriber could not be installed (one is already set).
#[derive(Debug, thiserror::Error)]
#[error("cannot set up logging: {0}")]
pub struct TelemetryError(String);

fn filter(level: LogLevel) -> LevelFilter {
    match level {
        LogLevel::Error => LevelFilter::ERROR,
        LogLevel::Warn => LevelFilter::WARN,
        LogLevel::Info => LevelFilter::INFO,
        LogLevel::Debug => LevelFilter::DEBUG,
        LogLevel::Trace => LevelFilter::TRACE,
    }
}

/// Install the process-wide subscriber: log lines to stderr at `logging.level` and above, as
/// text (coloured only when stderr is a terminal) or JSON lines.
pub fn init(logging: &Logging) -> Result<(), TelemetryError> {
    let builder = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_timer(clock::LineTime)
        .with_max_level(filter(logging.level))
        .with_target(false);
    let result = match logging.format {
        // The plain field formatter only stands in for the default one without colour.
        LogFormat::Text if !std::io::stderr().is_terminal() => builder
            .with_ansi(false)
            .fmt_fields(plain::PlainFields)
            .try_init(),
        LogFormat::Text => builder.with_ansi(true).try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .try_init(),
    };
    result.map_err(|e| TelemetryError(e.to_string()))
}
