//! The MIME shape of a message: which parts are the message text a reader sees, their charset,
//! transfer encoding and byte ranges, which parts are attachments or forwarded messages, whether
//! the message is signed or encrypted, and whether a disclaimer marker is already in the decoded
//! text.
//!
//! The tree is parsed with mail-parser ([`parse`]: bodies scanned for boundaries, not decoded;
//! headers only for a message that is not multipart; twice for a multipart message with a part
//! that may be a nested message); its parts carry byte offsets into the raw message, which
//! `crate::rewrite` uses to edit bytes in place without re-parsing. This
//! module only reads: no I/O, no logging, no panics on broken MIME (it returns what it could
//! find plus [`Diagnostic`]s). The rules for "message text" follow
//! `shared/reference/markings.md` §(d)1: both sides of multipart/alternative, the root of
//! multipart/related, the first body part of multipart/mixed; never attachments, forwarded
//! `message/rfc822`, calendar or TNEF parts.
//!
//! This file holds the shape's types and [`analyze`], which runs the passes in order:
//! - each part's own facts ([`parse`]), then [`header`]: where the header block ends and whether
//!   the parser agrees;
//! - [`roles`]: the tree walk that decides each part's role;
//! - [`elided`]: for a reduced message, that its stand-ins are where the scan put them;
//! - [`text`]: each message-text part decoded ([`decode`]), folded ([`fold`], [`html`]) and
//!   searched ([`search`]) for inline PGP and the marker.
//!
//! The transfer-encoding and charset decoders are shared with `crate::rewrite` so that what
//! inspect reads and what rewrite edits are decoded the same way.

use std::ops::Range;

mod decode;
mod elided;
mod fold;
mod header;
mod html;
mod parse;
mod roles;
mod search;
#[cfg(test)]
pub(crate) mod tests;
mod text;

pub use decode::{
    CharsetStatus, DecodedText, charset_encoding, decode_base64, decode_charset, decode_part_text,
    decode_qp, decode_transfer,
};
pub(crate) use fold::Folder;
pub use fold::{fold_marker, normalize_marker, normalize_text};
pub use header::header_block_end;
pub use search::{find_ascii_ci, marker_in_text, rfind_ascii_ci};

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
    /// mail-parser flagged a problem reading the part: its closing boundary is missing, or a
    /// nested message has no header. (Bodies are not decoded, see [`parse`], so undecodable
    /// base64 is not one, except in a message with a nested message.)
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
    analyze_with(raw, marker, elided, parse::Bodies::Scanned)
}

/// [`analyze_reduced`] with the parser's first treatment of bodies chosen (the tests compare
/// the two).
fn analyze_with(
    raw: &[u8],
    marker: Option<&str>,
    elided: &[super::stream::ElidedPart],
    bodies: parse::Bodies,
) -> Result<MimeShape, String> {
    let marker_norm = marker.map(normalize_marker).filter(|m| !m.is_empty());
    let mut shape = MimeShape {
        marker: marker_norm.clone(),
        ..MimeShape::head_only(raw, false)
    };
    // A panic inside the parser (mail-parser has `debug_assert!(false)` on recovery paths that
    // malformed MIME reaches, and any dependency can have a bug) must not turn into a 451 that
    // the MTA retries for days: the message is then one whose structure we cannot read, so the
    // labels still go on and the body is left alone, as for any other unreadable structure.
    let parsed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        parse::structure(raw, bodies)
    }));
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

    // First pass: facts about each part that do not depend on the tree walk.
    for (i, p) in message.parts.iter().enumerate() {
        shape.parts.push(parse::part_info(p, raw));
        if p.is_encoding_problem {
            shape.diagnostics.push(Diagnostic {
                part: Some(i),
                code: "encoding-problem",
                detail: "mail-parser could not read this part as declared".into(),
            });
        }
    }
    header::check_block(&mut shape, raw, &message);
    // Second pass: each part's role.
    roles::assign(&mut shape, &message);
    // Third pass: decode the message text, look for inline PGP and the marker.
    let owner = elided::check_elided(&shape, elided)?;
    text::read_parts(&mut shape, raw, marker_norm.as_deref(), elided, &owner)?;
    Ok(shape)
}

/// A Content-ID or `start` parameter without its angle brackets.
fn unbracket(s: &str) -> &str {
    s.trim().trim_start_matches('<').trim_end_matches('>')
}
