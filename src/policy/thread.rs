//! Thread rules: a reply marked lower than the message it answers (downgrade, ISM-1089), and
//! an inbound marked message going out again unchanged to a lower-rated domain (a server-side
//! redirect or forward, which CoCo forbids like any automatic forward).
//!
//! What the gateway remembers about earlier messages reaches this module only as
//! [`ThreadFacts`], plain data the filter builds from its ledger lookup. This module knows
//! nothing of where they are stored: it does no I/O and never learns of a store. It is called
//! once from `decide` ([`check`]) after the per-recipient checks.
//!
//! Hard rule: the rule never invents a marking. A downgrade is refused, held or recorded; the
//! message's own label is never raised to the original's.
//!
//! Keys: `[thread]` in markgate-policy(5); compiled by `compile/thread.rs`.

use serde::Serialize;

use super::Policy;
use super::decide::{Delivery, Direction, Effective, RecipientOutcome, RuleHit, Verdict};
use super::facts::Envelope;
use super::model::{Action, Directions, Reply, Rule};

/// `[thread]`: thread memory settings and the two rules.
#[derive(Debug, Clone)]
pub struct ThreadPolicy {
    /// How long the ledger keeps an entry (`retention_days`, default 30).
    pub retention_days: u32,
    /// What to do with a message when the ledger cannot be asked.
    pub on_unavailable: OnUnavailable,
    /// The 4xx answered under `on_unavailable = "tempfail"`.
    pub unavailable_reply: Reply,
    pub downgrade: Downgrade,
    /// `[thread.redirect] id`: the rule id a redirect is reported under.
    pub redirect_id: String,
    /// `[thread.redirect] text`, with `{original}`, `{domain}` and `{ceiling}` placeholders;
    /// `None` uses the auto-forward rule's own reply.
    pub redirect_text: Option<String>,
    /// `[thread.redirect] controls`: the compliance controls the redirect rule enforces.
    pub redirect_controls: Vec<super::controls::Control>,
    /// The policy's outbound `auto-forward-down` rules, whose action a redirect gets.
    pub redirect_rules: Vec<Rule>,
}

/// `on_unavailable`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum OnUnavailable {
    /// Decide without thread memory; one audit record when the outage starts, one at recovery.
    FailOpen,
    /// Answer 451 until the ledger answers again: nothing passes unchecked.
    Tempfail,
}

impl OnUnavailable {
    pub const NAMES: &'static [&'static str] = &["fail-open", "tempfail"];
    pub fn from_name(s: &str) -> Option<Self> {
        match s {
            "fail-open" => Some(OnUnavailable::FailOpen),
            "tempfail" => Some(OnUnavailable::Tempfail),
            _ => None,
        }
    }
}

/// `[thread.downgrade] action`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DowngradeAction {
    Reject,
    Quarantine,
    /// Record the finding (audit, `policy test`) and let the message pass unchanged.
    Shadow,
}

impl DowngradeAction {
    pub const NAMES: &'static [&'static str] = &["reject", "quarantine", "shadow"];
    pub fn from_name(s: &str) -> Option<Self> {
        match s {
            "reject" => Some(DowngradeAction::Reject),
            "quarantine" => Some(DowngradeAction::Quarantine),
            "shadow" => Some(DowngradeAction::Shadow),
            _ => None,
        }
    }
}

/// `[thread.downgrade]`.
#[derive(Debug, Clone)]
pub struct Downgrade {
    pub id: String,
    pub direction: Directions,
    pub action: DowngradeAction,
    /// The reply (reject) or hold reason (quarantine); its text may name `{original}` (the
    /// earlier message's marking), `{marking}` (this message's) and `{message_id}`.
    pub reply: Reply,
    /// `allow_header`: a header that marks a deliberate, authorised downgrade.
    pub allow_header: Option<String>,
    /// `allow_by`: who may downgrade (addresses, or `*@domain`), matched against the SASL user
    /// and the envelope sender. Empty: nobody, even with the header.
    pub allow_by: Vec<String>,
    /// `controls`: the compliance controls this rule enforces (ISM-1089).
    pub controls: Vec<super::controls::Control>,
}

/// One earlier message the ledger remembers, as `decide` needs it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ThreadEntry {
    pub message_id: String,
    /// Its effective level's name (resolved against the policy's scheme here).
    pub level: String,
    /// Its marking as written, with qualifiers, when it had one.
    pub marking: Option<String>,
    pub direction: Direction,
    /// How this message was tied to it (`In-Reply-To`, `References`, `Thread-Index`,
    /// `Message-ID`, `text digest and subject`).
    pub matched_by: String,
}

/// What the filter learnt from the ledger about one message.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ThreadFacts {
    /// Earlier messages this one answers (by its reference headers), nearest first.
    pub parents: Vec<ThreadEntry>,
    /// Earlier messages this one repeats (same Message-ID, or same text and subject).
    pub same: Vec<ThreadEntry>,
    /// The value of the policy's `allow_header`, when the message carries it.
    pub downgrade_marker: Option<String>,
    /// Set when the ledger could not be asked (fail-open): why. The rules are then skipped.
    pub unavailable: Option<String>,
}

/// Which of the ledger's answers the thread rules could use for a message with this
/// envelope, so the filter asks only for those (and not at all when neither applies).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Needs {
    /// Entries named by the message's reference headers or Thread-Index: the downgrade rule
    /// covers the message's direction.
    pub parents: bool,
    /// Inbound entries with the message's Message-ID, or its text and subject: the message
    /// goes out, a redirect rule exists, and some recipient is rated below the scheme's top
    /// level (else no earlier marking can be above its ceiling).
    pub copies: bool,
    /// The message's text digest is wanted: to look for copies, or because the message comes
    /// in and a later copy may be looked for by it.
    pub text: bool,
}

/// What [`check`] could use of the ledger for a message with `envelope` (pure).
pub fn needs(policy: &Policy, envelope: &Envelope) -> Needs {
    let Some(t) = &policy.thread else {
        return Needs::default();
    };
    let (direction, _) = super::decide::direction(policy, envelope);
    let top = policy.scheme.vocab.levels.len().saturating_sub(1);
    let redirects = t
        .redirect_rules
        .iter()
        .any(|r| r.direction.includes(Direction::Outbound));
    let below_top = envelope.recipients.iter().any(|r| {
        // The maps compare as DNS does (case, a trailing dot) without a copy.
        policy.domains.ceiling_level(super::decide::domain_of(r)) < top
    });
    Needs {
        parents: t.downgrade.direction.includes(direction),
        copies: direction == Direction::Outbound && redirects && below_top,
        text: redirects && (direction == Direction::Inbound || below_top),
    }
}

/// Where `check` writes what it finds: `decide`'s own working lists.
pub(super) struct Found<'a, 'p> {
    pub hits: &'a mut Vec<RuleHit>,
    pub recipients: &'a mut Vec<RecipientOutcome>,
    pub verdicts: &'a mut Vec<(u8, Verdict)>,
    pub first_remove: &'a mut Option<&'p Rule>,
}

/// Apply the downgrade and redirect rules. A redirect's verdict goes before the others so
/// that, like an auto-forward, its reply is the one the sender reads.
pub(super) fn check<'p>(
    policy: &'p Policy,
    facts: &ThreadFacts,
    envelope: &Envelope,
    direction: Direction,
    effective: &Effective,
    found: Found<'_, 'p>,
) {
    let Some(t) = &policy.thread else {
        return;
    };
    if facts.unavailable.is_some() {
        return;
    }
    let level_of = |e: &ThreadEntry| {
        policy
            .scheme
            .vocab
            .levels
            .iter()
            .position(|l| l.name.eq_ignore_ascii_case(&e.level))
    };
    let marking = effective
        .marking
        .clone()
        .unwrap_or_else(|| format!("unmarked ({})", effective.level_name));

    // Downgrade: the highest-marked parent above this message's level.
    let parent = facts
        .parents
        .iter()
        .filter_map(|e| level_of(e).map(|l| (l, e)))
        .filter(|(l, _)| *l > effective.level)
        .max_by_key(|(l, _)| *l);
    if let Some((_, parent)) = parent
        && t.downgrade.direction.includes(direction)
    {
        let d = &t.downgrade;
        let original = parent
            .marking
            .clone()
            .unwrap_or_else(|| parent.level.clone());
        let detail = format!(
            "marked {marking}, but it answers {} (by {}), marked {original}",
            parent.message_id, parent.matched_by
        );
        let allowed = d.allow_header.as_ref().and_then(|h| {
            let value = facts.downgrade_marker.as_deref()?;
            let who = authorised(&d.allow_by, envelope)?;
            Some(format!("{h}: {value} (authorised user {who})"))
        });
        let fill = |s: &str| {
            s.replace("{original}", &original)
                .replace("{marking}", &marking)
                .replace("{message_id}", &parent.message_id)
        };
        let (action, detail) = match (&allowed, d.action) {
            (Some(how), _) => (
                Action::Accept,
                format!("{detail}; deliberate downgrade allowed by {how}"),
            ),
            (None, DowngradeAction::Shadow) => (
                Action::Accept,
                format!("{detail}; shadow: would have been refused"),
            ),
            (None, DowngradeAction::Reject) => {
                let reply = Reply {
                    text: fill(&d.reply.text),
                    ..d.reply.clone()
                };
                found.verdicts.push((
                    3,
                    Verdict::Reject {
                        reply,
                        rule: d.id.clone(),
                    },
                ));
                (Action::Reject, detail)
            }
            (None, DowngradeAction::Quarantine) => {
                found.verdicts.push((
                    1,
                    Verdict::Quarantine {
                        reason: fill(&d.reply.text),
                        rule: d.id.clone(),
                    },
                ));
                (Action::Quarantine, detail)
            }
        };
        found.hits.push(RuleHit {
            rule: d.id.clone(),
            situation: if allowed.is_some() {
                "thread-downgrade-allowed".into()
            } else {
                "thread-downgrade".into()
            },
            action,
            recipient: None,
            detail,
        });
    }

    // Redirect: outbound, repeating an inbound message, to a domain rated below it.
    if direction != Direction::Outbound {
        return;
    }
    let Some((level, original)) = facts
        .same
        .iter()
        .filter(|e| e.direction == Direction::Inbound)
        .filter_map(|e| level_of(e).map(|l| (l, e)))
        .max_by_key(|(l, _)| *l)
    else {
        return;
    };
    let Some(rule) = t.redirect_rules.iter().find(|r| {
        r.min_level.is_none_or(|m| level >= m) && r.direction.includes(Direction::Outbound)
    }) else {
        return;
    };
    let shown = original
        .marking
        .clone()
        .unwrap_or_else(|| original.level.clone());
    let mut first_verdict = None;
    for outcome in found.recipients.iter_mut() {
        let (ceiling, _) = policy.domains.ceiling(&outcome.domain);
        if ceiling >= level {
            continue;
        }
        let detail = format!(
            "{} came in marked {shown} and goes out again unchanged (same {}) to {} rated {}: an automatic forward or redirect",
            original.message_id, original.matched_by, outcome.domain, outcome.ceiling
        );
        found.hits.push(RuleHit {
            rule: rule.id.clone(),
            situation: "thread-redirect".into(),
            action: rule.action,
            recipient: Some(outcome.address.clone()),
            detail: detail.clone(),
        });
        outcome.rules.retain(|r| !r.starts_with("ceiling:"));
        outcome.rules.insert(0, rule.id.clone());
        outcome.reason = detail;
        match rule.action {
            Action::RemoveRecipients => {
                outcome.delivery = Delivery::Remove;
                found.first_remove.get_or_insert(rule);
            }
            Action::Accept => {}
            _ => {
                let mut reply = rule.reply.clone().unwrap_or(Reply {
                    code: 550,
                    enhanced: "5.7.1".into(),
                    text: format!("Message refused by rule {}", rule.id),
                });
                if let Some(text) = &t.redirect_text {
                    reply.text = text
                        .replace("{original}", &shown)
                        .replace("{domain}", &outcome.domain)
                        .replace("{ceiling}", &outcome.ceiling);
                }
                first_verdict.get_or_insert(match rule.action {
                    Action::Quarantine => (
                        1,
                        Verdict::Quarantine {
                            reason: reply.text,
                            rule: rule.id.clone(),
                        },
                    ),
                    Action::Tempfail => (
                        2,
                        Verdict::Tempfail {
                            reply,
                            rule: rule.id.clone(),
                        },
                    ),
                    _ => (
                        3,
                        Verdict::Reject {
                            reply,
                            rule: rule.id.clone(),
                        },
                    ),
                });
            }
        }
    }
    if let Some(v) = first_verdict {
        found.verdicts.insert(0, v);
    }
}

/// The SASL user or envelope sender that `allow_by` names, if any.
fn authorised(allow_by: &[String], envelope: &Envelope) -> Option<String> {
    let candidates = envelope
        .auth_user
        .iter()
        .chain(std::iter::once(&envelope.sender));
    for who in candidates {
        let who = who.trim().trim_start_matches('<').trim_end_matches('>');
        if who.is_empty() {
            continue;
        }
        let domain = who.rsplit_once('@').map(|(_, d)| d);
        let hit = allow_by.iter().any(|a| {
            a.eq_ignore_ascii_case(who)
                || a.strip_prefix("*@")
                    .is_some_and(|d| domain.is_some_and(|x| x.eq_ignore_ascii_case(d)))
        });
        if hit {
            return Some(who.to_owned());
        }
    }
    None
}
