//! A connection's deadline timer: one tokio timer that outlives the waits it bounds.
//!
//! Owns: one [`Sleep`], kept armed from one wait to the next. Must not: know what a wait is
//! for (reads, writes and end-of-message are the connection's business).
//!
//! Why not `tokio::time::timeout` per wait: each one that has to wait puts a timer into
//! tokio's wheel and takes it out again when the wait ends (a lock on the timer driver each
//! way, and a count on the runtime's handle), and a connection waits for a packet, for its
//! end-of-message verdict and for its writes several times per message, while these timeouts
//! (minutes) almost never run out. This timer is moved only when a wait needs an earlier
//! deadline than the one it holds, or when it fires before the deadline of the wait that is
//! polling it. The deadlines of successive waits move forward, so on a busy connection the
//! timer is touched about once per timeout period instead of several times per message. Left
//! armed between waits it may fire while nobody waits on it: the connection's task is then
//! woken once for nothing, and polls its read again.

use std::future::Future;
use std::pin::{Pin, pin};
use std::task::Poll;
use std::time::Duration;

use tokio::time::{Instant, Sleep, sleep_until};

/// `start + limit`, with the limit capped at thirty years: a limit nobody will wait out,
/// configured as a huge number, must not overflow `Instant` (a panic on the connection).
pub fn after(start: Instant, limit: Duration) -> Instant {
    const FAR: Duration = Duration::from_secs(30 * 365 * 86_400);
    start + limit.min(FAR)
}

/// Poll `f` once with the caller's context: `Ready` with its output, or `Pending` (its waker
/// is then registered as for any poll).
async fn poll_once<F: Future + ?Sized>(mut f: Pin<&mut F>) -> Poll<F::Output> {
    std::future::poll_fn(|cx| Poll::Ready(f.as_mut().poll(cx))).await
}

/// A deadline timer reused across waits (see the module doc).
#[derive(Default)]
pub struct Deadline {
    sleep: Option<Pin<Box<Sleep>>>,
}

impl Deadline {
    pub fn new() -> Self {
        Deadline::default()
    }

    /// Resolves once `deadline` has passed; never before it.
    pub async fn until(&mut self, deadline: Instant) {
        let sleep = self
            .sleep
            .get_or_insert_with(|| Box::pin(sleep_until(deadline)));
        loop {
            // Armed later than this wait may last: bring it forward. Fired already, for an
            // earlier wait: arm it for this one. Otherwise it fires at or before `deadline`
            // and is looked at again then.
            if sleep.deadline() > deadline || (sleep.is_elapsed() && sleep.deadline() < deadline) {
                sleep.as_mut().reset(deadline);
            }
            sleep.as_mut().await;
            if sleep.deadline() >= deadline {
                return;
            }
        }
    }

    /// `work`'s output, or `None` when it is still pending `limit` after this call. Work
    /// that is ready at once (most writes) reads no clock and touches no timer.
    pub async fn bounded<F: Future>(&mut self, limit: Duration, work: F) -> Option<F::Output> {
        let mut work = pin!(work);
        if let Poll::Ready(v) = poll_once(work.as_mut()).await {
            return Some(v);
        }
        let deadline = after(Instant::now(), limit);
        tokio::select! {
            biased;
            v = &mut work => Some(v),
            () = self.until(deadline) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Paused time: the runtime's clock moves only when every task waits on a timer, so these
    // check the deadlines exactly.

    #[tokio::test(start_paused = true)]
    async fn a_wait_ends_at_its_own_deadline_whatever_the_timer_held() {
        let mut t = Deadline::new();
        let start = Instant::now();
        // First use arms it.
        t.until(start + Duration::from_secs(10)).await;
        assert_eq!(Instant::now(), start + Duration::from_secs(10));
        // Fired for an earlier wait: re-armed for this one.
        let later = Instant::now() + Duration::from_secs(30);
        t.until(later).await;
        assert_eq!(Instant::now(), later);
        // Armed later than an earlier deadline: brought forward.
        let armed = Instant::now() + Duration::from_secs(100);
        {
            let mut waiting = pin!(t.until(armed));
            assert!(poll_once(waiting.as_mut()).await.is_pending());
        }
        let sooner = Instant::now() + Duration::from_secs(5);
        t.until(sooner).await;
        assert_eq!(Instant::now(), sooner);
    }

    #[tokio::test(start_paused = true)]
    async fn a_timer_armed_for_an_earlier_wait_fires_early_and_is_re_armed() {
        let mut t = Deadline::new();
        let start = Instant::now();
        // A wait for 10 s that ends (dropped) at once leaves the timer armed at 10 s.
        {
            let mut first = pin!(t.until(start + Duration::from_secs(10)));
            assert!(poll_once(first.as_mut()).await.is_pending());
        }
        // The next wait is for 25 s: the timer fires at 10 s, is re-armed, and the wait
        // ends at 25 s, not before.
        t.until(start + Duration::from_secs(25)).await;
        assert_eq!(Instant::now(), start + Duration::from_secs(25));
    }

    #[tokio::test(start_paused = true)]
    async fn bounded_gives_ready_work_at_once_and_stops_pending_work_at_the_limit() {
        let mut t = Deadline::new();
        let start = Instant::now();
        assert_eq!(
            t.bounded(Duration::from_secs(1), async { 7 }).await,
            Some(7)
        );
        assert_eq!(
            Instant::now(),
            start,
            "ready work must not wait on the timer"
        );
        let slow = tokio::time::sleep(Duration::from_secs(60));
        assert_eq!(t.bounded(Duration::from_secs(3), slow).await, None);
        assert_eq!(Instant::now(), start + Duration::from_secs(3));
        let quick = tokio::time::sleep(Duration::from_secs(2));
        assert_eq!(t.bounded(Duration::from_secs(3), quick).await, Some(()));
        assert_eq!(Instant::now(), start + Duration::from_secs(5));
    }

    #[tokio::test(start_paused = true)]
    async fn a_huge_limit_is_a_far_deadline_not_a_panic() {
        let start = Instant::now();
        assert!(after(start, Duration::MAX) > start + Duration::from_secs(86_400 * 365));
        let mut t = Deadline::new();
        let quick = tokio::time::sleep(Duration::from_secs(2));
        assert_eq!(t.bounded(Duration::MAX, quick).await, Some(()));
        // A far deadline armed, then a near one: brought forward as usual.
        let soon = Instant::now() + Duration::from_secs(1);
        t.until(soon).await;
        assert_eq!(Instant::now(), soon);
    }
}
