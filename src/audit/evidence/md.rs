//! The evidence report as Markdown: the same sections as the HTML page, with the charts as
//! tables, for tickets, wikis and plain-text archives.

use std::fmt::Write as _;

use super::Evidence;
use super::cells::{self, secs};

/// Make a value safe inside a Markdown table cell.
fn cell(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('|', "\\|")
        .replace('\n', " ")
        .replace('<', "&lt;")
}

fn opt(s: &Option<String>) -> String {
    cells::or_dash(s, cell)
}

/// The document.
pub fn render(e: &Evidence) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "# markgate compliance evidence\n");
    let _ = writeln!(
        s,
        "Period: {} to {} (until exclusive). Records from {} to {}. Gateway(s): {}. Made {} by {}.\n",
        opt(&e.since),
        opt(&e.until),
        opt(&e.first_record),
        opt(&e.last_record),
        cell(&e.hosts.join(", ")),
        cell(&e.generated),
        cell(&e.generator)
    );

    let c = &e.chain;
    let range = cells::seq_range(c);
    if c.intact {
        let _ = writeln!(
            s,
            "## Audit trail integrity: verified\n\nHash chain intact: {} records, {range}{}. Last record hash: `{}`.\n",
            c.records,
            if c.starts_at_genesis {
                ""
            } else {
                " (older records are in files not given)"
            },
            c.last_hash.as_deref().unwrap_or("—")
        );
    } else {
        let _ = writeln!(
            s,
            "## Audit trail integrity: **BROKEN**\n\n**Hash chain NOT intact**: {} problem(s) in {} records ({range}). The figures below cannot be relied on past the first problem.\n",
            c.problem_count, c.records
        );
        if let Some(p) = c.problems.first() {
            let _ = writeln!(
                s,
                "**First bad record**: {} at `{}:{}`{}: {}\n",
                cells::kind(p),
                p.file.display(),
                p.line,
                cells::seq_note(p),
                cell(&p.detail)
            );
        }
        if let Some(l) = &c.first_bad_line {
            let _ = writeln!(
                s,
                "The line as found:\n\n```\n{}\n```\n",
                l.replace("```", "'''")
            );
        }
        for p in c.problems.iter().skip(1) {
            let _ = writeln!(s, "- `{}:{}` {}", p.file.display(), p.line, cell(&p.detail));
        }
        if c.problems.len() > 1 {
            s.push('\n');
        }
    }
    for w in &c.warnings {
        let _ = writeln!(
            s,
            "Warning: `{}:{}` {}\n",
            w.file.display(),
            w.line,
            cell(&w.detail)
        );
    }
    let _ = writeln!(
        s,
        "Records in the period: **{}**; message decisions: **{}**; information-security events: **{}**.\n",
        e.records, e.messages, e.security_events
    );

    s.push_str("## Controls\n\n| Control | Requirement | Enforced by (policy rules) | Messages acted on | Incidents | Incident → alert p50 | max | CoCo-11 24 h bound | Status |\n|---|---|---|---:|---:|---:|---:|---|---|\n");
    for r in &e.controls {
        let rules = cells::rules(r, cell);
        let _ = writeln!(
            s,
            "| {} ({}) | {} | {} | {} | {} | {} | {} | {} | {} |",
            cell(&r.id),
            cell(&r.framework),
            cell(&r.requirement),
            rules,
            r.messages,
            r.incidents,
            secs(r.latency_p50_secs),
            secs(r.latency_max_secs),
            cell(&r.bound_24h),
            cell(&r.status)
        );
    }
    if e.unmapped_messages > 0 {
        let _ = writeln!(
            s,
            "\n{} decision(s) were made under a policy with no rule → control map in these files; give it with `--policy FILE`.",
            e.unmapped_messages
        );
    }

    s.push_str("\n## Decisions per day, by outcome\n\n");
    if let Some((_, first)) = e.per_day.first() {
        s.push_str("| Day |");
        for (o, _) in first {
            let _ = write!(s, " {} |", cell(o));
        }
        s.push_str("\n|---|");
        for _ in first {
            s.push_str("---:|");
        }
        s.push('\n');
        for (day, row) in &e.per_day {
            let _ = write!(s, "| {} |", cell(day));
            for (_, n) in row {
                let _ = write!(s, " {n} |");
            }
            s.push('\n');
        }
    } else {
        s.push_str("No decisions in the period.\n");
    }
    counts(&mut s, "Decisions by marking level", "Level", &e.by_level);
    counts(&mut s, "Top refused rules", "Rule", &e.top_refused_rules);
    counts(
        &mut s,
        "Top senders of refused mail",
        "Sender",
        &e.top_refused_senders,
    );

    s.push_str("\n## Policy in force\n\n| Policy | Version | Digest | First decision | Last decision | Decisions | Controls mapped |\n|---|---|---|---|---|---:|---|\n");
    for p in &e.policies {
        let _ = writeln!(
            s,
            "| {} | {} | `{}` | {} | {} | {} | {} |",
            opt(&p.name),
            opt(&p.version),
            p.digest,
            cell(&p.from),
            cell(&p.to),
            p.messages,
            if p.mapped { "yes" } else { "no" }
        );
    }
    s.push_str("\n## Policy loads and reloads\n\n| Time | seq | Event | File | Policy | Version | Digest |\n|---|---:|---|---|---|---|---|\n");
    for p in &e.policy_events {
        let what = match &p.error {
            Some(err) => format!("reload refused: {}", cell(err)),
            None => cell(&p.trigger),
        };
        let _ = writeln!(
            s,
            "| {} | {} | {what} | {} | {} | {} | `{}` |",
            cell(&p.time),
            p.seq,
            cell(&p.path),
            opt(&p.name),
            opt(&p.version),
            p.digest
        );
    }
    let h = &e.health;
    let _ = writeln!(
        s,
        "\n## Audit trail health\n\n| | |\n|---|---:|\n| audit sink outages | {} |\n| messages tempfailed during outages | {} |\n| crash fragments documented | {} |\n| internal errors | {} |\n| incidents dropped from a full alert queue | {} |\n| lines that are not records | {} |",
        h.outages,
        h.refused_during_outages,
        h.chain_resumed,
        h.internal_errors,
        h.alerts_dropped,
        h.unparsed_lines
    );
    s
}

fn counts(s: &mut String, title: &str, what: &str, rows: &[(String, u64)]) {
    let _ = writeln!(s, "\n## {title}\n");
    if rows.is_empty() {
        s.push_str("None in the period.\n");
        return;
    }
    let _ = writeln!(s, "| {what} | Count |\n|---|---:|");
    for (k, n) in rows {
        let _ = writeln!(s, "| {} | {n} |", cell(k));
    }
}
