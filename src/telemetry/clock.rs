//! The time at the start of each log line, written as tracing-subscriber's `SystemTime` timer
//! writes it (`2026-12-07T07:10:00.123456Z`), at a fraction of its cost.
//!
//! That timer turns the clock into a calendar date and writes seven numbers through `write!`
//! for every line: about 4 700 instructions, a quarter of the per-message `message decided`
//! line. Here the second's text comes from `crate::utc`'s per-thread cache and only the
//! microseconds are formatted. Before 1970 or after 9999 the standard timer writes the line's time.
//!
//! Owns only that text. Must not: decide which lines are written or what they say.

use std::fmt;

use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::FormatTime;

use crate::utc;

/// The timer for every log format (text and JSON).
#[derive(Debug, Default, Clone, Copy)]
pub struct LineTime;

impl FormatTime for LineTime {
    fn format_time(&self, w: &mut Writer<'_>) -> fmt::Result {
        let Some(now) = utc::now() else {
            return tracing_subscriber::fmt::time::SystemTime.format_time(w);
        };
        let mut tail = *b".000000Z";
        tail[1..7].copy_from_slice(&utc::six_digits(now.micros));
        w.write_str(now.second_str())?;
        w.write_str(std::str::from_utf8(&tail).unwrap_or(""))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
                ours.ends_with('Z') && ours.as_bytes()[utc::SECOND_LEN] == b'.',
                "{ours}"
            );
            assert!(
                ours[utc::SECOND_LEN + 1..ours.len() - 1]
                    .bytes()
                    .all(|b| b.is_ascii_digit())
            );
            if ours[..utc::SECOND_LEN] == theirs[..utc::SECOND_LEN] {
                return;
            }
        }
        panic!("the two timers never agreed on the second");
    }
}
