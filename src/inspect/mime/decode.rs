//! Undoing a part's encodings: Content-Transfer-Encoding (lenient base64 and quoted-printable)
//! and charset (encoding_rs labels, with the aliases mail uses that WHATWG lacks).
//!
//! Shared with `crate::rewrite` and `inspect::stream` so that what inspect reads and what rewrite
//! edits are decoded the same way. Must not: walk the MIME tree, fold text or search for markers;
//! no I/O, no panics on broken input (a damaged encoding is reported as "not clean").

use std::borrow::Cow;

use base64::Engine as _;

use super::{PartInfo, TransferEncoding};

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
