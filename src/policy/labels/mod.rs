//! Label grammars: one parser per marking scheme, strict on what markgate writes and tolerant on
//! what it reads.
//!
//! Each parser returns what it understood plus [`Diagnostic`]s naming the grammar rule that the
//! input broke. A diagnostic never stops a parse by itself: the policy's `read.accept` list says
//! which diagnostics are tolerated (real-deployment variants such as an EPMS header without
//! `ORIGIN`); any other diagnostic makes the marking *malformed* for `decide()`.
//!
//! - [`uk`]: the UK visual conventions (GPMS `PROTECT - PERSONAL`, GSC 2014
//!   `OFFICIAL-SENSITIVE PERSONAL DATA`), vocabulary from the policy's scheme; [`uk_gpms`] and
//!   [`uk_gsc`] are the two schemes' entry points.
//! - [`au_epms`]: the Australian Email Protective Marking Standard 2024.1 ABNF.
//!
//! Must not: decide anything, do I/O. Facts and test vectors:
//! `../shared/reference/markings.md` sections a.1 and a.2.

pub mod au_epms;
pub mod uk;
pub mod uk_gpms;
pub mod uk_gsc;

use serde::Serialize;

/// Which grammar a scheme's markings follow (`scheme.grammar` in the policy).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Grammar {
    /// UK Government Protective Marking Scheme: `LEVEL - DESCRIPTOR`.
    UkGpms,
    /// UK Government Security Classifications 2014+: `OFFICIAL-SENSITIVE HANDLING DESCRIPTOR`.
    UkGsc,
    /// Australian EPMS 2024.1: `[SEC=…]` subject suffix and `X-Protective-Marking` header.
    AuEpms,
}

impl Grammar {
    pub const NAMES: &'static [&'static str] = &["uk-gpms", "uk-gsc", "au-epms"];

    pub fn from_name(name: &str) -> Option<Grammar> {
        match name {
            "uk-gpms" => Some(Grammar::UkGpms),
            "uk-gsc" => Some(Grammar::UkGsc),
            "au-epms" => Some(Grammar::AuEpms),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Grammar::UkGpms => "uk-gpms",
            Grammar::UkGsc => "uk-gsc",
            Grammar::AuEpms => "au-epms",
        }
    }
}

/// One thing a parser noticed about a marking: which rule of the grammar the input broke.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Diagnostic {
    /// Stable code (`epms.origin.missing`), listed in [`CODES`]; policies accept by code.
    pub code: &'static str,
    /// Byte offset in the parsed text where the problem starts.
    pub at: usize,
    /// A sentence for people: what was found and what the grammar wants.
    pub message: String,
}

impl Diagnostic {
    pub(crate) fn new(code: &'static str, at: usize, message: impl Into<String>) -> Self {
        Diagnostic {
            code,
            at,
            message: message.into(),
        }
    }
}

/// Every diagnostic code, the grammar rule it refers to, and whether it is a variant seen in
/// real deployments (a policy may reasonably accept those) or a plain violation.
pub struct CodeInfo {
    pub code: &'static str,
    pub rule: &'static str,
    pub variant: bool,
    pub meaning: &'static str,
}

/// The complete list of diagnostics the parsers emit (documented in markgate-policy(5)).
pub const CODES: &[CodeInfo] = &[
    // UK (GPMS and GSC)
    CodeInfo {
        code: "uk.case",
        rule: "uk-marking",
        variant: true,
        meaning: "level or qualifier not in capitals (Restricted for RESTRICTED)",
    },
    CodeInfo {
        code: "uk.spelling",
        rule: "uk-marking",
        variant: true,
        meaning: "spacing or hyphen variant of a multi-word phrase (OFFICIAL - SENSITIVE, NOT-PROTECTIVELY MARKED)",
    },
    CodeInfo {
        code: "uk.separator",
        rule: "uk-marking",
        variant: true,
        meaning: "separator between level and qualifiers differs from the scheme's (GPMS ` - `, GSC ` `)",
    },
    CodeInfo {
        code: "uk.terminator",
        rule: "uk-subject-prefix",
        variant: true,
        meaning: "subject marking not followed by `: ` (e.g. ` - ` or `:` without a space)",
    },
    CodeInfo {
        code: "uk.qualifier.unknown",
        rule: "uk-marking",
        variant: false,
        meaning: "a descriptor, caveat or handling instruction the scheme does not define",
    },
    CodeInfo {
        code: "uk.qualifier.level",
        rule: "scheme.qualifier.levels",
        variant: false,
        meaning: "a qualifier used with a level it may not go with",
    },
    CodeInfo {
        code: "uk.qualifier.duplicate",
        rule: "uk-marking",
        variant: false,
        meaning: "the same qualifier twice",
    },
    CodeInfo {
        code: "uk.order",
        rule: "uk-gsc-marking",
        variant: false,
        meaning: "GSC: a handling instruction or caveat after a descriptor",
    },
    CodeInfo {
        code: "uk.level.unknown",
        rule: "uk-marking",
        variant: false,
        meaning: "a label header whose value does not start with a level of the scheme",
    },
    CodeInfo {
        code: "uk.trailing",
        rule: "uk-marking",
        variant: false,
        meaning: "unrecognised text after the marking in a header or brackets",
    },
    CodeInfo {
        code: "uk.empty",
        rule: "uk-marking",
        variant: false,
        meaning: "an empty label header",
    },
    CodeInfo {
        code: "uk.length",
        rule: "rfc5322-line",
        variant: false,
        meaning: "marking longer than 998 characters",
    },
    // AU EPMS 2024.1
    CodeInfo {
        code: "epms.length",
        rule: "protective-marked-header (998)",
        variant: false,
        meaning: "marking longer than 998 characters",
    },
    CodeInfo {
        code: "epms.field.syntax",
        rule: "field = name \"=\" value",
        variant: false,
        meaning: "a field without `=` or with an empty name",
    },
    CodeInfo {
        code: "epms.field.empty",
        rule: "comma-FWS",
        variant: false,
        meaning: "an empty field (two commas in a row, or a trailing comma)",
    },
    CodeInfo {
        code: "epms.field.unknown",
        rule: "protective-mark-long-form",
        variant: false,
        meaning: "a field name the standard does not define",
    },
    CodeInfo {
        code: "epms.field.case",
        rule: "field names are case-sensitive",
        variant: false,
        meaning: "a known field name in the wrong case (sec=)",
    },
    CodeInfo {
        code: "epms.field.duplicate",
        rule: "protective-mark-long-form",
        variant: false,
        meaning: "VER, NS, SEC, EXPIRES, DOWNTO, NOTE or ORIGIN given twice",
    },
    CodeInfo {
        code: "epms.field.not-in-subject",
        rule: "protective-mark-medium-form",
        variant: false,
        meaning: "VER, NS, NOTE or ORIGIN inside a subject marking",
    },
    CodeInfo {
        code: "epms.order",
        rule: "protective-mark-long-form",
        variant: false,
        meaning: "fields out of the standard's order",
    },
    CodeInfo {
        code: "epms.order.regex-form",
        rule: "protective-mark-medium-form",
        variant: true,
        meaning: "ACCESS after EXPIRES/DOWNTO, the order of the standard's regular-expression form",
    },
    CodeInfo {
        code: "epms.comma-fws",
        rule: "comma-FWS",
        variant: true,
        meaning: "no space after a comma",
    },
    CodeInfo {
        code: "epms.value.whitespace",
        rule: "one-to-128-safe-text",
        variant: false,
        meaning: "leading or trailing whitespace in a value",
    },
    CodeInfo {
        code: "epms.value.length",
        rule: "one-to-128-safe-text",
        variant: false,
        meaning: "a value empty or longer than 128 characters",
    },
    CodeInfo {
        code: "epms.value.char",
        rule: "safe-char",
        variant: false,
        meaning: "a character outside printable ASCII, or an unescaped backslash",
    },
    CodeInfo {
        code: "epms.ver.missing",
        rule: "protective-mark-long-form",
        variant: false,
        meaning: "header without VER",
    },
    CodeInfo {
        code: "epms.ver.syntax",
        rule: "version",
        variant: false,
        meaning: "VER not YEAR.N",
    },
    CodeInfo {
        code: "epms.ns.missing",
        rule: "protective-mark-long-form",
        variant: false,
        meaning: "header without NS",
    },
    CodeInfo {
        code: "epms.ns.foreign",
        rule: "namespace",
        variant: false,
        meaning: "NS other than gov.au (e.g. a vendor's private namespace)",
    },
    CodeInfo {
        code: "epms.sec.missing",
        rule: "classification",
        variant: false,
        meaning: "no SEC field",
    },
    CodeInfo {
        code: "epms.sec.value",
        rule: "classification-value",
        variant: false,
        meaning: "SEC value not one of the 2024.1 classifications (e.g. OFFICIAL-Sensitive)",
    },
    CodeInfo {
        code: "epms.sec.legacy",
        rule: "classification-value",
        variant: true,
        meaning: "a pre-2018 classification (UNCLASSIFIED, CONFIDENTIAL, …)",
    },
    CodeInfo {
        code: "epms.caveat.syntax",
        rule: "caveat-pair",
        variant: false,
        meaning: "a caveat that is not C:, FG:, RI: or SH: followed by a valid value",
    },
    CodeInfo {
        code: "epms.caveat.no-category",
        rule: "caveat-pair",
        variant: true,
        meaning: "2011-era caveat without its category (CAVEAT=AUSTEO for CAVEAT=RI:AUSTEO)",
    },
    CodeInfo {
        code: "epms.caveat.level",
        rule: "caveats need PROTECTED or higher",
        variant: false,
        meaning: "a caveat below PROTECTED (NATIONAL-CABINET: below OFFICIAL:Sensitive)",
    },
    CodeInfo {
        code: "epms.rel.space",
        rule: "release-caveat",
        variant: true,
        meaning: "`REL AUS` with a space instead of `REL/AUS`",
    },
    CodeInfo {
        code: "epms.rel.country",
        rule: "country-codes",
        variant: false,
        meaning: "a REL country that is not three capital letters",
    },
    CodeInfo {
        code: "epms.delicate-source.space",
        rule: "handling-caveat",
        variant: true,
        meaning: "`DELICATE SOURCE` for `DELICATE-SOURCE`",
    },
    CodeInfo {
        code: "epms.access.value",
        rule: "InformationManagementMarker",
        variant: false,
        meaning: "ACCESS not Personal-Privacy, Legal-Privilege or Legislative-Secrecy",
    },
    CodeInfo {
        code: "epms.access.level",
        rule: "IMM needs OFFICIAL:Sensitive or higher",
        variant: false,
        meaning: "ACCESS on a marking below OFFICIAL:Sensitive",
    },
    CodeInfo {
        code: "epms.expires.date",
        rule: "Expires",
        variant: false,
        meaning: "EXPIRES written as a date that does not exist (2025-02-30, month 13, hour 25)",
    },
    CodeInfo {
        code: "epms.expires.without-downto",
        rule: "Expires",
        variant: false,
        meaning: "EXPIRES without DOWNTO",
    },
    CodeInfo {
        code: "epms.downto.without-expires",
        rule: "Expires",
        variant: false,
        meaning: "DOWNTO without EXPIRES",
    },
    CodeInfo {
        code: "epms.downto.value",
        rule: "classification-value",
        variant: false,
        meaning: "DOWNTO not a classification",
    },
    CodeInfo {
        code: "epms.downto.level",
        rule: "DOWNTO lower than SEC",
        variant: false,
        meaning: "DOWNTO not lower than SEC",
    },
    CodeInfo {
        code: "epms.origin.missing",
        rule: "protective-mark-long-form",
        variant: true,
        meaning: "header without ORIGIN (ASD Blueprint, Microsoft 365)",
    },
    CodeInfo {
        code: "epms.origin.syntax",
        rule: "simple-email",
        variant: false,
        meaning: "ORIGIN not local@domain",
    },
    CodeInfo {
        code: "epms.dlm.legacy",
        rule: "protective-mark-medium-form",
        variant: false,
        meaning: "a 2012 `[DLM=…]` marking (no SEC)",
    },
    // Near-misses (inspect::near_miss) and vendor labels (inspect::vendor): never accepted.
    CodeInfo {
        code: "uk.near-miss.case",
        rule: "near-miss",
        variant: false,
        meaning: "a whole GPMS/GSC marking in lower case where the policy reads capitals (`restricted: ...` from an Outlook rule); malformed, never read as the level",
    },
    CodeInfo {
        code: "uk.near-miss.epms",
        rule: "near-miss",
        variant: false,
        meaning: "an Australian `[SEC=...]` marking in the subject of mail under a UK scheme; malformed, never read",
    },
    CodeInfo {
        code: "uk.near-miss.duplicate",
        rule: "near-miss",
        variant: false,
        meaning: "the same subject marking twice in a row with no reply prefix between (`RESTRICTED: RESTRICTED: ...`); malformed",
    },
    CodeInfo {
        code: "epms.near-miss.duplicate",
        rule: "near-miss",
        variant: false,
        meaning: "the same `[SEC=...]` marking twice in a row in the subject (`... [SEC=OFFICIAL] [SEC=OFFICIAL]`); malformed",
    },
    CodeInfo {
        code: "vendor.unmapped",
        rule: "vendor",
        variant: false,
        meaning: "a vendor label the policy's `read.vendor.<product>.labels` does not map (the marking is unknown)",
    },
    CodeInfo {
        code: "vendor.not-user-chosen",
        rule: "vendor",
        variant: false,
        meaning: "a vendor label applied by default, not chosen by a person, where `require_user_choice` is set",
    },
    CodeInfo {
        code: "vendor.purview.syntax",
        rule: "vendor",
        variant: false,
        meaning: "an `msip_labels` item that is not `MSIP_Label_<GUID>_<attribute>=<value>`",
    },
    CodeInfo {
        code: "vendor.purview.guid",
        rule: "vendor",
        variant: false,
        meaning: "a Purview label id that is not a GUID",
    },
    CodeInfo {
        code: "vendor.purview.enabled",
        rule: "vendor",
        variant: false,
        meaning: "a Purview label without its mandatory `Enabled`, or `Enabled` neither True nor False",
    },
    CodeInfo {
        code: "vendor.purview.method",
        rule: "vendor",
        variant: false,
        meaning: "a Purview `Method` other than Standard or Privileged",
    },
    CodeInfo {
        code: "vendor.purview.site",
        rule: "vendor",
        variant: false,
        meaning: "a Purview label without its mandatory `SiteId`",
    },
    CodeInfo {
        code: "vendor.titus.syntax",
        rule: "vendor",
        variant: false,
        meaning: "an `x-tituslabs-classifications-*` item that is not `Name=Value`",
    },
    CodeInfo {
        code: "vendor.titus.base64",
        rule: "vendor",
        variant: false,
        meaning: "`x-titus-metadata-*` that is not base64",
    },
    CodeInfo {
        code: "vendor.titus.json",
        rule: "vendor",
        variant: false,
        meaning: "`x-titus-metadata-*` whose decoded text is not the JSON metadata object",
    },
    CodeInfo {
        code: "vendor.boldon_james.syntax",
        rule: "vendor",
        variant: false,
        meaning: "`x-bjprotectivemarking` without a `<sisl>` label or its `<element uid=...>` selectors",
    },
    CodeInfo {
        code: "vendor.boldon_james.origin",
        rule: "vendor",
        variant: false,
        meaning: "a Boldon James `origin` other than userSelected or defaultValue",
    },
    CodeInfo {
        code: "vendor.janusseal.syntax",
        rule: "vendor",
        variant: false,
        meaning: "a Janusseal header without its SEC token or `g=<GUID>`",
    },
];

/// Look a code up in [`CODES`].
pub fn code_info(code: &str) -> Option<&'static CodeInfo> {
    CODES.iter().find(|c| c.code == code)
}

/// What kind of word follows a level (only names; the policy defines the words).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum QualifierKind {
    Descriptor,
    Caveat,
    Handling,
}

impl QualifierKind {
    pub const NAMES: &'static [&'static str] = &["descriptor", "caveat", "handling"];

    pub fn from_name(name: &str) -> Option<QualifierKind> {
        match name {
            "descriptor" => Some(QualifierKind::Descriptor),
            "caveat" => Some(QualifierKind::Caveat),
            "handling" => Some(QualifierKind::Handling),
            _ => None,
        }
    }
}

/// A scheme's words, compiled from the policy: what the UK parsers match against and what
/// EPMS `SEC=` values map to.
#[derive(Debug, Clone, Default)]
pub struct Vocabulary {
    /// Levels, lowest first; a level's index is its rank.
    pub levels: Vec<VocabLevel>,
    pub qualifiers: Vec<VocabQualifier>,
}

#[derive(Debug, Clone)]
pub struct VocabLevel {
    /// The canonical text markgate writes.
    pub name: String,
    /// Other spellings accepted on read, each meaning exactly this level.
    pub aliases: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct VocabQualifier {
    pub name: String,
    pub aliases: Vec<String>,
    pub kind: QualifierKind,
    /// Level indices this qualifier may go with; `None` means any level.
    pub levels: Option<Vec<usize>>,
}

impl Vocabulary {
    /// The level whose canonical name or alias is exactly `text`.
    pub fn level_exact(&self, text: &str) -> Option<usize> {
        self.levels
            .iter()
            .position(|l| l.name == text || l.aliases.iter().any(|a| a == text))
    }
}

/// Reply and forward prefixes skipped before a subject prefix marking (case-insensitive):
/// English `RE`/`FW`/`FWD`, German `AW`/`WG`, and a few others clients write.
const REPLY_WORDS: &[&str] = &[
    "RE", "FW", "FWD", "AW", "WG", "TR", "SV", "VS", "ANTW", "RIF", "ENC",
];

/// End of the `RE: FW: Fwd:` chain at the start of a subject (also `RE[2]:`, `Re(3):`): the
/// byte offset where the subject proper (and a prefix marking) begins, whitespace skipped.
pub fn reply_chain_end(subject: &str) -> usize {
    let s = subject.as_bytes();
    let skip_ws = |mut i: usize| {
        while i < s.len() && matches!(s[i], b' ' | b'\t') {
            i += 1;
        }
        i
    };
    let mut pos = skip_ws(0);
    'chain: loop {
        for word in REPLY_WORDS {
            let w = word.as_bytes();
            if s.len() < pos + w.len() || !s[pos..pos + w.len()].eq_ignore_ascii_case(w) {
                continue;
            }
            let mut i = pos + w.len();
            // Optional counter: [2] or (2).
            if i < s.len() && matches!(s[i], b'[' | b'(') {
                let close = if s[i] == b'[' { b']' } else { b')' };
                let digits = s[i + 1..].iter().take_while(|b| b.is_ascii_digit()).count();
                if digits > 0 && s.get(i + 1 + digits) == Some(&close) {
                    i += digits + 2;
                }
            }
            i = skip_ws(i);
            if s.get(i) == Some(&b':') {
                pos = skip_ws(i + 1);
                continue 'chain;
            }
        }
        return pos;
    }
}

#[cfg(test)]
mod tests {
    use super::reply_chain_end;

    #[test]
    fn reply_chains() {
        let cases = [
            ("RE: FW: PROTECT - PERSONAL: x", 8),
            ("Re: x", 4),
            ("Fwd:x", 4),
            ("AW: WG: y", 8),
            ("RE[2]: z", 7),
            ("Re (3) : z", 0), // a space before the counter is not a counter
            ("Remember: z", 0),
            ("  RE :  z", 8),
            ("", 0),
            ("RE:", 3),
        ];
        for (s, want) in cases {
            assert_eq!(reply_chain_end(s), want, "{s:?}");
        }
    }
}
