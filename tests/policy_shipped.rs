//! The shipped policies load cleanly (no errors, no warnings) and the built-in default is
//! uk-gpms.

use markgate::policy::{Mode, Policy, check_str};

fn load(file: &str) -> Policy {
    let path = format!("{}/policies/{file}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).expect("shipped policy readable");
    let report = check_str(&path, &text);
    assert!(report.problems.is_empty(), "{}", report.render());
    Policy::from_str(&path, &text).expect("loads")
}

#[test]
fn uk_gpms_loads_cleanly() {
    let p = load("uk-gpms.toml");
    assert_eq!(p.name, "uk-gpms");
    assert_eq!(p.mode, Mode::Enforce);
    assert_eq!(p.scheme.vocab.levels.len(), 6);
    assert_eq!(p.scheme.level_name(p.write.from_level), "PROTECT");
    assert_eq!(p.domains.ceiling("partner.gcsx.gov.uk").0, 2);
    assert_eq!(p.domains.ceiling("nhs.net").0, 2);
    assert_eq!(p.domains.ceiling("example.com").0, 0);
}

#[test]
fn uk_gsc_loads_cleanly() {
    let p = load("uk-gsc.toml");
    assert_eq!(p.scheme.level_name(1), "OFFICIAL-SENSITIVE");
}

#[test]
fn au_epms_loads_cleanly() {
    let p = load("au-epms.toml");
    assert_eq!(p.scheme.level_name(2), "OFFICIAL:Sensitive");
}

#[test]
fn builtin_default_is_uk_gpms() {
    let p = Policy::builtin().expect("built-in policy loads");
    assert_eq!(p.name, "uk-gpms");
    assert!(p.warnings.is_empty());
    assert_eq!(p.digest.len(), 64);
}
