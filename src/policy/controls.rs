//! Compliance controls: the closed list of control ids a policy may cite (`controls = [...]` on
//! a `[[rule]]`, on `[write]` and on `[disclaimer]`), and the map from the rule ids that audit
//! records cite to the controls they enforce.
//!
//! The map is what lets `markgate audit report --evidence` turn decisions into evidence per
//! control: the daemon writes it into each `policy_loaded` audit record, keyed by the policy
//! digest that every `message_decision` record carries. The list is closed (an unknown id is a
//! load error with file:line:col) so a typo cannot silently drop a control from the evidence.
//! A policy whose `policy.name` is a shipped template's gets a warning for every control the
//! template names that no part of it names any more (see [`template_gaps`]).
//!
//! Must not: do I/O, or know anything about audit files (the report reads the map from the
//! records; this module only says what the policy claims).

use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::OnceLock;

use serde::Serialize;
use toml::Spanned;

use super::error::{Problem, SourceText};
use super::model::Policy;
use super::raw::{TableReader, quote_list};

/// One control a policy can claim to enforce.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub enum Control {
    /// GCSX CoCo 4.1: security labels on mail marked PROTECT or higher.
    CocoLabels,
    /// GCSX CoCo 4.1: a warning that mail may be monitored.
    CocoDisclaimer,
    /// GCSX CoCo 4.1: no automatic forward to a lower classification domain.
    CocoAutoforward,
    /// GCSX CoCo 4.1: audit logs of user activities, exceptions and security events.
    CocoAudit,
    /// GCSX CoCo 4.1: users know their responsibilities (senders are told why and what to do).
    CocoAwareness,
    /// SIA CoCo-11: security incidents are reported within 24 hours.
    Coco11,
    /// ISM-0565: block, log and report mail with inappropriate protective markings.
    Ism0565,
    /// ISM-1023: the sender of blocked outbound (recipient of blocked inbound) mail is told.
    Ism1023,
    /// ISM-1089: a reply or forward cannot carry a lower marking than the thread had.
    Ism1089,
    /// ISM-0271: protective marking tools do not insert markings automatically.
    Ism0271,
    /// ISM-0269: caveated (AGAO, AUSTEO, REL) mail only to lists whose members are confirmed.
    Ism0269,
}

impl Control {
    /// Every control, in the order the evidence report lists them.
    pub const ALL: [Control; 11] = [
        Control::CocoLabels,
        Control::CocoDisclaimer,
        Control::CocoAutoforward,
        Control::CocoAudit,
        Control::CocoAwareness,
        Control::Coco11,
        Control::Ism0565,
        Control::Ism1023,
        Control::Ism1089,
        Control::Ism0271,
        Control::Ism0269,
    ];

    /// The ids as written in a policy, in [`Control::ALL`] order.
    pub const NAMES: &'static [&'static str] = &[
        "CoCo-4.1-labels",
        "CoCo-4.1-disclaimer",
        "CoCo-4.1-autoforward",
        "CoCo-4.1-audit",
        "CoCo-4.1-awareness",
        "CoCo-11",
        "ISM-0565",
        "ISM-1023",
        "ISM-1089",
        "ISM-0271",
        "ISM-0269",
    ];

    /// The id as written in a policy and in audit records.
    pub fn id(self) -> &'static str {
        let i = Self::ALL.iter().position(|c| *c == self).unwrap_or(0);
        Self::NAMES[i]
    }

    /// The control for an id (exact spelling).
    pub fn from_id(id: &str) -> Option<Control> {
        Self::NAMES
            .iter()
            .position(|n| *n == id)
            .map(|i| Self::ALL[i])
    }

    /// The framework it belongs to, for grouping in reports.
    pub fn framework(self) -> &'static str {
        match self {
            Control::Coco11 => "SIA CoCo",
            Control::Ism0565
            | Control::Ism1023
            | Control::Ism1089
            | Control::Ism0271
            | Control::Ism0269 => "ISM",
            _ => "GCSX CoCo 4.1",
        }
    }

    /// The requirement in our own words, one sentence.
    pub fn requirement(self) -> &'static str {
        match self {
            Control::CocoLabels => {
                "Mail carrying a protective marking of PROTECT or higher carries security labels."
            }
            Control::CocoDisclaimer => {
                "Outgoing mail carries a warning that it may be recorded or monitored."
            }
            Control::CocoAutoforward => {
                "Mail is not automatically forwarded to a domain of lower classification."
            }
            Control::CocoAudit => {
                "Audit logs record user activities, exceptions and information-security events."
            }
            Control::CocoAwareness => {
                "Users are told what went wrong and what to do when the gateway stops their mail."
            }
            Control::Coco11 => "Security incidents are reported within 24 hours.",
            Control::Ism0565 => {
                "Mail with inappropriate protective markings is blocked, logged and reported."
            }
            Control::Ism1023 => {
                "Senders of blocked outbound mail and recipients of blocked inbound mail are told."
            }
            Control::Ism1089 => {
                "A reply or forward cannot carry a lower marking than the mail it answers."
            }
            Control::Ism0271 => "Protective markings are not inserted automatically.",
            Control::Ism0269 => {
                "Caveated mail goes only to distribution lists whose members' nationality is confirmed."
            }
        }
    }
}

impl std::fmt::Display for Control {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.id())
    }
}

/// Read an optional `controls = ["…", …]` from a policy table. Unknown ids are errors at the
/// id's own position, listing every known id; a repeated id is a warning.
pub(crate) fn read(
    src: &SourceText,
    t: &mut TableReader<'_>,
    problems: &mut Vec<Problem>,
) -> Vec<Control> {
    let key = t.child_path("controls");
    let Some(ids) = t.strings("controls", problems) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for id in ids {
        match Control::from_id(id.get_ref()) {
            Some(c) if out.contains(&c) => problems.push(src.warning(
                id.span(),
                &key,
                format!("`{}` twice", id.get_ref()),
                "each control once".into(),
            )),
            Some(c) => out.push(c),
            None => problems.push(unknown(src, &id, &key)),
        }
    }
    out
}

fn unknown(src: &SourceText, id: &Spanned<String>, key: &str) -> Problem {
    let near = Control::NAMES
        .iter()
        .find(|n| n.eq_ignore_ascii_case(id.get_ref()))
        .map(|n| format!(" (did you mean `{n}`?)"))
        .unwrap_or_default();
    src.problem(
        id.span(),
        key,
        format!("unknown control `{}`{near}", id.get_ref()),
        format!("one of {}", quote_list(Control::NAMES)),
    )
}

/// Rule id (as audit records cite it) → the controls it enforces. `[write]` is cited as
/// `write`, the disclaimer by its `id`, each `[[rule]]` by its `id`.
pub type ControlMap = BTreeMap<String, Vec<String>>;

impl Policy {
    /// The rule id → control ids map this policy declares (only ids that name a control).
    pub fn control_map(&self) -> ControlMap {
        let mut map = ControlMap::new();
        let mut put = |id: &str, cs: &[Control]| {
            if !cs.is_empty() {
                let e = map.entry(id.to_string()).or_default();
                for c in cs {
                    if !e.iter().any(|x| x == c.id()) {
                        e.push(c.id().to_string());
                    }
                }
            }
        };
        put("write", &self.write.controls);
        if let Some(d) = &self.disclaimer {
            put(&d.id, &d.controls);
        }
        for r in &self.rules {
            put(&r.id, &r.controls);
        }
        if let Some(t) = &self.thread {
            put(&t.downgrade.id, &t.downgrade.controls);
            put(&t.redirect_id, &t.redirect_controls);
        }
        map
    }

    /// Every control some part of the policy names.
    pub fn controls_named(&self) -> Vec<Control> {
        let mut out: Vec<Control> = self
            .write
            .controls
            .iter()
            .chain(self.disclaimer.iter().flat_map(|d| d.controls.iter()))
            .chain(self.rules.iter().flat_map(|r| r.controls.iter()))
            .chain(self.thread.iter().flat_map(|t| {
                t.downgrade
                    .controls
                    .iter()
                    .chain(t.redirect_controls.iter())
            }))
            .copied()
            .collect();
        out.sort();
        out.dedup();
        out
    }
}

/// The shipped templates by `policy.name`, with their text (compiled into the binary).
pub const TEMPLATES: &[(&str, &str)] = &[
    ("uk-gpms", include_str!("../../policies/uk-gpms.toml")),
    ("uk-gsc", include_str!("../../policies/uk-gsc.toml")),
    ("au-epms", include_str!("../../policies/au-epms.toml")),
];

/// The controls a shipped template names (any `controls` array anywhere in it), read from its
/// TOML without compiling it (no recursion through this check).
pub fn template_controls(name: &str) -> Option<&'static [Control]> {
    static CACHE: OnceLock<Vec<(&'static str, Vec<Control>)>> = OnceLock::new();
    let all = CACHE.get_or_init(|| {
        TEMPLATES
            .iter()
            .map(|(n, text)| {
                let mut out = Vec::new();
                if let Ok(v) = text.parse::<toml::Table>() {
                    collect(&toml::Value::Table(v), &mut out);
                }
                out.sort();
                out.dedup();
                (*n, out)
            })
            .collect()
    });
    all.iter()
        .find(|(n, _)| *n == name)
        .map(|(_, cs)| cs.as_slice())
}

fn collect(v: &toml::Value, out: &mut Vec<Control>) {
    match v {
        toml::Value::Table(t) => {
            for (k, v) in t {
                if k == "controls"
                    && let toml::Value::Array(items) = v
                {
                    out.extend(
                        items
                            .iter()
                            .filter_map(|i| i.as_str())
                            .filter_map(Control::from_id),
                    );
                } else {
                    collect(v, out);
                }
            }
        }
        toml::Value::Array(items) => items.iter().for_each(|i| collect(i, out)),
        _ => {}
    }
}

/// Warnings for a policy named like a shipped template: each control the template names that
/// nothing in this policy names (the evidence report would show it with no rule). `name_span`
/// is where `policy.name` is written.
pub(crate) fn template_gaps(
    src: &SourceText,
    policy: &Policy,
    name_span: Range<usize>,
) -> Vec<Problem> {
    let Some(wanted) = template_controls(&policy.name) else {
        return Vec::new();
    };
    let have = policy.controls_named();
    wanted
        .iter()
        .filter(|c| !have.contains(c))
        .map(|c| {
            src.warning(
                name_span.clone(),
                "policy.name",
                format!(
                    "the shipped template `{}` names control `{c}`, but no rule of this policy does",
                    policy.name
                ),
                format!(
                    "`controls = [\"{c}\"]` on the `[[rule]]`, `[write]` or `[disclaimer]` that \
                     enforces it (or another `policy.name` if this policy is not that template)"
                ),
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip() {
        for c in Control::ALL {
            assert_eq!(Control::from_id(c.id()), Some(c));
        }
        assert_eq!(Control::from_id("coco-11"), None);
    }

    #[test]
    fn every_template_names_controls() {
        for (name, _) in TEMPLATES {
            let cs = template_controls(name).expect("template");
            assert!(cs.contains(&Control::Ism0565) || cs.contains(&Control::CocoLabels));
        }
        assert!(template_controls("mine").is_none());
    }
}
