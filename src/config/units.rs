//! Value types people write in the config file: durations (`"30s"`, `"5m"`), byte sizes
//! (`1048576`, `"1MiB"`) and octal file modes (`"0660"`). Each deserializes with an error that
//! says what was found and what was expected; the loader adds file, line and column.

use std::fmt;
use std::time::Duration;

use serde::de::{self, Deserialize, Deserializer, Visitor};

/// A duration written as a number followed by a unit: `ms`, `s`, `m` or `h` (`"250ms"`,
/// `"30s"`, `"5m"`, `"2h"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct HumanDuration(pub Duration);

impl HumanDuration {
    /// Parse the text form; the error says what was expected.
    pub fn parse(s: &str) -> Result<Self, String> {
        let expected = "expected a duration such as \"250ms\", \"30s\", \"5m\" or \"2h\"";
        let (n, unit) = number_and_unit(s, expected)?;
        let d = match unit {
            "ms" => Duration::from_millis(n),
            "s" => Duration::from_secs(n),
            "m" => Duration::from_secs(n.saturating_mul(60)),
            "h" => Duration::from_secs(n.saturating_mul(3600)),
            "" => return Err(format!("found \"{s}\" without a unit, {expected}")),
            other => return Err(format!("found unit \"{other}\" in \"{s}\", {expected}")),
        };
        Ok(HumanDuration(d))
    }
}

impl fmt::Display for HumanDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.0.as_millis();
        if !ms.is_multiple_of(1000) {
            write!(f, "{ms}ms")
        } else {
            write!(f, "{}s", ms / 1000)
        }
    }
}

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(TextValue {
            expecting: "a duration string such as \"30s\" or \"5m\"",
            parse: HumanDuration::parse,
            number: |n| {
                Err(format!(
                    "found the number {n}, expected a duration string with a unit such as \"{n}s\""
                ))
            },
        })
    }
}

/// A size in bytes: a plain integer, or a string with a binary unit (`"64KiB"`, `"1MiB"`,
/// `"1GiB"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ByteSize(pub u64);

impl ByteSize {
    /// Parse the text form; the error says what was expected.
    pub fn parse(s: &str) -> Result<Self, String> {
        let expected = "expected a size such as 65536, \"64KiB\" or \"1MiB\"";
        let (n, unit) = number_and_unit(s, expected)?;
        let mult: u64 = match unit {
            "" | "B" => 1,
            "KiB" => 1 << 10,
            "MiB" => 1 << 20,
            "GiB" => 1 << 30,
            other => return Err(format!("found unit \"{other}\" in \"{s}\", {expected}")),
        };
        n.checked_mul(mult)
            .map(ByteSize)
            .ok_or_else(|| format!("found \"{s}\", which is too large"))
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(TextValue {
            expecting: "a size in bytes (65536) or with a unit (\"64KiB\", \"1MiB\")",
            parse: ByteSize::parse,
            number: |n| {
                u64::try_from(n)
                    .map(ByteSize)
                    .map_err(|_| format!("found {n}, expected a size of zero or more bytes"))
            },
        })
    }
}

/// A unix permission mode written in octal as a string (`"0660"`), so that a decimal number can
/// never be mistaken for one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OctalMode(pub u32);

impl OctalMode {
    /// Parse the text form; the error says what was expected.
    pub fn parse(s: &str) -> Result<Self, String> {
        let expected = "expected an octal permission mode such as \"0660\"";
        let t = s.trim();
        if t.is_empty() || t.len() > 4 || !t.bytes().all(|b| (b'0'..=b'7').contains(&b)) {
            return Err(format!("found \"{s}\", {expected}"));
        }
        let m = u32::from_str_radix(t, 8).map_err(|_| format!("found \"{s}\", {expected}"))?;
        if m > 0o777 {
            return Err(format!(
                "found \"{s}\", expected only permission bits (at most \"0777\")"
            ));
        }
        Ok(OctalMode(m))
    }
}

impl<'de> Deserialize<'de> for OctalMode {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(TextValue {
            expecting: "an octal mode string such as \"0660\"",
            parse: OctalMode::parse,
            number: |n| {
                Err(format!(
                    "found the number {n}, expected an octal mode as a string such as \"0660\""
                ))
            },
        })
    }
}

/// Split `"30s"` / `" 64 KiB "` into its leading whole number and the (trimmed) unit after it;
/// a missing or unreadable number is an error naming `expected`.
fn number_and_unit<'a>(s: &'a str, expected: &str) -> Result<(u64, &'a str), String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("found \"{s}\", {expected}"))?;
    Ok((n, unit.trim()))
}

/// The one visitor of these types: text goes to the type's `parse`, a bare integer to `number`
/// (which says why it is refused, or takes it), anything else is refused naming `expecting`.
struct TextValue<T> {
    expecting: &'static str,
    parse: fn(&str) -> Result<T, String>,
    number: fn(i64) -> Result<T, String>,
}

impl<T> Visitor<'_> for TextValue<T> {
    type Value = T;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.expecting)
    }
    fn visit_str<E: de::Error>(self, s: &str) -> Result<T, E> {
        (self.parse)(s).map_err(E::custom)
    }
    fn visit_i64<E: de::Error>(self, n: i64) -> Result<T, E> {
        (self.number)(n).map_err(E::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        let d = |s| HumanDuration::parse(s).map(|d| d.0);
        assert_eq!(d("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(d("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(d("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(d("2h"), Ok(Duration::from_secs(7200)));
        assert_eq!(d(" 10 s "), Ok(Duration::from_secs(10)));
        for bad in ["", "s", "10", "10x", "-1s", "1.5s", "ms10"] {
            let e = d(bad).unwrap_err();
            assert!(e.contains("expected a duration"), "{bad}: {e}");
        }
        assert_eq!(
            HumanDuration(Duration::from_millis(1500)).to_string(),
            "1500ms"
        );
        assert_eq!(HumanDuration(Duration::from_secs(30)).to_string(), "30s");
    }

    #[test]
    fn sizes() {
        let s = |t| ByteSize::parse(t).map(|b| b.0);
        assert_eq!(s("0"), Ok(0));
        assert_eq!(s("65536"), Ok(65536));
        assert_eq!(s("64KiB"), Ok(65536));
        assert_eq!(s("1MiB"), Ok(1 << 20));
        assert_eq!(s("2GiB"), Ok(2 << 30));
        assert!(s("1MB").unwrap_err().contains("expected a size"));
        assert!(s("x").is_err());
        assert!(s("99999999999999999GiB").unwrap_err().contains("too large"));
    }

    #[test]
    fn modes() {
        let m = |t| OctalMode::parse(t).map(|m| m.0);
        assert_eq!(m("0660"), Ok(0o660));
        assert_eq!(m("660"), Ok(0o660));
        assert_eq!(m("0777"), Ok(0o777));
        assert!(m("1777").unwrap_err().contains("at most"));
        assert!(m("0680").is_err());
        assert!(m("").is_err());
        assert!(m("rw-rw----").is_err());
    }
}
