//! Low-assurance routes (`[[route]]`) end to end through a real Postfix: one RESTRICTED message
//! to a mixed recipient list —
//!
//! - `bob@partner.gcsx.gov.uk` (a GSi-family partner, ceiling RESTRICTED): delivered;
//! - `erin@example-council.gcsx.gov.uk` (own domain): delivered;
//! - `carol@mobile.example-council.gcsx.gov.uk`: on the shipped `MOBILE-SYNC` route (by recipient
//!   domain, ceiling PROTECT): removed;
//! - `dave@byod.example-council.gcsx.gov.uk`: Postfix's `transport_maps` hands this domain to
//!   `relay:[localhost]:PORT`, so markgate gets `{rcpt_host}=[localhost]:PORT` and
//!   `{rcpt_mailer}=relay` with that RCPT; the test's `BYOD-RELAY` route selects `relays =
//!   ["localhost"]` (ceiling UNCLASSIFIED): removed.
//!
//! The SMTP client gets 250; the sink gets the labelled message for bob and erin only; carol and
//! dave get nothing; alice gets one notice from `<>` naming both and carrying both routes' texts.
//! The same recipients then get an UNCLASSIFIED message: everyone gets it. The audit trail
//! verifies and records the two removals.

mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use markgate::config::Config;
use markgate::filter::{Filter, Notices};
use markgate::policy::Policy;
use support::markgate::Milter;
use support::postfix::{Delivered, Postfix, PostfixConfig, TOOLS};
use support::{peers, ports};

const ALICE: &str = "alice@example-council.gcsx.gov.uk";
const BOB: &str = "bob@partner.gcsx.gov.uk";
const CAROL: &str = "carol@mobile.example-council.gcsx.gov.uk";
const DAVE: &str = "dave@byod.example-council.gcsx.gov.uk";
const ERIN: &str = "erin@example-council.gcsx.gov.uk";
const WAIT: Duration = Duration::from_secs(60);

const BYOD_ROUTE: &str = r#"
[[route]]
id = "BYOD-RELAY"
description = "Personal devices, reached through the BYOD relay (Postfix transport map)."
ceiling = "UNCLASSIFIED"
relays = ["localhost"]
text = "Marked mail is not sent to personal devices (route BYOD-RELAY); the recipient can read it on a council laptop."
"#;

fn policy() -> Policy {
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("policies/uk-gpms.toml");
    let text = std::fs::read_to_string(&shipped).expect("shipped policy");
    Policy::from_str("uk-gpms+byod.toml", &format!("{text}\n{BYOD_ROUTE}"))
        .unwrap_or_else(|e| panic!("{e}"))
}

fn message(id: &str, subject: &str) -> Vec<u8> {
    format!(
        "Date: Sun, 06 Dec 2026 03:30:00 +0000\r\nFrom: {ALICE}\r\nTo: {BOB}, {CAROL}, {DAVE}, {ERIN}\r\n\
         Subject: {subject}\r\nMessage-ID: <{id}@example-council.gcsx.gov.uk>\r\n\r\nStaff rota attached.\r\n"
    )
    .into_bytes()
}

/// Every delivered copy carrying this Message-ID (Postfix splits the recipients by transport),
/// once `n` recipients in all have it.
fn wait_recipients(pf: &Postfix, id: &str, n: usize) -> Vec<Delivered> {
    let deadline = Instant::now() + WAIT;
    loop {
        let got: Vec<Delivered> = pf
            .delivered()
            .into_iter()
            .filter(|d| String::from_utf8_lossy(&d.message).contains(&format!("<{id}@")))
            .collect();
        if got.iter().map(|d| d.recipients().len()).sum::<usize>() >= n {
            std::thread::sleep(Duration::from_millis(100));
            return got;
        }
        assert!(
            Instant::now() < deadline,
            "{id}: not delivered to {n}\n{}",
            pf.maillog()
        );
        std::thread::sleep(Duration::from_millis(25));
    }
}

fn wait_notice(pf: &Postfix) -> Delivered {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(d) = pf.delivered().into_iter().find(|d| {
            d.recipients().iter().any(|r| r == ALICE)
                && String::from_utf8_lossy(&d.message).contains("recipients of your message")
        }) {
            return d;
        }
        assert!(Instant::now() < deadline, "no notice\n{}", pf.maillog());
        std::thread::sleep(Duration::from_millis(25));
    }
}

#[test]
fn a_mixed_recipient_list_through_postfix() {
    if !peers::available("a_mixed_recipient_list_through_postfix", TOOLS, true) {
        return;
    }
    let policy = policy();
    let port = ports::free_port();
    let mut pfc = PostfixConfig::with_milter(format!("inet:127.0.0.1:{port}"));
    pfc.extra.push((
        "transport_maps".into(),
        "inline:{ byod.example-council.gcsx.gov.uk=relay:[localhost]:{sink_port} }".into(),
    ));
    let pf = Postfix::start(pfc);
    let audit_dir = tempfile::tempdir().expect("tempdir");
    let mut config = Config::default();
    config.audit.path = audit_dir.path().join("audit.jsonl");
    config.audit.syslog.enabled = false;
    let handle = markgate::audit::start(&config.audit).expect("audit starts");
    let filter = Filter::fixed(policy, config.clone(), Some(handle)).with_notices(Notices::spawn(
        "127.0.0.1".into(),
        pf.smtp_port,
        "markgate@example-council.gcsx.gov.uk".into(),
        Duration::from_secs(30),
    ));
    let milter = Milter::start_tcp_on(port, filter);

    // 1. RESTRICTED: the two route recipients are held back, the others get it.
    let r = pf.send_data(
        ALICE,
        &[BOB, CAROL, DAVE, ERIN],
        &message("rota-1", "RESTRICTED: rota"),
    );
    assert_eq!(r.code, 0, "{}", r.dialog);
    let copies = wait_recipients(&pf, "rota-1", 2);
    let mut rcpts: Vec<String> = copies.iter().flat_map(|d| d.recipients()).collect();
    rcpts.sort();
    assert_eq!(rcpts, vec![BOB.to_string(), ERIN.to_string()]);
    for d in &copies {
        assert_eq!(
            d.header("X-Protective-Marking").as_deref(),
            Some("RESTRICTED"),
            "labelled for the others"
        );
    }
    let notice = wait_notice(&pf);
    // Quoted-printable soft line breaks joined again.
    let text = String::from_utf8_lossy(&notice.message).replace("=\n", "");
    assert!(notice.mail_args.starts_with("<>"), "{}", notice.mail_args);
    for want in [
        CAROL,
        DAVE,
        "not sent to mobile devices (route MOBILE-SYNC)",
        "not sent to personal devices (route BYOD-RELAY)",
    ] {
        assert!(text.contains(want), "notice lacks {want:?}:\n{text}");
    }
    assert!(!text.contains(&format!("  {BOB}")), "{text}");

    // 2. UNCLASSIFIED: within every route's ceiling, so all four get it — dave's copy through
    // the relay transport of the transport map.
    let r = pf.send_data(
        ALICE,
        &[BOB, CAROL, DAVE, ERIN],
        &message("rota-2", "UNCLASSIFIED: rota"),
    );
    assert_eq!(r.code, 0, "{}", r.dialog);
    let copies = wait_recipients(&pf, "rota-2", 4);
    let mut rcpts: Vec<String> = copies.iter().flat_map(|d| d.recipients()).collect();
    rcpts.sort();
    assert_eq!(rcpts, vec![BOB, CAROL, DAVE, ERIN]);
    let log = pf.maillog();
    assert!(
        log.contains("relay=localhost[127.0.0.1]"),
        "dave went through the transport map's relay:\n{log}"
    );

    // The audit trail: both decisions, the two held-back recipients with the routes' ids.
    drop(milter);
    let audit = std::fs::read_to_string(&config.audit.path).expect("audit");
    let report = markgate::audit::verify_files(&[&config.audit.path]);
    assert!(report.ok(), "{report}");
    let first = audit
        .lines()
        .find(|l| l.contains("rota-1@") && l.contains("message_decision"))
        .expect("decision for rota-1");
    for want in ["MOBILE-SYNC", "BYOD-RELAY", CAROL, DAVE] {
        assert!(first.contains(want), "{want} not in {first}");
    }
    let relay_detail = format!("relay [localhost]:{}", pf.sink_port);
    assert!(
        first.contains(&relay_detail),
        "{{rcpt_host}} as Postfix sent it ({relay_detail}) not in {first}"
    );
}
