//! The current time as UTC calendar text, for the log lines and the audit records.
//!
//! Turning the clock into a calendar date costs a few thousand instructions (the `time` crate's
//! RFC 3339 formatter, tracing-subscriber's timer), and every message pays it at least twice:
//! once for its log line and once for its audit record. Each thread here keeps the text of the
//! current second (`YYYY-MM-DDTHH:MM:SS`), so a timestamp costs one clock read and the
//! sub-second digits. The callers write the fraction as their format wants it.
//!
//! Owns only that text. Must not: decide what a log line or a record says.

use std::cell::Cell;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::decimal::write_padded;

/// `YYYY-MM-DDTHH:MM:SS`
pub const SECOND_LEN: usize = 19;

/// A moment split into its second's calendar text and the microseconds after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    /// `YYYY-MM-DDTHH:MM:SS`, ASCII.
    pub second: [u8; SECOND_LEN],
    /// 0..=999 999.
    pub micros: u32,
}

impl Stamp {
    /// The second's text as `&str`.
    pub fn second_str(&self) -> &str {
        std::str::from_utf8(&self.second).unwrap_or("")
    }
}

thread_local! {
    /// The last second this thread stamped, and its text.
    static SECOND: Cell<Option<(u64, [u8; SECOND_LEN])>> = const { Cell::new(None) };
}

/// Now, or `None` before 1970 or after the year 9999 (the callers then use their standard
/// formatter, which says what it can).
pub fn now() -> Option<Stamp> {
    at(SystemTime::now().duration_since(UNIX_EPOCH).ok()?)
}

/// The moment `since` the Unix epoch, through this thread's cache of one second.
pub fn at(since: Duration) -> Option<Stamp> {
    let secs = since.as_secs();
    let second = match SECOND.get() {
        Some((s, text)) if s == secs => text,
        _ => {
            let text = second_text(secs)?;
            SECOND.set(Some((secs, text)));
            text
        }
    };
    Some(Stamp {
        second,
        micros: since.subsec_micros(),
    })
}

/// The calendar text of a second since 1970, UTC; `None` past the year 9999 (four digits).
pub fn second_text(secs: u64) -> Option<[u8; SECOND_LEN]> {
    let t = time::OffsetDateTime::from_unix_timestamp(i64::try_from(secs).ok()?).ok()?;
    let year = u32::try_from(t.year()).ok().filter(|y| *y <= 9999)?;
    let mut out = *b"0000-00-00T00:00:00";
    let fields: [(usize, u32, usize); 6] = [
        (0, year, 4),
        (5, u32::from(u8::from(t.month())), 2),
        (8, u32::from(t.day()), 2),
        (11, u32::from(t.hour()), 2),
        (14, u32::from(t.minute()), 2),
        (17, u32::from(t.second()), 2),
    ];
    for (at, value, width) in fields {
        write_padded(u64::from(value), &mut out[at..at + width]);
    }
    Some(out)
}

/// The six digits of `micros` (0..=999 999), zero-padded.
pub fn six_digits(micros: u32) -> [u8; 6] {
    let mut out = [b'0'; 6];
    write_padded(u64::from(micros), &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_are_written_as_the_calendar_says() {
        for (secs, text) in [
            (0, "1970-01-01T00:00:00"),
            (951_782_400, "2000-02-29T00:00:00"),
            (951_868_799, "2000-02-29T23:59:59"),
            (1_796_601_600, "2026-12-07T00:00:00"),
            (1_796_687_999, "2026-12-07T23:59:59"),
            (4_102_444_800, "2100-01-01T00:00:00"),
            (253_402_300_799, "9999-12-31T23:59:59"),
        ] {
            let got = second_text(secs).expect("a four-digit year");
            assert_eq!(std::str::from_utf8(&got), Ok(text), "{secs}");
        }
        assert_eq!(second_text(253_402_300_800), None, "the year 10000");
    }

    #[test]
    fn the_cache_follows_the_clock_across_seconds() {
        // The same thread, moving forward and back: each answer is the uncached one.
        for secs in [
            1_796_601_600,
            1_796_601_600,
            1_796_601_601,
            951_782_400,
            1_796_601_601,
        ] {
            for micros in [0, 1, 999_999] {
                let got = at(Duration::new(secs, micros * 1_000)).expect("in range");
                assert_eq!(got.second, second_text(secs).expect("in range"), "{secs}");
                assert_eq!(got.micros, micros);
            }
        }
        assert_eq!(at(Duration::from_secs(253_402_300_800)), None);
    }

    #[test]
    fn microseconds_have_six_digits() {
        assert_eq!(&six_digits(0), b"000000");
        assert_eq!(&six_digits(7), b"000007");
        assert_eq!(&six_digits(120_000), b"120000");
        assert_eq!(&six_digits(999_999), b"999999");
    }
}
