//! Bodies of the fuzz targets, shared by `fuzz/` and the corpus-replay tests so a committed
//! reproducer runs in the normal test suite.

pub mod rewrite;
