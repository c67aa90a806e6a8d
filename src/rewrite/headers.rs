//! Header operations in milter terms, planned over the header list as the MTA delivered it and
//! applied to a raw header block with Postfix's index rules.
//!
//! Index rules (from `shared/reference/milter-protocol.md` §7.3, observed on Postfix 3.7):
//! - CHGHEADER (`m`): the index is 1-based among headers of that name, compared
//!   case-insensitively; 0 is treated as 1; an empty value deletes; an index past the last
//!   header of that name appends (a delete of a missing header does nothing). Postfix's own
//!   `Received:` is not counted.
//! - INSHEADER (`i`): the index is 0-based over all headers, where Postfix's own `Received:`
//!   (which the milter never saw) is position 0; past the end appends.
//! - Edits apply in the order sent, each against the result of the previous ones. The planner
//!   therefore deletes duplicates from the highest index down, which is also correct for an MTA
//!   that resolves every index against the original list.
//!
//! Values use bare LF + whitespace for folding (a CR would leak into the queue file) and never
//! carry the leading space after the colon. Everything markgate generates is ASCII: non-ASCII
//! text is RFC 2047-encoded by [`encode_unstructured`].

use std::ops::Range;

/// One header modification, in the order it must be sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderOp {
    /// SMFIR_ADDHEADER: append after the last header.
    Add { name: String, value: Vec<u8> },
    /// SMFIR_INSHEADER: insert at a 0-based position over all headers (Postfix's own Received
    /// is position 0).
    Insert {
        index: u32,
        name: String,
        value: Vec<u8>,
    },
    /// SMFIR_CHGHEADER: replace the `index`-th (1-based) header called `name`.
    Change {
        index: u32,
        name: String,
        value: Vec<u8>,
    },
    /// SMFIR_CHGHEADER with an empty value: delete the `index`-th (1-based) header `name`.
    Delete { index: u32, name: String },
}

impl HeaderOp {
    /// The header name the operation concerns.
    pub fn name(&self) -> &str {
        match self {
            HeaderOp::Add { name, .. }
            | HeaderOp::Insert { name, .. }
            | HeaderOp::Change { name, .. }
            | HeaderOp::Delete { name, .. } => name,
        }
    }
}

/// The header list as the milter delivered it: names and values as bytes, values folded with
/// LF and without the leading space.
#[derive(Debug, Clone, Default)]
pub struct HeaderList<'a> {
    fields: Vec<(&'a [u8], &'a [u8])>,
}

impl<'a> HeaderList<'a> {
    /// Borrow a delivered header list.
    pub fn new<N: AsRef<[u8]>, V: AsRef<[u8]>>(fields: &'a [(N, V)]) -> Self {
        HeaderList {
            fields: fields
                .iter()
                .map(|(n, v)| (n.as_ref(), v.as_ref()))
                .collect(),
        }
    }

    /// Values of every header called `name`, in order (their 1-based index is position + 1).
    pub fn values(&self, name: &str) -> Vec<&'a [u8]> {
        self.fields
            .iter()
            .filter(|(n, _)| trim_name(n).eq_ignore_ascii_case(name.as_bytes()))
            .map(|(_, v)| *v)
            .collect()
    }

    /// The first value of `name`.
    pub fn first(&self, name: &str) -> Option<&'a [u8]> {
        self.values(name).into_iter().next()
    }
}

fn trim_name(n: &[u8]) -> &[u8] {
    let mut end = n.len();
    while end > 0 && matches!(n[end - 1], b' ' | b'\t') {
        end -= 1;
    }
    &n[..end]
}

/// Assemble a raw message from a delivered header list and body, the way the MTA holds it:
/// `Name: value` lines (LF folds become CRLF), an empty line, the body as given. This is the
/// `raw` that `inspect::mime::analyze`, `plan` and `apply` take; [`headers_from_raw`] is its
/// inverse.
pub fn assemble_raw<N: AsRef<[u8]>, V: AsRef<[u8]>>(headers: &[(N, V)], body: &[u8]) -> Vec<u8> {
    let head_len: usize = headers
        .iter()
        .map(|(n, v)| n.as_ref().len() + v.as_ref().len() + 8)
        .sum();
    let mut out = Vec::with_capacity(head_len + 2 + body.len());
    for (n, v) in headers {
        out.extend_from_slice(n.as_ref());
        out.extend_from_slice(b": ");
        let v = v.as_ref();
        let mut i = 0;
        while i < v.len() {
            match v[i] {
                b'\r' if v.get(i + 1) == Some(&b'\n') => {}
                b'\n' => out.extend_from_slice(b"\r\n"),
                b => out.push(b),
            }
            i += 1;
        }
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body);
    out
}

/// Header list of a raw message, as a milter would deliver it: the single space after the colon
/// removed, CRLF folds turned into LF folds, the final line end dropped.
pub fn headers_from_raw(raw: &[u8], body_offset: usize) -> Vec<(Vec<u8>, Vec<u8>)> {
    let block = raw.get(..body_offset).unwrap_or(raw);
    split_fields(block)
        .into_iter()
        .filter_map(|f| {
            let bytes = &block[f.range.clone()];
            let colon = f.colon?;
            let name = trim_name(&bytes[..colon]).to_vec();
            let mut value = &bytes[colon + 1..];
            if let Some(v) = value
                .strip_suffix(b"\r\n")
                .or_else(|| value.strip_suffix(b"\n"))
            {
                value = v;
            }
            if let Some(v) = value.strip_prefix(b" ") {
                value = v;
            }
            let mut out = Vec::with_capacity(value.len());
            let mut i = 0;
            while i < value.len() {
                if value[i] == b'\r' && value.get(i + 1) == Some(&b'\n') {
                    i += 1;
                    continue;
                }
                out.push(value[i]);
                i += 1;
            }
            Some((name, out))
        })
        .collect()
}

/// One field of a raw header block: its bytes (with folding and final line end) and where its
/// colon is (`None` for a line that is not a header, kept verbatim).
#[derive(Debug, Clone)]
pub(crate) struct RawField {
    pub range: Range<usize>,
    pub colon: Option<usize>,
    /// True for the empty line that ends the block.
    pub is_separator: bool,
}

impl RawField {
    pub fn name<'b>(&self, block: &'b [u8]) -> Option<&'b [u8]> {
        self.colon
            .map(|c| trim_name(&block[self.range.start..self.range.start + c]))
    }
}

/// Split a header block into fields. Continuation lines (starting with SP/TAB) belong to the
/// field before them; the empty line that ends the block is returned as a separator field.
pub(crate) fn split_fields(block: &[u8]) -> Vec<RawField> {
    let mut fields: Vec<RawField> = Vec::new();
    let mut pos = 0;
    while pos < block.len() {
        let end = block[pos..]
            .iter()
            .position(|&b| b == b'\n')
            .map(|i| pos + i + 1)
            .unwrap_or(block.len());
        let line = &block[pos..end];
        let content = line
            .strip_suffix(b"\r\n")
            .or_else(|| line.strip_suffix(b"\n"))
            .unwrap_or(line);
        // A line of nothing but CRs ends the block too (mail-parser reads it so).
        if content.iter().all(|&b| b == b'\r') {
            fields.push(RawField {
                range: pos..end,
                colon: None,
                is_separator: true,
            });
            pos = end;
            break;
        }
        let continuation = matches!(content[0], b' ' | b'\t');
        match fields.last_mut() {
            Some(last) if continuation && !last.is_separator => last.range.end = end,
            _ => {
                let colon = content.iter().position(|&b| b == b':').filter(|&c| {
                    c > 0
                        && trim_name(&content[..c])
                            .iter()
                            .all(|&b| (33..=126).contains(&b))
                });
                fields.push(RawField {
                    range: pos..end,
                    colon,
                    is_separator: false,
                });
            }
        }
        pos = end;
    }
    if pos < block.len() {
        // Bytes after the separator inside the block: keep them as an opaque field.
        fields.push(RawField {
            range: pos..block.len(),
            colon: None,
            is_separator: false,
        });
    }
    fields
}

/// Render `name: value` as raw header bytes, converting the value's LF folds to `eol`.
pub(crate) fn render_field(name: &str, value: &[u8], eol: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(name.len() + value.len() + 4);
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b": ");
    let mut i = 0;
    while i < value.len() {
        match value[i] {
            b'\r' if value.get(i + 1) == Some(&b'\n') => {}
            b'\n' => out.extend_from_slice(eol),
            b => out.push(b),
        }
        i += 1;
    }
    out.extend_from_slice(eol);
    out
}

/// Plan "exactly one `name` header with this value": add when missing, change the first when
/// different, delete the others.
pub(crate) fn ensure(ops: &mut Vec<HeaderOp>, headers: &HeaderList<'_>, name: &str, value: &str) {
    let existing = headers.values(name);
    for index in (2..=existing.len()).rev() {
        ops.push(HeaderOp::Delete {
            index: index as u32,
            name: name.to_string(),
        });
    }
    let wanted = encode_unstructured(name.len(), value);
    match existing.first() {
        None => ops.push(HeaderOp::Add {
            name: name.to_string(),
            value: wanted.into_bytes(),
        }),
        Some(v) if same_value(v, value) => {}
        Some(_) => ops.push(HeaderOp::Change {
            index: 1,
            name: name.to_string(),
            value: wanted.into_bytes(),
        }),
    }
}

/// Plan deleting every header called `name`.
pub(crate) fn strip(ops: &mut Vec<HeaderOp>, headers: &HeaderList<'_>, name: &str) {
    for index in (1..=headers.values(name).len()).rev() {
        ops.push(HeaderOp::Delete {
            index: index as u32,
            name: name.to_string(),
        });
    }
}

/// Whether a delivered value means the same as `wanted`: RFC 2047-decoded, unfolded and with
/// whitespace runs collapsed.
fn same_value(existing: &[u8], wanted: &str) -> bool {
    let decoded = super::subject::decode_unstructured(existing);
    collapse_ws(&decoded) == collapse_ws(wanted)
}

fn collapse_ws(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Encode unstructured text for a header value: words that need it (non-ASCII, control
/// characters, `=?`, or longer than a line may be) become RFC 2047 UTF-8 encoded words, the
/// rest stays readable ASCII; then the value is folded at spaces to lines of at most 78
/// characters where possible (never more than 998). `name_len` is the header name's length.
///
/// Choice documented for the integrator: markgate re-encodes the whole *decoded* text it
/// writes rather than splicing the sender's original encoded words; ASCII words stay plain so
/// markings remain greppable in the raw header.
pub fn encode_unstructured(name_len: usize, text: &str) -> String {
    let words: Vec<&str> = text.split(' ').collect();
    let mut needs: Vec<bool> = words.iter().map(|w| word_needs_encoding(w)).collect();
    // Readers collapse or drop whitespace next to encoded words (RFC 2047 §6.2), so runs of
    // spaces (empty words) beside an encoded word are encoded with it.
    let seeds: Vec<usize> = (0..words.len()).filter(|&i| needs[i]).collect();
    for i in seeds {
        let mut j = i;
        while j > 0 && words[j - 1].is_empty() {
            j -= 1;
            needs[j] = true;
        }
        let mut j = i + 1;
        while j < words.len() && words[j].is_empty() {
            needs[j] = true;
            j += 1;
        }
    }
    let mut tokens: Vec<String> = Vec::new();
    let mut i = 0;
    while i < words.len() {
        if needs[i] {
            let mut j = i;
            while j < words.len() && needs[j] {
                j += 1;
            }
            let run = words[i..j].join(" ");
            tokens.extend(encoded_words(&run));
            i = j;
        } else {
            tokens.push(words[i].to_string());
            i += 1;
        }
    }
    fold_tokens(name_len, &tokens)
}

fn word_needs_encoding(w: &str) -> bool {
    w.len() > 900 || w.contains("=?") || w.bytes().any(|b| !(0x21..=0x7e).contains(&b))
}

/// RFC 2047 encoded words (UTF-8), each at most 60 characters (so `Subject: ` plus one word
/// stays within 78), never splitting a character.
/// Q for mostly-ASCII text (readable), B otherwise (shorter).
fn encoded_words(text: &str) -> Vec<String> {
    let non_ascii = text.bytes().filter(|b| !b.is_ascii()).count();
    let use_b = non_ascii * 3 > text.len();
    let mut words = Vec::new();
    if use_b {
        let mut chunk = String::new();
        for c in text.chars() {
            if chunk.len() + c.len_utf8() > 33 {
                words.push(b_word(&chunk));
                chunk.clear();
            }
            chunk.push(c);
        }
        if !chunk.is_empty() || words.is_empty() {
            words.push(b_word(&chunk));
        }
    } else {
        let mut payload = String::new();
        for c in text.chars() {
            let mut enc = String::new();
            if c == ' ' {
                enc.push('_');
            } else if c.is_ascii_alphanumeric() || matches!(c, '!' | '*' | '+' | '-' | '/') {
                enc.push(c);
            } else {
                let mut buf = [0u8; 4];
                for b in c.encode_utf8(&mut buf).bytes() {
                    enc.push_str(&format!("={b:02X}"));
                }
            }
            if payload.len() + enc.len() > 48 {
                words.push(format!("=?UTF-8?Q?{payload}?="));
                payload.clear();
            }
            payload.push_str(&enc);
        }
        if !payload.is_empty() || words.is_empty() {
            words.push(format!("=?UTF-8?Q?{payload}?="));
        }
    }
    words
}

fn b_word(chunk: &str) -> String {
    use base64::Engine as _;
    format!(
        "=?UTF-8?B?{}?=",
        base64::engine::general_purpose::STANDARD.encode(chunk.as_bytes())
    )
}

/// Join tokens with single spaces, turning a space into LF + space where the line would
/// otherwise pass 78 characters.
fn fold_tokens(name_len: usize, tokens: &[String]) -> String {
    let mut out = String::new();
    let mut line_len = name_len + 2;
    for (i, t) in tokens.iter().enumerate() {
        if i > 0 {
            if line_len + 1 + t.len() > 78 && line_len > 1 {
                out.push('\n');
                line_len = 0;
            }
            out.push(' ');
            line_len += 1;
        }
        out.push_str(t);
        line_len += t.len();
    }
    out
}

/// Apply header operations to a raw header block with Postfix's semantics (see the module
/// doc). `hidden_received` models Postfix's own Received header, which the milter did not see
/// and which is not in `block`: it occupies INSHEADER position 0 and is never output.
pub(crate) fn apply_ops(
    block: &[u8],
    ops: &[HeaderOp],
    eol: &[u8],
    hidden_received: bool,
) -> Vec<u8> {
    enum Entry<'b> {
        Hidden,
        Raw(&'b [u8], Option<&'b [u8]>),
        New(String, Vec<u8>),
    }
    let fields = split_fields(block);
    let mut separator: &[u8] = b"";
    let mut entries: Vec<Entry<'_>> = Vec::with_capacity(fields.len() + ops.len() + 1);
    if hidden_received {
        entries.push(Entry::Hidden);
    }
    for f in &fields {
        if f.is_separator {
            separator = &block[f.range.clone()];
        } else {
            entries.push(Entry::Raw(&block[f.range.clone()], f.name(block)));
        }
    }
    let name_of = |e: &Entry<'_>| -> Option<Vec<u8>> {
        match e {
            Entry::Hidden => None,
            Entry::Raw(_, n) => n.map(<[u8]>::to_vec),
            Entry::New(n, _) => Some(n.as_bytes().to_vec()),
        }
    };
    let find = |entries: &Vec<Entry<'_>>, name: &str, index: u32| -> Option<usize> {
        let wanted = index.max(1) as usize;
        entries
            .iter()
            .enumerate()
            .filter(|(_, e)| name_of(e).is_some_and(|n| n.eq_ignore_ascii_case(name.as_bytes())))
            .nth(wanted - 1)
            .map(|(i, _)| i)
    };
    for op in ops {
        match op {
            HeaderOp::Add { name, value } => entries.push(Entry::New(name.clone(), value.clone())),
            HeaderOp::Insert { index, name, value } => {
                let at = (*index as usize).min(entries.len());
                entries.insert(at, Entry::New(name.clone(), value.clone()));
            }
            HeaderOp::Change { index, name, value } => match find(&entries, name, *index) {
                Some(i) if value.is_empty() => {
                    entries.remove(i);
                }
                Some(i) => entries[i] = Entry::New(name.clone(), value.clone()),
                None if value.is_empty() => {}
                None => entries.push(Entry::New(name.clone(), value.clone())),
            },
            HeaderOp::Delete { index, name } => {
                if let Some(i) = find(&entries, name, *index) {
                    entries.remove(i);
                }
            }
        }
    }
    let mut out = Vec::with_capacity(block.len() + 256);
    for e in &entries {
        match e {
            Entry::Hidden => {}
            Entry::Raw(bytes, _) => {
                out.extend_from_slice(bytes);
                if !bytes.ends_with(b"\n") {
                    out.extend_from_slice(eol);
                }
            }
            Entry::New(name, value) => out.extend_from_slice(&render_field(name, value, eol)),
        }
    }
    out.extend_from_slice(separator);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(out: &[u8]) -> Vec<String> {
        String::from_utf8_lossy(out)
            .lines()
            .map(str::to_string)
            .collect()
    }

    const BLOCK: &[u8] = b"Received: from a\r\nX-Dup: 1\r\nSubject: s\r\nx-dup: 2\r\n\r\n";

    #[test]
    fn change_is_per_name_one_based_and_case_insensitive() {
        let ops = [HeaderOp::Change {
            index: 2,
            name: "X-DUP".into(),
            value: b"two".to_vec(),
        }];
        let out = apply_ops(BLOCK, &ops, b"\r\n", true);
        assert_eq!(
            names(&out),
            [
                "Received: from a",
                "X-Dup: 1",
                "Subject: s",
                "X-DUP: two",
                ""
            ]
        );
        // Index 0 means 1; past the end appends; deleting a missing header does nothing.
        let ops = [
            HeaderOp::Change {
                index: 0,
                name: "x-dup".into(),
                value: b"one".to_vec(),
            },
            HeaderOp::Change {
                index: 5,
                name: "X-Dup".into(),
                value: b"five".to_vec(),
            },
            HeaderOp::Delete {
                index: 9,
                name: "X-None".into(),
            },
        ];
        let out = apply_ops(BLOCK, &ops, b"\r\n", true);
        assert_eq!(
            names(&out),
            [
                "Received: from a",
                "x-dup: one",
                "Subject: s",
                "x-dup: 2",
                "X-Dup: five",
                ""
            ]
        );
    }

    #[test]
    fn edits_apply_in_order_and_deletes_go_from_the_top_index_down() {
        let list_owned = headers_from_raw(BLOCK, BLOCK.len());
        let list = HeaderList::new(&list_owned);
        let mut ops = Vec::new();
        strip(&mut ops, &list, "X-Dup");
        assert_eq!(
            ops,
            [
                HeaderOp::Delete {
                    index: 2,
                    name: "X-Dup".into()
                },
                HeaderOp::Delete {
                    index: 1,
                    name: "X-Dup".into()
                },
            ]
        );
        let out = apply_ops(BLOCK, &ops, b"\r\n", true);
        assert_eq!(names(&out), ["Received: from a", "Subject: s", ""]);
    }

    #[test]
    fn insert_counts_postfix_own_received_as_zero() {
        let ins = |index| {
            let ops = [HeaderOp::Insert {
                index,
                name: "X-I".into(),
                value: b"v".to_vec(),
            }];
            names(&apply_ops(BLOCK, &ops, b"\r\n", true))
        };
        // 0 (above Postfix's hidden Received) and 1 (just below it) both land first among the
        // headers the milter saw; 2 goes below the client's first header.
        assert_eq!(ins(0)[0], "X-I: v");
        assert_eq!(ins(1)[0], "X-I: v");
        assert_eq!(ins(2)[1], "X-I: v");
        assert_eq!(ins(99)[4], "X-I: v");
        // Sendmail: no hidden header, index 1 is below the first header.
        let ops = [HeaderOp::Insert {
            index: 1,
            name: "X-I".into(),
            value: b"v".to_vec(),
        }];
        assert_eq!(names(&apply_ops(BLOCK, &ops, b"\r\n", false))[1], "X-I: v");
    }

    #[test]
    fn ensure_adds_changes_or_leaves_alone() {
        let raw = b"X-Protective-Marking: RESTRICTED\r\nX-Protective-Marking:\r\n  PROTECT\r\n\r\n";
        let owned = headers_from_raw(raw, raw.len());
        let list = HeaderList::new(&owned);
        assert_eq!(owned[1].1, b"\n  PROTECT".to_vec());
        let mut ops = Vec::new();
        ensure(&mut ops, &list, "X-Protective-Marking", "RESTRICTED");
        assert_eq!(
            ops,
            [HeaderOp::Delete {
                index: 2,
                name: "X-Protective-Marking".into()
            }]
        );
        let mut ops = Vec::new();
        ensure(&mut ops, &list, "X-Missing", "v");
        assert_eq!(
            ops,
            [HeaderOp::Add {
                name: "X-Missing".into(),
                value: b"v".to_vec()
            }]
        );
        // Folding differences are not differences.
        let raw = b"X-L: a,\r\n b\r\n\r\n";
        let owned = headers_from_raw(raw, raw.len());
        let mut ops = Vec::new();
        ensure(&mut ops, &HeaderList::new(&owned), "X-L", "a, b");
        assert!(ops.is_empty());
    }

    #[test]
    fn encoding_keeps_ascii_words_plain_and_round_trips() {
        let cases = [
            "RESTRICTED: Réunion du comité — ordre du jour",
            "日本語の件名です 長い件名がここに続きます 日本語の件名です 長い件名がここに続きます",
            "a  é  b",
            "plain =?not-encoded?= text",
            "tab\there",
        ];
        for text in cases {
            let v = encode_unstructured("Subject".len(), text);
            assert!(v.is_ascii(), "{v}");
            for (i, line) in v.split('\n').enumerate() {
                let extra = if i == 0 { "Subject: ".len() } else { 0 };
                assert!(line.len() + extra <= 78, "{line:?}");
            }
            assert_eq!(
                super::super::subject::decode_subject(v.as_bytes()),
                text,
                "{v}"
            );
        }
        assert!(
            encode_unstructured(7, "RESTRICTED: Réunion").starts_with("RESTRICTED: =?UTF-8?Q?")
        );
    }

    #[test]
    fn assemble_and_split_are_inverse() {
        let headers = vec![
            (b"Subject".to_vec(), b"a\n b".to_vec()),
            (b"X-Empty".to_vec(), b"".to_vec()),
        ];
        let raw = assemble_raw(&headers, b"body\r\n");
        assert_eq!(
            raw,
            b"Subject: a\r\n b\r\nX-Empty: \r\n\r\nbody\r\n".to_vec()
        );
        let end = crate::inspect::mime::header_block_end(&raw);
        assert_eq!(headers_from_raw(&raw, end), headers);
    }

    #[test]
    fn long_values_fold_at_spaces() {
        let v = encode_unstructured(
            "X-Protective-Marking".len(),
            "VER=2024.1, NS=gov.au, SEC=OFFICIAL:Sensitive, CAVEAT=SH:CABINET, ACCESS=Legal-Privilege",
        );
        assert!(v.contains("\n "));
        assert_eq!(
            v.replace('\n', ""),
            "VER=2024.1, NS=gov.au, SEC=OFFICIAL:Sensitive, CAVEAT=SH:CABINET, ACCESS=Legal-Privilege"
        );
    }
}
