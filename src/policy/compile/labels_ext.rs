//! Compiling the policy keys of vendor labels, releasability and ORIGIN checking:
//! `[read.vendor.<product>]`, `[write.purview]`, `[release]` and `[origin]`. A child of
//! `compile` so it reports problems exactly as the rest of the loader does (file, line,
//! column, what was found, what was expected). Must not: decide anything.

use toml::Spanned;

use super::super::domains::{DomainMap, check_domain_pattern};
use super::super::labels::Grammar;
use super::super::labels::au_epms::{self, Form};
use super::super::labels::uk::{self, UkStyle};
use super::super::model::{Directions, Rule, Scheme, Situation};
use super::super::origin::{OriginAgainst, OriginCheck};
use super::super::release::Release;
use super::super::vendor::{PurviewWrite, Vendor, VendorRead};
use super::Compiler;
use crate::policy::raw::{self, TableReader, quote_list};

/// Tables read early (inside `[read]` and `[write]`) and compiled once the scheme is known.
#[derive(Default)]
pub(super) struct Pending<'a> {
    pub vendor: Option<TableReader<'a>>,
    pub purview: Option<TableReader<'a>>,
}

const VENDOR_KEYS: &[&str] = &[
    "labels",
    "tenants",
    "namespaces",
    "trust",
    "require_user_choice",
];

/// Situations that only arise when the policy configures them (`[release]`, `[origin]`): no
/// "no rule" warning unless it does.
pub(super) fn optional(s: Situation) -> bool {
    matches!(s, Situation::NotReleasable | Situation::OriginMismatch)
}

impl<'a> Compiler<'a> {
    /// A configured `[release]` or `[origin]` without a rule for its situation does nothing:
    /// say so.
    pub(super) fn feature_rules(
        &mut self,
        rules: &[Rule],
        release: &Release,
        origin: Option<&OriginCheck>,
    ) {
        let configured = [
            (
                Situation::NotReleasable,
                !release.own.is_empty() || !release.domains.is_empty(),
                "[release]",
            ),
            (Situation::OriginMismatch, origin.is_some(), "[origin]"),
        ];
        for (s, on, table) in configured {
            if on && !rules.iter().any(|r| r.when == s) {
                self.warn(
                    0..0,
                    "rule",
                    format!("{table} but no rule for `{}`", s.name()),
                    format!(
                        "a rule with when = \"{}\" (without one, such mail is accepted)",
                        s.name()
                    ),
                );
            }
        }
    }

    /// `[read.vendor.*]`.
    pub(super) fn vendors(&mut self, scheme: Option<&Scheme>) -> Vec<VendorRead> {
        let Some(mut t) = self.pending.vendor.take() else {
            return Vec::new();
        };
        let mut out = Vec::new();
        let mut p = std::mem::take(&mut self.problems);
        let entries = t.take_all();
        let mut tables = Vec::new();
        for (key, node) in entries {
            let path = t.child_path(&key.name);
            match Vendor::from_name(&key.name) {
                Some(v) => tables.push((v, TableReader::new(self.src, node, &path, &mut p))),
                None => p.push(self.src.problem(
                    if key.span.is_empty() {
                        node.span.clone()
                    } else {
                        key.span.clone()
                    },
                    "read.vendor",
                    format!("unknown vendor `{}`", key.name),
                    format!("one of {}", quote_list(Vendor::NAMES)),
                )),
            }
        }
        t.finish(Vendor::NAMES, &mut p);
        self.problems = p;
        for (vendor, mut vt) in tables {
            let mut p = std::mem::take(&mut self.problems);
            let labels = vt.table("labels", &mut p);
            let tenants = vt.strings("tenants", &mut p).unwrap_or_default();
            let namespaces = vt.strings("namespaces", &mut p).unwrap_or_default();
            let trust = vt.string("trust", &mut p);
            let require = vt.bool("require_user_choice", &mut p);
            let span = vt.span();
            let path = vt.path().to_owned();
            vt.finish(VENDOR_KEYS, &mut p);
            self.problems = p;
            if vendor != Vendor::Janusseal && !namespaces.is_empty() {
                self.err(
                    namespaces[0].span(),
                    &format!("{path}.namespaces"),
                    "`namespaces` for a product other than janusseal".into(),
                    "`namespaces` only under read.vendor.janusseal".into(),
                );
            }
            let mut map: Vec<(String, String)> = Vec::new();
            match labels {
                None => {
                    let mut p = std::mem::take(&mut self.problems);
                    p.push(self.src.problem(
                        span,
                        &path,
                        "no `labels` key".into(),
                        "`labels` (a table mapping the product's labels to markings)".into(),
                    ));
                    self.problems = p;
                }
                Some(mut lt) => {
                    let mut p = std::mem::take(&mut self.problems);
                    let items = lt.take_all();
                    lt.finish(&[], &mut p);
                    self.problems = p;
                    for (key, node) in items {
                        let kpath = format!("{path}.labels.\"{}\"", key.name);
                        let raw::Value::Str(text) = &node.value else {
                            self.err(
                                node.span.clone(),
                                &kpath,
                                node.value.type_name().into(),
                                "a marking of the scheme (a string)".into(),
                            );
                            continue;
                        };
                        if map.iter().any(|(k, _)| k.eq_ignore_ascii_case(&key.name)) {
                            self.err(
                                key.span.clone(),
                                &kpath,
                                format!("`{}` mapped twice (compared without case)", key.name),
                                "each label once".into(),
                            );
                            continue;
                        }
                        if let Some(sc) = scheme {
                            match mapped_marking(sc, text) {
                                Ok(text) => map.push((key.name.clone(), text)),
                                Err(why) => self.err(
                                    node.span.clone(),
                                    &kpath,
                                    format!("`{text}` ({why})"),
                                    format!("a valid, canonical {} marking", sc.name),
                                ),
                            }
                        }
                    }
                }
            }
            let trust = self.directions(trust, &format!("{path}.trust"), Directions::Outbound);
            out.push(VendorRead {
                vendor,
                labels: map,
                tenants: tenants.into_iter().map(Spanned::into_inner).collect(),
                namespaces: namespaces.into_iter().map(Spanned::into_inner).collect(),
                trust,
                require_user_choice: require.is_some_and(Spanned::into_inner),
            });
        }
        out
    }

    /// `[write.purview]`.
    pub(super) fn purview_write(&mut self) -> Option<PurviewWrite> {
        let mut t = self.pending.purview.take()?;
        let mut p = std::mem::take(&mut self.problems);
        let site = t.required_string(
            "site_id",
            "the tenant id (a GUID) written as SiteId",
            &mut p,
        );
        let labels = t.table("labels", &mut p);
        let direction = t.string("direction", &mut p);
        let span = t.span();
        t.finish(&["site_id", "labels", "direction"], &mut p);
        self.problems = p;
        if let Some(s) = &site
            && !crate::inspect::vendor::is_guid(s.get_ref())
        {
            self.err(
                s.span(),
                "write.purview.site_id",
                format!("`{}`", s.get_ref()),
                "a GUID such as 5a4e6e65-497e-4a97-9833-0f3c9d8e7a21".into(),
            );
        }
        let direction = self.directions(direction, "write.purview.direction", Directions::Both);
        let mut out = Vec::new();
        let Some(mut lt) = labels else {
            self.err(
                span,
                "write.purview",
                "no `labels` key".into(),
                "`labels` (level = { id = GUID, name = label name })".into(),
            );
            return None;
        };
        let mut p = std::mem::take(&mut self.problems);
        let items = lt.take_all();
        lt.finish(&[], &mut p);
        self.problems = p;
        for (key, node) in items {
            let path = format!("write.purview.labels.\"{}\"", key.name);
            let level = self.level_ref(&Spanned::new(key.span.clone(), key.name.clone()), &path);
            let mut p = std::mem::take(&mut self.problems);
            let mut it = TableReader::new(self.src, node, &path, &mut p);
            let id = it.required_string("id", "the label's GUID", &mut p);
            let name = it.required_string("name", "the label's name", &mut p);
            it.finish(&["id", "name"], &mut p);
            self.problems = p;
            if let Some(id) = &id
                && !crate::inspect::vendor::is_guid(id.get_ref())
            {
                self.err(
                    id.span(),
                    &format!("{path}.id"),
                    format!("`{}`", id.get_ref()),
                    "a GUID".into(),
                );
                continue;
            }
            if let Some(n) = &name
                && (n.get_ref().contains([';', '=']) || n.get_ref().trim().is_empty())
            {
                self.err(
                    n.span(),
                    &format!("{path}.name"),
                    format!("`{}`", n.get_ref()),
                    "a label name without `;` or `=`".into(),
                );
                continue;
            }
            if let (Some(level), Some(id), Some(name)) = (level, id, name) {
                out.push((
                    level,
                    id.into_inner().to_ascii_lowercase(),
                    name.into_inner(),
                ));
            }
        }
        Some(PurviewWrite {
            site_id: site?.into_inner().to_ascii_lowercase(),
            labels: out,
            direction,
        })
    }

    /// `[release]`.
    pub(super) fn release(&mut self, t: Option<TableReader<'a>>) -> Release {
        let Some(mut t) = t else {
            return Release::default();
        };
        let mut p = std::mem::take(&mut self.problems);
        let own = t.strings("own", &mut p).unwrap_or_default();
        let domains = t.table("domains", &mut p);
        t.finish(&["own", "domains"], &mut p);
        self.problems = p;
        let mut out = Release {
            own: Vec::new(),
            domains: DomainMap::default(),
        };
        for o in own {
            if self.release_tag(&o, "release.own") {
                out.own.push(o.into_inner().to_ascii_uppercase());
            }
        }
        let Some(mut dt) = domains else {
            return out;
        };
        let mut p = std::mem::take(&mut self.problems);
        let items = dt.take_all();
        dt.finish(&[], &mut p);
        self.problems = p;
        for (key, node) in items {
            let path = format!("release.domains.\"{}\"", key.name);
            if let Err(why) = check_domain_pattern(&key.name) {
                self.err(
                    key.span.clone(),
                    &path,
                    why,
                    "a domain such as `defence.gov.au` or `*.gov.uk`".into(),
                );
                continue;
            }
            let values: Vec<Spanned<String>> = match &node.value {
                raw::Value::Str(s) => vec![Spanned::new(node.span.clone(), s.clone())],
                raw::Value::Array(items) => items
                    .iter()
                    .filter_map(|i| match &i.value {
                        raw::Value::Str(s) => Some(Spanned::new(i.span.clone(), s.clone())),
                        other => {
                            self.err(
                                i.span.clone(),
                                &path,
                                other.type_name().into(),
                                "a country code or group name".into(),
                            );
                            None
                        }
                    })
                    .collect(),
                other => {
                    self.err(
                        node.span.clone(),
                        &path,
                        other.type_name().into(),
                        "a country code (`AUS`) or group, or an array of them".into(),
                    );
                    continue;
                }
            };
            let tags: Vec<String> = values
                .into_iter()
                .filter(|v| self.release_tag(v, &path))
                .map(|v| v.into_inner().to_ascii_uppercase())
                .collect();
            if !out.domains.insert(&key.name, (tags, key.name.clone())) {
                self.err(
                    key.span.clone(),
                    &path,
                    format!("`{}` listed twice (compared without case)", key.name),
                    "each domain once".into(),
                );
            }
        }
        out
    }

    /// A country code or group name: letters, digits and `-`, nothing else.
    fn release_tag(&mut self, v: &Spanned<String>, path: &str) -> bool {
        let s = v.get_ref();
        let ok = !s.is_empty()
            && s.len() <= 32
            && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
        if !ok {
            self.err(
                v.span(),
                path,
                format!("`{s}`"),
                "a country code such as `AUS` or `GBR`, or a group name such as `AGAO`".into(),
            );
        }
        ok
    }

    /// `[origin]`.
    pub(super) fn origin(&mut self, t: Option<TableReader<'a>>) -> Option<OriginCheck> {
        let mut t = t?;
        let mut p = std::mem::take(&mut self.problems);
        let check = t.required_string("check", "auth-user, sender or either", &mut p);
        let direction = t.string("direction", &mut p);
        t.finish(&["check", "direction"], &mut p);
        self.problems = p;
        let against = check.and_then(|c| {
            self.keyword(
                &c,
                "origin.check",
                OriginAgainst::NAMES,
                OriginAgainst::from_name,
            )
        })?;
        let direction = self.directions(direction, "origin.direction", Directions::Outbound);
        Some(OriginCheck { against, direction })
    }
}

/// A vendor mapping's marking text, checked against the scheme: the canonical text stored
/// (`SEC=` added for EPMS when left out).
fn mapped_marking(scheme: &Scheme, text: &str) -> Result<String, String> {
    match scheme.grammar {
        Grammar::AuEpms => {
            let t = if text.trim_start().starts_with("SEC=") {
                text.trim().to_owned()
            } else {
                format!("SEC={}", text.trim())
            };
            let m = au_epms::parse(&t, Form::Subject);
            if let Some(d) = m.diagnostics.first() {
                return Err(format!("{}: {}", d.code, d.message));
            }
            match m.sec.as_deref().and_then(|s| scheme.vocab.level_exact(s)) {
                Some(_) => Ok(t),
                None => Err("names no level of the scheme".into()),
            }
        }
        g => {
            let style = if g == Grammar::UkGsc {
                UkStyle::Gsc
            } else {
                UkStyle::Gpms
            };
            match uk::parse_header(text, &scheme.vocab, style) {
                Ok(m) if m.diagnostics.is_empty() => Ok(text.to_owned()),
                Ok(m) => Err(m
                    .diagnostics
                    .first()
                    .map(|d| format!("{}: {}", d.code, d.message))
                    .unwrap_or_default()),
                Err(d) => Err(d
                    .first()
                    .map(|d| format!("{}: {}", d.code, d.message))
                    .unwrap_or_default()),
            }
        }
    }
}
