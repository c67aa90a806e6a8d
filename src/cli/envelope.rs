//! The envelope `markgate policy test` decides each message under: the one given on the command
//! line (`--from`, `--rcpt`, …), or, when `--from` and `--rcpt` are both left out, one read from
//! each message's own headers, so a thread whose messages went different ways (a message that
//! came in, then the reply that goes out) can be dry-run in one call.
//!
//! From the headers: the sender is `Return-Path` (`<>` is the null sender), else the first
//! `From` address; the recipients are every `To`, `Cc` and `Bcc` address. The direction is what
//! a security officer reads off the message: outbound when the sender's domain is one of the
//! policy's own domains, inbound otherwise. It is given to the policy the way the daemon would
//! see it (a client address in `[domains] networks`, or the authenticated sender, or the
//! submission daemon name, whichever the policy's `outbound_when` accepts first; inbound: a
//! documentation address outside the networks), unless `--client-ip`, `--auth` or
//! `--daemon-name` says otherwise.
//!
//! Must not: decide anything; it only builds [`Envelope`]s.

use std::net::IpAddr;

use crate::policy::model::OutboundWhen;
use crate::policy::{Envelope, Policy};

/// Where each message's envelope comes from.
#[derive(Debug, Clone)]
pub(crate) enum Envelopes {
    /// The same envelope for every message (`--from` and `--rcpt` given).
    Given(Envelope),
    /// Read per message from its headers; the connection facts given on the command line
    /// (`--client-ip`, `--auth`, `--daemon-name`), if any, apply to every message.
    FromHeaders {
        client_ip: Option<IpAddr>,
        auth_user: Option<String>,
        daemon_name: Option<String>,
    },
}

impl Envelopes {
    /// The envelope for one message, and for a header-read one a line saying what was read.
    pub(crate) fn for_message(&self, policy: &Policy, raw: &[u8]) -> (Envelope, Option<String>) {
        match self {
            Envelopes::Given(e) => (e.clone(), None),
            Envelopes::FromHeaders {
                client_ip,
                auth_user,
                daemon_name,
            } => {
                let (sender, recipients) = addresses(raw);
                let mut env = Envelope {
                    sender,
                    recipients,
                    client_ip: *client_ip,
                    auth_user: auth_user.clone(),
                    daemon_name: daemon_name.clone(),
                    next_hops: Vec::new(),
                };
                let given = client_ip.is_some() || auth_user.is_some() || daemon_name.is_some();
                let way = if given {
                    "the direction from the command line's connection facts"
                } else if own_sender(policy, &env.sender) {
                    as_outbound(policy, &mut env);
                    "outbound: the sender's domain is one of the policy's own"
                } else {
                    env.client_ip = outside(policy);
                    "inbound: the sender's domain is not one of the policy's own"
                };
                let line = format!(
                    "envelope (from the message's headers): from <{}> to {}; {way}",
                    env.sender,
                    if env.recipients.is_empty() {
                        "nobody (no To, Cc or Bcc)".to_owned()
                    } else {
                        env.recipients
                            .iter()
                            .map(|r| format!("<{r}>"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    }
                );
                (env, Some(line))
            }
        }
    }
}

/// The sender (Return-Path, else From) and the To/Cc/Bcc addresses, in order, deduplicated.
fn addresses(raw: &[u8]) -> (String, Vec<String>) {
    let Some(msg) = mail_parser::MessageParser::new().parse_headers(raw) else {
        return (String::new(), Vec::new());
    };
    let first = |a: &mail_parser::Address| a.first().and_then(|a| a.address()).map(str::to_owned);
    let sender = match msg.header("Return-Path") {
        // Present: it is the envelope sender, `<>` (nothing in it) being the null sender.
        Some(v) => v
            .as_address()
            .and_then(first)
            .or_else(|| {
                v.as_text()
                    .map(|t| t.trim().trim_matches(['<', '>']).to_owned())
            })
            .unwrap_or_default(),
        None => msg.from().and_then(first).unwrap_or_default(),
    };
    let mut recipients: Vec<String> = Vec::new();
    for list in [msg.to(), msg.cc(), msg.bcc()].into_iter().flatten() {
        for a in list.iter().filter_map(|a| a.address()) {
            if !recipients.iter().any(|r| r.eq_ignore_ascii_case(a)) {
                recipients.push(a.to_owned());
            }
        }
    }
    (sender, recipients)
}

fn own_sender(policy: &Policy, sender: &str) -> bool {
    sender
        .rsplit_once('@')
        .is_some_and(|(_, d)| !d.is_empty() && policy.domains.is_own(d))
}

/// Make `env` look outbound the first way the policy's `outbound_when` accepts.
fn as_outbound(policy: &Policy, env: &mut Envelope) {
    for w in &policy.domains.outbound_when {
        match w {
            OutboundWhen::Network => {
                if let Some(n) = policy.domains.networks.first() {
                    env.client_ip = Some(n.first_host());
                    return;
                }
            }
            OutboundWhen::Authenticated => {
                env.auth_user = Some(env.sender.clone());
                return;
            }
            OutboundWhen::Daemon => {
                if let Some(d) = policy.domains.outbound_daemons.first() {
                    env.daemon_name = Some(d.clone());
                    return;
                }
            }
            // The sender is own already.
            OutboundWhen::SenderDomain => return,
        }
    }
}

/// A documentation address (RFC 5737, RFC 3849) outside the policy's networks.
fn outside(policy: &Policy) -> Option<IpAddr> {
    ["192.0.2.1", "198.51.100.1", "203.0.113.1", "2001:db8::1"]
        .iter()
        .filter_map(|a| a.parse::<IpAddr>().ok())
        .find(|ip| !policy.domains.networks.iter().any(|n| n.contains(*ip)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> Policy {
        Policy::builtin().expect("built-in policy")
    }

    const FROM_PARTNER: &[u8] = b"Return-Path: <bob@partner.gcsx.gov.uk>\r\nFrom: Bob <bob@partner.gcsx.gov.uk>\r\nTo: Alice <alice@example-council.gcsx.gov.uk>\r\nCc: carol@example-council.gcsx.gov.uk, ALICE@example-council.gcsx.gov.uk\r\nSubject: x\r\n\r\nbody\r\n";
    const FROM_US: &[u8] = b"From: alice@example-council.gcsx.gov.uk\r\nTo: someone@example.com\r\nBcc: boss@example-council.gcsx.gov.uk\r\nSubject: x\r\n\r\nbody\r\n";

    fn headers() -> Envelopes {
        Envelopes::FromHeaders {
            client_ip: None,
            auth_user: None,
            daemon_name: None,
        }
    }

    #[test]
    fn an_outside_sender_is_inbound() {
        let p = policy();
        let (env, line) = headers().for_message(&p, FROM_PARTNER);
        assert_eq!(env.sender, "bob@partner.gcsx.gov.uk");
        assert_eq!(
            env.recipients,
            vec![
                "alice@example-council.gcsx.gov.uk",
                "carol@example-council.gcsx.gov.uk"
            ]
        );
        let d = crate::policy::decide(&p, &crate::policy::Facts::default(), &env);
        assert_eq!(d.direction, crate::policy::decide::Direction::Inbound);
        assert!(line.unwrap().contains("inbound"));
    }

    #[test]
    fn an_own_sender_is_outbound_as_the_daemon_would_see_it() {
        let p = policy();
        let (env, line) = headers().for_message(&p, FROM_US);
        assert_eq!(env.sender, "alice@example-council.gcsx.gov.uk");
        assert_eq!(
            env.recipients,
            vec!["someone@example.com", "boss@example-council.gcsx.gov.uk"]
        );
        let d = crate::policy::decide(&p, &crate::policy::Facts::default(), &env);
        assert_eq!(d.direction, crate::policy::decide::Direction::Outbound);
        assert!(line.unwrap().contains("outbound"));
    }

    #[test]
    fn the_null_return_path_and_given_connection_facts() {
        let p = policy();
        let raw = b"Return-Path: <>\r\nFrom: MAILER-DAEMON@example-council.gcsx.gov.uk\r\nTo: a@example.com\r\n\r\nx\r\n";
        let e = Envelopes::FromHeaders {
            client_ip: "192.0.2.7".parse().ok(),
            auth_user: None,
            daemon_name: None,
        };
        let (env, _) = e.for_message(&p, raw);
        assert_eq!(env.sender, "");
        assert_eq!(env.client_ip, "192.0.2.7".parse().ok());
        let d = crate::policy::decide(&p, &crate::policy::Facts::default(), &env);
        assert_eq!(d.direction, crate::policy::decide::Direction::Inbound);
    }
}
