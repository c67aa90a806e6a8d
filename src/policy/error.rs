//! Problems found while loading a policy, worded for the security officer who edits it.
//!
//! Every problem names the file, the line and column (1-based, columns counted in characters),
//! the key it concerns, what was found and what was expected, so that
//! `file:line:col: error: key: found …, expected …` can be pasted into an editor's jump list.
//! A problem in a fragment (`include`) names the fragment and its position in it, and then
//! where it was included from.
//!
//! [`SourceText`] holds every file of one load (the policy and its fragments) at disjoint
//! offsets, so a byte span anywhere in the merged tree says which file it is in.

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
    /// For a problem in a fragment: where it was included (`policy.toml:2:12`), innermost
    /// first when fragments include fragments. Empty for the policy file itself.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub included_from: Vec<String>,
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
        write!(f, "found {}, expected {}", self.found, self.expected)?;
        if !self.included_from.is_empty() {
            write!(
                f,
                " (in a fragment included from {})",
                self.included_from.join(", itself included from ")
            )?;
        }
        Ok(())
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

/// One file of a load: its name (as given, or the fragment path as resolved), its text, and
/// where its offsets start in the load's shared offset space.
#[derive(Debug, Clone)]
pub(crate) struct SourceFile {
    pub name: String,
    pub text: String,
    base: usize,
    line_starts: Vec<usize>,
    /// The span (shared offsets) of the `include` entry that brought this file in.
    included_at: Option<Range<usize>>,
}

/// The texts of one policy load — the policy file first, then each fragment in the order it
/// was included — plus what is needed to turn a byte offset into file, line and column. Each
/// file's offsets start one past the previous file's end, so spans never collide.
#[derive(Debug, Clone)]
pub(crate) struct SourceText {
    files: Vec<SourceFile>,
}

impl SourceText {
    pub fn new(name: &str, text: &str) -> Self {
        let mut s = SourceText { files: Vec::new() };
        s.push(name, text, None);
        s
    }

    /// Add a fragment included at `included_at`; returns its index.
    pub fn add(&mut self, name: &str, text: &str, included_at: Range<usize>) -> usize {
        self.push(name, text, Some(included_at))
    }

    fn push(&mut self, name: &str, text: &str, included_at: Option<Range<usize>>) -> usize {
        let base = self.files.last().map_or(0, |f| f.base + f.text.len() + 1);
        let mut line_starts = vec![0];
        for (i, b) in text.bytes().enumerate() {
            if b == b'\n' {
                line_starts.push(i + 1);
            }
        }
        self.files.push(SourceFile {
            name: name.to_owned(),
            text: text.to_owned(),
            base,
            line_starts,
            included_at,
        });
        self.files.len() - 1
    }

    /// The policy file itself.
    pub fn main(&self) -> &SourceFile {
        &self.files[0]
    }

    pub fn file(&self, index: usize) -> &SourceFile {
        &self.files[index]
    }

    /// Every file of the load, the policy first.
    pub fn files(&self) -> &[SourceFile] {
        &self.files
    }

    /// Where file `index` starts in the shared offsets.
    pub fn base(&self, index: usize) -> usize {
        self.files[index].base
    }

    /// The file a shared offset falls in (offsets past a file's end belong to it).
    pub fn file_of(&self, offset: usize) -> usize {
        self.files
            .iter()
            .rposition(|f| f.base <= offset)
            .unwrap_or(0)
    }

    /// 1-based (line, column) of a shared offset within its own file; offsets past the end
    /// clamp to the end.
    pub fn line_col(&self, offset: usize) -> (usize, usize) {
        let file = &self.files[self.file_of(offset)];
        let offset = (offset - file.base).min(file.text.len());
        let line_idx = match file.line_starts.binary_search(&offset) {
            Ok(i) => i,
            Err(i) => i.saturating_sub(1),
        };
        let start = file.line_starts.get(line_idx).copied().unwrap_or(0);
        // Count characters, not bytes; the offset may fall inside a character after clamping,
        // so walk char boundaries.
        let column = file
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

    /// `file:line:col` of a shared offset.
    pub fn place(&self, offset: usize) -> String {
        let (line, column) = self.line_col(offset);
        format!("{}:{line}:{column}", self.files[self.file_of(offset)].name)
    }

    /// How to name `there` in a message about `here`: `line N` in the same file, else
    /// `file:line:col`.
    pub fn place_from(&self, there: usize, here: usize) -> String {
        if self.file_of(there) == self.file_of(here) {
            format!("line {}", self.line_col(there).0)
        } else {
            self.place(there)
        }
    }

    /// Where the file holding `offset` was included from, innermost first.
    fn inclusion_chain(&self, offset: usize) -> Vec<String> {
        let mut chain = Vec::new();
        let mut file = self.file_of(offset);
        while let Some(at) = &self.files[file].included_at {
            chain.push(self.place(at.start));
            file = self.file_of(at.start);
            if chain.len() > self.files.len() {
                break; // cannot happen (a file is only added once), but never loop
            }
        }
        chain
    }

    /// The load order of a file name (for sorting problems: the policy, then its fragments).
    pub fn rank(&self, name: &str) -> usize {
        self.files
            .iter()
            .position(|f| f.name == name)
            .unwrap_or(usize::MAX)
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
            file: self.files[self.file_of(span.start)].name.clone(),
            line,
            column,
            key: key.to_owned(),
            found,
            expected,
            included_from: self.inclusion_chain(span.start),
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

    #[test]
    fn offsets_of_each_file_map_to_that_file() {
        let mut src = SourceText::new("p.toml", "a = 1\nb = 2\n");
        let f = src.add("f.toml", "x\ny = 3", 4..5);
        let base = src.base(f);
        assert_eq!(base, 13, "one past the end of p.toml");
        assert_eq!(src.place(6), "p.toml:2:1");
        assert_eq!(
            src.place(12),
            "p.toml:3:1",
            "the end of a file is still that file"
        );
        assert_eq!(src.place(base), "f.toml:1:1");
        assert_eq!(src.place(base + 6), "f.toml:2:5");
        assert_eq!(src.place_from(base + 2, base), "line 2");
        assert_eq!(src.place_from(6, base), "p.toml:2:1");
        let p = src.problem(base + 2..base + 3, "y", "x".into(), "z".into());
        assert_eq!((p.file.as_str(), p.line, p.column), ("f.toml", 2, 1));
        assert_eq!(p.included_from, vec!["p.toml:1:5".to_string()]);
        assert!(
            p.to_string()
                .ends_with("found x, expected z (in a fragment included from p.toml:1:5)"),
            "{p}"
        );
        assert!(
            src.problem(0..1, "", "a".into(), "b".into())
                .included_from
                .is_empty()
        );
    }
}
