//! The text digest the thread ledger files a message under: a SHA-256 of the text a reader
//! sees, so that a copy of an inbound message leaving again is recognised even when a relay
//! re-encoded it (8bit to quoted-printable, CRLF to LF, another line-end at the end).
//!
//! Owns: the walk over the MIME tree that finds the text parts (`text/*`, and parts with no
//! Content-Type where that means text/plain), decodes only those (transfer encoding, then
//! charset, with the pipeline's own decoders in `inspect::mime`), and normalises them: line
//! ends made LF, trailing white space of each line and trailing empty lines removed.
//! Attachments and forwarded messages are not part of the digest and are never decoded: a
//! 200 KB attachment costs a boundary scan, not a base64 decode and a hash of its bytes.
//!
//! Must not: keep or return any of the text (only the digest leaves), or do I/O.

use std::borrow::Cow;

use sha2::{Digest as _, Sha256};

use super::mime::{TransferEncoding, decode_charset, decode_transfer};

/// Deepest multipart nesting followed; deeper parts are left out of the digest.
const MAX_DEPTH: usize = 32;

/// SHA-256 of the message text as a reader sees it (see the module comment). Two messages
/// with the same text parts in the same order have the same digest, whatever their headers,
/// attachments and encodings.
pub fn text_digest(whole: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    entity(&mut h, whole, true, 0);
    h.finalize().into()
}

/// One MIME entity (the message, or a part): its header block, then its body by type.
/// `text_by_default`: no Content-Type means text/plain (false inside multipart/digest, where it
/// means message/rfc822).
fn entity(h: &mut Sha256, raw: &[u8], text_by_default: bool, depth: usize) {
    let (head, body) = split_at_body(raw).unwrap_or((raw, &[]));
    let fields = Fields::read(head);
    let (kind, params) = match fields.content_type.as_deref() {
        Some(ct) => split_type(ct),
        None if text_by_default => (Cow::Borrowed("text/plain"), Vec::new()),
        None => (Cow::Borrowed("message/rfc822"), Vec::new()),
    };
    let param = |name: &str| {
        params
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| &**v)
    };
    if let Some(sub) = kind.strip_prefix("multipart/") {
        let Some(boundary) = param("boundary").filter(|b| !b.is_empty()) else {
            return;
        };
        if depth >= MAX_DEPTH {
            return;
        }
        for part in parts(body, boundary.as_bytes()) {
            entity(h, part, sub != "digest", depth + 1);
        }
    } else if kind.starts_with("text/") {
        let cte = TransferEncoding::parse(fields.transfer_encoding.as_deref());
        let (bytes, _) = decode_transfer(body, &cte);
        let (text, _) = decode_charset(&bytes, param("charset"));
        h.update(b"t\0");
        normalised_text(h, &text);
    }
    // Anything else (attachments, message/*) is not text a reader reads in this message.
}

/// The bodies of a multipart's parts: what lies between its `--boundary` lines, up to the
/// closing `--boundary--` (or the end). The preamble and epilogue are not parts.
fn parts<'a>(body: &'a [u8], boundary: &[u8]) -> Vec<&'a [u8]> {
    let mut out = Vec::new();
    let mut start: Option<usize> = None;
    let mut pos = 0;
    while pos < body.len() {
        let end = memchr::memchr(b'\n', &body[pos..]).map_or(body.len(), |i| pos + i + 1);
        let line = &body[pos..end];
        if let Some(rest) = line
            .strip_prefix(b"--")
            .and_then(|l| l.strip_prefix(boundary))
        {
            let rest = rest.trim_ascii_end();
            let closing = rest == b"--";
            if rest.is_empty() || closing {
                if let Some(s) = start {
                    out.push(&body[s..pos]);
                }
                if closing {
                    return out;
                }
                start = Some(end);
            }
        }
        pos = end;
    }
    if let Some(s) = start {
        out.push(&body[s..]);
    }
    out
}

/// The Content-Type and Content-Transfer-Encoding of a header block (unfolded; the first of
/// each when a field is repeated). Borrowed from the block when on one line in UTF-8.
#[derive(Default)]
struct Fields<'a> {
    content_type: Option<Cow<'a, str>>,
    transfer_encoding: Option<Cow<'a, str>>,
}

impl<'a> Fields<'a> {
    fn read(head: &'a [u8]) -> Fields<'a> {
        let mut f = Fields::default();
        let mut lines = lines(head).peekable();
        let folded = |l: &&[u8]| l.first().is_some_and(|b| *b == b' ' || *b == b'\t');
        while let Some(line) = lines.next() {
            // Both names start with `c`: most lines are ruled out before the colon search.
            if !line
                .iter()
                .find(|b| !b.is_ascii_whitespace())
                .is_some_and(|b| b.eq_ignore_ascii_case(&b'c'))
            {
                continue;
            }
            let Some(colon) = memchr::memchr(b':', line) else {
                continue;
            };
            let name = line[..colon].trim_ascii();
            let slot = if name.eq_ignore_ascii_case(b"content-type") {
                &mut f.content_type
            } else if name.eq_ignore_ascii_case(b"content-transfer-encoding") {
                &mut f.transfer_encoding
            } else {
                continue;
            };
            let first = &line[colon + 1..];
            let value = if lines.peek().is_some_and(folded) {
                let mut value = first.to_vec();
                while let Some(next) = lines.next_if(folded) {
                    value.extend_from_slice(next);
                }
                Cow::Owned(String::from_utf8_lossy(&value).trim().to_owned())
            } else {
                match String::from_utf8_lossy(first) {
                    Cow::Borrowed(v) => Cow::Borrowed(v.trim()),
                    Cow::Owned(v) => Cow::Owned(v.trim().to_owned()),
                }
            };
            if slot.is_none() {
                *slot = Some(value);
            }
        }
        f
    }
}

/// The lines of `bytes` split at each LF, as `bytes.split(|b| *b == b'\n')` gives them (a
/// last, empty one after a final LF), found with the memchr crate's search instead of a
/// comparison per byte.
fn lines(bytes: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut rest = Some(bytes);
    std::iter::from_fn(move || {
        let r = rest?;
        match memchr::memchr(b'\n', r) {
            Some(i) => {
                rest = Some(&r[i + 1..]);
                Some(&r[..i])
            }
            None => {
                rest = None;
                Some(r)
            }
        }
    })
}

/// `type/subtype; name=value; name="quoted; value"` as the lower-case type (white space
/// removed) and its parameters (names as written: compare them ignoring ASCII case; values
/// trimmed, quotes removed). Comments and RFC 2231 continuations are not followed: a boundary
/// or charset written that way is rare, and then the digest just reads less.
///
/// The pieces between unquoted `;` are found on the bytes (`"`, `\` and `;` are ASCII, so a
/// multi-byte character never looks like one) and borrowed; only a piece with quotes or
/// escapes, or a type not already lower case without white space, is copied.
#[allow(clippy::type_complexity)]
fn split_type(value: &str) -> (Cow<'_, str>, Vec<(Cow<'_, str>, Cow<'_, str>)>) {
    let mut pieces: Vec<Cow<'_, str>> = Vec::new();
    let (mut start, mut quoted, mut escaped, mut plain) = (0, false, false, true);
    for (i, b) in value.bytes().enumerate() {
        if escaped {
            escaped = false;
            continue;
        }
        match b {
            b'\\' if quoted => {
                escaped = true;
                plain = false;
            }
            b'"' => {
                quoted = !quoted;
                plain = false;
            }
            b';' if !quoted => {
                pieces.push(unquoted(&value[start..i], plain));
                start = i + 1;
                plain = true;
            }
            _ => {}
        }
    }
    pieces.push(unquoted(&value[start..], plain));
    let mut it = pieces.into_iter();
    let kind = match it.next() {
        Some(Cow::Borrowed(k))
            if !k
                .chars()
                .any(|c| c.is_whitespace() || c.is_ascii_uppercase()) =>
        {
            Cow::Borrowed(k)
        }
        Some(k) => Cow::Owned(
            k.chars()
                .filter(|c| !c.is_whitespace())
                .map(|c| c.to_ascii_lowercase())
                .collect(),
        ),
        None => Cow::Borrowed(""),
    };
    let params = it
        .filter_map(|p| match p {
            Cow::Borrowed(p) => {
                let (k, v) = p.split_once('=')?;
                Some((Cow::Borrowed(k.trim()), Cow::Borrowed(v.trim())))
            }
            Cow::Owned(p) => {
                let (k, v) = p.split_once('=')?;
                Some((
                    Cow::Owned(k.trim().to_owned()),
                    Cow::Owned(v.trim().to_owned()),
                ))
            }
        })
        .collect();
    (kind, params)
}

/// One piece of a Content-Type value without its quotes and escapes (a piece always begins
/// outside quotes: it starts after an unquoted `;`).
fn unquoted(piece: &str, plain: bool) -> Cow<'_, str> {
    if plain {
        return Cow::Borrowed(piece);
    }
    let mut out = String::with_capacity(piece.len());
    let (mut quoted, mut escaped) = (false, false);
    for c in piece.chars() {
        match c {
            _ if escaped => {
                out.push(c);
                escaped = false;
            }
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            _ => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// Header block and body, split at the first empty line (`None` when there is none).
fn split_at_body(whole: &[u8]) -> Option<(&[u8], &[u8])> {
    let mut pos = 0;
    while pos < whole.len() {
        let end = memchr::memchr(b'\n', &whole[pos..]).map_or(whole.len(), |i| pos + i + 1);
        let line = &whole[pos..end];
        if line == b"\n" || line == b"\r\n" {
            return Some((&whole[..pos], &whole[end..]));
        }
        pos = end;
    }
    None
}

/// The text with LF line ends, each line's trailing white space and the trailing empty lines
/// removed, hashed. Built in one buffer and hashed at once: two hash updates per line cost
/// more than the hashing itself on short lines.
fn normalised_text(h: &mut Sha256, text: &str) {
    let mut out = Vec::with_capacity(text.len() + 1);
    let mut empty_run = 0usize;
    let mut start = 0;
    // Split at each LF byte (always a character boundary in UTF-8), as `str::split('\n')`
    // would, with the memchr crate's search.
    let ends = memchr::memchr_iter(b'\n', text.as_bytes()).chain(std::iter::once(text.len()));
    for end in ends {
        let line = text.get(start..end).unwrap_or_default().trim_end();
        start = end + 1;
        if line.is_empty() {
            empty_run += 1;
            continue;
        }
        out.resize(out.len() + empty_run, b'\n');
        empty_run = 0;
        out.extend_from_slice(line.as_bytes());
        out.push(b'\n');
    }
    h.update(&out);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The same text parts read through mail-parser, the reference for the walk above.
    fn by_mail_parser(whole: &[u8]) -> Option<[u8; 32]> {
        use mail_parser::{MessageParser, PartType};
        let msg = MessageParser::new().parse(whole)?;
        let mut h = Sha256::new();
        for part in &msg.parts {
            if let PartType::Text(t) | PartType::Html(t) = &part.body {
                h.update(b"t\0");
                normalised_text(&mut h, t);
            }
        }
        Some(h.finalize().into())
    }

    /// The repository's sample messages (not the fuzz corpus: mostly broken on purpose).
    fn real_messages() -> Vec<(String, Vec<u8>)> {
        crate::inspect::mime::tests::repo_files(&[
            "tests/rewrite",
            "tests/corpus",
            "tests/enforce",
            "benches/data",
        ])
        .into_iter()
        .filter(|(p, _)| p.extension().is_some_and(|x| x == "eml"))
        .map(|(p, b)| (p.display().to_string(), b))
        .collect()
    }

    #[test]
    fn the_walk_reads_the_text_parts_mail_parser_reads() {
        let mut agree = 0;
        let mut disagree = Vec::new();
        for (name, m) in real_messages() {
            let Some(reference) = by_mail_parser(&m) else {
                continue;
            };
            if reference == text_digest(&m) {
                agree += 1;
            } else {
                disagree.push(name);
            }
        }
        // Every sample message reads the same both ways. (The decoders are the pipeline's own,
        // not mail-parser's, so broken MIME may be read differently; every copy of such a
        // message still gets the same digest, which is all the ledger needs.)
        assert!(
            agree >= 150 && disagree.is_empty(),
            "{agree} agree; {} disagree: {disagree:?}",
            disagree.len()
        );
    }

    #[test]
    fn reencoding_and_line_ends_do_not_change_it() {
        let a = b"Subject: x\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\nCaf\xc3\xa9 r\xc3\xa9sum\xc3\xa9  \r\nline two\r\n\r\n\r\n";
        let b = b"Subject: x\nContent-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: quoted-printable\n\nCaf=C3=A9 r=C3=A9sum=C3=A9\nline two\n";
        assert_eq!(text_digest(a), text_digest(b));
        let c = b"Subject: x\n\nsomething else\n";
        assert_ne!(text_digest(a), text_digest(c));
        let empty_lines_inside = b"Subject: x\n\na\n\n\nb\n";
        let fewer = b"Subject: x\n\na\n\nb\n";
        assert_ne!(text_digest(empty_lines_inside), text_digest(fewer));
    }

    #[test]
    fn attachments_are_not_read_and_text_parts_are() {
        let with = |attachment: &str, text: &str| {
            format!(
                "Subject: x\r\nContent-Type: multipart/mixed; boundary=\"b;1\"\r\n\r\npreamble\r\n\
                 --b;1\r\nContent-Type: text/plain\r\n\r\n{text}\r\n\
                 --b;1\r\nContent-Type: application/pdf\r\nContent-Transfer-Encoding: base64\r\n\r\n{attachment}\r\n\
                 --b;1--\r\nepilogue\r\n"
            )
        };
        let one = with("JVBERi0xLjQK", "The report.");
        let other = with("AAAAAAAA", "The report.");
        assert_eq!(text_digest(one.as_bytes()), text_digest(other.as_bytes()));
        let changed = with("JVBERi0xLjQK", "Another report.");
        assert_ne!(text_digest(one.as_bytes()), text_digest(changed.as_bytes()));
        // The same text as a single part: the part's own text, nothing of the structure.
        let single = "Subject: y\n\nThe report.\n";
        assert_eq!(text_digest(one.as_bytes()), text_digest(single.as_bytes()));
    }

    #[test]
    fn nesting_is_bounded_and_odd_input_is_digested() {
        let nested = |levels: usize| {
            let mut m = String::new();
            for i in 0..levels {
                m.push_str(&format!(
                    "Content-Type: multipart/mixed; boundary=b{i}\n\n--b{i}\n"
                ));
            }
            m.push_str("Content-Type: text/plain\n\ndeep\n");
            m
        };
        let no_text: [u8; 32] = Sha256::digest(b"").into();
        // Within the bound the innermost text is read; past it nothing is.
        assert_eq!(
            text_digest(nested(5).as_bytes()),
            text_digest(b"Subject: y\n\ndeep\n")
        );
        assert_eq!(text_digest(nested(100).as_bytes()), no_text);
        // A multipart without a boundary, or without parts, has no text.
        assert_eq!(text_digest(b"Content-Type: multipart/x\n\n--\n"), no_text);
        // No header end: all header, an empty text/plain body.
        assert_eq!(text_digest(b"no header end"), text_digest(b""));
        assert_eq!(text_digest(b"\n"), text_digest(b"Subject: z\n\n"));
    }

    /// The buffered normalisation hashes exactly the bytes the line-by-line one did (the
    /// digests already in ledgers must still match).
    #[test]
    fn one_buffer_hashes_what_line_by_line_hashed() {
        fn per_line(text: &str) -> [u8; 32] {
            let mut h = Sha256::new();
            let mut empty_run = 0usize;
            for line in text.split('\n') {
                let line = line.trim_end();
                if line.is_empty() {
                    empty_run += 1;
                    continue;
                }
                for _ in 0..empty_run {
                    h.update(b"\n");
                }
                empty_run = 0;
                h.update(line.as_bytes());
                h.update(b"\n");
            }
            h.finalize().into()
        }
        let texts = [
            "",
            "\n",
            "\n\n\n",
            "one",
            "one\n",
            "one  \r\ntwo\t\r\n\r\n\r\n",
            "\n\nlead\n\n\ngap\n \n",
            "ide\u{3000}\nwide space\u{2003}\n\u{a0}\ntail\u{85}",
            "Caf\u{e9} r\u{e9}sum\u{e9}\r\n\u{1f600}\n",
        ];
        for t in texts {
            let mut h = Sha256::new();
            normalised_text(&mut h, t);
            let buffered: [u8; 32] = h.finalize().into();
            assert_eq!(buffered, per_line(t), "{t:?}");
        }
    }

    /// The first piece as the lower-case type (white space removed), the others as lower-case
    /// names and trimmed values (a piece with no `=` is not a parameter).
    fn type_and_params<S: AsRef<str>>(
        pieces: impl IntoIterator<Item = S>,
    ) -> (String, Vec<(String, String)>) {
        let mut it = pieces.into_iter();
        let kind: String = it.next().map_or_else(String::new, |k| {
            k.as_ref()
                .chars()
                .filter(|c| !c.is_whitespace())
                .map(|c| c.to_ascii_lowercase())
                .collect()
        });
        let params = it
            .filter_map(|p| {
                let (k, v) = p.as_ref().split_once('=')?;
                Some((k.trim().to_ascii_lowercase(), v.trim().to_owned()))
            })
            .collect();
        (kind, params)
    }

    /// The split into pieces as it was before it borrowed them: one pass over the characters,
    /// quotes and escapes taken out as it goes (the digest of a stored entry must not change).
    fn split_type_before(value: &str) -> (String, Vec<(String, String)>) {
        let mut pieces = Vec::new();
        let (mut cur, mut quoted, mut escaped) = (String::new(), false, false);
        for c in value.chars() {
            match c {
                _ if escaped => {
                    cur.push(c);
                    escaped = false;
                }
                '\\' if quoted => escaped = true,
                '"' => quoted = !quoted,
                ';' if !quoted => pieces.push(std::mem::take(&mut cur)),
                _ => cur.push(c),
            }
        }
        pieces.push(cur);
        type_and_params(pieces)
    }

    /// The split as the old one gave it: owned, parameter names lower-cased.
    #[allow(clippy::type_complexity)]
    fn owned(
        (kind, params): (Cow<'_, str>, Vec<(Cow<'_, str>, Cow<'_, str>)>),
    ) -> (String, Vec<(String, String)>) {
        let params = params
            .into_iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v.into_owned()))
            .collect();
        (kind.into_owned(), params)
    }

    #[test]
    fn content_type_split_gives_what_it_gave() {
        let alphabet = [
            "text/plain",
            "Multipart/Mixed",
            ";",
            "=",
            "\"",
            "\\",
            " ",
            "\t",
            "\r\n ",
            "charset",
            "boundary",
            "é",
            "x",
            "; name=\"a;b\"",
            "\\\"",
        ];
        let pieces: Vec<&[u8]> = alphabet.iter().map(|p| p.as_bytes()).collect();
        let mut state = 0x2545_f491_4f6c_dd1du64;
        for value in crate::inspect::generated::values(&pieces, 12, 20_000, &mut state) {
            // Whole pieces of UTF-8: UTF-8.
            let value = String::from_utf8(value).expect("utf-8");
            assert_eq!(
                owned(split_type(&value)),
                split_type_before(&value),
                "{value:?}"
            );
        }
        for value in [
            "text/plain; charset=\"utf-8\"",
            "multipart/alternative;\r\n\tboundary=\"=_abc;def\"",
            "text/html; charset=iso-8859-1; format=flowed",
            "",
        ] {
            assert_eq!(
                owned(split_type(value)),
                split_type_before(value),
                "{value:?}"
            );
        }
    }

    #[test]
    fn lines_are_what_split_gives() {
        for t in [&b""[..], b"\n", b"a", b"a\n", b"a\nb", b"\n\na\r\n\nb\n\n"] {
            let want: Vec<&[u8]> = t.split(|b| *b == b'\n').collect();
            assert_eq!(lines(t).collect::<Vec<_>>(), want, "{t:?}");
        }
    }
}
