//! The values the HTML page and the Markdown report write alike: a missing value as a dash, a
//! latency, the chain's `seq` range, a problem's kind and `seq`, a control's rules. Each
//! renderer passes its own escaper, so the two formats cannot drift apart in what they say.
//!
//! Must not: lay anything out or escape on its own: markup belongs to `html` and `md`.

use super::super::verify::Problem;
use super::{ChainResult, ControlRow, human_duration};

/// A renderer's escaper: makes text safe where that format writes it.
pub(super) type Escape = fn(&str) -> String;

/// The value escaped, or `—` when there is none.
pub(super) fn or_dash(v: &Option<String>, esc: Escape) -> String {
    v.as_deref().map_or_else(|| "—".to_string(), esc)
}

/// A duration in seconds for people, or `—`.
pub(super) fn secs(v: Option<f64>) -> String {
    v.map_or_else(|| "—".to_string(), human_duration)
}

/// `seq A to B`, or `no records`.
pub(super) fn seq_range(c: &ChainResult) -> String {
    match (c.first_seq, c.last_seq) {
        (Some(a), Some(b)) => format!("seq {a} to {b}"),
        _ => "no records".into(),
    }
}

/// The problem's kind in lowercase (`hashmismatch`, …).
pub(super) fn kind(p: &Problem) -> String {
    format!("{:?}", p.kind).to_lowercase()
}

/// ` (seq N)` when the problem names a `seq`, else nothing.
pub(super) fn seq_note(p: &Problem) -> String {
    p.seq.map(|q| format!(" (seq {q})")).unwrap_or_default()
}

/// The rules that enforce a control, escaped, or a note that none does.
pub(super) fn rules(r: &ControlRow, esc: Escape) -> String {
    if r.rules.is_empty() {
        "— (no rule names this control)".to_string()
    } else {
        esc(&r.rules.join(", "))
    }
}
