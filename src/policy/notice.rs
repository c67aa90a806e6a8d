//! The marking on markgate's own sender notices (the mail telling a sender that some
//! recipients were removed, `filter/notices.rs`).
//!
//! A notice is sent from the null sender and usually passes back through the same gateway, so
//! under a scheme where every outbound message must be marked (AU EPMS: `EPMS-UNMARKED`) an
//! unmarked notice would itself be refused. The notice is therefore marked in the policy's own
//! scheme, in the subject form the policy writes (or reads):
//! - at `[notice] marking` (default: the scheme's lowest level), the notice's own content
//!   being only the rule's text and the recipients the sender chose;
//! - but never below the message it is about, because it quotes that message's subject: then
//!   it carries that message's marking (with its qualifiers when markgate wrote one).
//!
//! Pure: builds a subject line; the filter sends the notice. Must not: exempt the null sender
//! from policy (Postfix's own bounces also come from `<>`).
//!
//! Keys: `[notice]` in markgate-policy(5); compiled in `compile/notice.rs`.

use super::Policy;
use super::decide::Decision;
use super::model::SubjectForm;

/// A notice's subject before its marking.
pub const SUBJECT: &str = "Some recipients of your message were removed (security policy)";

/// `[notice]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoticePolicy {
    /// The lowest level a notice is marked at (`marking`, default the scheme's lowest).
    pub level: usize,
}

/// The subject of a sender notice about the message `d` was decided for: `text` marked as
/// this module's doc says. `text` unchanged when the policy has no subject form at all.
pub fn subject(policy: &Policy, d: &Decision, text: &str) -> String {
    let Some(form) = policy
        .write
        .subject
        .or_else(|| policy.read.subject_forms.first().copied())
    else {
        return text.to_owned();
    };
    let floor = policy.notice.level;
    let marking = match &d.labels.subject {
        // The message's own canonical marking, qualifiers and all, in the form written.
        Some(s) if d.effective.level >= floor && s.form == form => s.marking.clone(),
        _ => bare(policy, form, d.effective.level.max(floor)),
    };
    place(form, &marking, text)
}

/// A level alone, in the subject form's spelling.
fn bare(policy: &Policy, form: SubjectForm, level: usize) -> String {
    let name = policy.scheme.level_name(level);
    match form {
        SubjectForm::SecSuffix => format!("[SEC={name}]"),
        SubjectForm::Prefix | SubjectForm::Bracketed => name.to_owned(),
    }
}

/// `marking` placed on `text` the way the subject writer places it.
fn place(form: SubjectForm, marking: &str, text: &str) -> String {
    match form {
        SubjectForm::Prefix => format!("{marking}: {text}"),
        SubjectForm::Bracketed => format!("[{marking}] {text}"),
        SubjectForm::SecSuffix => format!("{text} {marking}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::facts::{Envelope, Facts};

    /// A shipped policy, with its `[notice]` table taken out when `keep_notice` is false.
    fn policy(file: &str, keep_notice: bool) -> Policy {
        let path = format!("{}/policies/{file}", env!("CARGO_MANIFEST_DIR"));
        let mut text = std::fs::read_to_string(&path).expect("shipped policy");
        if !keep_notice {
            let at = text.find("\n[notice]\n").expect("a [notice] table");
            let end = text[at + 1..]
                .find("\n\n")
                .map_or(text.len(), |e| at + 1 + e);
            text.replace_range(at..end, "");
        }
        match Policy::from_str(file, &text) {
            Ok(p) => p,
            Err(e) => panic!("{e}"),
        }
    }

    fn decided(p: &Policy, subject: &str, own: &str) -> Decision {
        let headers: Vec<(&[u8], &[u8])> = vec![(b"Subject", subject.as_bytes())];
        let facts: Facts = crate::inspect::markings::header_facts(p, &headers);
        let env = Envelope {
            sender: format!("a@{own}"),
            recipients: vec![format!("b@{own}")],
            client_ip: "127.0.0.1".parse().ok(),
            ..Envelope::default()
        };
        crate::policy::decide(p, &facts, &env)
    }

    #[test]
    fn epms_notice_is_official_by_the_shipped_key() {
        let p = policy("au-epms.toml", true);
        let d = decided(&p, "lunch", "agency.gov.au");
        assert_eq!(subject(&p, &d, "Removed"), "Removed [SEC=OFFICIAL]");
    }

    #[test]
    fn without_the_key_the_lowest_level() {
        let p = policy("au-epms.toml", false);
        let d = decided(&p, "lunch", "agency.gov.au");
        assert_eq!(subject(&p, &d, "Removed"), "Removed [SEC=UNOFFICIAL]");
    }

    #[test]
    fn never_below_the_message_it_quotes() {
        let p = policy("au-epms.toml", true);
        let d = decided(
            &p,
            "budget [SEC=PROTECTED, CAVEAT=RI:AUSTEO]",
            "agency.gov.au",
        );
        assert_eq!(
            subject(&p, &d, "Removed"),
            "Removed [SEC=PROTECTED, CAVEAT=RI:AUSTEO]"
        );
        // Below the notice's own level: the notice's level.
        let d = decided(&p, "lunch [SEC=UNOFFICIAL]", "agency.gov.au");
        assert_eq!(subject(&p, &d, "Removed"), "Removed [SEC=OFFICIAL]");
    }

    #[test]
    fn uk_prefix_form() {
        let p = policy("uk-gsc.toml", true);
        let own = "example-department.gov.uk";
        let d = decided(&p, "lunch", own);
        assert_eq!(subject(&p, &d, "Removed"), "OFFICIAL: Removed");
        let d = decided(&p, "OFFICIAL-SENSITIVE: pay", own);
        assert_eq!(subject(&p, &d, "Removed"), "OFFICIAL-SENSITIVE: Removed");
        let p = policy("uk-gpms.toml", true);
        let d = decided(&p, "RESTRICTED: plans", "example-council.gcsx.gov.uk");
        assert_eq!(subject(&p, &d, "Removed"), "RESTRICTED: Removed");
    }

    #[test]
    fn a_level_not_in_the_scheme_is_reported_where_it_is() {
        let path = format!("{}/policies/au-epms.toml", env!("CARGO_MANIFEST_DIR"));
        let text = std::fs::read_to_string(&path).expect("shipped policy");
        let text = text.replacen(
            "[notice]\nmarking = \"OFFICIAL\"",
            "[notice]\nmarking = \"RESTRICTED\"",
            1,
        );
        let line = 1 + text[..text.find("marking = \"RESTRICTED\"").unwrap()]
            .matches('\n')
            .count();
        let e = Policy::from_str("p.toml", &text).unwrap_err().to_string();
        assert!(e.contains(&format!("p.toml:{line}:11")), "{e}");
        assert!(e.contains("notice.marking"), "{e}");
        assert!(e.contains("unknown level `RESTRICTED`"), "{e}");
        assert!(e.contains("`OFFICIAL:Sensitive`"), "{e}");
        let text = text.replacen("marking = \"RESTRICTED\"", "level = \"OFFICIAL\"", 1);
        let e = Policy::from_str("p.toml", &text).unwrap_err().to_string();
        assert!(e.contains("unknown key `level`"), "{e}");
    }
}
