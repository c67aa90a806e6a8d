//! UK Government Security Classifications 2014+: `OFFICIAL-SENSITIVE PERSONAL DATA`,
//! `UK OFFICIAL-SENSITIVE RECIPIENTS ONLY COMMERCIAL`. Parts are separated by one space, and
//! caveats and handling instructions come before descriptors (`uk.order`). Thin entry points over
//! the shared grammar in [`super::uk`], fixing the scheme's style.

use super::uk::{self, UkMarking, UkStyle};
use super::{Diagnostic, Vocabulary};

const STYLE: UkStyle = UkStyle::Gsc;

/// Parse a label header value; see [`uk::parse_header`].
pub fn parse_header(value: &str, vocab: &Vocabulary) -> Result<UkMarking, Vec<Diagnostic>> {
    uk::parse_header(value, vocab, STYLE)
}

/// Parse a subject marking at `from` (prefix form); see [`uk::parse_subject_prefix`].
pub fn parse_subject_prefix(
    subject: &str,
    from: usize,
    vocab: &Vocabulary,
    case_insensitive: bool,
) -> Option<UkMarking> {
    uk::parse_subject_prefix(subject, from, vocab, STYLE, case_insensitive)
}

/// Parse a bracketed subject marking at `from`; see [`uk::parse_subject_bracketed`].
pub fn parse_subject_bracketed(
    subject: &str,
    from: usize,
    vocab: &Vocabulary,
    case_insensitive: bool,
) -> Option<UkMarking> {
    uk::parse_subject_bracketed(subject, from, vocab, STYLE, case_insensitive)
}

/// The canonical text markgate writes for a parsed marking.
pub fn render(m: &UkMarking, vocab: &Vocabulary) -> String {
    uk::render(m.uk_prefix, m.level, &m.qualifiers, vocab, STYLE)
}
