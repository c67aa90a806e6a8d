//! The audit file itself: one [`Writer`] owns it, stamps and chains each batch's lines,
//! writes and syncs them, rotates the file, survives a failing disk (cut back, roll back,
//! retry), keeps the preallocated zeros after the data, and recovers the chain state from
//! the end of an existing file at start.
//!
//! It answers each record's producer once the record's batch is durable (or has failed).
//! Must not: own the queue, the writer thread or the inline path that bring it records
//! (the parent module's), or know about mail.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{DirBuilderExt, FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use tokio::sync::{mpsc, oneshot, watch};

use super::super::config::{AuditConfig, SyncMode};
use super::super::event::{
    AuditEvent, ChainResumed, EventKind, Severity, SinkRecovered, SinkTrouble,
};
use super::super::record::{EncodedEvent, GENESIS_PREV, Record, line_hash, now_rfc3339};
use super::super::syslog::{LineMeta, SyslogForwarder};
use super::{Ack, AckTx, Answer, AuditError, Request, Shared, SinkHealth, send_answers};

#[derive(Debug)]
struct Outage {
    since: String,
    since_instant: Instant,
    error: String,
    failed: u64,
}

#[derive(Debug)]
pub(super) struct Writer {
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
    pub(super) shared: Arc<Shared>,
    health: watch::Sender<SinkHealth>,
    /// Answers go straight to their producers (a producer is writing its own record on its
    /// own thread), not through the dispatcher.
    direct: bool,
    /// The writer thread has started: records queued before it go first.
    pub(super) running: bool,
    /// The writer thread has stopped (shutdown): no more records, from any thread.
    pub(super) stopped: bool,
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
    /// Open (create) the audit file and recover its chain: cut zeros a crash left after the
    /// data, read the last record's `seq` and hash (into `shared` too), and queue the
    /// `audit_chain_resumed` record when the file ends in an incomplete line.
    pub(super) fn open(
        config: &AuditConfig,
        host: String,
        shared: Arc<Shared>,
        syslog: Option<SyslogForwarder>,
        health: watch::Sender<SinkHealth>,
    ) -> Result<Writer, AuditError> {
        let path = config.path.clone();
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
        shared.last_seq.store(recovered.seq, Ordering::Relaxed);

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

        Ok(Writer {
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
            shared,
            health,
            direct: false,
            running: false,
            stopped: false,
        })
    }

    /// A producer's way to skip the writer thread: when the thread is idle (its queue empty,
    /// the lock free), the producer writes and syncs its own record, under the same lock and
    /// through the same [`Writer::commit`] as a batch, so the chain, rotation and failure rules
    /// are the thread's own. That spares the two thread hand-offs of the queue (producer to
    /// writer, writer to dispatcher) which cost a lone message more than its `fdatasync`. A
    /// producer never waits for the lock: when the thread is busy, the record goes to the queue
    /// and joins the next batch, so under load the group commit works as before. Returns the
    /// request back when it must be queued.
    pub(super) fn try_inline(
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
    pub(super) fn accepts_inline(&self) -> bool {
        self.running && !self.stopped
    }

    /// Commit one producer's record on the caller's thread, answering it directly.
    pub(super) fn commit_inline(&mut self, event: Box<EncodedEvent>, ack: AckTx) {
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
    pub(super) fn process(&mut self, batch: Vec<Request>) -> Option<oneshot::Sender<()>> {
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

    pub(super) fn final_sync(&mut self) {
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

pub(super) fn kernel_hostname() -> String {
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
