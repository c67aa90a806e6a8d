//! The last part of end-of-message, after the decision: the wait for the audit record to be
//! durable, and what may only happen once it is (incident alerts, sender notices, the metrics
//! count and the `message decided` log line).
//!
//! Owns: turning a decided message into the milter layer's [`Staged`] answer. The modifications
//! are handed over at once, so the MTA applies them while the audit writer syncs; the final
//! verdict is a pending future that resolves once the record is durable, or to a 4xx when it
//! cannot be made durable (the MTA then drops the modifications it already has, and retries
//! the message). The promise is unchanged: no accept reaches the MTA before its record is on
//! disk. The `message decided` line goes to the milter layer as the verdict's tail
//! ([`Settled::then`]), written once the answer is on its way, so the MTA never waits for the
//! log. Must not: decide anything about the message (the verdict is `filter`'s), or know the
//! protocol (the milter layer sends what it is given).

use std::time::Instant;

use tracing::{error, info};

use super::{
    Evaluation, Joined, MessageMeta, incidents, sender_notice, tempfail_reply, verdict_name,
};
use crate::alert::AlertHandle;
use crate::audit::PendingAck;
use crate::filter::Notices;
use crate::metrics::Metrics;
use crate::milter::handler::{LaterVerdict, Modification, Outcome, Settled, Staged, Verdict};
use crate::policy::decide::{Decision, Direction, LevelSource};

/// Pending on its first poll, ready on the next. The task is woken at once, the ordinary way:
/// not through tokio's `yield_now`, which defers the wake until the worker has polled its I/O
/// driver, one more `epoll_wait` for every message.
struct PendingOnce(bool);

impl std::future::Future for PendingOnce {
    type Output = ();
    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<()> {
        if self.0 {
            return std::task::Poll::Ready(());
        }
        self.0 = true;
        cx.waker().wake_by_ref();
        std::task::Poll::Pending
    }
}

/// Everything the verdict's tail needs, owned, so the pending verdict can outlive the
/// handler call that made it.
pub(super) struct Settle {
    pub alerts: AlertHandle,
    pub notices: Notices,
    pub metrics: Option<Metrics>,
    pub started: Instant,
    pub eval: Box<Evaluation>,
    pub meta: MessageMeta,
}

impl Settle {
    /// The staged answer: `outcome`'s modifications now and its verdict once `pending` (the
    /// message's audit record; `None` when there is no audit trail) is durable.
    pub fn staged(self, outcome: Outcome, pending: Option<PendingAck>) -> Staged {
        let Outcome {
            verdict,
            modifications,
        } = outcome;
        let edits = modifications.len();
        let verdict = match pending {
            // Known now, but still handed over as a settled verdict: the milter layer sends it
            // in the same write as the modifications and writes the log line after it, as it
            // does once a record is durable.
            None => {
                let settled = self.finish(verdict, edits, None);
                LaterVerdict::Later(Box::pin(std::future::ready(Ok(settled))))
            }
            Some(pending) => LaterVerdict::Later(Box::pin(async move {
                // Not ready on the first poll, so the milter layer sends the modifications
                // first: the record is only handed to the writer (and, when the writer is
                // idle, written on this thread) as the verdict is awaited.
                PendingOnce(false).await;
                Ok(self.after_ack(verdict, edits, pending).await)
            })),
        };
        Staged {
            modifications,
            verdict,
        }
    }

    /// The verdict once the record is durable; the log line (and freeing the message's state)
    /// is left for after the answer is written, so the MTA does not wait for it.
    async fn after_ack(self, verdict: Verdict, edits: usize, pending: PendingAck) -> Settled {
        match pending.wait().await {
            Ok(ack) => self.finish(verdict, edits, ack.seq),
            Err(e) => {
                error!(queue_id = self.meta.queue_id.as_deref().unwrap_or(""), error = %e, "audit record not written; answering 4xx so the mail is retried, not passed unaudited");
                count(
                    self.metrics.as_ref(),
                    self.started,
                    Some(&self.eval.decision),
                    "tempfail",
                );
                Verdict::Tempfail(Some(tempfail_reply("audit trail unavailable"))).into()
            }
        }
    }

    /// The record is durable (or there is no audit trail): raise what the decision raises,
    /// count it, and give the verdict with its log line left for after the answer.
    fn finish(self, verdict: Verdict, edits: usize, audit_seq: Option<u64>) -> Settled {
        let Settle {
            alerts,
            notices,
            metrics,
            started,
            eval,
            meta,
        } = self;
        for mut incident in incidents(&eval, &meta) {
            incident.audit_seq = audit_seq;
            alerts.raise(incident);
        }
        if let Some(notice) = sender_notice(&eval) {
            notices.send(notice);
        }
        count(
            metrics.as_ref(),
            started,
            Some(&eval.decision),
            if eval.decision.shadow.is_some() {
                "shadow"
            } else {
                verdict_name(&eval.verdict)
            },
        );
        let decided = Decided { eval, meta, edits };
        Settled {
            verdict,
            then: Some(Box::new(move || decided.log())),
        }
    }
}

/// A decided message's `message decided` log line, still to be written. It owns the
/// message's evaluation, so writing it also frees that.
struct Decided {
    eval: Box<Evaluation>,
    meta: MessageMeta,
    edits: usize,
}

impl Decided {
    fn log(self) {
        let Decided { eval, meta, edits } = self;
        info!(
            queue_id = meta.queue_id.as_deref().unwrap_or(""),
            from = %eval.envelope.sender,
            recipients = eval.envelope.recipients.len(),
            direction = ?eval.decision.direction,
            level = %eval.decision.effective.level_name,
            verdict = verdict_name(&eval.verdict),
            removed = eval.removed_count(),
            edits,
            // >0: a large message judged from a reduced copy (see `crate::large`).
            elided_runs = eval.elided.len(),
            rules = %Joined(&eval.decision.rule_ids),
            mode = ?eval.decision.mode,
            "message decided"
        );
    }
}

/// The one-step form of a staged answer ([`crate::milter::Handler::end_of_message`]): wait
/// for the verdict; a tempfail carries no modifications (the MTA would drop them).
pub(super) async fn resolve(staged: Staged) -> Result<Outcome, crate::milter::HandlerError> {
    let verdict = match staged.verdict {
        LaterVerdict::Now(v) => v,
        LaterVerdict::Later(p) => {
            let settled = p.await?;
            if let Some(then) = settled.then {
                then();
            }
            settled.verdict
        }
    };
    let modifications: Vec<Modification> = match verdict {
        Verdict::Tempfail(_) => Vec::new(),
        _ => staged.modifications,
    };
    Ok(Outcome {
        verdict,
        modifications,
    })
}

/// Count one answered message in `metrics` (by direction, level, verdict and rule, with the
/// end-of-message latency).
pub(super) fn count(
    metrics: Option<&Metrics>,
    started: Instant,
    d: Option<&Decision>,
    verdict: &str,
) {
    if let Some(m) = metrics {
        let (direction, level, rules) = match d {
            Some(d) => (
                match d.direction {
                    Direction::Outbound => "outbound",
                    Direction::Inbound => "inbound",
                },
                if d.effective.source == LevelSource::Assumed {
                    "none"
                } else {
                    d.effective.level_name.as_str()
                },
                d.rule_ids.iter().map(String::as_str).collect::<Vec<_>>(),
            ),
            None => ("unknown", "none", Vec::new()),
        };
        m.message_decided(direction, level, verdict, &rules, started.elapsed());
    }
}
