//! The command line's thread-ledger parts: `markgate ledger stats|lookup|prune`,
//! `markgate policy test --ledger FILE` (a thread dry run), and opening the daemon's ledger.

use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use clap::Subcommand;
use tracing::warn;

use super::{EXIT_OK, EXIT_RUNTIME, EXIT_USAGE, Failure, logged_runtime};
use crate::config::Config;
use crate::filter::{self, LedgerHandle, RawSource};
use crate::ledger::{Backend, Entry, LedgerConfig, Store as _};
use crate::policy::Policy;

#[derive(Debug, Subcommand)]
pub(super) enum LedgerCommand {
    /// Entries, size on disk (or in Redis), oldest entry, lookups and hit rate.
    Stats,
    /// Print what the ledger holds for a Message-ID (with or without angle brackets).
    Lookup {
        #[arg(value_name = "MESSAGE-ID")]
        message_id: String,
    },
    /// Forget entries older than the policy's retention now (the daemon also does this every
    /// 10 minutes).
    Prune,
}

/// The daemon's ledger; `None` when off or when the policy has no `[thread]` (then nothing
/// would read it). An unusable ledger stops the start, naming the file and the fix.
pub(super) fn open_for_daemon(
    config: &Config,
    policy: &Policy,
    audit: &crate::audit::AuditHandle,
) -> Result<Option<LedgerHandle>, Failure> {
    if policy.thread.is_none() {
        return Ok(None);
    }
    let l = LedgerHandle::open(&config.ledger, Some(audit.clone()))
        .map_err(|e| logged_runtime(anyhow::anyhow!(e)))?;
    if l.is_none() {
        warn!("the policy has [thread] rules but [ledger] backend = \"off\": they are not checked");
    }
    Ok(l)
}

fn load(config: Option<&Path>) -> Result<(Config, Policy), String> {
    let config = match config {
        Some(p) => Config::load(p).map_err(|e| e.to_string())?,
        None => Config::default(),
    };
    let policy = match &config.policy {
        Some(p) => Policy::from_file(p),
        None => Policy::builtin(),
    }
    .map_err(|e| e.to_string())?;
    Ok((config, policy))
}

fn runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))
}

/// `markgate ledger …`: exit 0, 1 (the ledger could not answer) or 2 (bad config).
pub(super) fn command(cmd: LedgerCommand, config: Option<&Path>) -> u8 {
    let (config, policy) = match load(config) {
        Ok(x) => x,
        Err(e) => {
            eprintln!("{e}");
            return EXIT_USAGE;
        }
    };
    let store = match Backend::open(&config.ledger) {
        Ok(Some((s, fallback))) => {
            if let Some(why) = fallback {
                eprintln!("markgate: {why}");
            }
            s
        }
        Ok(None) => {
            eprintln!("markgate: the ledger is off ([ledger] backend = \"off\")");
            return EXIT_USAGE;
        }
        Err(e) => {
            eprintln!("markgate: cannot open the ledger: {e}");
            return EXIT_RUNTIME;
        }
    };
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("markgate: {e}");
            return EXIT_RUNTIME;
        }
    };
    let retention = policy
        .thread
        .as_ref()
        .map_or(crate::ledger::retention_secs(30) / 86_400, |t| {
            i64::from(t.retention_days)
        });
    let result = rt.block_on(async {
        match cmd {
            LedgerCommand::Stats => {
                let s = store.stats().await?;
                println!("ledger: {}", s.backend);
                println!("entries: {}", s.entries);
                println!(
                    "size: {} bytes{}",
                    s.bytes,
                    s.bytes
                        .checked_div(s.entries)
                        .map_or_else(String::new, |b| format!(" ({b} bytes per entry)"))
                );
                println!(
                    "oldest entry: {}",
                    s.oldest.map_or_else(|| "none".to_owned(), time_text)
                );
                println!("retention: {retention} days (policy {})", policy.name);
                let rate = if s.lookups == 0 {
                    "n/a".to_owned()
                } else {
                    format!("{:.1} %", 100.0 * s.hits as f64 / s.lookups as f64)
                };
                println!("lookups: {}, hits: {} (hit rate {rate})", s.lookups, s.hits);
                Ok(())
            }
            LedgerCommand::Lookup { message_id } => {
                let id = message_id
                    .trim()
                    .trim_start_matches('<')
                    .trim_end_matches('>');
                let entries = store.by_message_id(id.to_owned()).await?;
                if entries.is_empty() {
                    println!("no entry for <{id}> in {}", store.describe());
                }
                for e in &entries {
                    print_entry(e);
                }
                Ok(())
            }
            LedgerCommand::Prune => {
                let before = crate::ledger::SystemClock.now_secs() - retention * 86_400;
                let n = store.prune(before).await?;
                println!(
                    "pruned {n} entries older than {} ({retention} days) from {}",
                    time_text(before),
                    store.describe()
                );
                Ok(())
            }
        }
    });
    match result {
        Ok(()) => EXIT_OK,
        Err(e) => {
            let e: crate::ledger::LedgerError = e;
            eprintln!(
                "markgate: the ledger {} did not answer: {e}",
                store.describe()
            );
            EXIT_RUNTIME
        }
    }
}

fn print_entry(e: &Entry) {
    println!(
        "message-id: <{}>",
        e.message_id.as_deref().unwrap_or("(none)")
    );
    println!("  time: {}", time_text(e.time));
    println!("  direction: {}", e.way.as_str());
    println!(
        "  marking: {} (level {}{})",
        e.marking.as_deref().unwrap_or("unmarked"),
        e.level,
        if e.qualifiers.is_empty() {
            String::new()
        } else {
            format!("; qualifiers {}", e.qualifiers.join(", "))
        }
    );
    println!("  recipient domains: {}", e.domains.join(", "));
    println!("  subject (normalised): {}", e.subject);
    println!(
        "  text digest: {}",
        e.digest.as_deref().unwrap_or("(not read)")
    );
    if let Some(ti) = &e.thread_index {
        println!("  thread-index: {ti}");
    }
}

fn time_text(t: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(t)
        .ok()
        .and_then(|d| {
            d.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| t.to_string())
}

/// `markgate policy test --ledger FILE MSG…`: each message is checked against the ledger,
/// shown, then recorded (when it would be delivered), in order.
pub(super) fn policy_test_thread(
    policy_path: Option<&Path>,
    envelope: &super::envelope::Envelopes,
    json: bool,
    ledger: &Path,
    messages: &[PathBuf],
) -> u8 {
    let policy = match policy_path {
        Some(p) => Policy::from_file(p),
        None => Policy::builtin(),
    };
    let policy = match policy {
        Ok(p) => p,
        Err(e) => {
            eprintln!("{e}");
            return EXIT_USAGE;
        }
    };
    let Some(thread) = policy.thread.clone() else {
        eprintln!("markgate: the policy has no [thread] section: --ledger has nothing to check");
        return EXIT_USAGE;
    };
    let config = LedgerConfig {
        path: ledger.to_path_buf(),
        path_configured: true,
        ..LedgerConfig::default()
    };
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("markgate: {e}");
            return EXIT_RUNTIME;
        }
    };
    let handle = match rt.block_on(async { Backend::open(&config) }) {
        Ok(Some((store, _))) => LedgerHandle::new(store, std::time::Duration::from_secs(30), None)
            .with_clock(Arc::new(crate::ledger::SystemClock)),
        Ok(None) => return EXIT_USAGE,
        Err(e) => {
            eprintln!("markgate: cannot open the ledger {}: {e}", ledger.display());
            return EXIT_RUNTIME;
        }
    };
    super::messages::for_each(messages, |name, raw| {
        let source = RawSource::new(raw);
        let headers = filter::MessageSource::headers(&source);
        let keys = crate::inspect::thread::keys(&headers, Some(raw));
        let mut facts = crate::policy::thread::ThreadFacts {
            downgrade_marker: thread.downgrade.allow_header.as_ref().and_then(|h| {
                headers
                    .iter()
                    .find(|(n, _)| n.eq_ignore_ascii_case(h.as_bytes()))
                    .map(|(_, v)| String::from_utf8_lossy(v).trim().to_owned())
            }),
            ..Default::default()
        };
        match rt.block_on(handle.ask(&keys, thread.retention_days)) {
            Ok(found) => filter::ledger_fill(&mut facts, &keys, found),
            Err(e) => {
                eprintln!("markgate: the ledger did not answer: {e}");
                return ControlFlow::Break(EXIT_RUNTIME);
            }
        }
        let (envelope, read) = envelope.for_message(&policy, raw);
        if let Some(line) = read.filter(|_| !json) {
            println!("{line}");
        }
        let eval = match filter::evaluate_in_thread(
            &policy,
            envelope,
            &source,
            &crate::large::Limits::default(),
            &facts,
        ) {
            Ok(e) => e,
            Err(e) => {
                eprintln!("markgate: {name}: {e} (the daemon would answer 451 4.3.0)");
                return ControlFlow::Continue(false);
            }
        };
        super::report(name, &eval, json);
        let now = handle.clock().now();
        if let Some(entry) = filter::ledger_entry_of(&eval, &keys, now) {
            if let Err(e) = rt.block_on(handle.write(entry, thread.retention_days)) {
                eprintln!("markgate: {name}: not recorded in the ledger: {e}");
                return ControlFlow::Continue(false);
            } else if !json {
                println!("recorded in the ledger {}", ledger.display());
                println!();
            }
        }
        ControlFlow::Continue(true)
    })
}
