//! Janusseal (Janusnet) labels.
//!
//! Janusseal for Outlook writes the chosen marking as an EPMS-shaped `x-protective-marking`
//! under the organisation's private namespace (`VER=2021.0, NS=2022.1.example.com,
//! SEC=D04FB6C2, ORIGIN=…`: the SEC value is an opaque token of the organisation's marking
//! set), plus `x-janusnet-pm-uuid` (`v=<set version>;g=<marking GUID>`),
//! `x-janusnet-pmconfirmed` (the user confirmed the marking) and `x-janusnet-pm-origin`.
//! The policy maps the SEC token or the GUID, and names the namespaces that are Janusseal's
//! (`namespaces`): only those `x-protective-marking` headers are read here, and no longer as
//! EPMS markings. Sources: docs/vendor-labels.md.

use super::{VendorLabel, is_guid};
use crate::policy::labels::Diagnostic;
use crate::policy::labels::au_epms::{self, Form};

/// `Some(namespace)` when this is an `x-protective-marking` whose NS is one of `namespaces`.
pub fn private_namespace(name: &str, value: &str, namespaces: &[String]) -> Option<String> {
    if !name.eq_ignore_ascii_case("x-protective-marking") || namespaces.is_empty() {
        return None;
    }
    let m = au_epms::parse(value.trim(), Form::Header);
    let ns = m.ns?;
    namespaces
        .iter()
        .any(|n| n.eq_ignore_ascii_case(&ns))
        .then_some(ns)
}

/// What one Janusseal header says; nothing for other headers.
pub fn read(name: &str, value: &str, namespaces: &[String]) -> Vec<VendorLabel> {
    let value = value.trim();
    let base = || VendorLabel {
        header: name.to_owned(),
        enabled: true,
        ..VendorLabel::default()
    };
    if let Some(ns) = private_namespace(name, value, namespaces) {
        let m = au_epms::parse(value, Form::Header);
        let mut l = base();
        l.tenant = Some(ns);
        match m.sec {
            Some(sec) => l.key = sec,
            None => l.diagnostics.push(Diagnostic::new(
                "vendor.janusseal.syntax",
                0,
                "x-protective-marking has no SEC token",
            )),
        }
        return vec![l];
    }
    if name.eq_ignore_ascii_case("x-janusnet-pm-uuid") {
        let mut l = base();
        let g = value
            .split(';')
            .filter_map(|p| p.trim().split_once('='))
            .find(|(k, _)| k.trim().eq_ignore_ascii_case("g"))
            .map(|(_, v)| v.trim().to_ascii_lowercase());
        match g {
            Some(g) if is_guid(&g) => l.key = g,
            _ => l.diagnostics.push(Diagnostic::new(
                "vendor.janusseal.syntax",
                0,
                format!("x-janusnet-pm-uuid `{value}` has no g=<GUID>"),
            )),
        }
        return vec![l];
    }
    if name.eq_ignore_ascii_case("x-janusnet-pmconfirmed") {
        let mut l = base();
        l.user_chosen = Some(value.eq_ignore_ascii_case("true"));
        return vec![l];
    }
    Vec::new()
}

/// A message's Janusseal headers as one label: the SEC token is the key, the GUID an
/// alternative; the confirmation flag carried over. `None` when there is no marking header.
pub fn merge(labels: Vec<VendorLabel>) -> Option<VendorLabel> {
    let confirmed = labels.iter().find_map(|l| {
        l.header
            .eq_ignore_ascii_case("x-janusnet-pmconfirmed")
            .then_some(l.user_chosen)
            .flatten()
    });
    let mut marks: Vec<VendorLabel> = labels
        .into_iter()
        .filter(|l| !l.header.eq_ignore_ascii_case("x-janusnet-pmconfirmed"))
        .collect();
    marks.sort_by_key(|l| !l.header.eq_ignore_ascii_case("x-protective-marking"));
    let mut l = super::titus::merge(marks)?;
    l.user_chosen = confirmed;
    Some(l)
}
