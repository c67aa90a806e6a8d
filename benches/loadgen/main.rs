//! `markgate-load`: a milter load generator that plays the MTA side of milter protocol v6
//! the way Postfix 3.7 does, against any milter (markgate, libmilter, pymilter).
//!
//! Owns: the Postfix-like event sequence, concurrency, timing, the milter's resource figures
//! read from `/proc`, and checking each message's modifications. Must not: be linked into the
//! daemon (it is its own binary target, built from `benches/`, so tests and CI can run it via
//! `CARGO_BIN_EXE_markgate-load`), or assert anything about speed (it reports; people judge).
//!
//! Per connection, as Postfix sends it (see `../shared/reference/milter-protocol.md` §2, §6):
//! `O` → `D'C' C` → `D'H' H`, then per message `D'M' M` → (`D'R' R`)×n → `D'T' T` →
//! (`D'L' L`)* → `D'N' N` → (`D'B' B`)* (chunks ≤ 65535) → `D'E' E` (read modifications up to
//! the final reply) → `A`; at the end `A Q`. Macros go before every stage even when the milter
//! opted out of the event (except skipped headers/body); events the milter opted out of with
//! `SMFIP_NO*` are not sent; replies are read only when the milter did not negotiate `NR_*`.
//! A reject/tempfail/discard/accept before EOM ends the message there (Postfix then sends
//! ABORT); `SKIP` during the body jumps to EOM.
//!
//! Usage: `markgate-load --connect unix:/run/m.sock --eml msg.eml --connections 8
//! --messages 2000 --pid $(pidof markgate) --expect-header X-Label --expect-replbody`.
//! `--idle N` instead opens N connections, leaves them idle and reports the milter's memory.
//! Exit status: 0 when every message got the expected answer, 1 otherwise, 2 on usage errors.
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::pin::Pin;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use clap::Parser;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use markgate::milter::command::{Command, ConnectAddress};
use markgate::milter::flags::{Actions, Offer, Protocol};
use markgate::milter::mta::{Agreed, MtaClient, MtaError};
use markgate::milter::reply::Reply;

/// Postfix's body chunk limit (and the protocol's).
const MAX_CHUNK: usize = 65_535;

#[derive(Debug, Parser)]
#[command(
    name = "markgate-load",
    about = "Milter load generator playing Postfix's side"
)]
struct Args {
    /// The milter: unix:/path or inet:HOST:PORT (Postfix syntax) or inet:PORT@HOST.
    #[arg(long)]
    connect: String,
    /// Message files (.eml) sent in turn; several may be given.
    #[arg(long = "eml", required_unless_present = "idle")]
    eml: Vec<PathBuf>,
    /// Concurrent milter connections.
    #[arg(long, default_value_t = 1)]
    connections: usize,
    /// Messages in total (over all connections).
    #[arg(long, default_value_t = 1000)]
    messages: u64,
    /// Messages per milter connection before it is closed and a new one opened (Postfix opens
    /// one per SMTP session); 0: keep each connection for the whole run.
    #[arg(long, default_value_t = 0)]
    per_connection: u64,
    /// Messages sent first and left out of the figures (warm caches, open connections).
    #[arg(long, default_value_t = 0)]
    warmup: u64,
    /// Envelope sender as Postfix passes it.
    #[arg(long, default_value = "<alice@example-council.gcsx.gov.uk>")]
    from: String,
    /// Envelope recipients (repeatable).
    #[arg(long = "rcpt")]
    rcpt: Vec<String>,
    /// Value of the `{daemon_name}` macro (Postfix: milter_macro_daemon_name). markgate's
    /// shipped policy treats `ORIGINATING` as outbound mail, which gets the full treatment.
    #[arg(long, default_value = "ORIGINATING")]
    daemon_name: String,
    /// The SMTP client's address in CONNECT. The shipped policy counts mail from its own
    /// networks (127.0.0.0/8 by default) as outbound, which gets the full treatment.
    #[arg(long, default_value = "127.0.0.1")]
    client_addr: String,
    /// The milter's process id: its CPU time and peak memory are read from /proc around the run.
    #[arg(long)]
    pid: Option<u32>,
    /// Each message must add (or insert, or change) a header with this name (repeatable).
    #[arg(long = "expect-header")]
    expect_header: Vec<String>,
    /// Each message must have its body replaced.
    #[arg(long)]
    expect_replbody: bool,
    /// The replaced body must contain this text (repeatable).
    #[arg(long = "expect-body-contains")]
    expect_body_contains: Vec<String>,
    /// Each message must come back with no modification at all.
    #[arg(long)]
    expect_unchanged: bool,
    /// The final answer each message must get: continue, accept, tempfail, reject, discard,
    /// replycode (default: continue or accept).
    #[arg(long)]
    expect_final: Option<String>,
    /// Longest wait for any one message, in seconds.
    #[arg(long, default_value_t = 120)]
    timeout: u64,
    /// Open this many connections (negotiate, CONNECT, HELO), keep them idle and report the
    /// milter's memory instead of sending mail.
    #[arg(long)]
    idle: Option<usize>,
    /// With --idle: how long to hold the connections open, in seconds.
    #[arg(long, default_value_t = 2)]
    hold: u64,
    /// A name for this run, printed with the results (e.g. "markgate unix 8c 2KB").
    #[arg(long, default_value = "")]
    label: String,
    /// Print the result as one JSON object instead of text.
    #[arg(long)]
    json: bool,
    /// Worker threads for the generator itself (it should not compete with the milter).
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Give every message a Message-ID of its own (the file's, with the queue id and a tag of
    /// this run put in front of the local part), as real mail has: a milter that remembers
    /// messages (markgate's thread ledger) then files each under a new key instead of one key
    /// many times, and a second run against the same milter repeats none of the first's.
    #[arg(long)]
    unique_ids: bool,
}

/// The socket as Postfix drives it: writes go into a buffer that is sent when a reply is read
/// (or the buffer fills), so a MACRO and its command, or a run of unanswered headers, leave in
/// one segment. Postfix's VSTREAM does this ("macros and event parameters in one VSTREAM
/// transaction", milter8.c); without it, two small writes in a row meet Nagle's algorithm and
/// the milter's delayed ACK, and every answer waits ~40 ms over TCP for reasons that are ours,
/// not the milter's.
struct PostfixStream<S> {
    inner: S,
    out: Vec<u8>,
    sent: usize,
}

/// Postfix's stream buffer on a TCP milter socket grows to the MSS (vstream_tweak_tcp); 64 KiB
/// is loopback's.
const WRITE_BUFFER: usize = 64 * 1024;

impl<S> PostfixStream<S> {
    fn new(inner: S) -> Self {
        PostfixStream {
            inner,
            out: Vec::with_capacity(WRITE_BUFFER),
            sent: 0,
        }
    }
}

impl<S: AsyncWrite + Unpin> PostfixStream<S> {
    /// Push out everything buffered.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        while self.sent < self.out.len() {
            match Pin::new(&mut self.inner).poll_write(cx, &self.out[self.sent..]) {
                Poll::Ready(Ok(0)) => {
                    return Poll::Ready(Err(std::io::ErrorKind::WriteZero.into()));
                }
                Poll::Ready(Ok(n)) => self.sent += n,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
        self.out.clear();
        self.sent = 0;
        Pin::new(&mut self.inner).poll_flush(cx)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for PostfixStream<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        // Reading means waiting for an answer: what is buffered must go first.
        if !this.out.is_empty() {
            match this.poll_drain(cx) {
                Poll::Ready(Ok(())) => {}
                other => return other,
            }
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for PostfixStream<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        if this.out.len() >= WRITE_BUFFER {
            match this.poll_drain(cx) {
                Poll::Ready(Ok(())) => {}
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
        this.out.extend_from_slice(data);
        Poll::Ready(Ok(data.len()))
    }

    /// A flush per command is what Postfix does *not* do; the buffer goes out on the next read.
    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        match this.poll_drain(cx) {
            Poll::Ready(Ok(())) => Pin::new(&mut this.inner).poll_shutdown(cx),
            other => other,
        }
    }
}

/// Where the milter listens.
#[derive(Debug, Clone)]
enum Endpoint {
    Unix(PathBuf),
    Tcp(String),
}

impl Endpoint {
    fn parse(spec: &str) -> Result<Endpoint, String> {
        if let Some(p) = spec
            .strip_prefix("unix:")
            .or_else(|| spec.strip_prefix("local:"))
        {
            return Ok(Endpoint::Unix(PathBuf::from(p)));
        }
        if let Some(rest) = spec.strip_prefix("inet:") {
            if let Some((port, host)) = rest.split_once('@') {
                return Ok(Endpoint::Tcp(format!("{host}:{port}")));
            }
            return Ok(Endpoint::Tcp(rest.to_string()));
        }
        Err(format!(
            "--connect {spec:?}: expected unix:/path, inet:HOST:PORT or inet:PORT@HOST"
        ))
    }
}

/// A tag for this run: the time in microseconds and the process id, in hex.
fn run_tag() -> String {
    let micros = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros());
    format!("{micros:x}{:x}", std::process::id())
}

/// `<local@domain>` as `<QID.local@domain>` (a value without `<` gets the queue id in front).
fn unique_id(value: &Bytes, qid: &str) -> Bytes {
    let at = value.iter().position(|&b| b == b'<').map_or(0, |i| i + 1);
    let mut v = Vec::with_capacity(value.len() + qid.len() + 1);
    v.extend_from_slice(&value[..at]);
    v.extend_from_slice(qid.as_bytes());
    v.push(b'.');
    v.extend_from_slice(&value[at..]);
    Bytes::from(v)
}

/// One message ready to send: headers as Postfix passes them and the body in CRLF form.
#[derive(Debug)]
struct Message {
    /// (name, value with its leading space, folds as LF + whitespace).
    headers: Vec<(Bytes, Bytes)>,
    body: Bytes,
}

impl Message {
    /// Split an .eml into headers and body the way Postfix's cleanup hands them to a milter.
    fn parse(raw: &[u8]) -> Message {
        let mut headers: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
        let mut pos = 0;
        let body_start = loop {
            let end = raw[pos..]
                .iter()
                .position(|&b| b == b'\n')
                .map_or(raw.len(), |i| pos + i + 1);
            let line = &raw[pos..end];
            let text = line
                .strip_suffix(b"\n")
                .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
                .unwrap_or(line);
            if text.is_empty() {
                break end;
            }
            if matches!(text.first(), Some(b' ' | b'\t')) {
                if let Some((_, v)) = headers.last_mut() {
                    v.push(b'\n');
                    v.extend_from_slice(text);
                }
            } else if let Some(colon) = text.iter().position(|&b| b == b':') {
                headers.push((text[..colon].to_vec(), text[colon + 1..].to_vec()));
            }
            pos = end;
            if pos >= raw.len() {
                break pos;
            }
        };
        let mut body = Vec::with_capacity(raw.len() - body_start + raw.len() / 40);
        for line in raw[body_start..].split_inclusive(|&b| b == b'\n') {
            match line.strip_suffix(b"\n") {
                Some(l) => {
                    body.extend_from_slice(l.strip_suffix(b"\r").unwrap_or(l));
                    body.extend_from_slice(b"\r\n");
                }
                None => body.extend_from_slice(line),
            }
        }
        Message {
            headers: headers
                .into_iter()
                .map(|(n, v)| (Bytes::from(n), Bytes::from(v)))
                .collect(),
            body: Bytes::from(body),
        }
    }
}

/// What is checked on every message.
#[derive(Debug, Default)]
struct Expect {
    headers: Vec<String>,
    replbody: bool,
    body_contains: Vec<String>,
    unchanged: bool,
    finals: Vec<&'static str>,
}

/// The run's shared state.
struct Run {
    endpoint: Endpoint,
    messages: Vec<Message>,
    args: Args,
    expect: Expect,
    /// Messages handed out so far (warm-up included).
    taken: AtomicU64,
    total: u64,
    timeout: Duration,
    /// Set when the warm-up is done: the measured part starts then.
    measuring: tokio::sync::watch::Sender<bool>,
    /// Unique to this run (time and process id), put in each unique Message-ID.
    tag: String,
}

#[derive(Debug, Default)]
struct Tally {
    latencies: Vec<Duration>,
    mismatches: Vec<String>,
    errors: Vec<String>,
    connections: u64,
}

fn main() -> ExitCode {
    let args = match Args::try_parse() {
        Ok(a) => a,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { 2 } else { 0 });
        }
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads.max(1))
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("markgate-load: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match rt.block_on(run(args)) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("markgate-load: {e}");
            ExitCode::from(2)
        }
    }
}

async fn run(args: Args) -> Result<bool, String> {
    let endpoint = Endpoint::parse(&args.connect)?;
    if let Some(n) = args.idle {
        return idle(endpoint, n, &args).await;
    }
    let mut messages = Vec::new();
    for path in &args.eml {
        let raw = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
        messages.push(Message::parse(&raw));
    }
    let mut finals = Vec::new();
    match args.expect_final.as_deref() {
        None => finals.extend(["continue", "accept"]),
        Some(f) => {
            let known = [
                "continue",
                "accept",
                "tempfail",
                "reject",
                "discard",
                "replycode",
            ];
            match known.iter().find(|k| **k == f) {
                Some(k) => finals.push(*k),
                None => return Err(format!("--expect-final {f:?}: expected one of {known:?}")),
            }
        }
    }
    let expect = Expect {
        headers: args.expect_header.clone(),
        replbody: args.expect_replbody,
        body_contains: args.expect_body_contains.clone(),
        unchanged: args.expect_unchanged,
        finals,
    };
    let total = args.messages + args.warmup;
    let (measuring, _) = tokio::sync::watch::channel(args.warmup == 0);
    let run = Arc::new(Run {
        endpoint,
        messages,
        timeout: Duration::from_secs(args.timeout),
        expect,
        taken: AtomicU64::new(0),
        total,
        measuring,
        args,
        tag: run_tag(),
    });

    let pid = run.args.pid;
    let mut before = None;
    let mut started = Instant::now();
    let mut rx = run.measuring.subscribe();
    let workers: Vec<_> = (0..run.args.connections.max(1))
        .map(|_| tokio::spawn(worker(Arc::clone(&run))))
        .collect();
    // The measured window opens when the warm-up is done (or now, with no warm-up).
    let opened = async {
        let _ = rx.wait_for(|m| *m).await;
    };
    let mut joined = Box::pin(futures_join(workers));
    tokio::select! {
        () = opened => {
            before = pid.map(ProcFigures::read);
            started = Instant::now();
        }
        _ = &mut joined => {}
    }
    let tallies = joined.await;
    let elapsed = started.elapsed();
    let after = pid.map(ProcFigures::read);

    let mut all = Tally::default();
    for t in tallies {
        all.latencies.extend(t.latencies);
        all.mismatches.extend(t.mismatches);
        all.errors.extend(t.errors);
        all.connections += t.connections;
    }
    all.latencies.sort_unstable();
    let report = Report::new(&run.args, &all, elapsed, before, after);
    if run.args.json {
        println!("{}", report.json());
    } else {
        println!("{}", report.text());
    }
    // The first few problems, on stderr so --json output stays one line.
    for m in all.mismatches.iter().take(5) {
        eprintln!("markgate-load: mismatch: {m}");
    }
    for e in all.errors.iter().take(5) {
        eprintln!("markgate-load: error: {e}");
    }
    Ok(all.mismatches.is_empty() && all.errors.is_empty() && report.measured == run.args.messages)
}

/// Await every worker; a worker that panicked counts as one error.
async fn futures_join(workers: Vec<tokio::task::JoinHandle<Tally>>) -> Vec<Tally> {
    let mut out = Vec::with_capacity(workers.len());
    for w in workers {
        out.push(w.await.unwrap_or_else(|e| Tally {
            errors: vec![format!("worker failed: {e}")],
            ..Tally::default()
        }));
    }
    out
}

/// One concurrent stream of connections, taking messages until all are handed out.
async fn worker(run: Arc<Run>) -> Tally {
    let mut tally = Tally::default();
    'connections: loop {
        if run.taken.load(Ordering::Relaxed) >= run.total {
            break;
        }
        let result = match &run.endpoint {
            Endpoint::Unix(p) => match tokio::net::UnixStream::connect(p).await {
                Ok(s) => connection(&run, MtaClient::new(PostfixStream::new(s)), &mut tally).await,
                Err(e) => Err(format!("connect {}: {e}", p.display())),
            },
            Endpoint::Tcp(a) => match tokio::net::TcpStream::connect(a.as_str()).await {
                Ok(s) => {
                    // Postfix sets no TCP_NODELAY on milter sockets; neither do we, so a milter
                    // that writes a reply in pieces pays for it here as it would in production.
                    connection(&run, MtaClient::new(PostfixStream::new(s)), &mut tally).await
                }
                Err(e) => Err(format!("connect {a}: {e}")),
            },
        };
        tally.connections += 1;
        if let Err(e) = result {
            tally.errors.push(e);
            // A milter that refuses connections would make this spin; stop this worker.
            break 'connections;
        }
    }
    tally
}

/// Take the next message number, or None when all are handed out.
fn take(run: &Run) -> Option<u64> {
    let n = run.taken.fetch_add(1, Ordering::Relaxed);
    if n >= run.total {
        return None;
    }
    if n + 1 == run.args.warmup {
        // The last warm-up message was handed out; measuring starts with the next one.
        let _ = run.measuring.send(true);
    }
    Some(n)
}

/// Postfix's default macro values per stage (milter-protocol.md §6.2), for a queue id `qid`.
fn macro_values(run: &Run, stage: u8, qid: &str, rcpt_no: usize) -> Vec<(&'static str, String)> {
    match stage {
        b'C' => vec![
            ("j", "mx.example-council.gcsx.gov.uk".into()),
            ("{daemon_name}", run.args.daemon_name.clone()),
            ("{daemon_addr}", "127.0.0.1".into()),
            ("v", "Postfix 3.7.11".into()),
            (
                "_",
                format!(
                    "client.example-council.gcsx.gov.uk [{}]",
                    run.args.client_addr
                ),
            ),
        ],
        b'M' => vec![
            ("{mail_addr}", bare(&run.args.from)),
            ("{mail_host}", "[127.0.0.1]:10026".into()),
            ("{mail_mailer}", "smtp".into()),
        ],
        b'R' => {
            let mut v = Vec::new();
            if rcpt_no > 0 {
                v.push(("i", qid.to_string()));
            }
            v.push(("{rcpt_addr}", String::new()));
            v.push(("{rcpt_host}", "partner.gcsx.gov.uk".into()));
            v.push(("{rcpt_mailer}", "smtp".into()));
            v
        }
        b'T' | b'L' | b'N' | b'B' | b'E' => vec![("i", qid.to_string())],
        _ => Vec::new(),
    }
}

fn bare(addr: &str) -> String {
    addr.trim_start_matches('<')
        .trim_end_matches('>')
        .to_string()
}

/// Stage number used in the OPTNEG macro lists for a macro stage byte.
fn list_stage(stage: u8) -> Option<u32> {
    Some(match stage {
        b'C' => 0,
        b'H' => 1,
        b'M' => 2,
        b'R' => 3,
        b'T' => 4,
        b'E' | b'B' => 5,
        b'N' | b'L' => 6,
        _ => return None,
    })
}

/// The MACRO command for a stage: Postfix's list, or the milter's own list if it sent one
/// (only names with a value are sent).
fn macro_command(run: &Run, agreed: &Agreed, stage: u8, qid: &str, rcpt: (usize, &str)) -> Command {
    let mut values = macro_values(run, stage, qid, rcpt.0);
    for (n, v) in values.iter_mut() {
        if *n == "{rcpt_addr}" {
            *v = bare(rcpt.1);
        }
    }
    let wanted: Option<Vec<&[u8]>> = list_stage(stage).and_then(|s| {
        agreed
            .macros
            .iter()
            .find(|(st, names)| *st == s && !names.is_empty())
            .map(|(_, names)| names.split(|&b| b == b' ').collect())
    });
    let pairs = values
        .into_iter()
        .filter(|(n, v)| !v.is_empty() && wanted.as_ref().is_none_or(|w| w.contains(&n.as_bytes())))
        .map(|(n, v)| (Bytes::from_static(n.as_bytes()), Bytes::from(v)))
        .collect();
    Command::Macro { stage, pairs }
}

/// How a stage ended for the message.
enum Step {
    /// Go on with the next event.
    Next,
    /// SMFIR_SKIP: no more body chunks.
    Skip,
    /// The milter decided before EOM (accept, reject, tempfail, discard, reply code).
    Decided(&'static str),
}

fn final_name(r: &Reply) -> &'static str {
    match r {
        Reply::Continue => "continue",
        Reply::Accept => "accept",
        Reply::Reject => "reject",
        Reply::Tempfail => "tempfail",
        Reply::Discard => "discard",
        Reply::ReplyCode(_) => "replycode",
        Reply::Skip => "skip",
        other => other.name(),
    }
}

/// Send one event (unless the milter opted out of it) and read its answer if one is due.
async fn event<S: AsyncRead + AsyncWrite + Unpin>(
    c: &mut MtaClient<S>,
    agreed: &Agreed,
    no: Protocol,
    cmd: &Command,
) -> Result<Step, MtaError> {
    if no.0 != 0 && agreed.protocol.contains(no) {
        return Ok(Step::Next);
    }
    if !agreed.expects_reply(cmd.code()) {
        c.send(cmd).await?;
        return Ok(Step::Next);
    }
    let replies = c.command(cmd).await?;
    match replies.last() {
        Some(Reply::Continue) => Ok(Step::Next),
        Some(Reply::Skip) => Ok(Step::Skip),
        Some(r) => Ok(Step::Decided(final_name(r))),
        None => Err(MtaError::Closed),
    }
}

/// One milter connection: negotiate, CONNECT, HELO, then messages until this connection's
/// share is done, then ABORT + QUIT.
async fn connection<S: AsyncRead + AsyncWrite + Unpin>(
    run: &Run,
    mut c: MtaClient<S>,
    tally: &mut Tally,
) -> Result<(), String> {
    let e = |what: &str| {
        let what = what.to_string();
        move |err: MtaError| format!("{what}: {err}")
    };
    let agreed = c
        .negotiate(Offer {
            version: 6,
            actions: Actions::ALL,
            protocol: Protocol::ALL,
        })
        .await
        .map_err(e("negotiation"))?;
    let conn_macros = macro_command(run, &agreed, b'C', "", (0, ""));
    c.send(&conn_macros)
        .await
        .map_err(|x| e("macros")(x.into()))?;
    let connect = Command::Connect {
        hostname: Bytes::from_static(b"client.example-council.gcsx.gov.uk"),
        address: ConnectAddress::Inet {
            port: 40_000,
            address: Bytes::from(run.args.client_addr.clone()),
        },
    };
    if let Step::Decided(d) = event(&mut c, &agreed, Protocol::NOCONNECT, &connect)
        .await
        .map_err(e("CONNECT"))?
    {
        return Err(format!("the milter answered CONNECT with {d}"));
    }
    c.send(&macro_command(run, &agreed, b'H', "", (0, "")))
        .await
        .map_err(|x| e("macros")(x.into()))?;
    let helo = Command::Helo {
        name: Bytes::from_static(b"client.example-council.gcsx.gov.uk"),
    };
    if let Step::Decided(d) = event(&mut c, &agreed, Protocol::NOHELO, &helo)
        .await
        .map_err(e("HELO"))?
    {
        return Err(format!("the milter answered HELO with {d}"));
    }

    let mut sent_here = 0u64;
    while run.args.per_connection == 0 || sent_here < run.args.per_connection {
        let Some(n) = take(run) else { break };
        sent_here += 1;
        let msg = &run.messages[(n % run.messages.len() as u64) as usize];
        let qid = format!("4Q{n:08X}");
        let start = Instant::now();
        let outcome = tokio::time::timeout(run.timeout, message(run, &mut c, &agreed, msg, &qid))
            .await
            .map_err(|_| format!("message {n}: no final answer within {:?}", run.timeout))?
            .map_err(|err| format!("message {n}: {err}"))?;
        let latency = start.elapsed();
        // ABORT after every message, as Postfix does; it is never answered.
        c.send(&Command::Abort).await.map_err(|x| x.to_string())?;
        if n >= run.args.warmup {
            match outcome {
                None => tally.latencies.push(latency),
                Some(m) => tally.mismatches.push(format!("message {n}: {m}")),
            }
        }
    }
    c.send(&Command::Abort).await.map_err(|x| x.to_string())?;
    c.send(&Command::Quit).await.map_err(|x| x.to_string())?;
    c.into_inner()
        .shutdown()
        .await
        .map_err(|x| format!("closing: {x}"))
}

/// One message, MAIL to EOM. Returns a mismatch description, or None when the answer was the
/// expected one.
async fn message<S: AsyncRead + AsyncWrite + Unpin>(
    run: &Run,
    c: &mut MtaClient<S>,
    agreed: &Agreed,
    msg: &Message,
    qid: &str,
) -> Result<Option<String>, MtaError> {
    let rcpts: Vec<String> = if run.args.rcpt.is_empty() {
        vec!["<bob@partner.gcsx.gov.uk>".into()]
    } else {
        run.args.rcpt.clone()
    };
    let leadspc = agreed.protocol.contains(Protocol::HDR_LEADSPC);
    let decided = |d: &'static str| {
        Ok(if run.expect.finals.contains(&d) {
            None
        } else {
            Some(format!("answered {d} before end of message"))
        })
    };

    c.send(&macro_command(run, agreed, b'M', qid, (0, "")))
        .await?;
    let mail = Command::Mail {
        sender: Bytes::from(run.args.from.clone()),
        args: vec![Bytes::from(format!("SIZE={}", msg.body.len()))],
    };
    if let Step::Decided(d) = event(c, agreed, Protocol::NOMAIL, &mail).await? {
        return decided(d);
    }
    for (i, r) in rcpts.iter().enumerate() {
        c.send(&macro_command(run, agreed, b'R', qid, (i, r)))
            .await?;
        let rcpt = Command::Rcpt {
            recipient: Bytes::from(r.clone()),
            args: vec![],
        };
        if let Step::Decided(d) = event(c, agreed, Protocol::NORCPT, &rcpt).await? {
            return decided(d);
        }
    }
    c.send(&macro_command(run, agreed, b'T', qid, (0, "")))
        .await?;
    if let Step::Decided(d) = event(c, agreed, Protocol::NODATA, &Command::Data).await? {
        return decided(d);
    }
    if !agreed.protocol.contains(Protocol::NOHDRS) {
        let hdr_macros = macro_command(run, agreed, b'L', qid, (0, ""));
        for (name, value) in &msg.headers {
            c.send(&hdr_macros).await?;
            // Without HDR_LEADSPC Postfix drops the one space after the colon.
            let value = if leadspc {
                value.clone()
            } else {
                value.slice(usize::from(value.first() == Some(&b' '))..)
            };
            let value = if run.args.unique_ids && name.eq_ignore_ascii_case(b"message-id") {
                unique_id(&value, &format!("{qid}.{}", run.tag))
            } else {
                value
            };
            let header = Command::Header {
                name: name.clone(),
                value,
            };
            match event(c, agreed, Protocol(0), &header).await? {
                Step::Decided(d) => return decided(d),
                Step::Next | Step::Skip => {}
            }
        }
    }
    c.send(&macro_command(run, agreed, b'N', qid, (0, "")))
        .await?;
    if let Step::Decided(d) = event(c, agreed, Protocol::NOEOH, &Command::EndOfHeaders).await? {
        return decided(d);
    }
    if !agreed.protocol.contains(Protocol::NOBODY) {
        let body_macros = macro_command(run, agreed, b'B', qid, (0, ""));
        let mut off = 0;
        while off < msg.body.len() {
            let end = (off + MAX_CHUNK).min(msg.body.len());
            c.send(&body_macros).await?;
            match event(
                c,
                agreed,
                Protocol(0),
                &Command::Body(msg.body.slice(off..end)),
            )
            .await?
            {
                Step::Next => {}
                Step::Skip => break,
                Step::Decided(d) => return decided(d),
            }
            off = end;
        }
    }
    c.send(&macro_command(run, agreed, b'E', qid, (0, "")))
        .await?;
    let replies = c.command(&Command::EndOfMessage(Bytes::new())).await?;
    Ok(check(&run.expect, &replies))
}

/// Compare the EOM answer with what was expected.
fn check(expect: &Expect, replies: &[Reply]) -> Option<String> {
    let mut problems = Vec::new();
    let Some((last, before)) = replies.split_last() else {
        return Some("no answer to end of message".into());
    };
    let fin = final_name(last);
    if !expect.finals.contains(&fin) {
        problems.push(format!("final answer {fin}, expected {:?}", expect.finals));
    }
    let mods: Vec<&Reply> = before
        .iter()
        .filter(|r| !matches!(r, Reply::Progress))
        .collect();
    if expect.unchanged && !mods.is_empty() {
        let names: Vec<_> = mods.iter().map(|r| r.name()).collect();
        problems.push(format!("expected no modification, got {names:?}"));
    }
    for want in &expect.headers {
        let found = mods.iter().any(|r| match r {
            Reply::AddHeader { name, .. }
            | Reply::InsertHeader { name, .. }
            | Reply::ChangeHeader { name, .. } => name.eq_ignore_ascii_case(want.as_bytes()),
            _ => false,
        });
        if !found {
            problems.push(format!("no header {want} added"));
        }
    }
    let mut body = BytesMut::new();
    let mut replaced = false;
    for r in &mods {
        if let Reply::ReplaceBody(chunk) = r {
            replaced = true;
            body.extend_from_slice(chunk);
        }
    }
    if expect.replbody && !replaced {
        problems.push("body not replaced".into());
    }
    for text in &expect.body_contains {
        if !body.windows(text.len()).any(|w| w == text.as_bytes()) {
            problems.push(format!("replaced body lacks {text:?}"));
        }
    }
    (!problems.is_empty()).then(|| problems.join("; "))
}

/// `--idle N`: open N connections up to HELO, hold them, and report the milter's memory.
async fn idle(endpoint: Endpoint, n: usize, args: &Args) -> Result<bool, String> {
    let before = args.pid.map(ProcFigures::read);
    let mut held = Vec::with_capacity(n);
    let mut errors = 0usize;
    for _ in 0..n {
        let r = match &endpoint {
            Endpoint::Unix(p) => idle_one(MtaClient::connect_unix(p).await).await,
            Endpoint::Tcp(a) => {
                idle_one(
                    tokio::net::TcpStream::connect(a.as_str())
                        .await
                        .map(MtaClient::new),
                )
                .await
            }
        };
        match r {
            Ok(c) => held.push(c),
            Err(e) => {
                errors += 1;
                if errors <= 3 {
                    eprintln!("markgate-load: idle connection: {e}");
                }
            }
        }
    }
    tokio::time::sleep(Duration::from_secs(args.hold)).await;
    let during = args.pid.map(ProcFigures::read);
    // Every held connection must still be served: one more round trip on each.
    let mut alive = 0usize;
    for c in held.iter_mut() {
        if c.ping().await {
            alive += 1;
        }
    }
    drop(held);
    let kib = |p: &Option<ProcFigures>, f: fn(&ProcFigures) -> u64| p.as_ref().map(f);
    let line = format!(
        "{{\"label\":{:?},\"idle_connections\":{n},\"failed\":{errors},\"alive_after_hold\":{alive},\
         \"rss_kib_before\":{},\"rss_kib_idle\":{},\"hwm_kib\":{}}}",
        args.label,
        opt(kib(&before, |p| p.rss_kib)),
        opt(kib(&during, |p| p.rss_kib)),
        opt(kib(&during, |p| p.hwm_kib)),
    );
    println!("{line}");
    Ok(errors == 0 && alive == n)
}

enum IdleConn {
    Unix(MtaClient<tokio::net::UnixStream>),
    Tcp(MtaClient<tokio::net::TcpStream>),
}

impl IdleConn {
    /// An answered command (HELO again is legal at any time outside a message).
    async fn ping(&mut self) -> bool {
        let helo = Command::Helo {
            name: Bytes::from_static(b"client.example-council.gcsx.gov.uk"),
        };
        match self {
            IdleConn::Unix(c) => ping_one(c, &helo).await,
            IdleConn::Tcp(c) => ping_one(c, &helo).await,
        }
    }
}

async fn ping_one<S: AsyncRead + AsyncWrite + Unpin>(c: &mut MtaClient<S>, helo: &Command) -> bool {
    let Some(agreed) = c.agreed().cloned() else {
        return false;
    };
    matches!(
        event(c, &agreed, Protocol::NOHELO, helo).await,
        Ok(Step::Next)
    )
}

trait IntoIdle {
    fn into_idle(self) -> IdleConn;
}
impl IntoIdle for MtaClient<tokio::net::UnixStream> {
    fn into_idle(self) -> IdleConn {
        IdleConn::Unix(self)
    }
}
impl IntoIdle for MtaClient<tokio::net::TcpStream> {
    fn into_idle(self) -> IdleConn {
        IdleConn::Tcp(self)
    }
}

async fn idle_one<S: AsyncRead + AsyncWrite + Unpin>(
    c: std::io::Result<MtaClient<S>>,
) -> Result<IdleConn, String>
where
    MtaClient<S>: IntoIdle,
{
    let mut c = c.map_err(|e| e.to_string())?;
    let agreed = c
        .negotiate(Offer {
            version: 6,
            actions: Actions::ALL,
            protocol: Protocol::ALL,
        })
        .await
        .map_err(|e| e.to_string())?;
    let connect = Command::Connect {
        hostname: Bytes::from_static(b"client.example-council.gcsx.gov.uk"),
        address: ConnectAddress::Inet {
            port: 40_000,
            address: Bytes::from_static(b"192.0.2.10"),
        },
    };
    match event(&mut c, &agreed, Protocol::NOCONNECT, &connect).await {
        Ok(Step::Next) => Ok(c.into_idle()),
        Ok(_) => Err("CONNECT not continued".into()),
        Err(e) => Err(e.to_string()),
    }
}

fn opt(v: Option<u64>) -> String {
    v.map_or_else(|| "null".into(), |v| v.to_string())
}

/// The milter's CPU time and memory, from /proc.
#[derive(Debug, Clone, Copy)]
struct ProcFigures {
    /// utime + stime, in clock ticks.
    cpu_ticks: u64,
    rss_kib: u64,
    hwm_kib: u64,
}

impl ProcFigures {
    fn read(pid: u32) -> ProcFigures {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        // Fields after the command name (which may contain spaces) start at field 3 (state);
        // utime and stime are fields 14 and 15.
        let cpu_ticks = stat
            .rsplit_once(')')
            .map(|(_, rest)| {
                let f: Vec<&str> = rest.split_whitespace().collect();
                let get = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
                get(11) + get(12)
            })
            .unwrap_or(0);
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let kib = |key: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(key))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse().ok())
                .unwrap_or(0)
        };
        ProcFigures {
            cpu_ticks,
            rss_kib: kib("VmRSS:"),
            hwm_kib: kib("VmHWM:"),
        }
    }
}

/// Clock ticks per second for /proc/PID/stat (`getconf CLK_TCK`; 100 on Linux).
fn clock_ticks() -> u64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100)
}

struct Report {
    label: String,
    connections: usize,
    measured: u64,
    mismatches: usize,
    errors: usize,
    seconds: f64,
    rate: f64,
    p50_us: u64,
    p99_us: u64,
    max_us: u64,
    cpu_us_per_msg: Option<f64>,
    hwm_kib: Option<u64>,
    hwm_growth_kib: Option<u64>,
}

impl Report {
    fn new(
        args: &Args,
        t: &Tally,
        elapsed: Duration,
        before: Option<ProcFigures>,
        after: Option<ProcFigures>,
    ) -> Report {
        let measured = t.latencies.len() as u64;
        let pct = |p: f64| -> u64 {
            if t.latencies.is_empty() {
                return 0;
            }
            let i = ((t.latencies.len() as f64 * p).ceil() as usize).clamp(1, t.latencies.len());
            t.latencies[i - 1].as_micros() as u64
        };
        let seconds = elapsed.as_secs_f64();
        let cpu_us_per_msg = match (before, after) {
            (Some(b), Some(a)) if measured > 0 => Some(
                (a.cpu_ticks.saturating_sub(b.cpu_ticks)) as f64 * 1e6
                    / clock_ticks() as f64
                    / measured as f64,
            ),
            _ => None,
        };
        Report {
            label: args.label.clone(),
            connections: args.connections,
            measured,
            mismatches: t.mismatches.len(),
            errors: t.errors.len(),
            seconds,
            rate: if seconds > 0.0 {
                measured as f64 / seconds
            } else {
                0.0
            },
            p50_us: pct(0.50),
            p99_us: pct(0.99),
            max_us: t.latencies.last().map_or(0, |d| d.as_micros() as u64),
            cpu_us_per_msg,
            hwm_kib: after.map(|a| a.hwm_kib),
            hwm_growth_kib: match (before, after) {
                (Some(b), Some(a)) => Some(a.hwm_kib.saturating_sub(b.hwm_kib)),
                _ => None,
            },
        }
    }

    fn json(&self) -> String {
        format!(
            "{{\"label\":{:?},\"connections\":{},\"messages\":{},\"mismatches\":{},\"errors\":{},\
             \"seconds\":{:.3},\"msgs_per_sec\":{:.1},\"p50_us\":{},\"p99_us\":{},\"max_us\":{},\
             \"cpu_us_per_msg\":{},\"hwm_kib\":{},\"hwm_growth_kib\":{}}}",
            self.label,
            self.connections,
            self.measured,
            self.mismatches,
            self.errors,
            self.seconds,
            self.rate,
            self.p50_us,
            self.p99_us,
            self.max_us,
            self.cpu_us_per_msg
                .map_or_else(|| "null".into(), |v| format!("{v:.1}")),
            opt(self.hwm_kib),
            opt(self.hwm_growth_kib),
        )
    }

    fn text(&self) -> String {
        format!(
            "{}{} messages over {} connections in {:.2}s: {:.0} msg/s, latency p50 {:.2} ms, \
             p99 {:.2} ms, max {:.2} ms; milter CPU {} per message, peak RSS {} (+{}); \
             {} mismatches, {} errors",
            if self.label.is_empty() {
                String::new()
            } else {
                format!("{}: ", self.label)
            },
            self.measured,
            self.connections,
            self.seconds,
            self.rate,
            self.p50_us as f64 / 1000.0,
            self.p99_us as f64 / 1000.0,
            self.max_us as f64 / 1000.0,
            self.cpu_us_per_msg
                .map_or_else(|| "?".into(), |v| format!("{v:.0} µs")),
            self.hwm_kib
                .map_or_else(|| "?".into(), |v| format!("{v} KiB")),
            self.hwm_growth_kib
                .map_or_else(|| "?".into(), |v| format!("{v} KiB")),
            self.mismatches,
            self.errors,
        )
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn unique_ids_put_the_queue_id_in_front_of_the_local_part() {
        let id = |v: &'static [u8]| unique_id(&Bytes::from_static(v), "4Q00000001");
        assert_eq!(&id(b" <a@b>")[..], b" <4Q00000001.a@b>");
        assert_eq!(&id(b"a@b")[..], b"4Q00000001.a@b");
    }
    use super::*;

    #[test]
    fn eml_is_split_as_cleanup_hands_it_to_a_milter() {
        let m = Message::parse(
            b"Subject: a\r\n long subject\r\nX-Empty:\nTo:  b@c\n\nline 1\nline 2\r\nlast",
        );
        let h: Vec<(&[u8], &[u8])> = m
            .headers
            .iter()
            .map(|(n, v)| (n.as_ref(), v.as_ref()))
            .collect();
        assert_eq!(
            h,
            vec![
                (&b"Subject"[..], &b" a\n long subject"[..]),
                (&b"X-Empty"[..], &b""[..]),
                (&b"To"[..], &b"  b@c"[..]),
            ]
        );
        // Body lines end in CRLF on the wire; a last line without a newline stays as it is.
        assert_eq!(&m.body[..], b"line 1\r\nline 2\r\nlast");
        let empty = Message::parse(b"Subject: x\n");
        assert_eq!(empty.headers.len(), 1);
        assert!(empty.body.is_empty());
    }

    #[test]
    fn endpoints_in_postfix_and_sendmail_syntax() {
        assert!(
            matches!(Endpoint::parse("unix:/a/b"), Ok(Endpoint::Unix(p)) if p == std::path::Path::new("/a/b"))
        );
        assert!(matches!(Endpoint::parse("local:/a"), Ok(Endpoint::Unix(_))));
        assert!(
            matches!(Endpoint::parse("inet:127.0.0.1:99"), Ok(Endpoint::Tcp(a)) if a == "127.0.0.1:99")
        );
        assert!(
            matches!(Endpoint::parse("inet:99@localhost"), Ok(Endpoint::Tcp(a)) if a == "localhost:99")
        );
        assert!(Endpoint::parse("tcp:1").is_err());
    }

    fn expect(headers: &[&str], replbody: bool, contains: &[&str]) -> Expect {
        Expect {
            headers: headers.iter().map(|s| s.to_string()).collect(),
            replbody,
            body_contains: contains.iter().map(|s| s.to_string()).collect(),
            unchanged: false,
            finals: vec!["continue", "accept"],
        }
    }

    #[test]
    fn answers_are_checked_against_expectations() {
        let b = |s: &'static [u8]| Bytes::from_static(s);
        let good = vec![
            Reply::Progress,
            Reply::ChangeHeader {
                index: 1,
                name: b(b"x-protective-marking"),
                value: b(b"PROTECT"),
            },
            Reply::ReplaceBody(b(b"body\r\n-- \r\nmonit")),
            Reply::ReplaceBody(b(b"ored\r\n")),
            Reply::Continue,
        ];
        let e = expect(&["X-Protective-Marking"], true, &["monitored"]);
        assert_eq!(check(&e, &good), None);
        // The text may straddle two REPLBODY chunks; a missing header, body or text is named.
        let bare = vec![Reply::Accept];
        let problems = check(&e, &bare).expect("mismatch");
        assert!(
            problems.contains("no header X-Protective-Marking"),
            "{problems}"
        );
        assert!(problems.contains("body not replaced"), "{problems}");
        assert!(problems.contains("lacks \"monitored\""), "{problems}");
        // A tempfail is never an expected answer unless asked for.
        let tf = check(&expect(&[], false, &[]), &[Reply::Tempfail]).expect("mismatch");
        assert!(tf.contains("tempfail"), "{tf}");
        assert!(check(&expect(&[], false, &[]), &[]).is_some());
        let mut unchanged = expect(&[], false, &[]);
        unchanged.unchanged = true;
        assert!(check(&unchanged, &good).is_some());
        assert_eq!(check(&unchanged, &[Reply::Progress, Reply::Continue]), None);
    }

    #[tokio::test]
    async fn writes_wait_for_the_next_read_like_postfix() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (ours, mut theirs) = tokio::io::duplex(1 << 16);
        let mut s = PostfixStream::new(ours);
        s.write_all(b"macro").await.unwrap();
        s.write_all(b"event").await.unwrap();
        s.flush().await.unwrap();
        // Nothing has left yet: a flush per command is not what Postfix does.
        let mut buf = [0u8; 16];
        let early = tokio::time::timeout(Duration::from_millis(50), theirs.read(&mut buf)).await;
        assert!(early.is_err(), "data left before a read");
        // Waiting for the answer sends both in one go.
        theirs.write_all(b"c").await.unwrap();
        let mut answer = [0u8; 1];
        s.read_exact(&mut answer).await.unwrap();
        let n = theirs.read(&mut buf).await.unwrap();
        assert_eq!(&buf[..n], b"macroevent");
    }
}
