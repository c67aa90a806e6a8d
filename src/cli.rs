//! The command line: `markgate run` and `markgate version`.
//!
//! Owns: argument parsing (clap), loading the config, setting up logging, starting the milter
//! server with the production [`Filter`], signal handling, and turning failures into messages for
//! people and exit codes. The only place besides `main.rs` that uses `anyhow`.
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

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
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
    },
    /// Print the version and exit.
    Version,
}

/// A failure with the exit code it maps to.
struct Failure {
    code: u8,
    error: anyhow::Error,
}

fn usage(error: impl Into<anyhow::Error>) -> Failure {
    Failure {
        code: EXIT_USAGE,
        error: error.into(),
    }
}

fn runtime(error: impl Into<anyhow::Error>) -> Failure {
    Failure {
        code: EXIT_RUNTIME,
        error: error.into(),
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
        Command::Run { config, listen } => run(config.as_deref(), listen),
    };
    match result {
        Ok(()) => ExitCode::from(EXIT_OK),
        Err(f) => {
            // `{:#}` prints the whole cause chain on one line; config errors carry their own
            // multi-line location display.
            eprintln!("markgate: {:#}", f.error);
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
        std::fs::metadata(policy)
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
fn run(config_path: Option<&Path>, listen: Option<String>) -> Result<(), Failure> {
    let config = prepare(config_path, listen)?;
    crate::telemetry::init(&config.logging).map_err(runtime)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
        .map_err(runtime)?;
    rt.block_on(serve(config))
}

async fn serve(config: Config) -> Result<(), Failure> {
    // Handlers first, so a signal that arrives while we bind is not lost.
    let shutdown = shutdown_signal().map_err(runtime)?;
    let server = Server::bind(&config.listen, config.server_config())
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))
        .map_err(|e| {
            error!("{e:#}");
            runtime(e)
        })?;
    let address = server
        .local_addr()
        .map_or_else(|| config.listen.to_string(), |a| format!("inet:{a}"));
    info!(
        version = env!("CARGO_PKG_VERSION"),
        listen = %address,
        "markgate started"
    );
    match &config.policy {
        Some(p) => warn!(
            policy = %p.display(),
            "policy enforcement is not wired in yet: every message passes unchanged"
        ),
        None => info!("no policy enforcement yet: every message passes unchanged"),
    }

    let filter = Arc::new(Filter::new(config.spill_policy()));
    let grace = config.timeouts.shutdown_grace;
    server
        .run(filter, async move {
            let name = shutdown.await;
            info!(signal = name, grace = ?grace, "shutting down: no new connections, finishing messages in flight");
        })
        .await
        .context("milter server failed")
        .map_err(|e| {
            error!("{e:#}");
            runtime(e)
        })?;
    info!("markgate stopped");
    Ok(())
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
