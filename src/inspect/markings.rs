//! Find protective markings in a message's headers, against the policy's scheme.
//!
//! Sources: the headers named in `read.headers` (each occurrence, with its 1-based index among
//! headers of that name), and the Subject in the forms of `read.subject` — RFC 2047-decoded
//! first, then the `RE:`/`FW:`/`Fwd:`/`AW:` chain skipped for the prefix and bracketed forms;
//! every `[SEC=…]` for the suffix form. Each [`FoundMarking`] carries the raw text, the byte
//! range of the marking in the decoded subject (the rewrite layer replaces it instead of adding
//! another — no stacking), the grammar's diagnostics and which of them the policy does not
//! accept. Must not: decide anything or change the message.

use std::ops::Range;

use mail_parser::MessageParser;

use crate::policy::facts::{FoundMarking, Label, MarkingSource, MarkingStatus};
use crate::policy::labels::au_epms::{self, EpmsMarking, Form};
use crate::policy::labels::uk::{self, UkMarking, UkStyle};
use crate::policy::labels::{self, Diagnostic, Grammar, Vocabulary};
use crate::policy::{Policy, SubjectForm};

/// What [`find`] returns: the decoded subject and every marking, headers first (in header
/// order), then the subject's (left to right).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MarkingFacts {
    pub subject: Option<String>,
    pub markings: Vec<FoundMarking>,
}

/// Find every marking in the headers (name, raw value as received — folded or not).
pub fn find<'a, I>(policy: &Policy, headers: I) -> MarkingFacts
where
    I: IntoIterator<Item = (&'a [u8], &'a [u8])>,
{
    let mut out = MarkingFacts::default();
    let mut counts: Vec<(String, usize)> = Vec::new();
    for (name, value) in headers {
        let name = super::utf8_lossy(name);
        let name = name.trim();
        if name.eq_ignore_ascii_case("subject") && out.subject.is_none() {
            out.subject = Some(decode_subject(value));
        }
        let Some(configured) = policy
            .read
            .headers
            .iter()
            .find(|h| h.eq_ignore_ascii_case(name))
        else {
            continue;
        };
        let index = match counts
            .iter_mut()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
        {
            Some(slot) => {
                slot.1 += 1;
                slot.1
            }
            None => {
                counts.push((name.to_owned(), 1));
                1
            }
        };
        let raw = au_epms::unfold(&super::utf8_lossy(value)).trim().to_owned();
        if super::vendor::claims(policy, name, &raw) {
            continue; // a vendor's label in EPMS shape (Janusseal), read by inspect::vendor
        }
        let source = MarkingSource::Header {
            name: configured.clone(),
            index,
        };
        out.markings.push(header_marking(policy, source, raw));
    }
    if let Some(subject) = &out.subject {
        out.markings.extend(subject_markings(policy, subject));
        super::near_miss::find(policy, subject, &mut out.markings);
    }
    out
}

/// The subject as a person reads it: RFC 2047 encoded-words decoded, folding removed.
pub fn decode_subject(raw: &[u8]) -> String {
    if is_plain_value(raw) {
        // What mail-parser returns for it: the value between its first and last character
        // other than space and tab (then trimmed); nothing to decode or unfold.
        return super::utf8_lossy(raw).trim().to_owned();
    }
    decode_subject_parsed(raw)
}

/// A header value that mail-parser's unstructured parser hands back as it is, up to the white
/// space around it: one line (no CR, no LF) and no `=?` that could start an encoded word.
///
/// One search for the three bytes that matter (a substring searcher built per call cost more
/// than the search on values this short).
pub(crate) fn is_plain_value(raw: &[u8]) -> bool {
    let mut from = 0;
    while let Some(i) = memchr::memchr3(b'\n', b'\r', b'=', &raw[from..]) {
        let at = from + i;
        if raw[at] != b'=' || raw.get(at + 1) == Some(&b'?') {
            return false;
        }
        from = at + 1;
    }
    true
}

/// [`decode_subject`] through mail-parser, for any value.
fn decode_subject_parsed(raw: &[u8]) -> String {
    let mut buf = Vec::with_capacity(raw.len() + 16);
    buf.extend_from_slice(b"Subject: ");
    // mail-parser wants CRLF line ends; the milter layer gives bare LF folding.
    let mut prev = 0u8;
    for &b in raw {
        if b == b'\n' && prev != b'\r' {
            buf.push(b'\r');
        }
        buf.push(b);
        prev = b;
    }
    buf.extend_from_slice(b"\r\n\r\n");
    let parsed = MessageParser::new().parse_headers(&buf);
    match parsed.as_ref().and_then(|m| m.subject()) {
        Some(s) => s.trim().to_owned(),
        None => forward_unfold(raw),
    }
}

fn forward_unfold(raw: &[u8]) -> String {
    super::forward::unfold(raw)
}

fn uk_style(g: Grammar) -> UkStyle {
    match g {
        Grammar::UkGsc => UkStyle::Gsc,
        _ => UkStyle::Gpms,
    }
}

fn rejected(policy: &Policy, diags: &[Diagnostic]) -> Vec<&'static str> {
    let mut out: Vec<&'static str> = Vec::new();
    for d in diags {
        if !policy.read.accept.contains(&d.code) && !out.contains(&d.code) {
            out.push(d.code);
        }
    }
    out
}

/// A vendor label's mapped marking (`read.vendor.*.labels`) as a found marking: the scheme's
/// header grammar, but EPMS in its medium form (a mapping names SEC and caveats, never VER,
/// NS or ORIGIN).
pub(crate) fn header_marking_text(
    policy: &Policy,
    source: MarkingSource,
    text: &str,
) -> FoundMarking {
    header_marking_form(policy, source, text.to_owned(), Form::Subject)
}

fn header_marking(policy: &Policy, source: MarkingSource, raw: String) -> FoundMarking {
    header_marking_form(policy, source, raw, Form::Header)
}

fn header_marking_form(
    policy: &Policy,
    source: MarkingSource,
    raw: String,
    form: Form,
) -> FoundMarking {
    let vocab = &policy.scheme.vocab;
    match policy.scheme.grammar {
        Grammar::AuEpms => {
            let m = au_epms::parse(&raw, form);
            epms_found(policy, source, raw, None, None, m)
        }
        g => match uk::parse_header(&raw, vocab, uk_style(g)) {
            Ok(m) => uk_found(policy, source, raw, None, None, m),
            Err(diags) => {
                let status = if diags.iter().any(|d| d.code == "uk.level.unknown") {
                    MarkingStatus::Unknown
                } else {
                    MarkingStatus::Malformed
                };
                FoundMarking {
                    source,
                    raw,
                    range: None,
                    remove_range: None,
                    status,
                    label: None,
                    rejected_codes: rejected(policy, &diags),
                    diagnostics: diags,
                }
            }
        },
    }
}

/// At most this many stacked subject markings are read (a bound, not a limit seen in practice).
const MAX_STACKED: usize = 16;

fn subject_markings(policy: &Policy, subject: &str) -> Vec<FoundMarking> {
    let vocab = &policy.scheme.vocab;
    let ci = policy.read.subject_case_insensitive;
    let mut out = Vec::new();
    // UK forms: markings at the start of the subject after the reply chain — and again after
    // each one (clients that re-add a marking produce "PROTECT: RE: PROTECT: x"), so every
    // stacked marking is found and the rewrite leaves exactly one.
    let uk_forms: Vec<SubjectForm> = policy
        .read
        .subject_forms
        .iter()
        .copied()
        .filter(|f| matches!(f, SubjectForm::Prefix | SubjectForm::Bracketed))
        .collect();
    if policy.scheme.grammar != Grammar::AuEpms && !uk_forms.is_empty() {
        let style = uk_style(policy.scheme.grammar);
        let mut pos = labels::reply_chain_end(subject);
        for _ in 0..MAX_STACKED {
            let found = uk_forms.iter().find_map(|form| {
                let m = match form {
                    SubjectForm::Prefix => uk::parse_subject_prefix(subject, pos, vocab, style, ci),
                    _ => uk::parse_subject_bracketed(subject, pos, vocab, style, ci),
                }?;
                Some((*form, m))
            });
            let Some((form, m)) = found else { break };
            let raw = subject.get(m.start..m.end).unwrap_or("").to_owned();
            let (range, remove) = (m.start..m.end, m.start..m.rest.max(m.end));
            let next = m.rest.max(m.end);
            out.push(uk_found(
                policy,
                MarkingSource::Subject { form },
                raw,
                Some(range),
                Some(remove),
                m,
            ));
            if next <= pos || next >= subject.len() {
                break;
            }
            pos = next + labels::reply_chain_end(&subject[next..]);
        }
    }
    for form in &policy.read.subject_forms {
        let source = MarkingSource::Subject { form: *form };
        match form {
            SubjectForm::Prefix | SubjectForm::Bracketed => {}
            SubjectForm::SecSuffix => {
                if policy.scheme.grammar != Grammar::AuEpms {
                    continue;
                }
                for (range, m) in au_epms::find_in_subject(subject) {
                    let raw = subject.get(range.clone()).unwrap_or("").to_owned();
                    let ws = subject[..range.start].trim_end_matches([' ', '\t']).len();
                    let remove = ws..range.end;
                    out.push(epms_found(
                        policy,
                        source.clone(),
                        raw,
                        Some(range),
                        Some(remove),
                        m,
                    ));
                }
            }
        }
    }
    out
}

fn uk_found(
    policy: &Policy,
    source: MarkingSource,
    raw: String,
    range: Option<Range<usize>>,
    remove: Option<Range<usize>>,
    m: UkMarking,
) -> FoundMarking {
    let vocab: &Vocabulary = &policy.scheme.vocab;
    let style = uk_style(policy.scheme.grammar);
    let canonical = uk::render(m.uk_prefix, m.level, &m.qualifiers, vocab, style);
    let mut quals: Vec<usize> = m.qualifiers.clone();
    if style == UkStyle::Gsc {
        quals.sort_by_key(|&q| vocab.qualifiers.get(q).map_or(1, |q| uk::gsc_rank(q.kind)));
    }
    let label = Label {
        level: m.level,
        level_name: policy.scheme.level_name(m.level).to_owned(),
        qualifiers: quals
            .iter()
            .filter_map(|&q| vocab.qualifiers.get(q).map(|q| q.name.clone()))
            .collect(),
        canonical,
        epms: None,
    };
    let rejected_codes = rejected(policy, &m.diagnostics);
    FoundMarking {
        source,
        raw,
        range,
        remove_range: remove,
        status: if rejected_codes.is_empty() {
            MarkingStatus::Valid
        } else {
            MarkingStatus::Malformed
        },
        label: Some(label),
        diagnostics: m.diagnostics,
        rejected_codes,
    }
}

fn epms_found(
    policy: &Policy,
    source: MarkingSource,
    raw: String,
    range: Option<Range<usize>>,
    remove: Option<Range<usize>>,
    m: EpmsMarking,
) -> FoundMarking {
    let rejected_codes = rejected(policy, &m.diagnostics);
    let foreign = m.diagnostics.iter().any(|d| d.code == "epms.ns.foreign");
    let level = if foreign {
        None
    } else {
        m.sec
            .as_deref()
            .and_then(|s| policy.scheme.vocab.level_exact(s))
    };
    // A near-miss of a real classification (`OFFICIAL-Sensitive`) is a malformed marking; a
    // value that resembles none (`D04FB6C2`) or a foreign namespace is unknown.
    let near_miss = !foreign && m.sec.as_deref().and_then(au_epms::near_class).is_some();
    let status = match level {
        None if near_miss => MarkingStatus::Malformed,
        None if foreign || m.sec.is_some() => MarkingStatus::Unknown,
        None => MarkingStatus::Malformed,
        Some(_) if rejected_codes.is_empty() => MarkingStatus::Valid,
        Some(_) => MarkingStatus::Malformed,
    };
    let label = level.map(|level| {
        let mut qualifiers: Vec<String> = m.caveats.iter().map(|c| c.text()).collect();
        qualifiers.extend(m.access.iter().cloned());
        let mut canon = m.clone();
        canon.diagnostics.clear();
        // Write the scheme's canonical level name for an alias.
        canon.sec = Some(policy.scheme.level_name(level).to_owned());
        Label {
            level,
            level_name: policy.scheme.level_name(level).to_owned(),
            qualifiers,
            canonical: au_epms::render_medium(&canon),
            epms: Some(canon),
        }
    });
    FoundMarking {
        source,
        raw,
        range,
        remove_range: remove,
        status,
        label,
        diagnostics: m.diagnostics,
        rejected_codes,
    }
}

/// The header block of a raw message (up to the first empty line) as (name, raw value) pairs,
/// folding kept as bare LF like the milter layer delivers it. For `markgate policy test` and
/// tests; the daemon gets its headers from the transaction.
pub fn header_fields(raw: &[u8]) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut out: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
    for line in raw.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            break;
        }
        if matches!(line.first(), Some(b' ' | b'\t')) {
            if let Some(last) = out.last_mut() {
                last.1.push(b'\n');
                last.1.extend_from_slice(line);
            }
            continue;
        }
        if let Some(colon) = line.iter().position(|&b| b == b':') {
            let name = line[..colon].to_vec();
            let mut value = &line[colon + 1..];
            if let Some(rest) = value.strip_prefix(b" ") {
                value = rest;
            }
            out.push((name, value.to_vec()));
        }
    }
    out
}

/// Markings and forward evidence for one message's headers, as [`Facts`] ready for
/// `policy::decide`. The MIME facts (`disclaimer_present`, `signed_or_encrypted`) are left
/// `false` for the caller to fill from `inspect::mime`.
///
/// [`Facts`]: crate::policy::Facts
pub fn header_facts<'a>(policy: &Policy, headers: &[(&'a [u8], &'a [u8])]) -> crate::policy::Facts {
    let mut found = find(policy, headers.iter().copied());
    found
        .markings
        .extend(super::vendor::markings(policy, headers.iter().copied()));
    crate::policy::Facts {
        subject: found.subject,
        markings: found.markings,
        forward: super::forward::evidence(policy, headers.iter().copied()),
        disclaimer_present: false,
        signed_or_encrypted: false,
        route_headers: super::routes::header_routes(policy, headers),
        now: None,
        vendor_headers: super::vendor::headers_present(policy, headers.iter().copied()),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Subject values from the corpora (as the milter delivers them: no space after the colon)
    /// and made-up ones around the edges of the plain-value shortcut.
    pub(crate) fn subject_values() -> Vec<Vec<u8>> {
        let texts = crate::inspect::mime::tests::corpus_files();
        let mut out: Vec<Vec<u8>> = Vec::new();
        for t in &texts {
            for line in t.split(|&b| b == b'\n') {
                if line.len() > 8 && line[..8].eq_ignore_ascii_case(b"subject:") {
                    let v = line[8..].strip_prefix(b" ").unwrap_or(&line[8..]);
                    let v = v.strip_suffix(b"\r").unwrap_or(v);
                    out.push(v.to_vec());
                }
            }
        }
        for v in [
            &b""[..],
            b" ",
            b"\t \t",
            b"PROTECT: hello",
            b"  PROTECT: hello \t",
            b"a\tb  c",
            b"x = y",
            b"x =",
            b"=",
            b"\xc2\xa0nbsp\xc2\xa0",
            b"caf\xe9",
            b"caf\xc3\xa9 \xe2\x80\x83",
            b"\x00nul\x01",
            b"[SEC=OFFICIAL] report",
            b"tab\tend\t",
        ] {
            out.push(v.to_vec());
        }
        out
    }

    #[test]
    fn plain_values_are_what_the_two_searches_found() {
        let before = |raw: &[u8]| {
            memchr::memchr2(b'\n', b'\r', raw).is_none()
                && memchr::memmem::find(raw, b"=?").is_none()
        };
        let mut values = subject_values();
        let pieces: [&[u8]; 8] = [b"=", b"?", b"=?", b"a", b"\r", b"\n", b"==", b" "];
        let mut state = 0x2545_f491_4f6c_dd1du64;
        values.extend(crate::inspect::generated::values(
            &pieces, 9, 20_000, &mut state,
        ));
        for v in &values {
            assert_eq!(
                is_plain_value(v),
                before(v),
                "{:?}",
                String::from_utf8_lossy(v)
            );
        }
    }

    #[test]
    fn plain_subjects_decode_as_mail_parser_decodes_them() {
        let mut plain = 0;
        for v in subject_values() {
            if is_plain_value(&v) {
                plain += 1;
                assert_eq!(
                    decode_subject(&v),
                    decode_subject_parsed(&v),
                    "{:?}",
                    String::from_utf8_lossy(&v)
                );
            }
        }
        assert!(plain > 100, "only {plain} plain subjects");
    }
}
