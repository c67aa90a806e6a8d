//! Rewrite: turn what the policy decided into a minimal, idempotent edit plan in milter terms,
//! and apply a plan to a raw message so tests and `markgate policy test` can show the exact
//! output.
//!
//! Input is a [`RewriteRequest`] (built by `filter.rs` from the policy's `Decision`), the header
//! list as the MTA delivered it, the raw message and its [`MimeShape`] from
//! [`crate::inspect::mime::analyze`] (the MIME tree is parsed once, there). Output is an
//! [`EditPlan`]: header operations with Postfix's index rules ([`headers`]), an optional new
//! body expressed as segments of the original plus new bytes (so a 50 MiB body is never copied
//! just to describe an edit), and an outcome for the subject and for every text part.
//!
//! Idempotence is the central promise: planning the same request against the output of
//! [`apply`] yields an empty plan. Pure: no I/O, no logging, never reads policy files.
//!
//! Read more: `shared/reference/milter-protocol.md` §7.3–§7.4 (index rules, body replacement),
//! `shared/reference/markings.md` §(d) (disclaimer pitfalls).

pub mod disclaimer;
pub mod headers;
pub mod subject;

use std::ops::Range;

use crate::inspect::mime::{self, LineEnding, MimeShape};

pub use disclaimer::{DisclaimerEdit, DisclaimerOutcome, Placement, SignedAction, SkipReason};
pub use headers::{HeaderList, HeaderOp, assemble_raw, encode_unstructured, headers_from_raw};
pub use subject::{SubjectEdit, SubjectPosition, decode_subject};

/// A header that must be present exactly once with exactly this value (the label header, or
/// shadow mode's "what would have happened" header).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabelHeader {
    pub name: String,
    /// The value, unfolded; markgate folds (and RFC 2047-encodes non-ASCII) when writing.
    pub value: String,
}

impl From<&crate::policy::decide::HeaderLabel> for LabelHeader {
    /// A further label header the decision asks for (the Purview `msip_labels`).
    fn from(h: &crate::policy::decide::HeaderLabel) -> Self {
        LabelHeader {
            name: h.name.clone(),
            value: h.value.clone(),
        }
    }
}

/// What the decision asks rewrite to do to one message.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RewriteRequest {
    /// Ensure this label header: added when missing, changed when different, duplicates
    /// removed.
    pub label_header: Option<LabelHeader>,
    /// Header names to delete wherever they occur (forged labels from outside). A name also
    /// ensured by `label_header` or `extra_headers` is not stripped (that would never settle).
    pub strip_headers: Vec<String>,
    /// The subject marking.
    pub subject: Option<SubjectEdit>,
    /// The monitoring disclaimer.
    pub disclaimer: Option<DisclaimerEdit>,
    /// Further headers to ensure, same semantics as `label_header`.
    pub extra_headers: Vec<LabelHeader>,
}

/// The request cannot be planned (these are policy/integration mistakes, not message faults).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    #[error("invalid header name {0:?}: expected printable ASCII without ':' or spaces")]
    InvalidHeaderName(String),
    #[error("header {name}: value contains a control character (CR, LF or NUL)")]
    InvalidHeaderValue { name: String },
    #[error(
        "disclaimer marker {marker:?} does not occur in the disclaimer {which} text, so it would be added again on every pass"
    )]
    MarkerNotInDisclaimer { marker: String, which: &'static str },
    #[error("the disclaimer text is empty")]
    EmptyDisclaimer,
    #[error("the subject marking is empty")]
    EmptyMarking,
}

/// What happened to the subject.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SubjectOutcome {
    /// No subject edit was requested.
    NotRequested,
    /// Already as wanted.
    Unchanged,
    /// Changed (or added when the message had none); decoded before and after.
    Changed { from: Option<String>, to: String },
    /// Signed/encrypted mail whose body is left alone: labelled by header only.
    SkippedProtected,
}

/// One piece of the new body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment {
    /// Bytes of the original raw message.
    Raw(Range<usize>),
    /// New bytes.
    New(Vec<u8>),
}

/// A new body: the concatenation of its segments. Send it with SMFIR_REPLBODY (in chunks).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BodyEdit {
    pub segments: Vec<Segment>,
}

impl BodyEdit {
    /// The body's pieces, borrowing the original message for unchanged stretches.
    pub fn chunks<'a>(&'a self, raw: &'a [u8]) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.segments.iter().map(move |s| match s {
            Segment::Raw(r) => raw.get(r.clone()).unwrap_or_default(),
            Segment::New(b) => b.as_slice(),
        })
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.segments
            .iter()
            .map(|s| match s {
                Segment::Raw(r) => r.len(),
                Segment::New(b) => b.len(),
            })
            .sum()
    }

    /// True when the new body is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The whole new body in one buffer.
    pub fn to_vec(&self, raw: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.len());
        for c in self.chunks(raw) {
            out.extend_from_slice(c);
        }
        out
    }
}

/// The plan for one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EditPlan {
    /// Header operations, to be sent in this order (before the body replacement).
    pub header_ops: Vec<HeaderOp>,
    /// The new body, when it changes.
    pub body: Option<BodyEdit>,
    /// Where the body starts in the raw message the plan was made for.
    pub body_offset: usize,
    /// Set when the request's signed/encrypted action is reject and the disclaimer is missing:
    /// the caller must refuse the message (5xx) and send none of the edits.
    pub must_reject: Option<&'static str>,
    pub subject: SubjectOutcome,
    /// One entry per message-text part (or one for the message), empty when no disclaimer was
    /// requested.
    pub disclaimer: Vec<DisclaimerOutcome>,
    /// Things worth recording that did not stop the plan.
    pub diagnostics: Vec<String>,
}

impl EditPlan {
    /// True when applying the plan would change nothing.
    pub fn is_empty(&self) -> bool {
        self.header_ops.is_empty() && self.body.is_none() && self.must_reject.is_none()
    }
}

fn valid_name(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|b| (33..=126).contains(&b) && b != b':')
}

fn check_header(name: &str, value: &str) -> Result<(), RequestError> {
    if !valid_name(name) {
        return Err(RequestError::InvalidHeaderName(name.to_string()));
    }
    if value.contains(['\r', '\n', '\0']) {
        return Err(RequestError::InvalidHeaderValue {
            name: name.to_string(),
        });
    }
    Ok(())
}

impl RewriteRequest {
    /// Check the request for mistakes that would make a plan wrong or non-idempotent.
    pub fn validate(&self) -> Result<(), RequestError> {
        for h in self.label_header.iter().chain(&self.extra_headers) {
            check_header(&h.name, &h.value)?;
        }
        for n in &self.strip_headers {
            if !valid_name(n) {
                return Err(RequestError::InvalidHeaderName(n.clone()));
            }
        }
        if let Some(s) = &self.subject {
            if s.marking.trim().is_empty() {
                return Err(RequestError::EmptyMarking);
            }
            check_header("Subject", &s.marking)?;
        }
        if let Some(d) = &self.disclaimer {
            if d.text.trim().is_empty() {
                return Err(RequestError::EmptyDisclaimer);
            }
            if !disclaimer_checked(d) {
                check_marker(d)?;
                remember_checked(d);
            }
        }
        Ok(())
    }
}

thread_local! {
    /// The last disclaimer this thread found to hold its marker (text, HTML, marker). Every
    /// message of a policy carries the same disclaimer, and searching it for its marker again
    /// cost more than comparing it with the one already checked.
    static CHECKED: std::cell::RefCell<Option<(String, Option<String>, String)>> =
        const { std::cell::RefCell::new(None) };
}

/// The disclaimer must hold its own marker (plain and HTML), or adding it would not be
/// idempotent: the next pass would not find it and add it again.
fn check_marker(d: &DisclaimerEdit) -> Result<(), RequestError> {
    let marker = mime::fold_marker(d.effective_marker());
    if !mime::marker_in_text(&d.text, false, &marker) {
        return Err(RequestError::MarkerNotInDisclaimer {
            marker: d.effective_marker().to_string(),
            which: "plain",
        });
    }
    if let Some(h) = &d.html
        && !mime::marker_in_text(h, true, &marker)
    {
        return Err(RequestError::MarkerNotInDisclaimer {
            marker: d.effective_marker().to_string(),
            which: "HTML",
        });
    }
    Ok(())
}

/// Whether `d` is, byte for byte, the disclaimer last found valid on this thread.
fn disclaimer_checked(d: &DisclaimerEdit) -> bool {
    CHECKED.with_borrow(|c| {
        c.as_ref()
            .is_some_and(|(t, h, m)| *t == d.text && *h == d.html && *m == d.marker)
    })
}

fn remember_checked(d: &DisclaimerEdit) {
    CHECKED.with_borrow_mut(|c| *c = Some((d.text.clone(), d.html.clone(), d.marker.clone())));
}

/// Plan the edits for one message.
///
/// `headers` is the header list as delivered by the milter (values LF-folded, no leading
/// space); `raw` is the whole message (headers + blank line + body) and `shape` its analysis.
pub fn plan<N: AsRef<[u8]>, V: AsRef<[u8]>>(
    request: &RewriteRequest,
    headers: &[(N, V)],
    raw: &[u8],
    shape: &MimeShape,
) -> Result<EditPlan, RequestError> {
    request.validate()?;
    let list = HeaderList::new(headers);
    let mut plan = EditPlan {
        header_ops: Vec::new(),
        body: None,
        body_offset: shape.body_offset.min(raw.len()),
        must_reject: None,
        subject: SubjectOutcome::NotRequested,
        disclaimer: Vec::new(),
        diagnostics: shape
            .diagnostics
            .iter()
            .map(|d| match d.part {
                Some(p) => format!("part {p}: {}: {}", d.code, d.detail),
                None => format!("{}: {}", d.code, d.detail),
            })
            .collect(),
    };

    // 1. Headers that must go, then those that must be there exactly once.
    let ensured: Vec<&LabelHeader> = request
        .label_header
        .iter()
        .chain(&request.extra_headers)
        .collect();
    for name in &request.strip_headers {
        if !ensured.iter().any(|h| h.name.eq_ignore_ascii_case(name)) {
            headers::strip(&mut plan.header_ops, &list, name);
        }
    }
    for h in &ensured {
        headers::ensure(&mut plan.header_ops, &list, &h.name, &h.value);
    }

    // 2. The disclaimer (decides whether the body is wrapped, which matters for the subject).
    let mut wrapped = false;
    if let Some(d) = &request.disclaimer {
        let work = disclaimer::plan_disclaimer(raw, shape, d);
        plan.diagnostics.extend(work.diagnostics);
        plan.disclaimer = work.outcomes;
        if let Some(kind) = plan.disclaimer.iter().find_map(|o| match o {
            DisclaimerOutcome::MustReject { kind } => Some(*kind),
            _ => None,
        }) {
            plan.must_reject = Some(kind);
        }
        if let Some(w) = work.wrap {
            wrapped = true;
            set_top_mime(
                &mut plan.header_ops,
                &list,
                &w.content_type,
                w.transfer_encoding,
            );
            plan.body = Some(BodyEdit {
                segments: vec![
                    Segment::New(w.prefix),
                    Segment::Raw(0..raw.len()),
                    Segment::New(w.suffix),
                ],
            });
        } else if !work.splices.is_empty() {
            plan.body = Some(splice_body(raw.len(), plan.body_offset, work.splices));
            top_part_headers(&mut plan.header_ops, &list, &work.top);
        }
    }

    // 3. The subject.
    if let Some(s) = &request.subject {
        let body_left_alone = shape.is_protected() && !wrapped;
        if body_left_alone && !s.on_signed {
            plan.subject = SubjectOutcome::SkippedProtected;
        } else {
            let current = list.first("Subject").map(decode_subject);
            let wanted = subject::normalized_subject(current.as_deref().unwrap_or(""), s);
            if current.as_deref() == Some(wanted.as_str()) {
                plan.subject = SubjectOutcome::Unchanged;
            } else {
                let value = encode_unstructured("Subject".len(), &wanted).into_bytes();
                plan.header_ops.push(if current.is_some() {
                    HeaderOp::Change {
                        index: 1,
                        name: "Subject".into(),
                        value,
                    }
                } else {
                    HeaderOp::Add {
                        name: "Subject".into(),
                        value,
                    }
                });
                plan.subject = SubjectOutcome::Changed {
                    from: current,
                    to: wanted,
                };
            }
        }
    }
    Ok(plan)
}

/// The body as original stretches and replacements.
fn splice_body(
    raw_len: usize,
    body_offset: usize,
    splices: Vec<(Range<usize>, Vec<u8>)>,
) -> BodyEdit {
    let mut segments = Vec::with_capacity(splices.len() * 2 + 1);
    let mut pos = body_offset;
    for (r, bytes) in splices {
        let start = r.start.clamp(pos, raw_len);
        if start > pos {
            segments.push(Segment::Raw(pos..start));
        }
        segments.push(Segment::New(bytes));
        pos = r.end.clamp(start, raw_len);
    }
    if pos < raw_len {
        segments.push(Segment::Raw(pos..raw_len));
    }
    BodyEdit { segments }
}

/// Top-level Content-Type/CTE/MIME-Version changes for a single-part message whose only part
/// was converted to UTF-8 or to quoted-printable.
fn top_part_headers(ops: &mut Vec<HeaderOp>, list: &HeaderList<'_>, top: &disclaimer::TopHeaders) {
    if !top.charset_utf8 && !top.quoted_printable {
        return;
    }
    if top.charset_utf8 {
        // mail-parser (and so inspect) reads the last Content-Type when there are several:
        // derive the new value from that one and leave exactly one.
        match list.values("Content-Type").last() {
            Some(v) => {
                let mut spaced = b" ".to_vec();
                spaced.extend_from_slice(v);
                let new = disclaimer::set_charset_param(&spaced, "utf-8");
                set_one(ops, list, "Content-Type", Some(&new[1..]));
            }
            None => ops.push(HeaderOp::Add {
                name: "Content-Type".into(),
                value: b"text/plain; charset=\"utf-8\"".to_vec(),
            }),
        }
    }
    if top.quoted_printable {
        set_one(
            ops,
            list,
            "Content-Transfer-Encoding",
            Some(b"quoted-printable"),
        );
    }
    if list.first("MIME-Version").is_none() {
        ops.push(HeaderOp::Add {
            name: "MIME-Version".into(),
            value: b"1.0".to_vec(),
        });
    }
}

/// The top-level MIME headers of a wrapped message.
fn set_top_mime(ops: &mut Vec<HeaderOp>, list: &HeaderList<'_>, ct: &str, cte: Option<&str>) {
    let ct_folded = ct.replacen("; ", ";\n ", 1);
    set_one(ops, list, "Content-Type", Some(ct_folded.as_bytes()));
    set_one(
        ops,
        list,
        "Content-Transfer-Encoding",
        cte.map(str::as_bytes),
    );
    if list.first("MIME-Version").is_none() {
        ops.push(HeaderOp::Add {
            name: "MIME-Version".into(),
            value: b"1.0".to_vec(),
        });
    }
}

/// Make `name` occur once with `value` (or not at all for `None`), as raw value text.
fn set_one(ops: &mut Vec<HeaderOp>, list: &HeaderList<'_>, name: &str, value: Option<&[u8]>) {
    let n = list.values(name).len();
    for index in (2..=n).rev() {
        ops.push(HeaderOp::Delete {
            index: index as u32,
            name: name.into(),
        });
    }
    match (n, value) {
        (0, Some(v)) => ops.push(HeaderOp::Add {
            name: name.into(),
            value: v.to_vec(),
        }),
        (0, None) => {}
        (_, Some(v)) => ops.push(HeaderOp::Change {
            index: 1,
            name: name.into(),
            value: v.to_vec(),
        }),
        (_, None) => ops.push(HeaderOp::Delete {
            index: 1,
            name: name.into(),
        }),
    }
}

/// Options for [`apply_with`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ApplyOptions {
    /// Model Postfix's own Received header (not in `raw`, not in the output) at INSHEADER
    /// position 0. True for Postfix; false for Sendmail.
    pub hidden_received: bool,
}

impl Default for ApplyOptions {
    fn default() -> Self {
        ApplyOptions {
            hidden_received: true,
        }
    }
}

/// Apply a plan to the raw message it was made for, as Postfix would: the exact output
/// message. Line ends of new header lines follow the input's convention.
pub fn apply(plan: &EditPlan, raw: &[u8]) -> Vec<u8> {
    apply_with(plan, raw, ApplyOptions::default())
}

/// [`apply`] with explicit MTA assumptions.
pub fn apply_with(plan: &EditPlan, raw: &[u8], options: ApplyOptions) -> Vec<u8> {
    let body_offset = plan.body_offset.min(raw.len());
    let eol = LineEnding::detect(raw).as_bytes();
    let block = &raw[..body_offset];
    let mut out = Vec::with_capacity(
        raw.len()
            + plan
                .body
                .as_ref()
                .map_or(0, |b| b.len().saturating_sub(raw.len() - body_offset))
            + 512,
    );
    let mut head = headers::apply_ops(block, &plan.header_ops, eol, options.hidden_received);
    let body_len = plan
        .body
        .as_ref()
        .map_or(raw.len() - body_offset, BodyEdit::len);
    let has_separator = headers::split_fields(block).iter().any(|f| f.is_separator);
    if !has_separator && body_len > 0 {
        head.extend_from_slice(eol);
    } else if body_len > 0 && !head.ends_with(b"\n") {
        // A separator line without its LF (a truncated input): complete it, or the body would
        // run into the header block.
        head.push(b'\n');
    }
    out.extend_from_slice(&head);
    match &plan.body {
        Some(b) => {
            for c in b.chunks(raw) {
                out.extend_from_slice(c);
            }
        }
        None => out.extend_from_slice(&raw[body_offset..]),
    }
    out
}

/// Everything in one call, for tests, fuzzing and `markgate policy test`: analyse, plan from
/// the headers in `raw`, apply. Returns the shape, the plan and the output message.
pub fn rewrite_message(
    request: &RewriteRequest,
    raw: &[u8],
) -> Result<(MimeShape, EditPlan, Vec<u8>), RequestError> {
    let marker = request
        .disclaimer
        .as_ref()
        .map(|d| d.effective_marker().to_string());
    let shape = mime::analyze(raw, marker.as_deref());
    let headers = headers_from_raw(raw, shape.body_offset);
    let plan = plan(request, &headers, raw, &shape)?;
    let out = apply(&plan, raw);
    Ok((shape, plan, out))
}

#[cfg(test)]
mod validate_tests {
    use super::*;
    use crate::rewrite::disclaimer::{Placement, SignedAction};

    fn request(text: &str, html: Option<&str>, marker: &str) -> RewriteRequest {
        RewriteRequest {
            disclaimer: Some(DisclaimerEdit {
                text: text.into(),
                html: html.map(Into::into),
                placement: Placement::Append,
                marker: marker.into(),
                signed_action: SignedAction::Skip,
            }),
            ..RewriteRequest::default()
        }
    }

    /// The remembered disclaimer only spares the search for the very same one: any other text,
    /// HTML or marker is searched again, before and after a good one was remembered.
    #[test]
    fn a_checked_disclaimer_is_remembered_exactly() {
        let good = request("Recorded and monitored.", None, "monitored");
        let wrong_marker = request("Recorded and monitored.", None, "watched");
        let wrong_html = request(
            "Recorded and monitored.",
            Some("<p>Recorded.</p>"),
            "monitored",
        );
        for _ in 0..2 {
            assert_eq!(good.validate(), Ok(()));
            assert_eq!(good.validate(), Ok(()));
            assert!(matches!(
                wrong_marker.validate(),
                Err(RequestError::MarkerNotInDisclaimer { which: "plain", .. })
            ));
            assert!(matches!(
                wrong_html.validate(),
                Err(RequestError::MarkerNotInDisclaimer { which: "HTML", .. })
            ));
        }
        let html_ok = request(
            "Recorded and monitored.",
            Some("<p>Monitored.</p>"),
            "monitored",
        );
        assert_eq!(html_ok.validate(), Ok(()));
        assert!(
            wrong_html.validate().is_err(),
            "differs from the remembered one in its HTML"
        );
        assert_eq!(
            request("  ", None, "").validate(),
            Err(RequestError::EmptyDisclaimer)
        );
    }
}
