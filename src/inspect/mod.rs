//! Read-only facts about a message: the MIME shape (this file's `mime`), and — merged in from the
//! policy branch — markings and auto-forward evidence.
//!
//! Everything under `inspect` is pure: it reads bytes and returns facts with diagnostics. It does
//! no I/O, no logging, and never changes the message (that is `crate::rewrite`'s job).

pub mod mime;
