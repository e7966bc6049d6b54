//! Arbitrary `X-Forwarded-For` / `Forwarded` values → the parsers never panic and the client
//! address agrees with a naive right-to-left walk (checks in `fuzz/src/forwarded_check.rs`).
#![no_main]

#[path = "../src/forwarded_check.rs"]
mod forwarded_check;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    forwarded_check::check_forwarded(data);
});
