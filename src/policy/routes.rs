//! Low-assurance routes (`[[route]]`): destinations that may carry less than the recipient's
//! domain would, such as a mobile-sync relay or a BYOD mail domain.
//!
//! A route names its recipients by recipient domain, by the next hop the MTA hands them to
//! (`{rcpt_host}` / `{rcpt_mailer}`, which the filter copies into [`Envelope::next_hops`]), or by a
//! header a mobile gateway sets (matched by `inspect::routes` into [`Facts::route_headers`]).
//! Marked mail above a route's ceiling is held back from the recipients on that route only —
//! they are removed (the filter sends DELRCPT) and the sender gets the route's text saying why
//! and where to read the message instead — while everyone else gets it. When every recipient
//! is held back the message is refused with that text, as `remove-recipients` rules do.
//!
//! Must not: do I/O, look at the message (only the facts), or change what other rules decided
//! for a recipient already removed. Documented in `docs/markgate-policy.5.md` (`[[route]]`).

use regex::Regex;

use super::decide::{Delivery, Direction, Effective, RecipientOutcome, RuleHit};
use super::domains::{DomainMap, normalise_domain};
use super::facts::{Envelope, Facts};
use super::model::{Action, Directions, Reply};
use super::{Policy, Scheme};

/// The situation name routes report in rule hits and audit records.
pub const SITUATION: &str = "above-route-ceiling";

/// One compiled `[[route]]`.
#[derive(Debug, Clone)]
pub struct Route {
    pub id: String,
    /// The highest level the route may carry (level index).
    pub ceiling: usize,
    pub direction: Directions,
    /// Recipient domains (`domains`), each mapped to the pattern as written.
    pub domains: DomainMap<String>,
    /// `{rcpt_host}` values (`relays`), normalised by [`relay_host`], each with the pattern as
    /// written.
    pub relays: DomainMap<String>,
    /// `{rcpt_mailer}` values (`mailers`), lower case.
    pub mailers: Vec<String>,
    /// `header` (lower case) and `header_matches`.
    pub header: Option<RouteHeader>,
    /// `code`, `enhanced`, `text`: the text goes to the sender in the notice, and is the SMTP
    /// reply when every recipient is held back.
    pub reply: Reply,
    /// Line of the route's `id`, for messages.
    pub line: usize,
}

/// A header that puts every recipient of a message on a route.
#[derive(Debug, Clone)]
pub struct RouteHeader {
    /// Lower case.
    pub name: String,
    /// Without it, the header's presence is enough.
    pub matches: Option<Regex>,
}

/// `{rcpt_host}` (or a `relays` entry) as a comparable host name: brackets, an `ipv6:` tag, a
/// `:port` and a trailing dot dropped, lower case. `[mdm.example.org]:25` → `mdm.example.org`.
pub fn relay_host(text: &str) -> String {
    let t = text.trim();
    let host = if let Some(rest) = t.strip_prefix('[') {
        let inner = rest.split(']').next().unwrap_or(rest);
        inner
            .strip_prefix("ipv6:")
            .or_else(|| inner.strip_prefix("IPv6:"))
            .unwrap_or(inner)
    } else {
        match t.rsplit_once(':') {
            // One colon and digits after it: a port. (Bare IPv6 addresses have several colons.)
            Some((h, port))
                if !h.contains(':')
                    && !port.is_empty()
                    && port.bytes().all(|b| b.is_ascii_digit()) =>
            {
                h
            }
            _ => t,
        }
    };
    normalise_domain(host)
}

impl Route {
    /// Why recipient `i` is on this route (a phrase for the decision's detail), or `None`.
    fn selects(
        &self,
        facts: &Facts,
        envelope: &Envelope,
        i: usize,
        domain: &str,
    ) -> Option<String> {
        if let Some(pattern) = self.domains.get(domain) {
            return Some(if pattern.eq_ignore_ascii_case(domain) {
                format!("recipient domain {domain}")
            } else {
                format!("recipient domain {domain} via {pattern}")
            });
        }
        if let Some(hop) = envelope.next_hop(i) {
            if let Some(host) = hop.host.as_deref()
                && let Some(pattern) = self.relays.get(&relay_host(host))
            {
                return Some(format!("relay {host} (matches {pattern})"));
            }
            if let Some(mailer) = hop.mailer.as_deref()
                && self.mailers.iter().any(|m| m.eq_ignore_ascii_case(mailer))
            {
                return Some(format!("mailer {mailer}"));
            }
        }
        if let Some(h) = &self.header
            && facts.route_headers.contains(&self.id)
        {
            return Some(format!("header {}", h.name));
        }
        None
    }
}

/// The per-recipient route check, run by `decide` after the domain ceilings and auto-forward
/// checks. Recipients still delivered whose route's ceiling is below the effective level are
/// marked [`Delivery::Remove`]; each such route (once, in file order) is returned so `decide`
/// can build the sender notice and, if nobody is left, the rejection. Recipients on a route
/// they may receive from get a `route:<id>` entry in their rules, so the audit record shows the
/// route was considered.
pub(super) fn hold_back<'p>(
    policy: &'p Policy,
    facts: &Facts,
    envelope: &Envelope,
    direction: Direction,
    effective: &Effective,
    recipients: &mut [RecipientOutcome],
    hits: &mut Vec<RuleHit>,
) -> Vec<&'p Route> {
    let mut removers: Vec<&'p Route> = Vec::new();
    if policy.routes.is_empty() {
        return removers;
    }
    for (i, outcome) in recipients.iter_mut().enumerate() {
        if outcome.delivery == Delivery::Remove {
            continue;
        }
        let on: Vec<(&'p Route, String)> = policy
            .routes
            .iter()
            .filter(|r| r.direction.includes(direction))
            .filter_map(|r| {
                r.selects(facts, envelope, i, &outcome.domain)
                    .map(|why| (r, why))
            })
            .collect();
        let Some((route, why)) = on
            .iter()
            .find(|(r, _)| effective.level > r.ceiling)
            .cloned()
        else {
            if let Some((r, _)) = on.first() {
                outcome.rules.push(format!("route:{}", r.id));
            }
            continue;
        };
        let detail = format!(
            "{} mail to {} on route {} ({}) whose ceiling is {}",
            effective.level_name,
            outcome.address,
            route.id,
            why,
            level_name(&policy.scheme, route.ceiling)
        );
        hits.push(RuleHit {
            rule: route.id.clone(),
            situation: SITUATION.to_owned(),
            action: Action::RemoveRecipients,
            recipient: Some(outcome.address.clone()),
            detail: detail.clone(),
        });
        // The `ceiling:<pattern>` entry said "delivered within the domain's ceiling": no longer.
        outcome.rules.retain(|r| !r.starts_with("ceiling:"));
        outcome.rules.push(route.id.clone());
        outcome.delivery = Delivery::Remove;
        outcome.reason = detail;
        if !removers.iter().any(|r| r.id == route.id) {
            removers.push(route);
        }
    }
    removers
}

fn level_name(scheme: &Scheme, level: usize) -> &str {
    scheme.level_name(level)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::facts::NextHop;
    use crate::policy::{Facts, decide};

    /// The shipped UK GPMS policy without its example route, with `routes` appended.
    fn policy(routes: &str) -> Policy {
        let text = format!("{}\n{routes}", super::compile_tests::base());
        match Policy::from_str("test.toml", &text) {
            Ok(p) => p,
            Err(e) => panic!("{e}"),
        }
    }

    const ROUTES: &str = r#"
[[route]]
id = "mobile-sync"
ceiling = "UNCLASSIFIED"
domains = ["mobile.example-council.gcsx.gov.uk", "*.byod.example-council.gcsx.gov.uk"]
relays = ["[mdm-relay.example-council.gcsx.gov.uk]:25"]
mailers = ["mobile"]
text = "Mail marked above UNCLASSIFIED is not sent to mobile devices; read it on your council desktop."

[[route]]
id = "gateway-header"
ceiling = "PROTECT"
header = "X-Mobile-Gateway"
header_matches = "^sync"
direction = "inbound"
code = 554
enhanced = "5.7.0"
text = "Held back from the mobile gateway; read it in the office."
"#;

    fn outbound(to: &[&str], hops: Vec<NextHop>) -> Envelope {
        Envelope {
            sender: "alice@example-council.gcsx.gov.uk".into(),
            recipients: to.iter().map(|s| s.to_string()).collect(),
            client_ip: "127.0.0.1".parse().ok(),
            next_hops: hops,
            ..Envelope::default()
        }
    }

    fn facts(subject: &str, p: &Policy) -> Facts {
        let headers: Vec<(&[u8], &[u8])> = vec![(b"Subject", subject.as_bytes())];
        crate::inspect::markings::header_facts(p, &headers)
    }

    fn hop(host: &str, mailer: &str) -> NextHop {
        NextHop {
            host: Some(host.into()),
            mailer: Some(mailer.into()),
        }
    }

    #[test]
    fn relay_host_normalises_what_mtas_send() {
        assert_eq!(relay_host("[MDM.example.org]:25"), "mdm.example.org");
        assert_eq!(relay_host("mdm.example.org."), "mdm.example.org");
        assert_eq!(relay_host("mdm.example.org:2525"), "mdm.example.org");
        assert_eq!(relay_host("[127.0.0.1]"), "127.0.0.1");
        assert_eq!(relay_host("[ipv6:2001:db8::1]:25"), "2001:db8::1");
        assert_eq!(relay_host("2001:db8::1"), "2001:db8::1");
    }

    #[test]
    fn a_mobile_recipient_is_held_back_and_the_others_get_it() {
        let p = policy(ROUTES);
        let f = facts("PROTECT: staff list", &p);
        let env = outbound(
            &[
                "bob@example-council.gcsx.gov.uk",
                "bob@mobile.example-council.gcsx.gov.uk",
                "carol@partner.gcsx.gov.uk",
            ],
            Vec::new(),
        );
        let d = decide(&p, &f, &env);
        assert!(matches!(d.verdict, crate::policy::decide::Verdict::Accept));
        let del: Vec<Delivery> = d.recipients.iter().map(|r| r.delivery).collect();
        assert_eq!(
            del,
            vec![Delivery::Deliver, Delivery::Remove, Delivery::Deliver]
        );
        let held = &d.recipients[1];
        assert_eq!(held.rules, vec!["mobile-sync".to_string()]);
        assert!(held.reason.contains("route mobile-sync"), "{}", held.reason);
        assert!(held.reason.contains("UNCLASSIFIED"), "{}", held.reason);
        assert!(d.rule_ids.contains(&"mobile-sync".to_string()));
        assert_eq!(
            d.sender_notice.as_deref(),
            Some(
                "Mail marked above UNCLASSIFIED is not sent to mobile devices; read it on your council desktop."
            )
        );
        let hit = d.hits.iter().find(|h| h.rule == "mobile-sync").unwrap();
        assert_eq!(hit.situation, SITUATION);
        assert_eq!(hit.action, Action::RemoveRecipients);
        assert_eq!(
            hit.recipient.as_deref(),
            Some("bob@mobile.example-council.gcsx.gov.uk")
        );
        // Labels and disclaimer still go to the others.
        assert!(d.labels.header.is_some());
    }

    #[test]
    fn wildcard_domains_relays_and_mailers_select() {
        let p = policy(ROUTES);
        let f = facts("RESTRICTED: plans", &p);
        let env = outbound(
            &[
                "a@x.byod.example-council.gcsx.gov.uk",
                "b@example-council.gcsx.gov.uk",
                "c@example-council.gcsx.gov.uk",
                "d@example-council.gcsx.gov.uk",
            ],
            vec![
                hop("x.byod.example-council.gcsx.gov.uk", "smtp"),
                hop("[MDM-relay.example-council.gcsx.gov.uk]:2525", "relay"),
                hop("mail.example-council.gcsx.gov.uk", "Mobile"),
                hop("mail.example-council.gcsx.gov.uk", "smtp"),
            ],
        );
        let d = decide(&p, &f, &env);
        let del: Vec<Delivery> = d.recipients.iter().map(|r| r.delivery).collect();
        assert_eq!(
            del,
            vec![
                Delivery::Remove,
                Delivery::Remove,
                Delivery::Remove,
                Delivery::Deliver
            ]
        );
        assert!(d.recipients[0].reason.contains("via *.byod"));
        assert!(d.recipients[1].reason.contains("relay [MDM-relay"));
        assert!(d.recipients[2].reason.contains("mailer Mobile"));
        assert!(d.sender_notice.is_some());
    }

    #[test]
    fn within_the_route_ceiling_is_delivered_and_the_route_noted() {
        let p = policy(ROUTES);
        for subject in ["UNCLASSIFIED: lunch", "no marking at all"] {
            let f = facts(subject, &p);
            let env = outbound(&["bob@mobile.example-council.gcsx.gov.uk"], Vec::new());
            let d = decide(&p, &f, &env);
            assert_eq!(d.recipients[0].delivery, Delivery::Deliver, "{subject}");
            assert!(
                d.recipients[0]
                    .rules
                    .contains(&"route:mobile-sync".to_string()),
                "{:?}",
                d.recipients[0].rules
            );
            assert!(d.sender_notice.is_none());
        }
    }

    #[test]
    fn everyone_held_back_refuses_the_message_with_the_route_text() {
        let p = policy(ROUTES);
        let f = facts("PROTECT: staff list", &p);
        let env = outbound(&["bob@mobile.example-council.gcsx.gov.uk"], Vec::new());
        let d = decide(&p, &f, &env);
        match &d.verdict {
            crate::policy::decide::Verdict::Reject { reply, rule } => {
                assert_eq!(rule, "mobile-sync");
                assert_eq!(reply.code, 550);
                assert!(reply.text.contains("mobile devices"));
            }
            other => panic!("{other:?}"),
        }
        assert!(d.labels.header.is_none());
    }

    #[test]
    fn header_routes_follow_direction_and_the_value() {
        let p = policy(ROUTES);
        let mut f = facts("RESTRICTED: plans", &p);
        f.route_headers = vec!["gateway-header".into()];
        // Outbound: the inbound-only route does not apply.
        let env = outbound(&["bob@example-council.gcsx.gov.uk"], Vec::new());
        let d = decide(&p, &f, &env);
        assert_eq!(d.recipients[0].delivery, Delivery::Deliver);
        // Inbound: it does, and with one recipient the whole message is refused with its reply.
        let env = Envelope {
            client_ip: "203.0.113.9".parse().ok(),
            sender: "x@partner.gcsx.gov.uk".into(),
            ..env
        };
        let d = decide(&p, &f, &env);
        assert_eq!(d.recipients[0].delivery, Delivery::Remove);
        match &d.verdict {
            crate::policy::decide::Verdict::Reject { reply, .. } => {
                assert_eq!((reply.code, reply.enhanced.as_str()), (554, "5.7.0"));
            }
            other => panic!("{other:?}"),
        }
        // PROTECT is within the header route's ceiling.
        let f = facts("PROTECT: x", &p);
        let mut f2 = f.clone();
        f2.route_headers = vec!["gateway-header".into()];
        let d = decide(&p, &f2, &env);
        assert_eq!(d.recipients[0].delivery, Delivery::Deliver);
    }

    #[test]
    fn a_recipient_removed_by_a_ceiling_rule_keeps_that_reason() {
        // The shipped policy rejects above-ceiling mail; with a removing rule the domain's
        // reason stays, and both texts reach the sender.
        let text = include_str!("../../tests/enforce/policies/uk-gpms-remove.toml");
        let p = match Policy::from_str("t.toml", &format!("{text}\n{ROUTES}")) {
            Ok(p) => p,
            Err(e) => panic!("{e}"),
        };
        let f = facts("RESTRICTED: plans", &p);
        let env = outbound(
            &[
                "x@mailbox.example.com",
                "bob@mobile.example-council.gcsx.gov.uk",
                "carol@partner.gcsx.gov.uk",
            ],
            Vec::new(),
        );
        let d = decide(&p, &f, &env);
        let del: Vec<Delivery> = d.recipients.iter().map(|r| r.delivery).collect();
        assert_eq!(
            del,
            vec![Delivery::Remove, Delivery::Remove, Delivery::Deliver]
        );
        assert!(!d.recipients[0].rules.contains(&"mobile-sync".to_string()));
        let notice = d.sender_notice.unwrap();
        assert!(notice.contains("mobile devices"), "{notice}");
        assert!(notice.lines().count() >= 2, "{notice}");
    }

    #[test]
    fn shadow_mode_removes_no_one() {
        let text = include_str!("../../tests/enforce/policies/uk-gpms-shadow.toml");
        let p = match Policy::from_str("t.toml", &format!("{text}\n{ROUTES}")) {
            Ok(p) => p,
            Err(e) => panic!("{e}"),
        };
        let f = facts("PROTECT: staff list", &p);
        let env = outbound(
            &[
                "bob@mobile.example-council.gcsx.gov.uk",
                "b@example-council.gcsx.gov.uk",
            ],
            Vec::new(),
        );
        let d = decide(&p, &f, &env);
        assert!(d.recipients.iter().all(|r| r.delivery == Delivery::Deliver));
        let s = d.shadow.expect("shadow");
        assert_eq!(s.recipients[0].delivery, Delivery::Remove);
    }
}

#[cfg(test)]
mod compile_tests {
    use crate::policy::Policy;

    /// The shipped UK GPMS policy without its example `[[route]]` (the tests name their own).
    /// The shipped policy without its example route (and the route's comment), everything
    /// else kept, so the tests count only their own routes.
    pub(super) fn base() -> String {
        let p = crate::policy::BUILTIN_POLICY;
        let Some(start) = p.find("\n# Low-assurance routes:") else {
            return p.to_owned();
        };
        let table = p[start..].find("\n[[route]]").map_or(start, |i| start + i);
        let end = p[table..]
            .find("\ntext = ")
            .and_then(|i| p[table + i + 1..].find('\n').map(|j| table + i + 1 + j))
            .unwrap_or(p.len());
        format!("{}{}", &p[..start], &p[end..])
    }

    fn errors(routes: &str) -> String {
        let text = format!("{}\n{routes}", base());
        match Policy::from_str("p.toml", &text) {
            Ok(_) => String::new(),
            Err(e) => e.to_string(),
        }
    }

    fn line_of(needle: &str) -> usize {
        base().lines().count() + 1 + needle.lines().count()
    }

    #[test]
    fn every_mistake_is_reported_with_its_place() {
        let bad = r#"
[[route]]
id = "GPMS-ABOVE-CEILING"
ceiling = "TOP SECRET"
domains = ["not a domain"]
relays = ["[]"]
mailers = ["has space"]
header = "X Bad"
header_matches = "("
text = "two\nlines"
colour = "blue"

[[route]]
id = "empty"
ceiling = "RESTRICTD"
text = "t"
"#;
        let e = errors(bad);
        for want in [
            "route[1].id: found `GPMS-ABOVE-CEILING`, the id of the rule on line",
            "route[1].ceiling: found `TOP SECRET`, the top level",
            "route[1].domains: found",
            "route[1].relays: found `[]`",
            "route[1].mailers: found `has space`",
            "route[1].header: found `X Bad`",
            "route[1].header_matches: found an invalid regular expression",
            "route[1].text: found an empty or multi-line text",
            "route[1]: found unknown key `colour`",
            "route[2]: found a route with no selector, expected at least one of `domains`, `relays`, `mailers` or `header`",
            "route[2].ceiling: found unknown level `RESTRICTD`",
        ] {
            assert!(e.contains(want), "missing {want:?} in:\n{e}");
        }
        // file:line:col of the first route's id.
        let line = line_of("\n[[route]]\n") + 1;
        assert!(
            e.contains(&format!("p.toml:{line}:6: error: route[1].id")),
            "{e}"
        );
    }

    #[test]
    fn duplicate_ids_and_header_matches_alone() {
        let e = errors(
            "[[route]]\nid = \"m\"\nceiling = \"PROTECT\"\nmailers = [\"mobile\"]\ntext = \"t\"\n\n[[route]]\nid = \"m\"\nceiling = \"PROTECT\"\nheader_matches = \"x\"\ntext = \"t\"\n",
        );
        assert!(
            e.contains("route[2].id: found `m` already used on line"),
            "{e}"
        );
        assert!(
            e.contains("route[2].header_matches: found `header_matches` without `header`"),
            "{e}"
        );
    }

    #[test]
    fn a_good_route_loads_without_warnings() {
        let text = format!(
            "{}\n[[route]]\nid = \"m\"\ndescription = \"phones\"\nceiling = \"PROTECT\"\ndirection = \"outbound\"\nrelays = [\"[mdm.example.org]:25\", \"*.mdm.example.org\", \"192.0.2.7\"]\ntext = \"read it at your desk\"\n",
            base()
        );
        let p = Policy::from_str("p.toml", &text).unwrap_or_else(|e| panic!("{e}"));
        assert!(p.warnings.is_empty(), "{:?}", p.warnings);
        assert_eq!(p.routes.len(), 1);
        assert_eq!(p.routes[0].reply.code, 550);
    }
}
