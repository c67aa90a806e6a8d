//! Folding decoded text for the marker search: what a reader sees of a part (HTML tags and
//! entities gone), leading quote markers dropped per line, whitespace runs made one space,
//! zero-width characters dropped, lowercased. [`Folder`] does it piece by piece so that
//! `inspect::stream` folds a part line by line exactly as the whole text folds.
//!
//! Must not: decode transfer encodings or charsets (see `decode`), or search (see `search`).

use std::borrow::Cow;

use super::html::html_to_text;

/// Normalise a marker for searching: the same folding as [`normalize_text`] on plain text.
pub fn normalize_marker(marker: &str) -> String {
    fold_marker(marker).into_owned()
}

/// [`normalize_marker`], borrowing the marker when it is folded already (the usual lowercase
/// ASCII sentence folds to itself).
pub fn fold_marker(marker: &str) -> Cow<'_, str> {
    if is_folded_ascii(marker.as_bytes()) {
        return Cow::Borrowed(marker);
    }
    Cow::Owned(normalize_text(marker, false))
}

/// Fold decoded text for marker search: HTML tags removed (block tags become spaces) and
/// entities decoded; per line, leading quote markers (`>`) removed, since quoted replies carry
/// the old disclaimer; all whitespace runs (NBSP included) become one space; zero-width
/// characters dropped; lowercased.
pub fn normalize_text(text: &str, html: bool) -> String {
    let text = visible_text(text, html);
    let text = text.as_ref();
    let mut out = String::with_capacity(text.len());
    Folder::new().push_str(text, &mut out);
    out
}

/// What a reader sees of a text part: HTML without its tags (entities decoded), plain text as
/// it is. Both marker searches start from it.
pub(super) fn visible_text(text: &str, html: bool) -> Cow<'_, str> {
    if html {
        Cow::Owned(html_to_text(text))
    } else {
        Cow::Borrowed(text)
    }
}

/// True when `m` is ASCII and folding leaves it as it is: no uppercase, no whitespace but
/// single spaces between other characters, no `>` first.
pub(super) fn is_folded_ascii(m: &[u8]) -> bool {
    let (Some(&first), Some(&last)) = (m.first(), m.last()) else {
        return false;
    };
    if first == b'>' || is_ascii_whitespace_char(first) || is_ascii_whitespace_char(last) {
        return false;
    }
    // Whole-slice folds without early exits: the compiler turns them into vector code.
    let bad_byte = m.iter().fold(false, |bad, &b| {
        bad | !b.is_ascii() | b.is_ascii_uppercase() | (b != b' ' && is_ascii_whitespace_char(b))
    });
    let double_space = m
        .windows(2)
        .fold(false, |bad, w| bad | ((w[0] == b' ') & (w[1] == b' ')));
    !bad_byte && !double_space
}

/// `char::is_whitespace` for an ASCII byte (tab, LF, VT, FF, CR, space; not `u8`'s
/// `is_ascii_whitespace`, which leaves out VT).
#[inline]
pub(super) fn is_ascii_whitespace_char(b: u8) -> bool {
    matches!(b, b'\t' | b'\n' | 0x0B | 0x0C | b'\r' | b' ')
}

/// The folding of [`normalize_text`] as a state machine fed piece by piece, so a part read
/// line by line (`inspect::stream`) folds exactly as the whole text does: per line, leading
/// `>` and whitespace dropped; whitespace runs as one space; zero-width characters dropped;
/// lowercased.
#[derive(Debug, Clone)]
pub(crate) struct Folder {
    line_start: bool,
    pending_space: bool,
    nonempty: bool,
}

impl Default for Folder {
    fn default() -> Self {
        Folder::new()
    }
}

impl Folder {
    pub fn new() -> Self {
        Folder {
            line_start: true,
            pending_space: false,
            nonempty: false,
        }
    }

    /// Fold `text` onto `out`.
    pub fn push_str(&mut self, text: &str, out: &mut String) {
        let bytes = text.as_bytes();
        let mut i = 0;
        while i < bytes.len() {
            // Mail text is mostly runs of visible ASCII: copy such a run in one go and
            // lowercase it in place (a `>` inside it is not at a line start, so it stays).
            let b = bytes[i];
            if b.is_ascii_graphic() && !(self.line_start && b == b'>') {
                let run = bytes[i..]
                    .iter()
                    .position(|b| !b.is_ascii_graphic())
                    .map_or(bytes.len(), |p| i + p);
                if self.pending_space {
                    out.push(' ');
                    self.pending_space = false;
                }
                let at = out.len();
                out.push_str(&text[i..run]);
                out[at..].make_ascii_lowercase();
                self.line_start = false;
                self.nonempty = true;
                i = run;
                continue;
            }
            let c = if b.is_ascii() {
                i += 1;
                char::from(bytes[i - 1])
            } else {
                let Some(c) = text[i..].chars().next() else {
                    break;
                };
                i += c.len_utf8();
                c
            };
            self.push(c, out);
        }
    }

    /// Fold one character onto `out`.
    #[inline]
    pub fn push(&mut self, c: char, out: &mut String) {
        if c == '\n' {
            self.line_start = true;
            self.pending_space |= self.nonempty;
            return;
        }
        if self.line_start && (c == '>' || c.is_whitespace()) {
            return;
        }
        self.line_start = false;
        if c.is_whitespace() {
            self.pending_space = self.nonempty;
        } else if !matches!(
            c,
            '\u{200B}' | '\u{200C}' | '\u{200D}' | '\u{FEFF}' | '\u{AD}'
        ) {
            if self.pending_space {
                out.push(' ');
                self.pending_space = false;
            }
            if c.is_ascii() {
                out.push(c.to_ascii_lowercase());
            } else {
                out.extend(c.to_lowercase());
            }
            self.nonempty = true;
        }
    }
}
