//! The compiled, immutable policy: what `compile.rs` builds and `decide()` reads.
//!
//! Every name a policy file uses is resolved here (levels become indices, regexes are compiled,
//! domains sit in lookup maps), so deciding never fails on the policy's account. The meaning of
//! every key is documented in `docs/markgate-policy.5.md`.

use regex::Regex;
use serde::Serialize;

use super::domains::{DomainMap, Network};
use super::labels::{Grammar, Vocabulary};

/// A loaded policy. Share it as `Arc<Policy>`; it never changes after loading.
#[derive(Debug, Clone)]
pub struct Policy {
    /// `policy.name`.
    pub name: String,
    /// `policy.description`.
    pub description: String,
    /// `policy.version`: the policy owner's own version label, cited in audit records.
    pub version: Option<String>,
    /// The file it came from (`<built-in>` for the default).
    pub source: String,
    /// The fragments it includes (`include`), as resolved paths, in load order.
    pub fragments: Vec<String>,
    /// SHA-256 of the policy text (and of its fragments' texts, if any), hex: audit records
    /// cite it.
    pub digest: String,
    pub mode: Mode,
    /// Header added in shadow mode saying what would have happened.
    pub shadow_header: String,
    pub scheme: Scheme,
    pub read: Read,
    pub write: Write,
    pub domains: Domains,
    pub forward: Forward,
    pub rules: Vec<Rule>,
    pub disclaimer: Option<Disclaimer>,
    pub inbound: Inbound,
    /// `[[route]]`: low-assurance routes, in file order (`policy::routes`).
    pub routes: Vec<super::routes::Route>,
    /// `[read.vendor.*]`: vendor label sources, in the order the policy lists them.
    pub vendors: Vec<super::vendor::VendorRead>,
    /// `[write.purview]`.
    pub purview_write: Option<super::vendor::PurviewWrite>,
    /// `[release]`: countries and groups of recipient domains.
    pub release: super::release::Release,
    /// `[origin]`: check EPMS ORIGIN against the sender.
    pub origin: Option<super::origin::OriginCheck>,
    /// `[thread]`: thread memory (downgrade and redirect rules); `None` turns it off.
    pub thread: Option<super::thread::ThreadPolicy>,
    /// `[notice]`: the marking on markgate's own sender notices (`policy::notice`).
    pub notice: super::notice::NoticePolicy,
    /// Warnings from loading (a policy with warnings still loads).
    pub warnings: Vec<super::error::Problem>,
}

/// `policy.mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Do what the policy says.
    Enforce,
    /// Decide and record, change nothing but one header saying what would have happened.
    Shadow,
}

/// `[scheme]`: the levels and their words.
#[derive(Debug, Clone)]
pub struct Scheme {
    pub name: String,
    pub grammar: Grammar,
    pub vocab: Vocabulary,
}

impl Scheme {
    /// Canonical name of a level index.
    pub fn level_name(&self, level: usize) -> &str {
        self.vocab
            .levels
            .get(level)
            .map_or("?", |l| l.name.as_str())
    }
    /// The highest level's index.
    pub fn top(&self) -> usize {
        self.vocab.levels.len().saturating_sub(1)
    }
}

/// Where a subject marking sits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum SubjectForm {
    /// `PROTECT - PERSONAL: text` (after any `RE:`/`FW:` chain).
    Prefix,
    /// `[PROTECT - PERSONAL] text` (after any `RE:`/`FW:` chain).
    Bracketed,
    /// `text [SEC=OFFICIAL:Sensitive]` (AU EPMS).
    SecSuffix,
}

impl SubjectForm {
    pub const NAMES: &'static [&'static str] = &["prefix", "bracketed", "sec-suffix"];
    pub fn from_name(s: &str) -> Option<Self> {
        match s {
            "prefix" => Some(SubjectForm::Prefix),
            "bracketed" => Some(SubjectForm::Bracketed),
            "sec-suffix" => Some(SubjectForm::SecSuffix),
            _ => None,
        }
    }
}

/// `read.precedence`: which marking gives the effective level when header and subject differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Precedence {
    Header,
    Subject,
    /// The most restrictive of all markings found.
    Highest,
}

/// `[read]`.
#[derive(Debug, Clone)]
pub struct Read {
    /// Header names (as configured; compared case-insensitively).
    pub headers: Vec<String>,
    pub subject_forms: Vec<SubjectForm>,
    pub subject_case_insensitive: bool,
    pub precedence: Precedence,
    /// Diagnostic codes tolerated: a marking with only these is valid.
    pub accept: Vec<&'static str>,
}

/// Which direction a setting applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Directions {
    Outbound,
    Inbound,
    Both,
}

impl Directions {
    pub const NAMES: &'static [&'static str] = &["outbound", "inbound", "both"];
    pub fn from_name(s: &str) -> Option<Self> {
        match s {
            "outbound" => Some(Directions::Outbound),
            "inbound" => Some(Directions::Inbound),
            "both" => Some(Directions::Both),
            _ => None,
        }
    }
    pub fn includes(self, d: super::Direction) -> bool {
        matches!(
            (self, d),
            (Directions::Both, _)
                | (Directions::Outbound, super::Direction::Outbound)
                | (Directions::Inbound, super::Direction::Inbound)
        )
    }
    /// Does `self` cover every case `other` covers?
    pub fn covers(self, other: Directions) -> bool {
        self == Directions::Both || self == other
    }
}

/// Where an EPMS ORIGIN comes from when the marking markgate writes has none.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum OriginSource {
    /// The SASL-authenticated user when it is an address, else the envelope sender.
    AuthUser,
    /// The envelope sender.
    Sender,
}

/// `[write]`.
#[derive(Debug, Clone)]
pub struct Write {
    /// Labels are written for mail marked at or above this level.
    pub from_level: usize,
    pub direction: Directions,
    /// Label header name; `None` when the policy writes no header.
    pub header: Option<String>,
    /// Subject form; `None` when the policy writes no subject marking.
    pub subject: Option<SubjectForm>,
    pub origin: OriginSource,
    /// Controls labelling enforces (`write.controls`; audit records cite it as `write`).
    pub controls: Vec<super::controls::Control>,
}

/// What makes mail outbound (`domains.outbound_when`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum OutboundWhen {
    /// The client address is in `domains.networks`.
    Network,
    /// The client authenticated (SASL).
    Authenticated,
    /// The envelope sender's domain is one of `domains.own` (forgeable: only when the gateway
    /// receives nothing from outside).
    SenderDomain,
    /// The MTA's `{daemon_name}` macro is one of `domains.outbound_daemons` (Postfix:
    /// `-o milter_macro_daemon_name=ORIGINATING` on the submission service).
    Daemon,
}

impl OutboundWhen {
    pub const NAMES: &'static [&'static str] =
        &["network", "authenticated", "sender-domain", "daemon"];
}

/// `[domains]`.
#[derive(Debug, Clone)]
pub struct Domains {
    pub own: DomainMap<()>,
    pub networks: Vec<Network>,
    pub outbound_when: Vec<OutboundWhen>,
    /// `{daemon_name}` values that mean outbound (with `OutboundWhen::Daemon`).
    pub outbound_daemons: Vec<String>,
    /// The organisation's own rating (its domains' ceiling and the source rating of outbound mail).
    pub own_level: usize,
    pub default_ceiling: usize,
    /// Pattern → (level, the pattern as written, for reasons).
    pub ceilings: DomainMap<(usize, String)>,
}

impl Domains {
    pub fn is_own(&self, domain: &str) -> bool {
        self.own.get(domain).is_some()
    }

    /// The ceiling of a recipient domain and where it came from (`own`, the pattern, or
    /// `default`).
    /// The level of [`ceiling`](Self::ceiling) alone (no name of where it came from).
    pub fn ceiling_level(&self, domain: &str) -> usize {
        if self.is_own(domain) {
            return self.own_level;
        }
        self.ceilings
            .get(domain)
            .map_or(self.default_ceiling, |(level, _)| *level)
    }

    pub fn ceiling(&self, domain: &str) -> (usize, String) {
        if self.is_own(domain) {
            return (self.own_level, "own".to_owned());
        }
        match self.ceilings.get(domain) {
            Some((level, pattern)) => (*level, pattern.clone()),
            None => (self.default_ceiling, "default".to_owned()),
        }
    }
}

/// `[forward]`: auto-forward evidence.
#[derive(Debug, Clone)]
pub struct Forward {
    pub threshold: u32,
    pub signals: Vec<Signal>,
}

/// One auto-forward signal.
#[derive(Debug, Clone)]
pub struct Signal {
    pub id: String,
    /// Lower-case header name, or a prefix when `prefix` is set (`Resent-*`).
    pub header: String,
    pub prefix: bool,
    /// When set, the (unfolded, trimmed) value must match.
    pub matches: Option<Regex>,
    pub weight: u32,
}

/// The situations rules handle (`rule.when`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Situation {
    Unmarked,
    Malformed,
    Unknown,
    Conflict,
    Multiple,
    AboveCeiling,
    AutoForwardDown,
    ForgedLabel,
    /// A releasability caveat does not allow this recipient (`policy::release`).
    NotReleasable,
    /// EPMS ORIGIN is not the sender (`policy::origin`).
    OriginMismatch,
}

impl Situation {
    pub const NAMES: &'static [&'static str] = &[
        "unmarked",
        "malformed",
        "unknown",
        "conflict",
        "multiple",
        "above-ceiling",
        "auto-forward-down",
        "forged-label",
        "not-releasable",
        "origin-mismatch",
    ];
    pub const ALL: [Situation; 10] = [
        Situation::Unmarked,
        Situation::Malformed,
        Situation::Unknown,
        Situation::Conflict,
        Situation::Multiple,
        Situation::AboveCeiling,
        Situation::AutoForwardDown,
        Situation::ForgedLabel,
        Situation::NotReleasable,
        Situation::OriginMismatch,
    ];
    pub fn name(self) -> &'static str {
        Self::NAMES[Self::ALL.iter().position(|s| *s == self).unwrap_or(0)]
    }
    pub fn from_name(s: &str) -> Option<Self> {
        Self::NAMES
            .iter()
            .position(|n| *n == s)
            .map(|i| Self::ALL[i])
    }
    /// Situations decided for each recipient rather than for the message.
    pub fn per_recipient(self) -> bool {
        matches!(
            self,
            Situation::AboveCeiling | Situation::AutoForwardDown | Situation::NotReleasable
        )
    }
}

/// What a rule does (`rule.action`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    Accept,
    Reject,
    RemoveRecipients,
    Quarantine,
    Tempfail,
}

impl Action {
    pub const NAMES: &'static [&'static str] = &[
        "accept",
        "reject",
        "remove-recipients",
        "quarantine",
        "tempfail",
    ];
    pub fn from_name(s: &str) -> Option<Self> {
        match s {
            "accept" => Some(Action::Accept),
            "reject" => Some(Action::Reject),
            "remove-recipients" => Some(Action::RemoveRecipients),
            "quarantine" => Some(Action::Quarantine),
            "tempfail" => Some(Action::Tempfail),
            _ => None,
        }
    }
}

/// An SMTP reply a rule gives.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Reply {
    pub code: u16,
    pub enhanced: String,
    pub text: String,
}

/// `[[rule]]`.
#[derive(Debug, Clone)]
pub struct Rule {
    pub id: String,
    pub when: Situation,
    pub direction: Directions,
    /// Only fires when the effective level is at least this.
    pub min_level: Option<usize>,
    pub action: Action,
    /// For reject/tempfail the SMTP reply; for remove-recipients the notice to the sender (and
    /// the reply when every recipient is removed); for quarantine the reason.
    pub reply: Option<Reply>,
    /// Line in the policy file, for people.
    pub line: usize,
    /// Controls this rule enforces (`controls`), for the evidence report.
    pub controls: Vec<super::controls::Control>,
}

/// Where the disclaimer goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Placement {
    Append,
    Prepend,
}

/// What to do with signed or encrypted mail that should get the disclaimer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SignedAction {
    /// Leave the body alone (labels by header only).
    Skip,
    /// Wrap the original as an attachment of a new message carrying the disclaimer.
    Wrap,
    /// Refuse the message.
    Reject,
}

/// `[disclaimer]`.
#[derive(Debug, Clone)]
pub struct Disclaimer {
    pub id: String,
    pub direction: Directions,
    pub position: Placement,
    pub text: String,
    pub html: String,
    /// Text whose presence in the decoded body means "already added in this thread".
    pub marker: String,
    pub signed: SignedAction,
    pub signed_reply: Option<Reply>,
    /// Controls the disclaimer enforces (`disclaimer.controls`).
    pub controls: Vec<super::controls::Control>,
}

/// What to do with label headers on inbound mail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum InboundLabels {
    /// Leave them.
    Keep,
    /// Remove our label headers when they claim to come from us (forged).
    StripForged,
    /// Remove every label header from outside.
    StripAll,
}

/// `[inbound]`.
#[derive(Debug, Clone)]
pub struct Inbound {
    pub labels: InboundLabels,
}
