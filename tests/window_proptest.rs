//! Property tests: each window algorithm's pure step against a straightforward reference model
//! (u128 arithmetic for the counters, a plain `Vec` of timestamps for the log) over random
//! operation sequences, including clocks that go backwards.

use proptest::prelude::*;
use tollgate::{FixedWindow, Limiter, ManualClock, Quota, SlidingLog, SlidingWindow};

/// Random (time delta, backwards?, cost) operations.
fn ops() -> impl Strategy<Value = Vec<(u64, bool, u64)>> {
    prop::collection::vec((0u64..400, prop::bool::weighted(0.1), 1u64..6), 1..200)
}

/// Absolute times (deltas scaled by `scale`) and costs capped at `limit` (larger costs are
/// `InsufficientCapacity` before any step runs).
fn times(ops: &[(u64, bool, u64)], scale: u64, limit: u64) -> Vec<(u64, u64)> {
    let mut now: u64 = 1_000;
    ops.iter()
        .map(|&(delta, back, cost)| {
            let delta = delta * scale;
            now = if back { now.saturating_sub(delta) } else { now + delta };
            (now, cost.min(limit))
        })
        .collect()
}

proptest! {
    #[test]
    fn fixed_window_matches_u128_reference(limit in 1u64..20, window in 100u64..500, offset in 0u64..500, ops in ops()) {
        let w = FixedWindow::from_quota(Quota::new(limit, std::time::Duration::from_nanos(window)).unwrap())
            .unwrap()
            .with_offset(offset);
        let offset = u128::from(offset % window);
        let (mut state, mut idx, mut count) = (0u64, 0u128, 0u128);
        for (now, cost) in times(&ops, 1, limit) {
            let (d, stored) = w.step(state, now, cost);
            let now_idx = (u128::from(now) + offset) / u128::from(window);
            if now_idx > idx { idx = now_idx; count = 0; }
            let end = (idx + 1) * u128::from(window) - offset;
            let allowed = count + u128::from(cost) <= u128::from(limit);
            prop_assert_eq!(d.is_allowed(), allowed);
            if allowed { count += u128::from(cost); } else {
                prop_assert_eq!(u128::from(d.retry_after_nanos().unwrap()), end - u128::from(now));
            }
            prop_assert_eq!(u128::from(d.remaining()), u128::from(limit) - count);
            if let Some(s) = stored { state = s; }
            prop_assert_eq!(w.unpack(state), (idx as u64, count as u64));
        }
    }

    #[test]
    fn sliding_window_matches_u128_reference(limit in 1u64..20, window in 1_000u64..5_000, ops in ops()) {
        let w = SlidingWindow::from_quota(Quota::new(limit, std::time::Duration::from_nanos(window)).unwrap()).unwrap();
        let wn = u128::from(window);
        let (mut state, mut idx, mut prev, mut cur) = (0u64, 0u128, 0u128, 0u128);
        for (now, cost) in times(&ops, window / 100, limit) {
            let (d, stored) = w.step(state, now, cost);
            let n = u128::from(now);
            let now_idx = n / wn;
            // The view at `now`; the reference, like the cell, changes only on an admission.
            let (vidx, vprev, vcur, elapsed) = if now_idx > idx {
                let p = if now_idx == idx + 1 { cur } else { 0 };
                (now_idx, p, 0, n - now_idx * wn)
            } else if now_idx == idx {
                (idx, prev, cur, n - idx * wn)
            } else {
                (idx, prev, cur, 0)
            };
            let allowed = vprev * (wn - elapsed) + (vcur + u128::from(cost)) * wn <= u128::from(limit) * wn;
            prop_assert_eq!(d.is_allowed(), allowed);
            // remaining = limit − cur' − ⌈prev·(W − elapsed) / W⌉ (cur' counts this check if admitted).
            let used = vcur + (vprev * (wn - elapsed)).div_ceil(wn) + if allowed { u128::from(cost) } else { 0 };
            prop_assert_eq!(u128::from(d.remaining()), u128::from(limit).saturating_sub(used));
            if allowed {
                (idx, prev, cur) = (vidx, vprev, vcur + u128::from(cost));
            }
            prop_assert_eq!(stored.is_some(), allowed);
            if let Some(s) = stored {
                state = s;
                prop_assert_eq!(w.unpack(state), (idx as u64, prev as u64, cur as u64));
            }
            if !allowed {
                // Waiting exactly retry_after passes (no other traffic); one ns earlier fails.
                let retry = d.retry_after_nanos().unwrap();
                prop_assert!(w.step(state, now + retry, cost).0.is_allowed());
                if retry > 1 && now_idx >= vidx {
                    prop_assert!(!w.step(state, now + retry - 1, cost).0.is_allowed());
                }
            }
        }
    }

    #[test]
    fn sliding_log_matches_vec_reference(limit in 1u64..12, window in 1u64..500, ops in ops()) {
        let window = window.max(limit); // a quota is at most one cell per ns
        let log = SlidingLog::from_quota(Quota::new(limit, std::time::Duration::from_nanos(window)).unwrap()).unwrap();
        let clock = ManualClock::new();
        let limiter = Limiter::with_algorithm(log, clock.clone());
        let mut stamps: Vec<u64> = Vec::new();
        for (now, cost) in times(&ops, 1, limit) {
            clock.set(now);
            let d = limiter.check_n(cost as u32).unwrap();
            // Reference: stamps are max(now, newest); in window iff stamp + W > now.
            let in_window = stamps.iter().filter(|&&t| u128::from(t) + u128::from(window) > u128::from(now)).count() as u64;
            // Admission needs the `cost` oldest of the last `limit` stamps expired.
            let recent = &stamps[stamps.len().saturating_sub(limit as usize)..];
            let need = (cost as usize).saturating_sub(limit as usize - recent.len());
            let allowed = recent.iter().take(need).all(|&t| t + window <= now);
            prop_assert_eq!(d.is_allowed(), allowed, "now {} stamps {:?}", now, stamps);
            // remaining: the ring positions (the last `limit` stamps) not held by a stamp in the
            // window, after this check's. (A clock that went back can put older, overwritten
            // stamps in the window again: they no longer hold a position.)
            let held = recent.iter().filter(|&&t| t + window > now).count() as u64;
            let taken = held + if allowed { cost } else { 0 };
            prop_assert_eq!(d.remaining(), limit - taken, "now {} stamps {:?}", now, stamps);
            if allowed {
                let stamp = stamps.last().map_or(now, |&t| t.max(now));
                stamps.extend(std::iter::repeat_n(stamp, cost as usize));
                prop_assert!(in_window + cost <= limit);
            }
        }
    }
}
