//! The installed Debian package, run the way its systemd unit runs it.
//!
//! Runs only from `packaging/test-package.sh`, which builds the package, installs it with
//! `dpkg -i`, sets `MARKGATE_PACKAGE_TEST=1`, runs this test, then purges the package and
//! proves nothing is left. Here: the files and the user the package made; the installed
//! `/usr/sbin/markgate` with the packaged config, as user `markgate` with its groups, no
//! capabilities and umask 0027 (what `User=`, `SupplementaryGroups=`, `CapabilityBoundingSet=`,
//! `NoNewPrivileges=` and `UMask=` give it), with `$NOTIFY_SOCKET` pointing at a socket of
//! ours so the `Type=notify` protocol is checked too; a private Postfix delivering through the
//! chroot socket; reload (good and broken policy), SIGUSR1, and a clean stop.

mod support;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use support::peers;
use support::postfix::{Postfix, PostfixConfig, TOOLS};

const SOCKET: &str = "/var/spool/postfix/markgate/markgate.sock";
const CONFIG: &str = "/etc/markgate/markgate.toml";
const POLICY: &str = "/etc/markgate/policies/uk-gpms.toml";

fn enabled() -> bool {
    if std::env::var("MARKGATE_PACKAGE_TEST").as_deref() == Ok("1") {
        return true;
    }
    eprintln!(
        "SKIPPED package test: run packaging/test-package.sh (it builds and installs the \
         package, then runs this test)"
    );
    false
}

fn id_of(kind: &str, name: &str) -> u32 {
    let out = Command::new("getent")
        .args([kind, name])
        .output()
        .expect("getent");
    assert!(out.status.success(), "no {kind} entry for {name}");
    String::from_utf8_lossy(&out.stdout)
        .split(':')
        .nth(2)
        .and_then(|v| v.trim().parse().ok())
        .expect("numeric id")
}

fn assert_owned(path: &str, user: &str, group: &str, mode: u32) {
    let m = std::fs::metadata(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    assert_eq!(m.uid(), id_of("passwd", user), "{path} owner");
    assert_eq!(m.gid(), id_of("group", group), "{path} group");
    assert_eq!(
        m.mode() & 0o7777,
        mode,
        "{path} mode {:o}",
        m.mode() & 0o7777
    );
}

/// The notify socket the daemon reports to, readable by user markgate.
struct NotifySocket {
    _dir: tempfile::TempDir,
    path: std::path::PathBuf,
    sock: UnixDatagram,
}

impl NotifySocket {
    fn new() -> NotifySocket {
        let dir = tempfile::Builder::new()
            .prefix("markgate-notify.")
            .tempdir_in("/tmp")
            .expect("tempdir");
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
            .expect("chmod dir");
        let path = dir.path().join("notify");
        let sock = UnixDatagram::bind(&path).expect("bind notify socket");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666))
            .expect("chmod socket");
        NotifySocket {
            _dir: dir,
            path,
            sock,
        }
    }

    /// The next notification that contains `needle`, skipping others (STATUS-only updates).
    fn wait_for(&self, needle: &str, daemon: &mut Daemon) -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut buf = [0u8; 4096];
        let mut seen = Vec::new();
        while Instant::now() < deadline {
            self.sock
                .set_read_timeout(Some(Duration::from_millis(200)))
                .expect("timeout");
            match self.sock.recv(&mut buf) {
                Ok(n) => {
                    let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
                    if msg.contains(needle) {
                        return msg;
                    }
                    seen.push(msg);
                }
                Err(_) => {
                    if let Some(status) = daemon.child.try_wait().expect("try_wait") {
                        panic!(
                            "markgate exited ({status}) before sending {needle:?}; stderr:\n{}",
                            daemon.stderr()
                        );
                    }
                }
            }
        }
        panic!(
            "no {needle:?} notification in 30 s; got {seen:?}; stderr:\n{}",
            daemon.stderr()
        );
    }
}

struct Daemon {
    child: Child,
    log: std::path::PathBuf,
}

impl Daemon {
    /// `/usr/sbin/markgate run --config /etc/markgate/markgate.toml` as the unit runs it.
    fn start(notify: &Path, log_dir: &Path) -> Daemon {
        let log = log_dir.join("markgate.stderr");
        let stderr = std::fs::File::create(&log).expect("stderr file");
        let child = Command::new("sh")
            .args([
                "-c",
                "umask 0027; exec setpriv --reuid=markgate --regid=markgate --init-groups \
                 --inh-caps=-all --bounding-set=-all --no-new-privs \
                 /usr/sbin/markgate run --config /etc/markgate/markgate.toml",
            ])
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env("NOTIFY_SOCKET", notify)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("start the installed markgate");
        Daemon { child, log }
    }

    fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([&format!("-{sig}"), &self.child.id().to_string()])
            .status()
            .expect("kill")
            .success();
        assert!(ok, "kill -{sig}");
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Puts the packaged policy back exactly as it was, even if the test fails half-way.
struct RestorePolicy(Vec<u8>);

impl Drop for RestorePolicy {
    fn drop(&mut self) {
        let _ = std::fs::write(POLICY, &self.0);
    }
}

fn send(pf: &Postfix, n: u32) -> support::postfix::SwaksResult {
    pf.swaks(&[
        "--from",
        "clerk@example-council.gcsx.gov.uk",
        "--to",
        "officer@partner.gcsx.gov.uk",
        "--header",
        &format!("Subject: package test {n}"),
        "--header",
        &format!("Message-Id: <package-{n}@markgate.test>"),
        "--body",
        "delivered through the packaged daemon",
    ])
}

#[test]
fn installed_package_runs_as_its_unit_and_serves_postfix_through_the_chroot_socket() {
    if !enabled() || !peers::available("package test", TOOLS, true) {
        return;
    }
    // What postinst made.
    assert_owned("/var/lib/markgate", "markgate", "markgate", 0o750);
    assert_owned("/var/log/markgate", "markgate", "markgate", 0o750);
    assert_owned("/var/spool/postfix/markgate", "markgate", "postfix", 0o2750);
    assert_owned(CONFIG, "root", "markgate", 0o640);
    assert_owned(POLICY, "root", "root", 0o644);
    assert_owned("/usr/sbin/markgate", "root", "root", 0o755);
    let groups = Command::new("id")
        .args(["-nG", "markgate"])
        .output()
        .expect("id");
    let groups = String::from_utf8_lossy(&groups.stdout).into_owned();
    assert!(
        groups.split_whitespace().any(|g| g == "postfix"),
        "markgate not in group postfix: {groups}"
    );
    let shell = Command::new("getent")
        .args(["passwd", "markgate"])
        .output()
        .expect("getent");
    assert!(
        String::from_utf8_lossy(&shell.stdout)
            .trim_end()
            .ends_with("/usr/sbin/nologin"),
        "markgate must have no login shell"
    );

    let notify = NotifySocket::new();
    let logs = tempfile::tempdir().expect("tempdir");
    let mut daemon = Daemon::start(&notify.path, logs.path());
    let ready = notify.wait_for("READY=1", &mut daemon);
    println!("markgate says: {}", ready.replace('\n', " "));
    assert_owned(SOCKET, "markgate", "postfix", 0o660);

    // A private Postfix (smtpd runs as user postfix) delivers through the packaged socket.
    let pf = Postfix::start(PostfixConfig::with_milter(format!("unix:{SOCKET}")));
    let r = send(&pf, 1);
    assert_eq!(r.code, 0, "{}", r.dialog);
    let got = pf.wait_delivered(1, Duration::from_secs(60));
    assert_eq!(
        got[0].header("Message-ID").as_deref().map(str::trim),
        Some("<package-1@markgate.test>")
    );
    assert!(
        got[0]
            .body()
            .starts_with(b"delivered through the packaged daemon"),
        "{:?}",
        String::from_utf8_lossy(got[0].body())
    );

    // Reload with a broken policy: refused, the old one stays, mail still flows.
    let original = std::fs::read(POLICY).expect("read policy");
    let restore = RestorePolicy(original.clone());
    let mut broken = original.clone();
    broken.extend_from_slice(b"\n[[rule]]\nid = \"half-written\nwhen =\n");
    std::fs::write(POLICY, &broken).expect("break policy");
    daemon.signal("HUP");
    notify.wait_for("RELOADING=1", &mut daemon);
    let after = notify.wait_for("READY=1", &mut daemon);
    assert!(after.contains("reload failed"), "{after}");
    assert!(
        daemon.stderr().contains(&format!("{POLICY}:")),
        "the error must name the policy file with line and column:\n{}",
        daemon.stderr()
    );
    let r = send(&pf, 2);
    assert_eq!(r.code, 0, "mail must flow on the old policy: {}", r.dialog);

    // A good reload goes through.
    drop(restore);
    daemon.signal("HUP");
    notify.wait_for("RELOADING=1", &mut daemon);
    let after = notify.wait_for("READY=1", &mut daemon);
    assert!(after.contains("generation 1"), "{after}");

    // logrotate's SIGUSR1 must not kill it.
    daemon.signal("USR1");
    let r = send(&pf, 3);
    assert_eq!(r.code, 0, "{}", r.dialog);
    let got = pf.wait_delivered(3, Duration::from_secs(60));
    assert_eq!(got.len(), 3);
    assert!(
        daemon.child.try_wait().expect("try_wait").is_none(),
        "SIGUSR1 ended markgate:\n{}",
        daemon.stderr()
    );

    // SIGTERM: STOPPING=1, exit 0, socket gone; Postfix then tempfails (nothing passes
    // unfiltered, nothing is lost).
    daemon.signal("TERM");
    notify.wait_for("STOPPING=1", &mut daemon);
    let deadline = Instant::now() + Duration::from_secs(40);
    let status = loop {
        if let Some(s) = daemon.child.try_wait().expect("try_wait") {
            break s;
        }
        assert!(Instant::now() < deadline, "markgate did not stop");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "exit {status}:\n{}", daemon.stderr());
    assert!(!Path::new(SOCKET).exists(), "socket left behind");
    let r = send(&pf, 4);
    assert_ne!(r.code, 0, "with markgate stopped Postfix must not accept");
    assert!(r.dialog.contains("451 4.7.1"), "{}", r.dialog);
    println!("markgate stderr:\n{}", daemon.stderr());
}
