//! [`Quota`]: how many cells per period, with what burst. All validation happens here, once, so
//! the arithmetic on the hot path cannot overflow.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use crate::clock::Nanos;

const NS_PER_US: u64 = 1_000;
const NS_PER_MS: u64 = 1_000_000;
const NS_PER_SEC: u64 = 1_000_000_000;
const NS_PER_MIN: u64 = 60 * NS_PER_SEC;
const NS_PER_HOUR: u64 = 60 * NS_PER_MIN;
const NS_PER_DAY: u64 = 24 * NS_PER_HOUR;

/// The time horizon every limiter supports: `now` is clamped to 100 years after the clock's
/// anchor. A process running longer sees time stand still there (checks keep working, refills
/// stop); nothing overflows.
pub const HORIZON: Nanos = 100 * 365 * NS_PER_DAY + 25 * NS_PER_DAY;

/// The largest `burst × emission_interval` (the time a full bucket takes to drain, τ + T) a
/// quota may have: 2⁶² ns ≈ 146 years. Together with [`HORIZON`] this keeps every stored
/// theoretical arrival time below 2⁶³, leaving bit 63 free for the eviction tombstone.
pub const MAX_TOLERANCE: Nanos = 1 << 62;

/// Longest rate string [`Quota::from_str`] looks at; longer input is rejected unread.
pub const MAX_RATE_STRING: usize = 128;

/// Why a quota was rejected.
///
/// ```
/// use tollgate::{Quota, QuotaError};
/// assert_eq!(Quota::per_second(0), Err(QuotaError::ZeroRate));
/// assert!(matches!("10/".parse::<Quota>(), Err(QuotaError::Parse { .. })));
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum QuotaError {
    /// The count of cells per period is zero.
    ZeroRate,
    /// The burst is zero: nothing could ever be admitted.
    ZeroBurst,
    /// The period is zero.
    ZeroPeriod,
    /// The quota's arithmetic could overflow within the supported [`HORIZON`], e.g. a period
    /// longer than ~146 years, or a burst × emission interval above [`MAX_TOLERANCE`].
    Overflow {
        /// Which quantity overflowed.
        what: &'static str,
    },
    /// A value too large: a rate faster than one cell per nanosecond (the clock's resolution;
    /// `"2000000000/s"`), or one valid for GCRA but too large for the chosen algorithm's packed
    /// state (e.g. a fixed-window or sliding-window limit above what its count field holds for
    /// that window length, see `FixedWindow::max_limit` and `SlidingWindow::max_limit`; a sliding
    /// log above its ring cap).
    TooLarge {
        /// Which quantity.
        what: &'static str,
        /// The value given.
        value: u64,
        /// The largest accepted.
        max: u64,
    },
    /// A per-key override whose state layout differs from the limiter's default (e.g. a fixed
    /// window of another length, a sliding log of another limit): the key's existing state could
    /// not be read under it.
    Incompatible {
        /// What must match.
        reason: &'static str,
    },
    /// A window algorithm was given a quota with a separate burst (`burst ≠ count`): a window
    /// limits `count` per `period` and has no bucket to burst from (see the
    /// [`window`](crate::window) module docs). Use `count/period` alone, or GCRA.
    UnsupportedBurst {
        /// The quota's count per period (what a window would limit).
        count: u64,
        /// The burst it also asked for.
        burst: u64,
    },
    /// A rate string could not be parsed.
    Parse {
        /// The offending input (cut to 64 characters).
        input: String,
        /// What was wrong with it.
        reason: &'static str,
    },
}

impl fmt::Display for QuotaError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            QuotaError::ZeroRate => f.write_str("rate must be at least 1 per period"),
            QuotaError::ZeroBurst => f.write_str("burst must be at least 1"),
            QuotaError::ZeroPeriod => f.write_str("period must be longer than zero"),
            QuotaError::Overflow { what } => {
                write!(f, "{what} is too large (quota arithmetic would overflow within 100 years)")
            }
            // A window too short for any count field (e.g. a 1 ns sliding window); other
            // limits of 0 (an admin memory budget of 0) take the plain wording.
            QuotaError::TooLarge { what, value, max: 0 } if what.ends_with("window limit") => {
                write!(f, "{what} {value} is too large: the period is too short for any (max 0)")
            }
            QuotaError::TooLarge { what, value, max } => write!(f, "{what} {value} is too large (max {max})"),
            QuotaError::Incompatible { reason } => {
                write!(f, "quota override incompatible with the limiter's algorithm: {reason}")
            }
            QuotaError::UnsupportedBurst { count, burst } => write!(
                f,
                "a window limits {count} per period and cannot also allow a burst of {burst} \
                 (drop ;burst=, or use GCRA)"
            ),
            QuotaError::Parse { input, reason } => {
                write!(
                    f,
                    "invalid rate {input:?}: {reason} (expected e.g. \"100/s\", \"5/m\", \"20/1500ms\")"
                )
            }
        }
    }
}

impl std::error::Error for QuotaError {}

/// A rate: `count` cells per `period`, admitting bursts of up to `burst` cells.
///
/// Under GCRA (the default algorithm) one cell is replenished every *emission interval*
/// `T = ⌈period / count⌉` — rounded **up**, so a limiter never admits more than promised — and a
/// bucket of `burst` cells absorbs bursts. `per_second(n)` is a sustained `n` per second with a
/// burst of `n`. Note that a token bucket can pass up to `2n − 1` in a single wall-clock second
/// (a full bucket, then a refill); use the sliding log for "never more than n in any window".
///
/// ```
/// use std::time::Duration;
/// use tollgate::Quota;
///
/// let q = Quota::per_second(3).unwrap();
/// assert_eq!(q.burst(), 3);
/// // 1s / 3 = 333_333_333.3… ns, rounded up:
/// assert_eq!(q.emission_interval(), Duration::from_nanos(333_333_334));
///
/// let q: Quota = "20/1500ms".parse().unwrap();
/// assert_eq!(q.to_string(), "20/1500ms");
/// let q = q.with_burst(5).unwrap();
/// assert_eq!(q.to_string(), "20/1500ms;burst=5");
/// assert_eq!(q.to_string().parse::<Quota>().unwrap(), q);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Quota {
    count: u64,
    period: Nanos,
    burst: u64,
    emission_interval: Nanos,
}

impl Quota {
    /// `count` cells per `period`, burst `count` ("`count` cells refilled over `period`").
    ///
    /// ```
    /// use std::time::Duration;
    /// use tollgate::Quota;
    /// let q = Quota::new(10, Duration::from_secs(60)).unwrap();
    /// assert_eq!(q.emission_interval(), Duration::from_secs(6));
    /// assert!(Quota::new(10, Duration::ZERO).is_err());
    /// ```
    pub fn new(count: u64, period: Duration) -> Result<Quota, QuotaError> {
        if period.is_zero() {
            return Err(QuotaError::ZeroPeriod);
        }
        let period = u64::try_from(period.as_nanos()).map_err(|_| QuotaError::Overflow { what: "period" })?;
        Self::from_parts(count, period, count)
    }

    /// `n` per second, burst `n`.
    ///
    /// ```
    /// let q = tollgate::Quota::per_second(100).unwrap();
    /// assert_eq!(q.to_string(), "100/s");
    /// ```
    pub fn per_second(n: u64) -> Result<Quota, QuotaError> {
        Self::from_parts(n, NS_PER_SEC, n)
    }

    /// `n` per minute, burst `n`.
    ///
    /// ```
    /// let q = tollgate::Quota::per_minute(5).unwrap();
    /// assert_eq!(q.emission_interval(), std::time::Duration::from_secs(12));
    /// ```
    pub fn per_minute(n: u64) -> Result<Quota, QuotaError> {
        Self::from_parts(n, NS_PER_MIN, n)
    }

    /// `n` per hour, burst `n`.
    ///
    /// ```
    /// let q = tollgate::Quota::per_hour(1000).unwrap();
    /// assert_eq!(q.to_string(), "1000/h");
    /// ```
    pub fn per_hour(n: u64) -> Result<Quota, QuotaError> {
        Self::from_parts(n, NS_PER_HOUR, n)
    }

    /// `n` per day, burst `n`.
    ///
    /// ```
    /// let q = tollgate::Quota::per_day(5).unwrap();
    /// assert_eq!(q.to_string(), "5/d");
    /// ```
    pub fn per_day(n: u64) -> Result<Quota, QuotaError> {
        Self::from_parts(n, NS_PER_DAY, n)
    }

    /// A token bucket holding `capacity` tokens, refilled at `refill_per_second` tokens a second.
    /// This is exactly GCRA with `burst = capacity` and `T = 1 s / refill_per_second`.
    ///
    /// ```
    /// let q = tollgate::Quota::token_bucket(50, 10).unwrap();
    /// assert_eq!((q.burst(), q.count()), (50, 10));
    /// ```
    pub fn token_bucket(capacity: u64, refill_per_second: u64) -> Result<Quota, QuotaError> {
        Self::from_parts(refill_per_second, NS_PER_SEC, capacity)
    }

    /// A leaky bucket (as a meter) of `capacity` that drains `leak_per_second` a second: the same
    /// limiter as [`Quota::token_bucket`], seen from the other side.
    ///
    /// ```
    /// let q = tollgate::Quota::leaky_bucket(20, 5).unwrap();
    /// assert_eq!(q, tollgate::Quota::token_bucket(20, 5).unwrap());
    /// ```
    pub fn leaky_bucket(capacity: u64, leak_per_second: u64) -> Result<Quota, QuotaError> {
        Self::token_bucket(capacity, leak_per_second)
    }

    /// The same rate with a different burst.
    ///
    /// ```
    /// let q = tollgate::Quota::per_second(10).unwrap().with_burst(1).unwrap();
    /// assert_eq!(q.burst(), 1);
    /// ```
    pub fn with_burst(self, burst: u64) -> Result<Quota, QuotaError> {
        Self::from_parts(self.count, self.period, burst)
    }

    fn from_parts(count: u64, period: Nanos, burst: u64) -> Result<Quota, QuotaError> {
        if count == 0 {
            return Err(QuotaError::ZeroRate);
        }
        if period == 0 {
            return Err(QuotaError::ZeroPeriod);
        }
        if burst == 0 {
            return Err(QuotaError::ZeroBurst);
        }
        if period > MAX_TOLERANCE {
            return Err(QuotaError::Overflow { what: "period" });
        }
        if count > period {
            // Faster than one cell per nanosecond: `T` would round up to 1 ns and the limiter
            // would deliver less than the rate it reports. The clock cannot resolve it anyway.
            return Err(QuotaError::TooLarge {
                what: "count per period (faster than one per ns: at most the period's length in ns)",
                value: count,
                max: period,
            });
        }
        // Round up: never admit faster than `count` per `period`.
        let emission_interval = period.div_ceil(count);
        let tolerance = burst
            .checked_mul(emission_interval)
            .filter(|&t| t <= MAX_TOLERANCE)
            .ok_or(QuotaError::Overflow { what: "burst × emission interval" })?;
        debug_assert!(tolerance >= emission_interval);
        Ok(Quota { count, period, burst, emission_interval })
    }

    /// Cells admitted per period in the long run.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// The period `count` refers to.
    pub fn period(&self) -> Duration {
        Duration::from_nanos(self.period)
    }

    /// The period in nanoseconds.
    pub fn period_nanos(&self) -> Nanos {
        self.period
    }

    /// Largest number of cells admitted at one instant.
    pub fn burst(&self) -> u64 {
        self.burst
    }

    /// `T`: one cell is replenished every `T` (`⌈period / count⌉`).
    pub fn emission_interval(&self) -> Duration {
        Duration::from_nanos(self.emission_interval)
    }

    /// `T` in nanoseconds.
    pub fn emission_interval_nanos(&self) -> Nanos {
        self.emission_interval
    }
}

/// Parses `"<count>/<period>[;burst=<b>]"`: `"100/s"`, `"10/m"`, `"1000/h"`, `"5/d"`,
/// `"20/1500ms"`, `"100/30s"`, `"7/250us"`. Units: `ns`, `us`/`µs`, `ms`, `s`/`sec`/`second(s)`,
/// `m`/`min`/`minute(s)`, `h`/`hr`/`hour(s)`, `d`/`day(s)`, in any case (`"10/S"`, `"5/Min"`;
/// `µs` with either micro sign), and so is the `burst` keyword (`"10/s;BURST=20"`). Whitespace
/// around the parts is tolerated; signs, exponents, fractions and input longer than
/// [`MAX_RATE_STRING`] are not, on either side of the `/` (each is a
/// [`QuotaError::Parse`] saying a whole non-negative number is expected).
///
/// ```
/// use tollgate::{Quota, QuotaError};
/// assert_eq!("10/S".parse::<Quota>(), "10/s".parse());
/// assert_eq!("10/s;BURST=20".parse::<Quota>(), "10/s;burst=20".parse());
/// let Err(QuotaError::Parse { reason, .. }) = "5/1.5s".parse::<Quota>() else { unreachable!() };
/// assert!(reason.contains("whole non-negative number"), "{reason}");
/// assert_eq!("7/250\u{3bc}s".parse::<Quota>(), "7/250us".parse());
/// // Faster than one cell per nanosecond: the clock cannot resolve it.
/// assert!(matches!("2000000000/s".parse::<Quota>(), Err(QuotaError::TooLarge { .. })));
/// ```
impl FromStr for Quota {
    type Err = QuotaError;

    fn from_str(input: &str) -> Result<Quota, QuotaError> {
        let err =
            |reason: &'static str| QuotaError::Parse { input: input.chars().take(64).collect(), reason };
        if input.len() > MAX_RATE_STRING {
            return Err(err("too long"));
        }
        let (rate, burst) = match input.split_once(';') {
            Some((rate, rest)) => {
                let rest = rest.trim();
                // The keyword is case-insensitive, like the units ("10/S;BURST=3").
                let value = strip_prefix_ignore_case(rest, "burst")
                    .map(str::trim_start)
                    .and_then(|r| r.strip_prefix('='));
                let value = value.ok_or_else(|| err("expected \";burst=<n>\" after the rate"))?;
                if value.contains(';') {
                    return Err(err("more than one \";burst=\" (or something after it)"));
                }
                (rate, Some(parse_count(value.trim()).map_err(err)?))
            }
            None => (input, None),
        };
        let (count, period) = rate.split_once('/').ok_or_else(|| err("missing '/'"))?;
        let count = parse_count(count.trim()).map_err(err)?;
        let period = period.trim();
        if period.is_empty() {
            return Err(err("missing period after '/'"));
        }
        let split = period.find(|c: char| !c.is_ascii_digit()).unwrap_or(period.len());
        let (amount, unit) = period.split_at(split);
        let unit = unit.trim();
        // A sign, a fraction, an exponent or a second number ("5/-1s", "5/1.5s", "5/1e3s") is
        // a malformed amount, not an unknown unit: say so, as the count side does.
        if unit.starts_with(['-', '+', '.', ',']) || unit.contains(|c: char| c.is_ascii_digit()) {
            return Err(err(PERIOD_NOT_WHOLE));
        }
        let amount = if amount.is_empty() { 1 } else { parse_count(amount).map_err(err)? };
        // Units are case-insensitive ("10/S", "5/Min"); both micro signs are accepted (U+00B5,
        // what a keyboard's µ gives, and the Greek letter U+03BC that some editors substitute).
        let unit = unit.to_ascii_lowercase();
        let unit_ns = match unit.as_str() {
            "ns" | "nanosecond" | "nanoseconds" => 1,
            "us" | "\u{b5}s" | "\u{3bc}s" | "microsecond" | "microseconds" => NS_PER_US,
            "ms" | "millisecond" | "milliseconds" => NS_PER_MS,
            "s" | "sec" | "secs" | "second" | "seconds" => NS_PER_SEC,
            "m" | "min" | "mins" | "minute" | "minutes" => NS_PER_MIN,
            "h" | "hr" | "hrs" | "hour" | "hours" => NS_PER_HOUR,
            "d" | "day" | "days" => NS_PER_DAY,
            "" => return Err(err("missing time unit (s, m, h, d, ms, ...)")),
            _ => return Err(err("unknown time unit")),
        };
        if amount == 0 {
            return Err(QuotaError::ZeroPeriod);
        }
        let period = amount.checked_mul(unit_ns).ok_or(QuotaError::Overflow { what: "period" })?;
        Quota::from_parts(count, period, burst.unwrap_or(count))
    }
}

/// Why a period such as `"1.5s"` or `"-1s"` is refused: its amount must be whole and unsigned.
const PERIOD_NOT_WHOLE: &str = "expected a whole non-negative number of time units in the period";

/// `s` after `prefix`, compared ignoring ASCII case; `None` if `s` does not start with it.
fn strip_prefix_ignore_case<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let (head, rest) = (s.get(..prefix.len())?, s.get(prefix.len()..)?);
    head.eq_ignore_ascii_case(prefix).then_some(rest)
}

fn parse_count(s: &str) -> Result<u64, &'static str> {
    if s.is_empty() {
        return Err("missing number");
    }
    if !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err("expected a whole non-negative number");
    }
    s.parse::<u64>().map_err(|_| "number too large")
}

impl fmt::Display for Quota {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/", self.count)?;
        let units = [
            (NS_PER_DAY, "d"),
            (NS_PER_HOUR, "h"),
            (NS_PER_MIN, "m"),
            (NS_PER_SEC, "s"),
            (NS_PER_MS, "ms"),
            (NS_PER_US, "us"),
            (1, "ns"),
        ];
        for (unit_ns, name) in units {
            if self.period.is_multiple_of(unit_ns) {
                let amount = self.period / unit_ns;
                if amount == 1 {
                    f.write_str(name)?; // "10/ms", as written, not "10/1ms"
                } else {
                    write!(f, "{amount}{name}")?;
                }
                break;
            }
        }
        if self.burst != self.count {
            write!(f, ";burst={}", self.burst)?;
        }
        Ok(())
    }
}

#[cfg(feature = "serde")]
impl serde::Serialize for Quota {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

#[cfg(feature = "serde")]
impl<'de> serde::Deserialize<'de> for Quota {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_faster_than_one_per_nanosecond_are_refused() {
        assert!(Quota::per_second(1_000_000_000).is_ok()); // T = 1 ns exactly
        for bad in ["1000000001/s", "2000000000/s", "3/2ns", "2/ns"] {
            assert!(matches!(bad.parse::<Quota>(), Err(QuotaError::TooLarge { .. })), "{bad}");
        }
        assert!(matches!(Quota::new(3, Duration::from_nanos(2)), Err(QuotaError::TooLarge { .. })));
    }

    #[test]
    fn parses_every_documented_form() {
        let cases = [
            ("100/s", 100, NS_PER_SEC),
            (" 10 / m ", 10, NS_PER_MIN),
            ("1000/h", 1000, NS_PER_HOUR),
            ("5/d", 5, NS_PER_DAY),
            ("20/1500ms", 20, 1500 * NS_PER_MS),
            ("100/30s", 100, 30 * NS_PER_SEC),
            ("3/second", 3, NS_PER_SEC),
            ("3/minutes", 3, NS_PER_MIN),
            ("3/2hours", 3, 2 * NS_PER_HOUR),
            ("1/7days", 1, 7 * NS_PER_DAY),
            ("9/250us", 9, 250 * NS_PER_US),
            ("10/S", 10, NS_PER_SEC),
            ("10/Min", 10, NS_PER_MIN),
            ("10/MS", 10, NS_PER_MS),
            ("9/250\u{b5}s", 9, 250 * NS_PER_US),
            ("9/250\u{3bc}s", 9, 250 * NS_PER_US),
        ];
        for (s, count, period) in cases {
            let q: Quota = s.parse().unwrap_or_else(|e| panic!("{s}: {e}"));
            assert_eq!((q.count(), q.period_nanos(), q.burst()), (count, period, count), "{s}");
            let again: Quota = q.to_string().parse().unwrap();
            assert_eq!(again, q, "{s} round-trips via {q}");
        }
        // A single unit is written bare, at every scale, as a user would write it.
        for (s, shown) in [("10/1ms", "10/ms"), ("5/1us", "5/us"), ("4/60s", "4/m")] {
            assert_eq!(s.parse::<Quota>().unwrap().to_string(), shown, "{s}");
        }
    }

    #[test]
    fn rejects_bad_input_with_typed_errors() {
        assert_eq!("0/s".parse::<Quota>(), Err(QuotaError::ZeroRate));
        assert_eq!("10/0s".parse::<Quota>(), Err(QuotaError::ZeroPeriod));
        assert_eq!("10/s;burst=0".parse::<Quota>(), Err(QuotaError::ZeroBurst));
        for repeated in ["10/s;burst=3;burst=4", "10/s;burst=3;", "10/s;burst=3; x"] {
            let Err(QuotaError::Parse { reason, .. }) = repeated.parse::<Quota>() else {
                panic!("{repeated} parsed")
            };
            assert!(reason.contains("more than one"), "{repeated}: {reason}");
        }
        // Errors name the problem, not an algorithm.
        let fast = "1000000001/s".parse::<Quota>().unwrap_err().to_string();
        assert!(fast.contains("faster than one per ns") && !fast.contains("algorithm"), "{fast}");
        for bad in ["-1/s", "10/", "abc", "1e9/s", "1.5/s", "10/parsec", "/s", "10s", "10/s;bust=3", ""] {
            match bad.parse::<Quota>() {
                Err(QuotaError::Parse { input, .. }) => assert_eq!(input, bad),
                other => panic!("{bad:?} gave {other:?}"),
            }
        }
        let huge = "9".repeat(1 << 20) + "/s";
        match huge.parse::<Quota>() {
            Err(QuotaError::Parse { input, reason }) => {
                assert_eq!(input.len(), 64);
                assert_eq!(reason, "too long");
            }
            other => panic!("{other:?}"),
        }
        assert!("99999999999999999999999/s".parse::<Quota>().unwrap_err().to_string().contains("too large"));
        assert_eq!("1/1000000000d".parse::<Quota>(), Err(QuotaError::Overflow { what: "period" }));
    }

    #[test]
    fn a_zero_maximum_is_explained_by_what_it_bounds() {
        let window = QuotaError::TooLarge { what: "sliding-window limit", value: 1, max: 0 };
        assert!(window.to_string().contains("period is too short"), "{window}");
        let budget = QuotaError::TooLarge { what: "limiter state per key in bytes", value: 24, max: 0 };
        assert_eq!(budget.to_string(), "limiter state per key in bytes 24 is too large (max 0)");
    }

    #[test]
    fn a_malformed_period_amount_says_a_whole_number_is_expected() {
        for bad in ["5/1.5s", "5/-1s", "5/+1s", "5/1,5s", "5/1e3s", "5/1 5s", "5/.5s"] {
            match bad.parse::<Quota>() {
                Err(QuotaError::Parse { input, reason }) => {
                    assert_eq!(input, bad);
                    assert_eq!(reason, PERIOD_NOT_WHOLE, "{bad}");
                    assert!(reason.contains("whole non-negative number"), "{bad}: {reason}");
                }
                other => panic!("{bad:?} gave {other:?}"),
            }
        }
        // The count side keeps its own wording; a real unknown unit is still one.
        for (bad, reason) in [
            ("1.5/s", "expected a whole non-negative number"),
            ("-1/s", "expected a whole non-negative number"),
            ("5/parsec", "unknown time unit"),
            ("5/2parsecs", "unknown time unit"),
            ("5/", "missing period after '/'"),
            ("5/3", "missing time unit (s, m, h, d, ms, ...)"),
        ] {
            assert_eq!(
                bad.parse::<Quota>(),
                Err(QuotaError::Parse { input: bad.to_owned(), reason }),
                "{bad}"
            );
        }
    }

    #[test]
    fn the_burst_keyword_is_case_insensitive_like_the_units() {
        let expected = Quota::per_second(5).unwrap().with_burst(3).unwrap();
        for s in ["5/s;BURST=3", "5/S;Burst=3", "5/s; bUrSt = 3", "5/s;burst=3"] {
            let q: Quota = s.parse().unwrap_or_else(|e| panic!("{s}: {e}"));
            assert_eq!(q, expected, "{s}");
            // Display writes the canonical lower-case form, which reads back the same.
            assert_eq!(q.to_string(), "5/s;burst=3");
            assert_eq!(q.to_string().parse::<Quota>(), Ok(q));
        }
        // Other keywords are still refused, whatever their case; a multi-byte character where
        // the keyword would end is no keyword either (and no panic).
        for bad in ["5/s;BUST=3", "5/s;bursts=3", "5/s;burs\u{e9}=3", "5/s;\u{e9}urst=3", "5/s;burs"] {
            match bad.parse::<Quota>() {
                Err(QuotaError::Parse { input, reason }) => {
                    assert_eq!(input, bad);
                    assert_eq!(reason, "expected \";burst=<n>\" after the rate", "{bad}");
                }
                other => panic!("{bad:?} gave {other:?}"),
            }
        }
    }

    #[test]
    fn rejects_quotas_that_could_overflow() {
        assert_eq!(Quota::new(1, Duration::MAX), Err(QuotaError::Overflow { what: "period" }));
        assert_eq!(
            Quota::new(1, Duration::from_nanos(u64::MAX)),
            Err(QuotaError::Overflow { what: "period" })
        );
        // 1 per 100 years is fine; a burst of 2 of them is ≈ 200 years of tolerance: rejected.
        let century = Duration::from_secs(100 * 365 * 86_400);
        let q = Quota::new(1, century).unwrap();
        assert!(matches!(q.with_burst(2), Err(QuotaError::Overflow { .. })));
        assert!(matches!(
            Quota::per_second(1).unwrap().with_burst(u64::MAX),
            Err(QuotaError::Overflow { .. })
        ));
        // The largest accepted quotas keep TAT below the tombstone bit at the horizon.
        const { assert!(HORIZON + MAX_TOLERANCE < 1 << 63) };
    }

    #[test]
    fn emission_interval_rounds_up() {
        let q = Quota::per_second(3).unwrap();
        assert_eq!(q.emission_interval_nanos(), 333_333_334);
        assert!(q.emission_interval_nanos() * 3 >= NS_PER_SEC);
        // Faster than 1/ns is refused (rates_faster_than_one_per_nanosecond_are_refused).
    }
}
