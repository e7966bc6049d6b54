//! Replays the committed corpus of the `forwarded` fuzz target (`fuzz/corpus/forwarded/`)
//! through the target's own check (`fuzz/src/forwarded_check.rs`, included as is).
#![cfg(feature = "tower")]

#[path = "../fuzz/src/forwarded_check.rs"]
mod forwarded_check;

use std::fs;
use std::path::Path;

#[test]
fn forwarded_corpus_replays() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/forwarded");
    let mut files: Vec<_> = fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    assert!(files.len() >= 20, "the corpus has {} files", files.len());
    for path in &files {
        let data = fs::read(path).unwrap();
        if std::panic::catch_unwind(|| forwarded_check::check_forwarded(&data)).is_err() {
            panic!("corpus file {} failed", path.display());
        }
    }
}

#[test]
fn every_selector_on_a_fixed_input() {
    // All 32 configurations over one tricky input, so a corpus change can't hide a config.
    for selector in 0u8..32 {
        let mut data = vec![selector];
        data.extend_from_slice(
            b"1.2.3.4, 10.0.0.9\nfor=\"[fd00::1]:80\";by=x, for=unknown\n[::ffff:10.0.0.1]:1, junk",
        );
        forwarded_check::check_forwarded(&data);
    }
}
