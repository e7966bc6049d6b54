//! Arbitrary (quota, clock moves, check_n/peek/reset) sequences on a `Limiter<ManualClock>` and
//! on the pure `Gcra::step`, against the u128/i128 reference in `fuzz/src/reference.rs`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    tollgate_fuzz::checks::check_gcra_math(data);
});
