//! One message as the MTA streamed it: connection facts, envelope, macros, headers in their
//! original order, and the body.
//!
//! Owns: storage of a single message while the milter layer fills it through
//! [`MessageSink`], and read access for whatever decides about it at end-of-message (header list,
//! body reader, the raw message as one byte stream for a MIME parser). Bodies up to
//! [`SpillPolicy::threshold`] bytes stay in memory; a larger body moves to an anonymous
//! temporary file (already unlinked, so nothing is left behind even after a crash), so a 50 MiB
//! message costs a file descriptor, not 50 MiB of RSS.
//!
//! Must not: decide anything, talk to the MTA, log, or know about labels and policy.
//!
//! Reset rules: a `Transaction` is exactly one message. The handler creates a fresh one at MAIL
//! (`Handler::begin_message`) with a copy of the connection facts known at that moment; nothing
//! inside it is ever reset. When the MTA aborts the message (ABORT, RSET, a lost connection) the
//! milter layer drops it, and dropping closes the spill file, which releases its disk space. A
//! second MAIL FROM on the same sink replaces the sender (it cannot happen with a conforming MTA,
//! because every MAIL starts a new message). Macros arrive once, at end-of-message, already
//! flattened by the milter layer (connection macros included).
//!
//! See also: `milter::handler` (the sink contract), `ARCHITECTURE.md` ("Performance shape").

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::PathBuf;

use crate::milter::handler::{ConnectionFacts, Macros, MessageSink};

/// Where and when a body leaves memory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpillPolicy {
    /// Bodies larger than this many bytes are moved to a temporary file. 0 spills every
    /// non-empty body (useful in tests).
    pub threshold: usize,
    /// Directory for spill files; `None` means the system default (`$TMPDIR`, else `/tmp`).
    pub directory: Option<PathBuf>,
}

impl Default for SpillPolicy {
    fn default() -> Self {
        SpillPolicy {
            threshold: DEFAULT_SPILL_THRESHOLD,
            directory: None,
        }
    }
}

/// 1 MiB: nearly all mail stays in memory, attachments-heavy mail goes to disk.
pub const DEFAULT_SPILL_THRESHOLD: usize = 1024 * 1024;

/// Headers up to this many are numbered by looking back at the earlier ones; after that by a
/// count per name (see `MessageSink::header`).
const LOOK_BACK_HEADERS: usize = 32;

/// The envelope sender and one recipient: the address exactly as the MTA sent it (usually with
/// angle brackets) plus its ESMTP arguments (`SIZE=123`, `NOTIFY=NEVER`, ...).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EnvelopeAddress {
    pub address: Vec<u8>,
    pub args: Vec<Vec<u8>>,
    /// Recipients only: `{rcpt_host}` and `{rcpt_mailer}` as the MTA sent them with this RCPT
    /// (where it will hand the recipient; `policy::routes` matches them).
    pub rcpt_host: Option<Vec<u8>>,
    pub rcpt_mailer: Option<Vec<u8>>,
}

impl EnvelopeAddress {
    /// The address without the surrounding `<` `>` (Postfix sends them over SMTP, not for
    /// locally submitted mail), e.g. `alice@example.org`; empty for the null sender `<>`.
    pub fn bare(&self) -> &[u8] {
        let a = self.address.as_slice();
        match (a.first(), a.last()) {
            (Some(b'<'), Some(b'>')) if a.len() >= 2 => &a[1..a.len() - 1],
            _ => a,
        }
    }
}

/// One header as received, in its original position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// The field name exactly as sent (case preserved).
    pub name: Vec<u8>,
    /// The value as sent, without the single space after the colon; folded lines are separated
    /// by bare LF (the milter wire form).
    pub value: Vec<u8>,
    /// 1-based position among the headers with the same name (compared case-insensitively):
    /// the index `SMFIR_CHGHEADER` needs to change or delete exactly this header.
    pub occurrence: u32,
}

impl Header {
    /// Does this header have the given name (ASCII case-insensitive)?
    pub fn is(&self, name: &str) -> bool {
        self.name.eq_ignore_ascii_case(name.as_bytes())
    }

    /// The header as it appears in a message: `Name: value` with CRLF line ends, folding kept.
    pub fn write_raw(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.name);
        out.extend_from_slice(b": ");
        // The wire form folds with bare LF; a stray CR before it is already part of the value
        // and must not be doubled. Copied a line at a time.
        let mut rest = self.value.as_slice();
        let mut before = b' ';
        while let Some(i) = memchr::memchr(b'\n', rest) {
            out.extend_from_slice(&rest[..i]);
            if i.checked_sub(1).map_or(before, |p| rest[p]) != b'\r' {
                out.push(b'\r');
            }
            out.push(b'\n');
            before = b'\n';
            rest = &rest[i + 1..];
        }
        out.extend_from_slice(rest);
        out.extend_from_slice(b"\r\n");
    }
}

/// Where the body bytes live.
#[derive(Debug)]
enum BodyStore {
    Memory(Vec<u8>),
    /// An unlinked temporary file holding exactly `len` bytes.
    Spilled {
        file: File,
        len: u64,
    },
}

/// One message. See the module documentation for its life cycle.
#[derive(Debug)]
pub struct Transaction {
    connection: ConnectionFacts,
    sender: Option<EnvelopeAddress>,
    recipients: Vec<EnvelopeAddress>,
    macros: Macros,
    headers: Vec<Header>,
    /// How many headers of each (lower-cased) name were seen, for [`Header::occurrence`].
    name_counts: HashMap<Vec<u8>, u32>,
    body: BodyStore,
    spill: SpillPolicy,
    /// A copy of the whole message a reader built and handed back ([`Transaction::keep_whole`]),
    /// for the next reader to take instead of building another. Dropped by any change.
    kept_whole: std::sync::Mutex<Option<Vec<u8>>>,
}

impl Transaction {
    /// A new, empty message on a connection.
    pub fn new(connection: &ConnectionFacts, spill: SpillPolicy) -> Self {
        Transaction {
            connection: connection.clone(),
            sender: None,
            recipients: Vec::new(),
            macros: Macros::default(),
            headers: Vec::new(),
            name_counts: HashMap::new(),
            body: BodyStore::Memory(Vec::new()),
            spill,
            kept_whole: std::sync::Mutex::new(None),
        }
    }

    /// What the MTA said about the SMTP client when this message began.
    pub fn connection(&self) -> &ConnectionFacts {
        &self.connection
    }

    /// The envelope sender, if MAIL FROM was seen.
    pub fn sender(&self) -> Option<&EnvelopeAddress> {
        self.sender.as_ref()
    }

    /// The envelope recipients in the order the MTA sent them.
    pub fn recipients(&self) -> &[EnvelopeAddress] {
        &self.recipients
    }

    /// The macros the MTA sent for this message and its connection.
    pub fn macros(&self) -> &Macros {
        &self.macros
    }

    /// The MTA's queue id (`{i}`), when it sent one.
    pub fn queue_id(&self) -> Option<&[u8]> {
        self.macros.get("i")
    }

    /// Every header, in the order received.
    pub fn headers(&self) -> &[Header] {
        &self.headers
    }

    /// The headers with a given name (case-insensitive), in order.
    pub fn headers_named<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Header> + 'a {
        self.headers.iter().filter(move |h| h.is(name))
    }

    /// The first header with a given name (case-insensitive).
    pub fn first_header(&self, name: &str) -> Option<&Header> {
        self.headers.iter().find(|h| h.is(name))
    }

    /// The body size in bytes.
    pub fn body_len(&self) -> u64 {
        match &self.body {
            BodyStore::Memory(v) => v.len() as u64,
            BodyStore::Spilled { len, .. } => *len,
        }
    }

    /// Has the body been moved to a temporary file?
    pub fn is_spilled(&self) -> bool {
        matches!(self.body, BodyStore::Spilled { .. })
    }

    /// A reader over the body from its first byte. Readers are independent of each other (the
    /// spill file is read with positional reads), so several may be open at once.
    pub fn body_reader(&self) -> BodyReader<'_> {
        let source = match &self.body {
            BodyStore::Memory(v) => BodySource::Memory(v),
            BodyStore::Spilled { file, len } => BodySource::File { file, len: *len },
        };
        BodyReader { source, pos: 0 }
    }

    /// The length of [`Transaction::raw_message`]'s header part: the header block and the
    /// blank line after it.
    pub fn head_len(&self) -> u64 {
        self.headers
            .iter()
            .map(|h| {
                // `write_raw` adds a CR before each folding LF that lacks one.
                let added = memchr::memchr_iter(b'\n', &h.value)
                    .filter(|&p| p == 0 || h.value[p - 1] != b'\r')
                    .count();
                (h.name.len() + 2 + h.value.len() + 2 + added) as u64
            })
            .sum::<u64>()
            + 2
    }

    /// Read body bytes at `offset` (positional: readers and other calls are unaffected).
    pub fn read_body_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        let mut r = self.body_reader();
        r.pos = offset.min(self.body_len());
        r.read(buf)
    }

    /// The header block as it appears in a message: each header as `Name: value` + CRLF, in the
    /// original order, without the empty line that ends it. The space after the colon is always
    /// a single space (the milter protocol does not tell us what the client sent there).
    pub fn header_block(&self) -> Vec<u8> {
        // head_len counts the block plus its ending empty line.
        let mut out = Vec::with_capacity(usize::try_from(self.head_len()).unwrap_or(0));
        self.write_header_block(&mut out);
        out
    }

    fn write_header_block(&self, out: &mut Vec<u8>) {
        for h in &self.headers {
            h.write_raw(out);
        }
    }

    /// The bytes of [`Transaction::raw_message`] in one buffer of exactly their size (an
    /// in-memory body is copied once, not streamed through a reader).
    pub fn whole_message(&self) -> io::Result<Vec<u8>> {
        let head = usize::try_from(self.head_len()).unwrap_or(0);
        let body = usize::try_from(self.body_len()).unwrap_or(0);
        let mut out = Vec::with_capacity(head.saturating_add(body));
        self.write_header_block(&mut out);
        out.extend_from_slice(b"\r\n");
        match &self.body {
            BodyStore::Memory(v) => out.extend_from_slice(v),
            BodyStore::Spilled { .. } => {
                self.body_reader().read_to_end(&mut out)?;
            }
        }
        Ok(out)
    }

    /// The whole message as one byte stream (headers, an empty line, body) for a MIME parser.
    /// Only the header block is copied; the body is streamed from where it is stored.
    pub fn raw_message(&self) -> RawMessage<'_> {
        let mut head = self.header_block();
        head.extend_from_slice(b"\r\n");
        RawMessage {
            head: io::Cursor::new(head),
            body: self.body_reader(),
        }
    }

    /// Hand back the bytes of [`Transaction::whole_message`] when done with them: the next
    /// caller of [`Transaction::take_kept_whole`] gets them without another copy. Only as
    /// long as the message does not change (a header or body chunk drops them).
    pub fn keep_whole(&self, whole: Vec<u8>) {
        *self.kept_whole.lock().unwrap_or_else(|p| p.into_inner()) = Some(whole);
    }

    /// The bytes [`Transaction::keep_whole`] kept, taken (the next caller builds its own).
    pub fn take_kept_whole(&self) -> Option<Vec<u8>> {
        self.kept_whole
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
    }

    fn forget_kept_whole(&mut self) {
        *self.kept_whole.get_mut().unwrap_or_else(|p| p.into_inner()) = None;
    }

    fn append_body(&mut self, chunk: &[u8]) -> io::Result<()> {
        self.forget_kept_whole();
        match &mut self.body {
            BodyStore::Memory(mem) => {
                if mem.len().saturating_add(chunk.len()) <= self.spill.threshold {
                    mem.extend_from_slice(chunk);
                    return Ok(());
                }
                let mut file = match &self.spill.directory {
                    Some(dir) => tempfile::tempfile_in(dir)?,
                    None => tempfile::tempfile()?,
                };
                file.write_all(mem)?;
                file.write_all(chunk)?;
                let len = (mem.len() + chunk.len()) as u64;
                self.body = BodyStore::Spilled { file, len };
            }
            BodyStore::Spilled { file, len } => {
                file.write_all(chunk)?;
                *len += chunk.len() as u64;
            }
        }
        Ok(())
    }
}

impl MessageSink for Transaction {
    fn mail_from(&mut self, sender: &[u8], args: &[Vec<u8>]) -> io::Result<()> {
        self.sender = Some(EnvelopeAddress {
            address: sender.to_vec(),
            args: args.to_vec(),
            ..EnvelopeAddress::default()
        });
        Ok(())
    }

    fn rcpt_to(&mut self, recipient: &[u8], args: &[Vec<u8>]) -> io::Result<()> {
        self.recipients.push(EnvelopeAddress {
            address: recipient.to_vec(),
            args: args.to_vec(),
            ..EnvelopeAddress::default()
        });
        Ok(())
    }

    fn header(&mut self, name: &[u8], value: &[u8]) -> io::Result<()> {
        self.forget_kept_whole();
        // The first few headers are counted by looking back (no hashing, no key to allocate:
        // a typical message has a dozen or two); past that, a count per name keeps this
        // constant-time, so a message with thousands of headers costs no more per header than
        // one with ten.
        let occurrence = if self.headers.len() < LOOK_BACK_HEADERS {
            let earlier = self
                .headers
                .iter()
                .filter(|h| h.name.eq_ignore_ascii_case(name))
                .count();
            u32::try_from(earlier).map_or(u32::MAX, |n| n.saturating_add(1))
        } else {
            if self.name_counts.is_empty() {
                for h in &self.headers {
                    let c = self
                        .name_counts
                        .entry(h.name.to_ascii_lowercase())
                        .or_insert(0);
                    *c = c.saturating_add(1);
                }
            }
            let count = self
                .name_counts
                .entry(name.to_ascii_lowercase())
                .or_insert(0);
            *count = count.saturating_add(1);
            *count
        };
        self.headers.push(Header {
            name: name.to_vec(),
            value: value.to_vec(),
            occurrence,
        });
        Ok(())
    }

    fn body_chunk(&mut self, chunk: &[u8]) -> io::Result<()> {
        self.append_body(chunk)
    }

    fn macros(&mut self, macros: Macros) -> io::Result<()> {
        self.macros = macros;
        Ok(())
    }

    fn rcpt_macros(&mut self, macros: &Macros) -> io::Result<()> {
        if let Some(r) = self.recipients.last_mut() {
            r.rcpt_host = macros.get("rcpt_host").map(<[u8]>::to_vec);
            r.rcpt_mailer = macros.get("rcpt_mailer").map(<[u8]>::to_vec);
        }
        Ok(())
    }
}

enum BodySource<'a> {
    Memory(&'a [u8]),
    File { file: &'a File, len: u64 },
}

/// Reads a [`Transaction`]'s body from the start; see [`Transaction::body_reader`].
pub struct BodyReader<'a> {
    source: BodySource<'a>,
    pos: u64,
}

impl Read for BodyReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match &self.source {
            BodySource::Memory(mem) => {
                let start = usize::try_from(self.pos)
                    .unwrap_or(usize::MAX)
                    .min(mem.len());
                let n = buf.len().min(mem.len() - start);
                buf[..n].copy_from_slice(&mem[start..start + n]);
                self.pos += n as u64;
                Ok(n)
            }
            BodySource::File { file, len } => {
                let remaining = len.saturating_sub(self.pos);
                if remaining == 0 || buf.is_empty() {
                    return Ok(0);
                }
                let want = usize::try_from(remaining)
                    .unwrap_or(usize::MAX)
                    .min(buf.len());
                let n = file.read_at(&mut buf[..want], self.pos)?;
                if n == 0 {
                    // The file is shorter than what we wrote: someone truncated it under us.
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "spilled body file is shorter than the body written to it",
                    ));
                }
                self.pos += n as u64;
                Ok(n)
            }
        }
    }
}

/// The whole message as a byte stream; see [`Transaction::raw_message`].
pub struct RawMessage<'a> {
    head: io::Cursor<Vec<u8>>,
    body: BodyReader<'a>,
}

impl Read for RawMessage<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.head.read(buf)?;
        if n > 0 || buf.is_empty() {
            return Ok(n);
        }
        self.body.read(buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts() -> ConnectionFacts {
        ConnectionFacts {
            hostname: b"client.example.org".to_vec(),
            addr: Some("192.0.2.1".parse().unwrap()),
            port: 4321,
            unix_path: Vec::new(),
            helo: Some(b"client.example.org".to_vec()),
        }
    }

    fn tx(threshold: usize) -> Transaction {
        Transaction::new(
            &facts(),
            SpillPolicy {
                threshold,
                directory: None,
            },
        )
    }

    fn read_all(mut r: impl Read) -> Vec<u8> {
        let mut v = Vec::new();
        r.read_to_end(&mut v).unwrap();
        v
    }

    /// A kept copy of the whole message is taken once, and never outlives a change.
    #[test]
    fn a_kept_whole_message_is_taken_once_and_dropped_by_changes() {
        let mut t = tx(1024);
        t.header(b"Subject", b"one").unwrap();
        t.body_chunk(b"body\r\n").unwrap();
        let whole = t.whole_message().unwrap();
        t.keep_whole(whole.clone());
        assert_eq!(t.take_kept_whole(), Some(whole.clone()));
        assert_eq!(t.take_kept_whole(), None);
        t.keep_whole(whole.clone());
        t.header(b"X-Late", b"header").unwrap();
        assert_eq!(t.take_kept_whole(), None, "a header drops it");
        t.keep_whole(whole);
        t.body_chunk(b"more\r\n").unwrap();
        assert_eq!(t.take_kept_whole(), None, "a body chunk drops it");
    }

    #[test]
    fn envelope_and_connection_facts_are_kept() {
        let mut t = tx(1024);
        t.mail_from(b"<alice@example.org>", &[b"SIZE=123".to_vec()])
            .unwrap();
        t.rcpt_to(b"<bob@example.net>", &[]).unwrap();
        t.rcpt_to(b"<carol@example.com>", &[b"NOTIFY=NEVER".to_vec()])
            .unwrap();
        assert_eq!(t.connection(), &facts());
        let s = t.sender().unwrap();
        assert_eq!(s.bare(), b"alice@example.org");
        assert_eq!(s.args, vec![b"SIZE=123".to_vec()]);
        let r: Vec<&[u8]> = t.recipients().iter().map(|r| r.bare()).collect();
        assert_eq!(r, vec![&b"bob@example.net"[..], b"carol@example.com"]);
        assert_eq!(t.recipients()[1].args, vec![b"NOTIFY=NEVER".to_vec()]);
    }

    /// `write_raw` as it was written first, a byte at a time: the line-at-a-time copy must
    /// give the same bytes.
    fn write_raw_bytewise(h: &Header, out: &mut Vec<u8>) {
        out.extend_from_slice(&h.name);
        out.extend_from_slice(b": ");
        for &b in &h.value {
            if b == b'\n' && out.last() != Some(&b'\r') {
                out.push(b'\r');
            }
            out.push(b);
        }
        out.extend_from_slice(b"\r\n");
    }

    #[test]
    fn folded_values_get_one_cr_per_line_end_and_whole_message_matches_the_stream() {
        let values: [&[u8]; 9] = [
            b"plain",
            b"",
            b"a\n b",
            b"a\r\n b",
            b"\n lead",
            b"\r\n lead",
            b"a\n\n b\r\r\n c\n",
            b"\n",
            b"\r",
        ];
        for threshold in [1024, 4] {
            let mut t = tx(threshold);
            for v in values {
                t.header(b"X-Folded", v).unwrap();
                let h = t.headers().last().unwrap();
                let (mut fast, mut slow) = (Vec::new(), Vec::new());
                h.write_raw(&mut fast);
                write_raw_bytewise(h, &mut slow);
                assert_eq!(fast, slow, "value {:?}", String::from_utf8_lossy(v));
            }
            t.body_chunk(b"body line\r\nmore\r\n").unwrap();
            let whole = t.whole_message().unwrap();
            assert_eq!(whole, read_all(t.raw_message()));
            assert_eq!(whole.len() as u64, t.head_len() + t.body_len());
        }
    }

    #[test]
    fn bare_address_forms() {
        let a = |s: &[u8]| EnvelopeAddress {
            address: s.to_vec(),
            args: vec![],
            ..EnvelopeAddress::default()
        };
        assert_eq!(a(b"<>").bare(), b"");
        assert_eq!(a(b"plain@example.org").bare(), b"plain@example.org");
        assert_eq!(a(b"<").bare(), b"<");
        assert_eq!(a(b"").bare(), b"");
    }

    #[test]
    fn headers_keep_order_case_and_per_name_occurrence() {
        let mut t = tx(1024);
        t.header(b"Received", b"from a").unwrap();
        t.header(b"Subject", b"hello").unwrap();
        t.header(b"RECEIVED", b"from b").unwrap();
        t.header(b"received", b"from c").unwrap();
        let got: Vec<(&[u8], u32)> = t
            .headers()
            .iter()
            .map(|h| (h.name.as_slice(), h.occurrence))
            .collect();
        assert_eq!(
            got,
            vec![
                (&b"Received"[..], 1),
                (b"Subject", 1),
                (b"RECEIVED", 2),
                (b"received", 3)
            ]
        );
        assert_eq!(t.headers_named("received").count(), 3);
        assert_eq!(t.first_header("SUBJECT").unwrap().value, b"hello");
        assert!(t.first_header("X-None").is_none());
    }

    #[test]
    fn many_headers_are_counted_per_name() {
        let mut t = tx(1024);
        for i in 0..10_000u32 {
            let name = format!("X-H{}", i % 100);
            t.header(name.as_bytes(), b"v").unwrap();
        }
        assert_eq!(t.headers().len(), 10_000);
        assert_eq!(t.headers()[9_999].occurrence, 100);
        assert_eq!(t.headers()[100].occurrence, 2);
    }

    #[test]
    fn occurrences_agree_before_and_after_the_look_back_limit() {
        let mut t = tx(1024);
        let names = [
            "Received", "received", "X-A", "RECEIVED", "x-a", "Subject", "x-b",
        ];
        for i in 0..(3 * LOOK_BACK_HEADERS) {
            t.header(names[i % names.len()].as_bytes(), b"v").unwrap();
        }
        for (i, h) in t.headers().iter().enumerate() {
            let expected = t.headers()[..=i]
                .iter()
                .filter(|e| e.name.eq_ignore_ascii_case(&h.name))
                .count();
            assert_eq!(h.occurrence as usize, expected, "header {i}");
        }
    }

    #[test]
    fn macros_and_queue_id() {
        let mut t = tx(1024);
        assert_eq!(t.queue_id(), None);
        let mut m = Macros::default();
        m.set(b"i", b"4F3A21");
        m.set(b"{auth_authen}", b"alice");
        MessageSink::macros(&mut t, m).unwrap();
        assert_eq!(t.queue_id(), Some(&b"4F3A21"[..]));
        assert_eq!(t.macros().get("auth_authen"), Some(&b"alice"[..]));
    }

    #[test]
    fn raw_message_folds_with_crlf_and_separates_body() {
        let mut t = tx(1024);
        t.header(b"Subject", b"one\n\ttwo").unwrap();
        t.header(b"X-Cr", b"a\r\n b").unwrap();
        t.body_chunk(b"line 1\r\n").unwrap();
        t.body_chunk(b"line 2\r\n").unwrap();
        assert_eq!(
            read_all(t.raw_message()),
            b"Subject: one\r\n\ttwo\r\nX-Cr: a\r\n b\r\n\r\nline 1\r\nline 2\r\n"
        );
    }

    #[test]
    fn head_len_is_the_length_of_the_raw_messages_header_part() {
        let mut t = tx(1024);
        assert_eq!(t.head_len(), 2);
        t.header(b"Subject", b"one\n\ttwo").unwrap();
        t.header(b"X-Cr", b"a\r\n b").unwrap();
        t.header(b"X-Lead", b"\nx").unwrap();
        t.header(b"X-Empty", b"").unwrap();
        t.body_chunk(b"body\r\n").unwrap();
        let raw = read_all(t.raw_message());
        assert_eq!(t.head_len(), raw.len() as u64 - 6);
        let mut b = [0u8; 3];
        assert_eq!(t.read_body_at(2, &mut b).unwrap(), 3);
        assert_eq!(&b, b"dy\r");
        assert_eq!(t.read_body_at(99, &mut b).unwrap(), 0);
    }

    #[test]
    fn empty_message() {
        let t = tx(0);
        assert_eq!(t.body_len(), 0);
        assert!(!t.is_spilled());
        assert_eq!(read_all(t.body_reader()), b"");
        assert_eq!(read_all(t.raw_message()), b"\r\n");
    }

    #[test]
    fn body_at_threshold_stays_in_memory() {
        let mut t = tx(10);
        t.body_chunk(b"12345").unwrap();
        t.body_chunk(b"67890").unwrap();
        assert!(!t.is_spilled());
        assert_eq!(read_all(t.body_reader()), b"1234567890");
    }

    #[test]
    fn body_over_threshold_spills_and_reads_back_identically() {
        let mut t = tx(1000);
        let mut expect = Vec::new();
        // Chunks of varying size, with every byte value, crossing the threshold mid-chunk.
        for i in 0..300u32 {
            let chunk: Vec<u8> = (0..(i % 97 + 1)).map(|j| (i * 7 + j) as u8).collect();
            t.body_chunk(&chunk).unwrap();
            expect.extend_from_slice(&chunk);
        }
        assert!(expect.len() > 1000);
        assert!(t.is_spilled());
        assert_eq!(t.body_len(), expect.len() as u64);
        assert_eq!(read_all(t.body_reader()), expect);
        // Readers are independent: a second one starts from the top again.
        let mut a = t.body_reader();
        let mut b = t.body_reader();
        let mut ba = [0u8; 10];
        let mut bb = [0u8; 10];
        a.read_exact(&mut ba).unwrap();
        a.read_exact(&mut ba).unwrap();
        b.read_exact(&mut bb).unwrap();
        assert_eq!(&bb[..], &expect[..10]);
        assert_eq!(&ba[..], &expect[10..20]);
        t.header(b"Subject", b"big").unwrap();
        let mut want = b"Subject: big\r\n\r\n".to_vec();
        want.extend_from_slice(&expect);
        assert_eq!(read_all(t.raw_message()), want);
    }

    #[test]
    fn threshold_zero_spills_first_byte() {
        let mut t = tx(0);
        t.body_chunk(b"").unwrap();
        assert!(!t.is_spilled(), "an empty chunk needs no file");
        t.body_chunk(b"x").unwrap();
        assert!(t.is_spilled());
        assert_eq!(read_all(t.body_reader()), b"x");
    }

    #[test]
    fn spill_into_a_chosen_directory_leaves_no_file_behind() {
        let dir = tempfile::tempdir().unwrap();
        let mut t = Transaction::new(
            &facts(),
            SpillPolicy {
                threshold: 4,
                directory: Some(dir.path().to_path_buf()),
            },
        );
        t.body_chunk(b"more than four bytes").unwrap();
        assert!(t.is_spilled());
        // The spill file is anonymous: unlinked from the start.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
        assert_eq!(read_all(t.body_reader()), b"more than four bytes");
    }

    #[test]
    fn spill_failure_is_an_error_not_a_panic() {
        let mut t = Transaction::new(
            &facts(),
            SpillPolicy {
                threshold: 1,
                directory: Some(PathBuf::from("/nonexistent/markgate-spill")),
            },
        );
        t.body_chunk(b"x").unwrap();
        assert!(t.body_chunk(b"yz").is_err());
    }

    #[test]
    fn large_spilled_body_round_trips() {
        // 8 MiB in 64 KiB chunks, as Postfix would send it.
        let mut t = tx(DEFAULT_SPILL_THRESHOLD);
        let chunk: Vec<u8> = (0..65535u32).map(|i| (i % 251) as u8).collect();
        let n = 8 * 1024 * 1024 / chunk.len() + 1;
        for _ in 0..n {
            t.body_chunk(&chunk).unwrap();
        }
        assert!(t.is_spilled());
        assert_eq!(t.body_len(), (n * chunk.len()) as u64);
        let mut r = t.body_reader();
        let mut buf = vec![0u8; chunk.len()];
        for _ in 0..n {
            r.read_exact(&mut buf).unwrap();
            assert_eq!(buf, chunk);
        }
        assert_eq!(r.read(&mut buf).unwrap(), 0);
    }
}
