//! EPMS `ORIGIN=` against who really sent the message: the SASL-authenticated user or the
//! envelope sender, as `[origin]` says. A label whose ORIGIN names someone else was copied from
//! another message or forged; that is the `origin-mismatch` situation (an incident).
//!
//! Must not: look anything up (the envelope is all it knows).

use super::Policy;
use super::decide::{Direction, domain_of};
use super::facts::{Envelope, Facts};
use super::model::{Directions, Situation};

/// `[origin]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OriginCheck {
    pub against: OriginAgainst,
    pub direction: Directions,
}

/// `origin.check`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OriginAgainst {
    /// The SASL user when the client authenticated, else the envelope sender.
    AuthUser,
    /// The envelope sender.
    Sender,
    /// Either may match.
    Either,
}

impl OriginAgainst {
    pub const NAMES: &'static [&'static str] = &["auth-user", "sender", "either"];
    pub fn from_name(s: &str) -> Option<Self> {
        match s {
            "auth-user" => Some(Self::AuthUser),
            "sender" => Some(Self::Sender),
            "either" => Some(Self::Either),
            _ => None,
        }
    }
}

/// `Some` when a marking's ORIGIN names someone other than the sender.
pub fn check(
    policy: &Policy,
    facts: &Facts,
    env: &Envelope,
    direction: Direction,
) -> Option<(Situation, String)> {
    let c = policy.origin?;
    if !c.direction.includes(direction) {
        return None;
    }
    let sender = env.sender.trim_matches(['<', '>']).to_owned();
    let auth = env.auth_user.clone().filter(|u| !u.is_empty());
    let candidates: Vec<String> = match c.against {
        OriginAgainst::Sender => vec![sender],
        OriginAgainst::AuthUser => vec![auth.unwrap_or(sender)],
        OriginAgainst::Either => auth.into_iter().chain([sender]).collect(),
    };
    for m in &facts.markings {
        let Some(origin) = m
            .label
            .as_ref()
            .and_then(|l| l.epms.as_ref())
            .and_then(|e| e.origin.as_deref())
        else {
            continue;
        };
        let matches = candidates.iter().any(|c| same_address(c, origin));
        if !matches {
            return Some((
                Situation::OriginMismatch,
                format!(
                    "ORIGIN={origin} in the {} marking, but the message was sent by {}",
                    m.source.location(),
                    candidates
                        .iter()
                        .filter(|c| !c.is_empty())
                        .cloned()
                        .collect::<Vec<_>>()
                        .join(" / ")
                ),
            ));
        }
    }
    None
}

/// Same mailbox, without regard to case (mail systems in government treat local parts
/// case-insensitively; `Etienne.ALEPINS` and `etienne.alepins` are one person). A SASL user without a
/// domain is compared with the local part only.
fn same_address(who: &str, origin: &str) -> bool {
    let origin = origin.trim().trim_matches(['<', '>']);
    let (ol, od) = origin.rsplit_once('@').unwrap_or((origin, ""));
    match who.rsplit_once('@') {
        Some((l, _)) => l.eq_ignore_ascii_case(ol) && domain_of(who).eq_ignore_ascii_case(od),
        None => !who.is_empty() && who.eq_ignore_ascii_case(ol),
    }
}
