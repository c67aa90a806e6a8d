//! Test inputs made of pieces chosen at random (a xorshift generator from a fixed seed), for
//! the oracle tests that compare a rewritten parser or writer with the one it replaced on many
//! values.
//!
//! Test-only: compiled under `cfg(test)`.

/// xorshift64: deterministic, no dependency. The state must never be zero.
pub(crate) struct Rng(pub(crate) u64);

impl Rng {
    pub(crate) fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// A number below `n` (which must not be zero).
    pub(crate) fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    /// One of `from` (which must not be empty).
    pub(crate) fn pick<T: Copy>(&mut self, from: &[T]) -> T {
        from[self.below(from.len())]
    }
}

/// `count` values of fewer than `most` pieces each. `state` is the generator's state (never
/// zero), carried from one call to the next so that two calls give different values.
pub(crate) fn values(pieces: &[&[u8]], most: u64, count: usize, state: &mut u64) -> Vec<Vec<u8>> {
    let mut rng = Rng(*state);
    let out = (0..count)
        .map(|_| {
            let s = rng.next();
            (0..s % most)
                .flat_map(|k| pieces[((s >> (4 * k + 8)) % pieces.len() as u64) as usize].iter())
                .copied()
                .collect()
        })
        .collect();
    *state = rng.0;
    out
}
