//! Microsoft Purview (MIP) sensitivity labels in the `msip_labels` header.
//!
//! The value is a `;`-separated list of `MSIP_Label_<GUID>_<Attribute>=<value>` pairs (the MIP
//! SDK's `DefinedPrefix_ElementType_GlobalIdentifier_AttributeName` metadata), one group of
//! attributes per label: `Enabled` (mandatory), `SiteId` (the tenant, mandatory), `Method`
//! (`Standard`: applied by default or automatically; `Privileged`: chosen by the user),
//! `SetDate`, `Name`, `ContentBits`, `ActionId`. A message carries at most one label per
//! tenant; replies across tenants accumulate one per tenant. Sources: docs/vendor-labels.md.
//! Also [`render`]: the header markgate writes from a policy mapping.

use super::{VendorLabel, is_guid};
use crate::policy::labels::Diagnostic;

/// The header's name.
pub const HEADER: &str = "msip_labels";

/// At most this many labels are read from one header.
const MAX: usize = 16;

/// The labels in one `msip_labels` header; nothing for any other header.
pub fn read(name: &str, value: &str) -> Vec<VendorLabel> {
    if !name.eq_ignore_ascii_case(HEADER) {
        return Vec::new();
    }
    let mut labels: Vec<VendorLabel> = Vec::new();
    // Diagnostics about items that belong to no label go on the first label (or a stub).
    let mut loose: Vec<Diagnostic> = Vec::new();
    // Whether each label had its mandatory Enabled attribute.
    let mut enabled_seen: Vec<bool> = Vec::new();
    let mut at = 0usize;
    for item in value.split(';') {
        let start = at;
        at += item.len() + 1;
        let item = item.trim();
        if item.is_empty() {
            continue;
        }
        let Some((key, val)) = item.split_once('=') else {
            loose.push(diag(
                "vendor.purview.syntax",
                start,
                format!("`{item}` has no `=`"),
            ));
            continue;
        };
        let (key, val) = (key.trim(), val.trim());
        let Some(rest) = strip_prefix_ci(key, "MSIP_Label_") else {
            loose.push(diag(
                "vendor.purview.syntax",
                start,
                format!("`{key}` does not start with MSIP_Label_"),
            ));
            continue;
        };
        let Some((guid, attr)) = rest.rsplit_once('_') else {
            loose.push(diag(
                "vendor.purview.syntax",
                start,
                format!("`{key}` is not MSIP_Label_<GUID>_<attribute>"),
            ));
            continue;
        };
        let guid = guid.to_ascii_lowercase();
        let idx = match labels.iter().position(|l| l.key == guid) {
            Some(i) => i,
            None => {
                if labels.len() >= MAX {
                    continue;
                }
                let mut l = VendorLabel {
                    header: name.to_owned(),
                    key: guid.clone(),
                    ..VendorLabel::default()
                };
                if !is_guid(&guid) {
                    l.diagnostics.push(diag(
                        "vendor.purview.guid",
                        start,
                        format!("label id `{guid}` is not a GUID"),
                    ));
                }
                labels.push(l);
                enabled_seen.push(false);
                labels.len() - 1
            }
        };
        let l = &mut labels[idx];
        match attr.to_ascii_lowercase().as_str() {
            "enabled" => {
                l.enabled = match val.to_ascii_lowercase().as_str() {
                    "true" => true,
                    "false" => false,
                    _ => {
                        l.diagnostics.push(diag(
                            "vendor.purview.enabled",
                            start,
                            format!("Enabled=`{val}`, expected True or False"),
                        ));
                        false
                    }
                };
                enabled_seen[idx] = true;
            }
            "siteid" => l.tenant = Some(val.to_ascii_lowercase()),
            "method" => {
                l.user_chosen = match val.to_ascii_lowercase().as_str() {
                    "privileged" => Some(true),
                    "standard" | "auto" => Some(false),
                    _ => {
                        l.diagnostics.push(diag(
                            "vendor.purview.method",
                            start,
                            format!("Method=`{val}`, expected Standard or Privileged"),
                        ));
                        None
                    }
                }
            }
            "name" => l.name = Some(val.to_owned()),
            // Read for completeness; nothing depends on them.
            "setdate" | "contentbits" | "actionid" => {}
            _ => {} // attributes of later SDK versions
        }
    }
    for (l, seen) in labels.iter_mut().zip(enabled_seen) {
        if !seen {
            l.diagnostics.push(diag(
                "vendor.purview.enabled",
                0,
                format!("label {} has no Enabled attribute (mandatory)", l.key),
            ));
            l.enabled = true; // read it, so the missing attribute is reported
        }
        if l.tenant.is_none() {
            l.diagnostics.push(diag(
                "vendor.purview.site",
                0,
                format!("label {} has no SiteId attribute (mandatory)", l.key),
            ));
        }
    }
    if !loose.is_empty() {
        match labels.first_mut() {
            Some(l) => l.diagnostics.extend(loose),
            None => labels.push(VendorLabel {
                header: name.to_owned(),
                key: String::new(),
                enabled: true,
                diagnostics: loose,
                ..VendorLabel::default()
            }),
        }
    }
    labels
}

fn strip_prefix_ci<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    (s.len() >= prefix.len() && s.is_char_boundary(prefix.len()))
        .then(|| s.split_at(prefix.len()))
        .filter(|(p, _)| p.eq_ignore_ascii_case(prefix))
        .map(|(_, r)| r)
}

fn diag(code: &'static str, at: usize, message: String) -> Diagnostic {
    Diagnostic::new(code, at, message)
}

/// The `msip_labels` value for one label (what Outlook reads to show it): `Enabled`, `SiteId`,
/// `Method=Privileged` (the marking was chosen by a person; markgate only writes from a
/// validated marking), `Name`, `ContentBits=0` (no visual markings applied by markgate).
pub fn render(guid: &str, site_id: &str, name: &str) -> String {
    let p = format!("MSIP_Label_{guid}");
    format!(
        "{p}_Enabled=true; {p}_SiteId={site_id}; {p}_Method=Privileged; {p}_Name={name}; {p}_ContentBits=0"
    )
}
