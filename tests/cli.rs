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

fn run(args: &[&str]) -> Output {
    markgate()
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run markgate")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn spawn(args: &[&str]) -> Child {
    markgate()
        .args(args)
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
