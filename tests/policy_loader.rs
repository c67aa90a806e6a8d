//! Loader errors: every mistake reported (not just the first), each at the exact line and
//! column, with what was found and what was expected.

use markgate::policy::{Policy, Problem, Severity, check_str};

/// A small valid policy; tests splice mistakes into it.
const BASE: &str = r#"[policy]
name = "t"

[scheme]
grammar = "uk-gpms"

[[scheme.level]]
name = "UNCLASSIFIED"

[[scheme.level]]
name = "PROTECT"

[[scheme.level]]
name = "RESTRICTED"

[read]
headers = ["X-Protective-Marking"]
subject = ["prefix"]

[write]
from_level = "PROTECT"
header = "X-Protective-Marking"
subject = "prefix"

[domains]
own = ["example.gov.uk"]
networks = ["10.0.0.0/8"]
own_level = "RESTRICTED"
default_ceiling = "UNCLASSIFIED"

[domains.ceilings]
"*.gcsx.gov.uk" = "RESTRICTED"

[[forward.signal]]
id = "a"
header = "X-Forwarded-To"
weight = 100

[[rule]]
id = "U"
when = "unmarked"
action = "accept"

[[rule]]
id = "M"
when = "malformed"
action = "reject"
text = "fix the marking"

[[rule]]
id = "K"
when = "unknown"
action = "accept"

[[rule]]
id = "C"
when = "conflict"
action = "reject"
text = "make them agree"

[[rule]]
id = "X"
when = "multiple"
action = "accept"

[[rule]]
id = "A"
when = "above-ceiling"
action = "remove-recipients"
text = "not for them"

[[rule]]
id = "F"
when = "auto-forward-down"
direction = "outbound"
action = "reject"
text = "no auto-forwarding"

[[rule]]
id = "G"
when = "forged-label"
direction = "inbound"
action = "accept"
"#;

fn errors(text: &str) -> Vec<Problem> {
    match Policy::from_str("p.toml", text) {
        Ok(p) => panic!("expected errors, loaded with warnings {:?}", p.warnings),
        Err(e) => e.errors().cloned().collect(),
    }
}

fn replace(from: &str, to: &str) -> String {
    assert!(BASE.contains(from), "{from}");
    BASE.replacen(from, to, 1)
}

/// Line and 1-based column of the first occurrence of `needle` in `text`.
fn pos(text: &str, needle: &str) -> (usize, usize) {
    let at = text
        .find(needle)
        .unwrap_or_else(|| panic!("{needle} not in text"));
    let line = text[..at].matches('\n').count() + 1;
    let col = at - text[..at].rfind('\n').map_or(0, |i| i + 1) + 1;
    (line, col)
}

fn assert_problem(
    ps: &[Problem],
    line: usize,
    column: usize,
    key: &str,
    found: &str,
    expected: &str,
) {
    let hit = ps.iter().find(|p| {
        p.line == line
            && p.column == column
            && p.key == key
            && p.found.contains(found)
            && p.expected.contains(expected)
    });
    assert!(
        hit.is_some(),
        "no problem at {line}:{column} {key} found~{found:?} expected~{expected:?}; got:\n{}",
        ps.iter()
            .map(|p| p.to_string())
            .collect::<Vec<_>>()
            .join("\n")
    );
}

#[test]
fn base_is_valid() {
    let p = Policy::from_str("p.toml", BASE).expect("base loads");
    assert!(p.warnings.is_empty(), "{:?}", p.warnings);
}

#[test]
fn syntax_error_has_position() {
    let text = replace("name = \"t\"", "name = \"t");
    let ps = errors(&text);
    assert_eq!(ps.len(), 1);
    // toml reports an unterminated string where the line ends.
    assert_eq!((ps[0].line, ps[0].column), (2, 10));
    assert!(ps[0].found.contains("invalid TOML"), "{}", ps[0]);
    assert_eq!(
        ps[0].to_string().split(": error: ").next(),
        Some("p.toml:2:10")
    );
}

#[test]
fn every_mistake_is_reported_at_its_position() {
    let text = BASE
        .replacen("name = \"t\"", "name = \"t\"\ncolour = \"blue\"", 1)
        .replacen(
            "[[scheme.level]]\nname = \"PROTECT\"",
            "[[scheme.level]]\nname = \"PROTECT\"\naliases = [\"unclassified\"]",
            1,
        )
        .replacen("from_level = \"PROTECT\"", "from_level = \"PROTECTED\"", 1)
        .replacen(
            "\"*.gcsx.gov.uk\" = \"RESTRICTED\"",
            "\"*.gcsx.gov.uk\" = \"RESTRICTD\"\n\"bad_domain\" = \"PROTECT\"",
            1,
        )
        .replacen(
            "networks = [\"10.0.0.0/8\"]",
            "networks = [\"10.0.0.1/8\", \"nonsense\"]",
            1,
        )
        .replacen(
            "header = \"X-Forwarded-To\"",
            "header = \"X-Forwarded-To\"\nmatches = \"(unclosed\"",
            1,
        )
        .replacen(
            "id = \"K\"\nwhen = \"unknown\"",
            "id = \"K\"\nwhen = \"unknwon\"",
            1,
        )
        .replacen(
            "id = \"X\"\nwhen = \"multiple\"\naction = \"accept\"",
            "id = \"X\"\nwhen = \"multiple\"\naction = \"bounce\"",
            1,
        );
    let ps = errors(&text);
    let (l, c) = pos(&text, "colour");
    assert_problem(&ps, l, c, "policy", "unknown key `colour`", "`name`");
    let (l, c) = pos(&text, "\"unclassified\"");
    assert_problem(
        &ps,
        l,
        c,
        "scheme.level[2]",
        "already used by level UNCLASSIFIED on line 9",
        "spelled differently",
    );
    let (l, c) = pos(&text, "\"PROTECTED\"");
    assert_problem(
        &ps,
        l,
        c,
        "write.from_level",
        "unknown level `PROTECTED`",
        "`UNCLASSIFIED`",
    );
    let (l, c) = pos(&text, "\"RESTRICTD\"");
    assert_problem(
        &ps,
        l,
        c,
        "domains.ceilings.\"*.gcsx.gov.uk\"",
        "unknown level `RESTRICTD`",
        "one of",
    );
    let (l, c) = pos(&text, "\"bad_domain\"");
    assert_problem(
        &ps,
        l,
        c,
        "domains.ceilings.\"bad_domain\"",
        "bad_domain",
        "a domain",
    );
    let (l, c) = pos(&text, "\"10.0.0.1/8\"");
    assert_problem(&ps, l, c, "domains.networks", "host bits set", "CIDR");
    let (l, c) = pos(&text, "\"nonsense\"");
    assert_problem(&ps, l, c, "domains.networks", "not an IP address", "CIDR");
    let (l, c) = pos(&text, "\"(unclosed\"");
    assert_problem(
        &ps,
        l,
        c,
        "forward.signal[1].matches",
        "invalid regular expression",
        "regular expression",
    );
    let (l, c) = pos(&text, "\"unknwon\"");
    assert_problem(&ps, l, c, "rule[3].when", "`unknwon`", "`unknown`");
    let (l, c) = pos(&text, "\"bounce\"");
    assert_problem(
        &ps,
        l,
        c,
        "rule[5].action",
        "`bounce`",
        "`remove-recipients`",
    );
    assert_eq!(
        ps.len(),
        10,
        "{}",
        ps.iter()
            .map(|p| p.to_string())
            .collect::<Vec<_>>()
            .join("\n")
    );
    // In file order.
    assert!(
        ps.windows(2)
            .all(|w| (w[0].line, w[0].column) <= (w[1].line, w[1].column))
    );
}

#[test]
fn wrong_types_and_missing_keys() {
    let text = replace("own_level = \"RESTRICTED\"\n", "").replacen(
        "header = \"X-Protective-Marking\"\nsubject",
        "header = 5\nsubject",
        1,
    );
    let ps = errors(&text);
    let (l, c) = pos(&text, "[domains]\n");
    // Missing keys point at the table they belong in.
    assert_problem(&ps, l, c, "domains", "no `own_level` key", "`own_level`");
    let (l, c) = pos(&text, "5\nsubject");
    assert_problem(&ps, l, c, "write.header", "an integer", "a string");
}

#[test]
fn rules_that_can_never_fire() {
    // Shadowed by an earlier rule for the same situation.
    let text = replace(
        "[[rule]]\nid = \"G\"",
        "[[rule]]\nid = \"U2\"\nwhen = \"unmarked\"\ndirection = \"outbound\"\naction = \"reject\"\ntext = \"mark it\"\n\n[[rule]]\nid = \"G\"",
    );
    let ps = errors(&text);
    let (l, c) = pos(&text, "[[rule]]\nid = \"U2\"");
    assert_problem(
        &ps,
        l,
        c,
        "rule `U2`",
        "can never fire: rule `U` (line",
        "reachable",
    );

    // above-ceiling when every ceiling is the top level.
    let text = BASE.replacen(
        "default_ceiling = \"UNCLASSIFIED\"",
        "default_ceiling = \"RESTRICTED\"",
        1,
    );
    let ps = errors(&text);
    // Rule problems point at the rule's `[[rule]]` line.
    let (l, _) = pos(&text, "[[rule]]\nid = \"A\"");
    assert!(
        ps.iter().any(|p| p.key == "rule `A`"
            && p.line == l
            && p.found.contains("no domain has a ceiling below RESTRICTED")),
        "{ps:?}"
    );

    // auto-forward-down with signals that cannot reach the threshold.
    let text = BASE.replacen(
        "[[forward.signal]]",
        "[forward]\nthreshold = 500\n\n[[forward.signal]]",
        1,
    );
    let ps = errors(&text);
    let (l, c) = pos(&text, "500\n");
    assert_problem(
        &ps,
        l,
        c,
        "forward",
        "weights adding up to 100",
        "threshold (500)",
    );

    // remove-recipients for a message-level situation; forged-label outbound.
    let text = replace(
        "id = \"X\"\nwhen = \"multiple\"\naction = \"accept\"",
        "id = \"X\"\nwhen = \"multiple\"\naction = \"remove-recipients\"\ntext = \"t\"",
    )
    .replacen(
        "id = \"G\"\nwhen = \"forged-label\"\ndirection = \"inbound\"",
        "id = \"G\"\nwhen = \"forged-label\"\ndirection = \"outbound\"",
        1,
    );
    let ps = errors(&text);
    let (l, c) = pos(&text, "\"remove-recipients\"\ntext = \"t\"");
    assert_problem(
        &ps,
        l,
        c,
        "rule[5].action",
        "concerns the whole message",
        "above-ceiling",
    );
    let (l, _) = pos(&text, "[[rule]]\nid = \"G\"");
    assert!(
        ps.iter().any(|p| p.key == "rule `G`" && p.line == l),
        "{ps:?}"
    );
}

#[test]
fn replies_are_checked() {
    let text = replace(
        "text = \"fix the marking\"",
        "code = 450\nenhanced = \"4.7.1\"",
    );
    let ps = errors(&text);
    let (l, c) = pos(&text, "450");
    assert_problem(&ps, l, c, "rule[2].code", "450", "5xx");
    let (l, c) = pos(&text, "\"4.7.1\"");
    assert_problem(&ps, l, c, "rule[2].enhanced", "`4.7.1`", "class 5");
    assert!(
        ps.iter()
            .any(|p| p.key == "rule[2]" && p.found == "no `text`"),
        "{ps:?}"
    );
    let text = replace(
        "id = \"U\"\nwhen = \"unmarked\"\naction = \"accept\"",
        "id = \"U\"\nwhen = \"unmarked\"\naction = \"accept\"\ntext = \"hello\"",
    );
    let ps = errors(&text);
    assert!(
        ps.iter()
            .any(|p| p.key == "rule[1].text" && p.found.contains("accepting rule")),
        "{ps:?}"
    );
}

#[test]
fn duplicates_are_errors() {
    let text = replace("id = \"K\"", "id = \"U\"");
    let ps = errors(&text);
    let (l, c) = pos(&text, "\"U\"\nwhen = \"unknown\"");
    assert_problem(
        &ps,
        l,
        c,
        "rule[3].id",
        "`U` already used on line",
        "unique rule id",
    );

    let text = replace(
        "[[scheme.level]]\nname = \"RESTRICTED\"",
        "[[scheme.level]]\nname = \"RESTRICTED\"\n\n[[scheme.level]]\nname = \"Restricted\"",
    );
    let ps = errors(&text);
    let (l, c) = pos(&text, "\"Restricted\"");
    assert_problem(
        &ps,
        l,
        c,
        "scheme.level[4]",
        "already used by level RESTRICTED",
        "case is ignored",
    );

    let text = replace(
        "\"*.gcsx.gov.uk\" = \"RESTRICTED\"",
        "\"*.gcsx.gov.uk\" = \"RESTRICTED\"\n\"*.GCSX.gov.uk\" = \"PROTECT\"",
    );
    let ps = errors(&text);
    let (l, c) = pos(&text, "\"*.GCSX.gov.uk\"");
    assert_problem(
        &ps,
        l,
        c,
        "domains.ceilings.\"*.GCSX.gov.uk\"",
        "listed twice",
        "each domain once",
    );
}

#[test]
fn accept_codes_are_checked() {
    let text = replace(
        "subject = [\"prefix\"]\n",
        "subject = [\"prefix\", \"sec-suffix\"]\naccept = [\"uk.case\", \"uk.nonsense\", \"epms.origin.missing\"]\n",
    );
    let ps = errors(&text);
    let (l, c) = pos(&text, "\"sec-suffix\"");
    assert_problem(&ps, l, c, "read.subject", "`sec-suffix`", "UK scheme");
    let (l, c) = pos(&text, "\"uk.nonsense\"");
    assert_problem(
        &ps,
        l,
        c,
        "read.accept",
        "unknown diagnostic code",
        "`uk.case`",
    );
    let (l, c) = pos(&text, "\"epms.origin.missing\"");
    assert_problem(
        &ps,
        l,
        c,
        "read.accept",
        "never reports",
        "scheme's grammar",
    );
}

#[test]
fn disclaimer_checks() {
    let text = format!(
        "{BASE}\n[disclaimer]\ntext = \"Mail may be monitored.\"\nmarker = \"not in the text\"\nsigned = \"reject\"\n"
    );
    let ps = errors(&text);
    let (l, c) = pos(&text, "\"not in the text\"");
    assert_problem(
        &ps,
        l,
        c,
        "disclaimer.marker",
        "not part of `text`",
        "a piece of the disclaimer",
    );
    assert!(
        ps.iter()
            .any(|p| p.key == "disclaimer" && p.found.contains("signed_reply")),
        "{ps:?}"
    );
}

#[test]
fn missing_situations_are_warnings() {
    let text = replace(
        "[[rule]]\nid = \"X\"\nwhen = \"multiple\"\naction = \"accept\"\n",
        "",
    );
    let p = Policy::from_str("p.toml", &text).expect("warnings do not stop loading");
    assert_eq!(p.warnings.len(), 1);
    assert_eq!(p.warnings[0].severity, Severity::Warning);
    assert!(p.warnings[0].found.contains("no rule for `multiple`"));
    let report = check_str("p.toml", &text);
    assert!(report.ok());
    assert!(
        report
            .render()
            .contains("p.toml:1:1: warning: rule: found no rule for `multiple`"),
        "{}",
        report.render()
    );
}

#[test]
fn datetimes_and_odd_values_do_not_crash() {
    let text = replace("name = \"t\"", "name = 1979-05-27T07:32:00Z");
    let ps = errors(&text);
    let (l, c) = pos(&text, "1979");
    assert_problem(&ps, l, c, "policy.name", "a date-time", "a string");
    let ps = errors("");
    assert!(ps.iter().any(|p| p.found.contains("no `policy` key")));
    let ps = errors("policy = 3\nscheme = []\ndomains = \"x\"\n");
    assert!(ps.len() >= 3, "{ps:?}");
}

#[test]
fn check_report_renders_every_problem() {
    let text = replace("own_level = \"RESTRICTED\"", "own_level = \"HIGH\"").replacen(
        "default_ceiling = \"UNCLASSIFIED\"",
        "default_ceiling = \"LOW\"",
        1,
    );
    let report = check_str("policy.toml", &text);
    assert!(!report.ok());
    let out = report.render();
    let (l1, c1) = pos(&text, "\"HIGH\"");
    let (l2, c2) = pos(&text, "\"LOW\"");
    assert!(out.contains(&format!("policy.toml:{l1}:{c1}: error: domains.own_level: found unknown level `HIGH`, expected one of `UNCLASSIFIED`, `PROTECT` or `RESTRICTED`")), "{out}");
    assert!(
        out.contains(&format!(
            "policy.toml:{l2}:{c2}: error: domains.default_ceiling: found unknown level `LOW`"
        )),
        "{out}"
    );
    assert!(
        out.ends_with("policy.toml: 2 error(s), 0 warning(s)\n"),
        "{out}"
    );
}
