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
/// Fuzz target bodies (shared by `fuzz/` and the corpus-replay test).
#[doc(hidden)]
pub mod fuzzing;
/// Read-only facts about a message: markings, forward evidence (MIME facts: `inspect::mime`).
pub mod inspect;
/// The milter protocol engine (no labels, no policy).
pub mod milter;
/// The TOML policy, label grammars and `decide()`.
pub mod policy;
