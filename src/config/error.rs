//! Config errors for people: the file, the line and column, what was found and what was
//! expected, and the offending line itself.

use std::fmt;
use std::ops::Range;
use std::path::PathBuf;

/// Why a config file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {}: {source}", file.display())]
    Read {
        file: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The file was read but something in it is wrong.
    #[error("{0}")]
    Invalid(Box<Located>),
}

impl ConfigError {
    /// The location, for an `Invalid` error.
    pub fn location(&self) -> Option<&Located> {
        match self {
            ConfigError::Invalid(l) => Some(l),
            ConfigError::Read { .. } => None,
        }
    }

    /// An error at a byte range of `text` (the whole file), from which line and column are
    /// computed. Without a span the error points at the start of the file.
    pub(crate) fn at(file: &str, text: &str, span: Option<Range<usize>>, message: String) -> Self {
        let offset = span.map_or(0, |s| s.start.min(text.len()));
        let (line, column) = line_col(text, offset);
        let source_line = text.lines().nth(line - 1).unwrap_or("").to_string();
        ConfigError::Invalid(Box::new(Located {
            file: file.to_string(),
            line,
            column,
            message,
            source_line,
        }))
    }
}

/// A problem at a place in a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Located {
    /// The file as named to the loader (`<built-in>` for the built-in default).
    pub file: String,
    /// 1-based line.
    pub line: usize,
    /// 1-based column, counted in characters.
    pub column: usize,
    /// What was found and what was expected.
    pub message: String,
    /// The text of that line, shown under the message.
    pub source_line: String,
}

impl fmt::Display for Located {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{}:{}:{}: {}",
            self.file, self.line, self.column, self.message
        )?;
        let gutter = self.line.to_string();
        writeln!(f, "{gutter} | {}", self.source_line)?;
        write!(
            f,
            "{} | {}^",
            " ".repeat(gutter.len()),
            " ".repeat(self.column.saturating_sub(1))
        )
    }
}

/// 1-based line and column (in characters) of a byte offset.
pub(crate) fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before[line_start..].chars().count() + 1;
    (line, column)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_to_line_and_column() {
        let t = "a = 1\nbé = 2\n\nc";
        assert_eq!(line_col(t, 0), (1, 1));
        assert_eq!(line_col(t, 4), (1, 5));
        assert_eq!(line_col(t, 6), (2, 1));
        // 'é' is two bytes but one column.
        assert_eq!(line_col(t, 9), (2, 3));
        assert_eq!(line_col(t, 10), (2, 4));
        // An offset inside a multi-byte character counts from its start.
        assert_eq!(line_col(t, 8), (2, 2));
        assert_eq!(line_col(t, 14), (3, 1));
        assert_eq!(line_col(t, 15), (4, 1));
        assert_eq!(line_col(t, 999), (4, 2));
    }

    #[test]
    fn display_points_at_the_column() {
        let e = ConfigError::at("x.toml", "a = 1\nb = oops\n", Some(10..14), "bad".into());
        assert_eq!(e.to_string(), "x.toml:2:5: bad\n2 | b = oops\n  |     ^");
    }
}
