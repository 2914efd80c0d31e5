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

/// CLOCK_REALTIME - CLOCK_BOOTTIME, sampled tightly.
pub(crate) fn clock_offset() -> i64 {
    let boot1 = clock_ns(libc::CLOCK_BOOTTIME);
    let real = clock_ns(libc::CLOCK_REALTIME);
    let boot2 = clock_ns(libc::CLOCK_BOOTTIME);
    real - (boot1 + (boot2 - boot1) / 2)
}
