//! Compiling `[[route]]` tables into [`Route`]s (`policy::routes` owns their meaning).
//!
//! Checked here, each with file:line:col: a unique id (also distinct from every rule id, since
//! decisions and audit records cite both the same way), a known ceiling below the top level
//! (otherwise the route could never hold anything back), at least one selector, well-formed
//! domains, relays, mailers, header name and regex, and the reply (`text` required, one line).

use std::collections::HashMap;

use regex::Regex;

use super::super::domains::check_domain_pattern;
use super::super::model::{Action, Directions, Rule, Scheme};
use super::super::raw::TableReader;
use super::super::routes::{Route, RouteHeader, relay_host};
use super::{Compiler, first_line};
use crate::policy::domains::DomainMap;

const KEYS: &[&str] = &[
    "id",
    "description",
    "ceiling",
    "direction",
    "domains",
    "relays",
    "mailers",
    "header",
    "header_matches",
    "code",
    "enhanced",
    "text",
];

impl<'a> Compiler<'a> {
    pub(super) fn routes(
        &mut self,
        tables: Vec<TableReader<'a>>,
        rules: &[Rule],
        scheme: &Option<Scheme>,
    ) -> Vec<Route> {
        let mut out = Vec::new();
        let mut ids: HashMap<String, usize> = HashMap::new();
        for mut t in tables {
            let mut p = std::mem::take(&mut self.problems);
            let path = t.path().to_owned();
            let id = t.required_string(
                "id",
                "a route id that decisions and audit records cite",
                &mut p,
            );
            let _description = t.string("description", &mut p);
            let ceiling =
                t.required_string("ceiling", "the highest level this route may carry", &mut p);
            let direction = t.string("direction", &mut p);
            let domains = t.strings("domains", &mut p).unwrap_or_default();
            let relays = t.strings("relays", &mut p).unwrap_or_default();
            let mailers = t.strings("mailers", &mut p).unwrap_or_default();
            let header = t.string("header", &mut p);
            let header_matches = t.string("header_matches", &mut p);
            let reply = self.reply(&mut t, Some(Action::RemoveRecipients), &path, &mut p);
            let span = t.span();
            t.finish(KEYS, &mut p);
            self.problems = p;

            if let Some(id) = &id {
                self.id_chars(id, &format!("{path}.id"));
                // A route id shared with a rule would make decisions ambiguous too.
                if self.id_unique(id, &format!("{path}.id"), &mut ids, "a unique route id")
                    && let Some(r) = rules.iter().find(|r| r.id == *id.get_ref())
                {
                    self.err(
                        id.span(),
                        &format!("{path}.id"),
                        format!("`{}`, the id of the rule on line {}", id.get_ref(), r.line),
                        "an id no rule uses (decisions cite rules and routes alike)".into(),
                    );
                }
            }
            let direction_v =
                self.directions(direction, &format!("{path}.direction"), Directions::Both);
            let ceiling_v = ceiling
                .as_ref()
                .and_then(|c| self.level_ref(c, &format!("{path}.ceiling")));
            if let (Some(c), Some(level), Some(scheme)) = (&ceiling, ceiling_v, scheme)
                && level >= scheme.top()
            {
                self.err(
                    c.span(),
                    &format!("{path}.ceiling"),
                    format!("`{}`, the top level: nothing is ever above it", c.get_ref()),
                    "a level below the top level".into(),
                );
            }

            let mut domain_map = DomainMap::default();
            for d in &domains {
                if let Err(why) = check_domain_pattern(d.get_ref()) {
                    self.err(
                        d.span(),
                        &format!("{path}.domains"),
                        why,
                        "a domain such as `byod.example.gov.uk` or `*.mobile.example.gov.uk`"
                            .into(),
                    );
                } else if !domain_map.insert(d.get_ref(), d.get_ref().clone()) {
                    self.err(
                        d.span(),
                        &format!("{path}.domains"),
                        format!("`{}` twice (names are compared without case)", d.get_ref()),
                        "each domain once".into(),
                    );
                }
            }
            let mut relay_map = DomainMap::default();
            for r in &relays {
                let host = relay_host(r.get_ref());
                let pattern_ok = match host.strip_prefix("*.") {
                    Some(rest) => check_domain_pattern(&format!("*.{rest}")).is_ok(),
                    None => {
                        !host.is_empty()
                            && host.bytes().all(|b| {
                                b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b':')
                            })
                    }
                };
                if !pattern_ok {
                    self.err(
                        r.span(),
                        &format!("{path}.relays"),
                        format!("`{}`", r.get_ref()),
                        "a next-hop host as the MTA sends it in {rcpt_host}: `mdm.example.gov.uk`, `[mdm.example.gov.uk]:25`, `192.0.2.7` or `*.mdm.example.gov.uk`".into(),
                    );
                } else if !relay_map.insert(&host, r.get_ref().clone()) {
                    self.err(
                        r.span(),
                        &format!("{path}.relays"),
                        format!(
                            "`{}`: the same host twice (brackets and ports are ignored)",
                            r.get_ref()
                        ),
                        "each relay once".into(),
                    );
                }
            }
            let mut mailer_v = Vec::new();
            for m in &mailers {
                let ok = !m.get_ref().is_empty()
                    && m.get_ref()
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'));
                if ok {
                    mailer_v.push(m.get_ref().to_ascii_lowercase());
                } else {
                    self.err(
                        m.span(),
                        &format!("{path}.mailers"),
                        format!("`{}`", m.get_ref()),
                        "a Postfix transport or Sendmail mailer name as sent in {rcpt_mailer} (`smtp`, `relay`, `mobile`)".into(),
                    );
                }
            }
            let header_v = match (&header, &header_matches) {
                (None, Some(m)) => {
                    self.err(
                        m.span(),
                        &format!("{path}.header_matches"),
                        "`header_matches` without `header`".into(),
                        "`header`, the header the expression applies to".into(),
                    );
                    None
                }
                (None, None) => None,
                (Some(h), m) => {
                    let name_ok = self.check_header_name(h, &format!("{path}.header"));
                    let regex = m.as_ref().and_then(|m| match Regex::new(m.get_ref()) {
                        Ok(r) => Some(r),
                        Err(e) => {
                            self.err(
                                m.span(),
                                &format!("{path}.header_matches"),
                                format!(
                                    "an invalid regular expression ({})",
                                    first_line(&e.to_string())
                                ),
                                "a regular expression in Rust regex syntax".into(),
                            );
                            None
                        }
                    });
                    name_ok.then(|| RouteHeader {
                        name: h.get_ref().to_ascii_lowercase(),
                        matches: regex,
                    })
                }
            };
            if domains.is_empty() && relays.is_empty() && mailers.is_empty() && header.is_none() {
                self.err(
                    span.clone(),
                    &path,
                    "a route with no selector".into(),
                    "at least one of `domains`, `relays`, `mailers` or `header`".into(),
                );
            }
            if let (Some(id), Some(ceiling), Some(reply)) = (id, ceiling_v, reply) {
                let line = self.line_of(&id.span());
                out.push(Route {
                    id: id.into_inner(),
                    ceiling,
                    direction: direction_v,
                    domains: domain_map,
                    relays: relay_map,
                    mailers: mailer_v,
                    header: header_v,
                    reply,
                    line,
                });
            }
        }
        out
    }
}
