//! The built `markgate` binary run as a child process (not in-process), for tests that must
//! kill it, raise its descriptor limit, or read its memory from /proc; and the built
//! `markgate-load` generator.
//!
//! The daemon gets a config file in its own temporary directory and listens on a unix socket
//! there; its audit trail goes there too. `ulimit -n` is raised by the shell that execs it, so no `unsafe`
//! setrlimit is needed. Dropping a [`Daemon`] kills it by its own PID.

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A markgate child process.
pub struct Daemon {
    child: Option<Child>,
    dir: tempfile::TempDir,
    config: PathBuf,
    /// The socket path (unix listeners).
    pub socket: PathBuf,
    /// Postfix-syntax endpoint (`unix:/…`).
    pub spec: String,
    log: PathBuf,
}

impl Daemon {
    /// Write a config (`listen` first, then `extra` TOML verbatim) and start the daemon on a
    /// unix socket in a fresh world-searchable directory (so Postfix's daemons can reach it).
    pub fn start(extra: &str) -> Daemon {
        Self::start_on(None, "", extra, None)
    }

    /// Like [`Daemon::start`] with top-level keys (`policy = …`) put before the first table.
    pub fn start_with_top(top: &str, extra: &str) -> Daemon {
        Self::start_on(None, top, extra, None)
    }

    /// Like [`Daemon::start`], listening on TCP 127.0.0.1:`port`.
    pub fn start_tcp(port: u16, extra: &str) -> Daemon {
        Self::start_on(Some(port), "", extra, None)
    }

    /// Like [`Daemon::start`], with the audit trail at `audit` (a file system the test can
    /// make fail) instead of in the daemon's directory.
    pub fn start_with_audit(audit: &Path, extra: &str) -> Daemon {
        Self::start_on(None, "", extra, Some(audit))
    }

    fn start_on(port: Option<u16>, top: &str, extra: &str, audit: Option<&Path>) -> Daemon {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::Builder::new()
            .prefix("markgate-daemon.")
            .tempdir_in("/tmp")
            .expect("temp dir");
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
            .expect("chmod");
        let socket = dir.path().join("markgate.sock");
        let spec = match port {
            Some(p) => format!("inet:127.0.0.1:{p}"),
            None => format!("unix:{}", socket.display()),
        };
        let config = dir.path().join("markgate.toml");
        let log = dir.path().join("markgate.log");
        // Each daemon keeps its own thread ledger file unless the test names one.
        let ledger_path = format!(
            "path = \"{}\"\n",
            dir.path().join("ledger.sqlite").display()
        );
        let extra = if !extra.contains("[ledger]\n") {
            format!("[ledger]\n{ledger_path}{extra}")
        } else if extra.contains("path =") {
            extra.to_owned()
        } else {
            extra.replacen("[ledger]\n", &format!("[ledger]\n{ledger_path}"), 1)
        };
        std::fs::write(
            &config,
            format!(
                "{top}listen = \"{spec}\"\n[socket]\nmode = \"0666\"\n[audit]\npath = \"{}\"\n{extra}\n",
                audit
                    .map(Path::to_path_buf)
                    .unwrap_or_else(|| dir.path().join("audit.jsonl"))
                    .display()
            ),
        )
        .expect("write config");
        let mut d = Daemon {
            child: None,
            dir,
            config,
            socket,
            spec,
            log,
        };
        d.restart();
        d
    }

    /// Start (again) with the same config; waits until the socket accepts connections.
    pub fn restart(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("open log");
        let child = Command::new("sh")
            .arg("-c")
            .arg("ulimit -n 8192 2>/dev/null || true; exec \"$0\" run --config \"$1\"")
            .arg(env!("CARGO_BIN_EXE_markgate"))
            .arg(&self.config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start markgate");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if self.accepts() {
                return;
            }
            if let Some(c) = self.child.as_mut()
                && let Ok(Some(status)) = c.try_wait()
            {
                panic!("markgate exited at start ({status}):\n{}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "markgate did not listen on {}:\n{}",
                self.socket.display(),
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Does the listener accept connections? (A TCP probe is closed at once, before OPTNEG.)
    fn accepts(&self) -> bool {
        match self.spec.strip_prefix("inet:") {
            Some(addr) => std::net::TcpStream::connect(addr).is_ok(),
            None => std::os::unix::net::UnixStream::connect(&self.socket).is_ok(),
        }
    }

    /// The daemon's process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// SIGKILL, and reap it.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Everything the daemon logged so far.
    pub fn log(&self) -> String {
        let mut s = String::new();
        if let Ok(mut f) = std::fs::File::open(&self.log) {
            let _ = f.read_to_string(&mut s);
        }
        s
    }

    /// The directory holding config, socket and log.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!("markgate log:\n{}", self.log());
        }
    }
}

/// What one markgate-load run printed (its JSON line) and its exit status.
pub struct LoadResult {
    pub success: bool,
    pub json: String,
    pub stderr: String,
}

impl LoadResult {
    /// A numeric field of the JSON line.
    pub fn number(&self, key: &str) -> Option<f64> {
        let at = self.json.find(&format!("\"{key}\":"))? + key.len() + 3;
        let rest = &self.json[at..];
        let end = rest.find([',', '}']).unwrap_or(rest.len());
        rest[..end].trim().parse().ok()
    }
}

/// Run the built load generator with `args` (plus `--json`), raising its descriptor limit.
pub fn load(args: &[&str]) -> LoadResult {
    let out = Command::new("sh")
        .arg("-c")
        .arg("ulimit -n 8192 2>/dev/null || true; exec \"$@\"")
        .arg("sh")
        .arg(env!("CARGO_BIN_EXE_markgate-load"))
        .args(args)
        .arg("--json")
        .stdin(Stdio::null())
        .output()
        .expect("run markgate-load");
    LoadResult {
        success: out.status.success(),
        json: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// The benchmark messages committed under benches/data.
pub fn bench_message(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("benches/data")
        .join(name)
}
