//! The command line: `markgate run | check | policy test | audit verify | audit report | version`.
//!
//! Owns: argument parsing (clap), loading the config, setting up logging, starting the audit
//! writer, the alert task and the milter server with the production [`Filter`], signal
//! handling, the offline tools for people (check a config and policy, try a policy on messages
//! through the daemon's own pipeline, verify and summarise audit files), and turning failures
//! into messages for people and exit codes. The only place besides `main.rs` that uses
//! `anyhow`.
//!
//! Must not: know protocol or policy internals; it calls their public APIs.
//!
//! Exit codes:
//! - `0`: success (for `run`: stopped cleanly after SIGTERM or SIGINT).
//! - `1`: runtime failure: the listener could not be opened (address in use, permission denied),
//!   the server failed.
//! - `2`: usage or configuration error: bad arguments, a config file that cannot be read or is
//!   invalid (the message names file:line:column), an invalid `--listen` spec, a policy file that
//!   cannot be read.
//! - `markgate check` and `markgate audit verify`: 0 when everything is fine, 1 when any problem
//!   was found (each is printed). `markgate policy test`: 0 when every message was evaluated,
//!   1 when a message file could not be read, 2 for a policy that does not load.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use clap::{Parser, Subcommand};

/// `policy test`'s envelope: given, or read from each message's headers.
mod envelope;
/// `markgate ledger …`, `policy test --ledger` and the daemon's ledger (issue 12).
mod ledger;
mod messages;
use tracing::{error, info, warn};

use crate::config::Config;
use crate::filter::Filter;
use crate::milter::{ListenSpec, Server};

/// Success.
pub const EXIT_OK: u8 = 0;
/// Runtime failure.
pub const EXIT_RUNTIME: u8 = 1;
/// Usage or configuration error.
pub const EXIT_USAGE: u8 = 2;

const AFTER_HELP: &str = "\
Exit status: 0 success, 1 runtime failure (e.g. cannot listen), 2 usage or configuration error.
Logs go to stderr. Configuration reference: config/markgate.toml.";

/// markgate: a milter that enforces protective-marking (security label) policy at a mail gateway.
#[derive(Debug, Parser)]
#[command(name = "markgate", version, about, after_help = AFTER_HELP)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the milter daemon in the foreground until SIGTERM or SIGINT.
    Run {
        /// Daemon config file (TOML). Without it, the built-in default is used (listen on
        /// inet:127.0.0.1:8895, built-in policy).
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// Listen here instead of the configured address: inet:HOST:PORT, unix:/path,
        /// inet:PORT@HOST, inet6:PORT@HOST, local:/path.
        #[arg(long, value_name = "SPEC")]
        listen: Option<String>,
        /// Write the audit trail here instead of the configured file (default
        /// /var/log/markgate/audit.jsonl). The path in force is logged at start.
        #[arg(long, value_name = "FILE")]
        audit_log: Option<PathBuf>,
    },
    /// Check a daemon config and a policy; print every problem (file:line:column). Exit 0 when
    /// both load, 1 otherwise.
    Check {
        /// Daemon config file; without it, the built-in default config.
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// Policy file; without it, the one the config names (else the built-in default).
        #[arg(long, value_name = "FILE")]
        policy: Option<PathBuf>,
    },
    /// Policy tools.
    Policy {
        #[command(subcommand)]
        command: PolicyCommand,
    },
    /// Audit trail tools.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Thread-ledger tools (the ledger of the daemon config's `[ledger]`).
    Ledger {
        #[command(subcommand)]
        command: ledger::LedgerCommand,
        /// Daemon config file naming the ledger; without it, the built-in default.
        #[arg(long, value_name = "FILE", global = true)]
        config: Option<PathBuf>,
    },
    /// Print the version and exit.
    Version,
    /// Print the markgate(8) manual page (roff), generated from this command-line definition.
    /// Used to keep packaging/man/markgate.8 in step with the CLI.
    #[command(hide = true)]
    Manpage,
}

#[derive(Debug, Subcommand)]
enum PolicyCommand {
    /// Run messages through the daemon's own pipeline (inspect, decide, rewrite) under a
    /// policy and show what it would do: markings found and where, the effective level, each
    /// recipient's outcome with rule ids, the labels and disclaimer added, the SMTP answer and
    /// the exact output message.
    Test {
        /// Policy file; without it, the built-in default (policies/uk-gpms.toml).
        #[arg(long, value_name = "FILE")]
        policy: Option<PathBuf>,
        /// Envelope sender (MAIL FROM); "" for the null sender. Leave out --from and --rcpt
        /// to read each message's envelope from its own headers (sender: Return-Path, else
        /// From; recipients: To, Cc, Bcc; outbound when the sender's domain is one of the
        /// policy's own, else inbound), e.g. for a thread that came in and went out.
        #[arg(long, value_name = "ADDR", requires = "rcpt")]
        from: Option<String>,
        /// Envelope recipient (RCPT TO); repeat the option (or separate with commas) for
        /// several.
        #[arg(long, value_name = "ADDR", value_delimiter = ',', requires = "from")]
        rcpt: Vec<String>,
        /// The SMTP client's address (decides direction with the policy's networks).
        #[arg(long, value_name = "IP")]
        client_ip: Option<std::net::IpAddr>,
        /// The SASL-authenticated user (`{auth_authen}`).
        #[arg(long, value_name = "USER")]
        auth: Option<String>,
        /// The MTA's `{daemon_name}` (e.g. ORIGINATING for Postfix's submission service).
        #[arg(long, value_name = "NAME")]
        daemon_name: Option<String>,
        /// One JSON object per message instead of the text report.
        #[arg(long)]
        json: bool,
        /// A thread ledger (SQLite file, created if missing): each message is checked against
        /// it, then recorded in it, in the order given, so a thread can be dry-run. Entries
        /// are written to this file: use a copy of a production ledger. Without --from and
        /// --rcpt each message has its own envelope, read from its headers, so a thread that
        /// came in and went out is one call.
        #[arg(long, value_name = "FILE")]
        ledger: Option<PathBuf>,
        /// Message files (.eml), one or more.
        #[arg(value_name = "MESSAGE.eml", required = true, num_args = 1..)]
        messages: Vec<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
enum AuditCommand {
    /// Check the hash chain across audit files (oldest first); report the first broken or
    /// missing record with its line. Exit 0 when intact, 1 otherwise.
    Verify {
        #[arg(value_name = "FILE", required = true, num_args = 1..)]
        files: Vec<PathBuf>,
    },
    /// Summarise audit files: counts by direction, level, verdict and rule; blocked forwards
    /// and above-ceiling attempts; conflicts and invalid markings; top senders of blocked mail;
    /// the CoCo evidence section.
    Report {
        /// From this time (RFC 3339, or a date YYYY-MM-DD), inclusive.
        #[arg(long, value_name = "TIME")]
        since: Option<String>,
        /// Until this time (RFC 3339, or a date YYYY-MM-DD), exclusive.
        #[arg(long, value_name = "TIME")]
        until: Option<String>,
        /// JSON instead of text.
        #[arg(long)]
        json: bool,
        /// The compliance evidence report for an assessor: the hash chain verified first, then
        /// the controls table (rules, messages, incidents, incident-to-alert time, the 24 h
        /// bound), charts, and the policy in force with each reload. Exit 1 if the chain is
        /// broken (the report is still written, with the first bad record at the top).
        #[arg(long, conflicts_with = "json")]
        evidence: bool,
        /// With --evidence: html (one self-contained page), md or json.
        #[arg(long, value_name = "FORMAT", default_value = "html", value_parser = ["html", "md", "json"], requires = "evidence")]
        format: String,
        /// With --evidence: write the report to this file instead of standard output.
        #[arg(long, short = 'o', value_name = "OUT", requires = "evidence")]
        output: Option<PathBuf>,
        /// With --evidence: a policy file whose rule-to-control map applies to decisions made
        /// under its digest (for files with no policy_loaded record of it).
        #[arg(long, value_name = "POLICY", requires = "evidence")]
        policy: Vec<PathBuf>,
        #[arg(value_name = "FILE", required = true, num_args = 1..)]
        files: Vec<PathBuf>,
    },
}

/// The markgate(8) manual page in roff, generated from the clap definition (clap_mangen), so
/// the page and the CLI cannot drift: `tests/manpages.rs` compares it with the committed copy.
pub fn manpage() -> std::io::Result<Vec<u8>> {
    use clap::CommandFactory;
    crate::manpage::render(Cli::command())
}

/// A failure with the exit code it maps to.
struct Failure {
    code: u8,
    error: anyhow::Error,
    /// Already reported through the log (once logging is set up, failures go there, so that a
    /// JSON log stays all JSON); otherwise printed to stderr on exit.
    logged: bool,
}

fn usage(error: impl Into<anyhow::Error>) -> Failure {
    Failure {
        code: EXIT_USAGE,
        error: error.into(),
        logged: false,
    }
}

fn runtime(error: impl Into<anyhow::Error>) -> Failure {
    Failure {
        code: EXIT_RUNTIME,
        error: error.into(),
        logged: false,
    }
}

/// A runtime failure after logging is up: log it as an error.
fn logged_runtime(error: impl Into<anyhow::Error>) -> Failure {
    let error = error.into();
    error!("{error:#}");
    Failure {
        code: EXIT_RUNTIME,
        error,
        logged: true,
    }
}

/// Parse the command line and run it; the process's exit code.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // --help and --version are "errors" that print to stdout and exit 0.
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { EXIT_USAGE } else { EXIT_OK });
        }
    };
    let result = match cli.command {
        Command::Version => {
            println!("markgate {}", env!("CARGO_PKG_VERSION"));
            Ok(())
        }
        Command::Run {
            config,
            listen,
            audit_log,
        } => run(config.as_deref(), listen, audit_log),
        Command::Check { config, policy } => {
            return ExitCode::from(check(config.as_deref(), policy.as_deref()));
        }
        Command::Policy {
            command:
                PolicyCommand::Test {
                    policy,
                    from,
                    rcpt,
                    client_ip,
                    auth,
                    daemon_name,
                    json,
                    ledger,
                    messages,
                },
        } => {
            let envelope = match from {
                Some(from) => envelope::Envelopes::Given(crate::policy::Envelope {
                    sender: from.trim_matches(['<', '>']).to_owned(),
                    recipients: rcpt
                        .iter()
                        .map(|r| r.trim_matches(['<', '>']).to_owned())
                        .collect(),
                    client_ip,
                    auth_user: auth,
                    daemon_name,
                    next_hops: Vec::new(),
                }),
                None => envelope::Envelopes::FromHeaders {
                    client_ip,
                    auth_user: auth,
                    daemon_name,
                },
            };
            if let Some(file) = ledger {
                let code = ledger::policy_test_thread(
                    policy.as_deref(),
                    &envelope,
                    json,
                    &file,
                    &messages,
                );
                return ExitCode::from(code);
            }
            return ExitCode::from(policy_test(policy.as_deref(), &envelope, json, &messages));
        }
        Command::Audit {
            command: AuditCommand::Verify { files },
        } => {
            let report = crate::audit::verify_files(&files);
            print!("{report}");
            return ExitCode::from(if report.ok() { EXIT_OK } else { EXIT_RUNTIME });
        }
        Command::Audit {
            command:
                AuditCommand::Report {
                    since,
                    until,
                    evidence: true,
                    format,
                    output,
                    policy,
                    files,
                    ..
                },
        } => {
            return ExitCode::from(
                match audit_evidence(
                    since.as_deref(),
                    until.as_deref(),
                    &format,
                    output.as_deref(),
                    &policy,
                    &files,
                ) {
                    Ok(code) => code,
                    Err(f) => {
                        eprintln!("markgate: {:#}", f.error);
                        f.code
                    }
                },
            );
        }
        Command::Audit {
            command:
                AuditCommand::Report {
                    since,
                    until,
                    json,
                    files,
                    ..
                },
        } => audit_report(since.as_deref(), until.as_deref(), json, &files),
        Command::Ledger { command, config } => {
            return ExitCode::from(ledger::command(command, config.as_deref()));
        }
        Command::Manpage => manpage()
            .and_then(|page| {
                use std::io::Write as _;
                std::io::stdout().write_all(&page)
            })
            .context("cannot write the manual page")
            .map_err(runtime),
    };
    match result {
        Ok(()) => ExitCode::from(EXIT_OK),
        Err(f) => {
            if !f.logged {
                // `{:#}` prints the whole cause chain on one line; config errors carry their
                // own multi-line location display.
                eprintln!("markgate: {:#}", f.error);
            }
            ExitCode::from(f.code)
        }
    }
}

/// Load and check everything `markgate run` needs before anything starts.
fn prepare(config_path: Option<&Path>, listen: Option<String>) -> Result<Config, Failure> {
    let mut config = match config_path {
        Some(path) => Config::load(path).map_err(usage)?,
        None => Config::default(),
    };
    if let Some(spec) = listen {
        config.listen = ListenSpec::parse(&spec)
            .context("--listen")
            .map_err(usage)?;
    }
    if let Some(policy) = &config.policy {
        // Fail at start, not on the first message: the file must at least be readable.
        std::fs::File::open(policy)
            .and_then(|f| f.metadata())
            .and_then(|m| {
                if m.is_file() {
                    Ok(())
                } else {
                    Err(std::io::Error::other("not a regular file"))
                }
            })
            .with_context(|| format!("cannot read policy file {}", policy.display()))
            .map_err(usage)?;
    }
    Ok(config)
}

// File descriptors 0-2: a daemon started with one of them closed would hand that number to the
// next socket it opens, and a log line meant for stderr would go to the MTA. Rust's runtime already
// opens /dev/null on any of 0-2 that is closed before `main` runs (tests/cli.rs checks it), so
// nothing is needed here; after start-up only log lines are written, and only to stderr.
fn run(
    config_path: Option<&Path>,
    listen: Option<String>,
    audit_log: Option<PathBuf>,
) -> Result<(), Failure> {
    let mut config = prepare(config_path, listen)?;
    if let Some(path) = &audit_log {
        config.audit.path = path.clone();
    }
    crate::telemetry::init(&config.logging).map_err(runtime)?;
    // systemd readiness (Type=notify); a no-op when not started by systemd.
    let notifier = Arc::new(crate::notify::Notifier::from_env().unwrap_or_else(|e| {
        warn!(error = %e, "NOTIFY_SOCKET is unusable; systemd will not be told about readiness");
        crate::notify::Notifier::disabled()
    }));
    // The audit writer first: policy loads and reload failures are audited too.
    let audit = crate::audit::start(&config.audit)
        .map_err(|e| anyhow::anyhow!(audit_open_failure(&config.audit.path, &e)))
        .map_err(logged_runtime)?;
    info!(audit = %audit.path().display(), sync = ?config.audit.sync, fail_open = config.audit.fail_open, "audit trail open");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
        .map_err(logged_runtime)?;
    // Load the policy now (refusing to start on any error in it) and keep config + policy in
    // the reload cell; the command-line --listen and --audit-log are re-applied on every reload.
    let listen_override = config.listen.clone();
    let audit_override = config.audit.path.clone();
    let metrics = crate::metrics::Metrics::new();
    let reloader = crate::reload::Reloader::start(
        config_path.map(Path::to_path_buf),
        Box::new(move |c: &mut Config| {
            c.listen = listen_override.clone();
            c.audit.path = audit_override.clone();
        }),
        crate::reload::PolicyFiles,
        Box::new(crate::reload::AuditObserver::new(
            audit.clone(),
            rt.handle().clone(),
        )),
        Some(metrics.clone()),
        Arc::clone(&notifier),
    )
    .map_err(usage)?;
    // The daemon runs as a task on a worker, not on this thread inside `block_on`: the accept
    // loop then spawns each connection onto the worker that accepted it (its local queue)
    // instead of injecting it from outside and waking a worker for it, one thread hop less per
    // milter connection.
    let daemon = rt.spawn(serve(
        config,
        config_path.map(Path::to_path_buf),
        Arc::new(reloader),
        notifier,
        audit,
        metrics,
    ));
    match rt.block_on(daemon) {
        Ok(result) => result,
        Err(e) => Err(logged_runtime(anyhow::anyhow!(
            "the daemon task failed: {e}"
        ))),
    }
}

/// Why `markgate run` cannot start without its audit trail, and how to fix it: the built-in
/// default (/var/log/markgate) is only writable by root or the packaged `markgate` user, so a
/// first run as anyone else ends here.
fn audit_open_failure(path: &Path, error: &crate::audit::AuditError) -> String {
    let cause = match error {
        crate::audit::AuditError::Open { error, .. } => error.clone(),
        other => other.to_string(),
    };
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    format!(
        "cannot open the audit trail {}: {cause}. markgate does not start without an audit \
         trail it can write: run it as a user who may write {}, or give it another file with \
         `markgate run --audit-log PATH` (e.g. --audit-log ./audit.jsonl) or `[audit] path = \
         \"PATH\"` in the config file",
        path.display(),
        dir.display()
    )
}

async fn serve(
    config: Config,
    config_path: Option<PathBuf>,
    reloader: Arc<crate::reload::Reloader<crate::reload::PolicyFiles>>,
    notifier: Arc<crate::notify::Notifier>,
    audit: crate::audit::AuditHandle,
    metrics: crate::metrics::Metrics,
) -> Result<(), Failure> {
    use crate::audit::AuditEvent;
    use crate::audit::event::{DaemonStart, DaemonStop, PolicyLoaded};
    // Handlers first, so a signal that arrives while we bind is not lost.
    let shutdown = shutdown_signal().map_err(logged_runtime)?;
    let (metrics_stop, metrics_stopped) = tokio::sync::watch::channel(false);
    if let Some(addr) = config.metrics.listen {
        let listener = crate::metrics::bind(addr)
            .await
            .with_context(|| format!("cannot serve metrics on {addr}"))
            .map_err(logged_runtime)?;
        info!(%addr, "metrics endpoint: GET /metrics");
        let mut stopped = metrics_stopped.clone();
        tokio::spawn(metrics.clone().serve(listener, async move {
            let _ = stopped.wait_for(|s| *s).await;
        }));
    }
    let (signals_stop, signals_stopped) = tokio::sync::oneshot::channel::<()>();
    let signals = tokio::spawn(crate::reload::handle_signals(
        Arc::clone(&reloader),
        audit.clone(),
        async move {
            let _ = signals_stopped.await;
        },
    ));
    let server = Server::bind(&config.listen, config.server_config())
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))
        .map_err(logged_runtime)?;
    let address = server
        .local_addr()
        .map_or_else(|| config.listen.to_string(), |a| format!("inet:{a}"));
    let live = reloader.current().snapshot();
    let policy_path = config.policy.as_ref().map_or_else(
        || crate::policy::BUILTIN_NAME.to_owned(),
        |p| p.display().to_string(),
    );
    info!(
        version = env!("CARGO_PKG_VERSION"),
        listen = %address,
        policy = %policy_path,
        policy_name = %live.policy.name,
        mode = ?live.policy.mode,
        audit = %audit.path().display(),
        "markgate started"
    );
    for event in [
        AuditEvent::DaemonStart(DaemonStart {
            listen: vec![address.clone()],
            config_path: config_path.map(|p| p.display().to_string()),
            audit_path: audit.path().display().to_string(),
            pid: std::process::id(),
        }),
        AuditEvent::PolicyLoaded(PolicyLoaded {
            path: policy_path.clone(),
            digest: live.policy_digest.clone(),
            trigger: "start".into(),
            policy_name: Some(live.policy.name.clone()),
            policy_version: live.policy.version.clone(),
            controls: live.policy.control_map(),
        }),
    ] {
        if let Err(e) = audit.record(event).await {
            error!(error = %e, "cannot write the start records to the audit trail");
        }
    }

    let alerts = match crate::alert::AlertSettings::from_config(&config.alerts) {
        Ok(settings) if config.alerts.enabled => {
            crate::alert::AlertHandle::spawn(settings, Some(audit.clone()))
        }
        Ok(_) => crate::alert::AlertHandle::disabled(),
        Err(e) => {
            // The config loader validated it; this only happens with the built-in default.
            warn!(error = %e, "alerts disabled");
            crate::alert::AlertHandle::disabled()
        }
    };
    let relay = &config.alerts.relay;
    let notices = crate::filter::Notices::spawn(
        relay.host.clone(),
        relay.port,
        config.alerts.from.clone(),
        std::time::Duration::from_secs(relay.timeout.max(1)),
    );
    {
        let mut stopped = metrics_stopped.clone();
        tokio::spawn(metrics.clone().follow(
            Some(audit.clone()),
            Some(alerts.clone()),
            std::time::Duration::from_secs(5),
            async move {
                let _ = stopped.wait_for(|s| *s).await;
            },
        ));
    }
    let mut filter = Filter::new(
        reloader.current(),
        Some(audit.clone()),
        alerts.clone(),
        notices,
    )
    .with_metrics(metrics.clone());
    // Thread memory (issue 12): `cli/ledger.rs`.
    let mut ledger_at_stop = None;
    if let Some(l) = ledger::open_for_daemon(&config, &live.policy, &audit)? {
        l.spawn_pruner(reloader.current());
        ledger_at_stop = Some(l.clone());
        filter = filter.with_ledger(l);
    }
    let filter = Arc::new(filter);
    let grace = config.timeouts.shutdown_grace;
    if let Err(e) = notifier.ready(&format!(
        "listening on {address}; policy {}",
        live.policy_digest.get(..12).unwrap_or(&live.policy_digest)
    )) {
        warn!(error = %e, "could not tell systemd that markgate is ready");
    }
    let stopping = Arc::clone(&notifier);
    let (reason_tx, reason_rx) = tokio::sync::oneshot::channel::<&'static str>();
    let served = server
        .run(filter, async move {
            let name = shutdown.await;
            info!(signal = name, grace = ?grace, "shutting down: no new connections, finishing messages in flight");
            if let Err(e) = stopping.stopping(&format!("{name}: finishing messages in flight")) {
                warn!(error = %e, "could not tell systemd that markgate is stopping");
            }
            let _ = reason_tx.send(name);
            let _ = signals_stop.send(());
            let _ = metrics_stop.send(true);
        })
        .await;
    let reason = match &served {
        Ok(()) => reason_rx.await.unwrap_or("stopped").to_owned(),
        Err(e) => format!("fatal error: {e:#}"),
    };
    match signals.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => warn!(error = %e, "SIGHUP/SIGUSR1 handling could not be set up"),
        Err(e) => warn!(error = %e, "the signal task failed"),
    }
    // Every message is answered: commit the ledger's last entries before the process goes.
    if let Some(l) = &ledger_at_stop {
        l.flush().await;
    }
    alerts.shutdown().await;
    if let Err(e) = audit
        .record(AuditEvent::DaemonStop(DaemonStop {
            reason,
            abandoned_transactions: 0,
        }))
        .await
    {
        error!(error = %e, "cannot write the stop record to the audit trail");
    }
    if let Err(e) = audit.shutdown().await {
        error!(error = %e, "the audit writer did not stop cleanly");
    }
    served
        .context("milter server failed")
        .map_err(logged_runtime)?;
    info!("markgate stopped");
    Ok(())
}

/// `markgate check`: the config, then the policy it names (or `--policy`); every problem.
fn check(config_path: Option<&Path>, policy_path: Option<&Path>) -> u8 {
    let mut ok = true;
    let config = match config_path {
        Some(path) => match Config::load(path) {
            Ok(c) => {
                println!("{}: config OK", path.display());
                Some(c)
            }
            Err(e) => {
                println!("{e}");
                ok = false;
                None
            }
        },
        None => Some(Config::default()),
    };
    let policy_file = policy_path
        .map(Path::to_path_buf)
        .or_else(|| config.as_ref().and_then(|c| c.policy.clone()));
    let report = match &policy_file {
        Some(path) => crate::policy::check_file(path),
        None => {
            crate::policy::check_str(crate::policy::BUILTIN_NAME, crate::policy::BUILTIN_POLICY)
        }
    };
    print!("{}", report.render());
    if !report.ok() {
        ok = false;
    }
    if ok { EXIT_OK } else { EXIT_RUNTIME }
}

/// `markgate policy test`: each message through [`crate::filter::evaluate`], the daemon's own
/// pipeline, and the output message from `rewrite::apply`.
fn policy_test(
    policy_path: Option<&Path>,
    envelope: &envelope::Envelopes,
    json: bool,
    messages: &[PathBuf],
) -> u8 {
    use crate::filter::{self, RawSource};
    let loaded = match policy_path {
        Some(p) => crate::policy::Policy::from_file(p),
        None => crate::policy::Policy::builtin(),
    };
    let policy = match loaded {
        Ok(p) => p,
        Err(e) => {
            eprintln!("{e}");
            return EXIT_USAGE;
        }
    };
    messages::for_each(messages, |name, raw| {
        let (envelope, read) = envelope.for_message(&policy, raw);
        if let Some(line) = read.filter(|_| !json) {
            println!("{line}");
        }
        let eval = match filter::evaluate(&policy, envelope, &RawSource::new(raw)) {
            Ok(e) => e,
            Err(e) => {
                eprintln!("markgate: {name}: {e} (the daemon would answer 451 4.3.0)");
                return std::ops::ControlFlow::Continue(false);
            }
        };
        report(name, &eval, json);
        std::ops::ControlFlow::Continue(true)
    })
}

/// Print one evaluated message the way `markgate policy test` shows it (text or JSON).
fn report(name: &str, eval: &crate::filter::Evaluation, json: bool) {
    use crate::filter;
    let answer = filter::answer_text(eval);
    let output = eval.output();
    let notice = filter::sender_notice(eval);
    if json {
        let mut v = crate::policy::render::json(name, &eval.facts, &eval.decision);
        if let Some(obj) = v.as_object_mut() {
            obj.insert("answer".into(), serde_json::Value::String(answer));
            obj.insert("removed".into(), serde_json::json!(eval.removed()));
            obj.insert(
                "sender_notice".into(),
                serde_json::json!(notice.as_ref().map(|n| &n.body)),
            );
            obj.insert(
                "output".into(),
                output.as_ref().map_or(serde_json::Value::Null, |o| {
                    serde_json::Value::String(String::from_utf8_lossy(o).into_owned())
                }),
            );
        }
        println!("{v}");
    } else {
        print!(
            "{}",
            crate::policy::render::text(name, &eval.facts, &eval.decision)
        );
        println!("answer: {answer}");
        for r in eval.removed() {
            println!("removed (DELRCPT): {r}");
        }
        if let Some(n) = &notice {
            println!("notice to {}:", n.to);
            println!("  | Subject: {}", n.subject);
            for l in n.body.lines() {
                println!("  | {l}");
            }
        }
        match &output {
            Some(o) => {
                println!("output message:");
                println!("-----8<-----");
                print!("{}", String::from_utf8_lossy(o));
                if !o.ends_with(b"\n") {
                    println!();
                }
                println!("----->8-----");
            }
            None => println!("output message: none (refused)"),
        }
        println!();
    }
}

/// `--since` and `--until` as the audit reader's bounds (a usage error names the option).
fn time_bounds(
    since: Option<&str>,
    until: Option<&str>,
) -> Result<(Option<time::OffsetDateTime>, Option<time::OffsetDateTime>), Failure> {
    let bound = |t: Option<&str>, end: bool, option: &str| {
        t.map(|t| crate::audit::parse_time_bound(t, end))
            .transpose()
            .map_err(|e| usage(anyhow::anyhow!("{option}: {e}")))
    };
    Ok((
        bound(since, false, "--since")?,
        bound(until, true, "--until")?,
    ))
}

fn audit_report(
    since: Option<&str>,
    until: Option<&str>,
    json: bool,
    files: &[PathBuf],
) -> Result<(), Failure> {
    let (since, until) = time_bounds(since, until)?;
    let loaded = crate::audit::load_records(files)
        .context("cannot read the audit files")
        .map_err(runtime)?;
    let report = crate::audit::report(&loaded.records, since, until);
    if json {
        println!("{}", report.render_json());
    } else {
        print!("{}", report.render_text());
        if loaded.skipped_lines > 0 {
            println!(
                "({} line(s) did not parse; run `markgate audit verify` to see where)",
                loaded.skipped_lines
            );
        }
    }
    Ok(())
}

/// `markgate audit report --evidence`: exit 0 with an intact chain, 1 with a broken one (the
/// report is written either way), 2 for a usage error.
fn audit_evidence(
    since: Option<&str>,
    until: Option<&str>,
    format: &str,
    output: Option<&Path>,
    policies: &[PathBuf],
    files: &[PathBuf],
) -> Result<u8, Failure> {
    use crate::audit::evidence::{self, Format, KnownPolicy};
    let (since, until) = time_bounds(since, until)?;
    let format = Format::from_name(format)
        .ok_or_else(|| usage(anyhow::anyhow!("--format: expected html, md or json")))?;
    let mut known = Vec::new();
    for path in policies {
        let p = crate::policy::Policy::from_file(path)
            .map_err(|e| usage(anyhow::anyhow!("--policy {}:\n{e}", path.display())))?;
        known.push(KnownPolicy {
            digest: p.digest.clone(),
            name: Some(p.name.clone()),
            version: p.version.clone(),
            controls: p.control_map(),
        });
    }
    let report = evidence::evidence(files, since, until, &known)
        .context("cannot read the audit files")
        .map_err(runtime)?;
    let text = report.render(format);
    match output {
        Some(path) => std::fs::write(path, text.as_bytes())
            .with_context(|| format!("cannot write {}", path.display()))
            .map_err(runtime)?,
        None => {
            use std::io::Write as _;
            let mut out = std::io::stdout().lock();
            out.write_all(text.as_bytes())
                .and_then(|()| out.flush())
                .context("cannot write the report")
                .map_err(runtime)?;
        }
    }
    if !report.chain_intact() {
        eprintln!(
            "markgate: the audit hash chain is broken; the report shows the first bad record"
        );
        return Ok(EXIT_RUNTIME);
    }
    Ok(EXIT_OK)
}

/// A future that completes with the signal's name on the first SIGTERM or SIGINT. The handlers
/// are installed here, before the server runs, so a signal that arrives early is not lost.
fn shutdown_signal() -> anyhow::Result<impl std::future::Future<Output = &'static str>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        }
    })
}
