//! Large messages in bounded memory: a spilled message is judged from a *reduced* copy, and its
//! replacement body is streamed from the spill file.
//!
//! Owns: [`reduce`], one streaming pass over the whole message that tracks the MIME structure
//! (each part's Content-Type, boundary, transfer encoding, charset) and, inside every leaf
//! body larger than [`Limits::head`] + [`Limits::tail`], replaces runs of whole lines by one
//! stand-in line each (a random 128-bit token plus an index, letters and digits only). The
//! original bytes stay in the spill file; the [`Elision`] list says where. Plain-text parts get
//! their text facts (marker present, inline PGP, encoding clean) from a [`TextScan`] over the
//! *whole* body on the same pass. The reduced message is small, so the unchanged pipeline
//! (`inspect::mime` → `policy::decide` → `rewrite::plan`) runs on it, and [`write_body`]
//! writes the new body by copying each elided run back from the spill file, 64 KiB at a time.
//!
//! Why the reduced message stands for the original (so the output is byte-identical):
//! - a run never contains `--` (lines with `--` are always kept) and is made of whole lines, so
//!   no parser can see a boundary delimiter in it or across its edges (mail-parser finds
//!   `--boundary` anywhere, not only at a line start); the stand-in is a line of letters and
//!   digits with the run's own line end;
//! - the first line end and at least [`Limits::head`] bytes of each body, and at least its last
//!   line and [`Limits::tail`] bytes, are kept, so what rewrite reads at a body's edges (its
//!   line-end convention, whether it ends with a line end) is the original's;
//! - `inspect::mime::analyze_reduced` checks that the parser puts every stand-in in the body
//!   of the leaf part it was made for, and takes that part's text facts from the scan;
//! - [`check_plan`] refuses any plan that would rewrite an elided run instead of copying it.
//!
//! Fallback rules (what happens when the reduced message cannot stand for the original): a
//! line longer than [`Limits::max_line`], a delimiter line with text after the boundary, a
//! header parameter markgate does not read the way mail-parser does (comments, RFC 2231), a
//! reduced message over [`Limits::max_reduced`] (e.g. a huge forwarded `message/rfc822`, which
//! is kept whole), a part the parser sees differently, HTML message text with elided lines,
//! message text in a charset that is not ASCII-compatible, a plan that re-encodes an elided
//! part (a disclaimer into a large base64 or quoted-printable text part, a conversion to
//! UTF-8), or wrapping signed mail (the wrapper depends on a digest of the whole message). In
//! each case the message is read whole, as before, when it is at most
//! [`Limits::max_in_memory`] bytes; a larger one is answered 451 with an `error` log line
//! naming the reason (see `filter::PipelineError::TooLarge`). Mail is never passed unlabelled.
//!
//! Must not: decide anything or change what `inspect`/`rewrite` conclude; its pure part (the
//! line state machine, [`check_plan`]) does no I/O, and the I/O (reading the message, copying
//! runs) goes through `std::io` traits the filter hands in.
//!
//! Read more: `filter.rs` (`evaluate_with`), `BENCHMARKS.md` ("Memory"), `config/markgate.toml`
//! (`[limits] max_in_memory_message`).

use std::collections::VecDeque;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::ops::Range;

use sha2::Digest as _;

use crate::inspect::mime::{self, MimeShape, PartRole, TransferEncoding};
use crate::inspect::stream::{ElidedPart, TextScan};
use crate::rewrite::{BodyEdit, DisclaimerOutcome, EditPlan, RewriteRequest, Segment, SkipReason};

/// The sizes the bounded path works with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Body bytes kept at the start of each leaf part.
    pub head: usize,
    /// Body bytes kept at the end of each leaf part.
    pub tail: usize,
    /// Runs shorter than this are kept as they are (a stand-in is not worth it).
    pub min_run: usize,
    /// The longest line the scan accepts.
    pub max_line: usize,
    /// The largest reduced message.
    pub max_reduced: usize,
    /// The largest message read whole when it cannot be reduced.
    pub max_in_memory: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            head: 16 * 1024,
            tail: 16 * 1024,
            min_run: 4 * 1024,
            max_line: 64 * 1024,
            max_reduced: 4 * 1024 * 1024,
            max_in_memory: DEFAULT_MAX_IN_MEMORY,
        }
    }
}

/// 64 MiB: above Postfix's default `message_size_limit` (10 MB) and the 50 MiB many gateways
/// allow, so only a message that is both huge and of an unusual shape is refused.
pub const DEFAULT_MAX_IN_MEMORY: u64 = 64 * 1024 * 1024;

/// One elided run: where its stand-in line is in the reduced message, and where the original
/// bytes are in the whole message (header block, blank line, body).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Elision {
    pub stand_in: Range<usize>,
    pub original: Range<u64>,
}

/// A message reduced for judging; see the module documentation.
#[derive(Debug, Clone)]
pub struct Reduced {
    /// The reduced message.
    pub raw: Vec<u8>,
    /// The elided runs, in order.
    pub elisions: Vec<Elision>,
    /// The leaf parts with elided runs, for `inspect::mime::analyze_reduced`.
    pub parts: Vec<ElidedPart>,
}

/// Why a message could not be reduced (it is then read whole, or refused).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct NotReducible(pub String);

/// Read the whole message from `input` once and reduce it. `marker` is the disclaimer marker
/// `inspect::mime::analyze` will be given (not yet normalised). The outer error is an I/O
/// failure; the inner one says why the message cannot be reduced.
pub fn reduce(
    input: impl Read,
    marker: Option<&str>,
    limits: &Limits,
) -> io::Result<Result<Reduced, NotReducible>> {
    let mut reader = BufReader::with_capacity(64 * 1024, input);
    let marker = marker.map(mime::normalize_marker);
    let mut r = Reducer::new(marker, limits.clone());
    let mut line = Vec::with_capacity(1024);
    loop {
        line.clear();
        let mut too_long = false;
        loop {
            let buf = reader.fill_buf()?;
            if buf.is_empty() {
                break;
            }
            let (take, done) = match buf.iter().position(|&b| b == b'\n') {
                Some(i) => (i + 1, true),
                None => (buf.len(), false),
            };
            if line.len() + take > limits.max_line {
                too_long = true;
            } else {
                line.extend_from_slice(&buf[..take]);
            }
            reader.consume(take);
            if done || too_long {
                break;
            }
        }
        if too_long {
            return Ok(Err(NotReducible(format!(
                "a line is longer than {} bytes",
                limits.max_line
            ))));
        }
        if line.is_empty() {
            break;
        }
        if let Err(e) = r.line(&line) {
            return Ok(Err(e));
        }
    }
    Ok(r.finish())
}

/// A part's MIME headers as the scan reads them.
#[derive(Debug, Default)]
struct PartHead {
    /// `type/subtype`, lowercased; empty when there was no Content-Type.
    content_type: String,
    boundary: Option<Vec<u8>>,
    charset: Option<String>,
    cte: Option<String>,
    /// A header the scan cannot read the way mail-parser does.
    unreadable: bool,
}

struct Frame {
    boundary: Vec<u8>,
    digest: bool,
}

struct Run {
    start: u64,
    len: u64,
    /// The run's bytes while it is shorter than `min_run`.
    kept: Vec<u8>,
    eol: &'static [u8],
}

struct Leaf {
    body_start: usize,
    body_len: u64,
    seen_eol: bool,
    tail: VecDeque<(u64, Vec<u8>)>,
    tail_len: usize,
    run: Option<Run>,
    stand_ins: Vec<Range<usize>>,
    scan: Option<TextScan>,
}

enum Mode {
    /// A header block (the message's or a part's).
    Headers {
        block: Vec<u8>,
        digest_child: bool,
    },
    /// Between the parts of a multipart (preamble, epilogue): kept.
    Between,
    /// A leaf kept whole (forwarded messages, multiparts without a boundary, unreadable).
    Kept,
    Leaf(Box<Leaf>),
}

struct Reducer {
    limits: Limits,
    marker: Option<String>,
    out: Vec<u8>,
    pos: u64,
    frames: Vec<Frame>,
    mode: Mode,
    token: Vec<u8>,
    elisions: Vec<Elision>,
    parts: Vec<ElidedPart>,
}

/// Most stand-ins in one message (each costs a line and a search).
const MAX_ELISIONS: usize = 10_000;

impl Reducer {
    fn new(marker: Option<String>, limits: Limits) -> Self {
        Reducer {
            limits,
            marker,
            out: Vec::with_capacity(64 * 1024),
            pos: 0,
            frames: Vec::new(),
            mode: Mode::Headers {
                block: Vec::new(),
                digest_child: false,
            },
            token: token_prefix(),
            elisions: Vec::new(),
            parts: Vec::new(),
        }
    }

    fn emit(&mut self, bytes: &[u8]) -> Result<(), NotReducible> {
        self.out.extend_from_slice(bytes);
        if self.out.len() > self.limits.max_reduced {
            return Err(NotReducible(format!(
                "the reduced message would pass {} bytes (a large part that cannot be elided)",
                self.limits.max_reduced
            )));
        }
        Ok(())
    }

    fn line(&mut self, line: &[u8]) -> Result<(), NotReducible> {
        let at = self.pos;
        self.pos += line.len() as u64;
        if let Mode::Headers { .. } = self.mode {
            return self.header_line(line);
        }
        if let Some((index, close)) = self.delimiter(line)? {
            self.end_leaf()?;
            self.emit(line)?;
            if close {
                self.frames.truncate(index);
                self.mode = Mode::Between;
            } else {
                self.frames.truncate(index + 1);
                self.mode = Mode::Headers {
                    block: Vec::new(),
                    digest_child: self.frames[index].digest,
                };
            }
            return Ok(());
        }
        match &mut self.mode {
            Mode::Leaf(_) => self.leaf_line(at, line),
            _ => self.emit(line),
        }
    }

    /// Is `line` a delimiter of an enclosing multipart (innermost first)? Returns the frame
    /// index and whether it is the close delimiter.
    fn delimiter(&self, line: &[u8]) -> Result<Option<(usize, bool)>, NotReducible> {
        let Some(rest) = line.strip_prefix(b"--") else {
            return Ok(None);
        };
        for (i, f) in self.frames.iter().enumerate().rev() {
            let Some(after) = rest.strip_prefix(f.boundary.as_slice()) else {
                continue;
            };
            let (close, after) = match after.strip_prefix(b"--") {
                Some(a) => (true, a),
                None => (false, after),
            };
            if !after
                .iter()
                .all(|b| matches!(b, b' ' | b'\t' | b'\r' | b'\n'))
            {
                return Err(NotReducible(
                    "a boundary delimiter line has text after the boundary".into(),
                ));
            }
            return Ok(Some((i, close)));
        }
        Ok(None)
    }

    fn header_line(&mut self, line: &[u8]) -> Result<(), NotReducible> {
        self.emit(line)?;
        let Mode::Headers {
            block,
            digest_child,
        } = &mut self.mode
        else {
            return Ok(());
        };
        let content = line.strip_suffix(b"\n").unwrap_or(line);
        if !content.iter().all(|&b| b == b'\r') {
            block.extend_from_slice(line);
            return Ok(());
        }
        // The blank line: the body starts here.
        let head = parse_head(block);
        let digest_child = *digest_child;
        let ct = if head.content_type.is_empty() {
            if digest_child {
                "message/rfc822".to_string()
            } else {
                "text/plain".to_string()
            }
        } else {
            head.content_type.clone()
        };
        self.mode = if head.unreadable {
            Mode::Kept
        } else if let Some(sub) = ct.strip_prefix("multipart/") {
            match head.boundary {
                Some(b) if !b.is_empty() => {
                    self.frames.push(Frame {
                        boundary: b,
                        digest: sub == "digest",
                    });
                    Mode::Between
                }
                _ => Mode::Kept,
            }
        } else if ct.starts_with("message/") {
            Mode::Kept
        } else {
            let scan = (ct == "text/plain")
                .then(|| {
                    TextScan::new(
                        head.charset.as_deref(),
                        &TransferEncoding::parse(head.cte.as_deref()),
                        self.marker.as_deref(),
                    )
                })
                .flatten();
            Mode::Leaf(Box::new(Leaf {
                body_start: self.out.len(),
                body_len: 0,
                seen_eol: false,
                tail: VecDeque::new(),
                tail_len: 0,
                run: None,
                stand_ins: Vec::new(),
                scan,
            }))
        };
        Ok(())
    }

    fn leaf_line(&mut self, at: u64, line: &[u8]) -> Result<(), NotReducible> {
        let Mode::Leaf(leaf) = &mut self.mode else {
            return Ok(());
        };
        if let Some(scan) = leaf.scan.as_mut() {
            scan.feed_line(line);
        }
        let in_head = !leaf.seen_eol || leaf.body_len < self.limits.head as u64;
        leaf.body_len += line.len() as u64;
        if in_head {
            leaf.seen_eol |= line.ends_with(b"\n");
            return self.emit(line);
        }
        leaf.tail.push_back((at, line.to_vec()));
        leaf.tail_len += line.len();
        let mut leaving = Vec::new();
        while leaf.tail_len > self.limits.tail && leaf.tail.len() > 1 {
            let Some((off, l)) = leaf.tail.pop_front() else {
                break;
            };
            leaf.tail_len -= l.len();
            leaving.push((off, l));
        }
        for (off, l) in leaving {
            self.commit(off, &l)?;
        }
        Ok(())
    }

    /// A body line that left the tail window: kept when it holds `--`, else part of a run.
    fn commit(&mut self, at: u64, line: &[u8]) -> Result<(), NotReducible> {
        if line.windows(2).any(|w| w == b"--") {
            self.close_run()?;
            return self.emit(line);
        }
        let min_run = self.limits.min_run as u64;
        let Mode::Leaf(leaf) = &mut self.mode else {
            return Ok(());
        };
        let run = leaf.run.get_or_insert_with(|| Run {
            start: at,
            len: 0,
            kept: Vec::new(),
            eol: b"\n",
        });
        run.len += line.len() as u64;
        run.eol = if line.ends_with(b"\r\n") {
            b"\r\n"
        } else {
            b"\n"
        };
        if run.len < min_run {
            run.kept.extend_from_slice(line);
        } else if !run.kept.is_empty() {
            run.kept = Vec::new();
        }
        Ok(())
    }

    fn close_run(&mut self) -> Result<(), NotReducible> {
        let Mode::Leaf(leaf) = &mut self.mode else {
            return Ok(());
        };
        let Some(run) = leaf.run.take() else {
            return Ok(());
        };
        if run.len < self.limits.min_run as u64 {
            return self.emit(&run.kept);
        }
        if self.elisions.len() >= MAX_ELISIONS {
            return Err(NotReducible(format!(
                "more than {MAX_ELISIONS} elided runs"
            )));
        }
        let start = self.out.len();
        let mut stand_in = self.token.clone();
        stand_in.extend_from_slice(format!("{:08}", self.elisions.len()).as_bytes());
        stand_in.extend_from_slice(run.eol);
        self.emit(&stand_in)?;
        let range = start..self.out.len();
        if let Mode::Leaf(leaf) = &mut self.mode {
            leaf.stand_ins.push(range.clone());
        }
        self.elisions.push(Elision {
            stand_in: range,
            original: run.start..run.start + run.len,
        });
        Ok(())
    }

    /// The current leaf ends (a delimiter follows, or the message ends).
    fn end_leaf(&mut self) -> Result<(), NotReducible> {
        if !matches!(self.mode, Mode::Leaf(_)) {
            return Ok(());
        }
        self.close_run()?;
        let Mode::Leaf(leaf) = std::mem::replace(&mut self.mode, Mode::Between) else {
            return Ok(());
        };
        let Leaf {
            body_start,
            tail,
            stand_ins,
            scan,
            ..
        } = *leaf;
        for (_, l) in &tail {
            self.emit(l)?;
        }
        if !stand_ins.is_empty() {
            self.parts.push(ElidedPart {
                body_start,
                body_end: self.out.len(),
                stand_ins,
                text: scan.and_then(TextScan::finish),
            });
        }
        Ok(())
    }

    fn finish(mut self) -> Result<Reduced, NotReducible> {
        self.end_leaf()?;
        // Each stand-in must be findable exactly once: the token must not occur elsewhere.
        let found = count(&self.out, &self.token);
        if found != self.elisions.len() {
            return Err(NotReducible(
                "the stand-in token occurs in the message itself".into(),
            ));
        }
        Ok(Reduced {
            raw: self.out,
            elisions: self.elisions,
            parts: self.parts,
        })
    }
}

fn count(haystack: &[u8], needle: &[u8]) -> usize {
    if needle.is_empty() || haystack.len() < needle.len() {
        return 0;
    }
    haystack
        .windows(needle.len())
        .filter(|w| *w == needle)
        .count()
}

/// `MGELIDED` + 32 hex digits of a digest of the time, the process and a counter + `x`.
fn token_prefix() -> Vec<u8> {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut h = sha2::Sha256::new();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    h.update(now.to_le_bytes());
    h.update(std::process::id().to_le_bytes());
    h.update(COUNTER.fetch_add(1, Ordering::Relaxed).to_le_bytes());
    let local = 0u8;
    h.update((std::ptr::addr_of!(local) as usize).to_le_bytes());
    let digest = h.finalize();
    let mut t = b"MGELIDED".to_vec();
    for b in digest.iter().take(16) {
        t.extend_from_slice(format!("{b:02x}").as_bytes());
    }
    t.push(b'x');
    t
}

/// Read Content-Type and Content-Transfer-Encoding from a part's header block (the last of
/// each wins, as in mail-parser).
fn parse_head(block: &[u8]) -> PartHead {
    let mut head = PartHead::default();
    let mut fields: Vec<Vec<u8>> = Vec::new();
    for line in block.split_inclusive(|&b| b == b'\n') {
        if matches!(line.first(), Some(b' ' | b'\t')) {
            if let Some(last) = fields.last_mut() {
                last.extend_from_slice(line);
            }
            continue;
        }
        fields.push(line.to_vec());
    }
    for f in &fields {
        let Some(colon) = f.iter().position(|&b| b == b':') else {
            continue;
        };
        let name = f[..colon].trim_ascii();
        let value: Vec<u8> = f[colon + 1..]
            .iter()
            .copied()
            .filter(|&b| b != b'\r' && b != b'\n')
            .collect();
        let Ok(value) = String::from_utf8(value) else {
            if name.eq_ignore_ascii_case(b"content-type") {
                head.unreadable = true;
            }
            continue;
        };
        if name.eq_ignore_ascii_case(b"content-type") {
            parse_content_type(&value, &mut head);
        } else if name.eq_ignore_ascii_case(b"content-transfer-encoding") {
            head.cte = Some(value.trim().to_string());
        }
    }
    head
}

fn parse_content_type(value: &str, head: &mut PartHead) {
    head.boundary = None;
    head.charset = None;
    head.unreadable = false;
    if value.contains('(') {
        head.unreadable = true;
        return;
    }
    let mut pieces = split_params(value).into_iter();
    head.content_type = pieces
        .next()
        .map(|t| t.trim().to_ascii_lowercase())
        .unwrap_or_default();
    if !head.content_type.contains('/') {
        head.unreadable = true;
        return;
    }
    for p in pieces {
        let Some((name, v)) = p.split_once('=') else {
            continue;
        };
        let name = name.trim().to_ascii_lowercase();
        if name.ends_with('*') || name.contains('*') {
            head.unreadable = true;
            return;
        }
        let v = v.trim();
        let v = match v.strip_prefix('"') {
            Some(q) => {
                let mut s = String::new();
                let mut chars = q.chars();
                while let Some(c) = chars.next() {
                    match c {
                        '\\' => s.extend(chars.next()),
                        '"' => break,
                        c => s.push(c),
                    }
                }
                s
            }
            None => v.to_string(),
        };
        match name.as_str() {
            "boundary" => head.boundary = Some(v.into_bytes()),
            "charset" => head.charset = Some(v.trim().to_string()),
            _ => {}
        }
    }
}

/// Split at `;` outside quoted strings.
fn split_params(value: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut quoted = false;
    let mut escaped = false;
    for (i, c) in value.char_indices() {
        if escaped {
            escaped = false;
            continue;
        }
        match c {
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            ';' if !quoted => {
                out.push(&value[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&value[start..]);
    out
}

/// The leaf part of `shape` that holds a stand-in.
fn part_of(shape: &MimeShape, stand_in: &Range<usize>) -> Option<usize> {
    shape.parts.iter().position(|p| {
        p.role != PartRole::Container
            && p.body_range.start <= stand_in.start
            && stand_in.end <= p.body_range.end
    })
}

/// Refuse a plan made on a reduced message whose output would not be the original's: one that
/// rewrites (re-encodes) an elided run, wraps the message, skips a part for a reason that
/// depends on its content, or searched a different marker than the scan did.
pub fn check_plan(
    plan: &EditPlan,
    shape: &MimeShape,
    request: &RewriteRequest,
    elisions: &[Elision],
) -> Result<(), String> {
    if elisions.is_empty() {
        return Ok(());
    }
    if let Some(d) = &request.disclaimer
        && shape.marker.as_deref() != Some(mime::normalize_marker(d.effective_marker()).as_str())
    {
        return Err("the disclaimer marker differs from the one the scan looked for".into());
    }
    let elided_parts: Vec<usize> = elisions
        .iter()
        .filter_map(|e| part_of(shape, &e.stand_in))
        .collect();
    for o in &plan.disclaimer {
        match o {
            DisclaimerOutcome::Wrapped { .. } => {
                return Err("wrapping signed mail needs the whole message".into());
            }
            DisclaimerOutcome::Skipped {
                part: Some(p),
                reason,
            } if elided_parts.contains(p)
                && !matches!(
                    reason,
                    SkipReason::UnsupportedTransferEncoding(_) | SkipReason::UnknownCharset(_)
                ) =>
            {
                return Err(format!(
                    "part {p} was skipped ({reason:?}) for a reason that depends on all of it"
                ));
            }
            _ => {}
        }
    }
    if let Some(body) = &plan.body {
        for e in elisions {
            let copied = body.segments.iter().any(|s| {
                matches!(s, Segment::Raw(r) if r.start <= e.stand_in.start && e.stand_in.end <= r.end)
            });
            if !copied {
                return Err(format!(
                    "the new body rewrites the elided run at byte {} (a re-encoded part)",
                    e.original.start
                ));
            }
        }
    }
    Ok(())
}

/// Writes `range` of the whole message to the given writer.
pub type CopyFn<'a> = dyn Fn(Range<u64>, &mut dyn Write) -> io::Result<()> + 'a;

/// Write the new body: the plan's segments over the reduced message `raw`, with every
/// stand-in replaced by its original bytes, which `copy` writes (from the spill file).
pub fn write_body(
    body: &BodyEdit,
    raw: &[u8],
    elisions: &[Elision],
    copy: &CopyFn<'_>,
    out: &mut dyn Write,
) -> io::Result<()> {
    for s in &body.segments {
        match s {
            Segment::New(b) => out.write_all(b)?,
            Segment::Raw(r) => {
                let mut pos = r.start;
                for e in elisions
                    .iter()
                    .filter(|e| r.start <= e.stand_in.start && e.stand_in.end <= r.end)
                {
                    out.write_all(raw.get(pos..e.stand_in.start).unwrap_or_default())?;
                    copy(e.original.clone(), out)?;
                    pos = e.stand_in.end;
                }
                out.write_all(raw.get(pos..r.end).unwrap_or_default())?;
            }
        }
    }
    Ok(())
}

/// Replace every stand-in in `reduced_output` (anything derived from the reduced message, e.g.
/// `rewrite::apply`'s output) by its original bytes from `original`. For tests and tools that
/// hold the original in memory; the daemon uses [`write_body`].
pub fn expand(reduced: &Reduced, reduced_output: &[u8], original: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(original.len() + reduced_output.len());
    let mut pos = 0;
    for e in &reduced.elisions {
        let token = &reduced.raw[e.stand_in.clone()];
        let Some(at) = find(&reduced_output[pos..], token).map(|i| i + pos) else {
            continue;
        };
        out.extend_from_slice(&reduced_output[pos..at]);
        let r = usize::try_from(e.original.start).unwrap_or(usize::MAX)
            ..usize::try_from(e.original.end).unwrap_or(usize::MAX);
        out.extend_from_slice(original.get(r).unwrap_or_default());
        pos = at + token.len();
    }
    out.extend_from_slice(&reduced_output[pos..]);
    out
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() || haystack.len() < needle.len() {
        return None;
    }
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Copy `range` of the bytes `read_at` reads, in 64 KiB pieces.
pub fn copy_range(
    range: Range<u64>,
    read_at: &dyn Fn(u64, &mut [u8]) -> io::Result<usize>,
    out: &mut dyn Write,
) -> io::Result<()> {
    let mut buf = vec![0u8; 64 * 1024];
    let mut pos = range.start;
    while pos < range.end {
        let want = usize::try_from(range.end - pos)
            .unwrap_or(usize::MAX)
            .min(buf.len());
        let n = read_at(pos, &mut buf[..want])?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the spilled message is shorter than when it was reduced",
            ));
        }
        out.write_all(&buf[..n])?;
        pos += n as u64;
    }
    Ok(())
}

#[cfg(test)]
mod tests;
