//! The scenario folders of `tests/enforce/` (`in.eml`, `case.toml`, `out.eml`), shared by the
//! MTA end-to-end suites: `tests/enforce_scenarios.rs` sends them through Postfix,
//! `tests/sendmail.rs` through Sendmail, and both compare with the same `out.eml`.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::postfix::{Delivered, SwaksResult, crlf_to_lf};

/// `case.toml`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Case {
    pub from: String,
    pub to: Vec<String>,
    /// SMTP client address (faked with XCLIENT); default 127.0.0.1, inside the policy's
    /// networks, so outbound.
    pub client: Option<String>,
    /// A policy file in `tests/enforce/policies/`; default the shipped `policies/uk-gpms.toml`.
    pub policy: Option<String>,
    /// `deliver` or `reject` (the SMTP reply to DATA is 5xx).
    pub expect: String,
    /// Fragments the reply to DATA must contain.
    #[serde(default)]
    pub reply: Vec<String>,
}

pub struct Scenario {
    pub name: String,
    pub dir: PathBuf,
    pub case: Case,
    pub input: Vec<u8>,
}

pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/enforce")
}

pub fn scenarios() -> Vec<Scenario> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(root()).expect("tests/enforce") {
        let dir = entry.expect("entry").path();
        let case_file = dir.join("case.toml");
        if !case_file.exists() {
            continue;
        }
        let name = dir.file_name().unwrap().to_string_lossy().into_owned();
        let text = std::fs::read_to_string(&case_file).expect("case.toml");
        let case: Case =
            toml::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", case_file.display()));
        let input = std::fs::read(dir.join("in.eml")).expect("in.eml");
        out.push(Scenario {
            name,
            dir,
            case,
            input,
        });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

pub fn policy_path(case: &Case) -> PathBuf {
    match &case.policy {
        Some(p) => root().join("policies").join(p),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("policies/uk-gpms.toml"),
    }
}

/// What Postfix hands the milter: the message with CRLF line ends.
pub fn as_postfix_sends(input: &[u8]) -> Vec<u8> {
    let lf = crlf_to_lf(input);
    let mut out = Vec::with_capacity(lf.len() + lf.len() / 20);
    for &b in &lf {
        if b == b'\n' {
            out.push(b'\r');
        }
        out.push(b);
    }
    out
}

pub fn message_id(input: &[u8]) -> String {
    let text = String::from_utf8_lossy(input);
    text.lines()
        .find_map(|l| l.strip_prefix("Message-ID: "))
        .expect("every in.eml has a Message-ID")
        .trim()
        .to_owned()
}

/// The server's answer to the end of the message data: the last reply before QUIT's 221
/// (all its lines joined with `\n`).
pub fn end_of_data_reply(r: &SwaksResult) -> String {
    let replies = r.replies();
    let end = replies
        .iter()
        .rposition(|l| l.starts_with("221"))
        .unwrap_or(replies.len());
    let mut lines: Vec<&str> = Vec::new();
    for l in replies[..end].iter().rev() {
        // Lines of one multi-line reply: `550-…` continuations before the final `550 …`.
        if lines.is_empty() || l.as_bytes().get(3) == Some(&b'-') {
            lines.push(l);
        } else {
            break;
        }
    }
    lines.reverse();
    lines.join("\n")
}

/// The delivered message without the MTA's own Received header (the first header, with its
/// continuation lines: queue id, host and date vary per run).
pub fn normalise(d: &Delivered) -> Vec<u8> {
    let m = &d.message;
    assert!(m.starts_with(b"Received: "), "no MTA Received first");
    let mut pos = 0;
    loop {
        let end = m[pos..]
            .iter()
            .position(|&b| b == b'\n')
            .map_or(m.len(), |i| pos + i + 1);
        pos = end;
        if !matches!(m.get(pos), Some(b' ' | b'\t')) {
            break;
        }
    }
    m[pos..].to_vec()
}

impl Scenario {
    /// The envelope the scenario is sent with (client 127.0.0.1 unless `case.client` says).
    pub fn envelope(&self) -> markgate::policy::Envelope {
        let client = self.case.client.as_deref().unwrap_or("127.0.0.1");
        markgate::policy::Envelope {
            sender: self.case.from.clone(),
            recipients: self.case.to.clone(),
            client_ip: Some(client.parse().expect("client ip")),
            ..Default::default()
        }
    }

    /// The recipients that must receive the message (all but `removed`), sorted.
    pub fn kept_recipients(&self, removed: &[&str]) -> Vec<String> {
        let mut want: Vec<String> = self
            .case
            .to
            .iter()
            .filter(|t| !removed.contains(&t.as_str()))
            .cloned()
            .collect();
        want.sort();
        want
    }

    /// The reply to DATA holds every fragment `case.toml` lists.
    pub fn check_reply(&self, data_reply: &str, problems: &mut Vec<String>) {
        for frag in &self.case.reply {
            if !data_reply.contains(frag.as_str()) {
                problems.push(format!("reply to DATA {data_reply:?} lacks {frag:?}"));
            }
        }
    }
}

/// The notice to the sender (`text`: its message as the harness reads it) names every removed
/// recipient and comes from the null sender.
pub fn check_notice(text: &str, notice: &Delivered, removed: &[&str], problems: &mut Vec<String>) {
    for r in removed {
        if !text.contains(r) {
            problems.push(format!("the notice does not name {r}"));
        }
    }
    if !notice.mail_args.starts_with("<>") {
        problems.push(format!("notice not from <>: {}", notice.mail_args));
    }
}
