//! Parsing of option values (clap `value_parser`s): each returns a message that says what was
//! wrong, so bad input ends in clap's "error: invalid value …" and exit code 2, never a panic.

use std::fmt;
use std::time::Duration;

use tollgate::Quota;

/// Longest list or value accepted (a 1 MB argument is rejected, not parsed).
const MAX_ARG_LEN: usize = 256;

fn check_len(s: &str) -> Result<(), String> {
    if s.len() > MAX_ARG_LEN {
        return Err(format!("value is {} bytes long (at most {MAX_ARG_LEN})", s.len()));
    }
    Ok(())
}

/// A rate-limiting algorithm the CLI can run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum AlgoKind {
    Gcra,
    Fixed,
    Sliding,
    Log,
}

impl AlgoKind {
    pub(crate) const ALL: [AlgoKind; 4] = [AlgoKind::Gcra, AlgoKind::Fixed, AlgoKind::Sliding, AlgoKind::Log];

    pub(crate) fn name(self) -> &'static str {
        match self {
            AlgoKind::Gcra => "gcra",
            AlgoKind::Fixed => "fixed",
            AlgoKind::Sliding => "sliding",
            AlgoKind::Log => "log",
        }
    }

    /// Whether this build of tollgate ships the algorithm.
    pub(crate) fn available(self) -> bool {
        crate::algos::available(self)
    }
}

impl fmt::Display for AlgoKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// `gcra|fixed|sliding|log|all`, comma-separated lists allowed (`gcra,log`).
pub(crate) fn parse_algorithms(s: &str) -> Result<Vec<AlgoKind>, String> {
    check_len(s)?;
    let mut out = Vec::new();
    for part in s.split(',').map(str::trim) {
        let kinds: Vec<AlgoKind> = match part.to_ascii_lowercase().as_str() {
            "all" => AlgoKind::ALL.iter().copied().filter(|a| a.available()).collect(),
            "gcra" => vec![AlgoKind::Gcra],
            "fixed" => vec![AlgoKind::Fixed],
            "sliding" => vec![AlgoKind::Sliding],
            "log" => vec![AlgoKind::Log],
            other => {
                return Err(format!(
                    "unknown algorithm {other:?} (expected gcra, fixed, sliding, log or all)"
                ))
            }
        };
        for kind in kinds {
            if !kind.available() {
                return Err(format!(
                    "algorithm {kind:?} is not available in this build of tollgate yet (the windowed \
                     algorithms are still being written); use gcra",
                    kind = kind.name()
                ));
            }
            if !out.contains(&kind) {
                out.push(kind);
            }
        }
    }
    Ok(out)
}

/// A positive integer list: `1,2,4`.
pub(crate) fn parse_threads(s: &str) -> Result<Vec<usize>, String> {
    check_len(s)?;
    let mut out = Vec::new();
    for part in s.split(',').map(str::trim) {
        let n: usize = part.parse().map_err(|_| format!("{part:?} is not a thread count"))?;
        if n == 0 || n > 1024 {
            return Err(format!("thread count {n} out of range (1 to 1024)"));
        }
        if !out.contains(&n) {
            out.push(n);
        }
    }
    Ok(out)
}

/// How many keys a cell uses: the direct limiter (one shared state, no map) or a keyed limiter
/// pre-populated with `n` keys.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum Keys {
    Direct,
    Keyed(usize),
}

impl Keys {
    pub(crate) fn count(self) -> usize {
        match self {
            Keys::Direct => 1,
            Keys::Keyed(n) => n,
        }
    }
}

impl fmt::Display for Keys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Keys::Direct => f.write_str("direct"),
            Keys::Keyed(n) => write!(f, "{n}"),
        }
    }
}

/// Largest key table a bench cell may ask for.
pub(crate) const MAX_KEYS: usize = 50_000_000;

/// `direct,1,10000,1e6` (integers ≥ 1, `1eN` shorthand, or `direct`).
pub(crate) fn parse_keys(s: &str) -> Result<Vec<Keys>, String> {
    check_len(s)?;
    let mut out = Vec::new();
    for part in s.split(',').map(str::trim) {
        let keys = if part.eq_ignore_ascii_case("direct") {
            Keys::Direct
        } else {
            let n = parse_count(part)
                .ok_or_else(|| format!("{part:?} is not a key count (e.g. 10000 or 1e6)"))?;
            if n == 0 || n > MAX_KEYS {
                return Err(format!("key count {n} out of range (1 to {MAX_KEYS})"));
            }
            Keys::Keyed(n)
        };
        if !out.contains(&keys) {
            out.push(keys);
        }
    }
    Ok(out)
}

/// `10000`, `10_000` or `1e4`.
fn parse_count(s: &str) -> Option<usize> {
    let s = s.replace('_', "");
    if let Some((mantissa, exp)) = s.split_once(['e', 'E']) {
        let mantissa: usize = mantissa.parse().ok()?;
        let exp: u32 = exp.parse().ok()?;
        return 10usize.checked_pow(exp)?.checked_mul(mantissa);
    }
    s.parse().ok()
}

/// Which keys a lookup sequence draws.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Distribution {
    Uniform,
    /// Zipf with exponent `s` (key rank `k` drawn with probability ∝ 1/k^s).
    Zipf(f64),
}

impl fmt::Display for Distribution {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Distribution::Uniform => f.write_str("uniform"),
            Distribution::Zipf(s) => write!(f, "zipf:{s}"),
        }
    }
}

/// `uniform` or `zipf:<s>` with `0 < s ≤ 10`.
pub(crate) fn parse_distribution(s: &str) -> Result<Distribution, String> {
    check_len(s)?;
    let lower = s.trim().to_ascii_lowercase();
    if lower == "uniform" {
        return Ok(Distribution::Uniform);
    }
    if let Some(exp) = lower.strip_prefix("zipf:") {
        let exp: f64 = exp.parse().map_err(|_| format!("zipf exponent {exp:?} is not a number"))?;
        if !(exp.is_finite() && exp > 0.0 && exp <= 10.0) {
            return Err(format!("zipf exponent {exp} out of range (0 < s ≤ 10)"));
        }
        return Ok(Distribution::Zipf(exp));
    }
    Err(format!("unknown distribution {s:?} (expected uniform or zipf:<s>, e.g. zipf:1.1)"))
}

/// A share in `[0, 1)`: `0.5` or `50%`.
pub(crate) fn parse_ratio(s: &str) -> Result<f64, String> {
    check_len(s)?;
    let t = s.trim();
    let value = match t.strip_suffix('%') {
        Some(pct) => pct.trim().parse::<f64>().map(|p| p / 100.0),
        None => t.parse::<f64>(),
    }
    .map_err(|_| format!("{s:?} is not a ratio (e.g. 0.5 or 50%)"))?;
    if !(value.is_finite() && (0.0..0.99).contains(&value)) {
        return Err(format!("deny ratio {value} out of range (0 ≤ ratio < 0.99)"));
    }
    Ok(value)
}

/// The time source a bench cell runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum ClockKind {
    Quanta,
    Cached,
}

impl ClockKind {
    pub(crate) fn name(self) -> &'static str {
        match self {
            ClockKind::Quanta => "quanta",
            ClockKind::Cached => "cached",
        }
    }
}

/// `quanta`, `cached` or `quanta,cached`.
pub(crate) fn parse_clocks(s: &str) -> Result<Vec<ClockKind>, String> {
    check_len(s)?;
    let mut out = Vec::new();
    for part in s.split(',').map(str::trim) {
        let kind = match part.to_ascii_lowercase().as_str() {
            "quanta" => ClockKind::Quanta,
            "cached" => ClockKind::Cached,
            other => return Err(format!("unknown clock {other:?} (expected quanta or cached)")),
        };
        if !out.contains(&kind) {
            out.push(kind);
        }
    }
    Ok(out)
}

/// What to compare against.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Compare {
    Governor,
    None,
}

pub(crate) fn parse_compare(s: &str) -> Result<Compare, String> {
    match s.trim().to_ascii_lowercase().as_str() {
        "governor" => Ok(Compare::Governor),
        "none" => Ok(Compare::None),
        _ => Err(format!("cannot compare with {s:?} (expected governor or none)")),
    }
}

/// A duration: `500ms`, `2s`, `1.5s`, `1m`, `1h`, `1500us` (between 1 ms and 1 hour; units
/// case-insensitive).
pub(crate) fn parse_duration(s: &str) -> Result<Duration, String> {
    check_len(s)?;
    let t = s.trim();
    let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let value: f64 = number.parse().map_err(|_| format!("{s:?} is not a duration (e.g. 500ms, 2s, 1m)"))?;
    let unit_secs = match unit.trim().to_lowercase().as_str() {
        "us" | "µs" | "μs" => 1e-6,
        "ms" => 1e-3,
        "" | "s" | "sec" | "secs" => 1.0,
        "m" | "min" | "mins" => 60.0,
        "h" | "hr" | "hour" => 3600.0,
        other => return Err(format!("unknown time unit {other:?} in {s:?} (use us, ms, s, m or h)")),
    };
    let secs = value * unit_secs;
    if !(secs.is_finite() && (1e-3..=3600.0).contains(&secs)) {
        return Err(format!("duration {s:?} out of range (1ms to 1h)"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// A quota string, validated by tollgate itself (its `QuotaError` is the message).
pub(crate) fn parse_quota(s: &str) -> Result<Quota, String> {
    s.parse::<Quota>().map_err(|e| e.to_string())
}

/// A synthetic arrival process for `simulate`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Arrivals {
    /// Evenly spaced: one every `interval` ns, the first at 0.
    Uniform { per_sec: f64 },
    /// Poisson: exponential gaps with mean `1/rate`.
    Poisson { per_sec: f64 },
    /// `count` arrivals at the same instant, every `every` ns (first burst at 0).
    Burst { count: u64, every: u64 },
}

impl fmt::Display for Arrivals {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Arrivals::Uniform { per_sec } => write!(f, "uniform:{per_sec}/s"),
            Arrivals::Poisson { per_sec } => write!(f, "poisson:{per_sec}/s"),
            Arrivals::Burst { count, every } => write!(f, "burst:{count}/{}ms", *every as f64 / 1e6),
        }
    }
}

/// Most arrivals per second a simulation accepts (keeps runs short and memory bounded).
pub(crate) const MAX_ARRIVAL_RATE: f64 = 1e7;

/// `uniform:<rate>`, `poisson:<rate>` or `burst:<n>/<period>`; a rate is a tollgate rate
/// string (`50/s`, `3000/m`, `1/250ms`).
pub(crate) fn parse_arrivals(s: &str) -> Result<Arrivals, String> {
    check_len(s)?;
    let t = s.trim();
    let (kind, rest) = t
        .split_once(':')
        .ok_or_else(|| format!("{s:?}: expected uniform:<rate>, poisson:<rate> or burst:<n>/<period>"))?;
    let rate = rest.parse::<Quota>().map_err(|e| format!("{s:?}: {e}"))?;
    if rate.burst() != rate.count() {
        return Err(format!("{s:?}: an arrival process takes no \";burst=\""));
    }
    let per_sec = rate.count() as f64 / rate.period().as_secs_f64();
    let arrivals = match kind.trim().to_ascii_lowercase().as_str() {
        "uniform" => Arrivals::Uniform { per_sec },
        "poisson" => Arrivals::Poisson { per_sec },
        "burst" => {
            let every =
                u64::try_from(rate.period().as_nanos()).map_err(|_| format!("{s:?}: period too long"))?;
            Arrivals::Burst { count: rate.count(), every }
        }
        other => {
            return Err(format!("unknown arrival process {other:?} (expected uniform, poisson or burst)"))
        }
    };
    if !(per_sec.is_finite() && per_sec <= MAX_ARRIVAL_RATE) {
        return Err(format!(
            "{s:?}: arrival rate {per_sec:.0}/s is above the simulator's {MAX_ARRIVAL_RATE:.0}/s"
        ));
    }
    Ok(arrivals)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_and_values() {
        assert_eq!(parse_threads("1,2,4"), Ok(vec![1, 2, 4]));
        assert!(parse_threads("0").is_err());
        assert!(parse_threads("x").is_err());
        assert_eq!(
            parse_keys("direct,1,1e4,1_000_000"),
            Ok(vec![Keys::Direct, Keys::Keyed(1), Keys::Keyed(10_000), Keys::Keyed(1_000_000)])
        );
        assert!(parse_keys("0").is_err());
        assert!(parse_keys("1e30").is_err());
        assert_eq!(parse_distribution("zipf:1.1"), Ok(Distribution::Zipf(1.1)));
        assert!(parse_distribution("zipf:-1").is_err());
        assert!(parse_distribution("zipf:nan").is_err());
        assert_eq!(parse_ratio("50%"), Ok(0.5));
        assert!(parse_ratio("1.5").is_err());
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert!(parse_duration("-1s").is_err());
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("5 parsecs").is_err());
        assert_eq!(parse_duration("2S"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("1500us"), Ok(Duration::from_micros(1500)));
        assert!(parse_duration("2h").is_err());
        assert_eq!(parse_arrivals("uniform:20/s"), Ok(Arrivals::Uniform { per_sec: 20.0 }));
        assert_eq!(parse_arrivals("burst:5/100ms"), Ok(Arrivals::Burst { count: 5, every: 100_000_000 }));
        assert!(parse_arrivals("poisson:0/s").is_err());
        assert!(parse_arrivals("uniform:1e9/s").is_err());
        assert!(parse_arrivals("burst:5/100ms;burst=2").unwrap_err().contains("burst="));
        assert!(parse_quota("abc").is_err());
        assert!(parse_algorithms("gcra,bogus").is_err());
    }
}
