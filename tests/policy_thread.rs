//! The thread rules as pure decisions (issue 12): `decide_in_thread` with hand-made
//! [`ThreadFacts`], under the shipped UK GPMS policy and variants of it, plus the `[thread]`
//! keys' errors with their positions.

use markgate::inspect::markings::header_facts;
use markgate::policy::decide::{Delivery, Verdict};
use markgate::policy::thread::{ThreadEntry, ThreadFacts};
use markgate::policy::{
    BUILTIN_POLICY, Direction, Envelope, Facts, Policy, Problem, decide_in_thread,
};

const ALICE: &str = "alice@example-council.gcsx.gov.uk";
const INTERNET: &str = "carol@example.com";
const GCSX: &str = "dave@other.gcsx.gov.uk";

fn policy(text: &str) -> Policy {
    let p = Policy::from_str("p.toml", text).unwrap_or_else(|e| panic!("{e}"));
    assert!(p.warnings.is_empty(), "{:?}", p.warnings);
    p
}

fn variant(from: &str, to: &str) -> Policy {
    assert!(BUILTIN_POLICY.contains(from), "{from}");
    policy(&BUILTIN_POLICY.replacen(from, to, 1))
}

fn facts(p: &Policy, marking: &str) -> Facts {
    let headers: Vec<(&[u8], &[u8])> = vec![
        (b"Subject", b"RE: Budget 2027"),
        (b"X-Protective-Marking", marking.as_bytes()),
    ];
    header_facts(p, &headers)
}

/// A message with no marking at all (no label header, no subject marking).
fn unmarked(p: &Policy) -> Facts {
    let headers: Vec<(&[u8], &[u8])> = vec![(b"Subject", b"Budget 2027")];
    header_facts(p, &headers)
}

fn out(sender: &str, rcpts: &[&str]) -> Envelope {
    Envelope {
        sender: sender.into(),
        recipients: rcpts.iter().map(|r| (*r).to_owned()).collect(),
        client_ip: Some("127.0.0.1".parse().expect("ip")),
        auth_user: None,
        daemon_name: None,
        next_hops: Vec::new(),
    }
}

fn inbound_env(rcpts: &[&str]) -> Envelope {
    Envelope {
        client_ip: Some("192.0.2.10".parse().expect("ip")),
        ..out("bob@partner.gcsx.gov.uk", rcpts)
    }
}

fn parent(level: &str, direction: Direction) -> ThreadEntry {
    ThreadEntry {
        message_id: "orig@partner.gcsx.gov.uk".into(),
        level: level.into(),
        marking: Some(format!("{level} - PERSONAL")),
        direction,
        matched_by: "In-Reply-To".into(),
    }
}

fn answering(level: &str) -> ThreadFacts {
    ThreadFacts {
        parents: vec![parent(level, Direction::Inbound)],
        ..ThreadFacts::default()
    }
}

fn repeating(level: &str, direction: Direction) -> ThreadFacts {
    ThreadFacts {
        same: vec![ThreadEntry {
            matched_by: "text digest and subject".into(),
            ..parent(level, direction)
        }],
        ..ThreadFacts::default()
    }
}

#[test]
fn a_downgraded_reply_is_refused_with_the_original_marking() {
    let p = Policy::builtin().expect("built-in");
    let d = decide_in_thread(
        &p,
        &facts(&p, "UNCLASSIFIED"),
        &out(ALICE, &[INTERNET]),
        &answering("RESTRICTED"),
    );
    let Verdict::Reject { reply, rule } = &d.verdict else {
        panic!("refused: {:?}", d.verdict)
    };
    assert_eq!(rule, "THREAD-DOWNGRADE");
    assert_eq!((reply.code, reply.enhanced.as_str()), (550, "5.7.1"));
    assert!(
        reply.text.contains("RESTRICTED - PERSONAL"),
        "{}",
        reply.text
    );
    assert!(reply.text.contains("UNCLASSIFIED"), "{}", reply.text);
    assert!(
        reply.text.contains("orig@partner.gcsx.gov.uk"),
        "{}",
        reply.text
    );
    assert!(d.rule_ids.contains(&"THREAD-DOWNGRADE".to_owned()));
    let hit = d
        .hits
        .iter()
        .find(|h| h.rule == "THREAD-DOWNGRADE")
        .expect("hit");
    assert_eq!(hit.situation, "thread-downgrade");
    assert!(hit.detail.contains("In-Reply-To"), "{}", hit.detail);
    // Never a label on a refused message, and never the original's.
    assert!(d.labels.header.is_none() && d.labels.subject.is_none());
}

#[test]
fn same_or_higher_marking_and_inbound_mail_are_not_downgrades() {
    let p = Policy::builtin().expect("built-in");
    for marking in ["RESTRICTED", "CONFIDENTIAL"] {
        let d = decide_in_thread(
            &p,
            &facts(&p, marking),
            &out(ALICE, &[GCSX]),
            &answering("RESTRICTED"),
        );
        assert!(
            !d.rule_ids.iter().any(|r| r.starts_with("THREAD")),
            "{marking}: {:?}",
            d.rule_ids
        );
    }
    // `direction = "outbound"`: a partner's lower-marked reply coming in is not ours to refuse.
    let d = decide_in_thread(
        &p,
        &facts(&p, "PROTECT"),
        &inbound_env(&[ALICE]),
        &answering("RESTRICTED"),
    );
    assert_eq!(d.verdict, Verdict::Accept);
    // A ledger that could not be asked (fail-open) decides as if there were no thread.
    let mut t = answering("RESTRICTED");
    t.unavailable = Some("timed out".into());
    let d = decide_in_thread(&p, &facts(&p, "UNCLASSIFIED"), &out(ALICE, &[INTERNET]), &t);
    assert_eq!(d.verdict, Verdict::Accept);
    // A level the scheme does not know (another policy wrote it) is ignored, not guessed.
    let d = decide_in_thread(
        &p,
        &facts(&p, "UNCLASSIFIED"),
        &out(ALICE, &[INTERNET]),
        &answering("OFFICIAL"),
    );
    assert_eq!(d.verdict, Verdict::Accept);
}

#[test]
fn quarantine_holds_and_keeps_the_messages_own_label() {
    let p = variant(
        "id = \"THREAD-DOWNGRADE\"\ndirection = \"outbound\"\naction = \"reject\"\ntext =",
        "id = \"THREAD-DOWNGRADE\"\ndirection = \"outbound\"\naction = \"quarantine\"\ntext =",
    );
    let d = decide_in_thread(
        &p,
        &facts(&p, "PROTECT"),
        &out(ALICE, &[GCSX]),
        &answering("RESTRICTED"),
    );
    let Verdict::Quarantine { reason, rule } = &d.verdict else {
        panic!("held: {:?}", d.verdict)
    };
    assert_eq!(rule, "THREAD-DOWNGRADE");
    assert!(reason.contains("RESTRICTED"), "{reason}");
    let h = d.labels.header.as_ref().expect("its own label is written");
    assert_eq!(h.value, "PROTECT", "the rule never raises the marking");
}

#[test]
fn shadow_records_and_passes() {
    let p = variant(
        "action = \"reject\"\ntext = \"Your reply is marked",
        "action = \"shadow\"\n#text = \"Your reply is marked",
    );
    let d = decide_in_thread(
        &p,
        &facts(&p, "UNCLASSIFIED"),
        &out(ALICE, &[INTERNET]),
        &answering("RESTRICTED"),
    );
    assert_eq!(d.verdict, Verdict::Accept);
    let hit = d
        .hits
        .iter()
        .find(|h| h.rule == "THREAD-DOWNGRADE")
        .expect("recorded");
    assert!(hit.detail.contains("shadow"), "{}", hit.detail);
}

#[test]
fn an_authorised_downgrade_marker_is_allowed_and_audited() {
    let p = variant(
        "[thread.redirect]",
        "allow_header = \"Downgraded-By\"\nallow_by = [\"officer@example-council.gcsx.gov.uk\", \"*@security.example-council.gcsx.gov.uk\"]\n\n[thread.redirect]",
    );
    let marker = ThreadFacts {
        downgrade_marker: Some("officer@example-council.gcsx.gov.uk (FOI release 2026/114)".into()),
        ..answering("RESTRICTED")
    };
    let officer = "officer@example-council.gcsx.gov.uk";
    let d = decide_in_thread(
        &p,
        &facts(&p, "UNCLASSIFIED"),
        &out(officer, &[INTERNET]),
        &marker,
    );
    assert_eq!(d.verdict, Verdict::Accept);
    let hit = d
        .hits
        .iter()
        .find(|h| h.rule == "THREAD-DOWNGRADE")
        .expect("audited");
    assert_eq!(hit.situation, "thread-downgrade-allowed");
    assert!(
        hit.detail.contains("Downgraded-By") && hit.detail.contains(officer),
        "{}",
        hit.detail
    );
    // By domain, through the SASL user.
    let mut env = out("someone@example-council.gcsx.gov.uk", &[INTERNET]);
    env.auth_user = Some("sec1@security.example-council.gcsx.gov.uk".into());
    let d = decide_in_thread(&p, &facts(&p, "UNCLASSIFIED"), &env, &marker);
    assert_eq!(d.verdict, Verdict::Accept);
    // The header from anyone else changes nothing.
    let d = decide_in_thread(
        &p,
        &facts(&p, "UNCLASSIFIED"),
        &out(ALICE, &[INTERNET]),
        &marker,
    );
    assert!(
        matches!(d.verdict, Verdict::Reject { .. }),
        "{:?}",
        d.verdict
    );
}

#[test]
fn an_inbound_message_going_out_unchanged_is_a_redirect() {
    let p = Policy::builtin().expect("built-in");
    let env = out(ALICE, &[INTERNET, GCSX]);
    let d = decide_in_thread(
        &p,
        &facts(&p, "RESTRICTED"),
        &env,
        &repeating("RESTRICTED", Direction::Inbound),
    );
    let Verdict::Reject { reply, rule } = &d.verdict else {
        panic!("refused: {:?}", d.verdict)
    };
    assert_eq!(
        rule, "THREAD-REDIRECT",
        "the redirect's reply is the one the sender reads"
    );
    assert!(reply.text.contains("example.com"), "{}", reply.text);
    let hits: Vec<_> = d
        .hits
        .iter()
        .filter(|h| h.rule == "THREAD-REDIRECT")
        .collect();
    assert_eq!(hits.len(), 1, "only the lower-rated recipient: {hits:?}");
    assert_eq!(hits[0].recipient.as_deref(), Some(INTERNET));
    assert_eq!(d.recipients[0].rules[0], "THREAD-REDIRECT");
    // Unmarked now (the label was stripped on the way): still a redirect.
    let d = decide_in_thread(
        &p,
        &unmarked(&p),
        &out(ALICE, &[INTERNET]),
        &repeating("RESTRICTED", Direction::Inbound),
    );
    assert!(matches!(&d.verdict, Verdict::Reject { rule, .. } if rule == "THREAD-REDIRECT"));
    // Our own earlier outbound copy is not a redirect; nor is mail to a domain rated high enough.
    let d = decide_in_thread(
        &p,
        &facts(&p, "UNCLASSIFIED"),
        &out(ALICE, &[INTERNET]),
        &repeating("RESTRICTED", Direction::Outbound),
    );
    assert_eq!(d.verdict, Verdict::Accept);
    let d = decide_in_thread(
        &p,
        &facts(&p, "RESTRICTED"),
        &out(ALICE, &[GCSX]),
        &repeating("RESTRICTED", Direction::Inbound),
    );
    assert_eq!(d.verdict, Verdict::Accept);
}

#[test]
fn a_redirect_takes_the_auto_forward_rules_action() {
    let p = variant(
        "when = \"auto-forward-down\"\ndirection = \"outbound\"\naction = \"reject\"",
        "when = \"auto-forward-down\"\ndirection = \"outbound\"\naction = \"remove-recipients\"",
    );
    let d = decide_in_thread(
        &p,
        &unmarked(&p),
        &out(ALICE, &[INTERNET, GCSX]),
        &repeating("RESTRICTED", Direction::Inbound),
    );
    assert_eq!(d.verdict, Verdict::Accept);
    assert_eq!(d.recipients[0].delivery, Delivery::Remove);
    assert_eq!(d.recipients[1].delivery, Delivery::Deliver);
    assert!(d.sender_notice.is_some());
}

fn errors(text: &str) -> Vec<Problem> {
    match Policy::from_str("p.toml", text) {
        Ok(p) => panic!("expected errors, loaded with warnings {:?}", p.warnings),
        Err(e) => e.errors().cloned().collect(),
    }
}

fn pos(text: &str, needle: &str) -> (usize, usize) {
    let at = text.find(needle).unwrap_or_else(|| panic!("{needle}"));
    let line = text[..at].matches('\n').count() + 1;
    let col = at - text[..at].rfind('\n').map_or(0, |i| i + 1) + 1;
    (line, col)
}

#[test]
fn thread_key_mistakes_are_reported_at_their_position() {
    let text = BUILTIN_POLICY
        .replacen("retention_days = 30", "retention_days = 0", 1)
        .replacen(
            "on_unavailable = \"fail-open\"",
            "on_unavailable = \"fail-closed\"\ncolour = 1",
            1,
        )
        .replacen(
            "action = \"reject\"\ntext = \"Your reply",
            "action = \"bounce\"\ntext = \"Your reply",
            1,
        )
        .replacen(
            "[thread.redirect]",
            "allow_header = \"Downgraded By\"\n\n[thread.redirect]",
            1,
        )
        .replacen("id = \"THREAD-REDIRECT\"", "id = \"THREAD DOWN\"", 1);
    let ps = errors(&text);
    let check = |needle: &str, key: &str, found: &str, expected: &str| {
        // `prefix|rest`: the problem is at `rest`, found after `prefix`.
        let (prefix, rest) = needle.split_once('|').unwrap_or(("", needle));
        let (line, column) = pos(&text, &format!("{prefix}{rest}"));
        let column = column + prefix.chars().count();
        assert!(
            ps.iter().any(|p| p.line == line
                && p.column == column
                && p.key == key
                && p.found.contains(found)
                && p.expected.contains(expected)),
            "no problem at {line}:{column} {key}; got:\n{}",
            ps.iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("\n")
        );
    };
    check(
        "retention_days = |0",
        "thread.retention_days",
        "0",
        "1 to 3650",
    );
    check(
        "\"fail-closed\"",
        "thread.on_unavailable",
        "fail-closed",
        "`fail-open` or `tempfail`",
    );
    check(
        "colour",
        "thread",
        "unknown key `colour`",
        "`retention_days`",
    );
    check(
        "\"bounce\"",
        "thread.downgrade.action",
        "bounce",
        "`reject`, `quarantine` or `shadow`",
    );
    check(
        "\"Downgraded By\"",
        "thread.downgrade.allow_header",
        "Downgraded By",
        "header field name",
    );
    check(
        "\"THREAD DOWN\"",
        "thread.redirect.id",
        "THREAD DOWN",
        "letters, digits",
    );
    assert!(ps.iter().all(|p| p.file == "p.toml"));
}

#[test]
fn without_an_auto_forward_rule_the_redirect_rule_warns() {
    let text = BUILTIN_POLICY.replacen(
        "when = \"auto-forward-down\"\ndirection = \"outbound\"\naction = \"reject\"",
        "when = \"auto-forward-down\"\ndirection = \"outbound\"\naction = \"accept\"",
        1,
    );
    let text = text.replacen(
        "code = 550\nenhanced = \"5.7.1\"\ntext = \"Automatic forwarding",
        "#code = 550\n#enhanced = \"5.7.1\"\n#text = \"Automatic forwarding",
        1,
    );
    let p = Policy::from_str("p.toml", &text).unwrap_or_else(|e| panic!("{e}"));
    assert!(
        p.warnings
            .iter()
            .any(|w| w.key == "thread" && w.found.contains("auto-forward-down")),
        "{:?}",
        p.warnings
    );
}

/// The filter asks the ledger only for what a rule could use: parents for the downgrade rule's
/// direction, copies (and the text digest) for outbound mail to a recipient rated below the
/// scheme's top level, the digest also for inbound mail (a later copy is looked for by it).
#[test]
fn the_ledger_is_asked_only_what_a_rule_could_use() {
    use markgate::policy::thread::{Needs, needs};
    let p = policy(BUILTIN_POLICY);
    assert_eq!(
        needs(&p, &out(ALICE, &[INTERNET])),
        Needs {
            parents: true,
            copies: true,
            text: true
        },
        "outbound to the internet: a downgraded reply or a redirect may both show"
    );
    assert_eq!(
        needs(&p, &inbound_env(&[ALICE])),
        Needs {
            parents: false,
            copies: false,
            text: true
        },
        "inbound: the downgrade rule covers outbound mail only; the digest is remembered"
    );
    // Every recipient rated at the top of the scheme: no earlier marking can be above it.
    let top = variant(
        "\"*.gcsx.gov.uk\" = \"RESTRICTED\"",
        "\"*.gcsx.gov.uk\" = \"TOP SECRET\"",
    );
    assert_eq!(
        needs(&top, &out(ALICE, &[GCSX])),
        Needs {
            parents: true,
            copies: false,
            text: false
        }
    );
    assert!(needs(&top, &out(ALICE, &[GCSX, INTERNET])).copies);
    // No [thread] at all: nothing.
    let start = BUILTIN_POLICY
        .find("\n[thread]")
        .expect("[thread] in the shipped policy");
    let end = BUILTIN_POLICY[start + 1..]
        .find("\n[")
        .map_or(BUILTIN_POLICY.len(), |i| start + 1 + i);
    let mut without = BUILTIN_POLICY.to_owned();
    // Drop [thread] and its sub-tables.
    let mut cut_end = end;
    while without[cut_end..].starts_with("\n[thread.") {
        cut_end = without[cut_end + 1..]
            .find("\n[")
            .map_or(without.len(), |i| cut_end + 1 + i);
    }
    without.replace_range(start..cut_end, "");
    let none = Policy::from_str("p.toml", &without).unwrap_or_else(|e| panic!("{e}"));
    assert!(none.thread.is_none());
    assert_eq!(needs(&none, &out(ALICE, &[INTERNET])), Needs::default());
}
