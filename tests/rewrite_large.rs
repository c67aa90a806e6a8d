//! Messages of gateway-limit size (50 MiB) go through inspect, plan and apply with every
//! round-trip property intact. Ignored by default because a debug build takes a while; run with
//! `cargo test --release --test rewrite_large -- --ignored`. Speed is measured elsewhere
//! (benchmarks), never asserted here.

use base64::Engine as _;
use markgate::fuzzing::rewrite::{check_roundtrip, default_request};
use markgate::rewrite::{DisclaimerOutcome, Segment};

fn b64_lines(data: &[u8]) -> Vec<u8> {
    let enc = base64::engine::general_purpose::STANDARD.encode(data);
    let mut out = Vec::with_capacity(enc.len() + enc.len() / 38);
    for chunk in enc.as_bytes().chunks(76) {
        out.extend_from_slice(chunk);
        out.extend_from_slice(b"\r\n");
    }
    out
}

#[test]
#[ignore = "50 MiB; run in release with --ignored"]
fn fifty_mebibyte_mixed_message() {
    let text: Vec<u8> = b"Lorem ipsum dolor sit amet, consectetur adipiscing elit.\r\n"
        .iter()
        .copied()
        .cycle()
        .take(8 << 20)
        .collect();
    let attachment: Vec<u8> = (0..(28u32 << 20))
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let mut raw = b"From: a@example.org\r\nSubject: big\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"zz\"\r\n\r\n--zz\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n\r\n".to_vec();
    raw.extend_from_slice(&b64_lines(&text));
    raw.extend_from_slice(b"\r\n--zz\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\nContent-Disposition: attachment; filename=\"big.bin\"\r\n\r\n");
    raw.extend_from_slice(&b64_lines(&attachment));
    raw.extend_from_slice(b"\r\n--zz--\r\n");
    assert!(raw.len() > 48 << 20);

    let rt = check_roundtrip(&raw, &|_| default_request()).expect("round trip");
    assert!(matches!(
        rt.plan.disclaimer[..],
        [DisclaimerOutcome::Added { part: 1, .. }]
    ));
    // The attachment is referenced from the original, not copied into the plan.
    let body = rt.plan.body.as_ref().expect("body edit");
    let raw_bytes: usize = body
        .segments
        .iter()
        .filter_map(|s| match s {
            Segment::Raw(r) => Some(r.len()),
            Segment::New(_) => None,
        })
        .sum();
    assert!(
        raw_bytes > 37 << 20,
        "attachment kept by reference: {raw_bytes}"
    );
}

#[test]
#[ignore = "50 MiB; run in release with --ignored"]
fn fifty_mebibyte_quoted_printable_html() {
    let mut raw = b"From: a@example.org\r\nSubject: big\r\nMIME-Version: 1.0\r\nContent-Type: text/html; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n<html><body>".to_vec();
    while raw.len() < 50 << 20 {
        raw.extend_from_slice(
            b"<p class=3D\"x\">Caf=C3=A9 na=C3=AFve text &amp; more text to fill the line</p>\r\n",
        );
    }
    raw.extend_from_slice(b"</body></html>\r\n");
    let rt = check_roundtrip(&raw, &|_| default_request()).expect("round trip");
    assert!(matches!(
        rt.plan.disclaimer[..],
        [DisclaimerOutcome::Added { part: 0, .. }]
    ));
}
