//! Problems found while loading a policy, worded for the security officer who edits it.
//!
//! Every problem names the file, the line and column (1-based, columns counted in characters),
//! the key it concerns, what was found and what was expected, so that
//! `file:line:col: error: key: found …, expected …` can be pasted into an editor's jump list.

use std::fmt;
use std::ops::Range;

use serde::Serialize;

/// How bad a problem is. Errors stop a policy from loading; warnings do not.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Error,
    Warning,
}

/// One mistake (or doubtful thing) in a policy file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    pub severity: Severity,
    /// The file name as given to the loader (`<built-in>` for the compiled-in default).
    pub file: String,
    /// 1-based line.
    pub line: usize,
    /// 1-based column, in characters.
    pub column: usize,
    /// The dotted key path the problem concerns (`rule[2].action`); empty for syntax errors.
    pub key: String,
    /// What the loader found there.
    pub found: String,
    /// What it expected instead.
    pub expected: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sev = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        write!(f, "{}:{}:{}: {sev}: ", self.file, self.line, self.column)?;
        if !self.key.is_empty() {
            write!(f, "{}: ", self.key)?;
        }
        write!(f, "found {}, expected {}", self.found, self.expected)
    }
}

/// Every problem from one load attempt, in file order. Loading fails when any is an error.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LoadErrors {
    pub problems: Vec<Problem>,
}

impl LoadErrors {
    /// Only the errors (warnings are also kept in `problems`).
    pub fn errors(&self) -> impl Iterator<Item = &Problem> {
        self.problems
            .iter()
            .filter(|p| p.severity == Severity::Error)
    }
}

impl fmt::Display for LoadErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.problems.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{p}")?;
        }
        Ok(())
    }
}

impl std::error::Error for LoadErrors {}

/// The text of one policy file plus what is needed to turn byte offsets into line:column.
#[derive(Debug, Clone)]
pub(crate) struct SourceText {
    pub name: String,
    pub text: String,
    line_starts: Vec<usize>,
}

impl SourceText {
    pub fn new(name: &str, text: &str) -> Self {
        let mut line_starts = vec![0];
        for (i, b) in text.bytes().enumerate() {
            if b == b'\n' {
                line_starts.push(i + 1);
            }
        }
        SourceText {
            name: name.to_owned(),
            text: text.to_owned(),
            line_starts,
        }
    }

    /// 1-based (line, column) of a byte offset; offsets past the end clamp to the end.
    pub fn line_col(&self, offset: usize) -> (usize, usize) {
        let offset = offset.min(self.text.len());
        let line_idx = match self.line_starts.binary_search(&offset) {
            Ok(i) => i,
            Err(i) => i.saturating_sub(1),
        };
        let start = self.line_starts.get(line_idx).copied().unwrap_or(0);
        // Count characters, not bytes; the offset may fall inside a character after clamping,
        // so walk char boundaries.
        let column = self
            .text
            .get(start..)
            .map(|rest| {
                rest.char_indices()
                    .take_while(|(i, _)| start + i < offset)
                    .count()
            })
            .unwrap_or(0);
        (line_idx + 1, column + 1)
    }

    pub fn problem(
        &self,
        span: Range<usize>,
        key: &str,
        found: String,
        expected: String,
    ) -> Problem {
        self.problem_with(Severity::Error, span, key, found, expected)
    }

    pub fn warning(
        &self,
        span: Range<usize>,
        key: &str,
        found: String,
        expected: String,
    ) -> Problem {
        self.problem_with(Severity::Warning, span, key, found, expected)
    }

    fn problem_with(
        &self,
        severity: Severity,
        span: Range<usize>,
        key: &str,
        found: String,
        expected: String,
    ) -> Problem {
        let (line, column) = self.line_col(span.start);
        Problem {
            severity,
            file: self.name.clone(),
            line,
            column,
            key: key.to_owned(),
            found,
            expected,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::SourceText;

    #[test]
    fn line_and_column_count_characters() {
        let src = SourceText::new("p.toml", "a = 1\né = \"x\"\r\n\nzz");
        assert_eq!(src.line_col(0), (1, 1));
        assert_eq!(src.line_col(4), (1, 5));
        assert_eq!(src.line_col(6), (2, 1));
        // `=` after the two-byte `é` and a space is the third character.
        assert_eq!(src.line_col(9), (2, 3));
        assert_eq!(src.line_col(17), (4, 1));
        assert_eq!(src.line_col(18), (4, 2));
        assert_eq!(src.line_col(10_000), (4, 3), "past the end clamps");
        assert_eq!(SourceText::new("e", "").line_col(3), (1, 1));
    }
}
