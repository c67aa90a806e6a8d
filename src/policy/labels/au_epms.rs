//! The Australian Government Email Protective Marking Standard, Release 2024 (`VER=2024.1`).
//!
//! Follows the standard's ABNF (§8, which the standard declares definitive):
//!
//! ```text
//! medium-form = SEC *(", " CAVEAT) *(", " ACCESS) [", " EXPIRES ", " DOWNTO]
//! long-form   = VER ", " NS ", " medium-form [", " NOTE] ", " ORIGIN      ; the header
//! subject     = … "[" medium-form "]" …
//! ```
//!
//! with its limits (≤ 998 characters, text values 1–128 safe characters) and the constraints
//! between fields (caveats need PROTECTED or higher, except `SH:NATIONAL-CABINET` which needs
//! OFFICIAL:Sensitive; ACCESS needs OFFICIAL:Sensitive; EXPIRES and DOWNTO together, DOWNTO
//! lower than SEC). Variants seen in real deployments — no ORIGIN, the regular-expression
//! form's field order, `REL AUS` with a space, `DELICATE SOURCE`, no space after a comma,
//! 2011-era caveats without category — are parsed and reported with their own diagnostic code,
//! so the policy can accept them. [`render_medium`] and [`render_long`] always write the ABNF
//! form. Reference: `../shared/reference/markings.md` a.1.

use std::ops::Range;

use serde::Serialize;

use super::Diagnostic;

/// Longest marking the standard allows.
pub const MAX_LEN: usize = 998;
/// Longest text value.
pub const MAX_VALUE: usize = 128;
/// The version markgate writes.
pub const VERSION: &str = "2024.1";

/// Which form of the marking is being parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Form {
    /// `X-Protective-Marking` header: the long form (VER, NS, …, ORIGIN).
    Header,
    /// Inside `[…]` in the subject: the medium form (no VER, NS, NOTE, ORIGIN).
    Subject,
}

/// The 2024.1 classifications, lowest first (the order DOWNTO and the caveat rules use).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub enum Class {
    Unofficial,
    Official,
    OfficialSensitive,
    Protected,
    Secret,
    TopSecret,
}

impl Class {
    pub const ALL: [(&'static str, Class); 6] = [
        ("UNOFFICIAL", Class::Unofficial),
        ("OFFICIAL", Class::Official),
        ("OFFICIAL:Sensitive", Class::OfficialSensitive),
        ("PROTECTED", Class::Protected),
        ("SECRET", Class::Secret),
        ("TOP-SECRET", Class::TopSecret),
    ];

    pub fn from_text(s: &str) -> Option<Class> {
        Self::ALL.iter().find(|(t, _)| *t == s).map(|(_, c)| *c)
    }
}

/// Classification values of earlier releases (2005–2012), read with `epms.sec.legacy`.
const LEGACY: &[&str] = &[
    "UNCLASSIFIED",
    "X-IN-CONFIDENCE",
    "RESTRICTED",
    "CONFIDENTIAL",
    "HIGHLY-PROTECTED",
];

/// A caveat's category (`C:`, `FG:`, `RI:`, `SH:`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub enum CaveatCategory {
    C,
    FG,
    RI,
    SH,
}

impl CaveatCategory {
    fn prefix(self) -> &'static str {
        match self {
            CaveatCategory::C => "C",
            CaveatCategory::FG => "FG",
            CaveatCategory::RI => "RI",
            CaveatCategory::SH => "SH",
        }
    }
}

/// One caveat, normalised to ABNF spelling (`RI:REL/AUS/NZL`, `SH:DELICATE-SOURCE`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Caveat {
    pub category: CaveatCategory,
    /// The value after `CAT:`, normalised.
    pub value: String,
}

impl Caveat {
    pub fn text(&self) -> String {
        format!("{}:{}", self.category.prefix(), self.value)
    }
}

/// Everything read from one marking.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct EpmsMarking {
    pub ver: Option<String>,
    pub ns: Option<String>,
    /// The SEC value exactly as written.
    pub sec: Option<String>,
    /// The SEC value when it is a 2024.1 classification.
    pub class: Option<Class>,
    pub caveats: Vec<Caveat>,
    pub access: Vec<String>,
    pub expires: Option<String>,
    pub downto: Option<String>,
    pub note: Option<String>,
    pub origin: Option<String>,
    pub diagnostics: Vec<Diagnostic>,
}

/// Field names in ABNF order (their index is their ABNF rank).
const ABNF_ORDER: [&str; 9] = [
    "VER", "NS", "SEC", "CAVEAT", "ACCESS", "EXPIRES", "DOWNTO", "NOTE", "ORIGIN",
];
/// The regular-expression form's order (§7.1): ACCESS after EXPIRES/DOWNTO.
const REGEX_ORDER: [&str; 9] = [
    "VER", "NS", "SEC", "CAVEAT", "EXPIRES", "DOWNTO", "ACCESS", "NOTE", "ORIGIN",
];

const ACCESS_VALUES: [&str; 3] = ["Personal-Privacy", "Legal-Privilege", "Legislative-Secrecy"];

/// Undo RFC 5322 folding: CRLF or LF followed by whitespace becomes that whitespace.
pub fn unfold(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    let mut chars = raw.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\r' if chars.peek() == Some(&'\n') => {}
            '\n' => {}
            c => out.push(c),
        }
    }
    out
}

struct Field {
    name: String,
    name_at: usize,
    value: String,
    value_at: usize,
}

/// Parse one marking (already unfolded; the subject form without its brackets).
pub fn parse(text: &str, form: Form) -> EpmsMarking {
    let mut m = EpmsMarking::default();
    let d = &mut m.diagnostics;
    if text.len() > MAX_LEN {
        d.push(Diagnostic::new(
            "epms.length",
            MAX_LEN,
            format!(
                "marking is {} characters, the standard allows {MAX_LEN}",
                text.len()
            ),
        ));
    }
    let fields = split_fields(text, d);

    let mut ranks_abnf = Vec::new();
    let mut ranks_regex = Vec::new();
    for f in &fields {
        let upper = f.name.to_ascii_uppercase();
        let known = ABNF_ORDER.iter().any(|n| *n == upper);
        if upper == "DLM" {
            d.push(Diagnostic::new(
                "epms.dlm.legacy",
                f.name_at,
                "`DLM=` is the 2012 dissemination limiting marker; 2024.1 uses SEC= and ACCESS=",
            ));
            continue;
        }
        if !known {
            d.push(Diagnostic::new(
                "epms.field.unknown",
                f.name_at,
                format!("`{}` is not a field of the standard (VER, NS, SEC, CAVEAT, ACCESS, EXPIRES, DOWNTO, NOTE, ORIGIN)", f.name),
            ));
            continue;
        }
        if upper != f.name {
            d.push(Diagnostic::new(
                "epms.field.case",
                f.name_at,
                format!(
                    "`{}`: field names are case-sensitive, the standard writes `{upper}`",
                    f.name
                ),
            ));
        }
        if f.value != f.value.trim_matches([' ', '\t']) {
            d.push(Diagnostic::new(
                "epms.value.whitespace",
                f.value_at,
                format!("`{upper}={}` has whitespace around the value", f.value),
            ));
        }
        let value = f.value.trim_matches([' ', '\t']).to_owned();
        let rank = |order: &[&str; 9]| order.iter().position(|n| *n == upper).unwrap_or(0);
        ranks_abnf.push(rank(&ABNF_ORDER));
        ranks_regex.push(rank(&REGEX_ORDER));
        if form == Form::Subject && matches!(upper.as_str(), "VER" | "NS" | "NOTE" | "ORIGIN") {
            d.push(Diagnostic::new(
                "epms.field.not-in-subject",
                f.name_at,
                format!("`{upper}` belongs in the X-Protective-Marking header, not in the subject"),
            ));
        }
        let dup = |slot: &Option<String>, d: &mut Vec<Diagnostic>| {
            if slot.is_some() {
                d.push(Diagnostic::new(
                    "epms.field.duplicate",
                    f.name_at,
                    format!("`{upper}` given more than once"),
                ));
            }
        };
        match upper.as_str() {
            "VER" => {
                dup(&m.ver, d);
                if !valid_version(&value) {
                    d.push(Diagnostic::new(
                        "epms.ver.syntax",
                        f.value_at,
                        format!("VER=`{value}`, expected YEAR.N such as 2024.1"),
                    ));
                }
                m.ver.get_or_insert(value);
            }
            "NS" => {
                dup(&m.ns, d);
                if !value.eq_ignore_ascii_case("gov.au") {
                    d.push(Diagnostic::new(
                        "epms.ns.foreign",
                        f.value_at,
                        format!("NS=`{value}` is not the gov.au namespace"),
                    ));
                }
                m.ns.get_or_insert(value);
            }
            "SEC" => {
                dup(&m.sec, d);
                if m.sec.is_none() {
                    m.class = Class::from_text(&value);
                    if m.class.is_none() {
                        sec_value_diag(&value, f.value_at, d);
                    }
                    m.sec = Some(value);
                }
            }
            "CAVEAT" => {
                if let Some(c) = parse_caveat(&value, f.value_at, d) {
                    m.caveats.push(c);
                }
            }
            "ACCESS" => {
                if !ACCESS_VALUES.contains(&value.as_str()) {
                    d.push(Diagnostic::new(
                        "epms.access.value",
                        f.value_at,
                        format!("ACCESS=`{value}`, expected Personal-Privacy, Legal-Privilege or Legislative-Secrecy"),
                    ));
                }
                m.access.push(value);
            }
            "EXPIRES" => {
                dup(&m.expires, d);
                if looks_like_date(&value) {
                    // A date that does not exist (2025-02-30, month 13, hour 25) is a mistake,
                    // not an event description.
                    if !is_date(&value) || crate::policy::expiry::expiry_time(&value).is_none() {
                        d.push(Diagnostic::new(
                            "epms.expires.date",
                            f.value_at,
                            format!("EXPIRES=`{value}` is not a real date (YYYY-MM-DD or YYYY-MM-DDThh:mm:ssZ)"),
                        ));
                    }
                } else if !is_date(&value) {
                    check_text(&value, f.value_at, d);
                }
                m.expires.get_or_insert(value);
            }
            "DOWNTO" => {
                dup(&m.downto, d);
                if Class::from_text(&value).is_none() {
                    d.push(Diagnostic::new(
                        "epms.downto.value",
                        f.value_at,
                        format!("DOWNTO=`{value}` is not a classification"),
                    ));
                }
                m.downto.get_or_insert(value);
            }
            "NOTE" => {
                dup(&m.note, d);
                check_text(&value, f.value_at, d);
                m.note.get_or_insert(value);
            }
            "ORIGIN" => {
                dup(&m.origin, d);
                if !is_simple_email(&value) {
                    d.push(Diagnostic::new(
                        "epms.origin.syntax",
                        f.value_at,
                        format!("ORIGIN=`{value}` is not an address like name@agency.gov.au"),
                    ));
                }
                m.origin.get_or_insert(value);
            }
            _ => {}
        }
    }

    if !non_decreasing(&ranks_abnf) {
        if non_decreasing(&ranks_regex) {
            d.push(Diagnostic::new(
                "epms.order.regex-form",
                0,
                "ACCESS after EXPIRES/DOWNTO (the standard's regular-expression order); the ABNF puts ACCESS first",
            ));
        } else {
            d.push(Diagnostic::new(
                "epms.order",
                0,
                "fields out of order; expected VER, NS, SEC, CAVEAT, ACCESS, EXPIRES, DOWNTO, NOTE, ORIGIN",
            ));
        }
    }

    if m.sec.is_none() && !d.iter().any(|x| x.code == "epms.dlm.legacy") {
        d.push(Diagnostic::new("epms.sec.missing", 0, "no SEC= field"));
    }
    if form == Form::Header {
        if m.ver.is_none() {
            d.push(Diagnostic::new(
                "epms.ver.missing",
                0,
                "the header has no VER= field",
            ));
        }
        if m.ns.is_none() {
            d.push(Diagnostic::new(
                "epms.ns.missing",
                0,
                "the header has no NS= field",
            ));
        }
        if m.origin.is_none() {
            d.push(Diagnostic::new(
                "epms.origin.missing",
                text.len(),
                "the header has no ORIGIN= field",
            ));
        }
    }
    match (&m.expires, &m.downto) {
        (Some(_), None) => d.push(Diagnostic::new(
            "epms.expires.without-downto",
            0,
            "EXPIRES= without DOWNTO=",
        )),
        (None, Some(_)) => d.push(Diagnostic::new(
            "epms.downto.without-expires",
            0,
            "DOWNTO= without EXPIRES=",
        )),
        _ => {}
    }
    if let Some(class) = m.class {
        if let Some(down) = m.downto.as_deref().and_then(Class::from_text)
            && down >= class
        {
            d.push(Diagnostic::new(
                "epms.downto.level",
                0,
                format!(
                    "DOWNTO={} is not lower than SEC={}",
                    m.downto.as_deref().unwrap_or(""),
                    m.sec.as_deref().unwrap_or("")
                ),
            ));
        }
        for c in &m.caveats {
            let national_cabinet =
                c.category == CaveatCategory::SH && c.value == "NATIONAL-CABINET";
            let needed = if national_cabinet {
                Class::OfficialSensitive
            } else {
                Class::Protected
            };
            if class < needed {
                d.push(Diagnostic::new(
                    "epms.caveat.level",
                    0,
                    format!(
                        "CAVEAT={} needs {} or higher, the marking is {}",
                        c.text(),
                        if national_cabinet {
                            "OFFICIAL:Sensitive"
                        } else {
                            "PROTECTED"
                        },
                        m.sec.as_deref().unwrap_or("")
                    ),
                ));
            }
        }
        if !m.access.is_empty() && class < Class::OfficialSensitive {
            d.push(Diagnostic::new(
                "epms.access.level",
                0,
                format!(
                    "ACCESS= needs OFFICIAL:Sensitive or higher, the marking is {}",
                    m.sec.as_deref().unwrap_or("")
                ),
            ));
        }
    }
    m
}

/// Every `[SEC=…]` (and legacy `[DLM=…]`) marking in a subject, leftmost first, with the byte
/// range of the brackets and the parse of what is inside them.
pub fn find_in_subject(subject: &str) -> Vec<(Range<usize>, EpmsMarking)> {
    let mut out = Vec::new();
    let mut from = 0;
    while let Some(pos) = subject[from..].find('[') {
        let start = from + pos;
        let inner = &subject[start + 1..];
        let looks_like = ["SEC=", "DLM="].iter().any(|k| {
            inner.len() >= k.len()
                && inner.is_char_boundary(k.len())
                && inner[..k.len()].eq_ignore_ascii_case(k)
        });
        if !looks_like {
            from = start + 1;
            continue;
        }
        let Some(close) = inner.find(']') else {
            break;
        };
        let end = start + 1 + close + 1;
        let marking = parse(&inner[..close], Form::Subject);
        out.push((start..end, marking));
        from = end;
    }
    out
}

/// The medium form in ABNF order: `SEC=…, CAVEAT=…, ACCESS=…, EXPIRES=…, DOWNTO=…`.
pub fn render_medium(m: &EpmsMarking) -> String {
    let mut parts = vec![format!("SEC={}", m.sec.as_deref().unwrap_or(""))];
    for c in &m.caveats {
        parts.push(format!("CAVEAT={}", escape(&c.text())));
    }
    for a in &m.access {
        parts.push(format!("ACCESS={a}"));
    }
    if let (Some(e), Some(dn)) = (&m.expires, &m.downto) {
        parts.push(format!("EXPIRES={}", escape(e)));
        parts.push(format!("DOWNTO={dn}"));
    }
    parts.join(", ")
}

/// The header value in ABNF order, with `VER=2024.1, NS=gov.au` and the given ORIGIN.
pub fn render_long(m: &EpmsMarking, origin: &str) -> String {
    let mut out = format!("VER={VERSION}, NS=gov.au, {}", render_medium(m));
    if let Some(note) = &m.note {
        out.push_str(&format!(", NOTE={}", escape(note)));
    }
    out.push_str(&format!(", ORIGIN={origin}"));
    out
}

fn escape(s: &str) -> String {
    s.replace('\\', "\\\\").replace(',', "\\,")
}

/// Split on unescaped commas, checking comma-FWS and escapes.
fn split_fields(text: &str, d: &mut Vec<Diagnostic>) -> Vec<Field> {
    let b = text.as_bytes();
    let mut fields = Vec::new();
    let mut i = 0;
    // Leading FWS after the header colon is allowed.
    while i < b.len() && matches!(b[i], b' ' | b'\t') {
        i += 1;
    }
    // Trailing FWS too.
    let mut end = b.len();
    while end > i && matches!(b[end - 1], b' ' | b'\t') {
        end -= 1;
    }
    if i >= end {
        return fields;
    }
    loop {
        let start = i;
        let mut raw = Vec::new();
        while i < end && b[i] != b',' {
            if b[i] == b'\\' {
                match b.get(i + 1) {
                    Some(b',') | Some(b'\\') => {
                        raw.push(b[i + 1]);
                        i += 2;
                        continue;
                    }
                    _ => d.push(Diagnostic::new(
                        "epms.value.char",
                        i,
                        "a backslash must escape `,` or `\\`",
                    )),
                }
            }
            raw.push(b[i]);
            i += 1;
        }
        let field_text = String::from_utf8_lossy(&raw).into_owned();
        if field_text.trim().is_empty() {
            d.push(Diagnostic::new("epms.field.empty", start, "an empty field"));
        } else if let Some(eq) = field_text.find('=') {
            let name = field_text[..eq].to_owned();
            if name.trim().is_empty() || name != name.trim() {
                d.push(Diagnostic::new(
                    "epms.field.syntax",
                    start,
                    format!("`{field_text}`: expected NAME=value"),
                ));
            }
            fields.push(Field {
                name: name.trim().to_owned(),
                name_at: start,
                value: field_text[eq + 1..].to_owned(),
                value_at: start + eq + 1,
            });
        } else {
            d.push(Diagnostic::new(
                "epms.field.syntax",
                start,
                format!("`{field_text}`: expected NAME=value"),
            ));
        }
        if i >= end {
            break;
        }
        // At a comma: comma-FWS wants at least one space or tab after it.
        i += 1;
        let ws_start = i;
        while i < end && matches!(b[i], b' ' | b'\t') {
            i += 1;
        }
        if i == ws_start && i < end {
            d.push(Diagnostic::new(
                "epms.comma-fws",
                ws_start,
                "no space after the comma",
            ));
        }
        if i >= end {
            d.push(Diagnostic::new("epms.field.empty", i, "a trailing comma"));
            break;
        }
    }
    fields
}

/// The 2024.1 classification a mistyped SEC value was probably meant to be
/// (`OFFICIAL-Sensitive`, `OFFICIAL: Sensitive`, `official` → a class): ignoring case, spaces,
/// hyphens and colons.
pub fn near_class(value: &str) -> Option<Class> {
    let squash = |s: &str| -> String {
        s.chars()
            .filter(|c| !matches!(c, ' ' | '-' | ':' | '_'))
            .collect::<String>()
            .to_ascii_uppercase()
    };
    let v = squash(value);
    Class::ALL
        .iter()
        .find(|(t, _)| squash(t) == v)
        .map(|(_, c)| *c)
}

fn sec_value_diag(value: &str, at: usize, d: &mut Vec<Diagnostic>) {
    if LEGACY.contains(&value) {
        d.push(Diagnostic::new(
            "epms.sec.legacy",
            at,
            format!("SEC={value} is a classification of an earlier release, not of 2024.1"),
        ));
        return;
    }
    let squashed: String = value
        .chars()
        .filter(|c| !matches!(c, ' ' | '-' | ':' | '_'))
        .collect::<String>()
        .to_ascii_uppercase();
    let hint = Class::ALL
        .iter()
        .find(|(t, _)| {
            t.chars()
                .filter(|c| !matches!(c, ' ' | '-' | ':'))
                .collect::<String>()
                .to_ascii_uppercase()
                == squashed
        })
        .map(|(t, _)| format!(" (did you mean `{t}`?)"))
        .unwrap_or_default();
    d.push(Diagnostic::new(
        "epms.sec.value",
        at,
        format!("SEC=`{value}` is not UNOFFICIAL, OFFICIAL, OFFICIAL:Sensitive, PROTECTED, SECRET or TOP-SECRET{hint}"),
    ));
}

fn parse_caveat(value: &str, at: usize, d: &mut Vec<Diagnostic>) -> Option<Caveat> {
    let (cat, rest) = match value.split_once(':') {
        Some(("C", r)) => (Some(CaveatCategory::C), r),
        Some(("FG", r)) => (Some(CaveatCategory::FG), r),
        Some(("RI", r)) => (Some(CaveatCategory::RI), r),
        Some(("SH", r)) => (Some(CaveatCategory::SH), r),
        _ => (None, value),
    };
    let syntax = |d: &mut Vec<Diagnostic>| {
        d.push(Diagnostic::new(
            "epms.caveat.syntax",
            at,
            format!("CAVEAT=`{value}`, expected C:…, FG:…, RI:AUSTEO|AGAO|REL/…, or SH:NATIONAL-CABINET|CABINET|ORCON|DELICATE-SOURCE|ACCOUNTABLE-MATERIAL|EXCLUSIVE-FOR …"),
        ));
        None
    };
    match cat {
        Some(CaveatCategory::C) | Some(CaveatCategory::FG) => {
            check_text(rest, at, d);
            Some(Caveat {
                category: cat?,
                value: rest.to_owned(),
            })
        }
        Some(CaveatCategory::RI) => match release(rest, at, d) {
            Some(v) => Some(Caveat {
                category: CaveatCategory::RI,
                value: v,
            }),
            None => syntax(d),
        },
        Some(CaveatCategory::SH) => match handling(rest, at, d) {
            Some(v) => Some(Caveat {
                category: CaveatCategory::SH,
                value: v,
            }),
            None => syntax(d),
        },
        None => {
            // 2011-era examples wrote `CAVEAT=AUSTEO` without the category.
            let mut scratch = Vec::new();
            if let Some(v) = release(value, at, &mut scratch) {
                d.push(Diagnostic::new(
                    "epms.caveat.no-category",
                    at,
                    format!("CAVEAT=`{value}` without its category; the standard writes `RI:{v}`"),
                ));
                d.extend(scratch);
                return Some(Caveat {
                    category: CaveatCategory::RI,
                    value: v,
                });
            }
            let mut scratch = Vec::new();
            if let Some(v) = handling(value, at, &mut scratch) {
                d.push(Diagnostic::new(
                    "epms.caveat.no-category",
                    at,
                    format!("CAVEAT=`{value}` without its category; the standard writes `SH:{v}`"),
                ));
                d.extend(scratch);
                return Some(Caveat {
                    category: CaveatCategory::SH,
                    value: v,
                });
            }
            syntax(d)
        }
    }
}

fn release(rest: &str, at: usize, d: &mut Vec<Diagnostic>) -> Option<String> {
    if rest == "AUSTEO" || rest == "AGAO" {
        return Some(rest.to_owned());
    }
    let countries = if let Some(c) = rest.strip_prefix("REL/") {
        c
    } else if let Some(c) = rest.strip_prefix("REL ") {
        d.push(Diagnostic::new(
            "epms.rel.space",
            at,
            "`REL ` with a space; the standard writes `REL/`",
        ));
        c
    } else {
        return None;
    };
    let codes: Vec<&str> = countries
        .split(['/', ' '])
        .filter(|c| !c.is_empty())
        .collect();
    if codes.is_empty()
        || codes
            .iter()
            .any(|c| c.len() != 3 || !c.bytes().all(|b| b.is_ascii_uppercase()))
    {
        d.push(Diagnostic::new(
            "epms.rel.country",
            at,
            format!("`{countries}`: countries are ISO 3166 alpha-3 codes like AUS/NZL"),
        ));
    }
    Some(format!("REL/{}", codes.join("/")))
}

fn handling(rest: &str, at: usize, d: &mut Vec<Diagnostic>) -> Option<String> {
    match rest {
        "NATIONAL-CABINET" | "CABINET" | "ORCON" | "DELICATE-SOURCE" | "ACCOUNTABLE-MATERIAL" => {
            Some(rest.to_owned())
        }
        "DELICATE SOURCE" => {
            d.push(Diagnostic::new(
                "epms.delicate-source.space",
                at,
                "`DELICATE SOURCE`; the standard writes `DELICATE-SOURCE`",
            ));
            Some("DELICATE-SOURCE".to_owned())
        }
        _ => {
            let text = rest.strip_prefix("EXCLUSIVE-FOR")?;
            check_text(text, at, d);
            Some(rest.to_owned())
        }
    }
}

/// one-to-128-safe-text (after unescaping): 1–128 printable ASCII characters.
fn check_text(text: &str, at: usize, d: &mut Vec<Diagnostic>) {
    let n = text.chars().count();
    if n == 0 || n > MAX_VALUE {
        d.push(Diagnostic::new(
            "epms.value.length",
            at,
            format!("a value of {n} characters; values are 1 to {MAX_VALUE}"),
        ));
    }
    if let Some(c) = text.chars().find(|c| !(' '..='~').contains(c)) {
        d.push(Diagnostic::new(
            "epms.value.char",
            at,
            format!("character {c:?} is outside printable ASCII"),
        ));
    }
}

fn valid_version(v: &str) -> bool {
    let Some((year, minor)) = v.split_once('.') else {
        return false;
    };
    year.len() == 4
        && year.bytes().all(|b| b.is_ascii_digit())
        && !minor.is_empty()
        && minor.bytes().all(|b| b.is_ascii_digit())
}

/// full-date ["T" full-time] (RFC 3339), checked for shape and ranges.
/// Starts like a date (`dddd-dd-dd`): then it must be one, not event text.
fn looks_like_date(v: &str) -> bool {
    let b = v.as_bytes();
    b.len() >= 10
        && b[4] == b'-'
        && b[7] == b'-'
        && [0, 1, 2, 3, 5, 6, 8, 9]
            .iter()
            .all(|&i| b[i].is_ascii_digit())
}

fn is_date(v: &str) -> bool {
    let (date, time) = match v.split_once('T') {
        Some((d, t)) => (d, Some(t)),
        None => (v, None),
    };
    let p: Vec<&str> = date.split('-').collect();
    let num = |s: &str, len: usize, max: u32| {
        s.len() == len
            && s.bytes().all(|b| b.is_ascii_digit())
            && s.parse::<u32>().is_ok_and(|n| n >= 1 && n <= max)
    };
    let date_ok = p.len() == 3
        && p[0].len() == 4
        && p[0].bytes().all(|b| b.is_ascii_digit())
        && num(p[1], 2, 12)
        && num(p[2], 2, 31);
    let time_ok = time.is_none_or(|t| {
        let b = t.as_bytes();
        b.len() >= 8
            && b[2] == b':'
            && b[5] == b':'
            && b[..2]
                .iter()
                .chain(&b[3..5])
                .chain(&b[6..8])
                .all(|c| c.is_ascii_digit())
    });
    date_ok && time_ok
}

fn is_simple_email(v: &str) -> bool {
    let Some((local, domain)) = v.rsplit_once('@') else {
        return false;
    };
    let atext = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+/=?^_`{|}~-".contains(c);
    let dot_atom = |s: &str, f: &dyn Fn(char) -> bool| {
        !s.is_empty() && s.split('.').all(|p| !p.is_empty() && p.chars().all(f))
    };
    dot_atom(local, &atext) && dot_atom(domain, &|c: char| c.is_ascii_alphanumeric() || c == '-')
}

fn non_decreasing(v: &[usize]) -> bool {
    v.windows(2).all(|w| w[0] <= w[1])
}
