//! Vendor label sources in the policy: `[read.vendor.<product>]` (how a product's label maps to
//! a marking of the scheme, and from which direction it is trusted) and `[write.purview]` (the
//! Purview label markgate writes for a validated marking).
//!
//! The readers themselves are `inspect::vendor`; this module owns the compiled settings and the
//! two small steps `decide` takes with them: dropping labels from an untrusted direction
//! ([`trusted`]) and choosing the `msip_labels` header to write ([`purview_header`]). Must not:
//! read headers or invent a label the policy does not map.

use std::borrow::Cow;

use super::decide::{Direction, HeaderAction, HeaderLabel};
use super::facts::{Facts, Label, MarkingStatus};
use super::model::Directions;

/// The products markgate reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Vendor {
    Purview,
    Titus,
    BoldonJames,
    Janusseal,
}

impl Vendor {
    pub const NAMES: &'static [&'static str] = &["purview", "titus", "boldon_james", "janusseal"];
    pub const ALL: [Vendor; 4] = [
        Vendor::Purview,
        Vendor::Titus,
        Vendor::BoldonJames,
        Vendor::Janusseal,
    ];
    /// The policy's name for it (`read.vendor.<name>`).
    pub fn name(self) -> &'static str {
        Self::NAMES[Self::ALL.iter().position(|v| *v == self).unwrap_or(0)]
    }
    pub fn from_name(s: &str) -> Option<Vendor> {
        Self::NAMES
            .iter()
            .position(|n| *n == s)
            .map(|i| Self::ALL[i])
    }
    /// The product's name for people.
    pub fn title(self) -> &'static str {
        match self {
            Vendor::Purview => "Purview",
            Vendor::Titus => "Titus",
            Vendor::BoldonJames => "Boldon James",
            Vendor::Janusseal => "Janusseal",
        }
    }
}

/// `[read.vendor.<product>]`.
#[derive(Debug, Clone)]
pub struct VendorRead {
    pub vendor: Vendor,
    /// Label identity (GUID, `Name=Value`, uid or text) → marking text in the scheme's grammar
    /// (validated when the policy loads). Compared without regard to case.
    pub labels: Vec<(String, String)>,
    /// Purview SiteIds / Boldon James policy GUIDs / Titus namespaces of the organisation:
    /// labels of any other are another organisation's and are not read. Empty: all.
    pub tenants: Vec<String>,
    /// Janusseal: the private EPMS namespaces its `x-protective-marking` uses.
    pub namespaces: Vec<String>,
    /// The directions its labels are believed from.
    pub trust: Directions,
    /// A label the product applied by default (not chosen by a person) is malformed.
    pub require_user_choice: bool,
}

impl VendorRead {
    /// The marking text the policy maps this label identity to.
    pub fn marking_for(&self, key: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, m)| m.as_str())
    }
}

/// `[write.purview]`: the label written for each level.
#[derive(Debug, Clone)]
pub struct PurviewWrite {
    /// The tenant (Entra directory) id written as `SiteId`.
    pub site_id: String,
    /// Level index → (label GUID, label name).
    pub labels: Vec<(usize, String, String)>,
    pub direction: Directions,
}

/// The facts without the vendor markings the policy does not trust in this direction
/// (a label arriving from the internet may be forged).
pub fn trusted<'a>(
    policy: &super::Policy,
    facts: &'a Facts,
    direction: Direction,
) -> Cow<'a, Facts> {
    let untrusted = |vendor: &str| {
        policy
            .vendors
            .iter()
            .find(|v| v.vendor.name() == vendor)
            .is_none_or(|v| !v.trust.includes(direction))
    };
    let drop = |m: &super::FoundMarking| matches!(&m.source, super::MarkingSource::Vendor { vendor, .. } if untrusted(vendor));
    if !facts.markings.iter().any(drop) {
        return Cow::Borrowed(facts);
    }
    let mut f = facts.clone();
    f.markings.retain(|m| !drop(m));
    Cow::Owned(f)
}

/// The `msip_labels` header to write for the chosen label: only when the policy has
/// `[write.purview]` for this direction, the marking is valid, its level is mapped, and the
/// message carries no `msip_labels` header yet (Outlook already shows that one; another
/// tenant's is never overwritten).
pub fn purview_header(
    policy: &super::Policy,
    facts: &Facts,
    direction: Direction,
    chosen: Option<&Label>,
) -> Option<HeaderLabel> {
    let w = policy.purview_write.as_ref()?;
    if !w.direction.includes(direction) {
        return None;
    }
    let label = chosen?;
    let valid = facts
        .markings
        .iter()
        .any(|m| m.status == MarkingStatus::Valid && m.label.as_ref() == Some(label));
    if !valid
        || facts
            .vendor_headers
            .iter()
            .any(|h| h.eq_ignore_ascii_case(crate::inspect::vendor::purview::HEADER))
    {
        return None;
    }
    let (_, guid, name) = w.labels.iter().find(|(l, _, _)| *l == label.level)?;
    Some(HeaderLabel {
        name: crate::inspect::vendor::purview::HEADER.to_owned(),
        value: crate::inspect::vendor::purview::render(guid, &w.site_id, name),
        action: HeaderAction::Add,
    })
}
