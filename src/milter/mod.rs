//! The Sendmail milter protocol, versions 2 to 6, as Postfix and Sendmail speak it.
//!
//! Owns framing, typed commands and replies, option negotiation, the per-connection state
//! machine, connections and listeners. Knows nothing about labels, policy or message storage:
//! it talks to the rest of markgate only through [`handler::Handler`](crate::milter::handler::Handler). It imports nothing from
//! the rest of the crate, so it could be lifted out as a library. Protocol notes:
//! `../shared/reference/milter-protocol.md` and libmilter's `mfdef.h`.
//!
//! Layers, bottom up: [`codec`](crate::milter::codec) (bytes ↔ frames) → [`command`](crate::milter::command) / [`reply`](crate::milter::reply) (frames ↔ typed
//! values) → [`flags`](crate::milter::flags) (negotiation) and [`macros`](crate::milter::macros) → [`session`](crate::milter::session) (pure state machine) →
//! [`conn`](crate::milter::conn) (one connection's I/O, timeouts, failure rule; its timers are [`timer`](crate::milter::timer)) → [`server`](crate::milter::server) (listeners).
//! [`mta`](crate::milter::mta) is the other side of the wire (an MTA-side client) for tests and load generation.
//!
//! # Logging policy
//! - `error`: we cannot serve — a message answered 451 because the handler or its sink
//!   failed, panicked or timed out, or asked for an edit the MTA did not grant; accept
//!   failures; a connection task that panicked.
//! - `warn`: the peer misbehaves or the environment degrades — every connection closed for
//!   cause (bad or oversized packet, unknown or out-of-state command, read timeout, I/O
//!   error, EOF mid-message), logged once with the peer and the reason; the connection cap
//!   reached; the shutdown grace period running out.
//! - `info`: lifecycle — listening, stale socket removed, shutdown progress.
//! - `debug`/`trace`: protocol detail — negotiation results, connections opened and closed
//!   normally, each command received, PROGRESS sent.

pub mod codec;
pub mod command;
pub mod conn;
pub mod flags;
pub mod handler;
pub mod macros;
pub mod mta;
pub mod reply;
pub mod server;
pub mod session;
pub mod timer;

pub use handler::{
    AfterAnswer, ConnectionFacts, Handler, HandlerError, LaterVerdict, Macros, MessageSink,
    Modification, NewBody, Outcome, PendingVerdict, Settled, SmtpReply, Staged, Verdict,
};
pub use server::{ListenSpec, ListenSpecError, Server, ServerConfig};
