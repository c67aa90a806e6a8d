//! One milter connection: read frames, step the [`Session`], call the [`Handler`], write
//! replies. The only place where protocol meets I/O and time.
//!
//! Failure rule (issue 2, ARCHITECTURE "Errors and what the MTA hears"):
//! - a handler error, a sink I/O error, a panic in either, an end-of-message timeout, or an
//!   edit the MTA did not grant answers *that message* with `451 4.3.0` and the connection
//!   goes on with the next message (`error` log: we could not serve it);
//! - a malformed or oversized frame, an unknown command, a command illegal in the current
//!   state, a read timeout or an I/O error closes *this connection* (`warn` log with the peer
//!   and the reason); Postfix then applies `milter_default_action`.
//!
//! Sink calls are synchronous and run under `catch_unwind`; `end_of_message` is polled on the
//! connection's own task under `catch_unwind` too (no spawn, no thread hand-off), so a panic
//! there is contained, and PROGRESS is sent while it runs long. Each
//! end-of-message answer (all modifications + the final reply) is written in one flush, except
//! when the handler's verdict is still pending ([`LaterVerdict::Later`]) and the modifications
//! are large (`SEND_AHEAD_MIN`): then they are written at once, so the MTA applies them while we
//! wait, and the verdict follows in a second write. That wait is under the same rule: error, panic or the end-of-message timeout
//! (counted from the end-of-message command) answers 451, and PROGRESS is sent meanwhile.
//! What the handler leaves for after its verdict ([`Settled::then`](super::handler::Settled))
//! runs once that verdict is written, on the same task: the MTA never waits for it.
//!
//! Every wait is bounded by one of the connection's two [`Deadline`] timers (one for reads and
//! writes, one for end-of-message), kept armed from one wait to the next so that a wait that
//! ends in time costs no timer work ([`super::timer`]).

use std::future::Future;
use std::io;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::{debug, error, trace, warn};

use super::codec::{Decoded, FrameDecoder};
use super::command::Command;
use super::flags::Wants;
use super::handler::{
    Handler, LaterVerdict, MessageSink, Modification, NewBody, PendingVerdict, SmtpReply, Staged,
    Verdict,
};
use super::reply::{self, MAX_BODY_CHUNK, Reply};
use super::session::{Session, Step};
use super::timer::{self, Deadline};

/// Per-connection settings (derived from `ServerConfig`).
#[derive(Debug, Clone)]
pub struct ConnConfig {
    /// Largest packet accepted from the MTA.
    pub max_frame_size: usize,
    /// Longest wait for the MTA's next packet (and for a write to complete).
    pub read_timeout: Duration,
    /// Longest wait for `Handler::end_of_message`.
    pub eom_timeout: Duration,
    /// How often PROGRESS is sent while `end_of_message` runs; zero disables it.
    pub progress_interval: Duration,
    /// What we ask for in negotiation.
    pub wants: Wants,
}

/// The 451 text the MTA hears for any internal failure; details go to the log only, so
/// nothing about our internals reaches the sender.
const TEMPFAIL_REASON: &str = "message could not be checked";

/// Serve one MTA connection until it quits, misbehaves, times out, or (between messages)
/// `shutdown` turns true.
pub async fn serve_connection<S, H>(
    stream: S,
    peer: String,
    handler: Arc<H>,
    config: Arc<ConnConfig>,
    shutdown: watch::Receiver<bool>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send,
    H: Handler,
{
    let mut conn = Conn {
        stream,
        peer,
        handler,
        session: Session::new(config.wants.clone()),
        decoder: FrameDecoder::new(config.max_frame_size),
        config,
        shutdown,
        shutdown_watch: true,
        sink: None,
        doomed: None,
        inbuf: BytesMut::with_capacity(8192),
        out: BytesMut::with_capacity(1024),
        steps: Vec::with_capacity(4),
        io_timer: Deadline::new(),
        eom_timer: Deadline::new(),
    };
    match conn.run().await {
        Ok(()) => debug!(peer = %conn.peer, "milter connection closed"),
        Err(reason) => warn!(peer = %conn.peer, %reason, "closing milter connection"),
    }
    conn.drop_sink();
}

struct Conn<S, H: Handler> {
    stream: S,
    peer: String,
    handler: Arc<H>,
    session: Session,
    decoder: FrameDecoder,
    config: Arc<ConnConfig>,
    shutdown: watch::Receiver<bool>,
    /// False once the shutdown sender is gone.
    shutdown_watch: bool,
    /// The current message's sink, between MAIL and end-of-message.
    sink: Option<H::Sink>,
    /// Why the current message can only be answered with 451 (set on the first failure).
    doomed: Option<String>,
    inbuf: BytesMut,
    out: BytesMut,
    /// The steps of the command being processed (kept to reuse its allocation).
    steps: Vec<Step>,
    /// Bounds each read and write (the read timeout).
    io_timer: Deadline,
    /// Bounds each end-of-message wait and paces its PROGRESS packets.
    eom_timer: Deadline,
}

/// Why a connection was closed for cause.
type CloseReason = String;

impl<S, H> Conn<S, H>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
    H: Handler,
{
    async fn run(&mut self) -> Result<(), CloseReason> {
        // When the first bytes of the packet now being read arrived. The read timeout bounds a
        // whole packet, not each read: a peer trickling one byte a second would otherwise hold
        // the connection (and its buffers) forever.
        let mut packet_started: Option<Instant> = None;
        loop {
            match self.decoder.decode(&mut self.inbuf) {
                Err(e) => return Err(format!("bad packet: {e}")),
                Ok(Decoded::Frame(frame)) => {
                    packet_started = None;
                    let cmd =
                        Command::parse(&frame).map_err(|e| format!("bad command packet: {e}"))?;
                    trace!(peer = %self.peer, command = cmd.name(), "received");
                    if let Command::Macro { stage, pairs } = &cmd {
                        // What the MTA sends per stage, for comparing MTAs (README, Sendmail).
                        trace!(peer = %self.peer, stage = %char::from(*stage),
                            macros = %super::macros::Listed(pairs), "macros");
                    }
                    if self.process(cmd).await? {
                        return Ok(());
                    }
                    continue;
                }
                Ok(Decoded::Incomplete) => {}
            }
            self.flush().await?;
            let idle = !self.session.state().in_message();
            if idle && *self.shutdown.borrow() {
                debug!(peer = %self.peer, "shutting down: closing idle milter connection");
                return Ok(());
            }
            if self.inbuf.capacity() - self.inbuf.len() < 4096 {
                self.inbuf.reserve(8192);
            }
            let read_timeout = self.config.read_timeout;
            let waiting_since = if self.inbuf.is_empty() {
                Instant::now()
            } else {
                *packet_started.get_or_insert_with(Instant::now)
            };
            let deadline = timer::after(waiting_since, read_timeout);
            let mut shutdown = self.shutdown.clone();
            let n = tokio::select! {
                biased;
                r = self.stream.read_buf(&mut self.inbuf) => match r {
                    Err(e) => return Err(format!("read error: {e}")),
                    Ok(n) => n,
                },
                () = self.io_timer.until(deadline) => {
                    return Err(if self.inbuf.is_empty() {
                        format!("no packet from the MTA for {read_timeout:?} (read timeout)")
                    } else {
                        format!(
                            "a packet from the MTA took longer than {read_timeout:?} to arrive \
                             (read timeout)"
                        )
                    });
                }
                changed = shutdown.changed(), if idle && self.shutdown_watch => {
                    // A dropped sender can never signal shutdown: stop watching it.
                    if changed.is_err() {
                        self.shutdown_watch = false;
                    }
                    continue;
                }
            };
            if n == 0 {
                if self.session.state().in_message() {
                    return Err("MTA closed the connection in the middle of a message".into());
                }
                if !self.inbuf.is_empty() {
                    return Err("MTA closed the connection in the middle of a packet".into());
                }
                return Ok(());
            }
        }
    }

    /// Handle one command. `Ok(true)` means the session ended normally (QUIT).
    async fn process(&mut self, cmd: Command) -> Result<bool, CloseReason> {
        let mut steps = std::mem::take(&mut self.steps);
        steps.clear();
        self.session
            .handle_into(cmd, &mut steps)
            .map_err(|e| format!("protocol violation: {e}"))?;
        let ended = self.run_steps(&mut steps).await;
        self.steps = steps;
        ended
    }

    /// Carry out the steps of one command, emptying `steps`.
    async fn run_steps(&mut self, steps: &mut Vec<Step>) -> Result<bool, CloseReason> {
        for step in steps.drain(..) {
            match step {
                Step::Send(r) => {
                    if let Reply::OptNeg {
                        version,
                        actions,
                        protocol,
                        ..
                    } = &r
                    {
                        debug!(peer = %self.peer, version, actions = %super::flags::Actions(*actions),
                            protocol = %super::flags::Protocol(*protocol), "negotiated");
                    }
                    r.encode(&mut self.out);
                }
                Step::AbortMessage => self.drop_sink(),
                Step::BeginMessage => {
                    self.drop_sink();
                    let handler = &self.handler;
                    let facts = self.session.facts();
                    match catch_unwind(AssertUnwindSafe(|| handler.begin_message(facts))) {
                        Ok(Ok(sink)) => self.sink = Some(sink),
                        Ok(Err(e)) => self.doom(format!("begin_message failed: {e}")),
                        Err(_) => self.doom("begin_message panicked".into()),
                    }
                }
                Step::MailFrom { sender, args } => {
                    let args = to_vecs(&args);
                    self.sink_call("mail_from", |s| s.mail_from(&sender, &args));
                }
                Step::Recipient { recipient, args } => {
                    let args = to_vecs(&args);
                    let rcpt_macros = self.session.macro_table().stage_macros(b'R');
                    self.sink_call("rcpt_to", |s| {
                        s.rcpt_to(&recipient, &args)?;
                        s.rcpt_macros(&rcpt_macros)
                    });
                }
                Step::Header { name, value } => {
                    self.sink_call("header", |s| s.header(&name, &value));
                }
                Step::BodyChunk(chunk) => self.sink_call("body_chunk", |s| s.body_chunk(&chunk)),
                Step::EndOfMessage => self.end_of_message().await?,
                Step::Close => {
                    self.flush().await?;
                    return Ok(true);
                }
            }
        }
        Ok(false)
    }

    /// Call the sink unless the message already failed; a failure dooms the message.
    fn sink_call(&mut self, what: &str, f: impl FnOnce(&mut H::Sink) -> io::Result<()>) {
        if self.doomed.is_some() {
            return;
        }
        let Some(sink) = self.sink.as_mut() else {
            return;
        };
        match catch_unwind(AssertUnwindSafe(|| f(sink))) {
            Ok(Ok(())) => {}
            Ok(Err(e)) => self.doom(format!("message sink {what} failed: {e}")),
            Err(_) => self.doom(format!("message sink {what} panicked")),
        }
    }

    fn doom(&mut self, reason: String) {
        error!(peer = %self.peer, %reason, "message will be answered with 451 4.3.0");
        self.doomed = Some(reason);
        self.drop_sink_only();
    }

    fn drop_sink(&mut self) {
        self.doomed = None;
        self.drop_sink_only();
    }

    fn drop_sink_only(&mut self) {
        if let Some(sink) = self.sink.take()
            && catch_unwind(AssertUnwindSafe(move || drop(sink))).is_err()
        {
            error!(peer = %self.peer, "message sink panicked while being dropped");
        }
    }

    async fn end_of_message(&mut self) -> Result<(), CloseReason> {
        let started = Instant::now();
        let decided = self.decide(started).await?;
        let (replies, body, later) = match decided {
            Ok(Answer {
                replies,
                body_file,
                later: Some(later),
            }) => match self.session.modifications_ahead(replies) {
                Ok(mods) => (mods, body_file, Some(later)),
                Err(e) => {
                    error!(peer = %self.peer, reason = %e,
                        "handler's modifications cannot be sent; answering 451 4.3.0");
                    (self.tempfail()?, None, None)
                }
            },
            Ok(answer) => match self.session.answer_eom(answer.replies) {
                Ok(r) => (r, answer.body_file, None),
                Err(e) => {
                    error!(peer = %self.peer, reason = %e,
                        "handler's answer cannot be sent; answering 451 4.3.0");
                    (self.tempfail()?, None, None)
                }
            },
            Err(reason) => {
                error!(peer = %self.peer, %reason, "end of message failed; answering 451 4.3.0");
                (self.tempfail()?, None, None)
            }
        };
        self.doomed = None;
        let packets = replies.len();
        let streamed = body.is_some();
        let mods_from = self.out.len();
        if let Err(reason) = self.encode_replies(replies, body).await? {
            // The MTA discards the modifications already sent when the final answer is a
            // tempfail: the message is retried, never delivered half-replaced.
            error!(peer = %self.peer, %reason,
                "reading the new body failed part-way; answering 451 4.3.0");
            if later.is_some() {
                self.encode_tempfail()?;
            } else {
                reply::tempfail_text(TEMPFAIL_REASON).encode(&mut self.out);
            }
            return self.flush().await;
        }
        let Some(later) = later else {
            debug!(peer = %self.peer, packets, "end-of-message answered");
            return self.flush().await;
        };
        // Small modifications are held back in `out` from `mods_from` on.
        let held = (!streamed && self.out.len() - mods_from < SEND_AHEAD_MIN).then_some(mods_from);
        self.answer_later(later, started, packets, held).await
    }

    /// The modifications are encoded in `out`. Unless they are `held` (small: they start at
    /// that offset of `out`) send them now, so the MTA applies them while the handler's verdict
    /// is pending; then wait for the verdict and send it. The wait is bounded by what is left of
    /// the end-of-message timeout and sends PROGRESS like the handler call (a PROGRESS write
    /// also sends modifications still held back). A failed verdict drops held modifications.
    async fn answer_later(
        &mut self,
        later: PendingVerdict,
        started: Instant,
        packets: usize,
        held: Option<usize>,
    ) -> Result<(), CloseReason> {
        let mut task = CatchPanic(later);
        // Often the verdict is already there (no durable write pending): then the whole answer
        // still goes out in one write.
        let ready = {
            let waker = std::task::Waker::noop();
            let mut cx = Context::from_waker(waker);
            Pin::new(&mut task).poll(&mut cx)
        };
        let joined = match ready {
            Poll::Ready(r) => Ok(r),
            Poll::Pending => {
                if held.is_none() {
                    debug!(peer = %self.peer, packets, bytes = self.out.len(),
                        "modifications sent ahead of the pending verdict");
                    self.flush().await?;
                }
                let Conn {
                    stream,
                    out,
                    session,
                    config,
                    peer,
                    io_timer,
                    eom_timer,
                    ..
                } = self;
                let io = Io {
                    stream,
                    out,
                    timer: io_timer,
                };
                wait_with_progress(io, eom_timer, session, config, peer, task, started).await?
            }
        };
        let mut then = None;
        let verdict = match joined {
            Ok(Ok(Ok(settled))) => {
                then = settled.then;
                verdict_reply(settled.verdict)
            }
            Ok(Ok(Err(e))) => Err(format!("handler failed: {e}")),
            Ok(Err(Panicked)) => Err("handler panicked while its verdict was pending".into()),
            Err(timed_out) => Err(timed_out),
        };
        let final_reply = verdict.and_then(|r| {
            self.session
                .answer_eom(vec![r])
                .map_err(|e| format!("handler's verdict cannot be sent: {e}"))
        });
        match final_reply {
            Ok(r) => {
                let refused = r
                    .iter()
                    .any(|r| matches!(r, Reply::Tempfail | Reply::Reject | Reply::ReplyCode(_)));
                if refused {
                    // The MTA would drop them: do not send modifications still held back.
                    self.drop_held(held);
                }
                for r in r {
                    r.encode(&mut self.out);
                }
                debug!(peer = %self.peer, packets = packets + 1, "end-of-message answered");
            }
            Err(reason) => {
                // Postfix and Sendmail drop the modifications already sent on a tempfail;
                // those still held back are not sent at all (a PROGRESS write emptied `out`
                // if they went out meanwhile).
                error!(peer = %self.peer, %reason,
                    "verdict after the modifications failed; answering 451 4.3.0");
                // Not the handler's answer that goes out: its tail is not run.
                then = None;
                self.drop_held(held);
                self.encode_tempfail()?;
            }
        }
        let sent = self.flush().await;
        if let Some(then) = then
            && catch_unwind(AssertUnwindSafe(then)).is_err()
        {
            error!(peer = %self.peer, "the handler's work after its answer panicked");
        }
        sent
    }

    /// Forget modifications held back in `out` from offset `held` on (nothing when a PROGRESS
    /// write has sent them meanwhile, which emptied `out`).
    fn drop_held(&mut self, held: Option<usize>) {
        if let Some(from) = held
            && self.out.len() >= from
        {
            self.out.truncate(from);
        }
    }

    fn encode_tempfail(&mut self) -> Result<(), CloseReason> {
        for r in self.tempfail()? {
            r.encode(&mut self.out);
        }
        Ok(())
    }

    /// Encode `replies` into `out`, streaming a file body in its place. The inner error is a
    /// failure to read that body (nothing after it was encoded).
    async fn encode_replies(
        &mut self,
        replies: Vec<Reply>,
        mut body: Option<(usize, std::fs::File)>,
    ) -> Result<Result<(), String>, CloseReason> {
        for (i, r) in replies.iter().enumerate() {
            if body.as_ref().is_some_and(|(at, _)| *at == i)
                && let Some((_, file)) = body.take()
            {
                if let Err(reason) = self.stream_body(file).await? {
                    return Ok(Err(reason));
                }
                continue;
            }
            r.encode(&mut self.out);
        }
        Ok(Ok(()))
    }

    /// Send a file body as REPLBODY packets, reading and writing one chunk at a time so a
    /// large replacement never sits in memory. The inner error is a read failure.
    async fn stream_body(
        &mut self,
        file: std::fs::File,
    ) -> Result<Result<(), String>, CloseReason> {
        let mut f = tokio::fs::File::from_std(file);
        let mut first = true;
        loop {
            let chunk = match read_chunk(&mut f).await {
                Ok(c) => c,
                Err(e) => return Ok(Err(format!("new body: {e}"))),
            };
            let last = chunk.len() < MAX_BODY_CHUNK;
            // An empty body is one empty REPLBODY; otherwise no empty trailing packet.
            if !chunk.is_empty() || first {
                Reply::ReplaceBody(chunk).encode(&mut self.out);
            }
            first = false;
            if self.out.len() >= STREAM_FLUSH_AT {
                self.flush().await?;
            }
            if last {
                return Ok(Ok(()));
            }
        }
    }

    fn tempfail(&mut self) -> Result<Vec<Reply>, CloseReason> {
        self.session
            .tempfail_eom(TEMPFAIL_REASON)
            .map_err(|e| format!("internal: cannot answer end-of-message: {e}"))
    }

    /// Run the handler for the current message. The outer error closes the connection (a
    /// write failed while sending PROGRESS); the inner one answers 451.
    async fn decide(&mut self, started: Instant) -> Result<Result<Answer, String>, CloseReason> {
        if let Some(reason) = self.doomed.take() {
            return Ok(Err(reason));
        }
        let Some(mut sink) = self.sink.take() else {
            return Ok(Err("end of message without a message".into()));
        };
        let macros = self.session.macros();
        match catch_unwind(AssertUnwindSafe(|| sink.macros(macros))) {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Ok(Err(format!("message sink macros failed: {e}"))),
            Err(_) => return Ok(Err("message sink macros panicked".into())),
        }
        // Polled right here on the connection's task, not spawned: a spawned task costs an
        // allocation, a hand-off to whichever worker picks it up and a wake-up to join it, and
        // the connection has nothing else to do meanwhile. `CatchPanic` keeps the failure rule
        // (a panic answers 451); the box keeps this future small when it is moved.
        let Conn {
            stream,
            out,
            session,
            config,
            peer,
            handler,
            io_timer,
            eom_timer,
            ..
        } = self;
        let handler = &**handler;
        let facts = session.facts();
        let task = CatchPanic(Box::pin(async move {
            let staged = handler
                .end_of_message_staged(facts, sink)
                .await
                .map_err(|e| format!("handler failed: {e}"))?;
            staged_to_replies(staged).await
        }));
        let io = Io {
            stream,
            out,
            timer: io_timer,
        };
        Ok(
            match wait_with_progress(io, eom_timer, session, config, peer, task, started).await? {
                Ok(Ok(r)) => r,
                Ok(Err(Panicked)) => Err("handler panicked in end_of_message".into()),
                Err(timed_out) => Err(timed_out),
            },
        )
    }

    async fn flush(&mut self) -> Result<(), CloseReason> {
        let mut io = Io {
            stream: &mut self.stream,
            out: &mut self.out,
            timer: &mut self.io_timer,
        };
        flush(&mut io, self.config.read_timeout).await
    }
}

/// What [`wait_with_progress`] ends with: the outer error closes the connection (a PROGRESS
/// write failed); the inner one is the timeout.
type WaitResult<T> = Result<Result<Result<T, Panicked>, String>, CloseReason>;

/// The connection's writing side: the stream, what is queued for it, and the timer that
/// bounds a write. Borrowed apart from the rest of [`Conn`] while a handler future borrows the
/// session.
struct Io<'a, S> {
    stream: &'a mut S,
    out: &'a mut BytesMut,
    timer: &'a mut Deadline,
}

/// Poll `task` until it ends or the end-of-message timeout (counted from `started`) runs out,
/// sending PROGRESS every `progress_interval` meanwhile. On timeout the task is dropped, which
/// cancels it. A free function over the connection's parts, so that `task` may borrow the
/// session (the connection facts) while PROGRESS is written. `timer` is the connection's
/// end-of-message timer: a verdict that comes in time leaves it armed for the next message.
async fn wait_with_progress<S: AsyncWrite + Unpin, F: Future + ?Sized>(
    mut io: Io<'_, S>,
    timer: &mut Deadline,
    session: &Session,
    config: &ConnConfig,
    peer: &str,
    mut task: CatchPanic<F>,
    started: Instant,
) -> WaitResult<F::Output> {
    let eom_timeout = config.eom_timeout;
    let every = config.progress_interval;
    let deadline = timer::after(started, eom_timeout);
    let mut progress_at = (!every.is_zero()).then(|| timer::after(started, every));
    loop {
        // The end-of-message deadline wins over a PROGRESS due at the same time.
        let wake = progress_at.map_or(deadline, |p| p.min(deadline));
        tokio::select! {
            biased;
            joined = &mut task => return Ok(Ok(joined)),
            () = timer.until(wake) => {
                if wake >= deadline {
                    return Ok(Err(format!("end_of_message took longer than {eom_timeout:?}")));
                }
                progress_at = Some(timer::after(wake, every));
                if let Some(p) = session.progress() {
                    trace!(peer = %peer, "sending progress");
                    p.encode(io.out);
                    flush(&mut io, config.read_timeout).await?;
                }
            }
        }
    }
}

/// Write `out` to the MTA and clear it. One `write` for everything queued: the replies to
/// the commands just read, or a whole end-of-message answer.
async fn flush<S: AsyncWrite + Unpin>(io: &mut Io<'_, S>, t: Duration) -> Result<(), CloseReason> {
    let Io { stream, out, timer } = io;
    if out.is_empty() {
        return Ok(());
    }
    match timer.bounded(t, stream.write_all(out)).await {
        None => return Err(format!("write to the MTA blocked for {t:?}")),
        Some(Err(e)) => return Err(format!("write error: {e}")),
        Some(Ok(())) => {}
    }
    out.clear();
    match timer.bounded(t, stream.flush()).await {
        Some(Ok(())) => Ok(()),
        Some(Err(e)) => Err(format!("write error: {e}")),
        None => Err(format!("write to the MTA blocked for {t:?}")),
    }
}

/// A panic while polling the wrapped future.
#[derive(Debug)]
struct Panicked;

/// Polls a boxed future under `catch_unwind`: a panic inside it ends it with [`Panicked`]
/// instead of unwinding through the connection. It is not polled again after that (the caller
/// takes the `Ready` and drops it).
struct CatchPanic<F: ?Sized>(Pin<Box<F>>);

impl<F: Future + ?Sized> Future for CatchPanic<F> {
    type Output = Result<F::Output, Panicked>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match catch_unwind(AssertUnwindSafe(|| self.0.as_mut().poll(cx))) {
            Ok(Poll::Ready(v)) => Poll::Ready(Ok(v)),
            Ok(Poll::Pending) => Poll::Pending,
            Err(_) => Poll::Ready(Err(Panicked)),
        }
    }
}

fn to_vecs(args: &[Bytes]) -> Vec<Vec<u8>> {
    args.iter().map(|a| a.to_vec()).collect()
}

/// The handler's answer as replies. A file body stands in the list as one empty REPLBODY
/// (so the session checks the order and the grant) and is streamed in its place when sent.
/// With `later`, `replies` are the modifications only and the verdict is still to come.
struct Answer {
    replies: Vec<Reply>,
    body_file: Option<(usize, std::fs::File)>,
    later: Option<PendingVerdict>,
}

/// Modifications of at least this many bytes (or a body streamed from a file) are sent ahead
/// of a pending verdict; smaller ones wait for it and leave in the same write. Sending ahead
/// lets the MTA apply the edits while the verdict waits (markgate: for the audit flush), but it
/// costs a second write here and a second wake-up of the MTA: measured with 2 KB messages at one
/// connection (BENCHMARKS.md, 2026-12-06), sending a few hundred bytes of edits ahead added
/// ~1.7 context switches per message and raised the p50, while Postfix applies such edits in
/// microseconds. A replacement body of more than one REPLBODY packet takes the MTA long enough
/// to overlap with the flush.
const SEND_AHEAD_MIN: usize = reply::MAX_BODY_CHUNK;

/// Flush the output buffer while streaming a body once it holds this much.
const STREAM_FLUSH_AT: usize = 256 * 1024;

/// Turn the handler's outcome into replies: modifications in order, then the verdict.
#[cfg(test)]
async fn outcome_to_replies(outcome: super::handler::Outcome) -> Result<Answer, String> {
    staged_to_replies(outcome.into()).await
}

/// Turn the handler's answer into replies: modifications in order, then the verdict when it
/// is known.
async fn staged_to_replies(outcome: Staged) -> Result<Answer, String> {
    let mut out = Vec::with_capacity(outcome.modifications.len() + 1);
    let mut body_file = None;
    for m in outcome.modifications {
        match m {
            Modification::AddHeader { name, value } => out.push(Reply::AddHeader {
                name: name.into(),
                value: value.into(),
            }),
            Modification::InsertHeader { index, name, value } => out.push(Reply::InsertHeader {
                index,
                name: name.into(),
                value: value.into(),
            }),
            Modification::ChangeHeader { index, name, value } => out.push(Reply::ChangeHeader {
                index,
                name: name.into(),
                value: value.into(),
            }),
            Modification::ReplaceBody(NewBody::Bytes(b)) => out.extend(reply::replbody_chunks(&b)),
            Modification::ReplaceBody(NewBody::File(f)) => {
                if body_file.is_some() {
                    return Err("two file bodies in one answer".into());
                }
                body_file = Some((out.len(), f));
                out.push(Reply::ReplaceBody(Bytes::new()));
            }
            Modification::AddRecipient { recipient } => out.push(Reply::AddRcpt(recipient.into())),
            Modification::AddRecipientWithArgs { recipient, args } => out.push(Reply::AddRcptPar {
                recipient: recipient.into(),
                args: args.into(),
            }),
            Modification::DeleteRecipient { recipient } => {
                out.push(Reply::DelRcpt(recipient.into()))
            }
            Modification::ChangeSender { sender, args } => out.push(Reply::ChangeFrom {
                sender: sender.into(),
                args: args.map(Bytes::from),
            }),
            Modification::Quarantine { reason } => out.push(Reply::Quarantine(reason.into())),
        }
    }
    let later = match outcome.verdict {
        LaterVerdict::Now(v) => {
            out.push(verdict_reply(v)?);
            None
        }
        LaterVerdict::Later(p) => Some(p),
    };
    Ok(Answer {
        replies: out,
        body_file,
        later,
    })
}

fn verdict_reply(v: Verdict) -> Result<Reply, String> {
    let text = |r: SmtpReply, class: u16| -> Result<Reply, String> {
        if r.code / 100 != class {
            return Err(format!(
                "reply code {} does not fit the verdict (expected {class}xx)",
                r.code
            ));
        }
        reply::reply_text(r.code, r.enhanced.as_deref(), &r.lines)
            .map(Reply::ReplyCode)
            .map_err(|e| format!("invalid reply text: {e}"))
    };
    match v {
        Verdict::Continue => Ok(Reply::Continue),
        Verdict::Discard => Ok(Reply::Discard),
        Verdict::Reject(None) => Ok(Reply::Reject),
        Verdict::Tempfail(None) => Ok(Reply::Tempfail),
        Verdict::Reject(Some(r)) => text(r, 5),
        Verdict::Tempfail(Some(r)) => text(r, 4),
    }
}

/// The next REPLBODY chunk of a file: [`MAX_BODY_CHUNK`] bytes, fewer only at the end.
async fn read_chunk(f: &mut tokio::fs::File) -> io::Result<Bytes> {
    let mut buf = vec![0u8; MAX_BODY_CHUNK];
    let mut filled = 0;
    while filled < buf.len() {
        match f.read(&mut buf[filled..]).await {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    buf.truncate(filled);
    Ok(Bytes::from(buf))
}

#[cfg(test)]
mod tests {
    use super::super::handler::Outcome;
    use super::*;

    #[test]
    fn verdicts_map_to_replies() {
        assert_eq!(verdict_reply(Verdict::Continue), Ok(Reply::Continue));
        assert_eq!(verdict_reply(Verdict::Reject(None)), Ok(Reply::Reject));
        let r = SmtpReply {
            code: 550,
            enhanced: Some("5.7.1".into()),
            lines: vec!["no".into()],
        };
        assert_eq!(
            verdict_reply(Verdict::Reject(Some(r.clone()))),
            Ok(Reply::ReplyCode(Bytes::from_static(b"550 5.7.1 no")))
        );
        assert!(verdict_reply(Verdict::Tempfail(Some(r))).is_err());
    }

    #[tokio::test]
    async fn file_bodies_are_read_in_full_chunks() {
        use std::io::{Seek, Write};
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(&vec![b'z'; MAX_BODY_CHUNK + 5]).unwrap();
        f.rewind().unwrap();
        let mut f = tokio::fs::File::from_std(f);
        assert_eq!(read_chunk(&mut f).await.unwrap().len(), MAX_BODY_CHUNK);
        assert_eq!(read_chunk(&mut f).await.unwrap().len(), 5);
        assert_eq!(read_chunk(&mut f).await.unwrap().len(), 0);
        let mut f = tokio::fs::File::from_std(tempfile::tempfile().unwrap());
        assert!(read_chunk(&mut f).await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn a_file_body_stands_in_the_answer_as_one_empty_replbody() {
        let f = tempfile::tempfile().unwrap();
        let answer = outcome_to_replies(Outcome {
            verdict: Verdict::Continue,
            modifications: vec![
                Modification::AddHeader {
                    name: "X-A".into(),
                    value: b"1".to_vec(),
                },
                Modification::ReplaceBody(NewBody::File(f)),
            ],
        })
        .await
        .unwrap();
        assert_eq!(answer.replies.len(), 3);
        assert_eq!(answer.replies[1], Reply::ReplaceBody(Bytes::new()));
        assert_eq!(answer.body_file.as_ref().map(|(i, _)| *i), Some(1));
    }
}
