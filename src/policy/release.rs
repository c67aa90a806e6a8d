//! Releasability caveats: who may receive mail carrying AUSTEO, AGAO, `REL/…` (EPMS
//! `CAVEAT=RI:…`) or a UK national caveat (`UK EYES ONLY`, `UK/US EYES ONLY`, `FIVE EYES ONLY`
//! under GSC). `[release]` gives each recipient domain its country (ISO 3166 alpha-3, as EPMS
//! writes them) or releasability groups; a recipient whose domain is not released to gets the
//! `not-releasable` situation, which the policy's rule turns into removal (with a notice) or
//! refusal. The reply text's `{caveat}` names the caveat. Unknown domains are never released
//! to: a caveat is a restriction, so the gateway fails closed.
//!
//! Must not: know recipients' identities beyond their domain, or read headers.

use super::decide::{Effective, RuleHit, Verdict};
use super::domains::DomainMap;
use super::model::Situation;

/// `[release]`.
#[derive(Debug, Clone, Default)]
pub struct Release {
    /// Countries and groups of the organisation's own domains (`own`).
    pub own: Vec<String>,
    /// Domain pattern → (countries and groups, the pattern as written).
    pub domains: DomainMap<(Vec<String>, String)>,
}

/// The countries of FIVE EYES.
const FVEY: [&str; 5] = ["AUS", "CAN", "GBR", "NZL", "USA"];

/// Who a caveat allows: `None` when the qualifier is no releasability caveat.
pub fn allowed(caveat: &str) -> Option<Vec<String>> {
    let c = caveat.trim();
    let c = c.strip_prefix("RI:").unwrap_or(c);
    let v = |xs: &[&str]| Some(xs.iter().map(|s| (*s).to_owned()).collect());
    match c.to_ascii_uppercase().as_str() {
        "AUSTEO" => v(&["AUS"]),
        // Australian Government Access Only: Australian government, plus any domain the
        // policy puts in the AGAO group (the foreign agencies the standard allows).
        "AGAO" => v(&["AUS", "AGAO"]),
        "UK EYES ONLY" => v(&["GBR"]),
        "UK/US EYES ONLY" => v(&["GBR", "USA"]),
        "FIVE EYES ONLY" => v(&FVEY),
        other => other
            .strip_prefix("REL/")
            .map(|list| list.split('/').map(str::to_owned).collect()),
    }
}

/// The releasability check for one recipient domain: `Some` when a caveat on the effective
/// marking does not allow it.
pub fn check(
    policy: &super::Policy,
    effective: &Effective,
    domain: &str,
) -> Option<(Situation, String)> {
    let caveats: Vec<(String, Vec<String>)> = effective
        .qualifiers
        .iter()
        .filter_map(|q| allowed(q).map(|a| (q.clone(), a)))
        .collect();
    if caveats.is_empty() {
        return None;
    }
    let r = &policy.release;
    let (tags, from): (&[String], String) = if policy.domains.is_own(domain) {
        (&r.own, "own domain".into())
    } else {
        match r.domains.get(domain) {
            Some((t, p)) => (t, format!("release.domains \"{p}\"")),
            None => (&[], "no release.domains entry".into()),
        }
    };
    // Every caveat must allow the recipient (they restrict together).
    let blocking = caveats.iter().find(|(_, allow)| {
        !allow
            .iter()
            .any(|a| tags.iter().any(|t| t.eq_ignore_ascii_case(a)))
    })?;
    let have = if tags.is_empty() {
        "nothing".to_owned()
    } else {
        tags.join(", ")
    };
    Some((
        Situation::NotReleasable,
        format!(
            "caveat {} allows {} only; {domain} is {have} ({from})",
            blocking.0,
            blocking.1.join(", ")
        ),
    ))
}

/// Put the caveat into the reply and the sender notice of a `not-releasable` rule
/// (`{caveat}` in the rule's text; appended when the text does not say where). `notice_rule`:
/// the rule whose text the sender notice is; another rule's notice is left alone.
pub fn name_caveat(
    effective: &Effective,
    hits: &[RuleHit],
    verdict: &mut Verdict,
    notice: &mut Option<String>,
    notice_rule: Option<&str>,
) {
    let Some(hit) = hits
        .iter()
        .find(|h| h.situation == Situation::NotReleasable.name())
    else {
        return;
    };
    let caveats: Vec<&str> = effective
        .qualifiers
        .iter()
        .filter(|q| allowed(q).is_some())
        .map(String::as_str)
        .collect();
    let caveat = caveats.join(", ");
    let fill = |text: &mut String| {
        if text.contains("{caveat}") {
            *text = text.replace("{caveat}", &caveat);
        } else if !text.contains(&caveat) {
            text.push_str(&format!(" (caveat {caveat})"));
        }
    };
    if let Verdict::Reject { reply, rule } | Verdict::Tempfail { reply, rule } = verdict
        && *rule == hit.rule
    {
        fill(&mut reply.text);
    }
    if notice_rule == Some(hit.rule.as_str())
        && let Some(n) = notice.as_mut()
    {
        fill(n);
    }
}
