//! HTML to the text a reader sees, for the marker search: tags stripped (block tags become line
//! ends), script and style content skipped, common entities decoded.
//!
//! Good enough for finding text, not for rendering. Must not: be used to rewrite HTML (rewrite
//! edits the raw bytes), fold or search text.

use super::search::find_ascii_ci;

/// Tag stripping and entity decoding, good enough for finding text (not for rendering).
pub(super) fn html_to_text(html: &str) -> String {
    let mut out = String::with_capacity(html.len());
    let bytes = html.as_bytes();
    let mut i = 0;
    let mut last = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'<' => {
                out.push_str(&html[last..i]);
                let rest = &html[i..];
                let end = if rest.starts_with("<!--") {
                    rest.find("-->").map(|e| i + e + 3).unwrap_or(bytes.len())
                } else {
                    let close_at = tag_end(bytes, i);
                    let inner = html[i + 1..close_at].trim_start_matches('/');
                    let name =
                        &inner[..inner.bytes().take_while(u8::is_ascii_alphanumeric).count()];
                    if (name.eq_ignore_ascii_case("script") || name.eq_ignore_ascii_case("style"))
                        && !html[i + 1..].starts_with('/')
                    {
                        // Skip the element's content up to its closing tag.
                        let close = format!("</{}", name.to_ascii_lowercase());
                        match find_ascii_ci(&bytes[close_at..], close.as_bytes()) {
                            Some(p) => tag_end(bytes, close_at + p),
                            None => bytes.len(),
                        }
                    } else {
                        if is_block_tag(name) {
                            out.push('\n');
                        }
                        close_at
                    }
                };
                i = end.min(bytes.len());
                last = i;
            }
            b'&' => {
                out.push_str(&html[last..i]);
                let (decoded, used) = decode_entity(&html[i..]);
                match decoded {
                    Some(c) => out.push(c),
                    None => out.push('&'),
                }
                i += used;
                last = i;
            }
            _ => i += 1,
        }
    }
    if last < bytes.len() {
        out.push_str(&html[last..]);
    }
    out
}

/// Index just after the first `>` following `start`. Quotes are deliberately not honoured: in
/// broken HTML an unbalanced quote would otherwise hide the rest of the document, including a
/// disclaimer, from the search.
fn tag_end(bytes: &[u8], start: usize) -> usize {
    bytes[start + 1..]
        .iter()
        .position(|&b| b == b'>')
        .map(|p| start + 1 + p + 1)
        .unwrap_or(bytes.len())
}

/// Is `name` (ASCII letters and digits, any case) a tag that breaks the text like a line end?
fn is_block_tag(name: &str) -> bool {
    // The longest block tag is `blockquote`.
    let mut buf = [0u8; 10];
    let Some(lower) = buf.get_mut(..name.len()) else {
        return false;
    };
    lower.copy_from_slice(name.as_bytes());
    lower.make_ascii_lowercase();
    matches!(
        &*lower,
        b"br"
            | b"p"
            | b"div"
            | b"tr"
            | b"td"
            | b"th"
            | b"li"
            | b"ul"
            | b"ol"
            | b"table"
            | b"blockquote"
            | b"hr"
            | b"h1"
            | b"h2"
            | b"h3"
            | b"h4"
            | b"h5"
            | b"h6"
            | b"pre"
            | b"body"
            | b"html"
            | b"head"
            | b"title"
    )
}

/// Decode one entity at the start of `s` (which begins with `&`). Returns the character (if
/// recognised) and how many bytes were consumed.
fn decode_entity(s: &str) -> (Option<char>, usize) {
    let bytes = s.as_bytes();
    let limit = bytes.len().min(12);
    let Some(semi) = bytes[..limit].iter().position(|&b| b == b';') else {
        return (None, 1);
    };
    let name = &s[1..semi];
    let c = if let Some(num) = name.strip_prefix('#') {
        let v = if let Some(hex) = num.strip_prefix('x').or_else(|| num.strip_prefix('X')) {
            u32::from_str_radix(hex, 16).ok()
        } else {
            num.parse::<u32>().ok()
        };
        v.and_then(char::from_u32)
    } else {
        match name {
            "amp" => Some('&'),
            "lt" => Some('<'),
            "gt" => Some('>'),
            "quot" => Some('"'),
            "apos" => Some('\''),
            "nbsp" => Some('\u{A0}'),
            "mdash" => Some('\u{2014}'),
            "ndash" => Some('\u{2013}'),
            "lsquo" => Some('\u{2018}'),
            "rsquo" => Some('\u{2019}'),
            "ldquo" => Some('\u{201C}'),
            "rdquo" => Some('\u{201D}'),
            "hellip" => Some('\u{2026}'),
            "pound" => Some('\u{A3}'),
            "euro" => Some('\u{20AC}'),
            "copy" => Some('\u{A9}'),
            "reg" => Some('\u{AE}'),
            "shy" => Some('\u{AD}'),
            _ => None,
        }
    };
    match c {
        Some(c) => (Some(c), semi + 1),
        None => (None, 1),
    }
}
