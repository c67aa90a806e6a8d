//! The envelope `policy::decide` reads, built from the transaction and the MTA's macros: the
//! message-wide ones (`{auth_authen}`, `{daemon_name}`) and, per recipient, the RCPT-stage
//! `{rcpt_host}` / `{rcpt_mailer}` that `[[route]]` selectors match (`policy::routes`).
//!
//! Must not: decide anything, or read the message content.

use crate::milter::ConnectionFacts;
use crate::policy::{Envelope, NextHop};
use crate::transaction::Transaction;

/// Macro bytes as trimmed text; `None` when absent or empty (Postfix and Sendmail send only
/// macros with a value, but an empty one means "unknown" as well).
fn text(v: Option<&[u8]>) -> Option<String> {
    v.map(|v| crate::inspect::utf8_lossy(v).trim().to_owned())
        .filter(|s| !s.is_empty())
}

fn lossy(b: &[u8]) -> String {
    crate::inspect::utf8_lossy(b).into_owned()
}

/// The envelope decide() needs, from the transaction and the MTA's macros.
pub fn envelope_of(tx: &Transaction, conn: &ConnectionFacts) -> Envelope {
    let macro_text = |name: &str| text(tx.macros().get(name));
    let next_hops: Vec<NextHop> = tx
        .recipients()
        .iter()
        .map(|r| NextHop {
            host: text(r.rcpt_host.as_deref()),
            mailer: text(r.rcpt_mailer.as_deref()),
        })
        .collect();
    let known = next_hops
        .iter()
        .any(|h| h.host.is_some() || h.mailer.is_some());
    Envelope {
        sender: tx.sender().map(|s| lossy(s.bare())).unwrap_or_default(),
        recipients: tx.recipients().iter().map(|r| lossy(r.bare())).collect(),
        client_ip: conn.addr,
        auth_user: macro_text("auth_authen"),
        daemon_name: macro_text("daemon_name"),
        // Empty when the MTA said nothing, so decisions and records stay as they were.
        next_hops: if known { next_hops } else { Vec::new() },
    }
}
