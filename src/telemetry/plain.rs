//! The fields of an uncoloured text log line, written as tracing-subscriber's default field
//! formatter writes them, at a fraction of its cost for the common fields.
//!
//! The per-message `message decided` line has ten fields. The default formatter writes each
//! one through `write!` with colour styles that are empty when colour is off, and escapes every
//! string value character by character. That was about 5 % of markgate's instructions per
//! message. Here a string made only of printable ASCII (no quote or backslash, the characters
//! `{:?}` escapes) is copied in one piece, and any other value is written by `{:?}`, as the
//! default does. The fields the default treats specially (the message itself, whose control
//! characters it escapes, `r#` names, `log.` fields, errors with their sources) are handed to
//! the default visitor, so their text cannot drift from it. The test compares the two
//! formatters line for line.
//!
//! Must not: be used with colour on (the default writes the styles then).

use std::fmt;

use tracing::field::{Field, Visit};
use tracing_subscriber::field::{RecordFields, VisitOutput};
use tracing_subscriber::fmt::FormatFields;
use tracing_subscriber::fmt::format::{DefaultVisitor, Writer};

use crate::decimal::Decimal;

/// The field formatter for uncoloured text lines.
#[derive(Debug, Default, Clone, Copy)]
pub struct PlainFields;

impl<'w> FormatFields<'w> for PlainFields {
    fn format_fields<R: RecordFields>(&self, writer: Writer<'w>, fields: R) -> fmt::Result {
        let mut v = PlainVisitor {
            writer,
            is_empty: true,
            result: Ok(()),
        };
        fields.record(&mut v);
        v.result
    }
}

struct PlainVisitor<'w> {
    writer: Writer<'w>,
    /// Nothing written yet: the next field gets no separating space.
    is_empty: bool,
    result: fmt::Result,
}

impl PlainVisitor<'_> {
    /// A field the default visitor writes in its own way.
    fn is_special(name: &str) -> bool {
        name == "message" || name.starts_with("r#") || name.starts_with("log.")
    }

    /// Let the default visitor write this one field, continuing the line.
    fn delegate(&mut self, field: &Field, record: impl FnOnce(&mut DefaultVisitor<'_>)) {
        if self.result.is_err() {
            return;
        }
        let mut v = DefaultVisitor::new(self.writer.by_ref(), self.is_empty);
        record(&mut v);
        self.result = v.finish();
        // It skips `log.` fields (the `tracing-log` feature) without writing a space.
        if !field.name().starts_with("log.") {
            self.is_empty = false;
        }
    }

    /// ` name=` (no space before the first field).
    fn start(&mut self, field: &Field) -> fmt::Result {
        if self.is_empty {
            self.is_empty = false;
        } else {
            self.writer.write_char(' ')?;
        }
        self.writer.write_str(field.name())?;
        self.writer.write_char('=')
    }
}

/// Would `{:?}` write this string as it is, between quotes?
fn is_plain(s: &str) -> bool {
    s.bytes()
        .all(|b| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\')
}

impl Visit for PlainVisitor<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        if Self::is_special(field.name()) {
            return self.delegate(field, |v| v.record_str(field, value));
        }
        if self.result.is_ok() {
            self.result = self.start(field).and_then(|()| {
                if is_plain(value) {
                    self.writer.write_char('"')?;
                    self.writer.write_str(value)?;
                    self.writer.write_char('"')
                } else {
                    write!(self.writer, "{value:?}")
                }
            });
        }
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        if Self::is_special(field.name()) {
            return self.delegate(field, |v| v.record_u64(field, value));
        }
        if self.result.is_ok() {
            self.result = self
                .start(field)
                .and_then(|()| self.writer.write_str(Decimal::of(value).as_str()));
        }
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        if Self::is_special(field.name()) {
            return self.delegate(field, |v| v.record_i64(field, value));
        }
        if self.result.is_ok() {
            self.result = self.start(field).and_then(|()| {
                if value < 0 {
                    self.writer.write_char('-')?;
                }
                self.writer
                    .write_str(Decimal::of(value.unsigned_abs()).as_str())
            });
        }
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.delegate(field, |v| v.record_error(field, value));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if Self::is_special(field.name()) {
            return self.delegate(field, |v| v.record_debug(field, value));
        }
        if self.result.is_ok() {
            self.result = self
                .start(field)
                .and_then(|()| write!(self.writer, "{value:?}"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_logs::Logs;

    #[derive(Debug)]
    struct Failed(Option<Box<Failed>>);
    impl fmt::Display for Failed {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("could not\x1b[31m write")
        }
    }
    impl std::error::Error for Failed {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            self.0.as_deref().map(|e| e as _)
        }
    }

    /// Every kind of field the daemon logs, and the odd values the default escapes.
    fn events() {
        let odd = [
            "",
            "plain",
            "with space",
            "quote\"d",
            "back\\slash",
            "tab\there",
            "new\nline",
            "esc\x1b[0m",
            "caf\u{e9}",
            "zero\u{200b}width",
            "del\x7f",
            "c1\u{85}",
            "~!@#$%^&*()_+`-={}|[]:;'<>?,./",
        ];
        for s in odd {
            tracing::info!(queue_id = s, "message decided");
            tracing::info!(value = %s, other = ?s, "display and debug");
            tracing::warn!("message with {s} in it");
            tracing::info!(r#type = s, "raw name");
        }
        let e = Failed(Some(Box::new(Failed(None))));
        tracing::error!(error = &e as &(dyn std::error::Error + 'static), "failed");
        tracing::error!(error = %e, "failed as display");
        tracing::info!(
            queue_id = "4Q00000000",
            from = %"alice@example.gov.uk",
            recipients = 3usize,
            direction = ?Some("Outbound"),
            verdict = "accept",
            removed = 0u64,
            signed = -4i64,
            ok = true,
            ratio = 0.5f64,
            "message decided"
        );
        tracing::info!(n = 1u64);
        for n in [0u64, 9, 10, 99, 100, 12_345, u64::from(u32::MAX), u64::MAX] {
            tracing::info!(
                n,
                i = -(n as i128).clamp(i64::MIN.into(), 0) as i64,
                "counts"
            );
        }
        tracing::info!(min = i64::MIN, max = i64::MAX, big = usize::MAX);
        tracing::info!(a = "x", b = "y");
        tracing::info!("only a message");
        tracing::info!(
            { log.target = "x", log.module_path = "y" },
            "with log fields"
        );
        tracing::info!(log.target = "x", after = "a log field");
    }

    fn capture(plain: bool) -> String {
        let logs = Logs::default();
        let sink = logs.clone();
        let builder = tracing_subscriber::fmt()
            .with_writer(move || sink.clone())
            .with_ansi(false)
            .without_time()
            .with_target(false);
        let _guard = if plain {
            tracing::subscriber::set_default(builder.fmt_fields(PlainFields).finish())
        } else {
            tracing::subscriber::set_default(builder.finish())
        };
        events();
        logs.text()
    }

    #[test]
    fn lines_are_the_default_formatters_lines() {
        let (default, plain) = (capture(false), capture(true));
        assert!(default.lines().count() >= 60, "{default}");
        for (d, p) in default.lines().zip(plain.lines()) {
            assert_eq!(p, d);
        }
        assert_eq!(plain, default);
    }
}
