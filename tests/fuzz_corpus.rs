//! Replays every committed fuzz corpus file (`fuzz/corpus/<target>/`) through the same checks the
//! fuzz targets run, so CI checks the corpus without a fuzzer. The checks live in
//! `fuzz/src/checks.rs` and the reference GCRA in `fuzz/src/reference.rs`; both are included
//! here as they are, not copied.

#[path = "../fuzz/src/reference.rs"]
#[allow(dead_code)] // the proptest uses parts of the reference this test does not
mod reference;

#[path = "../fuzz/src/checks.rs"]
#[allow(dead_code)]
mod checks;

use std::fs;
use std::path::{Path, PathBuf};

/// Every file under `fuzz/corpus/<target>/`, sorted (for a stable order in failure messages).
fn corpus(target: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz").join("corpus").join(target);
    let entries = fs::read_dir(&dir).unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()));
    let mut files: Vec<PathBuf> = entries
        .map(|entry| entry.unwrap_or_else(|e| panic!("listing {}: {e}", dir.display())).path())
        .filter(|path| path.is_file())
        .collect();
    files.sort();
    files
}

/// Runs `check` on every corpus file of `target`, naming the file if one fails, and returns how
/// many it replayed.
fn replay(target: &str, check: fn(&[u8])) -> usize {
    let files = corpus(target);
    for path in &files {
        let data = fs::read(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
        let outcome = std::panic::catch_unwind(|| check(&data));
        if let Err(panic) = outcome {
            eprintln!("corpus file {} failed", path.display());
            std::panic::resume_unwind(panic);
        }
    }
    files.len()
}

#[test]
fn quota_parse_corpus() {
    let replayed = replay("quota_parse", checks::check_quota_parse);
    assert!(replayed > 0, "fuzz/corpus/quota_parse is empty");
}

#[test]
fn gcra_math_corpus() {
    let replayed = replay("gcra_math", checks::check_gcra_math);
    assert!(replayed > 0, "fuzz/corpus/gcra_math is empty");
}
