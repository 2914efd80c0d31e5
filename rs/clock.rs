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

/// CLOCK_REALTIME - CLOCK_BOOTTIME, from the tightest of a few samples: a
/// thread preempted between its reads of the two clocks would otherwise
/// put every timestamp of the tracer off by as long as it waited (two
/// tracers on a busy machine disagreed by over a millisecond).
pub(crate) fn clock_offset() -> i64 {
    let mut best = (i64::MAX, 0);
    for _ in 0..8 {
        let boot1 = clock_ns(libc::CLOCK_BOOTTIME);
        let real = clock_ns(libc::CLOCK_REALTIME);
        let boot2 = clock_ns(libc::CLOCK_BOOTTIME);
        best = best.min((boot2 - boot1, real - (boot1 + (boot2 - boot1) / 2)));
    }
    best.1
}
