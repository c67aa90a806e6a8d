//! The bounded path for large messages (`markgate::large`) against the in-memory path: for
//! every message we have — the rewrite golden inputs, the Postfix scenario inputs, the sample
//! corpus, both fuzz corpora and generated multipart/text messages (7bit, 8bit,
//! quoted-printable, base64, nested multiparts, forwarded `message/rfc822`, signed, inline PGP,
//! a marker in the middle, `--` lines) — the answer made from a reduced copy must be the
//! answer made from the whole message, byte for byte, or the reduced copy must be refused
//! (and the message then read whole).
//!
//! Two levels: the pure pipeline (reduce → analyze_reduced → plan → check_plan → write_body
//! versus analyze → plan → apply) with tiny windows, so that even small messages get elided
//! runs; and the daemon's `filter::evaluate_with` + `filter::outcome` on a spilled
//! `Transaction` and on an in-memory source with the shipped UK GPMS policy, default windows,
//! comparing the milter modifications and the audit record.

use std::borrow::Cow;
use std::io::{self, Read as _};
use std::path::{Path, PathBuf};

use markgate::filter::{self, MessageSource, RawSource};
use markgate::fuzzing::{self, large::Compared};
use markgate::inspect::markings::header_fields;
use markgate::inspect::mime;
use markgate::large::Limits;
use markgate::milter::handler::{ConnectionFacts, MessageSink, Modification, NewBody};
use markgate::policy::{Envelope, Policy};
use markgate::rewrite::RewriteRequest;
use markgate::transaction::{SpillPolicy, Transaction};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn files_in(dir: &Path, depth: usize, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut entries: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    entries.sort();
    for p in entries {
        if p.is_dir() && depth > 0 {
            files_in(&p, depth - 1, out);
        } else if p.is_file() {
            out.push(p);
        }
    }
}

/// Every stored message: `.eml` files of the scenario folders and the corpus, and every file
/// of the two message fuzz corpora.
fn stored_messages() -> Vec<(String, Vec<u8>)> {
    let mut paths = Vec::new();
    for d in [
        "tests/rewrite",
        "tests/enforce",
        "tests/corpus",
        "tests/scenarios",
    ] {
        let mut all = Vec::new();
        files_in(&root().join(d), 2, &mut all);
        paths.extend(
            all.into_iter()
                .filter(|p| p.extension().is_some_and(|e| e == "eml")),
        );
    }
    for d in ["fuzz/corpus/inspect", "fuzz/corpus/rewrite"] {
        files_in(&root().join(d), 0, &mut paths);
    }
    paths
        .into_iter()
        .map(|p| {
            let raw = std::fs::read(&p).expect("read");
            (p.display().to_string(), raw)
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Generated messages.
// ---------------------------------------------------------------------------------------------

fn text_lines(n: usize, eol: &str, seed: u32) -> String {
    let words = [
        "report",
        "budget",
        "council",
        "minutes",
        "agenda",
        "item",
        "approved",
        "pending",
        "caf\u{e9}",
        "na\u{ef}ve",
        "\u{2014}",
        "see",
        "attached",
        "a-b",
        "x=y",
    ];
    let mut s = String::new();
    let mut x = seed.wrapping_mul(2_654_435_761).max(1);
    for i in 0..n {
        let mut line = format!("{i:06}");
        for _ in 0..(x % 9 + 3) {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            line.push(' ');
            line.push_str(words[(x % words.len() as u32) as usize]);
        }
        s.push_str(&line);
        s.push_str(eol);
    }
    s
}

fn ascii(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_ascii() { c } else { '?' })
        .collect()
}

fn b64(data: &[u8], eol: &str) -> String {
    use base64::Engine as _;
    let enc = base64::engine::general_purpose::STANDARD.encode(data);
    let mut out = String::new();
    for c in enc.as_bytes().chunks(76) {
        out.push_str(std::str::from_utf8(c).expect("base64 is ascii"));
        out.push_str(eol);
    }
    out
}

fn qp(text: &str, eol: &str) -> String {
    let mut out = String::new();
    for line in text.split(eol) {
        let mut n = 0;
        for b in line.bytes() {
            let piece = if (33..=126).contains(&b) && b != b'=' || b == b' ' {
                (b as char).to_string()
            } else {
                format!("={b:02X}")
            };
            if n + piece.len() > 75 {
                out.push('=');
                out.push_str(eol);
                n = 0;
            }
            n += piece.len();
            out.push_str(&piece);
        }
        out.push_str(eol);
    }
    out.truncate(out.len() - eol.len());
    out
}

fn binary(n: usize, seed: u32) -> Vec<u8> {
    (0..n as u32)
        .map(|i| (i.wrapping_add(seed).wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect()
}

const HEAD: &str = "From: Alice Smith <alice.smith@example-council.gcsx.gov.uk>\nTo: bob.jones@partner.gcsx.gov.uk\nSubject: PROTECT: the archive\nMessage-ID: <gen@example-council.gcsx.gov.uk>\nMIME-Version: 1.0\n";

/// Generated messages of every shape, `scale` lines of text each (and proportional
/// attachments), with LF or CRLF line ends. The second value: whether the bounded path is
/// expected to keep the answer from a reduced copy (false: it must fall back).
fn generated(scale: usize, eol: &str) -> Vec<(String, Vec<u8>, bool)> {
    let head = HEAD.replace('\n', eol);
    let l = |s: &str| format!("{s}{eol}");
    let text = text_lines(scale, eol, 1);
    let text7 = ascii(&text);
    let mut out = Vec::new();
    let mut add = |name: &str, body: String, reducible: bool| {
        out.push((
            format!("generated {name} ({})", eol.escape_debug()),
            (head.clone() + &body).into_bytes(),
            reducible,
        ));
    };
    add(
        "7bit text/plain",
        l("Content-Type: text/plain") + &l("") + &text7,
        true,
    );
    add(
        "8bit utf-8 text/plain",
        l("Content-Type: text/plain; charset=\"utf-8\"")
            + &l("Content-Transfer-Encoding: 8bit")
            + &l("")
            + &text,
        true,
    );
    add(
        "no final line end",
        l("Content-Type: text/plain") + &l("") + text7.trim_end(),
        true,
    );
    add(
        "dash lines every few lines",
        l("Content-Type: text/plain")
            + &l("")
            + &text7.replace("see", &format!("see{eol}-- {eol}----------")),
        true,
    );
    add(
        "marker in the middle",
        l("Content-Type: text/plain")
            + &l("")
            + &text7[..text7.len() / 2]
            + &l("> This mail may be subject to recording")
            + &l("> and/or monitoring in accordance with relevant legislation.")
            + &text7[text7.len() / 2..],
        true,
    );
    add(
        "inline pgp in the middle",
        l("Content-Type: text/plain")
            + &l("")
            + &text7[..text7.len() / 2]
            + &l("-----BEGIN PGP SIGNED MESSAGE-----")
            + &l("Hash: SHA256")
            + &text7[text7.len() / 2..],
        true,
    );
    add(
        "quoted-printable text (re-encoded: falls back)",
        l("Content-Type: text/plain; charset=utf-8")
            + &l("Content-Transfer-Encoding: quoted-printable")
            + &l("")
            + &qp(&text, eol),
        false,
    );
    add(
        "base64 text (re-encoded: falls back)",
        l("Content-Type: text/plain; charset=utf-8")
            + &l("Content-Transfer-Encoding: base64")
            + &l("")
            + &b64(text.as_bytes(), eol),
        false,
    );
    add(
        "mixed with a base64 attachment (the benchmark's shape)",
        l("Content-Type: multipart/mixed; boundary=\"b50\"")
            + &l("")
            + &l("--b50")
            + &l("Content-Type: text/plain")
            + &l("")
            + &l("The archive is attached.")
            + &l("")
            + &l("--b50")
            + &l("Content-Type: application/octet-stream")
            + &l("Content-Transfer-Encoding: base64")
            + &l("")
            + &b64(&binary(scale * 60, 7), eol)
            + &l("")
            + &l("--b50--"),
        true,
    );
    add(
        "nested alternative, related, forwarded message and attachments",
        l("Content-Type: multipart/mixed; boundary=\"=_outer\"")
            + &l("")
            + &l("This is a multi-part message in MIME format.")
            + &l("--=_outer")
            + &l(
                "Content-Type: multipart/related; boundary=\"=_rel\"; type=\"multipart/alternative\"",
            )
            + &l("")
            + &l("--=_rel")
            + &l("Content-Type: multipart/alternative; boundary=\"=_alt\"")
            + &l("")
            + &l("--=_alt")
            + &l("Content-Type: text/plain; charset=utf-8")
            + &l("Content-Transfer-Encoding: 8bit")
            + &l("")
            + &text
            + &l("--=_alt")
            + &l("Content-Type: text/html; charset=utf-8")
            + &l("")
            + &l("<html><body><p>Short HTML.</p><img src=\"cid:img1\"></body></html>")
            + &l("--=_alt--")
            + &l("--=_rel")
            + &l("Content-Type: image/png")
            + &l("Content-ID: <img1>")
            + &l("Content-Transfer-Encoding: base64")
            + &l("")
            + &b64(&binary(scale * 20, 3), eol)
            + &l("--=_rel--")
            + &l("--=_outer")
            + &l("Content-Type: message/rfc822")
            + &l("")
            + &l("Subject: forwarded")
            + &l("Content-Type: text/plain")
            + &l("")
            + &text7[..2000.min(text7.len())]
            + &l("")
            + &l("--=_outer")
            + &l("Content-Type: text/plain; charset=utf-8; name=\"notes.txt\"")
            + &l("Content-Disposition: attachment; filename=\"notes.txt\"")
            + &l("Content-Transfer-Encoding: quoted-printable")
            + &l("")
            + &qp(&text, eol)
            + &l("")
            + &l("--=_outer")
            + &l("Content-Type: application/pdf; name=\"a.pdf\"")
            + &l("Content-Transfer-Encoding: base64")
            + &l("")
            + &b64(&binary(scale * 30, 9), eol)
            + &l("--=_outer--")
            + &l("epilogue"),
        true,
    );
    add(
        "multipart/signed",
        l(
            "Content-Type: multipart/signed; protocol=\"application/pkcs7-signature\"; micalg=sha-256; boundary=\"sig\"",
        ) + &l("")
            + &l("--sig")
            + &l("Content-Type: text/plain")
            + &l("")
            + &text7
            + &l("--sig")
            + &l("Content-Type: application/pkcs7-signature; name=smime.p7s")
            + &l("Content-Transfer-Encoding: base64")
            + &l("")
            + &b64(&binary(3000, 5), eol)
            + &l("--sig--"),
        true,
    );
    add(
        "large html body (falls back)",
        l("Content-Type: text/html; charset=utf-8")
            + &l("")
            + &l("<html><body>")
            + &text7.replace(eol, &format!("<br>{eol}"))
            + &l("</body></html>"),
        false,
    );
    out
}

// ---------------------------------------------------------------------------------------------
// Level 1: the pure pipeline (the comparison is `markgate::fuzzing::large::differential`, which
// the `large` fuzz target runs on arbitrary bytes).
// ---------------------------------------------------------------------------------------------

#[derive(Default, Debug)]
struct Tally {
    compared: usize,
    compared_with_runs: usize,
    not_reducible: usize,
    refused: usize,
}

/// Compare both paths; returns whether the reduced copy was used.
fn differential(
    name: &str,
    raw: &[u8],
    req: &RewriteRequest,
    limits: &Limits,
    tally: &mut Tally,
) -> Result<bool, String> {
    match fuzzing::large::differential(raw, req, limits).map_err(|e| format!("{name}: {e}"))? {
        Compared::NotPlanned => Ok(false),
        Compared::NotReducible => {
            tally.not_reducible += 1;
            Ok(false)
        }
        Compared::Refused => {
            tally.refused += 1;
            Ok(false)
        }
        Compared::Same { runs } => {
            tally.compared += 1;
            if runs > 0 {
                tally.compared_with_runs += 1;
            }
            Ok(true)
        }
    }
}

fn requests() -> Vec<(&'static str, RewriteRequest)> {
    fuzzing::large::requests()
}

fn limit_sets() -> [Limits; 2] {
    fuzzing::large::tiny_limits()
}

#[test]
fn stored_messages_give_the_same_answer_from_a_reduced_copy() {
    let messages = stored_messages();
    assert!(
        messages.len() > 300,
        "only {} stored messages found",
        messages.len()
    );
    let mut tally = Tally::default();
    let mut failures = Vec::new();
    for (name, raw) in &messages {
        for (rname, req) in requests() {
            for limits in limit_sets() {
                if let Err(e) =
                    differential(&format!("{name} [{rname}]"), raw, &req, &limits, &mut tally)
                {
                    failures.push(e);
                }
            }
        }
    }
    eprintln!("{} messages: {tally:?}", messages.len());
    assert!(
        failures.is_empty(),
        "{} differences:\n{}",
        failures.len(),
        failures.join("\n\n")
    );
    // The comparison must have had something to compare.
    assert!(tally.compared_with_runs > 400, "{tally:?}");
}

#[test]
fn generated_messages_give_the_same_answer_from_a_reduced_copy() {
    let mut tally = Tally::default();
    for eol in ["\r\n", "\n"] {
        for (name, raw, reducible) in generated(400, eol) {
            for (rname, req) in requests() {
                for limits in limit_sets() {
                    let used = differential(
                        &format!("{name} [{rname}]"),
                        &raw,
                        &req,
                        &limits,
                        &mut tally,
                    )
                    .unwrap_or_else(|e| panic!("{e}"));
                    let signed_wrap = name.contains("signed") && rname.contains("wrap");
                    let pgp = name.contains("pgp") && !rname.contains("skip");
                    if reducible && !signed_wrap && !pgp {
                        assert!(used, "{name} [{rname}]: the reduced copy was refused");
                    }
                    if !reducible && !name.contains("html") {
                        assert!(!used, "{name} [{rname}]: expected a fallback");
                    }
                }
            }
        }
    }
    eprintln!("{tally:?}");
}

// ---------------------------------------------------------------------------------------------
// Level 2: the daemon's evaluate + outcome.
// ---------------------------------------------------------------------------------------------

/// An in-memory message offered as a stream, the way a spilled transaction is.
struct Streamed<'a>(RawSource<'a>, &'a [u8]);

impl MessageSource for Streamed<'_> {
    fn headers(&self) -> Vec<(&[u8], &[u8])> {
        self.0.headers()
    }
    fn head(&self) -> Cow<'_, [u8]> {
        self.0.head()
    }
    fn whole(&self) -> io::Result<Cow<'_, [u8]>> {
        self.0.whole()
    }
    fn whole_len(&self) -> u64 {
        self.1.len() as u64
    }
    fn stream(&self) -> Option<Box<dyn io::Read + '_>> {
        Some(Box::new(self.1))
    }
}

/// A spilled transaction that does not offer its stream (the in-memory path).
struct Whole<'a>(&'a Transaction);

impl MessageSource for Whole<'_> {
    fn headers(&self) -> Vec<(&[u8], &[u8])> {
        MessageSource::headers(self.0)
    }
    fn head(&self) -> Cow<'_, [u8]> {
        self.0.head()
    }
    fn whole(&self) -> io::Result<Cow<'_, [u8]>> {
        self.0.whole()
    }
    fn whole_len(&self) -> u64 {
        self.0.whole_len()
    }
}

fn spilled(raw: &[u8]) -> Transaction {
    let facts = ConnectionFacts {
        hostname: b"client.example-council.gcsx.gov.uk".to_vec(),
        addr: Some("127.0.0.1".parse().expect("ip")),
        port: 4000,
        unix_path: Vec::new(),
        helo: None,
    };
    let mut tx = Transaction::new(
        &facts,
        SpillPolicy {
            threshold: 0,
            directory: None,
        },
    );
    for (n, v) in header_fields(raw) {
        tx.header(&n, &v).expect("header");
    }
    let body = &raw[mime::header_block_end(raw)..];
    for c in body.chunks(65_535) {
        tx.body_chunk(c).expect("body");
    }
    tx
}

fn envelope() -> Envelope {
    Envelope {
        sender: "alice.smith@example-council.gcsx.gov.uk".into(),
        recipients: vec!["bob.jones@partner.gcsx.gov.uk".into()],
        client_ip: Some("127.0.0.1".parse().expect("ip")),
        auth_user: None,
        daemon_name: None,
        next_hops: Vec::new(),
    }
}

/// The milter answer and the audit record, with file bodies read back.
fn answer(
    policy: &Policy,
    source: &dyn MessageSource,
    limits: &Limits,
) -> (String, Option<Vec<u8>>, String, usize) {
    let eval = filter::evaluate_with(policy, envelope(), source, limits).expect("evaluate");
    let spill = SpillPolicy {
        threshold: 0,
        directory: None,
    };
    let out = filter::outcome(&eval, source, &[], &spill).expect("outcome");
    let mut body = None;
    let mut mods = Vec::new();
    for m in out.modifications {
        match m {
            Modification::ReplaceBody(NewBody::File(mut f)) => {
                let mut b = Vec::new();
                f.read_to_end(&mut b).expect("read body");
                body = Some(b);
            }
            Modification::ReplaceBody(NewBody::Bytes(b)) => body = Some(b.to_vec()),
            other => mods.push(format!("{other:?}")),
        }
    }
    let record = filter::audit_record(policy, &eval, &filter::MessageMeta::default());
    (
        format!("{:?} {mods:?}", out.verdict),
        body,
        serde_json::to_string(&record).expect("json"),
        eval.elided.len(),
    )
}

#[test]
fn the_daemon_answers_a_spilled_message_the_same_from_a_reduced_copy() {
    let policy = Policy::from_file(&root().join("policies/uk-gpms.toml")).expect("policy");
    let limits = Limits {
        head: 1024,
        tail: 1024,
        min_run: 256,
        ..Limits::default()
    };
    let mut reduced_answers = 0;
    for eol in ["\r\n", "\n"] {
        for (name, raw, reducible) in generated(3000, eol) {
            // An in-memory source offered as a stream versus read whole.
            let whole = answer(&policy, &RawSource::new(&raw), &limits);
            let streamed = answer(&policy, &Streamed(RawSource::new(&raw), &raw), &limits);
            assert_eq!(whole.0, streamed.0, "{name}: modifications");
            assert!(whole.1 == streamed.1, "{name}: new body differs");
            assert_eq!(whole.2, streamed.2, "{name}: audit record");
            // A spilled transaction, streamed versus read whole.
            let tx = spilled(&raw);
            let tx_whole = answer(&policy, &Whole(&tx), &limits);
            let tx_streamed = answer(&policy, &tx, &limits);
            assert_eq!(
                tx_whole.0, tx_streamed.0,
                "{name}: modifications (transaction)"
            );
            assert!(
                tx_whole.1 == tx_streamed.1,
                "{name}: new body differs (transaction)"
            );
            assert_eq!(
                tx_whole.2, tx_streamed.2,
                "{name}: audit record (transaction)"
            );
            let body = tx_streamed.1.as_deref().unwrap_or_default();
            let found = body
                .windows(22)
                .filter(|w| *w == b"recording and/or monit")
                .count();
            // (A re-encoded part carries it encoded; the in-memory path checks that elsewhere.)
            let plain = !["marker", "pgp", "signed", "quoted", "base64 text"]
                .iter()
                .any(|k| name.contains(k));
            if plain {
                // Once per message-text part: both sides of an alternative get it.
                let want = if name.contains("alternative") { 2 } else { 1 };
                assert_eq!(
                    found, want,
                    "{name}: the disclaimer is not there once per text part"
                );
            }
            if reducible && !name.contains("pgp") {
                assert!(tx_streamed.3 > 0, "{name}: not judged from a reduced copy");
                reduced_answers += 1;
            }
            if !reducible {
                assert_eq!(tx_streamed.3, 0, "{name}: should have been read whole");
            }
        }
    }
    assert!(reduced_answers >= 16, "{reduced_answers}");
}

#[test]
fn a_message_too_large_to_read_whole_and_not_reducible_is_refused_not_passed() {
    let policy = Policy::from_file(&root().join("policies/uk-gpms.toml")).expect("policy");
    let (_, raw, _) = generated(3000, "\r\n")
        .into_iter()
        .find(|(n, _, _)| n.contains("base64 text"))
        .expect("generated");
    let limits = Limits {
        max_in_memory: 100_000,
        ..Limits::default()
    };
    let tx = spilled(&raw);
    match filter::evaluate_with(&policy, envelope(), &tx, &limits) {
        Err(e @ filter::PipelineError::TooLarge { .. }) => {
            let text = e.to_string();
            assert!(text.contains("over the 100000-byte limit"), "{text}");
            assert!(text.contains("rewrites the elided run"), "{text}");
        }
        other => panic!("expected TooLarge, got {:?}", other.map(|e| e.verdict)),
    }
    // Under the limit the same message is read whole and answered.
    let ok = filter::evaluate_with(&policy, envelope(), &tx, &Limits::default()).expect("evaluate");
    assert!(ok.elided.is_empty() && ok.plan.is_some_and(|p| p.body.is_some()));
}
