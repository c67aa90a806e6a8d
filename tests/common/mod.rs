//! Shared helpers for the wire tests: a scriptable test [`Handler`], a server started
//! in-process on port 0 (or a unix socket), and an MTA-side driver that plays Postfix.
#![allow(dead_code)]

use std::io;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use markgate::milter::command::{Command, ConnectAddress};
use markgate::milter::flags::{Actions, Offer, Protocol};
use markgate::milter::mta::MtaClient;
use markgate::milter::reply::Reply;
use markgate::milter::{
    ConnectionFacts, Handler, HandlerError, LaterVerdict, ListenSpec, Macros, MessageSink,
    Modification, NewBody, Outcome, Server, ServerConfig, Settled, SmtpReply, Staged, Verdict,
};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// One message as the handler saw it.
#[derive(Debug, Clone, Default)]
pub struct Seen {
    pub facts: ConnectionFacts,
    pub sender: Vec<u8>,
    pub sender_args: Vec<Vec<u8>>,
    pub rcpts: Vec<Vec<u8>>,
    pub headers: Vec<(Vec<u8>, Vec<u8>)>,
    pub body: Vec<u8>,
    pub macros: Macros,
}

/// Behaviour is chosen by the sender address (or the HELO name for `begin_message`):
/// `error` → handler error, `panic` → panic, `slow` → sleeps 3 s, `wait` → sleeps 400 ms,
/// `edit` → header/body/recipient edits, `bigbody` → a 150 000-byte file body,
/// `reject` → 550 with text, `hdrfail` → the sink fails on headers, `bodypanic` → the sink
/// panics on body data; HELO `beginfail` → `begin_message` fails.
///
/// Staged answers (the verdict after the modifications): `later` → the `edit` modifications,
/// then `Continue` once the test opens `gate`; `laterfail` → the same, then an error once the
/// gate opens; `laterpanic` → the modifications, then a panic; `laterslow` → the
/// modifications, then a verdict that takes 3 s; with `big` in the sender, the modifications
/// are a header and the 150 000-byte body (large enough to be sent ahead of the verdict).
/// With `after` in the sender the verdict comes at once, with work for after the answer
/// ([`AfterProbe`]); `laterafterbad` gives a verdict that cannot be sent (a 550 reject with a
/// 450 code).
#[derive(Default)]
pub struct TestHandler {
    pub seen: Mutex<Vec<Seen>>,
    pub begun: Mutex<usize>,
    pub gate: Arc<tokio::sync::Notify>,
    pub after: Arc<AfterProbe>,
}

/// What the work after a verdict saw: it waits (at most 10 s; the test runtime must be
/// multi-threaded) until the test says it has read the answer, and records whether it had.
#[derive(Default)]
pub struct AfterProbe {
    answer_read: Mutex<bool>,
    read: std::sync::Condvar,
    /// One entry per run: whether the answer had been read before the wait ended.
    pub ran: Mutex<Vec<bool>>,
}

impl AfterProbe {
    /// The test has the answer.
    pub fn answer_read(&self) {
        *self.answer_read.lock().unwrap() = true;
        self.read.notify_all();
    }

    fn wait_for_the_answer(&self) {
        let read = self.answer_read.lock().unwrap();
        let (read, _) = self
            .read
            .wait_timeout_while(read, Duration::from_secs(10), |read| !*read)
            .unwrap();
        let was = *read;
        drop(read);
        self.ran.lock().unwrap().push(was);
    }
}

pub struct TestSink {
    seen: Seen,
}

impl MessageSink for TestSink {
    fn mail_from(&mut self, sender: &[u8], args: &[Vec<u8>]) -> io::Result<()> {
        self.seen.sender = sender.to_vec();
        self.seen.sender_args = args.to_vec();
        Ok(())
    }
    fn rcpt_to(&mut self, recipient: &[u8], _args: &[Vec<u8>]) -> io::Result<()> {
        self.seen.rcpts.push(recipient.to_vec());
        Ok(())
    }
    fn header(&mut self, name: &[u8], value: &[u8]) -> io::Result<()> {
        if self.has(b"hdrfail") {
            return Err(io::Error::other("spill file cannot be written"));
        }
        self.seen.headers.push((name.to_vec(), value.to_vec()));
        Ok(())
    }
    fn body_chunk(&mut self, chunk: &[u8]) -> io::Result<()> {
        if self.has(b"bodypanic") {
            panic!("test sink panics on body data");
        }
        self.seen.body.extend_from_slice(chunk);
        Ok(())
    }
    fn macros(&mut self, macros: Macros) -> io::Result<()> {
        self.seen.macros = macros;
        Ok(())
    }
}

impl TestSink {
    fn has(&self, word: &[u8]) -> bool {
        self.seen.sender.windows(word.len()).any(|w| w == word)
    }
}

impl Handler for TestHandler {
    type Sink = TestSink;

    fn begin_message(&self, conn: &ConnectionFacts) -> Result<TestSink, HandlerError> {
        *self.begun.lock().unwrap() += 1;
        if conn.helo.as_deref() == Some(b"beginfail") {
            return Err("cannot create transaction".into());
        }
        Ok(TestSink {
            seen: Seen {
                facts: conn.clone(),
                ..Seen::default()
            },
        })
    }

    async fn end_of_message(
        &self,
        _conn: &ConnectionFacts,
        message: TestSink,
    ) -> Result<Outcome, HandlerError> {
        let seen = message.seen.clone();
        self.seen.lock().unwrap().push(seen);
        let has = |w: &[u8]| message.has(w);
        if has(b"error") {
            return Err("audit log unavailable".into());
        }
        if has(b"panic") {
            panic!("test handler panics");
        }
        if has(b"slow") {
            tokio::time::sleep(Duration::from_secs(3)).await;
        }
        if has(b"wait") {
            tokio::time::sleep(Duration::from_millis(400)).await;
        }
        if has(b"edit") {
            return Ok(Outcome {
                verdict: Verdict::Continue,
                modifications: edit_mods(),
            });
        }
        if has(b"bigbody") {
            use std::io::{Seek, Write};
            let mut f = tempfile::tempfile()?;
            f.write_all(&big_body())?;
            f.rewind()?;
            return Ok(Outcome {
                verdict: Verdict::Continue,
                modifications: vec![Modification::ReplaceBody(NewBody::File(f))],
            });
        }
        if has(b"reject") {
            return Ok(Outcome {
                verdict: Verdict::Reject(Some(SmtpReply {
                    code: 550,
                    enhanced: Some("5.7.1".into()),
                    lines: vec!["carol is not cleared for 100% of this".into()],
                })),
                modifications: vec![],
            });
        }
        Ok(Outcome::pass())
    }

    async fn end_of_message_staged(
        &self,
        conn: &ConnectionFacts,
        message: TestSink,
    ) -> Result<Staged, HandlerError> {
        if !message.has(b"later") {
            return self.end_of_message(conn, message).await.map(Staged::from);
        }
        self.seen.lock().unwrap().push(message.seen.clone());
        let (fail, panics, slow) = (
            message.has(b"fail"),
            message.has(b"panic"),
            message.has(b"slow"),
        );
        if message.has(b"after") {
            let probe = self.after.clone();
            let verdict = if message.has(b"bad") {
                Verdict::Reject(Some(SmtpReply {
                    code: 450,
                    enhanced: None,
                    lines: vec!["not a rejection code".into()],
                }))
            } else {
                Verdict::Continue
            };
            let settled = Settled {
                verdict,
                // A blocked worker would stall the runtime's I/O (and so the test's MTA).
                then: Some(Box::new(move || {
                    tokio::task::block_in_place(|| probe.wait_for_the_answer())
                })),
            };
            return Ok(Staged {
                modifications: edit_mods(),
                verdict: LaterVerdict::Later(Box::pin(async move { Ok(settled) })),
            });
        }
        let gate = self.gate.clone();
        let verdict = async move {
            if panics {
                panic!("test handler panics while its verdict is pending");
            }
            if slow {
                tokio::time::sleep(Duration::from_secs(3)).await;
            } else {
                gate.notified().await;
            }
            if fail {
                return Err::<Settled, HandlerError>("the durable write failed".into());
            }
            Ok(Verdict::Continue.into())
        };
        let modifications = if message.has(b"big") {
            vec![
                Modification::AddHeader {
                    name: "X-Label".into(),
                    value: b"OFFICIAL".to_vec(),
                },
                Modification::ReplaceBody(NewBody::Bytes(Bytes::from(big_body()))),
            ]
        } else {
            edit_mods()
        };
        Ok(Staged {
            modifications,
            verdict: LaterVerdict::Later(Box::pin(verdict)),
        })
    }
}

pub fn big_body() -> Vec<u8> {
    (0..150_000u32)
        .map(|i| {
            if i % 100 == 99 {
                b'\n'
            } else {
                b'a' + (i % 26) as u8
            }
        })
        .collect()
}

pub fn edit_mods() -> Vec<Modification> {
    vec![
        Modification::AddHeader {
            name: "X-Label".into(),
            value: b"OFFICIAL".to_vec(),
        },
        Modification::InsertHeader {
            index: 0,
            name: "X-Ins0".into(),
            value: b"inserted at 0".to_vec(),
        },
        Modification::ChangeHeader {
            index: 1,
            name: "Subject".into(),
            value: b"[OFFICIAL] probe test".to_vec(),
        },
        Modification::ChangeHeader {
            index: 1,
            name: "Message-Id".into(),
            value: Vec::new(),
        },
        Modification::ReplaceBody(NewBody::Bytes(Bytes::from_static(
            b"new body\r\nline 2\r\n",
        ))),
        Modification::DeleteRecipient {
            recipient: b"<bob@example.net>".to_vec(),
        },
    ]
}

/// A running server and the means to stop it.
pub struct Running {
    pub addr: Option<std::net::SocketAddr>,
    pub handler: Arc<TestHandler>,
    stop: Option<oneshot::Sender<()>>,
    pub task: JoinHandle<io::Result<()>>,
}

impl Running {
    /// Trigger graceful shutdown (the task then finishes).
    pub fn shutdown(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }

    pub async fn tcp_client(&self) -> MtaClient<tokio::net::TcpStream> {
        MtaClient::connect_tcp(self.addr.expect("tcp server"))
            .await
            .unwrap()
    }

    /// A new TCP connection negotiated with [`postfix_offer`], past CONNECT and HELO `vm`: where
    /// most wire tests start.
    pub async fn postfix_session(&self) -> Mta<tokio::net::TcpStream> {
        let mut mta = Mta::negotiate(self.tcp_client().await, postfix_offer()).await;
        mta.connect("vm").await;
        mta
    }
}

/// Settings fast enough for tests.
pub fn test_config() -> ServerConfig {
    ServerConfig {
        eom_timeout: Duration::from_millis(1000),
        progress_interval: Duration::from_millis(200),
        read_timeout: Duration::from_secs(10),
        shutdown_grace: Duration::from_secs(5),
        ..ServerConfig::default()
    }
}

pub async fn start(spec: &str, config: ServerConfig) -> Running {
    let spec = ListenSpec::parse(spec).unwrap();
    let server = Server::bind(&spec, config).await.unwrap();
    let addr = server.local_addr();
    let handler = Arc::new(TestHandler::default());
    let (tx, rx) = oneshot::channel::<()>();
    let h = Arc::clone(&handler);
    let task = tokio::spawn(async move {
        server
            .run(h, async move {
                let _ = rx.await;
            })
            .await
    });
    Running {
        addr,
        handler,
        stop: Some(tx),
        task,
    }
}

pub async fn start_tcp() -> Running {
    start("inet:127.0.0.1:0", test_config()).await
}

pub fn postfix_offer() -> Offer {
    Offer {
        version: 6,
        actions: Actions(0x1ff),
        protocol: Protocol(0x1fffff),
    }
}

pub fn b(s: &[u8]) -> Bytes {
    Bytes::copy_from_slice(s)
}

pub fn macro_cmd(stage: u8, pairs: &[(&str, &str)]) -> Command {
    Command::Macro {
        stage,
        pairs: pairs
            .iter()
            .map(|(n, v)| (b(n.as_bytes()), b(v.as_bytes())))
            .collect(),
    }
}

pub fn connect_cmd() -> Command {
    Command::Connect {
        hostname: b(b"[127.0.0.1]"),
        address: ConnectAddress::Inet {
            port: 35892,
            address: b(b"127.0.0.1"),
        },
    }
}

/// An MTA that remembers what was negotiated and so knows which commands get a reply.
pub struct Mta<S> {
    pub client: MtaClient<S>,
    pub protocol: u32,
    pub actions: u32,
    pub version: u32,
    pub macros: Vec<(u32, Bytes)>,
}

impl<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin> Mta<S> {
    pub async fn negotiate(mut client: MtaClient<S>, offer: Offer) -> Mta<S> {
        let a = client.negotiate(offer).await.unwrap();
        Mta {
            client,
            protocol: a.protocol.0,
            actions: a.actions.0,
            version: a.version,
            macros: a.macros,
        }
    }

    /// Send a command; when it expects a reply, read and return it (up to the final one).
    pub async fn step(&mut self, cmd: Command) -> Vec<Reply> {
        self.client.step(&cmd).await.unwrap()
    }

    /// CONNECT with its macros, then HELO.
    pub async fn connect(&mut self, helo: &str) {
        self.step(macro_cmd(
            b'C',
            &[("j", "mx.example"), ("{daemon_name}", "in")],
        ))
        .await;
        let r = self.step(connect_cmd()).await;
        assert!(r.is_empty() || r == vec![Reply::Continue], "{r:?}");
        self.step(macro_cmd(b'H', &[])).await;
        let r = self
            .step(Command::Helo {
                name: b(helo.as_bytes()),
            })
            .await;
        assert!(r.is_empty() || r == vec![Reply::Continue], "{r:?}");
    }

    /// A plain message is still accepted: the connection survived what came before.
    pub async fn still_accepts(&mut self) {
        assert_eq!(
            self.message("ok@example.org", b"x\r\n").await,
            vec![Reply::Continue]
        );
    }

    /// One message, Postfix style, up to and including BODYEOB; returns the EOM answer.
    pub async fn message(&mut self, sender: &str, body: &[u8]) -> Vec<Reply> {
        self.envelope(sender).await;
        self.content(body).await
    }

    pub async fn envelope(&mut self, sender: &str) {
        self.step(macro_cmd(b'M', &[("{mail_addr}", sender)])).await;
        for r in [
            self.step(Command::Mail {
                sender: b(format!("<{sender}>").as_bytes()),
                args: vec![b(b"SIZE=213")],
            })
            .await,
            self.step(Command::Rcpt {
                recipient: b(b"<carol@example.net>"),
                args: vec![],
            })
            .await,
            self.step(Command::Rcpt {
                recipient: b(b"<bob@example.net>"),
                args: vec![],
            })
            .await,
            self.step(Command::Data).await,
        ] {
            assert!(r.is_empty() || r == vec![Reply::Continue], "{r:?}");
        }
    }

    pub async fn content(&mut self, body: &[u8]) -> Vec<Reply> {
        self.content_sent(body).await;
        self.client.read_answer().await.unwrap()
    }

    /// Send the headers, the body and end-of-message without reading the answer.
    pub async fn content_sent(&mut self, body: &[u8]) {
        let headers: [(&[u8], &[u8]); 4] = [
            (b"Subject", b" probe test"),
            (b"Message-Id", b" <1@example.org>"),
            (b"X-Folded", b" first part\n\tsecond part"),
            (b"X-Tight", b"nospace"),
        ];
        for (name, value) in headers {
            let value = if self.protocol & 0x100000 != 0 {
                value
            } else {
                // Without HDR_LEADSPC the MTA eats one leading space.
                value.strip_prefix(b" ").unwrap_or(value)
            };
            self.step(macro_cmd(b'L', &[("i", "QID1")])).await;
            let r = self
                .step(Command::Header {
                    name: b(name),
                    value: b(value),
                })
                .await;
            assert!(r.is_empty() || r == vec![Reply::Continue], "{r:?}");
        }
        self.step(Command::EndOfHeaders).await;
        for chunk in body.chunks(65_535) {
            self.step(macro_cmd(b'B', &[("i", "QID1")])).await;
            let r = self.step(Command::Body(b(chunk))).await;
            assert!(r.is_empty() || r == vec![Reply::Continue], "{r:?}");
        }
        self.step(macro_cmd(b'E', &[("i", "QID1")])).await;
        self.client
            .send(&Command::EndOfMessage(Bytes::new()))
            .await
            .unwrap();
    }

    /// The next `n` packets of an answer, one at a time (5 s each at most).
    pub async fn packets(&mut self, n: usize) -> Vec<Reply> {
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            let r = tokio::time::timeout(Duration::from_secs(5), self.client.recv())
                .await
                .expect("a packet within 5 s")
                .unwrap()
                .expect("connection open");
            out.push(r);
        }
        out
    }

    pub async fn abort(&mut self) {
        self.client.send(&Command::Abort).await.unwrap();
    }

    /// ABORT twice then QUIT (as Postfix does), and expect a clean close.
    pub async fn quit(mut self) {
        self.abort().await;
        self.abort().await;
        self.client.send(&Command::Quit).await.unwrap();
        assert!(self.client.recv().await.unwrap().is_none());
    }
}

/// Is this the 451 4.3.0 internal-failure answer?
pub fn is_tempfail(answer: &[Reply]) -> bool {
    matches!(answer, [Reply::ReplyCode(t)] if t.starts_with(b"451 4.3.0 "))
}

/// Wait until the peer closes (or errors); fail after 5 s.
pub async fn expect_closed<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    client: &mut MtaClient<S>,
) {
    let r = tokio::time::timeout(Duration::from_secs(5), client.recv())
        .await
        .expect("server did not close the connection");
    match r {
        Ok(None) | Err(_) => {}
        Ok(Some(reply)) => panic!("expected close, got {reply:?}"),
    }
}
