//! Kernel timestamps (`bpf_ktime_get_ns`, CLOCK_MONOTONIC) to wall-clock time.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Converts CLOCK_MONOTONIC nanoseconds to UNIX time. The offset changes when the wall clock
/// is stepped or the machine resumes from suspend: a measured clock is measured again by
/// [`WallClock::refresh`] (the printer does, once per event, so one event's times agree).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WallClock {
    /// realtime − monotonic, in ns.
    offset_ns: i128,
    measured: bool,
}

impl WallClock {
    /// Measures the offset now.
    pub fn measure() -> Self {
        let mono = clock_ns(libc::CLOCK_MONOTONIC);
        let real = clock_ns(libc::CLOCK_REALTIME);
        Self {
            offset_ns: real - mono,
            measured: true,
        }
    }

    /// A fixed offset (tests, replays): never measured again.
    pub fn with_offset(offset_ns: i128) -> Self {
        Self {
            offset_ns,
            measured: false,
        }
    }

    /// Measures a measured clock's offset again (two clock reads; fixed clocks stay).
    pub fn refresh(&mut self) {
        if self.measured {
            *self = Self::measure();
        }
    }

    pub fn unix_ns(&self, monotonic_ns: u64) -> u64 {
        let ns = i128::from(monotonic_ns) + self.offset_ns;
        u64::try_from(ns.max(0)).unwrap_or(u64::MAX)
    }

    pub fn system_time(&self, monotonic_ns: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_nanos(self.unix_ns(monotonic_ns))
    }
}

/// Current CLOCK_MONOTONIC in ns (same clock as the kernel's timestamps).
pub fn monotonic_now_ns() -> u64 {
    u64::try_from(clock_ns(libc::CLOCK_MONOTONIC)).unwrap_or(0)
}

fn clock_ns(clock: libc::clockid_t) -> i128 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid clock id and pointer.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    i128::from(ts.tv_sec) * 1_000_000_000 + i128::from(ts.tv_nsec)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn converts_now_to_now() {
        let clock = WallClock::measure();
        let now_unix = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        let converted = clock.unix_ns(monotonic_now_ns());
        assert!(converted.abs_diff(now_unix) < 1_000_000_000);
        assert_eq!(WallClock::with_offset(-10).unix_ns(5), 0);
    }
}
