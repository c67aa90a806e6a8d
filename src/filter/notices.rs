//! Notices to envelope senders whose recipients were removed: built by
//! [`super::sender_notice`], sent over SMTP from their own task, never on the message's path.
//! (Moved here from `filter.rs` unchanged, to keep that file from growing.)

use std::time::Duration;

use tracing::{error, info, warn};

/// A short notice mail to an envelope sender.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notice {
    pub to: String,
    pub subject: String,
    pub body: String,
}

/// Sends [`Notice`]s through the configured relay (the `[alerts.relay]` settings), each from
/// the null sender so a bounce can never loop back to us.
#[derive(Clone)]
pub struct Notices {
    tx: Option<tokio::sync::mpsc::Sender<Notice>>,
}

impl std::fmt::Debug for Notices {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Notices")
            .field("enabled", &self.tx.is_some())
            .finish()
    }
}

impl Notices {
    /// No notices (tests, or no relay).
    pub fn disabled() -> Self {
        Notices { tx: None }
    }

    /// Start the notice task, sending through `host:port` as `from`: on the current tokio
    /// runtime when there is one, else on a small runtime of its own thread.
    pub fn spawn(host: String, port: u16, from: String, timeout: Duration) -> Self {
        use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Notice>(256);
        let task = async move {
            let transport = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host)
                .port(port)
                .timeout(Some(timeout))
                .build();
            while let Some(n) = rx.recv().await {
                let message = match build_notice(&from, &n) {
                    Ok(m) => m,
                    Err(e) => {
                        warn!(to = %n.to, error = %e, "sender notice not sent: cannot build it");
                        continue;
                    }
                };
                match transport.send(message).await {
                    Ok(_) => info!(to = %n.to, "sender notice sent"),
                    Err(e) => warn!(to = %n.to, error = %e, "sender notice not sent"),
                }
            }
        };
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => {
                rt.spawn(task);
            }
            Err(_) => {
                let started = std::thread::Builder::new()
                    .name("markgate-notices".into())
                    .spawn(move || {
                        match tokio::runtime::Builder::new_current_thread()
                            .enable_all()
                            .build()
                        {
                            Ok(rt) => rt.block_on(task),
                            Err(e) => error!(error = %e, "sender notices disabled: no runtime"),
                        }
                    });
                if let Err(e) = started {
                    error!(error = %e, "sender notices disabled: cannot start their thread");
                    return Notices::disabled();
                }
            }
        }
        Notices { tx: Some(tx) }
    }

    /// Queue a notice; never waits. A full queue drops it with a warning.
    pub fn send(&self, notice: Notice) {
        if let Some(tx) = &self.tx
            && let Err(e) = tx.try_send(notice)
        {
            warn!(error = %e, "sender notice dropped: the notice queue is full");
        }
    }
}

fn build_notice(from: &str, n: &Notice) -> Result<lettre::Message, String> {
    use lettre::address::Envelope as SmtpEnvelope;
    let to: lettre::Address = n.to.parse().map_err(|e| format!("{}: {e}", n.to))?;
    let from_box: lettre::message::Mailbox = from.parse().map_err(|e| format!("{from}: {e}"))?;
    let envelope = SmtpEnvelope::new(None, vec![to.clone()]).map_err(|e| e.to_string())?;
    lettre::Message::builder()
        .from(from_box)
        .to(lettre::message::Mailbox::new(None, to))
        .subject(n.subject.clone())
        .header(lettre::message::header::ContentType::TEXT_PLAIN)
        .envelope(envelope)
        .body(n.body.clone())
        .map_err(|e| e.to_string())
}
