"""Issue 18: the process snapshot (snapshot=True / --snapshot): one
proc/snapshot event per process already running, before any live event,
parents first, with the ids live events carry."""

import json
import os
import select
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
from pandas import isna as pd_isna

import tracer_ebpf
from conftest import PY

SNAP = "proc/snapshot"
WRITE = "syscalls/sys_enter_write"

# Waits for a byte on stdin, writes once to stdout, then waits for EOF.
WAIT_THEN_WRITE = "import os,sys\nos.read(0, 1)\nos.write(1, b'after-attach')\nos.read(0, 1)\n"


def proc_children(pid):
    """Pids whose parent is `pid`, from /proc."""
    out = []
    for n in os.listdir("/proc"):
        if n.isdigit():
            try:
                with open(f"/proc/{n}/stat", "rb") as f:
                    stat = f.read()
            except OSError:
                continue
            if int(stat[stat.rindex(b")") + 2:].split()[1]) == pid:
                out.append(int(n))
    return out


def wait_for(cond, what, timeout=10.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        v = cond()
        if v:
            return v
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def take_until(t, pred, timeout=10.0):
    """Events until one satisfies `pred` (included), within `timeout`."""
    out = []
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        for e in t.poll(0.1):
            out.append(e)
            if pred(e):
                return out
    raise AssertionError(f"no matching event in {len(out)} events")


@pytest.fixture
def waiting_child():
    """A process started before any tracer, with a distinctive argv (an
    empty argument, one with a space) and cwd; it writes once when given a
    byte on stdin."""
    with tempfile.TemporaryDirectory() as cwd:
        argv = [PY, "-c", WAIT_THEN_WRITE, "", "arg two"]
        p = subprocess.Popen(argv, cwd=cwd, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL)
        try:
            yield p, argv, os.path.realpath(cwd)
        finally:
            p.kill()
            p.wait()


def test_a_process_started_before_has_its_argv_exe_cwd_ids_and_the_upid_of_its_live_events(waiting_child):
    p, argv, cwd = waiting_child
    with tracer_ebpf.Tracer(WRITE, pids=p.pid, snapshot=True) as t:
        assert SNAP in t.events
        p.stdin.write(b"x")
        p.stdin.flush()
        evs = take_until(t, lambda e: e.event_type == WRITE and e.pid == p.pid)
        st = t.stats()
    snap, write = evs[0], evs[-1]
    # Exactly one snapshot event (the pid filter), first in the stream.
    assert [e.event_type for e in evs].count(SNAP) == 1
    assert snap.event_type == SNAP
    assert (snap.pid, snap.tid, snap.ppid) == (p.pid, p.pid, os.getpid())
    with open(f"/proc/{p.pid}/comm") as f:
        assert snap.comm == f.read().rstrip("\n")
    assert snap.payload["argv"] == argv
    assert snap.payload["exe"] == os.path.realpath(PY)
    assert snap.payload["cwd"] == cwd
    assert (snap.payload["uid"], snap.payload["gid"], snap.payload["kernel_thread"]) == (os.getuid(), os.getgid(), 0)
    assert all(info["lost"] is None and not info["truncated"] for info in snap.payload_info.values())
    # The ids a live event of the same process carries, exactly.
    assert write.payload["content"] == b"after-attach"
    assert (write.upid, write.uppid) == (snap.upid, snap.uppid)
    assert (st["snapshot_events"], st["snapshot_lost"], st["snapshot_truncated"], st["snapshot_followed"]) == (1, 0, 0, 0)


def test_argv_beyond_argv_max_is_cut_and_flagged(waiting_child):
    p, argv, _ = waiting_child
    with tracer_ebpf.Tracer(WRITE, pids=p.pid, snapshot=True, argv_max=5) as t:
        snap = take_until(t, lambda e: e.event_type == SNAP)[-1]
        st = t.stats()
    whole = b"\0".join(a.encode() for a in argv) + b"\0"
    assert snap.payload["argv"] == [whole[:5].decode()]
    assert snap.payload_info["argv"]["truncated"] is True
    assert snap.payload_info["argv"]["size"] == len(whole)
    assert st["snapshot_truncated"] == 1


def snapshot_of_all(stats=None, **kw):
    """Every proc/snapshot event of a tracer with `kw` (checking that they
    all come before any live event); its counters go to `stats`."""
    with tracer_ebpf.Tracer(WRITE, snapshot=True, **kw) as t:
        st = t.stats()
        if stats is not None:
            stats.update(st)
        n = st["snapshot_events"]
        evs = []
        end = time.monotonic() + 10
        while len(evs) < n and time.monotonic() < end:
            evs += t.poll(0.1)
    assert len(evs) >= n
    assert all(e.event_type == SNAP for e in evs[:n])
    assert all(e.event_type != SNAP for e in evs[n:])
    return evs[:n]


def test_parents_come_before_children_and_every_process_is_there_once(waiting_child):
    p, _, _ = waiting_child
    before = {int(n) for n in os.listdir("/proc") if n.isdigit()}
    st = {}
    snaps = snapshot_of_all(st)
    after = {int(n) for n in os.listdir("/proc") if n.isdigit()}
    pids = [e.pid for e in snaps]
    assert len(pids) == len(set(pids))
    index = {pid: i for i, pid in enumerate(pids)}
    for i, e in enumerate(snaps):
        if e.ppid in index:
            assert index[e.ppid] < i, f"{e.pid} comes before its parent {e.ppid}"
            assert e.uppid == snaps[index[e.ppid]].upid
    # Every process that lived throughout is there, but this one (the tracer
    # never snapshots itself) and the readers of its output.
    with tracer_ebpf.Tracer(WRITE) as t:
        readers = set(t.output_readers)
    expected = (before & after) - {os.getpid()} - readers
    # Only a process hidden from BPF can be missing, and it is counted (as
    # this VM's pid 1, which the kernel's task walk never shows).
    missing = expected - set(pids)
    assert len(missing) <= st["snapshot_unseen"], missing
    assert os.getpid() not in pids and p.pid in pids
    kthreadd = next(e for e in snaps if e.pid == 2)
    assert kthreadd.payload["kernel_thread"] == 1 and kthreadd.payload["exe"] == "" and kthreadd.payload["argv"] == []


def test_comm_filters_and_trace_self_apply_to_snapshot_events(waiting_child):
    p, _, _ = waiting_child
    with open(f"/proc/{p.pid}/comm") as f:
        comm = f.read().rstrip("\n")
    snaps = snapshot_of_all(comm=comm[:6])
    assert snaps and all(e.comm.startswith(comm[:6]) for e in snaps)
    assert p.pid in {e.pid for e in snaps} and os.getpid() not in {e.pid for e in snaps}
    snaps = snapshot_of_all(comm=comm[:6], exclude_pids=p.pid)
    assert p.pid not in {e.pid for e in snaps}
    snaps = snapshot_of_all(pids=os.getpid(), trace_self=True)
    assert [e.pid for e in snaps] == [os.getpid()]
    assert snaps[0].payload["argv"] == [a.decode() for a in open("/proc/self/cmdline", "rb").read().split(b"\0")[:-1]]


# The target, its child and its grandchild; the grandchild waits on a FIFO,
# then writes to stdout.
TREE = """import subprocess, sys
subprocess.run([sys.executable, "-c", "import subprocess, sys; subprocess.run(['sh', '-c', 'read x < " + sys.argv[1] + "; echo grandchild-wrote'])"])
"""


def test_follow_mode_snapshots_and_follows_the_existing_descendants_only():
    with tempfile.TemporaryDirectory() as d:
        fifo = os.path.join(d, "go")
        os.mkfifo(fifo)
        target = subprocess.Popen([PY, "-c", TREE, fifo], stdout=subprocess.PIPE)
        other = subprocess.Popen(["sleep", "30"])
        try:
            child = wait_for(lambda: proc_children(target.pid), "the child")[0]
            grandchild = wait_for(lambda: proc_children(child), "the grandchild")[0]
            with tracer_ebpf.Tracer(WRITE, pids=target.pid, follow_children=True, snapshot=True) as t:
                st = t.stats()
                with open(fifo, "w") as f:
                    f.write("x\n")
                evs = take_until(t, lambda e: e.event_type == WRITE and e.pid == grandchild)
            snaps = [e for e in evs if e.event_type == SNAP]
            assert [e.pid for e in snaps] == [target.pid, child, grandchild]
            assert [e.ppid for e in snaps] == [os.getpid(), target.pid, child]
            assert snaps[2].payload["argv"] == ["sh", "-c", f"read x < {fifo}; echo grandchild-wrote"]
            assert evs[-1].payload["content"] == b"grandchild-wrote\n"
            assert (st["snapshot_events"], st["snapshot_followed"]) == (3, 2)
            assert target.wait(10) == 0
        finally:
            for p in (target, other):
                p.kill()
                p.wait()


@pytest.mark.parametrize("kwargs,exc,msg", [
    (dict(events=SNAP), tracer_ebpf.ConfigError, "set snapshot"),
    (dict(events="proc/*"), tracer_ebpf.ConfigError, "set snapshot"),
    (dict(snapshot="yes"), TypeError, "snapshot"),
])
def test_bad_combinations_are_clear_errors(kwargs, exc, msg):
    with pytest.raises(exc, match=msg):
        tracer_ebpf.Tracer(**kwargs)


def test_proc_snapshot_is_in_the_catalogue_as_synthetic():
    info = next(e for e in tracer_ebpf.list_events(generic=False) if e["name"] == SNAP)
    assert (info["kind"], info["available"]) == ("synthetic", True)
    assert [f for f, _ in info["fields"]] == ["uid", "gid", "kernel_thread", "exe", "cwd", "argv"]
    # Not among the default events, nor named by a wildcard.
    with tracer_ebpf.Tracer() as t:
        assert SNAP not in t.events
    with tracer_ebpf.Tracer("*/*sched_process_e*", snapshot=True) as t:
        assert t.events.count(SNAP) == 1


def test_json_and_columns_carry_the_snapshot(waiting_child):
    p, argv, cwd = waiting_child
    with tracer_ebpf.Tracer(WRITE, pids=p.pid, snapshot=True) as t:
        data, n = t.read_json(timeout=2.0)
    assert n == 1
    d = json.loads(data.splitlines()[0])
    assert (d["event_type"], d["pid"], d["payload"]["argv"], d["payload"]["cwd"]) == (SNAP, p.pid, argv, cwd)
    with tracer_ebpf.Tracer(WRITE, pids=p.pid, snapshot=True) as t:
        df = t.to_dataframe(duration=0.5)
    row = df[df["event_type"] == SNAP].iloc[0]
    assert (row["pid"], row["payload.exe"], row["payload.cwd"], list(row["payload.argv"])) == (p.pid, os.path.realpath(PY), cwd, argv)
    assert (row["payload.uid"], row["payload.kernel_thread"], pd_isna(row["payload.exe_lost"])) == (os.getuid(), 0, True)


def read_line(stream, timeout):
    """One line from a pipe, or fail after `timeout` seconds."""
    buf = b""
    end = time.monotonic() + timeout
    while not buf.endswith(b"\n"):
        left = end - time.monotonic()
        assert left > 0, f"no line within {timeout} s (got {buf!r})"
        if select.select([stream], [], [], left)[0]:
            chunk = os.read(stream.fileno(), 1)
            assert chunk, f"end of output (got {buf!r})"
            buf += chunk
    return buf


def test_cli_snapshot_prints_json_lines_first(waiting_child, tracer_example):
    p, argv, cwd = waiting_child
    cli = subprocess.Popen([tracer_example, "--snapshot", "--pid", str(p.pid), "--events", WRITE],
                           stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        d = json.loads(read_line(cli.stdout, 30))
        assert (d["event_type"], d["pid"], d["payload"]["argv"], d["payload"]["cwd"]) == (SNAP, p.pid, argv, cwd)
        p.kill()  # the --pid process gone: the CLI ends
        assert cli.wait(30) == 0
    finally:
        cli.kill()
        cli.wait()


def test_cli_rejects_naming_the_synthetic_event_without_snapshot(tracer_example):
    r = subprocess.run([tracer_example, "--events", SNAP], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2
    assert "set snapshot (--snapshot)" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.parametrize("front_end", ["rust", "c"])
def test_the_rust_and_c_examples_print_the_snapshot_first(waiting_child, rust_example, front_end):
    # The same option in the Rust example and the C++ example of the C
    # library: the snapshot comes from the one core.
    if front_end == "c":
        subprocess.run(["make", "-C", str(Path(__file__).resolve().parent.parent / "c")], check=True,
                       capture_output=True, timeout=600)
        tool = str(Path(__file__).resolve().parent.parent / "c" / "example")
    else:
        tool = rust_example
    p, argv, cwd = waiting_child
    cli = subprocess.Popen([tool, "--snapshot", "--pid", str(p.pid), "--events", WRITE, "--duration", "20"],
                           stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        d = json.loads(read_line(cli.stdout, 30))
        assert (d["event_type"], d["pid"], d["payload"]["argv"], d["payload"]["cwd"]) == (SNAP, p.pid, argv, cwd)
        assert d["ns_pid"] == p.pid and d["cgroup_id"] > 0
    finally:
        cli.kill()
        cli.wait()
