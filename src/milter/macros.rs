//! The macro table of one milter connection, filed by stage (protocol notes §6).
//!
//! A `D` packet names the command it precedes (`C H M R T L N B E U`) and replaces that
//! stage's set, as libmilter does. Connection-scoped stages (CONNECT `C`, HELO `H`, UNKNOWN
//! `U`) live until the SMTP session ends; message-scoped stages (MAIL `M` through EOM `E`) are
//! dropped on ABORT and when a new transaction starts. Unknown stage bytes are accepted and
//! ignored, as libmilter does (pitfall 3), so a hostile MTA cannot make the table hold more
//! than one set per known stage. Pure; no I/O.

use bytes::Bytes;

use super::handler::{MacroSet, Macros};

/// Order in which stages are flattened: later ones override earlier ones.
const ORDER: &[u8] = b"CHUMRTLNBE";

/// One stage's pairs as `name=value` text, for trace logs.
pub struct Listed<'a>(pub &'a [(Bytes, Bytes)]);

impl std::fmt::Display for Listed<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, (n, v)) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(" ")?;
            }
            write!(
                f,
                "{}={}",
                String::from_utf8_lossy(n),
                String::from_utf8_lossy(v).escape_debug()
            )?;
        }
        Ok(())
    }
}

/// Macro sets by stage.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MacroTable {
    connection: Vec<(u8, MacroSet)>,
    message: Vec<(u8, MacroSet)>,
}

impl MacroTable {
    /// Is this stage connection-scoped?
    pub fn is_connection_stage(stage: u8) -> bool {
        matches!(stage, b'C' | b'H' | b'U')
    }

    /// Store the set for one stage, replacing any earlier set for it. A MAIL-stage set also
    /// starts a new message scope: it arrives before the MAIL command of a new transaction.
    pub fn set(&mut self, stage: u8, pairs: Vec<(Bytes, Bytes)>) {
        if !ORDER.contains(&stage) {
            return;
        }
        if stage == b'M' {
            self.message.clear();
        }
        let scope = if Self::is_connection_stage(stage) {
            &mut self.connection
        } else {
            &mut self.message
        };
        let pairs = std::sync::Arc::new(pairs);
        if let Some(slot) = scope.iter_mut().find(|(s, _)| *s == stage) {
            slot.1 = pairs;
        } else {
            scope.push((stage, pairs));
        }
    }

    fn stage_set(&self, stage: u8) -> Option<&MacroSet> {
        self.connection
            .iter()
            .chain(self.message.iter())
            .find(|(s, _)| *s == stage)
            .map(|(_, p)| p)
    }

    /// The set sent for one stage, if any.
    pub fn stage(&self, stage: u8) -> Option<&[(Bytes, Bytes)]> {
        self.stage_set(stage).map(|p| p.as_slice())
    }

    /// One stage's set alone (empty when the MTA sent none), e.g. the RCPT set for the
    /// recipient just received.
    pub fn stage_macros(&self, stage: u8) -> Macros {
        Macros::from_sets(self.stage_set(stage).cloned().into_iter().collect())
    }

    /// Forget message-scoped sets (ABORT).
    pub fn clear_message(&mut self) {
        self.message.clear();
    }

    /// Forget message-scoped sets except MAIL's (a MAIL command: its `D 'M'` just arrived).
    pub fn start_message(&mut self) {
        self.message.retain(|(s, _)| *s == b'M');
    }

    /// Forget everything (QUIT_NC: a new SMTP session follows).
    pub fn clear_all(&mut self) {
        self.connection.clear();
        self.message.clear();
    }

    /// One flat view, later stages overriding earlier ones.
    pub fn flatten(&self) -> Macros {
        // Once per message: the sets themselves, shared, in `ORDER` (at most one each).
        Macros::from_sets(
            ORDER
                .iter()
                .filter_map(|stage| self.stage_set(*stage).cloned())
                .collect(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(n: &str, v: &str) -> (Bytes, Bytes) {
        (
            Bytes::copy_from_slice(n.as_bytes()),
            Bytes::copy_from_slice(v.as_bytes()),
        )
    }

    #[test]
    fn scopes_and_overrides() {
        let mut t = MacroTable::default();
        t.set(b'C', vec![p("j", "mx"), p("{daemon_name}", "in")]);
        t.set(b'M', vec![p("{mail_addr}", "a@b")]);
        t.set(b'E', vec![p("i", "ABC"), p("{daemon_name}", "out")]);
        t.start_message(); // MAIL command after its D'M'
        assert!(t.stage(b'M').is_some());
        assert!(t.stage(b'E').is_none());
        t.set(b'E', vec![p("i", "ABC"), p("{daemon_name}", "out")]);
        let m = t.flatten();
        assert_eq!(m.get("daemon_name"), Some(&b"out"[..]));
        assert_eq!(m.get("i"), Some(&b"ABC"[..]));
        assert_eq!(m.get("mail_addr"), Some(&b"a@b"[..]));
        t.clear_message();
        let m = t.flatten();
        assert_eq!(m.get("daemon_name"), Some(&b"in"[..]));
        assert_eq!(m.get("mail_addr"), None);
        t.clear_all();
        assert_eq!(t.flatten(), Macros::default());
    }

    #[test]
    fn lookup_accepts_both_spellings_and_nothing_else() {
        let mut m = Macros::default();
        m.set(b"{daemon_name}", b"out");
        m.set(b"i", b"Q1");
        m.set(b"{}", b"empty");
        m.set(b"{daemon_name}", b"in"); // a resent macro replaces the value
        assert_eq!(m.get("daemon_name"), Some(&b"in"[..]));
        assert_eq!(m.get("{daemon_name}"), Some(&b"in"[..]));
        assert_eq!(m.get("i"), Some(&b"Q1"[..]));
        assert_eq!(m.get("{i}"), None, "a braced name is looked up as given");
        assert_eq!(
            m.get(""),
            Some(&b"empty"[..]),
            "as `{{}}`, like the formatted spelling"
        );
        assert_eq!(m.get("daemon_nam"), None);
        assert_eq!(m.get("{daemon_name"), None);
        assert_eq!(m.iter().count(), 3);
    }

    /// The flattening as it was before the sets were shared: one vector of pairs, a name's
    /// first position kept and its value replaced by each later one, looked up by the first
    /// pair whose name matches either spelling.
    fn reference(t: &MacroTable, stages: &[u8]) -> Vec<(Vec<u8>, Vec<u8>)> {
        let mut pairs: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
        for stage in stages {
            for (n, v) in t.stage(*stage).unwrap_or_default() {
                match pairs.iter_mut().find(|(m, _)| m[..] == n[..]) {
                    Some(slot) => slot.1 = v.to_vec(),
                    None => pairs.push((n.to_vec(), v.to_vec())),
                }
            }
        }
        pairs
    }

    fn reference_get<'a>(pairs: &'a [(Vec<u8>, Vec<u8>)], name: &str) -> Option<&'a [u8]> {
        let braced = format!("{{{name}}}");
        let try_braced = !(name.starts_with('{') || name.len() == 1);
        pairs
            .iter()
            .find(|(n, _)| n[..] == *name.as_bytes() || (try_braced && n[..] == *braced.as_bytes()))
            .map(|(_, v)| v.as_slice())
    }

    #[test]
    fn shared_sets_read_as_the_flattened_vector_did() {
        let names = [
            "i",
            "j",
            "{i}",
            "daemon_name",
            "{daemon_name}",
            "{}",
            "{x",
            "x}",
        ];
        let stages = *b"CHUMRTLNBE";
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move |n: u64| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state % n
        };
        let mut differing_values = 0;
        for _ in 0..3_000 {
            let mut t = MacroTable::default();
            for _ in 0..next(8) {
                let stage = stages[next(10) as usize];
                let set = (0..next(5))
                    .map(|_| {
                        let value = next(4).to_string();
                        p(names[next(names.len() as u64) as usize], &value)
                    })
                    .collect();
                t.set(stage, set);
                if next(5) == 0 {
                    t.start_message();
                }
            }
            let want = reference(&t, ORDER);
            let got = t.flatten();
            let listed: Vec<(Vec<u8>, Vec<u8>)> =
                got.iter().map(|(n, v)| (n.to_vec(), v.to_vec())).collect();
            assert_eq!(listed, want, "{t:?}");
            for name in names.iter().chain(&["", "x", "{", "daemon_nam"]) {
                let name = name.trim_matches(|c| c == '{' || c == '}').to_owned();
                for query in [name.clone(), format!("{{{name}}}")] {
                    assert_eq!(
                        got.get(&query),
                        reference_get(&want, &query),
                        "{query} {t:?}"
                    );
                }
            }
            let one = t.stage_macros(b'R');
            let want_one = reference(&t, b"R");
            assert!(
                one.iter()
                    .map(|(n, v)| (n.to_vec(), v.to_vec()))
                    .eq(want_one)
            );
            differing_values += usize::from(want.len() > 2);
        }
        assert!(differing_values > 500, "{differing_values}");
    }

    #[test]
    fn new_mail_macros_drop_the_old_message() {
        let mut t = MacroTable::default();
        t.set(b'R', vec![p("{rcpt_addr}", "x")]);
        t.set(b'M', vec![p("{mail_addr}", "y")]);
        assert!(t.stage(b'R').is_none());
        assert!(t.stage(b'M').is_some());
    }

    #[test]
    fn unknown_stages_are_ignored_and_the_table_is_bounded() {
        let mut t = MacroTable::default();
        for s in 0..=255u8 {
            t.set(s, vec![p("x", &format!("{}", s as char))]);
        }
        assert!(t.connection.len() + t.message.len() <= ORDER.len());
        assert_eq!(t.stage(b'Z'), None);
        assert_eq!(t.stage(b'\0'), None);
        // EOM is the last stage in the flattening order.
        t.set(b'E', vec![p("x", "E")]);
        t.set(b'C', vec![p("x", "C")]);
        assert_eq!(t.flatten().get("x"), Some(&b"E"[..]));
    }
}
