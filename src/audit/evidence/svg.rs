//! Charts as inline SVG: plain shapes and text with fixed geometry, no script, no fonts or
//! images fetched, so the page renders the same offline, in a mail client or printed.

use std::fmt::Write as _;

use super::html::esc;

/// Colours of the per-day outcomes, in [`super::collect::OUTCOMES`] order.
pub const OUTCOME_COLOURS: [&str; 7] = [
    "#3a7d44", "#e0a21b", "#c0392b", "#7f8c8d", "#8e44ad", "#34495e", "#5dade2",
];

const WIDTH: f64 = 760.0;

/// A round-number top for an axis holding `max`.
fn nice_max(max: u64) -> u64 {
    if max <= 5 {
        return 5;
    }
    let mag = 10u64.pow((max as f64).log10().floor() as u32);
    for step in [1u64, 2, 5, 10] {
        let top = step.saturating_mul(mag);
        if top >= max {
            return top;
        }
    }
    u64::MAX
}

/// Decisions per day, stacked by outcome, with a legend.
pub fn per_day(title: &str, days: &[(String, Vec<(String, u64)>)]) -> String {
    let mut s = String::new();
    let (left, top, plot_h, bottom) = (56.0, 34.0, 200.0, 70.0);
    let height = top + plot_h + bottom;
    let _ = write!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" class="chart" role="img" width="{WIDTH}" height="{height}" viewBox="0 0 {WIDTH} {height}"><title>{}</title>"#,
        esc(title)
    );
    let _ = write!(
        s,
        r##"<text x="0" y="18" class="ct">{}</text>"##,
        esc(title)
    );
    if days.is_empty() {
        let _ = write!(
            s,
            r#"<text x="{left}" y="{}" class="cl">no decisions in the period</text></svg>"#,
            top + 20.0
        );
        return s;
    }
    let totals: Vec<u64> = days
        .iter()
        .map(|(_, row)| row.iter().map(|(_, n)| n).sum())
        .collect();
    let ymax = nice_max(totals.iter().copied().max().unwrap_or(0));
    let plot_w = WIDTH - left - 10.0;
    // Axis and grid: 5 steps.
    for i in 0..=5 {
        let v = (u128::from(ymax) * i as u128 / 5) as u64;
        let y = top + plot_h - plot_h * i as f64 / 5.0;
        let _ = write!(
            s,
            r##"<line x1="{left}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#ddd"/><text x="{:.1}" y="{:.1}" class="cl" text-anchor="end">{v}</text>"##,
            left + plot_w,
            left - 6.0,
            y + 4.0
        );
    }
    let slot = plot_w / days.len() as f64;
    let bar = (slot * 0.8).clamp(1.0, 40.0);
    let label_every = (days.len() / 12).max(1);
    for (i, (day, row)) in days.iter().enumerate() {
        let x = left + slot * i as f64 + (slot - bar) / 2.0;
        let mut y = top + plot_h;
        for (j, (outcome, n)) in row.iter().enumerate() {
            if *n == 0 {
                continue;
            }
            let h = plot_h * *n as f64 / ymax as f64;
            y -= h;
            let _ = write!(
                s,
                r#"<rect x="{x:.1}" y="{y:.1}" width="{bar:.1}" height="{h:.1}" fill="{}"><title>{} {}: {n}</title></rect>"#,
                OUTCOME_COLOURS[j % OUTCOME_COLOURS.len()],
                esc(day),
                esc(outcome)
            );
        }
        if i % label_every == 0 {
            let _ = write!(
                s,
                r#"<text x="{:.1}" y="{:.1}" class="cl" text-anchor="middle">{}</text>"#,
                x + bar / 2.0,
                top + plot_h + 14.0,
                esc(day.get(5..).unwrap_or(day))
            );
        }
    }
    // Legend.
    let mut lx = left;
    let ly = top + plot_h + 36.0;
    if let Some((_, row)) = days.first() {
        for (j, (outcome, _)) in row.iter().enumerate() {
            let _ = write!(
                s,
                r#"<rect x="{lx:.1}" y="{:.1}" width="10" height="10" fill="{}"/><text x="{:.1}" y="{ly:.1}" class="cl">{}</text>"#,
                ly - 9.0,
                OUTCOME_COLOURS[j % OUTCOME_COLOURS.len()],
                lx + 14.0,
                esc(outcome)
            );
            lx += 14.0 + 7.0 * outcome.len() as f64 + 18.0;
        }
    }
    s.push_str("</svg>");
    s
}

/// A horizontal bar chart of labelled counts (the order given is kept).
pub fn bars(title: &str, items: &[(String, u64)], colour: &str) -> String {
    let mut s = String::new();
    let (top, row_h, label_w) = (30.0, 22.0, 260.0);
    let rows = items.len().max(1) as f64;
    let height = top + rows * row_h + 8.0;
    let _ = write!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" class="chart" role="img" width="{WIDTH}" height="{height}" viewBox="0 0 {WIDTH} {height}"><title>{}</title><text x="0" y="18" class="ct">{}</text>"#,
        esc(title),
        esc(title)
    );
    if items.is_empty() {
        let _ = write!(
            s,
            r#"<text x="0" y="{:.1}" class="cl">none in the period</text></svg>"#,
            top + 14.0
        );
        return s;
    }
    let max = items.iter().map(|(_, n)| *n).max().unwrap_or(1).max(1);
    let plot_w = WIDTH - label_w - 70.0;
    for (i, (label, n)) in items.iter().enumerate() {
        let y = top + i as f64 * row_h;
        let w = (plot_w * *n as f64 / max as f64).max(1.0);
        let shown: String = if label.chars().count() > 38 {
            let cut: String = label.chars().take(37).collect();
            format!("{cut}…")
        } else {
            label.clone()
        };
        let _ = write!(
            s,
            r#"<text x="{:.1}" y="{:.1}" class="cl" text-anchor="end">{}</text><rect x="{label_w:.1}" y="{y:.1}" width="{w:.1}" height="{:.1}" fill="{colour}"><title>{}: {n}</title></rect><text x="{:.1}" y="{:.1}" class="cl">{n}</text>"#,
            label_w - 8.0,
            y + 14.0,
            esc(&shown),
            row_h - 6.0,
            esc(label),
            label_w + w + 6.0,
            y + 14.0
        );
    }
    s.push_str("</svg>");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn axis_tops_are_round() {
        assert_eq!(nice_max(0), 5);
        assert_eq!(nice_max(7), 10);
        assert_eq!(nice_max(120), 200);
        assert_eq!(nice_max(1000), 1000);
    }

    #[test]
    fn labels_are_escaped() {
        let svg = bars("t", &[("<a&b>".into(), 3)], "#000");
        assert!(svg.contains("&lt;a&amp;b&gt;"));
        assert!(!svg.contains("<a&b>"));
    }
}
