use super::*;

use crate::inspect::mime::analyze_reduced;
use crate::rewrite::{self, DisclaimerEdit, Placement, SignedAction};

fn tiny() -> Limits {
    Limits {
        head: 64,
        tail: 64,
        min_run: 16,
        max_line: 4096,
        max_reduced: 1 << 20,
        max_in_memory: 1 << 20,
    }
}

fn reduced(raw: &[u8], limits: &Limits) -> Reduced {
    reduce(raw, Some(MARKER), limits).unwrap().unwrap()
}

const MARKER: &str = "may be subject to recording and/or monitoring";

fn lines(prefix: &str, n: usize, eol: &str) -> String {
    (0..n)
        .map(|i| format!("{prefix} line {i:05} of the body{eol}"))
        .collect()
}

fn multipart(eol: &str) -> Vec<u8> {
    let mut m = String::new();
    for l in [
        "From: a@example.org",
        "Subject: PROTECT: big",
        "MIME-Version: 1.0",
        "Content-Type: multipart/mixed; boundary=\"outer b\"",
        "",
        "preamble",
        "--outer b",
        "Content-Type: text/plain; charset=utf-8",
        "",
    ] {
        m.push_str(l);
        m.push_str(eol);
    }
    m.push_str(&lines("text", 200, eol));
    m.push_str(&format!("-- {eol}signature{eol}"));
    m.push_str(&lines("more", 100, eol));
    m.push_str(&format!("--outer b{eol}Content-Type: application/octet-stream{eol}Content-Transfer-Encoding: base64{eol}{eol}"));
    let data: Vec<u8> = (0..20_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let b64 = rewrite::disclaimer::encode_base64_lines(&data, eol.as_bytes(), true);
    m.push_str(std::str::from_utf8(&b64).unwrap());
    m.push_str(&format!("--outer b--{eol}epilogue{eol}"));
    m.into_bytes()
}

#[test]
fn a_reduced_message_expands_back_to_the_original() {
    for eol in ["\r\n", "\n"] {
        let raw = multipart(eol);
        let r = reduced(&raw, &tiny());
        assert!(
            r.raw.len() * 5 < raw.len(),
            "{} of {}",
            r.raw.len(),
            raw.len()
        );
        assert!(r.elisions.len() >= 3, "{:?}", r.elisions);
        assert_eq!(expand(&r, &r.raw, &raw), raw);
        for e in &r.elisions {
            let (s, o) = (e.original.start as usize, e.original.end as usize);
            let run = &raw[s..o];
            assert!(!run.windows(2).any(|w| w == b"--"), "a run holds --");
            assert!(s == 0 || raw[s - 1] == b'\n', "a run starts mid-line");
            assert!(run.ends_with(b"\n"), "a run ends mid-line");
            let stand_in = &r.raw[e.stand_in.clone()];
            assert!(stand_in.ends_with(if run.ends_with(b"\r\n") {
                b"\r\n"
            } else {
                b"\n"
            }));
            assert!(stand_in.starts_with(b"MGELIDED"));
        }
        // The signature separator line is kept.
        assert!(r.raw.windows(4).any(|w| w == b"-- \r" || w == b"-- \n"));
        // The parser agrees with the scan, and the text part's facts come from the scan.
        let shape = analyze_reduced(&r.raw, Some(MARKER), &r.parts).unwrap();
        assert_eq!(shape.text_parts.len(), 1);
        assert_eq!(shape.attachments.len(), 1);
    }
}

#[test]
fn a_single_part_body_is_reduced_and_its_marker_found_in_the_middle() {
    let mut raw = b"Subject: x\r\nContent-Type: text/plain\r\n\r\n".to_vec();
    raw.extend_from_slice(lines("a", 300, "\r\n").as_bytes());
    raw.extend_from_slice(b"this may be subject to\r\nrecording and/or monitoring\r\n");
    raw.extend_from_slice(lines("b", 300, "\r\n").as_bytes());
    let r = reduced(&raw, &tiny());
    assert_eq!(r.elisions.len(), 1);
    assert!(!r.raw.windows(9).any(|w| w == b"recording"));
    let shape = analyze_reduced(&r.raw, Some(MARKER), &r.parts).unwrap();
    assert_eq!(shape.disclaimer_present, Some(true));
    assert_eq!(shape.parts[0].marker_present, Some(true));
}

#[test]
fn what_cannot_be_reduced_is_said() {
    let long = format!("Subject: x\r\n\r\n{}\r\n", "x".repeat(5000));
    let e = reduce(long.as_bytes(), None, &tiny()).unwrap().unwrap_err();
    assert!(e.0.contains("longer than 4096"), "{e}");

    let padded =
        "Subject: x\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n\r\nx\r\n--bz\r\n";
    let e = reduce(padded.as_bytes(), None, &tiny())
        .unwrap()
        .unwrap_err();
    assert!(e.0.contains("text after the boundary"), "{e}");

    // A forwarded message is kept whole: over the reduced-size limit it cannot be reduced.
    let mut fwd = b"Subject: x\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: message/rfc822\r\n\r\nSubject: inner\r\n\r\n".to_vec();
    fwd.extend_from_slice(lines("inner", 200, "\r\n").as_bytes());
    fwd.extend_from_slice(b"--b--\r\n");
    let limits = Limits {
        max_reduced: 4096,
        ..tiny()
    };
    let e = reduce(&fwd[..], None, &limits).unwrap().unwrap_err();
    assert!(e.0.contains("reduced message would pass"), "{e}");
    // Under the limit it is simply not elided.
    let r = reduced(&fwd, &tiny());
    assert!(r.elisions.is_empty());
    assert_eq!(r.raw, fwd);
}

#[test]
fn rfc2231_and_commented_content_types_are_kept_whole() {
    for ct in [
        "multipart/mixed; boundary*=utf-8''b",
        "multipart/mixed (comment); boundary=b",
    ] {
        let mut raw = format!("Subject: x\r\nContent-Type: {ct}\r\n\r\n--b\r\n\r\n").into_bytes();
        raw.extend_from_slice(lines("t", 100, "\r\n").as_bytes());
        raw.extend_from_slice(b"--b--\r\n");
        let r = reduced(&raw, &tiny());
        assert!(r.elisions.is_empty(), "{ct}");
    }
}

#[test]
fn parameters_are_read_like_mail_parser() {
    let h = parse_head(
        b"Content-Type: Multipart/Mixed;\r\n boundary=\"a\\\"b;c\"; charset=x\r\nContent-Transfer-Encoding: Base64\r\n",
    );
    assert_eq!(h.content_type, "multipart/mixed");
    assert_eq!(h.boundary.as_deref(), Some(&b"a\"b;c"[..]));
    assert_eq!(h.charset.as_deref(), Some("x"));
    assert_eq!(h.cte.as_deref(), Some("Base64"));
    assert!(!h.unreadable);
}

fn request(signed: SignedAction) -> RewriteRequest {
    RewriteRequest {
        disclaimer: Some(DisclaimerEdit {
            text: format!("Mail {MARKER}."),
            html: None,
            placement: Placement::Append,
            marker: MARKER.into(),
            signed_action: signed,
        }),
        ..RewriteRequest::default()
    }
}

/// Plan on the reduced copy; `Err` when `check_plan` refuses.
fn plan_reduced(raw: &[u8], req: &RewriteRequest) -> Result<Vec<u8>, String> {
    let r = reduced(raw, &tiny());
    let shape = analyze_reduced(&r.raw, Some(MARKER), &r.parts)?;
    let headers = rewrite::headers_from_raw(&r.raw, shape.body_offset);
    let plan = rewrite::plan(req, &headers, &r.raw, &shape).unwrap();
    check_plan(&plan, &shape, req, &r.elisions)?;
    let mut body = Vec::new();
    if let Some(b) = &plan.body {
        let copy = |range: Range<u64>, out: &mut dyn Write| {
            out.write_all(&raw[range.start as usize..range.end as usize])
        };
        write_body(b, &r.raw, &r.elisions, &copy, &mut body).unwrap();
    }
    Ok(body)
}

#[test]
fn a_streamed_body_equals_the_in_memory_body() {
    let raw = multipart("\r\n");
    let req = request(SignedAction::Skip);
    let (shape, plan, _) = rewrite::rewrite_message(&req, &raw).unwrap();
    assert!(shape.text_parts.len() == 1);
    let want = plan.body.as_ref().unwrap().to_vec(&raw);
    assert_eq!(plan_reduced(&raw, &req).unwrap(), want);
}

#[test]
fn a_plan_that_re_encodes_an_elided_part_is_refused() {
    // A base64 text part gets the disclaimer by re-encoding all of it.
    let text = lines("t", 400, "\r\n");
    let b64 = rewrite::disclaimer::encode_base64_lines(text.as_bytes(), b"\r\n", true);
    let mut raw = b"Subject: x\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n\r\n".to_vec();
    raw.extend_from_slice(&b64);
    let e = plan_reduced(&raw, &request(SignedAction::Skip)).unwrap_err();
    assert!(e.contains("rewrites the elided run"), "{e}");
    // A 7bit part that needs quoted-printable for an 8-bit disclaimer, too.
    let mut raw = b"Subject: x\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n".to_vec();
    raw.extend_from_slice(text.as_bytes());
    let mut req = request(SignedAction::Skip);
    if let Some(d) = req.disclaimer.as_mut() {
        d.text = format!("Caf\u{e9}: {MARKER}.");
    }
    let e = plan_reduced(&raw, &req).unwrap_err();
    assert!(e.contains("rewrites the elided run"), "{e}");
}

#[test]
fn wrapping_and_html_text_fall_back() {
    let mut raw = b"Subject: x\r\nContent-Type: multipart/signed; protocol=\"application/pkcs7-signature\"; boundary=s\r\n\r\n--s\r\nContent-Type: text/plain\r\n\r\n".to_vec();
    raw.extend_from_slice(lines("t", 300, "\r\n").as_bytes());
    raw.extend_from_slice(
        b"--s\r\nContent-Type: application/pkcs7-signature\r\n\r\nAAAA\r\n--s--\r\n",
    );
    let e = plan_reduced(&raw, &request(SignedAction::Wrap)).unwrap_err();
    assert!(e.contains("whole message"), "{e}");
    assert!(plan_reduced(&raw, &request(SignedAction::Skip)).is_ok());

    let mut html = b"Subject: x\r\nContent-Type: text/html\r\n\r\n<html><body>\r\n".to_vec();
    html.extend_from_slice(lines("<p>t</p>", 300, "\r\n").as_bytes());
    html.extend_from_slice(b"</body></html>\r\n");
    let e = plan_reduced(&html, &request(SignedAction::Skip)).unwrap_err();
    assert!(e.contains("without text facts"), "{e}");
}

#[test]
fn a_different_marker_than_the_scanned_one_is_refused() {
    let mut raw = b"Subject: x\r\nContent-Type: text/plain\r\n\r\n".to_vec();
    raw.extend_from_slice(lines("t", 300, "\r\n").as_bytes());
    let mut req = request(SignedAction::Skip);
    if let Some(d) = req.disclaimer.as_mut() {
        d.marker = "recording".into();
    }
    let e = plan_reduced(&raw, &req).unwrap_err();
    assert!(e.contains("marker differs"), "{e}");
}

#[test]
fn copy_range_reads_in_pieces_and_reports_a_short_file() {
    let data: Vec<u8> = (0..200_000u32).map(|i| i as u8).collect();
    let read_at = |at: u64, buf: &mut [u8]| -> io::Result<usize> {
        let at = (at as usize).min(data.len());
        let n = buf.len().min(data.len() - at).min(1000);
        buf[..n].copy_from_slice(&data[at..at + n]);
        Ok(n)
    };
    let mut out = Vec::new();
    copy_range(10..150_000, &read_at, &mut out).unwrap();
    assert_eq!(out, &data[10..150_000]);
    assert!(copy_range(199_000..200_001, &read_at, &mut Vec::new()).is_err());
}
