//! The per-input checks, shared word for word by the fuzz targets (`fuzz/fuzz_targets/`), the
//! corpus replay test (`tests/fuzz_corpus.rs`) and the property test (`tests/proptest_gcra.rs`),
//! which include this file and `reference.rs` with `#[path]`. Each check panics on a failure.
//!
//! Inputs are raw bytes decoded by hand ([`Bytes`]), not through `arbitrary`, so replaying the
//! committed corpus needs no fuzzing dependency and decodes every file exactly as the fuzzer did.

use std::time::Duration;

use tollgate::quota::{HORIZON, MAX_TOLERANCE};
use tollgate::{Decision, Limiter, ManualClock, Quota};

use super::reference::{RefDecision, RefGcra, RefInsufficient, RefQuota, REF_MAX_TOLERANCE};

/// Most operations one `gcra_math` input runs (bounds the time per input).
pub const MAX_OPS: usize = 512;

/// Reads fixed-size little-endian values off the input, yielding zeros once it runs out.
#[derive(Debug)]
pub struct Bytes<'a> {
    data: &'a [u8],
}

impl<'a> Bytes<'a> {
    /// Reads from the start of `data`.
    pub fn new(data: &'a [u8]) -> Self {
        Bytes { data }
    }

    /// Whether every byte has been read.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// The next byte (0 past the end).
    pub fn u8(&mut self) -> u8 {
        match self.data.split_first() {
            Some((&b, rest)) => {
                self.data = rest;
                b
            }
            None => 0,
        }
    }

    /// The next 8 bytes as a little-endian u64 (zero-padded past the end).
    pub fn u64(&mut self) -> u64 {
        let mut buf = [0u8; 8];
        let n = self.data.len().min(8);
        buf[..n].copy_from_slice(&self.data[..n]);
        self.data = &self.data[n..];
        u64::from_le_bytes(buf)
    }
}

/// `quota_parse`: any string either parses or returns a typed error (no panic); a parsed quota
/// round-trips through `Display` and satisfies the validation the GCRA math relies on.
pub fn check_quota_parse(data: &[u8]) {
    let input = String::from_utf8_lossy(data);
    match input.parse::<Quota>() {
        Ok(q) => {
            let shown = q.to_string();
            assert_eq!(shown.parse::<Quota>(), Ok(q), "{input:?} parsed to {q:?}, shown as {shown:?}");
            let reference = RefQuota::new(q.count(), q.period_nanos(), q.burst())
                .unwrap_or_else(|| panic!("{input:?} parsed to {q:?}, which the reference rejects"));
            assert_eq!(u128::from(q.emission_interval_nanos()), reference.emission_interval, "{q:?}");
            assert_eq!(u128::from(q.burst()), reference.burst, "{q:?}");
            assert_eq!(q.period(), Duration::from_nanos(q.period_nanos()));
        }
        Err(e) => {
            // Errors render without panicking (their message echoes at most 64 chars of input).
            let _ = e.to_string();
        }
    }
}

/// One operation of a `gcra_math` run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GcraOp {
    /// `ManualClock::advance` by this many ns (saturating at `u64::MAX`).
    Advance(u64),
    /// `ManualClock::set` this many ns earlier than now (saturating at 0): time going backwards.
    SetBack(u64),
    /// `ManualClock::set` to this absolute time (may be past the horizon, where tollgate clamps).
    SetClock(u64),
    /// `Limiter::check_n`.
    Check(u32),
    /// `Limiter::peek`.
    Peek,
    /// `Limiter::reset`.
    Reset,
}

/// Builds a quota the way a user would (`Quota::new` then `with_burst`), asserting that
/// tollgate accepts exactly the quotas the reference accepts.
pub fn build_quota(count: u64, period_ns: u64, burst: u64) -> Option<(Quota, RefQuota)> {
    let built = Quota::new(count, Duration::from_nanos(period_ns)).and_then(|q| q.with_burst(burst));
    // `Quota::new` validates with burst = count before `with_burst` replaces it.
    let reference =
        RefQuota::new(count, period_ns, count).and_then(|_| RefQuota::new(count, period_ns, burst));
    match (built, reference) {
        (Ok(q), Some(r)) => {
            assert_eq!(u128::from(q.emission_interval_nanos()), r.emission_interval, "{q:?}");
            assert_eq!(u128::from(q.burst()), r.burst, "{q:?}");
            Some((q, r))
        }
        (Err(_), None) => None,
        (built, reference) => {
            panic!("({count}, {period_ns} ns, burst {burst}): tollgate {built:?}, reference {reference:?}")
        }
    }
}

fn decode_quota(input: &mut Bytes<'_>) -> Option<(Quota, RefQuota)> {
    let mode = input.u8() % 3;
    let (a, b, c) = (input.u64(), input.u64(), input.u64());
    let (count, period, burst) = match mode {
        // Tiny numbers: T of a few ns, heavy rounding in ⌈period / count⌉.
        0 => (1 + a % 8, 1 + b % 1_000, 1 + c % 8),
        // Realistic: up to 10⁴ per period of up to a day.
        1 => (1 + a % 10_000, 1 + b % 86_400_000_000_000, 1 + c % 10_000),
        // Anything: mostly rejected, and the rejection is checked against the reference.
        _ => (a, b, c),
    };
    build_quota(count, period, burst)
}

fn decode_op(input: &mut Bytes<'_>, quota: &RefQuota) -> GcraOp {
    let kind = input.u8();
    let value = input.u64();
    let raw = kind & 0x80 != 0;
    // Steps on the scale of the quota (a few tolerances), unless the high bit asks for raw.
    let scaled = u64::try_from(u128::from(value) % (2 * quota.tolerance() + 2)).unwrap_or(0);
    match kind % 6 {
        0 => GcraOp::Advance(if raw { value } else { scaled }),
        1 => GcraOp::SetBack(scaled),
        2 => GcraOp::SetClock(if raw { value } else { scaled }),
        3 => {
            let in_range = u64::try_from(u128::from(value) % (quota.burst + 2)).unwrap_or(0);
            GcraOp::Check(if raw { value as u32 } else { u32::try_from(in_range).unwrap_or(u32::MAX) })
        }
        4 => GcraOp::Peek,
        _ => GcraOp::Reset,
    }
}

/// `gcra_math`: decodes a quota and up to [`MAX_OPS`] operations and runs them with
/// [`run_ops`].
pub fn check_gcra_math(data: &[u8]) {
    let mut input = Bytes::new(data);
    let Some((quota, reference)) = decode_quota(&mut input) else { return };
    let mut ops = Vec::new();
    while !input.is_empty() && ops.len() < MAX_OPS {
        ops.push(decode_op(&mut input, &reference));
    }
    run_ops(quota, &ops);
}

fn observed(d: &Decision) -> RefDecision {
    assert_eq!(d.reset_after(), Duration::from_nanos(d.reset_after_nanos()));
    assert_eq!(d.retry_after(), d.retry_after_nanos().map(Duration::from_nanos));
    RefDecision {
        allowed: d.is_allowed(),
        limit: d.limit(),
        remaining: d.remaining(),
        reset_after: d.reset_after_nanos(),
        retry_after: d.retry_after_nanos(),
    }
}

/// Applies `ops` to a `Limiter<ManualClock>` through its public API and to [`RefGcra`], and
/// asserts every decision field equal (allowed, limit, remaining, reset_after, retry_after), the
/// same errors for impossible costs, and the same from the pure `Gcra::step` on the reference
/// state.
pub fn run_ops(quota: Quota, ops: &[GcraOp]) {
    assert_eq!(u128::from(MAX_TOLERANCE), REF_MAX_TOLERANCE, "the reference's horizon bound");
    let reference_quota = RefQuota::new(quota.count(), quota.period_nanos(), quota.burst())
        .unwrap_or_else(|| panic!("{quota:?} is valid in tollgate but not in the reference"));
    let clock = ManualClock::new();
    let limiter = Limiter::with_clock(quota, clock.clone());
    let gcra = *limiter.algorithm();
    let mut model = RefGcra::new(reference_quota);
    let mut raw_now: u64 = 0;
    for (i, &op) in ops.iter().enumerate() {
        // tollgate clamps the clock to its horizon; the reference applies the same clamp.
        let now = raw_now.min(HORIZON);
        let before = model;
        let cost = match op {
            GcraOp::Advance(by) => {
                clock.advance(Duration::from_nanos(by));
                raw_now = raw_now.saturating_add(by);
                None
            }
            GcraOp::SetBack(by) => {
                raw_now = raw_now.saturating_sub(by);
                clock.set(raw_now);
                None
            }
            GcraOp::SetClock(at) => {
                raw_now = at;
                clock.set(at);
                None
            }
            GcraOp::Check(n) => {
                let got = limiter.check_n(n).map(|d| observed(&d));
                let want = model.check(u128::from(now), u128::from(n));
                let got = got.map_err(|e| RefInsufficient { cost: e.cost, capacity: e.capacity });
                assert_eq!(got, want, "op {i} {op:?} at {now} ns, state {before:?}");
                Some(n)
            }
            GcraOp::Peek => {
                let want = model.evaluate(u128::from(now), 1).map(|(d, _)| d);
                assert_eq!(Ok(observed(&limiter.peek())), want, "op {i} peek at {now} ns, {before:?}");
                Some(1)
            }
            GcraOp::Reset => {
                limiter.reset();
                model.reset();
                None
            }
        };
        assert_eq!(clock_now(&clock), raw_now, "op {i} {op:?}: the clock");
        assert!(model.tat < 1 << 63, "op {i} {op:?}: TAT {} reaches the tombstone bit", model.tat);
        if let Some(n) = cost.filter(|&n| u128::from(n) <= reference_quota.burst) {
            // The pure step, from the reference's state before the op.
            let tat = u64::try_from(before.tat).unwrap_or(u64::MAX);
            let (decision, new_tat) = gcra.step(tat, now, u64::from(n));
            let (want, want_tat) = before
                .evaluate(u128::from(now), u128::from(n))
                .unwrap_or_else(|e| panic!("op {i} {op:?}: reference says {e:?} for an in-range cost"));
            assert_eq!(observed(&decision), want, "op {i} Gcra::step({tat}, {now}, {n})");
            let stored = want.allowed && n > 0;
            assert_eq!(new_tat.map(u128::from), stored.then_some(want_tat), "op {i} step new_tat");
        }
    }
}

fn clock_now(clock: &ManualClock) -> u64 {
    use tollgate::Clock;
    clock.now()
}
