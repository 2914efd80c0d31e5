"""Issue 8 (reliability): nothing of the tracer stays in the kernel once it
is closed, fails, or its process dies, however it dies.

Method: while a process holds a Tracer, the ids of its BPF programs, links
and maps are read from /proc/<pid>/fdinfo (plus every map its programs
reference, from bpftool), so only this tracer's objects are watched, not
other tools' (tests may run beside other BPF users). After close(), an
exception, SIGINT, SIGTERM or SIGKILL, those ids must disappear from
`bpftool prog|link|map show` (the kernel frees them asynchronously once the
last fd closes: polled for a few seconds), and a process that is still
alive must hold no BPF, perf-event or BTF file descriptor any more.
"""

import json
import os
import signal
import subprocess
import time

import pytest

from conftest import PY

EVENTS = "syscalls/sys_enter_write,sched/sched_process_exit"
KINDS = ("prog", "link", "map")
# fd targets that are tracer resources (readlink of /proc/<pid>/fd/N).
BPF_FD_KINDS = ("anon_inode:bpf-map", "anon_inode:bpf-prog", "anon_inode:bpf_link", "anon_inode:[perf_event]",
                "anon_inode:btf", "anon_inode:bpf-link")


def bpftool(kind: str, *args: str):
    out = subprocess.run(["bpftool", kind, "show", *args, "--json"], capture_output=True, text=True,
                         check=True, timeout=30).stdout
    return json.loads(out or "[]")


def live_ids():
    return {k: {o["id"] for o in bpftool(k)} for k in KINDS}


def held_ids(pid: int):
    """Ids of the BPF objects process `pid` holds fds to, and the maps its
    programs use."""
    ids = {k: set() for k in KINDS}
    for fd in os.listdir(f"/proc/{pid}/fdinfo"):
        try:
            with open(f"/proc/{pid}/fdinfo/{fd}") as f:
                text = f.read()
        except OSError:
            continue
        for line in text.splitlines():
            key, _, val = line.partition(":")
            if key in ("prog_id", "map_id", "link_id"):
                ids[key[:-3]].add(int(val))
    for prog in list(ids["prog"]):
        ids["map"].update(bpftool("prog", "id", str(prog)).get("map_ids", []))
    return ids


def bpf_fds(pid: int):
    """Tracer-kind fds still open in `pid`."""
    out = []
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith(BPF_FD_KINDS):
            out.append(f"{fd}->{target}")
    return out


def assert_released(ids, timeout: float = 5.0):
    """Every id in `ids` is gone from the kernel within `timeout`."""
    assert ids["prog"] and ids["map"], f"watched nothing: {ids}"
    end = time.monotonic() + timeout
    while True:
        live = live_ids()
        left = {k: sorted(ids[k] & live[k]) for k in KINDS if ids[k] & live[k]}
        if not left or time.monotonic() > end:
            break
        time.sleep(0.1)
    assert not left, f"still loaded {timeout} s after release: {left}"


def assert_tracer_loaded(ids):
    live = live_ids()
    for k in KINDS:
        assert ids[k] <= live[k], (k, ids[k] - live[k])
    names = {p.get("name", "") for p in bpftool("prog") if p["id"] in ids["prog"]}
    assert names and all(n.startswith(("handle__", "tb_follow", "tb_syscall_ident")) for n in names), names
    assert ids["link"], "no link: the programs are not attached through links?"


# -- a child Python process holding a Tracer -------------------------------------

# argv[1] = mode. Prints "ready" once attached, then waits for a line on
# stdin ("go"), then does what the mode says. Modes that survive print a
# final line ("closed" / "caught ...") and wait for stdin to close, so the
# parent can inspect the live process after the tracer is gone.
HOLDER = r"""
import gc, os, sys, tracer_ebpf
mode = sys.argv[1]
events = sys.argv[2].split(",")

def ready():
    print("ready", flush=True)
    sys.stdin.readline()

def linger(msg):
    print(msg, flush=True)
    sys.stdin.read()

if mode == "close":
    t = tracer_ebpf.Tracer(events)
    ready()
    t.close()
    t.close()  # idempotent
    assert t.closed
    try:
        t.poll(0)
    except ValueError:
        pass
    else:
        raise SystemExit("poll() on a closed tracer did not raise")
    linger("closed")
elif mode == "exception_in_with":
    try:
        with tracer_ebpf.Tracer(events, trace_self=True) as t:
            ready()
            os.write(2, b"an event for the loop\n")
            for ev in t:
                raise RuntimeError("boom in the loop")
    except RuntimeError as e:
        linger(f"caught {e}")
elif mode == "exception_no_with":
    def run():
        t = tracer_ebpf.Tracer(events, trace_self=True)
        ready()
        os.write(2, b"an event for the loop\n")
        for ev in t:
            raise RuntimeError("boom in the loop")
    try:
        run()
    except RuntimeError:
        pass
    # Once the traceback is gone, nothing references the Tracer: __del__ closes it.
    gc.collect()
    linger("caught boom (no with)")
elif mode == "break_no_close":
    t = tracer_ebpf.Tracer(events, trace_self=True)
    ready()
    os.write(2, b"an event for the loop\n")
    for ev in t:
        break
    del t, ev
    gc.collect()
    linger("dropped")
elif mode == "loop":
    with tracer_ebpf.Tracer(events) as t:
        ready()
        for ev in t:
            pass
"""


class Holder:
    def __init__(self, mode: str, events: str = EVENTS):
        self.proc = subprocess.Popen([PY, "-c", HOLDER, mode, events], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline()
        if line.strip() != "ready":
            self.proc.kill()
            _, err = self.proc.communicate(timeout=10)
            pytest.fail(f"holder did not start: {line!r} {err[-2000:]}")
        self.ids = held_ids(self.proc.pid)
        assert_tracer_loaded(self.ids)

    def go(self) -> str:
        self.proc.stdin.write("go\n")
        self.proc.stdin.flush()
        return self.proc.stdout.readline().strip()

    def finish(self, timeout: float = 10):
        try:
            self.proc.stdin.close()
        except OSError:
            pass
        try:
            self.proc.wait(timeout=timeout)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode, self.proc.stderr.read()


@pytest.mark.parametrize("mode,expect", [
    ("close", "closed"),
    ("exception_in_with", "caught boom in the loop"),
    ("exception_no_with", "caught boom (no with)"),
    ("break_no_close", "dropped"),
])
def test_tracer_released_while_the_process_lives(mode, expect):
    h = Holder(mode)
    try:
        said = h.go()
        assert said == expect, said
        # The process is still alive: its tracer objects must be gone already.
        assert h.proc.poll() is None
        assert_released(h.ids)
        assert bpf_fds(h.proc.pid) == []
    finally:
        rc, err = h.finish()
    assert rc == 0, err[-2000:]
    assert "Traceback" not in err, err[-2000:]


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGKILL], ids=lambda s: s.name)
def test_python_process_killed_while_tracing_releases_everything(sig):
    h = Holder("loop")
    h.proc.send_signal(sig)
    try:
        h.proc.wait(timeout=5)  # Ctrl-C interrupts a blocked poll promptly
    finally:
        rc, err = h.finish()
    assert rc == -sig or (sig == signal.SIGINT and rc in (1, 130)), (rc, err[-2000:])
    assert_released(h.ids)


# -- the command-line front ends -------------------------------------------------

def start_front_end(argv, banner: str):
    """Starts a CLI, waits until it says it is tracing; returns (proc, ids)."""
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    line = proc.stderr.readline()
    if banner not in line:
        proc.kill()
        pytest.fail(f"{argv[0]} did not start: {line!r} {proc.communicate(timeout=10)[1][-2000:]}")
    ids = held_ids(proc.pid)
    assert_tracer_loaded(ids)
    return proc, ids


def stop(proc, sig, timeout=10):
    proc.send_signal(sig)
    try:
        _, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
        pytest.fail(f"did not exit within {timeout} s of {sig.name}: {err[-2000:]}")
    return proc.returncode, err


SIGS = [signal.SIGINT, signal.SIGTERM, signal.SIGKILL]


@pytest.fixture
def quiet_pid():
    """A process that does nothing: the front ends trace only it, so what
    other programs on the machine do cannot slow their exit."""
    p = subprocess.Popen(["sleep", "300"])
    yield str(p.pid)
    p.kill()
    p.wait()


@pytest.mark.parametrize("sig", SIGS, ids=lambda s: s.name)
def test_tracer_example_killed_releases_everything(tracer_example, sig, quiet_pid):
    proc, ids = start_front_end([tracer_example, "--events", EVENTS, "--pid", quiet_pid, "--duration", "120"],
                                "tracing")
    rc, err = stop(proc, sig)
    if sig == signal.SIGKILL:
        assert rc == -signal.SIGKILL
    else:
        assert rc == 0, err[-2000:]
        assert "Traceback" not in err and "records=" in err, err[-2000:]
    assert_released(ids)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=lambda s: s.name)
def test_tracer_example_with_a_command_stops_it_and_releases_everything(tracer_example, sig):
    proc, ids = start_front_end([tracer_example, "--events", EVENTS, "--", "sleep", "120"], "tracing")
    rc, err = stop(proc, sig)
    # The CLI passes the signal on to the command and exits with its status.
    assert rc in (128 + sig, 130), (rc, err[-2000:])
    assert "Traceback" not in err, err[-2000:]
    assert_released(ids)


@pytest.mark.parametrize("sig", SIGS, ids=lambda s: s.name)
def test_rust_example_killed_releases_everything(rust_example, sig, quiet_pid):
    proc, ids = start_front_end([rust_example, "--events", EVENTS, "--pid", quiet_pid, "--duration", "120"],
                                "tracing")
    rc, err = stop(proc, sig)
    if sig == signal.SIGKILL:
        assert rc == -signal.SIGKILL
    else:
        assert rc == 0, err[-2000:]
        assert "records=" in err and "panicked" not in err, err[-2000:]
    assert_released(ids)


# -- failure paths: nothing half-made is left behind ------------------------------

FAILURES = r"""
import os, subprocess, sys, time, tracer_ebpf

def our_fds():
    out = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            t = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if t.startswith(("anon_inode:bpf", "anon_inode:[perf_event]", "anon_inode:btf")):
            out.append(t)
    return out

cases = {
    "unknown event": lambda: tracer_ebpf.Tracer("syscalls/no_such_event"),
    "missing optional tracepoint": lambda: tracer_ebpf.Tracer("sched/psi_memstall_enter"),
    "bad size": lambda: tracer_ebpf.Tracer(ring_bytes=1),
    "trace() timeout": lambda: tracer_ebpf.trace(["sleep", "30"], "syscalls/sys_enter_write", timeout=0.5),
    "trace() unknown command": lambda: tracer_ebpf.trace(["/no/such/command"]),
    "trace() unknown event": lambda: tracer_ebpf.trace(["true"], "nosuch/event"),
}
# What is still open 5 s on: a closed tracer's objects are released by a
# thread of their own, a few RCU grace periods after close().
def left_after_release():
    end = time.monotonic() + 5
    while our_fds() and time.monotonic() < end:
        time.sleep(0.05)
    return our_fds()

for name, f in cases.items():
    try:
        f()
    except (tracer_ebpf.TracerError, subprocess.TimeoutExpired, OSError, ValueError) as e:
        left = left_after_release()
        print(f"{name}: {type(e).__name__}: {'LEAK ' + repr(left) if left else 'clean'}")
    else:
        left = left_after_release()
        print(f"{name}: no error: {'LEAK ' + repr(left) if left else 'clean'}")
"""


def test_failed_starts_and_trace_timeouts_leave_no_fd_behind():
    r = subprocess.run([PY, "-c", FAILURES], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-3000:]
    lines = r.stdout.splitlines()
    assert len(lines) == 6, r.stdout + r.stderr
    for line in lines:
        assert line.endswith("clean"), line
        assert "no error" not in line, line
