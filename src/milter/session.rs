//! The per-connection protocol state machine: a typed [`Command`] in, [`Step`]s out. No I/O,
//! no clock, no handler: `conn.rs` performs the steps.
//!
//! It owns the rules that keep the stream in sync with the MTA (protocol notes §2, §4, §9):
//! exactly one final reply to every command that expects one (none when NR_* was negotiated,
//! none ever to MACRO/ABORT/QUIT/QUIT_NC), modifications only in the answer to BODYEOB and
//! only when the action bit was granted, and the tolerance real MTAs need (macros anywhere,
//! ABORT anywhere and repeatedly, HELO or MAIL without a prior ABORT, QUIT_NC, UNKNOWN, empty
//! bodies, connections without mail). The legal transitions are the table in [`next_state`].

use std::net::IpAddr;

use bytes::{Bytes, BytesMut};

use super::command::{Command, ConnectAddress};
use super::flags::{self, Negotiated, Wants};
use super::handler::{ConnectionFacts, Macros};
use super::macros::MacroTable;
use super::reply::{self, Reply, ReplyKind};

/// Where the session is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum State {
    /// Waiting for OPTNEG.
    Negotiate,
    /// Negotiated (or after QUIT_NC); waiting for CONNECT.
    Ready,
    /// CONNECT seen; no transaction open.
    Connected,
    /// MAIL seen: recipients may follow.
    Envelope,
    /// DATA seen.
    Data,
    /// At least one header seen.
    Headers,
    /// EOH or body data seen.
    Body,
    /// BODYEOB seen; waiting for the handler's answer ([`Session::answer_eom`]).
    AwaitEom,
    /// QUIT seen (or a fatal error); nothing more is accepted.
    Closed,
}

impl State {
    /// Every state, for table tests.
    pub const ALL: [State; 9] = [
        State::Negotiate,
        State::Ready,
        State::Connected,
        State::Envelope,
        State::Data,
        State::Headers,
        State::Body,
        State::AwaitEom,
        State::Closed,
    ];

    /// A message transaction is open (its data is streaming or being decided).
    pub fn in_message(self) -> bool {
        matches!(
            self,
            State::Envelope | State::Data | State::Headers | State::Body | State::AwaitEom
        )
    }
}

/// What the connection task must do, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Write this reply.
    Send(Reply),
    /// Drop the current message, if any (ABORT, or an implicit abort).
    AbortMessage,
    /// Start a message: call `Handler::begin_message` with [`Session::facts`].
    BeginMessage,
    /// Hand the sender to the message sink.
    MailFrom { sender: Bytes, args: Vec<Bytes> },
    /// Hand one recipient to the message sink.
    Recipient { recipient: Bytes, args: Vec<Bytes> },
    /// Hand one header to the sink; the value never starts with the space after the colon.
    Header { name: Bytes, value: Bytes },
    /// Hand one body chunk to the sink.
    BodyChunk(Bytes),
    /// Decide the message, then call [`Session::answer_eom`] (or [`Session::tempfail_eom`]).
    EndOfMessage,
    /// Close the connection (QUIT).
    Close,
}

/// Why the session refuses a command. The connection must be closed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SessionError {
    #[error("{command} is not allowed in state {state:?}")]
    Illegal { command: &'static str, state: State },
    #[error(transparent)]
    Negotiate(#[from] flags::NegotiateError),
}

/// Why an end-of-message answer cannot be sent as given. The session stays in `AwaitEom`;
/// answer with [`Session::tempfail_eom`] instead.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EomError {
    #[error("no end-of-message is pending")]
    NotPending,
    #[error("the answer must end with exactly one final reply")]
    NoFinalReply,
    #[error("{0} is not allowed in an end-of-message answer")]
    NotAllowed(&'static str),
    #[error("{name} needs action {needed}, which the MTA did not grant (granted {granted})")]
    NotGranted {
        name: &'static str,
        needed: flags::Actions,
        granted: flags::Actions,
    },
    #[error("body replacement chunks must be contiguous")]
    BodyNotContiguous,
    #[error("invalid {name}: {error}")]
    Invalid {
        name: &'static str,
        error: reply::ReplyError,
    },
}

/// One milter connection's protocol state.
#[derive(Debug, Clone)]
pub struct Session {
    state: State,
    wants: Wants,
    negotiated: Option<Negotiated>,
    facts: ConnectionFacts,
    macros: MacroTable,
}

impl Session {
    /// A fresh session that will ask for `wants` in negotiation.
    pub fn new(wants: Wants) -> Session {
        Session {
            state: State::Negotiate,
            wants,
            negotiated: None,
            facts: ConnectionFacts::default(),
            macros: MacroTable::default(),
        }
    }

    /// Current state.
    pub fn state(&self) -> State {
        self.state
    }

    /// The negotiation result, once OPTNEG was answered.
    pub fn negotiated(&self) -> Option<&Negotiated> {
        self.negotiated.as_ref()
    }

    /// What CONNECT and HELO told us.
    pub fn facts(&self) -> &ConnectionFacts {
        &self.facts
    }

    /// The macro table.
    pub fn macro_table(&self) -> &MacroTable {
        &self.macros
    }

    /// Macros for the current message, flattened (connection macros included).
    pub fn macros(&self) -> Macros {
        self.macros.flatten()
    }

    /// Feed one command. On error the caller must close the connection; the session is then
    /// `Closed`.
    pub fn handle(&mut self, cmd: Command) -> Result<Vec<Step>, SessionError> {
        let mut steps = Vec::new();
        self.handle_into(cmd, &mut steps)?;
        Ok(steps)
    }

    /// [`Session::handle`], appending the steps to `steps` so that a connection can reuse one
    /// buffer for every command instead of allocating a vector per packet.
    pub fn handle_into(&mut self, cmd: Command, steps: &mut Vec<Step>) -> Result<(), SessionError> {
        let code = cmd.code();
        let Some(next) = next_state(self.state, code) else {
            let state = self.state;
            self.state = State::Closed;
            return Err(SessionError::Illegal {
                command: cmd.name(),
                state,
            });
        };
        // Implicit abort: a new MAIL or HELO while a transaction is open.
        if matches!(code, b'M' | b'H') && self.state.in_message() {
            steps.push(Step::AbortMessage);
            self.macros.clear_message();
        }
        match cmd {
            Command::OptNeg(offer) => match flags::negotiate(offer, &self.wants) {
                Ok(n) => {
                    steps.push(Step::Send(reply::optneg_reply(&n)));
                    self.negotiated = Some(n);
                }
                Err(e) => {
                    self.state = State::Closed;
                    return Err(e.into());
                }
            },
            Command::Macro { stage, pairs } => self.macros.set(stage, pairs),
            Command::Connect { hostname, address } => {
                self.facts = connection_facts(hostname, address);
            }
            Command::Helo { name } => self.facts.helo = Some(name.to_vec()),
            Command::Mail { sender, args } => {
                self.macros.start_message();
                steps.push(Step::BeginMessage);
                steps.push(Step::MailFrom { sender, args });
            }
            Command::Rcpt { recipient, args } => steps.push(Step::Recipient { recipient, args }),
            Command::Header { name, value } => {
                let value = if self.leading_space() && value.first() == Some(&b' ') {
                    value.slice(1..)
                } else {
                    value
                };
                steps.push(Step::Header { name, value });
            }
            Command::Body(chunk) => {
                if !chunk.is_empty() {
                    steps.push(Step::BodyChunk(chunk));
                }
            }
            Command::EndOfMessage(chunk) => {
                if !chunk.is_empty() {
                    steps.push(Step::BodyChunk(chunk));
                }
                steps.push(Step::EndOfMessage);
            }
            Command::Abort => {
                steps.push(Step::AbortMessage);
                self.macros.clear_message();
            }
            Command::Quit => {
                if self.state.in_message() {
                    steps.push(Step::AbortMessage);
                }
                steps.push(Step::Close);
            }
            Command::QuitNoClose => {
                steps.push(Step::AbortMessage);
                self.macros.clear_all();
                self.facts = ConnectionFacts::default();
            }
            Command::Data | Command::EndOfHeaders | Command::Unknown { .. } => {}
        }
        if self.expects_reply(code) {
            steps.push(Step::Send(Reply::Continue));
        }
        self.state = next;
        Ok(())
    }

    /// The MTA waits for a reply to this command code (outside OPTNEG and BODYEOB, which
    /// have their own answers).
    fn expects_reply(&self, code: u8) -> bool {
        match code {
            b'C' | b'H' | b'M' | b'R' | b'T' | b'L' | b'N' | b'B' | b'U' => {
                self.negotiated.as_ref().is_some_and(|n| !n.no_reply(code))
            }
            _ => false,
        }
    }

    fn leading_space(&self) -> bool {
        self.negotiated.as_ref().is_some_and(|n| n.leading_space())
    }

    /// A PROGRESS reply, when an end-of-message is being decided.
    pub fn progress(&self) -> Option<Reply> {
        (self.state == State::AwaitEom).then_some(Reply::Progress)
    }

    /// Turn the handler's answer (modifications then one final reply) into what is written.
    /// Checks that every modification was granted, that body chunks are contiguous and that
    /// everything is well formed; adds the header leading space when HDR_LEADSPC was
    /// negotiated. On error nothing changes: answer with [`Session::tempfail_eom`].
    pub fn answer_eom(&mut self, answer: Vec<Reply>) -> Result<Vec<Reply>, EomError> {
        if self.state != State::AwaitEom {
            return Err(EomError::NotPending);
        }
        let Some((last, mods)) = answer.split_last() else {
            return Err(EomError::NoFinalReply);
        };
        match last {
            Reply::Continue
            | Reply::Accept
            | Reply::Reject
            | Reply::Tempfail
            | Reply::Discard
            | Reply::ReplyCode(_)
            | Reply::Shutdown => {}
            other => return Err(EomError::NotAllowed(other.name())),
        }
        last.validate().map_err(|error| EomError::Invalid {
            name: last.name(),
            error,
        })?;
        self.check_modifications(mods)?;
        let out = self.with_leading_space(answer);
        self.state = State::Connected;
        Ok(out)
    }

    /// Modifications sent ahead of a final reply that comes later (the handler's verdict waits
    /// on something slow): checked and prepared as [`Session::answer_eom`] does, but the
    /// end-of-message stays pending, so PROGRESS may follow and `answer_eom` (with the final
    /// reply alone) or [`Session::tempfail_eom`] ends it.
    pub fn modifications_ahead(&self, mods: Vec<Reply>) -> Result<Vec<Reply>, EomError> {
        if self.state != State::AwaitEom {
            return Err(EomError::NotPending);
        }
        self.check_modifications(&mods)?;
        Ok(self.with_leading_space(mods))
    }

    /// Every modification granted, well formed, and the body chunks contiguous.
    fn check_modifications(&self, mods: &[Reply]) -> Result<(), EomError> {
        let granted = self
            .negotiated
            .as_ref()
            .map(|n| n.actions)
            .unwrap_or_default();
        let mut body_state = 0u8; // 0 none yet, 1 in body run, 2 body run ended
        for m in mods {
            if m.kind() != ReplyKind::Modification {
                return Err(EomError::NotAllowed(m.name()));
            }
            if let Some(needed) = m.required_action()
                && !granted.contains(needed)
            {
                return Err(EomError::NotGranted {
                    name: m.name(),
                    needed,
                    granted,
                });
            }
            m.validate().map_err(|error| EomError::Invalid {
                name: m.name(),
                error,
            })?;
            body_state = match (body_state, matches!(m, Reply::ReplaceBody(_))) {
                (0, true) | (1, true) => 1,
                (1, false) => 2,
                (2, true) => return Err(EomError::BodyNotContiguous),
                (s, false) => s,
                (_, true) => 1,
            };
        }
        Ok(())
    }

    fn with_leading_space(&self, replies: Vec<Reply>) -> Vec<Reply> {
        if self.leading_space() {
            replies.into_iter().map(add_leading_space).collect()
        } else {
            replies
        }
    }

    /// Answer the pending end-of-message with `451 4.3.0` (internal failure). Always
    /// succeeds when an end-of-message is pending.
    pub fn tempfail_eom(&mut self, reason: &str) -> Result<Vec<Reply>, EomError> {
        self.answer_eom(vec![reply::tempfail_text(reason)])
    }
}

fn add_leading_space(r: Reply) -> Reply {
    let spaced = |v: Bytes| {
        let mut b = BytesMut::with_capacity(v.len() + 1);
        b.extend_from_slice(b" ");
        b.extend_from_slice(&v);
        b.freeze()
    };
    match r {
        Reply::AddHeader { name, value } => Reply::AddHeader {
            name,
            value: spaced(value),
        },
        Reply::InsertHeader { index, name, value } => Reply::InsertHeader {
            index,
            name,
            value: spaced(value),
        },
        // An empty value deletes the header; a lone space would not.
        Reply::ChangeHeader { index, name, value } if !value.is_empty() => Reply::ChangeHeader {
            index,
            name,
            value: spaced(value),
        },
        other => other,
    }
}

fn connection_facts(hostname: Bytes, address: ConnectAddress) -> ConnectionFacts {
    let parse_ip = |a: &[u8]| -> Option<IpAddr> {
        let s = std::str::from_utf8(a).ok()?;
        // Sendmail writes IPv6 clients as `IPv6:2001:db8::1`.
        let s = s
            .strip_prefix("IPv6:")
            .or_else(|| s.strip_prefix("ipv6:"))
            .unwrap_or(s);
        s.trim_matches(|c| c == '[' || c == ']').parse().ok()
    };
    let mut f = ConnectionFacts {
        hostname: hostname.to_vec(),
        ..ConnectionFacts::default()
    };
    match address {
        ConnectAddress::Inet { port, address } | ConnectAddress::Inet6 { port, address } => {
            f.addr = parse_ip(&address);
            f.port = port;
        }
        ConnectAddress::Unix { path, .. } => f.unix_path = path.to_vec(),
        ConnectAddress::Unknown => {}
    }
    f
}

/// The transition table: the state after `command` in `state`, or `None` when the command
/// is illegal there (the connection is closed).
pub fn next_state(state: State, command: u8) -> Option<State> {
    use State::*;
    let after_abort = |s: State| if s == Ready { Ready } else { Connected };
    match (state, command) {
        (Negotiate, b'O') => Some(Ready),
        (Negotiate, b'Q') => Some(Closed),
        (Negotiate, _) => None,
        (Closed, _) => None,

        // While the handler decides, the MTA waits: only giving up is legal.
        (AwaitEom, b'A') => Some(Connected),
        (AwaitEom, b'Q') => Some(Closed),
        (AwaitEom, _) => None,

        // Anywhere after negotiation.
        (_, b'O') => None,
        (s, b'D') => Some(s),
        (s, b'A') => Some(after_abort(s)),
        (_, b'Q') => Some(Closed),
        (_, b'K') => Some(Ready),

        (Ready, b'C') => Some(Connected),
        (Ready, _) => None,

        // HELO after MAIL (no ABORT from the MTA) implicitly ends the transaction.
        (Connected | Envelope, b'H') => Some(Connected),
        // MAIL after EOM without ABORT (miltertest), or a second MAIL: implicit abort.
        (Connected | Envelope, b'M') => Some(Envelope),
        (Connected | Envelope, b'U') => Some(state),
        (Envelope, b'R') => Some(Envelope),
        (Envelope, b'T') => Some(Data),
        (Envelope | Data | Headers, b'L') => Some(Headers),
        (Envelope | Data | Headers | Body, b'N') => Some(Body),
        (Envelope | Data | Headers | Body, b'B') => Some(Body),
        (Envelope | Data | Headers | Body, b'E') => Some(AwaitEom),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::milter::flags::{Actions, Offer, Protocol};

    const CODES: &[u8] = b"ODCHMRTLNBEAQKU";

    fn b(s: &[u8]) -> Bytes {
        Bytes::copy_from_slice(s)
    }

    fn sample(code: u8) -> Command {
        match code {
            b'O' => Command::OptNeg(Offer {
                version: 6,
                actions: Actions::ALL,
                protocol: Protocol::ALL,
            }),
            b'D' => Command::Macro {
                stage: b'M',
                pairs: vec![(b(b"i"), b(b"Q1"))],
            },
            b'C' => Command::Connect {
                hostname: b(b"[127.0.0.1]"),
                address: ConnectAddress::Inet {
                    port: 25,
                    address: b(b"127.0.0.1"),
                },
            },
            b'H' => Command::Helo { name: b(b"vm") },
            b'M' => Command::Mail {
                sender: b(b"<a@b>"),
                args: vec![],
            },
            b'R' => Command::Rcpt {
                recipient: b(b"<c@d>"),
                args: vec![],
            },
            b'T' => Command::Data,
            b'L' => Command::Header {
                name: b(b"Subject"),
                value: b(b" hi"),
            },
            b'N' => Command::EndOfHeaders,
            b'B' => Command::Body(b(b"x\r\n")),
            b'E' => Command::EndOfMessage(Bytes::new()),
            b'A' => Command::Abort,
            b'Q' => Command::Quit,
            b'K' => Command::QuitNoClose,
            b'U' => Command::Unknown { line: b(b"XFOO") },
            _ => unreachable!(),
        }
    }

    /// Drive a fresh session into `state` with a v6 all-NR negotiation or a v2 one.
    fn session_in(state: State, offer: Offer) -> Session {
        let mut s = Session::new(Wants::default());
        let path: &[u8] = match state {
            State::Negotiate => b"",
            State::Ready => b"O",
            State::Connected => b"OC",
            State::Envelope => b"OCM",
            State::Data => b"OCMRT",
            State::Headers => b"OCMRTL",
            State::Body => b"OCMRTLN",
            State::AwaitEom => b"OCMRTLNBE",
            State::Closed => b"OQ",
        };
        for &c in path {
            let cmd = if c == b'O' {
                Command::OptNeg(offer)
            } else {
                sample(c)
            };
            s.handle(cmd).unwrap();
        }
        assert_eq!(s.state(), state);
        s
    }

    fn offers() -> [Offer; 2] {
        [
            Offer {
                version: 6,
                actions: Actions::ALL,
                protocol: Protocol::ALL,
            },
            Offer {
                version: 2,
                actions: Actions(0x3f),
                protocol: Protocol(0x7f),
            },
        ]
    }

    #[test]
    fn transition_table_every_state_every_command() {
        for offer in offers() {
            for state in State::ALL {
                for &code in CODES {
                    let mut s = session_in(state, offer);
                    let expected = next_state(state, code);
                    let result = s.handle(sample(code));
                    match (expected, result) {
                        (Some(next), Ok(steps)) => {
                            assert_eq!(s.state(), next, "{state:?} {}", code as char);
                            let finals = steps
                                .iter()
                                .filter(|st| {
                                    matches!(st, Step::Send(r) if r.kind() == ReplyKind::Final)
                                })
                                .count();
                            let mods = steps
                                .iter()
                                .filter(|st| {
                                    matches!(st, Step::Send(r) if r.kind() == ReplyKind::Modification)
                                })
                                .count();
                            assert_eq!(mods, 0);
                            let want = match (code, s.negotiated()) {
                                (b'O' | b'D' | b'A' | b'Q' | b'K' | b'E', _) | (_, None) => 0,
                                (c, Some(n)) => usize::from(!n.no_reply(c)),
                            };
                            assert_eq!(finals, want, "{state:?} {}", code as char);
                        }
                        (None, Err(SessionError::Illegal { .. })) => {
                            assert_eq!(s.state(), State::Closed);
                        }
                        (e, r) => panic!("{state:?} {}: expected {e:?}, got {r:?}", code as char),
                    }
                }
            }
        }
    }

    #[test]
    fn a_postfix_session_with_two_messages() {
        let mut s = Session::new(Wants::default());
        let mut all = Vec::new();
        for c in b"OCHMRTLNBE" {
            all.extend(s.handle(sample(*c)).unwrap());
        }
        assert!(all.contains(&Step::Header {
            name: b(b"Subject"),
            value: b(b"hi")
        }));
        let out = s
            .answer_eom(vec![
                Reply::AddHeader {
                    name: b(b"X-Label"),
                    value: b(b"OFFICIAL"),
                },
                Reply::Continue,
            ])
            .unwrap();
        // HDR_LEADSPC was negotiated with Postfix: the space is put back.
        assert_eq!(
            out[0],
            Reply::AddHeader {
                name: b(b"X-Label"),
                value: b(b" OFFICIAL")
            }
        );
        for c in b"AMRLNEAAQ" {
            let st = s.handle(sample(*c));
            if *c == b'E' {
                s.answer_eom(vec![Reply::Continue]).unwrap();
            }
            st.unwrap();
        }
        assert_eq!(s.state(), State::Closed);
    }

    #[test]
    fn eom_answers_are_checked() {
        let v2 = offers()[1];
        let mut s = session_in(
            State::AwaitEom,
            Offer {
                actions: Actions(Actions::ADDHDRS.0),
                ..v2
            },
        );
        let chg = Reply::ChangeHeader {
            index: 1,
            name: b(b"Subject"),
            value: b(b"x"),
        };
        assert!(matches!(
            s.answer_eom(vec![chg.clone(), Reply::Continue]),
            Err(EomError::NotGranted { .. })
        ));
        assert_eq!(s.answer_eom(vec![]), Err(EomError::NoFinalReply));
        assert!(
            s.answer_eom(vec![Reply::Continue, Reply::Continue])
                .is_err()
        );
        assert!(s.answer_eom(vec![Reply::Skip]).is_err());
        assert!(s.answer_eom(vec![Reply::ReplyCode(b(b"250 ok"))]).is_err());
        assert_eq!(s.state(), State::AwaitEom);
        let t = s.tempfail_eom("x").unwrap();
        assert!(matches!(&t[..], [Reply::ReplyCode(x)] if x.starts_with(b"451 4.3.0")));
        assert_eq!(s.state(), State::Connected);
        assert_eq!(
            s.answer_eom(vec![Reply::Continue]),
            Err(EomError::NotPending)
        );

        let mut s = session_in(State::AwaitEom, offers()[0]);
        let body = |x: &[u8]| Reply::ReplaceBody(b(x));
        assert_eq!(
            s.answer_eom(vec![body(b"a"), chg.clone(), body(b"b"), Reply::Continue]),
            Err(EomError::BodyNotContiguous)
        );
        let ok = s
            .answer_eom(vec![chg, body(b"a"), body(b"b"), Reply::Continue])
            .unwrap();
        assert_eq!(ok.len(), 4);
    }

    #[test]
    fn v2_mta_gets_a_reply_to_everything_and_no_leading_space_games() {
        let mut s = session_in(State::Connected, offers()[1]);
        let n = s.negotiated().unwrap().clone();
        assert_eq!(n.version, 2);
        assert!(!n.leading_space());
        let steps = s.handle(sample(b'L')).err();
        assert!(steps.is_some()); // header without MAIL is illegal
        let mut s = session_in(State::Envelope, offers()[1]);
        let steps = s.handle(sample(b'L')).unwrap();
        assert_eq!(
            steps,
            vec![
                Step::Header {
                    name: b(b"Subject"),
                    value: b(b" hi")
                },
                Step::Send(Reply::Continue)
            ]
        );
    }

    #[test]
    fn quit_nc_keeps_the_socket_and_expects_connect() {
        let mut s = session_in(State::Body, offers()[0]);
        let st = s.handle(Command::QuitNoClose).unwrap();
        assert_eq!(st, vec![Step::AbortMessage]);
        assert_eq!(s.state(), State::Ready);
        assert_eq!(s.facts(), &ConnectionFacts::default());
        s.handle(sample(b'C')).unwrap();
        assert_eq!(s.facts().addr, Some("127.0.0.1".parse().unwrap()));
    }

    #[test]
    fn macros_are_scoped() {
        let mut s = session_in(State::Ready, offers()[0]);
        s.handle(Command::Macro {
            stage: b'C',
            pairs: vec![(b(b"j"), b(b"mx"))],
        })
        .unwrap();
        s.handle(sample(b'C')).unwrap();
        s.handle(sample(b'D')).unwrap(); // D'M' i=Q1
        s.handle(sample(b'M')).unwrap();
        assert_eq!(s.macros().get("i"), Some(&b"Q1"[..]));
        s.handle(Command::Abort).unwrap();
        assert_eq!(s.macros().get("i"), None);
        assert_eq!(s.macros().get("j"), Some(&b"mx"[..]));
    }
}
