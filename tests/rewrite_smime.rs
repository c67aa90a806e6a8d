//! An S/MIME clear-signed message must still verify after markgate handled it: with
//! `signed_action = skip` (label header added, body untouched), and — for the wrapped original —
//! with `signed_action = wrap`. A deliberately broken copy must fail, so the check is real.
//!
//! Runs `openssl smime -verify -noverify`. Without openssl the test prints why it skipped,
//! except under `CI=true`, where a missing openssl fails.

use std::path::Path;
use std::process::Command;

use markgate::inspect::mime;
use markgate::rewrite::{
    DisclaimerEdit, DisclaimerOutcome, LabelHeader, Placement, RewriteRequest, SignedAction,
    SubjectEdit, SubjectPosition, rewrite_message,
};

/// The shared corpus's `smime-signed.eml`, as copied into the golden folder.
fn smime_signed() -> Vec<u8> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/rewrite/corpus-smime-signed/in.eml");
    std::fs::read(p).expect("smime corpus copy")
}

fn openssl_available() -> bool {
    match Command::new("openssl").arg("version").output() {
        Ok(o) if o.status.success() => true,
        _ => {
            if std::env::var("CI").is_ok_and(|v| v == "true") {
                panic!("openssl is required in CI for the S/MIME verification test");
            }
            eprintln!("skipping S/MIME verification: openssl not found");
            false
        }
    }
}

/// True when `openssl smime -verify -noverify` accepts the message's signature.
fn verifies(message: &[u8]) -> bool {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("msg.eml");
    std::fs::write(&path, message).expect("write message");
    let out = Command::new("openssl")
        .args(["smime", "-verify", "-noverify", "-in"])
        .arg(&path)
        .args(["-out", "/dev/null"])
        .output()
        .expect("run openssl");
    if !out.status.success() {
        eprintln!("openssl: {}", String::from_utf8_lossy(&out.stderr));
    }
    out.status.success()
}

fn request(action: SignedAction) -> RewriteRequest {
    RewriteRequest {
        label_header: Some(LabelHeader {
            name: "X-Protective-Marking".into(),
            value: "PROTECT - POLICY".into(),
        }),
        strip_headers: Vec::new(),
        subject: Some(SubjectEdit::new(
            "PROTECT - POLICY",
            SubjectPosition::Prefix,
        )),
        disclaimer: Some(DisclaimerEdit {
            text: markgate::fuzzing::rewrite::GPMS_DISCLAIMER.into(),
            html: None,
            placement: Placement::Append,
            marker: String::new(),
            signed_action: action,
        }),
        extra_headers: Vec::new(),
    }
}

#[test]
fn signature_still_verifies_after_skip() {
    if !openssl_available() {
        return;
    }
    let raw = smime_signed();
    assert!(verifies(&raw), "the corpus message itself must verify");
    let (_, plan, out) = rewrite_message(&request(SignedAction::Skip), &raw).expect("plan");
    assert!(plan.body.is_none(), "skip must leave the body alone");
    assert!(
        !plan.header_ops.is_empty(),
        "the label header is still added"
    );
    assert!(
        out.windows(b"X-Protective-Marking: PROTECT - POLICY".len())
            .any(|w| w == b"X-Protective-Marking: PROTECT - POLICY")
    );
    assert!(verifies(&out), "signature broken by skip");

    // Control: the same message with a disclaimer forced into the signed text must fail.
    let needle = b"the figures are final.";
    let at = raw
        .windows(needle.len())
        .position(|w| w == needle)
        .expect("signed text present")
        + needle.len();
    let mut tampered = raw[..at].to_vec();
    tampered.extend_from_slice(b"\r\n\r\nCommunications may be monitored.");
    tampered.extend_from_slice(&raw[at..]);
    assert!(!verifies(&tampered), "a changed body must not verify");
}

#[test]
fn wrapped_original_still_verifies() {
    if !openssl_available() {
        return;
    }
    let raw = smime_signed();
    let (_, plan, out) = rewrite_message(&request(SignedAction::Wrap), &raw).expect("plan");
    assert!(
        plan.disclaimer
            .iter()
            .any(|o| matches!(o, DisclaimerOutcome::Wrapped { .. }))
    );
    let shape = mime::analyze(&out, None);
    assert_eq!(shape.rfc822_parts.len(), 1, "one forwarded original");
    let inner = &shape.parts[shape.rfc822_parts[0]];
    let original = &out[inner.body_range.clone()];
    assert_eq!(original, &raw[..], "the original is carried byte for byte");
    assert!(verifies(original), "the wrapped original must verify");
    assert_eq!(
        shape.text_parts.len(),
        1,
        "the disclaimer part is the message text"
    );
}
