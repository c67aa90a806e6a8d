use std::fs;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::*;
use crate::audit::event::DaemonStop;
use crate::audit::record::Record;
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
