//! The Sendmail milter protocol, versions 2 to 6, as Postfix and Sendmail speak it.
//!
//! Owns framing, typed commands and replies, option negotiation, the per-connection state
//! machine, connections and listeners. Knows nothing about labels, policy or message storage:
//! it talks to the rest of markgate only through [`handler::Handler`]. It imports nothing from
//! the rest of the crate, so it could be lifted out as a library. Protocol notes:
//! `../shared/reference/milter-protocol.md` and libmilter's `mfdef.h`.

pub mod handler;
