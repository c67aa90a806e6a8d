//! Milter → MTA replies and modifications (SMFIR_*): typed values, their validation, and
//! their wire form (plus a decoder for the MTA side and tests).
//!
//! Pure. The encoder never checks *when* a reply may be sent (that is `session.rs`); it checks
//! only that the bytes are well formed: reply text per §4.1 (4xx/5xx, enhanced-code class
//! matches, `%` doubled, multi-line joined with CRLF and `NNN-` continuations), no NUL inside
//! strings, no empty header names. Layouts: protocol notes §4 and §10.

use bytes::{BufMut, Bytes, BytesMut};

use super::codec::Frame;
use super::flags::{Actions, MacroStage};

/// Largest REPLBODY chunk we send (libmilter-based MTAs refuse bigger packets).
pub const MAX_BODY_CHUNK: usize = 65_535;
/// libmilter's limits on multi-line replies.
pub const MAX_REPLY_LINES: usize = 32;
/// libmilter's per-line cap for reply text.
pub const MAX_REPLY_LINE: usize = 980;

/// One reply or modification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// SMFIC_OPTNEG ('O') answer, with the macro lists (setsymlist) as its extension.
    OptNeg {
        version: u32,
        actions: u32,
        protocol: u32,
        macros: Vec<(u32, Bytes)>,
    },
    /// SMFIR_CONTINUE ('c')
    Continue,
    /// SMFIR_ACCEPT ('a')
    Accept,
    /// SMFIR_REJECT ('r')
    Reject,
    /// SMFIR_TEMPFAIL ('t')
    Tempfail,
    /// SMFIR_DISCARD ('d')
    Discard,
    /// SMFIR_REPLYCODE ('y'): complete SMTP reply text (build it with [`reply_text`]).
    ReplyCode(Bytes),
    /// SMFIR_SHUTDOWN ('4')
    Shutdown,
    /// SMFIR_SKIP ('s')
    Skip,
    /// SMFIR_PROGRESS ('p')
    Progress,
    /// SMFIR_CONN_FAIL ('f')
    ConnFail,
    /// SMFIR_ADDHEADER ('h')
    AddHeader { name: Bytes, value: Bytes },
    /// SMFIR_INSHEADER ('i'): 0-based index over all headers.
    InsertHeader {
        index: u32,
        name: Bytes,
        value: Bytes,
    },
    /// SMFIR_CHGHEADER ('m'): 1-based index among headers of that name; empty value deletes.
    ChangeHeader {
        index: u32,
        name: Bytes,
        value: Bytes,
    },
    /// SMFIR_REPLBODY ('b'): one chunk of the new body (no NUL terminator).
    ReplaceBody(Bytes),
    /// SMFIR_ADDRCPT ('+')
    AddRcpt(Bytes),
    /// SMFIR_ADDRCPT_PAR ('2')
    AddRcptPar { recipient: Bytes, args: Bytes },
    /// SMFIR_DELRCPT ('-')
    DelRcpt(Bytes),
    /// SMFIR_CHGFROM ('e')
    ChangeFrom { sender: Bytes, args: Option<Bytes> },
    /// SMFIR_QUARANTINE ('q')
    Quarantine(Bytes),
    /// SMFIR_SETSYMLIST ('l'): stand-alone form; no MTA accepts it, we send lists inside OPTNEG.
    SetSymList { stage: u32, macros: Bytes },
}

/// Why bytes are not a valid reply, or a reply is not well formed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReplyError {
    #[error("unknown reply code 0x{0:02x}")]
    UnknownCode(u8),
    #[error("{0}: payload malformed")]
    Malformed(&'static str),
    #[error("{0}: a string contains NUL")]
    Nul(&'static str),
    #[error("header name is empty or contains ':' or whitespace")]
    BadHeaderName,
    #[error("header value contains CR (fold with bare LF)")]
    BadHeaderValue,
    #[error("reply code {0} is not 4xx or 5xx")]
    BadCode(u16),
    #[error("enhanced status {0:?} is malformed or its class does not match the reply code")]
    BadEnhanced(String),
    #[error("reply text line contains CR or LF, or is too long")]
    BadLine,
    #[error("reply text has no lines or more than {MAX_REPLY_LINES}")]
    LineCount,
}

/// Which kind of reply this is, for the session's rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplyKind {
    /// Answers a command: exactly one per command that expects a reply.
    Final,
    /// A modification: only before the final reply to BODYEOB.
    Modification,
    /// Neither (PROGRESS, the OPTNEG answer, SETSYMLIST).
    Other,
}

impl Reply {
    /// The wire code byte.
    pub fn code(&self) -> u8 {
        match self {
            Reply::OptNeg { .. } => b'O',
            Reply::Continue => b'c',
            Reply::Accept => b'a',
            Reply::Reject => b'r',
            Reply::Tempfail => b't',
            Reply::Discard => b'd',
            Reply::ReplyCode(_) => b'y',
            Reply::Shutdown => b'4',
            Reply::Skip => b's',
            Reply::Progress => b'p',
            Reply::ConnFail => b'f',
            Reply::AddHeader { .. } => b'h',
            Reply::InsertHeader { .. } => b'i',
            Reply::ChangeHeader { .. } => b'm',
            Reply::ReplaceBody(_) => b'b',
            Reply::AddRcpt(_) => b'+',
            Reply::AddRcptPar { .. } => b'2',
            Reply::DelRcpt(_) => b'-',
            Reply::ChangeFrom { .. } => b'e',
            Reply::Quarantine(_) => b'q',
            Reply::SetSymList { .. } => b'l',
        }
    }

    /// Final, modification or other.
    pub fn kind(&self) -> ReplyKind {
        match self {
            Reply::Continue
            | Reply::Accept
            | Reply::Reject
            | Reply::Tempfail
            | Reply::Discard
            | Reply::ReplyCode(_)
            | Reply::Shutdown
            | Reply::Skip
            | Reply::ConnFail => ReplyKind::Final,
            Reply::AddHeader { .. }
            | Reply::InsertHeader { .. }
            | Reply::ChangeHeader { .. }
            | Reply::ReplaceBody(_)
            | Reply::AddRcpt(_)
            | Reply::AddRcptPar { .. }
            | Reply::DelRcpt(_)
            | Reply::ChangeFrom { .. }
            | Reply::Quarantine(_) => ReplyKind::Modification,
            Reply::OptNeg { .. } | Reply::Progress | Reply::SetSymList { .. } => ReplyKind::Other,
        }
    }

    /// The action bit the MTA must have granted for this modification, if any.
    pub fn required_action(&self) -> Option<Actions> {
        Some(match self {
            Reply::AddHeader { .. } | Reply::InsertHeader { .. } => Actions::ADDHDRS,
            Reply::ChangeHeader { .. } => Actions::CHGHDRS,
            Reply::ReplaceBody(_) => Actions::CHGBODY,
            Reply::AddRcpt(_) => Actions::ADDRCPT,
            Reply::AddRcptPar { .. } => Actions::ADDRCPT_PAR,
            Reply::DelRcpt(_) => Actions::DELRCPT,
            Reply::ChangeFrom { .. } => Actions::CHGFROM,
            Reply::Quarantine(_) => Actions::QUARANTINE,
            _ => return None,
        })
    }

    /// The libmilter name, for logs.
    pub fn name(&self) -> &'static str {
        match self {
            Reply::OptNeg { .. } => "SMFIC_OPTNEG",
            Reply::Continue => "SMFIR_CONTINUE",
            Reply::Accept => "SMFIR_ACCEPT",
            Reply::Reject => "SMFIR_REJECT",
            Reply::Tempfail => "SMFIR_TEMPFAIL",
            Reply::Discard => "SMFIR_DISCARD",
            Reply::ReplyCode(_) => "SMFIR_REPLYCODE",
            Reply::Shutdown => "SMFIR_SHUTDOWN",
            Reply::Skip => "SMFIR_SKIP",
            Reply::Progress => "SMFIR_PROGRESS",
            Reply::ConnFail => "SMFIR_CONN_FAIL",
            Reply::AddHeader { .. } => "SMFIR_ADDHEADER",
            Reply::InsertHeader { .. } => "SMFIR_INSHEADER",
            Reply::ChangeHeader { .. } => "SMFIR_CHGHEADER",
            Reply::ReplaceBody(_) => "SMFIR_REPLBODY",
            Reply::AddRcpt(_) => "SMFIR_ADDRCPT",
            Reply::AddRcptPar { .. } => "SMFIR_ADDRCPT_PAR",
            Reply::DelRcpt(_) => "SMFIR_DELRCPT",
            Reply::ChangeFrom { .. } => "SMFIR_CHGFROM",
            Reply::Quarantine(_) => "SMFIR_QUARANTINE",
            Reply::SetSymList { .. } => "SMFIR_SETSYMLIST",
        }
    }

    /// Check the payload is well formed (strings without NUL, header names sane, reply text
    /// per §4.1, body chunks within the cap).
    pub fn validate(&self) -> Result<(), ReplyError> {
        let n = self.name();
        let no_nul = |s: &[u8]| {
            if s.contains(&0) {
                Err(ReplyError::Nul(n))
            } else {
                Ok(())
            }
        };
        match self {
            Reply::ReplyCode(t) => {
                no_nul(t)?;
                validate_reply_text(t)
            }
            Reply::AddHeader { name, value }
            | Reply::InsertHeader { name, value, .. }
            | Reply::ChangeHeader { name, value, .. } => {
                if name.is_empty() || name.iter().any(|&c| c == b':' || c <= b' ' || c == 0x7f) {
                    return Err(ReplyError::BadHeaderName);
                }
                no_nul(value)?;
                // Folding is bare LF; a CR would end up literally in the queue file (§7.3).
                if value.contains(&b'\r') {
                    return Err(ReplyError::BadHeaderValue);
                }
                Ok(())
            }
            Reply::ReplaceBody(b) if b.len() > MAX_BODY_CHUNK => Err(ReplyError::Malformed(n)),
            Reply::AddRcpt(s) | Reply::DelRcpt(s) | Reply::Quarantine(s) => no_nul(s),
            Reply::AddRcptPar {
                recipient: a,
                args: b,
            } => {
                no_nul(a)?;
                no_nul(b)
            }
            Reply::ChangeFrom { sender, args } => {
                no_nul(sender)?;
                args.as_deref().map_or(Ok(()), no_nul)
            }
            Reply::OptNeg { macros, .. } => macros.iter().try_for_each(|(_, l)| no_nul(l)),
            Reply::SetSymList { macros, .. } => no_nul(macros),
            _ => Ok(()),
        }
    }

    /// Append the wire form to `dst`. Call [`Reply::validate`] first for values built from
    /// data; this only lays out bytes.
    pub fn encode(&self, dst: &mut BytesMut) {
        // Straight into `dst`, the length patched in at the end: a body chunk is copied once,
        // not built in a buffer of its own first.
        let start = dst.len();
        dst.put_u32(0);
        dst.put_u8(self.code());
        let b = &mut *dst;
        match self {
            Reply::OptNeg {
                version,
                actions,
                protocol,
                macros,
            } => {
                b.put_u32(*version);
                b.put_u32(*actions);
                b.put_u32(*protocol);
                for (stage, list) in macros {
                    b.put_u32(*stage);
                    put_cstr(b, list);
                }
            }
            Reply::ReplyCode(t) => put_cstr(b, t),
            Reply::AddHeader { name, value } => {
                put_cstr(b, name);
                put_cstr(b, value);
            }
            Reply::InsertHeader { index, name, value }
            | Reply::ChangeHeader { index, name, value } => {
                b.put_u32(*index);
                put_cstr(b, name);
                put_cstr(b, value);
            }
            Reply::ReplaceBody(data) => b.put_slice(data),
            Reply::AddRcpt(s) | Reply::DelRcpt(s) | Reply::Quarantine(s) => put_cstr(b, s),
            Reply::AddRcptPar { recipient, args } => {
                put_cstr(b, recipient);
                put_cstr(b, args);
            }
            Reply::ChangeFrom { sender, args } => {
                put_cstr(b, sender);
                if let Some(a) = args {
                    put_cstr(b, a);
                }
            }
            Reply::SetSymList { stage, macros } => {
                b.put_u32(*stage);
                put_cstr(b, macros);
            }
            Reply::Continue
            | Reply::Accept
            | Reply::Reject
            | Reply::Tempfail
            | Reply::Discard
            | Reply::Shutdown
            | Reply::Skip
            | Reply::Progress
            | Reply::ConnFail => {}
        }
        // Code byte + payload; no reply comes near 4 GiB (body replacement is chunked).
        let len = u32::try_from(dst.len() - start - 4).unwrap_or(u32::MAX);
        dst[start..start + 4].copy_from_slice(&len.to_be_bytes());
    }

    /// The frame for this reply.
    pub fn to_frame(&self) -> Frame {
        let mut b = BytesMut::new();
        self.encode(&mut b);
        Frame::new(self.code(), b.split_off(5).freeze())
    }

    /// Parse a reply frame (MTA side).
    pub fn parse(frame: &Frame) -> Result<Reply, ReplyError> {
        let p = &frame.payload;
        let name_of = |c| match c {
            b'h' => "SMFIR_ADDHEADER",
            b'i' => "SMFIR_INSHEADER",
            b'm' => "SMFIR_CHGHEADER",
            b'y' => "SMFIR_REPLYCODE",
            b'O' => "SMFIC_OPTNEG",
            _ => "reply",
        };
        let n = name_of(frame.code);
        let strings = |data: &[u8]| -> Result<Vec<Bytes>, ReplyError> {
            let mut out = Vec::new();
            let mut start = 0;
            while start < data.len() {
                let Some(len) = data[start..].iter().position(|&c| c == 0) else {
                    return Err(ReplyError::Malformed(n));
                };
                out.push(Bytes::copy_from_slice(&data[start..start + len]));
                start += len + 1;
            }
            Ok(out)
        };
        let exactly = |data: &[u8], k: usize| -> Result<Vec<Bytes>, ReplyError> {
            let s = strings(data)?;
            if s.len() == k {
                Ok(s)
            } else {
                Err(ReplyError::Malformed(n))
            }
        };
        let empty = |r: Reply| {
            if p.is_empty() {
                Ok(r)
            } else {
                Err(ReplyError::Malformed("reply without payload"))
            }
        };
        let be32 = |b: &[u8]| u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
        Ok(match frame.code {
            b'O' => {
                if p.len() < 12 {
                    return Err(ReplyError::Malformed(n));
                }
                let mut macros = Vec::new();
                let mut rest = &p[12..];
                while !rest.is_empty() {
                    if rest.len() < 5 {
                        return Err(ReplyError::Malformed(n));
                    }
                    let stage = be32(&rest[..4]);
                    let Some(end) = rest[4..].iter().position(|&c| c == 0) else {
                        return Err(ReplyError::Malformed(n));
                    };
                    macros.push((stage, Bytes::copy_from_slice(&rest[4..4 + end])));
                    rest = &rest[4 + end + 1..];
                }
                Reply::OptNeg {
                    version: be32(&p[0..4]),
                    actions: be32(&p[4..8]),
                    protocol: be32(&p[8..12]),
                    macros,
                }
            }
            b'c' => empty(Reply::Continue)?,
            b'a' => empty(Reply::Accept)?,
            b'r' => empty(Reply::Reject)?,
            b't' => empty(Reply::Tempfail)?,
            b'd' => empty(Reply::Discard)?,
            b'4' => empty(Reply::Shutdown)?,
            b's' => empty(Reply::Skip)?,
            b'p' => empty(Reply::Progress)?,
            b'f' => empty(Reply::ConnFail)?,
            b'y' => {
                let mut s = exactly(p, 1)?;
                Reply::ReplyCode(s.remove(0))
            }
            b'h' => {
                let mut s = exactly(p, 2)?;
                let value = s.remove(1);
                Reply::AddHeader {
                    name: s.remove(0),
                    value,
                }
            }
            b'i' | b'm' => {
                if p.len() < 4 {
                    return Err(ReplyError::Malformed(n));
                }
                let index = be32(&p[..4]);
                let mut s = exactly(&p[4..], 2)?;
                let value = s.remove(1);
                let name = s.remove(0);
                if frame.code == b'i' {
                    Reply::InsertHeader { index, name, value }
                } else {
                    Reply::ChangeHeader { index, name, value }
                }
            }
            b'b' => Reply::ReplaceBody(p.clone()),
            b'+' => Reply::AddRcpt(exactly(p, 1)?.remove(0)),
            b'-' => Reply::DelRcpt(exactly(p, 1)?.remove(0)),
            b'q' => Reply::Quarantine(exactly(p, 1)?.remove(0)),
            b'2' => {
                let mut s = exactly(p, 2)?;
                let args = s.remove(1);
                Reply::AddRcptPar {
                    recipient: s.remove(0),
                    args,
                }
            }
            b'e' => {
                let mut s = strings(p)?;
                match s.len() {
                    1 => Reply::ChangeFrom {
                        sender: s.remove(0),
                        args: None,
                    },
                    2 => {
                        let args = s.remove(1);
                        Reply::ChangeFrom {
                            sender: s.remove(0),
                            args: Some(args),
                        }
                    }
                    _ => return Err(ReplyError::Malformed("SMFIR_CHGFROM")),
                }
            }
            b'l' => {
                if p.len() < 5 {
                    return Err(ReplyError::Malformed("SMFIR_SETSYMLIST"));
                }
                let stage = be32(&p[..4]);
                let mut s = exactly(&p[4..], 1)?;
                Reply::SetSymList {
                    stage,
                    macros: s.remove(0),
                }
            }
            other => return Err(ReplyError::UnknownCode(other)),
        })
    }
}

/// Build the OPTNEG answer for a negotiation result (macro lists as the setsymlist extension).
pub fn optneg_reply(n: &super::flags::Negotiated) -> Reply {
    Reply::OptNeg {
        version: n.version,
        actions: n.actions.0,
        protocol: n.protocol.0,
        macros: n
            .macros
            .iter()
            .map(|(s, l): &(MacroStage, String)| (*s as u32, Bytes::copy_from_slice(l.as_bytes())))
            .collect(),
    }
}

/// Build the text of an SMFIR_REPLYCODE reply: `NNN x.y.z text`, `%` doubled, several lines
/// joined by CRLF with `NNN-` on all but the last.
pub fn reply_text(
    code: u16,
    enhanced: Option<&str>,
    lines: &[String],
) -> Result<Bytes, ReplyError> {
    if !(400..600).contains(&code) {
        return Err(ReplyError::BadCode(code));
    }
    let class = (code / 100) as u8 + b'0';
    if let Some(e) = enhanced
        && !valid_enhanced(e.as_bytes(), class)
    {
        return Err(ReplyError::BadEnhanced(e.to_string()));
    }
    if lines.len() > MAX_REPLY_LINES {
        return Err(ReplyError::LineCount);
    }
    let empty = [String::new()];
    let lines: &[String] = if lines.is_empty() { &empty } else { lines };
    let mut out = BytesMut::new();
    for (i, line) in lines.iter().enumerate() {
        if line.bytes().any(|c| c == b'\r' || c == b'\n' || c == 0) || line.len() > MAX_REPLY_LINE {
            return Err(ReplyError::BadLine);
        }
        if i > 0 {
            out.put_slice(b"\r\n");
        }
        let sep = if i + 1 == lines.len() { ' ' } else { '-' };
        out.put_slice(format!("{code}{sep}").as_bytes());
        if let Some(e) = enhanced {
            out.put_slice(e.as_bytes());
            if !line.is_empty() {
                out.put_u8(b' ');
            }
        }
        for c in line.bytes() {
            if c == b'%' {
                out.put_slice(b"%%");
            } else {
                out.put_u8(c);
            }
        }
    }
    Ok(out.freeze())
}

/// The reply text every internal failure answers with.
pub fn tempfail_text(reason: &str) -> Reply {
    let line = format!("Temporary local problem: {reason}; try again later");
    let line: String = line
        .chars()
        .filter(|c| *c != '\r' && *c != '\n' && *c != '\0')
        .take(200)
        .collect();
    match reply_text(451, Some("4.3.0"), &[line]) {
        Ok(t) => Reply::ReplyCode(t),
        Err(_) => Reply::Tempfail,
    }
}

fn valid_enhanced(e: &[u8], class: u8) -> bool {
    let parts: Vec<&[u8]> = e.split(|&c| c == b'.').collect();
    parts.len() == 3
        && parts[0] == [class]
        && parts[1..]
            .iter()
            .all(|p| !p.is_empty() && p.len() <= 3 && p.iter().all(u8::is_ascii_digit))
}

/// Check finished reply text (as sent in `y`): every line `NNN` + (`-`|` `) with one class,
/// the last line with a space, enhanced codes (when present) of the same class, no lone `%`.
fn validate_reply_text(t: &[u8]) -> Result<(), ReplyError> {
    let lines: Vec<&[u8]> = split_crlf(t);
    if lines.is_empty() || lines.len() > MAX_REPLY_LINES {
        return Err(ReplyError::LineCount);
    }
    let mut first_code: Option<&[u8]> = None;
    for (i, line) in lines.iter().enumerate() {
        if line.len() < 4 || line.contains(&b'\r') || line.contains(&b'\n') {
            return Err(ReplyError::BadLine);
        }
        let code = &line[..3];
        if !code.iter().all(u8::is_ascii_digit) || !(code[0] == b'4' || code[0] == b'5') {
            return Err(ReplyError::BadCode(parse_u16(code)));
        }
        if *first_code.get_or_insert(code) != code {
            return Err(ReplyError::BadCode(parse_u16(code)));
        }
        let last = i + 1 == lines.len();
        if line[3] != if last { b' ' } else { b'-' } {
            return Err(ReplyError::BadLine);
        }
        let rest = &line[4..];
        if rest.first().is_some_and(u8::is_ascii_digit) {
            let word = rest.split(|&c| c == b' ').next().unwrap_or_default();
            if !valid_enhanced(word, code[0]) {
                return Err(ReplyError::BadEnhanced(
                    String::from_utf8_lossy(word).into_owned(),
                ));
            }
        }
        // Every `%` must be part of a `%%` pair.
        let mut i = 0;
        while i < rest.len() {
            if rest[i] == b'%' {
                if rest.get(i + 1) != Some(&b'%') {
                    return Err(ReplyError::BadLine);
                }
                i += 2;
            } else {
                i += 1;
            }
        }
    }
    Ok(())
}

fn split_crlf(t: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    let mut rest = t;
    while let Some(pos) = rest.windows(2).position(|w| w == b"\r\n") {
        out.push(&rest[..pos]);
        rest = &rest[pos + 2..];
    }
    out.push(rest);
    out
}

fn parse_u16(d: &[u8]) -> u16 {
    d.iter()
        .take(3)
        .fold(0u16, |a, &c| a * 10 + u16::from(c.wrapping_sub(b'0') % 10))
}

fn put_cstr(b: &mut BytesMut, s: &[u8]) {
    b.put_slice(s);
    b.put_u8(0);
}

/// Split a body into REPLBODY chunks of at most [`MAX_BODY_CHUNK`] bytes. An empty body
/// still yields one (empty) chunk, which truncates the body.
pub fn replbody_chunks(body: &Bytes) -> Vec<Reply> {
    if body.is_empty() {
        return vec![Reply::ReplaceBody(Bytes::new())];
    }
    (0..body.len())
        .step_by(MAX_BODY_CHUNK)
        .map(|i| Reply::ReplaceBody(body.slice(i..(i + MAX_BODY_CHUNK).min(body.len()))))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(s: &[u8]) -> Bytes {
        Bytes::copy_from_slice(s)
    }

    fn all_replies() -> Vec<Reply> {
        vec![
            Reply::OptNeg {
                version: 6,
                actions: 0x1ff,
                protocol: 0x1fffff,
                macros: vec![],
            },
            Reply::OptNeg {
                version: 6,
                actions: 0x1ff,
                protocol: 0x10_0400,
                macros: vec![(2, b(b"i {mail_addr}")), (5, b(b"i j"))],
            },
            Reply::Continue,
            Reply::Accept,
            Reply::Reject,
            Reply::Tempfail,
            Reply::Discard,
            Reply::ReplyCode(b(b"550 5.7.1 carol is not cleared")),
            Reply::Shutdown,
            Reply::Skip,
            Reply::Progress,
            Reply::ConnFail,
            Reply::AddHeader {
                name: b(b"X-NoLead"),
                value: b(b"nospace"),
            },
            Reply::InsertHeader {
                index: 0,
                name: b(b"X-Ins0"),
                value: b(b"inserted at 0"),
            },
            Reply::ChangeHeader {
                index: 1,
                name: b(b"Message-Id"),
                value: b(b""),
            },
            Reply::ReplaceBody(b(b"new body\r\nline 2\r\n")),
            Reply::AddRcpt(b(b"<a@b>")),
            Reply::AddRcptPar {
                recipient: b(b"<par@example.net>"),
                args: b(b"NOTIFY=NEVER"),
            },
            Reply::DelRcpt(b(b"<bob@example.net>")),
            Reply::ChangeFrom {
                sender: b(b"<changed@example.org>"),
                args: Some(b(b"RET=HDRS")),
            },
            Reply::ChangeFrom {
                sender: b(b"<c@example.org>"),
                args: None,
            },
            Reply::Quarantine(b(b"probe hold")),
            Reply::SetSymList {
                stage: 0,
                macros: b(b"j _"),
            },
        ]
    }

    #[test]
    fn every_reply_round_trips_and_validates() {
        for r in all_replies() {
            r.validate().unwrap();
            let f = r.to_frame();
            assert_eq!(f.code, r.code());
            assert_eq!(Reply::parse(&f).as_ref(), Ok(&r), "{r:?}");
        }
    }

    #[test]
    fn byte_layouts_from_the_notes() {
        let enc = |r: Reply| {
            let mut d = BytesMut::new();
            r.encode(&mut d);
            d.to_vec()
        };
        assert_eq!(
            enc(Reply::AddHeader {
                name: b(b"X-NoLead"),
                value: b(b"nospace")
            }),
            b"\0\0\0\x12hX-NoLead\0nospace\0".to_vec()
        );
        assert_eq!(
            enc(Reply::ChangeHeader {
                index: 1,
                name: b(b"Message-Id"),
                value: b(b"")
            }),
            b"\0\0\0\x11m\0\0\0\x01Message-Id\0\0".to_vec()
        );
        assert_eq!(
            enc(Reply::ReplyCode(b(b"550 5.7.1 carol is not cleared"))),
            b"\0\0\0\x20y550 5.7.1 carol is not cleared\0".to_vec()
        );
        assert_eq!(enc(Reply::Progress), b"\0\0\0\x01p".to_vec());
        let opt = enc(Reply::OptNeg {
            version: 6,
            actions: 0x1ff,
            protocol: 0x10_0400,
            macros: vec![
                (2, b(b"i {mail_addr} {client_addr} {auth_authen}")),
                (5, b(b"i {client_name} j")),
            ],
        });
        assert_eq!(&opt[..4], &[0, 0, 0, 0x51]);
    }

    #[test]
    fn reply_text_rules() {
        assert_eq!(
            &reply_text(550, Some("5.7.1"), &["100% sure".into()]).unwrap()[..],
            b"550 5.7.1 100%% sure"
        );
        assert_eq!(
            &reply_text(451, None, &["a".into(), "b".into()]).unwrap()[..],
            b"451-a\r\n451 b"
        );
        assert_eq!(
            &reply_text(550, Some("5.7.1"), &["one".into(), "two".into()]).unwrap()[..],
            b"550-5.7.1 one\r\n550 5.7.1 two"
        );
        assert!(reply_text(250, None, &["x".into()]).is_err());
        assert!(reply_text(550, Some("4.7.1"), &["x".into()]).is_err());
        assert!(reply_text(550, Some("5.7"), &["x".into()]).is_err());
        assert!(reply_text(550, None, &["a\r\nb".into()]).is_err());
        assert!(reply_text(550, None, &vec!["x".to_string(); 33]).is_err());
        for ok in [
            reply_text(550, Some("5.7.1"), &["100% sure".into()]).unwrap(),
            reply_text(451, None, &["a".into(), "b".into()]).unwrap(),
        ] {
            Reply::ReplyCode(ok).validate().unwrap();
        }
        for bad in [
            &b"250 ok"[..],
            b"550 4.7.1 bad class",
            b"550 lone % sign",
            b"550-a\r\n451 b",
            b"550 a\r\n550 b",
            b"55",
            b"",
        ] {
            assert!(Reply::ReplyCode(b(bad)).validate().is_err(), "{bad:?}");
        }
        assert!(matches!(tempfail_text("x\r\ny"), Reply::ReplyCode(_)));
        tempfail_text("disk full").validate().unwrap();
    }

    #[test]
    fn header_names_and_nuls_are_checked() {
        for bad in [&b""[..], b"A:B", b"A B", b"A\0"] {
            assert!(
                Reply::AddHeader {
                    name: b(bad),
                    value: b(b"v")
                }
                .validate()
                .is_err()
            );
        }
        assert!(Reply::DelRcpt(b(b"a\0b")).validate().is_err());
        assert_eq!(
            Reply::AddHeader {
                name: b(b"X"),
                value: b(b"a\r\n\tb")
            }
            .validate(),
            Err(ReplyError::BadHeaderValue)
        );
    }

    #[test]
    fn replbody_is_chunked() {
        let body = Bytes::from(vec![b'a'; 65_535 * 2 + 10]);
        let chunks = replbody_chunks(&body);
        assert_eq!(chunks.len(), 3);
        let mut total = 0;
        for c in &chunks {
            c.validate().unwrap();
            if let Reply::ReplaceBody(b) = c {
                total += b.len();
            }
        }
        assert_eq!(total, body.len());
        assert_eq!(replbody_chunks(&Bytes::new()).len(), 1);
    }

    #[test]
    fn garbage_replies_are_errors() {
        for (code, p) in [
            (b'c', &b"x"[..]),
            (b'y', b"550 no nul"),
            (b'h', b"A\0"),
            (b'i', b"\0\0"),
            (b'O', b"\0\0\0\x06"),
            (b'O', b"\0\0\0\x06\0\0\0\0\0\0\0\0\0\0"),
            (b'Z', b""),
            (b'e', b""),
        ] {
            assert!(Reply::parse(&Frame::new(code, p.to_vec())).is_err());
        }
    }
}
