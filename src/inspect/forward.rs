//! Auto-forward evidence: which of the policy's `[[forward.signal]]`s appear in the headers.
//!
//! Each signal names a header (or a prefix such as `Resent-*`) and optionally a regular
//! expression its unfolded value must match; each signal counts once, however many headers
//! match it, and the evidence's score is the sum of the weights seen. decide() compares it
//! with `forward.threshold`. Background: `../shared/reference/markings.md` b.1–b.3.

use crate::policy::{ForwardEvidence, ForwardHit, Policy};

/// Longest header value kept in the evidence (audit records must stay small).
const MAX_VALUE: usize = 200;

/// Collect the evidence from the message headers (name, raw value as received).
pub fn evidence<'a, I>(policy: &Policy, headers: I) -> ForwardEvidence
where
    I: IntoIterator<Item = (&'a [u8], &'a [u8])>,
{
    let headers: Vec<(String, String)> = headers
        .into_iter()
        .map(|(n, v)| (String::from_utf8_lossy(n).trim().to_owned(), unfold(v)))
        .collect();
    let mut out = ForwardEvidence {
        threshold: policy.forward.threshold,
        ..ForwardEvidence::default()
    };
    for signal in &policy.forward.signals {
        let hit = headers.iter().find(|(name, value)| {
            let lname = name.to_ascii_lowercase();
            let name_ok = if signal.prefix {
                lname.starts_with(&signal.header)
            } else {
                lname == signal.header
            };
            name_ok && signal.matches.as_ref().is_none_or(|re| re.is_match(value))
        });
        if let Some((name, value)) = hit {
            out.score = out.score.saturating_add(signal.weight);
            out.hits.push(ForwardHit {
                signal: signal.id.clone(),
                header: name.clone(),
                value: value.chars().take(MAX_VALUE).collect(),
                weight: signal.weight,
            });
        }
    }
    out
}

/// Unfold (drop CR/LF) and trim a raw header value.
pub(crate) fn unfold(v: &[u8]) -> String {
    let s = String::from_utf8_lossy(v);
    let joined: String = s.chars().filter(|c| *c != '\r' && *c != '\n').collect();
    joined.trim().to_owned()
}
