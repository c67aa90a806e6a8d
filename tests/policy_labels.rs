//! Table tests for every label grammar: the vectors of `../shared/reference/markings.md` (a.1,
//! a.2) plus our own, valid and invalid, each asserting the exact set of diagnostic codes.

use markgate::policy::Policy;
use markgate::policy::labels::au_epms::{self, Class, Form};
use markgate::policy::labels::{CODES, Vocabulary, uk_gpms, uk_gsc};

fn codes(diags: &[markgate::policy::labels::Diagnostic]) -> Vec<&'static str> {
    let mut c: Vec<&'static str> = diags.iter().map(|d| d.code).collect();
    c.sort();
    c.dedup();
    c
}

fn sorted(v: &[&'static str]) -> Vec<&'static str> {
    let mut v = v.to_vec();
    v.sort();
    v
}

fn vocab(file: &str) -> Vocabulary {
    let path = format!("{}/policies/{file}", env!("CARGO_MANIFEST_DIR"));
    Policy::from_file(std::path::Path::new(&path))
        .expect("loads")
        .scheme
        .vocab
}

// ---------------------------------------------------------------- AU EPMS

/// The standard's own valid examples (Tables 2 and 17): no diagnostics at all.
#[test]
fn epms_standard_vectors_are_clean() {
    let subjects = [
        "SEC=OFFICIAL",
        "SEC=OFFICIAL:Sensitive",
        "SEC=OFFICIAL:Sensitive, ACCESS=Legal-Privilege",
        "SEC=OFFICIAL:Sensitive, CAVEAT=SH:NATIONAL-CABINET",
        "SEC=PROTECTED, EXPIRES=2019-07-01, DOWNTO=OFFICIAL",
        "SEC=SECRET, CAVEAT=SH:ACCOUNTABLE-MATERIAL, CAVEAT=RI:AUSTEO",
        "SEC=TOP-SECRET, EXPIRES=after the election, DOWNTO=SECRET",
        "SEC=PROTECTED, CAVEAT=RI:REL/AUS/NZL, CAVEAT=C:LOBSTER",
        "SEC=PROTECTED, CAVEAT=SH:EXCLUSIVE-FOR jane\\, deputy",
        "SEC=PROTECTED, EXPIRES=2030-01-01T10:00:00Z, DOWNTO=OFFICIAL:Sensitive",
    ];
    for s in subjects {
        let m = au_epms::parse(s, Form::Subject);
        assert!(m.diagnostics.is_empty(), "{s}: {:?}", m.diagnostics);
        assert!(m.class.is_some(), "{s}");
    }
    let headers = [
        "VER=2024.1, NS=gov.au,\r\n SEC=OFFICIAL,\r\n ORIGIN=neville.jones@entity.gov.au",
        "VER=2024.1, NS=gov.au,\n SEC=OFFICIAL:Sensitive,\n ACCESS=Legal-Privilege,\n ORIGIN=neville.jones@entity.gov.au",
        "VER=2024.1, NS=gov.au,\n SEC=PROTECTED,\n EXPIRES=2019-07-01,\n DOWNTO=OFFICIAL,\n ORIGIN=neville.jones@entity.gov.au",
        "VER=2024.1, NS=gov.au,\n SEC=SECRET,\n CAVEAT=SH:ACCOUNTABLE-MATERIAL,\n CAVEAT=RI:AUSTEO,\n ORIGIN=neville.jones@entity.gov.au",
        "VER=2018.3, NS=gov.au, SEC=OFFICIAL:Sensitive, ACCESS=Legislative-Secrecy, ORIGIN=jane.doe@contoso.gov.au",
        "VER=2018.4, NS=gov.au,\n SEC=SECRET,\n CAVEAT=SH:ACCOUNTABLE-MATERIAL,\n CAVEAT=RI:AUSTEO,\n ORIGIN=neville.jones@entity.gov.au",
        "VER=2024.1, NS=GOV.AU, SEC=OFFICIAL, ORIGIN=a@b.gov.au",
        "VER=2024.1, NS=gov.au, SEC=OFFICIAL, NOTE=see the brief, ORIGIN=a@b.gov.au",
    ];
    for h in headers {
        let m = au_epms::parse(&au_epms::unfold(h), Form::Header);
        assert!(m.diagnostics.is_empty(), "{h}: {:?}", m.diagnostics);
    }
}

/// Real-deployment and legacy vectors, and every invalid case of the shared notes, each with
/// exactly the diagnostics expected.
#[test]
fn epms_table() {
    use Form::{Header, Subject};
    let table: &[(&str, Form, &[&str])] = &[
        // ASD Blueprint: no ORIGIN.
        (
            "VER=2024.1, NS=gov.au, SEC=PROTECTED, CAVEAT=SH:CABINET, ACCESS=Personal-Privacy",
            Header,
            &["epms.origin.missing"],
        ),
        (
            "VER=2024.1, NS=gov.au, SEC=OFFICIAL:Sensitive, CAVEAT=SH:NATIONAL-CABINET, ACCESS=Legislative-Secrecy",
            Header,
            &["epms.origin.missing"],
        ),
        // pmcau renderer: regex order, REL with a space.
        (
            "VER=2025.1, NS=gov.au, SEC=TOP-SECRET, CAVEAT=C:LOBSTER, CAVEAT=FG:USA caveat, CAVEAT=RI:AGAO, CAVEAT=SH:EXCLUSIVE-FOR person, CAVEAT=RI:REL AFG, EXPIRES=2020-10-01, DOWNTO=OFFICIAL, ACCESS=Legal-Privilege, NOTE=the comments, ORIGIN=a@b.com",
            Header,
            &["epms.order.regex-form", "epms.rel.space"],
        ),
        (
            "SEC=SECRET, CAVEAT=SH:DELICATE SOURCE",
            Subject,
            &["epms.delicate-source.space"],
        ),
        (
            "SEC=TOP-SECRET,CAVEAT=C:codeword1",
            Subject,
            &["epms.comma-fws"],
        ),
        // Legacy.
        (
            "VER=2005.6, NS=gov.au, SEC=UNCLASSIFIED,\n    ORIGIN=D.Scurrah@bom.gov.au",
            Header,
            &["epms.sec.legacy"],
        ),
        (
            "VER=2012.3, NS=gov.au, SEC=UNOFFICIAL, ORIGIN=user@agency.gov.au",
            Header,
            &[],
        ),
        ("DLM=Sensitive:Personal", Subject, &["epms.dlm.legacy"]),
        (
            "SEC=SECRET, CAVEAT=ACCOUNTABLE-MATERIAL, CAVEAT=AUSTEO",
            Subject,
            &["epms.caveat.no-category"],
        ),
        // Invalid cases from the shared notes.
        ("SEC=OFFICIAL-Sensitive", Subject, &["epms.sec.value"]),
        ("SEC=OFFICIAL: Sensitive", Subject, &["epms.sec.value"]),
        ("SEC=official", Subject, &["epms.sec.value"]),
        ("sec=OFFICIAL", Subject, &["epms.field.case"]),
        ("SEC= TOP-SECRET", Subject, &["epms.value.whitespace"]),
        (
            "SEC=TOP-SECRET, DOWNTO=SECRET",
            Subject,
            &["epms.downto.without-expires"],
        ),
        (
            "SEC=TOP-SECRET, EXPIRES=2020-01-01",
            Subject,
            &["epms.expires.without-downto"],
        ),
        (
            "SEC=SECRET, EXPIRES=2020-10-01, DOWNTO=TOP-SECRET",
            Subject,
            &["epms.downto.level"],
        ),
        (
            "SEC=SECRET, EXPIRES=2020-10-01, DOWNTO=SECRET",
            Subject,
            &["epms.downto.level"],
        ),
        (
            "SEC=SECRET, EXPIRES=2020-10-01, DOWNTO=RESTRICTED",
            Subject,
            &["epms.downto.value"],
        ),
        (
            "SEC=OFFICIAL, ACCESS=Personal-Privacy",
            Subject,
            &["epms.access.level"],
        ),
        (
            "SEC=OFFICIAL:Sensitive, ACCESS=Personal Privacy",
            Subject,
            &["epms.access.value"],
        ),
        (
            "SEC=OFFICIAL:Sensitive, CAVEAT=SH:CABINET",
            Subject,
            &["epms.caveat.level"],
        ),
        (
            "SEC=OFFICIAL, CAVEAT=SH:NATIONAL-CABINET",
            Subject,
            &["epms.caveat.level"],
        ),
        (
            "SEC=TOP-SECRET, Unknown=x",
            Subject,
            &["epms.field.unknown"],
        ),
        (
            "VER=2021.0, NS=2022.1.thalesgroup.com, SEC=D04FB6C2,\n ORIGIN=Etienne.ALEPINS@thalesgroup.com",
            Header,
            &["epms.ns.foreign", "epms.sec.value"],
        ),
        // Our own.
        (
            "SEC=PROTECTED, CAVEAT=RI:REL/AU/NZL",
            Subject,
            &["epms.rel.country"],
        ),
        (
            "SEC=PROTECTED, CAVEAT=XX:thing",
            Subject,
            &["epms.caveat.syntax"],
        ),
        (
            "SEC=PROTECTED, CAVEAT=SH:SECRETIVE",
            Subject,
            &["epms.caveat.syntax"],
        ),
        (
            "SEC=PROTECTED, ACCESS=Legal-Privilege, CAVEAT=C:X",
            Subject,
            &["epms.order"],
        ),
        (
            "SEC=OFFICIAL, SEC=PROTECTED",
            Subject,
            &["epms.field.duplicate"],
        ),
        (
            "SEC=OFFICIAL,, ACCESS=Legal-Privilege",
            Subject,
            &["epms.access.level", "epms.comma-fws", "epms.field.empty"],
        ),
        ("SEC=OFFICIAL, ", Subject, &["epms.field.empty"]),
        (
            "OFFICIAL",
            Subject,
            &["epms.field.syntax", "epms.sec.missing"],
        ),
        ("", Subject, &["epms.sec.missing"]),
        (
            "SEC=OFFICIAL, ORIGIN=a@b.gov.au",
            Subject,
            &["epms.field.not-in-subject"],
        ),
        (
            "SEC=OFFICIAL",
            Header,
            &["epms.ns.missing", "epms.origin.missing", "epms.ver.missing"],
        ),
        (
            "VER=24, NS=gov.au, SEC=OFFICIAL, ORIGIN=a@b",
            Header,
            &["epms.ver.syntax"],
        ),
        (
            "VER=2024.1, NS=gov.au, SEC=OFFICIAL, ORIGIN=not an address",
            Header,
            &["epms.origin.syntax"],
        ),
        (
            "VER=2024.1, NS=gov.au, SEC=OFFICIAL, NOTE=caf\u{e9}, ORIGIN=a@b.gov.au",
            Header,
            &["epms.value.char"],
        ),
        (
            "SEC=PROTECTED, CAVEAT=C:a\\b",
            Subject,
            &["epms.value.char"],
        ),
        (
            "VER=2024.1, ORIGIN=a@b.gov.au, NS=gov.au, SEC=OFFICIAL",
            Header,
            &["epms.order"],
        ),
    ];
    for (input, form, want) in table {
        let m = au_epms::parse(&au_epms::unfold(input), *form);
        assert_eq!(
            codes(&m.diagnostics),
            sorted(want),
            "{input:?} ({form:?}): {:?}",
            m.diagnostics
        );
    }
}

#[test]
fn epms_length_limits() {
    let long_note = "x".repeat(129);
    let m = au_epms::parse(
        &format!("VER=2024.1, NS=gov.au, SEC=OFFICIAL, NOTE={long_note}, ORIGIN=a@b.gov.au"),
        Form::Header,
    );
    assert_eq!(codes(&m.diagnostics), vec!["epms.value.length"]);
    let ok_note = "x".repeat(128);
    let m = au_epms::parse(
        &format!("VER=2024.1, NS=gov.au, SEC=OFFICIAL, NOTE={ok_note}, ORIGIN=a@b.gov.au"),
        Form::Header,
    );
    assert!(m.diagnostics.is_empty());
    let caveats: Vec<String> = (0..80)
        .map(|i| format!("CAVEAT=C:CODEWORD{i:03}"))
        .collect();
    let m = au_epms::parse(
        &format!("SEC=PROTECTED, {}", caveats.join(", ")),
        Form::Subject,
    );
    assert_eq!(codes(&m.diagnostics), vec!["epms.length"]);
}

#[test]
fn epms_escapes_and_rendering() {
    let m = au_epms::parse(
        "SEC=PROTECTED, CAVEAT=SH:EXCLUSIVE-FOR a\\, b\\\\c",
        Form::Subject,
    );
    assert!(m.diagnostics.is_empty(), "{:?}", m.diagnostics);
    assert_eq!(m.caveats[0].value, "EXCLUSIVE-FOR a, b\\c");
    // Strict on write: the rendering re-escapes and round-trips without diagnostics.
    let medium = au_epms::render_medium(&m);
    assert_eq!(medium, "SEC=PROTECTED, CAVEAT=SH:EXCLUSIVE-FOR a\\, b\\\\c");
    assert_eq!(au_epms::parse(&medium, Form::Subject), m);
    // Variants are written back in ABNF spelling and order.
    let v = au_epms::parse(
        "SEC=SECRET, CAVEAT=RI:REL AUS NZL, CAVEAT=SH:DELICATE SOURCE, EXPIRES=2030-01-01, DOWNTO=OFFICIAL, ACCESS=Legal-Privilege",
        Form::Subject,
    );
    let long = au_epms::render_long(&v, "a@b.gov.au");
    assert_eq!(
        long,
        "VER=2024.1, NS=gov.au, SEC=SECRET, CAVEAT=RI:REL/AUS/NZL, CAVEAT=SH:DELICATE-SOURCE, ACCESS=Legal-Privilege, EXPIRES=2030-01-01, DOWNTO=OFFICIAL, ORIGIN=a@b.gov.au"
    );
    assert!(au_epms::parse(&long, Form::Header).diagnostics.is_empty());
    assert_eq!(
        Class::from_text("OFFICIAL:Sensitive"),
        Some(Class::OfficialSensitive)
    );
}

#[test]
fn epms_subject_finder() {
    let s = "RE: a [SEC=OFFICIAL] b [SEC=PROTECTED]";
    let found = au_epms::find_in_subject(s);
    assert_eq!(found.len(), 2);
    assert_eq!(&s[found[0].0.clone()], "[SEC=OFFICIAL]");
    assert_eq!(found[0].1.sec.as_deref(), Some("OFFICIAL"));
    assert_eq!(&s[found[1].0.clone()], "[SEC=PROTECTED]");
    assert!(au_epms::find_in_subject("Budget [draft] notes").is_empty());
    assert_eq!(
        au_epms::find_in_subject("Budget figures [DLM=Sensitive:Personal]").len(),
        1
    );
    assert!(au_epms::find_in_subject("unterminated [SEC=OFFICIAL").is_empty());
    assert!(au_epms::find_in_subject("é[SEC=é").is_empty());
}

// ---------------------------------------------------------------- UK GPMS

#[test]
fn gpms_subject_vectors() {
    let v = vocab("uk-gpms.toml");
    // (subject, expected canonical marking, marking text as found, rest of subject, codes)
    let table: &[(&str, &str, &str, &str, &[&str])] = &[
        (
            "RESTRICTED: Planning enforcement file 2009/123",
            "RESTRICTED",
            "RESTRICTED",
            "Planning enforcement file 2009/123",
            &[],
        ),
        (
            "PROTECT - PERSONAL: Case conference notes",
            "PROTECT - PERSONAL",
            "PROTECT - PERSONAL",
            "Case conference notes",
            &[],
        ),
        (
            "PROTECT - MANAGEMENT - Restructure proposals",
            "PROTECT - MANAGEMENT",
            "PROTECT - MANAGEMENT",
            "Restructure proposals",
            &["uk.terminator"],
        ),
        (
            "NOT PROTECTIVELY MARKED: Newsletter",
            "UNCLASSIFIED",
            "NOT PROTECTIVELY MARKED",
            "Newsletter",
            &[],
        ),
        (
            "RE: FW: PROTECT - PERSONAL: Case conference notes",
            "PROTECT - PERSONAL",
            "PROTECT - PERSONAL",
            "Case conference notes",
            &[],
        ),
        (
            "PROTECT-PERSONAL: x",
            "PROTECT - PERSONAL",
            "PROTECT-PERSONAL",
            "x",
            &["uk.separator"],
        ),
        (
            "PROTECT - PERSONAL - MEDICAL: x",
            "PROTECT - PERSONAL - MEDICAL",
            "PROTECT - PERSONAL - MEDICAL",
            "x",
            &[],
        ),
        (
            "PROTECT - PERSONAL - PERSONAL: x",
            "PROTECT - PERSONAL",
            "PROTECT - PERSONAL - PERSONAL",
            "x",
            &["uk.qualifier.duplicate"],
        ),
        (
            "PROTECT - PERSNAL: x",
            "PROTECT",
            "PROTECT - PERSNAL",
            "x",
            &["uk.qualifier.unknown"],
        ),
        (
            "UNCLASSIFIED - PERSONAL: x",
            "UNCLASSIFIED - PERSONAL",
            "UNCLASSIFIED - PERSONAL",
            "x",
            &["uk.qualifier.level"],
        ),
        (
            "RESTRICTED:x",
            "RESTRICTED",
            "RESTRICTED",
            "x",
            &["uk.terminator"],
        ),
        (
            "RESTRICTED : x",
            "RESTRICTED",
            "RESTRICTED",
            "x",
            &["uk.terminator"],
        ),
        ("TOP SECRET: x", "TOP SECRET", "TOP SECRET", "x", &[]),
        (
            "TOP-SECRET: x",
            "TOP SECRET",
            "TOP-SECRET",
            "x",
            &["uk.spelling"],
        ),
        ("RESTRICTED", "RESTRICTED", "RESTRICTED", "", &[]),
    ];
    for (subject, canonical, raw, rest, want) in table {
        let at = markgate::policy::labels::reply_chain_end(subject);
        let m = uk_gpms::parse_subject_prefix(subject, at, &v, false)
            .unwrap_or_else(|| panic!("{subject}: not a marking"));
        assert_eq!(uk_gpms::render(&m, &v), *canonical, "{subject}");
        assert_eq!(&subject[m.start..m.end], *raw, "{subject}");
        assert_eq!(&subject[m.rest..], *rest, "{subject}");
        assert_eq!(
            codes(&m.diagnostics),
            sorted(want),
            "{subject}: {:?}",
            m.diagnostics
        );
    }
}

#[test]
fn gpms_not_markings() {
    let v = vocab("uk-gpms.toml");
    for subject in [
        "Agenda for Thursday",
        "RESTRICTED access to the car park",
        "Secret Santa: sign up",
        "Protect your password: tips",
        "PROTECTED: not a GPMS level",
        "UK news: today",
        "SECRETARY: minutes",
        "",
    ] {
        let at = markgate::policy::labels::reply_chain_end(subject);
        assert!(
            uk_gpms::parse_subject_prefix(subject, at, &v, false).is_none(),
            "{subject}"
        );
    }
    // Case-insensitive reading (a policy choice) sees "Secret Santa:" as SECRET, flagged.
    let m = uk_gpms::parse_subject_prefix("Secret Santa: x", 0, &v, true);
    assert!(
        m.is_none(),
        "Santa is no qualifier and no colon follows the level"
    );
    let m = uk_gpms::parse_subject_prefix("Restricted: x", 0, &v, true).expect("marking");
    assert_eq!(codes(&m.diagnostics), vec!["uk.case"]);
}

#[test]
fn gpms_bracketed_and_header() {
    let v = vocab("uk-gpms.toml");
    let s = "[PROTECT - PERSONAL] Safeguarding referral";
    let m = uk_gpms::parse_subject_bracketed(s, 0, &v, false).expect("bracketed");
    assert_eq!(&s[m.start..m.end], "[PROTECT - PERSONAL]");
    assert_eq!(&s[m.rest..], "Safeguarding referral");
    assert!(m.diagnostics.is_empty());
    let m =
        uk_gpms::parse_subject_bracketed("[PROTECT - NOPE] x", 0, &v, false).expect("bracketed");
    assert_eq!(codes(&m.diagnostics), vec!["uk.qualifier.unknown"]);
    assert!(uk_gpms::parse_subject_bracketed("[draft] x", 0, &v, false).is_none());

    let table: &[(&str, Result<&str, &str>, &[&str])] = &[
        ("PROTECT", Ok("PROTECT"), &[]),
        ("  PROTECT - PERSONAL  ", Ok("PROTECT - PERSONAL"), &[]),
        ("Protect - Personal", Ok("PROTECT - PERSONAL"), &["uk.case"]),
        ("not protectively marked", Ok("UNCLASSIFIED"), &["uk.case"]),
        (
            "NOT-PROTECTIVELY-MARKED",
            Ok("UNCLASSIFIED"),
            &["uk.spelling"],
        ),
        (
            "RESTRICTED - BOGUS",
            Ok("RESTRICTED"),
            &["uk.qualifier.unknown"],
        ),
        ("RESTRICTED (see note)", Ok("RESTRICTED"), &["uk.trailing"]),
        ("OFFICIAL", Err("uk.level.unknown"), &[]),
        (
            "VER=2024.1, NS=gov.au, SEC=OFFICIAL",
            Err("uk.level.unknown"),
            &[],
        ),
        ("   ", Err("uk.empty"), &[]),
    ];
    for (value, want, diags) in table {
        match (uk_gpms::parse_header(value, &v), want) {
            (Ok(m), Ok(canon)) => {
                assert_eq!(uk_gpms::render(&m, &v), *canon, "{value}");
                assert_eq!(codes(&m.diagnostics), sorted(diags), "{value}");
            }
            (Err(d), Err(code)) => assert_eq!(codes(&d), vec![*code], "{value}"),
            (got, _) => panic!("{value}: unexpected {got:?}"),
        }
    }
    let long = format!("PROTECT - PERSONAL{}", " - PERSONAL".repeat(100));
    let m = uk_gpms::parse_header(&long, &v).expect("marking");
    assert!(codes(&m.diagnostics).contains(&"uk.length"));
}

// ---------------------------------------------------------------- UK GSC 2014

#[test]
fn gsc_vectors() {
    let v = vocab("uk-gsc.toml");
    let table: &[(&str, bool, &str, &[&str])] = &[
        (
            "OFFICIAL-SENSITIVE: Tender evaluation",
            false,
            "OFFICIAL-SENSITIVE",
            &[],
        ),
        (
            "OFFICIAL-SENSITIVE PERSONAL DATA: Referral 4471",
            false,
            "OFFICIAL-SENSITIVE PERSONAL DATA",
            &[],
        ),
        (
            "OFFICIAL-SENSITIVE RECIPIENTS ONLY COMMERCIAL: Bid pricing",
            false,
            "OFFICIAL-SENSITIVE RECIPIENTS ONLY COMMERCIAL",
            &[],
        ),
        (
            "UK OFFICIAL-SENSITIVE: Note for NATO liaison",
            false,
            "UK OFFICIAL-SENSITIVE",
            &[],
        ),
        (
            "OFFICIAL - SENSITIVE: x",
            false,
            "OFFICIAL-SENSITIVE",
            &["uk.spelling"],
        ),
        (
            "Official Sensitive: x",
            true,
            "OFFICIAL-SENSITIVE",
            &["uk.case", "uk.spelling"],
        ),
        (
            "OFFICIAL-SENSITIVE COMMERCIAL RECIPIENTS ONLY: x",
            false,
            "OFFICIAL-SENSITIVE RECIPIENTS ONLY COMMERCIAL",
            &["uk.order"],
        ),
        (
            "OFFICIAL PERSONAL DATA: x",
            false,
            "OFFICIAL PERSONAL DATA",
            &["uk.qualifier.level"],
        ),
        (
            "OFFICIAL-SENSITIVE UK EYES ONLY: x",
            false,
            "OFFICIAL-SENSITIVE UK EYES ONLY",
            &["uk.qualifier.level"],
        ),
        ("SECRET UK EYES ONLY: x", false, "SECRET UK EYES ONLY", &[]),
        (
            "OFFICIAL-SENSITIVE LPP: x",
            false,
            "OFFICIAL-SENSITIVE LEGAL PROFESSIONAL PRIVILEGE",
            &[],
        ),
        (
            "OFFICIAL-SENSITIVE LEGAL PROFESSIONAL PRIVILEGE: x",
            false,
            "OFFICIAL-SENSITIVE LEGAL PROFESSIONAL PRIVILEGE",
            &[],
        ),
        (
            "OFFICIAL-SENSITIVE HR / MANAGEMENT: x",
            false,
            "OFFICIAL-SENSITIVE HR / MANAGEMENT",
            &[],
        ),
        (
            "OFFICIAL-SENSITIVE - PERSONAL DATA: x",
            false,
            "OFFICIAL-SENSITIVE PERSONAL DATA",
            &["uk.separator"],
        ),
        ("RE: OFFICIAL: x", false, "OFFICIAL", &[]),
    ];
    for (subject, ci, canonical, want) in table {
        let at = markgate::policy::labels::reply_chain_end(subject);
        let m = uk_gsc::parse_subject_prefix(subject, at, &v, *ci)
            .unwrap_or_else(|| panic!("{subject}: not a marking"));
        assert_eq!(uk_gsc::render(&m, &v), *canonical, "{subject}");
        assert_eq!(
            codes(&m.diagnostics),
            sorted(want),
            "{subject}: {:?}",
            m.diagnostics
        );
    }
    assert!(uk_gsc::parse_subject_prefix("Official figures released", 0, &v, true).is_none());
    let h = uk_gsc::parse_header("official-sensitive personal data", &v).expect("header");
    assert_eq!(uk_gsc::render(&h, &v), "OFFICIAL-SENSITIVE PERSONAL DATA");
}

/// Strict on write: whatever the parsers read, what markgate renders parses back with no
/// diagnostics at all (for markings whose words are allowed together).
#[test]
fn uk_round_trip_is_clean() {
    for (file, samples) in [
        (
            "uk-gpms.toml",
            vec![
                "Protect-personal",
                "restricted - medical - staff",
                "not protectively marked",
                "TOP   SECRET",
            ],
        ),
        (
            "uk-gsc.toml",
            vec![
                "official sensitive commercial recipients only",
                "uk official-sensitive",
                "secret five eyes only",
            ],
        ),
    ] {
        let v = vocab(file);
        for s in samples {
            let (first, again) = if file == "uk-gpms.toml" {
                let m = uk_gpms::parse_header(s, &v).expect("parses");
                let r = uk_gpms::render(&m, &v);
                (r.clone(), uk_gpms::parse_header(&r, &v).expect("reparses"))
            } else {
                let m = uk_gsc::parse_header(s, &v).expect("parses");
                let r = uk_gsc::render(&m, &v);
                (r.clone(), uk_gsc::parse_header(&r, &v).expect("reparses"))
            };
            assert!(
                again.diagnostics.is_empty(),
                "{file} {s} -> {first}: {:?}",
                again.diagnostics
            );
        }
    }
}

/// Every code the parsers emit is documented in CODES (and so in markgate-policy(5)).
#[test]
fn every_code_is_listed_once() {
    let mut seen = std::collections::HashSet::new();
    for c in CODES {
        assert!(seen.insert(c.code), "duplicate {}", c.code);
    }
    let src = [
        include_str!("../src/policy/labels/uk.rs"),
        include_str!("../src/policy/labels/au_epms.rs"),
    ];
    for text in src {
        for part in text.split("Diagnostic::new(").skip(1) {
            let part = part.trim_start();
            if let Some(rest) = part.strip_prefix('"') {
                let code = &rest[..rest.find('"').unwrap_or(0)];
                assert!(
                    seen.contains(code),
                    "code {code} is emitted but not listed in CODES"
                );
            }
        }
    }
    let doc = include_str!("../docs/markgate-policy.5.md");
    for c in CODES {
        assert!(
            doc.contains(c.code),
            "{} is not documented in markgate-policy(5)",
            c.code
        );
    }
}
