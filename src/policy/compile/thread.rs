//! Compiling `[thread]` (with `[thread.downgrade]` and `[thread.redirect]`) into a
//! [`ThreadPolicy`]. Every mistake is reported like the rest of the policy: file, line, column,
//! what was found and what was expected. The meaning of each key: markgate-policy(5).

use toml::Spanned;

use super::super::controls::{self, Control};
use super::super::model::{Action, Directions, Reply, Rule, Situation};
use super::super::raw::TableReader;
use super::super::thread::{Downgrade, DowngradeAction, OnUnavailable, ThreadPolicy};
use super::Compiler;

pub(super) const DEFAULT_RETENTION_DAYS: u32 = 30;
const DEFAULT_DOWNGRADE_ID: &str = "THREAD-DOWNGRADE";
const DEFAULT_REDIRECT_ID: &str = "THREAD-REDIRECT";
const DEFAULT_DOWNGRADE_TEXT: &str = "Your message is marked {marking}, but the message it answers ({message_id}) was marked {original} (rule THREAD-DOWNGRADE). A reply may not be marked lower than the message it answers: mark it {original}, or ask the originator to downgrade the thread, and send it again.";
const DEFAULT_UNAVAILABLE_TEXT: &str =
    "The thread check is unavailable; please try again later (markgate ledger)";

impl<'a> Compiler<'a> {
    /// `[thread]`; `rules` are the compiled `[[rule]]`s (a redirect takes the action of the
    /// outbound `auto-forward-down` rule).
    pub(super) fn thread(&mut self, mut t: TableReader<'a>, rules: &[Rule]) -> ThreadPolicy {
        let mut p = std::mem::take(&mut self.problems);
        let retention = t.int("retention_days", &mut p);
        let on_unavailable = t.string("on_unavailable", &mut p);
        let down_t = t.table("downgrade", &mut p);
        let redirect_t = t.table("redirect", &mut p);
        let unavailable_reply = self.unavailable_reply(&mut t, &mut p);
        let span = t.span();
        t.finish(
            &[
                "retention_days",
                "on_unavailable",
                "code",
                "enhanced",
                "text",
                "downgrade",
                "redirect",
            ],
            &mut p,
        );
        self.problems = p;

        let retention_days = match retention {
            None => DEFAULT_RETENTION_DAYS,
            Some(r) => match u32::try_from(*r.get_ref()) {
                Ok(d) if (1..=3650).contains(&d) => d,
                _ => {
                    self.err(
                        r.span(),
                        "thread.retention_days",
                        format!("{}", r.get_ref()),
                        "a number of days from 1 to 3650".into(),
                    );
                    DEFAULT_RETENTION_DAYS
                }
            },
        };
        let on_unavailable = on_unavailable
            .as_ref()
            .and_then(|s| {
                self.keyword(
                    s,
                    "thread.on_unavailable",
                    OnUnavailable::NAMES,
                    OnUnavailable::from_name,
                )
            })
            .unwrap_or(OnUnavailable::FailOpen);
        let downgrade = self.downgrade(down_t);
        let (redirect_id, redirect_text, redirect_controls) =
            self.redirect(redirect_t, &downgrade.id);
        let redirect_rules: Vec<Rule> = rules
            .iter()
            .filter(|r| {
                r.when == Situation::AutoForwardDown
                    && r.direction != Directions::Inbound
                    && r.action != Action::Accept
            })
            .map(|r| Rule {
                id: redirect_id.clone(),
                ..r.clone()
            })
            .collect();
        if redirect_rules.is_empty() {
            self.warn(
                span,
                "thread",
                "no outbound `auto-forward-down` rule that acts".into(),
                "one: a redirect gets that rule's action (until then redirects are not refused)"
                    .into(),
            );
        }
        ThreadPolicy {
            retention_days,
            on_unavailable,
            unavailable_reply,
            downgrade,
            redirect_id,
            redirect_text,
            redirect_controls,
            redirect_rules,
        }
    }

    /// `[thread] code`/`enhanced`/`text`: the 451 under `on_unavailable = "tempfail"`.
    fn unavailable_reply(&mut self, t: &mut TableReader<'a>, p: &mut Vec<super::Problem>) -> Reply {
        let given = t.has("code") || t.has("enhanced") || t.has("text");
        let reply = if given {
            self.reply(t, Some(Action::Tempfail), "thread", p)
        } else {
            None
        };
        reply.unwrap_or_else(|| Reply {
            code: 451,
            enhanced: "4.4.3".into(),
            text: DEFAULT_UNAVAILABLE_TEXT.into(),
        })
    }

    fn downgrade(&mut self, t: Option<TableReader<'a>>) -> Downgrade {
        let mut d = Downgrade {
            id: DEFAULT_DOWNGRADE_ID.into(),
            direction: Directions::Outbound,
            action: DowngradeAction::Reject,
            reply: Reply {
                code: 550,
                enhanced: "5.7.1".into(),
                text: DEFAULT_DOWNGRADE_TEXT.into(),
            },
            allow_header: None,
            allow_by: Vec::new(),
            controls: Vec::new(),
        };
        let Some(mut t) = t else {
            return d;
        };
        let path = "thread.downgrade";
        let mut p = std::mem::take(&mut self.problems);
        let id = t.string("id", &mut p);
        let direction = t.string("direction", &mut p);
        let action = t.string("action", &mut p);
        let allow_header = t.string("allow_header", &mut p);
        let allow_by = t.strings("allow_by", &mut p);
        d.controls = controls::read(self.src, &mut t, &mut p);
        self.problems = p;
        if let Some(id) = id {
            d.id = self.rule_id(id, &format!("{path}.id"));
        }
        d.direction = self.directions(direction, &format!("{path}.direction"), d.direction);
        if let Some(a) = &action
            && let Some(a) = self.keyword(
                a,
                &format!("{path}.action"),
                DowngradeAction::NAMES,
                DowngradeAction::from_name,
            )
        {
            d.action = a;
        }
        let mut p = std::mem::take(&mut self.problems);
        let as_rule = match d.action {
            DowngradeAction::Reject => Action::Reject,
            DowngradeAction::Quarantine => Action::Quarantine,
            DowngradeAction::Shadow => Action::Accept,
        };
        let given = t.has("code") || t.has("enhanced") || t.has("text");
        if given && let Some(r) = self.reply(&mut t, Some(as_rule), path, &mut p) {
            d.reply = Reply {
                text: if r.text.is_empty() {
                    d.reply.text.clone()
                } else {
                    r.text
                },
                ..r
            };
        }
        if d.action == DowngradeAction::Quarantine && !t.has("text") {
            d.reply.text =
                "held: a reply marked {marking} answers a message marked {original}".to_owned();
        }
        t.finish(
            &[
                "id",
                "direction",
                "action",
                "code",
                "enhanced",
                "text",
                "allow_header",
                "allow_by",
                "controls",
            ],
            &mut p,
        );
        self.problems = p;
        if let Some(h) = allow_header
            && self.check_header_name(&h, &format!("{path}.allow_header"))
        {
            if allow_by.as_ref().is_none_or(Vec::is_empty) {
                self.err(
                    h.span(),
                    &format!("{path}.allow_header"),
                    "`allow_header` without `allow_by`".into(),
                    "`allow_by`: the addresses (or `*@domain`) that may downgrade a thread".into(),
                );
            }
            d.allow_header = Some(h.into_inner());
        }
        for a in allow_by.unwrap_or_default() {
            let v = a.get_ref();
            let ok = v.matches('@').count() == 1
                && !v.starts_with('@')
                && !v.ends_with('@')
                && !v.contains(char::is_whitespace);
            if ok {
                d.allow_by.push(a.into_inner());
            } else {
                self.err(
                    a.span(),
                    &format!("{path}.allow_by"),
                    format!("`{v}`"),
                    "an address such as `officer@example.gov.uk` or `*@example.gov.uk`".into(),
                );
            }
        }
        d
    }

    fn redirect(
        &mut self,
        t: Option<TableReader<'a>>,
        downgrade_id: &str,
    ) -> (String, Option<String>, Vec<Control>) {
        let Some(mut t) = t else {
            return (DEFAULT_REDIRECT_ID.into(), None, Vec::new());
        };
        let path = "thread.redirect";
        let mut p = std::mem::take(&mut self.problems);
        let id = t.string("id", &mut p);
        let text = t.string("text", &mut p);
        let controls = controls::read(self.src, &mut t, &mut p);
        t.finish(&["id", "text", "controls"], &mut p);
        self.problems = p;
        let id = match id {
            None => DEFAULT_REDIRECT_ID.to_owned(),
            Some(id) => {
                let span = id.span();
                let id = self.rule_id(id, &format!("{path}.id"));
                if id == downgrade_id {
                    self.err(
                        span,
                        &format!("{path}.id"),
                        format!("`{id}`, the downgrade rule's id too"),
                        "an id of its own, so audit records tell the two apart".into(),
                    );
                }
                id
            }
        };
        let text = text.and_then(|tx| {
            if tx.get_ref().trim().is_empty() || tx.get_ref().contains(['\r', '\n']) {
                self.err(
                    tx.span(),
                    &format!("{path}.text"),
                    "an empty or multi-line text".into(),
                    "one line telling the sender what happened and what to do".into(),
                );
                None
            } else {
                Some(tx.into_inner())
            }
        });
        (id, text, controls)
    }

    /// A rule id (letters, digits, `-`, `_`, `.`).
    fn rule_id(&mut self, id: Spanned<String>, key: &str) -> String {
        self.id_chars(&id, key);
        id.into_inner()
    }
}
