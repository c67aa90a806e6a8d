//! The message decision's JSON, written by hand.
//!
//! Every message makes one `message_decision` record, and serde_json's generic serializer spent
//! about 16 000 instructions of its own on each (callgrind, small-2k): a map-entry call per
//! field and an escape-table lookup per byte. This module writes the same bytes directly:
//! field names are constants, and a string with nothing to escape is checked in one vectorized
//! pass and copied whole.
//!
//! The output must stay **byte-identical** to
//! `serde_json::to_vec(&AuditEvent::MessageDecision(..))`: `docs/audit-format.md` defines a
//! line as serde_json's, and [`super::record::Record::from_line`] reads it back with serde. The
//! tests below compare the two over thousands of generated records, with every enum variant
//! and every character JSON escapes. A field added to [`MessageRecord`] and not written here
//! fails them. Reading records, and every rarer event kind, stays with serde.
//!
//! Owns only the writing of [`MessageRecord`] and the envelope's scalars; decides nothing about
//! what a record says.

use super::record::{
    Cause, Direction, Edit, Finding, ForwardEvidence, MarkingFound, MessageRecord, Mode,
    RecipientOutcome, RecipientStatus, Verdict,
};

/// `{"event":"message_decision","data":{…}}` for `m`, appended to `out`.
pub(crate) fn message_decision(m: &MessageRecord, out: &mut Vec<u8>) {
    out.extend_from_slice(b"{\"event\":\"message_decision\",\"data\":");
    let mut o = Object::open(out);
    o.opt_str("queue_id", m.queue_id.as_deref());
    o.opt_str("message_id", m.message_id.as_deref());
    o.opt_str("client_addr", m.client_addr.as_deref());
    o.opt_str("client_name", m.client_name.as_deref());
    o.opt_str("helo", m.helo.as_deref());
    o.opt_str("auth_user", m.auth_user.as_deref());
    o.str("sender", &m.sender);
    o.list("recipients", &m.recipients, recipient);
    o.raw("direction", direction(m.direction));
    o.list("markings", &m.markings, marking);
    o.opt_str("effective_level", m.effective_level.as_deref());
    o.bool("label_required", m.label_required);
    o.bool("label_present", m.label_present);
    match &m.forward {
        Some(f) => {
            o.key("forward");
            forward(f, o.out);
        }
        None => o.raw("forward", "null"),
    }
    o.list("findings", &m.findings, finding);
    o.list("edits", &m.edits, edit);
    o.raw("verdict", verdict(m.verdict));
    o.opt_str("smtp_reply", m.smtp_reply.as_deref());
    o.list("verdict_rules", &m.verdict_rules, |s, out| string(s, out));
    o.raw("mode", mode(m.mode));
    o.str("policy_digest", &m.policy_digest);
    match m.size {
        Some(n) => o.u64("size", n),
        None => o.raw("size", "null"),
    }
    o.close();
    out.push(b'}');
}

fn recipient(r: &RecipientOutcome, out: &mut Vec<u8>) {
    let mut o = Object::open(out);
    o.str("address", &r.address);
    o.raw("status", recipient_status(r.status));
    o.raw("cause", r.cause.map_or("null", cause));
    o.opt_str("rule", r.rule.as_deref());
    o.opt_str("reason", r.reason.as_deref());
    o.opt_str("ceiling", r.ceiling.as_deref());
    o.close();
}

fn marking(m: &MarkingFound, out: &mut Vec<u8>) {
    let mut o = Object::open(out);
    o.str("location", &m.location);
    o.str("raw", &m.raw);
    o.opt_str("scheme", m.scheme.as_deref());
    o.opt_str("level", m.level.as_deref());
    o.bool("valid", m.valid);
    o.list("diagnostics", &m.diagnostics, |s, out| string(s, out));
    o.close();
}

fn forward(f: &ForwardEvidence, out: &mut Vec<u8>) {
    let mut o = Object::open(out);
    o.list("signals", &f.signals, |s, out| string(s, out));
    o.f64("score", f.score);
    o.f64("threshold", f.threshold);
    o.bool("is_forward", f.is_forward);
    o.close();
}

fn finding(f: &Finding, out: &mut Vec<u8>) {
    let mut o = Object::open(out);
    o.raw("cause", cause(f.cause));
    o.str("detail", &f.detail);
    o.opt_str("rule", f.rule.as_deref());
    o.close();
}

/// Internally tagged (`"kind"` first), as `#[serde(tag = "kind")]` writes it.
fn edit(e: &Edit, out: &mut Vec<u8>) {
    let mut o = Object::open(out);
    let rule = match e {
        Edit::LabelHeader { name, value, rule } => {
            o.raw("kind", "\"label_header\"");
            o.str("name", name);
            o.str("value", value);
            rule
        }
        Edit::Subject { old, new, rule } => {
            o.raw("kind", "\"subject\"");
            o.str("old", old);
            o.str("new", new);
            rule
        }
        Edit::Disclaimer { parts, rule } => {
            o.raw("kind", "\"disclaimer\"");
            o.list("parts", parts, |s, out| string(s, out));
            rule
        }
        Edit::DisclaimerPresent { rule } => {
            o.raw("kind", "\"disclaimer_present\"");
            rule
        }
        Edit::DisclaimerSkipped { reason, rule } => {
            o.raw("kind", "\"disclaimer_skipped\"");
            o.str("reason", reason);
            rule
        }
        Edit::Header {
            action,
            name,
            value,
            rule,
        } => {
            o.raw("kind", "\"header\"");
            o.str("action", action);
            o.str("name", name);
            o.str("value", value);
            rule
        }
    };
    o.opt_str("rule", rule.as_deref());
    o.close();
}

fn direction(d: Direction) -> &'static str {
    match d {
        Direction::Inbound => "\"inbound\"",
        Direction::Outbound => "\"outbound\"",
        Direction::Internal => "\"internal\"",
        Direction::Unknown => "\"unknown\"",
    }
}

fn mode(m: Mode) -> &'static str {
    match m {
        Mode::Enforce => "\"enforce\"",
        Mode::Shadow => "\"shadow\"",
    }
}

fn verdict(v: Verdict) -> &'static str {
    match v {
        Verdict::Accept => "\"accept\"",
        Verdict::Reject => "\"reject\"",
        Verdict::Tempfail => "\"tempfail\"",
        Verdict::Discard => "\"discard\"",
        Verdict::Quarantine => "\"quarantine\"",
    }
}

fn recipient_status(s: RecipientStatus) -> &'static str {
    match s {
        RecipientStatus::Delivered => "\"delivered\"",
        RecipientStatus::Removed => "\"removed\"",
        RecipientStatus::Rejected => "\"rejected\"",
    }
}

fn cause(c: Cause) -> &'static str {
    match c {
        Cause::AutoForward => "\"auto_forward\"",
        Cause::AboveCeiling => "\"above_ceiling\"",
        Cause::ForgedLabel => "\"forged_label\"",
        Cause::LabelConflict => "\"label_conflict\"",
        Cause::InvalidMarking => "\"invalid_marking\"",
        Cause::MissingLabel => "\"missing_label\"",
        Cause::Policy => "\"policy\"",
    }
}

/// A JSON object being written: the comma between members is its only state.
struct Object<'a> {
    out: &'a mut Vec<u8>,
    first: bool,
}

impl<'a> Object<'a> {
    fn open(out: &'a mut Vec<u8>) -> Self {
        out.push(b'{');
        Object { out, first: true }
    }

    /// `"name":`, after a comma unless it is the first member. Names are ours and need no
    /// escaping.
    fn key(&mut self, name: &str) {
        if !std::mem::take(&mut self.first) {
            self.out.push(b',');
        }
        self.out.push(b'"');
        self.out.extend_from_slice(name.as_bytes());
        self.out.extend_from_slice(b"\":");
    }

    /// A member whose value is already JSON.
    fn raw(&mut self, name: &str, json: &str) {
        self.key(name);
        self.out.extend_from_slice(json.as_bytes());
    }

    fn str(&mut self, name: &str, value: &str) {
        self.key(name);
        string(value, self.out);
    }

    fn opt_str(&mut self, name: &str, value: Option<&str>) {
        match value {
            Some(v) => self.str(name, v),
            None => self.raw(name, "null"),
        }
    }

    fn bool(&mut self, name: &str, value: bool) {
        self.raw(name, if value { "true" } else { "false" });
    }

    fn u64(&mut self, name: &str, value: u64) {
        self.key(name);
        unsigned(value, self.out);
    }

    /// serde_json's float, as it serializes an `f64`: the shortest round-trip form (ryu), and
    /// `null` for NaN and the infinities.
    fn f64(&mut self, name: &str, value: f64) {
        self.key(name);
        // serde_json's own float writer, straight into the line (no `String` per number).
        let at = self.out.len();
        if serde_json::to_writer(&mut *self.out, &value).is_err() {
            // Unreachable for a `Vec`; `null` keeps the line valid all the same.
            self.out.truncate(at);
            self.out.extend_from_slice(b"null");
        }
    }

    fn list<T>(&mut self, name: &str, items: &[T], each: impl Fn(&T, &mut Vec<u8>)) {
        self.key(name);
        self.out.push(b'[');
        for (i, item) in items.iter().enumerate() {
            if i > 0 {
                self.out.push(b',');
            }
            each(item, self.out);
        }
        self.out.push(b']');
    }

    fn close(self) {
        self.out.push(b'}');
    }
}

/// An unsigned integer in decimal.
pub(crate) fn unsigned(n: u64, out: &mut Vec<u8>) {
    out.extend_from_slice(crate::decimal::Decimal::of(n).as_bytes());
}

/// A JSON string with serde_json's escapes: `\"`, `\\`, the five short control escapes, and
/// `\u00xx` (lower-case hex) for the other control characters; everything else as it is.
pub(crate) fn string(s: &str, out: &mut Vec<u8>) {
    let bytes = s.as_bytes();
    out.reserve(bytes.len() + 2);
    out.push(b'"');
    // Most values have nothing to escape: one pass without an early exit (the compiler makes
    // it a few vector instructions per sixteen bytes), then one copy.
    if !bytes.iter().fold(false, |any, &b| any | escaped(b)) {
        out.extend_from_slice(bytes);
    } else {
        let mut clean = 0; // bytes[clean..i] are yet to be copied and need no escape
        for (i, &b) in bytes.iter().enumerate() {
            if escaped(b) {
                out.extend_from_slice(&bytes[clean..i]);
                escape(b, out);
                clean = i + 1;
            }
        }
        out.extend_from_slice(&bytes[clean..]);
    }
    out.push(b'"');
}

fn escaped(b: u8) -> bool {
    b < 0x20 || b == b'"' || b == b'\\'
}

fn escape(b: u8, out: &mut Vec<u8>) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let short = match b {
        b'"' => b'"',
        b'\\' => b'\\',
        0x08 => b'b',
        0x0c => b'f',
        b'\n' => b'n',
        b'\r' => b'r',
        b'\t' => b't',
        _ => {
            out.extend_from_slice(b"\\u00");
            out.push(HEX[usize::from(b >> 4)]);
            out.push(HEX[usize::from(b & 0x0f)]);
            return;
        }
    };
    out.extend_from_slice(&[b'\\', short]);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::event::AuditEvent;
    use crate::inspect::generated::Rng;

    /// The test's own draws, on the crate's shared generator.
    trait Draw {
        fn string(&mut self) -> String;
        fn opt(&mut self) -> Option<String>;
        fn strings(&mut self) -> Vec<String>;
        fn float(&mut self) -> f64;
    }

    impl Draw for Rng {
        /// Strings from pieces JSON treats differently: every control character, the two that
        /// are escaped by name, bytes just around them, multi-byte UTF-8 (including U+2028,
        /// which JSON allows raw), and runs long enough to cross the sixteen-byte chunks.
        fn string(&mut self) -> String {
            const PIECES: &[&str] = &[
                "a",
                "PROTECT",
                " ",
                "\"",
                "\\",
                "/",
                "\u{7f}",
                "é",
                "«»",
                "\u{2028}",
                "😀",
                "0123456789abcdef",
                "ceiling:*.gcsx.gov.uk",
                "x@example.org",
                "\u{1f}",
                " !#",
            ];
            let mut s = String::new();
            for _ in 0..self.below(12) {
                if self.below(4) == 0 {
                    s.push(char::from(self.below(0x20) as u8));
                } else {
                    s.push_str(self.pick(PIECES));
                }
            }
            s
        }

        fn opt(&mut self) -> Option<String> {
            (self.below(3) > 0).then(|| self.string())
        }

        fn strings(&mut self) -> Vec<String> {
            (0..self.below(4)).map(|_| self.string()).collect()
        }

        fn float(&mut self) -> f64 {
            let f = [
                0.0,
                -0.0,
                1.0,
                0.1,
                100.0,
                1e-7,
                1.5e300,
                -2.5,
                123456789.125,
                f64::NAN,
                f64::INFINITY,
                f64::NEG_INFINITY,
                f64::MIN_POSITIVE,
                f64::MAX,
            ];
            if self.below(2) == 0 {
                self.pick(&f)
            } else {
                f64::from_bits(self.next())
            }
        }
    }

    const CAUSES: [Cause; 7] = [
        Cause::AutoForward,
        Cause::AboveCeiling,
        Cause::ForgedLabel,
        Cause::LabelConflict,
        Cause::InvalidMarking,
        Cause::MissingLabel,
        Cause::Policy,
    ];

    fn edit(r: &mut Rng) -> Edit {
        let rule = r.opt();
        match r.below(6) {
            0 => Edit::LabelHeader {
                name: r.string(),
                value: r.string(),
                rule,
            },
            1 => Edit::Subject {
                old: r.string(),
                new: r.string(),
                rule,
            },
            2 => Edit::Disclaimer {
                parts: r.strings(),
                rule,
            },
            3 => Edit::DisclaimerPresent { rule },
            4 => Edit::DisclaimerSkipped {
                reason: r.string(),
                rule,
            },
            _ => Edit::Header {
                action: r.string(),
                name: r.string(),
                value: r.string(),
                rule,
            },
        }
    }

    fn record(r: &mut Rng) -> MessageRecord {
        MessageRecord {
            queue_id: r.opt(),
            message_id: r.opt(),
            client_addr: r.opt(),
            client_name: r.opt(),
            helo: r.opt(),
            auth_user: r.opt(),
            sender: r.string(),
            recipients: (0..r.below(4))
                .map(|_| RecipientOutcome {
                    address: r.string(),
                    status: r.pick(&[
                        RecipientStatus::Delivered,
                        RecipientStatus::Removed,
                        RecipientStatus::Rejected,
                    ]),
                    cause: (r.below(2) == 0).then(|| r.pick(&CAUSES)),
                    rule: r.opt(),
                    reason: r.opt(),
                    ceiling: r.opt(),
                })
                .collect(),
            direction: r.pick(&[
                Direction::Inbound,
                Direction::Outbound,
                Direction::Internal,
                Direction::Unknown,
            ]),
            markings: (0..r.below(3))
                .map(|_| MarkingFound {
                    location: r.string(),
                    raw: r.string(),
                    scheme: r.opt(),
                    level: r.opt(),
                    valid: r.below(2) == 0,
                    diagnostics: r.strings(),
                })
                .collect(),
            effective_level: r.opt(),
            label_required: r.below(2) == 0,
            label_present: r.below(2) == 0,
            forward: (r.below(3) > 0).then(|| ForwardEvidence {
                signals: r.strings(),
                score: r.float(),
                threshold: r.float(),
                is_forward: r.below(2) == 0,
            }),
            findings: (0..r.below(3))
                .map(|_| Finding {
                    cause: r.pick(&CAUSES),
                    detail: r.string(),
                    rule: r.opt(),
                })
                .collect(),
            edits: (0..r.below(4)).map(|_| edit(r)).collect(),
            verdict: r.pick(&[
                Verdict::Accept,
                Verdict::Reject,
                Verdict::Tempfail,
                Verdict::Discard,
                Verdict::Quarantine,
            ]),
            smtp_reply: r.opt(),
            verdict_rules: r.strings(),
            mode: r.pick(&[Mode::Enforce, Mode::Shadow]),
            policy_digest: r.string(),
            size: (r.below(2) == 0).then(|| r.next() >> r.below(64)),
        }
    }

    fn by_hand(m: &MessageRecord) -> Vec<u8> {
        let mut out = Vec::new();
        message_decision(m, &mut out);
        out
    }

    fn by_serde(m: &MessageRecord) -> Vec<u8> {
        serde_json::to_vec(&AuditEvent::MessageDecision(Box::new(m.clone()))).expect("serde")
    }

    #[test]
    fn message_decisions_are_written_as_serde_json_writes_them() {
        let mut r = Rng(0x9e37_79b9_7f4a_7c15);
        let mut escapes = 0;
        for _ in 0..5_000 {
            let m = record(&mut r);
            let (hand, serde) = (by_hand(&m), by_serde(&m));
            assert_eq!(
                String::from_utf8_lossy(&hand),
                String::from_utf8_lossy(&serde),
                "{m:?}"
            );
            escapes += usize::from(hand.windows(3).any(|w| w == b"\\u0"));
        }
        // The generator must really reach the escapes, or the comparison says little.
        assert!(
            escapes > 1_000,
            "only {escapes} records had a \\u00xx escape"
        );
        let empty = MessageRecord::default();
        assert_eq!(by_hand(&empty), by_serde(&empty));
    }

    #[test]
    fn every_single_byte_string_is_escaped_as_serde_json_escapes_it() {
        for b in 0..0x80u8 {
            for len in [1, 15, 16, 17, 33] {
                let mut s = "x".repeat(len - 1);
                s.insert(len / 2, char::from(b));
                let mut out = Vec::new();
                string(&s, &mut out);
                assert_eq!(out, serde_json::to_vec(&s).expect("serde"), "byte {b:#x}");
            }
        }
    }

    #[test]
    fn unsigned_numbers_are_written_in_decimal() {
        for n in [0, 1, 9, 10, 99, 100, 2339, u64::from(u32::MAX), u64::MAX] {
            let mut out = Vec::new();
            unsigned(n, &mut out);
            assert_eq!(out, n.to_string().into_bytes());
        }
    }
}
