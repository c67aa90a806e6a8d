//! `controls = [...]` in a policy: the closed list of control ids, errors with file:line:col,
//! the rule → control map the audit records carry, and the warning for a policy named like a
//! shipped template that no longer names one of the template's controls.

use markgate::policy::{Control, Policy, Severity, check_str};

const SHIPPED: &[(&str, &str)] = &[
    ("uk-gpms", include_str!("../policies/uk-gpms.toml")),
    ("uk-gsc", include_str!("../policies/uk-gsc.toml")),
    ("au-epms", include_str!("../policies/au-epms.toml")),
];

#[test]
fn shipped_policies_map_their_rules_to_controls() {
    for (name, text) in SHIPPED {
        let p = Policy::from_str(name, text).expect("loads");
        assert!(p.warnings.is_empty(), "{name}: {:?}", p.warnings);
        let map = p.control_map();
        assert!(
            map.get("AUTOFWD-DOWN")
                .is_some_and(|c| c.iter().any(|c| c == "CoCo-4.1-autoforward")),
            "{name}: {map:?}"
        );
        assert!(
            map.values().flatten().any(|c| c == "CoCo-11"),
            "{name}: incident-raising rules name CoCo-11"
        );
    }
    let uk = Policy::from_str("uk", SHIPPED[0].1).expect("uk");
    assert_eq!(uk.control_map()["write"], ["CoCo-4.1-labels"]);
    assert_eq!(uk.control_map()["COCO-MONITORING"], ["CoCo-4.1-disclaimer"]);
    // The thread rules are tables of their own, not [[rule]]s, and map all the same.
    assert_eq!(
        uk.control_map()["THREAD-DOWNGRADE"],
        ["ISM-1089", "CoCo-4.1-awareness"]
    );
    assert_eq!(
        uk.control_map()["THREAD-REDIRECT"],
        ["CoCo-4.1-autoforward"]
    );
    let au = Policy::from_str("au", SHIPPED[2].1).expect("au");
    assert!(au.controls_named().contains(&Control::Ism0271));
    assert!(au.controls_named().contains(&Control::Ism0565));
    assert!(au.controls_named().contains(&Control::Ism1023));
}

/// The shipped uk-gpms with `old` replaced by `new` (exactly once).
fn gpms_with(old: &str, new: &str) -> String {
    let text = SHIPPED[0].1;
    assert_eq!(text.matches(old).count(), 1, "{old}");
    text.replace(old, new)
}

#[test]
fn an_unknown_control_is_an_error_at_its_place() {
    let text = gpms_with(
        "controls = [\"CoCo-4.1-labels\"]",
        "controls = [\"CoCo-4.1-labels\", \"coco-11\"]",
    );
    let report = check_str("p.toml", &text);
    assert!(!report.ok());
    let line = text
        .lines()
        .position(|l| l.contains("\"coco-11\""))
        .expect("line")
        + 1;
    let col = text
        .lines()
        .nth(line - 1)
        .expect("l")
        .find("\"coco-11\"")
        .expect("col")
        + 1;
    let p = &report.problems[0];
    assert_eq!(p.severity, Severity::Error);
    assert_eq!((p.line, p.column), (line, col), "{p}");
    assert_eq!(p.key, "write.controls");
    assert!(
        p.found
            .contains("unknown control `coco-11` (did you mean `CoCo-11`?)"),
        "{p}"
    );
    assert!(p.expected.contains("`ISM-1089`"), "{p}");
}

#[test]
fn a_control_must_be_a_list_of_strings_on_a_known_table() {
    let text = gpms_with(
        "controls = [\"CoCo-4.1-disclaimer\"]",
        "controls = \"CoCo-4.1-disclaimer\"",
    );
    let err = Policy::from_str("p.toml", &text).expect_err("not a list");
    let s = err.to_string();
    assert!(s.contains("disclaimer.controls"), "{s}");
    assert!(s.contains("an array of strings"), "{s}");
}

#[test]
fn a_policy_named_like_a_template_warns_for_each_control_no_rule_names() {
    // Drop AUTOFWD-DOWN's and THREAD-REDIRECT's controls: the template names
    // CoCo-4.1-autoforward only there.
    let text = gpms_with(
        "controls = [\"CoCo-4.1-autoforward\", \"CoCo-4.1-awareness\", \"CoCo-11\"]\n",
        "",
    )
    .replace("controls = [\"CoCo-4.1-autoforward\"]\n", "");
    let report = check_str("p.toml", &text);
    assert!(report.ok(), "a warning, not an error: {}", report.render());
    let warnings: Vec<_> = report
        .problems
        .iter()
        .filter(|p| p.severity == Severity::Warning)
        .collect();
    assert_eq!(warnings.len(), 1, "{}", report.render());
    let w = warnings[0];
    assert_eq!(w.key, "policy.name");
    assert!(
        w.found
            .contains("the shipped template `uk-gpms` names control `CoCo-4.1-autoforward`"),
        "{w}"
    );
    let name_line = text
        .lines()
        .position(|l| l.starts_with("name = \"uk-gpms\""))
        .expect("name")
        + 1;
    assert_eq!(w.line, name_line);

    // Under another name, the same policy is the owner's own: no warning.
    let renamed = text.replace("name = \"uk-gpms\"", "name = \"council-own\"");
    let p = Policy::from_str("p.toml", &renamed).expect("loads");
    assert!(p.warnings.is_empty(), "{:?}", p.warnings);
}

#[test]
fn version_is_read_and_a_repeated_control_warns() {
    let text = gpms_with(
        "mode = \"enforce\"",
        "mode = \"enforce\"\nversion = \"2026.3\"",
    )
    .replace(
        "controls = [\"CoCo-4.1-labels\"]",
        "controls = [\"CoCo-4.1-labels\", \"CoCo-4.1-labels\"]",
    );
    let p = Policy::from_str("p.toml", &text).expect("loads");
    assert_eq!(p.version.as_deref(), Some("2026.3"));
    assert_eq!(p.warnings.len(), 1, "{:?}", p.warnings);
    assert!(p.warnings[0].found.contains("twice"));
    assert_eq!(p.control_map()["write"], ["CoCo-4.1-labels"]);
}
