//! `markgate policy test --ledger FILE a.eml b.eml …`: a security officer's dry run of a
//! thread, with the built binary and a real SQLite ledger file, no MTA.
//!
//! The thread goes both ways, so no `--from`/`--rcpt` is given: each message's envelope is read
//! from its own headers (outbound when the sender's domain is the policy's own). A RESTRICTED
//! message comes in from a GCSX partner; the reply marked UNCLASSIFIED to the internet is
//! refused with THREAD-DOWNGRADE; the corrected reply, marked RESTRICTED to the partner,
//! passes. `markgate ledger lookup` then finds the original and the corrected reply in the
//! file, and not the refused reply (only delivered messages are remembered).

use std::path::Path;
use std::process::{Command, Output};

const ORIG: &str = "orig.1@partner.gcsx.gov.uk";
const DOWN: &str = "reply.down@example-council.gcsx.gov.uk";
const FIXED: &str = "reply.fixed@example-council.gcsx.gov.uk";

fn markgate(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_markgate"))
        .args(args)
        .output()
        .expect("run markgate")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn write(dir: &Path, name: &str, headers: &[(&str, &str)], body: &str) -> String {
    let mut m = String::new();
    for (n, v) in headers {
        m.push_str(&format!("{n}: {v}\r\n"));
    }
    m.push_str(&format!("\r\n{body}\r\n"));
    let path = dir.join(name);
    std::fs::write(&path, m).expect("write message");
    path.display().to_string()
}

/// The report of one message: from its `message: NAME` line to the next one.
fn section<'a>(out: &'a str, name: &str) -> &'a str {
    let start = out
        .find(&format!("message: {name}"))
        .unwrap_or_else(|| panic!("no report for {name}:\n{out}"));
    let rest = &out[start..];
    let end = rest[1..].find("\nmessage: ").map_or(rest.len(), |e| e + 1);
    &rest[..end]
}

#[test]
fn a_thread_in_and_out_is_dry_run_against_a_ledger_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let inbound = write(
        d,
        "1-inbound.eml",
        &[
            ("From", "Bob <bob@partner.gcsx.gov.uk>"),
            ("To", "Alice <alice@example-council.gcsx.gov.uk>"),
            ("Subject", "RESTRICTED: Budget 2027"),
            ("Date", "Sun, 06 Dec 2026 03:00:00 +0000"),
            ("Message-ID", &format!("<{ORIG}>")),
            ("X-Protective-Marking", "RESTRICTED"),
        ],
        "The draft figures for 2027 are below. Please keep them within the council.",
    );
    let reply = |name: &str, id: &str, to: &str, marking: &str| {
        write(
            d,
            name,
            &[
                ("From", "Alice <alice@example-council.gcsx.gov.uk>"),
                ("To", to),
                ("Subject", &format!("{marking}: RE: Budget 2027")),
                ("Date", "Sun, 06 Dec 2026 04:00:00 +0000"),
                ("Message-ID", &format!("<{id}>")),
                ("In-Reply-To", &format!("<{ORIG}>")),
                ("References", &format!("<{ORIG}>")),
            ],
            "Thanks, noted.",
        )
    };
    let down = reply(
        "2-downgraded.eml",
        DOWN,
        "carol@example.com",
        "UNCLASSIFIED",
    );
    let fixed = reply(
        "3-fixed.eml",
        FIXED,
        "bob@partner.gcsx.gov.uk",
        "RESTRICTED",
    );
    let ledger = d.join("thread.sqlite");
    let ledger_s = ledger.display().to_string();

    // The built-in policy (uk-gpms) has [thread].
    let o = markgate(&[
        "policy", "test", "--ledger", &ledger_s, &inbound, &down, &fixed,
    ]);
    let out = text(&o);
    assert!(o.status.success(), "{out}");

    let first = section(&out, &inbound);
    assert!(first.contains("direction: Inbound"), "{first}");
    assert!(first.contains("answer: accept"), "{first}");
    assert!(first.contains("recorded in the ledger"), "{first}");
    assert!(
        out.contains("envelope (from the message's headers): from <bob@partner.gcsx.gov.uk> to <alice@example-council.gcsx.gov.uk>; inbound"),
        "{out}"
    );

    let second = section(&out, &down);
    assert!(second.contains("direction: Outbound"), "{second}");
    assert!(
        second.contains("rule THREAD-DOWNGRADE: thread-downgrade → Reject"),
        "{second}"
    );
    assert!(second.contains("answer: 550 5.7.1"), "{second}");
    assert!(second.contains(&format!("answers {ORIG}")), "{second}");
    assert!(
        second.contains("output message: none (refused)"),
        "{second}"
    );
    assert!(!second.contains("recorded in the ledger"), "{second}");
    assert!(
        out.contains("from <alice@example-council.gcsx.gov.uk> to <carol@example.com>; outbound"),
        "{out}"
    );

    let third = section(&out, &fixed);
    assert!(third.contains("answer: accept"), "{third}");
    assert!(!third.contains("THREAD-DOWNGRADE"), "{third}");
    assert!(third.contains("recorded in the ledger"), "{third}");

    // What the file holds, through `markgate ledger lookup` with a config naming it.
    let config = d.join("markgate.toml");
    std::fs::write(&config, format!("[ledger]\npath = {ledger_s:?}\n")).expect("config");
    let config_s = config.display().to_string();
    let lookup = |id: &str| {
        let o = markgate(&["ledger", "--config", &config_s, "lookup", id]);
        let t = text(&o);
        assert!(o.status.success(), "{t}");
        t
    };
    let orig = lookup(ORIG);
    assert!(orig.contains(&format!("message-id: <{ORIG}>")), "{orig}");
    assert!(orig.contains("direction: inbound"), "{orig}");
    assert!(orig.contains("marking: RESTRICTED"), "{orig}");
    assert!(orig.contains("budget 2027"), "{orig}");
    let fixed_entry = lookup(&format!("<{FIXED}>"));
    assert!(fixed_entry.contains("direction: outbound"), "{fixed_entry}");
    assert!(fixed_entry.contains("marking: RESTRICTED"), "{fixed_entry}");
    assert!(
        fixed_entry.contains("recipient domains: partner.gcsx.gov.uk"),
        "{fixed_entry}"
    );
    let refused = lookup(DOWN);
    assert!(refused.contains("no entry for"), "{refused}");

    // Run again on the same file: the downgrade is still refused (the original is remembered
    // across runs), and the same message recorded twice does not fail.
    let o = markgate(&["policy", "test", "--ledger", &ledger_s, &down]);
    let again = text(&o);
    assert!(o.status.success(), "{again}");
    assert!(again.contains("THREAD-DOWNGRADE"), "{again}");
}

#[test]
fn one_envelope_for_every_message_when_given() {
    let dir = tempfile::tempdir().expect("tempdir");
    let m = write(
        dir.path(),
        "m.eml",
        &[
            ("From", "bob@partner.gcsx.gov.uk"),
            ("To", "alice@example-council.gcsx.gov.uk"),
            ("Subject", "RESTRICTED: x"),
            ("Message-ID", "<m.1@partner.gcsx.gov.uk>"),
        ],
        "x",
    );
    let ledger = dir.path().join("l.sqlite").display().to_string();
    // Given on the command line: headers are not read for the envelope.
    let o = markgate(&[
        "policy",
        "test",
        "--ledger",
        &ledger,
        "--from",
        "alice@example-council.gcsx.gov.uk",
        "--rcpt",
        "carol@example.com",
        "--client-ip",
        "127.0.0.1",
        &m,
    ]);
    let out = text(&o);
    assert!(o.status.success(), "{out}");
    assert!(
        !out.contains("envelope (from the message's headers)"),
        "{out}"
    );
    assert!(out.contains("direction: Outbound"), "{out}");
    // The given recipient, not the message's To: (RESTRICTED to the internet is refused).
    assert!(
        out.contains("answer: 550 5.7.1") && out.contains("GPMS-ABOVE-CEILING"),
        "{out}"
    );
    assert!(out.contains("  - carol@example.com:"), "{out}");
    assert!(!out.contains("alice@example-council.gcsx.gov.uk:"), "{out}");
    // --from without --rcpt (or the reverse) is a usage error, not half an envelope.
    let o = markgate(&["policy", "test", "--from", "a@example.com", &m]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let o = markgate(&["policy", "test", "--rcpt", "a@example.com", &m]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
}

/// The shipped uk-gsc and au-epms policies carry `[thread]` too: the same dry run refuses a
/// reply marked lower than the message it answers, in each scheme's own spelling.
#[test]
fn the_uk_gsc_and_au_epms_policies_refuse_a_downgraded_reply() {
    let cases = [
        (
            "uk-gsc.toml",
            "bob@other.gov.uk",
            "alice@example-department.gov.uk",
            "OFFICIAL-SENSITIVE: Budget 2027",
            "RE: Budget 2027",
            "is marked OFFICIAL-SENSITIVE (rule THREAD-DOWNGRADE)",
        ),
        (
            "au-epms.toml",
            "bob@other.gov.au",
            "alice@agency.gov.au",
            "Budget 2027 [SEC=OFFICIAL:Sensitive]",
            "RE: Budget 2027 [SEC=OFFICIAL]",
            "is marked [SEC=OFFICIAL:Sensitive] (rule THREAD-DOWNGRADE, ISM-1089)",
        ),
    ];
    for (file, partner, ours, subject, reply_subject, says) in cases {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
        let policy = format!("{}/policies/{file}", env!("CARGO_MANIFEST_DIR"));
        let orig_id = format!("orig.1@{}", partner.split('@').nth(1).unwrap());
        let inbound = write(
            d,
            "1.eml",
            &[
                ("From", partner),
                ("To", ours),
                ("Subject", subject),
                ("Message-ID", &format!("<{orig_id}>")),
            ],
            "The draft figures.",
        );
        let reply = write(
            d,
            "2.eml",
            &[
                ("From", ours),
                ("To", "carol@example.com"),
                ("Subject", reply_subject),
                ("Message-ID", "<reply.1@example.net>"),
                ("In-Reply-To", &format!("<{orig_id}>")),
            ],
            "Thanks.",
        );
        let ledger = d.join("l.sqlite").display().to_string();
        let o = markgate(&[
            "policy", "test", "--policy", &policy, "--ledger", &ledger, &inbound, &reply,
        ]);
        let out = text(&o);
        assert!(o.status.success(), "{file}: {out}");
        let first = section(&out, &inbound);
        assert!(first.contains("direction: Inbound"), "{file}: {first}");
        assert!(first.contains("recorded in the ledger"), "{file}: {first}");
        let second = section(&out, &reply);
        assert!(second.contains("direction: Outbound"), "{file}: {second}");
        assert!(
            second.contains("rule THREAD-DOWNGRADE: thread-downgrade → Reject"),
            "{file}: {second}"
        );
        assert!(second.contains("answer: 550 5.7.1"), "{file}: {second}");
        assert!(second.contains(says), "{file}: {second}");
    }
}
