//! Option negotiation: SMFIF_* action bits, SMFIP_* protocol bits, and the arithmetic that
//! turns what the MTA offered into what we answer.
//!
//! Owns the rule "never answer more than was offered" (protocol notes §5.3, pitfall 10):
//! Postfix fails the milter on extra action bits or a higher version, Sendmail also on extra
//! protocol bits. Pure; no I/O. The macro lists we ask for live here too because they ride in
//! the OPTNEG answer.

use std::fmt;

/// Lowest protocol version we speak (libmilter refuses MTAs below 2 as well).
pub const MIN_VERSION: u32 = 2;
/// Highest protocol version we speak.
pub const MAX_VERSION: u32 = 6;

/// Action bits (what the milter may do at end-of-message).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub struct Actions(pub u32);

impl Actions {
    /// SMFIF_ADDHDRS: add or insert headers.
    pub const ADDHDRS: Actions = Actions(0x001);
    /// SMFIF_CHGBODY: replace the body.
    pub const CHGBODY: Actions = Actions(0x002);
    /// SMFIF_ADDRCPT: add recipients.
    pub const ADDRCPT: Actions = Actions(0x004);
    /// SMFIF_DELRCPT: delete recipients.
    pub const DELRCPT: Actions = Actions(0x008);
    /// SMFIF_CHGHDRS: change or delete headers.
    pub const CHGHDRS: Actions = Actions(0x010);
    /// SMFIF_QUARANTINE: put the message on hold.
    pub const QUARANTINE: Actions = Actions(0x020);
    /// SMFIF_CHGFROM: change the envelope sender.
    pub const CHGFROM: Actions = Actions(0x040);
    /// SMFIF_ADDRCPT_PAR: add recipients with ESMTP arguments.
    pub const ADDRCPT_PAR: Actions = Actions(0x080);
    /// SMFIF_SETSYMLIST: the milter may send macro lists in its OPTNEG answer.
    pub const SETSYMLIST: Actions = Actions(0x100);
    /// SMFI_V1_ACTS: what an MTA offering 0 is assumed to allow (libmilter rule).
    pub const V1: Actions = Actions(0x0f);
    /// SMFI_CURR_ACTS: every action bit defined by protocol version 6.
    pub const ALL: Actions = Actions(0x1ff);

    const NAMES: [(u32, &'static str); 9] = [
        (0x001, "SMFIF_ADDHDRS"),
        (0x002, "SMFIF_CHGBODY"),
        (0x004, "SMFIF_ADDRCPT"),
        (0x008, "SMFIF_DELRCPT"),
        (0x010, "SMFIF_CHGHDRS"),
        (0x020, "SMFIF_QUARANTINE"),
        (0x040, "SMFIF_CHGFROM"),
        (0x080, "SMFIF_ADDRCPT_PAR"),
        (0x100, "SMFIF_SETSYMLIST"),
    ];

    /// Every bit of `other` is set in `self`.
    pub fn contains(self, other: Actions) -> bool {
        self.0 & other.0 == other.0
    }
    /// Bits set in both.
    pub fn intersect(self, other: Actions) -> Actions {
        Actions(self.0 & other.0)
    }
    /// Bits set in either.
    pub fn union(self, other: Actions) -> Actions {
        Actions(self.0 | other.0)
    }
    /// Bits in `self` but not in `other`.
    pub fn without(self, other: Actions) -> Actions {
        Actions(self.0 & !other.0)
    }
}

impl fmt::Display for Actions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_names(f, self.0, &Actions::NAMES)
    }
}

/// Protocol bits (which events the MTA skips or expects no reply to, plus feature bits).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub struct Protocol(pub u32);

impl Protocol {
    /// The NR_* bit by which a milter opts out of answering `command`, for the commands that
    /// have one (both sides of the wire ask this: the session and the MTA client).
    pub fn no_reply_bit(command: u8) -> Option<Protocol> {
        Some(match command {
            b'C' => Protocol::NR_CONN,
            b'H' => Protocol::NR_HELO,
            b'M' => Protocol::NR_MAIL,
            b'R' => Protocol::NR_RCPT,
            b'T' => Protocol::NR_DATA,
            b'U' => Protocol::NR_UNKN,
            b'L' => Protocol::NR_HDR,
            b'N' => Protocol::NR_EOH,
            b'B' => Protocol::NR_BODY,
            _ => return None,
        })
    }

    /// SMFIP_NOCONNECT
    pub const NOCONNECT: Protocol = Protocol(0x01);
    /// SMFIP_NOHELO
    pub const NOHELO: Protocol = Protocol(0x02);
    /// SMFIP_NOMAIL
    pub const NOMAIL: Protocol = Protocol(0x04);
    /// SMFIP_NORCPT
    pub const NORCPT: Protocol = Protocol(0x08);
    /// SMFIP_NOBODY
    pub const NOBODY: Protocol = Protocol(0x10);
    /// SMFIP_NOHDRS
    pub const NOHDRS: Protocol = Protocol(0x20);
    /// SMFIP_NOEOH
    pub const NOEOH: Protocol = Protocol(0x40);
    /// SMFIP_NR_HDR (also SMFIP_NOHREPL): no reply to HEADER.
    pub const NR_HDR: Protocol = Protocol(0x80);
    /// SMFIP_NOUNKNOWN
    pub const NOUNKNOWN: Protocol = Protocol(0x100);
    /// SMFIP_NODATA
    pub const NODATA: Protocol = Protocol(0x200);
    /// SMFIP_SKIP: the MTA understands SMFIR_SKIP.
    pub const SKIP: Protocol = Protocol(0x400);
    /// SMFIP_RCPT_REJ: also send rejected recipients.
    pub const RCPT_REJ: Protocol = Protocol(0x800);
    /// SMFIP_NR_CONN
    pub const NR_CONN: Protocol = Protocol(0x1000);
    /// SMFIP_NR_HELO
    pub const NR_HELO: Protocol = Protocol(0x2000);
    /// SMFIP_NR_MAIL
    pub const NR_MAIL: Protocol = Protocol(0x4000);
    /// SMFIP_NR_RCPT
    pub const NR_RCPT: Protocol = Protocol(0x8000);
    /// SMFIP_NR_DATA
    pub const NR_DATA: Protocol = Protocol(0x10000);
    /// SMFIP_NR_UNKN
    pub const NR_UNKN: Protocol = Protocol(0x20000);
    /// SMFIP_NR_EOH
    pub const NR_EOH: Protocol = Protocol(0x40000);
    /// SMFIP_NR_BODY
    pub const NR_BODY: Protocol = Protocol(0x80000);
    /// SMFIP_HDR_LEADSPC: header values carry their leading space, both directions.
    pub const HDR_LEADSPC: Protocol = Protocol(0x100000);
    /// SMFIP_MDS_256K (Sendmail only)
    pub const MDS_256K: Protocol = Protocol(0x1000_0000);
    /// SMFIP_MDS_1M (Sendmail only)
    pub const MDS_1M: Protocol = Protocol(0x2000_0000);
    /// SMFI_V1_PROT: what an MTA offering 0 is assumed to allow (libmilter rule).
    pub const V1: Protocol = Protocol(0x3f);
    /// SMFI_CURR_PROT: every protocol bit defined by version 6.
    pub const ALL: Protocol = Protocol(0x1fffff);

    const NAMES: [(u32, &'static str); 23] = [
        (0x01, "SMFIP_NOCONNECT"),
        (0x02, "SMFIP_NOHELO"),
        (0x04, "SMFIP_NOMAIL"),
        (0x08, "SMFIP_NORCPT"),
        (0x10, "SMFIP_NOBODY"),
        (0x20, "SMFIP_NOHDRS"),
        (0x40, "SMFIP_NOEOH"),
        (0x80, "SMFIP_NR_HDR"),
        (0x100, "SMFIP_NOUNKNOWN"),
        (0x200, "SMFIP_NODATA"),
        (0x400, "SMFIP_SKIP"),
        (0x800, "SMFIP_RCPT_REJ"),
        (0x1000, "SMFIP_NR_CONN"),
        (0x2000, "SMFIP_NR_HELO"),
        (0x4000, "SMFIP_NR_MAIL"),
        (0x8000, "SMFIP_NR_RCPT"),
        (0x10000, "SMFIP_NR_DATA"),
        (0x20000, "SMFIP_NR_UNKN"),
        (0x40000, "SMFIP_NR_EOH"),
        (0x80000, "SMFIP_NR_BODY"),
        (0x100000, "SMFIP_HDR_LEADSPC"),
        (0x1000_0000, "SMFIP_MDS_256K"),
        (0x2000_0000, "SMFIP_MDS_1M"),
    ];

    /// Every bit of `other` is set in `self`.
    pub fn contains(self, other: Protocol) -> bool {
        self.0 & other.0 == other.0
    }
    /// Bits set in both.
    pub fn intersect(self, other: Protocol) -> Protocol {
        Protocol(self.0 & other.0)
    }
    /// Bits set in either.
    pub fn union(self, other: Protocol) -> Protocol {
        Protocol(self.0 | other.0)
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_names(f, self.0, &Protocol::NAMES)
    }
}

fn write_names(f: &mut fmt::Formatter<'_>, bits: u32, names: &[(u32, &str)]) -> fmt::Result {
    write!(f, "0x{bits:x}")?;
    let mut sep = " (";
    let mut known = 0;
    for (bit, name) in names {
        if bits & bit != 0 {
            write!(f, "{sep}{name}")?;
            sep = "|";
            known |= bit;
        }
    }
    if bits & !known != 0 {
        write!(f, "{sep}0x{:x}", bits & !known)?;
        sep = "|";
    }
    if sep == "|" {
        write!(f, ")")?;
    }
    Ok(())
}

/// Macro stage ids used in the OPTNEG macro lists (SMFIM_*). Note EOM (5) < EOH (6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum MacroStage {
    /// SMFIM_CONNECT
    Connect = 0,
    /// SMFIM_HELO
    Helo = 1,
    /// SMFIM_ENVFROM
    EnvFrom = 2,
    /// SMFIM_ENVRCPT
    EnvRcpt = 3,
    /// SMFIM_DATA
    Data = 4,
    /// SMFIM_EOM
    Eom = 5,
    /// SMFIM_EOH
    Eoh = 6,
}

impl MacroStage {
    /// The stage for a wire id.
    pub fn from_u32(v: u32) -> Option<MacroStage> {
        Some(match v {
            0 => MacroStage::Connect,
            1 => MacroStage::Helo,
            2 => MacroStage::EnvFrom,
            3 => MacroStage::EnvRcpt,
            4 => MacroStage::Data,
            5 => MacroStage::Eom,
            6 => MacroStage::Eoh,
            _ => return None,
        })
    }
}

/// The macro lists markgate asks for: what the policy layer and the audit log use.
pub const REQUESTED_MACROS: [(MacroStage, &str); 4] = [
    (
        MacroStage::Connect,
        "j {daemon_name} {daemon_addr} {client_addr} {client_name} {client_port} _",
    ),
    (
        MacroStage::EnvFrom,
        "i {auth_type} {auth_authen} {auth_author} {mail_addr} {mail_host} {mail_mailer}",
    ),
    (
        MacroStage::EnvRcpt,
        "i {rcpt_addr} {rcpt_host} {rcpt_mailer}",
    ),
    (MacroStage::Eom, "i {daemon_name}"),
];

/// What markgate wants from the MTA, before intersecting with the offer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wants {
    /// Actions we may need at end-of-message.
    pub actions: Actions,
    /// Protocol bits we would like (NR_*, NO* for steps we do not need, features).
    pub protocol: Protocol,
    /// Macro lists to request (sent only when the MTA offers SETSYMLIST).
    pub macros: Vec<(MacroStage, String)>,
}

impl Default for Wants {
    /// markgate decides only at end-of-message, so: every modification the handler contract
    /// can express, no reply to any event before EOM (saves a round trip per event), no DATA or
    /// UNKNOWN events (unused), exact header spacing. CONNECT, HELO, MAIL, RCPT, headers, EOH,
    /// body and EOM stay on.
    fn default() -> Self {
        Wants {
            actions: Actions(
                Actions::ADDHDRS.0
                    | Actions::CHGBODY.0
                    | Actions::ADDRCPT.0
                    | Actions::DELRCPT.0
                    | Actions::CHGHDRS.0
                    | Actions::QUARANTINE.0
                    | Actions::CHGFROM.0
                    | Actions::ADDRCPT_PAR.0,
            ),
            protocol: Protocol(
                Protocol::NR_CONN.0
                    | Protocol::NR_HELO.0
                    | Protocol::NR_MAIL.0
                    | Protocol::NR_RCPT.0
                    | Protocol::NR_DATA.0
                    | Protocol::NR_UNKN.0
                    | Protocol::NR_HDR.0
                    | Protocol::NR_EOH.0
                    | Protocol::NR_BODY.0
                    | Protocol::NODATA.0
                    | Protocol::NOUNKNOWN.0
                    | Protocol::HDR_LEADSPC.0,
            ),
            macros: REQUESTED_MACROS
                .iter()
                .map(|(s, l)| (*s, (*l).to_string()))
                .collect(),
        }
    }
}

/// The MTA's OPTNEG offer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Offer {
    pub version: u32,
    pub actions: Actions,
    pub protocol: Protocol,
}

/// What both sides agreed; the session uses only these features.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Negotiated {
    pub version: u32,
    pub actions: Actions,
    pub protocol: Protocol,
    /// Macro lists sent in the answer (empty unless SETSYMLIST was offered).
    pub macros: Vec<(MacroStage, String)>,
}

impl Negotiated {
    /// The MTA expects no reply to this command code.
    pub fn no_reply(&self, command: u8) -> bool {
        Protocol::no_reply_bit(command).is_some_and(|bit| self.protocol.contains(bit))
    }

    /// Header values carry their leading space (both directions).
    pub fn leading_space(&self) -> bool {
        self.protocol.contains(Protocol::HDR_LEADSPC)
    }
}

/// Why we refuse an MTA's offer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NegotiateError {
    #[error("MTA offers milter protocol version {0}; markgate needs version 2 or later")]
    VersionTooLow(u32),
}

/// Answer an offer: a subset of it in every field, libmilter-compatible for old MTAs.
///
/// - version = min(offered, 6); below 2 is refused.
/// - actions or protocol offered as 0 mean the v1 defaults (0x0f / 0x3f), as libmilter assumes.
/// - actions = wanted ∩ offered (+ SETSYMLIST when offered and we send lists).
/// - protocol = wanted ∩ offered, never the internal MDS bits.
pub fn negotiate(offer: Offer, wants: &Wants) -> Result<Negotiated, NegotiateError> {
    if offer.version < MIN_VERSION {
        return Err(NegotiateError::VersionTooLow(offer.version));
    }
    let version = offer.version.min(MAX_VERSION);
    let offered_actions = if offer.actions.0 == 0 {
        Actions::V1
    } else {
        offer.actions
    };
    let offered_protocol = if offer.protocol.0 == 0 {
        Protocol::V1
    } else {
        offer.protocol
    };
    let mut actions = wants.actions.without(Actions::SETSYMLIST);
    actions = actions.intersect(offered_actions);
    let mut macros = Vec::new();
    if offered_actions.contains(Actions::SETSYMLIST) && !wants.macros.is_empty() {
        actions = actions.union(Actions::SETSYMLIST);
        macros = wants.macros.clone();
    }
    // Only bits defined by version 6, never MDS/internal bits.
    let protocol = wants
        .protocol
        .intersect(offered_protocol)
        .intersect(Protocol::ALL);
    Ok(Negotiated {
        version,
        actions,
        protocol,
        macros,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offer(version: u32, actions: u32, protocol: u32) -> Offer {
        Offer {
            version,
            actions: Actions(actions),
            protocol: Protocol(protocol),
        }
    }

    #[test]
    fn postfix_v6_offer() {
        let n = negotiate(offer(6, 0x1ff, 0x1fffff), &Wants::default()).unwrap();
        assert_eq!(n.version, 6);
        assert_eq!(n.actions, Actions(0x1ff));
        assert!(n.protocol.contains(Protocol::NR_HDR));
        assert!(n.protocol.contains(Protocol::NR_BODY));
        assert!(n.protocol.contains(Protocol::HDR_LEADSPC));
        assert!(!n.protocol.contains(Protocol::NOHDRS));
        assert!(!n.protocol.contains(Protocol::NOBODY));
        assert!(!n.protocol.contains(Protocol::NOEOH));
        assert!(!n.protocol.contains(Protocol::SKIP));
        assert_eq!(n.macros.len(), 4);
    }

    #[test]
    fn answer_is_always_a_subset() {
        let w = Wants::default();
        for (v, a, p) in [
            (2, 0x3f, 0x7f),
            (3, 0x0f, 0x17f),
            (6, 0x13, 0x1fffff),
            (6, 0x1ff, 0x7000_0000 | 0x1fffff),
            (9, 0x1ff, 0x1fffff),
            (4, 0x1, 0x80),
        ] {
            let n = negotiate(offer(v, a, p), &w).unwrap();
            assert!(n.version <= v && n.version <= 6);
            assert_eq!(n.actions.0 & !a, 0, "actions for {v} {a:x} {p:x}");
            assert_eq!(n.protocol.0 & !p, 0, "protocol for {v} {a:x} {p:x}");
            assert_eq!(n.protocol.0 & 0x7000_0000, 0);
            if a & 0x100 == 0 {
                assert!(n.macros.is_empty());
            }
        }
    }

    #[test]
    fn zero_offers_mean_v1_defaults() {
        let n = negotiate(offer(2, 0, 0), &Wants::default()).unwrap();
        assert_eq!(n.actions, Actions(0x0f).intersect(Wants::default().actions));
        assert_eq!(n.protocol.0 & !0x3f, 0);
        assert!(n.macros.is_empty());
    }

    #[test]
    fn version_one_is_refused() {
        assert_eq!(
            negotiate(offer(1, 0x1ff, 0x1fffff), &Wants::default()),
            Err(NegotiateError::VersionTooLow(1))
        );
    }

    #[test]
    fn names_print() {
        assert_eq!(
            Actions(0x11).to_string(),
            "0x11 (SMFIF_ADDHDRS|SMFIF_CHGHDRS)"
        );
        assert_eq!(
            Protocol(0x8000_0080).to_string(),
            "0x80000080 (SMFIP_NR_HDR|0x80000000)"
        );
        assert_eq!(Protocol(0).to_string(), "0x0");
    }
}
