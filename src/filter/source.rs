//! Where the pipeline reads a message from: the [`MessageSource`] trait, and its two
//! readers, the daemon's [`Transaction`] (headers as the milter delivered them, the body in
//! memory or spilled to disk) and [`RawSource`] (a whole message in memory: a `.eml` file for
//! `markgate policy test`, a test vector).
//!
//! Owns: presenting a message's header fields, header block, whole bytes and, for a large one,
//! a stream and byte ranges. Must not: judge or change the message.

use std::borrow::Cow;
use std::io;
use std::ops::Range;

use crate::inspect;
use crate::transaction::Transaction;

/// Where the pipeline reads one message from: the daemon's transaction or a file for
/// `markgate policy test`.
pub trait MessageSource {
    /// The header fields in order, values as the milter delivers them (LF folding, no leading
    /// space).
    fn headers(&self) -> Vec<(&[u8], &[u8])>;
    /// Enough of the message for header-only edits: at least the header block and the blank
    /// line that ends it. A source that has the whole message in memory may return all of it.
    fn head(&self) -> Cow<'_, [u8]>;
    /// The whole message (headers, blank line, body). Called at most once, and only when the
    /// decision needs the body (and then only when it cannot be reduced; see `crate::large`).
    fn whole(&self) -> io::Result<Cow<'_, [u8]>>;
    /// The whole message's length in bytes (the default reads it whole: override it).
    fn whole_len(&self) -> u64 {
        self.whole().map_or(0, |w| w.len() as u64)
    }
    /// For a message too large to read whole without cost: a reader over what
    /// [`MessageSource::whole`] would return, so the pipeline can judge a reduced copy
    /// (`crate::large`). `None`: read it whole.
    fn stream(&self) -> Option<Box<dyn io::Read + '_>> {
        None
    }
    /// Write `range` of the whole message to `out` (the elided runs of a reduced message, when
    /// the new body is written).
    fn copy_range(&self, range: Range<u64>, out: &mut dyn io::Write) -> io::Result<()> {
        let whole = self.whole()?;
        let r = usize::try_from(range.start).unwrap_or(usize::MAX)
            ..usize::try_from(range.end).unwrap_or(usize::MAX);
        match whole.get(r) {
            Some(b) => out.write_all(b),
            None => Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "range outside the message",
            )),
        }
    }
}

/// A whole message in memory (a `.eml` file, a test vector).
#[derive(Debug)]
pub struct RawSource<'a> {
    raw: &'a [u8],
    fields: Vec<(Vec<u8>, Vec<u8>)>,
}

impl<'a> RawSource<'a> {
    pub fn new(raw: &'a [u8]) -> Self {
        RawSource {
            raw,
            fields: inspect::markings::header_fields(raw),
        }
    }
}

impl MessageSource for RawSource<'_> {
    fn headers(&self) -> Vec<(&[u8], &[u8])> {
        self.fields
            .iter()
            .map(|(n, v)| (n.as_slice(), v.as_slice()))
            .collect()
    }
    fn head(&self) -> Cow<'_, [u8]> {
        Cow::Borrowed(self.raw)
    }
    fn whole(&self) -> io::Result<Cow<'_, [u8]>> {
        Ok(Cow::Borrowed(self.raw))
    }
    fn whole_len(&self) -> u64 {
        self.raw.len() as u64
    }
}

impl MessageSource for Transaction {
    fn headers(&self) -> Vec<(&[u8], &[u8])> {
        Transaction::headers(self)
            .iter()
            .map(|h| (h.name.as_slice(), h.value.as_slice()))
            .collect()
    }
    fn head(&self) -> Cow<'_, [u8]> {
        let mut head = self.header_block();
        head.extend_from_slice(b"\r\n");
        Cow::Owned(head)
    }
    fn whole(&self) -> io::Result<Cow<'_, [u8]>> {
        match self.take_kept_whole() {
            Some(kept) => Ok(Cow::Owned(kept)),
            None => Ok(Cow::Owned(self.whole_message()?)),
        }
    }
    fn whole_len(&self) -> u64 {
        self.head_len() + self.body_len()
    }
    fn stream(&self) -> Option<Box<dyn io::Read + '_>> {
        self.is_spilled()
            .then(|| Box::new(self.raw_message()) as Box<dyn io::Read + '_>)
    }
    fn copy_range(&self, range: Range<u64>, out: &mut dyn io::Write) -> io::Result<()> {
        let head = self.head_len();
        if range.start < head {
            // Elided runs are always in the body; the header block is small.
            let whole = self.head();
            let end = usize::try_from(range.end.min(head)).unwrap_or(usize::MAX);
            let start = usize::try_from(range.start).unwrap_or(usize::MAX);
            out.write_all(whole.get(start..end).unwrap_or_default())?;
        }
        let body = range.start.max(head) - head..range.end.max(head) - head;
        crate::large::copy_range(body, &|at, buf| self.read_body_at(at, buf), out)
    }
}
