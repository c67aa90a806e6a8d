use mail_parser::MimeHeaders;

use super::fold::is_ascii_whitespace_char;
use super::*;

fn golden(case: &str) -> Vec<u8> {
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/rewrite")
        .join(case)
        .join("in.eml");
    std::fs::read(p).unwrap_or_default()
}

fn types(shape: &MimeShape, ids: &[usize]) -> Vec<String> {
    ids.iter()
        .map(|&i| shape.parts[i].content_type.clone())
        .collect()
}

#[test]
fn message_text_follows_the_disclaimer_rules() {
    let s = analyze(&golden("corpus-related-html-inline-image"), None);
    assert_eq!(types(&s, &s.text_parts), ["text/plain", "text/html"]);
    assert_eq!(types(&s, &s.attachments), ["image/png"]);
    assert_eq!(s.parts[s.attachments[0]].role, PartRole::RelatedResource);

    let s = analyze(&golden("calendar-alternative"), None);
    assert_eq!(types(&s, &s.text_parts), ["text/plain", "text/html"]);
    assert_eq!(types(&s, &s.attachments), ["text/calendar"]);

    let s = analyze(&golden("tnef-mixed"), None);
    assert_eq!(types(&s, &s.text_parts), ["text/plain"]);
    assert_eq!(types(&s, &s.attachments), ["application/ms-tnef"]);

    let s = analyze(&golden("forwarded-rfc822"), None);
    assert_eq!(types(&s, &s.text_parts), ["text/plain"]);
    assert_eq!(s.rfc822_parts.len(), 1);
    assert!(s.attachments.is_empty());

    let s = analyze(&golden("nested-attachments"), None);
    assert_eq!(types(&s, &s.text_parts), ["text/plain", "text/html"]);
    assert_eq!(
        types(&s, &s.attachments),
        [
            "image/gif",
            "text/plain",
            "application/octet-stream",
            "text/html"
        ]
    );
    assert!(s.parts.iter().all(|p| !p.encoding_problem));
}

#[test]
fn signed_and_encrypted_are_recognised() {
    let s = analyze(&golden("corpus-smime-signed"), None);
    assert!(
        matches!(s.security[..], [Security::MultipartSigned { part: 0, ref protocol }] if protocol == "application/x-pkcs7-signature")
    );
    assert_eq!(types(&s, &s.signed_text_parts), ["text/plain"]);
    assert!(s.text_parts.is_empty());
    assert_eq!(s.parts[2].role, PartRole::Signature);

    let s = analyze(&golden("pkcs7-encrypted"), None);
    assert_eq!(s.security, [Security::SmimeEncrypted { part: 0 }]);

    let s = analyze(&golden("inline-pgp-signed"), None);
    assert_eq!(s.security, [Security::InlinePgpSigned { part: 0 }]);
}

#[test]
fn marker_found_in_quoted_qp_and_html() {
    let m = "Communications sent to or from this organisation may be subject to recording and/or monitoring in accordance with relevant legislation.";
    let s = analyze(&golden("corpus-reply-with-quoted-disclaimer"), Some(m));
    assert_eq!(s.disclaimer_present, Some(true));
    let s = analyze(&golden("html-quoted-disclaimer"), Some(m));
    assert_eq!(s.disclaimer_present, Some(true));
    assert!(
        s.text_parts
            .iter()
            .all(|&p| s.parts[p].marker_present == Some(true))
    );
    let s = analyze(&golden("corpus-plain-unmarked"), Some(m));
    assert_eq!(s.disclaimer_present, Some(false));
}

#[test]
fn normalisation() {
    assert_eq!(
        normalize_text(
            "<p>A&nbsp;b</p><p>C &amp; <b>d</b>&#233;&#x21;</p><script>x</script>",
            true
        ),
        "a b c & dé!"
    );
    assert_eq!(
        normalize_text("> > Quoted\n>  text\u{a0}here", false),
        "quoted text here"
    );
}

#[test]
fn transfer_decoders_are_lenient_and_honest() {
    assert_eq!(
        decode_qp(b"a=\r\nb=3D\r\nc \r\n"),
        (b"ab=\r\nc\r\n".to_vec(), true)
    );
    assert_eq!(
        decode_qp(b"caf\xe9 =ZZ\n"),
        (b"caf\xe9 =ZZ\n".to_vec(), false)
    );
    assert_eq!(
        decode_base64(b"aGVs\r\nbG8=\r\n"),
        (b"hello".to_vec(), true)
    );
    assert!(!decode_base64(b"aGVs*bG8=").1);
}

#[test]
fn never_panics_on_junk() {
    for junk in [
        &b""[..],
        b"\r\n",
        b"\n\n\n",
        b"Content-Type: multipart/mixed; boundary=\"\"\r\n\r\n--\r\n--",
        b"Content-Type: multipart/mixed; boundary=a\r\n\r\n--a\r\nContent-Type: multipart/alternative; boundary=a\r\n\r\n--a--",
        b"Content-Type: text/plain; charset=utf-16\r\nContent-Transfer-Encoding: base64\r\n\r\n//79/w==",
        b"\xff\xfe\x00:",
    ] {
        let s = analyze(junk, Some("marker"));
        for p in &s.parts {
            let _ = decode_part_text(junk, p);
        }
    }
}

/// The folding written out on its own, line by line as `normalize_text` first did it: `Folder`
/// must give exactly the same string.
fn normalize_reference(text: &str) -> String {
    let mut out = String::new();
    let mut pending_space = false;
    for line in text.split('\n') {
        let line = line.trim_start_matches(|c: char| c == '>' || c.is_whitespace());
        pending_space |= !out.is_empty();
        for c in line.chars() {
            if c.is_whitespace() {
                pending_space = !out.is_empty();
            } else if matches!(
                c,
                '\u{200B}' | '\u{200C}' | '\u{200D}' | '\u{FEFF}' | '\u{AD}'
            ) {
                continue;
            } else {
                if pending_space {
                    out.push(' ');
                    pending_space = false;
                }
                out.extend(c.to_lowercase());
            }
        }
    }
    out
}

/// Every file under `dirs` (relative to the repository), recursively, with its path.
pub(crate) fn repo_files(dirs: &[&str]) -> Vec<(std::path::PathBuf, Vec<u8>)> {
    fn files(dir: &std::path::Path, out: &mut Vec<(std::path::PathBuf, Vec<u8>)>) {
        for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                files(&p, out);
            } else if let Ok(b) = std::fs::read(&p) {
                out.push((p, b));
            }
        }
    }
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut out = Vec::new();
    for d in dirs {
        files(&root.join(d), &mut out);
    }
    out
}

/// The folders of hand-made messages the folding tests read.
const HAND_MADE: [&str; 3] = ["tests/rewrite", "tests/corpus", "benches/data"];
/// The fuzz corpus they read besides.
const FUZZED: &str = "fuzz/corpus/inspect";

/// Every file of the corpora the folding tests read.
pub(crate) fn corpus_files() -> Vec<Vec<u8>> {
    let mut dirs = HAND_MADE.to_vec();
    dirs.push(FUZZED);
    repo_files(&dirs).into_iter().map(|(_, b)| b).collect()
}

#[test]
fn normalize_ascii_matches_the_per_char_folding() {
    let texts = corpus_files();
    let mut checked = 0;
    for t in &texts {
        // Whole files and their ASCII-only lossy versions, so every one is exercised.
        let lossy = String::from_utf8_lossy(t);
        let ascii: String = lossy.chars().filter(char::is_ascii).collect();
        for input in [lossy.as_ref(), ascii.as_str()] {
            if input.is_ascii() {
                checked += 1;
                assert_eq!(normalize_text(input, false), normalize_reference(input));
            }
        }
    }
    assert!(checked > 300, "only {checked} texts");
}

#[test]
fn normalize_fast_path_matches_the_per_char_folding() {
    let pieces = [
        "a",
        "Z",
        " ",
        "\t",
        "\n",
        "\r\n",
        "\u{b}",
        "\u{c}",
        ">",
        "> >",
        "\u{a0}",
        "\u{85}",
        "\u{2003}",
        "\u{200b}",
        "\u{feff}",
        "\u{ad}",
        "É",
        "İ",
        "ß",
        "Σ",
        "THIS EMAIL",
        "Monitored",
        "\u{3000}",
        "x\u{200d}y",
        "\n> ",
        "  \n\n",
    ];
    // Every sequence of up to three pieces, plus longer mixed strings.
    let mut inputs = vec![String::new()];
    for a in pieces {
        for b in pieces {
            for c in pieces {
                inputs.push(format!("{a}{b}{c}"));
            }
        }
    }
    inputs.push(pieces.concat());
    inputs.push(pieces.iter().rev().copied().collect::<String>());
    for input in &inputs {
        assert_eq!(
            normalize_text(input, false),
            normalize_reference(input),
            "input {input:?}"
        );
    }
}

/// `marker_in_text` must answer exactly what folding the whole text and searching gives,
/// whichever shortcut it takes: never "absent" when the folded text holds the marker, never
/// "present" when it does not. `folded` is `normalize_text(text, html)`, folded once by the
/// caller for all its markers (folding a fuzz corpus once per marker took minutes).
fn check_marker(text: &str, folded: &str, html: bool, marker: &str, counts: &mut [usize; 2]) {
    let want = folded.contains(marker);
    assert_eq!(
        marker_in_text(text, html, marker),
        want,
        "marker {marker:?} html {html} in {text:?}"
    );
    counts[usize::from(want)] += 1;
    // normalize_marker's shortcut for markers folded already.
    assert_eq!(normalize_marker(marker), normalize_text(marker, false));
}

/// Markers made from the folded text itself (so present), and the same with one character
/// changed or in upper case (so absent, or present only through folding).
fn markers_from(folded: &str) -> Vec<String> {
    let chars: Vec<char> = folded.chars().collect();
    let mut out = Vec::new();
    for len in [8, 20, 45] {
        for start in [
            0,
            chars.len() / 3,
            chars.len() / 2,
            chars.len().saturating_sub(len),
        ] {
            let piece: String = chars.iter().skip(start).take(len).collect();
            let m = normalize_marker(&piece);
            if m.is_empty() {
                continue;
            }
            let mut changed: Vec<char> = m.chars().collect();
            let mid = changed.len() / 2;
            changed[mid] = if changed[mid] == 'q' { 'z' } else { 'q' };
            out.push(changed.into_iter().collect());
            out.push(m.to_uppercase());
            out.push(m);
        }
    }
    out
}

#[test]
fn ascii_whitespace_is_what_folding_calls_whitespace() {
    for b in 0..=0x7Fu8 {
        assert_eq!(
            is_ascii_whitespace_char(b),
            char::from(b).is_whitespace(),
            "{b:#x}"
        );
    }
}

#[test]
fn marker_search_agrees_with_folding_over_the_corpora() {
    let fixed = [
        "may be subject to recording and/or monitoring in accordance with relevant legislation",
        "recording and/or monitoring",
        "This Email",
        "monitored",
        "keep",
        "> quoted",
        "a  b",
        "caf\u{e9} au lait",
    ];
    // Every hand-made message, and a fixed eighth of the inspect fuzz corpus: the whole
    // corpus (18 MB, each text searched for ~50 markers in a debug build) took six minutes of
    // CI by itself; an eighth still makes tens of thousands of checks each way.
    let mut texts = repo_files(&HAND_MADE);
    let mut fuzzed = repo_files(&[FUZZED]);
    fuzzed.sort();
    texts.extend(fuzzed.into_iter().step_by(8));
    let mut counts = [0usize; 2];
    for (_, t) in texts {
        let lossy = String::from_utf8_lossy(&t);
        let ascii: String = lossy.chars().filter(char::is_ascii).collect();
        for input in [lossy.as_ref(), ascii.as_str()] {
            for html in [false, true] {
                let folded = normalize_text(input, html);
                let mut markers: Vec<String> = fixed.iter().map(|m| (*m).to_owned()).collect();
                markers.extend(fixed.iter().map(|m| normalize_marker(m)));
                markers.extend(markers_from(&folded));
                for m in &markers {
                    check_marker(input, &folded, html, m, &mut counts);
                }
            }
        }
    }
    let [absent, present] = counts;
    assert!(
        absent > 50_000 && present > 15_000,
        "{absent} absent, {present} present"
    );
}

#[test]
fn marker_search_agrees_with_folding_where_folding_makes_the_match() {
    let m = normalize_marker("Recording and/or MONITORING");
    let mut counts = [0usize; 2];
    for (text, html) in [
        ("recording and/or monitoring", false),
        ("RECORDING AND/OR MONITORING", false),
        ("recording   and/or\n> > monitoring", false),
        ("recording\tand/or\r\n monitoring", false),
        ("recording and/or moni\u{200b}toring", false),
        ("recording and/or moni\u{ad}toring", false),
        ("recording\u{a0}and/or monitoring", false),
        ("recording and/or monitorin", false),
        ("recording and/or", false),
        ("<p>recording <b>and/or</b> monitoring</p>", true),
        ("recording and&#47;or &#109;onitoring", true),
        ("recording and/or <!-- x -->monitoring", true),
        ("recording and/<i>or</i> moni<br>toring", true),
        ("", false),
    ] {
        check_marker(text, &normalize_text(text, html), html, &m, &mut counts);
    }
    // ASCII letters that only folding makes: the Kelvin sign lowercases to `k`, a dotted
    // capital I to `i` and a combining dot; and markers that are not folded themselves.
    for (text, marker) in [
        ("\u{212a}eep it", "keep it"),
        ("\u{212a}EEP it", "keep it"),
        ("\u{130}t is", "i\u{307}t is"),
        ("x > y", "x > y"),
        ("> y", "> y"),
        ("a\u{1}b c", "a\u{1}b c"),
        ("Keep It", "Keep It"),
        ("keep  it", "keep  it"),
    ] {
        check_marker(
            text,
            &normalize_text(text, false),
            false,
            marker,
            &mut counts,
        );
    }
    assert!(counts[0] >= 6 && counts[1] >= 13, "{counts:?}");
}

/// Messages whose parts' transfer encodings are odd in the ways that make mail-parser take a
/// different path when it decodes bodies: undecodable base64 and quoted-printable, a missing
/// closing boundary, encoded nested messages, a folded or repeated or commented field.
fn transfer_encoding_cases() -> Vec<Vec<u8>> {
    let part = |cte: &str, ctype: &str, body: &str| {
        format!("--b\r\nContent-Type: {ctype}\r\nContent-Transfer-Encoding:{cte}\r\n\r\n{body}\r\n")
    };
    let wrap = |parts: &[String], close: bool, outer: &str| {
        let mut m = format!(
            "From: a@example.gov.uk\r\nSubject: x\r\nMIME-Version: 1.0\r\nContent-Type: {outer}; boundary=\"b\"\r\n\r\npreamble\r\n"
        );
        for p in parts {
            m.push_str(p);
        }
        if close {
            m.push_str("--b--\r\n");
        }
        m.into_bytes()
    };
    let text = part(" 7bit", "text/plain", "Hello, this is monitored.");
    let bodies = [
        ("base64", "SGVsbG8sIHRoaXMgaXMgbW9uaXRvcmVkLg=="),
        ("base64", "SGVsbG8*!#$%^&*()sIHRoaXM="),
        ("base64", "SGVs=bG8s=IHRo=aXM="),
        ("base64", "SGVsbG8-sIHRo--aXM"),
        ("quoted-printable", "Hello=2C this is =ZZ monitored=\r\n."),
        ("quoted-printable", "caf=E9 =\r\n=3D==3"),
    ];
    let mut out = Vec::new();
    for (cte, body) in bodies {
        for ctype in [
            "text/plain",
            "text/html",
            "application/pdf",
            "message/rfc822",
        ] {
            for spelling in [
                format!(" {cte}"),
                format!(" {}", cte.to_uppercase()),
                format!("\r\n\t{cte}"),
                format!(" {cte} (as sent)"),
            ] {
                let p = part(&spelling, ctype, body);
                for close in [true, false] {
                    out.push(wrap(&[text.clone(), p.clone()], close, "multipart/mixed"));
                    out.push(wrap(
                        &[p.clone(), text.clone()],
                        close,
                        "multipart/alternative",
                    ));
                }
                out.push(wrap(std::slice::from_ref(&p), true, "multipart/digest"));
            }
            // Two fields: mail-parser obeys the last one.
            let twice = format!(
                "--b\r\nContent-Type: {ctype}\r\nContent-Transfer-Encoding: 7bit\r\nContent-Transfer-Encoding: {cte}\r\n\r\n{body}\r\n"
            );
            out.push(wrap(&[text.clone(), twice], true, "multipart/mixed"));
        }
        // A single-part message, and one whose nested message is itself encoded.
        out.push(
            format!("Subject: y\r\nContent-Type: text/plain\r\nContent-Transfer-Encoding: {cte}\r\n\r\n{body}\r\n")
                .into_bytes(),
        );
        let inner = format!("Subject: inner\r\nContent-Type: text/plain\r\n\r\n{body}\r\n");
        let encoded = base64_lines(inner.as_bytes());
        out.push(wrap(
            &[text.clone(), part(" base64", "message/rfc822", &encoded)],
            true,
            "multipart/mixed",
        ));
    }
    out
}

/// Messages whose top level is one part or only looks like it: every kind of top-level
/// Content-Type (none, odd case, multipart without a boundary or with one that never comes,
/// a nested message plain and encoded), odd line ends, no body, no blank line.
fn one_part_cases() -> Vec<Vec<u8>> {
    let inner = "Subject: inner\r\nContent-Type: text/plain\r\n\r\nHello, this is monitored.\r\n";
    let mut out = Vec::new();
    for ctype in [
        None,
        Some("text/plain; charset=utf-8"),
        Some("TEXT/HTML"),
        Some("application/pdf; name=\"a.pdf\""),
        Some("image/png"),
        Some("text/plain; boundary=\"b\""),
        Some("multipart/mixed"),
        Some("Multipart/Mixed; boundary=\"never\""),
        Some("message/rfc822"),
        Some("Message/RFC822"),
        Some("message/global"),
        Some("message/delivery-status"),
        Some("multipart/digest; boundary=\"b\""),
    ] {
        for cte in ["", "base64", "quoted-printable"] {
            let body = match cte {
                "base64" => base64_lines(inner.as_bytes()),
                _ => inner.to_string(),
            };
            let mut head = String::from("From: a@example.gov.uk\r\nSubject: x\r\n");
            if let Some(ct) = ctype {
                head.push_str(&format!("Content-Type: {ct}\r\n"));
            }
            if !cte.is_empty() {
                head.push_str(&format!("Content-Transfer-Encoding: {cte}\r\n"));
            }
            out.push(format!("{head}\r\n{body}").into_bytes());
            out.push(format!("{head}\r\n{body}--b\r\n{inner}--b--\r\n").into_bytes());
            out.push(format!("{head}\r\n").into_bytes());
            out.push(head.clone().into_bytes());
            out.push(
                format!("{head}\r\n{body}")
                    .replace("\r\n", "\n")
                    .into_bytes(),
            );
        }
    }
    out
}

/// Plain base64 (76-character lines) for the cases above.
fn base64_lines(data: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut s = String::new();
    for (i, c) in data.chunks(3).enumerate() {
        if i > 0 && i % 19 == 0 {
            s.push_str("\r\n");
        }
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        for k in 0..4 {
            if k <= c.len() {
                s.push(A[(n >> (18 - 6 * k)) as usize & 63] as char);
            } else {
                s.push('=');
            }
        }
    }
    s
}

/// The shape without what only mail-parser's own decoding can find: whether a body decodes.
fn without_decoding_problems(mut s: MimeShape) -> MimeShape {
    for p in &mut s.parts {
        p.encoding_problem = false;
    }
    s.diagnostics.retain(|d| d.code != "encoding-problem");
    s
}

#[test]
fn scanning_bodies_gives_the_shape_that_decoding_them_gave() {
    let mut inputs = corpus_files();
    inputs.extend(
        repo_files(&["fuzz/corpus/rewrite", "fuzz/corpus/large"])
            .into_iter()
            .map(|(_, b)| b),
    );
    inputs.extend(transfer_encoding_cases());
    inputs.extend(one_part_cases());
    let (mut compared, mut encoded, mut nested, mut single) = (0, 0, 0, 0);
    for raw in &inputs {
        single += parse::single_part(raw).is_some() as usize;
        for marker in [None, Some("recorded and/or monitored")] {
            let scanned = analyze_with(raw, marker, &[], parse::Bodies::Scanned);
            let decoded = analyze_with(raw, marker, &[], parse::Bodies::Decoded);
            assert_eq!(
                scanned.map(without_decoding_problems),
                decoded.map(without_decoding_problems),
                "{}",
                String::from_utf8_lossy(raw)
            );
            compared += 1;
        }
        if let Some(m) = parse::structure(raw, parse::Bodies::Decoded) {
            let parts = &m.parts;
            // The encoding read from the raw field is the one mail-parser parsed.
            for p in parts {
                assert_eq!(
                    TransferEncoding::parse(parse::transfer_encoding(p, raw).as_deref()),
                    TransferEncoding::parse(p.content_transfer_encoding()),
                    "{}",
                    String::from_utf8_lossy(raw)
                );
            }
            encoded += parts
                .iter()
                .any(|p| p.encoding != mail_parser::Encoding::None) as usize;
            nested += parts
                .iter()
                .any(|p| matches!(p.body, mail_parser::PartType::Message(_)))
                as usize;
        }
    }
    // The comparison must have seen many messages whose bodies mail-parser decodes, nested
    // messages, and messages of one part (read from their headers alone), or it proves nothing.
    assert!(
        compared > 8_000 && encoded > 300 && nested > 40 && single > 1_000,
        "{compared} compared, {encoded} with an encoded part, {nested} with a nested message, \
         {single} of one part"
    );
}
