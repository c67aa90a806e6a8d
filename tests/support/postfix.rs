//! A private, throw-away Postfix on loopback for end-to-end milter tests.
//!
//! ```text
//! swaks / Smtp client ──SMTP 127.0.0.1:smtp_port──► private Postfix ──milter──► markgate (or none)
//!                                                        │ relayhost
//!                                                        ▼
//!                                   smtp-sink 127.0.0.1:sink_port, one file per delivered message
//! ```
//!
//! Everything lives in one temporary directory (config, queue, data, maillog, sink dumps), ports
//! are picked free, so several instances run in parallel and the system Postfix (if any) is never
//! read or touched. Postfix needs root (its master starts as root and drops to user `postfix`),
//! and the directory must be searchable by `postfix` (made 0755 under /tmp). Readiness is
//! detected from the kernel's listen table, not by connecting: a connection to smtpd is an SMTP
//! session and would start a milter session. [`Postfix`]'s `Drop` stops Postfix and smtp-sink by
//! PID; after a failed test the directory is kept and its path printed.
//!
//! Worked out on Debian 12 with Postfix 3.7.

use std::fmt::Write as _;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::mta;
use super::peers;
use super::ports;

/// Tools a Postfix test needs.
pub const TOOLS: &[&str] = &["postfix", "postqueue", "smtp-sink", "swaks"];

/// How a private Postfix is set up. `Default` gives: no milter, tempfail when the milter fails,
/// milter protocol 6, short milter timeouts, fast queue retries.
#[derive(Debug, Clone)]
pub struct PostfixConfig {
    /// `smtpd_milters` value (Postfix syntax: `inet:127.0.0.1:PORT` or `unix:/path`); `None` for
    /// no milter.
    pub milter: Option<String>,
    /// Also filter locally submitted mail (`non_smtpd_milters`).
    pub non_smtpd: bool,
    /// `milter_default_action`.
    pub default_action: String,
    /// `milter_protocol`.
    pub protocol: u8,
    /// `milter_connect_timeout`, `milter_command_timeout`, `milter_content_timeout`.
    pub timeouts: (String, String, String),
    /// Any other main.cf settings, applied last; `{sink_port}` in a value becomes the sink's port.
    pub extra: Vec<(String, String)>,
}

impl Default for PostfixConfig {
    fn default() -> Self {
        PostfixConfig {
            milter: None,
            non_smtpd: false,
            default_action: "tempfail".into(),
            protocol: 6,
            timeouts: ("5s".into(), "10s".into(), "30s".into()),
            extra: Vec::new(),
        }
    }
}

impl PostfixConfig {
    /// With markgate (or any milter) at this Postfix-syntax endpoint.
    pub fn with_milter(spec: impl Into<String>) -> Self {
        PostfixConfig {
            milter: Some(spec.into()),
            ..PostfixConfig::default()
        }
    }
}

/// A running private Postfix plus its smtp-sink. Stopped when dropped.
pub struct Postfix {
    dir: Option<tempfile::TempDir>,
    root: PathBuf,
    etc: PathBuf,
    /// smtpd listens on 127.0.0.1 at this port.
    pub smtp_port: u16,
    /// smtp-sink listens on 127.0.0.1 at this port.
    pub sink_port: u16,
    sink: Option<Child>,
    master_pid: Option<u32>,
    sends: std::sync::atomic::AtomicU32,
}

/// What swaks did: its exit code (0 = the message was accepted) and the whole SMTP dialog.
#[derive(Debug, Clone)]
pub struct SwaksResult {
    pub code: i32,
    pub dialog: String,
}

impl SwaksResult {
    /// The server's reply lines (`<-` / `<**`), without the prefix.
    pub fn replies(&self) -> Vec<&str> {
        self.dialog
            .lines()
            .filter_map(|l| {
                l.strip_prefix("<-  ")
                    .or_else(|| l.strip_prefix("<** "))
                    .or_else(|| l.strip_prefix("<~  "))
            })
            .collect()
    }

    /// The reply the server gave to the command that starts with `command` (e.g. `MAIL FROM`),
    /// all lines joined with `\n`.
    pub fn reply_to(&self, command: &str) -> Option<String> {
        let mut lines = self.dialog.lines();
        while let Some(l) = lines.next() {
            let sent = l.strip_prefix(" -> ").or_else(|| l.strip_prefix(" ~> "));
            if sent.is_some_and(|s| s.starts_with(command)) {
                let mut out = Vec::new();
                for r in lines.by_ref() {
                    match r
                        .strip_prefix("<-  ")
                        .or_else(|| r.strip_prefix("<** "))
                        .or_else(|| r.strip_prefix("<~  "))
                    {
                        Some(text) => {
                            out.push(text.to_string());
                            // A reply ends with a line whose 4th byte is a space.
                            if text.as_bytes().get(3) != Some(&b'-') {
                                break;
                            }
                        }
                        None => break,
                    }
                }
                return Some(out.join("\n"));
            }
        }
        None
    }
}

/// One message as smtp-sink received it. smtp-sink writes LF line ends (it strips CR), so
/// `message` has LF where the wire had CRLF.
#[derive(Debug, Clone)]
pub struct Delivered {
    pub path: PathBuf,
    /// `X-Mail-Args`: the envelope sender as sent to the next hop plus its ESMTP args.
    pub mail_args: String,
    /// One `X-Rcpt-Args` per envelope recipient.
    pub rcpt_args: Vec<String>,
    /// The message as relayed by Postfix (starting with Postfix's own `Received:`), without
    /// smtp-sink's trace lines and its final separator line.
    pub message: Vec<u8>,
}

impl Delivered {
    /// Parse one smtp-sink dump file.
    pub fn parse(path: &Path) -> Delivered {
        let raw = fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
        let mut mail_args = String::new();
        let mut rcpt_args = Vec::new();
        let mut pos = 0;
        // smtp-sink's own lines: X-* envelope lines, then its Received header (with folded
        // continuation lines); the relayed message starts at the next unindented line.
        let mut seen_sink_received = false;
        while pos < raw.len() {
            let end = raw[pos..]
                .iter()
                .position(|&b| b == b'\n')
                .map_or(raw.len(), |i| pos + i + 1);
            let line = String::from_utf8_lossy(&raw[pos..end]);
            let line = line.trim_end_matches('\n');
            if let Some(v) = line.strip_prefix("X-Mail-Args: ") {
                mail_args = v.to_string();
            } else if let Some(v) = line.strip_prefix("X-Rcpt-Args: ") {
                rcpt_args.push(v.to_string());
            } else if line.starts_with("X-Client-") || line.starts_with("X-Helo-Args") {
            } else if !seen_sink_received && line.starts_with("Received: ") {
                seen_sink_received = true;
            } else if seen_sink_received && (line.starts_with('\t') || line.starts_with(' ')) {
            } else {
                break;
            }
            pos = end;
        }
        let mut message = raw[pos..].to_vec();
        // smtp-sink ends each dump with one empty line of its own.
        if message.ends_with(b"\n\n") {
            message.pop();
        }
        Delivered {
            path: path.to_path_buf(),
            mail_args,
            rcpt_args,
            message,
        }
    }

    /// The envelope recipients (addresses without `<>`), in the order smtp-sink logged them.
    pub fn recipients(&self) -> Vec<String> {
        self.rcpt_args
            .iter()
            .map(|a| {
                let addr = a.split_whitespace().next().unwrap_or("");
                addr.trim_start_matches('<')
                    .trim_end_matches('>')
                    .to_string()
            })
            .collect()
    }

    /// The header block (LF line ends, folding kept) and the body.
    pub fn split(&self) -> (&[u8], &[u8]) {
        match self.message.windows(2).position(|w| w == b"\n\n") {
            Some(i) => (&self.message[..i + 1], &self.message[i + 2..]),
            None => (&self.message[..], &[]),
        }
    }

    /// The body exactly as delivered (LF line ends).
    pub fn body(&self) -> &[u8] {
        self.split().1
    }

    /// Every header as (name, value) with folding kept as `\n` + whitespace, in order.
    pub fn headers(&self) -> Vec<(String, String)> {
        let (head, _) = self.split();
        let text = String::from_utf8_lossy(head);
        let mut out: Vec<(String, String)> = Vec::new();
        for line in text.lines() {
            if line.starts_with(' ') || line.starts_with('\t') {
                if let Some(last) = out.last_mut() {
                    last.1.push('\n');
                    last.1.push_str(line);
                }
            } else if let Some((name, value)) = line.split_once(':') {
                out.push((
                    name.to_string(),
                    value.strip_prefix(' ').unwrap_or(value).to_string(),
                ));
            }
        }
        out
    }

    /// The values of every header with this name (case-insensitive).
    pub fn header_values(&self, name: &str) -> Vec<String> {
        self.headers()
            .into_iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
            .collect()
    }

    /// The queue id Postfix gave the message, from its own `Received:` header
    /// (`by testbed.localdomain (Postfix) with ESMTP id 4F3A21C0B1`).
    pub fn queue_id(&self) -> Option<String> {
        let received = self.header("Received")?;
        let after = received.split(" id ").nth(1)?;
        after
            .split([';', ' ', '\n', '\t'])
            .next()
            .map(str::to_string)
    }

    /// The first value of a header.
    pub fn header(&self, name: &str) -> Option<String> {
        self.header_values(name).into_iter().next()
    }
}

/// Parse a header block (CRLF or LF line ends) into (name, value) pairs in order; folded lines
/// are kept as `\n` followed by the continuation line; the single space after the colon is
/// dropped.
pub fn parse_headers(head: &[u8]) -> Vec<(String, String)> {
    let text = String::from_utf8_lossy(head);
    let mut out: Vec<(String, String)> = Vec::new();
    for line in text.lines() {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.is_empty() {
            break;
        }
        if line.starts_with(' ') || line.starts_with('\t') {
            if let Some(last) = out.last_mut() {
                last.1.push('\n');
                last.1.push_str(line);
            }
        } else if let Some((name, value)) = line.split_once(':') {
            out.push((
                name.to_string(),
                value.strip_prefix(' ').unwrap_or(value).to_string(),
            ));
        }
    }
    out
}

/// CRLF → LF, which is what smtp-sink writes for what was CRLF on the wire.
pub fn crlf_to_lf(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len());
    let mut i = 0;
    while i < data.len() {
        if data[i] == b'\r' && data.get(i + 1) == Some(&b'\n') {
            i += 1;
            continue;
        }
        out.push(data[i]);
        i += 1;
    }
    out
}

impl Postfix {
    /// Write the configuration and start smtp-sink and Postfix; wait until both listen.
    /// Panics (failing the test) with the maillog when something does not come up.
    pub fn start(config: PostfixConfig) -> Postfix {
        let dir = tempfile::Builder::new()
            .prefix("markgate-postfix.")
            .tempdir_in("/tmp")
            .expect("create instance directory under /tmp");
        let root = dir.path().to_path_buf();
        check_searchable(&root);
        fs::set_permissions(&root, fs::Permissions::from_mode(0o755)).expect("chmod 755");
        let etc = root.join("etc");
        for d in ["etc", "spool", "data", "sink", "outgoing"] {
            fs::create_dir_all(root.join(d)).expect("mkdir");
        }
        chown_postfix(&root.join("data"));
        chown_postfix(&root.join("sink"));
        fs::write(root.join("maillog"), b"").expect("create maillog");

        let mut pf = Postfix {
            dir: Some(dir),
            root,
            etc,
            smtp_port: 0,
            sink_port: 0,
            sink: None,
            master_pid: None,
            sends: std::sync::atomic::AtomicU32::new(0),
        };
        // Another process on the machine may take a port between our check and Postfix's bind;
        // then start again on fresh ports.
        for attempt in 1..=3 {
            pf.smtp_port = ports::free_port();
            pf.sink_port = ports::free_port();
            pf.write_master_cf();
            pf.write_main_cf(&config);
            match pf.start_sink().and_then(|()| pf.start_postfix()) {
                Ok(()) => return pf,
                Err(e) if e.contains("Address already in use") && attempt < 3 => {
                    eprintln!("port collision, starting again on other ports: {e}");
                    pf.stop();
                    fs::write(pf.root.join("maillog"), b"").expect("truncate maillog");
                }
                Err(e) => panic!("{e}"),
            }
        }
        unreachable!("the last attempt returns or panics")
    }

    /// The instance directory (config in `etc/`, queue in `spool/`, dumps in `sink/`).
    pub fn dir(&self) -> &Path {
        &self.root
    }

    /// Postfix's log so far.
    pub fn maillog(&self) -> String {
        fs::read_to_string(self.root.join("maillog")).unwrap_or_default()
    }

    /// Send one message with swaks. `args` are swaks options such as `--from`, `--to a,b`,
    /// `--header 'Subject: x'`, `--body text`, `--xclient 'ADDR=… LOGIN=…'`; `--server` and a
    /// quiet-free transcript are added here.
    pub fn swaks(&self, args: &[&str]) -> SwaksResult {
        let quiet = ["--timeout", "60", "--suppress-data"];
        mta::swaks(self.smtp_port, &[&quiet[..], args].concat())
    }

    /// Send an exact message (`data`: headers, empty line, body; CRLF or LF, ending with a line
    /// break) with swaks `--data`, to the given recipients.
    pub fn send_data(&self, from: &str, to: &[&str], data: &[u8]) -> SwaksResult {
        self.send_data_with(from, to, data, &[])
    }

    /// [`Postfix::send_data`] with more swaks options (e.g. `--xclient`).
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

    /// Submit a message locally with Postfix's `sendmail` (the pickup path, which only
    /// `non_smtpd_milters` sees). Returns sendmail's exit code and its output.
    pub fn sendmail(&self, from: &str, to: &[&str], data: &[u8]) -> (i32, String) {
        use std::io::Write;
        let mut child = Command::new(peers::tool("sendmail"))
            .arg("-C")
            .arg(&self.etc)
            .args(["-i", "-f", from])
            .args(to)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run sendmail");
        if let Some(mut stdin) = child.stdin.take() {
            stdin.write_all(data).expect("write to sendmail");
        }
        let out = child.wait_with_output().expect("wait for sendmail");
        let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.push_str(&String::from_utf8_lossy(&out.stderr));
        (out.status.code().unwrap_or(-1), text)
    }

    /// Ask Postfix to retry deferred mail now (`postqueue -f`).
    pub fn flush(&self) {
        let st = Command::new(peers::tool("postqueue"))
            .arg("-c")
            .arg(&self.etc)
            .arg("-f")
            .status()
            .expect("run postqueue -f");
        assert!(st.success(), "postqueue -f failed");
    }

    /// The queue listing (`postqueue -p`).
    pub fn queue(&self) -> String {
        let out = Command::new(peers::tool("postqueue"))
            .arg("-c")
            .arg(&self.etc)
            .arg("-p")
            .output()
            .expect("run postqueue -p");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// How many messages Postfix has finished with (delivered to every recipient or bounced):
    /// the number of `QUEUEID: removed` log lines.
    pub fn removed_count(&self) -> usize {
        self.maillog()
            .lines()
            .filter(|l| l.ends_with(": removed"))
            .count()
    }

    /// Every dump file smtp-sink has written so far, oldest first.
    pub fn delivered(&self) -> Vec<Delivered> {
        mta::sink_dumps(&self.root)
    }

    /// Wait until at least `n` messages were delivered to the sink and Postfix has logged them as
    /// done, then return all delivered messages. Panics with the maillog and the queue after
    /// `timeout`.
    pub fn wait_delivered(&self, n: usize, timeout: Duration) -> Vec<Delivered> {
        let deadline = Instant::now() + timeout;
        loop {
            // Postfix logs `removed` only after smtp-sink answered 250 to the end of data, which
            // it does after writing the dump; so both counts together mean complete files.
            let files = fs::read_dir(self.root.join("sink")).map_or(0, |rd| rd.count());
            if files >= n && self.removed_count() >= n {
                return self.delivered();
            }
            if Instant::now() >= deadline {
                panic!(
                    "timeout: {files} file(s) in the sink, {} removed, want {n}\nqueue:\n{}\nmaillog:\n{}",
                    self.removed_count(),
                    self.queue(),
                    self.maillog()
                );
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// Wait until the maillog contains `needle` (e.g. a milter error), returning the log.
    pub fn wait_log(&self, needle: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let log = self.maillog();
            if log.contains(needle) {
                return log;
            }
            if Instant::now() >= deadline {
                panic!("timeout waiting for {needle:?} in the maillog:\n{log}");
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    fn write_master_cf(&self) {
        // chroot off everywhere (column 5 = n): the instance lives outside the system's queue
        // directory. smtpd listens on loopback only. postlog lets Postfix write maillog_file
        // without syslog. pickup wakes every second (not 60 s) so locally submitted mail that a
        // failing milter held back is retried quickly.
        let services = [
            (
                format!("127.0.0.1:{}", self.smtp_port),
                "inet",
                "n",
                "-",
                "smtpd",
            ),
            ("pickup".into(), "unix", "n", "1 1", "pickup"),
            ("cleanup".into(), "unix", "n", "- 0", "cleanup"),
            ("qmgr".into(), "unix", "n", "300 1", "qmgr"),
            ("rewrite".into(), "unix", "-", "-", "trivial-rewrite"),
            ("bounce".into(), "unix", "-", "- 0", "bounce"),
            ("defer".into(), "unix", "-", "- 0", "bounce"),
            ("trace".into(), "unix", "-", "- 0", "bounce"),
            ("verify".into(), "unix", "-", "- 1", "verify"),
            ("flush".into(), "unix", "n", "1000? 0", "flush"),
            ("proxymap".into(), "unix", "-", "-", "proxymap"),
            ("proxywrite".into(), "unix", "-", "- 1", "proxymap"),
            ("smtp".into(), "unix", "-", "-", "smtp"),
            ("relay".into(), "unix", "-", "-", "smtp"),
            ("showq".into(), "unix", "n", "-", "showq"),
            ("error".into(), "unix", "-", "-", "error"),
            ("retry".into(), "unix", "-", "-", "error"),
            ("discard".into(), "unix", "-", "-", "discard"),
            ("anvil".into(), "unix", "-", "- 1", "anvil"),
            ("scache".into(), "unix", "-", "- 1", "scache"),
            ("postlog".into(), "unix-dgram", "n", "- 1", "postlogd"),
        ];
        let mut cf = String::from("# written by markgate's test harness\n");
        for (name, kind, private, wake_limit, command) in services {
            let (wakeup, limit) = wake_limit.split_once(' ').unwrap_or((wake_limit, "-"));
            writeln!(cf, "{name} {kind} {private} - n {wakeup} {limit} {command}").unwrap();
        }
        fs::write(self.etc.join("master.cf"), cf).expect("write master.cf");
    }

    fn write_main_cf(&self, c: &PostfixConfig) {
        let root = self.root.display();
        let milter = c.milter.clone().unwrap_or_default();
        let non_smtpd = if c.non_smtpd { milter.as_str() } else { "" };
        let mut cf = format!(
            "# written by markgate's test harness
compatibility_level = 3.6
config_directory = {root}/etc
queue_directory = {root}/spool
data_directory = {root}/data
maillog_file = {root}/maillog
maillog_file_prefixes = {root}
myhostname = testbed.localdomain
mydomain = localdomain
myorigin = $myhostname
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
mydestination =
relay_domains =
local_recipient_maps =
local_transport = error:local delivery is disabled in the test instance
alias_maps =
alias_database =
relayhost = [127.0.0.1]:{sink}
# Loopback only; relay everything (XCLIENT may fake any client). Postfix refuses to start without
# a reject_unauth_destination-like entry, hence the unreachable last item.
smtpd_relay_restrictions = permit_mynetworks, check_client_access static:OK, reject_unauth_destination
smtpd_recipient_restrictions =
smtpd_authorized_xclient_hosts = 127.0.0.0/8
smtpd_authorized_xforward_hosts = 127.0.0.0/8
smtpd_peername_lookup = no
smtp_dns_support_level = disabled
smtpd_tls_security_level = none
smtp_tls_security_level = none
biff = no
append_dot_mydomain = no
readme_directory = no
smtpd_banner = $myhostname ESMTP markgate-test
# Retry quickly when the sink or the milter was unavailable.
queue_run_delay = 1s
minimal_backoff_time = 1s
maximal_backoff_time = 5s
smtpd_milters = {milter}
non_smtpd_milters = {non_smtpd}
milter_default_action = {action}
milter_protocol = {protocol}
milter_connect_timeout = {t_connect}
milter_command_timeout = {t_command}
milter_content_timeout = {t_content}
",
            sink = self.sink_port,
            action = c.default_action,
            protocol = c.protocol,
            t_connect = c.timeouts.0,
            t_command = c.timeouts.1,
            t_content = c.timeouts.2,
        );
        for (k, v) in &c.extra {
            // `{sink_port}` in a value: the sink's port, known only now (e.g. transport maps).
            let v = v.replace("{sink_port}", &self.sink_port.to_string());
            writeln!(cf, "{k} = {v}").unwrap();
        }
        fs::write(self.etc.join("main.cf"), cf).expect("write main.cf");
    }

    fn start_sink(&mut self) -> Result<(), String> {
        mta::start_sink(&self.root, self.sink_port, &mut self.sink)
    }

    fn postfix_cmd(&self, action: &str) -> std::process::Output {
        Command::new(peers::tool("postfix"))
            .arg("-c")
            .arg(&self.etc)
            .arg(action)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("run postfix {action}: {e}"))
    }

    fn start_postfix(&mut self) -> Result<(), String> {
        // `postfix check` creates the queue's sub-directories with the right owners.
        for action in ["check", "start"] {
            let out = self.postfix_cmd(action);
            if !out.status.success() {
                return Err(format!(
                    "postfix {action} failed: {}{}\nmaillog:\n{}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr),
                    self.maillog()
                ));
            }
        }
        self.master_pid = fs::read_to_string(self.root.join("spool/pid/master.pid"))
            .ok()
            .and_then(|s| s.trim().parse().ok());
        let listening = ports::wait_listening(self.smtp_port, 20);
        // Listening could be someone else on that port: master logs a fatal bind error then.
        let log = self.maillog();
        if !listening || log.contains("Address already in use") {
            return Err(format!(
                "smtpd did not listen on {}:\n{log}",
                self.smtp_port
            ));
        }
        Ok(())
    }

    fn stop(&mut self) {
        if let Some(pid) = self.master_pid.take() {
            // What `postfix stop` does, without its one-second polling: SIGTERM to master (it
            // takes its children down), then SIGKILL to the whole process group if it lingers.
            signal(pid, "-TERM", false);
            let deadline = Instant::now() + Duration::from_secs(10);
            while Path::new(&format!("/proc/{pid}")).exists() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            if Path::new(&format!("/proc/{pid}")).exists() {
                signal(pid, "-KILL", true);
            }
        }
        if let Some(mut sink) = self.sink.take() {
            let _ = sink.kill();
            let _ = sink.wait();
        }
    }
}

impl Drop for Postfix {
    fn drop(&mut self) {
        self.stop();
        let keep = std::thread::panicking() || std::env::var_os("MARKGATE_KEEP_TESTBED").is_some();
        if let Some(dir) = self.dir.take()
            && keep
        {
            let path = dir.keep();
            eprintln!("kept the Postfix test instance in {}", path.display());
        }
    }
}

fn signal(pid: u32, sig: &str, group: bool) {
    let target = if group {
        format!("-{pid}")
    } else {
        pid.to_string()
    };
    let _ = Command::new("kill")
        .arg(sig)
        .arg("--")
        .arg(target)
        .stderr(Stdio::null())
        .status();
}

fn chown_postfix(path: &Path) {
    let st = Command::new("chown")
        .arg("postfix:postfix")
        .arg(path)
        .status()
        .expect("run chown");
    assert!(
        st.success(),
        "chown postfix:postfix {} failed",
        path.display()
    );
}

/// Postfix's daemons run as `postfix` and must reach the queue: every ancestor of the instance
/// directory needs the search bit for others.
fn check_searchable(dir: &Path) {
    for anc in dir.ancestors().skip(1) {
        if let Ok(m) = fs::metadata(anc) {
            assert!(
                m.permissions().mode() & 0o001 != 0,
                "{} is not searchable by user postfix; the instance directory must live under a \
                 world-searchable path such as /tmp",
                anc.display()
            );
        }
    }
}
