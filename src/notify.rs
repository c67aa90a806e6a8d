//! systemd service notifications (the `sd_notify` protocol), for `Type=notify` units.
//!
//! Owns telling the service manager when markgate is ready, reloading or stopping, and a
//! one-line status for `systemctl status`. The protocol is one datagram of `KEY=VALUE` lines
//! sent to the socket named by `$NOTIFY_SOCKET` (a path, or an abstract name starting with
//! `@`). When the variable is absent — started by hand, by a test, or by another supervisor —
//! every call is a no-op, so callers never need to ask whether systemd is there.
//!
//! Must not decide anything or block mail: a failed notification is reported to the caller,
//! who logs it and carries on. Reference: sd_notify(3), and systemd.service(5) for `Type=notify`
//! and the `RELOADING=1`/`MONOTONIC_USEC` pair that `Type=notify-reload` requires.

use std::ffi::OsStr;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;

/// Where notifications go.
#[derive(Debug)]
enum Target {
    /// A socket in the file system.
    Path(PathBuf),
    /// A Linux abstract socket (the name after the `@`).
    #[cfg(target_os = "linux")]
    Abstract(std::os::unix::net::SocketAddr),
}

/// A handle for sending notifications; cheap to share (`Arc`) and safe to call from any thread.
#[derive(Debug)]
pub struct Notifier {
    inner: Option<(UnixDatagram, Target)>,
}

impl Notifier {
    /// From `$NOTIFY_SOCKET`; a disabled notifier when it is unset or empty.
    ///
    /// The variable is left in the environment (removing it is `unsafe` in edition 2024, and
    /// markgate starts no children that could mistake it for their own).
    pub fn from_env() -> io::Result<Notifier> {
        match std::env::var_os("NOTIFY_SOCKET") {
            Some(v) if !v.is_empty() => Notifier::new(&v),
            _ => Ok(Notifier::disabled()),
        }
    }

    /// A notifier that does nothing.
    pub fn disabled() -> Notifier {
        Notifier { inner: None }
    }

    /// Send to the socket `addr` (a path, or `@name` for an abstract socket).
    pub fn new(addr: &OsStr) -> io::Result<Notifier> {
        let bytes = addr.as_bytes();
        let target = match bytes.split_first() {
            None => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "NOTIFY_SOCKET is empty",
                ));
            }
            Some((b'@', name)) => abstract_target(name)?,
            Some((b'/', _)) => Target::Path(PathBuf::from(addr)),
            Some(_) => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!(
                        "NOTIFY_SOCKET {:?} is neither an absolute path nor an @abstract name",
                        addr
                    ),
                ));
            }
        };
        let socket = UnixDatagram::unbound()?;
        Ok(Notifier {
            inner: Some((socket, target)),
        })
    }

    /// Whether notifications are actually sent somewhere.
    pub fn is_enabled(&self) -> bool {
        self.inner.is_some()
    }

    /// `READY=1`: the listener is up and the policy loaded.
    pub fn ready(&self, status: &str) -> io::Result<()> {
        self.send(&[Field::Ready, Field::Status(status)])
    }

    /// `RELOADING=1` with the monotonic time systemd needs to match it to our later `READY=1`.
    pub fn reloading(&self, status: &str) -> io::Result<()> {
        let usec = monotonic_usec()?;
        self.send(&[
            Field::Reloading,
            Field::MonotonicUsec(usec),
            Field::Status(status),
        ])
    }

    /// `STOPPING=1`: shutdown has begun (in-flight messages are being finished).
    pub fn stopping(&self, status: &str) -> io::Result<()> {
        self.send(&[Field::Stopping, Field::Status(status)])
    }

    /// `STATUS=…` alone: a line for `systemctl status`.
    pub fn status(&self, status: &str) -> io::Result<()> {
        self.send(&[Field::Status(status)])
    }

    /// Send one datagram with these fields, in order.
    pub fn send(&self, fields: &[Field<'_>]) -> io::Result<()> {
        let Some((socket, target)) = &self.inner else {
            return Ok(());
        };
        let message = encode(fields);
        let sent = match target {
            Target::Path(p) => socket.send_to(message.as_bytes(), p)?,
            #[cfg(target_os = "linux")]
            Target::Abstract(a) => socket.send_to_addr(message.as_bytes(), a)?,
        };
        if sent != message.len() {
            return Err(io::Error::new(
                io::ErrorKind::WriteZero,
                "notification datagram truncated",
            ));
        }
        Ok(())
    }
}

/// One `KEY=VALUE` line of a notification.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field<'a> {
    /// `READY=1`
    Ready,
    /// `RELOADING=1`
    Reloading,
    /// `STOPPING=1`
    Stopping,
    /// `MONOTONIC_USEC=…` (CLOCK_MONOTONIC in microseconds)
    MonotonicUsec(u64),
    /// `STATUS=…`; line breaks are replaced by spaces, since each field is one line.
    Status(&'a str),
}

fn encode(fields: &[Field<'_>]) -> String {
    let mut out = String::new();
    for f in fields {
        match f {
            Field::Ready => out.push_str("READY=1"),
            Field::Reloading => out.push_str("RELOADING=1"),
            Field::Stopping => out.push_str("STOPPING=1"),
            Field::MonotonicUsec(u) => out.push_str(&format!("MONOTONIC_USEC={u}")),
            Field::Status(s) => {
                out.push_str("STATUS=");
                out.extend(
                    s.chars()
                        .map(|c| if c == '\n' || c == '\r' { ' ' } else { c }),
                );
            }
        }
        out.push('\n');
    }
    out
}

#[cfg(target_os = "linux")]
fn abstract_target(name: &[u8]) -> io::Result<Target> {
    use std::os::linux::net::SocketAddrExt;
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
    Ok(Target::Abstract(addr))
}

#[cfg(not(target_os = "linux"))]
fn abstract_target(_name: &[u8]) -> io::Result<Target> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "abstract NOTIFY_SOCKET names exist only on Linux",
    ))
}

/// CLOCK_MONOTONIC in microseconds, the clock systemd compares `MONOTONIC_USEC` against.
/// `std::time::Instant` uses the same clock but does not expose its value, hence rustix.
fn monotonic_usec() -> io::Result<u64> {
    let ts = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    let secs = u64::try_from(ts.tv_sec)
        .map_err(|_| io::Error::other("CLOCK_MONOTONIC returned a negative time"))?;
    let nanos = u64::try_from(ts.tv_nsec)
        .map_err(|_| io::Error::other("CLOCK_MONOTONIC returned negative nanoseconds"))?;
    Ok(secs.saturating_mul(1_000_000).saturating_add(nanos / 1_000))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn recv(sock: &UnixDatagram) -> String {
        sock.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("set timeout");
        let mut buf = [0u8; 4096];
        let n = sock.recv(&mut buf).expect("a notification datagram");
        String::from_utf8(buf[..n].to_vec()).expect("utf-8 notification")
    }

    #[test]
    fn path_socket_receives_ready_and_status() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("notify.sock");
        let server = UnixDatagram::bind(&path).expect("bind");
        let n = Notifier::new(path.as_os_str()).expect("notifier");
        assert!(n.is_enabled());
        n.ready("listening on unix:/x; policy uk-gpms")
            .expect("send ready");
        assert_eq!(
            recv(&server),
            "READY=1\nSTATUS=listening on unix:/x; policy uk-gpms\n"
        );
        n.stopping("draining 3 connections").expect("send");
        assert_eq!(recv(&server), "STOPPING=1\nSTATUS=draining 3 connections\n");
        n.status("two\nlines").expect("send");
        assert_eq!(recv(&server), "STATUS=two lines\n");
    }

    #[test]
    fn reloading_carries_a_current_monotonic_time() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("notify.sock");
        let server = UnixDatagram::bind(&path).expect("bind");
        let n = Notifier::new(path.as_os_str()).expect("notifier");
        let before = monotonic_usec().expect("clock");
        n.reloading("reloading").expect("send");
        let after = monotonic_usec().expect("clock");
        let msg = recv(&server);
        let lines: Vec<&str> = msg.lines().collect();
        assert_eq!(lines[0], "RELOADING=1");
        let usec: u64 = lines[1]
            .strip_prefix("MONOTONIC_USEC=")
            .expect("MONOTONIC_USEC line")
            .parse()
            .expect("number");
        assert!(
            before <= usec && usec <= after,
            "{before} <= {usec} <= {after}"
        );
        assert_eq!(lines[2], "STATUS=reloading");
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn abstract_socket_receives_notifications() {
        use std::os::linux::net::SocketAddrExt;
        let name = format!("markgate-notify-test-{}", std::process::id());
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())
            .expect("abstract addr");
        let server = UnixDatagram::bind_addr(&addr).expect("bind abstract");
        let n = Notifier::new(OsStr::new(&format!("@{name}"))).expect("notifier");
        n.ready("up").expect("send");
        assert_eq!(recv(&server), "READY=1\nSTATUS=up\n");
    }

    #[test]
    fn disabled_notifier_is_a_no_op() {
        let n = Notifier::disabled();
        assert!(!n.is_enabled());
        n.ready("x").expect("no-op");
        n.reloading("x").expect("no-op");
        n.stopping("x").expect("no-op");
    }

    #[test]
    fn relative_or_empty_addresses_are_refused() {
        assert!(Notifier::new(OsStr::new("relative/sock")).is_err());
        assert!(Notifier::new(OsStr::new("")).is_err());
    }

    #[test]
    fn a_vanished_socket_is_an_error_for_the_caller_to_log() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("gone.sock");
        let n = Notifier::new(path.as_os_str()).expect("notifier");
        assert!(n.ready("x").is_err());
    }
}
