//! Compiling `[notice]` into a [`NoticePolicy`] (`policy::notice` owns its meaning). A level
//! that is not one of the scheme's is reported with file, line and column like every other key.

use super::super::notice::NoticePolicy;
use super::super::raw::TableReader;
use super::Compiler;

impl<'a> Compiler<'a> {
    /// `[notice]`; absent, notices are marked at the scheme's lowest level.
    pub(super) fn notice(&mut self, t: Option<TableReader<'a>>) -> NoticePolicy {
        let Some(mut t) = t else {
            return NoticePolicy { level: 0 };
        };
        let mut p = std::mem::take(&mut self.problems);
        let marking = t.string("marking", &mut p);
        t.finish(&["marking"], &mut p);
        self.problems = p;
        let level = marking
            .and_then(|m| self.level_ref(&m, "notice.marking"))
            .unwrap_or(0);
        NoticePolicy { level }
    }
}
