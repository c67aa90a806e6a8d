//! Labels written by desktop labelling products into their own headers: Microsoft Purview
//! (`msip_labels`), Titus (`x-titus-metadata-*`, `x-tituslabs-classifications-*`), Boldon James
//! Classifier (`x-bjprotectivemarking`, `bjclassification`) and Janusseal (`x-janusnet-*`, and
//! the EPMS-shaped `x-protective-marking` it writes under a private namespace). Where each
//! format comes from is in `docs/vendor-labels.md`.
//!
//! One reader per product, each a pure function from one header (name, unfolded value) to the
//! labels it names, with diagnostics for what it could not read. [`markings`] turns them into
//! [`FoundMarking`]s through the policy's `[read.vendor.*]` mappings (GUID, name or value →
//! a marking in the scheme's grammar), so the conflict, multiple and write rules treat them like
//! any other source. Must not: decide trust (that depends on the direction, which `decide`
//! knows: `policy::vendor::trusted`), invent a level for an unmapped label, or do I/O.

pub mod boldon_james;
pub mod janusseal;
pub mod purview;
pub mod titus;

use crate::policy::Policy;
use crate::policy::facts::{FoundMarking, MarkingSource, MarkingStatus};
use crate::policy::labels::Diagnostic;
use crate::policy::vendor::{Vendor, VendorRead};

/// One label a product wrote.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VendorLabel {
    /// The header it was read from, as found.
    pub header: String,
    /// What the policy maps: Purview label GUID (lower case), Titus `Property=Value`, Boldon
    /// James selector element uid or classification text, Janusseal SEC token or label GUID.
    pub key: String,
    /// Other spellings the policy may map instead (a Boldon James display text, a Janusseal
    /// GUID alongside its SEC token), tried after `key`.
    pub alt_keys: Vec<String>,
    /// The product's display name, when the format carries one (Purview `Name`).
    pub name: Option<String>,
    /// Purview `Enabled`; false labels are removed labels and are not read.
    pub enabled: bool,
    /// Did a person choose it? Purview `Method=Privileged`, Boldon James
    /// `origin="userSelected"`, Janusseal `pmconfirmed`. `None`: the format does not say.
    pub user_chosen: Option<bool>,
    /// The organisation it belongs to: Purview `SiteId` (tenant), Boldon James policy GUID,
    /// Janusseal namespace.
    pub tenant: Option<String>,
    /// What could not be read.
    pub diagnostics: Vec<Diagnostic>,
}

impl VendorLabel {
    /// A short text for audit and people: `<key> (Name=…, Method=…)`.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if let Some(n) = &self.name {
            parts.push(format!("name {n}"));
        }
        if let Some(t) = &self.tenant {
            parts.push(format!("tenant {t}"));
        }
        match self.user_chosen {
            Some(true) => parts.push("chosen by the user".into()),
            Some(false) => parts.push("applied by default".into()),
            None => {}
        }
        if parts.is_empty() {
            self.key.clone()
        } else {
            format!("{} ({})", self.key, parts.join(", "))
        }
    }
}

/// The labels one header carries, for the product whose header it is (none for other headers).
/// `janus_namespaces`: the private EPMS namespaces Janusseal is configured with (its
/// `x-protective-marking` is only read when its NS is one of them).
pub fn read_header(
    vendor: Vendor,
    name: &str,
    value: &str,
    janus_namespaces: &[String],
) -> Vec<VendorLabel> {
    match vendor {
        Vendor::Purview => purview::read(name, value),
        Vendor::Titus => titus::read(name, value),
        Vendor::BoldonJames => boldon_james::read(name, value),
        Vendor::Janusseal => janusseal::read(name, value, janus_namespaces),
    }
}

/// Does a configured vendor claim this (own) label header? Janusseal writes
/// `x-protective-marking` in EPMS shape under a private namespace; when the policy maps that
/// namespace, the header is the vendor's label, not a foreign EPMS marking.
pub fn claims(policy: &Policy, name: &str, value: &str) -> bool {
    policy.vendors.iter().any(|v| {
        v.vendor == Vendor::Janusseal
            && janusseal::private_namespace(name, value, &v.namespaces).is_some()
    })
}

/// Every vendor label in the headers as a marking, through the policy's mappings. Headers are
/// (name, value as received); at most [`MAX_LABELS`] are read.
pub fn markings<'a, I>(policy: &Policy, headers: I) -> Vec<FoundMarking>
where
    I: IntoIterator<Item = (&'a [u8], &'a [u8])>,
{
    let mut out = Vec::new();
    if policy.vendors.is_empty() {
        return out;
    }
    // Per configured vendor, the labels read so far (Titus, Boldon James and Janusseal spread
    // one label over several headers and are merged into one marking; Purview has one label
    // per tenant).
    let mut read: Vec<Vec<VendorLabel>> = vec![Vec::new(); policy.vendors.len()];
    let mut count = 0usize;
    for (name, value) in headers {
        let name = String::from_utf8_lossy(name);
        let name = name.trim();
        let value = crate::policy::labels::au_epms::unfold(&String::from_utf8_lossy(value));
        for (i, v) in policy.vendors.iter().enumerate() {
            for label in read_header(v.vendor, name, value.trim(), &v.namespaces) {
                if count < MAX_LABELS {
                    count += 1;
                    read[i].push(label);
                }
            }
        }
    }
    for (v, labels) in policy.vendors.iter().zip(read) {
        let labels = match v.vendor {
            Vendor::Purview => labels,
            Vendor::Titus => titus::merge(labels).into_iter().collect(),
            Vendor::BoldonJames => boldon_james::merge(labels).into_iter().collect(),
            Vendor::Janusseal => janusseal::merge(labels).into_iter().collect(),
        };
        out.extend(labels.into_iter().filter_map(|l| marking(policy, v, l)));
    }
    out
}

/// Names of the configured products' label headers present in the message (each once).
pub fn headers_present<'a, I>(policy: &Policy, headers: I) -> Vec<String>
where
    I: IntoIterator<Item = (&'a [u8], &'a [u8])>,
{
    let mut out: Vec<String> = Vec::new();
    if policy.vendors.is_empty() {
        return out;
    }
    for (name, value) in headers {
        let name = String::from_utf8_lossy(name);
        let name = name.trim();
        let value = String::from_utf8_lossy(value);
        let known = policy
            .vendors
            .iter()
            .any(|v| !read_header(v.vendor, name, &value, &v.namespaces).is_empty());
        if known && !out.iter().any(|h| h.eq_ignore_ascii_case(name)) {
            out.push(name.to_ascii_lowercase());
        }
    }
    out
}

/// At most this many vendor labels are read from one message.
pub const MAX_LABELS: usize = 32;

fn marking(policy: &Policy, v: &VendorRead, label: VendorLabel) -> Option<FoundMarking> {
    if !label.enabled {
        return None; // a removed label says nothing
    }
    if let Some(t) = &label.tenant
        && !v.tenants.is_empty()
        && !v.tenants.iter().any(|x| x.eq_ignore_ascii_case(t))
    {
        return None; // another organisation's label, accumulated on a reply across tenants
    }
    let source = MarkingSource::Vendor {
        vendor: v.vendor.name().to_owned(),
        header: label.header.clone(),
        key: label.key.clone(),
    };
    let raw = label.describe();
    let mapped = std::iter::once(&label.key)
        .chain(label.alt_keys.iter())
        .find_map(|k| v.marking_for(k));
    let mut found = match mapped {
        Some(text) => crate::inspect::markings::header_marking_text(policy, source, text),
        None => FoundMarking {
            source,
            raw: String::new(),
            range: None,
            remove_range: None,
            status: MarkingStatus::Unknown,
            label: None,
            diagnostics: vec![Diagnostic::new(
                "vendor.unmapped",
                0,
                format!(
                    "{} label `{}` is not in read.vendor.{}.labels",
                    v.vendor.title(),
                    label.key,
                    v.vendor.name()
                ),
            )],
            rejected_codes: Vec::new(),
        },
    };
    found.raw = raw;
    if v.require_user_choice && label.user_chosen == Some(false) {
        found.diagnostics.push(Diagnostic::new(
            "vendor.not-user-chosen",
            0,
            format!(
                "{} label `{}` was applied by default, not chosen by a person",
                v.vendor.title(),
                label.key
            ),
        ));
    }
    found.diagnostics.extend(label.diagnostics);
    // Vendor diagnostics are never tolerated: a label markgate cannot fully read is malformed.
    for d in &found.diagnostics {
        if d.code.starts_with("vendor.")
            && d.code != "vendor.unmapped"
            && !found.rejected_codes.contains(&d.code)
        {
            found.rejected_codes.push(d.code);
        }
    }
    if found.status == MarkingStatus::Valid && !found.rejected_codes.is_empty() {
        found.status = MarkingStatus::Malformed;
    }
    Some(found)
}

/// A GUID in its usual 8-4-4-4-12 hexadecimal form (any case)?
pub(crate) fn is_guid(s: &str) -> bool {
    let parts: Vec<&str> = s.split('-').collect();
    parts.len() == 5
        && parts
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(p, n)| p.len() == n && p.bytes().all(|b| b.is_ascii_hexdigit()))
}
