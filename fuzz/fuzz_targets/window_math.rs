//! Fixed-window and sliding-window pure steps vs u128 references, and the sliding log vs a
//! `Vec` of timestamps, over arbitrary operation sequences (`fuzz/src/window_checks.rs`).
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../src/window_checks.rs"]
mod window_checks;

fuzz_target!(|data: &[u8]| {
    window_checks::check_window_math(data);
});
