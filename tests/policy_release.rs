//! Releasability caveats, EPMS EXPIRES/DOWNTO with a clock the test sets, ORIGIN against the
//! sender, near-misses, and the loader's errors for the new keys — all through `decide`, which
//! stays pure (the clock is a fact handed in).

use markgate::inspect::markings;
use markgate::policy::decide::{Delivery, LevelSource, Verdict};
use markgate::policy::{Envelope, Facts, MarkingStatus, Policy, decide};

fn shipped(name: &str) -> String {
    std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("policies")
            .join(name),
    )
    .unwrap()
}

fn facts(p: &Policy, headers: &[(&str, &str)]) -> Facts {
    let hs: Vec<(&[u8], &[u8])> = headers
        .iter()
        .map(|(n, v)| (n.as_bytes(), v.as_bytes()))
        .collect();
    markings::header_facts(p, &hs)
}

fn out(from: &str, rcpts: &[&str]) -> Envelope {
    Envelope {
        sender: from.into(),
        recipients: rcpts.iter().map(|s| (*s).to_owned()).collect(),
        client_ip: "127.0.0.1".parse().ok(),
        ..Envelope::default()
    }
}

/// Unix time of a UTC date-time.
fn at(s: &str) -> i64 {
    time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
        .unwrap()
        .unix_timestamp()
}

// --- EXPIRES / DOWNTO --------------------------------------------------------------------

#[test]
fn expires_downto_with_a_test_clock() {
    let p = Policy::from_str("au-epms", &shipped("au-epms.toml")).unwrap();
    let header = "VER=2024.1, NS=gov.au, SEC=PROTECTED, EXPIRES=2027-03-01, DOWNTO=OFFICIAL, ORIGIN=carol@agency.gov.au";
    let env = out("carol@agency.gov.au", &["someone@example.com"]);
    let base = facts(&p, &[("X-Protective-Marking", header)]);
    assert_eq!(base.markings[0].status, MarkingStatus::Valid);
    // No clock: nothing expires (the filter always hands one in; tests may leave it out).
    let d = decide(&p, &base, &env);
    assert_eq!(d.effective.level_name, "PROTECTED");
    // The day before: still PROTECTED, above the internet's OFFICIAL ceiling: refused.
    let d = decide(&p, &base.clone().at(at("2027-02-28T23:59:59Z")), &env);
    assert_eq!(d.effective.level_name, "PROTECTED");
    assert!(d.effective.expired.is_none());
    assert!(
        matches!(d.verdict, Verdict::Reject { .. }),
        "{:?}",
        d.verdict
    );
    // From the first second of the day: OFFICIAL, delivered; both levels recorded.
    let d = decide(&p, &base.clone().at(at("2027-03-01T00:00:00Z")), &env);
    assert_eq!(d.effective.level_name, "OFFICIAL");
    assert_eq!(d.effective.source, LevelSource::Header);
    let e = d.effective.expired.as_ref().expect("expired");
    assert_eq!(
        (e.from.as_str(), e.to.as_str(), e.expires.as_str()),
        ("PROTECTED", "OFFICIAL", "2027-03-01")
    );
    let hit = d
        .hits
        .iter()
        .find(|h| h.situation == "expired")
        .expect("hit");
    assert!(
        hit.detail.contains("PROTECTED") && hit.detail.contains("OFFICIAL"),
        "{}",
        hit.detail
    );
    assert_eq!(d.verdict, Verdict::Accept);
    // The marking itself is the sender's: kept as written.
    assert_eq!(
        d.labels.header.as_ref().map(|h| h.value.as_str()),
        Some(header)
    );
    // The audit record's decision says both levels.
    let json = serde_json::to_string(&d).unwrap();
    assert!(
        json.contains("\"expired\":{\"from\":\"PROTECTED\",\"to\":\"OFFICIAL\""),
        "{json}"
    );
}

#[test]
fn expires_with_a_time_and_an_offset_and_event_text() {
    let p = Policy::from_str("au-epms", &shipped("au-epms.toml")).unwrap();
    let env = out("carol@agency.gov.au", &["someone@example.com"]);
    let f = facts(
        &p,
        &[(
            "Subject",
            "Budget [SEC=PROTECTED, EXPIRES=2027-05-11T19:30:00+10:00, DOWNTO=OFFICIAL]",
        )],
    );
    assert_eq!(
        f.markings[0].status,
        MarkingStatus::Valid,
        "{:?}",
        f.markings[0].diagnostics
    );
    // 19:30 in Canberra is 09:30 UTC.
    assert_eq!(
        decide(&p, &f.clone().at(at("2027-05-11T09:29:59Z")), &env)
            .effective
            .level_name,
        "PROTECTED"
    );
    assert_eq!(
        decide(&p, &f.clone().at(at("2027-05-11T09:30:00Z")), &env)
            .effective
            .level_name,
        "OFFICIAL"
    );
    // An event: a gateway cannot know when it happens, so it never expires here.
    let f = facts(
        &p,
        &[(
            "Subject",
            "Budget [SEC=PROTECTED, EXPIRES=after the budget speech, DOWNTO=OFFICIAL]",
        )],
    );
    assert_eq!(f.markings[0].status, MarkingStatus::Valid);
    assert_eq!(
        decide(&p, &f.at(at("2099-01-01T00:00:00Z")), &env)
            .effective
            .level_name,
        "PROTECTED"
    );
}

#[test]
fn impossible_expiry_dates_are_diagnosed() {
    let p = Policy::from_str("au-epms", &shipped("au-epms.toml")).unwrap();
    for date in [
        "2025-02-30",
        "2024-13-01",
        "2026-04-31",
        "2026-01-01T25:00:00Z",
        "2025-02-29",
    ] {
        let f = facts(
            &p,
            &[(
                "Subject",
                &format!("x [SEC=PROTECTED, EXPIRES={date}, DOWNTO=OFFICIAL]"),
            )],
        );
        let m = &f.markings[0];
        assert_eq!(m.status, MarkingStatus::Malformed, "{date}");
        assert!(
            m.rejected_codes.contains(&"epms.expires.date"),
            "{date}: {:?}",
            m.diagnostics
        );
    }
    // 2028 is a leap year.
    let f = facts(
        &p,
        &[(
            "Subject",
            "x [SEC=PROTECTED, EXPIRES=2028-02-29, DOWNTO=OFFICIAL]",
        )],
    );
    assert_eq!(f.markings[0].status, MarkingStatus::Valid);
}

// --- releasability -----------------------------------------------------------------------

fn gsc_secret_policy() -> Policy {
    // The shipped GSC policy on a SECRET-accredited system, with a US partner rated SECRET.
    let text = shipped("uk-gsc.toml")
        .replace("own_level = \"OFFICIAL-SENSITIVE\"", "own_level = \"SECRET\"")
        .replace(
            "\"*.mod.uk\" = \"OFFICIAL-SENSITIVE\"",
            "\"*.mod.uk\" = \"SECRET\"\n\"partner.example.us\" = \"SECRET\"\n\"unlisted.example\" = \"SECRET\"",
        )
        .replace("\"*.mod.uk\" = \"GBR\"", "\"*.mod.uk\" = \"GBR\"\n\"partner.example.us\" = \"USA\"");
    Policy::from_str("gsc-secret", &text).expect("loads")
}

#[test]
fn uk_eyes_only_under_gsc_removes_foreign_recipients() {
    let p = gsc_secret_policy();
    let env = out(
        "alice@example-department.gov.uk",
        &[
            "bob@hq.mod.uk",
            "carl@partner.example.us",
            "dee@unlisted.example",
        ],
    );
    let f = facts(&p, &[("Subject", "SECRET UK EYES ONLY: Ops plan")]);
    assert_eq!(
        f.markings[0].status,
        MarkingStatus::Valid,
        "{:?}",
        f.markings[0].diagnostics
    );
    let d = decide(&p, &f, &env);
    let by: Vec<(&str, Delivery)> = d
        .recipients
        .iter()
        .map(|r| (r.address.as_str(), r.delivery))
        .collect();
    assert_eq!(by[0], ("bob@hq.mod.uk", Delivery::Deliver));
    assert_eq!(by[1], ("carl@partner.example.us", Delivery::Remove));
    assert_eq!(
        by[2].1,
        Delivery::Remove,
        "unlisted domains are never released to"
    );
    assert!(
        d.recipients[1].reason.contains("UK EYES ONLY"),
        "{}",
        d.recipients[1].reason
    );
    let notice = d.sender_notice.as_deref().unwrap();
    assert!(notice.contains("caveat UK EYES ONLY"), "{notice}");
    assert_eq!(d.verdict, Verdict::Accept);
    // UK/US EYES ONLY: the US partner may receive it.
    let f = facts(&p, &[("Subject", "SECRET UK/US EYES ONLY: Ops plan")]);
    let d = decide(
        &p,
        &f,
        &out(
            "alice@example-department.gov.uk",
            &["bob@hq.mod.uk", "carl@partner.example.us"],
        ),
    );
    assert!(
        d.recipients.iter().all(|r| r.delivery == Delivery::Deliver),
        "{:?}",
        d.recipients
    );
}

#[test]
fn caveat_refusal_names_the_caveat_when_nobody_may_receive_it() {
    // Every destination used may receive PROTECTED here, so only the caveat decides.
    let text = shipped("au-epms.toml")
        .replace(
            "action = \"remove-recipients\"\ncode = 550\nenhanced = \"5.7.1\"\ntext = \"Your message carries the caveat {caveat}",
            "action = \"reject\"\ncode = 550\nenhanced = \"5.7.1\"\ntext = \"Refused: the caveat {caveat}",
        )
        .replace(
            "\"*.gov.au\" = \"OFFICIAL:Sensitive\"",
            "\"*.gov.au\" = \"PROTECTED\"\n\"example.org\" = \"PROTECTED\"",
        );
    let p = Policy::from_str("au", &text).unwrap();
    let f = facts(&p, &[("Subject", "x [SEC=PROTECTED, CAVEAT=RI:AUSTEO]")]);
    // Own domain (AUS) and another agency (AUS) may; nothing else.
    let d = decide(
        &p,
        &f,
        &out(
            "carol@agency.gov.au",
            &["dave@agency.gov.au", "erin@finance.gov.au"],
        ),
    );
    assert_eq!(d.verdict, Verdict::Accept, "{:?}", d.hits);
    let d = decide(
        &p,
        &f,
        &out(
            "carol@agency.gov.au",
            &["dave@agency.gov.au", "x@example.org"],
        ),
    );
    match &d.verdict {
        Verdict::Reject { reply, rule } => {
            assert_eq!(rule, "EPMS-NOT-RELEASABLE");
            assert!(
                reply.text.contains("Refused: the caveat RI:AUSTEO"),
                "{}",
                reply.text
            );
        }
        v => panic!("{v:?}"),
    }
}

#[test]
fn rel_lists_and_agao() {
    let text = shipped("au-epms.toml").replace(
        "\"*.gov.au\" = \"AUS\"\n",
        "\"*.gov.au\" = \"AUS\"\n\"mod.example.nz\" = \"NZL\"\n\"dod.example.us\" = [\"USA\", \"AGAO\"]\n",
    );
    let p = Policy::from_str("au", &text).unwrap();
    let env = out(
        "carol@agency.gov.au",
        &["a@mod.example.nz", "b@dod.example.us", "c@agency.gov.au"],
    );
    let removed = |subject: &str| -> Vec<String> {
        let d = decide(&p, &facts(&p, &[("Subject", subject)]), &env);
        d.recipients
            .iter()
            .filter(|r| r.delivery == Delivery::Remove)
            .map(|r| r.address.clone())
            .collect()
    };
    assert_eq!(
        removed("x [SEC=PROTECTED, CAVEAT=RI:REL/AUS/NZL]"),
        vec!["b@dod.example.us"]
    );
    assert_eq!(
        removed("x [SEC=PROTECTED, CAVEAT=RI:AGAO]"),
        vec!["a@mod.example.nz"]
    );
    assert_eq!(
        removed("x [SEC=PROTECTED, CAVEAT=RI:AUSTEO]"),
        vec!["a@mod.example.nz", "b@dod.example.us"]
    );
    assert!(removed("x [SEC=PROTECTED]").is_empty());
    // Two caveats restrict together.
    assert_eq!(
        removed("x [SEC=PROTECTED, CAVEAT=RI:AGAO, CAVEAT=RI:REL/AUS/NZL]"),
        vec!["a@mod.example.nz", "b@dod.example.us"]
    );
}

// --- ORIGIN ------------------------------------------------------------------------------

#[test]
fn origin_against_auth_user_and_sender() {
    let base = shipped("au-epms.toml");
    let header = |o: &str| format!("VER=2024.1, NS=gov.au, SEC=OFFICIAL, ORIGIN={o}");
    for (check, sender, auth, origin, mismatch) in [
        (
            "either",
            "carol@agency.gov.au",
            None,
            "carol@agency.gov.au",
            false,
        ),
        (
            "either",
            "carol@agency.gov.au",
            None,
            "Carol@Agency.gov.au",
            false,
        ),
        (
            "either",
            "carol@agency.gov.au",
            None,
            "mallory@agency.gov.au",
            true,
        ),
        (
            "either",
            "bounce@agency.gov.au",
            Some("carol@agency.gov.au"),
            "carol@agency.gov.au",
            false,
        ),
        (
            "sender",
            "bounce@agency.gov.au",
            Some("carol@agency.gov.au"),
            "carol@agency.gov.au",
            true,
        ),
        (
            "auth-user",
            "carol@agency.gov.au",
            Some("dave@agency.gov.au"),
            "carol@agency.gov.au",
            true,
        ),
        (
            "auth-user",
            "carol@agency.gov.au",
            None,
            "carol@agency.gov.au",
            false,
        ),
        (
            "auth-user",
            "x@agency.gov.au",
            Some("carol"),
            "carol@agency.gov.au",
            false,
        ),
    ] {
        let p = Policy::from_str(
            "au",
            &base.replace("check = \"either\"", &format!("check = \"{check}\"")),
        )
        .unwrap();
        let mut env = out(sender, &["dave@agency.gov.au"]);
        env.auth_user = auth.map(str::to_owned);
        let d = decide(
            &p,
            &facts(&p, &[("X-Protective-Marking", &header(origin))]),
            &env,
        );
        let hit = d.hits.iter().find(|h| h.situation == "origin-mismatch");
        assert_eq!(
            hit.is_some(),
            mismatch,
            "{check} {sender} {auth:?} {origin}: {:?}",
            d.hits
        );
        if let Some(h) = hit {
            assert_eq!(h.rule, "EPMS-ORIGIN");
            assert!(h.detail.contains(origin), "{}", h.detail);
        }
    }
    // Inbound mail is not checked (direction = outbound).
    let p = Policy::from_str("au", &base).unwrap();
    let env = Envelope {
        sender: "x@partner.example".into(),
        recipients: vec!["dave@agency.gov.au".into()],
        client_ip: "198.51.100.7".parse().ok(),
        ..Envelope::default()
    };
    let d = decide(
        &p,
        &facts(
            &p,
            &[("X-Protective-Marking", &header("someone@else.example"))],
        ),
        &env,
    );
    assert!(d.hits.iter().all(|h| h.situation != "origin-mismatch"));
}

// --- near-misses -------------------------------------------------------------------------

#[test]
fn near_misses_are_malformed_never_read() {
    let gpms = Policy::from_str("uk-gpms", markgate::policy::BUILTIN_POLICY).unwrap();
    let gsc = Policy::from_str("uk-gsc", &shipped("uk-gsc.toml")).unwrap();
    let au = Policy::from_str("au", &shipped("au-epms.toml")).unwrap();
    for (p, subject, code) in [
        (&gpms, "restricted: Budget", "uk.near-miss.case"),
        (&gpms, "RE: protect - personal: Case", "uk.near-miss.case"),
        (&gpms, "[restricted] Budget", "uk.near-miss.case"),
        (&gpms, "confidential: Tender", "uk.near-miss.case"),
        (&gsc, "Tender [SEC=OFFICIAL:Sensitive]", "uk.near-miss.epms"),
        (
            &gpms,
            "[RESTRICTED][RESTRICTED] Budget",
            "uk.near-miss.duplicate",
        ),
        (
            &au,
            "Budget [SEC=OFFICIAL][SEC=OFFICIAL]",
            "epms.near-miss.duplicate",
        ),
    ] {
        let f = facts(p, &[("Subject", subject)]);
        let m = f
            .markings
            .iter()
            .find(|m| m.rejected_codes.contains(&code))
            .unwrap_or_else(|| panic!("{subject}: {:?}", f.markings));
        assert_eq!(m.status, MarkingStatus::Malformed, "{subject}");
        let d = decide(
            p,
            &f,
            &out("a@example-council.gcsx.gov.uk", &["b@partner.gcsx.gov.uk"]),
        );
        assert!(
            d.hits.iter().any(|h| h.situation == "malformed"),
            "{subject}: {:?}",
            d.hits
        );
        assert!(
            d.labels.header.is_none() && d.labels.subject.is_none(),
            "{subject}: never interpreted"
        );
    }
    // Not near-misses: ordinary words, mixed case, stacking by replies.
    for subject in [
        "Secret Santa: party",
        "protect your data: tips",
        "Restricted parking: notice",
        "RE: RESTRICTED: RE: RESTRICTED: Budget",
    ] {
        let f = facts(&gpms, &[("Subject", subject)]);
        assert!(
            f.markings
                .iter()
                .all(|m| m.rejected_codes.iter().all(|c| !c.contains("near-miss"))),
            "{subject}: {:?}",
            f.markings
        );
    }
    let f = facts(
        &au,
        &[("Subject", "RE: Budget [SEC=OFFICIAL] [SEC=OFFICIAL]")],
    );
    assert!(f.markings.iter().all(|m| m.status == MarkingStatus::Valid));
}

// --- loading -----------------------------------------------------------------------------

#[test]
fn new_keys_report_file_line_column_and_what_was_expected() {
    let text = markgate::policy::BUILTIN_POLICY;
    for (extra, want) in [
        (
            "\n[read.vendor.outlook]\nlabels = {}\n",
            "unknown vendor `outlook`",
        ),
        (
            "\n[read.vendor.purview]\nlabels = { \"g\" = \"RESTRICTED - NOSUCH\" }\n",
            "read.vendor.purview.labels.\"g\"",
        ),
        (
            "\n[read.vendor.purview]\nlabels = { \"g\" = 3 }\n",
            "a marking of the scheme",
        ),
        (
            "\n[read.vendor.purview]\ntrust = \"sideways\"\nlabels = {}\n",
            "read.vendor.purview.trust",
        ),
        (
            "\n[read.vendor.titus]\nnamespaces = [\"x\"]\nlabels = {}\n",
            "only under read.vendor.janusseal",
        ),
        ("\n[read.vendor.titus]\n", "no `labels` key"),
        (
            "\n[write.purview]\nsite_id = \"nope\"\nlabels = {}\n",
            "write.purview.site_id",
        ),
        (
            "\n[write.purview]\nsite_id = \"5a4e6e65-497e-4a97-9833-0f3c9d8e7a21\"\nlabels = { \"HUSH\" = { id = \"3f1c2a7e-8d4b-4c1e-9a6f-2b7d5e0c9a11\", name = \"x\" } }\n",
            "unknown level `HUSH`",
        ),
        ("\n[release]\nown = [\"G B R\"]\n", "release.own"),
        (
            "\n[release.domains]\n\"bad domain\" = \"GBR\"\n",
            "release.domains",
        ),
        ("\n[origin]\ncheck = \"telepathy\"\n", "origin.check"),
        ("\n[origin]\ndirection = \"outbound\"\n", "no `check` key"),
    ] {
        // `[read.vendor…]` and `[write.purview]` must sit inside the existing tables: append
        // them as dotted tables, which TOML allows after the parent was defined.
        let e = Policy::from_str("p.toml", &format!("{text}{extra}")).expect_err(extra);
        let s = e.to_string();
        assert!(s.contains(want), "{extra}: {s}");
        assert!(s.contains("p.toml:"), "file:line:col in {s}");
    }
    // A [release] without a not-releasable rule is a warning, not silence.
    let p = Policy::from_str("p.toml", &format!("{text}\n[release]\nown = [\"GBR\"]\n")).unwrap();
    assert!(
        p.warnings
            .iter()
            .any(|w| w.to_string().contains("not-releasable")),
        "{:?}",
        p.warnings
    );
}
