//! The production milter handler: the only glue between the protocol engine and markgate's
//! decisions.
//!
//! Owns: the end-of-message pipeline. For each message it takes one snapshot of the policy in
//! force (at MAIL, from the reload cell, so a message finishes on the policy it started with),
//! then at end-of-message runs [`evaluate`]:
//! envelope → `inspect` (markings, forward evidence; the MIME tree is parsed once, and only when
//! the decision needs the body: a disclaimer or a subject edit) → `policy::decide` → the
//! rewrite request → `rewrite::plan`. It then hands the audit record to the writer and the
//! milter layer a staged answer (`settle`): header edits, then one body replacement, then
//! recipient removals and quarantine at once, and the verdict once the record is durable (an
//! audit error answers 451, unless the writer is configured to fail open); incident alerts and
//! sender notices are raised after that, without waiting for them.
//!
//! A spilled message is judged from a reduced copy and its new body copied back from the spill
//! file (`crate::large`, which states when it falls back to reading the message whole, and when
//! a message is refused instead): the answer is the one the whole message would get, in
//! bounded memory.
//!
//! `markgate policy test` calls the same [`evaluate`] on a file, so what it shows is what the
//! daemon does. Any error on the way (spill file unreadable, a rewrite request the policy made
//! invalid, a panic in a pure module) answers 4xx, with an `internal_error` audit record and
//! an `error` log line saying why: mail is retried, never lost or passed unlabelled.
//!
//! Must not: encode protocol frames, parse policy files, or choose file paths; it receives all
//! of that ready-made. Read more: `ARCHITECTURE.md` ("Errors and what the MTA hears"),
//! `docs/audit-format.md` (the record this fills).

use std::io::{self, Seek as _, Write as _};
use std::sync::Arc;
#[cfg(test)]
use std::time::Duration;

use tracing::{error, info};

use crate::alert::AlertHandle;
use crate::audit::event::InternalError;
use crate::audit::record::MessageRecord;
use crate::audit::{AuditEvent, AuditHandle};
use crate::config::Config;
use crate::inspect;
use crate::inspect::mime::{self, MimeShape};
use crate::large;
use crate::milter::handler::{
    ConnectionFacts, Handler, HandlerError, Macros, MessageSink, Modification, NewBody, Outcome,
    SmtpReply, Staged, Verdict,
};
use crate::policy::decide::{Decision, Delivery, DisclaimerDecision, Verdict as PolicyVerdict};
use crate::policy::thread::ThreadFacts;
use crate::policy::{self, Envelope, Facts, Policy, Reply};
use crate::reload::{Live, Swap};
use crate::rewrite::{
    self, DisclaimerEdit, EditPlan, HeaderOp, LabelHeader, RewriteRequest, SubjectEdit,
    SubjectPosition,
};
use crate::transaction::{SpillPolicy, Transaction};

/// The reply when a signed message must be refused and the policy gives no text of its own.
const SIGNED_REJECT_DEFAULT: &str = "Signed or encrypted mail cannot carry the required \
    monitoring notice (policy); send it unsigned or ask your security team.";

// ---------------------------------------------------------------------------------------------
// The pipeline (pure apart from reading the message body through `MessageSource`).
// ---------------------------------------------------------------------------------------------

mod source;
pub use source::{MessageSource, RawSource};

/// Why the pipeline could not decide a message. Always answered with a 4xx.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error("cannot read the message body: {0}")]
    Body(#[from] io::Error),
    #[error("the policy's edits cannot be planned: {0}")]
    Request(#[from] rewrite::RequestError),
    /// The message is over the in-memory limit and cannot be judged from a reduced copy.
    #[error(
        "the message is {size} bytes, over the {limit}-byte limit for reading it whole, and cannot be judged in bounded memory: {why}"
    )]
    TooLarge { size: u64, limit: u64, why: String },
}

/// Everything the pipeline worked out about one message.
#[derive(Debug)]
pub struct Evaluation {
    pub envelope: Envelope,
    pub facts: Facts,
    pub decision: Decision,
    /// The final answer: the decision's verdict, or a rejection the rewrite layer demanded
    /// (signed mail under `signed = "reject"`).
    pub verdict: PolicyVerdict,
    /// The rewrite request built from the decision (`None` when the message is refused).
    pub request: Option<RewriteRequest>,
    /// The edit plan (`None` when the message is refused).
    pub plan: Option<EditPlan>,
    /// The bytes the plan's offsets refer to: the whole message when the body was read, else
    /// what [`MessageSource::head`] returned.
    pub raw: Vec<u8>,
    /// Whether the body was read and its MIME tree parsed.
    pub body_inspected: bool,
    /// The MIME shape the plan was made from (parsed once; only the body offset is known when
    /// the body was not read).
    pub shape: MimeShape,
    /// When `raw` is a reduced copy of a large message (`crate::large`): its stand-ins and
    /// where their original bytes are. Empty when `raw` is the message itself.
    pub elided: Vec<large::Elision>,
}

impl Evaluation {
    /// The message as it leaves markgate (what Postfix would deliver, minus its own Received
    /// header), or `None` when it is refused. Only meaningful when `raw` is the whole message
    /// (`elided` is empty); see `large::expand` otherwise.
    pub fn output(&self) -> Option<Vec<u8>> {
        self.plan.as_ref().map(|p| rewrite::apply(p, &self.raw))
    }

    /// Recipients removed from the envelope.
    pub fn removed(&self) -> Vec<&str> {
        self.removed_iter().map(|r| r.address.as_str()).collect()
    }

    /// How many recipients [`Evaluation::removed`] lists (without listing them).
    pub fn removed_count(&self) -> usize {
        self.removed_iter().count()
    }

    /// Only a message that goes on has recipients removed from it; a refused one keeps its
    /// envelope.
    fn removed_iter(&self) -> impl Iterator<Item = &policy::decide::RecipientOutcome> {
        let delivers = self.delivers();
        self.decision
            .recipients
            .iter()
            .filter(move |r| delivers && r.delivery == Delivery::Remove)
    }

    /// True when the message goes on to (some of) its recipients.
    pub fn delivers(&self) -> bool {
        matches!(
            self.verdict,
            PolicyVerdict::Accept | PolicyVerdict::Quarantine { .. }
        )
    }
}

/// Run inspect → decide → rewrite plan for one message under `policy`, with the default
/// bounded-memory limits for large messages.
pub fn evaluate(
    policy: &Policy,
    envelope: Envelope,
    source: &dyn MessageSource,
) -> Result<Evaluation, PipelineError> {
    evaluate_with(policy, envelope, source, &large::Limits::default())
}

/// [`evaluate`] with explicit limits for large messages. A source that offers a stream
/// ([`MessageSource::stream`], a spilled transaction) is judged from a reduced copy when it can
/// be (`crate::large`); otherwise, or when the plan for the reduced copy would not be the
/// original's, it is read whole if at most `limits.max_in_memory` bytes, else refused with
/// [`PipelineError::TooLarge`] (answered 451).
pub fn evaluate_with(
    policy: &Policy,
    envelope: Envelope,
    source: &dyn MessageSource,
    limits: &large::Limits,
) -> Result<Evaluation, PipelineError> {
    evaluate_in_thread(policy, envelope, source, limits, &ThreadFacts::default())
}

/// [`evaluate_with`] knowing what the ledger remembers of the message's thread.
pub fn evaluate_in_thread(
    policy: &Policy,
    envelope: Envelope,
    source: &dyn MessageSource,
    limits: &large::Limits,
    thread: &ThreadFacts,
) -> Result<Evaluation, PipelineError> {
    match evaluate_once(policy, envelope.clone(), source, limits, true, thread)? {
        Ok(eval) => Ok(eval),
        Err(why) => {
            read_whole_allowed(source, limits, &why)?;
            match evaluate_once(policy, envelope, source, limits, false, thread)? {
                Ok(eval) => Ok(eval),
                // Unreachable: without reduction there is nothing to refuse.
                Err(why) => Err(PipelineError::TooLarge {
                    size: source.whole_len(),
                    limit: limits.max_in_memory,
                    why,
                }),
            }
        }
    }
}

/// May a message that could not be reduced be read whole? Logs why it is read whole.
fn read_whole_allowed(
    source: &dyn MessageSource,
    limits: &large::Limits,
    why: &str,
) -> Result<(), PipelineError> {
    let size = source.whole_len();
    if size > limits.max_in_memory {
        return Err(PipelineError::TooLarge {
            size,
            limit: limits.max_in_memory,
            why: why.to_owned(),
        });
    }
    info!(
        size,
        reason = why,
        "large message read whole: it cannot be judged from a reduced copy"
    );
    Ok(())
}

/// The bytes to judge, their MIME shape and the elided runs (empty: the whole message).
type BodyView = (Vec<u8>, MimeShape, Vec<large::Elision>);

/// The message to judge: the reduced copy of a large one when it can stand for it, else the
/// whole message. The inner error says why a reduction was refused.
fn body_view(
    source: &dyn MessageSource,
    marker: Option<&str>,
    limits: &large::Limits,
    reduce: bool,
) -> Result<Result<BodyView, String>, PipelineError> {
    if reduce && let Some(stream) = source.stream() {
        let reduced = match large::reduce(stream, marker, limits)? {
            Ok(r) => r,
            Err(e) => return Ok(Err(e.0)),
        };
        return Ok(mime::analyze_reduced(&reduced.raw, marker, &reduced.parts)
            .map(|shape| (reduced.raw, shape, reduced.elisions)));
    }
    let raw = source.whole()?.into_owned();
    let shape = mime::analyze(&raw, marker);
    Ok(Ok((raw, shape, Vec::new())))
}

/// One evaluation; the inner error says why the reduced copy cannot stand for the message
/// (only when `reduce`).
fn evaluate_once(
    policy: &Policy,
    envelope: Envelope,
    source: &dyn MessageSource,
    limits: &large::Limits,
    reduce: bool,
    thread: &ThreadFacts,
) -> Result<Result<Evaluation, String>, PipelineError> {
    let headers = source.headers();
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let mut facts = inspect::markings::header_facts(policy, &headers).at(now);
    let mut decision = policy::decide_in_thread(policy, &facts, &envelope, thread);

    // The body is read only when the decision needs it; then its facts may change the
    // decision (disclaimer already present, signed mail), so decide again with them.
    let mut body_inspected = false;
    let (raw, shape, elided) = if wants_body(&decision) {
        let marker = policy.disclaimer.as_ref().map(|d| d.marker.as_str());
        let (raw, shape, elided) = match body_view(source, marker, limits, reduce)? {
            Ok(v) => v,
            Err(why) => return Ok(Err(why)),
        };
        let disclaimer_present = shape.disclaimer_present == Some(true);
        let signed_or_encrypted = shape.is_protected();
        // decide is a pure function of (policy, facts, envelope): with the facts as they were,
        // deciding again would give the same decision.
        if (disclaimer_present, signed_or_encrypted)
            != (facts.disclaimer_present, facts.signed_or_encrypted)
        {
            facts.disclaimer_present = disclaimer_present;
            facts.signed_or_encrypted = signed_or_encrypted;
            decision = policy::decide_in_thread(policy, &facts, &envelope, thread);
        }
        body_inspected = true;
        (raw, shape, elided)
    } else {
        let raw = source.head().into_owned();
        let shape = MimeShape::head_only(&raw, true);
        (raw, shape, Vec::new())
    };

    let mut verdict = decision.verdict.clone();
    let refused = matches!(
        verdict,
        PolicyVerdict::Reject { .. } | PolicyVerdict::Tempfail { .. }
    );
    let (request, plan) = if refused {
        (None, None)
    } else {
        let request = request_for(policy, &decision);
        let plan = rewrite::plan(&request, &headers, &raw, &shape)?;
        if let Err(why) = large::check_plan(&plan, &shape, &request, &elided) {
            return Ok(Err(why));
        }
        if let Some(kind) = plan.must_reject {
            verdict = signed_rejection(policy, kind);
            (Some(request), None)
        } else {
            (Some(request), Some(plan))
        }
    };
    Ok(Ok(Evaluation {
        envelope,
        facts,
        decision,
        verdict,
        request,
        plan,
        raw,
        body_inspected,
        shape,
        elided,
    }))
}

/// Does applying (or, in shadow mode, recording) this decision need the body?
fn wants_body(d: &Decision) -> bool {
    let (disclaimer, subject) = match &d.shadow {
        Some(s) => (&s.disclaimer, s.labels.subject.is_some()),
        None => (&d.disclaimer, d.labels.subject.is_some()),
    };
    matches!(disclaimer, DisclaimerDecision::Add { .. }) || subject
}

fn signed_rejection(policy: &Policy, kind: &str) -> PolicyVerdict {
    let (reply, rule) = match &policy.disclaimer {
        Some(d) => (d.signed_reply.clone(), d.id.clone()),
        None => (None, "disclaimer".to_owned()),
    };
    PolicyVerdict::Reject {
        reply: reply.unwrap_or_else(|| Reply {
            code: 550,
            enhanced: "5.7.1".into(),
            text: format!("{SIGNED_REJECT_DEFAULT} ({kind})"),
        }),
        rule,
    }
}

/// Translate the decision into what rewrite should ensure. Shadow mode asks for one header.
pub fn request_for(policy: &Policy, d: &Decision) -> RewriteRequest {
    if let Some(shadow) = &d.shadow {
        return RewriteRequest {
            extra_headers: vec![LabelHeader {
                name: shadow.header.clone(),
                value: shadow.value.clone(),
            }],
            ..RewriteRequest::default()
        };
    }
    let label_header = d.labels.header.as_ref().map(|h| LabelHeader {
        name: h.name.clone(),
        value: h.value.clone(),
    });
    let subject = d.labels.subject.as_ref().map(|s| SubjectEdit {
        marking: s.marking.clone(),
        position: match s.form {
            policy::SubjectForm::Prefix => SubjectPosition::Prefix,
            policy::SubjectForm::Bracketed => SubjectPosition::Bracketed,
            policy::SubjectForm::SecSuffix => SubjectPosition::Suffix,
        },
        existing: s.existing.clone(),
        on_signed: false,
    });
    let disclaimer = match &d.disclaimer {
        DisclaimerDecision::Add {
            text,
            html,
            position,
            marker,
            signed,
            ..
        } => {
            let configured = policy.disclaimer.as_ref().map(|c| c.signed);
            Some(DisclaimerEdit {
                text: text.clone(),
                html: Some(html.clone()).filter(|h| !h.trim().is_empty()),
                placement: match position {
                    policy::Placement::Append => rewrite::Placement::Append,
                    policy::Placement::Prepend => rewrite::Placement::Prepend,
                },
                marker: marker.clone(),
                signed_action: match signed.or(configured) {
                    Some(policy::SignedAction::Wrap) => rewrite::SignedAction::Wrap,
                    Some(policy::SignedAction::Reject) => rewrite::SignedAction::Reject,
                    Some(policy::SignedAction::Skip) | None => rewrite::SignedAction::Skip,
                },
            })
        }
        DisclaimerDecision::Skip { .. } => None,
    };
    RewriteRequest {
        label_header,
        strip_headers: d.strip_headers.clone(),
        subject,
        disclaimer,
        extra_headers: d.labels.extra.iter().map(LabelHeader::from).collect(),
    }
}

// ---------------------------------------------------------------------------------------------
// From an evaluation to what the MTA hears and what the audit trail keeps.
// ---------------------------------------------------------------------------------------------

/// The SMTP reply for a policy reply, as one line of text per line of the policy's text.
pub fn smtp_reply(reply: &Reply) -> SmtpReply {
    let lines: Vec<String> = reply
        .text
        .lines()
        .map(str::trim_end)
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect();
    SmtpReply {
        code: reply.code,
        enhanced: Some(reply.enhanced.clone()).filter(|e| !e.is_empty()),
        lines: if lines.is_empty() {
            vec!["refused by policy".to_owned()]
        } else {
            lines
        },
    }
}

/// What markgate answers when it cannot decide (internal error, audit failure).
pub fn tempfail_reply(why: &str) -> SmtpReply {
    SmtpReply {
        code: 451,
        enhanced: Some("4.3.0".into()),
        lines: vec![format!(
            "markgate could not process this message ({why}); try again later"
        )],
    }
}

fn header_modification(op: &HeaderOp) -> Modification {
    match op {
        HeaderOp::Add { name, value } => Modification::AddHeader {
            name: name.clone(),
            value: value.clone(),
        },
        HeaderOp::Insert { index, name, value } => Modification::InsertHeader {
            index: *index,
            name: name.clone(),
            value: value.clone(),
        },
        HeaderOp::Change { index, name, value } => Modification::ChangeHeader {
            index: *index,
            name: name.clone(),
            value: value.clone(),
        },
        HeaderOp::Delete { index, name } => Modification::ChangeHeader {
            index: *index,
            name: name.clone(),
            value: Vec::new(),
        },
    }
}

/// The milter outcome: header edits, then the body replacement, then recipient removals and
/// quarantine, then the verdict. `recipients_as_sent` maps a bare address back to the form
/// the MTA gave in RCPT (what DELRCPT must name). Bodies larger than `spill.threshold`, and
/// every body made from a reduced copy (whose elided runs are copied from `source`), are
/// written to a temporary file and streamed from there.
pub fn outcome(
    eval: &Evaluation,
    source: &dyn MessageSource,
    recipients_as_sent: &[(String, Vec<u8>)],
    spill: &SpillPolicy,
) -> io::Result<Outcome> {
    let verdict = match &eval.verdict {
        PolicyVerdict::Reject { reply, .. } => Verdict::Reject(Some(smtp_reply(reply))),
        PolicyVerdict::Tempfail { reply, .. } => Verdict::Tempfail(Some(smtp_reply(reply))),
        PolicyVerdict::Accept | PolicyVerdict::Quarantine { .. } => Verdict::Continue,
    };
    let mut modifications = Vec::new();
    if let Some(plan) = &eval.plan {
        modifications.extend(plan.header_ops.iter().map(header_modification));
        if let Some(body) = &plan.body {
            modifications.push(Modification::ReplaceBody(new_body(
                body, eval, source, spill,
            )?));
        }
        for removed in eval.removed() {
            let recipient = recipients_as_sent
                .iter()
                .find(|(bare, _)| bare.eq_ignore_ascii_case(removed))
                .map_or_else(|| format!("<{removed}>").into_bytes(), |(_, s)| s.clone());
            modifications.push(Modification::DeleteRecipient { recipient });
        }
    }
    if let PolicyVerdict::Quarantine { reason, .. } = &eval.verdict {
        modifications.push(Modification::Quarantine {
            reason: reason.clone().into_bytes(),
        });
    }
    Ok(Outcome {
        verdict,
        modifications,
    })
}

fn new_body(
    body: &rewrite::BodyEdit,
    eval: &Evaluation,
    source: &dyn MessageSource,
    spill: &SpillPolicy,
) -> io::Result<NewBody> {
    let raw = &eval.raw;
    if eval.elided.is_empty() && body.len() <= spill.threshold {
        return Ok(NewBody::Bytes(body.to_vec(raw).into()));
    }
    let file = match &spill.directory {
        Some(dir) => tempfile::tempfile_in(dir)?,
        None => tempfile::tempfile()?,
    };
    let mut w = io::BufWriter::with_capacity(64 * 1024, file);
    if eval.elided.is_empty() {
        for chunk in body.chunks(raw) {
            w.write_all(chunk)?;
        }
    } else {
        large::write_body(
            body,
            raw,
            &eval.elided,
            &|range, out| source.copy_range(range, out),
            &mut w,
        )?;
    }
    let mut file = w.into_inner().map_err(io::IntoInnerError::into_error)?;
    file.rewind()?;
    Ok(NewBody::File(file))
}

/// What the MTA told us about the message besides its content, for the audit record.
#[derive(Debug, Clone, Default)]
pub struct MessageMeta {
    pub queue_id: Option<String>,
    pub message_id: Option<String>,
    pub client_name: Option<String>,
    pub helo: Option<String>,
    pub size: Option<u64>,
}

fn reply_text(reply: &Reply) -> String {
    format!("{} {} {}", reply.code, reply.enhanced, reply.text)
}

/// The notice to the sender when recipients were removed, or `None` (nobody removed, or the
/// null sender, which must never get mail from us).
pub fn sender_notice(eval: &Evaluation) -> Option<Notice> {
    let text = eval.decision.sender_notice.as_ref()?;
    let removed = eval.removed();
    if removed.is_empty() || eval.envelope.sender.is_empty() || eval.decision.shadow.is_some() {
        return None;
    }
    let subject = eval
        .facts
        .subject
        .clone()
        .unwrap_or_else(|| "(no subject)".into());
    let mut body = String::new();
    body.push_str("Your message was not delivered to these recipients:\n\n");
    for r in &removed {
        body.push_str(&format!("  {r}\n"));
    }
    body.push_str("\nWhy: ");
    body.push_str(text);
    body.push_str("\n\nYour message was delivered to its other recipients.\n");
    body.push_str(&format!("Subject of your message: {subject}\n"));
    Some(Notice {
        to: eval.envelope.sender.clone(),
        // Marked in the policy's scheme (`policy::notice`): it passes the gateway again.
        subject: (eval.decision.notice_subject.as_deref())
            .unwrap_or(crate::policy::notice::SUBJECT)
            .into(),
        body,
    })
}

// ---------------------------------------------------------------------------------------------
// The milter handler.
// ---------------------------------------------------------------------------------------------

/// The policy and settings in force, as the reload cell holds them.
pub type LiveCell = Arc<Swap<Live<Policy>>>;

/// markgate's [`Handler`]. One instance serves every connection.
#[derive(Clone)]
pub struct Filter {
    live: LiveCell,
    audit: Option<AuditHandle>,
    alerts: AlertHandle,
    notices: Notices,
    metrics: Option<crate::metrics::Metrics>,
    ledger: Option<LedgerHandle>,
    /// Unit tests only: runs on the thread that decides a message, just before the pipeline,
    /// so a test can make the pipeline panic there. Not compiled into any other build.
    #[cfg(test)]
    fault: Option<Fault>,
}

/// See [`Filter::fault`].
#[cfg(test)]
type Fault = Arc<dyn Fn(&Transaction) + Send + Sync>;

impl std::fmt::Debug for Filter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Filter")
            .field(
                "audit",
                &self.audit.as_ref().map(|a| a.path().to_path_buf()),
            )
            .finish_non_exhaustive()
    }
}

impl Filter {
    /// A filter reading its policy from `live` (one snapshot per message), recording to
    /// `audit` (none: no records, for tests), raising incidents on `alerts` and sending
    /// sender notices through `notices`.
    pub fn new(
        live: LiveCell,
        audit: Option<AuditHandle>,
        alerts: AlertHandle,
        notices: Notices,
    ) -> Self {
        Filter {
            live,
            audit,
            alerts,
            notices,
            metrics: None,
            ledger: None,
            #[cfg(test)]
            fault: None,
        }
    }

    /// Count every answered message in `metrics` (by direction, level, verdict and rule, with
    /// the end-of-message latency).
    pub fn with_metrics(mut self, metrics: crate::metrics::Metrics) -> Self {
        self.metrics = Some(metrics);
        self
    }

    fn count(&self, started: std::time::Instant, d: Option<&Decision>, verdict: &str) {
        settle::count(self.metrics.as_ref(), started, d, verdict);
    }

    /// A filter with one fixed policy and config (tests, tools).
    pub fn fixed(policy: Policy, config: Config, audit: Option<AuditHandle>) -> Self {
        let digest = policy.digest.clone();
        let live = Live {
            config,
            policy: Arc::new(policy),
            policy_digest: digest,
            generation: 0,
        };
        Filter::new(
            Arc::new(Swap::new(Arc::new(live))),
            audit,
            AlertHandle::disabled(),
            Notices::disabled(),
        )
    }

    /// The 451 for a message the pipeline could not decide, after an `internal_error` audit
    /// record saying why (best effort: the message is refused either way, so a failing audit
    /// sink only adds a log line).
    async fn internal_error(&self, why: String, queue_id: Option<String>) -> Outcome {
        let reply = tempfail_reply("internal error");
        if let Some(audit) = &self.audit {
            let event = AuditEvent::InternalError(InternalError {
                component: "filter".into(),
                error: why,
                queue_id,
                smtp_reply: Some(smtp_reply_text(&reply)),
            });
            if let Err(e) = audit.record(event).await {
                error!(error = %e, "internal_error audit record not written");
            }
        }
        Outcome {
            verdict: Verdict::Tempfail(Some(reply)),
            modifications: Vec::new(),
        }
    }

    /// Unit tests only: run `fault` before the pipeline of every message (see [`Fault`]).
    #[cfg(test)]
    fn with_fault(mut self, fault: impl Fn(&Transaction) + Send + Sync + 'static) -> Self {
        self.fault = Some(Arc::new(fault));
        self
    }

    /// Replace the notice sender (tests send notices to their own SMTP sink).
    pub fn with_notices(mut self, notices: Notices) -> Self {
        self.notices = notices;
        self
    }

    /// Replace the alert handle.
    pub fn with_alerts(mut self, alerts: AlertHandle) -> Self {
        self.alerts = alerts;
        self
    }
}

/// One message in flight: its transaction and the policy snapshot it started with.
pub struct Message {
    tx: Transaction,
    live: Arc<Live<Policy>>,
}

impl MessageSink for Message {
    fn mail_from(&mut self, sender: &[u8], args: &[Vec<u8>]) -> io::Result<()> {
        MessageSink::mail_from(&mut self.tx, sender, args)
    }
    fn rcpt_to(&mut self, recipient: &[u8], args: &[Vec<u8>]) -> io::Result<()> {
        MessageSink::rcpt_to(&mut self.tx, recipient, args)
    }
    fn header(&mut self, name: &[u8], value: &[u8]) -> io::Result<()> {
        MessageSink::header(&mut self.tx, name, value)
    }
    fn body_chunk(&mut self, chunk: &[u8]) -> io::Result<()> {
        MessageSink::body_chunk(&mut self.tx, chunk)
    }
    fn macros(&mut self, macros: Macros) -> io::Result<()> {
        MessageSink::macros(&mut self.tx, macros)
    }
    fn rcpt_macros(&mut self, macros: &Macros) -> io::Result<()> {
        MessageSink::rcpt_macros(&mut self.tx, macros)
    }
}

fn lossy(b: &[u8]) -> String {
    crate::inspect::utf8_lossy(b).into_owned()
}

fn meta_of(tx: &Transaction, conn: &ConnectionFacts) -> MessageMeta {
    let head_len = tx
        .headers()
        .iter()
        .map(|h| (h.name.len() + h.value.len() + 4) as u64)
        .sum::<u64>();
    MessageMeta {
        queue_id: tx.queue_id().map(lossy),
        message_id: tx
            .first_header("Message-ID")
            .map(|h| crate::inspect::utf8_lossy(&h.value).trim().to_owned()),
        client_name: Some(lossy(&conn.hostname)).filter(|s| !s.is_empty()),
        helo: conn.helo.as_deref().map(lossy),
        size: Some(head_len + 2 + tx.body_len()),
    }
}

/// Bodies up to this size that stayed in memory are decided on the connection's own task
/// (see `end_of_message`); the pipeline costs ~14 ns a byte, so this bounds the stall to a few
/// milliseconds.
const INLINE_BODY_LIMIT: u64 = 256 * 1024;

/// The evaluation is boxed (2.3 KB): it moves through the pipeline's results and into the
/// pending verdict's future, and a pointer moves for free.
type Decided = Result<(Box<Evaluation>, Outcome, MessageRecord), PipelineError>;

/// The pure part of end-of-message: evaluate, build the milter outcome and the audit record.
fn decide_message(
    tx: &Transaction,
    conn: &ConnectionFacts,
    live: &Live<Policy>,
    thread: &ThreadFacts,
    envelope: Envelope,
) -> (Decided, MessageMeta) {
    let meta = meta_of(tx, conn);
    let spill = live.config.spill_policy();
    let limits = live.config.large_limits();
    let result = evaluate_in_thread(&live.policy, envelope, tx, &limits, thread).and_then(|eval| {
        // Only a removal needs the recipients as the MTA gave them.
        let recipients_as_sent: Vec<(String, Vec<u8>)> = if eval.removed_count() == 0 {
            Vec::new()
        } else {
            tx.recipients()
                .iter()
                .map(|r| (lossy(r.bare()), r.address.clone()))
                .collect()
        };
        let out = outcome(&eval, tx, &recipients_as_sent, &spill)?;
        let record = audit_record(&live.policy, &eval, &meta);
        Ok((Box::new(eval), out, record))
    });
    (result, meta)
}

impl Handler for Filter {
    type Sink = Message;

    fn begin_message(&self, conn: &ConnectionFacts) -> Result<Message, HandlerError> {
        let live = self.live.snapshot();
        let tx = Transaction::new(conn, live.config.spill_policy());
        Ok(Message { tx, live })
    }

    async fn end_of_message(
        &self,
        conn: &ConnectionFacts,
        message: Message,
    ) -> Result<Outcome, HandlerError> {
        settle::resolve(self.end_of_message_staged(conn, message).await?).await
    }

    async fn end_of_message_staged(
        &self,
        conn: &ConnectionFacts,
        message: Message,
    ) -> Result<Staged, HandlerError> {
        let started = std::time::Instant::now();
        // The message and the pipeline's results end with this block: not kept in the state of
        // this future (boxed for each message) across the awaits below, they cost no copying.
        let (memo, keys, decided) = {
            let Message { tx, live } = message;
            let envelope = envelope_of(&tx, conn);
            let (thread, keys) =
                match ledger::consult(self.ledger.as_ref(), &live.policy, &tx, &envelope).await {
                    Ok(found) => found,
                    Err(refusal) => return Ok(self.count_out(started, *refusal).into()),
                };
            let memo = ledger::Memo::of(&live.policy);
            // A small in-memory message is decided right here: handing it to the blocking pool
            // and back costs two thread switches, more than the pipeline itself. A spilled or
            // large body may take milliseconds to parse, so it still goes to the blocking pool,
            // off the connection tasks' threads. Either way a panic in the pipeline is caught
            // and becomes a 4xx, as the failure rule says.
            #[cfg(test)]
            let fault = self.fault.clone();
            let decide = move |tx: &Transaction, conn: &ConnectionFacts, live: &Live<Policy>| {
                #[cfg(test)]
                if let Some(fault) = &fault {
                    fault(tx);
                }
                decide_message(tx, conn, live, &thread, envelope)
            };
            let queue_id = tx.queue_id().map(lossy);
            let worked = if !tx.is_spilled() && tx.body_len() <= INLINE_BODY_LIMIT {
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| decide(&tx, conn, &live)))
                    .map_err(|payload| ("inline", "panicked", panic_text(payload.as_ref())))
            } else {
                let conn = conn.clone();
                tokio::task::spawn_blocking(move || decide(&tx, &conn, &live))
                    .await
                    .map_err(|e| {
                        if e.is_panic() {
                            let detail = panic_text(e.into_panic().as_ref());
                            ("blocking pool", "panicked", detail)
                        } else {
                            ("blocking pool", "was cancelled", e.to_string())
                        }
                    })
            };
            let decided = match worked {
                Ok((Ok(r), meta)) => Ok((r, meta)),
                Ok((Err(e), meta)) => {
                    error!(queue_id = meta.queue_id.as_deref().unwrap_or(""), error = %e, "cannot decide the message; answering 4xx");
                    self.count(started, None, "tempfail");
                    Err((e.to_string(), meta.queue_id))
                }
                Err((place, what, detail)) => {
                    // The panic message goes to the log only: it can quote message text, and
                    // the audit trail never carries message content.
                    error!(queue_id = queue_id.as_deref().unwrap_or(""), place, detail = %detail, "the decision pipeline {what}; answering 4xx");
                    self.count(started, None, "tempfail");
                    let why = format!(
                        "the decision pipeline {what} ({place}); the details are in the daemon log"
                    );
                    Err((why, queue_id))
                }
            };
            (memo, keys, decided)
        };
        let ((eval, out, record), meta) = match decided {
            Ok(d) => d,
            Err((why, queue_id)) => return Ok(self.internal_error(why, queue_id).await.into()),
        };

        if let Some(refusal) = ledger::remember(self.ledger.as_ref(), memo, &eval, keys).await {
            return Ok(self.count_out(started, *refusal).into());
        }
        // Durable before the final answer; the modifications go out while the writer syncs.
        let pending = match &self.audit {
            None => None,
            Some(audit) => match audit
                .submit(AuditEvent::MessageDecision(Box::new(record)))
                .await
            {
                Ok(p) => Some(p),
                Err(e) => {
                    error!(queue_id = meta.queue_id.as_deref().unwrap_or(""), error = %e, "audit record not written; answering 4xx so the mail is retried, not passed unaudited");
                    self.count(started, Some(&eval.decision), "tempfail");
                    let reply = tempfail_reply("audit trail unavailable");
                    let verdict = Verdict::Tempfail(Some(reply));
                    return Ok(Outcome {
                        verdict,
                        modifications: Vec::new(),
                    }
                    .into());
                }
            },
        };
        let settle = settle::Settle {
            alerts: self.alerts.clone(),
            notices: self.notices.clone(),
            metrics: self.metrics.clone(),
            started,
            eval,
            meta,
        };
        Ok(settle.staged(out, pending))
    }
}

/// Strings shown comma-separated (what `join(",")` would make, without building it).
struct Joined<'a>(&'a [String]);

impl std::fmt::Display for Joined<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, s) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            f.write_str(s)?;
        }
        Ok(())
    }
}

/// The SMTP answer in one line, as the MTA would relay it (`250 accepted`, `550 5.7.1 …`).
pub fn answer_text(eval: &Evaluation) -> String {
    match &eval.verdict {
        PolicyVerdict::Accept => "accept (250)".to_owned(),
        PolicyVerdict::Quarantine { reason, rule } => {
            format!("accept into the hold queue: {reason} (rule {rule})")
        }
        PolicyVerdict::Reject { reply, rule } | PolicyVerdict::Tempfail { reply, rule } => {
            format!("{} (rule {rule})", reply_text(reply))
        }
    }
}

/// `451 4.3.0 text` for the audit record of an SMTP reply.
fn smtp_reply_text(r: &SmtpReply) -> String {
    let mut out = r.code.to_string();
    if let Some(e) = &r.enhanced {
        out.push(' ');
        out.push_str(e);
    }
    for line in &r.lines {
        out.push(' ');
        out.push_str(line);
    }
    out
}

/// The message a panic carried (`panic!` with a literal or a formatted string).
fn panic_text(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".to_owned())
}

fn verdict_name(v: &PolicyVerdict) -> &'static str {
    match v {
        PolicyVerdict::Accept => "accept",
        PolicyVerdict::Reject { .. } => "reject",
        PolicyVerdict::Tempfail { .. } => "tempfail",
        PolicyVerdict::Quarantine { .. } => "quarantine",
    }
}

mod envelope;
mod ledger;
mod notices;
mod record;
mod settle;
pub use envelope::envelope_of;
pub use ledger::{LedgerHandle, entry_of as ledger_entry_of, fill as ledger_fill};
pub use notices::{Notice, Notices};
pub use record::{audit_record, incidents};

#[cfg(test)]
mod tests;
