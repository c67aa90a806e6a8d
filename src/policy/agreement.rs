//! One effective marking from many sources: the conflict rule across the subject, our label
//! header and vendor labels. Every source that carries a level is named when they disagree;
//! when they agree the message is labelled once (the write step writes one canonical marking
//! whatever the number of sources). Must not: choose the effective level (`decide` does, by
//! `read.precedence`).

use super::facts::{FoundMarking, MarkingSource};

/// `Some(detail)` naming every source and what it says, when the labelled markings of
/// different kinds of source (header, subject, each vendor) do not all say the same marking.
/// Disagreement inside one kind is the `multiple` situation, not this one.
pub fn conflict(labelled: &[&FoundMarking]) -> Option<String> {
    // The most restrictive label of each source kind, in first-seen order.
    let mut by_source: Vec<(String, &super::Label)> = Vec::new();
    for m in labelled {
        let Some(l) = m.label.as_ref() else { continue };
        let name = match &m.source {
            MarkingSource::Header { .. } => "header".to_owned(),
            MarkingSource::Subject { .. } => "subject".to_owned(),
            MarkingSource::Vendor { vendor, .. } => format!("{vendor} label"),
        };
        match by_source.iter_mut().find(|(n, _)| *n == name) {
            Some(slot) if l.level > slot.1.level => slot.1 = l,
            Some(_) => {}
            None => by_source.push((name, l)),
        }
    }
    let first = by_source.first()?.1;
    if by_source.iter().all(|(_, l)| l.same_marking(first)) {
        return None;
    }
    let parts: Vec<String> = by_source
        .iter()
        .map(|(n, l)| format!("{n} says `{}`", l.canonical))
        .collect();
    Some(parts.join(", "))
}
