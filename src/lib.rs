//! markgate: a milter that enforces protective-marking policy at a mail gateway.
//!
//! The module map follows `ARCHITECTURE.md`: bytes come in through [`milter`], are collected
//! into a [`transaction`], and at end-of-message the filter runs inspect → policy → rewrite →
//! audit before the milter layer sends the edits and the final answer.
#![forbid(unsafe_code)]

/// Incident alerts to the security team over SMTP, never on a message's path.
pub mod alert;
/// The tamper-evident audit trail: records, writer, syslog, verify and report.
pub mod audit;
/// The command line (`markgate run`, `markgate version`) and exit codes.
pub mod cli;
/// Daemon settings (listen, limits, timeouts, logging) — not policy.
pub mod config;
/// A number's decimal digits without `core::fmt`, for the per-message paths.
pub mod decimal;
/// The production milter handler (glue between the milter layer and the decision pipeline).
pub mod filter;
/// Fuzz target bodies (shared by `fuzz/` and the corpus-replay test).
#[doc(hidden)]
pub mod fuzzing;
/// Read-only facts about a message: markings, forward evidence (MIME facts: `inspect::mime`).
pub mod inspect;
/// Large messages in bounded memory: judged from a reduced copy, new body streamed.
pub mod large;
/// Thread memory: recent messages' markings for downgrade and redirect checks (SQLite, Redis).
pub mod ledger;
/// The markgate(8) manual page, generated from the CLI definition.
pub mod manpage;
/// Prometheus/OpenMetrics metrics and the loopback `GET /metrics` endpoint.
pub mod metrics;
/// The milter protocol engine (no labels, no policy).
pub mod milter;
/// systemd readiness/reload/stop notifications over `$NOTIFY_SOCKET`.
pub mod notify;
/// The TOML policy, label grammars and `decide()`.
pub mod policy;
/// SIGHUP: rebuild config and policy, swap atomically, keep the old ones on error.
pub mod reload;
/// Edit plans (labels, subject, disclaimer) and their application to raw messages.
pub mod rewrite;
/// Logging setup and what each log level is for.
pub mod telemetry;
#[cfg(test)]
mod test_logs;
/// One message: envelope, headers in order, body (spilled to disk when large).
pub mod transaction;
/// The current time as UTC calendar text, cached per thread by second.
pub mod utc;
