//! Fuzz body for thread-key parsing (issue 12): `Message-ID`/`In-Reply-To`/`References`
//! values, Exchange `Thread-Index`, subject normalisation and the keys of a whole header block.

use crate::inspect::thread::{
    MAX_ID_LEN, MAX_REFERENCES, keys, message_ids, normalise_subject, parent_indexes, thread_index,
};

/// Any bytes: as a header value for each parser, and as a header block (`Name: value` lines).
/// Invariants: ids are non-empty, bounded, bracket- and space-free, and unique; a Thread-Index
/// is a 22-byte root plus whole 5-byte blocks and its ancestors shrink by one block each;
/// subject normalisation is idempotent; `keys` keeps at most `MAX_REFERENCES` references.
pub fn thread_refs(data: &[u8]) {
    let ids = message_ids(data);
    for (i, id) in ids.iter().enumerate() {
        assert!(!id.is_empty() && id.len() <= MAX_ID_LEN, "{id:?}");
        assert!(
            !id.contains(['<', '>', '(', ')']) && !id.contains(char::is_whitespace),
            "{id:?}"
        );
        assert!(!ids[..i].contains(id), "duplicate {id:?}");
    }
    if let Some(ti) = thread_index(data) {
        assert!(ti.len() >= 22 && (ti.len() - 22) % 5 == 0);
        let parents = parent_indexes(&ti);
        for (n, p) in parents.iter().enumerate() {
            assert_eq!(p.len(), ti.len() - 5 * (n + 1));
            assert!(ti.starts_with(p));
        }
    }
    let text = String::from_utf8_lossy(data);
    let once = normalise_subject(&text);
    assert_eq!(normalise_subject(&once), once, "idempotent");

    let mut headers: Vec<(&[u8], &[u8])> = Vec::new();
    for line in data.split(|b| *b == b'\n') {
        if let Some(colon) = line.iter().position(|b| *b == b':') {
            headers.push((&line[..colon], &line[colon + 1..]));
        }
    }
    let k = keys(&headers, Some(data));
    assert!(k.references.len() <= MAX_REFERENCES);
    assert!(k.digest.is_some());
}
