//! The markgate(8) manual page, generated from the clap command-line definition.
//!
//! Owns: assembling one page from clap_mangen's sections (title, name, synopsis, description,
//! global options), one `.SS` block per visible subcommand with its own synopsis and options
//! (clap_mangen would otherwise point at separate `markgate-run(8)` pages that nobody
//! installs), and the hand-written sections a daemon's page needs and a CLI definition cannot
//! carry: signals, files, exit status, see also.
//!
//! Must not: run anything. `markgate manpage` prints it; the committed copy is
//! `packaging/man/markgate.8`, and `tests/manpages.rs` fails when they differ, so the page
//! cannot drift from the CLI. Regenerate with `cargo run -q -- manpage > packaging/man/markgate.8`.

use std::io::{self, Write};

/// Everything after the generated part, in roff.
const DAEMON_SECTIONS: &str = r#".SH SIGNALS
.TP
.B SIGHUP
Re-read the configuration file and the policy it names.
Both are read and checked first; only a complete, valid set is put in force, for the next
message (messages in flight finish on the policy they started with).
A file with an error changes nothing: the error (file, line, column, what was found, what was
expected) is logged and audited and markgate goes on with what it had.
Settings that only take effect at start (the listen socket and its owner and mode, server
limits and timeouts, logging) keep their running value and a warning names them.
Under systemd:
.BR "systemctl reload markgate" .
.TP
.B SIGUSR1
Reopen the audit log, after
.BR logrotate (8)
renamed it.
The new file continues the hash chain of the old one.
.TP
.BR SIGTERM ", " SIGINT
Stop accepting connections, let messages in flight finish for at most
.B timeouts.shutdown_grace
(30 s), then exit.
.SH SYSTEMD
The packaged unit is
.B Type=notify:
markgate reports
.B READY=1
once its listener is up and the policy is loaded,
.B RELOADING=1
and
.B READY=1
around a reload, and
.B STOPPING=1
at shutdown, with a
.B STATUS=
line for
.BR "systemctl status" .
Without
.B $NOTIFY_SOCKET
nothing is sent.
.SH FILES
.TP
.B /etc/markgate/markgate.toml
Daemon configuration,
.BR markgate.toml (5).
.TP
.B /etc/markgate/policies/*.toml
The shipped policies,
.BR markgate-policy (5).
.TP
.B /var/spool/postfix/markgate/markgate.sock
The packaged milter socket, inside Postfix's chroot (Postfix names it
.BR unix:/markgate/markgate.sock ).
.TP
.B /var/log/markgate/audit.jsonl
The tamper-evident audit trail.
.TP
.B /usr/share/doc/markgate/examples/
Every configuration key with its default; Postfix and Sendmail snippets.
.SH EXIT STATUS
.TP
.B 0
Success (for
.BR run :
stopped cleanly after SIGTERM or SIGINT).
.TP
.B 1
Runtime failure: the listener could not be opened, the server failed.
.TP
.B 2
Usage or configuration error: bad arguments, or a configuration or policy file that cannot be
read or is invalid (the message names file, line and column).
.SH SEE ALSO
.BR markgate.toml (5),
.BR markgate-policy (5),
.BR postconf (5),
.BR systemd.service (5)
"#;

/// Render the whole page for the command `cmd` (the top-level `markgate` command).
pub fn render(cmd: clap::Command) -> io::Result<Vec<u8>> {
    let mut cmd = cmd;
    cmd.build();
    let man = clap_mangen::Man::new(cmd.clone())
        .section("8")
        .manual("System Manager's Manual")
        .source(format!("markgate {}", env!("CARGO_PKG_VERSION")));
    let mut out = Vec::new();
    man.render_title(&mut out)?;
    man.render_name_section(&mut out)?;
    man.render_synopsis_section(&mut out)?;
    man.render_description_section(&mut out)?;
    man.render_options_section(&mut out)?;
    out.write_all(b".SH COMMANDS\n")?;
    for sub in cmd.get_subcommands() {
        if sub.is_hide_set() || sub.get_name() == "help" {
            continue;
        }
        render_subcommand(&mut out, sub)?;
    }
    out.write_all(DAEMON_SECTIONS.as_bytes())?;
    Ok(out)
}

/// One subcommand as `.SS` with its synopsis line, what it does, and its options (as `.TP`
/// entries taken from clap_mangen's own rendering of that subcommand's options).
fn render_subcommand(out: &mut Vec<u8>, sub: &clap::Command) -> io::Result<()> {
    let name = format!("markgate {}", sub.get_name());
    let sub = sub.clone().bin_name(name.clone());
    let man = clap_mangen::Man::new(sub.clone());

    let mut synopsis = Vec::new();
    man.render_synopsis_section(&mut synopsis)?;
    writeln!(out, ".SS \"{}\"", escape(&name))?;
    out.extend_from_slice(&drop_section_header(&synopsis));
    if let Some(about) = sub.get_about() {
        writeln!(out, ".PP")?;
        writeln!(out, "{}", escape(&about.to_string()))?;
    }
    let mut options = Vec::new();
    man.render_options_section(&mut options)?;
    out.extend_from_slice(&drop_section_header(&options));
    Ok(())
}

/// clap_mangen starts each section with `.SH NAME`; inside our `.SS` block that line must go.
fn drop_section_header(roff: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(roff.len());
    for line in roff.split_inclusive(|&b| b == b'\n') {
        if line.starts_with(b".SH ") {
            continue;
        }
        out.extend_from_slice(line);
    }
    out
}

/// Roff text escapes for a line we write ourselves: backslashes, and a leading `.` or `'`.
fn escape(text: &str) -> String {
    let t = text.replace('\\', "\\e");
    if t.starts_with('.') || t.starts_with('\'') {
        format!("\\&{t}")
    } else {
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_protects_roff_control_characters() {
        assert_eq!(escape(r"a\b"), r"a\eb");
        assert_eq!(escape(".hidden"), r"\&.hidden");
        assert_eq!(escape("'quoted"), r"\&'quoted");
        assert_eq!(escape("plain"), "plain");
    }

    #[test]
    fn section_headers_are_dropped_and_the_rest_kept() {
        let got = drop_section_header(b".SH OPTIONS\n.TP\n\\fB\\-x\\fR\n");
        assert_eq!(got, b".TP\n\\fB\\-x\\fR\n");
    }
}
