//! Shared code of the fuzz targets: the wide-integer reference GCRA and the per-input checks.
//! `tests/fuzz_corpus.rs` and `tests/proptest_gcra.rs` in the main crate include these same
//! files with `#[path]`, so the corpus replay and the fuzzer run one piece of checking logic.

pub mod checks;
pub mod reference;
