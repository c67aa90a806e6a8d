//! Test support shared by the integration tests: real peers (a private Postfix, `smtp-sink`,
//! swaks, miltertest), free ports, a small SMTP client, and markgate's server run in-process.
//!
//! Each test binary includes this tree with `mod support;` and uses only part of it, hence the
//! crate-wide `dead_code` allowance below (the alternative, one copy per test file, is worse).
#![allow(dead_code)]

pub mod daemon;
pub mod enforce;
pub mod markgate;
pub mod messages;
pub mod mta;
pub mod peers;
pub mod ports;
pub mod postfix;
pub mod sendmail;
pub mod smtp;
