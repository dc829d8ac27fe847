//! Kernel CLOCK_MONOTONIC timestamps → UNIX time.
//!
//! The capture stage stamps events with `bpf_ktime_get_ns()` (CLOCK_MONOTONIC). The offset
//! realtime − monotonic holds while NTP only slews (it slews both clocks alike), but changes
//! when the wall clock is stepped (an NTP step, `date -s`) and when the machine resumes from
//! suspend (the monotonic clock stops while suspended). So it is measured again every
//! [`REMEASURE_INTERVAL_NS`], and both ends of a span are converted with one offset: durations
//! stay exact and an end never precedes its start.

use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};

/// How often the offset is measured again (in monotonic time): a stepped clock shows in spans
/// within this, at the cost of three clock reads per interval.
pub const REMEASURE_INTERVAL_NS: i128 = 1_000_000_000;

/// Where the offset comes from: the system's clocks, or a test's.
pub trait ClockSource: Send + Sync + fmt::Debug {
    /// CLOCK_MONOTONIC now, in ns.
    fn monotonic_ns(&self) -> i128;
    /// CLOCK_REALTIME − CLOCK_MONOTONIC now, in ns.
    fn realtime_minus_monotonic_ns(&self) -> i128;
}

/// The host's clocks.
#[derive(Debug)]
pub struct SystemClocks;

impl ClockSource for SystemClocks {
    fn monotonic_ns(&self) -> i128 {
        clock_ns(libc::CLOCK_MONOTONIC)
    }

    /// Reads realtime between two monotonic reads and keeps the tightest of a few tries, so
    /// that a preemption between the reads does not skew the offset.
    fn realtime_minus_monotonic_ns(&self) -> i128 {
        let mut best: Option<(i128, i128)> = None; // (bracket width, offset)
        for _ in 0..3 {
            let before = clock_ns(libc::CLOCK_MONOTONIC);
            let realtime = clock_ns(libc::CLOCK_REALTIME);
            let after = clock_ns(libc::CLOCK_MONOTONIC);
            let width = after - before;
            let offset = realtime - (before + width / 2);
            if best.is_none_or(|(w, _)| width < w) {
                best = Some((width, offset));
            }
        }
        best.map_or(0, |(_, offset)| offset)
    }
}

fn clock_ns(clock: libc::clockid_t) -> i128 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; both clock ids are always supported on Linux.
    let rc = unsafe { libc::clock_gettime(clock, &mut ts) };
    if rc != 0 {
        return 0;
    }
    i128::from(ts.tv_sec) * 1_000_000_000 + i128::from(ts.tv_nsec)
}

/// Turns CLOCK_MONOTONIC nanosecond stamps into UNIX nanoseconds. Clones share one measured
/// offset.
#[derive(Clone, Debug)]
pub struct ClockOffset {
    kind: Kind,
}

#[derive(Clone, Debug)]
enum Kind {
    /// Tests and replays of recorded events.
    Fixed(i128),
    Measured(Arc<Measured>),
}

#[derive(Debug)]
struct Measured {
    source: Box<dyn ClockSource>,
    /// (offset, monotonic time it was measured at).
    last: Mutex<(i128, i128)>,
}

impl ClockOffset {
    /// The host's clocks, measured now and again every [`REMEASURE_INTERVAL_NS`].
    pub fn from_system() -> Self {
        Self::from_source(Box::new(SystemClocks))
    }

    /// Any clock source, measured now and again every [`REMEASURE_INTERVAL_NS`].
    pub fn from_source(source: Box<dyn ClockSource>) -> Self {
        let last = (source.realtime_minus_monotonic_ns(), source.monotonic_ns());
        Self {
            kind: Kind::Measured(Arc::new(Measured {
                source,
                last: Mutex::new(last),
            })),
        }
    }

    /// A fixed offset (tests, replays of recorded events).
    pub fn fixed(realtime_minus_monotonic_ns: i128) -> Self {
        Self {
            kind: Kind::Fixed(realtime_minus_monotonic_ns),
        }
    }

    /// realtime − monotonic now: measured again when the last measure is older than the
    /// interval (or the monotonic clock reads earlier than it, which a test source can do).
    pub fn offset_ns(&self) -> i128 {
        match &self.kind {
            Kind::Fixed(offset) => *offset,
            Kind::Measured(measured) => {
                let now = measured.source.monotonic_ns();
                let mut last = measured.last.lock().unwrap_or_else(PoisonError::into_inner);
                let (offset, at) = *last;
                if now - at >= REMEASURE_INTERVAL_NS || now < at {
                    let offset = measured.source.realtime_minus_monotonic_ns();
                    *last = (offset, now);
                    return offset;
                }
                offset
            }
        }
    }

    /// UNIX time in nanoseconds of a CLOCK_MONOTONIC stamp (clamped to the u64 range).
    pub fn to_unix_nanos(&self, monotonic_ns: u64) -> u64 {
        with_offset(monotonic_ns, self.offset_ns())
    }

    /// Both ends of a span with one offset: the duration is the monotonic one, exactly, and
    /// the end is never before the start (stamps out of order are clamped to a zero duration).
    pub fn span_unix_nanos(&self, start_ns: u64, end_ns: u64) -> (u64, u64) {
        let offset = self.offset_ns();
        let start = with_offset(start_ns, offset);
        (start, with_offset(end_ns, offset).max(start))
    }
}

fn with_offset(monotonic_ns: u64, offset: i128) -> u64 {
    let unix = i128::from(monotonic_ns) + offset;
    unix.clamp(0, i128::from(u64::MAX)) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Clocks a test sets by hand.
    #[derive(Debug, Default, Clone)]
    struct TestClocks(Arc<Mutex<(i128, i128)>>); // (monotonic, realtime − monotonic)

    impl TestClocks {
        fn set(&self, monotonic: i128, offset: i128) {
            *self.0.lock().unwrap() = (monotonic, offset);
        }
    }

    impl ClockSource for TestClocks {
        fn monotonic_ns(&self) -> i128 {
            self.0.lock().unwrap().0
        }
        fn realtime_minus_monotonic_ns(&self) -> i128 {
            self.0.lock().unwrap().1
        }
    }

    const SECOND: i128 = 1_000_000_000;
    const BASE: i128 = 1_700_000_000 * SECOND;

    #[test]
    fn fixed_offset_is_added() {
        let clock = ClockOffset::fixed(1_700_000_000_000_000_000);
        assert_eq!(clock.to_unix_nanos(5), 1_700_000_000_000_000_005);
    }

    #[test]
    fn negative_results_clamp_to_zero() {
        assert_eq!(ClockOffset::fixed(-10).to_unix_nanos(5), 0);
    }

    #[test]
    fn system_offset_maps_monotonic_now_close_to_realtime_now() {
        let clock = ClockOffset::from_system();
        let mono = clock_ns(libc::CLOCK_MONOTONIC) as u64;
        let unix = clock.to_unix_nanos(mono) as i128;
        let real = clock_ns(libc::CLOCK_REALTIME);
        assert!((real - unix).abs() < 1_000_000_000, "{real} vs {unix}");
    }

    #[test]
    fn a_stepped_wall_clock_is_picked_up_at_the_next_measure() {
        let clocks = TestClocks::default();
        clocks.set(100 * SECOND, BASE);
        let clock = ClockOffset::from_source(Box::new(clocks.clone()));
        assert_eq!(clock.offset_ns(), BASE);

        // NTP steps the wall clock 30 s forward; before the interval is up, the old offset
        // still applies (measuring is not free), after it the new one does.
        let stepped = BASE + 30 * SECOND;
        clocks.set(100 * SECOND + REMEASURE_INTERVAL_NS / 2, stepped);
        assert_eq!(clock.offset_ns(), BASE);
        clocks.set(100 * SECOND + REMEASURE_INTERVAL_NS, stepped);
        assert_eq!(clock.offset_ns(), stepped);
        let at = 101 * SECOND;
        assert_eq!(clock.to_unix_nanos(at as u64) as i128, at + stepped);

        // A suspend: monotonic time stood still for an hour of wall time.
        let resumed = stepped + 3600 * SECOND;
        clocks.set(102 * SECOND, resumed);
        assert_eq!(clock.offset_ns(), resumed);

        // Clones share the measure.
        let clone = clock.clone();
        clocks.set(104 * SECOND, BASE);
        assert_eq!(clone.offset_ns(), BASE);
        clocks.set(104 * SECOND + 1, BASE + SECOND);
        assert_eq!(clock.offset_ns(), BASE);
    }

    #[test]
    fn a_span_keeps_its_duration_and_never_ends_before_it_starts() {
        let clocks = TestClocks::default();
        clocks.set(10 * SECOND, BASE);
        let clock = ClockOffset::from_source(Box::new(clocks.clone()));
        let (start_ns, end_ns) = (9 * SECOND as u64, 9 * SECOND as u64 + 1_234_567);
        // The wall clock steps back 5 s between the call's start and its end being converted:
        // both ends still use one offset, so the duration is exact and the span is ordered.
        clocks.set(12 * SECOND, BASE - 5 * SECOND);
        let (start, end) = clock.span_unix_nanos(start_ns, end_ns);
        assert_eq!(end - start, 1_234_567);
        assert_eq!(start as i128, 9 * SECOND + BASE - 5 * SECOND);
        // Stamps out of order (a later event stamped earlier) give a zero duration, never a
        // negative one; the same across any offset change.
        for (mono, offset) in [(13, BASE + 7 * SECOND), (20, BASE - 9 * SECOND), (21, 0)] {
            clocks.set(mono * SECOND, offset);
            let (start, end) = clock.span_unix_nanos(5_000, 4_000);
            assert!(end >= start);
            assert_eq!(end, start);
        }
    }
}
