//! Near-misses: subject text that real clients write and that looks like a marking without
//! being one the policy reads. Each becomes a malformed marking with a clear diagnostic, so
//! the `malformed` rule decides (usually: refuse outbound, tell the sender how to mark it),
//! and is never interpreted as the level it resembles:
//!
//! - `uk.near-miss.case`: a whole GPMS/GSC marking in lower case (`restricted: …`,
//!   `protect - personal: …`), as Outlook rules write them, when the policy reads subject
//!   markings in capitals only. Ordinary words are not caught: only text that would be a
//!   complete, valid marking in capitals, ended by `:` or in brackets.
//! - `uk.near-miss.epms`: an Australian `[SEC=…]` marking under a UK scheme.
//! - `uk.near-miss.duplicate` / `epms.near-miss.duplicate`: the same marker glued to itself
//!   (`[SEC=OFFICIAL][SEC=OFFICIAL]`, `[RESTRICTED][RESTRICTED]`) or a level written twice
//!   inside one marking (`RESTRICTED RESTRICTED: …`), as a rule or add-in that runs twice
//!   writes them. Markings stacked with a space or a reply prefix between (`RE: RESTRICTED:
//!   RE: RESTRICTED:`, `… [SEC=OFFICIAL] [SEC=OFFICIAL]`, which clients produce on every
//!   reply) are not near-misses: the rewrite collapses them into one.
//!
//! The diagnostics are never accepted (`read.accept` cannot tolerate them). Must not: change a
//! marking found by the grammar other than marking duplicates malformed.

use crate::policy::facts::{FoundMarking, MarkingSource, MarkingStatus};
use crate::policy::labels::uk::{self, UkStyle};
use crate::policy::labels::{self, Diagnostic, Grammar};
use crate::policy::{Policy, SubjectForm};

/// Add the near-misses of a decoded subject to the markings found in it.
pub fn find(policy: &Policy, subject: &str, found: &mut Vec<FoundMarking>) {
    duplicates(policy, found);
    if policy.scheme.grammar == Grammar::AuEpms {
        return;
    }
    if let Some(start) = subject.find("[SEC=") {
        let end = subject[start..]
            .find(']')
            .map_or(subject.len(), |e| start + e + 1);
        found.push(near(
            SubjectForm::Bracketed,
            subject,
            start..end,
            "uk.near-miss.epms",
            format!(
                "`{}` is an Australian EPMS marking; this gateway reads {} markings",
                &subject[start..end],
                policy.scheme.name
            ),
        ));
    }
    if !policy.read.subject_case_insensitive {
        lower_case(policy, subject, found);
    }
}

fn lower_case(policy: &Policy, subject: &str, found: &mut Vec<FoundMarking>) {
    let at = labels::reply_chain_end(subject);
    if found
        .iter()
        .any(|m| m.source.is_subject() && m.range.as_ref().is_some_and(|r| r.start == at))
    {
        return; // a marking the grammar read starts here
    }
    let rest = &subject[at..];
    let forms = &policy.read.subject_forms;
    let (form, text, len) = if let Some(inner) = rest.strip_prefix('[')
        && forms.contains(&SubjectForm::Bracketed)
        && let Some(close) = inner.find(']')
    {
        (SubjectForm::Bracketed, &inner[..close], close + 2)
    } else if forms.contains(&SubjectForm::Prefix)
        && let Some(colon) = rest.find(':')
    {
        (SubjectForm::Prefix, &rest[..colon], colon)
    } else {
        return;
    };
    let lower = text.chars().any(|c| c.is_alphabetic())
        && !text.chars().any(|c| c.is_uppercase())
        && text.len() <= 128;
    if !lower {
        return;
    }
    let style = if policy.scheme.grammar == Grammar::UkGsc {
        UkStyle::Gsc
    } else {
        UkStyle::Gpms
    };
    let upper = text.to_uppercase();
    let Ok(m) = uk::parse_header(&upper, &policy.scheme.vocab, style) else {
        return;
    };
    // Only a whole, otherwise faultless marking (case aside) is a near-miss.
    if m.diagnostics.iter().any(|d| d.code != "uk.case") {
        return;
    }
    found.push(near(
        form,
        subject,
        at..at + len,
        "uk.near-miss.case",
        format!(
            "`{text}` is a {} marking in lower case; markings are written in capitals ({})",
            policy.scheme.name,
            uk::render(
                m.uk_prefix,
                m.level,
                &m.qualifiers,
                &policy.scheme.vocab,
                style
            )
        ),
    ));
}

fn duplicates(policy: &Policy, found: &mut [FoundMarking]) {
    let code = if policy.scheme.grammar == Grammar::AuEpms {
        "epms.near-miss.duplicate"
    } else {
        "uk.near-miss.duplicate"
    };
    let mut prev: Option<(String, usize)> = None;
    for m in found.iter_mut().filter(|m| m.source.is_subject()) {
        let (Some(range), Some(remove)) = (m.range.clone(), m.remove_range.clone()) else {
            continue;
        };
        if let Some((raw, end)) = &prev
            && *raw == m.raw
            && *end <= range.start
            && *end == range.start
        {
            let msg = format!(
                "`{}` written twice in a row; a marking is written once",
                m.raw
            );
            m.diagnostics.push(Diagnostic::new(code, range.start, msg));
            m.rejected_codes.push(code);
            m.status = MarkingStatus::Malformed;
        }
        let _ = remove;
        prev = Some((m.raw.clone(), range.end));
    }
}

fn near(
    form: SubjectForm,
    subject: &str,
    range: std::ops::Range<usize>,
    code: &'static str,
    message: String,
) -> FoundMarking {
    let range = range.start.min(subject.len())..range.end.min(subject.len());
    FoundMarking {
        source: MarkingSource::Subject { form },
        raw: subject.get(range.clone()).unwrap_or("").to_owned(),
        range: Some(range),
        // Left in the subject: markgate never rewrites text it did not read as a marking.
        remove_range: None,
        status: MarkingStatus::Malformed,
        label: None,
        diagnostics: vec![Diagnostic::new(code, 0, message)],
        rejected_codes: vec![code],
    }
}
