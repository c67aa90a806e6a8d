//! Boldon James Classifier (now Fortra) labels.
//!
//! `x-bjprotectivemarking` carries the label as SISL XML: a `<sisl>` element with the
//! labelling `policy` GUID and an `origin` (`userSelected` or `defaultValue`), holding one
//! `<element uid="…" value="…"/>` per selector value chosen; the uids only mean something
//! against the organisation's labelling policy, so the policy maps uids. Some installations
//! also write the display text in `bjclassification` (`Internal Use Only`), mapped by text.
//! Sources: docs/vendor-labels.md. A small attribute scanner, not an XML parser: the format is
//! flat and machine-written, and anything it does not recognise is a diagnostic.

use super::VendorLabel;
use crate::policy::labels::Diagnostic;

/// At most this many elements are read.
const MAX_ELEMENTS: usize = 32;

/// The label one Boldon James header carries; nothing for other headers.
pub fn read(name: &str, value: &str) -> Vec<VendorLabel> {
    if name.eq_ignore_ascii_case("bjclassification") {
        let text = value.trim();
        if text.is_empty() {
            return Vec::new();
        }
        return vec![VendorLabel {
            header: name.to_owned(),
            key: text.to_owned(),
            enabled: true,
            ..VendorLabel::default()
        }];
    }
    if !name.eq_ignore_ascii_case("x-bjprotectivemarking") {
        return Vec::new();
    }
    let mut l = VendorLabel {
        header: name.to_owned(),
        enabled: true,
        ..VendorLabel::default()
    };
    let Some(sisl) = tag(value, "sisl") else {
        l.diagnostics.push(Diagnostic::new(
            "vendor.boldon_james.syntax",
            0,
            "no <sisl> element",
        ));
        return vec![l];
    };
    l.tenant = attr(sisl, "policy").map(|p| p.to_ascii_lowercase());
    l.user_chosen = match attr(sisl, "origin") {
        Some("userSelected") => Some(true),
        Some("defaultValue") => Some(false),
        Some(other) => {
            l.diagnostics.push(Diagnostic::new(
                "vendor.boldon_james.origin",
                0,
                format!("origin=`{other}`, expected userSelected or defaultValue"),
            ));
            None
        }
        None => None,
    };
    let mut keys = Vec::new();
    let mut rest = value;
    while let Some(el) = tag(rest, "element") {
        if keys.len() >= MAX_ELEMENTS {
            break;
        }
        let end = el.as_ptr() as usize - rest.as_ptr() as usize + el.len();
        rest = &rest[end.min(rest.len())..];
        match attr(el, "uid") {
            Some(uid) => {
                let uid = uid.to_ascii_lowercase();
                match attr(el, "value").filter(|v| !v.is_empty()) {
                    Some(v) => {
                        keys.push(format!("{uid}={v}"));
                        keys.push(uid);
                    }
                    None => keys.push(uid),
                }
            }
            None => l.diagnostics.push(Diagnostic::new(
                "vendor.boldon_james.syntax",
                0,
                "an <element> without a uid",
            )),
        }
    }
    if keys.is_empty() {
        l.diagnostics.push(Diagnostic::new(
            "vendor.boldon_james.syntax",
            0,
            "the <sisl> label has no <element>",
        ));
    } else {
        l.key = keys.remove(0);
        l.alt_keys = keys;
    }
    vec![l]
}

/// The attribute text of the first `<name …>` start tag (between the name and `>`).
fn tag<'a>(s: &'a str, name: &str) -> Option<&'a str> {
    let open = format!("<{name}");
    let mut from = 0;
    while let Some(i) = s[from..].find(&open) {
        let start = from + i + open.len();
        let next = s[start..].chars().next();
        if matches!(next, Some(c) if c.is_whitespace() || c == '>' || c == '/') {
            let end = s[start..].find('>').map_or(s.len(), |e| start + e);
            return Some(&s[start..end]);
        }
        from = start;
    }
    None
}

/// The value of `name="…"` (or `'…'`) among a tag's attributes.
fn attr<'a>(tag: &'a str, name: &str) -> Option<&'a str> {
    let mut from = 0;
    while let Some(i) = tag[from..].find(name) {
        let at = from + i;
        let before_ok = at == 0 || tag[..at].ends_with(char::is_whitespace);
        let after = tag[at + name.len()..].trim_start();
        if before_ok && let Some(after) = after.strip_prefix('=') {
            let after = after.trim_start();
            let q = after.chars().next()?;
            if q == '"' || q == '\'' {
                let body = &after[1..];
                return body.find(q).map(|e| &body[..e]);
            }
        }
        from = at + name.len();
    }
    None
}

/// All Boldon James headers of a message as one label: the SISL label first.
pub fn merge(mut labels: Vec<VendorLabel>) -> Option<VendorLabel> {
    labels.sort_by_key(|l| !l.header.eq_ignore_ascii_case("x-bjprotectivemarking"));
    super::titus::merge(labels)
}
