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
//!
//! This file holds the producers' side (handle, hand-over, answers) and the writer thread;
//! `writer/file.rs` holds the audit file itself (the `Writer`: opening and chain recovery,
//! commit, rotation, outages).

use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use tokio::sync::{mpsc, oneshot, watch};

use super::config::{AuditConfig, SyncMode};
use super::event::{AuditEvent, EventKind};
use super::record::EncodedEvent;
use super::syslog::{SyslogForwarder, SyslogStats};

mod file;
#[cfg(test)]
mod tests;

pub use file::{Recovered, data_len, numbered, recover};
use file::{Writer, kernel_hostname};

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
    let host = config.host.clone().unwrap_or_else(kernel_hostname);
    let shared = Arc::new(Shared::default());
    let syslog = config
        .syslog
        .enabled
        .then(|| SyslogForwarder::new(&config.syslog, &host, shared.syslog.clone()));
    let (tx, rx) = mpsc::channel(config.queue);
    let (health_tx, health_rx) = watch::channel(SinkHealth::Healthy);
    let writer = Writer::open(config, host, Arc::clone(&shared), syslog, health_tx)?;
    let core = Arc::new(std::sync::Mutex::new(writer));
    let handle = AuditHandle {
        tx,
        core: Arc::clone(&core),
        shared,
        health: health_rx,
        path: config.path.clone(),
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
