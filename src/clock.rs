//! Time sources. This is the only module that reads a clock; everything else
//! takes `now: Nanos` as a parameter.
//!
//! All clocks count [`Nanos`] (u64 nanoseconds) since their own *anchor*, the moment the clock was
//! created. A limiter never mixes readings of two different clocks.

use std::fmt;
use std::sync::atomic::{AtomicU64 as StdAtomicU64, Ordering as StdOrdering};
use std::sync::Arc;
use std::time::Duration;

use crossbeam_utils::CachePadded;

/// Nanoseconds since a clock's anchor. `u64` covers about 584 years.
pub type Nanos = u64;

/// Converts a [`Duration`] to [`Nanos`], saturating at `u64::MAX` instead of panicking.
///
/// ```
/// use std::time::Duration;
/// assert_eq!(tollgate::clock::duration_to_nanos(Duration::from_millis(3)), 3_000_000);
/// assert_eq!(tollgate::clock::duration_to_nanos(Duration::MAX), u64::MAX);
/// ```
#[inline]
pub fn duration_to_nanos(d: Duration) -> Nanos {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// The Unix time (ns since 1970-01-01 UTC) at which `clock` read 0
/// ([`Clock::anchor_unix_nanos`]); `None` if the system clock is before 1970 or the value does
/// not fit. Used to align fixed windows to wall-clock boundaries (e.g. the top of the minute);
/// never on the hot path. The clocks here read the system clock once (at construction, or a
/// [`ManualClock`] when first asked) and keep the answer, shared by their clones: windows
/// aligned through one clock get the same alignment however many times they are built (a
/// key's override must match the default's), and later wall-clock steps (NTP) move nothing.
///
/// ```
/// use tollgate::clock::{unix_nanos_at_anchor, ManualClock, QuantaClock};
/// let clock = ManualClock::new();
/// let anchor = unix_nanos_at_anchor(&clock).unwrap();
/// assert!(anchor > 1_600_000_000_000_000_000); // after September 2020
/// assert_eq!(unix_nanos_at_anchor(&clock.clone()), Some(anchor)); // read once, kept
/// let quanta = QuantaClock::new();
/// assert_eq!(unix_nanos_at_anchor(&quanta), unix_nanos_at_anchor(&quanta.clone()));
/// ```
pub fn unix_nanos_at_anchor<C: Clock + ?Sized>(clock: &C) -> Option<Nanos> {
    clock.anchor_unix_nanos()
}

/// The Unix time now minus `clock`'s reading: one `SystemTime` read.
fn read_unix_anchor<C: Clock + ?Sized>(clock: &C) -> Option<Nanos> {
    let wall = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).ok()?;
    u64::try_from(wall.as_nanos()).ok()?.checked_sub(clock.now())
}

/// A source of monotonic-ish time for a limiter.
///
/// Implementations must be cheap (this is on the hot path) and may go backwards by small amounts;
/// the algorithms treat `now < stored` as `now == stored` for admission, so a clock stepping back
/// never panics, and never admits more than a clock held at the latest time the key's state
/// recorded would. The one gap is time a key's state does not record: the sliding log keeps no
/// trace of a *denied* check, so after a step back below such a check's time a claim is stamped
/// earlier than that time, and may free up to one step back's worth early.
///
/// ```
/// use tollgate::{Clock, ManualClock};
/// let clock = ManualClock::new();
/// assert_eq!(clock.now(), 0);
/// ```
pub trait Clock: Send + Sync + 'static {
    /// Nanoseconds since this clock's anchor.
    fn now(&self) -> Nanos;

    /// How far one thread's reading may trail one that another thread took before it (0 for
    /// a clock that all threads read from one coherent source). Eviction judges a key idle at
    /// `now − skew()`, so a check whose reading trails the sweeper's by up to this much sees
    /// the state it would have seen had the key not been evicted (review finding: a checker
    /// 0.5 µs behind the sweeper could find a fresh cell and be admitted where the evicted
    /// state denied). A clock moved back by more than this across a sweep (a
    /// [`ManualClock`] set back by hand) can make an evicted key look fresh early.
    ///
    /// ```
    /// use tollgate::{Clock, ManualClock, QuantaClock};
    /// assert_eq!(ManualClock::new().skew(), 0);
    /// assert!(QuantaClock::new().skew() >= 1_000); // TSC readings on two cores
    /// ```
    fn skew(&self) -> Nanos {
        0
    }

    /// The Unix time (ns) at which this clock read 0 (see [`unix_nanos_at_anchor`]). The
    /// default reads the system clock on every call; the clocks here read it once and keep it,
    /// so that every window aligned through one clock gets the same alignment. A clock of your
    /// own should do the same (read once, keep it): with the default, two windows aligned
    /// through it differ by the nanoseconds between the reads, so an aligned window built for
    /// a key's override is refused as incompatible ([`KeyedLimiter::set_quota`](crate::KeyedLimiter::set_quota)
    /// keeps the alignment either way).
    ///
    /// ```
    /// use tollgate::{Clock, ManualClock};
    /// let clock = ManualClock::new();
    /// assert_eq!(clock.anchor_unix_nanos(), clock.anchor_unix_nanos());
    /// ```
    fn anchor_unix_nanos(&self) -> Option<Nanos> {
        read_unix_anchor(self)
    }
}

impl<C: Clock + ?Sized> Clock for Arc<C> {
    #[inline]
    fn now(&self) -> Nanos {
        (**self).now()
    }

    fn skew(&self) -> Nanos {
        (**self).skew()
    }

    fn anchor_unix_nanos(&self) -> Option<Nanos> {
        (**self).anchor_unix_nanos()
    }
}

/// The default clock: `quanta`'s TSC-based clock (about 10 ns a read on x86-64), in nanoseconds
/// since the clock was created.
///
/// Readings taken on different cores can disagree by up to about a microsecond; the algorithms
/// tolerate that (see [`Clock`]).
///
/// ```
/// use tollgate::{Clock, QuantaClock};
/// let clock = QuantaClock::new();
/// let a = clock.now();
/// assert!(clock.now() >= a);
/// ```
#[derive(Clone)]
pub struct QuantaClock {
    clock: quanta::Clock,
    anchor_raw: u64,
    /// The Unix time at the anchor, read once (`Clock::anchor_unix_nanos`).
    unix_anchor: Option<Nanos>,
}

impl QuantaClock {
    /// A clock anchored now.
    pub fn new() -> Self {
        let clock = quanta::Clock::new();
        let anchor_raw = clock.raw();
        let mut this = QuantaClock { clock, anchor_raw, unix_anchor: None };
        this.unix_anchor = read_unix_anchor(&this);
        this
    }
}

impl Default for QuantaClock {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for QuantaClock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("QuantaClock").finish_non_exhaustive()
    }
}

impl Clock for QuantaClock {
    #[inline]
    fn now(&self) -> Nanos {
        // `delta_as_nanos` returns 0 when the raw reading is behind the anchor (cross-core skew),
        // so this never underflows.
        self.clock.delta_as_nanos(self.anchor_raw, self.clock.raw())
    }

    /// 1 ms: the TSCs of two cores agree to about a microsecond on current x86-64 hardware;
    /// the margin covers virtual machines, and costs only that idle keys leave 1 ms later.
    fn skew(&self) -> Nanos {
        QUANTA_SKEW
    }

    fn anchor_unix_nanos(&self) -> Option<Nanos> {
        self.unix_anchor
    }
}

/// [`QuantaClock::skew`].
const QUANTA_SKEW: Nanos = 1_000_000;

/// A coarse clock: one relaxed load of a timestamp that an upkeep thread refreshes every
/// `interval` from a [`QuantaClock`] (about 1 ns a read instead of about 10).
///
/// **Resolution is the upkeep interval**: readings advance in steps of about `interval` (and the
/// OS may oversleep it), so a limiter using it sees time up to about one interval late. That never
/// over-admits (a late `now` only makes a check stricter), but a denied caller may be told to retry
/// up to one interval early. Pick an interval well below your emission interval (e.g. 100 µs for
/// rates up to a few thousand per second per key).
///
/// Each `CachedClock::new` starts one upkeep thread; clones share it, and it exits within one
/// interval after the last clone is dropped. Create one and clone it.
///
/// ```
/// use std::time::Duration;
/// use tollgate::{CachedClock, Clock};
/// let clock = CachedClock::new(Duration::from_micros(100)).unwrap();
/// let a = clock.now();
/// assert!(clock.clone().now() >= a);
/// ```
#[derive(Clone)]
pub struct CachedClock {
    shared: Arc<CachedShared>,
}

struct CachedShared {
    /// The latest reading of `source`, in ns since its anchor. Padded: read by every check on
    /// every core, written by the upkeep thread.
    nanos: CachePadded<StdAtomicU64>,
    source: QuantaClock,
}

/// Why a [`CachedClock`] could not start.
#[derive(Debug)]
#[non_exhaustive]
pub enum ClockError {
    /// The upkeep thread could not be spawned.
    Upkeep {
        /// The OS's message.
        reason: String,
    },
}

impl fmt::Display for ClockError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClockError::Upkeep { reason } => write!(f, "cannot start the clock upkeep thread: {reason}"),
        }
    }
}

impl std::error::Error for ClockError {}

impl CachedClock {
    /// A cached clock refreshed every `interval` (at least 1 µs) by its own upkeep thread.
    pub fn new(interval: Duration) -> Result<Self, ClockError> {
        let interval = interval.max(Duration::from_micros(1));
        let source = QuantaClock::new();
        let shared =
            Arc::new(CachedShared { nanos: CachePadded::new(StdAtomicU64::new(source.now())), source });
        let weak = Arc::downgrade(&shared);
        std::thread::Builder::new()
            .name("tollgate-clock".into())
            .spawn(move || loop {
                std::thread::sleep(interval);
                let Some(shared) = weak.upgrade() else { break };
                // Relaxed: the timestamp is the whole message; readers only need some recent
                // value, and per-location coherence keeps successive reads from going backwards.
                shared.nanos.store(shared.source.now(), StdOrdering::Relaxed);
            })
            .map_err(|e| ClockError::Upkeep { reason: e.to_string() })?;
        Ok(CachedClock { shared })
    }
}

impl fmt::Debug for CachedClock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CachedClock").field("nanos", &self.now()).finish()
    }
}

impl Clock for CachedClock {
    #[inline]
    fn now(&self) -> Nanos {
        // Relaxed: see the upkeep thread's store.
        self.shared.nanos.load(StdOrdering::Relaxed)
    }

    /// Its source's: every thread reads one word, but the upkeep thread fills it from TSC
    /// readings, and moved to another core it can store a reading behind the last one.
    fn skew(&self) -> Nanos {
        self.shared.source.skew()
    }

    fn anchor_unix_nanos(&self) -> Option<Nanos> {
        self.shared.source.anchor_unix_nanos()
    }
}

/// A clock moved by hand, for tests and simulations. Clones share the same time.
///
/// It can be set backwards, to check that limiters never panic or over-admit when time does.
///
/// ```
/// use std::time::Duration;
/// use tollgate::{Clock, ManualClock};
/// let clock = ManualClock::new();
/// let handle = clock.clone();
/// handle.advance(Duration::from_millis(5));
/// assert_eq!(clock.now(), 5_000_000);
/// handle.set(1);
/// assert_eq!(clock.now(), 1);
/// ```
#[derive(Clone, Default)]
pub struct ManualClock {
    // A std atomic even under loom: time is a model input, not part of the protocol (sync.rs).
    nanos: Arc<StdAtomicU64>,
    /// The Unix time at which this clock read 0, read when first asked and kept for its clones.
    unix_anchor: Arc<std::sync::OnceLock<Option<Nanos>>>,
}

impl ManualClock {
    /// A clock at 0 ns.
    pub fn new() -> Self {
        Self::default()
    }

    /// A clock at `start` ns.
    pub fn starting_at(start: Nanos) -> Self {
        let clock = Self::new();
        clock.set(start);
        clock
    }

    /// Moves time forward by `by` (saturating at `u64::MAX` ns).
    pub fn advance(&self, by: Duration) {
        let by = duration_to_nanos(by);
        // SeqCst: tests reason about "advance happened before that check" across threads without
        // other synchronization; a single total order on the clock makes that reasoning valid.
        let _ =
            self.nanos.fetch_update(StdOrdering::SeqCst, StdOrdering::SeqCst, |t| Some(t.saturating_add(by)));
    }

    /// Sets the time, forwards or backwards.
    pub fn set(&self, nanos: Nanos) {
        // SeqCst: same total order as `advance`.
        self.nanos.store(nanos, StdOrdering::SeqCst);
    }
}

impl fmt::Debug for ManualClock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ManualClock").field("nanos", &self.now()).finish()
    }
}

impl Clock for ManualClock {
    #[inline]
    fn now(&self) -> Nanos {
        // SeqCst: pairs with the SeqCst writes above (one total order of clock values).
        self.nanos.load(StdOrdering::SeqCst)
    }

    fn anchor_unix_nanos(&self) -> Option<Nanos> {
        *self.unix_anchor.get_or_init(|| read_unix_anchor(self))
    }
}
