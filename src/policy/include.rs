//! `include = ["fragment.toml", …]`: shared fragments (domain lists, level definitions, rules)
//! merged into a policy before it is compiled.
//!
//! The rule is the simplest one that lets several policies share a file: a fragment is read as
//! if its tables had been written at the top of the including file, in `include` order, before
//! the file's own. Tables merge key by key; arrays of tables (`[[scheme.level]]`, `[[rule]]`,
//! `[[forward.signal]]`) are appended, so fragment levels come below the file's own and rule
//! order is fragment first; any other key set in two files is an error naming both places.
//! Fragments may include fragments (paths are relative to the file that names them); a cycle,
//! or the same fragment included twice, is an error at the `include` entry that closes it.
//!
//! Every fragment is added to the load's [`SourceText`], so a problem anywhere in the merged
//! tree is reported at its own file, line and column, with where that file was included from.
//!
//! Must not: read files itself. The caller passes a reader (`Policy::from_file` reads the
//! disk; text given without a file has no directory to resolve against and refuses includes),
//! which keeps this module pure.
//!
//! [`SourceText`]: super::error::SourceText

use std::ops::Range;
use std::path::{Component, Path, PathBuf};

use super::error::{Problem, SourceText};
use super::raw::{self, Key, Node, Value};

/// Reads one fragment: its identity (for cycle and duplicate detection: the canonical path
/// when there is one) and its text, or why it cannot be read.
pub(crate) type Reader<'r> = dyn FnMut(&Path) -> Result<(String, String), String> + 'r;

/// Resolve every `include` of the policy file (file 0 of `src`, parsed into `root`), adding
/// each fragment to `src`, and return the merged tree. `identity` is the policy file's own
/// identity as the reader would give it, so a fragment including it back is a cycle.
pub(crate) fn resolve(
    src: &mut SourceText,
    root: Node,
    identity: Option<String>,
    read: &mut Reader<'_>,
    problems: &mut Vec<Problem>,
) -> Node {
    let mut state = State {
        stack: identity
            .map(|id| vec![(id, src.main().name.clone())])
            .unwrap_or_default(),
        seen: Vec::new(),
        read,
        problems,
    };
    state.expand(src, 0, root)
}

struct State<'s, 'r> {
    /// The chain of files being expanded: (identity, name).
    stack: Vec<(String, String)>,
    /// Every fragment included so far: identity and the span of the entry that included it.
    seen: Vec<(String, Range<usize>)>,
    read: &'s mut Reader<'r>,
    problems: &'s mut Vec<Problem>,
}

impl State<'_, '_> {
    /// File `file`'s tree with its fragments merged in front of its own entries.
    fn expand(&mut self, src: &mut SourceText, file: usize, root: Node) -> Node {
        let Value::Table(mut entries) = root.value else {
            return root;
        };
        let mut merged: Vec<(Key, Node)> = Vec::new();
        if let Some(i) = entries.iter().position(|(k, _)| k.name == "include") {
            let (_, list) = entries.remove(i);
            for (name, span) in self.names(src, list) {
                if let Some(fragment) = self.fragment(src, file, &name, span) {
                    merge(src, &mut merged, fragment, "", self.problems);
                }
            }
        }
        merge(src, &mut merged, entries, "", self.problems);
        Node {
            span: root.span,
            value: Value::Table(merged),
        }
    }

    /// The file names of an `include` value, each with its span; reports anything else.
    fn names(&mut self, src: &SourceText, list: Node) -> Vec<(String, Range<usize>)> {
        let Value::Array(items) = list.value else {
            self.problems.push(src.problem(
                list.span,
                "include",
                list.value.type_name().to_owned(),
                "an array of fragment file names, e.g. `include = [\"domains.toml\"]`".into(),
            ));
            return Vec::new();
        };
        let mut out = Vec::new();
        for item in items {
            match item.value {
                Value::Str(name) if !name.trim().is_empty() => out.push((name, item.span)),
                other => self.problems.push(src.problem(
                    item.span,
                    "include",
                    if matches!(other, Value::Str(_)) {
                        "an empty file name".to_owned()
                    } else {
                        other.type_name().to_owned()
                    },
                    "a fragment file name (relative to this file)".into(),
                )),
            }
        }
        out
    }

    /// Read, parse and expand one fragment named in file `from` at `span`; `None` (with the
    /// problem reported at `span`) when it cannot be used.
    fn fragment(
        &mut self,
        src: &mut SourceText,
        from: usize,
        name: &str,
        span: Range<usize>,
    ) -> Option<Vec<(Key, Node)>> {
        let path = relative_to(&src.file(from).name, name);
        let shown = path.display().to_string();
        let (identity, text) = match (self.read)(&path) {
            Ok(r) => r,
            Err(why) => {
                self.problems.push(src.problem(
                    span,
                    "include",
                    format!("`{name}`: {shown} cannot be read ({why})"),
                    "a readable policy fragment".into(),
                ));
                return None;
            }
        };
        if let Some(at) = self.stack.iter().position(|(id, _)| *id == identity) {
            let mut chain: Vec<&str> = self.stack[at..].iter().map(|(_, n)| n.as_str()).collect();
            chain.push(&shown);
            self.problems.push(src.problem(
                span,
                "include",
                format!("an include cycle: {}", chain.join(" includes ")),
                "fragments that never include themselves, directly or through others".into(),
            ));
            return None;
        }
        if let Some((_, first)) = self.seen.iter().find(|(id, _)| *id == identity) {
            let first = src.place(first.start);
            self.problems.push(src.problem(
                span,
                "include",
                format!("`{name}` ({shown}) included a second time (first at {first})"),
                "each fragment included once per policy".into(),
            ));
            return None;
        }
        self.seen.push((identity.clone(), span.clone()));
        let index = src.add(&shown, &text, span);
        let root = match raw::parse(src, index) {
            Ok(root) => root,
            Err(p) => {
                self.problems.push(*p);
                return None;
            }
        };
        self.stack.push((identity, shown));
        let expanded = self.expand(src, index, root);
        self.stack.pop();
        match expanded.value {
            Value::Table(entries) => Some(entries),
            _ => None,
        }
    }
}

/// `name` resolved against the directory of the file called `from` (lexically: `.` and `..`
/// are folded so messages show a clean path; the reader decides what the file really is).
fn relative_to(from: &str, name: &str) -> PathBuf {
    let dir = Path::new(from).parent().unwrap_or(Path::new(""));
    let mut out = PathBuf::new();
    for c in dir.join(name).components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir
                if matches!(out.components().next_back(), Some(Component::Normal(_))) =>
            {
                out.pop();
            }
            other => out.push(other.as_os_str()),
        }
    }
    out
}

/// Arrays whose items are all tables: `[[x]]` sections, which several files may extend.
fn is_table_array(v: &Value) -> bool {
    matches!(v, Value::Array(items)
        if !items.is_empty() && items.iter().all(|i| matches!(i.value, Value::Table(_))))
}

/// Merge `incoming` into `into`: tables key by key, arrays of tables appended, anything else
/// set twice reported at the later key with the place of the first.
fn merge(
    src: &SourceText,
    into: &mut Vec<(Key, Node)>,
    incoming: Vec<(Key, Node)>,
    path: &str,
    problems: &mut Vec<Problem>,
) {
    for (key, node) in incoming {
        let child = if path.is_empty() {
            key.name.clone()
        } else {
            format!("{path}.{}", key.name)
        };
        let Some(slot) = into.iter_mut().find(|(k, _)| k.name == key.name) else {
            into.push((key, node));
            continue;
        };
        let both_tables =
            matches!(slot.1.value, Value::Table(_)) && matches!(node.value, Value::Table(_));
        let both_table_arrays = is_table_array(&slot.1.value) && is_table_array(&node.value);
        if both_tables || both_table_arrays {
            match (&mut slot.1.value, node.value) {
                (Value::Table(have), Value::Table(more)) => {
                    merge(src, have, more, &child, problems);
                }
                (Value::Array(have), Value::Array(more)) => have.extend(more),
                _ => {}
            }
            continue;
        }
        let first = if slot.0.span.is_empty() {
            slot.1.span.start
        } else {
            slot.0.span.start
        };
        let here = if key.span.is_empty() {
            node.span.clone()
        } else {
            key.span.clone()
        };
        problems.push(src.problem(
            here,
            path,
            format!(
                "`{}` set a second time (first at {})",
                key.name,
                src.place(first)
            ),
            "each key set once across the policy and its fragments".into(),
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::relative_to;
    use std::path::Path;

    #[test]
    fn fragment_paths_are_relative_to_the_including_file() {
        assert_eq!(
            relative_to("/etc/markgate/policies/a.toml", "shared/d.toml"),
            Path::new("/etc/markgate/policies/shared/d.toml")
        );
        assert_eq!(
            relative_to("/etc/p/a.toml", "../common/d.toml"),
            Path::new("/etc/common/d.toml")
        );
        assert_eq!(relative_to("a.toml", "./d.toml"), Path::new("d.toml"));
        assert_eq!(
            relative_to("/etc/p/a.toml", "/srv/d.toml"),
            Path::new("/srv/d.toml")
        );
        assert_eq!(
            relative_to("../x/a.toml", "../d.toml"),
            Path::new("../d.toml")
        );
    }
}
