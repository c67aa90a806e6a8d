//! The mail-parser calls: the MIME tree of a message, with byte offsets, and nothing decoded
//! that this module does not read.
//!
//! mail-parser decodes every base64 and quoted-printable body while it walks the tree. Nothing
//! here reads what it decodes: the text pass decodes the message text from the raw bytes
//! itself ([`super::decode`]), and attachments are never decoded. For a message with a 200 KB
//! attachment that decoding was four fifths of markgate's work on it. So the tree is read with
//! Content-Transfer-Encoding hidden from the parser: the field is still named in each part's
//! headers (so the header counts of [`super::header`] still agree), but its value is left
//! unparsed, every body is only scanned for its boundary, and the value is read afterwards, by
//! the parser's own reader, from the bytes it skipped ([`transfer_encoding`]).
//!
//! A message that is not multipart is one part whatever its body holds, so it is read from
//! mail-parser's header parse alone ([`single_part`]): no body scan at all.
//!
//! Where the encoding changes the tree of a multipart message, it is parsed again as before: a
//! part that mail-parser reads as a nested message (`message/rfc822`, `message/global`, a part
//! of a `multipart/digest`) is parsed from its decoded body when it has one, and from the raw
//! stream when it has none. Such forwarded messages are rare enough that parsing them twice
//! costs nothing worth counting, and their tree stays exactly what it was.
//!
//! Also here: each part's own facts as mail-parser gives them ([`part_info`]), the one other
//! place that reads its parts' headers.
//!
//! Must not: judge the parts (that is [`super::roles`] and [`super::text`]) or panic-proof the
//! call (the caller catches a panic).

use std::borrow::Cow;

use mail_parser::parsers::MessageStream;
use mail_parser::{
    Encoding, HeaderName, HeaderValue, Message, MessageParser, MessagePart, MimeHeaders, PartType,
};

use super::{PartInfo, PartRole, TransferEncoding, unbracket};

/// How the parser treats bodies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Bodies {
    /// Scanned for their boundaries only (Content-Transfer-Encoding hidden).
    Scanned,
    /// Decoded as the transfer encoding says: mail-parser's own behaviour, needed for encoded
    /// nested messages.
    Decoded,
}

/// The MIME tree of `raw` (`None`: no header could be parsed), read with `first` and, when
/// that gave a nested message, again with [`Bodies::Decoded`].
pub(super) fn structure(raw: &[u8], first: Bodies) -> Option<Message<'_>> {
    if first == Bodies::Scanned
        && let Some(message) = single_part(raw)
    {
        return Some(message);
    }
    let message = parser(first).parse(raw)?;
    if first == Bodies::Scanned && message.parts.iter().any(may_nest) {
        return parser(Bodies::Decoded).parse(raw);
    }
    Some(message)
}

/// The tree of a message that is one part (its Content-Type, if any, is not `multipart/*`),
/// built from mail-parser's header parse alone: the part's headers, its body from the end of
/// the header block to the end of the message, no encoding problem. That is the tree
/// [`Bodies::Scanned`] gives such a message (the tests compare the two): the full parse would
/// only go on to scan the body byte by byte and copy it into a string that nothing here reads.
/// A top-level `message/*` is one part here too: mail-parser keeps the parts of a nested
/// message inside that part's body, which the shape never walks.
pub(super) fn single_part(raw: &[u8]) -> Option<Message<'_>> {
    let mut stream = MessageStream::new(raw);
    let mut headers = Vec::new();
    if !stream.parse_headers(parser(Bodies::Scanned), &mut headers) {
        return None;
    }
    let part = MessagePart {
        headers,
        is_encoding_problem: false,
        body: PartType::Text(Cow::Borrowed("")),
        encoding: Encoding::None,
        offset_header: 0,
        offset_body: stream.offset() as u32,
        offset_end: raw.len() as u32,
    };
    let multipart = part
        .content_type()
        .is_some_and(|ct| ct.ctype().eq_ignore_ascii_case("multipart"));
    (!multipart).then(|| Message {
        html_body: Vec::new(),
        text_body: Vec::new(),
        attachments: Vec::new(),
        parts: vec![part],
        raw_message: Cow::Borrowed(raw),
    })
}

/// Could mail-parser have read this part as a nested message? Then its encoding decides what
/// the parser does with the body.
fn may_nest(p: &MessagePart<'_>) -> bool {
    if matches!(p.body, PartType::Message(_)) {
        return true;
    }
    p.content_type().is_some_and(|ct| {
        ct.ctype().eq_ignore_ascii_case("message")
            || (ct.ctype().eq_ignore_ascii_case("multipart")
                && ct
                    .subtype()
                    .is_some_and(|s| s.eq_ignore_ascii_case("digest")))
    })
}

/// A part's own facts, before the walk gives it a parent and a role.
pub(super) fn part_info(p: &MessagePart<'_>, raw: &[u8]) -> PartInfo {
    let clamp = |v: u32| (v as usize).min(raw.len());
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
    PartInfo {
        parent: None,
        depth: 0,
        content_type,
        has_content_type: ct.is_some(),
        charset: ct
            .and_then(|c| c.attribute("charset"))
            .map(|c| c.trim().to_string()),
        transfer_encoding: TransferEncoding::parse(transfer_encoding(p, raw).as_deref()),
        is_attachment_disposition: disposition.is_some_and(|d| d.is_attachment()),
        filename,
        content_id: p.content_id().map(|c| unbracket(c).to_string()),
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
    }
}

/// The value of a part's last Content-Transfer-Encoding field (the one mail-parser obeys), read
/// from `raw` at the offsets the parser recorded, by the parser's own reader of unstructured
/// values: what [`Bodies::Decoded`] would have parsed, without parsing every other part's.
pub(super) fn transfer_encoding<'a>(p: &MessagePart<'_>, raw: &'a [u8]) -> Option<Cow<'a, str>> {
    let h = p
        .headers
        .iter()
        .rev()
        .find(|h| h.name == HeaderName::ContentTransferEncoding)?;
    let value = raw.get(h.offset_start as usize..h.offset_end as usize)?;
    match MessageStream::new(value).parse_unstructured() {
        HeaderValue::Text(text) => Some(text),
        _ => None,
    }
}

/// The structure parser for `bodies`, built once (building one fills a header table). Only
/// the MIME headers are parsed; every other header is skipped with its name kept: neither the
/// parser nor this module reads another header's value.
fn parser(bodies: Bodies) -> &'static MessageParser {
    static SCANNED: std::sync::OnceLock<MessageParser> = std::sync::OnceLock::new();
    static DECODED: std::sync::OnceLock<MessageParser> = std::sync::OnceLock::new();
    match bodies {
        Bodies::Scanned => SCANNED.get_or_init(|| {
            MessageParser::new()
                .with_mime_headers()
                .ignore_header(HeaderName::ContentTransferEncoding)
                .default_header_ignore()
        }),
        Bodies::Decoded => DECODED.get_or_init(|| {
            MessageParser::new()
                .with_mime_headers()
                .default_header_ignore()
        }),
    }
}
