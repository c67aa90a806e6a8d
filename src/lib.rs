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
/// The production milter handler (glue between the milter layer and the decision pipeline).
pub mod filter;
/// The milter protocol engine (no labels, no policy).
pub mod milter;
/// Logging setup and what each log level is for.
pub mod telemetry;
/// One message: envelope, headers in order, body (spilled to disk when large).
pub mod transaction;

/// Fuzz target bodies (shared by `fuzz/` and the corpus-replay test).
#[doc(hidden)]
pub mod fuzzing;
