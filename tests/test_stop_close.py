"""stop() and close() under a writer that keeps writing, on the real kernel.

Both return once nothing more can be recorded: the handlers are switched off
and the kernel has let every handler run already under way finish (one RCU
grace period); the tracepoints are detached afterwards, by a release thread
(docs/protocol.md, "Start-up and close"). So:

- after stop() returns, the kernel records nothing more, however long the
  writer goes on, also when a filter is changed after the stop; what was
  recorded before is all handed out;
- after close() returns, every record is delivered or discarded, its kernel
  objects are gone within seconds, and a tracer opened right after it works.
"""

import os
import signal
import subprocess
import time

import pytest

import tracer_ebpf as te
from conftest import PY
from test_cleanup import assert_released, held_ids

W = "syscalls/sys_enter_write"


@pytest.fixture
def endless_writer():
    """A process named after this test run writing 16 bytes to /dev/null in
    a loop until it is killed: (its pid, its comm)."""
    comm = f"tbsc{os.getpid() % 100000}"[:15]
    code = (f"import ctypes, os; ctypes.CDLL(None).prctl(15, {comm.encode()!r}, 0, 0, 0)\n"
            "b = b'y' * 16\n"
            "while True: os.write(1, b)\n")
    with open(os.devnull, "wb") as null:
        proc = subprocess.Popen([PY, "-c", code], stdout=null)
    try:
        yield proc.pid, comm
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)


@pytest.fixture
def slow_release():
    """A tracer of every typed event, to close just before the one under
    test stops: detaching its tracepoints takes a good part of a second, and
    the stopped tracer's own detach waits behind it (releases run one at a
    time). So the tracepoint under test stays attached while the test looks:
    only the off switch keeps it from recording."""
    t = te.Tracer()
    yield t
    t.close()


def recording(t: te.Tracer, at_least: int, timeout: float = 10.0) -> int:
    """Waits until the kernel has recorded `at_least` events."""
    end = time.monotonic() + timeout
    while t.stats()["records"] < at_least:
        assert time.monotonic() < end, t.stats()
        time.sleep(0.01)
    return t.stats()["records"]


def records_stay(t: te.Tracer, seconds: float) -> tuple:
    """Kernel records right now and `seconds` later."""
    before = t.stats()["records"]
    time.sleep(seconds)
    return before, t.stats()["records"]


def stop_while_still_attached(t: te.Tracer, slow_release: te.Tracer) -> None:
    recording(t, 2000)
    slow_release.close()
    t.stop()


def drain_all(t: te.Tracer) -> int:
    n = 0
    while True:
        got = t.poll(timeout=5.0)
        if not got:
            return n
        n += len(got)


def test_after_stop_returns_a_running_writer_adds_nothing(endless_writer, slow_release):
    pid, comm = endless_writer
    with te.Tracer(W, pids=[pid]) as t:
        stop_while_still_attached(t, slow_release)
        before, after = records_stay(t, 0.5)
        assert after == before, (before, after, t.stats())
        got = drain_all(t)
        st = t.stats()
        # Everything recorded before the stop is handed out, nothing else.
        assert got == st["records"] == st["delivered"] == before and st["queued"] == 0, (got, st)
        assert t.drained


def test_a_filter_changed_after_stop_does_not_restart_recording(endless_writer, slow_release):
    pid, comm = endless_writer
    with te.Tracer(W, comm=[comm]) as t:
        stop_while_still_attached(t, slow_release)
        # At once, while the tracepoint may still be attached: the filter
        # rewrites the kernel's settings, the off switch among them.
        t.set_comm([comm])
        t.set_pids([pid])
        before, after = records_stay(t, 0.5)
        assert after == before, (before, after, t.stats())


def test_close_under_a_running_writer_accounts_for_every_record(endless_writer):
    pid, comm = endless_writer
    t = te.Tracer(W, pids=[pid])
    ids = held_ids(os.getpid())
    recording(t, 2000)
    got = len(t.poll(max_events=500, timeout=5.0))
    t.close()
    st = t.stats()
    assert got == st["delivered"] == 500, (got, st)
    assert st["records"] == st["delivered"] + st["discarded"] and st["queued"] == 0, st
    # The kernel objects go shortly after, while the writer still runs.
    assert_released(ids)
    # A tracer opened right after one closed is attached and records.
    with te.Tracer(W, pids=[pid]) as t2:
        assert recording(t2, 100) >= 100


FORK_AFTER_CLOSE = r"""
import os, sys, tracer_ebpf as te
t = te.Tracer()  # every typed event: detached by the release worker for most of a second
t.close()
pid = os.fork()
if pid == 0:
    import signal
    signal.alarm(30)  # a hang ends here, not as an orphan
    # The child has no release worker: its tracer must not wait for the parent's.
    t2 = te.Tracer("syscalls/sys_enter_write")
    t2.close()
    t3 = te.Tracer("syscalls/sys_enter_write")
    t3.close()
    os._exit(0)
_, status = os.waitpid(pid, 0)
print(os.waitstatus_to_exitcode(status))
"""


def test_a_child_forked_while_its_parent_releases_a_tracer_opens_and_closes_its_own():
    r = subprocess.run([PY, "-c", FORK_AFTER_CLOSE], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stdout.split() == ["0"], (r.stdout, r.stderr[-2000:])
