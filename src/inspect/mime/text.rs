//! The text pass: for each message-text part, whether its transfer encoding is damaged, whether
//! its charset is unknown, whether it is inline PGP, and whether the marker is in it. A part is
//! read by decoding the raw message, or, when `crate::large` elided its body, from the facts the
//! stream scan computed; either way the same facts land on the shape the same way.
//!
//! Must not: walk the tree (roles are set before this pass) or change the message.

use std::collections::HashMap;

use super::decode::{CharsetStatus, decode_part_text};
use super::search::marker_in_text;
use super::{Diagnostic, MimeShape, PartInfo, PartRole, Security};
use crate::inspect::stream::{ElidedPart, InlinePgp};

/// What the text pass learns about one message-text part, however it was read.
struct TextFacts {
    transfer_clean: bool,
    unknown_charset: bool,
    /// Only looked for in [`PartRole::BodyText`] parts.
    inline_pgp: Option<Security>,
    /// `None` when no marker was given.
    marker_found: Option<bool>,
}

/// Read every message-text part (`owner`: which elided part, if any, each one holds, from
/// `super::elided::check_elided`) and record its facts on `shape`. Fails when an elided
/// message-text part has no usable streamed facts.
pub(super) fn read_parts(
    shape: &mut MimeShape,
    raw: &[u8],
    marker: Option<&str>,
    elided: &[ElidedPart],
    owner: &HashMap<usize, usize>,
) -> Result<(), String> {
    let mut any_marker = false;
    let text_ids: Vec<usize> = shape
        .text_parts
        .iter()
        .chain(shape.signed_text_parts.iter())
        .copied()
        .collect();
    for id in text_ids {
        let part = &shape.parts[id];
        let facts = match owner.get(&id) {
            Some(&e) => streamed_facts(part, id, &elided[e], marker.is_some())?,
            None => decoded_facts(raw, part, id, marker),
        };
        if !facts.transfer_clean {
            shape.diagnostics.push(Diagnostic {
                part: Some(id),
                code: "transfer-encoding-damaged",
                detail: "the part's transfer encoding has invalid characters".into(),
            });
        }
        if facts.unknown_charset {
            shape.diagnostics.push(Diagnostic {
                part: Some(id),
                code: "unknown-charset",
                detail: format!(
                    "charset {:?} is unknown; read as UTF-8",
                    shape.parts[id].charset.as_deref().unwrap_or("")
                ),
            });
        }
        if let Some(sec) = facts.inline_pgp {
            shape.security.push(sec);
        }
        if let Some(found) = facts.marker_found {
            any_marker |= found;
            shape.parts[id].marker_present = Some(found);
        }
    }
    if marker.is_some() {
        shape.disclaimer_present = Some(any_marker);
    }
    Ok(())
}

/// The facts of a part decoded from the raw message.
fn decoded_facts(raw: &[u8], part: &PartInfo, id: usize, marker: Option<&str>) -> TextFacts {
    let decoded = decode_part_text(raw, part);
    TextFacts {
        transfer_clean: decoded.transfer_clean,
        unknown_charset: decoded.charset == CharsetStatus::Unknown,
        inline_pgp: if part.role == PartRole::BodyText {
            inline_pgp(&decoded.text, id)
        } else {
            None
        },
        marker_found: marker.map(|m| marker_in_text(&decoded.text, part.is_html(), m)),
    }
}

/// The facts the stream scan computed for an elided part, once they are shown to be about the
/// part the parser sees (same charset and transfer encoding, plain text).
fn streamed_facts(
    part: &PartInfo,
    id: usize,
    elided: &ElidedPart,
    with_marker: bool,
) -> Result<TextFacts, String> {
    let Some(t) = elided.text.as_ref() else {
        return Err(format!(
            "message-text part {id} was elided without text facts"
        ));
    };
    if part.is_html() || t.charset != part.charset || t.transfer_encoding != part.transfer_encoding
    {
        return Err(format!(
            "message-text part {id}: the parser reads {} {:?} {:?}, the scan read {:?} {:?}",
            part.content_type, part.charset, part.transfer_encoding, t.charset, t.transfer_encoding
        ));
    }
    Ok(TextFacts {
        transfer_clean: t.transfer_clean,
        // The scan only streams parts whose charset it knows.
        unknown_charset: false,
        inline_pgp: match t.inline_pgp {
            Some(_) if part.role != PartRole::BodyText => None,
            Some(InlinePgp::Signed) => Some(Security::InlinePgpSigned { part: id }),
            Some(InlinePgp::Encrypted) => Some(Security::InlinePgpEncrypted { part: id }),
            None => None,
        },
        marker_found: with_marker.then_some(t.marker_found),
    })
}

/// Inline PGP armour at the start of a line of the decoded text.
fn inline_pgp(text: &str, part: usize) -> Option<Security> {
    // Both armour lines begin so. Nearly no text has either, and one search of the whole text
    // (memchr's) says so for a fraction of walking it line by line.
    memchr::memmem::find(text.as_bytes(), b"-----BEGIN PGP ")?;
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
