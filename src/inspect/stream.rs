//! Text facts of a message-text part read in pieces: what [`super::mime::analyze`] finds by
//! decoding a whole part (disclaimer marker present, inline PGP, transfer encoding clean,
//! charset status), computed line by line so that a part too large to hold in memory can be
//! judged from a file.
//!
//! Owns: [`TextScan`] (the streaming counterpart of `mime::decode_part_text` +
//! `mime::normalize_text` + the inline-PGP check, exact for plain text in an ASCII-compatible
//! charset), the facts it produces ([`StreamedText`]) and the description of a part whose body
//! was elided from the message `analyze` sees ([`ElidedPart`]).
//!
//! Must not: do I/O, log, or know where the bytes come from (the filter side's `crate::large`
//! reads the spill file and feeds lines in). HTML parts are not supported here (tag stripping
//! needs the whole document); their facts are `None` and the caller falls back.
//!
//! Read more: `crate::large` (the bounded path and its fallback rules), `mime::normalize_text`
//! (the folding this reproduces).

use std::ops::Range;

use base64::Engine as _;

use super::mime::{self, CharsetStatus, Folder, TransferEncoding};

/// Inline PGP armour found in a message-text part.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InlinePgp {
    /// `-----BEGIN PGP SIGNED MESSAGE-----`
    Signed,
    /// `-----BEGIN PGP MESSAGE-----`
    Encrypted,
}

/// What decoding a whole text part would have found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamedText {
    /// The Content-Type charset parameter the facts were decoded with (as `PartInfo::charset`).
    pub charset: Option<String>,
    /// The transfer encoding the facts were decoded with.
    pub transfer_encoding: TransferEncoding,
    /// Whether the normalised marker occurs in the normalised text (`false` when no marker).
    pub marker_found: bool,
    /// The first inline PGP armour line, in line order.
    pub inline_pgp: Option<InlinePgp>,
    pub transfer_clean: bool,
    pub charset_status: CharsetStatus,
}

/// A leaf part of the message `analyze` is given, some of whose body lines were replaced by
/// stand-in lines (the original bytes stay in the spill file).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ElidedPart {
    /// Where the part's body starts in the reduced message.
    pub body_start: usize,
    /// Where the line that ends the part (a boundary delimiter) starts, or the end of the
    /// message. The parser's body range ends here or just before this line's preceding line
    /// end.
    pub body_end: usize,
    /// The stand-in lines, in order, as ranges of the reduced message.
    pub stand_ins: Vec<Range<usize>>,
    /// Facts of the whole original body, for plain-text parts (`None`: not computed).
    pub text: Option<StreamedText>,
}

/// Longest armour line we look for plus room for trailing whitespace.
const PGP_LINE_KEEP: usize = 64;

/// Streaming text facts for one part; feed every body line (line end included) in order, then
/// [`TextScan::finish`].
pub struct TextScan {
    charset: Option<String>,
    cte: TransferEncoding,
    decoder: encoding_rs::Decoder,
    marker: Option<String>,
    transfer_clean: bool,
    malformed: bool,
    /// Set when the result could differ from the whole-part decoding (a base64 decode error).
    inexact: bool,
    // base64: filtered alphabet characters not yet decoded (fewer than 4), and `=` seen.
    b64: Vec<u8>,
    b64_padding: usize,
    // the same folding as `mime::normalize_text`, carried across lines
    folder: Folder,
    window: String,
    found: bool,
    // inline PGP: the current decoded line (first bytes only)
    pgp_line: String,
    pgp_dead: bool,
    pgp: Option<InlinePgp>,
    text: String,
}

impl TextScan {
    /// A scan for a plain-text part in `charset` with transfer encoding `cte`, looking for
    /// `marker` (already normalised with `mime::normalize_marker`). `None` when the charset
    /// is unknown or not ASCII-compatible, or the encoding is not one markgate decodes: then
    /// the part cannot be judged in pieces.
    pub fn new(
        charset: Option<&str>,
        cte: &TransferEncoding,
        marker: Option<&str>,
    ) -> Option<Self> {
        let enc = mime::charset_encoding(charset)?;
        if !enc.is_ascii_compatible() || enc.output_encoding() != enc {
            return None;
        }
        if let TransferEncoding::Other(_) = cte {
            return None;
        }
        Some(TextScan {
            charset: charset.map(|c| c.trim().to_string()),
            cte: cte.clone(),
            decoder: enc.new_decoder_without_bom_handling(),
            marker: marker.filter(|m| !m.is_empty()).map(str::to_string),
            transfer_clean: true,
            malformed: false,
            inexact: false,
            b64: Vec::with_capacity(4),
            b64_padding: 0,
            folder: Folder::new(),
            window: String::new(),
            found: false,
            pgp_line: String::new(),
            pgp_dead: false,
            pgp: None,
            text: String::new(),
        })
    }

    /// One encoded body line, with its line end (the last line may have none).
    pub fn feed_line(&mut self, line: &[u8]) {
        match self.cte {
            TransferEncoding::QuotedPrintable => {
                // `mime::decode_qp` works line by line, so decoding each line is exact.
                let (bytes, clean) = mime::decode_qp(line);
                self.transfer_clean &= clean;
                self.decode_bytes(&bytes, false);
            }
            TransferEncoding::Base64 => {
                let mut out = Vec::with_capacity(line.len());
                for &b in line {
                    match b {
                        b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'+' | b'/' => {
                            if self.b64_padding > 0 {
                                self.transfer_clean = false;
                                self.b64_padding = 0;
                            }
                            self.b64.push(b);
                            if self.b64.len() == 4 {
                                self.b64_group(&mut out);
                            }
                        }
                        b'=' => self.b64_padding += 1,
                        b' ' | b'\t' | b'\r' | b'\n' => {}
                        _ => self.transfer_clean = false,
                    }
                }
                self.decode_bytes(&out, false);
            }
            _ => self.decode_bytes(line, false),
        }
    }

    fn b64_group(&mut self, out: &mut Vec<u8>) {
        let engine = base64::engine::GeneralPurpose::new(
            &base64::alphabet::STANDARD,
            base64::engine::GeneralPurposeConfig::new()
                .with_decode_padding_mode(base64::engine::DecodePaddingMode::RequireNone)
                .with_decode_allow_trailing_bits(true),
        );
        match engine.decode(&self.b64) {
            Ok(v) => out.extend_from_slice(&v),
            Err(_) => self.inexact = true,
        }
        self.b64.clear();
    }

    fn decode_bytes(&mut self, bytes: &[u8], last: bool) {
        let mut rest = bytes;
        loop {
            self.text.clear();
            let want = self
                .decoder
                .max_utf8_buffer_length(rest.len())
                .unwrap_or(rest.len().saturating_mul(3) + 16);
            self.text.reserve(want);
            let (result, read, replaced) =
                self.decoder.decode_to_string(rest, &mut self.text, last);
            self.malformed |= replaced;
            rest = &rest[read..];
            let text = std::mem::take(&mut self.text);
            self.scan_text(&text);
            self.text = text;
            if matches!(result, encoding_rs::CoderResult::InputEmpty) {
                break;
            }
        }
    }

    fn scan_text(&mut self, text: &str) {
        let mut piece = String::with_capacity(text.len() + 1);
        for c in text.chars() {
            self.pgp_char(c);
            self.folder.push(c, &mut piece);
        }
        self.search(&piece);
    }

    fn search(&mut self, piece: &str) {
        let Some(marker) = &self.marker else {
            return;
        };
        if self.found || piece.is_empty() {
            return;
        }
        self.window.push_str(piece);
        if self.window.contains(marker.as_str()) {
            self.found = true;
            self.window.clear();
            return;
        }
        // Keep just enough for a match that straddles this piece and the next.
        let keep = marker.len();
        if self.window.len() > keep {
            let mut cut = self.window.len() - keep;
            while !self.window.is_char_boundary(cut) {
                cut -= 1;
            }
            self.window.drain(..cut);
        }
    }

    fn pgp_char(&mut self, c: char) {
        if c == '\n' {
            self.pgp_line_end();
            return;
        }
        if self.pgp_dead {
            return;
        }
        if self.pgp_line.len() < PGP_LINE_KEEP {
            self.pgp_line.push(c);
        } else if !c.is_whitespace() {
            self.pgp_dead = true;
        }
    }

    fn pgp_line_end(&mut self) {
        if self.pgp.is_none() && !self.pgp_dead {
            match self.pgp_line.trim_end() {
                "-----BEGIN PGP SIGNED MESSAGE-----" => self.pgp = Some(InlinePgp::Signed),
                "-----BEGIN PGP MESSAGE-----" => self.pgp = Some(InlinePgp::Encrypted),
                _ => {}
            }
        }
        self.pgp_line.clear();
        self.pgp_dead = false;
    }

    /// The facts, or `None` when they might differ from decoding the part whole.
    pub fn finish(mut self) -> Option<StreamedText> {
        if self.cte == TransferEncoding::Base64 {
            if self.b64.len() == 1 {
                self.transfer_clean = false;
                self.b64.clear();
            } else if !self.b64.is_empty() {
                let mut out = Vec::new();
                self.b64_group(&mut out);
                self.decode_bytes(&out, false);
            }
        }
        self.decode_bytes(&[], true);
        if !self.pgp_line.is_empty() {
            self.pgp_line_end();
        }
        if self.inexact {
            return None;
        }
        Some(StreamedText {
            charset: self.charset,
            transfer_encoding: self.cte,
            marker_found: self.found,
            inline_pgp: self.pgp,
            transfer_clean: self.transfer_clean,
            charset_status: if self.malformed {
                CharsetStatus::Malformed
            } else {
                CharsetStatus::Ok
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inspect::mime::{decode_charset, decode_transfer, normalize_marker, normalize_text};

    /// What `analyze` computes for a whole part.
    fn whole(
        body: &[u8],
        charset: Option<&str>,
        cte: &TransferEncoding,
        marker: &str,
    ) -> StreamedText {
        let (bytes, clean) = decode_transfer(body, cte);
        let (text, status) = decode_charset(&bytes, charset);
        let m = normalize_marker(marker);
        let mut pgp = None;
        for line in text.lines() {
            match line.trim_end() {
                "-----BEGIN PGP SIGNED MESSAGE-----" => {
                    pgp = Some(InlinePgp::Signed);
                    break;
                }
                "-----BEGIN PGP MESSAGE-----" => {
                    pgp = Some(InlinePgp::Encrypted);
                    break;
                }
                _ => {}
            }
        }
        StreamedText {
            charset: charset.map(str::to_string),
            transfer_encoding: cte.clone(),
            marker_found: !m.is_empty() && normalize_text(&text, false).contains(m.as_str()),
            inline_pgp: pgp,
            transfer_clean: clean,
            charset_status: status,
        }
    }

    fn streamed(
        body: &[u8],
        charset: Option<&str>,
        cte: &TransferEncoding,
        marker: &str,
    ) -> StreamedText {
        let m = normalize_marker(marker);
        let mut s = TextScan::new(charset, cte, Some(&m)).unwrap();
        for line in body.split_inclusive(|&b| b == b'\n') {
            s.feed_line(line);
        }
        s.finish().unwrap()
    }

    const MARKER: &str = "may be subject to Recording and/or monitoring";

    fn cases() -> Vec<(Vec<u8>, Option<&'static str>, TransferEncoding)> {
        let plain =
            b"Hello,\r\n> > may be subject\r\n>   to  recording\r\n and/or MONITORING.\r\nbye\r\n"
                .to_vec();
        let latin = "Caf\u{e9} may be subject to recording and/or\u{a0}monitoring\n"
            .chars()
            .map(|c| c as u32 as u8)
            .collect::<Vec<u8>>();
        let qp =
            b"may be subj=\r\nect to recording and/or moni=\r\ntoring=20\r\n=E9t=C3=A9 bad=ZZ\r\n"
                .to_vec();
        let b64 = mime_b64(
            b"x may be subject to recording and/or monitoring y\n-----BEGIN PGP MESSAGE-----  \n",
        );
        let pgp = b"text\n-----BEGIN PGP SIGNED MESSAGE-----\t \nHash: SHA256\n".to_vec();
        let zw = "may\u{200B} be subject to recording and/or monitoring"
            .as_bytes()
            .to_vec();
        let none = b"nothing to see here\n--\nsignature".to_vec();
        let bad_utf8 = b"may be subject \xff\xfe to recording and/or monitoring\n".to_vec();
        let bad_b64 = b"QUJD\r\nRA==\r\nRUY=\r\n!!\r\nQ".to_vec();
        vec![
            (plain, None, TransferEncoding::SevenBit),
            (latin, Some("iso-8859-1"), TransferEncoding::EightBit),
            (qp, Some("utf-8"), TransferEncoding::QuotedPrintable),
            (b64, Some("utf-8"), TransferEncoding::Base64),
            (pgp, Some("us-ascii"), TransferEncoding::Absent),
            (zw, Some("utf-8"), TransferEncoding::EightBit),
            (none, None, TransferEncoding::Absent),
            (bad_utf8, Some("utf-8"), TransferEncoding::Binary),
            (bad_b64, None, TransferEncoding::Base64),
        ]
    }

    fn mime_b64(data: &[u8]) -> Vec<u8> {
        crate::rewrite::disclaimer::encode_base64_lines(data, b"\r\n", true)
    }

    #[test]
    fn streamed_facts_equal_whole_part_facts() {
        for (body, charset, cte) in cases() {
            assert_eq!(
                streamed(&body, charset, &cte, MARKER),
                whole(&body, charset, &cte, MARKER),
                "{:?}",
                String::from_utf8_lossy(&body)
            );
        }
    }

    #[test]
    fn a_marker_split_across_lines_and_pieces_is_found() {
        // Lines fed one byte at a time exercise every straddle of the search window.
        let body = b"aaaa may be\r\n> subject to\r\n\r\nrecording and/or\tmonitoring\r\n";
        let m = normalize_marker(MARKER);
        let mut s = TextScan::new(None, &TransferEncoding::SevenBit, Some(&m)).unwrap();
        for b in body {
            s.feed_line(std::slice::from_ref(b));
        }
        let facts = s.finish().unwrap();
        assert!(facts.marker_found);
        assert_eq!(
            facts,
            whole(body, None, &TransferEncoding::SevenBit, MARKER)
        );
    }

    #[test]
    fn a_multibyte_character_split_across_feeds_decodes_once() {
        let body = "é".repeat(50).into_bytes();
        let m = normalize_marker("éé");
        let mut s = TextScan::new(Some("utf-8"), &TransferEncoding::EightBit, Some(&m)).unwrap();
        for b in &body {
            s.feed_line(std::slice::from_ref(b));
        }
        let facts = s.finish().unwrap();
        assert!(facts.marker_found);
        assert_eq!(facts.charset_status, CharsetStatus::Ok);
    }

    #[test]
    fn generated_bodies_agree_with_whole_decoding() {
        // A small deterministic generator: words, quote prefixes, NBSP, 8-bit bytes, armour.
        let words: [&[u8]; 12] = [
            b"may",
            b"be",
            b"subject",
            b"to",
            b"recording",
            b"and/or",
            b"monitoring",
            b"> ",
            b"\xc2\xa0",
            b"\xe9",
            b"-----BEGIN PGP MESSAGE-----",
            b"=",
        ];
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        for round in 0..300 {
            let mut body = Vec::new();
            for _ in 0..(round % 40) {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                body.extend_from_slice(words[(seed % 12) as usize]);
                body.extend_from_slice(match seed % 5 {
                    0 => &b"\r\n"[..],
                    1 => b"\n",
                    2 => b"  ",
                    _ => b" ",
                });
            }
            for (charset, cte) in [
                (Some("utf-8"), TransferEncoding::EightBit),
                (Some("windows-1252"), TransferEncoding::QuotedPrintable),
                (None, TransferEncoding::Absent),
            ] {
                assert_eq!(
                    streamed(&body, charset, &cte, MARKER),
                    whole(&body, charset, &cte, MARKER),
                    "round {round}: {:?}",
                    String::from_utf8_lossy(&body)
                );
            }
            let b64 = mime_b64(&body);
            assert_eq!(
                streamed(&b64, Some("utf-8"), &TransferEncoding::Base64, MARKER),
                whole(&b64, Some("utf-8"), &TransferEncoding::Base64, MARKER),
            );
        }
    }

    #[test]
    fn unsupported_charsets_and_encodings_are_refused() {
        assert!(TextScan::new(Some("utf-16le"), &TransferEncoding::Absent, None).is_none());
        assert!(TextScan::new(Some("x-no-such"), &TransferEncoding::Absent, None).is_none());
        assert!(TextScan::new(None, &TransferEncoding::Other("x-uuencode".into()), None).is_none());
    }
}
