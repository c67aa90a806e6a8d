//! The UK marking grammar shared by GPMS and GSC 2014: a level, optionally prefixed by `UK`,
//! followed by qualifiers (descriptors, caveats, handling instructions) from the policy's
//! vocabulary.
//!
//! ```text
//! uk-marking        = [ "UK" SP ] level *( separator qualifier )
//! separator         = " - " (GPMS) / " " (GSC)          ; other runs of SP / "-" are a variant
//! uk-subject-prefix = *reply-prefix uk-marking ( ": " text / end )
//! uk-bracketed      = *reply-prefix "[" uk-marking "]" text
//! uk-header         = [FWS] uk-marking [FWS]
//! ```
//!
//! Words are matched as phrases: inside a phrase a space or hyphen in the canonical text accepts
//! any run of spaces and hyphens on read (`OFFICIAL - SENSITIVE` reads as `OFFICIAL-SENSITIVE`,
//! with a `uk.spelling` diagnostic). Matching is case-insensitive for headers, and for subjects
//! only when the policy says so (otherwise "Secret Santa: …" would be a SECRET marking).
//! What markgate writes ([`render`]) is always the canonical text.

use super::{Diagnostic, QualifierKind, Vocabulary};

/// Longest marking the grammar accepts (RFC 5322 line length).
pub const MAX_LEN: usize = 998;

/// How the scheme separates the parts of a marking when writing it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UkStyle {
    /// `PROTECT - PERSONAL`
    Gpms,
    /// `OFFICIAL-SENSITIVE PERSONAL DATA`
    Gsc,
}

impl UkStyle {
    fn separator(self) -> &'static [u8] {
        match self {
            UkStyle::Gpms => b" - ",
            UkStyle::Gsc => b" ",
        }
    }
}

/// What the parser read: indices into the vocabulary, where it was, and its diagnostics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UkMarking {
    pub uk_prefix: bool,
    pub level: usize,
    pub qualifiers: Vec<usize>,
    /// Byte offsets of the marking text itself (brackets included for the bracketed form).
    pub start: usize,
    pub end: usize,
    /// Subject forms: where the subject text after the marking (and its `: `) begins.
    pub rest: usize,
    pub diagnostics: Vec<Diagnostic>,
}

/// Parse a label header's value (`X-Protective-Marking: PROTECT - PERSONAL`). Always
/// case-insensitive; the whole value must be the marking. `Err` carries the diagnostics when
/// the value does not even start with a level.
pub fn parse_header(
    value: &str,
    vocab: &Vocabulary,
    style: UkStyle,
) -> Result<UkMarking, Vec<Diagnostic>> {
    let s = value.as_bytes();
    let start = skip_ws(s, 0);
    let end_trim = s
        .iter()
        .rposition(|b| !matches!(b, b' ' | b'\t' | b'\r' | b'\n'))
        .map_or(start, |p| p + 1);
    if start >= end_trim {
        return Err(vec![Diagnostic::new(
            "uk.empty",
            0,
            "the label header is empty",
        )]);
    }
    let body = &s[..end_trim];
    let Some(mut core) = parse_core(body, start, vocab, style, true) else {
        return Err(vec![Diagnostic::new(
            "uk.level.unknown",
            start,
            format!(
                "`{}` does not start with a level of this scheme",
                lossy(&body[start..])
            ),
        )]);
    };
    let mut end = core.end;
    if end < body.len() {
        end = trailing(body, end, body.len(), true, &mut core.diagnostics);
    }
    check_length(start, end, &mut core.diagnostics);
    Ok(core.marking(start, end, s.len()))
}

/// Parse a marking at the start of `subject[from..]` (after the reply chain): `LEVEL…: text`.
/// `None` when the subject does not start with a marking.
pub fn parse_subject_prefix(
    subject: &str,
    from: usize,
    vocab: &Vocabulary,
    style: UkStyle,
    case_insensitive: bool,
) -> Option<UkMarking> {
    let s = subject.as_bytes();
    let mut core = parse_core(s, from, vocab, style, case_insensitive)?;
    let mut end = core.end;
    // An all-capitals segment before a colon that is no known qualifier is a qualifier the
    // scheme does not define ("PROTECT - PERSNAL: …"), not subject text.
    if let Some(colon) = unknown_segment(s, end, b':') {
        core.diagnostics.push(Diagnostic::new(
            "uk.qualifier.unknown",
            end,
            format!(
                "`{}` is not a descriptor, caveat or handling instruction of this scheme",
                lossy(trim_sep(&s[end..colon]))
            ),
        ));
        end = trim_end_ws(s, end, colon);
    }
    let rest = terminator(s, end, &mut core.diagnostics)?;
    check_length(from, end, &mut core.diagnostics);
    Some(core.marking(from, end, rest))
}

/// Parse a bracketed marking at `subject[from..]`: `[PROTECT - PERSONAL] text`.
pub fn parse_subject_bracketed(
    subject: &str,
    from: usize,
    vocab: &Vocabulary,
    style: UkStyle,
    case_insensitive: bool,
) -> Option<UkMarking> {
    let s = subject.as_bytes();
    if s.get(from) != Some(&b'[') {
        return None;
    }
    let close = from + 1 + s[from + 1..].iter().position(|&b| b == b']')?;
    let inner = &s[..close];
    let inner_start = skip_ws(inner, from + 1);
    let mut core = parse_core(inner, inner_start, vocab, style, case_insensitive)?;
    let after = skip_ws(inner, core.end);
    if after < close {
        trailing(
            inner,
            core.end,
            close,
            case_insensitive,
            &mut core.diagnostics,
        );
    }
    let end = close + 1;
    check_length(from, end, &mut core.diagnostics);
    Some(core.marking(from, end, skip_ws(s, end)))
}

/// The canonical text of a marking, as markgate writes it.
pub fn render(
    uk_prefix: bool,
    level: usize,
    qualifiers: &[usize],
    vocab: &Vocabulary,
    style: UkStyle,
) -> String {
    let mut out = String::new();
    if uk_prefix {
        out.push_str("UK ");
    }
    out.push_str(vocab.levels.get(level).map_or("", |l| l.name.as_str()));
    let mut ordered: Vec<usize> = qualifiers.to_vec();
    if style == UkStyle::Gsc {
        ordered.sort_by_key(|&q| vocab.qualifiers.get(q).map_or(1, |q| gsc_rank(q.kind)));
    }
    let sep = match style {
        UkStyle::Gpms => " - ",
        UkStyle::Gsc => " ",
    };
    for q in ordered {
        if let Some(q) = vocab.qualifiers.get(q) {
            out.push_str(sep);
            out.push_str(&q.name);
        }
    }
    out
}

/// The entry points of one UK scheme (`uk_gpms`, `uk_gsc`): this grammar with the scheme's
/// [`UkStyle`] fixed, so the two modules cannot drift apart.
macro_rules! scheme_entry_points {
    ($style:expr) => {
        use super::uk::{self, UkMarking};
        use super::{Diagnostic, Vocabulary};

        /// Parse a label header value; see [`uk::parse_header`].
        pub fn parse_header(value: &str, vocab: &Vocabulary) -> Result<UkMarking, Vec<Diagnostic>> {
            uk::parse_header(value, vocab, $style)
        }

        /// Parse a subject marking at `from` (prefix form); see [`uk::parse_subject_prefix`].
        pub fn parse_subject_prefix(
            subject: &str,
            from: usize,
            vocab: &Vocabulary,
            case_insensitive: bool,
        ) -> Option<UkMarking> {
            uk::parse_subject_prefix(subject, from, vocab, $style, case_insensitive)
        }

        /// Parse a bracketed subject marking at `from`; see [`uk::parse_subject_bracketed`].
        pub fn parse_subject_bracketed(
            subject: &str,
            from: usize,
            vocab: &Vocabulary,
            case_insensitive: bool,
        ) -> Option<UkMarking> {
            uk::parse_subject_bracketed(subject, from, vocab, $style, case_insensitive)
        }

        /// The canonical text markgate writes for a parsed marking.
        pub fn render(m: &UkMarking, vocab: &Vocabulary) -> String {
            uk::render(m.uk_prefix, m.level, &m.qualifiers, vocab, $style)
        }
    };
}
pub(super) use scheme_entry_points;

/// GSC order: caveats and handling instructions before descriptors.
pub(crate) fn gsc_rank(kind: QualifierKind) -> u8 {
    match kind {
        QualifierKind::Caveat | QualifierKind::Handling => 0,
        QualifierKind::Descriptor => 1,
    }
}

struct Core {
    uk_prefix: bool,
    level: usize,
    qualifiers: Vec<usize>,
    end: usize,
    diagnostics: Vec<Diagnostic>,
}

impl Core {
    /// The marking this core reads as, found at `start..end`, the subject text from `rest`.
    fn marking(self, start: usize, end: usize, rest: usize) -> UkMarking {
        UkMarking {
            uk_prefix: self.uk_prefix,
            level: self.level,
            qualifiers: self.qualifiers,
            start,
            end,
            rest,
            diagnostics: self.diagnostics,
        }
    }
}

fn parse_core(s: &[u8], pos: usize, vocab: &Vocabulary, style: UkStyle, ci: bool) -> Option<Core> {
    let mut diagnostics = Vec::new();
    let mut i = pos;
    let mut uk_prefix = false;
    // "UK " prefix, only when a level follows (so "UK news: …" is not a marking).
    if let Some((after, case_diff, _)) = match_phrase(s, i, "UK", ci)
        && s.get(after) == Some(&b' ')
        && best_level(s, after + 1, vocab, ci).is_some()
    {
        if case_diff {
            diagnostics.push(Diagnostic::new("uk.case", i, "`UK` prefix not in capitals"));
        }
        uk_prefix = true;
        i = after + 1;
    }
    let (level, end, m) = best_level(s, i, vocab, ci)?;
    note_variant(
        &mut diagnostics,
        i,
        m,
        vocab.levels.get(level).map_or("", |l| &l.name),
    );
    i = end;

    let mut qualifiers: Vec<usize> = Vec::new();
    loop {
        let sep_start = i;
        let k = skip_sep(s, i);
        if k == i || k >= s.len() {
            break;
        }
        let Some((q, qend, m)) = best_qualifier(s, k, vocab, ci) else {
            break;
        };
        if &s[sep_start..k] != style.separator() {
            diagnostics.push(Diagnostic::new(
                "uk.separator",
                sep_start,
                format!(
                    "separator `{}` before `{}`, the scheme writes `{}`",
                    lossy(&s[sep_start..k]),
                    vocab.qualifiers[q].name,
                    lossy(style.separator())
                ),
            ));
        }
        note_variant(&mut diagnostics, k, m, &vocab.qualifiers[q].name);
        let info = &vocab.qualifiers[q];
        if qualifiers.contains(&q) {
            diagnostics.push(Diagnostic::new(
                "uk.qualifier.duplicate",
                k,
                format!("`{}` appears twice", info.name),
            ));
        } else {
            if let Some(allowed) = &info.levels
                && !allowed.contains(&level)
            {
                diagnostics.push(Diagnostic::new(
                    "uk.qualifier.level",
                    k,
                    format!(
                        "`{}` may not be used with {}",
                        info.name,
                        vocab.levels.get(level).map_or("", |l| l.name.as_str())
                    ),
                ));
            }
            if style == UkStyle::Gsc
                && let Some(&prev) = qualifiers.last()
                && gsc_rank(vocab.qualifiers[prev].kind) > gsc_rank(info.kind)
            {
                diagnostics.push(Diagnostic::new(
                    "uk.order",
                    k,
                    format!(
                        "`{}` after the descriptor `{}`; caveats and handling instructions come first",
                        info.name, vocab.qualifiers[prev].name
                    ),
                ));
            }
            qualifiers.push(q);
        }
        i = qend;
    }
    Some(Core {
        uk_prefix,
        level,
        qualifiers,
        end: i,
        diagnostics,
    })
}

#[derive(Clone, Copy)]
struct MatchInfo {
    case_diff: bool,
    spelling_diff: bool,
}

fn note_variant(diags: &mut Vec<Diagnostic>, at: usize, m: MatchInfo, canonical: &str) {
    if m.case_diff {
        diags.push(Diagnostic::new(
            "uk.case",
            at,
            format!("`{canonical}` not written in capitals"),
        ));
    }
    if m.spelling_diff {
        diags.push(Diagnostic::new(
            "uk.spelling",
            at,
            format!("spacing or hyphens differ from `{canonical}`"),
        ));
    }
}

fn best_level(
    s: &[u8],
    pos: usize,
    vocab: &Vocabulary,
    ci: bool,
) -> Option<(usize, usize, MatchInfo)> {
    let names = vocab.levels.iter().map(|l| (&l.name, &l.aliases));
    best_of(names, s, pos, ci)
}

fn best_qualifier(
    s: &[u8],
    pos: usize,
    vocab: &Vocabulary,
    ci: bool,
) -> Option<(usize, usize, MatchInfo)> {
    let names = vocab.qualifiers.iter().map(|q| (&q.name, &q.aliases));
    best_of(names, s, pos, ci)
}

/// The best match at `pos` among vocabulary entries (each a name and its aliases): the index
/// of the entry, where the match ends, and how it matched.
fn best_of<'v>(
    entries: impl Iterator<Item = (&'v String, &'v Vec<String>)>,
    s: &[u8],
    pos: usize,
    ci: bool,
) -> Option<(usize, usize, MatchInfo)> {
    let mut best: Option<(usize, usize, MatchInfo)> = None;
    for (idx, (name, aliases)) in entries.enumerate() {
        for phrase in std::iter::once(name).chain(aliases.iter()) {
            consider(&mut best, idx, s, pos, phrase, ci);
        }
    }
    best
}

/// Keep the longest match; on equal length prefer the one read exactly.
fn consider(
    best: &mut Option<(usize, usize, MatchInfo)>,
    idx: usize,
    s: &[u8],
    pos: usize,
    phrase: &str,
    ci: bool,
) {
    if let Some((end, case_diff, spelling_diff)) = match_phrase(s, pos, phrase, ci) {
        let m = MatchInfo {
            case_diff,
            spelling_diff,
        };
        let exact = !case_diff && !spelling_diff;
        let better = match best {
            None => true,
            Some((_, bend, bm)) => {
                end > *bend || (end == *bend && exact && (bm.case_diff || bm.spelling_diff))
            }
        };
        if better {
            *best = Some((idx, end, m));
        }
    }
}

/// Match `phrase` at `s[pos..]`, ending at a word boundary. Returns (end, case differed,
/// spacing/hyphens differed).
fn match_phrase(s: &[u8], pos: usize, phrase: &str, ci: bool) -> Option<(usize, bool, bool)> {
    let p = phrase.as_bytes();
    if p.is_empty() {
        return None;
    }
    let (mut i, mut j) = (pos, 0);
    let (mut case_diff, mut spelling_diff) = (false, false);
    while j < p.len() {
        if matches!(p[j], b' ' | b'-') {
            let pj = j + p[j..]
                .iter()
                .take_while(|b| matches!(b, b' ' | b'-'))
                .count();
            let si = skip_sep(s, i);
            if si == i {
                return None;
            }
            if s[i..si] != p[j..pj] {
                spelling_diff = true;
            }
            i = si;
            j = pj;
        } else {
            let sc = *s.get(i)?;
            if sc != p[j] {
                if ci && sc.eq_ignore_ascii_case(&p[j]) {
                    case_diff = true;
                } else {
                    return None;
                }
            }
            i += 1;
            j += 1;
        }
    }
    if s.get(i)
        .is_some_and(|&b| b.is_ascii_alphanumeric() || b >= 0x80)
    {
        return None;
    }
    Some((i, case_diff, spelling_diff))
}

/// After the marking in a subject: `: text` (canonical), end of subject, or a variant
/// (` - text`, ` : text`, `:text`). Returns where the subject text begins, or `None` when what
/// follows means this was not a marking at all ("RESTRICTED access to the car park").
fn terminator(s: &[u8], end: usize, diags: &mut Vec<Diagnostic>) -> Option<usize> {
    if end >= s.len() {
        return Some(end);
    }
    let ws = skip_ws(s, end);
    if s.get(ws) == Some(&b':') {
        let after = ws + 1;
        let text = skip_ws(s, after);
        let canonical = ws == end && (after >= s.len() || s[after] == b' ');
        if !canonical {
            diags.push(Diagnostic::new(
                "uk.terminator",
                end,
                "the marking should be followed by `: `",
            ));
        }
        return Some(text);
    }
    if ws > end && s.get(ws) == Some(&b'-') {
        let text = skip_ws(s, ws + 1);
        if text > ws + 1 {
            diags.push(Diagnostic::new(
                "uk.terminator",
                end,
                "` - ` after the marking; the scheme writes `: `",
            ));
            return Some(text);
        }
    }
    if ws >= s.len() {
        return Some(ws);
    }
    None
}

/// A run of separator characters followed by capitals (and digits, spaces, `-`, `/`, `&`) up to
/// `until`: the position of `until`, if so.
fn unknown_segment(s: &[u8], at: usize, until: u8) -> Option<usize> {
    let k = skip_sep(s, at);
    if k == at {
        return None;
    }
    let mut i = k;
    let mut letters = 0;
    while i < s.len() && s[i] != until {
        let b = s[i];
        if b.is_ascii_uppercase() {
            letters += 1;
        } else if !(b.is_ascii_digit() || matches!(b, b' ' | b'-' | b'/' | b'&')) {
            return None;
        }
        i += 1;
    }
    (i < s.len() && letters >= 2).then_some(i)
}

/// Text after a marking in a header or brackets: an unknown qualifier when it looks like one,
/// otherwise trailing junk. Returns the new end of the marking.
fn trailing(s: &[u8], at: usize, limit: usize, ci: bool, diags: &mut Vec<Diagnostic>) -> usize {
    let seg = &s[at..limit];
    let text = lossy(trim_sep(seg));
    // A word after a separator, in capitals (or any case where the marking is read without
    // regard to case), is an attempt at a qualifier; anything else is stray text.
    let looks_like_word = skip_sep(s, at) > at
        && seg.iter().any(|b| b.is_ascii_alphabetic())
        && seg
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b' ' | b'\t' | b'-' | b'/' | b'&'))
        && (ci || seg.iter().all(|b| !b.is_ascii_lowercase()));
    if looks_like_word {
        diags.push(Diagnostic::new(
            "uk.qualifier.unknown",
            at,
            format!("`{text}` is not a descriptor, caveat or handling instruction of this scheme"),
        ));
    } else {
        diags.push(Diagnostic::new(
            "uk.trailing",
            at,
            format!("unrecognised text `{text}` after the marking"),
        ));
    }
    trim_end_ws(s, at, limit)
}

fn check_length(start: usize, end: usize, diags: &mut Vec<Diagnostic>) {
    if end.saturating_sub(start) > MAX_LEN {
        diags.push(Diagnostic::new(
            "uk.length",
            start,
            format!(
                "marking is {} characters, at most {MAX_LEN} allowed",
                end - start
            ),
        ));
    }
}

fn skip_ws(s: &[u8], mut i: usize) -> usize {
    while i < s.len() && matches!(s[i], b' ' | b'\t' | b'\r' | b'\n') {
        i += 1;
    }
    i
}

fn skip_sep(s: &[u8], mut i: usize) -> usize {
    while i < s.len() && matches!(s[i], b' ' | b'\t' | b'-') {
        i += 1;
    }
    i
}

fn trim_end_ws(s: &[u8], start: usize, mut end: usize) -> usize {
    while end > start && matches!(s[end - 1], b' ' | b'\t') {
        end -= 1;
    }
    end
}

fn trim_sep(s: &[u8]) -> &[u8] {
    let a = s
        .iter()
        .position(|b| !matches!(b, b' ' | b'\t' | b'-'))
        .unwrap_or(s.len());
    let z = s
        .iter()
        .rposition(|b| !matches!(b, b' ' | b'\t' | b'-'))
        .map_or(a, |p| p + 1);
    &s[a..z.max(a)]
}

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}
