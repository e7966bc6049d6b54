//! Replays the committed `fuzz/corpus/window_math/` inputs through the same check the
//! `window_math` fuzz target runs (included as is, not copied), plus a deterministic sweep of
//! generated inputs, so CI covers it without a fuzzer.

#[path = "../fuzz/src/window_checks.rs"]
mod window_checks;

use std::path::Path;

#[test]
fn window_math_corpus() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/window_math");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|e| e.unwrap_or_else(|e| panic!("listing: {e}")).path())
        .collect();
    files.sort();
    assert!(files.len() >= 8, "seed corpus present");
    for path in &files {
        let data = std::fs::read(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
        if let Err(p) = std::panic::catch_unwind(|| window_checks::check_window_math(&data)) {
            eprintln!("corpus file {} failed", path.display());
            std::panic::resume_unwind(p);
        }
    }
}

#[test]
fn window_math_generated_inputs() {
    let mut x: u64 = 0x1234_5678_9ABC_DEF1;
    for len in 0..400usize {
        let data: Vec<u8> = (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        window_checks::check_window_math(&data);
    }
}
