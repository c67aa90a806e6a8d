//! Thread keys: what ties a message to the messages it answers or repeats.
//!
//! Reads the Message-ID, the ids a reply points at (`In-Reply-To`, `References`, Exchange's
//! `x-ms-exchange-parent-message-id`), Exchange's `Thread-Index` (whose ancestors are the
//! index with its 5-byte child blocks taken off), a normalised subject (reply and forward
//! prefixes dropped, case and white space folded) and a SHA-256 digest of the decoded message
//! text. The filter looks these up in the ledger (`crate::ledger`); the body text itself never
//! leaves this module, only its digest.
//!
//! Must not: do I/O, log, or decide anything. Every parser here is total on arbitrary bytes
//! (fuzzed by `fuzz/fuzz_targets/thread_refs.rs`).

use base64::Engine as _;

/// At most this many referenced ids are kept (the most recent, i.e. the last of `References`):
/// a hostile header with thousands of ids must not cost thousands of lookups.
pub const MAX_REFERENCES: usize = 32;
/// Longest Message-ID kept, in bytes (RFC 5322 sets no limit; real ones are < 250).
pub const MAX_ID_LEN: usize = 250;
/// An Exchange Thread-Index is a 22-byte header and one 5-byte block per reply.
const THREAD_INDEX_ROOT: usize = 22;
const THREAD_INDEX_BLOCK: usize = 5;
/// Longest decoded Thread-Index accepted (a thread of ~200 replies).
const MAX_THREAD_INDEX: usize = 1024;

/// Everything the ledger needs to know about one message.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ThreadKeys {
    /// The message's own Message-ID, without angle brackets.
    pub message_id: Option<String>,
    /// Ids the message answers, each with the header it came from, nearest first
    /// (`In-Reply-To`, then `x-ms-exchange-parent-message-id`, then `References` newest first).
    pub references: Vec<(String, &'static str)>,
    /// The message's own Thread-Index (decoded bytes), when present and well formed.
    pub thread_index: Option<Vec<u8>>,
    /// The subject with reply/forward prefixes removed, lower case, white space folded.
    pub subject: String,
    /// SHA-256 of the decoded message text (see [`text_digest`]); `None` when the message
    /// could not be read whole.
    pub digest: Option<[u8; 32]>,
}

impl ThreadKeys {
    /// The Thread-Index values of this message's ancestors, nearest first.
    pub fn parent_indexes(&self) -> Vec<Vec<u8>> {
        self.thread_index
            .as_deref()
            .map(parent_indexes)
            .unwrap_or_default()
    }
}

/// Read the keys from the header fields (name, raw value) and the whole message (for the text
/// digest; `None` when it could not be read: then there is no digest).
pub fn keys(headers: &[(&[u8], &[u8])], whole: Option<&[u8]>) -> ThreadKeys {
    let mut k = ThreadKeys::default();
    // The first field of each name, found in one pass over the header (not one per name).
    const NAMES: [&str; 6] = [
        "Message-ID",
        "In-Reply-To",
        "x-ms-exchange-parent-message-id",
        "References",
        "Thread-Index",
        "Subject",
    ];
    let mut first: [Option<&[u8]>; 6] = [None; 6];
    for (n, v) in headers {
        if let Some(i) = NAMES
            .iter()
            .position(|name| n.eq_ignore_ascii_case(name.as_bytes()))
            && first[i].is_none()
        {
            first[i] = Some(*v);
        }
    }
    let value = |name: &str| NAMES.iter().position(|n| *n == name).and_then(|i| first[i]);
    k.message_id = value("Message-ID").and_then(|v| message_ids(v).into_iter().next());
    let mut refs: Vec<(String, &'static str)> = Vec::new();
    let mut push = |id: String, from: &'static str| {
        if refs.len() < MAX_REFERENCES && !refs.iter().any(|(r, _)| *r == id) {
            refs.push((id, from));
        }
    };
    if let Some(v) = value("In-Reply-To") {
        for id in message_ids(v) {
            push(id, "In-Reply-To");
        }
    }
    if let Some(v) = value("x-ms-exchange-parent-message-id") {
        for id in message_ids(v) {
            push(id, "x-ms-exchange-parent-message-id");
        }
    }
    if let Some(v) = value("References") {
        for id in message_ids(v).into_iter().rev() {
            push(id, "References");
        }
    }
    k.references = refs;
    k.thread_index = value("Thread-Index").and_then(thread_index);
    k.subject = value("Subject")
        .map(|s| normalise_subject(&super::markings::decode_subject(s)))
        .unwrap_or_default();
    k.digest = whole.map(text_digest);
    k
}

/// The message ids in a `Message-ID`, `In-Reply-To` or `References` value, in order, without
/// brackets. Comments (`(…)`, nested, with `\` escapes) are skipped; an id is the text between
/// `<` and `>` with white space removed (folding may split one). A value with no brackets at
/// all (some clients send a bare id) gives its single word, when it looks like an id (`@`).
pub fn message_ids(value: &[u8]) -> Vec<String> {
    if memchr::memchr(b'(', value).is_none() {
        return without_comments(value);
    }
    let mut out: Vec<String> = Vec::new();
    let mut i = 0;
    let mut depth = 0usize;
    // Where the id being read starts (just after its `<`).
    let mut current: Option<usize> = None;
    let mut saw_bracket = false;
    while i < value.len() {
        let b = value[i];
        if depth > 0 {
            match b {
                b'\\' => i += 1,
                b'(' => depth += 1,
                b')' => depth -= 1,
                _ => {}
            }
            i += 1;
            continue;
        }
        match (b, current) {
            (b'(', None) => depth = 1,
            (b'<', _) => {
                saw_bracket = true;
                current = Some(i + 1);
            }
            (b'>', Some(start)) => {
                current = None;
                if let Some(s) = bracketed_id(&value[start..i])
                    && !out.contains(&s)
                {
                    out.push(s);
                }
            }
            _ => {}
        }
        i += 1;
        if out.len() >= MAX_REFERENCES * 8 {
            break;
        }
    }
    if !saw_bracket && let Some(s) = bare_id(value) {
        out.push(s);
    }
    out
}

/// [`message_ids`] of a value with no `(`, so no comment (the usual Message-ID): each id runs
/// from the last `<` before a `>` to that `>`, found with the memchr crate's searches instead
/// of a step per byte.
fn without_comments(value: &[u8]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut pos = 0;
    while let Some(gt) = memchr::memchr(b'>', &value[pos..]).map(|i| pos + i) {
        if let Some(lt) = memchr::memrchr(b'<', &value[pos..gt]).map(|i| pos + i)
            && let Some(s) = bracketed_id(&value[lt + 1..gt])
            && !out.contains(&s)
        {
            out.push(s);
            if out.len() >= MAX_REFERENCES * 8 {
                return out;
            }
        }
        pos = gt + 1;
    }
    if memchr::memchr(b'<', value).is_none()
        && let Some(s) = bare_id(value)
    {
        out.push(s);
    }
    out
}

/// A value with no brackets at all: its single word, when it looks like an id (`@`).
fn bare_id(value: &[u8]) -> Option<String> {
    let mut words = value
        .split(|b| b.is_ascii_whitespace())
        .filter(|w| !w.is_empty());
    let word = words.next()?;
    if words.next().is_some() || !word.contains(&b'@') {
        return None;
    }
    clean_id(word)
}

/// The id between `<` and `>`: its bytes without the white space folding may have put in
/// (taken as they are, without a copy, when there is none), checked by [`clean_id`].
fn bracketed_id(raw: &[u8]) -> Option<String> {
    let folding = |b: &u8| matches!(b, b' ' | b'\t' | b'\r' | b'\n');
    if !raw.iter().any(folding) {
        return clean_id(raw);
    }
    let id: Vec<u8> = raw.iter().copied().filter(|b| !folding(b)).collect();
    clean_id(&id)
}

/// An id's bytes as text, or `None` when empty, too long, or not printable ASCII.
fn clean_id(id: &[u8]) -> Option<String> {
    if id.is_empty()
        || id.len() > MAX_ID_LEN
        || !id
            .iter()
            .all(|b| b.is_ascii_graphic() && !matches!(b, b'<' | b'>' | b'(' | b')'))
    {
        return None;
    }
    std::str::from_utf8(id).ok().map(str::to_owned)
}

/// An Exchange `Thread-Index` value decoded (base64, white space ignored), when it is at least
/// the 22-byte root and a whole number of 5-byte blocks beyond it.
pub fn thread_index(value: &[u8]) -> Option<Vec<u8>> {
    let compact: Vec<u8> = value
        .iter()
        .copied()
        .filter(|b| !b.is_ascii_whitespace())
        .collect();
    if compact.is_empty() || compact.len() > MAX_THREAD_INDEX * 4 / 3 + 4 {
        return None;
    }
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(&compact)
        .ok()?;
    (bytes.len() >= THREAD_INDEX_ROOT
        && (bytes.len() - THREAD_INDEX_ROOT).is_multiple_of(THREAD_INDEX_BLOCK))
    .then_some(bytes)
}

/// A Thread-Index's ancestors: the index with its last 5-byte block taken off, then the next,
/// down to the 22-byte root (which starts the conversation), nearest first.
pub fn parent_indexes(index: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut len = index.len();
    while len >= THREAD_INDEX_ROOT + THREAD_INDEX_BLOCK && out.len() < MAX_REFERENCES {
        len -= THREAD_INDEX_BLOCK;
        out.push(index[..len].to_vec());
    }
    out
}

/// Reply and forward prefixes mail clients put before a subject, in several languages
/// (compared case-insensitively, followed by `:`; `[n]` or `(n)` counters are allowed).
const PREFIXES: &[&str] = &[
    "re", "fw", "fwd", "aw", "wg", "sv", "vs", "tr", "rv", "enc", "antw", "doorst",
];

/// The subject as the ledger compares it: reply/forward prefixes removed (repeatedly), lower
/// case, runs of white space folded to one space, trimmed. Idempotent.
pub fn normalise_subject(subject: &str) -> String {
    let mut folded = if subject.is_ascii() {
        // One pass and one string for the usual ASCII subject: the same result as below.
        let mut f = String::with_capacity(subject.len());
        for word in subject.split_whitespace() {
            if !f.is_empty() {
                f.push(' ');
            }
            f.push_str(word);
        }
        f.make_ascii_lowercase();
        f
    } else {
        subject
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
            .to_lowercase()
    };
    let mut s = folded.as_str();
    loop {
        let before = s;
        for p in PREFIXES {
            if let Some(rest) = strip_prefix_ci(s, p) {
                s = rest.trim_start();
                break;
            }
        }
        if s == before {
            break;
        }
    }
    // `s` is a tail of `folded`: cut `folded` down to it, trimmed, instead of copying it.
    let start = folded.len() - s.trim_start().len();
    let end = start + s.trim().len();
    folded.truncate(end);
    folded.drain(..start);
    folded
}

/// `rest` after `prefix` (already lower case), an optional `[n]`/`(n)` counter and a colon.
fn strip_prefix_ci<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let rest = s.strip_prefix(prefix)?;
    let rest = rest.trim_start();
    let rest = match rest.chars().next() {
        Some(open @ ('[' | '(')) => {
            let close = if open == '[' { ']' } else { ')' };
            let end = rest.find(close)?;
            if !rest[1..end].chars().all(|c| c.is_ascii_digit()) {
                return None;
            }
            rest[end + 1..].trim_start()
        }
        _ => rest,
    };
    rest.strip_prefix(':').or_else(|| rest.strip_prefix('：'))
}

pub use super::digest::text_digest;

/// Lower-case hex, for keys and display. Written into a buffer of its final size by index:
/// pushing byte by byte checked the capacity twice a byte (a thousand instructions for a
/// digest, twice a message).
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = vec![0u8; bytes.len() * 2];
    for (pair, &b) in s.chunks_exact_mut(2).zip(bytes) {
        pair[0] = DIGITS[usize::from(b >> 4)];
        pair[1] = DIGITS[usize::from(b & 15)];
    }
    String::from_utf8(s).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_with_comments_folding_and_duplicates() {
        assert_eq!(
            message_ids(b"<a@x> (comment <not@id>)\r\n <b\r\n @y> <a@x>"),
            vec!["a@x".to_owned(), "b@y".to_owned()]
        );
        assert_eq!(message_ids(b"bare@id.example"), vec!["bare@id.example"]);
        assert!(message_ids(b"no id here").is_empty());
        assert!(message_ids(b"<>").is_empty());
        assert!(message_ids(b"<unterminated@x").is_empty());
    }

    #[test]
    fn references_are_nearest_first_and_bounded() {
        let mut refs = String::new();
        for i in 0..100 {
            refs.push_str(&format!("<m{i}@x> "));
        }
        let k = keys(
            &[
                (b"In-Reply-To", b"<m99@x>"),
                (b"References", refs.as_bytes()),
            ],
            None,
        );
        assert_eq!(k.references.len(), MAX_REFERENCES);
        assert_eq!(k.references[0], ("m99@x".to_owned(), "In-Reply-To"));
        assert_eq!(k.references[1], ("m98@x".to_owned(), "References"));
    }

    #[test]
    fn thread_index_ancestors() {
        let root = [7u8; 22];
        let mut child = root.to_vec();
        child.extend_from_slice(&[1, 2, 3, 4, 5]);
        child.extend_from_slice(&[6, 7, 8, 9, 10]);
        let b64 = base64::engine::general_purpose::STANDARD.encode(&child);
        let decoded = thread_index(b64.as_bytes()).expect("valid");
        assert_eq!(decoded, child);
        assert_eq!(
            parent_indexes(&decoded),
            vec![child[..27].to_vec(), root.to_vec()]
        );
        assert!(thread_index(b"AAAA").is_none());
        assert!(thread_index(b"%%%").is_none());
    }

    #[test]
    fn subjects_fold_prefixes_case_and_space() {
        assert_eq!(
            normalise_subject("RE: Fwd:  RESTRICTED:   Budget\t2027"),
            "restricted: budget 2027"
        );
        assert_eq!(normalise_subject("AW[2]: Sv: tr: x"), "x");
        assert_eq!(normalise_subject("Re (3): x"), "x");
        assert_eq!(normalise_subject("Rename"), "rename");
        let once = normalise_subject(" FW: re:  a ");
        assert_eq!(normalise_subject(&once), once);
    }

    /// The versions before the allocation cuts, kept to check the new ones give the same.
    fn message_ids_before(value: &[u8]) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        let mut i = 0;
        let mut depth = 0usize;
        let mut current: Option<Vec<u8>> = None;
        let mut saw_bracket = false;
        while i < value.len() {
            let b = value[i];
            if depth > 0 {
                match b {
                    b'\\' => i += 1,
                    b'(' => depth += 1,
                    b')' => depth -= 1,
                    _ => {}
                }
                i += 1;
                continue;
            }
            match (b, current.as_mut()) {
                (b'(', None) => depth = 1,
                (b'<', _) => {
                    saw_bracket = true;
                    current = Some(Vec::new());
                }
                (b'>', Some(id)) => {
                    let id = std::mem::take(id);
                    current = None;
                    if let Some(s) = clean_id(&id)
                        && !out.contains(&s)
                    {
                        out.push(s);
                    }
                }
                (b' ' | b'\t' | b'\r' | b'\n', Some(_)) => {}
                (_, Some(id)) if id.len() <= MAX_ID_LEN => id.push(b),
                _ => {}
            }
            i += 1;
            if out.len() >= MAX_REFERENCES * 8 {
                break;
            }
        }
        // The bare-id fallback did not change: the oracle shares it.
        if !saw_bracket && let Some(s) = bare_id(value) {
            out.push(s);
        }
        out
    }

    fn normalise_subject_before(subject: &str) -> String {
        let folded: String = subject
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
            .to_lowercase();
        let mut s = folded.as_str();
        loop {
            let before = s;
            for p in PREFIXES {
                if let Some(rest) = strip_prefix_ci(s, p) {
                    s = rest.trim_start();
                    break;
                }
            }
            if s == before {
                break;
            }
        }
        s.trim().to_owned()
    }

    #[test]
    fn the_cheaper_parsers_give_what_the_old_ones_gave() {
        let long = format!("<{}@x>", "a".repeat(MAX_ID_LEN));
        let longest = format!("<{}@x>", "a".repeat(MAX_ID_LEN - 2));
        let folded_long = format!("<{} {}@x>", "a".repeat(200), "b".repeat(48));
        let mut inputs: Vec<Vec<u8>> = [
            "",
            "<a@x>",
            "<a@x> (comment <not@id>)\r\n <b\r\n @y> <a@x>",
            "bare@id.example",
            "<a@x <b@y> c@z>",
            "<a(b)@x> <(c)> ((nested) <n@x>) <d@x>",
            "(\\) <e@x>) <f@x>",
            "<g\t@x\r\n> <>",
            "<h@x",
            "\u{e9}<\u{e9}@x> <i@x>",
            "  RE: Fwd:  RESTRICTED:   Budget\t2027 ",
            "AW[2]: Sv: tr: x",
            "Re (3): x",
            "Re\u{0b}: vertical\u{0b}tab\u{0c}",
            "RE:\u{a0}non-breaking \u{3000} ideographic ΣΟΦΟΣ",
            "re: re: re:",
            "：full-width colon",
        ]
        .iter()
        .map(|s| s.as_bytes().to_vec())
        .collect();
        inputs.extend([long, longest, folded_long].map(String::into_bytes));
        let corpus =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/thread_refs");
        for e in std::fs::read_dir(corpus).into_iter().flatten().flatten() {
            inputs.extend(std::fs::read(e.path()));
        }
        // Values made of the pieces ids are parsed by, at random (a fixed seed).
        let pieces: [&[u8]; 12] = [
            b"<", b">", b"(", b")", b"\\", b" ", b"\r\n ", b"a", b"@", b"x.y", b"<a@b>", b"\t",
        ];
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        inputs.extend(crate::inspect::generated::values(
            &pieces, 10, 20_000, &mut state,
        ));
        // Subjects made of prefixes, case, every kind of ASCII white space and a few that are
        // not white space (0x1c, 0x85 as a byte): the ASCII path against the general one.
        let subject_pieces: [&[u8]; 12] = [
            b"Re:",
            b"FW",
            b"[2]",
            b":",
            b" ",
            b"\t",
            b"\x0b",
            b"\x0c",
            b"\r\n",
            b"\x1c",
            b"Ab",
            b"\xc2\x85",
        ];
        inputs.extend(crate::inspect::generated::values(
            &subject_pieces,
            12,
            20_000,
            &mut state,
        ));
        for input in &inputs {
            assert_eq!(message_ids(input), message_ids_before(input), "{input:?}");
            let text = String::from_utf8_lossy(input);
            assert_eq!(
                normalise_subject(&text),
                normalise_subject_before(&text),
                "{text:?}"
            );
        }
    }
}
