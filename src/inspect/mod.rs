//! Read-only facts about one message, for `policy::decide`.
//!
//! - [`markings`]: protective markings in the Subject (RFC 2047-decoded, after any reply chain)
//!   and in the policy's label headers, each with where it was found, its raw text, the byte
//!   range inside the decoded subject, and the grammar's diagnostics.
//! - [`forward`]: auto-forward evidence from the policy's configured header signals.
//! - [`mime`]: the MIME shape (parts, roles, transfer encodings, charsets), disclaimer already
//!   present, signed or encrypted parts.
//! - [`routes`]: which `[[route]]`s the headers select (a header a mobile gateway sets).
//! - [`near_miss`]: subject text real clients write that resembles a marking (lower-case
//!   GPMS, an EPMS marking under a UK scheme, duplicated markers): malformed, never read.
//! - [`vendor`]: labels written by desktop products (Purview, Titus, Boldon James,
//!   Janusseal) in their own headers, mapped through the policy to markings.
//! - [`thread`] and [`digest`]: the keys the thread ledger files a message under (Message-ID,
//!   references, Exchange thread headers, the normalised subject) and the SHA-256 digest of its
//!   decoded text parts; the ledger itself is `crate::ledger`, reached only through the filter.
//! - [`stream`]: the same text facts computed line by line, for a part too large to hold (the
//!   bounded path of `crate::large`).
//!
//! Must not: change the message, decide anything, do I/O or log. The results are the plain data
//! types of `policy::facts`, so decide() never depends on how they were found.

pub mod digest;
pub mod forward;
#[cfg(test)]
pub(crate) mod generated;
pub mod markings;
pub mod mime;
pub mod near_miss;
pub mod routes;
pub mod stream;
pub mod thread;
pub mod vendor;

/// Bytes as text, invalid UTF-8 replaced, as `String::from_utf8_lossy` gives it. Nearly every
/// header and macro is valid UTF-8, and `str::from_utf8` says so a word at a time where the
/// lossy decoder walks byte by byte: a message passes some 40 header names, values and
/// macros through here.
pub fn utf8_lossy(b: &[u8]) -> std::borrow::Cow<'_, str> {
    match std::str::from_utf8(b) {
        Ok(s) => std::borrow::Cow::Borrowed(s),
        Err(_) => String::from_utf8_lossy(b),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn utf8_lossy_reads_as_the_lossy_decoder_reads() {
        let samples: [&[u8]; 8] = [
            b"",
            b"Subject",
            b" PROTECT: figures for the quarter",
            "caf\u{e9} \u{2014} OFFICIAL-SENSITIVE".as_bytes(),
            b"\xff\xfe broken",
            b"trailing half \xe2\x80",
            b"\xc3\x28 invalid continuation",
            b"mixed \xe9t\xe9 latin-1",
        ];
        for b in samples {
            let ours = super::utf8_lossy(b);
            assert_eq!(ours, String::from_utf8_lossy(b), "{b:?}");
            assert_eq!(
                matches!(ours, std::borrow::Cow::Borrowed(_)),
                std::str::from_utf8(b).is_ok()
            );
        }
    }
}
