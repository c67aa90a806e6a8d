//! markgate: a milter that enforces protective-marking policy at a mail gateway.
//!
//! The module map follows `ARCHITECTURE.md`: bytes come in through [`milter`], are collected
//! into a [`transaction`], and at end-of-message the filter runs inspect → policy → rewrite →
//! audit before the milter layer sends the edits and the final answer.
#![forbid(unsafe_code)]

#[doc(hidden)]
pub mod fuzzing;
/// Read-only facts about a message (MIME shape; markings from the policy branch).
pub mod inspect;
/// The milter protocol engine (no labels, no policy).
pub mod milter;
/// Edit plans (labels, subject, disclaimer) and their application to raw messages.
pub mod rewrite;
