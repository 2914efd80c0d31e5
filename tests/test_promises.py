"""Issue 14 (promises kept), on the real kernel:

- stop is a drain: what was captured before a stop is handed out (Python
  iterator, collect(), trace() interrupted, the CLI at --duration), and what a
  close() leaves behind is counted as `discarded`; `delivered` counts events
  handed out, so records == delivered + queued + discarded;
- fork safety: in a forked child the tracer is inert, holds nothing of the
  kernel's, and the parent never notices.
"""

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from conftest import PY
from test_cleanup import bpf_fds

import tracer_ebpf as te

W = "syscalls/sys_enter_write"


def writer(comm: str, n: int, size: int = 10) -> None:
    """Runs a process named `comm` that makes `n` writes of `size` bytes to
    /dev/null on fd 1, and waits for it."""
    code = (f"import ctypes, os; ctypes.CDLL(None).prctl(15, {comm.encode()!r}, 0, 0, 0)\n"
            f"b = b'x' * {size}\n"
            f"for _ in range({n}): os.write(1, b)\n")
    with open(os.devnull, "wb") as null:
        subprocess.run([PY, "-c", code], stdout=null, check=True, timeout=120)


def settle(t: te.Tracer, records: int, timeout: float = 10.0) -> dict:
    """Waits until the kernel has recorded `records` events and the reader
    thread has moved them all to the queue; returns the counters then."""
    end = time.monotonic() + timeout
    while True:
        st = t.stats()
        if (st["records"] >= records and st["queued"] + st["delivered"] >= st["records"]) or time.monotonic() > end:
            return st
        time.sleep(0.02)


def comm_for(tag: str) -> str:
    return f"tb{tag}{os.getpid() % 10000}"[:15]


# -- stop is a drain ---------------------------------------------------------

def test_delivered_counts_events_handed_out_not_queued():
    comm = comm_for("dlv")
    with te.Tracer(W, comm=comm) as t:
        writer(comm, 500)
        st = settle(t, 500)
        assert st["records"] == 500 and st["queued"] == 500 and st["delivered"] == 0, st
        got = t.poll(1.0, max_events=200)
        st = t.stats()
        assert len(got) == 200 and st["delivered"] == 200 and st["queued"] == 300, st
        assert st["records"] == st["delivered"] + st["queued"], st


def test_after_stop_iteration_hands_out_everything_captured_then_ends():
    comm = comm_for("stp")
    with te.Tracer(W, comm=comm) as t:
        writer(comm, 3000)
        t.stop()
        assert t.stopped and not t.drained
        start = time.monotonic()
        events = list(t)  # ends by itself: no new event can come
        assert time.monotonic() - start < 5
        assert t.drained
        st = t.stats()
    assert len(events) == 3000 == st["records"] == st["delivered"], st
    assert [e.payload["count"] for e in events] == [10] * 3000
    assert t.stats()["discarded"] == 0
    # Nothing is captured after stop().
    assert t.closed


def test_poll_after_stop_returns_at_once_when_drained():
    with te.Tracer(W, comm=comm_for("pol")) as t:
        t.stop()
        start = time.monotonic()
        assert t.poll(5.0) == []
        assert time.monotonic() - start < 1.0 and t.drained


def test_close_counts_what_was_not_handed_out_as_discarded():
    comm = comm_for("dis")
    t = te.Tracer(W, comm=comm)
    writer(comm, 1000)
    settle(t, 1000)
    got = t.poll(1.0, max_events=100)
    t.close()
    st = t.stats()
    assert len(got) == 100 and st["delivered"] == 100 and st["discarded"] == 900 and st["queued"] == 0, st
    assert st["records"] == st["delivered"] + st["discarded"], st


def test_close_counts_records_still_unread_in_the_kernel_buffers():
    # No reader thread: the records stay in the ring until someone polls.
    comm = comm_for("unr")
    t = te.Tracer(W, comm=comm, reader_thread=False)
    writer(comm, 700)
    t.close()
    st = t.stats()
    assert st["records"] == 700 and st["delivered"] == 0 and st["discarded"] == 700, st


INTERRUPTED = textwrap.dedent("""
    import os, signal, subprocess, sys, threading
    import tracer_ebpf as te
    signal.signal(signal.SIGINT, signal.default_int_handler)
    threading.Timer(1.5, lambda: os.kill(os.getpid(), signal.SIGINT)).start()
    # A write every 2 ms, for far longer than the test.
    code = ("import ctypes, os, time\\n"
            "ctypes.CDLL(None).prctl(15, b'tbintr', 0, 0, 0)\\n"
            "for i in range(100000):\\n"
            "    os.write(1, b'line%d\\\\n' % i); time.sleep(0.002)\\n")
    null = open(os.devnull, "wb")
    if sys.argv[1] == "trace":
        r = te.trace([sys.executable, "-c", code], "syscalls/sys_enter_write", stdout=null)
        events, st, flag = r.events, r.stats, r.interrupted
    else:
        t = te.Tracer("syscalls/sys_enter_write", comm="tbintr")
        w = subprocess.Popen([sys.executable, "-c", code], stdout=null)
        events = t.collect(30)
        flag = t.stopped
        w.kill(); w.wait()
        t.close()
        st = t.stats()
    print(len(events), st["records"], st["delivered"], st["discarded"], flag, flush=True)
""")


@pytest.mark.parametrize("mode", ["trace", "collect"])
def test_ctrl_c_during_trace_or_collect_returns_what_was_captured(mode):
    r = subprocess.run([PY, "-c", INTERRUPTED, mode], capture_output=True, text=True, timeout=60,
                       preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    assert r.returncode == 0, r.stderr
    lines, records, delivered, discarded, flag = r.stdout.split()
    # About 1.5 s of a write every 2 ms: hundreds of events, all handed out.
    assert int(lines) >= 50 and flag == "True", r.stdout
    assert int(records) == int(delivered) + int(discarded) and int(discarded) == 0, r.stdout


# -- fork safety ---------------------------------------------------------------

def child_bpf_mappings(pid: int):
    with open(f"/proc/{pid}/maps") as f:
        return [l for l in f if l.rstrip().endswith("anon_inode:bpf-map")]


def test_a_forked_child_holds_nothing_of_the_tracer_and_cannot_use_it():
    comm = comm_for("frk")
    t = te.Tracer(W, comm=comm)
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: report, then wait to be inspected
        os.close(r)
        msgs = []
        try:
            t.poll(0.1)
            msgs.append("poll worked")
        except te.TracerError as e:
            msgs.append("poll: " + ("forked child" if "forked child" in str(e) else str(e)))
        try:
            t.stats()
            msgs.append("stats worked")
        except te.TracerError:
            msgs.append("stats: refused")
        os.write(w, ("|".join(msgs) + "\n").encode())
        time.sleep(3)
        t.close()  # touches nothing of the parent's
        del t
        os._exit(0)
    os.close(w)
    try:
        with os.fdopen(r) as f:
            import select
            assert select.select([f], [], [], 10)[0], "child did not report"
            report = f.readline().strip()
        assert report == "poll: forked child|stats: refused", report
        # Right after the fork the child holds no BPF or perf-event fd and
        # no mapping of the tracer's maps.
        assert bpf_fds(pid) == [] and child_bpf_mappings(pid) == []
        # The parent's tracer works on, while and after the child closes its copy.
        writer(comm, 20)
        got = t.collect(0.5)
        assert len(got) == 20
        assert os.waitpid(pid, 0)[1] == 0
        writer(comm, 30)
        assert len(t.collect(0.5)) == 30
        # The reader thread is idle, not spinning on a stop signal from the child.
        cpu0 = time.process_time()
        time.sleep(1.0)
        assert time.process_time() - cpu0 < 0.2
    finally:
        t.close()
        try:
            os.waitpid(pid, 0)
        except ChildProcessError:
            pass


FORK_RACE = textwrap.dedent("""
    import os, sys, threading, time
    import tracer_ebpf as te
    t = te.Tracer("syscalls/sys_enter_write")
    stop = False
    def reader():
        while not stop:
            t.poll(0.01)
    th = threading.Thread(target=reader); th.start()
    hung = 0
    for i in range(int(sys.argv[1])):
        pid = os.fork()
        if pid == 0:
            try:
                t.poll(0.01)
            except te.TracerError:
                pass
            t.close()
            os._exit(0)
        end = time.monotonic() + 5
        while time.monotonic() < end:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                break
            time.sleep(0.01)
        else:
            hung += 1
            os.kill(pid, 9); os.waitpid(pid, 0)
    stop = True; th.join()
    t.close()
    print(hung)
""")


RELEASE_FORKS = textwrap.dedent("""
    import os, time, tracer_ebpf as te
    t = te.Tracer()  # every typed event: their release takes a good part of a second
    t.close()
    forks = bad = 0
    end = time.monotonic() + 1.5
    while time.monotonic() < end:
        r, w = os.pipe()  # numbers the release thread has just freed
        pid = os.fork()
        if pid == 0:
            try:
                os.write(w, b"k")
                os._exit(0)
            except OSError:
                os._exit(3)
        _, status = os.waitpid(pid, 0)
        os.close(w)
        ok = os.read(r, 1) == b"k" and os.waitstatus_to_exitcode(status) == 0
        os.close(r)
        forks += 1
        bad += not ok
    print(forks, bad)
""")


def test_a_child_forked_while_a_closed_tracer_is_released_keeps_its_own_descriptors():
    # The child closes the tracer's descriptors it inherits; a number the
    # release thread has closed and a pipe has taken since is not one of them.
    r = subprocess.run([PY, "-c", RELEASE_FORKS], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr[-2000:]
    forks, bad = map(int, r.stdout.split())
    assert forks >= 50 and bad == 0, r.stdout


def test_forking_while_another_thread_polls_never_hangs_the_child():
    r = subprocess.run([PY, "-c", FORK_RACE, "40"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "0", r.stdout + r.stderr


def run_cli_with_late_reader(tracer_example, comm, n, drain_seconds):
    """tracer-example --duration 2 while `n` writes happen, its stdout not
    read until the duration is over (the events wait in its queue); returns
    (JSON lines of `comm`, stderr)."""
    import json
    import select
    p = subprocess.Popen([tracer_example, "--events", W, "--comm", comm, "--duration", "2",
                          "--drain-seconds", str(drain_seconds)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        assert select.select([p.stderr], [], [], 30)[0], "tracer-example did not start"
        assert b"tracing" in p.stderr.readline()
        writer(comm, n)
        time.sleep(3)  # --duration is over; the events wait in the queue
        out, err = p.communicate(timeout=120)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert p.returncode == 0, err
    lines = [json.loads(l) for l in out.splitlines()]
    return [l for l in lines if l["comm"] == comm], err.decode()


def test_cli_prints_every_captured_event_after_duration(tracer_example):
    comm = comm_for("cli")
    lines, err = run_cli_with_late_reader(tracer_example, comm, 20000, 60)
    assert len(lines) == 20000, err
    assert " discarded=0 " in err and " delivered=20000 " in err, err


def test_cli_counts_what_it_could_not_print_in_time_as_discarded(tracer_example):
    comm = comm_for("cld")
    lines, err = run_cli_with_late_reader(tracer_example, comm, 20000, 0)
    summary = dict(kv.split("=") for kv in err.split("; ", 1)[1].split("\n")[0].split() if "=" in kv)
    assert int(summary["discarded"]) > 0 and int(summary["records"]) == 20000, err
    assert int(summary["delivered"]) == len(lines) and len(lines) + int(summary["discarded"]) == 20000, err
    assert "were not printed (discarded at stop)" in err


# -- feedback loops and exclusions ---------------------------------------------

FEEDBACK = textwrap.dedent("""
    import sys, time, tracer_ebpf as te
    t = te.Tracer("syscalls/sys_enter_write", exclude_output_readers=sys.argv[1] == "1")
    sys.stderr.write("readers %s\\n" % ",".join(map(str, t.output_readers))); sys.stderr.flush()
    readers = set(sys.argv[2].split(","))
    print("start", flush=True)  # one line through the relays, even on an idle machine
    fed = 0
    end = time.monotonic() + 1.5
    while time.monotonic() < end:
        for ev in t.poll(0.1):
            fed += ev.comm in readers
            # Every event is printed: a traced reader would turn each line
            # into new events.
            sys.stdout.write("%d %s\\n" % (ev.pid, ev.comm))
        sys.stdout.flush()
    t.close()
    sys.stderr.write("fed %d\\n" % fed)
""")

# Reads its stdin and writes it on, as `tee` or `jq` would.
RELAY = "import ctypes, os, sys; ctypes.CDLL(None).prctl(15, sys.argv[1].encode(), 0, 0, 0)\n" \
        "while True:\n    b = os.read(0, 65536)\n    if not b: break\n    os.write(1, b)\n"


@pytest.mark.parametrize("exclude", [True, False])
def test_the_readers_of_the_tracers_output_pipe_are_not_traced(exclude):
    """tracer | relay1 | relay2 > /dev/null: both relays write what the
    tracer prints; traced, they feed it without end."""
    with open(os.devnull, "wb") as null:
        tr = subprocess.Popen([PY, "-c", FEEDBACK, "1" if exclude else "0", "tbrelay1,tbrelay2"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        r1 = subprocess.Popen([PY, "-c", RELAY, "tbrelay1"], stdin=tr.stdout, stdout=subprocess.PIPE)
        r2 = subprocess.Popen([PY, "-c", RELAY, "tbrelay2"], stdin=r1.stdout, stdout=null)
        tr.stdout.close()
        r1.stdout.close()
        try:
            err = tr.communicate(timeout=60)[1].decode()
        finally:
            for p in (tr, r1, r2):
                p.wait(timeout=30)
    readers = {int(p) for p in err.split("readers ")[1].split("\n")[0].split(",") if p}
    fed = int(err.split("fed ")[1].split()[0])
    if exclude:
        # The relays, and this test, which reads the tracer's stderr.
        assert readers == {r1.pid, r2.pid, os.getpid()} and fed == 0, err
    else:
        assert readers == set() and fed > 100, err


def test_the_reader_of_the_tracers_pty_is_not_traced():
    """tracer on a pty whose master a relay reads (a terminal, sshd, tmux)."""
    import pty
    master, slave = pty.openpty()
    with open(os.devnull, "wb") as null:
        relay = subprocess.Popen([PY, "-c", RELAY, "tbptyrelay"], stdin=master, stdout=null)
        try:
            tr = subprocess.run([PY, "-c", FEEDBACK, "1", "tbptyrelay"], stdout=slave, stderr=subprocess.PIPE,
                                timeout=60)
        finally:
            os.close(slave)
            os.close(master)
            relay.kill()
            relay.wait()
    err = tr.stderr.decode()
    assert f"readers {relay.pid},{os.getpid()}\n" in err or f"readers {os.getpid()},{relay.pid}\n" in err, err
    assert "fed 0" in err, err


def test_exclude_pids_and_exclude_comm_leave_those_processes_out():
    keep, drop = comm_for("kp"), comm_for("dr")
    with te.Tracer(W, comm=[keep, drop], exclude_comm=drop) as t:
        writer(keep, 5)
        writer(drop, 5)
        got = t.collect(0.5)
    assert sorted({e.comm for e in got}) == [keep] and len(got) == 5
    sleeper = subprocess.Popen([PY, "-c", "import ctypes, os, sys, time\n"
                                f"ctypes.CDLL(None).prctl(15, {keep.encode()!r}, 0, 0, 0)\n"
                                "sys.stdin.readline()\nos.write(1, b'x')\n"],
                               stdin=subprocess.PIPE, stdout=subprocess.DEVNULL)
    try:
        with te.Tracer(W, comm=keep, exclude_pids=[sleeper.pid]) as t:
            sleeper.communicate(b"go\n", timeout=30)
            writer(keep, 3)
            got = t.collect(0.5)
        assert len(got) == 3 and sleeper.pid not in {e.pid for e in got}
    finally:
        sleeper.kill()
        sleeper.wait()


# -- input: pids and comm prefixes -----------------------------------------------

def test_own_pid_is_an_error_unless_trace_self():
    with pytest.raises(te.ConfigError, match="the tracer itself"):
        te.Tracer(W, pids=[os.getpid()])
    with te.Tracer(W, pids=[os.getpid()], trace_self=True) as t:
        os.write(2, b"")  # a write of this process, now traced
        os.write(1, b"")
        got = t.collect(0.3)
    assert got and all(e.pid == os.getpid() for e in got)


def test_a_pid_that_does_not_exist_is_an_error():
    child = subprocess.Popen(["true"])
    child.wait()
    dead = child.pid
    with pytest.raises(te.ConfigError, match=f"no process with pid {dead}"):
        te.Tracer(W, pids=[dead])


def test_set_pids_that_fail_validation_change_nothing():
    comm = comm_for("spv")
    sleeper = subprocess.Popen(["sleep", "30"])
    try:
        with te.Tracer(W, pids=[sleeper.pid], comm=comm) as t:
            child = subprocess.Popen(["true"])
            child.wait()
            with pytest.raises(te.ConfigError, match="no process"):
                t.set_pids([sleeper.pid, child.pid])
            with pytest.raises(te.ConfigError, match="at most 65536 pids"):
                t.set_pids(list(range(1, 70000)))
            # Still the old filter: the writer (another pid) is not traced.
            writer(comm, 3)
            assert t.collect(0.3) == []
            t.set_pids([])  # no pid filter: it is traced
            writer(comm, 3)
            assert len(t.collect(0.3)) == 3
    finally:
        sleeper.kill()
        sleeper.wait()


def test_a_comm_prefix_with_a_nul_byte_is_an_error():
    with pytest.raises(te.ConfigError, match="NUL"):
        te.Tracer(W, comm="ab\0")
    with te.Tracer(W, comm="tbnul") as t:
        with pytest.raises(te.ConfigError, match="NUL"):
            t.set_comm(["a\0b"])


# -- errors ----------------------------------------------------------------------

def test_closing_from_another_thread_makes_every_reading_call_raise_one_error_type():
    import threading
    seen = set()
    for call in ("poll", "poll_columns", "stats", "set_comm"):
        for delay in (0.0, 0.05, 0.2):
            t = te.Tracer(W, comm=comm_for("thr"))
            threading.Timer(delay, t.close).start()
            end = time.monotonic() + 10
            while time.monotonic() < end:
                try:
                    if call == "poll":
                        t.poll(0.01)
                    elif call == "poll_columns":
                        t.poll_columns(0.01, 10)
                    elif call == "stats":
                        t.stats()
                        if t.closed:
                            break  # the final counters stay readable
                    else:
                        t.set_comm("x")
                except Exception as e:  # noqa: BLE001 - the type is what is checked
                    seen.add(type(e).__name__)
                    assert "closed" in str(e)
                    break
            t.close()
    assert seen == {"TracerClosedError"}
    assert issubclass(te.TracerClosedError, ValueError) and issubclass(te.TracerClosedError, te.TracerError)


BTF_CHECK = """
import tracer_ebpf as te
try:
    te.Tracer("syscalls/sys_enter_write")
    print("no error")
except te.BtfMissingError as e:
    print("BtfMissingError:", e)
except Exception as e:
    print(type(e).__name__ + ":", e)
"""


@pytest.mark.parametrize("content,problem", [(b"", "is empty"), (b"\x9f\xeb\x01\x00" + b"\x18\0\0\0" + b"\xff" * 32,
                                                                   "is damaged"),
                                             (os.urandom(4096), "is not BTF")])
def test_an_empty_or_damaged_kernel_btf_is_a_btf_error(tmp_path, content, problem):
    """The file bind-mounted over /sys/kernel/btf/vmlinux in a private mount
    namespace."""
    fake = tmp_path / "vmlinux"
    fake.write_bytes(content)
    r = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c",
                        f"mount --bind {fake} /sys/kernel/btf/vmlinux && exec {PY} -c '{BTF_CHECK}'"],
                       capture_output=True, text=True, timeout=60)
    assert r.stdout.startswith("BtfMissingError: kernel BTF at /sys/kernel/btf/vmlinux " + problem), r.stdout + r.stderr
