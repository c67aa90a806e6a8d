//! The MTA side of the wire: a small async milter client that sends [`Command`]s and reads
//! [`Reply`]s. Used by the wire tests and meant for the load generator (issue 7) and any
//! tool that wants to play Postfix against a milter.
//!
//! It does no policy of its own: the caller decides which commands expect a reply (see
//! [`Negotiated::no_reply`](super::flags::Negotiated::no_reply)). [`MtaClient::command`]
//! sends one command and collects replies up to the first final one, which is how an MTA
//! reads the answer to BODYEOB (modifications and PROGRESS first, then one final reply).

use std::io;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::codec::{Decoded, FrameDecoder, FrameError};
use super::command::Command;
use super::flags::Offer;
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

    /// Offer options and read the OPTNEG answer.
    pub async fn negotiate(&mut self, offer: Offer) -> Result<Reply, MtaError> {
        self.send(&Command::OptNeg(offer)).await?;
        match self.recv().await?.ok_or(MtaError::Closed)? {
            r @ Reply::OptNeg { .. } => Ok(r),
            other => Err(MtaError::Unexpected(other.name())),
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
