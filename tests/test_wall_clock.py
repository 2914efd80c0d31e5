"""Event times are wall-clock time (epoch ns) while the wall clock is
corrected under a running tracer: the kernel stamps records with
CLOCK_BOOTTIME, and the tracer reads the wall clock's offset from it again
at least every 0.1 s of records (rs/clock.rs)."""
import os
import time

import tracer_ebpf
from conftest import wait_for

WRITE = "syscalls/sys_enter_write"
STEP_NS = 5_000_000_000


def written_at(t, fd, marker):
    """Writes `marker` to `fd` (each marker of its own length: contents of
    fds other than 1 and 2 are not captured); returns (wall ns just before,
    the event's timestamp_ns, wall ns just after)."""
    before = time.time_ns()
    os.write(fd, marker)
    after = time.time_ns()
    ev = wait_for(lambda: next((e for e in t.poll(0.1) if e.payload["fd"] == fd and e.payload["count"] == len(marker)), None),
                  timeout=10, interval=0)
    assert ev is not None, f"no event for {marker!r} within 10 s"
    return before, ev.timestamp_ns, after


def test_a_wall_clock_step_under_a_running_tracer_shows_in_event_times():
    fd = os.open("/dev/null", os.O_WRONLY)
    try:
        with tracer_ebpf.Tracer(WRITE, pids=os.getpid(), trace_self=True) as t:
            before, ts, after = written_at(t, fd, b"tbclock-before")
            assert before - 1_000_000 <= ts <= after + 1_000_000, (before, ts, after)
            stepped = False
            try:
                time.clock_settime_ns(time.CLOCK_REALTIME, time.time_ns() + STEP_NS)
                stepped = True
                time.sleep(0.25)  # past the tracer's interval for reading the offset again
                before, ts, after = written_at(t, fd, b"tbclock-stepped")
            finally:
                if stepped:
                    time.clock_settime_ns(time.CLOCK_REALTIME, time.time_ns() - STEP_NS)
            # The event of the write after the step has the stepped time, not
            # the one of the tracer's start 5 s behind it.
            assert before - 1_000_000 <= ts <= after + 1_000_000, (before, ts, after, ts - before)
            time.sleep(0.25)
            before, ts, after = written_at(t, fd, b"tbclock-restored-")
            assert before - 1_000_000 <= ts <= after + 1_000_000, (before, ts, after, ts - before)
    finally:
        os.close(fd)
