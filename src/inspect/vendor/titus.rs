//! Titus (now Fortra Data Classification) labels.
//!
//! Titus writes the label's properties in two header families, numbered by product version:
//! `x-titus-metadata-<n>`, base64 of a JSON object whose `Metadata.props` lists properties
//! (`{"n": name, "vals": [{"value": v}]}`) under an organisation namespace `Metadata.ns`; and
//! `x-tituslabs-classifications-<n>`, the same properties as `Name=Value;` pairs. The property
//! names are the organisation's own (`Classification`, `CTPClassification`, …), so the policy
//! maps `Name=Value` pairs. Sources: docs/vendor-labels.md.

use base64::Engine;

use super::VendorLabel;
use crate::policy::labels::Diagnostic;

/// At most this many property values are read from one header.
const MAX_PAIRS: usize = 64;

fn numbered(name: &str, prefix: &str) -> bool {
    name.len() > prefix.len()
        && name.is_char_boundary(prefix.len())
        && name[..prefix.len()].eq_ignore_ascii_case(prefix)
        && name[prefix.len()..].bytes().all(|b| b.is_ascii_digit())
}

/// The label one Titus header carries (its pairs as `key` and `alt_keys`); nothing for other
/// headers or a header without properties.
pub fn read(name: &str, value: &str) -> Vec<VendorLabel> {
    let mut diags = Vec::new();
    let (pairs, tenant) = if numbered(name, "x-titus-metadata-") {
        metadata(value, &mut diags)
    } else if numbered(name, "x-tituslabs-classifications-") {
        (classifications(value, &mut diags), None)
    } else {
        return Vec::new();
    };
    let mut pairs = pairs.into_iter();
    let key = pairs.next().unwrap_or_default();
    if key.is_empty() && diags.is_empty() {
        return Vec::new();
    }
    vec![VendorLabel {
        header: name.to_owned(),
        key,
        alt_keys: pairs.collect(),
        enabled: true,
        tenant,
        diagnostics: diags,
        ..VendorLabel::default()
    }]
}

/// `Name=Value;Name=Value;` pairs.
fn classifications(value: &str, diags: &mut Vec<Diagnostic>) -> Vec<String> {
    let mut out = Vec::new();
    for item in value.split(';').map(str::trim).filter(|i| !i.is_empty()) {
        match item.split_once('=') {
            Some((n, v)) if !n.trim().is_empty() => {
                if out.len() < MAX_PAIRS {
                    out.push(format!("{}={}", n.trim(), v.trim()));
                }
            }
            _ => diags.push(Diagnostic::new(
                "vendor.titus.syntax",
                0,
                format!("`{item}` is not Name=Value"),
            )),
        }
    }
    out
}

/// The base64 JSON metadata: its `Name=Value` pairs and namespace.
fn metadata(value: &str, diags: &mut Vec<Diagnostic>) -> (Vec<String>, Option<String>) {
    let compact: String = value.chars().filter(|c| !c.is_whitespace()).collect();
    let engine = base64::engine::general_purpose::GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        base64::engine::GeneralPurposeConfig::new()
            .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
    );
    let json = match engine.decode(compact.as_bytes()) {
        Ok(b) => b,
        Err(e) => {
            diags.push(Diagnostic::new(
                "vendor.titus.base64",
                0,
                format!("the metadata is not base64 ({e})"),
            ));
            return (Vec::new(), None);
        }
    };
    let v: serde_json::Value = match serde_json::from_slice(&json) {
        Ok(v) => v,
        Err(e) => {
            diags.push(Diagnostic::new(
                "vendor.titus.json",
                0,
                format!("the decoded metadata is not JSON ({e})"),
            ));
            return (Vec::new(), None);
        }
    };
    let meta = &v["Metadata"];
    let tenant = meta["ns"].as_str().map(str::to_owned);
    let mut out = Vec::new();
    match meta["props"].as_array() {
        Some(props) => {
            for p in props {
                let Some(n) = p["n"].as_str() else { continue };
                for val in p["vals"].as_array().into_iter().flatten() {
                    if let Some(s) = val["value"].as_str()
                        && out.len() < MAX_PAIRS
                    {
                        out.push(format!("{n}={s}"));
                    }
                }
            }
        }
        None => diags.push(Diagnostic::new(
            "vendor.titus.json",
            0,
            "the metadata has no Metadata.props list",
        )),
    }
    (out, tenant)
}

/// All Titus headers of a message as one label: the first header's pairs first.
pub fn merge(labels: Vec<VendorLabel>) -> Option<VendorLabel> {
    let mut it = labels.into_iter();
    let mut first = it.next()?;
    for l in it {
        first.alt_keys.push(l.key);
        first.alt_keys.extend(l.alt_keys);
        first.diagnostics.extend(l.diagnostics);
        first.tenant = first.tenant.or(l.tenant);
    }
    if first.key.is_empty() && !first.alt_keys.is_empty() {
        first.key = first.alt_keys.remove(0);
    }
    Some(first)
}
