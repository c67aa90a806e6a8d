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
