//! The MIME shape of a message: which parts are the message text a reader sees, their charset,
//! transfer encoding and byte ranges, which parts are attachments or forwarded messages, whether
//! the message is signed or encrypted, and whether a disclaimer marker is already in the decoded
//! text.
//!
//! The tree is parsed once with mail-parser; its parts carry byte offsets into the raw message,
//! which `crate::rewrite` uses to edit bytes in place without re-parsing. This module only reads:
//! no I/O, no logging, no panics on broken MIME (it returns what it could find plus
//! [`Diagnostic`]s). The rules for "message text" follow `shared/reference/markings.md` §(d)1:
//! both sides of multipart/alternative, the root of multipart/related, the first body part of
//! multipart/mixed; never attachments, forwarded `message/rfc822`, calendar or TNEF parts.
//!
//! The transfer-encoding and charset decoders here are shared with `crate::rewrite` so that what
//! inspect reads and what rewrite edits are decoded the same way.

use std::borrow::Cow;
use std::ops::Range;

use base64::Engine as _;
use mail_parser::{MessageParser, MimeHeaders, PartType};

/// How lines end in the input. Generated text follows the input's convention.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LineEnding {
    /// `\r\n`, what the milter protocol delivers.
    Crlf,
    /// bare `\n`, typical of `.eml` files on disk.
    Lf,
}

impl LineEnding {
    /// The bytes of one line end.
    pub fn as_bytes(self) -> &'static [u8] {
        match self {
            LineEnding::Crlf => b"\r\n",
            LineEnding::Lf => b"\n",
        }
    }

    /// The convention of `bytes`: the first line end decides; no line end means CRLF.
    pub fn detect(bytes: &[u8]) -> LineEnding {
        match bytes.iter().position(|&b| b == b'\n') {
            Some(i) if i > 0 && bytes[i - 1] == b'\r' => LineEnding::Crlf,
            Some(_) => LineEnding::Lf,
            None => LineEnding::Crlf,
        }
    }
}

/// A part's Content-Transfer-Encoding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TransferEncoding {
    /// No Content-Transfer-Encoding header (means 7bit).
    Absent,
    SevenBit,
    EightBit,
    Binary,
    QuotedPrintable,
    Base64,
    /// Anything else (e.g. `x-uuencode`), lowercased; markgate never edits such a part.
    Other(String),
}

impl TransferEncoding {
    /// Parse a header value (case-insensitive, surrounding whitespace and comments ignored).
    pub fn parse(value: Option<&str>) -> TransferEncoding {
        let Some(v) = value else {
            return TransferEncoding::Absent;
        };
        let v = v.split('(').next().unwrap_or("").trim();
        let is = |name: &str| v.eq_ignore_ascii_case(name);
        if v.is_empty() {
            TransferEncoding::Absent
        } else if is("7bit") {
            TransferEncoding::SevenBit
        } else if is("8bit") {
            TransferEncoding::EightBit
        } else if is("binary") {
            TransferEncoding::Binary
        } else if is("quoted-printable") {
            TransferEncoding::QuotedPrintable
        } else if is("base64") {
            TransferEncoding::Base64
        } else {
            TransferEncoding::Other(v.to_ascii_lowercase())
        }
    }

    /// True for encodings whose body is the content itself (no decoding step).
    pub fn is_identity(&self) -> bool {
        matches!(
            self,
            TransferEncoding::Absent
                | TransferEncoding::SevenBit
                | TransferEncoding::EightBit
                | TransferEncoding::Binary
        )
    }
}

/// What a part is for the reader of the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PartRole {
    /// A multipart container (its children are other parts).
    Container,
    /// text/plain or text/html that is the message text: a disclaimer goes here.
    BodyText,
    /// Message text inside multipart/signed: readable, never editable.
    SignedText,
    /// An attachment, or a non-text alternative (text/calendar, application/ms-tnef, …).
    Attachment,
    /// A resource of multipart/related (an inline image referenced by `cid:`).
    RelatedResource,
    /// A forwarded message (`message/rfc822`, `message/global`); never looked into.
    Rfc822,
    /// The signature part of multipart/signed.
    Signature,
    /// An encrypted or opaque-signed payload (application/pkcs7-mime, multipart/encrypted).
    Protected,
}

/// Why the message body cannot be edited without breaking or bypassing cryptography.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Security {
    /// multipart/signed (S/MIME clear-signed or PGP/MIME); `protocol` as declared.
    MultipartSigned { part: usize, protocol: String },
    /// application/pkcs7-mime with smime-type signed-data (opaque-signed).
    SmimeOpaqueSigned { part: usize },
    /// application/pkcs7-mime enveloped or of unknown smime-type: treated as encrypted.
    SmimeEncrypted { part: usize },
    /// multipart/encrypted (PGP/MIME).
    MultipartEncrypted { part: usize },
    /// `-----BEGIN PGP SIGNED MESSAGE-----` in a text part.
    InlinePgpSigned { part: usize },
    /// `-----BEGIN PGP MESSAGE-----` in a text part.
    InlinePgpEncrypted { part: usize },
}

impl Security {
    /// True when the content cannot be read at all.
    pub fn is_encrypted(&self) -> bool {
        matches!(
            self,
            Security::SmimeEncrypted { .. }
                | Security::MultipartEncrypted { .. }
                | Security::InlinePgpEncrypted { .. }
        )
    }

    /// Short stable name for audit records and reasons.
    pub fn kind(&self) -> &'static str {
        match self {
            Security::MultipartSigned { .. } => "multipart/signed",
            Security::SmimeOpaqueSigned { .. } => "s/mime opaque-signed",
            Security::SmimeEncrypted { .. } => "s/mime encrypted",
            Security::MultipartEncrypted { .. } => "multipart/encrypted",
            Security::InlinePgpSigned { .. } => "inline pgp signed",
            Security::InlinePgpEncrypted { .. } => "inline pgp encrypted",
        }
    }
}

/// Something odd about the message that did not stop the analysis.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// The part it concerns (index into [`MimeShape::parts`]), if any.
    pub part: Option<usize>,
    /// A stable code, e.g. `multipart-without-boundary`.
    pub code: &'static str,
    /// Human-readable detail.
    pub detail: String,
}

/// One MIME part, as found in the raw message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartInfo {
    /// Parent container, `None` for the message itself (part 0).
    pub parent: Option<usize>,
    /// Nesting depth (0 for the message itself).
    pub depth: usize,
    /// `type/subtype`, lowercased; the MIME default when the header is missing.
    pub content_type: String,
    /// True when the part had a Content-Type header.
    pub has_content_type: bool,
    /// The charset parameter as written (trimmed), if any.
    pub charset: Option<String>,
    pub transfer_encoding: TransferEncoding,
    /// `Content-Disposition: attachment`.
    pub is_attachment_disposition: bool,
    /// File name from Content-Disposition or Content-Type `name`.
    pub filename: Option<String>,
    /// Content-ID without angle brackets.
    pub content_id: Option<String>,
    /// Multipart boundary.
    pub boundary: Option<String>,
    /// Every Content-Type parameter (lowercase name, value as written).
    pub params: Vec<(String, String)>,
    /// The part's header block (for part 0: the message's header block, including the blank line).
    pub header_range: Range<usize>,
    /// The part's body: for leaves the encoded content, without the line end that belongs to the
    /// next boundary delimiter.
    pub body_range: Range<usize>,
    pub role: PartRole,
    /// For text roles, whether the marker was found in the decoded text (`None`: not checked).
    pub marker_present: Option<bool>,
    /// mail-parser flagged a decoding problem (missing boundary, undecodable content).
    pub encoding_problem: bool,
}

impl PartInfo {
    /// The whole part in the raw message: headers and body.
    pub fn full_range(&self) -> Range<usize> {
        self.header_range.start..self.body_range.end.max(self.header_range.end)
    }

    /// True for text/html.
    pub fn is_html(&self) -> bool {
        self.content_type == "text/html"
    }
}

/// The facts inspect reports about the MIME structure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MimeShape {
    /// False when the input had no header block at all; then nothing else is meaningful.
    pub parsed: bool,
    /// False when the parser's idea of where the body starts differs from the first empty
    /// line: the part offsets are then not safe to edit by.
    pub structure_reliable: bool,
    /// Offset of the body (just after the blank line that ends the header block).
    pub body_offset: usize,
    pub line_ending: LineEnding,
    /// Every part of the top-level tree (not inside forwarded messages), in document order as
    /// mail-parser numbers them; part 0 is the message itself.
    pub parts: Vec<PartInfo>,
    /// Indexes of the parts that are the message text (role [`PartRole::BodyText`]).
    pub text_parts: Vec<usize>,
    /// Message text inside multipart/signed (role [`PartRole::SignedText`]).
    pub signed_text_parts: Vec<usize>,
    /// Attachments, related resources, signatures and encrypted payloads.
    pub attachments: Vec<usize>,
    /// Forwarded messages.
    pub rfc822_parts: Vec<usize>,
    /// Signed or encrypted structures on the message-text path (outermost first).
    pub security: Vec<Security>,
    /// The marker searched for (normalised), if one was given.
    pub marker: Option<String>,
    /// Whether the marker is in any readable message text (`None` when no marker was given).
    pub disclaimer_present: Option<bool>,
    pub diagnostics: Vec<Diagnostic>,
}

impl MimeShape {
    /// The shape before the MIME tree is read: where the body starts and the line-end
    /// convention, no parts. The filter uses it as is when the body is not looked at
    /// (`parsed` true: the milter has read the header block).
    pub fn head_only(raw: &[u8], parsed: bool) -> MimeShape {
        MimeShape {
            parsed,
            structure_reliable: true,
            body_offset: header_block_end(raw),
            line_ending: LineEnding::detect(raw),
            parts: Vec::new(),
            text_parts: Vec::new(),
            signed_text_parts: Vec::new(),
            attachments: Vec::new(),
            rfc822_parts: Vec::new(),
            security: Vec::new(),
            marker: None,
            disclaimer_present: None,
            diagnostics: Vec::new(),
        }
    }

    /// True when the body must not be edited (signed or encrypted).
    pub fn is_protected(&self) -> bool {
        !self.security.is_empty()
    }

    /// A multipart/mixed message with no message text at all (e.g. a scanner's PDF): a
    /// disclaimer can only go into a new first part. Returns the container's index.
    pub fn mixed_without_text(&self) -> Option<usize> {
        let root = self.parts.first()?;
        (self.parsed
            && self.text_parts.is_empty()
            && self.signed_text_parts.is_empty()
            && self.security.is_empty()
            && root.role == PartRole::Container
            && root.content_type == "multipart/mixed"
            && root.boundary.is_some()
            && self.parts.iter().any(|p| p.parent == Some(0)))
        .then_some(0)
    }
}

/// Parse `raw` once and report its MIME shape. When `marker` is given, each message-text part
/// is decoded (transfer encoding, charset, HTML tags and entities, quote prefixes, whitespace)
/// and searched for it.
pub fn analyze(raw: &[u8], marker: Option<&str>) -> MimeShape {
    match analyze_reduced(raw, marker, &[]) {
        Ok(shape) => shape,
        // Unreachable: without elided parts there is nothing to disagree about.
        Err(_) => MimeShape {
            structure_reliable: false,
            ..MimeShape::head_only(raw, false)
        },
    }
}

/// [`analyze`] for a reduced message: `raw` is the original with some leaf-body lines replaced
/// by stand-in lines (see `crate::large`), described by `elided`. The text facts of those parts
/// come from [`ElidedPart::text`] instead of decoding `raw`. Fails, with the reason, when the
/// parser's view of `raw` does not put every stand-in inside the body of the leaf part it was
/// made for, or when a message-text part with stand-ins has no usable streamed facts: then the
/// reduced message cannot stand for the original.
pub fn analyze_reduced(
    raw: &[u8],
    marker: Option<&str>,
    elided: &[super::stream::ElidedPart],
) -> Result<MimeShape, String> {
    let marker_norm = marker.map(normalize_marker).filter(|m| !m.is_empty());
    let mut shape = MimeShape {
        marker: marker_norm.clone(),
        ..MimeShape::head_only(raw, false)
    };
    // Only the MIME headers are parsed; every other header is skipped (its name kept): the
    // parser reads no other header's value, and neither does this module.
    // A panic inside the parser (mail-parser has `debug_assert!(false)` on recovery paths that
    // malformed MIME reaches, and any dependency can have a bug) must not turn into a 451 that
    // the MTA retries for days: the message is then one whose structure we cannot read, so the
    // labels still go on and the body is left alone, as for any other unreadable structure.
    let parsed =
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| mime_parser().parse(raw)));
    let message = match parsed {
        Ok(Some(message)) => message,
        Ok(None) => {
            shape.diagnostics.push(Diagnostic {
                part: None,
                code: "no-header-block",
                detail: "no header could be parsed".into(),
            });
            if !elided.is_empty() {
                return Err("the reduced message does not parse".into());
            }
            return Ok(shape);
        }
        Err(_) => {
            if !elided.is_empty() {
                return Err("the MIME parser failed on the reduced message".into());
            }
            shape.structure_reliable = false;
            shape.diagnostics.push(Diagnostic {
                part: None,
                code: "parser-failed",
                detail: "the MIME parser failed on this message; its structure is not trusted"
                    .into(),
            });
            return Ok(shape);
        }
    };
    shape.parsed = true;
    let len = raw.len();
    let clamp = |v: u32| (v as usize).min(len);

    // First pass: facts about each part that do not depend on the tree walk.
    for (i, p) in message.parts.iter().enumerate() {
        let ct = p.content_type();
        let content_type = match ct {
            Some(ct) => {
                let (t, sub) = (ct.ctype(), ct.subtype().unwrap_or(""));
                let mut s = String::with_capacity(t.len() + 1 + sub.len());
                s.push_str(t);
                s.push('/');
                s.push_str(sub);
                s.make_ascii_lowercase();
                s
            }
            None => "text/plain".to_string(),
        };
        let header_start = clamp(p.offset_header);
        let body_start = clamp(p.offset_body).max(header_start);
        let body_end = clamp(p.offset_end).max(body_start);
        let disposition = p.content_disposition();
        let filename = disposition
            .and_then(|d| d.attribute("filename"))
            .or_else(|| ct.and_then(|c| c.attribute("name")))
            .map(str::to_string);
        shape.parts.push(PartInfo {
            parent: None,
            depth: 0,
            content_type,
            has_content_type: ct.is_some(),
            charset: ct
                .and_then(|c| c.attribute("charset"))
                .map(|c| c.trim().to_string()),
            transfer_encoding: TransferEncoding::parse(p.content_transfer_encoding()),
            is_attachment_disposition: disposition.is_some_and(|d| d.is_attachment()),
            filename,
            content_id: p.content_id().map(|c| {
                c.trim()
                    .trim_start_matches('<')
                    .trim_end_matches('>')
                    .to_string()
            }),
            boundary: ct.and_then(|c| c.attribute("boundary")).map(str::to_string),
            params: ct
                .and_then(|c| c.attributes())
                .unwrap_or_default()
                .iter()
                .map(|a| (a.name.to_ascii_lowercase(), a.value.to_string()))
                .collect(),
            header_range: header_start..body_start,
            body_range: body_start..body_end,
            role: PartRole::Attachment,
            marker_present: None,
            encoding_problem: p.is_encoding_problem,
        });
        if p.is_encoding_problem {
            shape.diagnostics.push(Diagnostic {
                part: Some(i),
                code: "encoding-problem",
                detail: "mail-parser could not decode this part as declared".into(),
            });
        }
    }
    // The header block ends at the first empty line (RFC 5322 §2.1). Header edits are made
    // against that block; if mail-parser saw the body start elsewhere its part offsets cannot
    // be trusted for editing, and the body is left alone.
    shape.body_offset = header_block_end(raw);
    let has_separator = shape.body_offset < raw.len()
        || raw.ends_with(b"\n\n")
        || raw.ends_with(b"\n\r\n")
        || raw == b"\n"
        || raw == b"\r\n";
    if !has_separator {
        // No empty line: the message has no body, and the last header may be cut short.
        shape.structure_reliable = false;
        shape.diagnostics.push(Diagnostic {
            part: None,
            code: "no-body",
            detail: "the header block is not followed by an empty line".into(),
        });
    } else if let Some(root) = message.parts.first()
        && mime_header_counts(&root.headers) != raw_mime_header_counts(&raw[..shape.body_offset])
    {
        // mail-parser reads header names more loosely (leading whitespace or CR skipped) than
        // a milter delivers them; then its MIME view and the header edits would disagree.
        shape.structure_reliable = false;
        shape.diagnostics.push(Diagnostic {
            part: Some(0),
            code: "mime-header-mismatch",
            detail: "the parser found MIME headers that are not well-formed header lines".into(),
        });
    } else if let Some(root) = shape.parts.first()
        && root.body_range.start != shape.body_offset
    {
        shape.structure_reliable = false;
        shape.diagnostics.push(Diagnostic {
            part: Some(0),
            code: "header-block-mismatch",
            detail: format!(
                "the header block ends at byte {} but the parser read headers up to byte {}",
                shape.body_offset, root.body_range.start
            ),
        });
    }

    // Second pass: walk the tree from the root, iteratively (hostile nesting must not overflow
    // the stack), deciding each part's role.
    let mut stack: Vec<(usize, Ctx, Option<usize>, usize)> = vec![(0, Ctx::Body, None, 0)];
    let mut visited = vec![false; message.parts.len()];
    while let Some((id, ctx, parent, depth)) = stack.pop() {
        if id >= message.parts.len() || visited[id] {
            continue;
        }
        visited[id] = true;
        shape.parts[id].parent = parent;
        shape.parts[id].depth = depth;
        let children: Vec<usize> = match &message.parts[id].body {
            PartType::Multipart(ids) => ids
                .iter()
                .map(|&c| c as usize)
                .filter(|&c| c > id && c < message.parts.len())
                .collect(),
            _ => Vec::new(),
        };
        let ct = shape.parts[id].content_type.clone();
        let is_multipart = matches!(message.parts[id].body, PartType::Multipart(_));
        if ct.starts_with("multipart/") && !is_multipart {
            shape.diagnostics.push(Diagnostic {
                part: Some(id),
                code: "multipart-without-boundary",
                detail: format!("{ct} without a usable boundary; treated as opaque"),
            });
        }
        let roles = if is_multipart {
            shape.parts[id].role = PartRole::Container;
            container_child_contexts(&mut shape, id, &ct, ctx, &children)
        } else {
            shape.parts[id].role = leaf_role(&mut shape, id, &ct, ctx);
            Vec::new()
        };
        // Push in reverse so children are visited in document order.
        for (child, child_ctx) in roles.into_iter().rev() {
            stack.push((child, child_ctx, Some(id), depth + 1));
        }
    }

    // Third pass: decode the message text, look for inline PGP and the marker.
    let mut any_marker = false;
    let text_ids: Vec<usize> = shape
        .text_parts
        .iter()
        .chain(shape.signed_text_parts.iter())
        .copied()
        .collect();
    let owner = check_elided(&shape, elided)?;
    for id in text_ids {
        let part = &shape.parts[id];
        if let Some(&e) = owner.get(&id) {
            let Some(t) = elided[e].text.as_ref() else {
                return Err(format!(
                    "message-text part {id} was elided without text facts"
                ));
            };
            if part.is_html()
                || t.charset != part.charset
                || t.transfer_encoding != part.transfer_encoding
            {
                return Err(format!(
                    "message-text part {id}: the parser reads {} {:?} {:?}, the scan read {:?} {:?}",
                    part.content_type,
                    part.charset,
                    part.transfer_encoding,
                    t.charset,
                    t.transfer_encoding
                ));
            }
            if !t.transfer_clean {
                shape.diagnostics.push(Diagnostic {
                    part: Some(id),
                    code: "transfer-encoding-damaged",
                    detail: "the part's transfer encoding has invalid characters".into(),
                });
            }
            if part.role == PartRole::BodyText
                && let Some(pgp) = t.inline_pgp
            {
                shape.security.push(match pgp {
                    super::stream::InlinePgp::Signed => Security::InlinePgpSigned { part: id },
                    super::stream::InlinePgp::Encrypted => {
                        Security::InlinePgpEncrypted { part: id }
                    }
                });
            }
            if marker_norm.is_some() {
                any_marker |= t.marker_found;
                shape.parts[id].marker_present = Some(t.marker_found);
            }
            continue;
        }
        let decoded = decode_part_text(raw, part);
        if !decoded.transfer_clean {
            shape.diagnostics.push(Diagnostic {
                part: Some(id),
                code: "transfer-encoding-damaged",
                detail: "the part's transfer encoding has invalid characters".into(),
            });
        }
        if decoded.charset == CharsetStatus::Unknown {
            shape.diagnostics.push(Diagnostic {
                part: Some(id),
                code: "unknown-charset",
                detail: format!(
                    "charset {:?} is unknown; read as UTF-8",
                    part.charset.as_deref().unwrap_or("")
                ),
            });
        }
        if part.role == PartRole::BodyText
            && let Some(sec) = inline_pgp(&decoded.text, id)
        {
            shape.security.push(sec);
        }
        if let Some(m) = &marker_norm {
            let found = marker_in_text(&decoded.text, part.is_html(), m);
            any_marker |= found;
            shape.parts[id].marker_present = Some(found);
        }
    }
    if marker_norm.is_some() {
        shape.disclaimer_present = Some(any_marker);
    }
    Ok(shape)
}

/// The MIME-headers-only parser, built once (building it fills a header table).
fn mime_parser() -> &'static MessageParser {
    static PARSER: std::sync::OnceLock<MessageParser> = std::sync::OnceLock::new();
    PARSER.get_or_init(|| {
        MessageParser::new()
            .with_mime_headers()
            .default_header_ignore()
    })
}

/// Check that every stand-in of `elided` lies in the body of one leaf part (not a container,
/// not a forwarded message) whose body starts where the scan said and ends where it said (or
/// just before that line's preceding line end, which the parser gives to the delimiter), and
/// that no part holds stand-ins of two scanned parts. Returns which scanned part each such
/// leaf holds.
fn check_elided(
    shape: &MimeShape,
    elided: &[super::stream::ElidedPart],
) -> Result<std::collections::HashMap<usize, usize>, String> {
    let mut owner = std::collections::HashMap::new();
    if elided.is_empty() {
        return Ok(owner);
    }
    if !shape.parsed {
        return Err("the reduced message does not parse".into());
    }
    for (e, ep) in elided.iter().enumerate() {
        for s in &ep.stand_ins {
            let Some(id) = shape.parts.iter().position(|p| {
                p.role != PartRole::Container
                    && p.body_range.start <= s.start
                    && s.end <= p.body_range.end
            }) else {
                return Err(format!(
                    "stand-in at byte {} is not inside a leaf body",
                    s.start
                ));
            };
            let p = &shape.parts[id];
            if p.role == PartRole::Rfc822 || p.content_type.starts_with("message/") {
                return Err(format!("stand-in inside forwarded message part {id}"));
            }
            let end_ok = ep
                .body_end
                .checked_sub(p.body_range.end)
                .is_some_and(|d| d <= 2);
            if p.body_range.start != ep.body_start || !end_ok {
                return Err(format!(
                    "part {id}: the parser's body {:?} is not the scanned body {}..{}",
                    p.body_range, ep.body_start, ep.body_end
                ));
            }
            if *owner.entry(id).or_insert(e) != e {
                return Err(format!("part {id} holds stand-ins of two scanned parts"));
            }
        }
    }
    Ok(owner)
}

/// How many Content-Type and Content-Transfer-Encoding headers mail-parser saw.
fn mime_header_counts(headers: &[mail_parser::Header<'_>]) -> (usize, usize) {
    let ct = headers
        .iter()
        .filter(|h| h.name == mail_parser::HeaderName::ContentType)
        .count();
    let cte = headers
        .iter()
        .filter(|h| h.name == mail_parser::HeaderName::ContentTransferEncoding)
        .count();
    (ct, cte)
}

/// The same counts over well-formed header lines (name at column 0, then a colon).
fn raw_mime_header_counts(block: &[u8]) -> (usize, usize) {
    let (mut ct, mut cte) = (0, 0);
    for line in block.split(|&b| b == b'\n') {
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let name = &line[..colon];
        let name = match name.iter().rposition(|&b| b != b' ' && b != b'\t') {
            Some(e) => &name[..=e],
            None => continue,
        };
        if !name.iter().all(|&b| (33..=126).contains(&b)) {
            continue;
        }
        if name.eq_ignore_ascii_case(b"content-type") {
            ct += 1;
        } else if name.eq_ignore_ascii_case(b"content-transfer-encoding") {
            cte += 1;
        }
    }
    (ct, cte)
}

/// Offset just after the first empty line (a line of nothing but CRs counts), or the end.
pub fn header_block_end(raw: &[u8]) -> usize {
    let mut pos = 0;
    while pos < raw.len() {
        let end = memchr::memchr(b'\n', &raw[pos..]).map_or(raw.len(), |i| pos + i + 1);
        let line = &raw[pos..end];
        let content = line.strip_suffix(b"\n").unwrap_or(line);
        if content.iter().all(|&b| b == b'\r') {
            return end;
        }
        pos = end;
    }
    raw.len()
}

/// The walk's context: is this part on the path of the message text?
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ctx {
    /// A candidate for message text.
    Body,
    /// Message text under multipart/signed: read, never edit.
    Signed,
    /// An attachment or anything below one.
    Other,
    /// A multipart/related resource.
    Related,
    /// The signature part of multipart/signed.
    Signature,
}

fn container_child_contexts(
    shape: &mut MimeShape,
    id: usize,
    ct: &str,
    ctx: Ctx,
    children: &[usize],
) -> Vec<(usize, Ctx)> {
    let readable = matches!(ctx, Ctx::Body | Ctx::Signed);
    let subtype = ct.strip_prefix("multipart/").unwrap_or("");
    if readable && subtype == "signed" {
        let protocol = String::new();
        let protocol = shape_protocol(shape, id).unwrap_or(protocol);
        shape
            .security
            .push(Security::MultipartSigned { part: id, protocol });
        return children
            .iter()
            .enumerate()
            .map(|(i, &c)| (c, if i == 0 { Ctx::Signed } else { Ctx::Signature }))
            .collect();
    }
    if readable && subtype == "encrypted" {
        shape
            .security
            .push(Security::MultipartEncrypted { part: id });
        return children.iter().map(|&c| (c, Ctx::Other)).collect();
    }
    if !readable {
        let child_ctx = if ctx == Ctx::Related {
            Ctx::Related
        } else {
            Ctx::Other
        };
        return children.iter().map(|&c| (c, child_ctx)).collect();
    }
    match subtype {
        "alternative" => children.iter().map(|&c| (c, ctx)).collect(),
        "related" => {
            // The root is the part named by `start`, else the first (RFC 2387).
            let start = shape_param(shape, id, "start");
            let root = start
                .and_then(|s| {
                    let s = s
                        .trim()
                        .trim_start_matches('<')
                        .trim_end_matches('>')
                        .to_string();
                    children
                        .iter()
                        .copied()
                        .find(|&c| shape.parts[c].content_id.as_deref() == Some(s.as_str()))
                })
                .or_else(|| children.first().copied());
            children
                .iter()
                .map(|&c| (c, if Some(c) == root { ctx } else { Ctx::Related }))
                .collect()
        }
        "digest" => children.iter().map(|&c| (c, Ctx::Other)).collect(),
        _ => {
            // mixed, report and unknown subtypes: the first body-like part is the text.
            let body = children.iter().copied().find(|&c| {
                let p = &shape.parts[c];
                !p.is_attachment_disposition
                    && (p.content_type == "text/plain"
                        || p.content_type == "text/html"
                        || p.content_type.starts_with("multipart/")
                        || is_pkcs7_mime(&p.content_type))
            });
            children
                .iter()
                .map(|&c| (c, if Some(c) == body { ctx } else { Ctx::Other }))
                .collect()
        }
    }
}

fn leaf_role(shape: &mut MimeShape, id: usize, ct: &str, ctx: Ctx) -> PartRole {
    let part = &shape.parts[id];
    let is_text = ct == "text/plain" || ct == "text/html";
    if ct == "message/rfc822" || ct == "message/global" {
        shape.rfc822_parts.push(id);
        return PartRole::Rfc822;
    }
    let role = match ctx {
        Ctx::Body if is_text && !part.is_attachment_disposition => {
            shape.text_parts.push(id);
            return PartRole::BodyText;
        }
        Ctx::Signed if is_text && !part.is_attachment_disposition => {
            shape.signed_text_parts.push(id);
            return PartRole::SignedText;
        }
        Ctx::Body | Ctx::Signed if is_pkcs7_mime(ct) => {
            let smime_type = shape_param(shape, id, "smime-type")
                .map(|s| s.to_ascii_lowercase())
                .unwrap_or_default();
            if smime_type == "signed-data" {
                shape
                    .security
                    .push(Security::SmimeOpaqueSigned { part: id });
            } else {
                shape.security.push(Security::SmimeEncrypted { part: id });
            }
            PartRole::Protected
        }
        Ctx::Related => PartRole::RelatedResource,
        Ctx::Signature => PartRole::Signature,
        _ => PartRole::Attachment,
    };
    shape.attachments.push(id);
    role
}

fn is_pkcs7_mime(ct: &str) -> bool {
    ct == "application/pkcs7-mime" || ct == "application/x-pkcs7-mime"
}

/// A Content-Type parameter of part `id` (names are lowercase).
fn shape_param(shape: &MimeShape, id: usize, name: &str) -> Option<String> {
    shape.parts[id]
        .params
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.clone())
}

fn shape_protocol(shape: &MimeShape, id: usize) -> Option<String> {
    shape_param(shape, id, "protocol")
}

/// How a part's charset label was understood.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CharsetStatus {
    /// Known label, decoded without errors.
    Ok,
    /// Known label, but the bytes were not valid in it (replacement characters were used).
    Malformed,
    /// Unknown label; read as UTF-8 (lossy).
    Unknown,
}

/// A text part decoded for reading (borrowed from the message when nothing had to change).
#[derive(Debug, Clone)]
pub struct DecodedText<'a> {
    pub text: Cow<'a, str>,
    /// False when the transfer encoding had invalid characters.
    pub transfer_clean: bool,
    pub charset: CharsetStatus,
}

/// Decode a text part: transfer encoding, then charset (missing charset = US-ASCII, read as
/// windows-1252 the way browsers do).
pub fn decode_part_text<'a>(raw: &'a [u8], part: &PartInfo) -> DecodedText<'a> {
    let body = raw.get(part.body_range.clone()).unwrap_or_default();
    let (bytes, transfer_clean) = decode_transfer(body, &part.transfer_encoding);
    let (text, charset) = match bytes {
        Cow::Borrowed(b) => decode_charset(b, part.charset.as_deref()),
        Cow::Owned(v) => {
            let (t, c) = decode_charset(&v, part.charset.as_deref());
            (Cow::Owned(t.into_owned()), c)
        }
    };
    DecodedText {
        text,
        transfer_clean,
        charset,
    }
}

/// Undo a transfer encoding. Returns the content and whether the input was clean.
pub fn decode_transfer<'a>(body: &'a [u8], cte: &TransferEncoding) -> (Cow<'a, [u8]>, bool) {
    match cte {
        TransferEncoding::Base64 => {
            let (b, clean) = decode_base64(body);
            (Cow::Owned(b), clean)
        }
        TransferEncoding::QuotedPrintable => {
            let (b, clean) = decode_qp(body);
            (Cow::Owned(b), clean)
        }
        _ => (Cow::Borrowed(body), true),
    }
}

/// Lenient base64: whitespace is ignored; anything else outside the alphabet makes the result
/// "not clean" and is skipped; decoding stops at padding.
pub fn decode_base64(body: &[u8]) -> (Vec<u8>, bool) {
    let mut clean = true;
    let mut filtered = Vec::with_capacity(body.len());
    let mut padding = 0usize;
    for &b in body {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'+' | b'/' => {
                if padding > 0 {
                    // Data after padding: concatenated encodings. Keep going but say so.
                    clean = false;
                    padding = 0;
                }
                filtered.push(b);
            }
            b'=' => padding += 1,
            b' ' | b'\t' | b'\r' | b'\n' => {}
            _ => clean = false,
        }
    }
    if filtered.len() % 4 == 1 {
        clean = false;
        filtered.pop();
    }
    let engine = base64::engine::GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        base64::engine::GeneralPurposeConfig::new()
            .with_decode_padding_mode(base64::engine::DecodePaddingMode::RequireNone)
            .with_decode_allow_trailing_bits(true),
    );
    match engine.decode(&filtered) {
        Ok(v) => (v, clean),
        Err(_) => (Vec::new(), false),
    }
}

/// Lenient quoted-printable (RFC 2045 §6.7): keeps line ends as they are (CRLF or LF), drops
/// trailing whitespace before a line end, joins soft breaks, keeps raw 8-bit bytes and malformed
/// `=` sequences literally (and reports them as not clean).
pub fn decode_qp(body: &[u8]) -> (Vec<u8>, bool) {
    let mut out = Vec::with_capacity(body.len());
    let mut clean = true;
    for line in body.split_inclusive(|&b| b == b'\n') {
        let (content, eol): (&[u8], &[u8]) = if let Some(c) = line.strip_suffix(b"\r\n") {
            (c, b"\r\n")
        } else if let Some(c) = line.strip_suffix(b"\n") {
            (c, b"\n")
        } else {
            (line, b"")
        };
        let mut end = content.len();
        while end > 0 && matches!(content[end - 1], b' ' | b'\t') {
            end -= 1;
        }
        let content = &content[..end];
        let soft = content.last() == Some(&b'=');
        let content = if soft {
            &content[..content.len() - 1]
        } else {
            content
        };
        let mut i = 0;
        while i < content.len() {
            let b = content[i];
            if b == b'=' {
                let hex = content.get(i + 1..i + 3).and_then(|h| {
                    let s = std::str::from_utf8(h).ok()?;
                    u8::from_str_radix(s, 16).ok()
                });
                if let Some(v) = hex {
                    out.push(v);
                    i += 3;
                    continue;
                }
                clean = false;
            } else if b >= 0x80 || (b < 0x20 && b != b'\t') {
                clean = false;
            }
            out.push(b);
            i += 1;
        }
        if !soft {
            out.extend_from_slice(eol);
        }
    }
    (out, clean)
}

/// The encoding_rs encoding for a MIME charset label (`None` label = US-ASCII).
pub fn charset_encoding(label: Option<&str>) -> Option<&'static encoding_rs::Encoding> {
    let label = label
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .unwrap_or("us-ascii");
    let label = label.trim_matches('"');
    encoding_rs::Encoding::for_label(label.as_bytes()).or_else(|| {
        // Labels seen in mail that the WHATWG registry lacks.
        match label.to_ascii_lowercase().as_str() {
            "utf8" | "unicode-1-1-utf-8" => Some(encoding_rs::UTF_8),
            "latin-1" | "iso8859-1" | "iso_8859_1" => Some(encoding_rs::WINDOWS_1252),
            "cp1252" => Some(encoding_rs::WINDOWS_1252),
            _ => None,
        }
    })
}

/// Decode bytes in a MIME charset.
pub fn decode_charset<'a>(bytes: &'a [u8], label: Option<&str>) -> (Cow<'a, str>, CharsetStatus) {
    match charset_encoding(label) {
        Some(enc) => {
            let (text, had_errors) = enc.decode_without_bom_handling(bytes);
            let status = if had_errors {
                CharsetStatus::Malformed
            } else {
                CharsetStatus::Ok
            };
            (text, status)
        }
        None => (String::from_utf8_lossy(bytes), CharsetStatus::Unknown),
    }
}

fn inline_pgp(text: &str, part: usize) -> Option<Security> {
    for line in text.lines() {
        let line = line.trim_end();
        if line == "-----BEGIN PGP SIGNED MESSAGE-----" {
            return Some(Security::InlinePgpSigned { part });
        }
        if line == "-----BEGIN PGP MESSAGE-----" {
            return Some(Security::InlinePgpEncrypted { part });
        }
    }
    None
}

/// Normalise a marker for searching: the same folding as [`normalize_text`] on plain text.
pub fn normalize_marker(marker: &str) -> String {
    fold_marker(marker).into_owned()
}

/// [`normalize_marker`], borrowing the marker when it is folded already (the usual lowercase
/// ASCII sentence folds to itself).
pub fn fold_marker(marker: &str) -> Cow<'_, str> {
    if is_folded_ascii(marker.as_bytes()) {
        return Cow::Borrowed(marker);
    }
    Cow::Owned(normalize_text(marker, false))
}

/// Fold decoded text for marker search: HTML tags removed (block tags become spaces) and
/// entities decoded; per line, leading quote markers (`>`) removed, since quoted replies carry
/// the old disclaimer; all whitespace runs (NBSP included) become one space; zero-width
/// characters dropped; lowercased.
pub fn normalize_text(text: &str, html: bool) -> String {
    let text = visible_text(text, html);
    let text = text.as_ref();
    let mut out = String::with_capacity(text.len());
    Folder::new().push_str(text, &mut out);
    out
}

/// What a reader sees of a text part: HTML without its tags (entities decoded), plain text as
/// it is. Both marker searches start from it.
fn visible_text(text: &str, html: bool) -> Cow<'_, str> {
    if html {
        Cow::Owned(html_to_text(text))
    } else {
        Cow::Borrowed(text)
    }
}

/// Is `marker` in the folded `text`? Exactly `normalize_text(text, html).contains(marker)`, but
/// most texts are answered without folding them (folding copies the whole text, character by
/// character):
/// - *present* when `marker` is a folded ASCII string (what [`normalize_marker`] makes of an
///   ASCII marker) and the text holds it verbatim up to ASCII case: folding maps such a run of
///   the text onto the marker itself;
/// - *absent* when the text is ASCII and some space-separated word of `marker` is not in it, up
///   to ASCII case: folding an ASCII text only lowercases, drops leading `>` and turns whitespace
///   runs into one space, so every word of the folded text is a lowercased piece of the text.
///   (Non-ASCII text can make ASCII letters by folding: zero-width characters vanish inside
///   words, `K` (Kelvin sign) lowercases to `k`; such text is always folded.)
///
/// Otherwise the text is folded and searched.
pub fn marker_in_text(text: &str, html: bool, marker: &str) -> bool {
    if marker.is_empty() {
        return true;
    }
    let text = visible_text(text, html);
    let text = text.as_ref();
    let (hay, m) = (text.as_bytes(), marker.as_bytes());
    // In order of cost and likelihood: the word holding the marker's rarest byte (absent from
    // most texts), the marker itself (in a disclaimer's own text), every word.
    let ascii = text.is_ascii();
    if ascii && !contains_ascii_ci(hay, word_at(m, rarest(m))) {
        return false;
    }
    if is_folded_ascii(m) && contains_ascii_ci(hay, m) {
        return true;
    }
    if ascii && !m.split(|&b| b == b' ').all(|w| contains_ascii_ci(hay, w)) {
        return false;
    }
    let mut folded = String::with_capacity(text.len());
    Folder::new().push_str(text, &mut folded);
    memchr::memmem::find(folded.as_bytes(), m).is_some()
}

/// True when `m` is ASCII and folding leaves it as it is: no uppercase, no whitespace but
/// single spaces between other characters, no `>` first.
fn is_folded_ascii(m: &[u8]) -> bool {
    let (Some(&first), Some(&last)) = (m.first(), m.last()) else {
        return false;
    };
    if first == b'>' || is_ascii_whitespace_char(first) || is_ascii_whitespace_char(last) {
        return false;
    }
    // Whole-slice folds without early exits: the compiler turns them into vector code.
    let bad_byte = m.iter().fold(false, |bad, &b| {
        bad | !b.is_ascii() | b.is_ascii_uppercase() | (b != b' ' && is_ascii_whitespace_char(b))
    });
    let double_space = m
        .windows(2)
        .fold(false, |bad, w| bad | ((w[0] == b' ') & (w[1] == b' ')));
    !bad_byte && !double_space
}

/// `char::is_whitespace` for an ASCII byte (tab, LF, VT, FF, CR, space; not `u8`'s
/// `is_ascii_whitespace`, which leaves out VT).
#[inline]
fn is_ascii_whitespace_char(b: u8) -> bool {
    matches!(b, b'\t' | b'\n' | 0x0B | 0x0C | b'\r' | b' ')
}

/// How rare each byte is in mail text, as a case-insensitive search sees it (higher: rarer).
/// Letters by their frequency in English, both cases alike; spaces and line ends are
/// everywhere; any other byte counts as fairly rare. Only speed depends on it, never an answer.
const RARITY: [u8; 256] = {
    const LETTERS: &[u8] = b"etaoinsrhldcumfpgwybvkxjqz";
    let mut t = [13u8; 256];
    t[b' ' as usize] = 0;
    t[b'\r' as usize] = 0;
    t[b'\n' as usize] = 0;
    let mut i = 0;
    while i < LETTERS.len() {
        t[LETTERS[i] as usize] = i as u8 + 1;
        t[LETTERS[i].to_ascii_uppercase() as usize] = i as u8 + 1;
        i += 1;
    }
    t
};

/// The position of the rarest byte of `needle` (the first of equals); 0 for an empty one.
fn rarest(needle: &[u8]) -> usize {
    let top = needle
        .iter()
        .fold(0, |top, &b| top.max(RARITY[usize::from(b)]));
    needle
        .iter()
        .position(|&b| RARITY[usize::from(b)] == top)
        .unwrap_or(0)
}

/// The space-separated word of `m` around byte `at` (empty when `at` is a space).
fn word_at(m: &[u8], at: usize) -> &[u8] {
    let start = m[..at]
        .iter()
        .rposition(|&b| b == b' ')
        .map_or(0, |p| p + 1);
    let end = m[at..]
        .iter()
        .position(|&b| b == b' ')
        .map_or(m.len(), |p| at + p);
    &m[start..end]
}

/// Does `hay` contain `needle`, comparing ASCII letters without case (other bytes exactly)?
/// Looks for the needle's rarest byte (both cases) and compares around each hit.
fn contains_ascii_ci(hay: &[u8], needle: &[u8]) -> bool {
    if needle.is_empty() {
        return true;
    }
    if needle.len() > hay.len() {
        return false;
    }
    let last_start = hay.len() - needle.len();
    let at = rarest(needle);
    let fits = |hit: usize| {
        hit.checked_sub(at).is_some_and(|start| {
            start <= last_start && hay[start..start + needle.len()].eq_ignore_ascii_case(needle)
        })
    };
    let (lo, up) = (
        needle[at].to_ascii_lowercase(),
        needle[at].to_ascii_uppercase(),
    );
    if lo == up {
        memchr::memchr_iter(lo, hay).any(fits)
    } else {
        memchr::memchr2_iter(lo, up, hay).any(fits)
    }
}

/// The folding of [`normalize_text`] as a state machine fed piece by piece, so a part read
/// line by line (`inspect::stream`) folds exactly as the whole text does: per line, leading
/// `>` and whitespace dropped; whitespace runs as one space; zero-width characters dropped;
/// lowercased.
#[derive(Debug, Clone)]
pub(crate) struct Folder {
    line_start: bool,
    pending_space: bool,
    nonempty: bool,
}

impl Default for Folder {
    fn default() -> Self {
        Folder::new()
    }
}

impl Folder {
    pub fn new() -> Self {
        Folder {
            line_start: true,
            pending_space: false,
            nonempty: false,
        }
    }

    /// Fold `text` onto `out`.
    pub fn push_str(&mut self, text: &str, out: &mut String) {
        let bytes = text.as_bytes();
        let mut i = 0;
        while i < bytes.len() {
            // Mail text is mostly runs of visible ASCII: copy such a run in one go and
            // lowercase it in place (a `>` inside it is not at a line start, so it stays).
            let b = bytes[i];
            if b.is_ascii_graphic() && !(self.line_start && b == b'>') {
                let run = bytes[i..]
                    .iter()
                    .position(|b| !b.is_ascii_graphic())
                    .map_or(bytes.len(), |p| i + p);
                if self.pending_space {
                    out.push(' ');
                    self.pending_space = false;
                }
                let at = out.len();
                out.push_str(&text[i..run]);
                out[at..].make_ascii_lowercase();
                self.line_start = false;
                self.nonempty = true;
                i = run;
                continue;
            }
            let c = if b.is_ascii() {
                i += 1;
                char::from(bytes[i - 1])
            } else {
                let Some(c) = text[i..].chars().next() else {
                    break;
                };
                i += c.len_utf8();
                c
            };
            self.push(c, out);
        }
    }

    /// Fold one character onto `out`.
    #[inline]
    pub fn push(&mut self, c: char, out: &mut String) {
        if c == '\n' {
            self.line_start = true;
            self.pending_space |= self.nonempty;
            return;
        }
        if self.line_start && (c == '>' || c.is_whitespace()) {
            return;
        }
        self.line_start = false;
        if c.is_whitespace() {
            self.pending_space = self.nonempty;
        } else if !matches!(
            c,
            '\u{200B}' | '\u{200C}' | '\u{200D}' | '\u{FEFF}' | '\u{AD}'
        ) {
            if self.pending_space {
                out.push(' ');
                self.pending_space = false;
            }
            if c.is_ascii() {
                out.push(c.to_ascii_lowercase());
            } else {
                out.extend(c.to_lowercase());
            }
            self.nonempty = true;
        }
    }
}

/// Tag stripping and entity decoding, good enough for finding text (not for rendering).
fn html_to_text(html: &str) -> String {
    let mut out = String::with_capacity(html.len());
    let bytes = html.as_bytes();
    let mut i = 0;
    let mut last = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'<' => {
                out.push_str(&html[last..i]);
                let rest = &html[i..];
                let end = if rest.starts_with("<!--") {
                    rest.find("-->").map(|e| i + e + 3).unwrap_or(bytes.len())
                } else {
                    let close_at = tag_end(bytes, i);
                    let inner = html[i + 1..close_at].trim_start_matches('/');
                    let name =
                        &inner[..inner.bytes().take_while(u8::is_ascii_alphanumeric).count()];
                    if (name.eq_ignore_ascii_case("script") || name.eq_ignore_ascii_case("style"))
                        && !html[i + 1..].starts_with('/')
                    {
                        // Skip the element's content up to its closing tag.
                        let close = format!("</{}", name.to_ascii_lowercase());
                        match find_ascii_ci(&bytes[close_at..], close.as_bytes()) {
                            Some(p) => tag_end(bytes, close_at + p),
                            None => bytes.len(),
                        }
                    } else {
                        if is_block_tag(name) {
                            out.push('\n');
                        }
                        close_at
                    }
                };
                i = end.min(bytes.len());
                last = i;
            }
            b'&' => {
                out.push_str(&html[last..i]);
                let (decoded, used) = decode_entity(&html[i..]);
                match decoded {
                    Some(c) => out.push(c),
                    None => out.push('&'),
                }
                i += used;
                last = i;
            }
            _ => i += 1,
        }
    }
    if last < bytes.len() {
        out.push_str(&html[last..]);
    }
    out
}

/// Index just after the first `>` following `start`. Quotes are deliberately not honoured: in
/// broken HTML an unbalanced quote would otherwise hide the rest of the document, including a
/// disclaimer, from the search.
fn tag_end(bytes: &[u8], start: usize) -> usize {
    bytes[start + 1..]
        .iter()
        .position(|&b| b == b'>')
        .map(|p| start + 1 + p + 1)
        .unwrap_or(bytes.len())
}

/// Is `name` (ASCII letters and digits, any case) a tag that breaks the text like a line end?
fn is_block_tag(name: &str) -> bool {
    // The longest block tag is `blockquote`.
    let mut buf = [0u8; 10];
    let Some(lower) = buf.get_mut(..name.len()) else {
        return false;
    };
    lower.copy_from_slice(name.as_bytes());
    lower.make_ascii_lowercase();
    matches!(
        &*lower,
        b"br"
            | b"p"
            | b"div"
            | b"tr"
            | b"td"
            | b"th"
            | b"li"
            | b"ul"
            | b"ol"
            | b"table"
            | b"blockquote"
            | b"hr"
            | b"h1"
            | b"h2"
            | b"h3"
            | b"h4"
            | b"h5"
            | b"h6"
            | b"pre"
            | b"body"
            | b"html"
            | b"head"
            | b"title"
    )
}

/// Decode one entity at the start of `s` (which begins with `&`). Returns the character (if
/// recognised) and how many bytes were consumed.
fn decode_entity(s: &str) -> (Option<char>, usize) {
    let bytes = s.as_bytes();
    let limit = bytes.len().min(12);
    let Some(semi) = bytes[..limit].iter().position(|&b| b == b';') else {
        return (None, 1);
    };
    let name = &s[1..semi];
    let c = if let Some(num) = name.strip_prefix('#') {
        let v = if let Some(hex) = num.strip_prefix('x').or_else(|| num.strip_prefix('X')) {
            u32::from_str_radix(hex, 16).ok()
        } else {
            num.parse::<u32>().ok()
        };
        v.and_then(char::from_u32)
    } else {
        match name {
            "amp" => Some('&'),
            "lt" => Some('<'),
            "gt" => Some('>'),
            "quot" => Some('"'),
            "apos" => Some('\''),
            "nbsp" => Some('\u{A0}'),
            "mdash" => Some('\u{2014}'),
            "ndash" => Some('\u{2013}'),
            "lsquo" => Some('\u{2018}'),
            "rsquo" => Some('\u{2019}'),
            "ldquo" => Some('\u{201C}'),
            "rdquo" => Some('\u{201D}'),
            "hellip" => Some('\u{2026}'),
            "pound" => Some('\u{A3}'),
            "euro" => Some('\u{20AC}'),
            "copy" => Some('\u{A9}'),
            "reg" => Some('\u{AE}'),
            "shy" => Some('\u{AD}'),
            _ => None,
        }
    };
    match c {
        Some(c) => (Some(c), semi + 1),
        None => (None, 1),
    }
}

/// Case-insensitive ASCII substring search.
pub fn find_ascii_ci(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() || haystack.len() < needle.len() {
        return None;
    }
    haystack
        .windows(needle.len())
        .position(|w| w.eq_ignore_ascii_case(needle))
}

/// Case-insensitive ASCII search for the last occurrence.
pub fn rfind_ascii_ci(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() || haystack.len() < needle.len() {
        return None;
    }
    haystack
        .windows(needle.len())
        .rposition(|w| w.eq_ignore_ascii_case(needle))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    fn golden(case: &str) -> Vec<u8> {
        let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/rewrite")
            .join(case)
            .join("in.eml");
        std::fs::read(p).unwrap_or_default()
    }

    fn types(shape: &MimeShape, ids: &[usize]) -> Vec<String> {
        ids.iter()
            .map(|&i| shape.parts[i].content_type.clone())
            .collect()
    }

    #[test]
    fn message_text_follows_the_disclaimer_rules() {
        let s = analyze(&golden("corpus-related-html-inline-image"), None);
        assert_eq!(types(&s, &s.text_parts), ["text/plain", "text/html"]);
        assert_eq!(types(&s, &s.attachments), ["image/png"]);
        assert_eq!(s.parts[s.attachments[0]].role, PartRole::RelatedResource);

        let s = analyze(&golden("calendar-alternative"), None);
        assert_eq!(types(&s, &s.text_parts), ["text/plain", "text/html"]);
        assert_eq!(types(&s, &s.attachments), ["text/calendar"]);

        let s = analyze(&golden("tnef-mixed"), None);
        assert_eq!(types(&s, &s.text_parts), ["text/plain"]);
        assert_eq!(types(&s, &s.attachments), ["application/ms-tnef"]);

        let s = analyze(&golden("forwarded-rfc822"), None);
        assert_eq!(types(&s, &s.text_parts), ["text/plain"]);
        assert_eq!(s.rfc822_parts.len(), 1);
        assert!(s.attachments.is_empty());

        let s = analyze(&golden("nested-attachments"), None);
        assert_eq!(types(&s, &s.text_parts), ["text/plain", "text/html"]);
        assert_eq!(
            types(&s, &s.attachments),
            [
                "image/gif",
                "text/plain",
                "application/octet-stream",
                "text/html"
            ]
        );
        assert!(s.parts.iter().all(|p| !p.encoding_problem));
    }

    #[test]
    fn signed_and_encrypted_are_recognised() {
        let s = analyze(&golden("corpus-smime-signed"), None);
        assert!(
            matches!(s.security[..], [Security::MultipartSigned { part: 0, ref protocol }] if protocol == "application/x-pkcs7-signature")
        );
        assert_eq!(types(&s, &s.signed_text_parts), ["text/plain"]);
        assert!(s.text_parts.is_empty());
        assert_eq!(s.parts[2].role, PartRole::Signature);

        let s = analyze(&golden("pkcs7-encrypted"), None);
        assert_eq!(s.security, [Security::SmimeEncrypted { part: 0 }]);

        let s = analyze(&golden("inline-pgp-signed"), None);
        assert_eq!(s.security, [Security::InlinePgpSigned { part: 0 }]);
    }

    #[test]
    fn marker_found_in_quoted_qp_and_html() {
        let m = "Communications sent to or from this organisation may be subject to recording and/or monitoring in accordance with relevant legislation.";
        let s = analyze(&golden("corpus-reply-with-quoted-disclaimer"), Some(m));
        assert_eq!(s.disclaimer_present, Some(true));
        let s = analyze(&golden("html-quoted-disclaimer"), Some(m));
        assert_eq!(s.disclaimer_present, Some(true));
        assert!(
            s.text_parts
                .iter()
                .all(|&p| s.parts[p].marker_present == Some(true))
        );
        let s = analyze(&golden("corpus-plain-unmarked"), Some(m));
        assert_eq!(s.disclaimer_present, Some(false));
    }

    #[test]
    fn normalisation() {
        assert_eq!(
            normalize_text(
                "<p>A&nbsp;b</p><p>C &amp; <b>d</b>&#233;&#x21;</p><script>x</script>",
                true
            ),
            "a b c & dé!"
        );
        assert_eq!(
            normalize_text("> > Quoted\n>  text\u{a0}here", false),
            "quoted text here"
        );
    }

    #[test]
    fn transfer_decoders_are_lenient_and_honest() {
        assert_eq!(
            decode_qp(b"a=\r\nb=3D\r\nc \r\n"),
            (b"ab=\r\nc\r\n".to_vec(), true)
        );
        assert_eq!(
            decode_qp(b"caf\xe9 =ZZ\n"),
            (b"caf\xe9 =ZZ\n".to_vec(), false)
        );
        assert_eq!(
            decode_base64(b"aGVs\r\nbG8=\r\n"),
            (b"hello".to_vec(), true)
        );
        assert!(!decode_base64(b"aGVs*bG8=").1);
    }

    #[test]
    fn never_panics_on_junk() {
        for junk in [
            &b""[..],
            b"\r\n",
            b"\n\n\n",
            b"Content-Type: multipart/mixed; boundary=\"\"\r\n\r\n--\r\n--",
            b"Content-Type: multipart/mixed; boundary=a\r\n\r\n--a\r\nContent-Type: multipart/alternative; boundary=a\r\n\r\n--a--",
            b"Content-Type: text/plain; charset=utf-16\r\nContent-Transfer-Encoding: base64\r\n\r\n//79/w==",
            b"\xff\xfe\x00:",
        ] {
            let s = analyze(junk, Some("marker"));
            for p in &s.parts {
                let _ = decode_part_text(junk, p);
            }
        }
    }

    /// The folding written out on its own, line by line as `normalize_text` first did it: `Folder`
    /// must give exactly the same string.
    fn normalize_reference(text: &str) -> String {
        let mut out = String::new();
        let mut pending_space = false;
        for line in text.split('\n') {
            let line = line.trim_start_matches(|c: char| c == '>' || c.is_whitespace());
            pending_space |= !out.is_empty();
            for c in line.chars() {
                if c.is_whitespace() {
                    pending_space = !out.is_empty();
                } else if matches!(
                    c,
                    '\u{200B}' | '\u{200C}' | '\u{200D}' | '\u{FEFF}' | '\u{AD}'
                ) {
                    continue;
                } else {
                    if pending_space {
                        out.push(' ');
                        pending_space = false;
                    }
                    out.extend(c.to_lowercase());
                }
            }
        }
        out
    }

    /// Every file of the corpora the folding tests read.
    pub(crate) fn corpus_files() -> Vec<Vec<u8>> {
        fn files(dir: &std::path::Path, out: &mut Vec<Vec<u8>>) {
            for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
                let p = e.path();
                if p.is_dir() {
                    files(&p, out);
                } else if let Ok(b) = std::fs::read(&p) {
                    out.push(b);
                }
            }
        }
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let mut texts = Vec::new();
        for d in [
            "tests/rewrite",
            "tests/corpus",
            "fuzz/corpus/inspect",
            "benches/data",
        ] {
            files(&root.join(d), &mut texts);
        }
        texts
    }

    #[test]
    fn normalize_ascii_matches_the_per_char_folding() {
        let texts = corpus_files();
        let mut checked = 0;
        for t in &texts {
            // Whole files and their ASCII-only lossy versions, so every one is exercised.
            let lossy = String::from_utf8_lossy(t);
            let ascii: String = lossy.chars().filter(char::is_ascii).collect();
            for input in [lossy.as_ref(), ascii.as_str()] {
                if input.is_ascii() {
                    checked += 1;
                    assert_eq!(normalize_text(input, false), normalize_reference(input));
                }
            }
        }
        assert!(checked > 300, "only {checked} texts");
    }

    #[test]
    fn normalize_fast_path_matches_the_per_char_folding() {
        let pieces = [
            "a",
            "Z",
            " ",
            "\t",
            "\n",
            "\r\n",
            "\u{b}",
            "\u{c}",
            ">",
            "> >",
            "\u{a0}",
            "\u{85}",
            "\u{2003}",
            "\u{200b}",
            "\u{feff}",
            "\u{ad}",
            "É",
            "İ",
            "ß",
            "Σ",
            "THIS EMAIL",
            "Monitored",
            "\u{3000}",
            "x\u{200d}y",
            "\n> ",
            "  \n\n",
        ];
        // Every sequence of up to three pieces, plus longer mixed strings.
        let mut inputs = vec![String::new()];
        for a in pieces {
            for b in pieces {
                for c in pieces {
                    inputs.push(format!("{a}{b}{c}"));
                }
            }
        }
        inputs.push(pieces.concat());
        inputs.push(pieces.iter().rev().copied().collect::<String>());
        for input in &inputs {
            assert_eq!(
                normalize_text(input, false),
                normalize_reference(input),
                "input {input:?}"
            );
        }
    }

    /// `marker_in_text` must answer exactly what folding the whole text and searching gives,
    /// whichever shortcut it takes: never "absent" when the folded text holds the marker, never
    /// "present" when it does not.
    fn check_marker(text: &str, html: bool, marker: &str, counts: &mut [usize; 2]) {
        let want = normalize_text(text, html).contains(marker);
        assert_eq!(
            marker_in_text(text, html, marker),
            want,
            "marker {marker:?} html {html} in {text:?}"
        );
        counts[usize::from(want)] += 1;
        // normalize_marker's shortcut for markers folded already.
        assert_eq!(normalize_marker(marker), normalize_text(marker, false));
    }

    /// Markers made from the folded text itself (so present), and the same with one character
    /// changed or in upper case (so absent, or present only through folding).
    fn markers_from(folded: &str) -> Vec<String> {
        let chars: Vec<char> = folded.chars().collect();
        let mut out = Vec::new();
        for len in [8, 20, 45] {
            for start in [
                0,
                chars.len() / 3,
                chars.len() / 2,
                chars.len().saturating_sub(len),
            ] {
                let piece: String = chars.iter().skip(start).take(len).collect();
                let m = normalize_marker(&piece);
                if m.is_empty() {
                    continue;
                }
                let mut changed: Vec<char> = m.chars().collect();
                let mid = changed.len() / 2;
                changed[mid] = if changed[mid] == 'q' { 'z' } else { 'q' };
                out.push(changed.into_iter().collect());
                out.push(m.to_uppercase());
                out.push(m);
            }
        }
        out
    }

    #[test]
    fn ascii_whitespace_is_what_folding_calls_whitespace() {
        for b in 0..=0x7Fu8 {
            assert_eq!(
                is_ascii_whitespace_char(b),
                char::from(b).is_whitespace(),
                "{b:#x}"
            );
        }
    }

    #[test]
    fn marker_search_agrees_with_folding_over_the_corpora() {
        let fixed = [
            "may be subject to recording and/or monitoring in accordance with relevant legislation",
            "recording and/or monitoring",
            "This Email",
            "monitored",
            "keep",
            "> quoted",
            "a  b",
            "caf\u{e9} au lait",
        ];
        let mut counts = [0usize; 2];
        for t in corpus_files() {
            let lossy = String::from_utf8_lossy(&t);
            let ascii: String = lossy.chars().filter(char::is_ascii).collect();
            for input in [lossy.as_ref(), ascii.as_str()] {
                for html in [false, true] {
                    let mut markers: Vec<String> = fixed.iter().map(|m| (*m).to_owned()).collect();
                    markers.extend(fixed.iter().map(|m| normalize_marker(m)));
                    markers.extend(markers_from(&normalize_text(input, html)));
                    for m in &markers {
                        check_marker(input, html, m, &mut counts);
                    }
                }
            }
        }
        let [absent, present] = counts;
        assert!(
            absent > 10_000 && present > 5_000,
            "{absent} absent, {present} present"
        );
    }

    #[test]
    fn marker_search_agrees_with_folding_where_folding_makes_the_match() {
        let m = normalize_marker("Recording and/or MONITORING");
        let mut counts = [0usize; 2];
        for (text, html) in [
            ("recording and/or monitoring", false),
            ("RECORDING AND/OR MONITORING", false),
            ("recording   and/or\n> > monitoring", false),
            ("recording\tand/or\r\n monitoring", false),
            ("recording and/or moni\u{200b}toring", false),
            ("recording and/or moni\u{ad}toring", false),
            ("recording\u{a0}and/or monitoring", false),
            ("recording and/or monitorin", false),
            ("recording and/or", false),
            ("<p>recording <b>and/or</b> monitoring</p>", true),
            ("recording and&#47;or &#109;onitoring", true),
            ("recording and/or <!-- x -->monitoring", true),
            ("recording and/<i>or</i> moni<br>toring", true),
            ("", false),
        ] {
            check_marker(text, html, &m, &mut counts);
        }
        // ASCII letters that only folding makes: the Kelvin sign lowercases to `k`, a dotted
        // capital I to `i` and a combining dot; and markers that are not folded themselves.
        for (text, marker) in [
            ("\u{212a}eep it", "keep it"),
            ("\u{212a}EEP it", "keep it"),
            ("\u{130}t is", "i\u{307}t is"),
            ("x > y", "x > y"),
            ("> y", "> y"),
            ("a\u{1}b c", "a\u{1}b c"),
            ("Keep It", "Keep It"),
            ("keep  it", "keep  it"),
        ] {
            check_marker(text, false, marker, &mut counts);
        }
        assert!(counts[0] >= 6 && counts[1] >= 13, "{counts:?}");
    }
}
