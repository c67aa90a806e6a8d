//! MTA → milter commands (SMFIC_*): a [`Frame`] in, a typed [`Command`] out, and back.
//!
//! Pure and total: any payload either parses or yields a [`CommandError`]; nothing panics on
//! missing NULs, truncation or odd macro lists. Strings stay bytes (header values are not
//! UTF-8, pitfall 6). The encoder (`Command::to_frame`) exists for the MTA side (`mta.rs`,
//! tests, the load generator). Layouts: protocol notes §3 and §10.

use bytes::{BufMut, Bytes, BytesMut};

use super::codec::Frame;
use super::flags::{Actions, Offer, Protocol};

/// Where the SMTP client connected from (the CONNECT family byte and what follows it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConnectAddress {
    /// SMFIA_INET ('4'): client port and address text.
    Inet { port: u16, address: Bytes },
    /// SMFIA_INET6 ('6'): client port and address text (no brackets).
    Inet6 { port: u16, address: Bytes },
    /// SMFIA_UNIX ('L'): port (normally 0) and socket path.
    Unix { port: u16, path: Bytes },
    /// SMFIA_UNKNOWN ('U'): nothing follows the family byte.
    Unknown,
}

/// One MTA command with its payload parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// SMFIC_OPTNEG ('O')
    OptNeg(Offer),
    /// SMFIC_MACRO ('D'): stage byte (the command letter it precedes) and name/value pairs.
    Macro {
        stage: u8,
        pairs: Vec<(Bytes, Bytes)>,
    },
    /// SMFIC_CONNECT ('C')
    Connect {
        hostname: Bytes,
        address: ConnectAddress,
    },
    /// SMFIC_HELO ('H')
    Helo { name: Bytes },
    /// SMFIC_MAIL ('M'): sender as sent (with or without `<>`) and ESMTP arguments.
    Mail { sender: Bytes, args: Vec<Bytes> },
    /// SMFIC_RCPT ('R')
    Rcpt { recipient: Bytes, args: Vec<Bytes> },
    /// SMFIC_DATA ('T')
    Data,
    /// SMFIC_HEADER ('L'): value as sent (LF folding; leading space per HDR_LEADSPC).
    Header { name: Bytes, value: Bytes },
    /// SMFIC_EOH ('N')
    EndOfHeaders,
    /// SMFIC_BODY ('B'): raw bytes, not NUL-terminated.
    Body(Bytes),
    /// SMFIC_BODYEOB ('E'): libmilter treats any payload as a last body chunk.
    EndOfMessage(Bytes),
    /// SMFIC_ABORT ('A')
    Abort,
    /// SMFIC_QUIT ('Q')
    Quit,
    /// SMFIC_QUIT_NC ('K'): end this SMTP session, keep the milter connection.
    QuitNoClose,
    /// SMFIC_UNKNOWN ('U'): the unrecognised SMTP command (Postfix: the verb only).
    Unknown { line: Bytes },
}

/// Why a frame is not a valid command.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    #[error("unknown command code 0x{0:02x}")]
    UnknownCode(u8),
    #[error("{command}: payload truncated ({detail})")]
    Truncated {
        command: &'static str,
        detail: &'static str,
    },
    #[error("{command}: {detail}")]
    Malformed {
        command: &'static str,
        detail: &'static str,
    },
}

impl Command {
    /// The libmilter name of the command, for logs.
    pub fn name(&self) -> &'static str {
        match self {
            Command::OptNeg(_) => "SMFIC_OPTNEG",
            Command::Macro { .. } => "SMFIC_MACRO",
            Command::Connect { .. } => "SMFIC_CONNECT",
            Command::Helo { .. } => "SMFIC_HELO",
            Command::Mail { .. } => "SMFIC_MAIL",
            Command::Rcpt { .. } => "SMFIC_RCPT",
            Command::Data => "SMFIC_DATA",
            Command::Header { .. } => "SMFIC_HEADER",
            Command::EndOfHeaders => "SMFIC_EOH",
            Command::Body(_) => "SMFIC_BODY",
            Command::EndOfMessage(_) => "SMFIC_BODYEOB",
            Command::Abort => "SMFIC_ABORT",
            Command::Quit => "SMFIC_QUIT",
            Command::QuitNoClose => "SMFIC_QUIT_NC",
            Command::Unknown { .. } => "SMFIC_UNKNOWN",
        }
    }

    /// The wire code byte.
    pub fn code(&self) -> u8 {
        match self {
            Command::OptNeg(_) => b'O',
            Command::Macro { .. } => b'D',
            Command::Connect { .. } => b'C',
            Command::Helo { .. } => b'H',
            Command::Mail { .. } => b'M',
            Command::Rcpt { .. } => b'R',
            Command::Data => b'T',
            Command::Header { .. } => b'L',
            Command::EndOfHeaders => b'N',
            Command::Body(_) => b'B',
            Command::EndOfMessage(_) => b'E',
            Command::Abort => b'A',
            Command::Quit => b'Q',
            Command::QuitNoClose => b'K',
            Command::Unknown { .. } => b'U',
        }
    }

    /// Parse one frame.
    pub fn parse(frame: &Frame) -> Result<Command, CommandError> {
        let p = &frame.payload;
        Ok(match frame.code {
            b'O' => {
                if p.len() < 12 {
                    return Err(CommandError::Truncated {
                        command: "SMFIC_OPTNEG",
                        detail: "needs 12 bytes",
                    });
                }
                // Extra bytes after the three fields are tolerated (future extensions).
                Command::OptNeg(Offer {
                    version: be32(&p[0..4]),
                    actions: Actions(be32(&p[4..8])),
                    protocol: Protocol(be32(&p[8..12])),
                })
            }
            b'D' => {
                let Some(&stage) = p.first() else {
                    return Err(CommandError::Truncated {
                        command: "SMFIC_MACRO",
                        detail: "no stage byte",
                    });
                };
                let pairs = split_pairs(&p.slice(1..))?;
                Command::Macro { stage, pairs }
            }
            b'C' => parse_connect(p)?,
            b'H' => {
                let mut s = split_strings(p, "SMFIC_HELO")?;
                if s.len() != 1 {
                    return Err(CommandError::Malformed {
                        command: "SMFIC_HELO",
                        detail: "expected exactly one string",
                    });
                }
                Command::Helo { name: s.remove(0) }
            }
            b'M' => {
                let (sender, args) = address_and_args(p, "SMFIC_MAIL", "no sender")?;
                Command::Mail { sender, args }
            }
            b'R' => {
                let (recipient, args) = address_and_args(p, "SMFIC_RCPT", "no recipient")?;
                Command::Rcpt { recipient, args }
            }
            b'T' => Command::Data,
            b'L' => match split_two(p) {
                Some((name, value)) => Command::Header { name, value },
                None => {
                    // Not exactly two terminated strings: say which way it is wrong.
                    split_strings(p, "SMFIC_HEADER")?;
                    return Err(CommandError::Malformed {
                        command: "SMFIC_HEADER",
                        detail: "expected name and value",
                    });
                }
            },
            b'N' => Command::EndOfHeaders,
            b'B' => Command::Body(p.clone()),
            b'E' => Command::EndOfMessage(p.clone()),
            b'A' => Command::Abort,
            b'Q' => Command::Quit,
            b'K' => Command::QuitNoClose,
            b'U' => {
                let mut s = split_strings(p, "SMFIC_UNKNOWN")?;
                if s.len() != 1 {
                    return Err(CommandError::Malformed {
                        command: "SMFIC_UNKNOWN",
                        detail: "expected exactly one string",
                    });
                }
                Command::Unknown { line: s.remove(0) }
            }
            other => return Err(CommandError::UnknownCode(other)),
        })
    }

    /// The wire form (for the MTA side). Strings containing NUL are cut at the NUL by the
    /// receiver; callers building commands from data must not put NULs in them.
    pub fn to_frame(&self) -> Frame {
        let mut b = BytesMut::new();
        match self {
            Command::OptNeg(o) => {
                b.put_u32(o.version);
                b.put_u32(o.actions.0);
                b.put_u32(o.protocol.0);
            }
            Command::Macro { stage, pairs } => {
                b.put_u8(*stage);
                for (n, v) in pairs {
                    put_cstr(&mut b, n);
                    put_cstr(&mut b, v);
                }
            }
            Command::Connect { hostname, address } => {
                put_cstr(&mut b, hostname);
                match address {
                    ConnectAddress::Inet { port, address } => {
                        b.put_u8(b'4');
                        b.put_u16(*port);
                        put_cstr(&mut b, address);
                    }
                    ConnectAddress::Inet6 { port, address } => {
                        b.put_u8(b'6');
                        b.put_u16(*port);
                        put_cstr(&mut b, address);
                    }
                    ConnectAddress::Unix { port, path } => {
                        b.put_u8(b'L');
                        b.put_u16(*port);
                        put_cstr(&mut b, path);
                    }
                    ConnectAddress::Unknown => b.put_u8(b'U'),
                }
            }
            Command::Helo { name } => put_cstr(&mut b, name),
            Command::Mail { sender: a, args } | Command::Rcpt { recipient: a, args } => {
                put_cstr(&mut b, a);
                for arg in args {
                    put_cstr(&mut b, arg);
                }
            }
            Command::Header { name, value } => {
                put_cstr(&mut b, name);
                put_cstr(&mut b, value);
            }
            Command::Body(data) | Command::EndOfMessage(data) => b.put_slice(data),
            Command::Unknown { line } => put_cstr(&mut b, line),
            Command::Data
            | Command::EndOfHeaders
            | Command::Abort
            | Command::Quit
            | Command::QuitNoClose => {}
        }
        Frame::new(self.code(), b.freeze())
    }
}

fn parse_connect(p: &Bytes) -> Result<Command, CommandError> {
    const C: &str = "SMFIC_CONNECT";
    let Some(nul) = find_nul(p) else {
        return Err(CommandError::Truncated {
            command: C,
            detail: "hostname not NUL-terminated",
        });
    };
    let hostname = p.slice(..nul);
    let rest = &p[nul + 1..];
    let Some((&family, rest)) = rest.split_first() else {
        return Err(CommandError::Truncated {
            command: C,
            detail: "no address family",
        });
    };
    if family == b'U' {
        // Nothing follows; tolerate trailing bytes the way libmilter does (it ignores them).
        return Ok(Command::Connect {
            hostname,
            address: ConnectAddress::Unknown,
        });
    }
    if rest.len() < 2 {
        return Err(CommandError::Truncated {
            command: C,
            detail: "no port",
        });
    }
    let port = u16::from_be_bytes([rest[0], rest[1]]);
    let addr_start = nul + 1 + 1 + 2;
    let addr_all = p.slice(addr_start..);
    let addr = match addr_all.iter().position(|&b| b == 0) {
        Some(end) if end + 1 == addr_all.len() => addr_all.slice(..end),
        Some(_) => {
            return Err(CommandError::Malformed {
                command: C,
                detail: "bytes after the address",
            });
        }
        None => {
            return Err(CommandError::Truncated {
                command: C,
                detail: "address not NUL-terminated",
            });
        }
    };
    let address = match family {
        b'4' => ConnectAddress::Inet {
            port,
            address: addr,
        },
        b'6' => ConnectAddress::Inet6 {
            port,
            address: addr,
        },
        b'L' => ConnectAddress::Unix { port, path: addr },
        _ => {
            return Err(CommandError::Malformed {
                command: C,
                detail: "unknown address family",
            });
        }
    };
    Ok(Command::Connect { hostname, address })
}

/// A packet's NUL-terminated strings in order, each a slice of the packet's buffer (no copy).
/// A last string without its NUL is the one error, named for `command`; after it the walk ends.
struct CStrings<'a> {
    whole: &'a Bytes,
    start: usize,
    command: &'static str,
}

impl<'a> CStrings<'a> {
    fn new(whole: &'a Bytes, command: &'static str) -> Self {
        CStrings {
            whole,
            start: 0,
            command,
        }
    }
}

impl Iterator for CStrings<'_> {
    type Item = Result<Bytes, CommandError>;

    fn next(&mut self) -> Option<Self::Item> {
        let rest = self.whole.get(self.start..).filter(|r| !r.is_empty())?;
        let Some(n) = find_nul(rest) else {
            self.start = self.whole.len();
            return Some(Err(CommandError::Truncated {
                command: self.command,
                detail: "string not NUL-terminated",
            }));
        };
        let s = self.whole.slice(self.start..self.start + n);
        self.start += n + 1;
        Some(Ok(s))
    }
}

/// All of a packet's strings, in one vector.
fn split_strings(whole: &Bytes, command: &'static str) -> Result<Vec<Bytes>, CommandError> {
    let mut out = Vec::with_capacity(2);
    for s in CStrings::new(whole, command) {
        out.push(s?);
    }
    Ok(out)
}

/// MAIL's or RCPT's address and its ESMTP arguments. Most commands carry no arguments, and
/// then no vector is allocated.
fn address_and_args(
    whole: &Bytes,
    command: &'static str,
    missing: &'static str,
) -> Result<(Bytes, Vec<Bytes>), CommandError> {
    let mut strings = CStrings::new(whole, command);
    let Some(address) = strings.next() else {
        return Err(CommandError::Truncated {
            command,
            detail: missing,
        });
    };
    let address = address?;
    Ok((address, strings.collect::<Result<_, _>>()?))
}

/// Exactly two NUL-terminated strings (a header's name and value), without the vector
/// [`split_strings`] builds: every header of every message comes this way.
fn split_two(whole: &Bytes) -> Option<(Bytes, Bytes)> {
    let n = find_nul(whole)?;
    let m = n + 1 + find_nul(&whole[n + 1..])?;
    (m + 1 == whole.len()).then(|| (whole.slice(..n), whole.slice(n + 1..m)))
}

/// A macro packet's strings as name/value pairs, in one vector.
fn split_pairs(whole: &Bytes) -> Result<Vec<(Bytes, Bytes)>, CommandError> {
    const C: &str = "SMFIC_MACRO";
    let mut strings = CStrings::new(whole, C);
    let mut out = Vec::new();
    while let Some(name) = strings.next() {
        let name = name?;
        let Some(value) = strings.next() else {
            return Err(CommandError::Malformed {
                command: C,
                detail: "macro name without a value",
            });
        };
        out.push((name, value?));
    }
    Ok(out)
}

/// The index of the first NUL. `CStr::from_bytes_until_nul` searches a word at a time (the
/// standard library's memchr), where a byte-by-byte `position` costs several instructions per
/// byte of every header value.
fn find_nul(data: &[u8]) -> Option<usize> {
    std::ffi::CStr::from_bytes_until_nul(data)
        .ok()
        .map(|s| s.to_bytes().len())
}

fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

fn put_cstr(b: &mut BytesMut, s: &[u8]) {
    b.put_slice(s);
    b.put_u8(0);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(s: &[u8]) -> Bytes {
        Bytes::copy_from_slice(s)
    }

    pub(crate) fn all_commands() -> Vec<Command> {
        vec![
            Command::OptNeg(Offer {
                version: 6,
                actions: Actions(0x1ff),
                protocol: Protocol(0x1fffff),
            }),
            Command::Macro {
                stage: b'C',
                pairs: vec![(b(b"j"), b(b"mx.example")), (b(b"{daemon_name}"), b(b"mx"))],
            },
            Command::Macro {
                stage: b'H',
                pairs: vec![],
            },
            Command::Connect {
                hostname: b(b"[127.0.0.1]"),
                address: ConnectAddress::Inet {
                    port: 35892,
                    address: b(b"127.0.0.1"),
                },
            },
            Command::Connect {
                hostname: b(b"v6.example"),
                address: ConnectAddress::Inet6 {
                    port: 1,
                    address: b(b"::1"),
                },
            },
            Command::Connect {
                hostname: b(b"localhost"),
                address: ConnectAddress::Unix {
                    port: 0,
                    path: b(b"/run/sock"),
                },
            },
            Command::Connect {
                hostname: b(b"x"),
                address: ConnectAddress::Unknown,
            },
            Command::Helo { name: b(b"vm") },
            Command::Mail {
                sender: b(b"<alice@example.org>"),
                args: vec![b(b"size=213")],
            },
            Command::Mail {
                sender: b(b"<>"),
                args: vec![],
            },
            Command::Rcpt {
                recipient: b(b"<carol@example.net>"),
                args: vec![],
            },
            Command::Data,
            Command::Header {
                name: b(b"X-Folded"),
                value: b(b"first part\n\tsecond part"),
            },
            Command::Header {
                name: b(b"X-Empty"),
                value: b(b""),
            },
            Command::EndOfHeaders,
            Command::Body(b(b"Hello body\r\nsecond line\r\n")),
            Command::Body(b(b"with\0nul")),
            Command::EndOfMessage(b(b"")),
            Command::Abort,
            Command::Quit,
            Command::QuitNoClose,
            Command::Unknown { line: b(b"XFOO") },
        ]
    }

    #[test]
    fn every_command_round_trips() {
        for c in all_commands() {
            let f = c.to_frame();
            assert_eq!(Command::parse(&f).as_ref(), Ok(&c), "{c:?}");
        }
    }

    #[test]
    fn byte_layouts_from_the_notes() {
        let f = Frame::new(b'C', b"[127.0.0.1]\x004\x8c\x34127.0.0.1\0".to_vec());
        assert_eq!(
            Command::parse(&f).unwrap(),
            Command::Connect {
                hostname: b(b"[127.0.0.1]"),
                address: ConnectAddress::Inet {
                    port: 35892,
                    address: b(b"127.0.0.1")
                }
            }
        );
        let f = Frame::new(b'D', vec![b'H']);
        assert_eq!(
            Command::parse(&f).unwrap(),
            Command::Macro {
                stage: b'H',
                pairs: vec![]
            }
        );
    }

    #[test]
    fn truncated_and_garbage_payloads_are_errors() {
        let bad: Vec<(u8, &[u8])> = vec![
            (b'O', b"\0\0\0\x06"),
            (b'D', b""),
            (b'D', b"Cj\0"),
            (b'D', b"Cj\0v"),
            (b'C', b"host"),
            (b'C', b"host\0"),
            (b'C', b"host\x004"),
            (b'C', b"host\x004\x00\x19"),
            (b'C', b"host\x004\x00\x19127.0.0.1"),
            (b'C', b"host\x004\x00\x19127.0.0.1\0junk"),
            (b'C', b"host\0X\x00\x19a\0"),
            (b'H', b""),
            (b'H', b"vm"),
            (b'H', b"a\0b\0"),
            (b'M', b""),
            (b'M', b"<a@b>"),
            (b'R', b""),
            (b'L', b"Subject\0"),
            (b'L', b"Subject\0v"),
            (b'L', b"a\0b\0c\0"),
            (b'U', b""),
            (b'x', b""),
            (0, b""),
        ];
        for (code, payload) in bad {
            let f = Frame::new(code, payload.to_vec());
            assert!(
                Command::parse(&f).is_err(),
                "{} {:?}",
                code as char,
                payload
            );
        }
    }

    /// The header, macro, MAIL and RCPT packets as parsed before `split_two`, `split_pairs`
    /// and `address_and_args`: by `split_strings` into one vector, then checked and paired.
    fn reference(code: u8, p: &Bytes) -> Result<Command, CommandError> {
        if code == b'M' || code == b'R' {
            let (command, missing) = if code == b'M' {
                ("SMFIC_MAIL", "no sender")
            } else {
                ("SMFIC_RCPT", "no recipient")
            };
            let mut s = split_strings(p, command)?;
            if s.is_empty() {
                return Err(CommandError::Truncated {
                    command,
                    detail: missing,
                });
            }
            let first = s.remove(0);
            return Ok(if code == b'M' {
                Command::Mail {
                    sender: first,
                    args: s,
                }
            } else {
                Command::Rcpt {
                    recipient: first,
                    args: s,
                }
            });
        }
        if code == b'L' {
            let s = split_strings(p, "SMFIC_HEADER")?;
            return match <[Bytes; 2]>::try_from(s) {
                Ok([name, value]) => Ok(Command::Header { name, value }),
                Err(_) => Err(CommandError::Malformed {
                    command: "SMFIC_HEADER",
                    detail: "expected name and value",
                }),
            };
        }
        let &stage = p.first().expect("a stage byte");
        let strings = split_strings(&p.slice(1..), "SMFIC_MACRO")?;
        if strings.len() % 2 != 0 {
            return Err(CommandError::Malformed {
                command: "SMFIC_MACRO",
                detail: "macro name without a value",
            });
        }
        let pairs = strings
            .chunks(2)
            .map(|c| (c[0].clone(), c[1].clone()))
            .collect();
        Ok(Command::Macro { stage, pairs })
    }

    #[test]
    fn header_macro_and_envelope_packets_parse_as_the_vector_split_did() {
        let pieces: [&[u8]; 7] = [
            b"\0",
            b"Subject",
            b"x",
            b"",
            b"{mail_addr}",
            b"a\0b",
            b"\0\0",
        ];
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut checked = [[0usize; 2]; 4];
        for _ in 0..20_000 {
            let mut payload = Vec::new();
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let mut r = state;
            for _ in 0..(r % 6) {
                r /= 7;
                payload.extend_from_slice(pieces[(r % 7) as usize]);
            }
            for (i, code) in [b'L', b'D', b'M', b'R'].into_iter().enumerate() {
                let mut p = payload.clone();
                if code == b'D' {
                    p.insert(0, b'M');
                }
                let frame = Frame::new(code, Bytes::from(p.clone()));
                let want = reference(code, &Bytes::from(p));
                assert_eq!(Command::parse(&frame), want, "{:?}", frame);
                checked[i][usize::from(want.is_ok())] += 1;
            }
        }
        // Both accepted and refused packets of each kind, or the comparison shows little.
        for counts in checked {
            assert!(counts[0] > 1_000 && counts[1] > 1_000, "{checked:?}");
        }
    }
}
