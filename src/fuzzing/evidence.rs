//! The evidence report over arbitrary audit lines: the streaming tallies and all three
//! renderings must take any record content (odd times, huge counts, markup in every string)
//! without panicking, and the HTML must never carry markup from the records.

use crate::audit::evidence::{ChainResult, Collector, Format};

/// `data` as the bytes of an audit file.
pub fn evidence_trail(data: &[u8]) {
    let mut c = Collector::new(None, None, &[]);
    for line in data.split(|b| *b == b'\n') {
        c.line(line);
    }
    let chain = ChainResult {
        intact: data.len().is_multiple_of(2),
        records: 0,
        first_seq: None,
        last_seq: None,
        last_hash: None,
        starts_at_genesis: false,
        files: vec!["<fuzz>".into()],
        problems: Vec::new(),
        problem_count: 0,
        warnings: Vec::new(),
        first_bad_line: Some(String::from_utf8_lossy(data).chars().take(400).collect()),
    };
    let e = c.finish(chain);
    let html = e.render(Format::Html);
    assert!(
        !html.contains("<script") && !html.contains("<img") && !html.contains("<iframe"),
        "record text reached the HTML as markup"
    );
    assert!(html.ends_with("</html>\n"));
    let _ = e.render(Format::Md);
    let json = e.render(Format::Json);
    assert!(
        serde_json::from_str::<serde_json::Value>(&json).is_ok(),
        "the JSON rendering does not parse"
    );
}
