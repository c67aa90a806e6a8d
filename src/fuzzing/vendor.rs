//! Fuzz bodies for the vendor label readers (`inspect::vendor`): one per product, each also
//! running the message's headers through inspection with a policy that reads all four
//! products and through decide().
//!
//! Invariants: nothing panics; readers return nothing for other headers; every label read from
//! a Purview header has a lower-case key; what `purview::render` writes reads back as the same
//! label; a marking from a vendor source is valid only with a level; decide() answers with one
//! outcome per recipient. Corpora: `fuzz/corpus/vendor_{purview,titus,boldon_james,janusseal}/`.

use std::sync::OnceLock;

use crate::inspect::markings;
use crate::inspect::vendor::{self, boldon_james, janusseal, purview, titus};
use crate::policy::{Envelope, MarkingStatus, Policy, decide};

/// The shipped UK GPMS policy reading every product (the mappings of the Postfix scenarios).
const VENDOR_BLOCKS: &str = r#"
[read.vendor.purview]
tenants = ["5a4e6e65-497e-4a97-9833-0f3c9d8e7a21"]
trust = "both"
labels = { "3f1c2a7e-8d4b-4c1e-9a6f-2b7d5e0c9a11" = "RESTRICTED", "b2e4d6f8-1a3c-4e5f-8a7b-9c0d1e2f3a4b" = "PROTECT - PERSONAL" }

[read.vendor.titus]
trust = "both"
labels = { "Classification=RESTRICTED" = "RESTRICTED", "Classification=PROTECT" = "PROTECT - POLICY" }

[read.vendor.boldon_james]
trust = "both"
require_user_choice = true
labels = { "6c0e1f3a-52b7-4d8e-a1f9-3e7c5b2d4a60" = "RESTRICTED", "Protect" = "PROTECT - STAFF" }

[read.vendor.janusseal]
trust = "both"
namespaces = ["2024.1.example-council.gcsx.gov.uk"]
labels = { "A7C31E09" = "RESTRICTED", "4f2a9c1e-7b3d-4e8f-a6c5-1d9e0b2f7a38" = "RESTRICTED" }

[write.purview]
site_id = "5a4e6e65-497e-4a97-9833-0f3c9d8e7a21"
labels = { "RESTRICTED" = { id = "3f1c2a7e-8d4b-4c1e-9a6f-2b7d5e0c9a11", name = "Restricted" } }
"#;

fn policy() -> Option<&'static Policy> {
    static P: OnceLock<Option<Policy>> = OnceLock::new();
    P.get_or_init(|| {
        let text = format!(
            "{}{VENDOR_BLOCKS}",
            include_str!("../../policies/uk-gpms.toml")
        );
        Policy::from_str("uk-gpms-vendor.toml", &text).ok()
    })
    .as_ref()
}

/// Inspect `name: value` (plus a subject) with the vendor policy and decide, both directions.
fn through_decide(name: &str, value: &str) {
    let Some(p) = policy() else { return };
    let headers: Vec<(&[u8], &[u8])> = vec![
        (b"Subject", b"RESTRICTED: papers"),
        (name.as_bytes(), value.as_bytes()),
    ];
    let facts = markings::header_facts(p, &headers);
    for m in &facts.markings {
        assert!(
            m.status != MarkingStatus::Valid || m.label.is_some(),
            "a valid marking without a level: {m:?}"
        );
    }
    for ip in ["127.0.0.1", "198.51.100.7"] {
        let env = Envelope {
            sender: "a@example-council.gcsx.gov.uk".into(),
            recipients: vec!["b@partner.gcsx.gov.uk".into(), "c@example.com".into()],
            client_ip: ip.parse().ok(),
            ..Envelope::default()
        };
        let d = decide(p, &facts, &env);
        assert_eq!(d.recipients.len(), env.recipients.len());
    }
}

/// Purview `msip_labels`.
pub fn vendor_purview(data: &[u8]) {
    let value = String::from_utf8_lossy(data);
    assert!(purview::read("x-not-purview", &value).is_empty());
    for l in purview::read("msip_labels", &value) {
        assert_eq!(l.key, l.key.to_ascii_lowercase());
        if vendor::is_guid(&l.key)
            && let Some(site) = l.tenant.as_deref().filter(|s| vendor::is_guid(s))
        {
            let again = purview::read("msip_labels", &purview::render(&l.key, site, "Name"));
            assert_eq!(again.len(), 1);
            assert_eq!(again[0].key, l.key);
            assert!(
                again[0].diagnostics.is_empty(),
                "{:?}",
                again[0].diagnostics
            );
        }
    }
    through_decide("msip_labels", &value);
}

/// Titus: the input as a classifications value, as base64 metadata, and encoded as base64.
pub fn vendor_titus(data: &[u8]) {
    use base64::Engine;
    let value = String::from_utf8_lossy(data);
    let encoded = base64::engine::general_purpose::STANDARD.encode(data);
    assert!(titus::read("x-titus-version", &value).is_empty());
    for (name, v) in [
        ("x-tituslabs-classifications-30", value.as_ref()),
        ("x-titus-metadata-40", value.as_ref()),
        ("x-titus-metadata-40", encoded.as_str()),
    ] {
        let labels = titus::read(name, v);
        assert!(labels.len() <= 1);
        let merged = titus::merge(labels);
        if let Some(m) = merged {
            assert!(m.key.is_empty() || m.key.contains('='), "{m:?}");
        }
        through_decide(name, v);
    }
}

/// Boldon James SISL XML and display text.
pub fn vendor_boldon_james(data: &[u8]) {
    let value = String::from_utf8_lossy(data);
    for name in ["x-bjprotectivemarking", "bjclassification"] {
        let labels = boldon_james::read(name, &value);
        assert!(labels.len() <= 1);
        let _ = boldon_james::merge(labels);
        through_decide(name, &value);
    }
}

/// Janusseal headers, with and without its namespace configured.
pub fn vendor_janusseal(data: &[u8]) {
    let value = String::from_utf8_lossy(data);
    let ns = vec!["2024.1.example-council.gcsx.gov.uk".to_owned()];
    let mut all = Vec::new();
    for name in [
        "x-protective-marking",
        "x-janusnet-pm-uuid",
        "x-janusnet-pmconfirmed",
    ] {
        assert!(janusseal::read(name, &value, &[]).len() <= 1);
        all.extend(janusseal::read(name, &value, &ns));
        through_decide(name, &value);
    }
    let _ = janusseal::merge(all);
}
