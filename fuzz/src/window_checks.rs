//! The window_math fuzz check: arbitrary (limit, window, offset, clock moves, costs) sequences on
//! the pure fixed- and sliding-window steps against u128 references, and on a sliding-log
//! `Limiter<ManualClock>` against a plain `Vec` of timestamps. Shared by
//! `fuzz_targets/window_math.rs` and the corpus replay `tests/fuzz_corpus_windows.rs`.

use tollgate::{FixedWindow, Limiter, ManualClock, Quota, SlidingLog, SlidingWindow};

/// Reads little-endian integers from the input, 0 when it runs out.
struct Bytes<'a>(&'a [u8]);

impl Bytes<'_> {
    fn u64(&mut self, n: usize) -> u64 {
        let take = n.min(self.0.len());
        let mut v = 0u64;
        for (i, b) in self.0[..take].iter().enumerate() {
            v |= u64::from(*b) << (8 * i);
        }
        self.0 = &self.0[take..];
        v
    }
}

/// Runs all three checks on `data`; panics on any disagreement with a reference.
pub fn check_window_math(data: &[u8]) {
    let mut input = Bytes(data);
    let limit = 1 + input.u64(1) % 32;
    let window = 1 + input.u64(4) % 5_000_000;
    let offset = input.u64(4);
    let ops: Vec<(u64, u64)> = {
        let mut now = input.u64(2);
        let mut ops = Vec::new();
        while !input.0.is_empty() && ops.len() < 512 {
            let delta = input.u64(2);
            let cost = 1 + input.u64(1) % limit;
            now = if delta & 1 == 1 { now.saturating_sub(delta >> 1) } else { now + (delta >> 1) * 7 };
            ops.push((now, cost));
        }
        ops
    };
    let Ok(quota) = Quota::new(limit, std::time::Duration::from_nanos(window)) else { return };
    if let Ok(fixed) = FixedWindow::from_quota(quota) {
        check_fixed(&fixed.with_offset(offset), limit, window, &ops);
    }
    if let Ok(sliding) = SlidingWindow::from_quota(quota) {
        check_sliding(&sliding, limit, window, &ops);
    }
    if let Ok(log) = SlidingLog::from_quota(quota) {
        check_log(log, limit, window, &ops);
    }
}

fn check_fixed(w: &FixedWindow, limit: u64, window: u64, ops: &[(u64, u64)]) {
    let offset = u128::from(w.offset());
    let (mut state, mut idx, mut count) = (0u64, 0u128, 0u128);
    for &(now, cost) in ops {
        let (d, stored) = w.step(state, now, cost);
        let now_idx = (u128::from(now) + offset) / u128::from(window);
        let (vidx, vcount) = if now_idx > idx { (now_idx, 0) } else { (idx, count) };
        let allowed = vcount + u128::from(cost) <= u128::from(limit);
        assert_eq!(d.is_allowed(), allowed, "fixed {now} {cost}");
        if allowed {
            let remaining = u128::from(limit) - vcount - u128::from(cost);
            assert_eq!(u128::from(d.remaining()), remaining, "fixed remaining {now} {cost}");
            (idx, count) = (vidx, vcount + u128::from(cost));
        } else {
            let end = (vidx + 1) * u128::from(window) - offset;
            assert_eq!(u128::from(d.retry_after_nanos().unwrap_or(0)), end - u128::from(now));
        }
        if let Some(s) = stored {
            state = s;
            assert_eq!(w.unpack(state), (idx as u64, count as u64));
        }
    }
}

fn check_sliding(w: &SlidingWindow, limit: u64, window: u64, ops: &[(u64, u64)]) {
    let wn = u128::from(window);
    let (mut state, mut idx, mut prev, mut cur) = (0u64, 0u128, 0u128, 0u128);
    for &(now, cost) in ops {
        let (d, stored) = w.step(state, now, cost);
        let n = u128::from(now);
        let now_idx = n / wn;
        let (vidx, vprev, vcur, elapsed) = if now_idx > idx {
            (now_idx, if now_idx == idx + 1 { cur } else { 0 }, 0, n - now_idx * wn)
        } else if now_idx == idx {
            (idx, prev, cur, n - idx * wn)
        } else {
            (idx, prev, cur, 0)
        };
        let allowed = vprev * (wn - elapsed) + (vcur + u128::from(cost)) * wn <= u128::from(limit) * wn;
        assert_eq!(d.is_allowed(), allowed, "sliding {now} {cost}");
        if allowed {
            let weighted = (vprev * (wn - elapsed)).div_ceil(wn);
            let remaining = u128::from(limit) - weighted - vcur - u128::from(cost);
            assert_eq!(u128::from(d.remaining()), remaining, "sliding remaining {now} {cost}");
            (idx, prev, cur) = (vidx, vprev, vcur + u128::from(cost));
        } else {
            let retry = d.retry_after_nanos().unwrap_or(0);
            assert!(w.step(state, now.saturating_add(retry), cost).0.is_allowed(), "retry_after suffices");
        }
        if let Some(s) = stored {
            state = s;
            assert_eq!(w.unpack(state), (idx as u64, prev as u64, cur as u64));
        }
    }
}

fn check_log(log: SlidingLog, limit: u64, window: u64, ops: &[(u64, u64)]) {
    let clock = ManualClock::new();
    let limiter = Limiter::with_algorithm(log, clock.clone());
    let mut stamps: Vec<u64> = Vec::new();
    for &(now, cost) in ops {
        clock.set(now);
        let d = limiter.check_n(cost as u32).unwrap_or_else(|e| panic!("cost {cost} ≤ limit: {e}"));
        let recent = &stamps[stamps.len().saturating_sub(limit as usize)..];
        let need = (cost as usize).saturating_sub(limit as usize - recent.len());
        let allowed =
            recent.iter().take(need).all(|&t| u128::from(t) + u128::from(window) <= u128::from(now));
        assert_eq!(d.is_allowed(), allowed, "log {now} {cost} {stamps:?}");
        if allowed {
            let stamp = stamps.last().map_or(now, |&t| t.max(now));
            stamps.extend(std::iter::repeat_n(stamp, cost as usize));
            let in_window =
                stamps.iter().filter(|&&t| u128::from(t) + u128::from(window) > u128::from(now)).count()
                    as u64;
            assert!(in_window <= limit, "never more than limit in any window");
            assert_eq!(d.remaining(), limit - in_window, "log remaining {now} {cost}");
        } else {
            let retry = d.retry_after_nanos().unwrap_or(0);
            let blocking = recent[need - 1];
            assert_eq!(u128::from(retry), u128::from(blocking) + u128::from(window) - u128::from(now));
        }
    }
}
