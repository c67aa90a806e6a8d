//! Listeners: parse listen specs, bind TCP or unix sockets, accept connections under a cap,
//! run one task per connection, and shut down gracefully.
//!
//! Listen specs (both MTAs' spellings are accepted):
//! - Postfix style: `inet:HOST:PORT` (`inet:[::1]:8895` for IPv6), `unix:/path`;
//! - Sendmail style: `inet:PORT@HOST`, `inet6:PORT@HOST`, `local:/path`;
//! - bare `inet:PORT` / `inet6:PORT` bind the **loopback** address (127.0.0.1 / ::1), not all
//!   addresses: a milter port open to the network invites the scanners of pitfall 8 and lets
//!   anyone read mail. Write `inet:0.0.0.0:PORT` to listen everywhere on purpose.
//!
//! Unix sockets: a stale socket file (nobody listening) is removed before binding, a live one
//! is an error (another instance runs); a non-socket file at the path is never removed. The
//! socket gets the configured mode and owner/group (names resolved from /etc/passwd and
//! /etc/group, or numeric ids), and is removed on shutdown if it is still ours.
//!
//! Connection cap: when `max_connections` connections are open we stop accepting (the MTA's
//! connects wait in the listen backlog) until one ends — an accepted connection is never
//! dropped unserved. Shutdown: stop accepting, tell connections to close at their next
//! message boundary, wait up to `shutdown_grace`, then abort what is left.

use std::fmt;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, UnixListener};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tracing::{debug, error, info, warn};

use super::conn::{ConnConfig, serve_connection};
use super::flags::Wants;
use super::handler::Handler;

/// Where to listen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListenSpec {
    /// A TCP socket. `host` is an address or a name, without brackets.
    Tcp { host: String, port: u16 },
    /// A unix-domain socket at this path.
    Unix(PathBuf),
}

/// Why a listen spec does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid listen address {spec:?}: {reason}; expected inet:HOST:PORT, inet:PORT@HOST, inet6:PORT@HOST, unix:/path or local:/path"
)]
pub struct ListenSpecError {
    pub spec: String,
    pub reason: String,
}

impl ListenSpec {
    /// Parse a Postfix- or Sendmail-style spec (see the module docs).
    pub fn parse(s: &str) -> Result<ListenSpec, ListenSpecError> {
        let err = |reason: &str| ListenSpecError {
            spec: s.to_string(),
            reason: reason.to_string(),
        };
        let (kind, rest) = s.split_once(':').ok_or_else(|| err("no type prefix"))?;
        match kind.to_ascii_lowercase().as_str() {
            "unix" | "local" => {
                if rest.is_empty() {
                    return Err(err("empty socket path"));
                }
                if rest.contains('\0') {
                    return Err(err("NUL in socket path"));
                }
                Ok(ListenSpec::Unix(PathBuf::from(rest)))
            }
            kind @ ("inet" | "inet6") => {
                let v6 = kind == "inet6";
                let parse_port = |p: &str| -> Result<u16, ListenSpecError> {
                    p.parse::<u16>()
                        .map_err(|_| err(&format!("port {p:?} is not a number from 0 to 65535")))
                };
                let (host, port) = if let Some((port, host)) = rest.split_once('@') {
                    (host.to_string(), parse_port(port)?)
                } else if let Some(after) = rest.strip_prefix('[') {
                    let (host, port) = after
                        .split_once("]:")
                        .ok_or_else(|| err("expected [ADDRESS]:PORT"))?;
                    (host.to_string(), parse_port(port)?)
                } else if let Some((host, port)) = rest.rsplit_once(':') {
                    if host.contains(':') {
                        return Err(err("an IPv6 address must be written [ADDRESS]:PORT"));
                    }
                    (host.to_string(), parse_port(port)?)
                } else {
                    let loopback = if v6 { "::1" } else { "127.0.0.1" };
                    (loopback.to_string(), parse_port(rest)?)
                };
                let host = host
                    .trim_start_matches('[')
                    .trim_end_matches(']')
                    .to_string();
                if host.is_empty() {
                    return Err(err("empty host"));
                }
                if v6 && host.parse::<std::net::Ipv4Addr>().is_ok() {
                    return Err(err("inet6 needs an IPv6 address or a name"));
                }
                Ok(ListenSpec::Tcp { host, port })
            }
            _ => Err(err(&format!("unknown type {kind:?}"))),
        }
    }
}

impl fmt::Display for ListenSpec {
    /// Postfix style, which `parse` reads back.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ListenSpec::Tcp { host, port } if host.contains(':') => {
                write!(f, "inet:[{host}]:{port}")
            }
            ListenSpec::Tcp { host, port } => write!(f, "inet:{host}:{port}"),
            ListenSpec::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

impl std::str::FromStr for ListenSpec {
    type Err = ListenSpecError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ListenSpec::parse(s)
    }
}

/// Listener and connection settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerConfig {
    /// Largest packet accepted from the MTA (code byte + payload). Default 2 MiB: Postfix
    /// sends a whole folded header in one packet, > 64 KiB when `header_size_limit` is raised.
    pub max_frame_size: usize,
    /// Connections served at once; more wait in the listen backlog. Default 512.
    pub max_connections: usize,
    /// Longest silence from the MTA between packets before the connection is closed.
    /// Default 600 s, above Postfix's longest milter timeout (300 s content timeout), since
    /// an SMTP session may sit idle between commands.
    pub read_timeout: Duration,
    /// Longest time the handler may take to decide a message before it is answered 451.
    /// Default 240 s, below Postfix's 300 s `milter_content_timeout`.
    pub eom_timeout: Duration,
    /// PROGRESS interval while the handler decides. Default 5 s, half of Sendmail's default
    /// 10 s read timeout (`T=R:10s`). Zero disables PROGRESS.
    pub progress_interval: Duration,
    /// How long shutdown waits for in-flight messages. Default 30 s.
    pub shutdown_grace: Duration,
    /// Mode of a unix socket. Default 0o660 (owner and group, e.g. `postfix`).
    pub socket_mode: u32,
    /// Owner of a unix socket (user name or numeric uid); `None` keeps the process's.
    pub socket_owner: Option<String>,
    /// Group of a unix socket (group name or numeric gid); `None` keeps the process's.
    pub socket_group: Option<String>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            max_frame_size: super::codec::DEFAULT_MAX_FRAME_SIZE,
            max_connections: 512,
            read_timeout: Duration::from_secs(600),
            eom_timeout: Duration::from_secs(240),
            progress_interval: Duration::from_secs(5),
            shutdown_grace: Duration::from_secs(30),
            socket_mode: 0o660,
            socket_owner: None,
            socket_group: None,
        }
    }
}

enum Listener {
    Tcp(TcpListener),
    Unix(UnixListener, SocketGuard),
}

/// Removes the socket file when dropped, if it is still the one we created.
struct SocketGuard {
    path: PathBuf,
    dev_ino: Option<(u64, u64)>,
}

impl Drop for SocketGuard {
    fn drop(&mut self) {
        if let (Ok(meta), Some(ours)) = (std::fs::symlink_metadata(&self.path), self.dev_ino)
            && (meta.dev(), meta.ino()) == ours
        {
            match std::fs::remove_file(&self.path) {
                Ok(()) => debug!(path = %self.path.display(), "removed milter socket"),
                Err(e) => {
                    warn!(path = %self.path.display(), error = %e, "cannot remove milter socket")
                }
            }
        }
    }
}

/// A bound listener, ready to [`Server::run`].
pub struct Server {
    listener: Listener,
    spec: ListenSpec,
    config: ServerConfig,
}

impl fmt::Debug for Server {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Server")
            .field("spec", &self.spec)
            .field("local_addr", &self.local_addr())
            .finish()
    }
}

impl Server {
    /// Bind the listener (creating and permissioning a unix socket).
    pub async fn bind(spec: &ListenSpec, config: ServerConfig) -> io::Result<Server> {
        let listener = match spec {
            ListenSpec::Tcp { host, port } => {
                Listener::Tcp(TcpListener::bind((host.as_str(), *port)).await?)
            }
            ListenSpec::Unix(path) => {
                remove_stale_socket(path)?;
                let l = UnixListener::bind(path)?;
                let meta = std::fs::symlink_metadata(path)?;
                let guard = SocketGuard {
                    path: path.clone(),
                    dev_ino: Some((meta.dev(), meta.ino())),
                };
                std::fs::set_permissions(
                    path,
                    std::fs::Permissions::from_mode(config.socket_mode),
                )?;
                let uid = config
                    .socket_owner
                    .as_deref()
                    .map(|o| resolve_id(o, Path::new("/etc/passwd")))
                    .transpose()?;
                let gid = config
                    .socket_group
                    .as_deref()
                    .map(|g| resolve_id(g, Path::new("/etc/group")))
                    .transpose()?;
                if uid.is_some() || gid.is_some() {
                    std::os::unix::fs::chown(path, uid, gid)?;
                }
                Listener::Unix(l, guard)
            }
        };
        info!(listen = %spec, "milter listening");
        Ok(Server {
            listener,
            spec: spec.clone(),
            config,
        })
    }

    /// The bound TCP address (None for unix sockets).
    pub fn local_addr(&self) -> Option<SocketAddr> {
        match &self.listener {
            Listener::Tcp(l) => l.local_addr().ok(),
            Listener::Unix(..) => None,
        }
    }

    /// Accept and serve connections until `shutdown` completes, then stop accepting, let
    /// connections finish their current message for up to `shutdown_grace`, and return.
    pub async fn run<H: Handler>(
        self,
        handler: Arc<H>,
        shutdown: impl Future<Output = ()> + Send,
    ) -> io::Result<()> {
        let Server {
            listener,
            spec,
            config,
        } = self;
        let conn_config = Arc::new(ConnConfig {
            max_frame_size: config.max_frame_size,
            read_timeout: config.read_timeout,
            eom_timeout: config.eom_timeout,
            progress_interval: config.progress_interval,
            wants: Wants::default(),
        });
        let slots = Arc::new(Semaphore::new(config.max_connections.max(1)));
        let (stop_tx, stop_rx) = watch::channel(false);
        let mut tasks = JoinSet::new();
        tokio::pin!(shutdown);
        // Warn about the cap at most once a minute under sustained load.
        let mut cap_warned: Option<tokio::time::Instant> = None;
        loop {
            // Reap finished connection tasks so the set does not grow.
            while let Some(res) = tasks.try_join_next() {
                log_join(res);
            }
            if slots.available_permits() == 0
                && cap_warned.is_none_or(|t| t.elapsed() >= Duration::from_secs(60))
            {
                warn!(listen = %spec, max = config.max_connections,
                    "connection cap reached; not accepting until a connection ends");
                cap_warned = Some(tokio::time::Instant::now());
            }
            let permit = tokio::select! {
                _ = &mut shutdown => break,
                p = Arc::clone(&slots).acquire_owned() => match p {
                    Ok(p) => p,
                    Err(_) => break,
                },
            };
            let accepted = tokio::select! {
                _ = &mut shutdown => break,
                a = accept(&listener) => a,
            };
            let (stream, peer) = match accepted {
                Ok(x) => x,
                Err(e) => {
                    // EMFILE and friends: back off briefly instead of spinning.
                    error!(listen = %spec, error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            debug!(%peer, "milter connection accepted");
            let handler = Arc::clone(&handler);
            let cfg = Arc::clone(&conn_config);
            let stop = stop_rx.clone();
            tasks.spawn(async move {
                match stream {
                    Stream::Tcp(s) => serve_connection(s, peer, handler, cfg, stop).await,
                    Stream::Unix(s) => serve_connection(s, peer, handler, cfg, stop).await,
                }
                drop(permit);
            });
        }
        // Stop accepting: close the listener (and remove the socket file) first.
        drop(listener);
        let _ = stop_tx.send(true);
        let open = tasks.len();
        if open > 0 {
            info!(open, grace = ?config.shutdown_grace, "waiting for milter connections to finish");
        }
        let deadline = super::timer::after(tokio::time::Instant::now(), config.shutdown_grace);
        loop {
            tokio::select! {
                next = tasks.join_next() => match next {
                    Some(res) => log_join(res),
                    None => break,
                },
                _ = tokio::time::sleep_until(deadline) => {
                    warn!(left = tasks.len(), "shutdown grace period over; closing remaining milter connections");
                    tasks.shutdown().await;
                    break;
                }
            }
        }
        info!(listen = %spec, "milter listener stopped");
        Ok(())
    }
}

fn log_join(res: Result<(), tokio::task::JoinError>) {
    if let Err(e) = res
        && e.is_panic()
    {
        error!("milter connection task panicked: {e}");
    }
}

enum Stream {
    Tcp(tokio::net::TcpStream),
    Unix(tokio::net::UnixStream),
}

async fn accept(l: &Listener) -> io::Result<(Stream, String)> {
    match l {
        Listener::Tcp(l) => {
            let (s, addr) = l.accept().await?;
            // Replies are small packets; never let Nagle hold one back.
            if let Err(e) = s.set_nodelay(true) {
                debug!(error = %e, "cannot set TCP_NODELAY");
            }
            Ok((Stream::Tcp(s), addr.to_string()))
        }
        Listener::Unix(l, guard) => {
            let (s, _) = l.accept().await?;
            Ok((Stream::Unix(s), format!("unix:{}", guard.path.display())))
        }
    }
}

/// Remove a socket file nobody listens on; refuse a live socket or a non-socket file.
fn remove_stale_socket(path: &Path) -> io::Result<()> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    if !meta.file_type().is_socket() {
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!(
                "{} exists and is not a socket; not removing it",
                path.display()
            ),
        ));
    }
    match std::os::unix::net::UnixStream::connect(path) {
        Ok(_) => Err(io::Error::new(
            io::ErrorKind::AddrInUse,
            format!("{} is in use by a running process", path.display()),
        )),
        Err(_) => {
            info!(path = %path.display(), "removing stale milter socket");
            std::fs::remove_file(path)
        }
    }
}

/// A user or group name (or number) to its id, from a passwd/group-format file.
fn resolve_id(name: &str, file: &Path) -> io::Result<u32> {
    if let Ok(n) = name.parse::<u32>() {
        return Ok(n);
    }
    let text = std::fs::read_to_string(file)?;
    lookup_id(name, &text).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::NotFound,
            format!("no entry {name:?} in {}", file.display()),
        )
    })
}

/// Find `name` in passwd/group text (`name:x:ID:...`).
fn lookup_id(name: &str, text: &str) -> Option<u32> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|line| {
            let mut f = line.split(':');
            (f.next()? == name).then_some(())?;
            f.next()?;
            f.next()?.trim().parse().ok()
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tcp(h: &str, p: u16) -> ListenSpec {
        ListenSpec::Tcp {
            host: h.into(),
            port: p,
        }
    }

    #[test]
    fn parses_both_mta_spellings() {
        let cases = [
            ("inet:127.0.0.1:8895", tcp("127.0.0.1", 8895)),
            ("inet:localhost:10027", tcp("localhost", 10027)),
            ("inet:[::1]:8895", tcp("::1", 8895)),
            ("inet:8895@127.0.0.1", tcp("127.0.0.1", 8895)),
            ("inet6:8895@::1", tcp("::1", 8895)),
            ("inet6:8895@[::1]", tcp("::1", 8895)),
            ("inet:8895", tcp("127.0.0.1", 8895)),
            ("inet6:8895", tcp("::1", 8895)),
            ("inet:0", tcp("127.0.0.1", 0)),
            ("INET:0.0.0.0:25", tcp("0.0.0.0", 25)),
            (
                "unix:/run/markgate.sock",
                ListenSpec::Unix("/run/markgate.sock".into()),
            ),
            ("local:/run/m.sock", ListenSpec::Unix("/run/m.sock".into())),
        ];
        for (s, want) in cases {
            assert_eq!(ListenSpec::parse(s).as_ref(), Ok(&want), "{s}");
            // Display reads back.
            assert_eq!(ListenSpec::parse(&want.to_string()), Ok(want.clone()));
        }
    }

    #[test]
    fn bad_specs_say_why() {
        for s in [
            "",
            "127.0.0.1:25",
            "inet:",
            "inet:host:",
            "inet:host:99999",
            "inet:host:port",
            "inet:::1:25",
            "inet:[::1]25",
            "inet:25@",
            "inet6:25@127.0.0.1",
            "unix:",
            "tcp:1.2.3.4:5",
        ] {
            let e = ListenSpec::parse(s).unwrap_err();
            assert!(
                e.to_string().contains("expected inet:HOST:PORT"),
                "{s}: {e}"
            );
        }
    }

    #[test]
    fn passwd_lookup() {
        let text = "# c\nroot:x:0:0:root:/root:/bin/bash\npostfix:x:107:113::/var/spool/postfix:/usr/sbin/nologin\n";
        assert_eq!(lookup_id("postfix", text), Some(107));
        assert_eq!(lookup_id("root", text), Some(0));
        assert_eq!(lookup_id("nobody", text), None);
        assert_eq!(lookup_id("post", text), None);
        assert_eq!(resolve_id("42", Path::new("/nonexistent")).unwrap(), 42);
        assert_eq!(resolve_id("root", Path::new("/etc/passwd")).unwrap(), 0);
        assert_eq!(resolve_id("root", Path::new("/etc/group")).unwrap(), 0);
    }
}
