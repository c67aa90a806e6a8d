//! Reload on SIGHUP: rebuild the daemon config and the policy, then swap them in atomically.
//!
//! Owns: the [`Swap`] cell that holds the live [`Live`] snapshot, the [`Reloader`] that builds
//! a new one from the files and swaps it in, and the signal loop (SIGHUP → reload, SIGUSR1 →
//! reopen the audit log).
//!
//! The rules (issue 6, ARCHITECTURE.md "Errors and what the MTA hears"):
//! - Everything new is built first (config read and checked, policy read and compiled); only
//!   a complete, valid set is swapped in, in one pointer store.
//! - The filter takes one [`Swap::snapshot`] (an `Arc`) per message, at its start, so a message
//!   in flight finishes on the policy it started with and the next one gets the new policy.
//! - A failed reload changes nothing: the old config and policy stay, and the reason — file,
//!   line, column, what was found, what was expected — is logged at `error` and reported to the
//!   [`ReloadObserver`] (which writes the `reload_failed` audit record).
//! - Settings that only take effect at start (the listen socket and its owner/mode, the server's
//!   limits and timeouts, logging) are kept as they were; if the new file changes them, a
//!   `warn` names each one and says a restart is needed.
//!
//! Must not: open listeners, touch connections, or decide anything about mail. The policy type
//! is a parameter ([`PolicySource`]), so this module does not depend on how policies are
//! compiled. Reference: packaging/README.md ("Reload").

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;

use tracing::{error, info, warn};

use crate::config::Config;
use crate::metrics::Metrics;
use crate::notify::Notifier;

/// A value that is replaced as a whole and read as a cheap `Arc` snapshot.
///
/// Readers hold the lock only to clone the `Arc`, so a reload never waits for a message and a
/// message never waits for a reload's file reading or compiling (which happen before
/// [`Swap::store`]).
#[derive(Debug)]
pub struct Swap<T> {
    cell: RwLock<Arc<T>>,
}

impl<T> Swap<T> {
    pub fn new(value: Arc<T>) -> Swap<T> {
        Swap {
            cell: RwLock::new(value),
        }
    }

    /// The current value. Keep it for the whole message.
    pub fn snapshot(&self) -> Arc<T> {
        // A poisoned lock only means a panic while holding it; the critical sections are a
        // clone and a store that cannot leave the Arc half-written, so the value is still whole.
        let guard = self.cell.read().unwrap_or_else(|p| p.into_inner());
        Arc::clone(&guard)
    }

    /// Replace the value; returns the previous one.
    pub fn store(&self, value: Arc<T>) -> Arc<T> {
        let mut guard = self.cell.write().unwrap_or_else(|p| p.into_inner());
        std::mem::replace(&mut *guard, value)
    }
}

/// How the policy named by the config is loaded. Implemented by the integrator over
/// `policy::Policy` (the policy module stays free of I/O policy decisions about reloads).
pub trait PolicySource: Send + Sync + 'static {
    /// The compiled, immutable policy.
    type Policy: Send + Sync + 'static;

    /// Read and compile the policy `config` names (its built-in default when it names none),
    /// and identify it for logs and audit (the lower-case hex SHA-256 of the bytes compiled;
    /// with `include`, of the policy and its fragments).
    /// The error is for people: file:line:column, what was found, what was expected.
    fn load(&self, config: &Config) -> Result<(Self::Policy, String), String>;

    /// What the `policy_loaded` audit record says about a loaded policy besides its digest
    /// (name, version, rule → control map). Nothing by default.
    fn about(&self, _policy: &Self::Policy) -> PolicyAbout {
        PolicyAbout::default()
    }
}

/// A loaded policy's name, version and rule → control map, for its `policy_loaded` record.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PolicyAbout {
    /// `policy.name`.
    pub name: Option<String>,
    /// `policy.version`.
    pub version: Option<String>,
    /// Rule id → control ids (`controls` in the policy).
    pub controls: crate::policy::ControlMap,
}

impl PolicyAbout {
    /// What a compiled policy says about itself.
    pub fn of(policy: &crate::policy::Policy) -> Self {
        PolicyAbout {
            name: Some(policy.name.clone()),
            version: policy.version.clone(),
            controls: policy.control_map(),
        }
    }
}

/// The production [`PolicySource`]: `policy::Policy` from the file the config names (and the
/// fragments it includes, read again on every reload), or the built-in default. Each file is
/// read once, so the digest is of exactly what was compiled.
#[derive(Debug, Default, Clone, Copy)]
pub struct PolicyFiles;

impl PolicySource for PolicyFiles {
    type Policy = crate::policy::Policy;

    fn about(&self, policy: &crate::policy::Policy) -> PolicyAbout {
        PolicyAbout::of(policy)
    }

    fn load(&self, config: &Config) -> Result<(crate::policy::Policy, String), String> {
        use crate::policy::{BUILTIN_NAME, BUILTIN_POLICY, Policy};
        let Some(path) = &config.policy else {
            let policy =
                Policy::from_str(BUILTIN_NAME, BUILTIN_POLICY).map_err(|e| e.to_string())?;
            return Ok((policy, sha256_hex(BUILTIN_POLICY.as_bytes())));
        };
        let bytes = std::fs::read(path).map_err(|e| {
            format!(
                "{}: cannot read the policy file: {e} (expected a readable policy file)",
                path.display()
            )
        })?;
        let policy = match std::str::from_utf8(&bytes) {
            // Fragments (`include`) are read again now, so a reload sees their edits too.
            Ok(text) => Policy::from_file_text(path, text),
            // Let the policy loader say where the bad bytes are.
            Err(_) => Policy::from_file(path),
        }
        .map_err(|e| e.to_string())?;
        // The policy file's SHA-256, or with fragments the digest over all of them.
        let digest = policy.digest.clone();
        Ok((policy, digest))
    }
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(bytes)
        .iter()
        .fold(String::with_capacity(64), |mut s, b| {
            use std::fmt::Write as _;
            let _ = write!(s, "{b:02x}");
            s
        })
}

/// What a message decision needs, as one consistent snapshot.
#[derive(Debug)]
pub struct Live<P> {
    /// The daemon config in force. Only the settings listed by [`restart_only_changes`] as
    /// restart-only are frozen at start; the rest (the policy path, the spill settings) follow
    /// reloads.
    pub config: Config,
    /// The compiled policy.
    pub policy: Arc<P>,
    /// The policy's digest (see [`PolicySource::digest`]).
    pub policy_digest: String,
    /// 0 at start, +1 for each successful reload.
    pub generation: u64,
}

/// Told about every reload, to write audit records (`policy_loaded`, `reload_failed`).
/// Called on the reload task, after the swap (or the refusal); must not block for long.
pub trait ReloadObserver: Send + Sync + 'static {
    /// A new config and policy are in force.
    fn applied(&self, policy_path: &str, digest: &str, generation: u64);
    /// The same, with what the policy says about itself; by default only [`Self::applied`].
    fn applied_policy(
        &self,
        policy_path: &str,
        digest: &str,
        generation: u64,
        _about: &PolicyAbout,
    ) {
        self.applied(policy_path, digest, generation);
    }
    /// The reload was refused; `kept_digest` stays in force.
    fn failed(&self, path: &str, error: &str, kept_digest: &str);
}

/// An observer that does nothing (tests, or no audit configured).
#[derive(Debug, Default)]
pub struct NoObserver;

impl ReloadObserver for NoObserver {
    fn applied(&self, _: &str, _: &str, _: u64) {}
    fn failed(&self, _: &str, _: &str, _: &str) {}
}

/// Adjusts a freshly read config before use: re-applies command-line overrides
/// (`--listen`, `--audit-log`) so a reload does not silently drop them.
pub type Overrides = Box<dyn Fn(&mut Config) + Send + Sync>;

/// The result of one reload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReloadOutcome {
    /// The new config and policy are in force.
    Applied {
        generation: u64,
        digest: String,
        /// Restart-only settings that changed in the file and were *not* applied.
        needs_restart: Vec<&'static str>,
    },
    /// Nothing changed; `error` says why (file:line:col).
    Failed { error: String },
}

/// Builds [`Live`] snapshots from the files and swaps them in.
pub struct Reloader<S: PolicySource> {
    config_path: Option<PathBuf>,
    overrides: Overrides,
    source: S,
    current: Arc<Swap<Live<S::Policy>>>,
    observer: Box<dyn ReloadObserver>,
    metrics: Option<Metrics>,
    notifier: Arc<Notifier>,
    /// One reload at a time, even if called from two places.
    busy: Mutex<()>,
}

/// Why the first load (at start) failed; the daemon refuses to start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("{0}")]
    Config(#[from] crate::config::ConfigError),
    #[error("{0}")]
    Policy(String),
}

impl<S: PolicySource> Reloader<S> {
    /// Load config and policy for the first time. `config_path` `None` means the built-in
    /// default config (and then a reload can only re-read the policy).
    pub fn start(
        config_path: Option<PathBuf>,
        overrides: Overrides,
        source: S,
        observer: Box<dyn ReloadObserver>,
        metrics: Option<Metrics>,
        notifier: Arc<Notifier>,
    ) -> Result<Reloader<S>, StartError> {
        let mut config = read_config(config_path.as_deref())?;
        overrides(&mut config);
        let (policy, digest) = source.load(&config).map_err(StartError::Policy)?;
        let live = Live {
            config,
            policy: Arc::new(policy),
            policy_digest: digest,
            generation: 0,
        };
        Ok(Reloader {
            config_path,
            overrides,
            source,
            current: Arc::new(Swap::new(Arc::new(live))),
            observer,
            metrics,
            notifier,
            busy: Mutex::new(()),
        })
    }

    /// The cell the filter reads its per-message snapshot from.
    pub fn current(&self) -> Arc<Swap<Live<S::Policy>>> {
        Arc::clone(&self.current)
    }

    /// Re-read the config file and the policy; swap them in if both are valid. Blocking (file
    /// reads, regex compilation): call it from `spawn_blocking` or a dedicated thread.
    pub fn reload(&self) -> ReloadOutcome {
        let _one_at_a_time = self.busy.lock().unwrap_or_else(|p| p.into_inner());
        let started = Instant::now();
        if let Err(e) = self
            .notifier
            .reloading("reloading configuration and policy")
        {
            warn!(error = %e, "could not notify systemd of the reload");
        }
        let old = self.current.snapshot();
        let outcome = match self.build(&old) {
            Ok((live, needs_restart)) => {
                let generation = live.generation;
                let digest = live.policy_digest.clone();
                let policy_path = policy_name(&live.config);
                let about = self.source.about(&live.policy);
                self.current.store(Arc::new(live));
                for key in needs_restart.iter().filter(|k| !k.starts_with("ledger.")) {
                    warn!(
                        setting = key,
                        "changed in the config file but only takes effect at restart; still \
                         running with the old value (systemctl restart markgate)"
                    );
                }
                let ledger: Vec<&str> = needs_restart
                    .iter()
                    .copied()
                    .filter(|k| k.starts_with("ledger."))
                    .collect();
                if !ledger.is_empty() {
                    warn!(
                        settings = %ledger.join(", "),
                        "[ledger] changed in the config file, but the thread ledger is opened \
                         once at start: still using the old ledger until markgate is restarted \
                         (systemctl restart markgate)"
                    );
                }
                info!(
                    generation,
                    policy = %policy_path,
                    digest = %digest,
                    took_ms = started.elapsed().as_millis() as u64,
                    "reloaded configuration and policy"
                );
                self.observer
                    .applied_policy(&policy_path, &digest, generation, &about);
                ReloadOutcome::Applied {
                    generation,
                    digest,
                    needs_restart,
                }
            }
            Err((path, error)) => {
                error!(
                    file = %path,
                    kept = %old.policy_digest,
                    "reload failed; keeping the previous configuration and policy:\n{error}"
                );
                self.observer.failed(&path, &error, &old.policy_digest);
                ReloadOutcome::Failed { error }
            }
        };
        if let Some(m) = &self.metrics {
            m.reload(matches!(outcome, ReloadOutcome::Applied { .. }));
        }
        let status = match &outcome {
            ReloadOutcome::Applied { generation, .. } => {
                format!("running; policy generation {generation}")
            }
            ReloadOutcome::Failed { error } => {
                format!(
                    "running on the previous policy; reload failed: {}",
                    error.lines().next().unwrap_or("")
                )
            }
        };
        if let Err(e) = self.notifier.ready(&status) {
            warn!(error = %e, "could not notify systemd that the reload finished");
        }
        outcome
    }

    /// Build the next snapshot, or say which file was wrong and how.
    fn build(
        &self,
        old: &Live<S::Policy>,
    ) -> Result<(Live<S::Policy>, Vec<&'static str>), FileError> {
        let config_name = self.config_path.as_deref().map_or_else(
            || crate::config::BUILT_IN.to_string(),
            |p| p.display().to_string(),
        );
        let mut fresh = read_config(self.config_path.as_deref())
            .map_err(|e| (config_name.clone(), e.to_string()))?;
        (self.overrides)(&mut fresh);
        let (policy, digest) = self
            .source
            .load(&fresh)
            .map_err(|e| (policy_name(&fresh), e))?;
        let needs_restart = restart_only_changes(&old.config, &fresh);
        let config = keep_restart_only(&old.config, fresh);
        Ok((
            Live {
                config,
                policy: Arc::new(policy),
                policy_digest: digest,
                generation: old.generation + 1,
            },
            needs_restart,
        ))
    }
}

/// Which file a reload failed on, and the error for people.
type FileError = (String, String);

fn read_config(path: Option<&Path>) -> Result<Config, crate::config::ConfigError> {
    match path {
        Some(p) => Config::load(p),
        None => Ok(Config::default()),
    }
}

fn policy_name(config: &Config) -> String {
    config.policy.as_deref().map_or_else(
        || "<built-in policy>".to_string(),
        |p| p.display().to_string(),
    )
}

/// The config with every setting that follows reloads taken from `fresh` and every
/// restart-only setting kept from `running`. The live settings are listed here, and only here:
/// a new config key is restart-only until someone decides otherwise and adds it.
fn keep_restart_only(running: &Config, fresh: Config) -> Config {
    let mut kept = running.clone();
    kept.policy = fresh.policy;
    kept.limits.spill_threshold = fresh.limits.spill_threshold;
    kept.limits.spill_directory = fresh.limits.spill_directory;
    kept.limits.max_in_memory_message = fresh.limits.max_in_memory_message;
    kept
}

/// Restart-only settings whose value differs between the running and the fresh config, by
/// their key in markgate.toml.
pub fn restart_only_changes(running: &Config, fresh: &Config) -> Vec<&'static str> {
    let mut out = Vec::new();
    let mut check = |key: &'static str, changed: bool| {
        if changed {
            out.push(key);
        }
    };
    check("listen", running.listen != fresh.listen);
    check("socket.mode", running.socket.mode != fresh.socket.mode);
    check("socket.owner", running.socket.owner != fresh.socket.owner);
    check("socket.group", running.socket.group != fresh.socket.group);
    check(
        "limits.max_frame_size",
        running.limits.max_frame_size != fresh.limits.max_frame_size,
    );
    check(
        "limits.max_connections",
        running.limits.max_connections != fresh.limits.max_connections,
    );
    check(
        "timeouts.read",
        running.timeouts.read != fresh.timeouts.read,
    );
    check("timeouts.eom", running.timeouts.eom != fresh.timeouts.eom);
    check(
        "timeouts.progress",
        running.timeouts.progress != fresh.timeouts.progress,
    );
    check(
        "timeouts.shutdown_grace",
        running.timeouts.shutdown_grace != fresh.timeouts.shutdown_grace,
    );
    check(
        "logging.level",
        running.logging.level != fresh.logging.level,
    );
    check(
        "logging.format",
        running.logging.format != fresh.logging.format,
    );
    check(
        "metrics.listen",
        running.metrics.listen != fresh.metrics.listen,
    );
    // The thread ledger is opened once at start (a SQLite file, or a Redis connection), so
    // all of `[ledger]` is restart-only: the running store keeps serving until a restart.
    let (l, f) = (&running.ledger, &fresh.ledger);
    check("ledger.backend", l.backend != f.backend);
    check("ledger.path", l.path != f.path);
    check("ledger.url", l.url != f.url);
    check("ledger.prefix", l.prefix != f.prefix);
    check("ledger.timeout", l.timeout != f.timeout);
    // Keys added to Config later and not listed above are still caught, by name-less
    // comparison: anything else that differs is restart-only too.
    if out.is_empty() && keep_restart_only(running, fresh.clone()) != *running {
        out.push("(other settings)");
    }
    out
}

/// Reopens the audit log on SIGUSR1 (after logrotate renamed it). Implemented by the
/// integrator over `audit::AuditHandle::reopen`.
pub trait Reopen: Send + Sync + 'static {
    fn reopen(&self) -> impl std::future::Future<Output = Result<(), String>> + Send;
}

/// SIGUSR1 reopens the audit writer's file (the writer continues the hash chain).
impl Reopen for crate::audit::AuditHandle {
    async fn reopen(&self) -> Result<(), String> {
        crate::audit::AuditHandle::reopen(self)
            .await
            .map_err(|e| e.to_string())
    }
}

/// Writes the `policy_loaded` and `reload_failed` audit records for reloads. The records are
/// handed to the audit writer on the runtime given at construction, so the reload (which runs
/// on a blocking thread) never waits for the disk.
pub struct AuditObserver {
    audit: crate::audit::AuditHandle,
    runtime: tokio::runtime::Handle,
}

impl AuditObserver {
    pub fn new(audit: crate::audit::AuditHandle, runtime: tokio::runtime::Handle) -> Self {
        AuditObserver { audit, runtime }
    }

    fn record(&self, event: crate::audit::AuditEvent) {
        let audit = self.audit.clone();
        self.runtime.spawn(async move {
            let kind = event.kind();
            if let Err(e) = audit.record(event).await {
                error!(error = %e, event = %kind, "could not write the reload's audit record");
            }
        });
    }
}

impl ReloadObserver for AuditObserver {
    fn applied(&self, policy_path: &str, digest: &str, generation: u64) {
        self.applied_policy(policy_path, digest, generation, &PolicyAbout::default());
    }

    fn applied_policy(
        &self,
        policy_path: &str,
        digest: &str,
        _generation: u64,
        about: &PolicyAbout,
    ) {
        self.record(crate::audit::AuditEvent::PolicyLoaded(
            crate::audit::event::PolicyLoaded {
                path: policy_path.to_string(),
                digest: digest.to_string(),
                trigger: "reload".into(),
                policy_name: about.name.clone(),
                policy_version: about.version.clone(),
                controls: about.controls.clone(),
            },
        ));
    }

    fn failed(&self, path: &str, error: &str, kept_digest: &str) {
        self.record(crate::audit::AuditEvent::ReloadFailed(
            crate::audit::event::ReloadFailed {
                path: path.to_string(),
                error: error.to_string(),
                kept_digest: kept_digest.to_string(),
            },
        ));
    }
}

/// Serve SIGHUP (reload) and SIGUSR1 (reopen the audit log) until `shutdown` completes.
/// Signals that arrive while a reload runs are coalesced into one more reload.
pub async fn handle_signals<S, R>(
    reloader: Arc<Reloader<S>>,
    reopen: R,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> std::io::Result<()>
where
    S: PolicySource,
    R: Reopen,
{
    use tokio::signal::unix::{SignalKind, signal};
    let mut hup = signal(SignalKind::hangup())?;
    let mut usr1 = signal(SignalKind::user_defined1())?;
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => return Ok(()),
            Some(()) = hup.recv() => {
                info!("SIGHUP: reloading configuration and policy");
                let r = Arc::clone(&reloader);
                if let Err(e) = tokio::task::spawn_blocking(move || r.reload()).await {
                    error!(error = %e, "reload task failed; the previous configuration and policy stay");
                }
            }
            Some(()) = usr1.recv() => {
                match reopen.reopen().await {
                    Ok(()) => info!("SIGUSR1: audit log reopened"),
                    Err(e) => error!(error = %e, "SIGUSR1: could not reopen the audit log"),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write as _;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A policy for these tests: the file's text must be `policy N` (N a number) and the
    /// policy is N; anything else is an error at line 1, column 1, as a real loader reports.
    struct TextPolicy;

    impl PolicySource for TextPolicy {
        type Policy = u32;
        fn about(&self, policy: &u32) -> PolicyAbout {
            PolicyAbout {
                name: Some("text".into()),
                version: Some(policy.to_string()),
                controls: [("R".to_string(), vec!["ISM-0565".to_string()])].into(),
            }
        }
        fn load(&self, config: &Config) -> Result<(u32, String), String> {
            let Some(path) = &config.policy else {
                return Ok((0, "d0".into()));
            };
            let text = std::fs::read_to_string(path)
                .map_err(|e| format!("{}: cannot read: {e}", path.display()))?;
            text.trim()
                .strip_prefix("policy ")
                .and_then(|n| n.parse::<u32>().ok())
                .map(|n| (n, format!("d{n}")))
                .ok_or_else(|| {
                    format!(
                        "{}:1:1: found {:?}, expected `policy N`",
                        path.display(),
                        text.trim()
                    )
                })
        }
    }

    #[derive(Default)]
    struct Counting {
        applied: AtomicUsize,
        failed: Mutex<Vec<(String, String, String)>>,
    }

    impl ReloadObserver for Arc<Counting> {
        fn applied(&self, _: &str, _: &str, _: u64) {
            self.applied.fetch_add(1, Ordering::SeqCst);
        }
        fn failed(&self, path: &str, error: &str, kept: &str) {
            self.failed
                .lock()
                .expect("lock")
                .push((path.into(), error.into(), kept.into()));
        }
    }

    struct Files {
        dir: tempfile::TempDir,
    }

    impl Files {
        fn new() -> Files {
            Files {
                dir: tempfile::tempdir().expect("tempdir"),
            }
        }
        fn path(&self, name: &str) -> PathBuf {
            self.dir.path().join(name)
        }
        fn write(&self, name: &str, text: &str) {
            let mut f = std::fs::File::create(self.path(name)).expect("create");
            f.write_all(text.as_bytes()).expect("write");
        }
        fn config(&self, extra: &str) {
            let policy = self.path("policy.txt");
            self.write(
                "markgate.toml",
                &format!("policy = {:?}\n{extra}", policy.display().to_string()),
            );
        }
    }

    fn start(files: &Files, obs: Arc<Counting>, metrics: Option<Metrics>) -> Reloader<TextPolicy> {
        Reloader::start(
            Some(files.path("markgate.toml")),
            Box::new(|_| {}),
            TextPolicy,
            Box::new(obs),
            metrics,
            Arc::new(Notifier::disabled()),
        )
        .expect("start")
    }

    #[test]
    fn a_good_reload_swaps_and_in_flight_snapshots_keep_the_old_policy() {
        let f = Files::new();
        f.config("");
        f.write("policy.txt", "policy 1");
        let obs = Arc::new(Counting::default());
        let r = start(&f, obs.clone(), None);
        let cell = r.current();
        let in_flight = cell.snapshot();
        assert_eq!(*in_flight.policy, 1);

        f.write("policy.txt", "policy 2");
        let out = r.reload();
        assert_eq!(
            out,
            ReloadOutcome::Applied {
                generation: 1,
                digest: "d2".into(),
                needs_restart: vec![]
            }
        );
        assert_eq!(
            *in_flight.policy, 1,
            "the message in flight keeps its policy"
        );
        assert_eq!(
            *cell.snapshot().policy,
            2,
            "the next message gets the new one"
        );
        assert_eq!(obs.applied.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn a_broken_policy_keeps_the_old_one_and_says_where() {
        let f = Files::new();
        f.config("");
        f.write("policy.txt", "policy 7");
        let obs = Arc::new(Counting::default());
        let m = Metrics::new();
        let r = start(&f, obs.clone(), Some(m.clone()));
        f.write("policy.txt", "polcy 8");
        let ReloadOutcome::Failed { error } = r.reload() else {
            panic!("must fail")
        };
        assert!(error.contains("policy.txt:1:1"), "{error}");
        assert_eq!(*r.current().snapshot().policy, 7);
        assert_eq!(r.current().snapshot().generation, 0);
        let failed = obs.failed.lock().expect("lock").clone();
        assert_eq!(failed.len(), 1);
        assert!(failed[0].0.ends_with("policy.txt"));
        assert_eq!(failed[0].2, "d7");
        assert!(
            m.render()
                .contains(r#"markgate_reloads_total{result="failed"} 1"#)
        );
    }

    #[test]
    fn a_broken_config_keeps_everything_and_names_file_line_column() {
        let f = Files::new();
        f.config("");
        f.write("policy.txt", "policy 3");
        let r = start(&f, Arc::new(Counting::default()), None);
        f.config("[limits]\nmax_conections = 5\n");
        let ReloadOutcome::Failed { error } = r.reload() else {
            panic!("must fail")
        };
        let cfg = f.path("markgate.toml").display().to_string();
        assert!(error.contains(&format!("{cfg}:3:")), "{error}");
        assert!(error.contains("max_conections"), "{error}");
        assert_eq!(*r.current().snapshot().policy, 3);
    }

    #[test]
    fn restart_only_settings_are_named_and_kept() {
        let f = Files::new();
        f.config("listen = \"inet:127.0.0.1:9000\"\n");
        f.write("policy.txt", "policy 1");
        let r = start(&f, Arc::new(Counting::default()), None);
        f.config(
            "listen = \"inet:127.0.0.1:9001\"\n[socket]\nmode = \"0600\"\n\
             [limits]\nspill_threshold = \"2MiB\"\n",
        );
        let ReloadOutcome::Applied { needs_restart, .. } = r.reload() else {
            panic!("must apply")
        };
        assert_eq!(needs_restart, vec!["listen", "socket.mode"]);
        let live = r.current().snapshot();
        assert_eq!(
            live.config.listen.to_string(),
            "inet:127.0.0.1:9000",
            "listen kept"
        );
        assert_eq!(live.config.socket.mode, 0o660, "mode kept");
        assert_eq!(
            live.config.limits.spill_threshold,
            2 * 1024 * 1024,
            "live setting applied"
        );
    }

    #[test]
    fn a_changed_ledger_is_named_warned_about_and_kept() {
        let (logs, _guard) = crate::test_logs::Logs::capture();

        let f = Files::new();
        let old_file = f.path("ledger.sqlite");
        f.config(&format!(
            "[ledger]\nbackend = \"sqlite\"\npath = {:?}\n",
            old_file.display().to_string()
        ));
        f.write("policy.txt", "policy 1");
        let r = start(&f, Arc::new(Counting::default()), None);
        // Only a policy change: the ledger is not mentioned.
        f.write("policy.txt", "policy 2");
        let ReloadOutcome::Applied { needs_restart, .. } = r.reload() else {
            panic!("must apply")
        };
        assert!(needs_restart.is_empty(), "{needs_restart:?}");

        f.config(
            "[ledger]\nbackend = \"redis\"\nurl = \"redis://127.0.0.1:6390/\"\n\
             prefix = \"gw2:\"\ntimeout = \"50ms\"\n[limits]\nspill_threshold = \"2MiB\"\n",
        );
        f.write("policy.txt", "policy 3");
        let ReloadOutcome::Applied { needs_restart, .. } = r.reload() else {
            panic!("must apply")
        };
        assert_eq!(
            needs_restart,
            vec![
                "ledger.backend",
                "ledger.path",
                "ledger.url",
                "ledger.prefix",
                "ledger.timeout"
            ]
        );
        let live = r.current().snapshot();
        assert_eq!(*live.policy, 3, "the policy follows the reload");
        assert_eq!(live.config.limits.spill_threshold, 2 * 1024 * 1024);
        assert_eq!(
            live.config.ledger.backend,
            crate::ledger::BackendKind::Sqlite,
            "the old ledger is kept"
        );
        assert_eq!(live.config.ledger.path, old_file);
        let log = logs.text();
        let warned: Vec<&str> = log
            .lines()
            .filter(|l| l.contains("[ledger] changed"))
            .collect();
        assert_eq!(warned.len(), 1, "{log}");
        assert!(warned[0].contains("WARN"), "{log}");
        assert!(
            warned[0]
                .contains("ledger.backend, ledger.path, ledger.url, ledger.prefix, ledger.timeout"),
            "{log}"
        );
        assert!(warned[0].contains("restart"), "{log}");
        assert!(
            !log.contains("setting=ledger."),
            "one warning, not one per key: {log}"
        );
    }

    #[test]
    fn overrides_are_reapplied_so_they_do_not_look_like_changes() {
        let f = Files::new();
        f.config("");
        f.write("policy.txt", "policy 1");
        let r = Reloader::start(
            Some(f.path("markgate.toml")),
            Box::new(|c: &mut Config| {
                c.listen = crate::milter::ListenSpec::parse("unix:/tmp/cli.sock").expect("spec")
            }),
            TextPolicy,
            Box::new(NoObserver),
            None,
            Arc::new(Notifier::disabled()),
        )
        .expect("start");
        let ReloadOutcome::Applied { needs_restart, .. } = r.reload() else {
            panic!("must apply")
        };
        assert!(needs_restart.is_empty(), "{needs_restart:?}");
        assert_eq!(
            r.current().snapshot().config.listen.to_string(),
            "unix:/tmp/cli.sock"
        );
    }

    #[test]
    fn a_bad_policy_at_start_refuses_to_start() {
        let f = Files::new();
        f.config("");
        f.write("policy.txt", "nonsense");
        let e = Reloader::start(
            Some(f.path("markgate.toml")),
            Box::new(|_| {}),
            TextPolicy,
            Box::new(NoObserver),
            None,
            Arc::new(Notifier::disabled()),
        )
        .err()
        .expect("must refuse");
        assert!(e.to_string().contains("policy.txt:1:1"), "{e}");
    }

    #[test]
    fn reload_notifies_systemd_reloading_then_ready() {
        let f = Files::new();
        f.config("");
        f.write("policy.txt", "policy 1");
        let sock = f.path("notify.sock");
        let server = std::os::unix::net::UnixDatagram::bind(&sock).expect("bind");
        server
            .set_read_timeout(Some(std::time::Duration::from_secs(5)))
            .expect("timeout");
        let r = Reloader::start(
            Some(f.path("markgate.toml")),
            Box::new(|_| {}),
            TextPolicy,
            Box::new(NoObserver),
            None,
            Arc::new(Notifier::new(sock.as_os_str()).expect("notifier")),
        )
        .expect("start");
        f.write("policy.txt", "broken");
        r.reload();
        let mut buf = [0u8; 1024];
        let n = server.recv(&mut buf).expect("reloading");
        let first = String::from_utf8_lossy(&buf[..n]).to_string();
        assert!(first.starts_with("RELOADING=1\nMONOTONIC_USEC="), "{first}");
        let n = server.recv(&mut buf).expect("ready");
        let second = String::from_utf8_lossy(&buf[..n]).to_string();
        assert!(second.starts_with("READY=1\n"), "{second}");
        assert!(second.contains("reload failed"), "{second}");
    }

    #[test]
    fn concurrent_readers_always_see_a_whole_snapshot() {
        let cell = Arc::new(Swap::new(Arc::new((0u64, 0u64))));
        let writer = {
            let cell = Arc::clone(&cell);
            std::thread::spawn(move || {
                for i in 1..=2000u64 {
                    cell.store(Arc::new((i, i * 2)));
                }
            })
        };
        let mut last = 0;
        while last < 2000 {
            let s = cell.snapshot();
            assert_eq!(s.1, s.0 * 2, "torn snapshot");
            assert!(s.0 >= last, "went backwards");
            last = s.0;
            if writer.is_finished() && last < 2000 {
                last = cell.snapshot().0;
            }
        }
        writer.join().expect("writer");
    }

    #[test]
    fn policy_files_loads_the_real_policy_and_reports_real_errors_with_location() {
        let f = Files::new();
        f.write("policy.txt", crate::policy::BUILTIN_POLICY);
        f.config("");
        let config = Config::load(&f.path("markgate.toml")).expect("config");
        let (_, digest) = PolicyFiles.load(&config).expect("shipped policy loads");
        assert_eq!(digest, sha256_hex(crate::policy::BUILTIN_POLICY.as_bytes()));
        assert_eq!(digest.len(), 64);
        let (_, builtin) = PolicyFiles.load(&Config::default()).expect("built-in");
        assert_eq!(builtin, digest);

        f.write("policy.txt", "[scheme]\nname = \"x\"\nbogus_key = 1\n");
        let Err(e) = PolicyFiles.load(&config) else {
            panic!("must fail")
        };
        let at = format!("{}:", f.path("policy.txt").display());
        assert!(e.contains(&at), "{e}");
        assert!(
            e.lines().any(|l| l.starts_with(&at)
                && l[at.len()..]
                    .split(':')
                    .take(2)
                    .all(|n| n.parse::<usize>().is_ok())),
            "no file:line:col in {e}"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn reloads_are_audited_and_sigusr1_reopens_the_audit_file() {
        let f = Files::new();
        f.config("");
        f.write("policy.txt", "policy 1");
        let audit_path = f.path("audit.jsonl");
        let mut cfg = crate::audit::AuditConfig {
            path: audit_path.clone(),
            ..crate::audit::AuditConfig::default()
        };
        cfg.syslog.enabled = false;
        let audit = crate::audit::start(&cfg).expect("audit writer");
        let r = Arc::new(
            Reloader::start(
                Some(f.path("markgate.toml")),
                Box::new(|_| {}),
                TextPolicy,
                Box::new(AuditObserver::new(
                    audit.clone(),
                    tokio::runtime::Handle::current(),
                )),
                None,
                Arc::new(Notifier::disabled()),
            )
            .expect("start"),
        );
        f.write("policy.txt", "broken");
        let r2 = Arc::clone(&r);
        tokio::task::spawn_blocking(move || r2.reload())
            .await
            .expect("reload");
        f.write("policy.txt", "policy 2");
        let r2 = Arc::clone(&r);
        tokio::task::spawn_blocking(move || r2.reload())
            .await
            .expect("reload");

        // logrotate renames the file, then SIGUSR1: the next record goes to a new file.
        let deadline = Instant::now() + std::time::Duration::from_secs(10);
        let events = |p: &Path| -> Vec<String> {
            std::fs::read_to_string(p)
                .unwrap_or_default()
                .lines()
                .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
                .filter_map(|v| v.get("event").and_then(|e| e.as_str()).map(String::from))
                .collect()
        };
        while events(&audit_path).len() < 2 {
            assert!(Instant::now() < deadline, "records not written");
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        let first = events(&audit_path);
        assert!(first.contains(&"reload_failed".to_string()), "{first:?}");
        assert!(first.contains(&"policy_loaded".to_string()), "{first:?}");
        let text = std::fs::read_to_string(&audit_path).expect("audit");
        assert!(
            text.contains("policy.txt:1:1"),
            "the error is in the record: {text}"
        );
        assert!(text.contains("\"kept_digest\":\"d1\""), "{text}");
        // The reload record says what the policy is and maps its rules to controls.
        assert!(
            text.contains("\"policy_name\":\"text\",\"policy_version\":\"2\",\"controls\":{\"R\":[\"ISM-0565\"]}"),
            "{text}"
        );

        let rotated = f.path("audit.jsonl.1");
        std::fs::rename(&audit_path, &rotated).expect("rotate");
        Reopen::reopen(&audit).await.expect("reopen");
        f.write("policy.txt", "policy 3");
        let r2 = Arc::clone(&r);
        tokio::task::spawn_blocking(move || r2.reload())
            .await
            .expect("reload");
        while events(&audit_path).is_empty() {
            assert!(Instant::now() < deadline, "no record in the reopened file");
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        assert!(events(&audit_path).contains(&"policy_loaded".to_string()));
        audit.shutdown().await.expect("shutdown");
        let report = crate::audit::verify_files(&[rotated, audit_path]);
        assert!(
            report.ok(),
            "the chain continues across the reopen: {report:?}"
        );
    }
}
