//! The message's header block: where it ends (the first empty line, RFC 5322 §2.1), and the
//! checks that mail-parser's view of it agrees with the header lines a milter delivers, since
//! header edits are made against that block and body edits against the parser's offsets.
//!
//! Must not: read any header's value (only MIME header names are counted) or decide part roles.

use super::{Diagnostic, MimeShape};

/// How many Content-Type and Content-Transfer-Encoding headers mail-parser saw.
pub(super) fn mime_header_counts(headers: &[mail_parser::Header<'_>]) -> (usize, usize) {
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
pub(super) fn raw_mime_header_counts(block: &[u8]) -> (usize, usize) {
    let (mut ct, mut cte) = (0, 0);
    // The lines as `split` on LF would give them, found with memchr instead of a test per byte.
    let starts = std::iter::once(0).chain(memchr::memchr_iter(b'\n', block).map(|i| i + 1));
    let ends = memchr::memchr_iter(b'\n', block).chain(std::iter::once(block.len()));
    for (start, end) in starts.zip(ends) {
        let line = &block[start..end];
        // Both names start with `content-` at column 0 (a name has no white space before it):
        // any other line is skipped without looking for its colon.
        if !line
            .get(..8)
            .is_some_and(|p| p.eq_ignore_ascii_case(b"content-"))
        {
            continue;
        }
        let Some(name) = field_name(line) else {
            continue;
        };
        if name.eq_ignore_ascii_case(b"content-type") {
            ct += 1;
        } else if name.eq_ignore_ascii_case(b"content-transfer-encoding") {
            cte += 1;
        }
    }
    (ct, cte)
}

/// A well-formed header line's field name: the text before its colon, trailing blanks
/// removed, printable ASCII without spaces (RFC 5322's ftext); `None` for any other line.
fn field_name(line: &[u8]) -> Option<&[u8]> {
    let colon = line.iter().position(|&b| b == b':')?;
    let name = &line[..colon];
    let end = name.iter().rposition(|&b| b != b' ' && b != b'\t')?;
    let name = &name[..=end];
    name.iter()
        .all(|&b| (33..=126).contains(&b))
        .then_some(name)
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

/// Set `shape.body_offset` and distrust the parser's offsets (`structure_reliable` false, with a
/// diagnostic) when its idea of the header block is not the header block.
pub(super) fn check_block(shape: &mut MimeShape, raw: &[u8], message: &mail_parser::Message<'_>) {
    // The header block ends at the first empty line (RFC 5322 §2.1). Header edits are made
    // against that block; if mail-parser saw the body start elsewhere its part offsets cannot
    // be trusted for editing, and the body is left alone.
    shape.body_offset = header_block_end(raw);
    let has_separator = shape.body_offset < raw.len()
        || raw.ends_with(b"\n\n")
        || raw.ends_with(b"\n\r\n")
        || raw == b"\n"
        || raw == b"\r\n";
    let (part, code, detail) = if !has_separator {
        // No empty line: the message has no body, and the last header may be cut short.
        (
            None,
            "no-body",
            "the header block is not followed by an empty line".to_string(),
        )
    } else if let Some(root) = message.parts.first()
        && mime_header_counts(&root.headers) != raw_mime_header_counts(&raw[..shape.body_offset])
    {
        // mail-parser reads header names more loosely (leading whitespace or CR skipped) than
        // a milter delivers them; then its MIME view and the header edits would disagree.
        (
            Some(0),
            "mime-header-mismatch",
            "the parser found MIME headers that are not well-formed header lines".to_string(),
        )
    } else if let Some(root) = shape.parts.first()
        && root.body_range.start != shape.body_offset
    {
        (
            Some(0),
            "header-block-mismatch",
            format!(
                "the header block ends at byte {} but the parser read headers up to byte {}",
                shape.body_offset, root.body_range.start
            ),
        )
    } else {
        return;
    };
    shape.structure_reliable = false;
    shape.diagnostics.push(Diagnostic { part, code, detail });
}

#[cfg(test)]
mod tests {
    use super::{field_name, raw_mime_header_counts};

    /// The counts as they were made before lines not starting with `content-` were skipped
    /// unread: every line's name looked at.
    fn counts_reading_every_name(block: &[u8]) -> (usize, usize) {
        let (mut ct, mut cte) = (0, 0);
        // What changed is which lines are looked at, not how a name is read: that is shared.
        for line in block.split(|&b| b == b'\n') {
            let Some(name) = field_name(line) else {
                continue;
            };
            ct += usize::from(name.eq_ignore_ascii_case(b"content-type"));
            cte += usize::from(name.eq_ignore_ascii_case(b"content-transfer-encoding"));
        }
        (ct, cte)
    }

    #[test]
    fn skipping_other_lines_counts_the_same() {
        let blocks: &[&[u8]] = &[
            b"Content-Type: text/plain\r\nContent-Transfer-Encoding: 7bit\r\n\r\n",
            b"CONTENT-TYPE : text/plain\nSubject: x\n content-type: folded\n\n",
            b"Content-Type\t: a\nContent-Typo: b\nContent-: c\nContent\n",
            b" Content-Type: leading space is no header name\r\n",
            b"\rContent-Type: leading CR\r\nContent-Type:\r\n",
            b"Content-Ty pe: x\nContent-Transfer-Encoding: base64\ncontent-transfer-encoding:q\n",
            b"content-type",
            b"X: Content-Type: y\nReceived: from a (b [1.2.3.4])\n\tby c; Mon, 2 Nov 2026 09:30:00\n",
            b"",
            "Content-Type: caf\u{e9}\nContent-Typ\u{e9}: x\n".as_bytes(),
        ];
        for block in blocks {
            assert_eq!(
                raw_mime_header_counts(block),
                counts_reading_every_name(block),
                "{}",
                String::from_utf8_lossy(block)
            );
        }
        // Every message and fuzz input of the repository, whole (body lines included).
        let files = crate::inspect::mime::tests::corpus_files();
        assert!(files.len() > 200, "only {} corpus files", files.len());
        for raw in files {
            assert_eq!(
                raw_mime_header_counts(&raw),
                counts_reading_every_name(&raw),
                "{}",
                String::from_utf8_lossy(&raw)
            );
        }
    }
}
