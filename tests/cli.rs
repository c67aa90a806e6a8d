//! The `markgate` binary: subcommands, exit codes (0 ok, 1 runtime failure, 2 usage or config
//! error) and what it prints where. No MTA needed.

mod support;

use std::io::Read;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use support::ports;

fn markgate() -> Command {
    Command::new(env!("CARGO_BIN_EXE_markgate"))
}

/// `markgate run` in these tests writes its audit trail to a temporary directory (kept for
/// the life of the test process), never to the built-in /var/log/markgate.
fn with_audit_log(args: &[&str]) -> Vec<String> {
    use std::sync::OnceLock;
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    let mut v: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    if args.first() == Some(&"run") && !args.contains(&"--audit-log") {
        let dir = DIR.get_or_init(|| tempfile::tempdir().expect("tempdir"));
        v.push("--audit-log".into());
        v.push(dir.path().join("audit.jsonl").display().to_string());
    }
    v
}

fn run(args: &[&str]) -> Output {
    markgate()
        .args(with_audit_log(args))
        .stdin(Stdio::null())
        .output()
        .expect("run markgate")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn spawn(args: &[&str]) -> Child {
    markgate()
        .args(with_audit_log(args))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start markgate")
}

/// Send a signal, wait for the exit, and return (code, stdout, stderr).
fn stop(mut child: Child, signal: &str) -> (Option<i32>, String, String) {
    let st = Command::new("kill")
        .args([signal, &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(st.success());
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        assert!(Instant::now() < deadline, "markgate did not stop");
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut out = String::new();
    let mut err = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    (status.code(), out, err)
}

#[test]
fn version_prints_the_crate_version() {
    let o = run(&["version"]);
    assert_eq!(o.status.code(), Some(0));
    assert_eq!(
        text(&o.stdout),
        format!("markgate {}\n", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn help_exits_0_and_unknown_subcommand_exits_2() {
    let o = run(&["--help"]);
    assert_eq!(o.status.code(), Some(0));
    assert!(
        text(&o.stdout).contains("Exit status"),
        "{}",
        text(&o.stdout)
    );
    let o = run(&["frobnicate"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o.stderr).contains("frobnicate"));
}

#[test]
fn invalid_config_exits_2_naming_file_line_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("markgate.toml");
    std::fs::write(&path, "[timeouts]\nread = \"30\"\n").unwrap();
    let o = run(&["run", "--config", path.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    let err = text(&o.stderr);
    assert!(
        err.contains(&format!(
            "{}:2:8: found \"30\" without a unit",
            path.display()
        )),
        "{err}"
    );
    assert_eq!(text(&o.stdout), "");
}

#[test]
fn missing_config_file_exits_2() {
    let o = run(&["run", "--config", "/nonexistent/markgate.toml"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o.stderr).contains("cannot read config file /nonexistent/markgate.toml"));
}

#[test]
fn invalid_listen_exits_2() {
    let o = run(&["run", "--listen", "tcp:127.0.0.1:25"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        text(&o.stderr).contains("unknown type \"tcp\""),
        "{}",
        text(&o.stderr)
    );
}

#[test]
fn missing_policy_file_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("markgate.toml");
    std::fs::write(&path, "policy = \"/nonexistent/policy.toml\"\n").unwrap();
    let o = run(&["run", "--config", path.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        text(&o.stderr).contains("cannot read policy file /nonexistent/policy.toml"),
        "{}",
        text(&o.stderr)
    );
}

#[test]
fn address_in_use_exits_1() {
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = busy.local_addr().unwrap().port();
    let o = run(&["run", "--listen", &format!("inet:127.0.0.1:{port}")]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o.stderr).contains("cannot listen on"),
        "{}",
        text(&o.stderr)
    );
}

#[test]
fn sigterm_stops_cleanly_with_status_0_and_nothing_on_stdout() {
    let port = ports::free_port();
    let child = spawn(&["run", "--listen", &format!("inet:127.0.0.1:{port}")]);
    assert!(ports::wait_listening(port, 20), "markgate did not listen");
    let (code, out, err) = stop(child, "-TERM");
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(out, "");
    assert!(err.contains("markgate started"), "{err}");
    assert!(err.contains("signal=\"SIGTERM\""), "{err}");
    assert!(err.contains("markgate stopped"), "{err}");
    assert!(ports::wait_closed(port, 5));
}

#[test]
fn sigint_with_json_logs_on_a_unix_socket() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("m.sock");
    let conf = dir.path().join("markgate.toml");
    std::fs::write(
        &conf,
        format!(
            "listen = \"unix:{}\"\n[socket]\nmode = \"0600\"\n[logging]\nformat = \"json\"\nlevel = \"debug\"\n",
            sock.display()
        ),
    )
    .unwrap();
    let child = spawn(&["run", "--config", conf.to_str().unwrap()]);
    let deadline = Instant::now() + Duration::from_secs(20);
    while !sock.exists() {
        assert!(Instant::now() < deadline, "socket not created");
        std::thread::sleep(Duration::from_millis(20));
    }
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&sock).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let (code, out, err) = stop(child, "-INT");
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(out, "");
    for line in err.lines() {
        let v: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("not a JSON log line ({e}): {line}"));
        assert!(
            v.get("level").is_some() && v.get("message").is_some(),
            "{line}"
        );
    }
    assert!(err.contains("\"signal\":\"SIGINT\""), "{err}");
    assert!(!sock.exists(), "socket left behind");
}

/// Started with stdin, stdout and stderr closed (as a careless init script might), markgate
/// still has all three open on /dev/null, so no socket can take their place.
#[test]
fn closed_standard_fds_are_reopened_on_dev_null() {
    let port = ports::free_port();
    let child = Command::new("sh")
        .arg("-c")
        .arg(r#"exec "$0" run --listen "$1" <&- >&- 2>&-"#)
        .arg(env!("CARGO_BIN_EXE_markgate"))
        .arg(format!("inet:127.0.0.1:{port}"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start markgate through sh");
    assert!(ports::wait_listening(port, 20), "markgate did not listen");
    for fd in 0..3 {
        let target = std::fs::read_link(format!("/proc/{}/fd/{fd}", child.id()))
            .unwrap_or_else(|e| panic!("fd {fd}: {e}"));
        assert_eq!(target, std::path::Path::new("/dev/null"), "fd {fd}");
    }
    let (code, _, _) = stop(child, "-TERM");
    assert_eq!(code, Some(0));
}

// ---- markgate check / policy test / audit verify / audit report ----------------------------

const SHIPPED: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/policies/uk-gpms.toml");

#[test]
fn check_passes_the_shipped_policies_and_the_sample_config() {
    for p in ["uk-gpms", "uk-gsc", "au-epms"] {
        let path = format!("{}/policies/{p}.toml", env!("CARGO_MANIFEST_DIR"));
        let o = run(&["check", "--policy", &path]);
        assert_eq!(o.status.code(), Some(0), "{p}: {}", text(&o.stdout));
        assert!(text(&o.stdout).contains("policy OK"), "{}", text(&o.stdout));
    }
    let conf = concat!(env!("CARGO_MANIFEST_DIR"), "/config/markgate.toml");
    let o = run(&["check", "--config", conf]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stdout));
    assert!(text(&o.stdout).contains("config OK"));
    // No arguments: the built-in config and policy.
    let o = run(&["check"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stdout));
}

#[test]
fn check_reports_every_problem_with_its_place_and_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    let text_in = std::fs::read_to_string(SHIPPED)
        .unwrap()
        .replacen(
            "default_ceiling = \"UNCLASSIFIED\"",
            "default_ceiling = \"PUBLIC\"",
            1,
        )
        .replacen("action = \"accept\"", "action = \"shrug\"", 1);
    std::fs::write(&bad, text_in).unwrap();
    let o = run(&["check", "--policy", bad.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    let out = text(&o.stdout);
    let name = bad.display().to_string();
    // Both mistakes, each with file:line:col.
    assert!(out.contains("PUBLIC") && out.contains("shrug"), "{out}");
    assert!(
        out.lines()
            .filter(|l| l.starts_with(&format!("{name}:")))
            .count()
            >= 2,
        "{out}"
    );
    assert!(out.contains("2 error(s)"), "{out}");

    let conf = dir.path().join("markgate.toml");
    std::fs::write(&conf, "[audit]\nsync = \"sometimes\"\n").unwrap();
    let o = run(&["check", "--config", conf.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o.stdout).contains("markgate.toml:2"),
        "{}",
        text(&o.stdout)
    );
}

fn corpus(name: &str) -> String {
    format!("{}/tests/corpus/{name}", env!("CARGO_MANIFEST_DIR"))
}

fn write_msg(dir: &std::path::Path, name: &str, body: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, body).unwrap();
    p.display().to_string()
}

#[test]
fn policy_test_shows_markings_outcomes_labels_and_the_exact_output() {
    let dir = tempfile::tempdir().unwrap();
    let m = write_msg(
        dir.path(),
        "r.eml",
        "From: alice@example-council.gcsx.gov.uk\r\nTo: bob@partner.gcsx.gov.uk\r\n\
         Subject: RESTRICTED: figures\r\nMessage-ID: <r@x>\r\n\r\nHello\r\n",
    );
    let o = run(&[
        "policy",
        "test",
        "--policy",
        SHIPPED,
        "--from",
        "alice@example-council.gcsx.gov.uk",
        "--rcpt",
        "bob@partner.gcsx.gov.uk",
        "--client-ip",
        "127.0.0.1",
        &m,
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let out = text(&o.stdout);
    for want in [
        "subject (Prefix): `RESTRICTED`",
        "effective level: RESTRICTED",
        "bob@partner.gcsx.gov.uk: deliver",
        "X-Protective-Marking: RESTRICTED",
        "answer: accept",
        "output message:",
        "\r\nX-Protective-Marking: RESTRICTED\r\n",
        "may be subject to recording and/or monitoring",
    ] {
        assert!(out.contains(want), "missing {want:?} in\n{out}");
    }
}

#[test]
fn policy_test_json_and_several_messages_and_a_refusal() {
    let dir = tempfile::tempdir().unwrap();
    let m = write_msg(
        dir.path(),
        "r.eml",
        "From: a@example-council.gcsx.gov.uk\r\nSubject: RESTRICTED: x\r\n\r\nx\r\n",
    );
    let o = run(&[
        "policy",
        "test",
        "--from",
        "a@example-council.gcsx.gov.uk",
        "--rcpt",
        "carol@gmail.com",
        "--auth",
        "alice",
        "--json",
        &m,
        &corpus("plain-unmarked.eml"),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let out = text(&o.stdout);
    let lines: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
        .collect();
    assert_eq!(lines.len(), 2);
    let a = lines[0]["answer"].as_str().unwrap();
    assert!(
        a.starts_with("550 5.7.1") && a.contains("GPMS-ABOVE-CEILING"),
        "{a}"
    );
    assert!(lines[0]["output"].is_null());
    assert_eq!(lines[0]["decision"]["direction"], "outbound");
    let out1 = lines[1]["output"].as_str().unwrap();
    assert_eq!(out1.matches("may be subject to recording").count(), 1);
}

#[test]
fn policy_test_errors_exit_nonzero() {
    let o = run(&[
        "policy",
        "test",
        "--from",
        "a@b",
        "--rcpt",
        "c@d",
        "/nonexistent.eml",
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o.stderr).contains("/nonexistent.eml"));
    let o = run(&[
        "policy",
        "test",
        "--policy",
        "/nonexistent.toml",
        "--from",
        "a@b",
        "--rcpt",
        "c@d",
        &corpus("plain-unmarked.eml"),
    ]);
    assert_eq!(o.status.code(), Some(2));
    // --rcpt is required.
    let o = run(&[
        "policy",
        "test",
        "--from",
        "a@b",
        &corpus("plain-unmarked.eml"),
    ]);
    assert_eq!(o.status.code(), Some(2));
}

/// An audit file made the way the daemon makes one: `markgate run --audit-log` writes the
/// start records; the message records come from the e2e tests, here we only need a chain.
fn audit_file(dir: &std::path::Path) -> std::path::PathBuf {
    let path = dir.join("audit.jsonl");
    let port = ports::free_port();
    let child = spawn(&[
        "run",
        "--listen",
        &format!("inet:127.0.0.1:{port}"),
        "--audit-log",
        path.to_str().unwrap(),
    ]);
    assert!(ports::wait_listening(port, 20), "markgate did not listen");
    let (code, _, err) = stop(child, "-TERM");
    assert_eq!(code, Some(0), "{err}");
    assert!(
        err.contains(&path.display().to_string()),
        "audit path logged: {err}"
    );
    path
}

#[test]
fn audit_verify_passes_an_untouched_file_and_catches_an_edit() {
    let dir = tempfile::tempdir().unwrap();
    let path = audit_file(dir.path());
    let content = std::fs::read_to_string(&path).unwrap();
    assert!(
        content.lines().count() >= 3,
        "start, policy loaded, stop: {content}"
    );
    let o = run(&["audit", "verify", path.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stdout));
    let tampered = content.replacen("\"policy_loaded\"", "\"policy_loaded\" ", 1);
    assert_ne!(tampered, content);
    let bad = dir.path().join("tampered.jsonl");
    std::fs::write(&bad, tampered.replacen("uk-gpms", "uk-gpmz", 1)).unwrap();
    let o = run(&["audit", "verify", bad.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o.stdout));
    assert!(text(&o.stdout).contains("line"), "{}", text(&o.stdout));
}

#[test]
fn audit_report_text_json_and_time_bounds() {
    let dir = tempfile::tempdir().unwrap();
    let path = audit_file(dir.path());
    let p = path.to_str().unwrap();
    let o = run(&["audit", "report", p]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    assert!(!text(&o.stdout).is_empty());
    let o = run(&["audit", "report", "--json", p]);
    assert_eq!(o.status.code(), Some(0));
    let v: serde_json::Value = serde_json::from_str(text(&o.stdout).trim()).expect("JSON");
    assert!(v["records"].as_u64().unwrap() >= 3, "{v}");
    let o = run(&["audit", "report", "--json", "--until", "2000-01-01", p]);
    let v: serde_json::Value = serde_json::from_str(text(&o.stdout).trim()).expect("JSON");
    assert_eq!(v["records"], 0, "{v}");
    let o = run(&["audit", "report", "--since", "yesterday-ish", p]);
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn policy_test_takes_several_recipients_comma_separated_or_repeated() {
    for rcpts in [
        vec!["--rcpt", "bob@partner.gcsx.gov.uk,carol@nhs.net"],
        vec![
            "--rcpt",
            "bob@partner.gcsx.gov.uk",
            "--rcpt",
            "carol@nhs.net",
        ],
    ] {
        let mut args = vec!["policy", "test", "--from", "a@example-council.gcsx.gov.uk"];
        args.extend(rcpts);
        let m = corpus("gpms-restricted-subject.eml");
        args.extend(["--client-ip", "127.0.0.1", "--json", m.as_str()]);
        let o = run(&args);
        assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
        let v: serde_json::Value = serde_json::from_str(text(&o.stdout).trim()).unwrap();
        let r = v["decision"]["recipients"].as_array().unwrap();
        assert_eq!(r.len(), 2, "{v}");
        assert_eq!(r[1]["address"], "carol@nhs.net");
    }
}

// ---------------------------------------------------------------------------------------------
// The README's first run: `cargo run --release -- run`, nothing else. Its default audit trail,
// /var/log/markgate/audit.jsonl, is writable by root only.
// ---------------------------------------------------------------------------------------------

/// The built-in audit file (`audit::DEFAULT_AUDIT_PATH`).
const DEFAULT_AUDIT: &str = "/var/log/markgate/audit.jsonl";

fn is_root() -> bool {
    let out = Command::new("id").arg("-u").output().expect("run id -u");
    text(&out.stdout).trim() == "0"
}

/// A copy of the binary anyone may run (the build tree may be in a private home directory),
/// in a directory only root may write.
fn world_runnable_binary() -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    use std::sync::OnceLock;
    static COPY: OnceLock<(tempfile::TempDir, std::path::PathBuf)> = OnceLock::new();
    COPY.get_or_init(|| {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
            .expect("chmod dir");
        let bin = dir.path().join("markgate");
        std::fs::copy(env!("CARGO_BIN_EXE_markgate"), &bin).expect("copy the binary");
        std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        (dir, bin)
    })
    .1
    .clone()
}

/// `markgate ARGS` as an unprivileged user: `nobody` when the tests run as root (as in CI),
/// else the user running the tests. `cwd` is where it runs (writable by that user).
fn as_non_root(args: &[&str], cwd: &std::path::Path) -> Command {
    let mut c = if is_root() {
        let mut c = Command::new("setpriv");
        c.args(["--reuid=nobody", "--regid=nogroup", "--clear-groups"])
            .arg(world_runnable_binary());
        c
    } else {
        markgate()
    };
    c.args(args)
        .current_dir(cwd)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    c
}

/// A temporary directory the unprivileged user of [`as_non_root`] may write.
fn non_root_dir() -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o1777)).expect("chmod");
    dir
}

#[test]
fn a_non_root_first_run_names_the_audit_path_the_os_error_and_the_fix() {
    let cwd = non_root_dir();
    if !is_root()
        && std::fs::OpenOptions::new()
            .append(true)
            .open(DEFAULT_AUDIT)
            .is_ok()
    {
        println!("skipped: this user may write {DEFAULT_AUDIT}, so the first run would work");
        return;
    }
    let o = as_non_root(&["run"], cwd.path())
        .output()
        .expect("run markgate");
    let err = text(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert_eq!(text(&o.stdout), "");
    // /var/log/markgate exists (root's 0750) or not (a fresh machine): either way the kernel
    // says EACCES, and the message names the file, the error and both ways out.
    for needle in [
        "cannot open the audit trail /var/log/markgate/audit.jsonl: ",
        "Permission denied (os error 13)",
        "run it as a user who may write /var/log/markgate",
        "`markgate run --audit-log PATH`",
        "`[audit] path = \"PATH\"` in the config file",
    ] {
        assert!(err.contains(needle), "missing {needle:?} in:\n{err}");
    }
    assert_eq!(
        err.lines().filter(|l| l.contains("ERROR")).count(),
        1,
        "one error line: {err}"
    );
}

#[test]
fn a_config_file_audit_path_that_cannot_be_opened_names_the_fix_too() {
    let dir = tempfile::tempdir().expect("tempdir");
    // The parent of the audit file is a regular file: no user can open it (ENOTDIR).
    let not_a_dir = dir.path().join("plain-file");
    std::fs::write(&not_a_dir, "").expect("write");
    let audit = not_a_dir.join("audit.jsonl");
    let conf = dir.path().join("markgate.toml");
    let port = ports::free_port();
    std::fs::write(
        &conf,
        format!(
            "listen = \"inet:127.0.0.1:{port}\"\n\n[audit]\npath = {:?}\n",
            audit.display().to_string()
        ),
    )
    .expect("write config");
    let o = markgate()
        .args(["run", "--config", &conf.display().to_string()])
        .stdin(Stdio::null())
        .output()
        .expect("run markgate");
    let err = text(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    for needle in [
        format!("cannot open the audit trail {}: ", audit.display()),
        "Not a directory (os error 20)".into(),
        format!("run it as a user who may write {}", not_a_dir.display()),
        "`markgate run --audit-log PATH`".into(),
        "`[audit] path = \"PATH\"` in the config file".into(),
    ] {
        assert!(err.contains(&needle), "missing {needle:?} in:\n{err}");
    }
}

#[test]
fn the_readme_non_root_variant_starts_with_audit_log_in_the_current_directory() {
    // README: "Not root? Add `--audit-log ./audit.jsonl`". On a free port rather than 8895,
    // so it can run beside the as-written root test.
    let cwd = non_root_dir();
    let port = ports::free_port();
    let listen = format!("inet:127.0.0.1:{port}");
    let child = as_non_root(
        &["run", "--audit-log", "./audit.jsonl", "--listen", &listen],
        cwd.path(),
    )
    .spawn()
    .expect("start markgate");
    assert!(ports::wait_listening(port, 20), "markgate did not listen");
    let (code, _, err) = stop(child, "-TERM");
    assert_eq!(code, Some(0), "{err}");
    let audit = cwd.path().join("audit.jsonl");
    let report = markgate::audit::verify_files(std::slice::from_ref(&audit));
    assert!(report.ok(), "{report}");
    let records = std::fs::read_to_string(&audit).expect("audit file");
    assert!(records.contains("\"daemon_start\""), "{records}");
    assert!(records.contains("\"daemon_stop\""), "{records}");
}

#[test]
fn the_readme_run_command_works_as_written_for_root() {
    if !is_root() {
        // CI runs as root, so this runs there; a developer's own account cannot write
        // /var/log/markgate, which the test above covers.
        println!("skipped: not root (the README's command as written needs root)");
        return;
    }
    assert!(
        !ports::is_listening(8895),
        "something already listens on 127.0.0.1:8895, the built-in default address"
    );
    // Exactly `markgate run`: built-in config, policy, address and audit file.
    let child = markgate()
        .arg("run")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start markgate");
    let pid = child.id();
    assert!(ports::wait_listening(8895, 20), "markgate did not listen");
    let (code, out, err) = stop(child, "-TERM");
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(out, "");
    assert!(err.contains("markgate started"), "{err}");
    assert!(err.contains(&format!("audit={DEFAULT_AUDIT}")), "{err}");
    // This run's records are in the default audit file.
    let records = std::fs::read_to_string(DEFAULT_AUDIT).expect("the default audit file");
    let start = records
        .lines()
        .find(|l| l.contains("\"daemon_start\"") && l.contains(&format!("\"pid\":{pid}")))
        .unwrap_or_else(|| panic!("no daemon_start record for pid {pid} in {DEFAULT_AUDIT}"));
    assert!(start.contains("inet:127.0.0.1:8895"), "{start}");
    assert!(records.contains("\"daemon_stop\""), "{records}");
}
