"""The polling thread yields the CPU while the queue is light (`yield_cpu`,
rs/cpu_yield.rs), on the real kernel.

- With `yield_cpu=True` the thread that polls is SCHED_IDLE while the queue
  holds less than a quarter of `queue_bytes`, gets SCHED_OTHER back once it
  holds a quarter, keeps it until the queue is down to an eighth, and has it
  back for good when the tracer closes.
- By default in the Python API (`yield_cpu=None`) only inside the tracer's
  own loops: a `for` loop over the tracer, `collect()`, `to_dataframe()`,
  `trace()`; the thread has its policy back when the loop ends (also by
  `break`) or the call returns, and a bare `poll()` never switches.
  `yield_cpu=False` never switches.
- Never without the reader thread (the poller then drains the kernel buffers
  itself); a policy its owner chose is left alone.
- The command-line front ends (tracer-example, the Rust and C examples) turn
  it on; `--no-yield-cpu` turns it off.
  Their reader thread keeps SCHED_OTHER (at nice -10).
"""

import os
import signal
import subprocess
import threading
import time

import pytest

import tracer_ebpf
from conftest import PY, gated_process, wait_for
from test_c_library import c_example  # noqa: F401  (fixture)

QUEUE = 128 * 1024
SIZE = 4096
WRITES = 40  # about 170 KiB of events: past the whole queue
WRITER = r"""
import os, sys
for i in range(int(sys.argv[1])):
    os.write(1, bytes([i % 251]) * int(sys.argv[2]))
"""


def policy_of(pid: int, tid: int) -> int:
    """The scheduling policy of thread `tid` of process `pid` (/proc stat, field 41)."""
    with open(f"/proc/{pid}/task/{tid}/stat") as f:
        return int(f.read().rsplit(")", 1)[1].split()[38])


def in_thread(fn):
    """Runs fn() in a fresh thread (its policy changes stay there); returns its result."""
    out = {}

    def run():
        try:
            out["value"] = fn()
        except BaseException as e:  # re-raised in the test's thread
            out["error"] = e

    th = threading.Thread(target=run)
    th.start()
    th.join(timeout=120)
    assert not th.is_alive(), "the polling thread hung"
    if "error" in out:
        raise out["error"]
    return out["value"]


def test_poller_is_idle_while_the_queue_is_light_and_normal_while_it_is_not():
    def scenario():
        seen = []
        cmd = [PY, "-I", "-S", "-c", WRITER, str(WRITES), str(SIZE)]
        with gated_process(cmd, stdout=subprocess.DEVNULL) as (proc, go):
            with tracer_ebpf.Tracer("syscalls/sys_enter_write", pids=[proc.pid], queue_bytes=QUEUE,
                                    yield_cpu=True) as t:
                assert not [n for n in t.notes if "yield_cpu" in n], t.notes
                assert os.sched_getscheduler(0) == os.SCHED_OTHER
                assert t.poll(timeout=0.05) == []
                seen.append(("empty", os.sched_getscheduler(0)))

                go()
                assert proc.wait(timeout=60) == 0
                # The reader fills the queue to its bound; the kernel holds the rest.
                assert wait_for(lambda: t.stats()["queued_bytes"] >= QUEUE // 4, timeout=10), t.stats()
                got = t.poll(max_events=1, timeout=1)
                seen.append(("quarter", os.sched_getscheduler(0)))

                # One event at a time: normal until a poll finds less than an eighth queued.
                while True:
                    before = t.stats()["queued_bytes"]
                    batch = t.poll(max_events=1, timeout=1)
                    got += batch
                    policy = os.sched_getscheduler(0)
                    if before >= QUEUE // 8:
                        assert policy == os.SCHED_OTHER, (before, policy)
                    else:
                        assert policy == os.SCHED_IDLE, (before, policy)
                        break
                got += t.drain()
                assert len([e for e in got if e.pid == proc.pid]) == WRITES
                assert t.stats()["payload_full"] == 0 and t.stats()["ring_full"] == 0, t.stats()
            seen.append(("closed", os.sched_getscheduler(0)))
        return seen

    assert in_thread(scenario) == [("empty", os.SCHED_IDLE), ("quarter", os.SCHED_OTHER), ("closed", os.SCHED_OTHER)]


@pytest.mark.parametrize("kw", [{}, {"yield_cpu": True, "reader_thread": False}], ids=["default", "no-reader-thread"])
def test_poller_keeps_its_policy(kw):
    def scenario():
        with tracer_ebpf.Tracer("syscalls/sys_enter_write", comm="tbnothing", **kw) as t:
            t.poll(timeout=0.05)
            return os.sched_getscheduler(0)

    assert in_thread(scenario) == os.SCHED_OTHER


def iterate_writer(t_kw, stop_after):
    """Iterates a tracer of a process writing WRITES small writes; returns
    (events seen, the thread's policy inside the loop body at each event,
    its policy right after the loop, after close). `stop_after`: break after
    that many events (None: stop() once all arrived, the loop then ends by
    itself)."""
    cmd = [PY, "-I", "-S", "-c", WRITER, str(WRITES), "16"]
    with gated_process(cmd, stdout=subprocess.DEVNULL) as (proc, go):
        with tracer_ebpf.Tracer("syscalls/sys_enter_write", pids=[proc.pid], **t_kw) as t:
            go()
            assert proc.wait(timeout=60) == 0
            seen, inside = 0, set()
            for ev in t:
                assert ev.pid == proc.pid
                seen += 1
                inside.add(os.sched_getscheduler(0))
                if seen == stop_after:
                    break
                if seen == WRITES:
                    t.stop()
            after = os.sched_getscheduler(0)
        return seen, inside, after, os.sched_getscheduler(0)


@pytest.mark.parametrize("stop_after", [5, None], ids=["break", "loop-ends"])
def test_default_iterator_yields_inside_the_loop_only(stop_after):
    got = in_thread(lambda: iterate_writer({}, stop_after))
    assert got == (stop_after or WRITES, {os.SCHED_IDLE}, os.SCHED_OTHER, os.SCHED_OTHER)


def test_iterator_never_yields_with_yield_cpu_false():
    got = in_thread(lambda: iterate_writer({"yield_cpu": False}, 5))
    assert got == (5, {os.SCHED_OTHER}, os.SCHED_OTHER, os.SCHED_OTHER)


def test_yield_cpu_true_keeps_switching_after_the_loop_until_close():
    got = in_thread(lambda: iterate_writer({"yield_cpu": True}, 5))
    assert got == (5, {os.SCHED_IDLE}, os.SCHED_IDLE, os.SCHED_OTHER)


@pytest.mark.parametrize("call", ["collect", "to_dataframe"])
def test_default_collect_yields_while_it_runs(call):
    """Seen from another thread: the collecting thread is idle during the
    call (the queue stays empty) and has its policy back once it returns."""
    if call == "to_dataframe":
        pytest.importorskip("pandas")
    tid, during = [], []

    def scenario():
        tid.append(threading.get_native_id())
        with tracer_ebpf.Tracer("syscalls/sys_enter_write", comm="tbnothing") as t:
            getattr(t, call)(1.5)
            return os.sched_getscheduler(0)

    def watch():
        assert wait_for(lambda: tid, timeout=30)
        time.sleep(0.8)  # well inside the call (start-up takes less than 0.3 s)
        during.append(policy_of(os.getpid(), tid[0]))

    w = threading.Thread(target=watch)
    w.start()
    after = in_thread(scenario)
    w.join(timeout=60)
    assert during == [os.SCHED_IDLE] and after == os.SCHED_OTHER


def test_default_trace_yields_while_it_runs():
    """trace() polls in the caller's thread: idle meanwhile, normal after."""
    tid, during = [], []

    def scenario():
        tid.append(threading.get_native_id())
        r = tracer_ebpf.trace(["sleep", "1.5"], "syscalls/sys_enter_write")
        return r.returncode, os.sched_getscheduler(0)

    def watch():
        assert wait_for(lambda: tid, timeout=30)
        time.sleep(1.0)
        during.append(policy_of(os.getpid(), tid[0]))

    w = threading.Thread(target=watch)
    w.start()
    after = in_thread(scenario)
    w.join(timeout=60)
    assert during == [os.SCHED_IDLE] and after == (0, os.SCHED_OTHER)


def test_a_policy_chosen_by_the_caller_is_left_alone():
    def scenario():
        os.sched_setscheduler(0, os.SCHED_BATCH, os.sched_param(0))
        with tracer_ebpf.Tracer("syscalls/sys_enter_write", comm="tbnothing", yield_cpu=True) as t:
            t.poll(timeout=0.05)
            during = os.sched_getscheduler(0)
        return during, os.sched_getscheduler(0)

    assert in_thread(scenario) == (os.SCHED_BATCH, os.SCHED_BATCH)


@pytest.mark.parametrize("front", ["tracer_example", "rust_example", "c_example"])
@pytest.mark.parametrize("flag", [None, "--no-yield-cpu"])
def test_command_line_front_ends_yield_unless_told_not_to(front, flag, request):
    exe = request.getfixturevalue(front)
    argv = [exe, "--events", "syscalls/sys_enter_write", "--comm", "tbnothing"] + ([flag] if flag else [])
    p = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                         preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        assert "tracing" in p.stderr.readline()
        want = os.SCHED_OTHER if flag else os.SCHED_IDLE
        # The main thread polls and formats; it is idle from its first poll on.
        assert wait_for(lambda: policy_of(p.pid, p.pid) == want, timeout=5), policy_of(p.pid, p.pid)
        readers = [int(t) for t in os.listdir(f"/proc/{p.pid}/task")
                   if open(f"/proc/{p.pid}/task/{t}/comm").read().strip() == "tracer-reader"]
        assert len(readers) == 1 and policy_of(p.pid, readers[0]) == os.SCHED_OTHER
    finally:
        p.send_signal(signal.SIGINT)
        try:
            p.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            p.kill()
            p.communicate()
    assert p.returncode == 0, p.returncode
