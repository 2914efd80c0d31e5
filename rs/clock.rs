//! Clocks: kernel timestamps (CLOCK_BOOTTIME) into wall time.

fn clock_ns(clock: libc::clockid_t) -> i64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: ts is a valid out pointer.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    ts.tv_sec * 1_000_000_000 + ts.tv_nsec
}

pub(crate) fn epoch_ns() -> u64 {
    clock_ns(libc::CLOCK_REALTIME) as u64
}

/// (CLOCK_REALTIME - CLOCK_BOOTTIME, CLOCK_BOOTTIME) now, the offset from
/// the tightest of a few samples: a thread preempted between its reads of
/// the two clocks would otherwise put timestamps off by as long as it
/// waited (two tracers on a busy machine disagreed by over a millisecond).
fn offset_now() -> (i64, i64) {
    let mut best = (i64::MAX, 0, 0);
    for _ in 0..8 {
        let boot1 = clock_ns(libc::CLOCK_BOOTTIME);
        let real = clock_ns(libc::CLOCK_REALTIME);
        let boot2 = clock_ns(libc::CLOCK_BOOTTIME);
        let boot = boot1 + (boot2 - boot1) / 2;
        best = best.min((boot2 - boot1, real - boot, boot));
    }
    (best.1, best.2)
}

/// How often (in boot time of the records) the offset is read again. The
/// wall clock is slewed by NTP and can be stepped, while the kernel's
/// clock is not: an offset read once drifted by 5 ms a second on a VM
/// whose clock was being corrected. Reading it costs about 0.5 µs.
const REFRESH_NS: i64 = 100_000_000;

/// Turns kernel timestamps into epoch ns with the wall clock's offset of
/// at most `REFRESH_NS` ago, so that a long-running tracer follows the wall
/// clock's corrections (a step shows from the first record after it is
/// read, a slew within a tenth of a second's worth).
pub(crate) struct WallClock {
    offset: i64,
    /// Boot ns from which the offset is read again.
    refresh_at: i64,
    sample: fn() -> (i64, i64),
}

impl WallClock {
    pub(crate) fn new() -> WallClock {
        WallClock::with_sample(offset_now)
    }

    fn with_sample(sample: fn() -> (i64, i64)) -> WallClock {
        let (offset, boot) = sample();
        WallClock { offset, refresh_at: boot.saturating_add(REFRESH_NS), sample }
    }

    /// Epoch ns of kernel timestamp `boot_ns`.
    pub(crate) fn wall_ns(&mut self, boot_ns: u64) -> u64 {
        if boot_ns as i64 >= self.refresh_at {
            let (offset, boot) = (self.sample)();
            self.offset = offset;
            self.refresh_at = boot.saturating_add(REFRESH_NS);
        }
        (boot_ns as i64).wrapping_add(self.offset) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicI64, Ordering};

    // The fake clocks: boot time advances by hand, the wall clock is
    // `WALL_MINUS_BOOT` ahead of it.
    static BOOT: AtomicI64 = AtomicI64::new(0);
    static WALL_MINUS_BOOT: AtomicI64 = AtomicI64::new(0);
    fn fake() -> (i64, i64) {
        (WALL_MINUS_BOOT.load(Ordering::SeqCst), BOOT.load(Ordering::SeqCst))
    }

    #[test]
    fn the_offset_follows_the_wall_clock_within_the_refresh_interval() {
        BOOT.store(1_000_000_000, Ordering::SeqCst);
        WALL_MINUS_BOOT.store(5_000, Ordering::SeqCst);
        let mut c = WallClock::with_sample(fake);
        assert_eq!(c.wall_ns(1_000_000_100), 1_000_005_100);
        // The wall clock is stepped back by 2 µs: not read again before the
        // interval is up...
        WALL_MINUS_BOOT.store(3_000, Ordering::SeqCst);
        BOOT.store(1_050_000_000, Ordering::SeqCst);
        assert_eq!(c.wall_ns(1_050_000_000), 1_050_005_000);
        // ...and from the first record after it.
        BOOT.store(1_100_000_000, Ordering::SeqCst);
        assert_eq!(c.wall_ns(1_100_000_000), 1_100_003_000);
        assert_eq!(c.wall_ns(1_000_000_100), 1_000_003_100, "an older record decoded later: the offset of now");
        // The next refresh is an interval after the time it was read at.
        WALL_MINUS_BOOT.store(9_000, Ordering::SeqCst);
        assert_eq!(c.wall_ns(1_199_999_999), 1_200_002_999);
        assert_eq!(c.wall_ns(1_200_000_000), 1_200_009_000);
    }

    #[test]
    fn the_real_offset_is_the_two_clocks_difference() {
        let (offset, boot) = offset_now();
        let real = clock_ns(libc::CLOCK_REALTIME);
        let boot_after = clock_ns(libc::CLOCK_BOOTTIME);
        assert!(boot <= boot_after);
        assert!((real - (boot_after + offset)).abs() < 50_000_000, "{real} {boot_after} {offset}");
    }
}
