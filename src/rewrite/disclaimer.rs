//! Disclaimer insertion into message-text parts, MIME-, charset- and transfer-encoding-correct.
//!
//! For each part `inspect::mime` marked as message text: decode the transfer encoding, check the
//! marker in the decoded text, insert the disclaimer (plain: a blank line then the text; HTML:
//! an escaped block before `</body>`, else before `</html>`, else at the end), and re-encode
//! with the part's own transfer encoding and charset. When the charset cannot hold the text the
//! part is converted to UTF-8 and its charset parameter changed; a 7bit part that would carry
//! 8-bit text becomes quoted-printable. Identity-encoded parts (7bit/8bit) get the new bytes
//! spliced in, so every original byte stays. Nothing else in the message is touched.
//!
//! Signed or encrypted mail (see `shared/reference/markings.md` §(d)4) is skipped, wrapped as a
//! `message/rfc822` attachment of a new multipart/mixed, or refused, as the request says.
//!
//! Pure: no I/O, no logging. Reasons for every skipped part are returned.

use std::ops::Range;

use sha2::Digest as _;

use crate::inspect::mime::{
    self, CharsetStatus, LineEnding, MimeShape, PartInfo, TransferEncoding,
};

/// Where the disclaimer goes in each text part.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    /// At the end (plain: after a blank line; HTML: before `</body>`).
    Append,
    /// At the start (plain: followed by a blank line; HTML: just after `<body …>`).
    Prepend,
}

/// What to do when the body is signed or encrypted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignedAction {
    /// Leave the body alone (labels by header only).
    Skip,
    /// A new multipart/mixed: the disclaimer as text/plain (always the first part) plus the
    /// original as a `message/rfc822` attachment.
    Wrap,
    /// The plan says the message must be refused; the caller answers 5xx.
    Reject,
}

/// The disclaimer to ensure in the message text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DisclaimerEdit {
    /// Plain text (LF line ends).
    pub text: String,
    /// An HTML fragment for HTML parts, inserted inside markgate's block as written (non-ASCII
    /// turned into character references). `None`: the plain text, HTML-escaped.
    pub html: Option<String>,
    pub placement: Placement,
    /// Stable text searched for in the decoded message text; empty means the text itself. It
    /// must occur in `text` (and in `html` when given), or the edit would not be idempotent.
    pub marker: String,
    pub signed_action: SignedAction,
}

impl DisclaimerEdit {
    /// The marker actually searched for.
    pub fn effective_marker(&self) -> &str {
        if self.marker.trim().is_empty() {
            &self.text
        } else {
            &self.marker
        }
    }
}

/// Why a part did not get the disclaimer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SkipReason {
    /// The body is signed or encrypted and the request says skip.
    Protected { kind: &'static str },
    /// No part of the message is message text (and no multipart/mixed to add one to).
    NoTextPart,
    /// The charset label is unknown, so text cannot be added safely.
    UnknownCharset(String),
    /// The part's bytes are not valid in its charset, and the disclaimer needs a conversion.
    MalformedCharset(String),
    /// The transfer encoding has invalid characters; re-encoding would change content.
    DamagedTransferEncoding,
    /// A transfer encoding markgate does not write (e.g. `x-uuencode`).
    UnsupportedTransferEncoding(String),
    /// The input had no header block.
    NotParsed,
    /// The MIME parser and the header block disagree on where the body starts; editing by
    /// its offsets could corrupt the message.
    UnreliableStructure,
    /// The re-encoded part would contain an enclosing multipart's boundary.
    BoundaryCollision,
}

/// What happened to the disclaimer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DisclaimerOutcome {
    /// Added to an existing text part (index into `MimeShape::parts`).
    Added {
        part: usize,
        /// The part was converted to UTF-8 because its charset could not hold the text.
        converted_to_utf8: bool,
        /// The part's transfer encoding changed to quoted-printable (7bit part, 8-bit text).
        now_quoted_printable: bool,
    },
    /// Added as a new first text/plain part of a multipart/mixed that had no text.
    AddedNewPart,
    /// The signed/encrypted original was wrapped as an attachment.
    Wrapped { kind: &'static str },
    /// The marker was already in the decoded text of this part (`None`: of the message).
    AlreadyPresent { part: Option<usize> },
    Skipped {
        part: Option<usize>,
        reason: SkipReason,
    },
    /// Signed/encrypted and the request says reject.
    MustReject { kind: &'static str },
}

/// Byte edits and top-level header changes the disclaimer needs.
#[derive(Debug, Default)]
pub(crate) struct BodyWork {
    /// Non-overlapping replacements of raw byte ranges (absolute offsets, all ≥ body offset).
    pub splices: Vec<(Range<usize>, Vec<u8>)>,
    /// The whole body replaced by a wrapper around the original message.
    pub wrap: Option<Wrap>,
    /// Changes to the message's own (top-level) MIME headers.
    pub top: TopHeaders,
    pub outcomes: Vec<DisclaimerOutcome>,
    pub diagnostics: Vec<String>,
}

/// The wrapper: `prefix`, then the whole original message, then `suffix`.
#[derive(Debug)]
pub(crate) struct Wrap {
    pub prefix: Vec<u8>,
    pub suffix: Vec<u8>,
    pub content_type: String,
    pub transfer_encoding: Option<&'static str>,
}

/// Top-level MIME header changes (sent as milter header operations).
#[derive(Debug, Default, Clone)]
pub(crate) struct TopHeaders {
    pub charset_utf8: bool,
    pub quoted_printable: bool,
}

/// Plan the disclaimer for a message.
pub(crate) fn plan_disclaimer(raw: &[u8], shape: &MimeShape, edit: &DisclaimerEdit) -> BodyWork {
    let mut work = BodyWork::default();
    if !shape.parsed {
        work.outcomes.push(DisclaimerOutcome::Skipped {
            part: None,
            reason: SkipReason::NotParsed,
        });
        return work;
    }
    if !shape.structure_reliable {
        work.outcomes.push(DisclaimerOutcome::Skipped {
            part: None,
            reason: SkipReason::UnreliableStructure,
        });
        return work;
    }
    let marker = mime::fold_marker(edit.effective_marker());
    // inspect already searched for this marker when it was given the same one: reuse that.
    let known = shape.marker.as_deref() == Some(&*marker);
    let has_marker = |part: &PartInfo| -> bool {
        if known && let Some(found) = part.marker_present {
            return found;
        }
        let decoded = mime::decode_part_text(raw, part);
        mime::marker_in_text(&decoded.text, part.is_html(), &marker)
    };

    if let Some(sec) = shape.security.first() {
        let kind = sec.kind();
        let readable = shape.text_parts.iter().chain(&shape.signed_text_parts);
        if let Some(&p) = readable.clone().find(|&&p| has_marker(&shape.parts[p])) {
            work.outcomes
                .push(DisclaimerOutcome::AlreadyPresent { part: Some(p) });
            return work;
        }
        match edit.signed_action {
            SignedAction::Skip => work.outcomes.push(DisclaimerOutcome::Skipped {
                part: None,
                reason: SkipReason::Protected { kind },
            }),
            SignedAction::Reject => work.outcomes.push(DisclaimerOutcome::MustReject { kind }),
            SignedAction::Wrap => {
                work.wrap = Some(wrap(raw, shape.line_ending, edit));
                work.outcomes.push(DisclaimerOutcome::Wrapped { kind });
            }
        }
        return work;
    }

    if shape.text_parts.is_empty() {
        match shape.mixed_without_text() {
            Some(root) => {
                if let Some(first) = shape.parts.iter().find(|p| p.parent == Some(root)) {
                    let boundary = shape.parts[root].boundary.clone().unwrap_or_default();
                    let eol = shape.line_ending.as_bytes();
                    let mut bytes = new_text_part(&edit.text, eol);
                    bytes.extend_from_slice(eol);
                    bytes.extend_from_slice(b"--");
                    bytes.extend_from_slice(boundary.as_bytes());
                    bytes.extend_from_slice(eol);
                    let at = first.header_range.start;
                    work.splices.push((at..at, bytes));
                    work.outcomes.push(DisclaimerOutcome::AddedNewPart);
                }
            }
            None => work.outcomes.push(DisclaimerOutcome::Skipped {
                part: None,
                reason: SkipReason::NoTextPart,
            }),
        }
        return work;
    }

    for &id in &shape.text_parts {
        let part = &shape.parts[id];
        let present = if known { part.marker_present } else { None };
        match edit_part(raw, shape, part, edit, &marker, present) {
            Ok(PartResult::Present) => work
                .outcomes
                .push(DisclaimerOutcome::AlreadyPresent { part: Some(id) }),
            Ok(PartResult::Edited(pe)) => {
                work.splices.push((pe.body_range, pe.body));
                if id == 0 {
                    work.top.charset_utf8 |= pe.charset_utf8;
                    work.top.quoted_printable |= pe.quoted_printable;
                } else {
                    work.splices.extend(part_header_splices(
                        raw,
                        part,
                        pe.charset_utf8,
                        pe.quoted_printable,
                        shape.line_ending,
                    ));
                }
                work.outcomes.push(DisclaimerOutcome::Added {
                    part: id,
                    converted_to_utf8: pe.charset_utf8,
                    now_quoted_printable: pe.quoted_printable,
                });
            }
            Err(reason) => work.outcomes.push(DisclaimerOutcome::Skipped {
                part: Some(id),
                reason,
            }),
        }
    }
    work.splices.sort_by_key(|(r, _)| (r.start, r.end));
    // Overlaps cannot come from a sane tree; drop the later edit rather than corrupt bytes.
    let mut kept: Vec<(Range<usize>, Vec<u8>)> = Vec::with_capacity(work.splices.len());
    for (r, b) in std::mem::take(&mut work.splices) {
        if kept.last().is_some_and(|(last, _)| r.start < last.end) {
            work.diagnostics
                .push(format!("overlapping edit at byte {} dropped", r.start));
            continue;
        }
        kept.push((r, b));
    }
    work.splices = kept;
    work
}

enum PartResult {
    Present,
    Edited(PartEdit),
}

struct PartEdit {
    body_range: Range<usize>,
    body: Vec<u8>,
    charset_utf8: bool,
    quoted_printable: bool,
}

/// How the inserted text is represented in the part.
enum CharsetPlan {
    /// The insertion encodes into the declared charset: splice bytes.
    Native(Vec<u8>),
    /// Convert the whole part to UTF-8.
    ToUtf8,
}

fn edit_part(
    raw: &[u8],
    shape: &MimeShape,
    part: &PartInfo,
    edit: &DisclaimerEdit,
    marker: &str,
    present: Option<bool>,
) -> Result<PartResult, SkipReason> {
    if present == Some(true) {
        return Ok(PartResult::Present);
    }
    if let TransferEncoding::Other(o) = &part.transfer_encoding {
        return Err(SkipReason::UnsupportedTransferEncoding(o.clone()));
    }
    let encoded = raw.get(part.body_range.clone()).unwrap_or_default();
    let (content, clean) = mime::decode_transfer(encoded, &part.transfer_encoding);
    if !clean {
        return Err(SkipReason::DamagedTransferEncoding);
    }
    let (text, status) = mime::decode_charset(&content, part.charset.as_deref());
    if present.is_none() && mime::marker_in_text(&text, part.is_html(), marker) {
        return Ok(PartResult::Present);
    }
    let label = part.charset.clone().unwrap_or_default();
    let Some(enc) = mime::charset_encoding(part.charset.as_deref()) else {
        return Err(SkipReason::UnknownCharset(label));
    };
    let raw_eol = if encoded.contains(&b'\n') {
        LineEnding::detect(encoded)
    } else {
        shape.line_ending
    };
    let content_eol = if content.contains(&b'\n') {
        LineEnding::detect(&content)
    } else {
        shape.line_ending
    };
    let html = part.is_html();
    let insertion_text = if html {
        html_block(edit)
    } else {
        edit.text.clone()
    };

    let ascii_compatible = enc.is_ascii_compatible() && enc.output_encoding() == enc;
    let plan = if !ascii_compatible {
        CharsetPlan::ToUtf8
    } else {
        match encode_strict(&insertion_text, part.charset.as_deref(), enc) {
            Some(b) => CharsetPlan::Native(b),
            None => CharsetPlan::ToUtf8,
        }
    };
    let (new_content, insert_at, inserted, to_utf8): (Option<Vec<u8>>, usize, Vec<u8>, bool) =
        match plan {
            CharsetPlan::Native(bytes) => {
                let (at, ins) = insertion(&content, &bytes, html, edit.placement, content_eol);
                (None, at, ins, false)
            }
            CharsetPlan::ToUtf8 => {
                if status != CharsetStatus::Ok {
                    return Err(SkipReason::MalformedCharset(label));
                }
                let utf8 = text.as_bytes();
                let (at, ins) = insertion(
                    utf8,
                    insertion_text.as_bytes(),
                    html,
                    edit.placement,
                    content_eol,
                );
                let mut v = Vec::with_capacity(utf8.len() + ins.len());
                v.extend_from_slice(&utf8[..at]);
                v.extend_from_slice(&ins);
                v.extend_from_slice(&utf8[at..]);
                (Some(v), at, ins, true)
            }
        };

    let splice_content = |content: &[u8]| -> Vec<u8> {
        match &new_content {
            Some(v) => v.clone(),
            None => {
                let mut v = Vec::with_capacity(content.len() + inserted.len());
                v.extend_from_slice(&content[..insert_at]);
                v.extend_from_slice(&inserted);
                v.extend_from_slice(&content[insert_at..]);
                v
            }
        }
    };

    let trailing_eol = encoded.ends_with(b"\n");
    let (body_range, body, qp) = match &part.transfer_encoding {
        TransferEncoding::Base64 => (
            part.body_range.clone(),
            encode_base64_lines(&splice_content(&content), raw_eol.as_bytes(), trailing_eol),
            false,
        ),
        TransferEncoding::QuotedPrintable => (
            part.body_range.clone(),
            encode_qp(&splice_content(&content), raw_eol.as_bytes()),
            false,
        ),
        cte => {
            let seven_bit = matches!(cte, TransferEncoding::Absent | TransferEncoding::SevenBit);
            let needs_qp = (seven_bit
                && (!inserted.is_ascii() || new_content.as_ref().is_some_and(|v| !v.is_ascii())))
                || max_line_len(&inserted) > 998;
            if needs_qp {
                (
                    part.body_range.clone(),
                    encode_qp(&splice_content(&content), raw_eol.as_bytes()),
                    true,
                )
            } else if let Some(v) = new_content {
                (part.body_range.clone(), v, false)
            } else {
                // Splice: every original byte stays where it was.
                let at = part.body_range.start + insert_at;
                (at..at, inserted, false)
            }
        }
    };
    // A boundary of an enclosing multipart inside the new bytes would end the part early
    // (mail-parser, like many readers, finds `--boundary` anywhere). Leave such a part alone.
    let mut ancestor = part.parent;
    while let Some(a) = ancestor {
        if let Some(b) = &shape.parts[a].boundary {
            let mut delim = b"--".to_vec();
            delim.extend_from_slice(b.as_bytes());
            if mime::find_ascii_ci(&body, &delim).is_some() {
                return Err(SkipReason::BoundaryCollision);
            }
        }
        ancestor = shape.parts[a].parent;
    }
    Ok(PartResult::Edited(PartEdit {
        body_range,
        body,
        charset_utf8: to_utf8,
        quoted_printable: qp,
    }))
}

fn max_line_len(b: &[u8]) -> usize {
    b.split(|&c| c == b'\n').map(<[u8]>::len).max().unwrap_or(0)
}

/// Encode `text` in the part's charset, refusing anything it cannot hold exactly. US-ASCII and
/// ISO-8859-1 are checked strictly (encoding_rs treats both as windows-1252).
fn encode_strict(
    text: &str,
    label: Option<&str>,
    enc: &'static encoding_rs::Encoding,
) -> Option<Vec<u8>> {
    let l = label
        .map(|l| l.trim().trim_matches('"').to_ascii_lowercase())
        .unwrap_or_else(|| "us-ascii".into());
    if matches!(
        l.as_str(),
        "us-ascii"
            | "ascii"
            | "ansi_x3.4-1968"
            | "iso646-us"
            | "us"
            | "iso-ir-6"
            | "cp367"
            | "ibm367"
            | "csascii"
    ) {
        return text.is_ascii().then(|| text.as_bytes().to_vec());
    }
    if matches!(
        l.as_str(),
        "iso-8859-1"
            | "iso8859-1"
            | "iso_8859-1"
            | "latin1"
            | "latin-1"
            | "l1"
            | "iso-ir-100"
            | "cp819"
            | "ibm819"
            | "csisolatin1"
            | "iso_8859-1:1987"
            | "iso88591"
    ) {
        return text
            .chars()
            .map(|c| u8::try_from(u32::from(c)).ok())
            .collect();
    }
    let (bytes, _, unmappable) = enc.encode(text);
    (!unmappable).then(|| bytes.into_owned())
}

/// Where to insert and what, in content bytes whose line ends are `eol`.
fn insertion(
    content: &[u8],
    text: &[u8],
    html: bool,
    placement: Placement,
    eol: LineEnding,
) -> (usize, Vec<u8>) {
    let eol = eol.as_bytes();
    let text = with_eol(text, eol);
    if html {
        let at = match placement {
            Placement::Append => mime::rfind_ascii_ci(content, b"</body")
                .or_else(|| mime::rfind_ascii_ci(content, b"</html"))
                .unwrap_or(content.len()),
            Placement::Prepend => open_tag_end(content, b"<body")
                .or_else(|| open_tag_end(content, b"<html"))
                .unwrap_or(0),
        };
        // Broken HTML can leave a comment, script or style open at that point, where the block
        // would be invisible. Closing it there would reveal what follows, so move: prepending
        // goes to the very start (nothing is open there); appending goes to the very end,
        // after closing whatever is open (nothing follows to be revealed).
        let (at, closer) = match (open_raw_context(&content[..at]), placement) {
            (None, _) => (at, None),
            (Some(_), Placement::Prepend) => (0, None),
            (Some(_), Placement::Append) => (content.len(), open_raw_context(content)),
        };
        let mut text = match closer {
            Some(closer) => {
                let mut t = closer.as_bytes().to_vec();
                t.extend_from_slice(&text);
                t
            }
            None => text,
        };
        // No closing tag: the block goes at the very end. Keep it on lines of its own and end
        // it with a line end, as the part did (the MTA would otherwise add one on the wire, and
        // the output would differ from what was planned).
        if at == content.len() && !content.is_empty() {
            if !content.ends_with(b"\n") {
                text.splice(0..0, eol.iter().copied());
            }
            text.extend_from_slice(eol);
        }
        return (at, text);
    }
    let mut ins = Vec::with_capacity(text.len() + 3 * eol.len());
    match placement {
        Placement::Append => {
            if !content.is_empty() {
                if !content.ends_with(b"\n") {
                    ins.extend_from_slice(eol);
                }
                ins.extend_from_slice(eol);
            }
            ins.extend_from_slice(&text);
            ins.extend_from_slice(eol);
            (content.len(), ins)
        }
        Placement::Prepend => {
            ins.extend_from_slice(&text);
            ins.extend_from_slice(eol);
            ins.extend_from_slice(eol);
            (0, ins)
        }
    }
}

/// If `before` ends inside something that would hide text written after it, the text that closes
/// it: an unclosed comment, `<script>` or `<style>` element (their content is never shown), or a
/// tag cut short before its `>` (`<style` at the very end would swallow the block into the
/// element it opens; `<div title='x` would swallow it into an attribute value).
fn open_raw_context(before: &[u8]) -> Option<String> {
    let mut i = 0;
    while let Some(p) = before[i..].iter().position(|&b| b == b'<') {
        let start = i + p;
        let rest = &before[start..];
        if rest.starts_with(b"<!--") {
            match mime::find_ascii_ci(&rest[4..], b"-->") {
                Some(e) => i = start + 4 + e + 3,
                None => return Some("-->".into()),
            }
            continue;
        }
        let element = [(&b"<script"[..], "</script>"), (&b"<style"[..], "</style>")]
            .into_iter()
            .find(|(open, _)| {
                rest.len() >= open.len()
                    && rest[..open.len()].eq_ignore_ascii_case(open)
                    && rest
                        .get(open.len())
                        // The name ends where `inspect::mime`'s HTML reader ends it (at the
                        // first character that is not a letter or digit), or the two would
                        // disagree on what is hidden: `<style<` opens a style element there.
                        .is_none_or(|b| !b.is_ascii_alphanumeric())
            });
        if let Some((open, close)) = element {
            // The opening tag may itself be cut short: it needs its `>` first.
            let Some(gt) = rest[open.len()..].iter().position(|&b| b == b'>') else {
                return Some(format!("{}>{close}", open_quote(&rest[open.len()..])));
            };
            let content = open.len() + gt + 1;
            let closing = &close.as_bytes()[..close.len() - 1];
            match mime::find_ascii_ci(&rest[content..], closing) {
                Some(e) => i = start + content + e + closing.len(),
                None => return Some(close.into()),
            }
            continue;
        }
        let starts_tag = rest
            .get(1)
            .is_some_and(|b| b.is_ascii_alphabetic() || matches!(b, b'/' | b'!' | b'?'));
        if starts_tag && !rest.contains(&b'>') {
            return Some(format!("{}>", open_quote(&rest[1..])));
        }
        i = start + 1;
    }
    None
}

/// The quote character left open in the inside of a tag cut short, if any (a browser would read
/// everything after it as the attribute's value).
fn open_quote(inside: &[u8]) -> &'static str {
    let mut open = None;
    for &b in inside {
        match (open, b) {
            (None, b'"' | b'\'') => open = Some(b),
            (Some(q), b) if b == q => open = None,
            _ => {}
        }
    }
    match open {
        Some(b'"') => "\"",
        Some(_) => "'",
        None => "",
    }
}

/// Index just after the opening tag `<name…>` (first occurrence), if present.
fn open_tag_end(content: &[u8], name: &[u8]) -> Option<usize> {
    let start = mime::find_ascii_ci(content, name)?;
    let after = content.get(start + name.len())?;
    if !(after.is_ascii_whitespace() || *after == b'>') {
        return None;
    }
    content[start..]
        .iter()
        .position(|&b| b == b'>')
        .map(|p| start + p + 1)
}

/// LF line ends in `text` become `eol`; a trailing line end is dropped.
fn with_eol(text: &[u8], eol: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len() + 8);
    let text = text.strip_suffix(b"\n").unwrap_or(text);
    let mut rest = text.strip_suffix(b"\r").unwrap_or(text);
    // A line at a time: its CR before the LF, if any, is dropped; other CRs stay.
    while let Some(j) = memchr::memchr(b'\n', rest) {
        let line = &rest[..j];
        out.extend_from_slice(line.strip_suffix(b"\r").unwrap_or(line));
        out.extend_from_slice(eol);
        rest = &rest[j + 1..];
    }
    out.extend_from_slice(rest);
    out
}

/// markgate's HTML block: the policy's fragment or the escaped plain text, always ASCII (other
/// characters as numeric references), so it fits any ASCII-compatible charset.
fn html_block(edit: &DisclaimerEdit) -> String {
    let inner = match &edit.html {
        Some(h) => h.trim().to_string(),
        None => escape_html(edit.text.trim_end()).replace('\n', "<br>\n"),
    };
    let mut out = String::from("<div class=\"markgate-disclaimer\">");
    for c in inner.chars() {
        if c.is_ascii() {
            out.push(c);
        } else {
            out.push_str(&format!("&#{};", u32::from(c)));
        }
    }
    out.push_str("</div>");
    out
}

fn escape_html(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 16);
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            _ => out.push(c),
        }
    }
    out
}

/// Base64 in 76-character lines.
pub(crate) fn encode_base64_lines(data: &[u8], eol: &[u8], trailing_eol: bool) -> Vec<u8> {
    use base64::Engine as _;
    let encoded = base64::engine::general_purpose::STANDARD.encode(data);
    let mut out = Vec::with_capacity(encoded.len() + encoded.len() / 76 * eol.len() + eol.len());
    for (i, chunk) in encoded.as_bytes().chunks(76).enumerate() {
        if i > 0 {
            out.extend_from_slice(eol);
        }
        out.extend_from_slice(chunk);
    }
    if trailing_eol && !out.is_empty() {
        out.extend_from_slice(eol);
    }
    out
}

/// Quoted-printable (RFC 2045 §6.7): CRLF or LF in the data are hard line breaks (written as
/// `eol`); lines are soft-broken so no encoded line passes 76 characters; trailing whitespace,
/// `=`, control characters and 8-bit bytes are encoded; a lone CR is `=0D`.
pub(crate) fn encode_qp(data: &[u8], eol: &[u8]) -> Vec<u8> {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut out = Vec::with_capacity(data.len() + data.len() / 8);
    let mut line_len = 0usize;
    let mut i = 0;
    while i < data.len() {
        let b = data[i];
        let hard_break = b == b'\n' || (b == b'\r' && data.get(i + 1) == Some(&b'\n'));
        if hard_break {
            out.extend_from_slice(eol);
            line_len = 0;
            i += if b == b'\r' { 2 } else { 1 };
            continue;
        }
        let next_is_break = match data.get(i + 1) {
            None => true,
            Some(b'\n') => true,
            Some(b'\r') => data.get(i + 2) == Some(&b'\n'),
            _ => false,
        };
        let literal =
            (b == b' ' || b == b'\t') && !next_is_break || (33..=126).contains(&b) && b != b'=';
        let piece_len = if literal { 1 } else { 3 };
        // Keep room for the soft-break `=` (76 including it).
        let limit = if next_is_break { 76 } else { 75 };
        if line_len + piece_len > limit {
            out.push(b'=');
            out.extend_from_slice(eol);
            line_len = 0;
        }
        if literal {
            out.push(b);
        } else {
            out.push(b'=');
            out.push(HEX[(b >> 4) as usize]);
            out.push(HEX[(b & 15) as usize]);
        }
        line_len += piece_len;
        i += 1;
    }
    out
}

/// A text/plain part with the disclaimer: headers, blank line, body (no trailing line end; the
/// delimiter that follows supplies it).
fn new_text_part(text: &str, eol: &[u8]) -> Vec<u8> {
    let body_text = with_eol(text.as_bytes(), eol);
    let ascii = text.is_ascii() && max_line_len(&body_text) <= 998;
    let mut out = Vec::with_capacity(body_text.len() + 128);
    out.extend_from_slice(b"Content-Type: text/plain; charset=\"utf-8\"");
    out.extend_from_slice(eol);
    out.extend_from_slice(b"Content-Transfer-Encoding: ");
    out.extend_from_slice(if ascii { b"7bit" } else { b"quoted-printable" });
    out.extend_from_slice(eol);
    out.extend_from_slice(eol);
    if ascii {
        out.extend_from_slice(&body_text);
    } else {
        out.extend_from_slice(&encode_qp(&body_text, eol));
    }
    out.extend_from_slice(eol);
    out
}

/// Wrap the whole original message as a `message/rfc822` attachment of a new multipart/mixed
/// whose other part is the disclaimer.
fn wrap(raw: &[u8], eol: LineEnding, edit: &DisclaimerEdit) -> Wrap {
    let eol = eol.as_bytes();
    let digest = sha2::Sha256::digest(raw);
    let hex: String = digest.iter().take(12).map(|b| format!("{b:02x}")).collect();
    let mut boundary = format!("markgate-wrap-{hex}");
    let mut n = 0u32;
    while mime::find_ascii_ci(raw, boundary.as_bytes()).is_some() {
        n += 1;
        boundary = format!("markgate-wrap-{hex}-{n}");
    }
    let eight_bit = !raw.is_ascii();
    let long_lines = max_line_len(raw) > 999;
    let cte = if long_lines || raw.contains(&0) {
        Some("binary")
    } else if eight_bit {
        Some("8bit")
    } else {
        None
    };
    let delim = |out: &mut Vec<u8>| {
        out.extend_from_slice(b"--");
        out.extend_from_slice(boundary.as_bytes());
        out.extend_from_slice(eol);
    };
    let text_part = new_text_part(&edit.text, eol);
    let mut rfc822_head = Vec::new();
    rfc822_head.extend_from_slice(b"Content-Type: message/rfc822");
    rfc822_head.extend_from_slice(eol);
    rfc822_head.extend_from_slice(b"Content-Disposition: inline");
    rfc822_head.extend_from_slice(eol);
    if let Some(c) = cte {
        rfc822_head.extend_from_slice(b"Content-Transfer-Encoding: ");
        rfc822_head.extend_from_slice(c.as_bytes());
        rfc822_head.extend_from_slice(eol);
    }
    rfc822_head.extend_from_slice(eol);

    let mut prefix = Vec::new();
    prefix.extend_from_slice(b"This is a multi-part message in MIME format.");
    prefix.extend_from_slice(eol);
    let mut suffix = Vec::new();
    suffix.extend_from_slice(eol);
    // The disclaimer always comes first, whatever the placement: a truncated or malformed
    // original (an unterminated multipart) can swallow everything after it in a reader's
    // parser, and the notice must stay visible.
    delim(&mut prefix);
    prefix.extend_from_slice(&text_part);
    delim(&mut prefix);
    prefix.extend_from_slice(&rfc822_head);
    suffix.extend_from_slice(b"--");
    suffix.extend_from_slice(boundary.as_bytes());
    suffix.extend_from_slice(b"--");
    suffix.extend_from_slice(eol);
    Wrap {
        prefix,
        suffix,
        content_type: format!("multipart/mixed; boundary=\"{boundary}\""),
        transfer_encoding: cte,
    }
}

/// Splices that change a nested part's Content-Type charset and/or Content-Transfer-Encoding
/// in its raw header block.
fn part_header_splices(
    raw: &[u8],
    part: &PartInfo,
    charset_utf8: bool,
    quoted_printable: bool,
    eol: LineEnding,
) -> Vec<(Range<usize>, Vec<u8>)> {
    let mut out = Vec::new();
    let block_start = part.header_range.start;
    let block = raw.get(part.header_range.clone()).unwrap_or_default();
    let fields = super::headers::split_fields(block);
    let eolb = LineEnding::detect(block);
    let eolb = if block.contains(&b'\n') { eolb } else { eol };
    let insert_at = fields
        .iter()
        .find(|f| f.is_separator)
        .map(|f| block_start + f.range.start)
        .unwrap_or(part.header_range.end);
    let find = |name: &str| {
        fields.iter().find(|f| {
            f.name(block)
                .is_some_and(|n| n.eq_ignore_ascii_case(name.as_bytes()))
        })
    };
    // Replace the named field's value (up to its line end), or add the whole `line` before the
    // separator when the part has no such field.
    let mut set = |name: &str, value: &dyn Fn(&[u8]) -> Vec<u8>, line: &[u8]| match find(name) {
        Some(f) => {
            let colon = f.range.start + f.colon.unwrap_or(0) + 1;
            let field = &block[colon..f.range.end];
            let value_end = field.len()
                - if field.ends_with(b"\r\n") {
                    2
                } else if field.ends_with(b"\n") {
                    1
                } else {
                    0
                };
            out.push((
                block_start + colon..block_start + colon + value_end,
                value(&field[..value_end]),
            ));
        }
        None => {
            let mut line = line.to_vec();
            line.extend_from_slice(eolb.as_bytes());
            out.push((insert_at..insert_at, line));
        }
    };
    if charset_utf8 {
        set(
            "Content-Type",
            &|v| set_charset_param(v, "utf-8"),
            b"Content-Type: text/plain; charset=\"utf-8\"",
        );
    }
    if quoted_printable {
        set(
            "Content-Transfer-Encoding",
            &|_| b" quoted-printable".to_vec(),
            b"Content-Transfer-Encoding: quoted-printable",
        );
    }
    out
}

/// Set (or add) the `charset` parameter in a Content-Type value, keeping every other byte.
/// Quoted strings and comments are skipped when looking for the parameter.
pub(crate) fn set_charset_param(value: &[u8], charset: &str) -> Vec<u8> {
    let mut i = 0;
    let mut in_quote = false;
    let mut depth = 0usize;
    // Find each `;` outside quotes/comments, then the parameter name after it.
    while i < value.len() {
        let b = value[i];
        if in_quote {
            if b == b'\\' {
                i += 1;
            } else if b == b'"' {
                in_quote = false;
            }
        } else if depth > 0 {
            if b == b')' {
                depth -= 1;
            } else if b == b'(' {
                depth += 1;
            }
        } else if b == b'"' {
            in_quote = true;
        } else if b == b'(' {
            depth += 1;
        } else if b == b';' {
            let mut j = i + 1;
            while j < value.len() && value[j].is_ascii_whitespace() {
                j += 1;
            }
            let name_start = j;
            while j < value.len()
                && (value[j].is_ascii_alphanumeric() || value[j] == b'-' || value[j] == b'*')
            {
                j += 1;
            }
            let name = &value[name_start..j];
            let mut k = j;
            while k < value.len() && value[k].is_ascii_whitespace() {
                k += 1;
            }
            if name.eq_ignore_ascii_case(b"charset") && value.get(k) == Some(&b'=') {
                k += 1;
                while k < value.len() && value[k].is_ascii_whitespace() {
                    k += 1;
                }
                let v_start = k;
                let v_end = if value.get(k) == Some(&b'"') {
                    let mut m = k + 1;
                    while m < value.len() && value[m] != b'"' {
                        if value[m] == b'\\' {
                            m += 1;
                        }
                        m += 1;
                    }
                    (m + 1).min(value.len())
                } else {
                    let mut m = k;
                    while m < value.len()
                        && !value[m].is_ascii_whitespace()
                        && value[m] != b';'
                        && value[m] != b'('
                    {
                        m += 1;
                    }
                    m
                };
                let mut out = Vec::with_capacity(value.len() + 8);
                out.extend_from_slice(&value[..v_start]);
                out.extend_from_slice(format!("\"{charset}\"").as_bytes());
                out.extend_from_slice(&value[v_end..]);
                return out;
            }
        }
        i += 1;
    }
    let mut end = value.len();
    while end > 0 && value[end - 1].is_ascii_whitespace() {
        end -= 1;
    }
    let mut out = value[..end].to_vec();
    if out.last() == Some(&b';') {
        out.pop();
    }
    out.extend_from_slice(format!("; charset=\"{charset}\"").as_bytes());
    out.extend_from_slice(&value[end..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn with_eol_matches_the_bytewise_conversion() {
        fn bytewise(text: &[u8], eol: &[u8]) -> Vec<u8> {
            let mut out = Vec::new();
            let text = text.strip_suffix(b"\n").unwrap_or(text);
            let text = text.strip_suffix(b"\r").unwrap_or(text);
            for (i, &b) in text.iter().enumerate() {
                match b {
                    b'\r' if text.get(i + 1) == Some(&b'\n') => {}
                    b'\n' => out.extend_from_slice(eol),
                    b => out.push(b),
                }
            }
            out
        }
        let pieces: [&[u8]; 7] = [b"a", b"\n", b"\r", b"\r\n", b"\r\r\n", b"bc ", b"\n\n"];
        let mut n = 0;
        for a in pieces {
            for b in pieces {
                for c in pieces {
                    for d in pieces {
                        let t = [a, b, c, d].concat();
                        for eol in [&b"\r\n"[..], b"\n"] {
                            assert_eq!(with_eol(&t, eol), bytewise(&t, eol), "{t:?}");
                            n += 1;
                        }
                    }
                }
            }
        }
        assert_eq!(n, 2 * 7 * 7 * 7 * 7);
    }

    #[test]
    fn qp_round_trips_and_keeps_lines_short() {
        let data = "Caf\u{e9} =  trailing \r\nline two with a very long tail that goes on and on and on past the seventy-six column limit for sure\r\n".as_bytes();
        let enc = encode_qp(data, b"\r\n");
        for line in enc.split(|&b| b == b'\n') {
            assert!(line.len() <= 77, "{:?}", String::from_utf8_lossy(line));
        }
        let (dec, clean) = mime::decode_qp(&enc);
        assert!(clean);
        assert_eq!(dec, data);
    }

    #[test]
    fn qp_encodes_trailing_space_and_lone_cr() {
        let enc = encode_qp(b"a \nb\rc", b"\n");
        assert_eq!(enc, b"a=20\nb=0Dc");
    }

    #[test]
    fn charset_param_replaced_or_added() {
        assert_eq!(
            set_charset_param(b" text/plain; charset=iso-8859-1; format=flowed", "utf-8"),
            b" text/plain; charset=\"utf-8\"; format=flowed".to_vec()
        );
        assert_eq!(
            set_charset_param(b" text/plain; name=\"x; charset=a\"", "utf-8"),
            b" text/plain; name=\"x; charset=a\"; charset=\"utf-8\"".to_vec()
        );
        assert_eq!(
            set_charset_param(b" text/plain;\r\n\tCharset=\"ISO-8859-1\"", "utf-8"),
            b" text/plain;\r\n\tCharset=\"utf-8\"".to_vec()
        );
    }

    #[test]
    fn html_block_escapes_an_open_comment_or_script() {
        let closer = |html: &[u8]| open_raw_context(html);
        assert_eq!(closer(b"<p>a</p><!-- x -->"), None);
        assert_eq!(closer(b"<p>a</p><!-- x ").as_deref(), Some("-->"));
        assert_eq!(closer(b"<SCRIPT>var a = 1;").as_deref(), Some("</script>"));
        assert_eq!(closer(b"<style>p{}</style><scripts>"), None);
        // Tags cut short (found by the rewrite fuzz target: `<style` at the very end hid the
        // block inside the style element it opened).
        assert_eq!(closer(b"<style").as_deref(), Some("></style>"));
        assert_eq!(closer(b"<style<").as_deref(), Some("></style>"));
        assert_eq!(closer(b"<p>a<style a='x").as_deref(), Some("'></style>"));
        assert_eq!(closer(b"<p>a</p><div title=\"x").as_deref(), Some("\">"));
        assert_eq!(closer(b"<p>a</p></div").as_deref(), Some(">"));
        assert_eq!(closer(b"a < b and 3<4"), None);
        let html = b"<body><!-- open </body>";
        let (at, ins) = insertion(html, b"X", true, Placement::Append, LineEnding::Crlf);
        // At the very end the block gets lines of its own and a final line end.
        assert_eq!((at, ins.as_slice()), (html.len(), &b"\r\n-->X\r\n"[..]));
        let html = b"<!-- <body> hidden -->";
        let (at, ins) = insertion(html, b"X", true, Placement::Prepend, LineEnding::Crlf);
        assert_eq!((at, ins.as_slice()), (0, &b"X"[..]));
    }

    #[test]
    fn base64_lines_are_76() {
        let enc = encode_base64_lines(&[7u8; 200], b"\r\n", true);
        let lines: Vec<&[u8]> = enc.split(|&b| b == b'\n').collect();
        assert_eq!(lines[0].len(), 77);
        assert!(enc.ends_with(b"\r\n"));
    }

    #[test]
    fn strict_latin1_refuses_em_dash() {
        let enc = encoding_rs::WINDOWS_1252;
        assert!(encode_strict("a\u{2014}b", Some("iso-8859-1"), enc).is_none());
        assert_eq!(
            encode_strict("\u{e9}", Some("ISO-8859-1"), enc),
            Some(vec![0xe9])
        );
        assert!(encode_strict("\u{e9}", None, enc).is_none());
        assert_eq!(
            encode_strict("a\u{2014}", Some("windows-1252"), enc),
            Some(vec![b'a', 0x97])
        );
    }
}
