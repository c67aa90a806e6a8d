//! Searching text: whether a marker is in a part's folded text (answered without folding when
//! the bytes already decide it), and case-insensitive ASCII substring search for `rewrite`.
//!
//! Must not: change what folding means: every answer here equals a plain search of the
//! [`super::normalize_text`] output; speed is the only reason this file exists.

use super::fold::{Folder, is_folded_ascii, visible_text};

/// Is `marker` in the folded `text`? Exactly `normalize_text(text, html).contains(marker)`, but
/// most texts are answered without folding them (folding copies the whole text, character by
/// character):
/// - *present* when `marker` is a folded ASCII string (what [`normalize_marker`] makes of an
///   ASCII marker) and the text holds it verbatim up to ASCII case: folding maps such a run of
///   the text onto the marker itself;
/// - *absent* when the text is ASCII and some space-separated word of `marker` is not in it, up
///   to ASCII case: folding an ASCII text only lowercases, drops leading `>` and turns whitespace
///   runs into one space, so every word of the folded text is a lowercased piece of the text.
///   (Non-ASCII text can make ASCII letters by folding: zero-width characters vanish inside
///   words, `K` (Kelvin sign) lowercases to `k`; such text is always folded.)
///
/// Otherwise the text is folded and searched.
pub fn marker_in_text(text: &str, html: bool, marker: &str) -> bool {
    if marker.is_empty() {
        return true;
    }
    let text = visible_text(text, html);
    let text = text.as_ref();
    let (hay, m) = (text.as_bytes(), marker.as_bytes());
    // In order of cost and likelihood: the word holding the marker's rarest byte (absent from
    // most texts), the marker itself (in a disclaimer's own text), every word.
    let ascii = text.is_ascii();
    if ascii && !contains_ascii_ci(hay, word_at(m, rarest(m))) {
        return false;
    }
    if is_folded_ascii(m) && contains_ascii_ci(hay, m) {
        return true;
    }
    if ascii && !m.split(|&b| b == b' ').all(|w| contains_ascii_ci(hay, w)) {
        return false;
    }
    let mut folded = String::with_capacity(text.len());
    Folder::new().push_str(text, &mut folded);
    memchr::memmem::find(folded.as_bytes(), m).is_some()
}

/// How rare each byte is in mail text, as a case-insensitive search sees it (higher: rarer).
/// Letters by their frequency in English, both cases alike; spaces and line ends are
/// everywhere; any other byte counts as fairly rare. Only speed depends on it, never an answer.
const RARITY: [u8; 256] = {
    const LETTERS: &[u8] = b"etaoinsrhldcumfpgwybvkxjqz";
    let mut t = [13u8; 256];
    t[b' ' as usize] = 0;
    t[b'\r' as usize] = 0;
    t[b'\n' as usize] = 0;
    let mut i = 0;
    while i < LETTERS.len() {
        t[LETTERS[i] as usize] = i as u8 + 1;
        t[LETTERS[i].to_ascii_uppercase() as usize] = i as u8 + 1;
        i += 1;
    }
    t
};

/// The position of the rarest byte of `needle` (the first of equals); 0 for an empty one.
fn rarest(needle: &[u8]) -> usize {
    let top = needle
        .iter()
        .fold(0, |top, &b| top.max(RARITY[usize::from(b)]));
    needle
        .iter()
        .position(|&b| RARITY[usize::from(b)] == top)
        .unwrap_or(0)
}

/// The space-separated word of `m` around byte `at` (empty when `at` is a space).
fn word_at(m: &[u8], at: usize) -> &[u8] {
    let start = m[..at]
        .iter()
        .rposition(|&b| b == b' ')
        .map_or(0, |p| p + 1);
    let end = m[at..]
        .iter()
        .position(|&b| b == b' ')
        .map_or(m.len(), |p| at + p);
    &m[start..end]
}

/// Does `hay` contain `needle`, comparing ASCII letters without case (other bytes exactly)?
/// Looks for the needle's rarest byte (both cases) and compares around each hit.
fn contains_ascii_ci(hay: &[u8], needle: &[u8]) -> bool {
    if needle.is_empty() {
        return true;
    }
    if needle.len() > hay.len() {
        return false;
    }
    let last_start = hay.len() - needle.len();
    let at = rarest(needle);
    let fits = |hit: usize| {
        hit.checked_sub(at).is_some_and(|start| {
            start <= last_start && hay[start..start + needle.len()].eq_ignore_ascii_case(needle)
        })
    };
    let (lo, up) = (
        needle[at].to_ascii_lowercase(),
        needle[at].to_ascii_uppercase(),
    );
    if lo == up {
        memchr::memchr_iter(lo, hay).any(fits)
    } else {
        memchr::memchr2_iter(lo, up, hay).any(fits)
    }
}

/// Case-insensitive ASCII substring search.
pub fn find_ascii_ci(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() || haystack.len() < needle.len() {
        return None;
    }
    haystack
        .windows(needle.len())
        .position(|w| w.eq_ignore_ascii_case(needle))
}

/// Case-insensitive ASCII search for the last occurrence.
pub fn rfind_ascii_ci(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() || haystack.len() < needle.len() {
        return None;
    }
    haystack
        .windows(needle.len())
        .rposition(|w| w.eq_ignore_ascii_case(needle))
}
