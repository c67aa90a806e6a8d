//! The audit writer: one owner of the audit file, group commit, rotation, self-healing.
//!
//! Producers (the filter, the daemon, the alert task) call [`AuditHandle::record`], which
//! serializes the event on the producer's own thread ([`EncodedEvent`]: everything but the
//! chain fields) and sends it over a bounded channel with a oneshot for the answer and waits
//! for it. One writer
//! runs on its own OS thread (`markgate-audit`) so `write`/`fsync` never stall the tokio workers
//! that serve milter connections; it takes everything queued, stamps `seq`, `prev` and `time`
//! (prepending them to the producer's bytes and hashing the line),
//! writes the lines in one `write`, calls `fsync` once (`sync = "batch"`), and only then answers
//! every producer in the batch (on a multi-thread runtime through a doorbell and a dispatcher
//! task, so the answers wake the producers' worker once instead of each one across threads; see
//! `Mailbox`). The filter sends its end-of-message answer after that
//! acknowledgement, so an accepted message always has a durable record, while many messages
//! share one `fsync`.
//!
//! A lone record skips the thread: a producer whose record is the only one on its way, and
//! that finds the writer idle (nothing queued, its lock free), writes and syncs its own record under the same lock and through the same commit
//! as a batch ([`Writer::try_inline`]), which spares a message the two thread hand-offs that
//! cost it more than the `fsync`. Under load the lock is busy and records queue as above.
//! [`AuditHandle::submit`] therefore only encodes; the record is handed over when its
//! producer waits for it (or drops it: it is written all the same, unless the writer has
//! stopped, and then the loss is logged and counted in `failed_records`).
//!
//! Failure rule: when a write or `fsync` fails (disk full, permissions, read-only file system)
//! the bytes of that batch are cut off again (`ftruncate` back to the last committed size), the
//! chain state rolls back, and every producer in the batch gets [`AuditError::Sink`] so the
//! message is answered 4xx and retried by the MTA. One `error` log marks the start of the
//! outage; every later batch reopens the file and tries again, and the first batch that goes
//! through is preceded by an `audit_sink_trouble` / `audit_sink_recovered` pair. With
//! `fail_open = true` the producers get `Ok` with `seq: None` instead (and an `error` log says
//! mail is passing unaudited).
//!
//! With `preallocate` the writer keeps zero-filled, synced space after the data and writes
//! each batch over it (positioned writes instead of `O_APPEND`), so a batch's `fdatasync`
//! commits no size change; the zeros are cut whenever the writer leaves a file, and at start
//! (before recovery) when a crash left them.
//!
//! On start the chain state (last `seq` and line hash) is recovered from the end of the file
//! (or `FILE.1` when the file is missing or empty, as after logrotate). An incomplete last
//! line (a crash mid-write) is kept, terminated with `\n`, and followed by an
//! `audit_chain_resumed` record that continues the chain from the last complete record; see
//! `docs/audit-format.md`. This module must not decide anything about mail.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{DirBuilderExt, FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

use tokio::sync::{mpsc, oneshot, watch};

use super::config::{AuditConfig, SyncMode};
use super::event::{AuditEvent, ChainResumed, EventKind, Severity, SinkRecovered, SinkTrouble};
use super::record::{EncodedEvent, GENESIS_PREV, Record, line_hash, now_rfc3339};
use super::syslog::{LineMeta, SyslogForwarder, SyslogStats};

/// Why a record was not made durable, or the writer could not start.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuditError {
    /// The audit file could not be written or synced; the message must be tempfailed.
    #[error("audit file {path}: {error}")]
    Sink {
        /// The audit file.
        path: String,
        /// The operating-system error.
        error: String,
    },
    /// The file could not be opened or its chain state read at start-up.
    #[error("cannot open audit file {path}: {error}")]
    Open {
        /// The audit file.
        path: String,
        /// What went wrong.
        error: String,
    },
    /// The configuration is invalid.
    #[error("{0}")]
    Config(String),
    /// The record could not be serialized (a bug; the message is tempfailed).
    #[error("audit record could not be encoded: {0}")]
    Encode(String),
    /// The writer has stopped (shutdown, or it is gone).
    #[error("the audit writer has stopped")]
    Closed,
}

/// The writer's answer to one record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ack {
    /// The record's `seq`; `None` when `fail_open` acknowledged a record that was not written.
    pub seq: Option<u64>,
    /// The hash of the written line (the next record's `prev`).
    pub hash: Option<String>,
    /// Whether the record was `fsync`ed before this answer (`sync = "batch"`/`"always"`).
    pub durable: bool,
}

/// Whether the sink works, for metrics, the health endpoint and the alert mapping.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SinkHealth {
    /// Records are being written.
    Healthy,
    /// Writes fail since `since` (RFC 3339) with `error`.
    Failing {
        /// First failure.
        since: String,
        /// First error.
        error: String,
    },
}

/// A snapshot of the writer's counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditStats {
    /// Records waiting in the channel.
    pub queue_depth: usize,
    /// Lines written (including the writer's own records).
    pub records_written: u64,
    /// Batches committed.
    pub batches: u64,
    /// Records their producer wrote itself, the writer thread being idle (each also a batch).
    pub inline_records: u64,
    /// Waits for more records after a large batch (`[audit] gather_after`).
    pub gather_waits: u64,
    /// `fsync` calls made.
    pub fsyncs: u64,
    /// Duration of the last `fsync`, microseconds.
    pub last_fsync_micros: u64,
    /// Failed write or sync attempts.
    pub write_errors: u64,
    /// Records refused (or let through unaudited with `fail_open`) because of a failure, and
    /// records lost because their producer stopped waiting after the writer had stopped.
    pub failed_records: u64,
    /// Size-based rotations done.
    pub rotations: u64,
    /// The `seq` of the last written record.
    pub last_seq: u64,
    /// Whether the sink currently works.
    pub healthy: bool,
    /// Syslog datagrams sent.
    pub syslog_sent: u64,
    /// Syslog datagrams dropped.
    pub syslog_dropped: u64,
}

#[derive(Debug, Default)]
struct Shared {
    records_written: AtomicU64,
    batches: AtomicU64,
    inline_records: AtomicU64,
    gather_waits: AtomicU64,
    /// Records between `submit` and their answer ([`InFlight`]).
    in_flight: std::sync::atomic::AtomicUsize,
    fsyncs: AtomicU64,
    last_fsync_micros: AtomicU64,
    write_errors: AtomicU64,
    failed_records: AtomicU64,
    rotations: AtomicU64,
    last_seq: AtomicU64,
    failing: AtomicBool,
    syslog: Arc<SyslogStats>,
    mailbox: Mailbox,
}

type AckTx = oneshot::Sender<Result<Ack, AuditError>>;

/// One answer on its way back to the producer that waits for it.
type Answer = (AckTx, Result<Ack, AuditError>);

/// How the writer's answers reach the producers.
///
/// Sent straight from the writer thread, every answer is a wake-up from outside the runtime: the
/// task goes to the shared injection queue and a parked worker is woken for it, and that worker,
/// leaving its search, wakes a second one that finds nothing and parks again: two thread wake-ups
/// and four context switches per batch before the connection runs. So, on a multi-thread runtime,
/// the writer instead leaves a batch's answers here and rings a doorbell, one byte on a socket
/// pair whose other end a dispatcher task watches. The kernel wakes the worker already waiting
/// in the I/O driver; it runs the dispatcher, which hands the answers over on the worker itself,
/// so the producers' tasks land in that worker's own queue. The answers are only ever sent after
/// the batch is written and synced; this changes who delivers them, never when they are true.
///
/// Direct delivery stays for everything else: outside a runtime, on a current-thread runtime
/// (which may not be driven while its producer waits elsewhere), and whenever the dispatcher is
/// gone (its runtime shut down: the dispatcher hands back whatever is left as it is dropped, and
/// the writer, finding the doorbell closed, answers directly from then on until a producer
/// starts a new one).
#[derive(Debug, Default)]
struct Mailbox {
    inner: std::sync::Mutex<MailboxInner>,
    /// A dispatcher is running (fast path for producers; set and cleared under the lock).
    running: AtomicBool,
}

#[derive(Debug, Default)]
struct MailboxInner {
    /// Answers the dispatcher has not taken yet.
    ready: Vec<Answer>,
    /// The writer's end of the doorbell; `None` when no dispatcher runs.
    bell: Option<std::os::unix::net::UnixStream>,
}

impl Mailbox {
    fn lock(&self) -> std::sync::MutexGuard<'_, MailboxInner> {
        // A panic while holding this lock leaves plain data behind: keep using it.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Writer side: hand `answers` to the dispatcher, or send them directly when there is none.
    fn deliver(&self, answers: Vec<Answer>) {
        if answers.is_empty() {
            return;
        }
        let mut inner = self.lock();
        if let Some(bell) = &inner.bell {
            // Ring only when the mailbox was empty: otherwise a ring is already pending, or the
            // dispatcher has not yet taken the mailbox and will find these answers there too.
            let ring = inner.ready.is_empty();
            let rung = !ring
                || match (&*bell).write(&[1]) {
                    Ok(_) => true,
                    // Full: unread rings are pending, so the dispatcher will come.
                    Err(e) => e.kind() == io::ErrorKind::WouldBlock,
                };
            if rung {
                inner.ready.extend(answers);
                return;
            }
            // The dispatcher's end is closed: deliver directly from now on.
            inner.bell = None;
            self.running.store(false, Ordering::Release);
        }
        let left = std::mem::take(&mut inner.ready);
        drop(inner);
        send_answers(left.into_iter().chain(answers));
    }
}

impl Shared {
    /// Producer side: start a dispatcher on the current runtime if none runs and the runtime is
    /// one where it can work (see [`Mailbox`]).
    fn ensure_dispatcher(self: &Arc<Shared>) {
        if self.mailbox.running.load(Ordering::Acquire) {
            return;
        }
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        if rt.runtime_flavor() != tokio::runtime::RuntimeFlavor::MultiThread {
            return;
        }
        let mut inner = self.mailbox.lock();
        if inner.bell.is_some() {
            return;
        }
        let Ok((ours, theirs)) = std::os::unix::net::UnixStream::pair() else {
            return;
        };
        if ours.set_nonblocking(true).is_err() || theirs.set_nonblocking(true).is_err() {
            return;
        }
        let Ok(reader) = ours.try_clone() else {
            return;
        };
        let Ok(watch) = tokio::net::UnixStream::from_std(ours) else {
            return;
        };
        inner.bell = Some(theirs);
        self.mailbox.running.store(true, Ordering::Release);
        drop(inner);
        rt.spawn(dispatch(Arc::clone(self), watch, reader));
    }
}

fn send_answers(answers: impl IntoIterator<Item = Answer>) {
    for (tx, answer) in answers {
        // A producer that stopped waiting (its connection closed) needs no answer.
        let _ = tx.send(answer);
    }
}

/// The dispatcher: on every ring, take the mailbox and answer the producers from this worker.
///
/// `bell` only tells readiness; the rings are read through `reader`, the same socket as a
/// plain handle, so that a short read can clear the readiness itself.
fn dispatch(
    shared: Arc<Shared>,
    bell: tokio::net::UnixStream,
    reader: std::os::unix::net::UnixStream,
) -> impl std::future::Future<Output = ()> + Send {
    // Made before the future, so that it also runs when the task is dropped before its first
    // poll (a runtime shutting down as the dispatcher is spawned).
    let closing = Closing(shared);
    dispatch_rings(closing, bell, reader)
}

/// Hands back what is left when the dispatcher ends or is dropped with its runtime.
struct Closing(Arc<Shared>);

impl Drop for Closing {
    fn drop(&mut self) {
        let mut inner = self.0.mailbox.lock();
        inner.bell = None;
        self.0.mailbox.running.store(false, Ordering::Release);
        let left = std::mem::take(&mut inner.ready);
        drop(inner);
        send_answers(left);
    }
}

async fn dispatch_rings(
    closing: Closing,
    bell: tokio::net::UnixStream,
    reader: std::os::unix::net::UnixStream,
) {
    let mut rings = [0u8; 64];
    loop {
        if bell.readable().await.is_err() {
            break;
        }
        // Take the rings first, then the mailbox: a ring that comes after this read finds the
        // socket readable again, so no answer is left behind. A short read took every ring
        // there was, so readiness is cleared without a second read to see it fail (the driver
        // keeps it set if a ring arrived meanwhile).
        let mut closed = false;
        let read = bell.try_io(tokio::io::Interest::READABLE, || {
            match (&reader).read(&mut rings) {
                Ok(0) => {
                    closed = true;
                    Ok(())
                }
                Ok(n) if n < rings.len() => Err(io::ErrorKind::WouldBlock.into()),
                Ok(_) => Ok(()),
                Err(e) => Err(e),
            }
        });
        match read {
            Ok(()) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                ) => {}
            Err(_) => closed = true,
        }
        let ready = std::mem::take(&mut closing.0.mailbox.lock().ready);
        send_answers(ready);
        if closed {
            // The writer has stopped (its end dropped); `Closing` sends what is left.
            break;
        }
    }
    drop(closing);
}

enum Request {
    /// Serialized by the producer ([`EncodedEvent`]); the writer only chains and writes it.
    Record(Box<EncodedEvent>, AckTx),
    Reopen(oneshot::Sender<Result<(), AuditError>>),
    Shutdown(oneshot::Sender<()>),
}

/// A record handed to the writer whose answer has not come yet ([`AuditHandle::submit`]).
/// Dropping it does not withdraw the record; only the answer is lost.
#[derive(Debug)]
pub struct PendingAck(Option<Held>, InFlight);

/// Counts a record from `submit` until its answer is in (or it is dropped): a record with
/// company is queued, so that concurrent records still share one `fsync`.
#[derive(Debug)]
struct InFlight(Arc<Shared>);

impl InFlight {
    fn new(shared: &Arc<Shared>) -> InFlight {
        shared.in_flight.fetch_add(1, Ordering::AcqRel);
        InFlight(Arc::clone(shared))
    }

    /// No other producer has a record on its way.
    fn alone(&self) -> bool {
        self.0.in_flight.load(Ordering::Acquire) == 1
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A record kept by its producer until it waits, and what it needs to write or queue it
/// (taken out once handed over).
#[derive(Debug)]
struct Held {
    event: Box<EncodedEvent>,
    tx: mpsc::Sender<Request>,
    core: Arc<std::sync::Mutex<Writer>>,
}

impl PendingAck {
    /// Wait until the record is written (and synced per the mode); `Err`: not durable.
    pub async fn wait(mut self) -> Result<Ack, AuditError> {
        let held = self.0.take().ok_or(AuditError::Closed)?;
        let rx = held.hand_over(self.1.alone()).await?;
        rx.await.map_err(|_| AuditError::Closed)?
    }
}

impl Held {
    /// Write the record on this thread when it is `alone` and the writer is idle (see
    /// [`Writer::try_inline`]), else queue it for the writer thread as any other record.
    async fn hand_over(
        self,
        alone: bool,
    ) -> Result<oneshot::Receiver<Result<Ack, AuditError>>, AuditError> {
        let (ack, rx) = oneshot::channel();
        let Held { event, tx, core } = self;
        let request = if alone {
            match Writer::try_inline(&core, &tx, event, ack) {
                None => return Ok(rx),
                Some(request) => request,
            }
        } else {
            Request::Record(event, ack)
        };
        tx.send(request).await.map_err(|_| AuditError::Closed)?;
        Ok(rx)
    }
}

impl Drop for PendingAck {
    /// A record whose producer stopped waiting (its connection closed) is still written: queued
    /// when there is room, else written here, waiting for the writer's lock. Only a writer that
    /// has stopped (or, with its queue full, not started yet) cannot take it; then the loss is
    /// logged and counted, as no producer is left to answer 4xx for it.
    fn drop(&mut self) {
        let Some(Held { event, tx, core }) = self.0.take() else {
            return;
        };
        let (ack, _rx) = oneshot::channel();
        match tx.try_send(Request::Record(event, ack)) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Closed(Request::Record(event, _))) => {
                lost_on_drop(&self.1.0, event.kind, "the audit writer has stopped");
            }
            Err(mpsc::error::TrySendError::Full(Request::Record(event, ack))) => {
                let mut writer = lock_writer(&core);
                if writer.accepts_inline() {
                    writer.commit_inline(event, ack);
                } else {
                    let why = if writer.stopped {
                        "the audit writer has stopped"
                    } else {
                        "the audit writer has not started and its queue is full"
                    };
                    drop(writer);
                    lost_on_drop(&self.1.0, event.kind, why);
                }
            }
            // Only records are sent here.
            Err(mpsc::error::TrySendError::Full(_) | mpsc::error::TrySendError::Closed(_)) => {}
        }
    }
}

/// A dropped [`PendingAck`]'s record that nothing can write any more. Its producer is gone, so
/// no message is tempfailed for it: this log line and `failed_records` are all that is left.
#[cold]
fn lost_on_drop(shared: &Shared, kind: EventKind, why: &str) {
    shared.failed_records.fetch_add(1, Ordering::Relaxed);
    tracing::error!(
        event = kind.as_str(),
        "audit record lost: its producer stopped waiting (connection closed) and {why}, so it \
         was not written"
    );
}

/// The writer's state; a panic while holding it leaves the chain where the last committed
/// batch put it (state only moves after a write succeeds), so keep using it.
fn lock_writer(core: &std::sync::Mutex<Writer>) -> std::sync::MutexGuard<'_, Writer> {
    core.lock().unwrap_or_else(|p| p.into_inner())
}

/// The producers' side: cheap to clone, one per task that records.
#[derive(Debug, Clone)]
pub struct AuditHandle {
    tx: mpsc::Sender<Request>,
    /// The writer's state, shared with the writer thread so that a lone producer can write its
    /// own record when the thread is idle (see [`Writer::try_inline`]).
    core: Arc<std::sync::Mutex<Writer>>,
    shared: Arc<Shared>,
    health: watch::Receiver<SinkHealth>,
    path: PathBuf,
}

impl std::fmt::Debug for Request {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Request::Record(e, _) => write!(f, "Record({})", e.kind),
            Request::Reopen(_) => f.write_str("Reopen"),
            Request::Shutdown(_) => f.write_str("Shutdown"),
        }
    }
}

impl AuditHandle {
    /// Hand `event` to the writer and wait until it is written (and, with `sync = "batch"` or
    /// `"always"`, `fsync`ed). An `Err` means the record is not durable: answer the message 4xx.
    /// Waits for queue space when the writer is behind (back-pressure, never unbounded memory).
    pub async fn record(&self, event: AuditEvent) -> Result<Ack, AuditError> {
        self.submit(event).await?.wait().await
    }

    /// The first half of [`AuditHandle::record`]: encode `event` and return at once. The
    /// record is not durable until [`PendingAck::wait`] says so; the caller may do other work
    /// meanwhile (the filter sends the message's modifications, holding back only the final
    /// answer). The record is handed to the writer when the caller waits (or drops the
    /// `PendingAck`): then a lone record can be written on the caller's own thread, and
    /// otherwise joins the writer thread's next batch.
    pub async fn submit(&self, event: AuditEvent) -> Result<PendingAck, AuditError> {
        // Serialized here, on the producer's thread: the writer's batch cycle (chain, write,
        // fsync, acknowledge) is the one serial part of the audit path, so keep it short.
        let encoded = EncodedEvent::new(&event).map_err(|e| AuditError::Encode(e.to_string()))?;
        drop(event);
        self.shared.ensure_dispatcher();
        Ok(PendingAck(
            Some(Held {
                event: Box::new(encoded),
                tx: self.tx.clone(),
                core: Arc::clone(&self.core),
            }),
            InFlight::new(&self.shared),
        ))
    }

    /// Close and reopen the audit file at its configured path, for logrotate (the daemon maps
    /// SIGUSR1 here). Records queued before the request go to the old file; the chain continues
    /// into the new one.
    pub async fn reopen(&self) -> Result<(), AuditError> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(Request::Reopen(tx))
            .await
            .map_err(|_| AuditError::Closed)?;
        rx.await.map_err(|_| AuditError::Closed)?
    }

    /// Write what is queued, sync, and stop the writer. Later `record` calls get
    /// [`AuditError::Closed`].
    pub async fn shutdown(&self) -> Result<(), AuditError> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(Request::Shutdown(tx))
            .await
            .map_err(|_| AuditError::Closed)?;
        rx.await.map_err(|_| AuditError::Closed)
    }

    /// The audit file path in force (printed by the daemon at start-up).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Counters for metrics.
    pub fn stats(&self) -> AuditStats {
        let s = &self.shared;
        AuditStats {
            queue_depth: self.tx.max_capacity() - self.tx.capacity(),
            records_written: s.records_written.load(Ordering::Relaxed),
            batches: s.batches.load(Ordering::Relaxed),
            inline_records: s.inline_records.load(Ordering::Relaxed),
            gather_waits: s.gather_waits.load(Ordering::Relaxed),
            fsyncs: s.fsyncs.load(Ordering::Relaxed),
            last_fsync_micros: s.last_fsync_micros.load(Ordering::Relaxed),
            write_errors: s.write_errors.load(Ordering::Relaxed),
            failed_records: s.failed_records.load(Ordering::Relaxed),
            rotations: s.rotations.load(Ordering::Relaxed),
            last_seq: s.last_seq.load(Ordering::Relaxed),
            healthy: !s.failing.load(Ordering::Relaxed),
            syslog_sent: s.syslog.sent.load(Ordering::Relaxed),
            syslog_dropped: s.syslog.dropped.load(Ordering::Relaxed),
        }
    }

    /// Records waiting for the writer.
    pub fn queue_depth(&self) -> usize {
        self.tx.max_capacity() - self.tx.capacity()
    }

    /// A watch on the sink's health (to raise an "audit failure" incident, for example).
    pub fn health(&self) -> watch::Receiver<SinkHealth> {
        self.health.clone()
    }
}

/// Open the audit file, recover the chain and start the writer thread.
pub fn start(config: &AuditConfig) -> Result<AuditHandle, AuditError> {
    let (handle, writer) = open(config)?;
    writer.spawn()?;
    Ok(handle)
}

/// Open the audit file and recover the chain, without starting the writer yet: records sent
/// through the handle wait in the queue until [`WriterTask::spawn`]. `start` is the usual
/// entry point; this split lets tests and the daemon queue records before the writer runs.
pub fn open(config: &AuditConfig) -> Result<(AuditHandle, WriterTask), AuditError> {
    config.validate().map_err(AuditError::Config)?;
    let path = config.path.clone();
    let host = config.host.clone().unwrap_or_else(kernel_hostname);
    // A first run with the built-in default may find /var/log/markgate missing.
    if let Some(dir) = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty() && !d.exists())
    {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o750)
            .create(dir)
            .map_err(|e| AuditError::Open {
                path: path.display().to_string(),
                error: format!("cannot create the directory {}: {e}", dir.display()),
            })?;
    }
    let open_error = |e: io::Error| AuditError::Open {
        path: path.display().to_string(),
        error: e.to_string(),
    };
    // Zeros a preallocating writer left after the last record (it stopped without trimming
    // them: a crash, SIGKILL, power loss) are not part of the log: cut them, so the chain is
    // recovered from, and the next record written at, the true end of the data.
    trim_unused_tail(&path).map_err(open_error)?;
    let recovered = recover(&path).map_err(open_error)?;
    let (file, size, file_id) =
        open_log(&path, config.file_mode, config.preallocate > 0).map_err(open_error)?;
    let shared = Arc::new(Shared::default());
    shared.last_seq.store(recovered.seq, Ordering::Relaxed);
    let syslog = config
        .syslog
        .enabled
        .then(|| SyslogForwarder::new(&config.syslog, &host, shared.syslog.clone()));
    let (tx, rx) = mpsc::channel(config.queue);
    let (health_tx, health_rx) = watch::channel(SinkHealth::Healthy);

    let mut pending = Vec::new();
    let mut needs_newline = false;
    if let Some(fragment) = &recovered.fragment {
        tracing::error!(
            path = %path.display(),
            fragment_len = fragment.len(),
            resumed_after_seq = recovered.seq,
            "audit file ends in an incomplete record (crash mid-write); keeping it and resuming \
             the chain after the last complete record"
        );
        needs_newline = true;
        pending.push(AuditEvent::AuditChainResumed(ChainResumed {
            path: path.display().to_string(),
            fragment_len: fragment.len() as u64,
            fragment_sha256: line_hash(fragment),
            resumed_after_seq: recovered.seq,
        }));
    }
    if recovered.skipped_bad_lines > 0 {
        tracing::error!(
            path = %path.display(),
            skipped = recovered.skipped_bad_lines,
            "audit file ends in lines that are not records; the chain resumes after the last \
             valid record and `markgate audit verify` will report the damage"
        );
    }

    let core = Arc::new(std::sync::Mutex::new(Writer {
        path: path.clone(),
        sync: config.sync,
        fail_open: config.fail_open,
        max_size: config.max_size,
        preallocate: config.preallocate,
        allocated: size,
        keep: config.keep,
        file_mode: config.file_mode,
        host,
        file: Some(file),
        file_id: Some(file_id),
        size,
        seq: recovered.seq,
        last_hash: recovered.hash,
        pending,
        needs_newline,
        outage: None,
        open_error: None,
        syslog,
        shared: shared.clone(),
        health: health_tx,
        direct: false,
        running: false,
        stopped: false,
    }));
    let handle = AuditHandle {
        tx,
        core: Arc::clone(&core),
        shared,
        health: health_rx,
        path: path.clone(),
    };
    let gather =
        (config.sync == SyncMode::Batch && config.gather_after > 0 && config.gather_wait_us > 0)
            .then(|| Gather {
                after: config.gather_after,
                wait: std::time::Duration::from_micros(config.gather_wait_us),
            });
    Ok((handle, WriterTask { core, rx, gather }))
}

/// The writer, opened but not yet running.
#[derive(Debug)]
pub struct WriterTask {
    core: Arc<std::sync::Mutex<Writer>>,
    rx: mpsc::Receiver<Request>,
    gather: Option<Gather>,
}

/// The wait after a large batch (`[audit] gather_after`, `gather_wait_us`; only with
/// `sync = "batch"`).
///
/// Under heavy load the writer would otherwise sync as often as it can, each batch holding
/// the few records that came during the last `fsync`, and every `fsync` costs CPU the
/// connections need (at 64 connections on 2 vCPUs, about 80 µs per batch on the writer thread:
/// the sync's system time, the disk notifications that exit to the host, the sleep). A batch of
/// `after` records shows that many messages were waiting for the disk together, so the
/// processors have other mail to work on: a short wait there lets the next batch grow without
/// idling them. It is a plain sleep, with the writer's lock free and nothing for producers to
/// wake: handing a record over costs them no more than before (a wait woken per record was
/// measured and not kept: BENCHMARKS.md, sessions 25 and 27). The records of the batch just
/// written were answered before the wait; only records that arrive during it wait, at most
/// `wait`. Smaller batches never wait, so at low concurrency nothing changes.
#[derive(Debug, Clone, Copy)]
struct Gather {
    after: usize,
    wait: std::time::Duration,
}

impl WriterTask {
    /// Start the writer thread. It runs until [`AuditHandle::shutdown`] or until every handle
    /// is dropped.
    pub fn spawn(self) -> Result<std::thread::JoinHandle<()>, AuditError> {
        // Records queued before the start go first: producers write their own only from now.
        lock_writer(&self.core).running = true;
        let core = Arc::clone(&self.core);
        std::thread::Builder::new()
            .name("markgate-audit".into())
            .spawn(move || self.run())
            .map_err(|e| {
                lock_writer(&core).running = false;
                AuditError::Open {
                    path: String::new(),
                    error: format!("cannot start the audit writer thread: {e}"),
                }
            })
    }

    fn run(mut self) {
        let mut stop: Option<oneshot::Sender<()>> = None;
        while let Some(first) = self.rx.blocking_recv() {
            let mut batch = vec![first];
            while let Ok(more) = self.rx.try_recv() {
                batch.push(more);
            }
            let records = batch
                .iter()
                .filter(|r| matches!(r, Request::Record(..)))
                .count();
            let mut state = lock_writer(&self.core);
            stop = state.process(batch);
            if stop.is_some() {
                // Under the same lock: no producer writes its own record after the shutdown.
                state.stopped = true;
                break;
            }
            if let Some(g) = self.gather
                && records >= g.after
            {
                state.shared.gather_waits.fetch_add(1, Ordering::Relaxed);
                drop(state);
                std::thread::sleep(g.wait);
            }
        }
        // Refuse what arrives after the shutdown request rather than leaving producers hanging
        // (and producers' own writes: `stopped`).
        let mut state = lock_writer(&self.core);
        state.stopped = true;
        self.rx.close();
        let mut lost = 0u64;
        while let Ok(req) = self.rx.try_recv() {
            if let Request::Record(_, ack) = req
                && ack.send(Err(AuditError::Closed)).is_err()
            {
                // Its producer stopped waiting (a dropped `PendingAck`): no message is
                // tempfailed for this record, so its loss must show here.
                lost += 1;
            }
        }
        if lost > 0 {
            state
                .shared
                .failed_records
                .fetch_add(lost, Ordering::Relaxed);
            tracing::error!(
                lost,
                "audit records lost: queued by producers that stopped waiting (connection \
                 closed) after the audit writer had begun to stop, so they were not written"
            );
        }
        state.final_sync();
        drop(state);
        if let Some(done) = stop {
            let _ = done.send(());
        }
    }
}

#[derive(Debug)]
struct Outage {
    since: String,
    since_instant: Instant,
    error: String,
    failed: u64,
}

#[derive(Debug)]
struct Writer {
    path: PathBuf,
    sync: SyncMode,
    fail_open: bool,
    max_size: u64,
    /// Zero-filled bytes kept ahead of the data (`[audit] preallocate`; 0: plain appends).
    preallocate: u64,
    /// With `preallocate`: the end of the zero-filled, synced region of the current file. Up
    /// to there a record overwrites blocks the file system already has, so `fdatasync` has no
    /// size or extent change to commit.
    allocated: u64,
    keep: u32,
    file_mode: u32,
    host: String,
    file: Option<File>,
    file_id: Option<(u64, u64)>,
    /// Bytes of the current file known to be committed; a failed batch is cut back to this.
    size: u64,
    seq: u64,
    last_hash: String,
    /// The writer's own records, written ahead of the next batch.
    pending: Vec<AuditEvent>,
    /// The file ends in a fragment that must be terminated before the next line.
    needs_newline: bool,
    outage: Option<Outage>,
    /// Why the file is not open, when the last (re)open failed.
    open_error: Option<String>,
    syslog: Option<SyslogForwarder>,
    shared: Arc<Shared>,
    health: watch::Sender<SinkHealth>,
    /// Answers go straight to their producers (a producer is writing its own record on its
    /// own thread), not through the dispatcher.
    direct: bool,
    /// The writer thread has started: records queued before it go first.
    running: bool,
    /// The writer thread has stopped (shutdown): no more records, from any thread.
    stopped: bool,
}

/// One line ready to write.
struct Line {
    bytes: Vec<u8>,
    seq: u64,
    hash: String,
    ack: Option<AckTx>,
    /// What the syslog header says about the record (kept to avoid parsing the line again).
    kind: EventKind,
    severity: Severity,
    security_event: bool,
    time: String,
}

impl Writer {
    /// A producer's way to skip the writer thread: when the thread is idle (its queue empty,
    /// the lock free), the producer writes and syncs its own record, under the same lock and
    /// through the same [`Writer::commit`] as a batch, so the chain, rotation and failure rules
    /// are the thread's own. That spares the two thread hand-offs of the queue (producer to
    /// writer, writer to dispatcher) which cost a lone message more than its `fdatasync`. A
    /// producer never waits for the lock: when the thread is busy, the record goes to the queue
    /// and joins the next batch, so under load the group commit works as before. Returns the
    /// request back when it must be queued.
    fn try_inline(
        core: &std::sync::Mutex<Writer>,
        tx: &mpsc::Sender<Request>,
        event: Box<EncodedEvent>,
        ack: AckTx,
    ) -> Option<Request> {
        // Records already queued are older: they must not be overtaken.
        if tx.capacity() != tx.max_capacity() {
            return Some(Request::Record(event, ack));
        }
        let mut writer = match core.try_lock() {
            Ok(w) => w,
            Err(std::sync::TryLockError::Poisoned(p)) => p.into_inner(),
            Err(std::sync::TryLockError::WouldBlock) => return Some(Request::Record(event, ack)),
        };
        if !writer.accepts_inline() {
            return Some(Request::Record(event, ack));
        }
        writer.commit_inline(event, ack);
        None
    }

    /// Whether a producer may write a record itself now.
    fn accepts_inline(&self) -> bool {
        self.running && !self.stopped
    }

    /// Commit one producer's record on the caller's thread, answering it directly.
    fn commit_inline(&mut self, event: Box<EncodedEvent>, ack: AckTx) {
        self.shared.inline_records.fetch_add(1, Ordering::Relaxed);
        self.direct = true;
        self.commit(vec![(event, ack)]);
        self.direct = false;
    }

    /// Answer producers: directly when one writes its own record, else through the mailbox.
    fn deliver(&self, answers: Vec<Answer>) {
        if self.direct {
            send_answers(answers);
        } else {
            self.shared.mailbox.deliver(answers);
        }
    }

    /// Handle one batch in arrival order; returns the shutdown answer if one was asked for.
    fn process(&mut self, batch: Vec<Request>) -> Option<oneshot::Sender<()>> {
        let mut records: Vec<(Box<EncodedEvent>, AckTx)> = Vec::new();
        let mut stop = None;
        for req in batch {
            match req {
                Request::Record(event, ack) => records.push((event, ack)),
                Request::Reopen(done) => {
                    self.commit(std::mem::take(&mut records));
                    let result = self.reopen("reopen requested");
                    if let Err(e) = &result {
                        tracing::error!(error = %e, "audit file could not be reopened; records \
                            are refused until it can be");
                    }
                    let _ = done.send(result);
                }
                Request::Shutdown(done) => {
                    self.commit(std::mem::take(&mut records));
                    stop = Some(done);
                }
            }
        }
        self.commit(records);
        stop
    }

    /// Write, sync and acknowledge a group of records.
    fn commit(&mut self, records: Vec<(Box<EncodedEvent>, AckTx)>) {
        if records.is_empty() {
            return;
        }
        if self.outage.is_some() || self.file.is_none() {
            // Every batch during an outage gets a fresh file handle: the cause (read-only
            // remount, deleted directory, permissions) may be gone.
            if let Err(e) = self.reopen("retrying after a failure") {
                tracing::debug!(error = %e, "audit file still cannot be opened");
            }
        }

        let mut own = std::mem::take(&mut self.pending);
        if let Some(o) = &self.outage {
            own.push(AuditEvent::AuditSinkTrouble(SinkTrouble {
                path: self.path.display().to_string(),
                since: o.since.clone(),
                error: o.error.clone(),
                fail_open: self.fail_open,
            }));
            own.push(AuditEvent::AuditSinkRecovered(SinkRecovered {
                path: self.path.display().to_string(),
                since: o.since.clone(),
                failed_records: o.failed,
                outage_seconds: o.since_instant.elapsed().as_secs_f64(),
            }));
        }
        let own_count = own.len();

        // Stamp seq, prev and time; the chain state only moves once the bytes are committed.
        let time = now_rfc3339();
        let mut seq = self.seq;
        let mut prev = self.last_hash.clone();
        let mut lines: Vec<Line> = Vec::with_capacity(own_count + records.len());
        let mut encode_failed: Vec<Answer> = Vec::new();
        let events = own
            .iter()
            .map(|e| (EncodedEvent::new(e), None))
            .chain(records.into_iter().map(|(e, a)| (Ok(*e), Some(a))));
        for (encoded, ack) in events {
            match encoded.map(|e| (e.line(seq + 1, &prev, &time, &self.host), e)) {
                Ok((mut bytes, e)) => {
                    seq += 1;
                    prev = line_hash(&bytes);
                    bytes.push(b'\n');
                    lines.push(Line {
                        bytes,
                        seq,
                        hash: prev.clone(),
                        ack,
                        kind: e.kind,
                        severity: e.severity,
                        security_event: e.security_event,
                        time: time.clone(),
                    });
                }
                Err(e) => {
                    tracing::error!(error = %e, "audit record could not be encoded");
                    if let Some(ack) = ack {
                        encode_failed.push((ack, Err(AuditError::Encode(e.to_string()))));
                    }
                }
            }
        }
        self.deliver(encode_failed);

        // Chunks: the whole batch with one fsync, or one line per fsync with `always`.
        let chunk_len = match self.sync {
            SyncMode::Always => 1,
            SyncMode::Batch | SyncMode::None => lines.len().max(1),
        };
        let mut written_own = 0usize;
        let mut iter = lines.into_iter().peekable();
        while iter.peek().is_some() {
            let mut chunk: Vec<Line> = iter.by_ref().take(chunk_len).collect();
            match self.write_chunk(&chunk) {
                Ok(durable) => {
                    written_own += chunk.iter().filter(|l| l.ack.is_none()).count();
                    if let Some(o) = self.outage.take() {
                        tracing::warn!(
                            path = %self.path.display(),
                            failed_records = o.failed,
                            outage_seconds = o.since_instant.elapsed().as_secs_f64(),
                            "audit file is writable again; audit_sink_trouble/recovered recorded"
                        );
                        self.shared.failing.store(false, Ordering::Relaxed);
                        let _ = self.health.send(SinkHealth::Healthy);
                    }
                    // Answer the producers first: syslog is a copy, the MTA is waiting.
                    let answers = chunk
                        .iter_mut()
                        .filter_map(|line| {
                            let ack = line.ack.take()?;
                            let answer = Ok(Ack {
                                seq: Some(line.seq),
                                hash: Some(line.hash.clone()),
                                durable,
                            });
                            Some((ack, answer))
                        })
                        .collect();
                    self.deliver(answers);
                    for line in &chunk {
                        self.forward_syslog(line);
                    }
                }
                Err(e) => {
                    let rest: Vec<Line> = chunk.into_iter().chain(iter.by_ref()).collect();
                    self.fail(&e, rest);
                    break;
                }
            }
        }
        // The writer's own records that did not make it are tried again with the next batch
        // (the trouble/recovered pair is rebuilt from the outage state instead).
        if written_own < own_count {
            self.pending = own
                .into_iter()
                .skip(written_own)
                .filter(|e| {
                    !matches!(
                        e,
                        AuditEvent::AuditSinkTrouble(_) | AuditEvent::AuditSinkRecovered(_)
                    )
                })
                .collect();
        }
    }

    /// Write one chunk and sync it per the mode. On success the chain state moves forward.
    fn write_chunk(&mut self, chunk: &[Line]) -> io::Result<bool> {
        let len: u64 =
            chunk.iter().map(|l| l.bytes.len() as u64).sum::<u64>() + u64::from(self.needs_newline);
        if self.max_size > 0 && self.size > 0 && self.size + len > self.max_size {
            self.rotate()?;
        }
        let mut buf = Vec::with_capacity(len as usize);
        if self.needs_newline {
            buf.push(b'\n');
        }
        for l in chunk {
            buf.extend_from_slice(&l.bytes);
        }
        self.write_at_end(&buf)?;
        let Some(file) = self.file.as_mut() else {
            return Err(io::Error::other("audit file is not open"));
        };
        let durable = match self.sync {
            SyncMode::None => false,
            SyncMode::Batch | SyncMode::Always => {
                let t = Instant::now();
                file.sync_data()?;
                self.shared.fsyncs.fetch_add(1, Ordering::Relaxed);
                self.shared
                    .last_fsync_micros
                    .store(t.elapsed().as_micros() as u64, Ordering::Relaxed);
                true
            }
        };
        self.needs_newline = false;
        self.size += buf.len() as u64;
        if let Some(last) = chunk.last() {
            self.seq = last.seq;
            self.last_hash = last.hash.clone();
        }
        self.shared.batches.fetch_add(1, Ordering::Relaxed);
        self.shared
            .records_written
            .fetch_add(chunk.len() as u64, Ordering::Relaxed);
        self.shared.last_seq.store(self.seq, Ordering::Relaxed);
        Ok(durable)
    }

    /// Write `buf` after the committed data: an append, or with `preallocate` an overwrite of
    /// zero-filled space (made first when there is not enough). Not synced here.
    fn write_at_end(&mut self, buf: &[u8]) -> io::Result<()> {
        let Some(file) = self.file.as_mut() else {
            let why = self
                .open_error
                .as_deref()
                .unwrap_or("audit file is not open");
            return Err(io::Error::other(why.to_string()));
        };
        if self.preallocate == 0 {
            return file.write_all(buf);
        }
        let end = self.size + buf.len() as u64;
        if end > self.allocated {
            // Zero-fill the next segment and make it durable, size and extents included: one
            // full flush per segment instead of one per batch.
            let from = self.allocated.max(self.size);
            let to = end + self.preallocate;
            let zeros = vec![0u8; 64 * 1024];
            let mut at = from;
            while at < to {
                let n = (to - at).min(zeros.len() as u64) as usize;
                file.write_all_at(&zeros[..n], at)?;
                at += n as u64;
            }
            if self.sync != SyncMode::None {
                file.sync_data()?;
            }
            self.allocated = to;
        }
        file.write_all_at(buf, self.size)
    }

    /// Cut the zeros kept ahead of the data, so a file the writer leaves (rotated, reopened
    /// away from, or at shutdown) ends with its last record.
    fn trim_preallocation(&mut self) -> io::Result<()> {
        if self.preallocate > 0
            && self.allocated > self.size
            && let Some(f) = &self.file
        {
            f.set_len(self.size)?;
        }
        self.allocated = self.size;
        Ok(())
    }

    /// A write or sync failed: cut the partial bytes, answer the producers, note the outage.
    fn fail(&mut self, error: &io::Error, lines: Vec<Line>) {
        self.shared.write_errors.fetch_add(1, Ordering::Relaxed);
        // (This also cuts any preallocated zeros; the next write makes them again.)
        let cut = self.file.as_ref().map(|f| f.set_len(self.size));
        self.allocated = self.size;
        if !matches!(cut, Some(Ok(()))) {
            // The handle is unusable; the next batch reopens and cuts again.
            self.file = None;
        }
        let refused = lines.iter().filter(|l| l.ack.is_some()).count() as u64;
        self.shared
            .failed_records
            .fetch_add(refused, Ordering::Relaxed);
        let error_text = error.to_string();
        match &mut self.outage {
            Some(o) => {
                o.failed += refused;
                tracing::debug!(error = %error_text, refused, "audit file still failing");
            }
            None => {
                let since = now_rfc3339();
                if self.fail_open {
                    tracing::error!(
                        path = %self.path.display(), error = %error_text,
                        "audit file cannot be written; fail_open = true, so mail is passing \
                         UNAUDITED until it recovers"
                    );
                } else {
                    tracing::error!(
                        path = %self.path.display(), error = %error_text,
                        "audit file cannot be written; messages are tempfailed (4xx) until it \
                         recovers"
                    );
                }
                self.shared.failing.store(true, Ordering::Relaxed);
                let _ = self.health.send(SinkHealth::Failing {
                    since: since.clone(),
                    error: error_text.clone(),
                });
                self.outage = Some(Outage {
                    since,
                    since_instant: Instant::now(),
                    error: error_text.clone(),
                    failed: refused,
                });
            }
        }
        let mut answers = Vec::with_capacity(lines.len());
        for line in lines {
            if let Some(ack) = line.ack {
                let answer = if self.fail_open {
                    Ok(Ack {
                        seq: None,
                        hash: None,
                        durable: false,
                    })
                } else {
                    Err(AuditError::Sink {
                        path: self.path.display().to_string(),
                        error: error_text.clone(),
                    })
                };
                answers.push((ack, answer));
            }
        }
        self.deliver(answers);
    }

    /// Close the current file and open the configured path again (append, create).
    fn reopen(&mut self, why: &str) -> Result<(), AuditError> {
        let old_id = self.file_id;
        if self.file.is_some() && self.trim_preallocation().is_err() {
            tracing::warn!(path = %self.path.display(),
                "could not cut the preallocated zeros off the old audit file; readers skip them");
        }
        if let Some(f) = self.file.take()
            && self.sync != SyncMode::None
        {
            let _ = f.sync_data();
        }
        let sink_error = |e: io::Error| AuditError::Sink {
            path: self.path.display().to_string(),
            error: e.to_string(),
        };
        let (file, len, id) =
            open_log(&self.path, self.file_mode, self.preallocate > 0).map_err(sink_error)?;
        // A file another writer left with zeros ahead (a crashed markgate) ends at its data.
        let len = if old_id == Some(id) {
            len
        } else {
            trim_zeros(&file, len).map_err(sink_error)?
        };
        if old_id == Some(id) && len > self.size {
            // Same file, longer than what was committed: a failed batch left bytes behind.
            file.set_len(self.size).map_err(|e| AuditError::Sink {
                path: self.path.display().to_string(),
                error: e.to_string(),
            })?;
        } else {
            self.size = len;
            if old_id != Some(id) {
                // A different file: whatever fragment the old one ended in is not our tail.
                self.needs_newline = false;
            }
        }
        tracing::info!(path = %self.path.display(), reason = why, "audit file (re)opened");
        self.allocated = self.size;
        self.file = Some(file);
        self.file_id = Some(id);
        Ok(())
    }

    /// Size-based rotation: FILE.(keep-1) → FILE.keep, …, FILE → FILE.1, then a new FILE.
    fn rotate(&mut self) -> io::Result<()> {
        if self.file.is_some() {
            if self.needs_newline {
                // Terminate the old file's fragment there, so the next file starts clean.
                self.write_at_end(b"\n")?;
                self.size += 1;
                self.needs_newline = false;
            }
            self.trim_preallocation()?;
        }
        if let Some(f) = self.file.take()
            && self.sync != SyncMode::None
        {
            f.sync_data()?;
        }
        for i in (1..self.keep).rev() {
            let from = numbered(&self.path, i);
            if from.exists() {
                fs::rename(&from, numbered(&self.path, i + 1))?;
            }
        }
        if self.path.exists() {
            fs::rename(&self.path, numbered(&self.path, 1))?;
        }
        let (file, len, id) = open_log(&self.path, self.file_mode, self.preallocate > 0)?;
        sync_dir(&self.path);
        self.file = Some(file);
        self.file_id = Some(id);
        self.size = len;
        self.allocated = len;
        self.needs_newline = false;
        self.shared.rotations.fetch_add(1, Ordering::Relaxed);
        tracing::info!(path = %self.path.display(), next_seq = self.seq + 1, "audit file rotated");
        Ok(())
    }

    fn forward_syslog(&mut self, line: &Line) {
        if let Some(sys) = &mut self.syslog {
            sys.forward(
                &LineMeta {
                    seq: line.seq,
                    event: line.kind.as_str(),
                    severity: line.severity,
                    security_event: line.security_event,
                    hash: &line.hash,
                    time: &line.time,
                },
                &line.bytes,
            );
        }
    }

    fn final_sync(&mut self) {
        if let Err(e) = self.trim_preallocation() {
            tracing::warn!(path = %self.path.display(), error = %e,
                "could not cut the preallocated zeros off the audit file; readers skip them");
        }
        if let Some(f) = &self.file
            && let Err(e) = f.sync_all()
        {
            tracing::error!(path = %self.path.display(), error = %e, "final sync of the audit file failed");
        }
    }
}

/// `FILE.n` next to `FILE`.
pub fn numbered(path: &Path, n: u32) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(format!(".{n}"));
    PathBuf::from(s)
}

/// Open (create) the audit file for writing at its end: `O_APPEND`, or, for a preallocating
/// writer, positioned writes (it writes at the end of the data, before the zeros, which
/// `O_APPEND` would not allow).
fn open_log(path: &Path, mode: u32, positioned: bool) -> io::Result<(File, u64, (u64, u64))> {
    let existed = path.exists();
    let file = OpenOptions::new()
        .create(true)
        .append(!positioned)
        .write(true)
        .mode(mode)
        .open(path)?;
    let meta = file.metadata()?;
    if !existed {
        sync_dir(path);
    }
    Ok((file, meta.len(), (meta.dev(), meta.ino())))
}

/// The length of `file` without the run of NUL bytes at its end (preallocated space a
/// writer had not used yet). A record never contains a raw NUL (JSON escapes control
/// characters), so the zeros are never part of one.
pub fn data_len(file: &File) -> io::Result<u64> {
    const BLOCK: u64 = 64 * 1024;
    let len = file.metadata()?.len();
    let mut end = len;
    let mut buf = vec![0u8; BLOCK as usize];
    while end > 0 {
        let n = BLOCK.min(end);
        let block = &mut buf[..n as usize];
        file.read_exact_at(block, end - n)?;
        match block.iter().rposition(|&b| b != 0) {
            Some(i) => return Ok(end - n + i as u64 + 1),
            None => end -= n,
        }
    }
    Ok(0)
}

/// Cut the unused preallocated zeros off `file` (of length `len`); the new length.
fn trim_zeros(file: &File, len: u64) -> io::Result<u64> {
    let data = data_len(file)?;
    if data < len {
        file.set_len(data)?;
        file.sync_all()?;
    }
    Ok(data)
}

/// [`trim_zeros`] on the file at `path`, if there is one.
fn trim_unused_tail(path: &Path) -> io::Result<()> {
    match OpenOptions::new().write(true).read(true).open(path) {
        Ok(f) => {
            let len = f.metadata()?.len();
            trim_zeros(&f, len).map(drop)
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// Make a new directory entry durable (best effort: some file systems refuse it).
fn sync_dir(path: &Path) {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
}

fn kernel_hostname() -> String {
    fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| fs::read_to_string("/etc/hostname"))
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

/// Chain state found at the end of an existing audit file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recovered {
    /// Last complete, valid record's `seq` (0 for a new chain).
    pub seq: u64,
    /// Its line hash ([`GENESIS_PREV`] for a new chain).
    pub hash: String,
    /// Bytes after the last newline of the current file, if any (an incomplete record).
    pub fragment: Option<Vec<u8>>,
    /// Complete lines after the last valid record that are not records.
    pub skipped_bad_lines: usize,
}

/// Find where the chain stands: the end of `path`, or of `path.1` when `path` is missing or
/// holds no complete record (after logrotate moved it away before a restart).
pub fn recover(path: &Path) -> io::Result<Recovered> {
    let mut here = match File::open(path) {
        Ok(mut f) => scan_tail(&mut f)?,
        Err(e) if e.kind() == io::ErrorKind::NotFound => Tail::default(),
        Err(e) => return Err(e),
    };
    if here.last.is_none() {
        let rotated = numbered(path, 1);
        if let Ok(mut f) = File::open(&rotated) {
            let older = scan_tail(&mut f)?;
            if older.fragment.is_some() {
                tracing::warn!(path = %rotated.display(),
                    "rotated audit file ends in an incomplete record; verify will report it");
            }
            here.last = older.last;
            here.skipped_bad_lines += older.skipped_bad_lines;
        }
    }
    let (seq, hash) = here.last.unwrap_or_else(|| (0, GENESIS_PREV.to_string()));
    Ok(Recovered {
        seq,
        hash,
        fragment: here.fragment,
        skipped_bad_lines: here.skipped_bad_lines,
    })
}

#[derive(Debug, Default)]
struct Tail {
    last: Option<(u64, String)>,
    fragment: Option<Vec<u8>>,
    skipped_bad_lines: usize,
}

/// Read backwards from the end in blocks until the last valid record is found.
fn scan_tail(file: &mut File) -> io::Result<Tail> {
    const BLOCK: u64 = 64 * 1024;
    let len = data_len(file)?;
    let mut pos = len; // file offset of buf[0]
    let mut buf: Vec<u8> = Vec::new();
    let mut tail = Tail::default();

    // Read one more block before buf; returns false at the start of the file.
    let mut grow = |buf: &mut Vec<u8>, pos: &mut u64| -> io::Result<bool> {
        if *pos == 0 {
            return Ok(false);
        }
        let n = BLOCK.min(*pos);
        *pos -= n;
        file.seek(SeekFrom::Start(*pos))?;
        let mut block = vec![0u8; n as usize];
        file.read_exact(&mut block)?;
        block.extend_from_slice(buf);
        *buf = block;
        Ok(true)
    };

    // The end of the complete region: just after the last newline.
    let mut end = loop {
        if let Some(i) = buf.iter().rposition(|&b| b == b'\n') {
            break Some(i);
        }
        if !grow(&mut buf, &mut pos)? {
            break None;
        }
    };
    // `end` is relative to buf; track it as a file offset so growing does not shift it.
    let Some(nl) = end.take() else {
        if !buf.is_empty() {
            tail.fragment = Some(buf);
        }
        return Ok(tail);
    };
    let mut line_end = pos + nl as u64; // offset of the newline ending the current line
    if nl + 1 < buf.len() {
        tail.fragment = Some(buf[nl + 1..].to_vec());
    }
    loop {
        let start = loop {
            let rel_end = (line_end - pos) as usize;
            if let Some(i) = buf[..rel_end].iter().rposition(|&b| b == b'\n') {
                break pos + i as u64 + 1;
            }
            if !grow(&mut buf, &mut pos)? {
                break 0; // the first line of the file
            }
        };
        let line = &buf[(start - pos) as usize..(line_end - pos) as usize];
        if !line.is_empty() {
            match Record::from_line(line) {
                Ok(r) => {
                    tail.last = Some((r.seq, line_hash(line)));
                    return Ok(tail);
                }
                Err(_) => tail.skipped_bad_lines += 1,
            }
        }
        if start == 0 {
            return Ok(tail);
        }
        line_end = start - 1;
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::time::Duration;

    use super::*;
    use crate::audit::event::DaemonStop;
    use crate::audit::verify_files;

    /// A one-slot queue, so one record fills it; syslog off.
    fn config(path: &Path) -> AuditConfig {
        let mut c = AuditConfig {
            path: path.to_path_buf(),
            sync: SyncMode::Batch,
            host: Some("gw-test".into()),
            queue: 1,
            ..AuditConfig::default()
        };
        c.syslog.enabled = false;
        c
    }

    /// A record told apart from the others by its `reason`.
    fn named(name: &str) -> AuditEvent {
        AuditEvent::DaemonStop(DaemonStop {
            reason: name.into(),
            ..DaemonStop::default()
        })
    }

    /// The `reason` of every record in the file, read back from disk, in file order.
    fn names_on_disk(path: &Path) -> Vec<(u64, String)> {
        fs::read_to_string(path)
            .expect("read the audit file")
            .lines()
            .map(|line| {
                let r = Record::from_line(line.as_bytes()).expect("a record");
                match r.event {
                    AuditEvent::DaemonStop(s) => (r.seq, s.reason),
                    other => panic!("unexpected record {other:?}"),
                }
            })
            .collect()
    }

    /// Shut the writer down and wait for its thread, which must not have panicked.
    async fn stop(handle: &AuditHandle, thread: std::thread::JoinHandle<()>) {
        handle.shutdown().await.expect("shutdown");
        tokio::task::spawn_blocking(move || thread.join())
            .await
            .expect("join")
            .expect("the writer thread did not panic");
    }

    /// Queue `n` records (`{prefix}0`, `{prefix}1`, ...) before the writer runs, start it, and
    /// wait until all are written: they are its first batch.
    async fn first_batch(
        handle: &AuditHandle,
        task: WriterTask,
        prefix: &str,
        n: usize,
    ) -> std::thread::JoinHandle<()> {
        let producers: Vec<_> = (0..n)
            .map(|i| {
                let h = handle.clone();
                let name = format!("{prefix}{i}");
                tokio::spawn(async move { h.record(named(&name)).await })
            })
            .collect();
        wait_for("the queued records", || handle.queue_depth() == n).await;
        let thread = task.spawn().expect("spawn");
        for t in producers {
            t.await.expect("join").expect("written");
        }
        thread
    }

    /// Poll `done` for up to a minute (a loaded 2-core machine is slow, never this slow).
    async fn wait_for(what: &str, done: impl Fn() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !done() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    /// Collects what a scoped `tracing` subscriber writes.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl Write for Captured {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().expect("log buffer").extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl Captured {
        fn text(&self) -> String {
            String::from_utf8_lossy(&self.0.lock().expect("log buffer")).into_owned()
        }

        /// Run `f` with this buffer as the thread's log sink.
        fn during(&self, f: impl FnOnce()) {
            let sink = self.clone();
            let subscriber = tracing_subscriber::fmt()
                .with_writer(move || sink.clone())
                .with_ansi(false)
                .finish();
            tracing::subscriber::with_default(subscriber, f);
        }
    }

    /// The `Full` arm of `PendingAck::drop`: a record dropped unwaited while the queue has no
    /// room is written by the dropping thread itself, once it has the writer's lock.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_dropped_record_that_finds_the_queue_full_is_written_by_its_dropper_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("audit.jsonl");
        let (handle, task) = open(&config(&path)).expect("open");
        let thread = task.spawn().expect("spawn");
        handle.record(named("first")).await.expect("first record");

        let dropped = handle.submit(named("dropped")).await.expect("submit");
        // The queue's only slot, reserved: `try_send` finds the queue full, and the running
        // writer thread has nothing it could drain to make room.
        let slot = handle.tx.reserve().await.expect("reserve the slot");
        assert_eq!(handle.tx.capacity(), 0, "the queue is full");
        // Hold the writer's lock, so the dropper has to wait for it.
        let (before, dropper) = {
            let guard = lock_writer(&handle.core);
            assert!(guard.accepts_inline(), "the writer is running");
            let dropper = std::thread::spawn(move || drop(dropped));
            let before = handle.stats();
            assert_eq!(before.records_written, 1, "{before:?}");
            assert_eq!(
                names_on_disk(&path).len(),
                1,
                "nothing written while the lock is held"
            );
            (before, dropper)
        };
        tokio::task::spawn_blocking(move || dropper.join())
            .await
            .expect("join")
            .expect("the dropper did not panic");

        // Written by the dropper (inline), not by the writer thread, and only once.
        let stats = handle.stats();
        assert_eq!(stats.inline_records, before.inline_records + 1, "{stats:?}");
        assert_eq!(stats.records_written, 2, "{stats:?}");
        assert_eq!(stats.failed_records, 0, "{stats:?}");
        assert_eq!(
            names_on_disk(&path),
            vec![(1, "first".to_string()), (2, "dropped".to_string())]
        );

        // The queue slot, used: the writer thread takes that record after the dropped one, and
        // the chain goes on with a lone record.
        let (ack, answer) = oneshot::channel();
        let queued = EncodedEvent::new(&named("queued")).expect("encode");
        slot.send(Request::Record(Box::new(queued), ack));
        let queued = answer.await.expect("answered").expect("written");
        assert_eq!(queued.seq, Some(3));
        let last = handle.record(named("last")).await.expect("last record");
        assert_eq!(last.seq, Some(4));
        stop(&handle, thread).await;

        let on_disk = names_on_disk(&path);
        let names: Vec<&str> = on_disk.iter().map(|(_, n)| n.as_str()).collect();
        assert_eq!(names, ["first", "dropped", "queued", "last"]);
        let seqs: Vec<u64> = on_disk.iter().map(|(s, _)| *s).collect();
        assert_eq!(seqs, [1, 2, 3, 4]);
        let report = verify_files(&[&path]);
        assert!(report.ok(), "{report}");
        assert_eq!(report.records, 4);
        assert!(report.starts_at_genesis);
    }

    /// A dropped record that reaches the queue as the writer stops: written (it made the
    /// shutdown's last batch) or counted as lost (the count and the `error` log go together;
    /// the log comes from the writer thread, out of a scoped subscriber's reach), never gone
    /// without a trace.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_dropped_record_queued_during_the_shutdown_is_written_or_counted() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("audit.jsonl");
        let mut c = config(&path);
        c.queue = 4;
        let (handle, task) = open(&c).expect("open");
        let thread = task.spawn().expect("spawn");
        handle.record(named("first")).await.expect("first record");

        let dropped = handle.submit(named("dropped")).await.expect("submit");
        let (stopped, done) = oneshot::channel();
        {
            // With the lock held, the thread takes the shutdown request and waits for the lock.
            let _guard = lock_writer(&handle.core);
            handle
                .tx
                .try_send(Request::Shutdown(stopped))
                .expect("room for the shutdown");
            let deadline = Instant::now() + Duration::from_secs(60);
            while handle.queue_depth() > 0 {
                assert!(Instant::now() < deadline, "the writer took no request");
                std::thread::sleep(Duration::from_millis(2));
            }
            // Queued (there is room) behind the shutdown, no one waiting for its answer.
            drop(dropped);
        }
        done.await.expect("the writer stopped");
        tokio::task::spawn_blocking(move || thread.join())
            .await
            .expect("join")
            .expect("the writer thread did not panic");

        let on_disk = names_on_disk(&path);
        let written = on_disk.iter().filter(|(_, n)| n == "dropped").count();
        let stats = handle.stats();
        assert_eq!(
            written as u64 + stats.failed_records,
            1,
            "written once or counted as lost: {on_disk:?} {stats:?}"
        );
        let report = verify_files(&[&path]);
        assert!(report.ok(), "{report}");
    }

    /// A dropped record nothing can write (the writer not started with its queue full, or
    /// stopped) is lost; that must show in the log and the counters, not vanish.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_dropped_record_the_writer_cannot_take_is_logged_and_counted() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("audit.jsonl");
        let (handle, task) = open(&config(&path)).expect("open");

        // Not started yet: a producer's record waits in the queue and fills it.
        let dropped = handle.submit(named("dropped early")).await.expect("submit");
        let queued = {
            let h = handle.clone();
            tokio::spawn(async move { h.record(named("queued")).await })
        };
        wait_for("the queued record", || handle.queue_depth() == 1).await;
        let log = Captured::default();
        log.during(|| drop(dropped));
        let text = log.text();
        assert!(text.contains("ERROR"), "{text}");
        assert!(text.contains("audit record lost"), "{text}");
        assert!(
            text.contains("has not started and its queue is full"),
            "{text}"
        );
        assert!(
            text.contains("daemon_stop"),
            "names the record's kind: {text}"
        );
        assert_eq!(handle.stats().failed_records, 1);

        // The queued record goes first once the writer runs; the lost one is not there.
        let thread = task.spawn().expect("spawn");
        assert_eq!(queued.await.expect("join").expect("written").seq, Some(1));
        stop(&handle, thread).await;

        // Stopped: the queue is closed.
        let late = handle.submit(named("dropped late")).await.expect("submit");
        let log = Captured::default();
        log.during(|| drop(late));
        let text = log.text();
        assert!(text.contains("audit record lost"), "{text}");
        assert!(text.contains("the audit writer has stopped"), "{text}");
        assert_eq!(handle.stats().failed_records, 2);
        assert_eq!(handle.stats().records_written, 1);

        assert_eq!(names_on_disk(&path), vec![(1, "queued".to_string())]);
        let report = verify_files(&[&path]);
        assert!(report.ok(), "{report}");
        assert_eq!(report.records, 1);
    }

    /// `[audit] gather_after`: a batch of that many records makes the writer wait before the
    /// next one, so the records handed over meanwhile share one `fsync`; a smaller batch, or
    /// any batch with another sync mode, does not.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_large_batch_makes_the_writer_wait_so_the_next_records_share_one_fsync() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("audit.jsonl");
        let mut c = config(&path);
        c.queue = 64;
        c.gather_after = 3;
        let (handle, mut task) = open(&c).expect("open");
        // Longer than the configuration allows, so a slow machine cannot miss the window.
        let wait = Duration::from_secs(2);
        task.gather.as_mut().expect("sync = batch gathers").wait = wait;
        let thread = first_batch(&handle, task, "a", 3).await;
        let answered = Instant::now();
        // Counted once the batch's answers are out.
        wait_for("the writer's wait", || handle.stats().gather_waits == 1).await;
        assert_eq!(handle.stats().batches, 1);

        // Handed over while the writer waits: none is alone, so none writes inline, and all
        // four wait for the end of the wait and share one batch.
        let mut pending = Vec::new();
        for i in 0..4 {
            pending.push(
                handle
                    .submit(named(&format!("b{i}")))
                    .await
                    .expect("submit"),
            );
        }
        let waits: Vec<_> = pending
            .into_iter()
            .map(|p| tokio::spawn(p.wait()))
            .collect();
        let mut acks = Vec::new();
        for w in waits {
            acks.push(w.await.expect("join"));
        }
        assert!(
            answered.elapsed() >= wait / 2,
            "answered after {:?}, before the writer's wait was over",
            answered.elapsed()
        );
        for ack in acks {
            assert!(ack.expect("written").durable);
        }
        wait_for("a wait after the four", || handle.stats().gather_waits == 2).await;
        let stats = handle.stats();
        assert_eq!(stats.batches, 2, "the four shared one batch: {stats:?}");
        assert_eq!(stats.fsyncs, 2, "{stats:?}");
        assert_eq!(stats.inline_records, 0, "{stats:?}");
        stop(&handle, thread).await;
        let report = verify_files(&[&path]);
        assert!(report.ok(), "{report}");
        assert_eq!(report.records, 7);

        // Below the threshold, and with any other sync mode, the writer never waits.
        for (sync, queued) in [
            (SyncMode::Batch, 2),
            (SyncMode::None, 3),
            (SyncMode::Always, 3),
        ] {
            let path = dir.path().join(format!("{sync:?}-{queued}.jsonl"));
            let mut c = config(&path);
            c.queue = 64;
            c.sync = sync;
            c.gather_after = 3;
            let (handle, task) = open(&c).expect("open");
            assert_eq!(task.gather.is_some(), sync == SyncMode::Batch);
            let thread = first_batch(&handle, task, "c", queued).await;
            stop(&handle, thread).await;
            let stats = handle.stats();
            assert_eq!(
                stats.gather_waits, 0,
                "{sync:?}, {queued} records: {stats:?}"
            );
        }
    }
}
