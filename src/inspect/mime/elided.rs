//! The check that a reduced message (see `crate::large`) still stands for the original: every
//! stand-in line lies in the body of the one leaf part it was made for, where the scan said.
//!
//! Must not: decode bodies or use the stream's text facts (the text pass does), or repair a
//! disagreement: any doubt is an error, and the caller falls back to the whole message.

use super::{MimeShape, PartRole};
use crate::inspect::stream::ElidedPart;

/// Check that every stand-in of `elided` lies in the body of one leaf part (not a container,
/// not a forwarded message) whose body starts where the scan said and ends where it said (or
/// just before that line's preceding line end, which the parser gives to the delimiter), and
/// that no part holds stand-ins of two scanned parts. Returns which scanned part each such
/// leaf holds.
pub(super) fn check_elided(
    shape: &MimeShape,
    elided: &[ElidedPart],
) -> Result<std::collections::HashMap<usize, usize>, String> {
    let mut owner = std::collections::HashMap::new();
    if elided.is_empty() {
        return Ok(owner);
    }
    if !shape.parsed {
        return Err("the reduced message does not parse".into());
    }
    for (e, ep) in elided.iter().enumerate() {
        for s in &ep.stand_ins {
            let Some(id) = shape.parts.iter().position(|p| {
                p.role != PartRole::Container
                    && p.body_range.start <= s.start
                    && s.end <= p.body_range.end
            }) else {
                return Err(format!(
                    "stand-in at byte {} is not inside a leaf body",
                    s.start
                ));
            };
            let p = &shape.parts[id];
            if p.role == PartRole::Rfc822 || p.content_type.starts_with("message/") {
                return Err(format!("stand-in inside forwarded message part {id}"));
            }
            let end_ok = ep
                .body_end
                .checked_sub(p.body_range.end)
                .is_some_and(|d| d <= 2);
            if p.body_range.start != ep.body_start || !end_ok {
                return Err(format!(
                    "part {id}: the parser's body {:?} is not the scanned body {}..{}",
                    p.body_range, ep.body_start, ep.body_end
                ));
            }
            if *owner.entry(id).or_insert(e) != e {
                return Err(format!("part {id} holds stand-ins of two scanned parts"));
            }
        }
    }
    Ok(owner)
}
