//! [`Decision`] and the error enums: everything a caller matches on.
//!
//! A denial is a value ([`Decision::is_allowed`] is `false`); an error is a call that can never
//! succeed or could not be answered (cost above the burst, full key table, backend failure).

use std::fmt;
use std::time::Duration;

use crate::clock::Nanos;

/// Where a [`Decision`] came from.
///
/// ```
/// use tollgate::{Decision, Origin};
/// assert_eq!(Decision::allowed(10, 9, 0).origin(), Origin::Local);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
// A word, not a byte: a `Decision` then has no padding, so it is copied as three 16-byte moves.
// With a `u8` here, the seven padding bytes after it were copied piecewise (1-, 2- and 4-byte
// stores) wherever a `Decision` sat inside an enum, and the 16-byte loads that followed stalled
// on store forwarding: about a quarter of the sliding log's check time (perf, `claim`).
#[repr(u64)]
pub enum Origin {
    /// The in-process limiter that was asked.
    Local,
    /// A remote backend (Redis) answered.
    Remote,
    /// A local deny cache answered for a remote backend (the key was denied recently and cannot
    /// be allowed before its `retry_after`).
    DenyCache,
    /// The backend failed and the limiter's fallback policy decided (fail closed, or a local
    /// fallback limiter).
    Fallback,
    /// The backend failed and the limiter's policy let the request through unchecked (fail
    /// open): `limit` is the quota's, `remaining` and `reset_after` are 0, and none of them
    /// describes the key. The HTTP layer sends no rate-limit headers for it, as for a failed
    /// check it lets through.
    Unchecked,
}

/// The outcome of a check: allowed or not, plus what callers need for headers and backoff.
///
/// The same type comes from every algorithm and backend. `Copy`, 48 bytes.
///
/// ```
/// use std::time::Duration;
/// use tollgate::{Limiter, ManualClock, Quota};
///
/// let limiter = Limiter::with_clock(Quota::per_second(2).unwrap(), ManualClock::new());
/// let d = limiter.check();
/// assert!(d.is_allowed());
/// assert_eq!((d.limit(), d.remaining()), (2, 1));
/// let _ = limiter.check();
/// let d = limiter.check();
/// assert!(!d.is_allowed());
/// assert_eq!(d.retry_after(), Some(Duration::from_millis(500)));
/// ```
#[must_use = "a Decision says whether the request may proceed"]
#[derive(Clone, Copy)]
pub struct Decision {
    limit: u64,
    /// `remaining = slack / unit`, divided only when asked: GCRA knows its slack in ns, and a
    /// division on every check (most callers never read `remaining`) was measurable on the hot
    /// path. Other algorithms use `unit = 1`.
    slack: u64,
    unit: u64,
    reset_after: Nanos,
    /// `u64::MAX` encodes "allowed" (no retry): a denial's retry_after is always < 2⁶³.
    retry_after: Nanos,
    origin: Origin,
}

const ALLOWED: Nanos = u64::MAX;

impl Decision {
    /// An admission: `remaining` cells left, bucket full again after `reset_after_ns`.
    ///
    /// ```
    /// let d = tollgate::Decision::allowed(100, 99, 10_000_000);
    /// assert!(d.is_allowed() && d.retry_after().is_none());
    /// ```
    #[inline]
    pub const fn allowed(limit: u64, remaining: u64, reset_after_ns: Nanos) -> Decision {
        Decision {
            limit,
            slack: remaining,
            unit: 1,
            reset_after: reset_after_ns,
            retry_after: ALLOWED,
            origin: Origin::Local,
        }
    }

    /// An admission whose remaining count is `slack / unit` (`unit ≥ 1`), divided lazily.
    #[inline]
    pub(crate) const fn allowed_in_units(
        limit: u64,
        slack: u64,
        unit: u64,
        reset_after_ns: Nanos,
    ) -> Decision {
        let mut d = Decision::allowed(limit, slack, reset_after_ns);
        d.unit = if unit == 0 { 1 } else { unit };
        d
    }

    /// A denial whose remaining count is `slack / unit` (`unit ≥ 1`), divided lazily.
    #[inline]
    pub(crate) const fn denied_in_units(
        limit: u64,
        slack: u64,
        unit: u64,
        reset_after_ns: Nanos,
        retry_after_ns: Nanos,
    ) -> Decision {
        let mut d = Decision::denied(limit, slack, reset_after_ns, retry_after_ns);
        d.unit = if unit == 0 { 1 } else { unit };
        d
    }

    /// A denial: retry after `retry_after_ns` (clamped below `u64::MAX`).
    ///
    /// ```
    /// let d = tollgate::Decision::denied(100, 0, 1_000, 500);
    /// assert_eq!(d.retry_after(), Some(std::time::Duration::from_nanos(500)));
    /// ```
    #[inline]
    pub const fn denied(
        limit: u64,
        remaining: u64,
        reset_after_ns: Nanos,
        retry_after_ns: Nanos,
    ) -> Decision {
        let retry_after = if retry_after_ns == ALLOWED { ALLOWED - 1 } else { retry_after_ns };
        Decision {
            limit,
            slack: remaining,
            unit: 1,
            reset_after: reset_after_ns,
            retry_after,
            origin: Origin::Local,
        }
    }

    /// The same decision, marked as coming from `origin`.
    ///
    /// ```
    /// use tollgate::{Decision, Origin};
    /// let d = Decision::allowed(1, 0, 0).with_origin(Origin::Fallback);
    /// assert_eq!(d.origin(), Origin::Fallback);
    /// ```
    #[inline]
    pub const fn with_origin(mut self, origin: Origin) -> Decision {
        self.origin = origin;
        self
    }

    /// Whether the request may proceed.
    #[inline]
    pub const fn is_allowed(&self) -> bool {
        self.retry_after == ALLOWED
    }

    /// The limit the request was measured against (GCRA: the burst; windows: the count per
    /// window).
    #[inline]
    pub const fn limit(&self) -> u64 {
        self.limit
    }

    /// Unit cells still available right now, after this decision.
    #[inline]
    pub const fn remaining(&self) -> u64 {
        // Most decisions carry their count directly (unit 1): skip the division for them.
        if self.unit == 1 {
            self.slack
        } else {
            self.slack / self.unit
        }
    }

    /// Time until the limiter is back to its initial (full) state for this key.
    #[inline]
    pub const fn reset_after(&self) -> Duration {
        Duration::from_nanos(self.reset_after)
    }

    /// [`Decision::reset_after`] in nanoseconds.
    #[inline]
    pub const fn reset_after_nanos(&self) -> Nanos {
        self.reset_after
    }

    /// On a denial, how long to wait before the same request can be allowed; `None` when allowed.
    #[inline]
    pub const fn retry_after(&self) -> Option<Duration> {
        if self.is_allowed() {
            None
        } else {
            Some(Duration::from_nanos(self.retry_after))
        }
    }

    /// [`Decision::retry_after`] in nanoseconds (`None` when allowed).
    #[inline]
    pub const fn retry_after_nanos(&self) -> Option<Nanos> {
        if self.is_allowed() {
            None
        } else {
            Some(self.retry_after)
        }
    }

    /// Who decided.
    #[inline]
    pub const fn origin(&self) -> Origin {
        self.origin
    }

    /// Combines two decisions of a composite limit into the most restrictive view: allowed only if
    /// both are, the lowest `remaining`, the longest `reset_after` and `retry_after`.
    ///
    /// ```
    /// use tollgate::Decision;
    /// let a = Decision::allowed(10, 4, 100);
    /// let b = Decision::denied(1000, 0, 5_000, 2_000);
    /// let m = a.most_restrictive(b);
    /// assert!(!m.is_allowed());
    /// assert_eq!((m.limit(), m.remaining(), m.reset_after_nanos()), (1000, 0, 5_000));
    /// ```
    #[inline]
    pub fn most_restrictive(self, other: Decision) -> Decision {
        let allowed = self.is_allowed() && other.is_allowed();
        // The limit and remaining reported are those of the sub-limit with the fewest cells left
        // (what a client should pace itself by).
        let (mine, theirs) = (self.remaining(), other.remaining()); // each divides at most once
        let (limit, remaining) = if theirs < mine { (other.limit, theirs) } else { (self.limit, mine) };
        let reset_after = self.reset_after.max(other.reset_after);
        let mut out = if allowed {
            Decision::allowed(limit, remaining, reset_after)
        } else {
            let retry = match (self.retry_after_nanos(), other.retry_after_nanos()) {
                (Some(a), Some(b)) => a.max(b),
                (Some(a), None) | (None, Some(a)) => a,
                (None, None) => 0,
            };
            Decision::denied(limit, remaining, reset_after, retry)
        };
        out.origin = self.origin;
        out
    }
}

/// Equality is on what the accessors report (not on how `remaining` is represented).
impl PartialEq for Decision {
    fn eq(&self, other: &Decision) -> bool {
        self.key() == other.key()
    }
}

impl Eq for Decision {}

impl std::hash::Hash for Decision {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.key().hash(state);
    }
}

impl Decision {
    fn key(&self) -> (u64, u64, Nanos, Nanos, Origin) {
        (self.limit, self.remaining(), self.reset_after, self.retry_after, self.origin)
    }
}

impl fmt::Debug for Decision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Decision")
            .field("allowed", &self.is_allowed())
            .field("limit", &self.limit)
            .field("remaining", &self.remaining())
            .field("reset_after", &self.reset_after())
            .field("retry_after", &self.retry_after())
            .field("origin", &self.origin)
            .finish()
    }
}

#[cfg(feature = "serde")]
impl serde::Serialize for Decision {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut st = s.serialize_struct("Decision", 5)?;
        st.serialize_field("allowed", &self.is_allowed())?;
        st.serialize_field("limit", &self.limit)?;
        st.serialize_field("remaining", &self.remaining())?;
        st.serialize_field("reset_after_ns", &self.reset_after)?;
        st.serialize_field("retry_after_ns", &self.retry_after_nanos())?;
        st.end()
    }
}

/// A cost that can never be admitted: it is larger than the burst (or window limit).
///
/// Retrying will never help; this is not a denial.
///
/// ```
/// use tollgate::{InsufficientCapacity, Limiter, Quota};
/// let limiter = Limiter::new(Quota::per_second(5).unwrap());
/// assert_eq!(limiter.check_n(6), Err(InsufficientCapacity { cost: 6, capacity: 5 }));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct InsufficientCapacity {
    /// The cost asked for.
    pub cost: u64,
    /// The most any single check can ever admit.
    pub capacity: u64,
}

impl fmt::Display for InsufficientCapacity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "cost {} can never be admitted: capacity is {}", self.cost, self.capacity)
    }
}

impl std::error::Error for InsufficientCapacity {}

/// Why a check could not be answered with a [`Decision`].
///
/// ```
/// use tollgate::{CheckError, InsufficientCapacity};
/// let e: CheckError = InsufficientCapacity { cost: 9, capacity: 3 }.into();
/// assert!(e.to_string().contains("capacity is 3"));
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum CheckError {
    /// The cost can never be admitted.
    InsufficientCapacity {
        /// The cost asked for.
        cost: u64,
        /// The most any single check can admit.
        capacity: u64,
    },
    /// A keyed limiter with `max_keys` is full and the key is new.
    KeyLimit {
        /// The configured maximum.
        max_keys: usize,
    },
    /// A remote backend failed and the policy is to report it.
    Backend {
        /// What failed (the backend's message).
        reason: String,
    },
    /// A remote backend did not answer within the configured timeout.
    Timeout {
        /// The timeout that elapsed.
        after: Duration,
    },
}

impl From<InsufficientCapacity> for CheckError {
    fn from(e: InsufficientCapacity) -> Self {
        CheckError::InsufficientCapacity { cost: e.cost, capacity: e.capacity }
    }
}

impl fmt::Display for CheckError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CheckError::InsufficientCapacity { cost, capacity } => {
                InsufficientCapacity { cost: *cost, capacity: *capacity }.fmt(f)
            }
            CheckError::KeyLimit { max_keys } => {
                write!(f, "key table is full ({max_keys} keys) and the key is new")
            }
            CheckError::Backend { reason } => write!(f, "rate-limit backend failed: {reason}"),
            CheckError::Timeout { after } => {
                write!(f, "rate-limit backend did not answer within {after:?}")
            }
        }
    }
}

impl std::error::Error for CheckError {}
