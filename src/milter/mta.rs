//! The MTA side of the wire: a small async milter client that sends [`Command`]s and reads
//! [`Reply`]s. Used by the wire tests and meant for the load generator (issue 7) and any
//! tool that wants to play Postfix against a milter.
//!
//! [`MtaClient::negotiate`] remembers what the milter agreed to, and [`MtaClient::step`]
//! then reads a reply only for commands the milter answers (NR_* honoured).
//! [`MtaClient::command`] sends one command and collects replies up to the first final one,
//! which is how an MTA reads the answer to BODYEOB (modifications and PROGRESS first, then
//! one final reply).

use std::io;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::codec::{Decoded, FrameDecoder, FrameError};
use super::command::Command;
use super::flags::{Actions, Offer, Protocol};
use super::reply::{Reply, ReplyError, ReplyKind};

/// What can go wrong talking to a milter.
#[derive(Debug, thiserror::Error)]
pub enum MtaError {
    #[error("I/O: {0}")]
    Io(#[from] io::Error),
    #[error("bad packet from the milter: {0}")]
    Frame(#[from] FrameError),
    #[error("bad reply from the milter: {0}")]
    Reply(#[from] ReplyError),
    #[error("the milter closed the connection")]
    Closed,
    #[error("unexpected reply {0}")]
    Unexpected(&'static str),
}

/// One milter connection, seen from the MTA.
#[derive(Debug)]
pub struct MtaClient<S> {
    stream: S,
    decoder: FrameDecoder,
    buf: BytesMut,
    agreed: Option<Agreed>,
}

/// What the milter answered to OPTNEG.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Agreed {
    pub version: u32,
    pub actions: Actions,
    pub protocol: Protocol,
    /// Macro lists the milter asked for: (stage id, space-separated names).
    pub macros: Vec<(u32, Bytes)>,
}

impl Agreed {
    /// Does the milter answer this command? (Never MACRO/ABORT/QUIT/QUIT_NC; not events it
    /// opted out of replying to with NR_*; always OPTNEG and BODYEOB.)
    pub fn expects_reply(&self, code: u8) -> bool {
        match code {
            b'D' | b'A' | b'Q' | b'K' => false,
            _ => Protocol::no_reply_bit(code).is_none_or(|nr| !self.protocol.contains(nr)),
        }
    }
}

impl MtaClient<tokio::net::TcpStream> {
    /// Connect over TCP.
    pub async fn connect_tcp(addr: std::net::SocketAddr) -> io::Result<Self> {
        let s = tokio::net::TcpStream::connect(addr).await?;
        s.set_nodelay(true)?;
        Ok(MtaClient::new(s))
    }
}

impl MtaClient<tokio::net::UnixStream> {
    /// Connect over a unix socket.
    pub async fn connect_unix(path: &std::path::Path) -> io::Result<Self> {
        Ok(MtaClient::new(tokio::net::UnixStream::connect(path).await?))
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> MtaClient<S> {
    /// Wrap a connected stream.
    pub fn new(stream: S) -> Self {
        MtaClient {
            stream,
            decoder: FrameDecoder::default(),
            buf: BytesMut::with_capacity(4096),
            agreed: None,
        }
    }

    /// Send one command without waiting for anything.
    pub async fn send(&mut self, cmd: &Command) -> io::Result<()> {
        let mut b = BytesMut::new();
        cmd.to_frame().encode(&mut b);
        self.send_raw(&b).await
    }

    /// Send arbitrary bytes (for tests of hostile input).
    pub async fn send_raw(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes).await?;
        self.stream.flush().await
    }

    /// Read the next reply; `Ok(None)` when the milter closed the connection cleanly.
    pub async fn recv(&mut self) -> Result<Option<Reply>, MtaError> {
        loop {
            if let Decoded::Frame(f) = self.decoder.decode(&mut self.buf)? {
                return Ok(Some(Reply::parse(&f)?));
            }
            if self.stream.read_buf(&mut self.buf).await? == 0 {
                return Ok(None);
            }
        }
    }

    /// Offer options and read the OPTNEG answer; remembered for [`MtaClient::step`].
    pub async fn negotiate(&mut self, offer: Offer) -> Result<Agreed, MtaError> {
        self.send(&Command::OptNeg(offer)).await?;
        match self.recv().await?.ok_or(MtaError::Closed)? {
            Reply::OptNeg {
                version,
                actions,
                protocol,
                macros,
            } => {
                let agreed = Agreed {
                    version,
                    actions: Actions(actions),
                    protocol: Protocol(protocol),
                    macros,
                };
                self.agreed = Some(agreed.clone());
                Ok(agreed)
            }
            other => Err(MtaError::Unexpected(other.name())),
        }
    }

    /// What was negotiated, once [`MtaClient::negotiate`] succeeded.
    pub fn agreed(&self) -> Option<&Agreed> {
        self.agreed.as_ref()
    }

    /// Send a command and, if the milter answers it under the negotiated options, read the
    /// answer (up to the first final reply); otherwise return no replies. Before
    /// negotiation every command except D/A/Q/K is assumed to be answered.
    pub async fn step(&mut self, cmd: &Command) -> Result<Vec<Reply>, MtaError> {
        let code = cmd.code();
        let expects = match &self.agreed {
            Some(a) => a.expects_reply(code),
            None => !matches!(code, b'D' | b'A' | b'Q' | b'K'),
        };
        if expects {
            self.command(cmd).await
        } else {
            self.send(cmd).await?;
            Ok(Vec::new())
        }
    }

    /// Send a command and read replies up to and including the first final one.
    pub async fn command(&mut self, cmd: &Command) -> Result<Vec<Reply>, MtaError> {
        self.send(cmd).await?;
        self.read_answer().await
    }

    /// Read replies up to and including the first final one.
    pub async fn read_answer(&mut self) -> Result<Vec<Reply>, MtaError> {
        let mut out = Vec::new();
        loop {
            let r = self.recv().await?.ok_or(MtaError::Closed)?;
            let fin = r.kind() == ReplyKind::Final;
            out.push(r);
            if fin {
                return Ok(out);
            }
        }
    }

    /// The underlying stream.
    pub fn into_inner(self) -> S {
        self.stream
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;
    use crate::milter::conn::{ConnConfig, serve_connection};
    use crate::milter::flags::Wants;
    use crate::milter::handler::{
        ConnectionFacts, Handler, HandlerError, Macros, MessageSink, Outcome,
    };

    struct Count(usize);
    impl MessageSink for Count {
        fn mail_from(&mut self, _: &[u8], _: &[Vec<u8>]) -> io::Result<()> {
            Ok(())
        }
        fn rcpt_to(&mut self, _: &[u8], _: &[Vec<u8>]) -> io::Result<()> {
            Ok(())
        }
        fn header(&mut self, _: &[u8], _: &[u8]) -> io::Result<()> {
            self.0 += 1;
            Ok(())
        }
        fn body_chunk(&mut self, _: &[u8]) -> io::Result<()> {
            Ok(())
        }
        fn macros(&mut self, _: Macros) -> io::Result<()> {
            Ok(())
        }
    }
    struct Pass;
    impl Handler for Pass {
        type Sink = Count;
        fn begin_message(&self, _: &ConnectionFacts) -> Result<Count, HandlerError> {
            Ok(Count(0))
        }
        async fn end_of_message(
            &self,
            _: &ConnectionFacts,
            m: Count,
        ) -> Result<Outcome, HandlerError> {
            assert_eq!(m.0, 1);
            Ok(Outcome::pass())
        }
    }

    #[tokio::test]
    async fn step_honours_what_was_agreed() {
        let (ours, theirs) = tokio::io::duplex(1 << 16);
        let (_stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let config = Arc::new(ConnConfig {
            max_frame_size: 1 << 20,
            read_timeout: Duration::from_secs(5),
            eom_timeout: Duration::from_secs(5),
            progress_interval: Duration::ZERO,
            wants: Wants::default(),
        });
        let server = tokio::spawn(serve_connection(
            theirs,
            "duplex".into(),
            Arc::new(Pass),
            config,
            stop_rx,
        ));
        let mut c = MtaClient::new(ours);
        let a = c
            .negotiate(Offer {
                version: 6,
                actions: Actions::ALL,
                protocol: Protocol(Protocol::ALL.0 & !Protocol::NR_HDR.0),
            })
            .await
            .unwrap();
        assert!(a.expects_reply(b'L'));
        assert!(!a.expects_reply(b'B'));
        assert!(a.expects_reply(b'E'));
        let b = |s: &[u8]| Bytes::copy_from_slice(s);
        let cmds = [
            Command::Connect {
                hostname: b(b"h"),
                address: crate::milter::command::ConnectAddress::Unknown,
            },
            Command::Mail {
                sender: b(b"<>"),
                args: vec![],
            },
            Command::Header {
                name: b(b"Subject"),
                value: b(b" x"),
            },
            Command::Body(b(b"x\r\n")),
        ];
        let mut answers = Vec::new();
        for cmd in &cmds {
            answers.push(c.step(cmd).await.unwrap());
        }
        assert_eq!(answers, vec![vec![], vec![], vec![Reply::Continue], vec![]]);
        let eom = c.step(&Command::EndOfMessage(Bytes::new())).await.unwrap();
        assert_eq!(eom, vec![Reply::Continue]);
        assert!(c.step(&Command::Quit).await.unwrap().is_empty());
        assert!(c.recv().await.unwrap().is_none());
        server.await.unwrap();
    }
}
