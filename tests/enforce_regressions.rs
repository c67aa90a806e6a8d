//! Regressions found by the end-to-end enforcement tests in modules other than the filter,
//! kept here (the owners' test files belong to their branches) until their owners adopt them.

use markgate::filter::{self, RawSource};
use markgate::policy::{Envelope, Policy};

/// rewrite::disclaimer: HTML without `</body>` or `</html>` got the disclaimer block appended
/// without a line end, so Postfix added one on the wire and the delivered message differed from
/// the planned output (`markgate policy test`). The block must end the part with a line end.
#[test]
fn html_without_closing_tags_keeps_its_final_line_end() {
    let policy = Policy::builtin().unwrap();
    let raw =
        b"From: a@example-council.gcsx.gov.uk\r\nSubject: PROTECT: x\r\nMIME-Version: 1.0\r\n\
        Content-Type: text/html; charset=utf-8\r\nContent-Transfer-Encoding: 7bit\r\n\r\n\
        <html><body><p>Hello</p>\r\n";
    for raw in [&raw[..], &raw[..raw.len() - 2]] {
        let env = Envelope {
            sender: "a@example-council.gcsx.gov.uk".into(),
            recipients: vec!["b@partner.gcsx.gov.uk".into()],
            client_ip: Some("127.0.0.1".parse().unwrap()),
            ..Envelope::default()
        };
        let e = filter::evaluate(&policy, env, &RawSource::new(raw)).unwrap();
        let out = e.output().unwrap();
        let text = String::from_utf8_lossy(&out);
        assert!(text.ends_with("</div>\r\n"), "{text:?}");
        assert!(text.contains("<p>Hello</p>\r\n<div"), "{text:?}");
        // And a second pass adds nothing.
        let again = filter::evaluate(
            &policy,
            Envelope {
                sender: "a@example-council.gcsx.gov.uk".into(),
                recipients: vec!["b@partner.gcsx.gov.uk".into()],
                client_ip: Some("127.0.0.1".parse().unwrap()),
                ..Envelope::default()
            },
            &RawSource::new(&out),
        )
        .unwrap();
        assert!(again.plan.unwrap().is_empty());
    }
}

/// policy::decide: marked mail auto-forwarded to the internet fires both above-ceiling and
/// auto-forward-down; the reply must be the auto-forward rule's (the sender did not address
/// the mail, a mailbox rule did, and the remedy is to remove that rule). It cited
/// GPMS-ABOVE-CEILING, telling the sender to readdress mail they never sent.
#[test]
fn a_marked_auto_forward_is_refused_as_an_auto_forward() {
    let policy = Policy::builtin().unwrap();
    let raw = b"From: alice@example-council.gcsx.gov.uk\r\nSubject: FW: RESTRICTED: x\r\n\
        X-MS-Exchange-Inbox-Rules-Loop: alice@example-council.gcsx.gov.uk\r\n\r\nx\r\n";
    let env = Envelope {
        sender: "alice@example-council.gcsx.gov.uk".into(),
        recipients: vec!["bob@mailbox.example.com".into()],
        client_ip: Some("127.0.0.1".parse().unwrap()),
        ..Envelope::default()
    };
    let e = filter::evaluate(&policy, env, &RawSource::new(raw)).unwrap();
    match &e.verdict {
        markgate::policy::decide::Verdict::Reject { rule, reply } => {
            assert_eq!(rule, "AUTOFWD-DOWN");
            assert!(reply.text.contains("forwarding"), "{}", reply.text);
        }
        other => panic!("{other:?}"),
    }
    // Both situations are still recorded.
    let situations: Vec<&str> = e
        .decision
        .hits
        .iter()
        .map(|h| h.situation.as_str())
        .collect();
    assert!(situations.contains(&"above-ceiling") && situations.contains(&"auto-forward-down"));
}
