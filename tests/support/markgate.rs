//! markgate's milter server run inside the test process, with the production filter or with a
//! test handler whose end-of-message answer a closure decides.
//!
//! The server runs on its own thread with its own tokio runtime, so tests stay ordinary
//! blocking `#[test]` functions that drive swaks, Postfix and miltertest. [`Milter::stop`] (or
//! drop) triggers the server's graceful shutdown and waits for it.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

use markgate::milter::{
    ConnectionFacts, Handler, HandlerError, ListenSpec, Outcome, Server, ServerConfig,
};
use markgate::transaction::{SpillPolicy, Transaction};

/// A running in-process milter server.
pub struct Milter {
    listen: ListenSpec,
    port: Option<u16>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<std::io::Result<()>>>,
}

/// Server settings for tests: the defaults, with a short shutdown grace.
pub fn test_server_config() -> ServerConfig {
    ServerConfig {
        shutdown_grace: Duration::from_secs(5),
        ..ServerConfig::default()
    }
}

impl Milter {
    /// Bind `listen` (port 0 picks a free port) and serve `handler` until stopped.
    pub fn start<H: Handler>(listen: ListenSpec, config: ServerConfig, handler: H) -> Milter {
        let (ready_tx, ready_rx) = mpsc::channel();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let spec = listen.clone();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()?;
            rt.block_on(async move {
                let server = match Server::bind(&spec, config).await {
                    Ok(s) => s,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e.to_string()));
                        return Err(e);
                    }
                };
                let _ = ready_tx.send(Ok(server.local_addr().map(|a| a.port())));
                server
                    .run(Arc::new(handler), async move {
                        let _ = stop_rx.await;
                    })
                    .await
            })
        });
        let port = match ready_rx.recv_timeout(Duration::from_secs(10)) {
            Ok(Ok(port)) => port,
            Ok(Err(e)) => panic!("markgate could not listen on {listen}: {e}"),
            Err(e) => panic!("markgate server thread did not start: {e}"),
        };
        Milter {
            listen,
            port,
            stop: Some(stop_tx),
            thread: Some(thread),
        }
    }

    /// On 127.0.0.1 at a free port.
    pub fn start_tcp<H: Handler>(handler: H) -> Milter {
        Self::start_tcp_on(0, handler)
    }

    /// On 127.0.0.1 at `port` (0: a free one).
    pub fn start_tcp_on<H: Handler>(port: u16, handler: H) -> Milter {
        let listen = ListenSpec::Tcp {
            host: "127.0.0.1".into(),
            port,
        };
        Milter::start(listen, test_server_config(), handler)
    }

    /// The TCP port (None for a unix socket).
    pub fn port(&self) -> Option<u16> {
        self.port
    }

    /// The endpoint in Postfix syntax, for `smtpd_milters`.
    pub fn postfix_spec(&self) -> String {
        match (&self.listen, self.port) {
            (ListenSpec::Tcp { host, .. }, Some(port)) => format!("inet:{host}:{port}"),
            (ListenSpec::Unix(path), _) => format!("unix:{}", path.display()),
            (spec, None) => panic!("no port for {spec}"),
        }
    }

    /// The endpoint in libmilter/Sendmail syntax, for miltertest.
    pub fn libmilter_spec(&self) -> String {
        match (&self.listen, self.port) {
            (ListenSpec::Tcp { host, .. }, Some(port)) => format!("inet:{port}@{host}"),
            (ListenSpec::Unix(path), _) => format!("unix:{}", path.display()),
            (spec, None) => panic!("no port for {spec}"),
        }
    }

    /// Gracefully stop the server and wait until it has released its socket.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            match thread.join() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    if !std::thread::panicking() {
                        panic!("markgate server failed: {e}");
                    }
                }
                Err(_) => {
                    if !std::thread::panicking() {
                        panic!("markgate server thread panicked");
                    }
                }
            }
        }
    }
}

impl Drop for Milter {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// What a [`TestHandler`] answers for a complete message.
pub type Decide = dyn Fn(&Transaction) -> Outcome + Send + Sync;

/// A handler that stores messages like the production filter (a [`Transaction`] with the given
/// spill policy) and answers with whatever `decide` returns.
pub struct TestHandler {
    spill: SpillPolicy,
    decide: Box<Decide>,
    delay: Duration,
    deciding: Arc<AtomicUsize>,
}

impl TestHandler {
    pub fn new(
        spill: SpillPolicy,
        decide: impl Fn(&Transaction) -> Outcome + Send + Sync + 'static,
    ) -> Self {
        TestHandler {
            spill,
            decide: Box::new(decide),
            delay: Duration::ZERO,
            deciding: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// Take this long (asynchronously) at end-of-message before deciding, like a slow policy.
    pub fn with_delay(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }

    /// Counts end-of-message calls that have started (before the delay).
    pub fn deciding(&self) -> Arc<AtomicUsize> {
        Arc::clone(&self.deciding)
    }
}

impl Handler for TestHandler {
    type Sink = Transaction;

    fn begin_message(&self, conn: &ConnectionFacts) -> Result<Transaction, HandlerError> {
        Ok(Transaction::new(conn, self.spill.clone()))
    }

    async fn end_of_message(
        &self,
        _conn: &ConnectionFacts,
        message: Transaction,
    ) -> Result<Outcome, HandlerError> {
        self.deciding.fetch_add(1, Ordering::SeqCst);
        if !self.delay.is_zero() {
            tokio::time::sleep(self.delay).await;
        }
        Ok((self.decide)(&message))
    }
}

/// A directory for unix sockets that Postfix's daemons (user `postfix`) can reach.
pub fn socket_dir() -> (tempfile::TempDir, PathBuf) {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::Builder::new()
        .prefix("markgate-sock.")
        .tempdir_in("/tmp")
        .expect("create socket directory");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
        .expect("chmod socket directory");
    let path = dir.path().join("markgate.sock");
    (dir, path)
}

/// markgate's production filter under the built-in policy with its `[disclaimer]` section
/// taken out and no audit trail: unmarked mail then passes byte for byte. For the tests that
/// prove the transport (pass-through, spill, stopped milter); what the default policy does to
/// mail is tested in `tests/enforce_*.rs`.
pub fn passing_filter(spill_threshold: usize) -> markgate::filter::Filter {
    use markgate::policy::{BUILTIN_POLICY, Policy};
    let start = BUILTIN_POLICY
        .find("\n[disclaimer]\n")
        .expect("the built-in policy has a disclaimer");
    let end = BUILTIN_POLICY
        .find("\n[inbound]\n")
        .expect("and an [inbound] section after it");
    let text = format!("{}{}", &BUILTIN_POLICY[..start], &BUILTIN_POLICY[end..]);
    let policy = Policy::from_str("built-in without disclaimer", &text).expect("loads");
    let mut config = markgate::config::Config::default();
    config.limits.spill_threshold = spill_threshold;
    markgate::filter::Filter::fixed(policy, config, None)
}
