//! End-to-end tests against a real Postfix on loopback (see `support::postfix`), with markgate's
//! milter server running in this process.

mod support;

use std::time::Duration;

use support::peers;
use support::postfix::{Postfix, PostfixConfig, TOOLS};

const DELIVERY: Duration = Duration::from_secs(60);

/// The harness itself, without any milter: a message sent with swaks arrives in the sink with
/// its envelope and body.
#[test]
fn harness_relays_to_the_sink_without_a_milter() {
    if !peers::available("harness_relays_to_the_sink_without_a_milter", TOOLS, true) {
        return;
    }
    let pf = Postfix::start(PostfixConfig::default());
    let r = pf.swaks(&[
        "--from",
        "alice@example.org",
        "--to",
        "bob@example.net,carol@example.com",
        "--header",
        "Subject: harness check",
        "--body",
        "hello",
    ]);
    assert_eq!(r.code, 0, "{}", r.dialog);
    let got = pf.wait_delivered(1, DELIVERY);
    assert_eq!(got.len(), 1);
    let m = &got[0];
    assert!(
        m.mail_args.starts_with("<alice@example.org>"),
        "{}",
        m.mail_args
    );
    let mut rcpts = m.recipients();
    rcpts.sort();
    assert_eq!(rcpts, vec!["bob@example.net", "carol@example.com"]);
    assert_eq!(m.header("Subject").as_deref(), Some("harness check"));
    assert!(
        m.body().starts_with(b"hello\n"),
        "{:?}",
        String::from_utf8_lossy(m.body())
    );
}
