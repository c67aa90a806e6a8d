//! EPMS `EXPIRES` / `DOWNTO`: a marking past its expiry date is treated at its DOWNTO level,
//! as the standard intends ("the classification … is downgraded to the DOWNTO value after the
//! EXPIRES date"). The marking itself is left as the sender wrote it; the decision records
//! both levels (the `expires` hit and `Effective::expired`).
//!
//! Pure: "now" is a fact the filter hands in (`Facts::now`); without it nothing expires. An
//! EXPIRES that is an event ("after the election") rather than a date never expires here: a
//! gateway cannot know when the event happens. Impossible dates are the grammar's
//! `epms.expires.date` diagnostic, not this module's business.

use serde::Serialize;

use super::Policy;
use super::decide::{Effective, RuleHit};
use super::facts::Label;
use super::model::Action;

/// What the expiry changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Expired {
    /// The level before expiry (the marking's SEC).
    pub from: String,
    /// The level after (its DOWNTO).
    pub to: String,
    /// The EXPIRES value.
    pub expires: String,
}

/// The effective marking after EXPIRES/DOWNTO, with a hit saying so when it expired.
pub fn apply(
    policy: &Policy,
    now: Option<i64>,
    chosen: Option<&Label>,
    mut effective: Effective,
    hits: &mut Vec<RuleHit>,
) -> Effective {
    let (Some(now), Some(label)) = (now, chosen) else {
        return effective;
    };
    let Some(e) = label.epms.as_ref() else {
        return effective;
    };
    let (Some(expires), Some(downto)) = (e.expires.as_deref(), e.downto.as_deref()) else {
        return effective;
    };
    let Some(at) = expiry_time(expires) else {
        return effective;
    };
    let Some(level) = policy.scheme.vocab.level_exact(downto) else {
        return effective;
    };
    if now < at || level >= effective.level {
        return effective;
    }
    let from = effective.level_name.clone();
    let to = policy.scheme.level_name(level).to_owned();
    hits.push(RuleHit {
        rule: "expires".into(),
        situation: "expired".into(),
        action: Action::Accept,
        recipient: None,
        detail: format!("EXPIRES={expires} has passed: treated as {to} (DOWNTO) instead of {from}"),
    });
    effective.level = level;
    effective.level_name = to.clone();
    effective.expired = Some(Expired {
        from,
        to,
        expires: expires.to_owned(),
    });
    effective
}

/// Unix time at which an EXPIRES value takes effect: a date (`2024-07-01`, the start of that
/// day, UTC) or a date-time (`2024-07-01T09:30:00Z`, offsets honoured, none = UTC); `None`
/// for event text or an impossible date.
pub fn expiry_time(v: &str) -> Option<i64> {
    use time::format_description::well_known::Rfc3339;
    let v = v.trim();
    if let Ok(t) = time::OffsetDateTime::parse(v, &Rfc3339) {
        return Some(t.unix_timestamp());
    }
    let (date, clock) = match v.split_once('T') {
        Some((d, t)) => (d, Some(t)),
        None => (v, None),
    };
    let date = parse_date(date)?;
    let secs = match clock {
        None => 0,
        Some(t) => {
            let t = t.trim_end_matches(['Z', 'z']);
            let mut it = t.split(':');
            let h: i64 = it.next()?.parse().ok()?;
            let m: i64 = it.next()?.parse().ok()?;
            let s: f64 = it.next().unwrap_or("0").parse().ok()?;
            if !(0..24).contains(&h) || !(0..60).contains(&m) || !(0.0..61.0).contains(&s) {
                return None;
            }
            h * 3600 + m * 60 + s as i64
        }
    };
    Some(date.midnight().assume_utc().unix_timestamp() + secs)
}

/// A calendar date `YYYY-MM-DD` that exists.
pub fn parse_date(d: &str) -> Option<time::Date> {
    let p: Vec<&str> = d.split('-').collect();
    if p.len() != 3 || p[0].len() != 4 || p[1].len() != 2 || p[2].len() != 2 {
        return None;
    }
    let y: i32 = p[0].parse().ok()?;
    let m: u8 = p[1].parse().ok()?;
    let day: u8 = p[2].parse().ok()?;
    time::Date::from_calendar_date(y, time::Month::try_from(m).ok()?, day).ok()
}
