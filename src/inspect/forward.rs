//! Auto-forward evidence: which of the policy's `[[forward.signal]]`s appear in the headers.
//!
//! Each signal names a header (or a prefix such as `Resent-*`) and optionally a regular
//! expression its unfolded value must match; each signal counts once, however many headers
//! match it, and the evidence's score is the sum of the weights seen. decide() compares it
//! with `forward.threshold`. Background: `../shared/reference/markings.md` b.1–b.3.

use std::borrow::Cow;

use crate::policy::{ForwardEvidence, ForwardHit, Policy};

/// Longest header value kept in the evidence (audit records must stay small).
const MAX_VALUE: usize = 200;

/// Collect the evidence from the message headers (name, raw value as received).
pub fn evidence<'a, I>(policy: &Policy, headers: I) -> ForwardEvidence
where
    I: IntoIterator<Item = (&'a [u8], &'a [u8])>,
{
    // Names are decoded and trimmed once per header (borrowed when they are UTF-8, as they
    // nearly always are), not once per signal and header; a value is unfolded only when some
    // signal's name matches its header.
    let headers: Vec<(&[u8], &[u8])> = headers.into_iter().collect();
    let names: Vec<Cow<'_, str>> = headers
        .iter()
        .map(|(n, _)| match super::utf8_lossy(n) {
            Cow::Borrowed(b) => Cow::Borrowed(b.trim()),
            Cow::Owned(o) => Cow::Owned(o.trim().to_owned()),
        })
        .collect();
    let mut values: Vec<Option<String>> = vec![None; headers.len()];
    let mut out = ForwardEvidence {
        threshold: policy.forward.threshold,
        ..ForwardEvidence::default()
    };
    for signal in &policy.forward.signals {
        let mut hit = None;
        for (i, name) in names.iter().enumerate() {
            // What `name.to_ascii_lowercase()` compared with `==` / `starts_with` would say.
            let head = signal.header.as_bytes();
            let name_ok = (name.len() == head.len() || signal.prefix && name.len() > head.len())
                && name
                    .bytes()
                    .zip(head)
                    .all(|(a, &b)| a.to_ascii_lowercase() == b);
            if !name_ok {
                continue;
            }
            let value = values[i].get_or_insert_with(|| unfold(headers[i].1));
            if signal.matches.as_ref().is_none_or(|re| re.is_match(value)) {
                hit = Some(i);
                break;
            }
        }
        if let Some(i) = hit {
            let value = values[i].as_deref().unwrap_or_default();
            out.score = out.score.saturating_add(signal.weight);
            out.hits.push(ForwardHit {
                signal: signal.id.clone(),
                header: names[i].clone().into_owned(),
                value: value.chars().take(MAX_VALUE).collect(),
                weight: signal.weight,
            });
        }
    }
    out
}

/// Unfold (drop CR/LF) and trim a raw header value.
pub(crate) fn unfold(v: &[u8]) -> String {
    let s = super::utf8_lossy(v);
    let joined: String = s.chars().filter(|c| *c != '\r' && *c != '\n').collect();
    joined.trim().to_owned()
}
