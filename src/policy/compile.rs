//! Second and third loading stages: the spanned tree → validated → compiled [`Policy`].
//!
//! Every section is read even when an earlier one had mistakes, so one run reports every
//! problem. Semantic checks (unknown level names, duplicate levels or aliases, invalid regexes,
//! ceilings naming undefined levels, rules that can never fire) run after everything is read.

use std::collections::HashMap;
use std::ops::Range;

use regex::Regex;
use sha2::{Digest, Sha256};
use toml::Spanned;

use super::controls;
use super::domains::{DomainMap, Network, check_domain_pattern, normalise_domain};
use super::error::{LoadErrors, Problem, Severity, SourceText};
use super::include;
use super::labels::{self, Grammar, QualifierKind, VocabLevel, VocabQualifier, Vocabulary};
use super::model::*;
use super::raw::{self, TableReader, quote_list};

mod labels_ext;
/// `[notice]`: the marking on markgate's own sender notices.
mod notice;
mod routes;
/// `[thread]` (issue 12), in its own file.
mod thread;

/// Compile policy text. `name` is used in messages (normally the file path) and is what
/// `include` paths are relative to; `identity` is the file's identity as `read` reports
/// identities (for include cycles); `read` reads fragments.
pub(crate) fn compile(
    name: &str,
    text: &str,
    identity: Option<String>,
    read: &mut include::Reader<'_>,
) -> Result<Policy, LoadErrors> {
    let mut src = SourceText::new(name, text);
    let root = match raw::parse(&src, 0) {
        Ok(root) => root,
        Err(p) => return Err(LoadErrors { problems: vec![*p] }),
    };
    let mut problems = Vec::new();
    let root = include::resolve(&mut src, root, identity, read, &mut problems);
    let mut c = Compiler {
        src: &src,
        problems,
        level_names: Vec::new(),
        pending: labels_ext::Pending::default(),
        name_span: 0..0,
        version: None,
    };
    let policy = c.policy(&root);
    let mut problems = c.problems;
    if let Some(p) = &policy {
        problems.extend(controls::template_gaps(&src, p, c.name_span.clone()));
    }
    // The policy file first, then each fragment in load order; by position within a file.
    problems.sort_by_key(|p| (src.rank(&p.file), p.line, p.column));
    if problems.iter().any(|p| p.severity == Severity::Error) {
        return Err(LoadErrors { problems });
    }
    let mut policy = policy.ok_or(LoadErrors {
        problems: problems.clone(),
    })?;
    policy.warnings = problems;
    Ok(policy)
}

struct Compiler<'a> {
    src: &'a SourceText,
    problems: Vec<Problem>,
    /// Level names and aliases → level index, for resolving references.
    level_names: Vec<(String, usize)>,
    /// `[read.vendor]` and `[write.purview]`, read with their parents, compiled later.
    pending: labels_ext::Pending<'a>,
    /// Where `policy.name` is written (for warnings about the policy as a whole).
    name_span: Range<usize>,
    /// `policy.version`, if given.
    version: Option<String>,
}

const TOP_KEYS: &[&str] = &[
    "include",
    "policy",
    "scheme",
    "read",
    "write",
    "domains",
    "forward",
    "rule",
    "disclaimer",
    "inbound",
    "route",
    "release",
    "origin",
    "thread",
    "notice",
];

/// SHA-256 (hex) of the policy text; with fragments, of the policy text and each fragment's
/// text in load order, each preceded by a NUL (which TOML text cannot contain), so a change
/// in any file changes the digest.
fn digest(src: &SourceText) -> String {
    let mut h = Sha256::new();
    for (i, f) in src.files().iter().enumerate() {
        if i > 0 {
            h.update([0u8]);
        }
        h.update(f.text.as_bytes());
    }
    hex(&h.finalize())
}

impl<'a> Compiler<'a> {
    fn err(&mut self, span: Range<usize>, key: &str, found: String, expected: String) {
        self.problems
            .push(self.src.problem(span, key, found, expected));
    }

    /// A keyword from a closed list (`grammar`, `kind`, `action`, `when`, …): the value it names,
    /// or an error at its span listing every allowed name.
    fn keyword<T>(
        &mut self,
        s: &Spanned<String>,
        key: &str,
        names: &[&str],
        from_name: impl Fn(&str) -> Option<T>,
    ) -> Option<T> {
        let found = from_name(s.get_ref());
        if found.is_none() {
            self.err(
                s.span(),
                key,
                format!("`{}`", s.get_ref()),
                format!("one of {}", quote_list(names)),
            );
        }
        found
    }

    fn warn(&mut self, span: Range<usize>, key: &str, found: String, expected: String) {
        self.problems
            .push(self.src.warning(span, key, found, expected));
    }

    fn line_of(&self, span: &Range<usize>) -> usize {
        self.src.line_col(span.start).0
    }

    /// How a message at `here` names an earlier `there`: `line N` in the same file, else
    /// `file:line:col` (the other is in a fragment, or the fragment's message names the policy).
    fn place_from(&self, there: usize, here: &Range<usize>) -> String {
        self.src.place_from(there, here.start)
    }

    fn policy(&mut self, root: &'a raw::Node) -> Option<Policy> {
        let mut p = std::mem::take(&mut self.problems);
        let mut top = TableReader::new(self.src, root, "", &mut p);
        let meta = top.table("policy", &mut p);
        let scheme_t = top.table("scheme", &mut p);
        let read_t = top.table("read", &mut p);
        let write_t = top.table("write", &mut p);
        let domains_t = top.table("domains", &mut p);
        let forward_t = top.table("forward", &mut p);
        let rules_t = top.tables("rule", &mut p);
        let disclaimer_t = top.table("disclaimer", &mut p);
        let inbound_t = top.table("inbound", &mut p);
        let routes_t = top.tables("route", &mut p);
        let release_t = top.table("release", &mut p);
        let origin_t = top.table("origin", &mut p);
        let thread_t = top.table("thread", &mut p);
        let notice_t = top.table("notice", &mut p);
        for (key, missing) in [
            ("policy", meta.is_none()),
            ("scheme", scheme_t.is_none()),
            ("domains", domains_t.is_none()),
        ] {
            if missing {
                top.missing(key, "a table", &mut p);
            }
        }
        top.finish(TOP_KEYS, &mut p);
        self.problems = p;

        let (name, description, mode, shadow_header) = self.meta(meta);
        let scheme = self.scheme(scheme_t);
        let read = self.read(read_t, &scheme);
        let write = self.write(write_t, &scheme);
        let domains = self.domains(domains_t);
        let forward = self.forward(forward_t);
        let rules = self.rules(rules_t, &scheme, domains.as_ref(), forward.as_ref());
        let disclaimer = disclaimer_t.map(|t| self.disclaimer(t));
        let inbound = self.inbound(inbound_t);
        let routes = self.routes(routes_t, &rules, &scheme);
        let vendors = self.vendors(scheme.as_ref());
        let purview_write = self.purview_write();
        let release = self.release(release_t);
        let origin = self.origin(origin_t);
        self.feature_rules(&rules, &release, origin.as_ref());
        let thread = thread_t.map(|t| self.thread(t, &rules));
        let notice = self.notice(notice_t);

        let scheme = scheme?;
        Some(Policy {
            name: name?,
            description: description.unwrap_or_default(),
            version: self.version.take(),
            source: self.src.main().name.clone(),
            fragments: self.src.files()[1..]
                .iter()
                .map(|f| f.name.clone())
                .collect(),
            digest: digest(self.src),
            mode,
            shadow_header,
            read: read?,
            write: write?,
            domains: domains?,
            forward: forward?,
            rules,
            disclaimer: disclaimer.flatten(),
            inbound,
            routes,
            thread,
            notice,
            scheme,
            vendors,
            purview_write,
            release,
            origin,
            warnings: Vec::new(),
        })
    }

    fn meta(
        &mut self,
        t: Option<TableReader<'a>>,
    ) -> (Option<String>, Option<String>, Mode, String) {
        let Some(mut t) = t else {
            return (None, None, Mode::Enforce, DEFAULT_SHADOW_HEADER.to_owned());
        };
        let mut p = std::mem::take(&mut self.problems);
        let name = t.required_string("name", "a short name for this policy", &mut p);
        self.name_span = name.as_ref().map_or(0..0, Spanned::span);
        let name = name.map(Spanned::into_inner);
        let description = t.string("description", &mut p).map(Spanned::into_inner);
        let mode = t.string("mode", &mut p);
        let shadow = t.string("shadow_header", &mut p);
        self.version = t.string("version", &mut p).map(Spanned::into_inner);
        t.finish(
            &["name", "description", "mode", "shadow_header", "version"],
            &mut p,
        );
        self.problems = p;
        let mode = match mode {
            None => Mode::Enforce,
            Some(m) => match m.get_ref().as_str() {
                "enforce" => Mode::Enforce,
                "shadow" => Mode::Shadow,
                other => {
                    self.err(
                        m.span(),
                        "policy.mode",
                        format!("`{other}`"),
                        "`enforce` or `shadow`".into(),
                    );
                    Mode::Enforce
                }
            },
        };
        let shadow_header = match shadow {
            None => DEFAULT_SHADOW_HEADER.to_owned(),
            Some(h) => {
                self.check_header_name(&h, "policy.shadow_header");
                h.into_inner()
            }
        };
        (name, description, mode, shadow_header)
    }

    fn check_header_name(&mut self, h: &Spanned<String>, key: &str) -> bool {
        let ok = !h.get_ref().is_empty()
            && h.get_ref()
                .bytes()
                .all(|b| (33..=126).contains(&b) && b != b':');
        if !ok {
            self.err(
                h.span(),
                key,
                format!("`{}`", h.get_ref()),
                "a header field name (printable ASCII, no spaces or `:`)".into(),
            );
        }
        ok
    }

    fn scheme(&mut self, t: Option<TableReader<'a>>) -> Option<Scheme> {
        let mut t = t?;
        let mut p = std::mem::take(&mut self.problems);
        let name = t
            .string("name", &mut p)
            .map(Spanned::into_inner)
            .unwrap_or_default();
        let grammar = t.required_string("grammar", "uk-gpms, uk-gsc or au-epms", &mut p);
        let levels = t.tables("level", &mut p);
        let quals = t.tables("qualifier", &mut p);
        let scheme_span = t.span();
        t.finish(&["name", "grammar", "level", "qualifier"], &mut p);
        self.problems = p;

        let grammar = grammar
            .and_then(|g| self.keyword(&g, "scheme.grammar", Grammar::NAMES, Grammar::from_name));

        let mut vocab = Vocabulary::default();
        // Every spelling (canonical or alias) of every level and qualifier must be unique:
        // otherwise a marking could mean two things.
        let mut seen: HashMap<String, (String, usize)> = HashMap::new();
        if levels.is_empty() {
            self.err(
                scheme_span.clone(),
                "scheme",
                "no `[[scheme.level]]`".into(),
                "at least two levels, lowest first".into(),
            );
        }
        for mut lt in levels {
            let mut p = std::mem::take(&mut self.problems);
            let path = lt.path().to_owned();
            let lname = lt.required_string("name", "the level's canonical text", &mut p);
            let aliases = lt.strings("aliases", &mut p).unwrap_or_default();
            lt.finish(&["name", "aliases"], &mut p);
            self.problems = p;
            let Some(lname) = lname else { continue };
            let idx = vocab.levels.len();
            for s in std::iter::once(&lname).chain(aliases.iter()) {
                // Only unique spellings become names other keys may refer to.
                if self.unique_spelling(&mut seen, s, &path, &format!("level {}", lname.get_ref()))
                {
                    self.level_names.push((s.get_ref().clone(), idx));
                }
            }
            vocab.levels.push(VocabLevel {
                name: lname.into_inner(),
                aliases: aliases.into_iter().map(Spanned::into_inner).collect(),
            });
        }
        if vocab.levels.len() == 1 {
            self.err(
                scheme_span.clone(),
                "scheme",
                "one level".into(),
                "at least two levels, lowest first".into(),
            );
        }
        for mut qt in quals {
            let mut p = std::mem::take(&mut self.problems);
            let path = qt.path().to_owned();
            let qname = qt.required_string("name", "the qualifier's canonical text", &mut p);
            let kind = qt.required_string("kind", "descriptor, caveat or handling", &mut p);
            let aliases = qt.strings("aliases", &mut p).unwrap_or_default();
            let lv = qt.strings("levels", &mut p);
            qt.finish(&["name", "kind", "aliases", "levels"], &mut p);
            self.problems = p;
            let kind = kind.and_then(|k| {
                self.keyword(
                    &k,
                    &format!("{path}.kind"),
                    QualifierKind::NAMES,
                    QualifierKind::from_name,
                )
            });
            let levels = lv.map(|v| {
                if v.is_empty() {
                    self.err(
                        scheme_span.clone(),
                        &format!("{path}.levels"),
                        "an empty list".into(),
                        "the levels this qualifier may go with, or no `levels` key for any level"
                            .into(),
                    );
                }
                v.iter()
                    .filter_map(|l| self.level_ref(l, &format!("{path}.levels")))
                    .collect::<Vec<_>>()
            });
            let Some(qname) = qname else { continue };
            for s in std::iter::once(&qname).chain(aliases.iter()) {
                let _ = self.unique_spelling(
                    &mut seen,
                    s,
                    &path,
                    &format!("qualifier {}", qname.get_ref()),
                );
            }
            if let Some(kind) = kind {
                vocab.qualifiers.push(VocabQualifier {
                    name: qname.into_inner(),
                    aliases: aliases.into_iter().map(Spanned::into_inner).collect(),
                    kind,
                    levels,
                });
            }
        }
        let grammar = grammar?;
        if grammar == Grammar::AuEpms {
            if !vocab.qualifiers.is_empty() {
                self.err(
                    scheme_span.clone(),
                    "scheme.qualifier",
                    "qualifiers in an au-epms scheme".into(),
                    "none: EPMS caveats and ACCESS values are defined by the standard".into(),
                );
            }
            for l in &vocab.levels {
                if labels::au_epms::Class::from_text(&l.name).is_none() {
                    let span = scheme_span.clone();
                    self.warn(span, "scheme.level", format!("level `{}`", l.name), "a 2024.1 classification (UNOFFICIAL, OFFICIAL, OFFICIAL:Sensitive, PROTECTED, SECRET, TOP-SECRET); markgate will write it as given".into());
                }
            }
        }
        if vocab.levels.is_empty() {
            return None;
        }
        Some(Scheme {
            name,
            grammar,
            vocab,
        })
    }

    fn unique_spelling(
        &mut self,
        seen: &mut HashMap<String, (String, usize)>,
        s: &Spanned<String>,
        path: &str,
        what: &str,
    ) -> bool {
        let text = s.get_ref();
        if text.trim().is_empty()
            || text != text.trim()
            || !text.bytes().all(|b| (32..=126).contains(&b))
        {
            self.err(
                s.span(),
                path,
                format!("`{text}`"),
                "printable ASCII text without leading or trailing spaces".into(),
            );
            return false;
        }
        let key = text.to_ascii_uppercase();
        if let Some((other, other_at)) = seen.get(&key) {
            let place = self.place_from(*other_at, &s.span());
            let found = format!("`{text}` for {what}, already used by {other} on {place}");
            self.err(s.span(), path, found, "each level, alias and qualifier spelled differently (case is ignored when reading)".into());
            false
        } else {
            seen.insert(key, (what.to_owned(), s.span().start));
            true
        }
    }

    /// Resolve a level name or alias; reports an unknown one.
    fn level_ref(&mut self, s: &Spanned<String>, key: &str) -> Option<usize> {
        if self.level_names.is_empty() {
            return None; // the scheme's own error says why
        }
        if let Some((_, idx)) = self.level_names.iter().find(|(n, _)| n == s.get_ref()) {
            return Some(*idx);
        }
        let names: Vec<&str> = self.level_names.iter().map(|(n, _)| n.as_str()).collect();
        self.err(
            s.span(),
            key,
            format!("unknown level `{}`", s.get_ref()),
            format!("one of {}", quote_list(&names)),
        );
        None
    }

    fn read(&mut self, t: Option<TableReader<'a>>, scheme: &Option<Scheme>) -> Option<Read> {
        let grammar = scheme.as_ref().map(|s| s.grammar);
        let mut p = std::mem::take(&mut self.problems);
        let (headers, subject, case, precedence, accept, span) = match t {
            Some(mut t) => {
                let h = t.strings("headers", &mut p);
                let s = t.strings("subject", &mut p);
                let c = t.string("subject_case", &mut p);
                let pr = t.string("precedence", &mut p);
                let a = t.strings("accept", &mut p);
                self.pending.vendor = t.table("vendor", &mut p);
                let span = t.span();
                t.finish(
                    &[
                        "headers",
                        "subject",
                        "subject_case",
                        "precedence",
                        "accept",
                        "vendor",
                    ],
                    &mut p,
                );
                (h, s, c, pr, a, span)
            }
            None => (None, None, None, None, None, 0..0),
        };
        self.problems = p;
        let headers: Vec<String> = headers
            .unwrap_or_default()
            .into_iter()
            .filter(|h| self.check_header_name(h, "read.headers"))
            .map(Spanned::into_inner)
            .collect();
        let mut subject_forms = Vec::new();
        for s in subject.unwrap_or_default() {
            if let Some(f) = self.keyword(
                &s,
                "read.subject",
                SubjectForm::NAMES,
                SubjectForm::from_name,
            ) {
                if let Some(g) = grammar {
                    self.form_fits_grammar(f, g, &s, "read.subject");
                }
                subject_forms.push(f);
            }
        }
        if headers.is_empty() && subject_forms.is_empty() {
            self.err(
                span,
                "read",
                "no `headers` and no `subject` forms".into(),
                "at least one place to read markings from".into(),
            );
        }
        let subject_case_insensitive = match case {
            None => false,
            Some(c) => match c.get_ref().as_str() {
                "exact" => false,
                "insensitive" => true,
                other => {
                    self.err(
                        c.span(),
                        "read.subject_case",
                        format!("`{other}`"),
                        "`exact` or `insensitive`".into(),
                    );
                    false
                }
            },
        };
        let precedence = match precedence {
            None => Precedence::Highest,
            Some(pr) => match pr.get_ref().as_str() {
                "header" => Precedence::Header,
                "subject" => Precedence::Subject,
                "highest" => Precedence::Highest,
                other => {
                    self.err(
                        pr.span(),
                        "read.precedence",
                        format!("`{other}`"),
                        "`header`, `subject` or `highest`".into(),
                    );
                    Precedence::Highest
                }
            },
        };
        let mut acc = Vec::new();
        for a in accept.unwrap_or_default() {
            match labels::code_info(a.get_ref()) {
                Some(info) => {
                    let wrong_family = match grammar {
                        Some(Grammar::AuEpms) => !info.code.starts_with("epms."),
                        Some(_) => !info.code.starts_with("uk."),
                        None => false,
                    };
                    if info.code.contains(".near-miss.") {
                        self.err(
                            a.span(),
                            "read.accept",
                            format!("`{}`, a near-miss, which is never accepted", a.get_ref()),
                            "a diagnostic code of a variant or violation the grammar reports"
                                .into(),
                        );
                    } else if wrong_family {
                        self.err(
                            a.span(),
                            "read.accept",
                            format!(
                                "`{}`, which this scheme's grammar never reports",
                                a.get_ref()
                            ),
                            "a diagnostic code of the scheme's grammar".into(),
                        );
                    } else {
                        acc.push(info.code);
                    }
                }
                None => {
                    let family = match grammar {
                        Some(Grammar::AuEpms) => "epms.",
                        _ => "uk.",
                    };
                    let codes: Vec<&str> = labels::CODES
                        .iter()
                        .map(|c| c.code)
                        .filter(|c| c.starts_with(family))
                        .collect();
                    self.err(
                        a.span(),
                        "read.accept",
                        format!("unknown diagnostic code `{}`", a.get_ref()),
                        format!("one of {}", quote_list(&codes)),
                    );
                }
            }
        }
        Some(Read {
            headers,
            subject_forms,
            subject_case_insensitive,
            precedence,
            accept: acc,
        })
    }

    fn form_fits_grammar(&mut self, f: SubjectForm, g: Grammar, s: &Spanned<String>, key: &str) {
        let ok = match g {
            Grammar::AuEpms => f == SubjectForm::SecSuffix,
            _ => f != SubjectForm::SecSuffix,
        };
        if !ok {
            let expected = if g == Grammar::AuEpms {
                "`sec-suffix` for an au-epms scheme"
            } else {
                "`prefix` or `bracketed` for a UK scheme"
            };
            self.err(s.span(), key, format!("`{}`", s.get_ref()), expected.into());
        }
    }

    fn write(&mut self, t: Option<TableReader<'a>>, scheme: &Option<Scheme>) -> Option<Write> {
        let mut t = match t {
            Some(t) => t,
            None => {
                // No [write]: markgate never writes labels.
                let top = scheme.as_ref().map_or(0, |s| s.top());
                return Some(Write {
                    from_level: top + 1,
                    direction: Directions::Outbound,
                    header: None,
                    subject: None,
                    origin: OriginSource::AuthUser,
                    controls: Vec::new(),
                });
            }
        };
        let mut p = std::mem::take(&mut self.problems);
        let from = t.required_string("from_level", "the lowest level that gets labels", &mut p);
        let direction = t.string("direction", &mut p);
        let header = t.string("header", &mut p);
        let subject = t.string("subject", &mut p);
        let origin = t.string("origin", &mut p);
        self.pending.purview = t.table("purview", &mut p);
        let controls = controls::read(self.src, &mut t, &mut p);
        t.finish(
            &[
                "from_level",
                "direction",
                "header",
                "subject",
                "origin",
                "purview",
                "controls",
            ],
            &mut p,
        );
        self.problems = p;
        let from_level = from.and_then(|f| self.level_ref(&f, "write.from_level"));
        let direction = self.directions(direction, "write.direction", Directions::Outbound);
        let header = header.and_then(|h| {
            self.check_header_name(&h, "write.header")
                .then(|| h.into_inner())
        });
        let subject = subject.and_then(|s| {
            if s.get_ref() == "none" {
                return None;
            }
            match SubjectForm::from_name(s.get_ref()) {
                Some(f) => {
                    if let Some(sc) = scheme {
                        self.form_fits_grammar(f, sc.grammar, &s, "write.subject");
                    }
                    Some(f)
                }
                None => {
                    self.err(
                        s.span(),
                        "write.subject",
                        format!("`{}`", s.get_ref()),
                        "`prefix`, `bracketed`, `sec-suffix` or `none`".into(),
                    );
                    None
                }
            }
        });
        let origin = match origin {
            None => OriginSource::AuthUser,
            Some(o) => match o.get_ref().as_str() {
                "auth-user" => OriginSource::AuthUser,
                "sender" => OriginSource::Sender,
                other => {
                    self.err(
                        o.span(),
                        "write.origin",
                        format!("`{other}`"),
                        "`auth-user` or `sender`".into(),
                    );
                    OriginSource::AuthUser
                }
            },
        };
        Some(Write {
            from_level: from_level?,
            direction,
            header,
            subject,
            origin,
            controls,
        })
    }

    fn directions(
        &mut self,
        s: Option<Spanned<String>>,
        key: &str,
        default: Directions,
    ) -> Directions {
        match s {
            None => default,
            Some(d) => self
                .keyword(&d, key, Directions::NAMES, Directions::from_name)
                .unwrap_or(default),
        }
    }

    fn domains(&mut self, t: Option<TableReader<'a>>) -> Option<Domains> {
        let mut t = t?;
        let mut p = std::mem::take(&mut self.problems);
        let own = t.strings("own", &mut p).unwrap_or_default();
        let networks = t.strings("networks", &mut p).unwrap_or_default();
        let when = t.strings("outbound_when", &mut p);
        let daemons = t.strings("outbound_daemons", &mut p);
        let own_level = t.required_string("own_level", "the organisation's own rating", &mut p);
        let default_ceiling = t.required_string(
            "default_ceiling",
            "the ceiling of every domain not listed",
            &mut p,
        );
        let ceilings = t.table("ceilings", &mut p);
        let span = t.span();
        t.finish(
            &[
                "own",
                "networks",
                "outbound_when",
                "outbound_daemons",
                "own_level",
                "default_ceiling",
                "ceilings",
            ],
            &mut p,
        );
        self.problems = p;

        let mut own_map = DomainMap::default();
        // Where each domain was first listed (lower case), to name both places of a duplicate.
        let mut own_first: HashMap<String, usize> = HashMap::new();
        for d in &own {
            if let Err(why) = check_domain_pattern(d.get_ref()) {
                self.err(
                    d.span(),
                    "domains.own",
                    why,
                    "a domain such as `example.gov.uk` or `*.example.gov.uk`".into(),
                );
            } else if !own_map.insert(d.get_ref(), ()) {
                let first = own_first
                    .get(&normalise_domain(d.get_ref()))
                    .map(|at| format!(" (first on {})", self.place_from(*at, &d.span())))
                    .unwrap_or_default();
                self.err(
                    d.span(),
                    "domains.own",
                    format!("`{}` twice{first}", d.get_ref()),
                    "each domain once".into(),
                );
            } else {
                own_first.insert(normalise_domain(d.get_ref()), d.span().start);
            }
        }
        let mut nets = Vec::new();
        for n in &networks {
            match Network::parse(n.get_ref()) {
                Ok(net) => nets.push(net),
                Err(why) => self.err(
                    n.span(),
                    "domains.networks",
                    why,
                    "an address or CIDR block such as `192.0.2.0/24` or `::1`".into(),
                ),
            }
        }
        let outbound_when = match when {
            None => vec![OutboundWhen::Network, OutboundWhen::Authenticated],
            Some(list) => list
                .iter()
                .filter_map(|w| match w.get_ref().as_str() {
                    "network" => Some(OutboundWhen::Network),
                    "authenticated" => Some(OutboundWhen::Authenticated),
                    "sender-domain" => Some(OutboundWhen::SenderDomain),
                    "daemon" => Some(OutboundWhen::Daemon),
                    other => {
                        self.err(
                            w.span(),
                            "domains.outbound_when",
                            format!("`{other}`"),
                            format!("one of {}", quote_list(OutboundWhen::NAMES)),
                        );
                        None
                    }
                })
                .collect(),
        };
        let outbound_daemons: Vec<String> = daemons
            .unwrap_or_default()
            .into_iter()
            .map(Spanned::into_inner)
            .collect();
        if outbound_when.contains(&OutboundWhen::Daemon) && outbound_daemons.is_empty() {
            self.err(
                span.clone(),
                "domains",
                "`\"daemon\"` in `outbound_when` without `outbound_daemons`".into(),
                "`outbound_daemons`, the {daemon_name} values that mean outbound (e.g. [\"ORIGINATING\"])".into(),
            );
        }
        let own_level = own_level.and_then(|l| self.level_ref(&l, "domains.own_level"));
        let default_ceiling =
            default_ceiling.and_then(|l| self.level_ref(&l, "domains.default_ceiling"));
        let mut ceiling_map = DomainMap::default();
        let mut ceiling_first: HashMap<String, usize> = HashMap::new();
        if let Some(mut ct) = ceilings {
            for (key, node) in ct.take_all() {
                let path = format!("domains.ceilings.\"{}\"", key.name);
                let kspan = if key.span.is_empty() {
                    node.span.clone()
                } else {
                    key.span.clone()
                };
                if let Err(why) = check_domain_pattern(&key.name) {
                    self.err(
                        kspan.clone(),
                        &path,
                        why,
                        "a domain such as `nhs.net` or `*.gcsx.gov.uk`".into(),
                    );
                    continue;
                }
                let level = match &node.value {
                    raw::Value::Str(s) => {
                        self.level_ref(&Spanned::new(node.span.clone(), s.clone()), &path)
                    }
                    other => {
                        self.err(
                            node.span.clone(),
                            &path,
                            other.type_name().into(),
                            "a level name".into(),
                        );
                        None
                    }
                };
                if let Some(level) = level {
                    if ceiling_map.insert(&key.name, (level, key.name.clone())) {
                        ceiling_first.insert(normalise_domain(&key.name), kspan.start);
                    } else {
                        let first = ceiling_first
                            .get(&normalise_domain(&key.name))
                            .map(|at| format!(", first on {}", self.place_from(*at, &kspan)))
                            .unwrap_or_default();
                        self.err(
                            kspan,
                            &path,
                            format!(
                                "`{}` listed twice (names are compared without case{first})",
                                key.name
                            ),
                            "each domain once".into(),
                        );
                    }
                }
            }
            let mut p = std::mem::take(&mut self.problems);
            ct.finish(&[], &mut p);
            self.problems = p;
        }
        Some(Domains {
            own: own_map,
            networks: nets,
            outbound_when,
            outbound_daemons,
            own_level: own_level?,
            default_ceiling: default_ceiling?,
            ceilings: ceiling_map,
        })
    }

    fn forward(&mut self, t: Option<TableReader<'a>>) -> Option<Forward> {
        let Some(mut t) = t else {
            return Some(Forward {
                threshold: 100,
                signals: Vec::new(),
            });
        };
        let mut p = std::mem::take(&mut self.problems);
        let threshold = t.int("threshold", &mut p);
        let signals = t.tables("signal", &mut p);
        let span = t.span();
        t.finish(&["threshold", "signal"], &mut p);
        self.problems = p;
        let threshold_span = threshold.as_ref().map_or(span.clone(), |t| t.span());
        let threshold = match threshold {
            None => 100,
            Some(th) if *th.get_ref() >= 1 && *th.get_ref() <= 1_000_000 => *th.get_ref() as u32,
            Some(th) => {
                self.err(
                    th.span(),
                    "forward.threshold",
                    format!("{}", th.get_ref()),
                    "a whole number from 1 to 1000000".into(),
                );
                100
            }
        };
        let mut out = Vec::new();
        let mut ids: HashMap<String, usize> = HashMap::new();
        for mut st in signals {
            let mut p = std::mem::take(&mut self.problems);
            let path = st.path().to_owned();
            let id = st.required_string("id", "a name for this signal", &mut p);
            let header = st.required_string("header", "the header that carries the signal", &mut p);
            let matches = st.string("matches", &mut p);
            let weight = st.required_int("weight", &mut p);
            st.finish(&["id", "header", "matches", "weight"], &mut p);
            self.problems = p;
            if let Some(id) = &id
                && let Some(prev) = ids.insert(id.get_ref().clone(), id.span().start)
            {
                let place = self.place_from(prev, &id.span());
                self.err(
                    id.span(),
                    &format!("{path}.id"),
                    format!("`{}` already used on {place}", id.get_ref()),
                    "a unique signal id".into(),
                );
            }
            let header = header.and_then(|h| {
                let (name, prefix) = match h.get_ref().strip_suffix('*') {
                    Some(n) => (n.to_owned(), true),
                    None => (h.get_ref().clone(), false),
                };
                let check = Spanned::new(h.span(), name.clone());
                self.check_header_name(&check, &format!("{path}.header"))
                    .then(|| (name.to_ascii_lowercase(), prefix))
            });
            let regex = matches.and_then(|m| match Regex::new(m.get_ref()) {
                Ok(r) => Some(r),
                Err(e) => {
                    self.err(
                        m.span(),
                        &format!("{path}.matches"),
                        format!(
                            "an invalid regular expression ({})",
                            first_line(&e.to_string())
                        ),
                        "a regular expression in Rust regex syntax".into(),
                    );
                    None
                }
            });
            let weight = weight.and_then(|w| {
                if (1..=1_000_000).contains(w.get_ref()) {
                    Some(*w.get_ref() as u32)
                } else {
                    self.err(
                        w.span(),
                        &format!("{path}.weight"),
                        format!("{}", w.get_ref()),
                        "a whole number from 1 to 1000000".into(),
                    );
                    None
                }
            });
            if let (Some(id), Some((header, prefix)), Some(weight)) = (id, header, weight) {
                out.push(Signal {
                    id: id.into_inner(),
                    header,
                    prefix,
                    matches: regex,
                    weight,
                });
            }
        }
        let total: u64 = out.iter().map(|s| u64::from(s.weight)).sum();
        if !out.is_empty() && total < u64::from(threshold) {
            self.err(
                threshold_span,
                "forward",
                format!("signal weights adding up to {total}"),
                format!("a threshold ({threshold}) that the signals can reach"),
            );
        }
        Some(Forward {
            threshold,
            signals: out,
        })
    }

    fn reply(
        &mut self,
        t: &mut TableReader<'a>,
        action: Option<Action>,
        path: &str,
        p: &mut Vec<Problem>,
    ) -> Option<Reply> {
        let code = t.int("code", p);
        let enhanced = t.string("enhanced", p);
        let text = t.string("text", p);
        let action = action?;
        let (default_code, default_enh, class) = match action {
            Action::Accept => {
                for (k, present) in [
                    ("code", code.is_some()),
                    ("enhanced", enhanced.is_some()),
                    ("text", text.is_some()),
                ] {
                    if present {
                        p.push(self.src.problem(
                            t.span(),
                            &format!("{path}.{k}"),
                            format!("`{k}` on an accepting rule"),
                            "no reply: accepted mail gets no SMTP text".into(),
                        ));
                    }
                }
                return None;
            }
            Action::Reject | Action::RemoveRecipients => (550, "5.7.1", 5),
            Action::Tempfail => (451, "4.7.1", 4),
            Action::Quarantine => (250, "2.0.0", 2),
        };
        let code_v = match code {
            None => default_code,
            Some(c) => {
                let v = *c.get_ref();
                let ok = match action {
                    Action::Quarantine => false,
                    _ => (i64::from(class) * 100..i64::from(class) * 100 + 100).contains(&v),
                };
                if !ok {
                    let expected = match action {
                        Action::Quarantine => "no `code`: quarantined mail is accepted".to_owned(),
                        _ => format!("a {class}xx SMTP code for `{}`", action_name(action)),
                    };
                    p.push(self.src.problem(
                        c.span(),
                        &format!("{path}.code"),
                        format!("{v}"),
                        expected,
                    ));
                }
                u16::try_from(v).unwrap_or(default_code)
            }
        };
        let enhanced_v = match enhanced {
            None => default_enh.to_owned(),
            Some(e) => {
                let parts: Vec<&str> = e.get_ref().split('.').collect();
                let ok = parts.len() == 3
                    && parts[0] == class.to_string()
                    && parts[1..].iter().all(|x| {
                        !x.is_empty() && x.len() <= 3 && x.bytes().all(|b| b.is_ascii_digit())
                    });
                if !ok {
                    p.push(self.src.problem(
                        e.span(),
                        &format!("{path}.enhanced"),
                        format!("`{}`", e.get_ref()),
                        format!(
                            "an enhanced status code of class {class}, such as `{default_enh}`"
                        ),
                    ));
                }
                e.into_inner()
            }
        };
        let text_v = match text {
            None => {
                if action != Action::Quarantine {
                    p.push(self.src.problem(
                        t.span(),
                        path,
                        "no `text`".into(),
                        "`text`: what happened and what the sender should do".into(),
                    ));
                }
                String::new()
            }
            Some(tx) => {
                if tx.get_ref().trim().is_empty() || tx.get_ref().contains(['\r', '\n']) {
                    p.push(self.src.problem(
                        tx.span(),
                        &format!("{path}.text"),
                        "an empty or multi-line text".into(),
                        "one line telling the sender what happened and what to do".into(),
                    ));
                }
                tx.into_inner()
            }
        };
        Some(Reply {
            code: code_v,
            enhanced: enhanced_v,
            text: text_v,
        })
    }

    /// An id cited in decisions and audit records: letters, digits, `-`, `_` and `.` only.
    pub(super) fn id_chars(&mut self, id: &Spanned<String>, key: &str) {
        let ok = !id.get_ref().is_empty()
            && id
                .get_ref()
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
        if !ok {
            self.err(
                id.span(),
                key,
                format!("`{}`", id.get_ref()),
                "letters, digits, `-`, `_` and `.` only".into(),
            );
        }
    }

    /// Record `id` in `ids` (id → where it was first written); a second use is an error that
    /// names the first place. True when the id was new.
    pub(super) fn id_unique(
        &mut self,
        id: &Spanned<String>,
        key: &str,
        ids: &mut HashMap<String, usize>,
        expected: &str,
    ) -> bool {
        match ids.insert(id.get_ref().clone(), id.span().start) {
            None => true,
            Some(prev) => {
                let place = self.place_from(prev, &id.span());
                self.err(
                    id.span(),
                    key,
                    format!("`{}` already used on {place}", id.get_ref()),
                    expected.into(),
                );
                false
            }
        }
    }

    fn rules(
        &mut self,
        tables: Vec<TableReader<'a>>,
        scheme: &Option<Scheme>,
        domains: Option<&Domains>,
        forward: Option<&Forward>,
    ) -> Vec<Rule> {
        let mut rules = Vec::new();
        let mut ids: HashMap<String, usize> = HashMap::new();
        let mut spans = Vec::new();
        for mut rt in tables {
            let mut p = std::mem::take(&mut self.problems);
            let path = rt.path().to_owned();
            let id = rt.required_string(
                "id",
                "a rule id that decisions and audit records cite",
                &mut p,
            );
            let when = rt.required_string("when", "the situation this rule handles", &mut p);
            let direction = rt.string("direction", &mut p);
            let min_level = rt.string("min_level", &mut p);
            let action = rt.required_string("action", "what to do", &mut p);
            let _description = rt.string("description", &mut p);
            self.problems = p;
            let action_v = action.as_ref().and_then(|a| {
                self.keyword(
                    a,
                    &format!("{path}.action"),
                    Action::NAMES,
                    Action::from_name,
                )
            });
            let mut p = std::mem::take(&mut self.problems);
            let reply = self.reply(&mut rt, action_v, &path, &mut p);
            let controls = controls::read(self.src, &mut rt, &mut p);
            let rspan = rt.span();
            rt.finish(
                &[
                    "id",
                    "when",
                    "direction",
                    "min_level",
                    "action",
                    "description",
                    "code",
                    "enhanced",
                    "text",
                    "controls",
                ],
                &mut p,
            );
            self.problems = p;

            if let Some(id) = &id {
                self.id_chars(id, &format!("{path}.id"));
                self.id_unique(id, &format!("{path}.id"), &mut ids, "a unique rule id");
            }
            let when_v = when.as_ref().and_then(|w| {
                self.keyword(
                    w,
                    &format!("{path}.when"),
                    Situation::NAMES,
                    Situation::from_name,
                )
            });
            let direction_v =
                self.directions(direction, &format!("{path}.direction"), Directions::Both);
            let min_v = min_level
                .as_ref()
                .and_then(|m| self.level_ref(m, &format!("{path}.min_level")));
            if let (Some(w), Some(m)) = (when_v, &min_level)
                && matches!(w, Situation::Unmarked | Situation::Unknown)
            {
                self.err(
                    m.span(),
                    &format!("{path}.min_level"),
                    format!("`min_level` on a `{}` rule", w.name()),
                    "no `min_level`: such mail has no level".into(),
                );
            }
            if let (Some(w), Some(a)) = (when_v, action_v)
                && a == Action::RemoveRecipients
                && !w.per_recipient()
            {
                let span = action.as_ref().map_or(rspan.clone(), |a| a.span());
                self.err(span, &format!("{path}.action"), format!("`remove-recipients` for `{}`, which concerns the whole message", w.name()), "`accept`, `reject`, `quarantine` or `tempfail` (remove-recipients is for above-ceiling and auto-forward-down)".into());
            }
            if let (Some(id), Some(when), Some(action)) = (id, when_v, action_v) {
                let line = self.line_of(&id.span());
                spans.push(rspan);
                rules.push(Rule {
                    id: id.into_inner(),
                    when,
                    direction: direction_v,
                    min_level: min_v,
                    action,
                    reply,
                    line,
                    controls,
                });
            }
        }
        self.never_fire(&rules, &spans, scheme, domains, forward);
        rules
    }

    /// Rules that can never fire, and situations no rule handles.
    fn never_fire(
        &mut self,
        rules: &[Rule],
        spans: &[Range<usize>],
        scheme: &Option<Scheme>,
        domains: Option<&Domains>,
        forward: Option<&Forward>,
    ) {
        for (i, r) in rules.iter().enumerate() {
            let span = spans[i].clone();
            let key = format!("rule `{}`", r.id);
            // Shadowed by an earlier rule for the same situation that covers every case.
            if let Some(j) = rules[..i].iter().position(|e| {
                e.when == r.when
                    && e.direction.covers(r.direction)
                    && match (e.min_level, r.min_level) {
                        (None, _) => true,
                        (Some(_), None) => false,
                        (Some(a), Some(b)) => a <= b,
                    }
            }) {
                let (earlier, place) = (&rules[j], self.place_from(spans[j].start, &span));
                self.err(span, &key, format!("a rule that can never fire: rule `{}` ({place}) handles every case it would", earlier.id), "a rule reachable for some mail (narrow the earlier rule, or remove this one)".into());
                continue;
            }
            if r.when == Situation::ForgedLabel && r.direction == Directions::Outbound {
                self.err(span, &key, "a `forged-label` rule for outbound mail".into(), "`direction = \"inbound\"` or `\"both\"` (forged labels are only checked on inbound mail)".into());
                continue;
            }
            let (Some(scheme), Some(domains)) = (scheme, domains) else {
                continue;
            };
            let lowest_ceiling = domains
                .ceilings
                .values()
                .map(|(l, _)| *l)
                .chain([domains.default_ceiling, domains.own_level])
                .min()
                .unwrap_or(0);
            match r.when {
                Situation::AboveCeiling => {
                    let top = scheme.top();
                    if lowest_ceiling >= top || r.min_level.is_some_and(|m| m > top) {
                        self.err(
                            span,
                            &key,
                            format!(
                                "an `above-ceiling` rule, but no domain has a ceiling below {}",
                                scheme.level_name(top)
                            ),
                            "a rule reachable for some mail (some ceiling below the top level)"
                                .into(),
                        );
                    }
                }
                Situation::AutoForwardDown => {
                    let outbound_only = r.direction == Directions::Outbound;
                    if outbound_only && lowest_ceiling >= domains.own_level {
                        self.err(span, &key, format!("an `auto-forward-down` rule, but no domain is rated below the own level {}", scheme.level_name(domains.own_level)), "a rule reachable for some mail (some ceiling below `domains.own_level`)".into());
                    } else if forward.is_some_and(|f| f.signals.is_empty()) {
                        self.err(
                            span,
                            &key,
                            "an `auto-forward-down` rule with no `[[forward.signal]]`".into(),
                            "at least one forward signal".into(),
                        );
                    }
                }
                _ => {}
            }
        }
        let root = 0..0;
        for s in Situation::ALL
            .into_iter()
            .filter(|s| !labels_ext::optional(*s))
        {
            if !rules.iter().any(|r| r.when == s) {
                self.warn(
                    root.clone(),
                    "rule",
                    format!("no rule for `{}`", s.name()),
                    "a rule for every situation (without one, such mail is accepted)".into(),
                );
            }
        }
    }

    fn disclaimer(&mut self, mut t: TableReader<'a>) -> Option<Disclaimer> {
        let mut p = std::mem::take(&mut self.problems);
        let enabled = t.bool("enabled", &mut p);
        let id = t.string("id", &mut p);
        let direction = t.string("direction", &mut p);
        let position = t.string("position", &mut p);
        let text = t.required_string("text", "the plain-text disclaimer", &mut p);
        let html = t.string("html", &mut p);
        let marker = t.string("marker", &mut p);
        let signed = t.string("signed", &mut p);
        let mut signed_t = t.table("signed_reply", &mut p);
        let controls = controls::read(self.src, &mut t, &mut p);
        let span = t.span();
        t.finish(
            &[
                "enabled",
                "id",
                "direction",
                "position",
                "text",
                "html",
                "marker",
                "signed",
                "signed_reply",
                "controls",
            ],
            &mut p,
        );
        self.problems = p;
        let direction = self.directions(direction, "disclaimer.direction", Directions::Outbound);
        let position = match position {
            None => Placement::Append,
            Some(pp) => match pp.get_ref().as_str() {
                "append" => Placement::Append,
                "prepend" => Placement::Prepend,
                other => {
                    self.err(
                        pp.span(),
                        "disclaimer.position",
                        format!("`{other}`"),
                        "`append` or `prepend`".into(),
                    );
                    Placement::Append
                }
            },
        };
        let signed_v = match &signed {
            None => SignedAction::Skip,
            Some(s) => match s.get_ref().as_str() {
                "skip" => SignedAction::Skip,
                "wrap" => SignedAction::Wrap,
                "reject" => SignedAction::Reject,
                other => {
                    self.err(
                        s.span(),
                        "disclaimer.signed",
                        format!("`{other}`"),
                        "`skip`, `wrap` or `reject`".into(),
                    );
                    SignedAction::Skip
                }
            },
        };
        let signed_reply = match (&mut signed_t, signed_v) {
            (Some(st), SignedAction::Reject) => {
                let mut p = std::mem::take(&mut self.problems);
                let r = self.reply(st, Some(Action::Reject), "disclaimer.signed_reply", &mut p);
                self.problems = p;
                r
            }
            (None, SignedAction::Reject) => {
                self.err(
                    span.clone(),
                    "disclaimer",
                    "`signed = \"reject\"` without `[disclaimer.signed_reply]`".into(),
                    "`[disclaimer.signed_reply]` with `text` (and optionally `code`, `enhanced`)"
                        .into(),
                );
                None
            }
            (Some(st), _) => {
                self.err(
                    st.span(),
                    "disclaimer.signed_reply",
                    "a reply for signed mail that is not rejected".into(),
                    "no `signed_reply` unless `signed = \"reject\"`".into(),
                );
                None
            }
            (None, _) => None,
        };
        if let Some(st) = signed_t {
            let mut p = std::mem::take(&mut self.problems);
            st.finish(&["code", "enhanced", "text"], &mut p);
            self.problems = p;
        }
        let text = text?;
        if text.get_ref().trim().is_empty() {
            self.err(
                text.span(),
                "disclaimer.text",
                "an empty text".into(),
                "the disclaimer's text".into(),
            );
        }
        let marker_v = match marker {
            Some(m) => {
                if m.get_ref().trim().len() < 8 {
                    self.err(
                        m.span(),
                        "disclaimer.marker",
                        format!("`{}`", m.get_ref()),
                        "at least 8 characters of text unique to the disclaimer".into(),
                    );
                } else if !text.get_ref().contains(m.get_ref().as_str()) {
                    self.err(
                        m.span(),
                        "disclaimer.marker",
                        "a marker that is not part of `text`".into(),
                        "a piece of the disclaimer text, so that a quoted disclaimer is recognised"
                            .into(),
                    );
                }
                m.into_inner()
            }
            None => text.get_ref().trim().to_owned(),
        };
        if enabled.is_some_and(|e| !e.into_inner()) {
            return None;
        }
        let html_v = html
            .map(Spanned::into_inner)
            .unwrap_or_else(|| format!("<p>{}</p>", html_escape(text.get_ref().trim())));
        Some(Disclaimer {
            id: id
                .map(Spanned::into_inner)
                .unwrap_or_else(|| "disclaimer".to_owned()),
            direction,
            position,
            text: text.into_inner(),
            html: html_v,
            marker: marker_v,
            signed: signed_v,
            signed_reply,
            controls,
        })
    }

    fn inbound(&mut self, t: Option<TableReader<'a>>) -> Inbound {
        let Some(mut t) = t else {
            return Inbound {
                labels: InboundLabels::Keep,
            };
        };
        let mut p = std::mem::take(&mut self.problems);
        let labels = t.string("labels", &mut p);
        t.finish(&["labels"], &mut p);
        self.problems = p;
        let labels = match labels {
            None => InboundLabels::Keep,
            Some(l) => match l.get_ref().as_str() {
                "keep" => InboundLabels::Keep,
                "strip-forged" => InboundLabels::StripForged,
                "strip-all" => InboundLabels::StripAll,
                other => {
                    self.err(
                        l.span(),
                        "inbound.labels",
                        format!("`{other}`"),
                        "`keep`, `strip-forged` or `strip-all`".into(),
                    );
                    InboundLabels::Keep
                }
            },
        };
        Inbound { labels }
    }
}

impl<'a> TableReader<'a> {
    fn required_int(&mut self, key: &str, problems: &mut Vec<Problem>) -> Option<Spanned<i64>> {
        if self.has(key) {
            self.int(key, problems)
        } else {
            self.missing(key, "a whole number", problems);
            None
        }
    }
}

/// The header markgate adds in shadow mode when the policy names none.
pub const DEFAULT_SHADOW_HEADER: &str = "X-Markgate-Shadow";

fn action_name(a: Action) -> &'static str {
    match a {
        Action::Accept => "accept",
        Action::Reject => "reject",
        Action::RemoveRecipients => "remove-recipients",
        Action::Quarantine => "quarantine",
        Action::Tempfail => "tempfail",
    }
}

fn first_line(s: &str) -> String {
    s.lines()
        .rfind(|l| !l.trim().is_empty())
        .unwrap_or("")
        .trim()
        .to_owned()
}

pub(crate) fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
