//! Test inputs made of pieces chosen at random (a xorshift generator from a fixed seed), for
//! the oracle tests that compare a rewritten parser with the one it replaced on many values.
//!
//! Test-only: compiled under `cfg(test)`.

/// `count` values of fewer than `most` pieces each. `state` is the generator's state (never
/// zero), carried from one call to the next so that two calls give different values.
pub(crate) fn values(pieces: &[&[u8]], most: u64, count: usize, state: &mut u64) -> Vec<Vec<u8>> {
    (0..count)
        .map(|_| {
            *state ^= *state << 13;
            *state ^= *state >> 7;
            *state ^= *state << 17;
            let s = *state;
            (0..s % most)
                .flat_map(|k| pieces[((s >> (4 * k + 8)) % pieces.len() as u64) as usize].iter())
                .copied()
                .collect()
        })
        .collect()
}
