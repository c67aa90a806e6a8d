//! Sample messages several integration tests send, as swaks arguments, so a scenario told in
//! two places (the enforcement dialogs, the evidence report) is the same message.

/// The council's user whose mailbox rule forwards mail out.
pub const COUNCIL: &str = "alice.smith@example-council.gcsx.gov.uk";

/// A RESTRICTED message that Exchange's Inbox Rules agent auto-forwards from the council to a
/// private internet mailbox: the swaks arguments after `--from COUNCIL`.
pub const EXCHANGE_AUTO_FORWARD: &[&str] = &[
    "--to",
    "bob.private@mailbox.example.com",
    "--header",
    "Subject: FW: RESTRICTED: Safeguarding referral 4471",
    "--header",
    "X-MS-Exchange-Inbox-Rules-Loop: alice.smith@example-council.gcsx.gov.uk",
    "--header",
    "X-MS-Exchange-Generated-Message-Source: Mailbox Rules Agent",
    "--header",
    "Auto-Submitted: auto-forwarded",
    "--body",
    "Referral details follow.",
];

/// `--from COUNCIL` followed by `rest`.
pub fn from_council<'a>(rest: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec!["--from", COUNCIL];
    args.extend_from_slice(rest);
    args
}
