//! Kernel CLOCK_MONOTONIC timestamps → UNIX time.
//!
//! The capture stage stamps events with `bpf_ktime_get_ns()` (CLOCK_MONOTONIC). The offset
//! realtime − monotonic is computed once at start-up: recomputing it per call would make spans
//! jump when NTP slews the wall clock, and one offset keeps durations exact.

/// Offset that turns a CLOCK_MONOTONIC nanosecond stamp into UNIX nanoseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClockOffset {
    realtime_minus_monotonic_ns: i128,
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

impl ClockOffset {
    /// Measures the offset now.
    pub fn from_system() -> Self {
        let realtime = clock_ns(libc::CLOCK_REALTIME);
        let monotonic = clock_ns(libc::CLOCK_MONOTONIC);
        Self {
            realtime_minus_monotonic_ns: realtime - monotonic,
        }
    }

    /// A fixed offset (tests, replays of recorded events).
    pub fn fixed(realtime_minus_monotonic_ns: i128) -> Self {
        Self {
            realtime_minus_monotonic_ns,
        }
    }

    /// UNIX time in nanoseconds of a CLOCK_MONOTONIC stamp (clamped to the u64 range).
    pub fn to_unix_nanos(&self, monotonic_ns: u64) -> u64 {
        let unix = i128::from(monotonic_ns) + self.realtime_minus_monotonic_ns;
        unix.clamp(0, i128::from(u64::MAX)) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
