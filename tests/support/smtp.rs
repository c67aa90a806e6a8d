//! A minimal blocking SMTP client for dialogs swaks cannot script, such as several messages on
//! one connection. It speaks just enough SMTP for tests: read a (multi-line) reply, send a
//! command, send DATA with dot-stuffing.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::time::Duration;

/// One SMTP reply: the code and the text of every line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub code: u16,
    pub lines: Vec<String>,
}

impl Reply {
    /// The reply as the server sent it, lines joined with `\n`.
    pub fn text(&self) -> String {
        self.lines.join("\n")
    }
}

/// An open SMTP session.
pub struct Smtp {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
    /// Every line sent (`C: `) and received (`S: `), for failure messages.
    pub transcript: Vec<String>,
}

impl Smtp {
    /// Connect and read the greeting.
    pub fn connect(port: u16) -> (Smtp, Reply) {
        let stream = TcpStream::connect(("127.0.0.1", port)).expect("connect to smtpd");
        stream
            .set_read_timeout(Some(Duration::from_secs(60)))
            .expect("set read timeout");
        let writer = stream.try_clone().expect("clone stream");
        let mut s = Smtp {
            reader: BufReader::new(stream),
            writer,
            transcript: Vec::new(),
        };
        let greeting = s.read_reply();
        (s, greeting)
    }

    /// Read one reply (all its lines).
    pub fn read_reply(&mut self) -> Reply {
        let mut lines = Vec::new();
        loop {
            let mut line = String::new();
            let n = self.reader.read_line(&mut line).expect("read SMTP reply");
            assert!(
                n > 0,
                "server closed the connection; transcript:\n{}",
                self.transcript.join("\n")
            );
            let line = line.trim_end_matches(['\r', '\n']).to_string();
            self.transcript.push(format!("S: {line}"));
            let last = line.as_bytes().get(3) != Some(&b'-');
            lines.push(line);
            if last {
                break;
            }
        }
        let code = lines[0].get(..3).and_then(|c| c.parse().ok()).unwrap_or(0);
        Reply { code, lines }
    }

    /// Send one command line and read its reply.
    pub fn command(&mut self, line: &str) -> Reply {
        self.transcript.push(format!("C: {line}"));
        self.writer
            .write_all(format!("{line}\r\n").as_bytes())
            .expect("send SMTP command");
        self.read_reply()
    }

    /// Send DATA, the message (any line ends; normalised to CRLF, dot-stuffed) and the final
    /// dot; returns the reply to DATA and, if it was 354, the reply to the message.
    pub fn data(&mut self, message: &[u8]) -> (Reply, Option<Reply>) {
        let go = self.command("DATA");
        if go.code != 354 {
            return (go, None);
        }
        let mut out = Vec::with_capacity(message.len() + 64);
        for line in message.split_inclusive(|&b| b == b'\n') {
            let content = line
                .strip_suffix(b"\n")
                .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
                .unwrap_or(line);
            if content.first() == Some(&b'.') {
                out.push(b'.');
            }
            out.extend_from_slice(content);
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b".\r\n");
        self.transcript
            .push(format!("C: <{} bytes of message>", message.len()));
        self.writer.write_all(&out).expect("send message");
        let done = self.read_reply();
        (go, Some(done))
    }

    /// MAIL, RCPT for each recipient, DATA; panics (with the transcript) on any non-2xx/3xx
    /// reply. Returns the final reply.
    pub fn send(&mut self, from: &str, to: &[&str], message: &[u8]) -> Reply {
        let r = self.command(&format!("MAIL FROM:<{from}>"));
        assert_eq!(r.code, 250, "MAIL refused:\n{}", self.transcript.join("\n"));
        for rcpt in to {
            let r = self.command(&format!("RCPT TO:<{rcpt}>"));
            assert_eq!(r.code, 250, "RCPT refused:\n{}", self.transcript.join("\n"));
        }
        let (go, done) = self.data(message);
        match done {
            Some(done) => done,
            None => panic!(
                "DATA refused ({}):\n{}",
                go.code,
                self.transcript.join("\n")
            ),
        }
    }
}
