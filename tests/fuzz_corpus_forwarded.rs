//! Replays the committed corpus of the `forwarded` fuzz target (`fuzz/corpus/forwarded/`)
//! through the target's own check (`fuzz/src/forwarded_check.rs`, included as is).
#![cfg(feature = "tower")]

#[path = "../fuzz/src/forwarded_check.rs"]
mod forwarded_check;

use std::fs;
use std::net::IpAddr;
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

#[test]
fn corpus_files_find_the_real_client() {
    // Where a client's garbage sits left of what a trusted proxy wrote, the proxy's hop wins.
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/forwarded");
    for (file, client) in [
        // `\x80\xff\xfe, 1.2.3.4` from a trusted peer: only the first hop is unparseable.
        ("xff_non_ascii", "1.2.3.4"),
        ("xff_non_ascii_middle", "203.0.113.5"),
        ("fwd_unterminated_appended", "203.0.113.9"),
        ("fwd_unterminated_v6_appended", "2001:db8::9"),
        ("fwd_obfuscated_port", "192.0.2.43"),
        ("fwd_non_ascii", "198.51.100.7"),
        // A well-formed quoted comma still hides nothing: the trusted hop after `"1.2.3.4,5.6.7.8"`.
        ("fwd_quoted_comma", "10.0.0.4"),
    ] {
        let data = fs::read(dir.join(file)).unwrap();
        let expected: IpAddr = client.parse().unwrap();
        assert_eq!(forwarded_check::check_forwarded(&data), Some(expected), "{file}");
    }
}
