//! The bounded path for large messages against the in-memory path, as a property: for any
//! bytes, judging a reduced copy (`crate::large::reduce` → `mime::analyze_reduced` →
//! `rewrite::plan` → `large::check_plan` → `large::write_body`) gives exactly what judging
//! the whole message gives (`rewrite::rewrite_message`), or the reduced copy is refused.
//!
//! Used by `fuzz/` (target `large`), `tests/large_differential.rs` (every stored message and
//! generated large shapes) and `tests/fuzz_replay.rs`.

use std::io::Write as _;
use std::ops::Range;

use crate::inspect::mime;
use crate::large::{self, Limits};
use crate::rewrite::{
    self, DisclaimerEdit, LabelHeader, Placement, RewriteRequest, SignedAction, SubjectEdit,
    SubjectPosition,
};

use super::rewrite::GPMS_DISCLAIMER;

/// What one comparison found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compared {
    /// The request cannot be planned at all (the same on both paths).
    NotPlanned,
    /// `large::reduce` refused the message (it would be read whole).
    NotReducible,
    /// `analyze_reduced` or `check_plan` refused the reduced copy (it would be read whole).
    Refused,
    /// The reduced copy gave the same answer; with how many elided runs.
    Same { runs: usize },
}

/// Windows small enough that even short messages get elided runs: everything but the first
/// line end / last line of each body, or a little more.
pub fn tiny_limits() -> [Limits; 2] {
    [
        Limits {
            head: 0,
            tail: 0,
            min_run: 1,
            max_line: 64 * 1024,
            max_reduced: 64 << 20,
            max_in_memory: 64 << 20,
        },
        Limits {
            head: 200,
            tail: 100,
            min_run: 64,
            max_line: 64 * 1024,
            max_reduced: 64 << 20,
            max_in_memory: 64 << 20,
        },
    ]
}

/// Label, subject and disclaimer requests covering append/prepend, HTML, and the three
/// signed-mail actions.
pub fn requests() -> Vec<(&'static str, RewriteRequest)> {
    const MARKER: &str =
        "may be subject to recording and/or monitoring in accordance with relevant legislation";
    let disclaimer = |placement, signed_action, html: Option<&str>, marker: &str| DisclaimerEdit {
        text: GPMS_DISCLAIMER.into(),
        html: html.map(str::to_string),
        placement,
        marker: marker.into(),
        signed_action,
    };
    let base = |d| RewriteRequest {
        label_header: Some(LabelHeader {
            name: "X-Protective-Marking".into(),
            value: "PROTECT".into(),
        }),
        strip_headers: vec!["X-Markgate-Forged".into()],
        subject: Some(SubjectEdit::new("PROTECT", SubjectPosition::Prefix)),
        disclaimer: Some(d),
        extra_headers: Vec::new(),
    };
    vec![
        (
            "append, wrap signed",
            base(disclaimer(Placement::Append, SignedAction::Wrap, None, "")),
        ),
        (
            "prepend, html, skip signed",
            base(disclaimer(
                Placement::Prepend,
                SignedAction::Skip,
                Some(
                    "<p>Communications sent to or from this organisation may be subject to recording and/or monitoring in accordance with relevant legislation.</p>",
                ),
                MARKER,
            )),
        ),
        (
            "append, reject signed",
            base(disclaimer(
                Placement::Append,
                SignedAction::Reject,
                None,
                MARKER,
            )),
        ),
    ]
}

/// Compare both paths for one message, request and set of limits. `Err` describes a
/// difference (a bug).
pub fn differential(raw: &[u8], req: &RewriteRequest, limits: &Limits) -> Result<Compared, String> {
    let marker = req
        .disclaimer
        .as_ref()
        .map(|d| d.effective_marker().to_string());
    let marker = marker.as_deref();
    let Ok((shape, plan, output)) = rewrite::rewrite_message(req, raw) else {
        return Ok(Compared::NotPlanned);
    };
    let reduced = match large::reduce(raw, marker, limits) {
        Ok(Ok(r)) => r,
        Ok(Err(_)) => return Ok(Compared::NotReducible),
        Err(e) => return Err(format!("reading from memory failed: {e}")),
    };
    let Ok(shape2) = mime::analyze_reduced(&reduced.raw, marker, &reduced.parts) else {
        return Ok(Compared::Refused);
    };
    let headers = rewrite::headers_from_raw(&reduced.raw, shape2.body_offset);
    let plan2 = rewrite::plan(req, &headers, &reduced.raw, &shape2)
        .map_err(|e| format!("the reduced copy cannot be planned: {e}"))?;
    if large::check_plan(&plan2, &shape2, req, &reduced.elisions).is_err() {
        return Ok(Compared::Refused);
    }
    let same = |what: &str, a: String, b: String| {
        if a == b {
            Ok(())
        } else {
            Err(format!("{what} differs:\nwhole:   {a}\nreduced: {b}"))
        }
    };
    same(
        "header ops",
        format!("{:?}", plan.header_ops),
        format!("{:?}", plan2.header_ops),
    )?;
    same(
        "subject",
        format!("{:?}", plan.subject),
        format!("{:?}", plan2.subject),
    )?;
    same(
        "disclaimer",
        format!("{:?}", plan.disclaimer),
        format!("{:?}", plan2.disclaimer),
    )?;
    same(
        "must_reject",
        format!("{:?}", plan.must_reject),
        format!("{:?}", plan2.must_reject),
    )?;
    same(
        "facts",
        format!(
            "{:?} {:?} {:?}",
            shape.disclaimer_present, shape.security, shape.text_parts
        ),
        format!(
            "{:?} {:?} {:?}",
            shape2.disclaimer_present, shape2.security, shape2.text_parts
        ),
    )?;
    let expanded = large::expand(&reduced, &rewrite::apply(&plan2, &reduced.raw), raw);
    if expanded != output {
        return Err("the output message differs".into());
    }
    let body = plan.body.as_ref().map(|b| b.to_vec(raw));
    let body2 = match &plan2.body {
        None => None,
        Some(b) => {
            let mut out = Vec::new();
            let copy = |r: Range<u64>, o: &mut dyn std::io::Write| {
                let r = usize::try_from(r.start).unwrap_or(usize::MAX)
                    ..usize::try_from(r.end).unwrap_or(usize::MAX);
                o.write_all(raw.get(r).unwrap_or_default())
            };
            large::write_body(b, &reduced.raw, &reduced.elisions, &copy, &mut out)
                .map_err(|e| e.to_string())?;
            out.flush().map_err(|e| e.to_string())?;
            Some(out)
        }
    };
    if body != body2 {
        return Err("the streamed body differs".into());
    }
    Ok(Compared::Same {
        runs: reduced.elisions.len(),
    })
}

/// Fuzz target body: any difference panics.
pub fn fuzz_large(data: &[u8]) {
    super::contain_parser_panics();
    for (name, req) in requests() {
        for limits in tiny_limits() {
            if let Err(e) = differential(data, &req, &limits) {
                panic!("reduced copy vs whole message [{name}, {limits:?}]: {e}");
            }
        }
    }
}
