//! Fuzz bodies for the milter protocol layer.
//!
//! - [`frame`]: arbitrary bytes through the frame decoder (fed in chunks whose size comes
//!   from the first byte), every frame through the command and reply parsers; whatever
//!   parses must re-encode to something that parses back to the same value.
//! - [`session`]: arbitrary bytes read as a packet stream of MTA commands and driven through
//!   the session state machine, with end-of-message answered by one of several scripted
//!   handler answers. Invariants: at most one final reply per command (none to D/A/Q/K, and
//!   none when NR_* was agreed), modifications only in the end-of-message answer and only
//!   when granted, and an error always closes the session.

use bytes::{Bytes, BytesMut};

use crate::milter::codec::{Decoded, FrameDecoder};
use crate::milter::command::Command;
use crate::milter::flags::Wants;
use crate::milter::reply::{Reply, ReplyKind};
use crate::milter::session::{Session, State, Step};

/// Small cap so the fuzzer exercises the size check, large enough for real packets.
const FUZZ_MAX_FRAME: usize = 70_000;

/// Target `frame`.
pub fn frame(data: &[u8]) {
    let Some((&chunk, rest)) = data.split_first() else {
        return;
    };
    let chunk = usize::from(chunk).max(1);
    let decoder = FrameDecoder::new(FUZZ_MAX_FRAME);
    let mut buf = BytesMut::new();
    let mut consumed = 0usize;
    'outer: for piece in rest.chunks(chunk) {
        buf.extend_from_slice(piece);
        loop {
            let before = buf.len();
            match decoder.decode(&mut buf) {
                Ok(Decoded::Incomplete) => {
                    assert_eq!(buf.len(), before, "Incomplete must not consume");
                    break;
                }
                Ok(Decoded::Frame(f)) => {
                    assert!(f.payload.len() < FUZZ_MAX_FRAME);
                    assert_eq!(before - buf.len(), 5 + f.payload.len());
                    consumed += 5 + f.payload.len();
                    check_frame(&f);
                }
                Err(_) => {
                    assert_eq!(buf.len(), before, "errors must not consume");
                    break 'outer;
                }
            }
        }
    }
    assert!(consumed <= rest.len());
}

fn check_frame(f: &crate::milter::codec::Frame) {
    if let Ok(cmd) = Command::parse(f) {
        let again = Command::parse(&cmd.to_frame());
        assert_eq!(again.as_ref(), Ok(&cmd), "command round trip");
    }
    if let Ok(reply) = Reply::parse(f) {
        let again = Reply::parse(&reply.to_frame());
        assert_eq!(again.as_ref(), Ok(&reply), "reply round trip");
        // Validation must not panic either.
        let _ = reply.validate();
    }
}

/// Target `session`.
pub fn session(data: &[u8]) {
    let decoder = FrameDecoder::new(FUZZ_MAX_FRAME);
    let mut buf = BytesMut::from(data);
    let mut s = Session::new(Wants::default());
    let mut eoms = 0usize;
    loop {
        let f = match decoder.decode(&mut buf) {
            Ok(Decoded::Frame(f)) => f,
            Ok(Decoded::Incomplete) | Err(_) => return,
        };
        let Ok(cmd) = Command::parse(&f) else {
            continue;
        };
        let code = cmd.code();
        let selector = match &cmd {
            Command::EndOfMessage(p) => p.first().copied().unwrap_or(0),
            _ => 0,
        };
        let before = s.state();
        let steps = match s.handle(cmd) {
            Ok(steps) => steps,
            Err(_) => {
                assert_eq!(s.state(), State::Closed, "an error closes the session");
                return;
            }
        };
        let finals = steps
            .iter()
            .filter(|st| matches!(st, Step::Send(r) if r.kind() == ReplyKind::Final))
            .count();
        let mods = steps
            .iter()
            .filter(|st| matches!(st, Step::Send(r) if r.kind() == ReplyKind::Modification))
            .count();
        assert_eq!(mods, 0, "modification outside end-of-message");
        assert!(finals <= 1, "more than one final reply to one command");
        if matches!(code, b'D' | b'A' | b'Q' | b'K' | b'E' | b'O') {
            assert_eq!(finals, 0, "reply to a command that never gets one");
        }
        if let Some(n) = s.negotiated()
            && n.no_reply(code)
        {
            assert_eq!(finals, 0, "reply despite NR_*");
        }
        if before == State::Negotiate && code == b'O' {
            let n = s.negotiated().expect("negotiated after OPTNEG");
            assert!(n.version <= 6);
        }
        if code == b'D' {
            // The message's view of the shared stage sets: each name listed once, and found.
            let macros = s.macros();
            let names: Vec<&[u8]> = macros.iter().map(|(n, _)| n).collect();
            for (i, n) in names.iter().enumerate() {
                assert!(!names[..i].contains(n), "a macro listed twice");
                if let Ok(name) = std::str::from_utf8(n) {
                    assert!(macros.get(name).is_some(), "a listed macro not found");
                }
            }
        }
        if steps.contains(&Step::EndOfMessage) {
            assert_eq!(s.state(), State::AwaitEom);
            assert!(s.progress().is_some());
            eoms += 1;
            answer_eom(&mut s, selector.wrapping_add(eoms as u8));
        } else {
            assert!(s.progress().is_none() || s.state() == State::AwaitEom);
        }
    }
}

fn answer_eom(s: &mut Session, selector: u8) {
    let granted = s.negotiated().map(|n| n.actions).unwrap_or_default();
    let hdr = |v: &'static [u8]| Reply::AddHeader {
        name: Bytes::from_static(b"X-Label"),
        value: Bytes::from_static(v),
    };
    let answer = match selector % 6 {
        0 => vec![Reply::Continue],
        1 => vec![hdr(b"OFFICIAL"), Reply::Continue],
        2 => vec![
            Reply::ReplaceBody(Bytes::from_static(b"a\r\n")),
            Reply::ChangeHeader {
                index: 1,
                name: Bytes::from_static(b"Subject"),
                value: Bytes::new(),
            },
            Reply::ReplaceBody(Bytes::from_static(b"b\r\n")),
            Reply::Continue,
        ],
        3 => vec![Reply::ReplyCode(Bytes::from_static(b"550 4.7.1 mismatch"))],
        4 => vec![Reply::DelRcpt(Bytes::from_static(b"<a@b>")), Reply::Discard],
        _ => vec![hdr(b"bad\0nul"), Reply::Continue],
    };
    let wanted = answer.clone();
    if selector & 0x80 != 0 {
        staged_matches_whole(s, answer.clone());
    }
    let sent = match s.answer_eom(answer) {
        Ok(sent) => {
            for r in &wanted {
                if let Some(bit) = r.required_action() {
                    assert!(granted.contains(bit), "ungranted modification accepted");
                }
            }
            sent
        }
        Err(_) => {
            assert_eq!(
                s.state(),
                State::AwaitEom,
                "a refused answer changes nothing"
            );
            s.tempfail_eom("fuzz").expect("tempfail always possible")
        }
    };
    let (last, mods) = sent.split_last().expect("an answer");
    assert_eq!(last.kind(), ReplyKind::Final);
    assert!(mods.iter().all(|r| r.kind() == ReplyKind::Modification));
    assert_eq!(s.state(), State::Connected);
    assert!(s.progress().is_none());
}

/// The staged answer (modifications ahead, the final reply later) is accepted or refused
/// exactly when the whole answer is, sends the same packets, and keeps the end-of-message
/// open (PROGRESS allowed) in between. Runs on a copy: `s` is left as it was.
fn staged_matches_whole(s: &Session, answer: Vec<Reply>) {
    let mut whole = s.clone();
    let mut staged = s.clone();
    let Some((last, mods)) = answer.split_last() else {
        return;
    };
    let at_once = whole.answer_eom(answer.clone());
    let ahead = staged.modifications_ahead(mods.to_vec());
    assert_eq!(
        staged.state(),
        State::AwaitEom,
        "modifications ahead end nothing"
    );
    assert!(staged.progress().is_some());
    let in_two = ahead.and_then(|mut m| {
        m.extend(staged.answer_eom(vec![last.clone()])?);
        Ok(m)
    });
    match (at_once, in_two) {
        (Ok(a), Ok(b)) => assert_eq!(a, b, "the same packets either way"),
        (Err(_), Err(_)) => {}
        (a, b) => panic!("whole answer {a:?} but staged {b:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_accept_trivial_inputs() {
        frame(&[]);
        frame(&[1, 0, 0, 0, 1, b'c']);
        session(&[]);
        session(b"GET / HTTP/1.0\r\n");
    }
}
