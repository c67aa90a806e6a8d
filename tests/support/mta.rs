//! What the Postfix and Sendmail harnesses share at their edges: swaks sending to the MTA's
//! SMTP port, exact messages handed to swaks as files, and the smtp-sink that receives what
//! the MTA delivers (started, waited for, its dump files read back).
//!
//! Must not: know either MTA's configuration or how it is started (`postfix`, `sendmail`).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use super::peers;
use super::ports;
use super::postfix::{Delivered, SwaksResult};

/// Run swaks against the SMTP server at 127.0.0.1:`port` with `args`; the dialog is its
/// standard output followed by its standard error.
pub fn swaks(port: u16, args: &[&str]) -> SwaksResult {
    let out = Command::new(peers::tool("swaks"))
        .arg("--server")
        .arg(format!("127.0.0.1:{port}"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run swaks");
    let mut dialog = String::from_utf8_lossy(&out.stdout).into_owned();
    dialog.push_str(&String::from_utf8_lossy(&out.stderr));
    SwaksResult {
        code: out.status.code().unwrap_or(-1),
        dialog,
    }
}

/// Send an exact message (`data`: headers, empty line, body; ending with a line break) with
/// swaks `--data`, through `swaks` (the harness's own, with its options): the message is
/// written to `outgoing/msg-N.eml` under `root`, N counted by `sends`.
#[allow(clippy::too_many_arguments)]
pub fn send_data(
    swaks: impl FnOnce(&[&str]) -> SwaksResult,
    root: &Path,
    sends: &AtomicU32,
    from: &str,
    to: &[&str],
    data: &[u8],
    extra: &[&str],
) -> SwaksResult {
    let n = sends.fetch_add(1, Ordering::Relaxed) + 1;
    let file = root.join("outgoing").join(format!("msg-{n}.eml"));
    // swaks ends the data with CRLF "." CRLF even when the data already ends with a line
    // break, which would add an empty line to the body. Hand it the data without its final
    // line break so that what goes on the wire is exactly `data`.
    let trimmed = data
        .strip_suffix(b"\r\n")
        .or_else(|| data.strip_suffix(b"\n"))
        .unwrap_or(data);
    fs::write(&file, trimmed).expect("write outgoing message");
    let to = to.join(",");
    let file = format!("@{}", file.display());
    let mut args = vec!["--from", from, "--to", &to, "--data", &file];
    args.extend_from_slice(extra);
    swaks(&args)
}

/// Start smtp-sink on 127.0.0.1:`port`, writing one dump per message under `root/sink/`, its
/// log to `root/smtp-sink.log`; the child goes into `sink` at once (so the harness's `Drop`
/// stops it even when it never listens). Fails when it exits or does not listen in 10 s.
pub fn start_sink(root: &Path, port: u16, sink: &mut Option<Child>) -> Result<(), String> {
    // smtp-sink refuses to run as root without -u; it then writes the dumps as `postfix`.
    // -d: one file per transaction, named from the template plus a random suffix.
    let log_path = root.join("smtp-sink.log");
    let log = fs::File::create(&log_path).expect("create sink log");
    let child = Command::new(peers::tool("smtp-sink"))
        .args(["-u", "postfix", "-4", "-d"])
        .arg(root.join("sink").join("msg."))
        .arg(format!("127.0.0.1:{port}"))
        .arg("1024")
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("dup sink log"))
        .stderr(log)
        .spawn()
        .expect("start smtp-sink");
    *sink = Some(child);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let exited = sink
            .as_mut()
            .is_some_and(|c| c.try_wait().ok().flatten().is_some());
        if exited || Instant::now() >= deadline {
            return Err(format!(
                "smtp-sink did not listen on {port}: {}",
                fs::read_to_string(&log_path).unwrap_or_default()
            ));
        }
        if ports::is_listening(port) {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Every dump file smtp-sink has written under `root/sink/` so far, oldest first.
pub fn sink_dumps(root: &Path) -> Vec<Delivered> {
    let mut files: Vec<(std::time::SystemTime, PathBuf)> = fs::read_dir(root.join("sink"))
        .map(|rd| {
            rd.filter_map(Result::ok)
                .filter_map(|e| {
                    let m = e.metadata().ok()?;
                    Some((m.modified().ok()?, e.path()))
                })
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    files.iter().map(|(_, p)| Delivered::parse(p)).collect()
}
