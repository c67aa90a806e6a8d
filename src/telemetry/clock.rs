//! The time at the start of each log line, written as tracing-subscriber's `SystemTime` timer
//! writes it (`2026-12-07T07:10:00.123456Z`), at a fraction of its cost.
//!
//! That timer turns the clock into a calendar date and writes seven numbers through `write!`
//! for every line: about 4 700 instructions, a quarter of the per-message `message decided`
//! line. Here each thread keeps the text of the current second and formats only the
//! microseconds. Before 1970 or after 9999 the standard timer writes the line's time.
//!
//! Owns only that text. Must not: decide which lines are written or what they say.

use std::cell::Cell;
use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::FormatTime;

/// `YYYY-MM-DDTHH:MM:SS`
const SECOND_LEN: usize = 19;

/// The timer for every log format (text and JSON).
#[derive(Debug, Default, Clone, Copy)]
pub struct LineTime;

thread_local! {
    /// The last second this thread wrote a line in, and its text.
    static SECOND: Cell<Option<(u64, [u8; SECOND_LEN])>> = const { Cell::new(None) };
}

impl FormatTime for LineTime {
    fn format_time(&self, w: &mut Writer<'_>) -> fmt::Result {
        let Ok(since) = SystemTime::now().duration_since(UNIX_EPOCH) else {
            return tracing_subscriber::fmt::time::SystemTime.format_time(w);
        };
        let secs = since.as_secs();
        let head = match SECOND.get() {
            Some((s, text)) if s == secs => text,
            _ => match second_text(secs) {
                Some(text) => {
                    SECOND.set(Some((secs, text)));
                    text
                }
                None => return tracing_subscriber::fmt::time::SystemTime.format_time(w),
            },
        };
        let mut tail = *b".000000Z";
        let mut micros = since.subsec_micros();
        for digit in tail[1..7].iter_mut().rev() {
            *digit = b'0' + (micros % 10) as u8;
            micros /= 10;
        }
        w.write_str(ascii(&head))?;
        w.write_str(ascii(&tail))
    }
}

/// The calendar text of a second since 1970, UTC; `None` past the year 9999 (four digits).
fn second_text(secs: u64) -> Option<[u8; SECOND_LEN]> {
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
    for (at, mut value, width) in fields {
        for digit in out[at..at + width].iter_mut().rev() {
            *digit = b'0' + (value % 10) as u8;
            value /= 10;
        }
    }
    Some(out)
}

/// Text made here of ASCII digits and punctuation only.
fn ascii(bytes: &[u8]) -> &str {
    std::str::from_utf8(bytes).unwrap_or("")
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
            assert_eq!(ascii(&got), text, "{secs}");
        }
        assert_eq!(second_text(253_402_300_800), None, "the year 10000");
    }

    /// The standard timer's text and ours, taken one after the other: equal up to the
    /// microseconds (retried when a second boundary falls between the two).
    #[test]
    fn lines_carry_the_standard_timers_text() {
        let write = |t: &dyn FormatTime| {
            let mut s = String::new();
            t.format_time(&mut Writer::new(&mut s)).expect("format");
            s
        };
        for _ in 0..1000 {
            let theirs = write(&tracing_subscriber::fmt::time::SystemTime);
            let ours = write(&LineTime);
            assert_eq!(ours.len(), theirs.len(), "{ours} / {theirs}");
            assert!(
                ours.ends_with('Z') && ours.as_bytes()[SECOND_LEN] == b'.',
                "{ours}"
            );
            assert!(
                ours[SECOND_LEN + 1..ours.len() - 1]
                    .bytes()
                    .all(|b| b.is_ascii_digit())
            );
            if ours[..SECOND_LEN] == theirs[..SECOND_LEN] {
                return;
            }
        }
        panic!("the two timers never agreed on the second");
    }
}
