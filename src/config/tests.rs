use std::path::PathBuf;
use std::time::Duration;

use super::*;

const SAMPLE: &str = include_str!("../../config/markgate.toml");

fn err(text: &str) -> Located {
    match Config::parse(text, "test.toml") {
        Ok(c) => panic!("expected an error for {text:?}, got {c:?}"),
        Err(e) => e.location().cloned().expect("a located error"),
    }
}

/// Assert an error's position and that its message contains every fragment.
fn assert_err(text: &str, line: usize, column: usize, fragments: &[&str]) {
    let e = err(text);
    assert_eq!(
        (e.line, e.column),
        (line, column),
        "position of {:?} in {text:?}",
        e.message
    );
    assert_eq!(e.file, "test.toml");
    for f in fragments {
        assert!(e.message.contains(f), "{:?} lacks {f:?}", e.message);
    }
}

#[test]
fn empty_file_is_the_built_in_default() {
    assert_eq!(Config::parse("", "x").unwrap(), Config::default());
    assert_eq!(Config::default().listen.to_string(), DEFAULT_LISTEN);
    assert_eq!(
        crate::milter::ListenSpec::parse(DEFAULT_LISTEN).unwrap(),
        Config::default().listen
    );
}

#[test]
fn sample_file_as_shipped_is_the_default() {
    assert_eq!(
        Config::parse(SAMPLE, "markgate.toml").unwrap(),
        Config::default()
    );
}

/// Uncommenting every `#key = value` line of the sample must give the defaults, except for the
/// optional keys whose sample value is an example (their default is "unset").
#[test]
fn sample_file_shows_every_key_with_its_default() {
    let uncommented: String = SAMPLE
        .lines()
        .map(|l| match l.strip_prefix('#') {
            Some(rest) if rest.starts_with(|c: char| c.is_ascii_lowercase()) => rest,
            _ => l,
        })
        .collect::<Vec<_>>()
        .join("\n");
    let got = Config::parse(&uncommented, "uncommented").unwrap();
    let mut want = Config {
        policy: Some(PathBuf::from("/etc/markgate/policies/uk-gpms.toml")),
        ..Config::default()
    };
    want.socket.owner = Some("markgate".into());
    want.socket.group = Some("postfix".into());
    want.limits.spill_directory = Some(PathBuf::from("/var/tmp"));
    want.metrics.listen = Some("127.0.0.1:9195".parse().unwrap());
    want.audit.host = Some("gw1.example".into());
    want.alerts.to = vec!["security-team@example.gov.uk".into()];
    want.ledger.path_configured = true;
    assert_eq!(got, want);
    // And every key the loader knows appears in the sample.
    for key in [
        "listen",
        "policy",
        "mode",
        "owner",
        "group",
        "max_frame_size",
        "max_connections",
        "spill_threshold",
        "spill_directory",
        "max_in_memory_message",
        "read",
        "eom",
        "progress",
        "shutdown_grace",
        "level",
        "format",
    ] {
        assert!(
            SAMPLE.contains(&format!("\n#{key} = ")),
            "{key} missing from config/markgate.toml"
        );
    }
}

#[test]
fn every_key_can_be_set() {
    let c = Config::parse(
        r#"
listen = "unix:/run/markgate/markgate.sock"
policy = "/etc/markgate/policies/local.toml"
[socket]
mode = "0600"
owner = "markgate"
group = "postfix"
[limits]
max_frame_size = 262144
max_connections = 50
spill_threshold = "64KiB"
spill_directory = "/var/lib/markgate/spool"
max_in_memory_message = "100MiB"
[timeouts]
read = "10m"
eom = "2m"
progress = "500ms"
shutdown_grace = "5s"
[logging]
level = "debug"
format = "json"
"#,
        "t",
    )
    .unwrap();
    assert_eq!(
        c.listen,
        crate::milter::ListenSpec::Unix(PathBuf::from("/run/markgate/markgate.sock"))
    );
    assert_eq!(
        c.policy,
        Some(PathBuf::from("/etc/markgate/policies/local.toml"))
    );
    assert_eq!(c.socket.mode, 0o600);
    assert_eq!(c.socket.owner.as_deref(), Some("markgate"));
    assert_eq!(c.socket.group.as_deref(), Some("postfix"));
    assert_eq!(c.limits.max_frame_size, 262144);
    assert_eq!(c.limits.max_connections, 50);
    assert_eq!(c.limits.spill_threshold, 65536);
    assert_eq!(c.limits.max_in_memory_message, 100 << 20);
    assert_eq!(c.large_limits().max_in_memory, 100 << 20);
    assert_eq!(
        c.spill_policy(),
        SpillPolicy {
            threshold: 65536,
            directory: Some(PathBuf::from("/var/lib/markgate/spool"))
        }
    );
    assert_eq!(c.timeouts.read, Duration::from_secs(600));
    assert_eq!(c.timeouts.eom, Duration::from_secs(120));
    assert_eq!(c.timeouts.progress, Duration::from_millis(500));
    assert_eq!(c.timeouts.shutdown_grace, Duration::from_secs(5));
    assert_eq!(c.logging.level, LogLevel::Debug);
    assert_eq!(c.logging.format, LogFormat::Json);
}

#[test]
fn unknown_top_level_key_points_at_the_key() {
    assert_err(
        "# comment\nlisten = \"inet:127.0.0.1:1\"\nlisen = \"x\"\n",
        3,
        1,
        &["unknown field `lisen`", "expected one of", "`listen`"],
    );
}

#[test]
fn unknown_key_in_a_section_points_at_the_key() {
    assert_err(
        "[limits]\nmax_frame_size = 65536\n  spill_treshold = 10\n",
        3,
        3,
        &["unknown field `spill_treshold`", "`spill_threshold`"],
    );
}

#[test]
fn unknown_section_is_an_error() {
    assert_err(
        "[nonsense]\nfile = \"x\"\n",
        1,
        2,
        &["unknown field `nonsense`"],
    );
    // Inside a known section, an unknown key is named where it is.
    assert_err("[audit]\nfile = \"x\"\n", 2, 1, &["unknown field `file`"]);
}

#[test]
fn the_audit_writer_wait_is_bounded() {
    let c = Config::parse(
        "[audit]\ngather_after = 0\ngather_wait_us = 10000\n",
        "test.toml",
    )
    .expect("valid");
    assert_eq!((c.audit.gather_after, c.audit.gather_wait_us), (0, 10_000));
    assert_err(
        "[audit]\ngather_wait_us = 20000\n",
        // Checks across the section's values point at its header, as for `keep = 0`.
        1,
        1,
        &["audit.gather_wait_us", "at most 10000", "found 20000"],
    );
}

#[test]
fn wrong_type_names_what_was_found_and_expected() {
    assert_err(
        "[limits]\nmax_connections = \"many\"\n",
        2,
        19,
        &["invalid type: string \"many\"", "expected i64"],
    );
}

#[test]
fn bad_duration_points_at_the_value() {
    assert_err(
        "[timeouts]\nread = \"30\"\n",
        2,
        8,
        &["\"30\" without a unit", "expected a duration"],
    );
    assert_err(
        "[timeouts]\neom = 30\n",
        2,
        7,
        &["found the number 30", "\"30s\""],
    );
    assert_err(
        "[timeouts]\nread = \"0s\"\n",
        2,
        8,
        &["zero duration for `read`"],
    );
}

#[test]
fn progress_must_be_shorter_than_eom() {
    assert_err(
        "[timeouts]\neom = \"10s\"\nprogress = \"10s\"\n",
        3,
        12,
        &["`progress` (10s) must be shorter than `eom` (10s)"],
    );
}

#[test]
fn bad_size_and_frame_minimum() {
    assert_err(
        "[limits]\nspill_threshold = \"1MB\"\n",
        2,
        19,
        &["unit \"MB\"", "expected a size"],
    );
    assert_err(
        "[limits]\nmax_frame_size = 1024\n",
        2,
        18,
        &["found 1024 bytes, expected at least 65536"],
    );
    assert_err(
        "[limits]\nmax_connections = 0\n",
        2,
        19,
        &["found 0, expected at least 1"],
    );
    assert_err(
        "[limits]\nspill_directory = \"spool\"\n",
        2,
        19,
        &["relative path \"spool\"", "absolute path"],
    );
}

#[test]
fn bad_socket_mode() {
    assert_err(
        "[socket]\nmode = 660\n",
        2,
        8,
        &["found the number 660", "as a string such as \"0660\""],
    );
    assert_err(
        "[socket]\nmode = \"0999\"\n",
        2,
        8,
        &["found \"0999\"", "octal permission mode"],
    );
}

#[test]
fn bad_enum_lists_the_choices() {
    assert_err(
        "[logging]\nlevel = \"verbose\"\n",
        2,
        9,
        &["unknown variant `verbose`", "`error`", "`trace`"],
    );
    assert_err(
        "[logging]\nformat = \"xml\"\n",
        2,
        10,
        &["unknown variant `xml`", "`text`", "`json`"],
    );
}

#[test]
fn empty_strings_are_refused() {
    assert_err("listen = \"\"\n", 1, 10, &["empty string", "listen spec"]);
    assert_err(
        "[socket]\ngroup = \" \"\n",
        2,
        9,
        &["empty string", "group"],
    );
}

#[test]
fn syntax_error_has_a_position() {
    assert_err("listen = \"inet:127.0.0.1:1\n", 1, 27, &[]);
    let e = err("[limits\n");
    assert_eq!(e.line, 1);
}

#[test]
fn display_shows_file_line_column_and_the_line() {
    let e = Config::parse(
        "[logging]\nlevel = \"loud\"\n",
        "/etc/markgate/markgate.toml",
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.starts_with("/etc/markgate/markgate.toml:2:9: unknown variant `loud`"),
        "{e}"
    );
    assert!(e.contains("2 | level = \"loud\"\n  |         ^"), "{e}");
}

#[test]
fn missing_file_names_the_file() {
    let e = Config::load(std::path::Path::new("/nonexistent/markgate.toml")).unwrap_err();
    assert!(matches!(e, ConfigError::Read { .. }));
    assert!(e.to_string().contains("/nonexistent/markgate.toml"), "{e}");
}

#[test]
fn sendmail_style_listen_spec_is_accepted() {
    let c = Config::parse("listen = \"inet:10027@127.0.0.1\"\n", "t").unwrap();
    assert_eq!(c.listen.to_string(), "inet:127.0.0.1:10027");
}

#[test]
fn bad_listen_spec_points_at_the_value() {
    assert_err(
        "\nlisten = \"tcp:127.0.0.1:25\"\n",
        2,
        10,
        &["unknown type \"tcp\"", "expected inet:HOST:PORT"],
    );
    assert_err(
        "listen = \"inet:127.0.0.1:99999\"\n",
        1,
        10,
        &["port \"99999\""],
    );
}

#[test]
fn zero_progress_turns_progress_off() {
    let c = Config::parse("[timeouts]\nprogress = \"0s\"\n", "t").unwrap();
    assert!(c.timeouts.progress.is_zero());
    assert!(c.server_config().progress_interval.is_zero());
}

#[test]
fn server_config_carries_every_setting() {
    let c = Config::parse(
        "[socket]\nmode = \"0600\"\ngroup = \"postfix\"\n[limits]\nmax_frame_size = \"128KiB\"\n\
         max_connections = 7\n[timeouts]\nread = \"1m\"\neom = \"20s\"\nprogress = \"2s\"\n\
         shutdown_grace = \"3s\"\n",
        "t",
    )
    .unwrap();
    let s = c.server_config();
    assert_eq!(s.socket_mode, 0o600);
    assert_eq!(s.socket_owner, None);
    assert_eq!(s.socket_group.as_deref(), Some("postfix"));
    assert_eq!(s.max_frame_size, 128 * 1024);
    assert_eq!(s.max_connections, 7);
    assert_eq!(s.read_timeout, Duration::from_secs(60));
    assert_eq!(s.eom_timeout, Duration::from_secs(20));
    assert_eq!(s.progress_interval, Duration::from_secs(2));
    assert_eq!(s.shutdown_grace, Duration::from_secs(3));
}

#[test]
fn defaults_are_the_protocol_engines() {
    assert_eq!(
        Config::default().server_config(),
        crate::milter::ServerConfig::default()
    );
}

#[test]
fn metrics_listen_must_be_a_loopback_address() {
    let c = Config::parse("[metrics]\nlisten = \"[::1]:9195\"\n", "t").unwrap();
    assert_eq!(c.metrics.listen, Some("[::1]:9195".parse().unwrap()));
    assert_err(
        "[metrics]\nlisten = \"0.0.0.0:9195\"\n",
        2,
        10,
        &["non-loopback", "0.0.0.0:9195", "no authentication"],
    );
    assert_err(
        "[metrics]\nlisten = \"localhost\"\n",
        2,
        10,
        &["found \"localhost\"", "ADDRESS:PORT"],
    );
}
