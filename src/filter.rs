//! The production milter handler: the only glue between the protocol engine and markgate's
//! decisions.
//!
//! Owns: creating one [`Transaction`] per message (at MAIL) and answering it at end-of-message.
//! Must not: encode protocol frames, parse policy files, or choose file paths; it receives all of
//! that ready-made.
//!
//! Until the policy engine is wired in (inspect → decide → plan → audit, see `ARCHITECTURE.md`),
//! every message passes unchanged and one `info` line records that it did. The end-to-end tests
//! prove the edit path (header, subject and body changes) with their own test handlers.

use tracing::info;

use crate::milter::handler::{ConnectionFacts, Handler, HandlerError, Outcome};
use crate::transaction::{SpillPolicy, Transaction};

/// markgate's [`Handler`]. One instance serves every connection.
#[derive(Debug, Clone)]
pub struct Filter {
    spill: SpillPolicy,
}

impl Filter {
    /// A filter that stores message bodies according to `spill`.
    pub fn new(spill: SpillPolicy) -> Self {
        Filter { spill }
    }
}

impl Handler for Filter {
    type Sink = Transaction;

    fn begin_message(&self, conn: &ConnectionFacts) -> Result<Transaction, HandlerError> {
        Ok(Transaction::new(conn, self.spill.clone()))
    }

    async fn end_of_message(
        &self,
        _conn: &ConnectionFacts,
        message: Transaction,
    ) -> Result<Outcome, HandlerError> {
        let lossy = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        info!(
            queue_id = message.queue_id().map(lossy).unwrap_or_default(),
            from = message
                .sender()
                .map(|s| lossy(s.bare()))
                .unwrap_or_default(),
            recipients = message.recipients().len(),
            size = message.body_len(),
            verdict = "pass",
            "message passed unchanged"
        );
        Ok(Outcome::pass())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::milter::handler::{MessageSink, Verdict};

    #[tokio::test]
    async fn passes_every_message_unchanged() {
        let f = Filter::new(SpillPolicy {
            threshold: 4,
            directory: None,
        });
        let conn = ConnectionFacts::default();
        let mut t = f.begin_message(&conn).unwrap();
        t.mail_from(b"<a@example.org>", &[]).unwrap();
        t.rcpt_to(b"<b@example.net>", &[]).unwrap();
        t.header(b"Subject", b"x").unwrap();
        t.body_chunk(b"a body longer than four bytes\r\n").unwrap();
        assert!(t.is_spilled());
        let out = f.end_of_message(&conn, t).await.unwrap();
        assert_eq!(out.verdict, Verdict::Continue);
        assert!(out.modifications.is_empty());
    }
}
