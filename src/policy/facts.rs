//! The inputs of [`decide`](super::decide): what inspect found in the message ([`Facts`]) and
//! what the MTA told us about the transaction ([`Envelope`]).
//!
//! `inspect::markings` and `inspect::forward` fill the marking and forward fields; the MIME
//! facts (`disclaimer_present`, `signed_or_encrypted`) come from `inspect::mime`, which the
//! integrator calls and copies in. Plain data, no behaviour beyond small helpers.

use std::net::IpAddr;
use std::ops::Range;

use serde::Serialize;

use super::labels::Diagnostic;
use super::labels::au_epms::EpmsMarking;
use super::model::SubjectForm;

/// The envelope and connection facts decide() needs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Envelope {
    /// MAIL FROM address without angle brackets; empty for the null sender.
    pub sender: String,
    /// RCPT TO addresses without angle brackets, in order.
    pub recipients: Vec<String>,
    /// The SMTP client's address, when known.
    pub client_ip: Option<IpAddr>,
    /// The SASL-authenticated user (`{auth_authen}`), when the client authenticated.
    pub auth_user: Option<String>,
    /// The MTA's `{daemon_name}` macro (which smtpd instance received the mail), when sent.
    pub daemon_name: Option<String>,
    /// Where the MTA hands each recipient (its RCPT-stage macros), in the order of
    /// `recipients`; shorter than `recipients` (or empty) when the MTA did not say.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub next_hops: Vec<NextHop>,
}

impl Envelope {
    /// What the MTA said about the next hop of recipient `i`, if anything.
    pub fn next_hop(&self, i: usize) -> Option<&NextHop> {
        self.next_hops.get(i)
    }
}

/// The MTA's routing facts for one recipient, from the macros it sends with that RCPT. Used by
/// `[[route]]` selectors (`policy::routes`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct NextHop {
    /// `{rcpt_host}`: Postfix the next-hop destination (`[mdm.example]:25`, a domain), Sendmail
    /// the host of the mailer triple.
    pub host: Option<String>,
    /// `{rcpt_mailer}`: the Postfix transport (`smtp`, `relay`, a master.cf service) or the
    /// Sendmail mailer (`esmtp`, `relay`, `local`).
    pub mailer: Option<String>,
}

/// Where a marking was found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum MarkingSource {
    /// A label header; `index` is 1-based among the headers of that name (as `chgheader`
    /// counts them), `name` as configured in `read.headers`.
    Header { name: String, index: usize },
    /// The (RFC 2047-decoded) Subject, in the given form.
    Subject { form: SubjectForm },
    /// A desktop labelling product's own header (`inspect::vendor`): `vendor` is its policy
    /// name (`purview`, `titus`, `boldon_james`, `janusseal`), `header` the header it was
    /// read from, `key` the label's identity the policy maps (GUID, name or value).
    Vendor {
        vendor: String,
        header: String,
        key: String,
    },
}

impl MarkingSource {
    /// Our own label header (`read.headers`); vendor headers are not.
    pub fn is_header(&self) -> bool {
        matches!(self, MarkingSource::Header { .. })
    }
    pub fn is_subject(&self) -> bool {
        matches!(self, MarkingSource::Subject { .. })
    }
    pub fn is_vendor(&self) -> bool {
        matches!(self, MarkingSource::Vendor { .. })
    }
    /// Short name for audit records and conflict messages: `header:X-Protective-Marking`,
    /// `subject`, `vendor:purview`.
    pub fn location(&self) -> String {
        match self {
            MarkingSource::Header { name, .. } => format!("header:{name}"),
            MarkingSource::Subject { .. } => "subject".into(),
            MarkingSource::Vendor { vendor, .. } => format!("vendor:{vendor}"),
        }
    }
}

/// Is a marking usable?
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum MarkingStatus {
    /// Conforms to the grammar, or only has diagnostics the policy accepts.
    Valid,
    /// Has diagnostics the policy does not accept. `label` may still name a level.
    Malformed,
    /// Looks like a marking but names no level of the scheme (or a foreign namespace).
    Unknown,
}

/// A marking as understood against the policy's scheme.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Label {
    /// Level index in the scheme (higher is more restrictive).
    pub level: usize,
    /// The level's canonical name.
    pub level_name: String,
    /// UK: canonical descriptors/caveats/handling instructions; AU: `CAVEAT` texts then
    /// `ACCESS` values. Order as written by markgate.
    pub qualifiers: Vec<String>,
    /// The canonical marking text: UK `PROTECT - PERSONAL`; AU medium form
    /// `SEC=OFFICIAL:Sensitive, ACCESS=Legal-Privilege`.
    pub canonical: String,
    /// AU only: the parsed EPMS fields (ORIGIN, EXPIRES, NOTE… carried into the header).
    pub epms: Option<EpmsMarking>,
}

impl Label {
    /// Same marking for conflict purposes: same level and same qualifiers, in any order.
    pub fn same_marking(&self, other: &Label) -> bool {
        let mut a = self.qualifiers.clone();
        let mut b = other.qualifiers.clone();
        a.sort();
        b.sort();
        self.level == other.level && a == b
    }
}

/// One marking found in the message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FoundMarking {
    pub source: MarkingSource,
    /// The marking text as found (header value unfolded and trimmed; the subject part).
    pub raw: String,
    /// Subject markings: byte range of the marking inside the decoded subject.
    pub range: Option<Range<usize>>,
    /// Subject markings: the range to delete when rewriting the subject without stacking
    /// (the marking plus its `: ` terminator or the space before a suffix).
    pub remove_range: Option<Range<usize>>,
    pub status: MarkingStatus,
    /// `None` when no level could be read.
    pub label: Option<Label>,
    /// Every diagnostic, accepted or not.
    pub diagnostics: Vec<Diagnostic>,
    /// The codes among `diagnostics` that the policy does not accept (why it is malformed).
    pub rejected_codes: Vec<&'static str>,
}

/// One auto-forward signal seen in the headers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ForwardHit {
    /// The policy's signal id.
    pub signal: String,
    /// The header that matched, as it appears in the message.
    pub header: String,
    /// Its value (unfolded, trimmed, at most 200 characters).
    pub value: String,
    pub weight: u32,
}

/// Auto-forward evidence: each signal counts once, however many headers match it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ForwardEvidence {
    pub hits: Vec<ForwardHit>,
    /// Sum of the weights of the signals seen.
    pub score: u32,
    /// The policy's threshold at the time of inspection.
    pub threshold: u32,
}

impl ForwardEvidence {
    pub fn is_forward(&self) -> bool {
        self.threshold > 0 && self.score >= self.threshold
    }
}

/// Everything inspect learnt about a message.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Facts {
    /// The decoded Subject (RFC 2047), `None` when the message has none.
    pub subject: Option<String>,
    pub markings: Vec<FoundMarking>,
    pub forward: ForwardEvidence,
    /// The disclaimer's marker is already in the decoded body text (quoted replies carry it).
    /// Filled by the integrator from `inspect::mime`.
    pub disclaimer_present: bool,
    /// The message is signed or encrypted (multipart/signed, application/pkcs7-mime,
    /// multipart/encrypted, inline PGP). Filled by the integrator from `inspect::mime`.
    pub signed_or_encrypted: bool,
    /// Ids of the `[[route]]`s whose `header` selector matched a header of the message
    /// (`inspect::routes`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub route_headers: Vec<String>,
    /// The time of the decision (Unix seconds, UTC), for EPMS `EXPIRES`. Handed in by the
    /// filter (`Facts::at`) so `decide` stays pure and tests set their own clock; `None`
    /// means no expiry is evaluated.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub now: Option<i64>,
    /// Names of the vendor label headers present (configured products only), whether or not
    /// a label was read from them: `msip_labels` is never written over one.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub vendor_headers: Vec<String>,
}

impl Facts {
    /// The same facts observed at `now` (Unix seconds, UTC).
    pub fn at(mut self, now: i64) -> Facts {
        self.now = Some(now);
        self
    }
}
