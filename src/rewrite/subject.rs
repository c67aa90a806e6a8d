//! The subject marking: put the desired marking where the policy wants it, exactly once.
//!
//! Markings already in the subject (their byte ranges in the *decoded* subject, as found by
//! `inspect::markings`) are removed together with their separators before the desired marking
//! is written, so reply chains never stack markings (`RE: RE: [X] [X]` cannot happen). The
//! marking markgate itself writes is also recognised at its own position, so the result is
//! idempotent even when no ranges are given. The reply/forward chain (`RE:`, `FW:`, `Fwd:`,
//! `AW:`, `SV:`, …) is kept as the sender wrote it; a prefix marking goes after it.
//!
//! Encoding: the new subject is written with [`super::headers::encode_unstructured`] — the
//! decoded text is re-encoded as a whole (ASCII words plain, other runs as UTF-8 encoded words)
//! rather than splicing the sender's encoded words.

use std::ops::Range;
use std::sync::LazyLock;

use regex::Regex;

/// Where the marking goes in the subject.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubjectPosition {
    /// `RE: <MARKING>: text` — the UK convention.
    Prefix,
    /// `RE: [<MARKING>] text`.
    Bracketed,
    /// `text <MARKING>` — e.g. the AU EPMS ` [SEC=OFFICIAL]` suffix (give the brackets in the
    /// marking text).
    Suffix,
}

/// The desired subject marking.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubjectEdit {
    /// The marking text, e.g. `RESTRICTED`, `PROTECT - PERSONAL`, `[SEC=OFFICIAL]`.
    pub marking: String,
    pub position: SubjectPosition,
    /// Byte ranges of markings already present, into the string [`decode_subject`] returns
    /// for the first Subject header. Out-of-range or non-boundary ranges are ignored.
    pub existing: Vec<Range<usize>>,
    /// Also change the subject of signed or encrypted mail whose body is left alone. Default
    /// `false`: such mail is labelled by header only (RFC 9788 header protection may cover the
    /// subject; `shared/reference/markings.md` §(d)4).
    pub on_signed: bool,
}

impl SubjectEdit {
    /// A marking at `position` with no known existing markings.
    pub fn new(marking: impl Into<String>, position: SubjectPosition) -> Self {
        SubjectEdit {
            marking: marking.into(),
            position,
            existing: Vec::new(),
            on_signed: false,
        }
    }
}

/// Decode a Subject value as delivered (LF-folded, possibly RFC 2047-encoded or raw UTF-8)
/// with mail-parser, the same decoder inspect uses.
pub fn decode_subject(value: &[u8]) -> String {
    decode_unstructured(value)
}

/// Decode any unstructured header value as delivered.
pub(crate) fn decode_unstructured(value: &[u8]) -> String {
    // Raw 8-bit bytes that are not UTF-8 come from old mailers writing their local charset
    // unencoded; read them as windows-1252 rather than losing them to replacement characters.
    let converted;
    let value = if !value.is_ascii() && std::str::from_utf8(value).is_err() {
        converted = encoding_rs::WINDOWS_1252
            .decode_without_bom_handling(value)
            .0
            .into_owned();
        converted.as_bytes()
    } else {
        value
    };
    if crate::inspect::markings::is_plain_value(value)
        && let Ok(text) = std::str::from_utf8(value)
    {
        // What mail-parser returns for such a value: it without the spaces and tabs around it.
        return text.trim_matches([' ', '\t']).to_owned();
    }
    decode_unstructured_parsed(value)
}

/// [`decode_unstructured`] through mail-parser, after the windows-1252 step.
fn decode_unstructured_parsed(value: &[u8]) -> String {
    let mut synthetic = Vec::with_capacity(value.len() + 16);
    synthetic.extend_from_slice(b"Subject: ");
    synthetic.extend_from_slice(value);
    synthetic.extend_from_slice(b"\n\n");
    mail_parser::MessageParser::new()
        .parse_headers(&synthetic)
        .and_then(|m| m.subject().map(str::to_string))
        .unwrap_or_else(|| {
            let unfolded: Vec<u8> = value
                .iter()
                .copied()
                .filter(|&b| b != b'\n' && b != b'\r')
                .collect();
            String::from_utf8_lossy(&unfolded).trim().to_string()
        })
}

static CHAIN: LazyLock<Option<Regex>> = LazyLock::new(|| {
    Regex::new(
        r"(?i)^\s*(?:(?:re|fw|fwd|aw|wg|sv|vs|tr|antw|rv|rif|r|enc)\s*(?:\[\d+\]|\(\d+\))?\s*:\s*)*",
    )
    .ok()
});

fn chain_len(s: &str) -> usize {
    let Some(re) = CHAIN.as_ref() else {
        return 0;
    };
    // Every prefix the pattern knows starts with one of these letters, so a subject whose
    // first non-space character is another ASCII character has no chain: the match is its
    // leading white space (`\s` is Unicode White_Space, which `trim_start` strips too).
    // Non-ASCII goes to the regex: case-insensitive matching folds U+017F to `s`.
    let body = s.trim_start();
    let no_chain = body
        .bytes()
        .next()
        .is_none_or(|b| b.is_ascii() && !b"rfawsvte".contains(&b.to_ascii_lowercase()));
    if no_chain {
        return s.len() - body.len();
    }
    re.find(s).map_or(0, |m| m.end())
}

/// The subject with the marking normalised, from the current decoded subject.
pub fn normalized_subject(current: &str, edit: &SubjectEdit) -> String {
    let marking = edit.marking.trim();
    let mut rest = remove_ranges(current, &edit.existing);
    // Remove markgate's own form wherever it would write it (repeatedly: stacked copies).
    loop {
        let chain = chain_len(&rest);
        let (head, body) = rest.split_at(chain);
        let stripped = match edit.position {
            SubjectPosition::Prefix => strip_prefix_marking(body, marking),
            SubjectPosition::Bracketed => strip_prefix_marking(body, &format!("[{marking}]")),
            SubjectPosition::Suffix => {
                let t = body.trim_end();
                t.strip_suffix(marking).map(|s| s.trim_end().to_string())
            }
        };
        match stripped {
            Some(s) => rest = [head, &s].concat(),
            None => break,
        }
    }
    let chain = chain_len(&rest);
    let (head, body) = rest.split_at(chain);
    let body = body.trim();
    let head = head.trim_start();
    let gap = if head.is_empty() || head.ends_with(char::is_whitespace) {
        ""
    } else {
        " "
    };
    let out = match edit.position {
        // Every labelled message comes here: `concat` sizes the string once.
        SubjectPosition::Prefix if body.is_empty() => [head, gap, marking, ":"].concat(),
        SubjectPosition::Prefix => [head, gap, marking, ": ", body].concat(),
        SubjectPosition::Bracketed => [head, gap, "[", marking, "] ", body].concat(),
        SubjectPosition::Suffix if rest.trim().is_empty() => marking.to_string(),
        SubjectPosition::Suffix => [rest.trim(), " ", marking].concat(),
    };
    if out.trim().len() == out.len() {
        out
    } else {
        out.trim().to_string()
    }
}

/// `body` without a leading `marking` followed by `:`/`-` separators, if it starts with it.
fn strip_prefix_marking(body: &str, marking: &str) -> Option<String> {
    let after = body.strip_prefix(marking)?;
    let trimmed = after.trim_start();
    if after.is_empty() {
        return Some(String::new());
    }
    if let Some(t) = trimmed.strip_prefix(':') {
        return Some(t.trim_start().to_string());
    }
    if marking.ends_with(']') || after.starts_with(char::is_whitespace) {
        // `[M] text`, or `M text` (a separator-less prefix): only accept the bracketed form
        // without a colon, so a subject that merely starts with the word stays untouched.
        if marking.ends_with(']') {
            return Some(trimmed.to_string());
        }
    }
    None
}

/// Remove the given ranges, each widened over its brackets, a following `:`/`-` separator and
/// surrounding whitespace.
fn remove_ranges(s: &str, ranges: &[Range<usize>]) -> String {
    let mut spans: Vec<Range<usize>> = ranges
        .iter()
        .filter(|r| {
            r.start < r.end
                && r.end <= s.len()
                && s.is_char_boundary(r.start)
                && s.is_char_boundary(r.end)
        })
        .map(|r| widen(s, r.clone()))
        .collect();
    spans.sort_by_key(|r| r.start);
    let mut out = String::with_capacity(s.len());
    let mut pos = 0;
    for r in spans {
        if r.start >= pos {
            out.push_str(&s[pos..r.start]);
            pos = r.end;
        } else if r.end > pos {
            pos = r.end;
        }
    }
    out.push_str(&s[pos..]);
    out
}

fn widen(s: &str, r: Range<usize>) -> Range<usize> {
    let b = s.as_bytes();
    let (mut start, mut end) = (r.start, r.end);
    // Brackets around the range (`[SEC=…]` given without them).
    let mut e = end;
    while e < b.len() && b[e] == b' ' {
        e += 1;
    }
    if start > 0 && b[start - 1] == b'[' && e < b.len() && b[e] == b']' {
        start -= 1;
        end = e + 1;
    }
    // Separator after a prefix marking.
    let mut e = end;
    while e < b.len() && matches!(b[e], b' ' | b'\t') {
        e += 1;
    }
    if e < b.len()
        && matches!(b[e], b':' | b'-')
        && (e + 1 == b.len() || matches!(b[e + 1], b' ' | b'\t'))
    {
        e += 1;
        while e < b.len() && matches!(b[e], b' ' | b'\t') {
            e += 1;
        }
    }
    end = e;
    // At the end of the subject, the whitespace before a suffix marking goes too.
    if end == b.len() {
        while start > 0 && matches!(b[start - 1], b' ' | b'\t') {
            start -= 1;
        }
    }
    start..end
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_values_decode_as_mail_parser_decodes_them() {
        let mut plain = 0;
        for v in crate::inspect::markings::tests::subject_values() {
            if crate::inspect::markings::is_plain_value(&v) && std::str::from_utf8(&v).is_ok() {
                plain += 1;
                assert_eq!(
                    decode_unstructured(&v),
                    decode_unstructured_parsed(&v),
                    "{:?}",
                    String::from_utf8_lossy(&v)
                );
            }
        }
        assert!(plain > 100, "only {plain} plain values");
    }

    #[test]
    fn chain_len_shortcut_agrees_with_the_pattern() {
        let Some(re) = CHAIN.as_ref() else {
            panic!("the reply-chain pattern does not compile");
        };
        let starts = [
            "",
            " ",
            "\t",
            "\u{a0}",
            "\u{3000}",
            "  \u{2003}",
            "Re: ",
            "FW: ",
            "fwd:",
            "AW: ",
            "re[2]: ",
            "Re(3):",
            "enc: ",
            "R: ",
            "Antw: ",
            "\u{17f}v: ",
            "\u{212a}",
        ];
        let rests = [
            "",
            "PROTECT: x",
            "[SEC=OFFICIAL] x",
            "OFFICIAL",
            "hello",
            "Report",
            "Sv: x",
            "tr: x",
            "e",
            "Zebra",
            "1 2",
            ":",
            "\u{e9}t\u{e9}",
            "\u{17f}v: x",
            "\u{130}",
            ">x",
        ];
        let mut n = 0;
        for a in starts {
            for b in rests {
                for c in ["", " ", "Re: "] {
                    let s = format!("{a}{c}{b}");
                    let want = re.find(&s).map_or(0, |m| m.end());
                    assert_eq!(chain_len(&s), want, "{s:?}");
                    n += 1;
                }
            }
        }
        assert!(n > 700);
    }

    fn edit(m: &str, pos: SubjectPosition, current: &str, marks: &[&str]) -> String {
        let mut e = SubjectEdit::new(m, pos);
        for t in marks {
            let mut from = 0;
            while let Some(i) = current[from..].find(t) {
                e.existing.push(from + i..from + i + t.len());
                from += i + t.len();
            }
        }
        normalized_subject(current, &e)
    }

    #[test]
    fn prefix_goes_after_the_reply_chain() {
        use SubjectPosition::Prefix;
        let cases: &[(&str, &[&str], &str)] = &[
            ("Hello", &[], "RESTRICTED: Hello"),
            ("RE: Hello", &[], "RE: RESTRICTED: Hello"),
            ("RE: FW: Fwd: Hello", &[], "RE: FW: Fwd: RESTRICTED: Hello"),
            (
                "RE: RESTRICTED: Hello",
                &["RESTRICTED"],
                "RE: RESTRICTED: Hello",
            ),
            ("RE: RESTRICTED: Hello", &[], "RE: RESTRICTED: Hello"),
            ("RESTRICTED: RESTRICTED: Hello", &[], "RESTRICTED: Hello"),
            (
                "RESTRICTED: RE: Hello",
                &["RESTRICTED"],
                "RE: RESTRICTED: Hello",
            ),
            (
                "RE: [RESTRICTED] Hello",
                &["[RESTRICTED]"],
                "RE: RESTRICTED: Hello",
            ),
            ("Re[2]: AW: Hello", &[], "Re[2]: AW: RESTRICTED: Hello"),
            ("", &[], "RESTRICTED:"),
            ("RE:", &[], "RE: RESTRICTED:"),
            (
                "PROTECT - MANAGEMENT - Restructure",
                &["PROTECT - MANAGEMENT"],
                "RESTRICTED: Restructure",
            ),
            (
                "restricted: lower case",
                &["restricted"],
                "RESTRICTED: lower case",
            ),
        ];
        for (current, marks, want) in cases {
            assert_eq!(
                edit("RESTRICTED", Prefix, current, marks),
                *want,
                "{current:?}"
            );
        }
    }

    #[test]
    fn bracketed_and_suffix_never_stack() {
        assert_eq!(
            edit(
                "RESTRICTED",
                SubjectPosition::Bracketed,
                "RE: RE: [RESTRICTED] [RESTRICTED] Budget",
                &["[RESTRICTED]"]
            ),
            "RE: RE: [RESTRICTED] Budget"
        );
        assert_eq!(
            edit(
                "RESTRICTED",
                SubjectPosition::Bracketed,
                "RE: [RESTRICTED] [RESTRICTED] x",
                &[]
            ),
            "RE: [RESTRICTED] x"
        );
        assert_eq!(
            edit(
                "[SEC=OFFICIAL]",
                SubjectPosition::Suffix,
                "RE: Budget [SEC=UNOFFICIAL] [SEC=OFFICIAL]",
                &["[SEC=UNOFFICIAL]", "[SEC=OFFICIAL]"]
            ),
            "RE: Budget [SEC=OFFICIAL]"
        );
        // The ASD pattern: a range given without its brackets still removes them.
        assert_eq!(
            edit(
                "[SEC=OFFICIAL]",
                SubjectPosition::Suffix,
                "Budget [SEC=PROTECTED]",
                &["SEC=PROTECTED"]
            ),
            "Budget [SEC=OFFICIAL]"
        );
        assert_eq!(
            edit(
                "[SEC=OFFICIAL]",
                SubjectPosition::Suffix,
                "Budget [SEC=OFFICIAL]",
                &[]
            ),
            "Budget [SEC=OFFICIAL]"
        );
    }

    #[test]
    fn bad_ranges_are_ignored() {
        let mut e = SubjectEdit::new("RESTRICTED", SubjectPosition::Prefix);
        #[allow(clippy::reversed_empty_ranges)]
        let bad = vec![5..2, 0..999, 1..2];
        e.existing = bad;
        assert_eq!(normalized_subject("é x", &e), "RESTRICTED: é x");
    }

    #[test]
    fn decode_handles_encoded_words_and_raw_utf8() {
        assert_eq!(
            decode_subject(b"=?UTF-8?Q?R=C3=A9union?= du\n matin"),
            "Réunion du matin"
        );
        assert_eq!(decode_subject("Café".as_bytes()), "Café");
        assert_eq!(decode_subject(b"=?ISO-8859-1?Q?caf=E9?="), "café");
        assert_eq!(decode_subject(b"caf\xe9 cr\xe8me"), "café crème");
    }
}
