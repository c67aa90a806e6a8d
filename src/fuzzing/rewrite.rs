//! Fuzz bodies for message inspection and the rewrite round trip, and the properties the
//! golden and corpus tests check with them:
//!
//! - inspect never panics, whatever the bytes;
//! - the output of `apply` parses with mail-parser;
//! - every non-text part (attachments, related resources, signatures, forwarded messages) is
//!   byte-identical in the output;
//! - every part that got the disclaimer carries it exactly once;
//! - planning the same request against the output changes nothing (apply twice == apply once).
//!
//! Used by `fuzz/` (targets `inspect` and `rewrite_roundtrip`) and by `tests/rewrite_*.rs`.

use crate::inspect::mime::{self, MimeShape, PartRole};
use crate::rewrite::{
    self, DisclaimerEdit, DisclaimerOutcome, EditPlan, LabelHeader, Placement, RewriteRequest,
    SignedAction, SubjectEdit, SubjectPosition,
};

/// The disclaimer the shipped UK GPMS policy adds.
pub const GPMS_DISCLAIMER: &str = "Communications sent to or from this organisation may be subject to recording and/or monitoring in accordance with relevant legislation.";

/// The request the fuzz targets use: label header, prefix subject marking, disclaimer appended,
/// signed mail wrapped (the path that changes the most).
pub fn default_request() -> RewriteRequest {
    RewriteRequest {
        label_header: Some(LabelHeader {
            name: "X-Protective-Marking".into(),
            value: "RESTRICTED".into(),
        }),
        strip_headers: vec!["X-Markgate-Forged".into()],
        subject: Some(SubjectEdit::new("RESTRICTED", SubjectPosition::Prefix)),
        disclaimer: Some(DisclaimerEdit {
            text: GPMS_DISCLAIMER.into(),
            html: None,
            placement: Placement::Append,
            marker: String::new(),
            signed_action: SignedAction::Wrap,
        }),
        extra_headers: Vec::new(),
    }
}

/// Fuzz target body: inspection of arbitrary bytes must not panic.
pub fn fuzz_inspect(data: &[u8]) {
    super::contain_parser_panics();
    let shape = mime::analyze(data, Some(GPMS_DISCLAIMER));
    let _ = rewrite::headers_from_raw(data, shape.body_offset);
    for p in &shape.parts {
        let _ = mime::decode_part_text(data, p);
    }
}

/// Fuzz target body: the rewrite round trip must hold its properties; a violation panics.
pub fn fuzz_rewrite_roundtrip(data: &[u8]) {
    super::contain_parser_panics();
    for request in [default_request(), prepend_request()] {
        if let Err(e) = check_roundtrip(data, &|_| request.clone()) {
            panic!("rewrite round trip: {e}");
        }
    }
}

fn prepend_request() -> RewriteRequest {
    let mut r = default_request();
    r.subject = Some(SubjectEdit::new("[SEC=OFFICIAL]", SubjectPosition::Suffix));
    if let Some(d) = &mut r.disclaimer {
        d.placement = Placement::Prepend;
        d.signed_action = SignedAction::Skip;
    }
    r
}

/// What a successful round trip produced.
#[derive(Debug)]
pub struct RoundTrip {
    pub shape: MimeShape,
    pub plan: EditPlan,
    pub output: Vec<u8>,
}

/// Rewrite `raw` with the request `request_for(raw)` builds (requests carry message-specific
/// facts such as the byte ranges of subject markings, so the second pass asks again for the
/// output) and check every round-trip property. Returns the output, or a description of the
/// first property that failed.
pub fn check_roundtrip(
    raw: &[u8],
    request_for: &dyn Fn(&[u8]) -> RewriteRequest,
) -> Result<RoundTrip, String> {
    let request = &request_for(raw);
    let (shape, plan, output) =
        rewrite::rewrite_message(request, raw).map_err(|e| format!("request refused: {e}"))?;

    if shape.parsed {
        // Under cargo-fuzz, mail-parser's debug assertions can fire on malformed structure (see
        // `contain_parser_panics`); that is the parser's own complaint when it fires on the
        // input as well, and ours to explain when only our output provokes it.
        let parses = |m: &[u8]| {
            std::panic::catch_unwind(|| mail_parser::MessageParser::new().parse(m).is_some())
        };
        match parses(&output) {
            Ok(true) => {}
            Ok(false) => return Err("output does not parse".into()),
            Err(_) if parses(raw).is_err() => {}
            Err(_) => return Err("the parser panics on the output but not on the input".into()),
        }
    }

    let marker = request
        .disclaimer
        .as_ref()
        .map(|d| mime::normalize_marker(d.effective_marker()));
    let out_shape = mime::analyze(
        &output,
        request.disclaimer.as_ref().map(|d| d.effective_marker()),
    );
    let wrapped = plan
        .disclaimer
        .iter()
        .any(|o| matches!(o, DisclaimerOutcome::Wrapped { .. }));

    // Non-text parts byte-identical.
    if wrapped {
        if !wrapped_verbatim(&plan, &output, raw) {
            return Err("wrapped output does not contain the original message verbatim".into());
        }
    } else if plan.body.is_some() {
        let before = untouched_parts(raw, &shape);
        let after = untouched_parts(&output, &out_shape);
        if before != after {
            return Err(format!(
                "non-text parts differ: {} before, {} after",
                before.len(),
                after.len()
            ));
        }
    }

    // The disclaimer exactly once where it was added.
    if let Some(marker) = &marker {
        for o in &plan.disclaimer {
            let part = match o {
                DisclaimerOutcome::Added { part, .. } => Some(*part),
                DisclaimerOutcome::AddedNewPart | DisclaimerOutcome::Wrapped { .. } => {
                    out_shape.text_parts.first().copied()
                }
                _ => continue,
            };
            let Some(part) = part.and_then(|p| out_shape.parts.get(p)) else {
                return Err(format!("edited part missing in the output ({o:?})"));
            };
            let text = mime::decode_part_text(&output, part).text;
            let n = mime::normalize_text(&text, part.is_html())
                .matches(marker.as_str())
                .count();
            if n != 1 {
                return Err(format!("disclaimer found {n} times after {o:?}"));
            }
        }
    }

    // Idempotence.
    // A plan that must be rejected still says so the second time; only edits must settle.
    let (_, again, output2) = rewrite::rewrite_message(&request_for(&output), &output)
        .map_err(|e| format!("second pass: {e}"))?;
    if !again.header_ops.is_empty() || again.body.is_some() {
        return Err(format!(
            "second pass is not empty: {:?} body={}",
            again.header_ops,
            again.body.is_some()
        ));
    }
    if output2 != output {
        return Err("second apply changed the message".into());
    }
    Ok(RoundTrip {
        shape,
        plan,
        output,
    })
}

/// The bytes of every part markgate must never touch, in document order.
pub fn untouched_parts<'a>(raw: &'a [u8], shape: &MimeShape) -> Vec<&'a [u8]> {
    shape
        .parts
        .iter()
        .filter(|p| {
            matches!(
                p.role,
                PartRole::Attachment
                    | PartRole::RelatedResource
                    | PartRole::Rfc822
                    | PartRole::Signature
                    | PartRole::Protected
            ) && p.parent.is_some()
        })
        .map(|p| raw.get(p.full_range()).unwrap_or_default())
        .collect()
}

/// The wrapped output holds the original at the place the plan put it.
fn wrapped_verbatim(plan: &EditPlan, output: &[u8], raw: &[u8]) -> bool {
    let Some(body) = &plan.body else {
        return false;
    };
    let Some(rewrite::Segment::New(prefix)) = body.segments.first() else {
        return false;
    };
    let start = output.len().saturating_sub(body.len()) + prefix.len();
    output.get(start..start + raw.len()) == Some(raw)
}
