//! The evidence report as one self-contained HTML page: inline CSS and SVG, no script, no
//! external resource, so it can be archived, mailed and opened offline exactly as made.
//! Cells carry `data-*` attributes and classes so a test (or a script) can read the figures
//! back from the rendered page.

use std::fmt::Write as _;

use super::cells::{self, secs};
use super::svg;
use super::{ControlRow, Evidence};

/// Escape text for HTML content and attribute values.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

const STYLE: &str = r#"
body{font-family:"DejaVu Sans",Verdana,sans-serif;margin:24px;color:#222;max-width:1100px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid #ccc}
.meta{color:#555;font-size:13px}
table{border-collapse:collapse;font-size:13px;width:100%}
th,td{border:1px solid #ccc;padding:4px 6px;text-align:left;vertical-align:top}
th{background:#f0f0f0}td.n{text-align:right;font-variant-numeric:tabular-nums}
#chain{padding:12px 16px;border-radius:4px;margin:16px 0;font-size:14px}
#chain.ok{background:#e6f4ea;border:2px solid #3a7d44}
#chain.broken{background:#fdecea;border:2px solid #c0392b;color:#8b1a10}
#chain h2{border:none;margin:0 0 6px}
.met,.enforced{color:#2e6b36;font-weight:bold}
.not-met,.exceptions{color:#b03020;font-weight:bold}
.pending,.no-activity,.no-incidents,.no-rule{color:#777}
code,.mono{font-family:"DejaVu Sans Mono",monospace;font-size:12px;word-break:break-all}
td.rules{word-break:normal;overflow-wrap:break-word}
td.status small{color:#555;font-weight:normal}
.chart{display:block;margin:8px 0 18px}.ct{font-size:14px;font-weight:bold}.cl{font-size:11px;fill:#333}
dl.totals{display:grid;grid-template-columns:max-content auto;gap:2px 14px;font-size:14px}
dl.totals dt{color:#555}dl.totals dd{margin:0;font-weight:bold}
"#;

fn opt(s: &Option<String>) -> String {
    cells::or_dash(s, esc)
}

fn class_of(s: &str) -> String {
    s.replace(' ', "-")
}

/// The page.
pub fn render(e: &Evidence) -> String {
    let mut s = String::with_capacity(64 * 1024);
    let _ = write!(
        s,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>markgate compliance evidence</title><style>{STYLE}</style></head><body>"
    );
    let _ = write!(
        s,
        "<h1>markgate compliance evidence</h1><p class=\"meta\">Period: <span id=\"since\">{}</span> to <span id=\"until\">{}</span> (until exclusive) · records from {} to {} · gateway(s): {} · made {} by {}</p>",
        opt(&e.since),
        opt(&e.until),
        opt(&e.first_record),
        opt(&e.last_record),
        esc(&e.hosts.join(", ")),
        esc(&e.generated),
        esc(&e.generator)
    );
    chain(&mut s, e);

    let _ = write!(
        s,
        "<dl class=\"totals\" id=\"totals\"><dt>records in the period</dt><dd id=\"total-records\">{}</dd><dt>message decisions</dt><dd id=\"total-messages\">{}</dd><dt>information-security events</dt><dd id=\"total-security\">{}</dd></dl>",
        e.records, e.messages, e.security_events
    );

    controls(&mut s, e);

    s.push_str("<h2>Charts</h2>");
    s.push_str(&svg::per_day("Decisions per day, by outcome", &e.per_day));
    s.push_str(&svg::bars(
        "Decisions by marking level",
        &e.by_level,
        "#2f6f9f",
    ));
    s.push_str(&svg::bars(
        "Top refused rules (messages or recipients refused)",
        &e.top_refused_rules,
        "#c0392b",
    ));
    s.push_str(&svg::bars(
        "Top senders of refused mail",
        &e.top_refused_senders,
        "#e0a21b",
    ));
    if e.senders_capped {
        s.push_str("<p class=\"meta\">More distinct refused senders than the report tallies one by one; the rest are counted as “(others)”.</p>");
    }

    policies(&mut s, e);
    health(&mut s, e);
    method(&mut s);
    s.push_str("</body></html>\n");
    s
}

fn chain(s: &mut String, e: &Evidence) {
    let c = &e.chain;
    let range = cells::seq_range(c);
    let start = if c.starts_at_genesis {
        "from the first record of the chain"
    } else {
        "older records are in files not given"
    };
    if c.intact {
        let _ = write!(
            s,
            "<section id=\"chain\" class=\"ok\"><h2>Audit trail integrity: verified</h2><p id=\"chain-status\">Hash chain intact: {} records, {range} ({start}).</p><p>Last record hash (compare with the syslog copy): <code id=\"last-hash\">{}</code></p>",
            c.records,
            opt(&c.last_hash)
        );
    } else {
        let _ = write!(
            s,
            "<section id=\"chain\" class=\"broken\"><h2>Audit trail integrity: BROKEN</h2><p id=\"chain-status\">Hash chain NOT intact: {} problem(s) in {} records ({range}). The figures below are computed from the records as they are, and cannot be relied on past the first problem.</p>",
            c.problem_count, c.records
        );
        if let Some(p) = c.problems.first() {
            let _ = write!(
                s,
                "<p id=\"first-bad\">First bad record: <b>{}</b> at <code>{}:{}</code>{}: {}</p>",
                esc(&cells::kind(p)),
                esc(&p.file.display().to_string()),
                p.line,
                cells::seq_note(p),
                esc(&p.detail)
            );
        }
        if let Some(l) = &c.first_bad_line {
            let _ = write!(s, "<p>The line as found: <code>{}</code></p>", esc(l));
        }
        if c.problems.len() > 1 {
            s.push_str("<ul>");
            for p in c.problems.iter().skip(1) {
                let _ = write!(
                    s,
                    "<li><code>{}:{}</code> {}</li>",
                    esc(&p.file.display().to_string()),
                    p.line,
                    esc(&p.detail)
                );
            }
            s.push_str("</ul>");
        }
    }
    for w in &c.warnings {
        let _ = write!(
            s,
            "<p>Warning: <code>{}:{}</code> {}</p>",
            esc(&w.file.display().to_string()),
            w.line,
            esc(&w.detail)
        );
    }
    let _ = write!(
        s,
        "<p class=\"meta\">Files, oldest first: {}</p></section>",
        esc(&c.files.join(", "))
    );
}

fn controls(s: &mut String, e: &Evidence) {
    s.push_str("<h2>Controls</h2><table id=\"controls\"><thead><tr><th>Control</th><th>Requirement</th><th>Enforced by (policy rules)</th><th>Messages acted on</th><th>Incidents</th><th>Incident → alert p50</th><th>max</th><th>CoCo-11 24 h bound</th><th>Status</th></tr></thead><tbody>");
    for r in &e.controls {
        control_row(s, r);
    }
    s.push_str("</tbody></table>");
    if e.unmapped_messages > 0 {
        let _ = write!(
            s,
            "<p class=\"meta\" id=\"unmapped\">{} decision(s) were made under a policy whose rule → control map is not in these files (no <code>policy_loaded</code> record for its digest): they count for the audit control only. Give the policy with <code>--policy FILE</code> to map them.</p>",
            e.unmapped_messages
        );
    }
}

fn control_row(s: &mut String, r: &ControlRow) {
    let extra: Vec<String> = [
        (r.shadow_messages, "in shadow mode (not enforced)"),
        (r.undeliverable, "alert(s) undeliverable"),
        (r.unalerted_overdue, "incident(s) with no alert after 24 h"),
        (r.pending, "alert(s) pending"),
    ]
    .into_iter()
    .filter(|&(n, _)| n > 0)
    .map(|(n, what)| format!("{n} {what}"))
    .collect();
    let extra = if extra.is_empty() {
        String::new()
    } else {
        format!("<br><small>{}</small>", esc(&extra.join("; ")))
    };
    let _ = write!(
        s,
        "<tr data-control=\"{id}\"><td class=\"id\"><b>{id}</b><br><small>{fw}</small></td><td>{req}</td><td class=\"rules mono\">{rules}</td><td class=\"n messages\" data-value=\"{m}\">{m}</td><td class=\"n incidents\" data-value=\"{i}\">{i}</td><td class=\"n p50\" data-value=\"{p50v}\">{p50}</td><td class=\"n max\" data-value=\"{maxv}\">{max}</td><td class=\"bound {bc}\">{bound}</td><td class=\"status {sc}\">{status}{extra}</td></tr>",
        id = esc(&r.id),
        fw = esc(&r.framework),
        req = esc(&r.requirement),
        rules = cells::rules(r, esc),
        m = r.messages,
        i = r.incidents,
        p50v = r
            .latency_p50_secs
            .map(|v| format!("{v:.3}"))
            .unwrap_or_default(),
        p50 = secs(r.latency_p50_secs),
        maxv = r
            .latency_max_secs
            .map(|v| format!("{v:.3}"))
            .unwrap_or_default(),
        max = secs(r.latency_max_secs),
        bc = class_of(&r.bound_24h),
        bound = esc(&r.bound_24h),
        sc = class_of(&r.status),
        status = esc(&r.status),
    );
}

fn policies(s: &mut String, e: &Evidence) {
    s.push_str("<h2>Policy in force</h2><table id=\"policies\"><thead><tr><th>Policy</th><th>Version</th><th>Digest (SHA-256)</th><th>First decision</th><th>Last decision</th><th>Decisions</th><th>Controls mapped</th></tr></thead><tbody>");
    if e.policies.is_empty() {
        s.push_str("<tr><td colspan=\"7\">no decisions in the period</td></tr>");
    }
    for p in &e.policies {
        let _ = write!(
            s,
            "<tr data-digest=\"{d}\"><td>{}</td><td>{}</td><td class=\"mono\">{d}</td><td>{}</td><td>{}</td><td class=\"n\">{}</td><td>{}</td></tr>",
            opt(&p.name),
            opt(&p.version),
            esc(&p.from),
            esc(&p.to),
            p.messages,
            if p.mapped {
                "yes"
            } else {
                "no (no policy_loaded record)"
            },
            d = esc(&p.digest),
        );
    }
    s.push_str("</tbody></table>");
    s.push_str("<h2>Policy loads and reloads</h2><table id=\"policy-events\"><thead><tr><th>Time</th><th>seq</th><th>Event</th><th>File</th><th>Policy</th><th>Version</th><th>Digest</th><th>Rules mapped to controls</th></tr></thead><tbody>");
    if e.policy_events.is_empty() {
        s.push_str("<tr><td colspan=\"8\">none in the period</td></tr>");
    }
    for p in &e.policy_events {
        let what = match &p.error {
            Some(err) => format!(
                "<span class=\"exceptions\">reload refused</span>: {} (kept the digest shown)",
                esc(err)
            ),
            None => esc(&p.trigger),
        };
        let _ = write!(
            s,
            "<tr class=\"{}\"><td>{}</td><td class=\"n\">{}</td><td>{what}</td><td class=\"mono\">{}</td><td>{}</td><td>{}</td><td class=\"mono\">{}</td><td class=\"n\">{}</td></tr>",
            class_of(&p.trigger),
            esc(&p.time),
            p.seq,
            esc(&p.path),
            opt(&p.name),
            opt(&p.version),
            esc(&p.digest),
            p.mapped_rules
        );
    }
    s.push_str("</tbody></table>");
}

fn health(s: &mut String, e: &Evidence) {
    let h = &e.health;
    let _ = write!(
        s,
        "<h2>Audit trail health</h2><table id=\"health\"><tbody><tr><td>audit sink outages</td><td class=\"n\">{}</td></tr><tr><td>messages tempfailed during outages (retried by the MTA)</td><td class=\"n\">{}</td></tr><tr><td>crash fragments documented by the writer</td><td class=\"n\">{}</td></tr><tr><td>internal errors</td><td class=\"n\">{}</td></tr><tr><td>incidents dropped from a full alert queue</td><td class=\"n\">{}</td></tr><tr><td>lines that are not records</td><td class=\"n\">{}</td></tr></tbody></table>",
        h.outages,
        h.refused_during_outages,
        h.chain_resumed,
        h.internal_errors,
        h.alerts_dropped,
        h.unparsed_lines
    );
}

fn method(s: &mut String) {
    s.push_str("<h2>How the figures are made</h2><ul class=\"meta\">\
<li>The hash chain is verified first (<code>markgate audit verify</code>, same files). Every figure comes from the audit records alone.</li>\
<li>A decision counts for a control when it cites a rule that the policy in force (by the digest the decision records) maps to that control with <code>controls = [...]</code>; the map is in the <code>policy_loaded</code> record of that digest. The audit control counts every recorded decision.</li>\
<li>Incidents are the blocked auto-forwards, above-ceiling mail and forged labels the decisions record, and any incident an alert names. The time to alert runs from the incident to the <code>alert_delivered</code> record naming it. The 24 h bound is met when every incident's alert was delivered within 24 h; an incident with no alert 24 h before the end of the trail, or an undeliverable alert, fails it.</li>\
<li>Shadow-mode decisions are counted as acted on but marked as exceptions: nothing was enforced.</li></ul>");
}

#[cfg(test)]
mod tests {
    use super::esc;

    #[test]
    fn escapes_markup() {
        assert_eq!(
            esc("<b>\"x\" & 'y'</b>"),
            "&lt;b&gt;&quot;x&quot; &amp; &#39;y&#39;&lt;/b&gt;"
        );
    }
}
