//! Fuzz bodies for the policy loader, each label parser, and marking inspection + decide().
//!
//! Invariants checked: nothing panics; a failed load reports at least one error, each with a
//! position; every byte range a parser returns lies inside its input on character boundaries;
//! what markgate renders re-parses to the same marking; decide() answers for any policy that
//! loads. Corpora: `fuzz/corpus/{policy_toml,label_uk_gpms,label_uk_gsc,label_au_epms,markings}/`.

use std::sync::OnceLock;

use crate::inspect::{forward, markings};
use crate::policy::labels::{Vocabulary, au_epms, uk_gpms, uk_gsc};
use crate::policy::{Envelope, Facts, Policy, decide, render};

fn shipped(
    cell: &'static OnceLock<Option<Policy>>,
    name: &str,
    text: &str,
) -> Option<&'static Policy> {
    cell.get_or_init(|| Policy::from_str(name, text).ok())
        .as_ref()
}

fn gpms() -> Option<&'static Policy> {
    static P: OnceLock<Option<Policy>> = OnceLock::new();
    shipped(
        &P,
        "uk-gpms.toml",
        include_str!("../../policies/uk-gpms.toml"),
    )
}

fn gsc() -> Option<&'static Policy> {
    static P: OnceLock<Option<Policy>> = OnceLock::new();
    shipped(
        &P,
        "uk-gsc.toml",
        include_str!("../../policies/uk-gsc.toml"),
    )
}

fn epms() -> Option<&'static Policy> {
    static P: OnceLock<Option<Policy>> = OnceLock::new();
    shipped(
        &P,
        "au-epms.toml",
        include_str!("../../policies/au-epms.toml"),
    )
}

/// A message's worth of facts and envelopes to run any loaded policy against.
fn exercise(policy: &Policy, headers: &[(&[u8], &[u8])]) {
    let found = markings::find(policy, headers.iter().copied());
    if let Some(subject) = &found.subject {
        for m in &found.markings {
            for r in [&m.range, &m.remove_range].into_iter().flatten() {
                assert!(
                    r.start <= r.end && r.end <= subject.len(),
                    "range {r:?} outside subject"
                );
                assert!(subject.is_char_boundary(r.start) && subject.is_char_boundary(r.end));
            }
        }
    }
    let facts = Facts {
        subject: found.subject,
        markings: found.markings,
        forward: forward::evidence(policy, headers.iter().copied()),
        disclaimer_present: headers.len().is_multiple_of(2),
        signed_or_encrypted: headers.len().is_multiple_of(3),
        route_headers: crate::inspect::routes::header_routes(policy, headers),
        ..Facts::default()
    };
    for env in [
        Envelope {
            sender: "a@example-council.gcsx.gov.uk".into(),
            recipients: vec!["b@partner.gcsx.gov.uk".into(), "c@example.com".into()],
            client_ip: "127.0.0.1".parse().ok(),
            // What the MTA said about where each recipient goes ([[route]] relays/mailers).
            next_hops: vec![
                crate::policy::NextHop {
                    host: Some("[mdm.example.gov.uk]:25".into()),
                    mailer: Some("relay".into()),
                },
                crate::policy::NextHop {
                    host: Some("2001:db8::1".into()),
                    mailer: None,
                },
            ],
            ..Envelope::default()
        },
        Envelope {
            sender: "x@agency.gov.au".into(),
            recipients: vec!["y@agency.gov.au".into()],
            client_ip: "192.0.2.1".parse().ok(),
            ..Envelope::default()
        },
    ] {
        let d = decide(policy, &facts, &env);
        assert_eq!(d.recipients.len(), env.recipients.len());
        let _ = render::text("fuzz", &facts, &d);
        let _ = render::json("fuzz", &facts, &d);
    }
}

/// Policy loader: any bytes as a policy file.
pub fn policy_toml(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    match Policy::from_str("fuzz.toml", &text) {
        Ok(policy) => {
            let subject: &[u8] = b"RE: PROTECT - PERSONAL: x [SEC=OFFICIAL]";
            let headers: [(&[u8], &[u8]); 4] = [
                (b"Subject", subject),
                (b"X-Protective-Marking", b"RESTRICTED"),
                (b"X-Forwarded-To", b"c@example.com"),
                (b"X-Mobile-Gateway", b"sync device=7"),
            ];
            exercise(&policy, &headers);
        }
        Err(e) => {
            assert!(
                e.errors().next().is_some(),
                "a failed load reports an error"
            );
            for p in &e.problems {
                assert!(
                    p.line >= 1 && p.column >= 1,
                    "problem without a position: {p}"
                );
            }
            let _ = e.to_string();
        }
    }
}

fn uk_label(data: &[u8], vocab: &Vocabulary, gsc_style: bool) {
    let s = String::from_utf8_lossy(data);
    let s = s.as_ref();
    let parse_header = |v: &str| {
        if gsc_style {
            uk_gsc::parse_header(v, vocab)
        } else {
            uk_gpms::parse_header(v, vocab)
        }
    };
    let render = |m: &_| {
        if gsc_style {
            uk_gsc::render(m, vocab)
        } else {
            uk_gpms::render(m, vocab)
        }
    };
    if let Ok(m) = parse_header(s) {
        assert!(m.start <= m.end && m.end <= s.len());
        let canonical = render(&m);
        let again = parse_header(&canonical).expect("rendered marking re-parses");
        assert_eq!(
            (again.level, again.uk_prefix),
            (m.level, m.uk_prefix),
            "{canonical}"
        );
        assert_eq!(render(&again), canonical, "rendering is stable");
    }
    for ci in [false, true] {
        let at = crate::policy::labels::reply_chain_end(s);
        assert!(at <= s.len() && s.is_char_boundary(at));
        let prefix = if gsc_style {
            uk_gsc::parse_subject_prefix(s, at, vocab, ci)
        } else {
            uk_gpms::parse_subject_prefix(s, at, vocab, ci)
        };
        let bracketed = if gsc_style {
            uk_gsc::parse_subject_bracketed(s, at, vocab, ci)
        } else {
            uk_gpms::parse_subject_bracketed(s, at, vocab, ci)
        };
        for m in [prefix, bracketed].into_iter().flatten() {
            assert!(
                m.start <= m.end && m.end <= m.rest.max(m.end) && m.rest <= s.len(),
                "{m:?}"
            );
            assert!(
                s.is_char_boundary(m.start)
                    && s.is_char_boundary(m.end)
                    && s.is_char_boundary(m.rest)
            );
        }
    }
}

/// UK GPMS parser (vocabulary of the shipped uk-gpms policy).
pub fn label_uk_gpms(data: &[u8]) {
    if let Some(p) = gpms() {
        uk_label(data, &p.scheme.vocab, false);
    }
}

/// UK GSC 2014 parser (vocabulary of the shipped uk-gsc policy).
pub fn label_uk_gsc(data: &[u8]) {
    if let Some(p) = gsc() {
        uk_label(data, &p.scheme.vocab, true);
    }
}

/// AU EPMS 2024.1 parser: header and subject forms, subject finder, render round trip.
pub fn label_au_epms(data: &[u8]) {
    let s = String::from_utf8_lossy(data);
    let unfolded = au_epms::unfold(&s);
    for form in [au_epms::Form::Header, au_epms::Form::Subject] {
        let m = au_epms::parse(&unfolded, form);
        for d in &m.diagnostics {
            assert!(
                crate::policy::labels::code_info(d.code).is_some(),
                "unlisted code {}",
                d.code
            );
        }
        if m.diagnostics.is_empty() && form == au_epms::Form::Subject {
            let again = au_epms::parse(&au_epms::render_medium(&m), au_epms::Form::Subject);
            assert_eq!(again, m, "medium form round trip");
        }
    }
    for (range, _) in au_epms::find_in_subject(&s) {
        assert!(range.start < range.end && range.end <= s.len());
        assert!(s.is_char_boundary(range.start) && s.is_char_boundary(range.end));
    }
}

/// Marking inspection and decide() under each shipped policy: the input is a header block.
pub fn markings_and_decide(data: &[u8]) {
    let fields = markings::header_fields(data);
    let headers: Vec<(&[u8], &[u8])> = fields
        .iter()
        .map(|(n, v)| (n.as_slice(), v.as_slice()))
        .collect();
    for p in [gpms(), gsc(), epms()].into_iter().flatten() {
        exercise(p, &headers);
    }
}
