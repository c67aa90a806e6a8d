//! What `markgate policy test` prints: the text report names the markings and where they were
//! found, the effective level, each recipient's outcome with rule ids, the labels and the
//! disclaimer; the JSON report carries facts and decision.

use markgate::inspect::markings;
use markgate::policy::{Envelope, Policy, decide, render};

#[test]
fn text_and_json_reports() {
    let p = Policy::builtin().expect("built-in policy");
    let raw = b"From: a@example-council.gcsx.gov.uk\nSubject: RE: notes\nX-Protective-Marking: protect - persnal\nX-Forwarded-For: a b\n\nbody\n";
    let fields = markings::header_fields(raw);
    let headers: Vec<(&[u8], &[u8])> = fields
        .iter()
        .map(|(n, v)| (n.as_slice(), v.as_slice()))
        .collect();
    let facts = markings::header_facts(&p, &headers);
    let env = Envelope {
        sender: "a@example-council.gcsx.gov.uk".into(),
        recipients: vec!["b@partner.gcsx.gov.uk".into()],
        client_ip: "127.0.0.1".parse().ok(),
        ..Envelope::default()
    };
    let d = decide(&p, &facts, &env);
    let text = render::text("m.eml", &facts, &d);
    for line in [
        "message: m.eml",
        "direction: Outbound — client 127.0.0.1 is in 127.0.0.0/8",
        "  - header X-Protective-Marking #1: `protect - persnal` → PROTECT [Malformed]",
        "      uk.case (accepted): `PROTECT` not written in capitals",
        "      uk.qualifier.unknown (not accepted): `persnal` is not a descriptor",
        "forward evidence: score 50 (threshold 100)",
        "rule GPMS-MALFORMED: malformed → Reject",
        "verdict: reject 550 5.7.1 Your message's protective marking could not be read",
        "labels: none (the message is refused)",
        "rule ids: GPMS-MALFORMED, ceiling:*.gcsx.gov.uk",
    ] {
        assert!(text.contains(line), "missing {line:?} in:\n{text}");
    }
    let json = render::json("m.eml", &facts, &d);
    assert_eq!(json["message"], "m.eml");
    assert_eq!(json["decision"]["verdict"]["kind"], "reject");
    assert_eq!(json["decision"]["verdict"]["rule"], "GPMS-MALFORMED");
    assert_eq!(json["facts"]["subject"], "RE: notes");
    assert_eq!(json["facts"]["markings"][0]["source"]["kind"], "header");
    assert_eq!(json["facts"]["markings"][0]["source"]["index"], 1);
    assert_eq!(
        json["facts"]["markings"][0]["rejected_codes"][0],
        "uk.qualifier.unknown"
    );
    assert_eq!(json["decision"]["recipients"][0]["delivery"], "deliver");
}
