//! A private, throw-away Sendmail on loopback for end-to-end milter tests, beside Postfix.
//!
//! ```text
//! swaks ──SMTP 127.0.0.1:smtp_port──► private sendmail -bd ──milter (inet or unix)──► markgate
//!                                          │ SMART_HOST esmtp:[127.0.0.1], port sink_port
//!                                          ▼
//!                          smtp-sink 127.0.0.1:sink_port, one file per delivered message
//! ```
//!
//! Debian's `sendmail-bin` conflicts with `postfix` (both provide mail-transport-agent), so it
//! is never installed: `apt-get download` fetches `sendmail-bin`, `sendmail-base` and
//! `sendmail-cf` once into `target/sendmail-debs/` (never committed), `dpkg -x` unpacks them into
//! the instance directory, and m4 builds a private `sendmail.cf` from the unpacked `cf/` macros.
//! The filter line is `packaging/sendmail/markgate.mc`'s `INPUT_MAIL_FILTER` taken verbatim,
//! only the socket changed (`inet:8895@127.0.0.1` → this test's port, or `local:PATH`), so the
//! snippet admins paste is the one tested. Sendmail needs root (`-bd` binds and switches users)
//! and the unpacked binary needs `m4` and `libwrap0`, which `scripts/test.sh` installs.
//!
//! Sink dumps are parsed with the Postfix harness's [`Delivered`]; swaks runs the same way.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use super::mta;
use super::ports;
use super::postfix::{Delivered, SwaksResult};

/// Tools a Sendmail test needs (besides the downloaded packages).
pub const TOOLS: &[&str] = &["smtp-sink", "swaks", "m4", "dpkg", "apt-get", "unshare"];

/// The socket line of the shipped snippet, replaced by the test's own endpoint.
const SNIPPET_SOCKET: &str = "inet:8895@127.0.0.1";

/// Where markgate listens, in Sendmail's spelling.
#[derive(Debug, Clone)]
pub enum MilterSocket {
    /// `S=inet:PORT@127.0.0.1`
    Inet(u16),
    /// `S=local:PATH`
    Unix(PathBuf),
}

impl MilterSocket {
    fn spec(&self) -> String {
        match self {
            MilterSocket::Inet(port) => format!("inet:{port}@127.0.0.1"),
            MilterSocket::Unix(path) => format!("local:{}", path.display()),
        }
    }
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The three packages, downloaded once (per machine: they stay in target/).
pub fn debs() -> Result<Vec<PathBuf>, String> {
    static DEBS: OnceLock<Result<Vec<PathBuf>, String>> = OnceLock::new();
    DEBS.get_or_init(|| {
        let dir = repo().join("target/sendmail-debs");
        fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let list = |dir: &Path| -> Vec<PathBuf> {
            let mut v: Vec<PathBuf> = fs::read_dir(dir)
                .map(|rd| rd.filter_map(Result::ok).map(|e| e.path()).collect())
                .unwrap_or_default();
            v.retain(|p| p.extension().is_some_and(|e| e == "deb"));
            v.sort();
            v
        };
        let have = |v: &[PathBuf], name: &str| {
            v.iter().any(|p| {
                p.file_name()
                    .is_some_and(|f| f.to_string_lossy().starts_with(&format!("{name}_")))
            })
        };
        let mut found = list(&dir);
        let names = ["sendmail-bin", "sendmail-base", "sendmail-cf"];
        if !names.iter().all(|n| have(&found, n)) {
            let out = Command::new("apt-get")
                .arg("download")
                .args(names)
                .current_dir(&dir)
                .output()
                .map_err(|e| format!("apt-get download: {e}"))?;
            found = list(&dir);
            if !names.iter().all(|n| have(&found, n)) {
                return Err(format!(
                    "apt-get download {} failed (apt-get update first?): {}",
                    names.join(" "),
                    String::from_utf8_lossy(&out.stderr)
                ));
            }
        }
        Ok(found)
    })
    .clone()
}

/// A running private Sendmail plus its smtp-sink. Stopped when dropped.
pub struct Sendmail {
    dir: Option<tempfile::TempDir>,
    root: PathBuf,
    /// sendmail -bd listens on 127.0.0.1 at this port.
    pub smtp_port: u16,
    /// smtp-sink listens on 127.0.0.1 at this port.
    pub sink_port: u16,
    /// `Sendmail 8.17.1.9` (what `-d0.1` printed).
    pub version: String,
    /// The `X` line as it reached sendmail.cf.
    pub filter_line: String,
    sink: Option<Child>,
    sends: std::sync::atomic::AtomicU32,
}

impl Sendmail {
    /// Unpack, configure and start Sendmail with markgate's filter at `socket`, relaying to a
    /// new smtp-sink. Panics (failing the test) with the logs when something does not come up.
    pub fn start(socket: &MilterSocket) -> Sendmail {
        let debs = debs().unwrap_or_else(|e| panic!("{e}"));
        let dir = tempfile::Builder::new()
            .prefix("markgate-sendmail.")
            .tempdir_in("/tmp")
            .expect("create instance directory under /tmp");
        let root = dir.path().to_path_buf();
        fs::set_permissions(&root, fs::Permissions::from_mode(0o755)).expect("chmod 755");
        for d in ["queue", "sink", "outgoing"] {
            fs::create_dir_all(root.join(d)).expect("mkdir");
        }
        fs::set_permissions(root.join("queue"), fs::Permissions::from_mode(0o700))
            .expect("chmod queue");
        let st = Command::new("chown")
            .args(["postfix", &root.join("sink").display().to_string()])
            .status()
            .expect("chown");
        assert!(st.success(), "chown postfix sink");
        for deb in &debs {
            let st = Command::new("dpkg")
                .arg("-x")
                .arg(deb)
                .arg(root.join("pkg"))
                .status()
                .expect("dpkg -x");
            assert!(st.success(), "dpkg -x {} failed", deb.display());
        }
        let bin = root.join("pkg/usr/libexec/sendmail/sendmail");
        assert!(bin.exists(), "no sendmail binary in the unpacked packages");
        let version = sendmail_cmd(&bin)
            .args(["-d0.1", "-bt", "-C", "/dev/null"])
            .stdin(Stdio::null())
            .output()
            .map(|o| {
                String::from_utf8_lossy(&o.stdout)
                    .lines()
                    .find_map(|l| l.strip_prefix("Version "))
                    .map(|v| format!("Sendmail {}", v.trim()))
                    .unwrap_or_default()
            })
            .unwrap_or_default();

        let snippet =
            fs::read_to_string(repo().join("packaging/sendmail/markgate.mc")).expect("snippet");
        let line = snippet
            .lines()
            .find(|l| l.starts_with("INPUT_MAIL_FILTER"))
            .expect("an INPUT_MAIL_FILTER line in packaging/sendmail/markgate.mc");
        assert!(
            line.contains(SNIPPET_SOCKET),
            "the snippet's socket is no longer {SNIPPET_SOCKET}; adjust the harness: {line}"
        );
        let filter = line.replace(SNIPPET_SOCKET, &socket.spec());

        let mut sm = Sendmail {
            dir: Some(dir),
            root,
            smtp_port: 0,
            sink_port: 0,
            version,
            filter_line: String::new(),
            sink: None,
            sends: std::sync::atomic::AtomicU32::new(0),
        };
        for attempt in 1..=3 {
            sm.smtp_port = ports::free_port();
            sm.sink_port = ports::free_port();
            sm.write_cf(&filter);
            match sm.start_sink().and_then(|()| sm.start_daemon()) {
                Ok(()) => return sm,
                Err(e) if attempt < 3 => {
                    eprintln!("sendmail did not come up ({e}); again on other ports");
                    sm.stop();
                }
                Err(e) => panic!("{e}"),
            }
        }
        unreachable!("the last attempt returns or panics")
    }

    /// The instance directory.
    pub fn dir(&self) -> &Path {
        &self.root
    }

    fn write_cf(&mut self, filter: &str) {
        let r = self.root.display();
        let cf = self.root.join("pkg/usr/share/sendmail/cf");
        let cf = cf.display();
        let sink = self.sink_port;
        let port = self.smtp_port;
        let mc = format!(
            "divert(-1)
include(`{cf}/m4/cf.m4')
divert(0)dnl
VERSIONID(`markgate test instance')dnl
OSTYPE(`linux')dnl
define(`confDONT_BLAME_SENDMAIL', `GroupWritableDirPathSafe,TrustStickyBit')dnl
define(`QUEUE_DIR', `{r}/queue')dnl
define(`confPID_FILE', `{r}/sendmail.pid')dnl
define(`STATUS_FILE', `{r}/statistics')dnl
define(`ALIAS_FILE', `')dnl
define(`HELP_FILE', `')dnl
define(`confDOMAIN_NAME', `sendmail.markgate.test')dnl
define(`confDONT_PROBE_INTERFACES', `True')dnl
define(`confBIND_OPTS', `-DNSRCH -DEFNAMES')dnl
define(`confLOG_LEVEL', `14')dnl
define(`confDELIVERY_MODE', `interactive')dnl
define(`confTO_QUEUERETURN', `1h')dnl
define(`SMART_HOST', `esmtp:[127.0.0.1]')dnl
define(`ESMTP_MAILER_ARGS', `TCP $h {sink}')dnl
define(`RELAY_MAILER_ARGS', `TCP $h {sink}')dnl
define(`SMTP_MAILER_ARGS', `TCP $h {sink}')dnl
FEATURE(`nocanonify')dnl
FEATURE(`promiscuous_relay')dnl
FEATURE(`accept_unresolvable_domains')dnl
FEATURE(`accept_unqualified_senders')dnl
FEATURE(`no_default_msa')dnl
DAEMON_OPTIONS(`Port={port}, Addr=127.0.0.1, Name=MTA')dnl
{filter}
MAILER(`smtp')dnl
"
        );
        fs::write(self.root.join("test.mc"), mc).expect("write test.mc");
        let out = Command::new("m4")
            .arg(self.root.join("test.mc"))
            .output()
            .expect("run m4");
        assert!(
            out.status.success(),
            "m4 failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        self.filter_line = text
            .lines()
            .find(|l| l.starts_with("Xmarkgate,"))
            .unwrap_or_else(|| panic!("the filter did not reach sendmail.cf:\n{filter}"))
            .to_owned();
        fs::write(self.root.join("sendmail.cf"), text).expect("write sendmail.cf");
    }

    fn start_sink(&mut self) -> Result<(), String> {
        mta::start_sink(&self.root, self.sink_port, &mut self.sink)
    }

    fn start_daemon(&mut self) -> Result<(), String> {
        let out = sendmail_cmd(&self.root.join("pkg/usr/libexec/sendmail/sendmail"))
            .arg("-C")
            .arg(self.root.join("sendmail.cf"))
            .args(["-bd", "-q1m", "-L", "sm-mta-markgate-test"])
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("start sendmail: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "sendmail -bd failed: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        if ports::wait_listening(self.smtp_port, 30) {
            Ok(())
        } else {
            Err("sendmail did not listen".into())
        }
    }

    /// swaks against this Sendmail; `args` as for the Postfix harness (`--suppress-data` added).
    pub fn swaks(&self, args: &[&str]) -> SwaksResult {
        let quiet = ["--timeout", "90", "--suppress-data"];
        mta::swaks(self.smtp_port, &[&quiet[..], args].concat())
    }

    /// Send an exact message with swaks `--data` (see the Postfix harness's `send_data_with`).
    pub fn send_data_with(
        &self,
        from: &str,
        to: &[&str],
        data: &[u8],
        extra: &[&str],
    ) -> SwaksResult {
        let swaks = |args: &[&str]| self.swaks(args);
        mta::send_data(swaks, &self.root, &self.sends, from, to, data, extra)
    }

    /// Every dump file smtp-sink has written so far, oldest first.
    pub fn delivered(&self) -> Vec<Delivered> {
        mta::sink_dumps(&self.root)
    }

    /// The delivered messages that `keep` accepts, once there are `n` of them and smtp-sink
    /// has finished writing them. Panics after `timeout`.
    pub fn wait_for(
        &self,
        n: usize,
        timeout: Duration,
        keep: impl Fn(&Delivered) -> bool,
    ) -> Vec<Delivered> {
        let deadline = Instant::now() + timeout;
        loop {
            let got: Vec<Delivered> = self.delivered().into_iter().filter(&keep).collect();
            // smtp-sink writes the file while it receives the data; a dump is complete when it
            // ends with the empty line smtp-sink adds after the message.
            if got.len() >= n
                && got
                    .iter()
                    .all(|d| fs::read(&d.path).is_ok_and(|b| b.ends_with(b"\n\n")))
            {
                std::thread::sleep(Duration::from_millis(50));
                return self
                    .delivered()
                    .into_iter()
                    .filter(&keep)
                    .collect::<Vec<_>>();
            }
            assert!(
                Instant::now() < deadline,
                "timeout: {} of {n} message(s) in the sink of {}",
                got.len(),
                self.root.display()
            );
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    fn stop(&mut self) {
        if let Ok(pid) = fs::read_to_string(self.root.join("sendmail.pid"))
            && let Some(pid) = pid.lines().next().map(str::trim).filter(|p| !p.is_empty())
        {
            let _ = Command::new("kill").args(["-TERM", pid]).status();
            let deadline = Instant::now() + Duration::from_secs(10);
            while Path::new(&format!("/proc/{pid}")).exists() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = fs::remove_file(self.root.join("sendmail.pid"));
        }
        if let Some(mut sink) = self.sink.take() {
            let _ = sink.kill();
            let _ = sink.wait();
        }
    }
}

/// Sendmail `bin`, run in a UTS namespace of its own whose host name has a dot. Sendmail wants
/// a fully qualified name for itself before it reads its configuration; given an unqualified
/// one (a test machine called `vm`) it logs "My unqualified host name … unknown; sleeping for
/// retry" and sleeps a minute, at start and again in the daemon. The namespace keeps the
/// machine's own host name untouched.
fn sendmail_cmd(bin: &Path) -> Command {
    let mut c = Command::new("unshare");
    c.args([
        "--uts",
        "sh",
        "-c",
        "hostname sendmail.markgate.test && exec \"$0\" \"$@\"",
    ])
    .arg(bin);
    c
}

impl Drop for Sendmail {
    fn drop(&mut self) {
        self.stop();
        let keep = std::thread::panicking() || std::env::var_os("MARKGATE_KEEP_TESTBED").is_some();
        if let Some(dir) = self.dir.take()
            && keep
        {
            let path = dir.keep();
            eprintln!("kept the Sendmail test instance in {}", path.display());
        }
    }
}
