//! Any string → `Quota::from_str` never panics; a parsed quota round-trips through `Display`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    tollgate_fuzz::checks::check_quota_parse(data);
});
