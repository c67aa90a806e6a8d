//! `decide(&Policy, &Facts, &Envelope) -> Decision`: the pure heart of markgate.
//!
//! Total: any facts and any envelope give a decision, never a panic. Every outcome cites the
//! rule ids behind it so audit records and SMTP replies can say why. What it decides, in order:
//! direction → vendor labels trusted from it (`vendor`) → effective level, after EPMS
//! EXPIRES/DOWNTO (`expiry`) → situations (unmarked, malformed, unknown, multiple, conflict
//! across every source (`agreement`), forged label, ORIGIN mismatch (`origin`)) →
//! per-recipient ceilings, auto-forward and releasability caveats (`release`) → verdict →
//! labels to write (and the Purview label, `vendor`) → disclaimer → shadow-mode rewrite of all
//! of that into "would have". The steps of their own live in those sibling modules.
//!
//! Hard rule (ISM-0271): labels are only written from a valid marking a person chose; mail
//! accepted as unmarked is never given a marking.

use serde::Serialize;
use std::borrow::Cow;

use super::Policy;
use super::facts::{Envelope, Facts, FoundMarking, Label, MarkingSource, MarkingStatus};
use super::labels::{self, Grammar, au_epms};
use super::model::*;
use super::thread::ThreadFacts;

/// Outbound (from the organisation) or inbound.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    Outbound,
    Inbound,
}

/// Where the effective level came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LevelSource {
    Header,
    Subject,
    /// A vendor label (`inspect::vendor`).
    Vendor,
    /// No readable marking: the scheme's lowest level, assumed (never written as a label).
    Assumed,
}

/// The classification the message is treated as.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Effective {
    pub level: usize,
    pub level_name: String,
    /// The canonical marking text chosen by the sender, when there is one.
    pub marking: Option<String>,
    /// Its qualifiers (descriptors, caveats, handling instructions, ACCESS values).
    pub qualifiers: Vec<String>,
    pub source: LevelSource,
    /// Set when the marking's EPMS EXPIRES has passed and `level` is its DOWNTO.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expired: Option<super::expiry::Expired>,
}

/// One rule that fired.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RuleHit {
    pub rule: String,
    /// The situation's name (`above-ceiling`, …; `signed-message` for the disclaimer's
    /// signed-mail rejection).
    pub situation: String,
    pub action: Action,
    /// The recipient it fired for (per-recipient situations).
    pub recipient: Option<String>,
    /// A sentence for people and audit.
    pub detail: String,
}

/// What happens to one recipient.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Delivery {
    Deliver,
    /// Remove the recipient (delrcpt) and tell the sender.
    Remove,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RecipientOutcome {
    pub address: String,
    pub domain: String,
    pub ceiling: String,
    /// `own`, the matching `domains.ceilings` pattern, or `default`.
    pub ceiling_from: String,
    pub delivery: Delivery,
    /// Rules that fired for this recipient; `ceiling:<pattern>` when delivered within ceiling.
    pub rules: Vec<String>,
    pub reason: String,
}

/// The final answer for the message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Verdict {
    Accept,
    Reject {
        reply: Reply,
        rule: String,
    },
    Tempfail {
        reply: Reply,
        rule: String,
    },
    /// Accept into the MTA's hold queue.
    Quarantine {
        reason: String,
        rule: String,
    },
}

/// What to do with the label header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum HeaderAction {
    /// Already present with exactly this value.
    Keep,
    /// Add it (none present).
    Add,
    /// Change the first header of that name to this value and delete any others
    /// (`existing` of them are present).
    Replace { existing: usize },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HeaderLabel {
    pub name: String,
    /// The exact value, unfolded (the rewrite layer folds it).
    pub value: String,
    pub action: HeaderAction,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SubjectLabel {
    /// The marking text as the subject writer takes it: `PROTECT - PERSONAL` for the prefix
    /// and bracketed forms (the writer adds `: ` or the brackets), `[SEC=OFFICIAL]` with its
    /// brackets for the sec-suffix form.
    pub marking: String,
    pub form: SubjectForm,
    /// Byte ranges (in the decoded subject) of every marking found there, to be replaced by
    /// the one canonical marking so markings never stack.
    pub existing: Vec<std::ops::Range<usize>>,
    /// Preview of the complete decoded subject after the edit (what `markgate policy test`
    /// shows); `None` when the subject is already right. The rewrite layer computes the
    /// subject it writes from `marking`, `form` and `existing`.
    pub new_subject: Option<String>,
}

/// Labels to write (both `None` when nothing is to be written) and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Labels {
    pub header: Option<HeaderLabel>,
    pub subject: Option<SubjectLabel>,
    pub reason: String,
    /// Further label headers to ensure (the Purview `msip_labels` of `[write.purview]`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub extra: Vec<HeaderLabel>,
}

/// The disclaimer decision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum DisclaimerDecision {
    Add {
        rule: String,
        text: String,
        html: String,
        position: Placement,
        marker: String,
        /// For signed/encrypted mail: `wrap` (the only way to add it); otherwise `skip`
        /// is never used here.
        signed: Option<SignedAction>,
    },
    Skip {
        rule: String,
        reason: String,
    },
}

/// Shadow mode: what enforcement would have done. The applied fields are then no-ops.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Shadow {
    /// Header to add saying what would have happened.
    pub header: String,
    pub value: String,
    pub verdict: Verdict,
    pub recipients: Vec<RecipientOutcome>,
    pub labels: Labels,
    pub strip_headers: Vec<String>,
    pub disclaimer: DisclaimerDecision,
}

/// Everything the rewrite, filter and audit layers need.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Decision {
    /// `policy.name` and the policy's SHA-256, for the audit record.
    pub policy: String,
    pub policy_digest: String,
    pub mode: Mode,
    pub direction: Direction,
    /// Why this direction (`client 127.0.0.1 in 127.0.0.0/8`).
    pub direction_reason: String,
    pub effective: Effective,
    /// Every rule that fired, in evaluation order.
    pub hits: Vec<RuleHit>,
    /// One entry per envelope recipient, in order. In shadow mode all `deliver`. `delivery`
    /// only matters when the verdict lets the message through (accept, quarantine); a rejected
    /// message reaches no one whatever each entry says.
    pub recipients: Vec<RecipientOutcome>,
    /// What to answer. In shadow mode always `accept`.
    pub verdict: Verdict,
    /// Labels to write. In shadow mode none.
    pub labels: Labels,
    /// Header names whose every occurrence is to be removed (inbound label stripping).
    pub strip_headers: Vec<String>,
    pub disclaimer: DisclaimerDecision,
    /// When recipients are removed: the notice for the sender (the rule's text).
    pub sender_notice: Option<String>,
    /// The notice's subject, marked in the policy's scheme (`policy::notice`), whenever
    /// there is a notice.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub notice_subject: Option<String>,
    /// Set in shadow mode.
    pub shadow: Option<Shadow>,
    /// Every rule id behind this decision, deduplicated, in order.
    pub rule_ids: Vec<String>,
}

/// Decide what to do with one message. Pure and total.
pub fn decide(policy: &Policy, facts: &Facts, envelope: &Envelope) -> Decision {
    decide_in_thread(policy, facts, envelope, &ThreadFacts::default())
}

/// [`decide`] with what the gateway remembers of the message's thread (`policy/thread.rs`).
pub fn decide_in_thread(
    policy: &Policy,
    facts: &Facts,
    envelope: &Envelope,
    thread: &ThreadFacts,
) -> Decision {
    let (direction, why) = direction(policy, envelope);
    let direction_reason = why.to_string();
    let mut hits: Vec<RuleHit> = Vec::new();
    let trusted = super::vendor::trusted(policy, facts, direction);
    let facts: &Facts = &trusted;

    let markings = &facts.markings;
    let labelled: Vec<&FoundMarking> = markings.iter().filter(|m| m.label.is_some()).collect();

    // Effective level first: min_level conditions need it.
    let chosen = choose_label(policy, &labelled).map(|(l, _)| l);
    let effective = effective(policy, &labelled);
    let effective = super::expiry::apply(policy, facts.now, chosen, effective, &mut hits);

    // Message-level situations.
    let mut situations: Vec<(Situation, String)> = Vec::new();
    if markings.is_empty() {
        situations.push((Situation::Unmarked, "the message carries no marking".into()));
    }
    if let Some(m) = markings
        .iter()
        .find(|m| m.status == MarkingStatus::Malformed)
    {
        situations.push((
            Situation::Malformed,
            format!(
                "{} marking `{}` breaks {}",
                source_name(&m.source),
                m.raw,
                m.rejected_codes.join(", ")
            ),
        ));
    }
    if let Some(m) = markings.iter().find(|m| m.status == MarkingStatus::Unknown) {
        situations.push((
            Situation::Unknown,
            format!(
                "{} marking `{}` names no level of {}",
                source_name(&m.source),
                m.raw,
                policy.scheme.name
            ),
        ));
    }
    let header_count = markings.iter().filter(|m| m.source.is_header()).count();
    let subject_labels: Vec<&Label> = markings
        .iter()
        .filter(|m| m.source.is_subject())
        .filter_map(|m| m.label.as_ref())
        .collect();
    let subject_disagree = subject_labels.windows(2).any(|w| !w[0].same_marking(w[1]));
    if header_count > 1 || subject_disagree {
        let what = if header_count > 1 {
            format!("{header_count} label headers")
        } else {
            "several different subject markings".to_owned()
        };
        situations.push((Situation::Multiple, what));
    }
    if let Some(detail) = super::agreement::conflict(&labelled) {
        situations.push((Situation::Conflict, detail));
    }
    situations.extend(super::origin::check(policy, facts, envelope, direction));
    let forged = direction == Direction::Inbound && forged_label(policy, markings, envelope);
    if forged {
        situations.push((
            Situation::ForgedLabel,
            "inbound mail carries a label header claiming to come from this organisation".into(),
        ));
    }

    let mut verdicts: Vec<(u8, Verdict)> = Vec::new();
    for (situation, detail) in situations {
        if let Some(rule) = find_rule(
            policy,
            situation,
            direction,
            Some(effective.level).filter(|_| effective.source != LevelSource::Assumed),
        ) {
            hits.push(RuleHit {
                rule: rule.id.clone(),
                situation: situation.name().to_owned(),
                action: rule.action,
                recipient: None,
                detail,
            });
            if let Some(v) = verdict_for(rule) {
                verdicts.push(v);
            }
        }
    }

    // Per recipient.
    let source_rating = match direction {
        Direction::Outbound => policy.domains.own_level,
        Direction::Inbound => policy.domains.ceiling_level(domain_of(&envelope.sender)),
    };
    let marked_level = Some(effective.level).filter(|_| effective.source != LevelSource::Assumed);
    let mut recipients = Vec::new();
    let mut first_remove: Option<&Rule> = None;
    for rcpt in &envelope.recipients {
        let domain = domain_of(rcpt).to_ascii_lowercase();
        let (ceiling, from) = policy.domains.ceiling(&domain);
        let mut outcome = RecipientOutcome {
            address: rcpt.clone(),
            domain: domain.clone(),
            ceiling: policy.scheme.level_name(ceiling).to_owned(),
            ceiling_from: from.clone(),
            delivery: Delivery::Deliver,
            rules: Vec::new(),
            reason: [
                effective.level_name.as_str(),
                " is within the ceiling ",
                policy.scheme.level_name(ceiling),
                " of ",
                &ceiling_label(&from, &domain),
            ]
            .concat(),
        };
        // The auto-forward check first: when both fire, its reply (remove the forwarding rule)
        // is the one that tells the sender what to do; the sender did not address the mail.
        let mut checks: Vec<(Situation, String)> = Vec::new();
        if facts.forward.is_forward() && ceiling < source_rating {
            let signals: Vec<&str> = facts
                .forward
                .hits
                .iter()
                .map(|h| h.signal.as_str())
                .collect();
            checks.push((
                Situation::AutoForwardDown,
                format!(
                    "auto-forwarded (score {} ≥ {}: {}) from a {} domain to {} rated {}",
                    facts.forward.score,
                    facts.forward.threshold,
                    signals.join(", "),
                    policy.scheme.level_name(source_rating),
                    domain,
                    policy.scheme.level_name(ceiling)
                ),
            ));
        }
        if effective.level > ceiling {
            checks.push((
                Situation::AboveCeiling,
                format!(
                    "{} mail to {} whose ceiling is {} ({})",
                    effective.level_name,
                    rcpt,
                    policy.scheme.level_name(ceiling),
                    ceiling_label(&from, &domain)
                ),
            ));
        }
        checks.extend(super::release::check(policy, &effective, &domain));
        for (situation, detail) in checks {
            let Some(rule) = find_rule(
                policy,
                situation,
                direction,
                marked_level.or(Some(effective.level)),
            ) else {
                continue;
            };
            hits.push(RuleHit {
                rule: rule.id.clone(),
                situation: situation.name().to_owned(),
                action: rule.action,
                recipient: Some(rcpt.clone()),
                detail: detail.clone(),
            });
            outcome.rules.push(rule.id.clone());
            match rule.action {
                Action::RemoveRecipients => {
                    outcome.delivery = Delivery::Remove;
                    outcome.reason = detail;
                    first_remove.get_or_insert(rule);
                }
                _ => {
                    if rule.action != Action::Accept {
                        outcome.reason = detail;
                    }
                    if let Some(v) = verdict_for(rule) {
                        verdicts.push(v);
                    }
                }
            }
        }
        if outcome.rules.is_empty() {
            outcome.rules.push(["ceiling:", from.as_str()].concat());
        }
        recipients.push(outcome);
    }
    let found = super::thread::Found {
        hits: &mut hits,
        recipients: &mut recipients,
        verdicts: &mut verdicts,
        first_remove: &mut first_remove,
    };
    super::thread::check(policy, thread, envelope, direction, &effective, found);
    // Low-assurance routes hold marked mail back from their recipients only.
    let routes = super::routes::hold_back(
        policy,
        facts,
        envelope,
        direction,
        &effective,
        &mut recipients,
        &mut hits,
    );
    let removers: Vec<(&str, Option<&Reply>)> = first_remove
        .map(|r| (r.id.as_str(), r.reply.as_ref()))
        .into_iter()
        .chain(routes.iter().map(|r| (r.id.as_str(), Some(&r.reply))))
        .collect();
    let removed: Vec<String> = recipients
        .iter()
        .filter(|r| r.delivery == Delivery::Remove)
        .map(|r| r.address.clone())
        .collect();
    let mut sender_notice = None;
    if let Some(&(id, reply)) = removers.first() {
        if !recipients.is_empty() && removed.len() == recipients.len() {
            // Nobody left to deliver to: refuse the message instead of accepting it for no one.
            if let Some(reply) = reply {
                verdicts.push((
                    3,
                    Verdict::Reject {
                        reply: reply.clone(),
                        rule: id.to_owned(),
                    },
                ));
            }
        } else {
            // One line per distinct text (a ceiling rule's and each route's, in that order).
            let mut texts: Vec<&str> = Vec::new();
            for (_, r) in &removers {
                let t = r.map_or("", |r| r.text.as_str());
                if !texts.contains(&t) {
                    texts.push(t);
                }
            }
            sender_notice = Some(texts.join("\n"));
        }
    }

    let mut verdict = verdicts
        .iter()
        .max_by_key(|(sev, _)| *sev)
        .map(|(_, v)| v.clone())
        .unwrap_or(Verdict::Accept);
    // Keep the first rule of the most severe kind (max_by_key returns the last).
    if let Some(max) = verdicts.iter().map(|(s, _)| *s).max()
        && let Some((_, v)) = verdicts.iter().find(|(s, _)| *s == max)
    {
        verdict = v.clone();
    }
    let notice_rule = first_remove.map(|r| r.id.as_str());
    super::release::name_caveat(
        &effective,
        &hits,
        &mut verdict,
        &mut sender_notice,
        notice_rule,
    );
    let refused = matches!(verdict, Verdict::Reject { .. } | Verdict::Tempfail { .. });

    // Labels.
    let chosen = choose_label(policy, &labelled);
    let mut labels = if refused {
        no_labels("the message is refused")
    } else {
        labels_to_write(policy, facts, envelope, direction, &effective, chosen)
    };
    if !refused {
        let label = chosen.map(|(l, _)| l);
        labels.extra = super::vendor::purview_header(policy, facts, direction, label)
            .into_iter()
            .collect();
    }

    // Inbound label stripping.
    let mut strip_headers = Vec::new();
    if direction == Direction::Inbound {
        match policy.inbound.labels {
            InboundLabels::Keep => {}
            InboundLabels::StripAll => {
                for m in markings {
                    if let MarkingSource::Header { name, .. } = &m.source
                        && !strip_headers
                            .iter()
                            .any(|h: &String| h.eq_ignore_ascii_case(name))
                    {
                        strip_headers.push(name.clone());
                    }
                }
            }
            InboundLabels::StripForged => {
                if forged {
                    for m in markings {
                        if let MarkingSource::Header { name, .. } = &m.source
                            && !strip_headers
                                .iter()
                                .any(|h: &String| h.eq_ignore_ascii_case(name))
                        {
                            strip_headers.push(name.clone());
                        }
                    }
                }
            }
        }
    }

    // Disclaimer.
    let disclaimer = match &policy.disclaimer {
        None => DisclaimerDecision::Skip {
            rule: "disclaimer".into(),
            reason: "the policy has no disclaimer".into(),
        },
        Some(d) => {
            let skip = |reason: &str| DisclaimerDecision::Skip {
                rule: d.id.clone(),
                reason: reason.to_owned(),
            };
            if !d.direction.includes(direction) {
                skip(&format!(
                    "the disclaimer is for {} mail",
                    directions_name(d.direction)
                ))
            } else if refused {
                skip("the message is refused")
            } else if facts.disclaimer_present {
                skip("already present in the message (quoted from earlier in the thread)")
            } else if facts.signed_or_encrypted {
                match d.signed {
                    SignedAction::Skip => {
                        skip("the message is signed or encrypted; the policy says skip")
                    }
                    SignedAction::Wrap => add_disclaimer(d, Some(SignedAction::Wrap)),
                    SignedAction::Reject => {
                        if let Some(reply) = &d.signed_reply {
                            verdict = Verdict::Reject {
                                reply: reply.clone(),
                                rule: d.id.clone(),
                            };
                            hits.push(RuleHit {
                                rule: d.id.clone(),
                                situation: "signed-message".to_owned(),
                                action: Action::Reject,
                                recipient: None,
                                detail: "signed or encrypted mail cannot carry the disclaimer; the policy rejects it".into(),
                            });
                        }
                        skip("the message is signed or encrypted; the policy rejects it")
                    }
                }
            } else {
                add_disclaimer(d, None)
            }
        }
    };
    // A late signed-mail rejection also cancels labels.
    let labels = if matches!(verdict, Verdict::Reject { .. }) && !refused {
        no_labels("the message is refused")
    } else {
        labels
    };

    let mut rule_ids: Vec<String> = Vec::new();
    let mut push_id = |id: &str| {
        if !rule_ids.iter().any(|r| r == id) {
            rule_ids.push(id.to_owned());
        }
    };
    for h in &hits {
        push_id(&h.rule);
    }
    for r in &recipients {
        for id in &r.rules {
            push_id(id);
        }
    }
    if labels.header.is_some() || labels.subject.is_some() {
        push_id("write");
    }
    if let DisclaimerDecision::Add { rule, .. } = &disclaimer {
        push_id(rule);
    }

    let mut decision = Decision {
        policy: policy.name.clone(),
        policy_digest: policy.digest.clone(),
        mode: policy.mode,
        direction,
        direction_reason,
        effective,
        hits,
        recipients,
        verdict,
        labels,
        strip_headers,
        disclaimer,
        sender_notice,
        notice_subject: None,
        shadow: None,
        rule_ids,
    };
    if decision.sender_notice.is_some() {
        decision.notice_subject = Some(super::notice::subject(
            policy,
            &decision,
            super::notice::SUBJECT,
        ));
    }
    if policy.mode == Mode::Shadow {
        into_shadow(policy, &mut decision);
    }
    decision
}

/// The labels `decide` would write for this message if it were delivered and enforced. A
/// refused message's decision (and a shadow-mode one) carries no labels; the audit record
/// uses this to say whether the labels the policy requires were already on the message.
/// `d` must be `decide`'s answer for these facts and envelope: an enforced decision that lets
/// the message through already holds exactly these labels, and they are borrowed from it.
pub fn labels_if_delivered<'d>(
    policy: &Policy,
    facts: &Facts,
    envelope: &Envelope,
    d: &'d Decision,
) -> Cow<'d, Labels> {
    if d.shadow.is_none() && !matches!(d.verdict, Verdict::Reject { .. } | Verdict::Tempfail { .. })
    {
        return Cow::Borrowed(&d.labels);
    }
    let labelled: Vec<&FoundMarking> = facts
        .markings
        .iter()
        .filter(|m| m.label.is_some())
        .collect();
    let chosen = choose_label(policy, &labelled);
    Cow::Owned(labels_to_write(
        policy,
        facts,
        envelope,
        d.direction,
        &d.effective,
        chosen,
    ))
}

fn add_disclaimer(d: &Disclaimer, signed: Option<SignedAction>) -> DisclaimerDecision {
    DisclaimerDecision::Add {
        rule: d.id.clone(),
        text: d.text.clone(),
        html: d.html.clone(),
        position: d.position,
        marker: d.marker.clone(),
        signed,
    }
}

fn no_labels(reason: &str) -> Labels {
    Labels {
        header: None,
        subject: None,
        reason: reason.to_owned(),
        extra: Vec::new(),
    }
}

fn directions_name(d: Directions) -> &'static str {
    match d {
        Directions::Outbound => "outbound",
        Directions::Inbound => "inbound",
        Directions::Both => "any",
    }
}

fn source_name(s: &MarkingSource) -> String {
    match s {
        MarkingSource::Header { name, .. } => format!("header {name}"),
        MarkingSource::Subject { .. } => "subject".to_owned(),
        MarkingSource::Vendor { vendor, .. } => format!("{vendor} label"),
    }
}

// The texts of every recipient of every message: `concat` sizes each string once, where
// `format!` grows it piece by piece through `core::fmt`.
fn ceiling_label(from: &str, domain: &str) -> String {
    match from {
        "own" => ["own domain ", domain].concat(),
        "default" => [domain, " (default ceiling)"].concat(),
        pattern => [domain, " via ", pattern].concat(),
    }
}

/// The domain part of an address (after the last `@`), without angle brackets.
pub(crate) fn domain_of(addr: &str) -> &str {
    let a = addr.trim().trim_start_matches('<').trim_end_matches('>');
    a.rsplit_once('@').map_or("", |(_, d)| d)
}

pub(crate) fn direction<'e>(policy: &'e Policy, env: &'e Envelope) -> (Direction, Why<'e>) {
    for w in &policy.domains.outbound_when {
        match w {
            OutboundWhen::Network => {
                if let Some(ip) = env.client_ip
                    && let Some(net) = policy.domains.networks.iter().find(|n| n.contains(ip))
                {
                    return (Direction::Outbound, Why::Network(ip, net));
                }
            }
            OutboundWhen::Authenticated => {
                if let Some(user) = env.auth_user.as_deref().filter(|u| !u.is_empty()) {
                    return (Direction::Outbound, Why::Authenticated(user));
                }
            }
            OutboundWhen::Daemon => {
                if let Some(daemon) = env.daemon_name.as_deref()
                    && policy.domains.outbound_daemons.iter().any(|d| d == daemon)
                {
                    return (Direction::Outbound, Why::Daemon(daemon));
                }
            }
            OutboundWhen::SenderDomain => {
                let d = domain_of(&env.sender);
                if !d.is_empty() && policy.domains.is_own(d) {
                    return (Direction::Outbound, Why::SenderDomain(d));
                }
            }
        }
    }
    (Direction::Inbound, Why::Inbound(env.client_ip))
}

/// Why a message has its direction, written out only when a decision keeps it (the thread
/// check asks for the direction alone, on every message).
#[derive(Debug)]
pub(crate) enum Why<'e> {
    Network(std::net::IpAddr, &'e super::domains::Network),
    Authenticated(&'e str),
    Daemon(&'e str),
    SenderDomain(&'e str),
    Inbound(Option<std::net::IpAddr>),
}

impl std::fmt::Display for Why<'_> {
    // `write_str` pieces, not `write!`: this runs for every message (the decision keeps it),
    // and the addresses go through `write_ip` (see there).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use super::domains::write_ip;
        match self {
            Why::Network(ip, net) => {
                f.write_str("client ")?;
                write_ip(f, *ip)?;
                f.write_str(" is in ")?;
                std::fmt::Display::fmt(net, f)
            }
            Why::Authenticated(user) => {
                f.write_str("client authenticated as ")?;
                f.write_str(user)
            }
            Why::Daemon(daemon) => {
                f.write_str("received by the MTA service ")?;
                f.write_str(daemon)
            }
            Why::SenderDomain(d) => {
                f.write_str("sender domain ")?;
                f.write_str(d)?;
                f.write_str(" is an own domain")
            }
            Why::Inbound(ip) => {
                f.write_str("client ")?;
                match ip {
                    Some(ip) => write_ip(f, *ip)?,
                    None => f.write_str("unknown")?,
                }
                f.write_str(" is not in the own networks and did not authenticate")
            }
        }
    }
}

/// Effective level from the labelled markings per `read.precedence`.
fn effective(policy: &Policy, labelled: &[&FoundMarking]) -> Effective {
    match choose_label(policy, labelled) {
        Some((label, source)) => Effective {
            level: label.level,
            level_name: label.level_name.clone(),
            marking: Some(label.canonical.clone()),
            qualifiers: label.qualifiers.clone(),
            source,
            expired: None,
        },
        None => Effective {
            level: 0,
            level_name: policy.scheme.level_name(0).to_owned(),
            marking: None,
            qualifiers: Vec::new(),
            source: LevelSource::Assumed,
            expired: None,
        },
    }
}

/// The marking that determines the effective level (the most restrictive of the winning source).
fn choose_label<'a>(
    policy: &Policy,
    labelled: &[&'a FoundMarking],
) -> Option<(&'a Label, LevelSource)> {
    let best = |header: Option<bool>| -> Option<&'a FoundMarking> {
        let mut best: Option<&'a FoundMarking> = None;
        for m in labelled.iter().copied() {
            if header.is_some_and(|h| m.source.is_subject() == h) {
                continue;
            }
            let lvl = m.label.as_ref().map_or(0, |l| l.level);
            if best.is_none_or(|b| lvl > b.label.as_ref().map_or(0, |l| l.level)) {
                best = Some(m);
            }
        }
        best
    };
    let m = match policy.read.precedence {
        Precedence::Header => best(Some(true)).or_else(|| best(Some(false))),
        Precedence::Subject => best(Some(false)).or_else(|| best(Some(true))),
        Precedence::Highest => best(None),
    }?;
    let source = match m.source {
        MarkingSource::Header { .. } => LevelSource::Header,
        MarkingSource::Subject { .. } => LevelSource::Subject,
        MarkingSource::Vendor { .. } => LevelSource::Vendor,
    };
    m.label.as_ref().map(|l| (l, source))
}

fn find_rule(
    policy: &Policy,
    situation: Situation,
    direction: Direction,
    level: Option<usize>,
) -> Option<&Rule> {
    policy.rules.iter().find(|r| {
        r.when == situation
            && r.direction.includes(direction)
            && match r.min_level {
                None => true,
                Some(min) => level.is_some_and(|l| l >= min),
            }
    })
}

/// A rule's message-level verdict with its severity (higher wins).
fn verdict_for(rule: &Rule) -> Option<(u8, Verdict)> {
    let reply = rule.reply.clone().unwrap_or(Reply {
        code: 550,
        enhanced: "5.7.1".into(),
        text: format!("Message refused by rule {}", rule.id),
    });
    match rule.action {
        Action::Accept | Action::RemoveRecipients => None,
        Action::Reject => Some((
            3,
            Verdict::Reject {
                reply,
                rule: rule.id.clone(),
            },
        )),
        Action::Tempfail => Some((
            2,
            Verdict::Tempfail {
                reply,
                rule: rule.id.clone(),
            },
        )),
        Action::Quarantine => Some((
            1,
            Verdict::Quarantine {
                reason: rule
                    .reply
                    .as_ref()
                    .map(|r| r.text.clone())
                    .filter(|t| !t.is_empty())
                    .unwrap_or_else(|| format!("held by rule {}", rule.id)),
                rule: rule.id.clone(),
            },
        )),
    }
}

/// Inbound label header claiming our origin: EPMS ORIGIN in an own domain, or (UK headers carry
/// no origin) the envelope sender in an own domain.
fn forged_label(policy: &Policy, markings: &[FoundMarking], env: &Envelope) -> bool {
    let sender_own = {
        let d = domain_of(&env.sender);
        !d.is_empty() && policy.domains.is_own(d)
    };
    markings.iter().filter(|m| m.source.is_header()).any(|m| {
        let origin = m
            .label
            .as_ref()
            .and_then(|l| l.epms.as_ref())
            .and_then(|e| e.origin.as_deref());
        match origin {
            Some(o) => {
                let d = domain_of(o);
                !d.is_empty() && policy.domains.is_own(d)
            }
            None => sender_own,
        }
    })
}

fn labels_to_write(
    policy: &Policy,
    facts: &Facts,
    env: &Envelope,
    direction: Direction,
    effective: &Effective,
    chosen: Option<(&Label, LevelSource)>,
) -> Labels {
    let w = &policy.write;
    if w.header.is_none() && w.subject.is_none() {
        return no_labels("the policy writes no labels");
    }
    if !w.direction.includes(direction) {
        return no_labels(&format!(
            "labels are written on {} mail only",
            directions_name(w.direction)
        ));
    }
    let Some((label, _)) = chosen else {
        return no_labels("no marking chosen by the sender; markgate never invents one");
    };
    if effective.level < w.from_level {
        return no_labels(
            &[
                effective.level_name.as_str(),
                " is below ",
                policy.scheme.level_name(w.from_level),
                ", from which labels are mandatory",
            ]
            .concat(),
        );
    }
    // Only a valid marking is rewritten into canonical labels.
    let chosen_valid = facts
        .markings
        .iter()
        .any(|m| m.status == MarkingStatus::Valid && m.label.as_ref() == Some(label));
    if !chosen_valid {
        return no_labels("the sender's marking is malformed; labels are left as they are");
    }
    let header = w.header.as_ref().and_then(|name| {
        let value = match policy.scheme.grammar {
            Grammar::AuEpms => {
                let e = label.epms.as_ref()?;
                let origin = e.origin.clone().or_else(|| origin_for(policy, env))?;
                au_epms::render_long(e, &origin)
            }
            _ => label.canonical.clone(),
        };
        let existing: Vec<&FoundMarking> = facts.markings.iter().filter(|m| matches!(&m.source, MarkingSource::Header { name: n, .. } if n.eq_ignore_ascii_case(name))).collect();
        let action = match existing.as_slice() {
            [] => HeaderAction::Add,
            [one] if one.raw == value => HeaderAction::Keep,
            many => HeaderAction::Replace { existing: many.len() },
        };
        Some(HeaderLabel {
            name: name.clone(),
            value,
            action,
        })
    });
    let subject = w.subject.map(|form| {
        let marking = match form {
            SubjectForm::Prefix | SubjectForm::Bracketed => label.canonical.clone(),
            SubjectForm::SecSuffix => format!(
                "[{}]",
                label
                    .epms
                    .as_ref()
                    .map_or_else(|| label.canonical.clone(), au_epms::render_medium)
            ),
        };
        let current = facts.subject.clone().unwrap_or_default();
        let new = rewrite_subject(&current, facts, form, &marking);
        let existing = facts
            .markings
            .iter()
            .filter(|m| m.source.is_subject())
            .filter_map(|m| m.range.clone())
            .collect();
        SubjectLabel {
            marking,
            form,
            existing,
            new_subject: (new != current).then_some(new),
        }
    });
    let reason = if header.is_none()
        && w.header.is_some()
        && policy.scheme.grammar == Grammar::AuEpms
    {
        "no ORIGIN available for the EPMS header (null sender, no authenticated address); subject only".to_owned()
    } else {
        [
            effective.level_name.as_str(),
            " is at or above ",
            policy.scheme.level_name(w.from_level),
        ]
        .concat()
    };
    Labels {
        header,
        subject,
        reason,
        extra: Vec::new(),
    }
}

fn origin_for(policy: &Policy, env: &Envelope) -> Option<String> {
    let auth = env.auth_user.as_deref().filter(|u| u.contains('@'));
    let sender = Some(env.sender.trim_matches(['<', '>'])).filter(|s| s.contains('@'));
    match policy.write.origin {
        OriginSource::AuthUser => auth.or(sender),
        OriginSource::Sender => sender,
    }
    .map(str::to_owned)
}

/// The subject with every marking found removed and one canonical marking put in its place.
fn rewrite_subject(current: &str, facts: &Facts, form: SubjectForm, marking: &str) -> String {
    let mut ranges: Vec<std::ops::Range<usize>> = facts
        .markings
        .iter()
        .filter(|m| m.source.is_subject())
        .filter_map(|m| m.remove_range.clone())
        .filter(|r| {
            r.start <= r.end
                && r.end <= current.len()
                && current.is_char_boundary(r.start)
                && current.is_char_boundary(r.end)
        })
        .collect();
    ranges.sort_by_key(|r| std::cmp::Reverse(r.start));
    let mut s = current.to_owned();
    let mut last_start = usize::MAX;
    for r in ranges {
        if r.end > last_start {
            continue; // overlapping ranges: keep the text rather than cut twice
        }
        s.replace_range(r.clone(), "");
        last_start = r.start;
    }
    match form {
        SubjectForm::Prefix | SubjectForm::Bracketed => {
            let at = labels::reply_chain_end(&s);
            let rest = s[at..].trim_start().to_owned();
            let head = &s[..at];
            let marking = if form == SubjectForm::Bracketed {
                ["[", marking, "]"].concat()
            } else {
                marking.to_owned()
            };
            let sep = if form == SubjectForm::Prefix {
                ": "
            } else {
                " "
            };
            if rest.is_empty() {
                [head, &marking].concat()
            } else {
                [head, &marking, sep, &rest].concat()
            }
        }
        SubjectForm::SecSuffix => {
            let base = s.trim_end();
            if base.is_empty() {
                marking.to_owned()
            } else {
                [base, " ", marking].concat()
            }
        }
    }
}

fn verdict_summary(v: &Verdict) -> String {
    match v {
        Verdict::Accept => "accept".into(),
        Verdict::Reject { reply, rule } => {
            format!("reject {} {} (rule {rule})", reply.code, reply.enhanced)
        }
        Verdict::Tempfail { reply, rule } => {
            format!("tempfail {} {} (rule {rule})", reply.code, reply.enhanced)
        }
        Verdict::Quarantine { rule, .. } => format!("quarantine (rule {rule})"),
    }
}

/// Move the enforcement outcome into `shadow` and make the applied fields no-ops.
fn into_shadow(policy: &Policy, d: &mut Decision) {
    let mut parts = vec![format!("would {}", verdict_summary(&d.verdict))];
    for r in d
        .recipients
        .iter()
        .filter(|r| r.delivery == Delivery::Remove)
    {
        parts.push(format!("remove {} (rule {})", r.address, r.rules.join(",")));
    }
    if d.labels
        .header
        .as_ref()
        .is_some_and(|h| h.action != HeaderAction::Keep)
        || d.labels
            .subject
            .as_ref()
            .is_some_and(|s| s.new_subject.is_some())
    {
        parts.push("label".into());
    }
    if matches!(d.disclaimer, DisclaimerDecision::Add { .. }) {
        parts.push("add disclaimer".into());
    }
    let value = format!("{}; policy {}", parts.join("; "), policy.name);
    let applied_recipients: Vec<RecipientOutcome> = d
        .recipients
        .iter()
        .map(|r| {
            let mut r = r.clone();
            if r.delivery == Delivery::Remove {
                r.reason = format!("shadow mode, would remove: {}", r.reason);
            }
            r.delivery = Delivery::Deliver;
            r
        })
        .collect();
    let shadow = Shadow {
        header: policy.shadow_header.clone(),
        value,
        verdict: std::mem::replace(&mut d.verdict, Verdict::Accept),
        recipients: std::mem::replace(&mut d.recipients, applied_recipients),
        labels: std::mem::replace(&mut d.labels, no_labels("shadow mode changes nothing")),
        strip_headers: std::mem::take(&mut d.strip_headers),
        disclaimer: std::mem::replace(
            &mut d.disclaimer,
            DisclaimerDecision::Skip {
                rule: "shadow".into(),
                reason: "shadow mode changes nothing".into(),
            },
        ),
    };
    d.sender_notice = None;
    d.notice_subject = None;
    d.shadow = Some(shadow);
}

#[cfg(test)]
mod tests {
    use super::Why;
    use crate::policy::domains::Network;

    #[test]
    fn each_reason_for_a_direction_reads_as_before() {
        let net = Network::parse("192.168.0.0/16").expect("a network");
        let ip = "192.168.10.200".parse().expect("an address");
        let v6 = "2001:db8::1".parse().expect("an address");
        let cases = [
            (
                Why::Network(ip, &net),
                "client 192.168.10.200 is in 192.168.0.0/16",
            ),
            (Why::Authenticated("alice"), "client authenticated as alice"),
            (
                Why::Daemon("ORIGINATING"),
                "received by the MTA service ORIGINATING",
            ),
            (
                Why::SenderDomain("example.gov.uk"),
                "sender domain example.gov.uk is an own domain",
            ),
            (
                Why::Inbound(Some(v6)),
                "client 2001:db8::1 is not in the own networks and did not authenticate",
            ),
            (
                Why::Inbound(None),
                "client unknown is not in the own networks and did not authenticate",
            ),
        ];
        for (why, text) in cases {
            assert_eq!(why.to_string(), text);
        }
    }
}
