//! `include = [...]`: shared fragments. A split policy loads exactly like the same policy in
//! one file; every problem in a fragment is reported at the fragment's own line and column and
//! names where it was included from; cycles, double includes and keys or names defined in two
//! files are reported with both places; `markgate check` and a reload re-read the fragments
//! (a bad fragment keeps the old policy).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use markgate::config::Config;
use markgate::notify::Notifier;
use markgate::policy::{Policy, Problem, check_file};
use markgate::reload::{NoObserver, PolicyFiles, ReloadOutcome, Reloader};

/// A policy split: levels and the partner ceilings in shared fragments.
const MAIN: &str = r#"include = ["shared/levels.toml", "shared/partners.toml"]

[policy]
name = "t"

[scheme]
grammar = "uk-gpms"

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

[[rule]]
id = "U"
when = "unmarked"
action = "accept"

[[rule]]
id = "A"
when = "above-ceiling"
action = "reject"
text = "not for them"
"#;

const LEVELS: &str = r#"# The UK GPMS levels every policy of ours uses.
[[scheme.level]]
name = "UNCLASSIFIED"
aliases = ["NOT PROTECTIVELY MARKED"]

[[scheme.level]]
name = "PROTECT"

[[scheme.level]]
name = "RESTRICTED"
"#;

const PARTNERS: &str = r#"# Partner networks and what they may receive.
[domains.ceilings]
"*.gcsx.gov.uk" = "RESTRICTED"
"nhs.net" = "RESTRICTED"
"#;

/// The same policy in one file: [`MAIN`] without its `include` line, the fragments' text after
/// it (TOML lets `[[scheme.level]]` and `[domains.ceilings]` come after the rules).
fn single() -> String {
    let (_, main) = MAIN.split_once('\n').expect("include line");
    format!("{}\n{LEVELS}\n{PARTNERS}", main.trim_start())
}

/// A directory with `policy.toml` (= `main`) and `shared/levels.toml`, `shared/partners.toml`.
struct Tree {
    dir: tempfile::TempDir,
}

impl Tree {
    fn new(main: &str, levels: &str, partners: &str) -> Tree {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(dir.path().join("shared")).expect("mkdir");
        let t = Tree { dir };
        t.write("policy.toml", main);
        t.write("shared/levels.toml", levels);
        t.write("shared/partners.toml", partners);
        t
    }
    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
    /// The name a file has in messages.
    fn shown(&self, name: &str) -> String {
        self.path(name).display().to_string()
    }
    fn write(&self, name: &str, text: &str) {
        std::fs::write(self.path(name), text).expect("write");
    }
    fn load(&self) -> Result<Policy, Vec<Problem>> {
        Policy::from_file(&self.path("policy.toml")).map_err(|e| e.errors().cloned().collect())
    }
    fn errors(&self) -> Vec<Problem> {
        match self.load() {
            Ok(p) => panic!("expected errors, loaded (warnings {:?})", p.warnings),
            Err(e) => e,
        }
    }
}

/// `file:line:col` of the include entry naming `fragment` in `text` (of file `file`).
fn included_at(t: &Tree, file: &str, text: &str, fragment: &str) -> String {
    let (l, c) = pos(text, &format!("\"{fragment}\""));
    format!("{}:{l}:{c}", t.shown(file))
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

/// The one problem at `file` `line:col`, with `key`, whose found/expected contain the texts.
fn find<'a>(
    ps: &'a [Problem],
    file: &str,
    (line, column): (usize, usize),
    key: &str,
    found: &str,
    expected: &str,
) -> &'a Problem {
    ps.iter()
        .find(|p| {
            p.file == file
                && p.line == line
                && p.column == column
                && p.key == key
                && p.found.contains(found)
                && p.expected.contains(expected)
        })
        .unwrap_or_else(|| {
            panic!(
                "no problem at {file}:{line}:{column} {key} found~{found:?} expected~{expected:?}; got:\n{}",
                ps.iter()
                    .map(|p| p.to_string())
                    .collect::<Vec<_>>()
                    .join("\n")
            )
        })
}

fn without_lines(rules: &[markgate::policy::Rule]) -> Vec<markgate::policy::Rule> {
    rules
        .iter()
        .cloned()
        .map(|mut r| {
            r.line = 0;
            r
        })
        .collect()
}

#[test]
fn a_split_policy_loads_exactly_like_the_single_file() {
    let t = Tree::new(MAIN, LEVELS, PARTNERS);
    let split = t.load().expect("the split policy loads");
    let single_text = single();
    let single = Policy::from_str("single.toml", &single_text).expect("the single file loads");
    // The same warnings (situations without a rule), at the top of the policy file.
    let said = |p: &Policy| -> Vec<(usize, usize, String)> {
        p.warnings
            .iter()
            .map(|w| (w.line, w.column, w.found.clone()))
            .collect()
    };
    assert_eq!(said(&split), said(&single));
    assert!(
        split
            .warnings
            .iter()
            .all(|w| w.file == t.shown("policy.toml"))
    );
    assert_eq!(
        split.fragments,
        vec![
            t.shown("shared/levels.toml"),
            t.shown("shared/partners.toml")
        ]
    );
    assert!(single.fragments.is_empty());
    for (what, a, b) in [
        (
            "scheme",
            format!("{:?}", split.scheme),
            format!("{:?}", single.scheme),
        ),
        (
            "read",
            format!("{:?}", split.read),
            format!("{:?}", single.read),
        ),
        (
            "write",
            format!("{:?}", split.write),
            format!("{:?}", single.write),
        ),
        (
            "domains",
            format!("{:?}", split.domains),
            format!("{:?}", single.domains),
        ),
        // Rules keep the line they are on in their own file; everything else is equal.
        (
            "rules",
            format!("{:?}", without_lines(&split.rules)),
            format!("{:?}", without_lines(&single.rules)),
        ),
    ] {
        assert_eq!(a, b, "{what} differs");
    }
    // The digest covers every file: the policy text alone is not it, and a fragment edit
    // changes it.
    let main_only = markgate::audit::policy_digest(MAIN.as_bytes());
    assert_ne!(split.digest, main_only);
    t.write(
        "shared/partners.toml",
        &PARTNERS.replace("nhs.net", "nhs.uk"),
    );
    let edited = t.load().expect("still loads");
    assert_ne!(edited.digest, split.digest);
    // A policy without includes keeps the digest of its bytes (audit records cite it).
    assert_eq!(
        single.digest,
        markgate::audit::policy_digest(single_text.as_bytes())
    );
}

#[test]
fn an_error_in_a_fragment_names_the_fragment_its_position_and_the_including_policy() {
    let partners = PARTNERS.replace(
        "\"nhs.net\" = \"RESTRICTED\"",
        "\"nhs.net\" = \"RESTRICTD\"",
    );
    let t = Tree::new(MAIN, LEVELS, &partners);
    let ps = t.errors();
    assert_eq!(ps.len(), 1, "{ps:?}");
    let frag = t.shown("shared/partners.toml");
    let p = find(
        &ps,
        &frag,
        pos(&partners, "\"RESTRICTD\""),
        "domains.ceilings.\"nhs.net\"",
        "unknown level `RESTRICTD`",
        "`RESTRICTED`",
    );
    let at = included_at(&t, "policy.toml", MAIN, "shared/partners.toml");
    assert_eq!(at, format!("{}:1:34", t.shown("policy.toml")));
    assert_eq!(p.included_from, vec![at.clone()]);
    assert_eq!(
        p.to_string(),
        format!(
            "{frag}:4:13: error: domains.ceilings.\"nhs.net\": found unknown level `RESTRICTD`, \
             expected {} (in a fragment included from {at})",
            p.expected
        )
    );
}

#[test]
fn a_syntax_error_in_a_fragment_is_at_its_place_in_the_fragment() {
    let levels = LEVELS.replace("name = \"PROTECT\"", "name = \"PROTECT");
    let t = Tree::new(MAIN, &levels, PARTNERS);
    let ps = t.errors();
    let frag = t.shown("shared/levels.toml");
    let p = find(&ps, &frag, (7, 16), "", "invalid TOML", "valid TOML syntax");
    assert_eq!(
        p.included_from,
        vec![included_at(&t, "policy.toml", MAIN, "shared/levels.toml")]
    );
}

#[test]
fn fragments_of_fragments_say_the_whole_chain() {
    // policy.toml -> shared/levels.toml -> shared/more/extra.toml (relative to levels.toml).
    let levels = format!("include = [\"more/extra.toml\"]\n{LEVELS}");
    let t = Tree::new(MAIN, &levels, PARTNERS);
    std::fs::create_dir(t.path("shared/more")).expect("mkdir");
    let extra = "[[scheme.level]]\nname = \"CONFIDENTIAL\"\naliases = [\"restricted\"]\n";
    t.write("shared/more/extra.toml", extra);
    let ps = t.errors();
    let frag = t.shown("shared/more/extra.toml");
    // The fragment's levels come first, so RESTRICTED (from levels.toml) is the duplicate of
    // the alias, reported in levels.toml and naming extra.toml's place.
    let p = find(
        &ps,
        &t.shown("shared/levels.toml"),
        pos(&levels, "\"RESTRICTED\""),
        "scheme.level[4]",
        &format!(
            "`RESTRICTED` for level RESTRICTED, already used by level CONFIDENTIAL on {frag}:3:12"
        ),
        "spelled differently",
    );
    assert_eq!(
        p.included_from,
        vec![included_at(&t, "policy.toml", MAIN, "shared/levels.toml")]
    );
    // And an error inside the innermost fragment carries both inclusions, innermost first.
    t.write("shared/more/extra.toml", "[[scheme.level]]\nname = 7\n");
    let ps = t.errors();
    let p = find(
        &ps,
        &frag,
        (2, 8),
        "scheme.level[1].name",
        "an integer",
        "a string",
    );
    assert_eq!(
        p.included_from,
        vec![
            included_at(&t, "shared/levels.toml", &levels, "more/extra.toml"),
            included_at(&t, "policy.toml", MAIN, "shared/levels.toml"),
        ]
    );
    assert!(
        p.to_string().ends_with(&format!(
            "(in a fragment included from {}, itself included from {})",
            included_at(&t, "shared/levels.toml", &levels, "more/extra.toml"),
            included_at(&t, "policy.toml", MAIN, "shared/levels.toml")
        )),
        "{p}"
    );
}

#[test]
fn an_include_cycle_is_reported_where_it_closes() {
    // levels.toml includes partners.toml, which includes levels.toml again.
    let levels = format!("include = [\"partners.toml\"]\n{LEVELS}");
    let partners = format!("include = [\"./levels.toml\"]\n{PARTNERS}");
    let main = MAIN.replace(
        "\"shared/levels.toml\", \"shared/partners.toml\"",
        "\"shared/levels.toml\"",
    );
    let t = Tree::new(&main, &levels, &partners);
    let ps = t.errors();
    assert_eq!(ps.len(), 1, "{ps:?}");
    let p = find(
        &ps,
        &t.shown("shared/partners.toml"),
        (1, 12),
        "include",
        &format!(
            "an include cycle: {} includes {} includes {}",
            t.shown("shared/levels.toml"),
            t.shown("shared/partners.toml"),
            t.shown("shared/levels.toml")
        ),
        "never include themselves",
    );
    assert_eq!(p.included_from.len(), 2, "{p}");

    // A fragment that includes the policy itself.
    let t = Tree::new(
        MAIN,
        &format!("include = [\"../policy.toml\"]\n{LEVELS}"),
        PARTNERS,
    );
    let ps = t.errors();
    find(
        &ps,
        &t.shown("shared/levels.toml"),
        (1, 12),
        "include",
        &format!(
            "an include cycle: {} includes {} includes {}",
            t.shown("policy.toml"),
            t.shown("shared/levels.toml"),
            t.shown("policy.toml")
        ),
        "never include themselves",
    );
}

#[test]
fn a_fragment_included_twice_names_both_include_entries() {
    let main = MAIN.replace(
        "\"shared/partners.toml\"]",
        "\"shared/partners.toml\", \"shared/../shared/levels.toml\"]",
    );
    let t = Tree::new(&main, LEVELS, PARTNERS);
    let ps = t.errors();
    assert_eq!(ps.len(), 1, "{ps:?}");
    find(
        &ps,
        &t.shown("policy.toml"),
        pos(&main, "\"shared/../shared/levels.toml\""),
        "include",
        &format!(
            "`shared/../shared/levels.toml` ({}) included a second time (first at {}:1:12)",
            t.shown("shared/levels.toml"),
            t.shown("policy.toml")
        ),
        "each fragment included once",
    );
}

#[test]
fn a_key_set_in_two_files_names_both_places() {
    // The fragment sets own_level too; the policy's own (merged after it) is the second.
    let partners = format!("{PARTNERS}\n[domains.extra]\n");
    let partners = partners.replace("[domains.extra]\n", "");
    let partners = partners.replace(
        "# Partner networks and what they may receive.\n",
        "# Partner networks and what they may receive.\n[domains]\nown_level = \"PROTECT\"\n\n",
    );
    let t = Tree::new(MAIN, LEVELS, &partners);
    let ps = t.errors();
    assert_eq!(ps.len(), 1, "{ps:?}");
    let (fl, fc) = pos(&partners, "own_level");
    find(
        &ps,
        &t.shown("policy.toml"),
        pos(MAIN, "own_level"),
        "domains",
        &format!(
            "`own_level` set a second time (first at {}:{fl}:{fc})",
            t.shown("shared/partners.toml")
        ),
        "each key set once across the policy and its fragments",
    );
    // The same ceiling domain in the policy and in a fragment.
    let main = MAIN.replace(
        "default_ceiling = \"UNCLASSIFIED\"\n",
        "default_ceiling = \"UNCLASSIFIED\"\n\n[domains.ceilings]\n\"NHS.net\" = \"PROTECT\"\n",
    );
    let t = Tree::new(&main, LEVELS, PARTNERS);
    let ps = t.errors();
    let (fl, fc) = pos(PARTNERS, "\"nhs.net\"");
    find(
        &ps,
        &t.shown("policy.toml"),
        pos(&main, "\"NHS.net\""),
        "domains.ceilings.\"NHS.net\"",
        &format!(
            "`NHS.net` listed twice (names are compared without case, first on {}:{fl}:{fc})",
            t.shown("shared/partners.toml")
        ),
        "each domain once",
    );
}

#[test]
fn a_rule_id_or_level_defined_in_two_files_names_both_places() {
    let levels = format!(
        "{LEVELS}\n[[rule]]\nid = \"A\"\nwhen = \"conflict\"\naction = \"reject\"\ntext = \"agree\"\n"
    );
    let main = MAIN.replace(
        "[[rule]]\nid = \"U\"",
        "[[scheme.level]]\nname = \"Protect\"\n\n[[rule]]\nid = \"U\"",
    );
    let t = Tree::new(&main, &levels, PARTNERS);
    let ps = t.errors();
    let frag = t.shown("shared/levels.toml");
    let (ll, lc) = pos(&levels, "\"PROTECT\"");
    find(
        &ps,
        &t.shown("policy.toml"),
        pos(&main, "\"Protect\""),
        "scheme.level[4]",
        &format!("`Protect` for level Protect, already used by level PROTECT on {frag}:{ll}:{lc}"),
        "spelled differently",
    );
    // Rules: the fragment's come first, so the policy's `A` is the second one.
    let (rl, rc) = pos(&levels, "\"A\"");
    find(
        &ps,
        &t.shown("policy.toml"),
        pos(&main, "\"A\""),
        "rule[3].id",
        &format!("`A` already used on {frag}:{rl}:{rc}"),
        "a unique rule id",
    );
}

#[test]
fn bad_include_values_and_unreadable_fragments() {
    let t = Tree::new(
        &MAIN.replace(
            "include = [\"shared/levels.toml\", \"shared/partners.toml\"]",
            "include = \"shared/levels.toml\"",
        ),
        LEVELS,
        PARTNERS,
    );
    let ps = t.errors();
    find(
        &ps,
        &t.shown("policy.toml"),
        (1, 11),
        "include",
        "a string",
        "an array of fragment file names",
    );

    let main = MAIN.replace(
        "\"shared/partners.toml\"",
        "\"shared/missing.toml\", 3, \"\"",
    );
    let t = Tree::new(&main, LEVELS, PARTNERS);
    let ps = t.errors();
    let p = find(
        &ps,
        &t.shown("policy.toml"),
        pos(&main, "\"shared/missing.toml\""),
        "include",
        &format!(
            "`shared/missing.toml`: {} cannot be read (No such file or directory",
            t.shown("shared/missing.toml")
        ),
        "a readable policy fragment",
    );
    assert!(p.included_from.is_empty());
    find(
        &ps,
        &t.shown("policy.toml"),
        pos(&main, "3, \"\""),
        "include",
        "an integer",
        "a fragment file name",
    );
    find(
        &ps,
        &t.shown("policy.toml"),
        pos(&main, "\"\"]"),
        "include",
        "an empty file name",
        "a fragment file name",
    );

    // Not UTF-8.
    let t = Tree::new(MAIN, LEVELS, PARTNERS);
    std::fs::write(t.path("shared/partners.toml"), b"# caf\xe9\n").expect("write");
    let ps = t.errors();
    find(
        &ps,
        &t.shown("policy.toml"),
        pos(MAIN, "\"shared/partners.toml\""),
        "include",
        "not UTF-8 text: the byte at offset 5 is not",
        "a readable policy fragment",
    );

    // Policy text given without a file cannot include.
    let e = Policy::from_str("text.toml", MAIN).expect_err("no directory to resolve against");
    let p = e.errors().next().expect("an error");
    assert_eq!(
        (p.file.as_str(), p.line, p.column, p.key.as_str()),
        ("text.toml", 1, 12, "include")
    );
    assert!(p.found.contains("given as text, not as a file"), "{p}");
}

#[test]
fn markgate_check_reads_the_fragments() {
    let t = Tree::new(MAIN, LEVELS, PARTNERS);
    let ok = check_file(&t.path("policy.toml"));
    assert!(ok.ok(), "{}", ok.render());
    assert!(
        ok.render().ends_with(&format!(
            "policy OK (6 warning(s)); fragments read: {}, {}\n",
            t.shown("shared/levels.toml"),
            t.shown("shared/partners.toml")
        )),
        "{}",
        ok.render()
    );
    t.write(
        "shared/partners.toml",
        &PARTNERS.replace("= \"RESTRICTED\"\n\"nhs", "= \"SECRET\"\n\"nhs"),
    );
    let bad = check_file(&t.path("policy.toml"));
    assert!(!bad.ok());
    let text = bad.render();
    assert!(
        text.contains(&format!(
            "{}:3:19: error: domains.ceilings.\"*.gcsx.gov.uk\": found unknown level `SECRET`",
            t.shown("shared/partners.toml")
        )),
        "{text}"
    );
    // The binary says the same and exits 1.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_markgate"))
        .args(["check", "--policy"])
        .arg(t.path("policy.toml"))
        .output()
        .expect("run markgate check");
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(&format!("{}:3:19: error:", t.shown("shared/partners.toml")))
            && stdout.contains(&format!(
                "(in a fragment included from {})",
                included_at(&t, "policy.toml", MAIN, "shared/partners.toml")
            )),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn config_for(t: &Tree) -> PathBuf {
    let path = t.path("markgate.toml");
    std::fs::write(
        &path,
        format!(
            "policy = {:?}\n",
            t.path("policy.toml").display().to_string()
        ),
    )
    .expect("write config");
    path
}

fn reloader(config: &Path) -> Reloader<PolicyFiles> {
    Reloader::start(
        Some(config.to_path_buf()),
        Box::new(|_: &mut Config| {}),
        PolicyFiles,
        Box::new(NoObserver),
        None,
        Arc::new(Notifier::disabled()),
    )
    .expect("starts")
}

#[test]
fn a_reload_rereads_the_fragments_and_a_bad_fragment_keeps_the_old_policy() {
    let t = Tree::new(MAIN, LEVELS, PARTNERS);
    let r = reloader(&config_for(&t));
    let first = r.current().snapshot();
    assert_eq!(first.policy_digest, first.policy.digest);
    assert!(first.policy.domains.ceilings.get("nhs.uk").is_none());

    // A broken fragment: the reload fails, naming the fragment; the old policy stays.
    t.write(
        "shared/partners.toml",
        &format!("{PARTNERS}\"nhs.uk\" = \"RESTRICTD\"\n"),
    );
    match r.reload() {
        ReloadOutcome::Failed { error } => assert!(
            error.contains(&format!("{}:5:12: error:", t.shown("shared/partners.toml"))),
            "{error}"
        ),
        other => panic!("{other:?}"),
    }
    let kept = r.current().snapshot();
    assert_eq!(kept.generation, first.generation);
    assert_eq!(kept.policy_digest, first.policy_digest);

    // Fixed: the edit in the fragment is in force.
    t.write(
        "shared/partners.toml",
        &format!("{PARTNERS}\"nhs.uk\" = \"PROTECT\"\n"),
    );
    match r.reload() {
        ReloadOutcome::Applied { digest, .. } => assert_ne!(digest, first.policy_digest),
        other => panic!("{other:?}"),
    }
    let now = r.current().snapshot();
    assert_eq!(now.generation, first.generation + 1);
    assert!(now.policy.domains.ceilings.get("nhs.uk").is_some());
}

/// The daemon itself: SIGHUP re-reads a fragment; a broken one is refused (audited, naming the
/// fragment's line and column) and the policy in force stays; a fixed one is loaded.
#[test]
fn sighup_rereads_fragments_in_the_running_daemon() {
    use std::process::{Command, Stdio};
    use std::time::{Duration, Instant};

    let t = Tree::new(MAIN, LEVELS, PARTNERS);
    let audit = t.path("audit.jsonl");
    let sock = t.path("m.sock");
    std::fs::write(
        t.path("markgate.toml"),
        format!(
            "listen = \"unix:{}\"\npolicy = {:?}\n\n[audit]\npath = {:?}\n",
            sock.display(),
            t.path("policy.toml").display().to_string(),
            audit.display().to_string()
        ),
    )
    .expect("write config");
    let mut child = Command::new(env!("CARGO_BIN_EXE_markgate"))
        .args(["run", "--config"])
        .arg(t.path("markgate.toml"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start markgate");
    let pid = child.id().to_string();
    let records = |kind: &str| -> Vec<serde_json::Value> {
        std::fs::read_to_string(&audit)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|r| r["event"] == kind)
            .collect()
    };
    let wait_for = |kind: &str, n: usize| -> Vec<serde_json::Value> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let found = records(kind);
            if found.len() >= n {
                return found;
            }
            assert!(
                Instant::now() < deadline,
                "no {n} `{kind}` record(s) in time"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    let hup = || {
        let ok = Command::new("kill")
            .args(["-HUP", &pid])
            .status()
            .expect("kill");
        assert!(ok.success());
    };
    let started = wait_for("policy_loaded", 1);
    let first_digest = started[0]["data"]["digest"]
        .as_str()
        .expect("digest")
        .to_owned();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !sock.exists() {
        assert!(Instant::now() < deadline, "socket not created");
        std::thread::sleep(Duration::from_millis(20));
    }

    t.write(
        "shared/partners.toml",
        &format!("{PARTNERS}\"nhs.uk\" = \"RESTRICTD\"\n"),
    );
    hup();
    let failed = wait_for("reload_failed", 1);
    let error = failed[0]["data"]["error"].as_str().expect("error");
    assert!(
        error.contains(&format!(
            "{}:5:12: error: domains.ceilings.\"nhs.uk\": found unknown level `RESTRICTD`",
            t.shown("shared/partners.toml")
        )),
        "{error}"
    );
    assert_eq!(failed[0]["data"]["kept_digest"], first_digest.as_str());

    t.write(
        "shared/partners.toml",
        &format!("{PARTNERS}\"nhs.uk\" = \"PROTECT\"\n"),
    );
    hup();
    let loaded = wait_for("policy_loaded", 2);
    let new_digest = loaded[1]["data"]["digest"].as_str().expect("digest");
    assert_eq!(loaded[1]["data"]["trigger"], "reload");
    assert_ne!(new_digest, first_digest);
    let expected = Policy::from_file(&t.path("policy.toml"))
        .expect("loads")
        .digest;
    assert_eq!(new_digest, expected, "the digest covers the fragments");

    let ok = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill");
    assert!(ok.success());
    let status = child.wait().expect("wait");
    assert_eq!(status.code(), Some(0));
    assert!(markgate::audit::verify_files(std::slice::from_ref(&audit)).ok());
}
