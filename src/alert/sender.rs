//! The alert task: queue, rate limit, digest, retry with backoff, give up loudly.
//!
//! [`AlertHandle::raise`] is a non-blocking `try_send` into a bounded queue; a full queue
//! drops the incident, counts it, and the task reports the count (log, audit record
//! `alerts_dropped`, and a line in the next alert mail). One background task owns delivery over
//! SMTP with lettre. A failed delivery is retried with doubling delays; an incident not delivered
//! within `give_up_after` is logged at `error` with all its fields and audited as
//! `alert_undeliverable`, so nothing is lost silently. Nothing here is ever awaited on a
//! message's path.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use lettre::message::header::ContentType;
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::config::{AlertMode, AlertSettings, StartTls};
use super::incident::{Incident, IncidentKind};
use crate::audit::AuditHandle;
use crate::audit::event::{AlertDelivered, AlertUndeliverable, AlertsDropped, AuditEvent};

/// What `raise` did with an incident.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Raised {
    /// Queued for delivery.
    Queued,
    /// The queue was full; counted and reported by the task.
    Dropped,
    /// Alerts are disabled (the incident is still in the audit record of its message).
    Disabled,
}

/// Counters for metrics and tests.
#[derive(Debug, Default)]
pub struct AlertStats {
    /// Incidents queued.
    pub raised: AtomicU64,
    /// Incidents dropped because the queue was full.
    pub dropped: AtomicU64,
    /// Alert mails the relay accepted.
    pub mails_sent: AtomicU64,
    /// Incidents delivered (in those mails).
    pub incidents_delivered: AtomicU64,
    /// Failed delivery attempts.
    pub failed_attempts: AtomicU64,
    /// Incidents given up as undeliverable.
    pub undeliverable: AtomicU64,
}

/// The producers' side; cheap to clone.
#[derive(Debug, Clone)]
pub struct AlertHandle {
    tx: Option<mpsc::Sender<Incident>>,
    stats: Arc<AlertStats>,
    unreported_drops: Arc<AtomicU64>,
    stop: Option<mpsc::Sender<oneshot::Sender<()>>>,
}

impl AlertHandle {
    /// A handle that accepts and discards incidents (`[alerts] enabled = false`).
    pub fn disabled() -> Self {
        AlertHandle {
            tx: None,
            stats: Arc::new(AlertStats::default()),
            unreported_drops: Arc::new(AtomicU64::new(0)),
            stop: None,
        }
    }

    /// Start the alert task on the current tokio runtime. `audit` receives the
    /// `alert_delivered` / `alert_undeliverable` / `alerts_dropped` records.
    pub fn spawn(settings: AlertSettings, audit: Option<AuditHandle>) -> Self {
        let (tx, rx) = mpsc::channel(settings.queue);
        let (stop_tx, stop_rx) = mpsc::channel(1);
        let stats = Arc::new(AlertStats::default());
        let unreported_drops = Arc::new(AtomicU64::new(0));
        let task = AlertTask {
            transport: build_transport(&settings),
            backoff: settings.retry_initial,
            settings,
            audit,
            rx,
            stop_rx,
            stats: stats.clone(),
            unreported_drops: unreported_drops.clone(),
            pending: VecDeque::new(),
            sent_at: VecDeque::new(),
            next_attempt: Instant::now(),
            window_start: Instant::now(),
            drops_for_mail: 0,
            last_error: String::new(),
            counter: 0,
        };
        tokio::spawn(task.run());
        AlertHandle {
            tx: Some(tx),
            stats,
            unreported_drops,
            stop: Some(stop_tx),
        }
    }

    /// Hand an incident to the alert task. Never blocks and never fails the caller.
    pub fn raise(&self, incident: Incident) -> Raised {
        let Some(tx) = &self.tx else {
            return Raised::Disabled;
        };
        match tx.try_send(incident) {
            Ok(()) => {
                self.stats.raised.fetch_add(1, Ordering::Relaxed);
                Raised::Queued
            }
            Err(_) => {
                self.stats.dropped.fetch_add(1, Ordering::Relaxed);
                self.unreported_drops.fetch_add(1, Ordering::Relaxed);
                Raised::Dropped
            }
        }
    }

    /// Counters.
    pub fn stats(&self) -> &AlertStats {
        &self.stats
    }

    /// Stop the task: one last delivery attempt of everything pending, then whatever is still
    /// undelivered is logged and audited as undeliverable. Waits for that to finish.
    pub async fn shutdown(&self) {
        if let Some(stop) = &self.stop {
            let (tx, rx) = oneshot::channel();
            if stop.send(tx).await.is_ok() {
                let _ = rx.await;
            }
        }
    }
}

fn build_transport(s: &AlertSettings) -> Result<AsyncSmtpTransport<Tokio1Executor>, String> {
    let mut b = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(s.relay_host.clone())
        .port(s.relay_port)
        .timeout(Some(s.relay_timeout));
    b = match s.starttls {
        StartTls::None => b.tls(Tls::None),
        StartTls::Opportunistic | StartTls::Required => {
            let params = TlsParameters::new(s.relay_host.clone())
                .map_err(|e| format!("TLS parameters for {}: {e}", s.relay_host))?;
            if s.starttls == StartTls::Required {
                b.tls(Tls::Required(params))
            } else {
                b.tls(Tls::Opportunistic(params))
            }
        }
    };
    if let Some((user, pass)) = &s.credentials {
        b = b.credentials(Credentials::new(user.clone(), pass.clone()));
    }
    Ok(b.build())
}

struct Pending {
    incident: Incident,
    since: Instant,
    attempts: u32,
}

struct AlertTask {
    settings: AlertSettings,
    transport: Result<AsyncSmtpTransport<Tokio1Executor>, String>,
    audit: Option<AuditHandle>,
    rx: mpsc::Receiver<Incident>,
    stop_rx: mpsc::Receiver<oneshot::Sender<()>>,
    stats: Arc<AlertStats>,
    unreported_drops: Arc<AtomicU64>,
    pending: VecDeque<Pending>,
    /// When each mail of the current rate period was sent.
    sent_at: VecDeque<Instant>,
    next_attempt: Instant,
    backoff: Duration,
    window_start: Instant,
    /// Drops not yet mentioned in a mail.
    drops_for_mail: u64,
    last_error: String,
    counter: u64,
}

impl AlertTask {
    async fn run(mut self) {
        let mut stop: Option<oneshot::Sender<()>> = None;
        loop {
            let wake = self.next_wake();
            tokio::select! {
                got = self.rx.recv() => match got {
                    Some(incident) => self.enqueue(incident),
                    None => break,
                },
                req = self.stop_rx.recv() => {
                    stop = req;
                    break;
                }
                _ = tokio::time::sleep_until(wake) => {}
            }
            while let Ok(incident) = self.rx.try_recv() {
                self.enqueue(incident);
            }
            self.tick(false).await;
        }
        // Last chance: take what is queued, try once, give up the rest loudly.
        self.rx.close();
        while let Ok(incident) = self.rx.try_recv() {
            self.pending.push_back(Pending {
                incident,
                since: Instant::now(),
                attempts: 0,
            });
        }
        self.tick(true).await;
        let rest: Vec<Pending> = self.pending.drain(..).collect();
        for p in rest {
            self.give_up(p, "markgate stopped before the alert could be delivered")
                .await;
        }
        if let Some(done) = stop {
            let _ = done.send(());
        }
    }

    /// Queue an incident; in digest mode the first incident after a quiet spell opens the
    /// window, so a digest goes out one window after the first incident it carries.
    fn enqueue(&mut self, incident: Incident) {
        if self.pending.is_empty() && self.settings.mode == AlertMode::Digest {
            self.window_start = Instant::now();
        }
        self.pending.push_back(Pending {
            incident,
            since: Instant::now(),
            attempts: 0,
        });
    }

    fn next_wake(&self) -> Instant {
        let now = Instant::now();
        let idle = now + Duration::from_secs(3600);
        if self.pending.is_empty() {
            // Only drops can need reporting without pending incidents.
            return if self.unreported_drops.load(Ordering::Relaxed) > 0 {
                now
            } else {
                idle.min(now + Duration::from_secs(1))
            };
        }
        let mut wake = self.next_attempt;
        if self.settings.mode == AlertMode::Digest {
            wake = wake.max(self.window_start + self.settings.window);
        }
        if let Some(free) = self.rate_free_at() {
            wake = wake.max(free);
        }
        if let Some(oldest) = self.pending.iter().map(|p| p.since).min() {
            wake = wake.min(oldest + self.settings.give_up_after);
        }
        wake.max(now)
    }

    /// When the rate limit allows the next mail, if it does not now.
    fn rate_free_at(&self) -> Option<Instant> {
        if (self.sent_at.len() as u32) < self.settings.max_mails {
            None
        } else {
            self.sent_at.front().map(|t| *t + self.settings.rate_period)
        }
    }

    async fn tick(&mut self, final_attempt: bool) {
        let now = Instant::now();
        while self
            .sent_at
            .front()
            .is_some_and(|t| now.duration_since(*t) >= self.settings.rate_period)
        {
            self.sent_at.pop_front();
        }

        let dropped = self.unreported_drops.swap(0, Ordering::Relaxed);
        if dropped > 0 {
            tracing::error!(
                dropped,
                "alert queue full: incidents were dropped (they remain in the audit records of their messages)"
            );
            self.drops_for_mail += dropped;
            self.audit(AuditEvent::AlertsDropped(AlertsDropped { count: dropped }))
                .await;
        }

        // Give up what waited too long.
        let give_up = self.settings.give_up_after;
        let mut kept = VecDeque::new();
        let mut expired = Vec::new();
        for p in self.pending.drain(..) {
            if now.duration_since(p.since) >= give_up {
                expired.push(p);
            } else {
                kept.push_back(p);
            }
        }
        self.pending = kept;
        for p in expired {
            let why = if self.last_error.is_empty() {
                "not delivered within give_up_after".to_string()
            } else {
                self.last_error.clone()
            };
            self.give_up(p, &why).await;
        }

        if self.pending.is_empty() {
            return;
        }
        if !final_attempt {
            if now < self.next_attempt || self.rate_free_at().is_some() {
                return;
            }
            if self.settings.mode == AlertMode::Digest
                && now < self.window_start + self.settings.window
            {
                return;
            }
        }

        // Immediate mode sends one mail per incident while the rate allows; when the budget is
        // down to the last mail (or in digest mode, or at shutdown), everything goes together.
        loop {
            if self.pending.is_empty() {
                break;
            }
            let budget = self
                .settings
                .max_mails
                .saturating_sub(self.sent_at.len() as u32);
            if budget == 0 && !final_attempt {
                break;
            }
            let take = if self.settings.mode == AlertMode::Immediate && budget > 1 && !final_attempt
            {
                1
            } else {
                self.pending.len()
            };
            let batch: Vec<Pending> = self.pending.drain(..take).collect();
            match self.deliver(&batch).await {
                Ok(message_id) => {
                    self.sent_at.push_back(Instant::now());
                    self.backoff = self.settings.retry_initial;
                    self.next_attempt = Instant::now();
                    self.last_error.clear();
                    self.drops_for_mail = 0;
                    self.stats.mails_sent.fetch_add(1, Ordering::Relaxed);
                    self.stats
                        .incidents_delivered
                        .fetch_add(batch.len() as u64, Ordering::Relaxed);
                    let attempts = batch.iter().map(|p| p.attempts + 1).max().unwrap_or(1);
                    self.audit(AuditEvent::AlertDelivered(AlertDelivered {
                        message_id,
                        to: self
                            .settings
                            .to
                            .iter()
                            .map(|m| m.email.to_string())
                            .collect(),
                        incidents: batch.len() as u64,
                        kinds: batch.iter().map(|p| p.incident.kind).collect(),
                        attempts,
                        incident_refs: batch
                            .iter()
                            .map(|p| crate::audit::event::IncidentRef::of(&p.incident))
                            .collect(),
                    }))
                    .await;
                }
                Err(e) => {
                    self.stats.failed_attempts.fetch_add(1, Ordering::Relaxed);
                    if self.last_error.is_empty() {
                        tracing::warn!(error = %e, relay = %self.settings.relay_host,
                            port = self.settings.relay_port, "alert delivery failed; retrying with backoff");
                    }
                    self.last_error = e;
                    for mut p in batch.into_iter().rev() {
                        p.attempts += 1;
                        self.pending.push_front(p);
                    }
                    self.next_attempt = Instant::now() + self.backoff;
                    self.backoff = (self.backoff * 2).min(self.settings.retry_max);
                    break;
                }
            }
            if self.settings.mode == AlertMode::Digest {
                break;
            }
        }
    }

    async fn give_up(&mut self, p: Pending, why: &str) {
        self.stats.undeliverable.fetch_add(1, Ordering::Relaxed);
        let json = serde_json::to_string(&p.incident).unwrap_or_default();
        tracing::error!(kind = %p.incident.kind, attempts = p.attempts, error = why,
            incident = %json, "incident alert undeliverable; recorded in the audit trail");
        self.audit(AuditEvent::AlertUndeliverable(AlertUndeliverable {
            incident: p.incident,
            attempts: p.attempts,
            last_error: why.to_string(),
        }))
        .await;
    }

    async fn audit(&self, event: AuditEvent) {
        if let Some(a) = &self.audit
            && let Err(e) = a.record(event).await
        {
            tracing::error!(error = %e, "could not audit an alert event");
        }
    }

    async fn deliver(&mut self, batch: &[Pending]) -> Result<String, String> {
        let transport = self.transport.as_ref().map_err(Clone::clone)?;
        self.counter += 1;
        let message_id = format!(
            "<alert.{}.{}.{}@{}>",
            time::OffsetDateTime::now_utc().unix_timestamp(),
            std::process::id(),
            self.counter,
            self.settings.host
        );
        let subject = subject(&self.settings.subject_prefix, batch);
        let body = body(&self.settings.host, batch, self.drops_for_mail);
        let mut builder = Message::builder()
            .from(self.settings.from.clone())
            .subject(subject)
            .message_id(Some(message_id.clone()))
            .header(ContentType::TEXT_PLAIN);
        for to in &self.settings.to {
            builder = builder.to(to.clone());
        }
        let mail = builder
            .body(body)
            .map_err(|e| format!("building the alert mail: {e}"))?;
        transport.send(mail).await.map_err(|e| {
            format!(
                "relay {}:{}: {e}",
                self.settings.relay_host, self.settings.relay_port
            )
        })?;
        Ok(message_id)
    }
}

fn subject(prefix: &str, batch: &[Pending]) -> String {
    match batch {
        [one] => format!(
            "{prefix} {}: {}",
            one.incident.kind.title(),
            one.incident.summary
        ),
        many => {
            let mut kinds: Vec<IncidentKind> = many.iter().map(|p| p.incident.kind).collect();
            kinds.sort();
            kinds.dedup();
            let names: Vec<&str> = kinds.iter().map(|k| k.as_str()).collect();
            format!(
                "{prefix} digest: {} incidents ({})",
                many.len(),
                names.join(", ")
            )
        }
    }
}

fn body(host: &str, batch: &[Pending], drops: u64) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    let _ = writeln!(s, "markgate on {host} reports {} incident(s).", batch.len());
    if drops > 0 {
        let _ = writeln!(
            s,
            "\n{drops} further incident(s) were dropped because the alert queue was full; \
             see the audit records of their messages."
        );
    }
    for (i, p) in batch.iter().enumerate() {
        let x = &p.incident;
        let _ = writeln!(s, "\n--- incident {} of {} ---", i + 1, batch.len());
        let _ = writeln!(s, "kind:       {} ({})", x.kind.title(), x.kind.as_str());
        let _ = writeln!(s, "time:       {}", x.time);
        let _ = writeln!(s, "summary:    {}", x.summary);
        let opt = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
        let _ = writeln!(s, "queue id:   {}", opt(&x.queue_id));
        let _ = writeln!(s, "message-id: {}", opt(&x.message_id));
        let _ = writeln!(s, "sender:     {}", opt(&x.sender));
        let _ = writeln!(
            s,
            "recipients: {}",
            if x.recipients.is_empty() {
                "-".into()
            } else {
                x.recipients.join(", ")
            }
        );
        let _ = writeln!(s, "level:      {}", opt(&x.level));
        let _ = writeln!(s, "rule:       {}", opt(&x.rule));
        let _ = writeln!(
            s,
            "audit seq:  {}",
            x.audit_seq
                .map(|n| n.to_string())
                .unwrap_or_else(|| "-".into())
        );
        for d in &x.details {
            let _ = writeln!(s, "  {d}");
        }
    }
    let _ = writeln!(
        s,
        "\nThe audit trail holds the full decision for each message:\nmarkgate audit report."
    );
    wrap(&s, 72)
}

/// Wrap lines longer than `width` at spaces (continuations indented; lettre picks 7bit only
/// for lines under 75 octets), so the mail goes as
/// readable 7bit/8bit text rather than quoted-printable.
fn wrap(text: &str, width: usize) -> String {
    const INDENT: &str = "    ";
    let mut out = String::with_capacity(text.len() + 64);
    for line in text.lines() {
        let mut rest = line;
        let mut first = true;
        loop {
            let room = if first { width } else { width - INDENT.len() };
            if !first {
                out.push_str(INDENT);
            }
            if rest.chars().count() <= room {
                out.push_str(rest);
                out.push('\n');
                break;
            }
            let limit = rest.char_indices().nth(room).map_or(rest.len(), |(i, _)| i);
            let cut = rest[..limit].rfind(' ').filter(|&i| i > 0).unwrap_or(limit);
            out.push_str(rest[..cut].trim_end());
            out.push('\n');
            rest = rest[cut..].trim_start();
            first = false;
        }
    }
    out
}

/// Raise an [`IncidentKind::AuditFailure`] incident each time the audit sink starts failing
/// (one per outage, not per refused record). The daemon calls this once at start-up with
/// [`AuditHandle::health`]; the task ends when the audit writer is gone.
pub fn watch_audit_health(
    mut health: tokio::sync::watch::Receiver<crate::audit::SinkHealth>,
    alerts: AlertHandle,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        while health.changed().await.is_ok() {
            let state = health.borrow_and_update().clone();
            if let crate::audit::SinkHealth::Failing { since, error } = state {
                let mut incident = Incident::new(
                    IncidentKind::AuditFailure,
                    "the audit file cannot be written; mail is tempfailed (or passes unaudited \
                     with fail_open) until it recovers",
                );
                incident.details = vec![format!("since: {since}"), format!("error: {error}")];
                alerts.raise(incident);
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::wrap;

    #[test]
    fn wrap_keeps_every_line_within_width() {
        let long = format!("summary:    {}", "word ".repeat(40));
        let unbroken = "x".repeat(200);
        for text in [long.as_str(), unbroken.as_str(), "short", ""] {
            let w = wrap(text, 72);
            assert!(w.lines().all(|l| l.chars().count() <= 72), "{w}");
            let joined: String = w.split_whitespace().collect();
            let orig: String = text.split_whitespace().collect();
            assert_eq!(joined, orig, "no text lost");
        }
    }
}
