//! The boundary between the protocol engine and the rest of markgate.
//!
//! The milter layer collects a whole transaction through a [`MessageSink`] that the handler
//! supplies (so storage, e.g. spilling big bodies to disk, belongs to the caller), and asks the
//! [`Handler`] once, at end-of-message, for an [`Outcome`]: a final verdict plus the
//! modifications to send before it. The handler never sees protocol stages, negotiation or
//! framing. This module must not know anything about labels or policy.
//!
//! A handler whose final verdict waits on something slow that does not change the
//! modifications (markgate's audit record being made durable) answers through
//! [`Handler::end_of_message_staged`] instead: the modifications now, the verdict as a
//! [`PendingVerdict`]. The milter layer sends the modifications at once, so the MTA applies them
//! while the handler waits, and sends the verdict when it comes. It does not learn *why* the
//! verdict is late. Until then it keeps the end-of-message open (PROGRESS while the wait is
//! long); an error, a panic or the end-of-message timeout answers 4xx, and the MTA then drops
//! the modifications it already received (Postfix and Sendmail apply them only with an accept).

use std::future::Future;
use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;

/// What the MTA told us about the SMTP client, from CONNECT and HELO (connection-scoped).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConnectionFacts {
    /// Client hostname as the MTA sent it (`[1.2.3.4]` when unresolved), raw bytes.
    pub hostname: Vec<u8>,
    /// Client address, when the family was inet/inet6 and the text parsed.
    pub addr: Option<IpAddr>,
    /// Client TCP port (0 when unknown).
    pub port: u16,
    /// For a unix-socket client, the socket path; otherwise empty.
    pub unix_path: Vec<u8>,
    /// The HELO/EHLO argument, if the MTA sent HELO.
    pub helo: Option<Vec<u8>>,
}

/// One stage's macro set as received: name/value pairs sliced from the `D` packet.
pub type MacroSet = Arc<Vec<(Bytes, Bytes)>>;

/// Macro values the MTA sent, flattened (later stages override earlier ones with the same name).
/// Names are kept exactly as sent: `i`, `{auth_authen}`.
#[derive(Debug, Clone, Default)]
pub struct Macros {
    /// The stage sets, earliest first; of a name sent more than once, the last value counts.
    /// Shared with the connection's macro table, so handing a message its macros copies no
    /// pair (each copy of a `Bytes` is an atomic count on its frame's buffer, and a message
    /// has some thirty).
    sets: Vec<MacroSet>,
}

impl Macros {
    /// The sets in the order their values override (later wins).
    pub(crate) fn from_sets(sets: Vec<MacroSet>) -> Self {
        Macros { sets }
    }

    /// Set or replace one macro.
    pub fn set(&mut self, name: &[u8], value: &[u8]) {
        self.sets.push(Arc::new(vec![(
            Bytes::copy_from_slice(name),
            Bytes::copy_from_slice(value),
        )]));
    }

    fn pairs(&self) -> impl DoubleEndedIterator<Item = &(Bytes, Bytes)> {
        self.sets.iter().flat_map(|set| set.iter())
    }

    /// The value last given to exactly this name.
    fn last_value(&self, name: &[u8]) -> Option<&[u8]> {
        self.pairs()
            .rev()
            .find(|(n, _)| n.as_ref() == name)
            .map(|(_, v)| v.as_ref())
    }

    /// The value of a macro, accepting both `name` and `{name}` spellings for long names.
    /// When both spellings were sent, the one sent first is the one looked up.
    pub fn get(&self, name: &str) -> Option<&[u8]> {
        let name = name.as_bytes();
        // The `{name}` spelling is compared in place rather than formatted per lookup.
        let try_braced = !(name.first() == Some(&b'{') || name.len() == 1);
        let is_braced = |n: &[u8]| {
            try_braced
                && n.len() == name.len() + 2
                && n.first() == Some(&b'{')
                && n.last() == Some(&b'}')
                && &n[1..n.len() - 1] == name
        };
        let (first, _) = self
            .pairs()
            .find(|(n, _)| n.as_ref() == name || is_braced(n))?;
        self.last_value(first)
    }

    /// Every macro in the order first seen, with its last value.
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        let mut seen: Vec<&[u8]> = Vec::new();
        self.pairs().filter_map(move |(n, _)| {
            let n = n.as_ref();
            if seen.contains(&n) {
                return None;
            }
            seen.push(n);
            Some((n, self.last_value(n)?))
        })
    }
}

/// Equal when they give the same names the same values, in the same order: how the sets were
/// sent does not matter.
impl PartialEq for Macros {
    fn eq(&self, other: &Self) -> bool {
        self.iter().eq(other.iter())
    }
}

impl Eq for Macros {}

/// Receives one message's data as the MTA streams it. Implemented outside `milter/`
/// (by `crate::transaction`), so the milter layer never decides how a message is stored.
///
/// Every method may fail with an I/O error (a spill file could not be written); the milter layer
/// then answers the message with a temporary failure.
pub trait MessageSink: Send + 'static {
    /// MAIL FROM: the address exactly as sent (with or without `<>`) and its ESMTP arguments.
    fn mail_from(&mut self, sender: &[u8], args: &[Vec<u8>]) -> io::Result<()>;
    /// One RCPT TO, in order.
    fn rcpt_to(&mut self, recipient: &[u8], args: &[Vec<u8>]) -> io::Result<()>;
    /// One header, in order. `value` is as sent by the MTA with folding as bare LF; the milter
    /// layer has already normalised the leading space (the value never starts with the single
    /// space that follows the colon).
    fn header(&mut self, name: &[u8], value: &[u8]) -> io::Result<()>;
    /// A chunk of the body: CRLF line ends, chunk boundaries arbitrary.
    fn body_chunk(&mut self, chunk: &[u8]) -> io::Result<()>;
    /// Called at end-of-message with the macros collected for this message (connection
    /// macros included). Handed over by value: they are built for this call, so a sink that
    /// keeps them need not copy them.
    fn macros(&mut self, macros: Macros) -> io::Result<()>;
    /// Called right after [`rcpt_to`](Self::rcpt_to) with the macros the MTA sent for that
    /// RCPT (`{rcpt_host}`, `{rcpt_mailer}`, …). Each RCPT replaces the previous RCPT's set, so
    /// by end-of-message only the last recipient's would be left: a sink that needs them per
    /// recipient keeps them here. Default: ignored.
    fn rcpt_macros(&mut self, _macros: &Macros) -> io::Result<()> {
        Ok(())
    }
}

/// SMTP reply text for reject/tempfail: code, optional enhanced status, and lines of text.
/// The milter layer validates it (class digits agree, `%` doubled, CR/LF never inside a line)
/// before sending.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SmtpReply {
    /// Three-digit code, 4xx or 5xx.
    pub code: u16,
    /// Enhanced status code such as `5.7.1`; its class must match `code`.
    pub enhanced: Option<String>,
    /// One or more text lines (sent as a multi-line reply when more than one).
    pub lines: Vec<String>,
}

/// The final answer for a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Deliver (with the outcome's modifications applied).
    Continue,
    /// Permanent refusal; `None` lets the MTA use its default text.
    Reject(Option<SmtpReply>),
    /// Temporary refusal; the sender's MTA retries.
    Tempfail(Option<SmtpReply>),
    /// Accept and silently drop. markgate's policy never asks for this; it exists for completeness.
    Discard,
}

/// A new body for REPLBODY, streamed in chunks so large bodies need not be in memory.
pub enum NewBody {
    /// The whole body in memory (CRLF line ends).
    Bytes(Bytes),
    /// The whole body in a file, read from its current position to the end.
    File(std::fs::File),
}

impl std::fmt::Debug for NewBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NewBody::Bytes(b) => write!(f, "NewBody::Bytes({} bytes)", b.len()),
            NewBody::File(_) => write!(f, "NewBody::File(..)"),
        }
    }
}

/// One modification, sent (in order) before the final verdict. Header values use bare LF for
/// folding and never carry the leading space (the milter layer adds it when HDR_LEADSPC was
/// negotiated).
#[derive(Debug)]
pub enum Modification {
    /// SMFIR_ADDHEADER: append after the last header.
    AddHeader { name: String, value: Vec<u8> },
    /// SMFIR_INSHEADER: insert at a 0-based position over all headers.
    InsertHeader {
        index: u32,
        name: String,
        value: Vec<u8>,
    },
    /// SMFIR_CHGHEADER: change the `index`-th (1-based) header of that name; empty value deletes.
    ChangeHeader {
        index: u32,
        name: String,
        value: Vec<u8>,
    },
    /// SMFIR_REPLBODY: replace the whole body.
    ReplaceBody(NewBody),
    /// SMFIR_ADDRCPT
    AddRecipient { recipient: Vec<u8> },
    /// SMFIR_ADDRCPT_PAR
    AddRecipientWithArgs { recipient: Vec<u8>, args: Vec<u8> },
    /// SMFIR_DELRCPT
    DeleteRecipient { recipient: Vec<u8> },
    /// SMFIR_CHGFROM
    ChangeSender {
        sender: Vec<u8>,
        args: Option<Vec<u8>>,
    },
    /// SMFIR_QUARANTINE: put the message on hold with a reason.
    Quarantine { reason: Vec<u8> },
}

/// The handler's answer at end-of-message.
#[derive(Debug)]
pub struct Outcome {
    pub verdict: Verdict,
    pub modifications: Vec<Modification>,
}

impl Outcome {
    /// Let the message through unchanged.
    pub fn pass() -> Self {
        Outcome {
            verdict: Verdict::Continue,
            modifications: Vec::new(),
        }
    }
}

/// The error a handler returns when it cannot decide; the milter layer answers 4xx.
pub type HandlerError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// A final verdict that is not known yet. Dropping it cancels the wait (the milter layer does
/// that on timeout, answering 4xx).
pub type PendingVerdict =
    Pin<Box<dyn Future<Output = Result<Settled, HandlerError>> + Send + 'static>>;

/// Work a handler leaves for after its final answer: nothing the MTA must wait for (markgate's
/// per-message log line, and freeing the message's state).
pub type AfterAnswer = Box<dyn FnOnce() + Send + 'static>;

/// What a [`PendingVerdict`] resolves to.
pub struct Settled {
    /// The final answer.
    pub verdict: Verdict,
    /// Run on the connection's task once the answer has been written to the MTA (or the write
    /// failed), under `catch_unwind`. The MTA has its answer by then: at one connection that
    /// turns the work into time the MTA spends on its side anyway. Dropped unrun when the
    /// milter layer cannot send this verdict (it is invalid, or encoding the 451 in its place
    /// fails): the MTA then hears 451, not the verdict the work describes.
    pub then: Option<AfterAnswer>,
}

impl From<Verdict> for Settled {
    fn from(verdict: Verdict) -> Self {
        Settled {
            verdict,
            then: None,
        }
    }
}

impl std::fmt::Debug for Settled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Settled")
            .field("verdict", &self.verdict)
            .field("then", &self.then.as_ref().map(|_| ".."))
            .finish()
    }
}

/// The final verdict of a [`Staged`] answer.
pub enum LaterVerdict {
    /// Known now: sent together with the modifications, as an [`Outcome`] would be.
    Now(Verdict),
    /// Known later: the modifications go out first, then whatever this resolves to. An error
    /// (or a panic, or the end-of-message timeout) answers 4xx, which makes the MTA drop the
    /// modifications already sent.
    Later(PendingVerdict),
}

impl std::fmt::Debug for LaterVerdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LaterVerdict::Now(v) => f.debug_tuple("Now").field(v).finish(),
            LaterVerdict::Later(_) => f.write_str("Later(..)"),
        }
    }
}

/// The handler's answer at end-of-message when the verdict may come after the modifications.
#[derive(Debug)]
pub struct Staged {
    /// Sent as soon as the answer is returned (in order).
    pub modifications: Vec<Modification>,
    /// Sent after them.
    pub verdict: LaterVerdict,
}

impl From<Outcome> for Staged {
    fn from(o: Outcome) -> Self {
        Staged {
            modifications: o.modifications,
            verdict: LaterVerdict::Now(o.verdict),
        }
    }
}

/// What markgate plugs into the protocol engine. One instance is shared by every connection.
pub trait Handler: Send + Sync + 'static {
    /// Where one message's data goes.
    type Sink: MessageSink;

    /// Start a message (at MAIL). Failing here tempfails the message.
    fn begin_message(&self, conn: &ConnectionFacts) -> Result<Self::Sink, HandlerError>;

    /// Decide a complete message (at end-of-message). Errors, panics and timeouts in here
    /// become a 4xx tempfail for this message only.
    fn end_of_message(
        &self,
        conn: &ConnectionFacts,
        message: Self::Sink,
    ) -> impl Future<Output = Result<Outcome, HandlerError>> + Send;

    /// What the milter layer calls at end-of-message: like [`Handler::end_of_message`] (which
    /// the default runs), but the verdict may come after the modifications (see [`Staged`]).
    /// The end-of-message timeout covers both this call and the wait for the verdict.
    fn end_of_message_staged(
        &self,
        conn: &ConnectionFacts,
        message: Self::Sink,
    ) -> impl Future<Output = Result<Staged, HandlerError>> + Send {
        async move { self.end_of_message(conn, message).await.map(Staged::from) }
    }
}
