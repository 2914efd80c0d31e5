"""Issue 5: the Python API (Tracer, trace, list_events, events, columns,
DataFrames, errors), on the real kernel."""

import base64
import json
import os
import signal
import subprocess
import threading
import time
from array import array

import pytest

import tracer_ebpf
from tracer_ebpf import events as catalogue
from tracer_ebpf.run import release, start_gated
from conftest import PY, wait_for

WRITE = "syscalls/sys_enter_write"
EXEC = "sched/sched_process_exec"
EXIT = "sched/sched_process_exit"
COUNTERS = {"records", "ring_full", "payload_full", "fault", "truncated", "busy", "followed",
            "delivered", "discarded", "decode_errors", "overwritten", "seq_gaps", "cgroup_unresolved", "queued",
            "queued_bytes", "queue_peak_bytes", "snapshot_events", "snapshot_lost", "snapshot_truncated",
            "snapshot_followed", "snapshot_unseen"}
HEADER = ["event_id", "event_type", "timestamp_ns", "pid", "tid", "ppid", "upid", "uppid", "comm", "ns_pid", "ns_tid",
          "cgroup_id", "cgroup", "container_id", "container_runtime", "pod_uid"]


def write_child(data: bytes, fd: int = 1) -> subprocess.Popen:
    """A Python child that writes `data` to `fd` once it is told to (so a
    tracer can filter on its pid first)."""
    return subprocess.Popen([PY, "-c", f"import os, sys\nsys.stdin.read(1)\nos.write({fd}, {data!r})\n"],
                            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def go(child: subprocess.Popen) -> None:
    child.stdin.write(b"x")
    child.stdin.close()
    child.wait()


def writes(events, pid):
    return [e for e in events if e.event_type == WRITE and e.pid == pid]


def prog_ids_of(pid: int) -> set:
    """Ids of the BPF programs a process holds (its fds' fdinfo)."""
    ids = set()
    d = f"/proc/{pid}/fdinfo"
    for fd in os.listdir(d):
        try:
            with open(os.path.join(d, fd)) as f:
                ids.update(int(line.split()[1]) for line in f if line.startswith("prog_id:"))
        except OSError:
            pass
    return ids


def loaded_prog_ids() -> set:
    out = subprocess.run(["bpftool", "prog", "show", "--json"], capture_output=True, text=True, check=True).stdout
    return {p["id"] for p in json.loads(out)}


# -- lifecycle -------------------------------------------------------------------

def test_context_manager_iterator_close_and_a_new_tracer_after_close():
    child = write_child(b"first\n")
    with tracer_ebpf.Tracer(WRITE, pids=child.pid) as t:
        assert not t.closed and t.events == [WRITE] and "Tracer events=" in repr(t)
        go(child)
        found = None
        for ev in t:  # an iterator that only ends with close() or break
            if ev.pid == child.pid:
                found = ev
                break
    assert found is not None and found.payload["content"] == b"first\n"
    assert t.closed and repr(t) == "<Tracer closed>"
    t.close()
    t.close()  # idempotent
    assert list(t) == []  # iterating a closed tracer ends at once
    with pytest.raises(ValueError, match="closed"):
        t.poll()
    with pytest.raises(ValueError, match="closed"):
        t.poll_columns()
    final = t.stats()  # the final counters stay readable
    assert set(final) == COUNTERS and final["delivered"] >= 1

    child = write_child(b"second\n")
    with tracer_ebpf.Tracer(WRITE, pids=[child.pid]) as t2:
        go(child)
        evs = t2.collect(0.3)
    assert [e.payload["content"] for e in writes(evs, child.pid)] == [b"second\n"]


def test_poll_read_timeouts_and_limits():
    sleeper = subprocess.Popen(["sleep", "30"])
    try:
        with tracer_ebpf.Tracer(WRITE, pids=[sleeper.pid]) as t:
            t0 = time.monotonic()
            assert t.poll(0.3) == []
            assert 0.25 < time.monotonic() - t0 < 2
            t0 = time.monotonic()
            assert t.read(0, 10) == [] and t.poll(timeout=0.0) == []
            assert time.monotonic() - t0 < 2  # non-blocking: no wait (generous for loaded machines)
            with pytest.raises(tracer_ebpf.ConfigError, match="the tracer itself"):
                t.set_pids([os.getpid()])  # not traced without trace_self: an error, the filter unchanged
            assert t.read(max_events=5, timeout=0.05) == []
    finally:
        sleeper.kill()
        sleeper.wait()

    code = "import os\nfor i in range(50):\n    os.write(1, b'%d\\n' % i)\n"
    proc, gate = start_gated([PY, "-c", code], stdout=subprocess.DEVNULL)
    with tracer_ebpf.Tracer(WRITE, pids=proc.pid) as t:
        release(gate)
        proc.wait()
        time.sleep(0.2)
        first = t.read(max_events=7, timeout=1)
        assert len(first) == 7
        rest = t.drain()
    assert [e.payload["content"] for e in first + rest] == [b"%d\n" % i for i in range(50)]


def test_stats_has_every_counter():
    r = tracer_ebpf.trace(["sh", "-c", "echo x; (echo y)"], WRITE, stdout=subprocess.DEVNULL)
    assert set(r.stats) == COUNTERS
    assert all(isinstance(v, int) and v >= 0 for v in r.stats.values())
    assert r.stats["delivered"] == len(r.events) == 2 and r.stats["followed"] >= 1


def test_close_from_another_thread_ends_the_iteration():
    t = tracer_ebpf.Tracer(WRITE, pids=[1])
    threading.Timer(0.3, t.close).start()
    t0 = time.monotonic()
    assert list(t) == []
    assert time.monotonic() - t0 < 2 and t.closed


# -- names and arguments -------------------------------------------------------------

def test_unknown_event_is_a_value_error_listing_close_names():
    with pytest.raises(ValueError) as e:
        tracer_ebpf.Tracer("syscalls/sys_enter_writ")
    assert isinstance(e.value, tracer_ebpf.UnknownEventError) and isinstance(e.value, tracer_ebpf.TracerError)
    assert "did you mean" in str(e.value) and '"syscalls/sys_enter_write"' in str(e.value)
    with pytest.raises(tracer_ebpf.UnknownEventError, match="sched_process_exit"):
        tracer_ebpf.Tracer(["syscalls/sys_enter_write", "sched/sched_proces_exit"])


def test_wildcards():
    with tracer_ebpf.Tracer("syscalls/sys_enter_write*") as t:
        assert sorted(t.events) == ["syscalls/sys_enter_write", "syscalls/sys_enter_writev"]
    with tracer_ebpf.Tracer(["syscalls/sys_*_openat", "syscalls/sys_*_openat"]) as t:
        assert sorted(t.events) == ["syscalls/sys_enter_openat", "syscalls/sys_exit_openat"]
    typed_syscalls = {n for n in catalogue.CATALOGUE if n.startswith("syscalls/")}
    with tracer_ebpf.Tracer("syscalls/*", pids=[1]) as t:
        assert typed_syscalls <= set(t.events)


BAD = [
    (dict(events=123), TypeError, "events must be a string or an iterable of strings"),
    (dict(events=b"syscalls/sys_enter_write"), TypeError, "not bytes"),
    (dict(events=[WRITE, None]), TypeError, "events must contain strings"),
    (dict(events=""), ValueError, "empty name"),
    (dict(events="x" * 10**6), ValueError, "unknown event"),
    (dict(events=["nosuch/event"] * 10**6), ValueError, "unknown event"),
    (dict(events=[f"e{i}/x" for i in range(10**5)]), ValueError, "at most"),
    (dict(pids="12"), TypeError, "pids must be an int"),
    (dict(pids=[1.5]), TypeError, "pids must contain ints"),
    (dict(pids=True), TypeError, "pids must be an int"),
    (dict(pids=0), ValueError, "out of range"),
    (dict(pids=2**64), ValueError, "out of range"),
    (dict(pids=list(range(1, 70000))), ValueError, "at most 65536 pids"),
    (dict(follow_children=True), ValueError, "needs at least one pid"),
    (dict(follow_children="yes"), TypeError, "follow_children must be a bool"),
    (dict(comm="a-name-longer-than-15"), ValueError, "1 to 15 bytes"),
    (dict(comm=[""]), ValueError, "empty name"),
    (dict(comm=[f"c{i}" for i in range(9)]), ValueError, "at most 8 comm prefixes"),
    (dict(content_fds=-1), ValueError, "out of range"),
    (dict(content_fds=range(10**6)), ValueError, "at most 256 content_fds"),
    (dict(content_max=0), ValueError, "content_max must be from 1 to 1048576"),
    (dict(content_max=2**64), ValueError, "content_max must be from 1 to 1048576"),
    (dict(content_max=1.5), TypeError, "content_max must be an int"),
    (dict(content_max=None), TypeError, "content_max must be an int"),
    (dict(argv_max=-1), ValueError, "argv_max"),
    (dict(ring_bytes=2**62), ValueError, "ring_bytes"),
    (dict(payload_bytes_per_cpu=0), ValueError, "payload_bytes_per_cpu"),
    (dict(trace_self=1), TypeError, "trace_self must be a bool"),
]


@pytest.mark.parametrize("kwargs,exc,msg", BAD, ids=[f"{k}-{i}" for i, (d, _, _) in enumerate(BAD) for k in d])
def test_bad_arguments_raise_clear_errors_quickly(kwargs, exc, msg):
    t0 = time.monotonic()
    with pytest.raises(exc, match=msg) as e:
        tracer_ebpf.Tracer(**kwargs)
    assert time.monotonic() - t0 < 10
    assert len(str(e.value)) < 500
    if exc is ValueError:
        assert isinstance(e.value, tracer_ebpf.TracerError)


@pytest.mark.parametrize("call,exc", [
    (lambda t: t.poll("1"), TypeError),
    (lambda t: t.poll(-1), ValueError),
    (lambda t: t.poll(float("nan")), ValueError),
    (lambda t: t.read(max_events=0), ValueError),
    (lambda t: t.read(max_events=2**70), ValueError),
    (lambda t: t.read(max_events=1.0), TypeError),
    (lambda t: t.poll_columns(max_events=-5), ValueError),
    (lambda t: t.collect(None), TypeError),
    (lambda t: t.to_dataframe(-1), ValueError),
    (lambda t: t.set_pids(["1"]), TypeError),
    (lambda t: t.set_comm("x" * 16), ValueError),
])
def test_bad_reading_arguments(call, exc):
    with tracer_ebpf.Tracer(WRITE, pids=[1]) as t:
        with pytest.raises(exc):
            call(t)
        assert t.poll(0) == []  # still usable


# -- events ------------------------------------------------------------------------

def test_event_header_payload_text_dict_json_and_repr():
    data = b"caf\xc3\xa9 \xff\x00 end\n"
    child = write_child(data)
    with tracer_ebpf.Tracer(WRITE, pids=child.pid) as t:
        go(child)
        evs = writes(t.collect(0.3), child.pid)
    assert len(evs) == 1
    ev = evs[0]
    assert ev.event_type == WRITE and ev.pid == ev.tid == child.pid and ev.ppid == os.getpid()
    assert ev.comm.startswith("python") and ev.comm_bytes == ev.comm.encode()
    assert ev.upid & ((1 << 22) - 1) == child.pid and ev.uppid & ((1 << 22) - 1) == os.getpid()
    assert abs(ev.timestamp_ns - time.time_ns()) < 60e9 and ev.event_id > 0 and ev.cpu >= 0
    assert ev.payload == {"fd": 1, "count": len(data), "content": data}
    assert ev.payload_info["content"] == {"truncated": False, "lost": None, "captured": True,
                                          "size": len(data), "len": len(data)}
    assert not ev.payload_lost
    assert ev.text() == data.decode(errors="replace") == ev.text("content")
    assert ev.text("nosuch") is None

    d = ev.to_dict()
    assert list(d) == HEADER + ["payload"]
    assert [d[k] for k in HEADER] == [getattr(ev, k) for k in HEADER]
    assert d["payload"] == ev.payload

    line = ev.to_json()
    j = json.loads(line)
    assert {k: j.get(k) for k in HEADER} == {k: d[k] for k in HEADER}
    assert set(HEADER) - set(j) <= {"container_runtime", "pod_uid"}  # JSON leaves them out when unknown
    assert base64.b64decode(j["payload"]["content_base64"]) == data
    assert j["payload"]["content"] == data.decode(errors="replace").replace("\x00", "\x00")
    assert json.dumps(j, ensure_ascii=False, separators=(",", ":")) == line  # canonical JSON

    r = repr(ev)
    assert r.startswith(f"<Event {WRITE} pid={child.pid}") and "fd=1" in r and "caf" in r and len(r) < 300


def test_text_never_raises_and_missing_content_is_none():
    code = "import os\nfd = os.open('/dev/null', os.O_WRONLY)\nos.write(fd, b'\\xff' * 9)\nos.write(1, b'\\xfe\\xff')\n"
    r = tracer_ebpf.trace([PY, "-c", code], WRITE, stdout=subprocess.DEVNULL)
    by_fd = {e.payload["fd"]: e for e in r.events}
    assert by_fd[3].payload["content"] is None and by_fd[3].text() is None  # fd 3 is not captured
    assert by_fd[3].payload_info["content"]["captured"] is False
    assert by_fd[1].text() == "\ufffd\ufffd"


def test_list_events_is_the_catalogue_with_comments_and_fields():
    evs = [e for e in tracer_ebpf.list_events() if e["kind"] in ("typed", "synthetic")]
    assert [e["name"] for e in evs] == list(catalogue.CATALOGUE)
    for e in evs:
        id_, comment, fields = catalogue.CATALOGUE[e["name"]]
        assert (e["id"], e["comment"], tuple(e["fields"])) == (id_, comment, fields)
        assert e["comment"] and isinstance(e["optional"], bool)
    write = next(e for e in evs if e["name"] == WRITE)
    assert write["fields"] == [("fd", "i32"), ("count", "u64"), ("content", "u8[]")]


# -- trace() ---------------------------------------------------------------------------

@pytest.mark.parametrize("script,code", [("exit 0", 0), ("exit 3", 3), ("kill -9 $$", -9), ("kill -TERM $$", -15)])
def test_trace_returns_the_exit_code(script, code):
    r = tracer_ebpf.trace(["sh", "-c", script], EXIT)
    assert r.returncode == code
    ex = [e for e in r.events if e.pid == r.pid]
    assert len(ex) == 1
    assert ex[0].payload["exit_status" if code >= 0 else "signal"] == abs(code)


def test_trace_of_a_missing_or_non_executable_command():
    with pytest.raises(FileNotFoundError, match="no-such-command-xyz"):
        tracer_ebpf.trace(["no-such-command-xyz", "arg"])
    with pytest.raises(FileNotFoundError):
        tracer_ebpf.trace(["./no/such/path"])
    with pytest.raises(ValueError, match="empty command"):
        tracer_ebpf.trace([])
    with pytest.raises(TypeError, match="must be strings"):
        tracer_ebpf.trace(["echo", 3])
    with pytest.raises(tracer_ebpf.UnknownEventError):
        tracer_ebpf.trace(["true"], "nosuch/event")
    r = tracer_ebpf.trace(["/etc/hostname"], EXEC, stderr=subprocess.DEVNULL)  # not executable
    assert r.returncode == 126 and r.events == []


def test_trace_sees_only_the_command_not_its_launcher():
    # The exec of the command is the first event: nothing of the Python
    # launcher that waits for the tracer shows up.
    r = tracer_ebpf.trace(["true"], [EXEC, "syscalls/sys_enter_openat"])
    assert r.events[0].event_type == EXEC and r.events[0].payload["argv"] == ["true"]
    assert {e.comm for e in r.events} == {"true"}


# -- columns and DataFrames ------------------------------------------------------------

MIXED = [WRITE, EXIT, "syscalls/sys_*_openat"]
MIXED_CMD = ["sh", "-c", "printf 'a\\377\\n'; cat /nonexistent 2>/dev/null; exit 5"]


def both_forms(cmd, events, arrow=False):
    """The same workload seen by two tracers at once: as Events and as
    columns (poll_columns batches, or ArrowBatches with `arrow`)."""
    proc, gate = start_gated(cmd, stdout=subprocess.DEVNULL)
    with tracer_ebpf.Tracer(events, pids=proc.pid, follow_children=True) as a, \
            tracer_ebpf.Tracer(events, pids=proc.pid, follow_children=True) as b:
        release(gate)
        proc.wait()
        time.sleep(0.2)
        evs = a.drain()
        batches = []
        while True:
            c = b.poll_arrow(max_events=5, timeout=0) if arrow else b.poll_columns(max_events=5, timeout=0)
            batches.append(c)
            if not len(c["event_id"] if isinstance(c, dict) else c):
                break
    return evs, batches


def test_poll_columns_match_the_events():
    evs, batches = both_forms(MIXED_CMD, MIXED)
    assert len(batches) > 2 and len(evs) == sum(len(c["event_id"]) for c in batches) > 5
    names = list(batches[0])
    assert names[:len(HEADER) + 2] == HEADER + ["cpu", "payload_lost"]
    fields = {"payload." + f for n in (WRITE, EXIT, "syscalls/sys_enter_openat", "syscalls/sys_exit_openat")
              for f, _ in catalogue.CATALOGUE[n][2]}
    assert set(names[len(HEADER) + 2:]) == fields
    rows = []
    for c in batches:
        assert list(c) == names  # every batch has the same columns
        assert c.fields[WRITE] == ["payload.fd", "payload.count", "payload.content"]
        n = len(c["event_id"])
        assert all(len(v) == n for v in c.values())
        for k in ("event_id", "timestamp_ns", "upid", "uppid"):
            assert isinstance(c[k], array) and c[k].typecode == "Q"
        for k in ("pid", "tid", "ppid", "cpu"):
            assert isinstance(c[k], array) and c[k].typecode == "I" and c[k].itemsize == 4
        assert c["payload_lost"].typecode == "B"
        assert c["payload.fd"].typecode == "q" and c["payload.count"].typecode == "Q"
        assert isinstance(c["payload.content"], tracer_ebpf.BytesColumn)
        assert isinstance(c["payload.filename"], list)
        for i in range(n):
            rows.append({k: v[i] for k, v in c.items()})
    for ev, row in zip(evs, rows):
        for k in HEADER + ["cpu"]:
            if k not in ("event_id", "timestamp_ns"):  # each tracer has its own
                assert row[k] == getattr(ev, k), k
        assert row["payload_lost"] == ev.payload_lost
        for k in names[len(HEADER) + 2:]:
            f = k[len("payload."):]
            if f in ev.payload:
                assert row[k] == ev.payload[f], k
            else:
                assert row[k] in (0, None), k  # no such field in this event


def test_bytes_column():
    evs, batches = both_forms(["sh", "-c", "printf 'one'; printf ''; printf '\\000\\377'"], WRITE)
    whole = [x for b in batches for x in b["payload.content"]]
    assert whole == [e.payload["content"] for e in evs] == [b"one", b"\x00\xff"]
    empty = batches[-1]["payload.content"]
    assert len(empty) == 0 and list(empty) == [] and empty.to_list() == [] and list(empty.offsets) == [0]
    for b in batches:
        bc = b["payload.content"]
        n = len(bc)
        assert bc.to_list() == list(bc) == [bc[i] for i in range(n)]
        assert len(bc.offsets) == n + 1 and bc.offsets[0] == 0 and bc.offsets[-1] == len(bc.data)
        assert [bc.data[bc.offsets[i]:bc.offsets[i + 1]] for i in range(n)] == list(bc)
        assert list(bc.valid) == [1] * n
        if n:
            assert bc[-1] == bc[n - 1]
        with pytest.raises(IndexError):
            bc[n]
        assert "BytesColumn" in repr(bc)


def test_dataframe_from_arrow_batches_and_from_events_agree():
    pd = pytest.importorskip("pandas")
    evs, batches = both_forms(MIXED_CMD, MIXED, arrow=True)
    df = tracer_ebpf.to_dataframe(batches)
    df2 = tracer_ebpf.to_dataframe(evs)
    assert len(df) == len(df2) == len(evs)
    for k in df2.columns:
        if k not in ("event_id", "timestamp_ns", "timestamp"):
            assert str(df[k].dtype) == str(df2[k].dtype), k
            assert df[k].astype(object).where(df[k].notna(), None).tolist() == \
                df2[k].astype(object).where(df2[k].notna(), None).tolist(), k
    assert str(df["pid"].dtype) == "uint32" and str(df["event_id"].dtype) == "uint64"
    # Declared widths, nullable where an event has no such field.
    assert str(df["payload.fd"].dtype) == "Int32" and str(df["payload.count"].dtype) == "UInt64"
    assert str(df["payload.ret"].dtype) == "Int64" and str(df["payload.flags"].dtype) == "UInt32"
    assert str(df["timestamp"].dtype) == "datetime64[ns, UTC]"
    w = df[df.event_type == WRITE]
    assert w["payload.content"].tolist()[0] == b"a\xff\n" and w["payload.fd"].tolist()[0] == 1
    assert w["payload.ret"].isna().all() and w["payload.exit_status"].isna().all()
    x = df[df.event_type == EXIT]
    assert x["payload.exit_status"].tolist() == [1, 5] and x["payload.content"].isna().all()  # cat, sh
    o = df[df.event_type == "syscalls/sys_enter_openat"]
    assert "/nonexistent" in o["payload.filename"].tolist()
    assert isinstance(df, pd.DataFrame)


def test_tracer_to_dataframe_and_empty_frames():
    pytest.importorskip("pandas")
    proc, gate = start_gated(["sh", "-c", "echo one; echo two"], stdout=subprocess.DEVNULL)
    with tracer_ebpf.Tracer(WRITE, pids=proc.pid) as t:
        release(gate)
        df = t.to_dataframe(duration=1.0)
        empty = t.to_dataframe(duration=0)
    assert df["payload.content"].tolist() == [b"one\n", b"two\n"]
    assert len(empty) == 0 and "payload.content" in empty.columns and "timestamp" in empty.columns
    r = tracer_ebpf.trace(["true"], WRITE)
    assert len(r.to_dataframe()) == 0
    with pytest.raises(TypeError):
        tracer_ebpf.to_dataframe([1, 2])


def test_to_dataframe_stops_at_max_events():
    pytest.importorskip("pandas")
    code = "import os\nfor i in range(300):\n    os.write(1, b'x')\n"
    proc, gate = start_gated([PY, "-c", code], stdout=subprocess.DEVNULL)
    with tracer_ebpf.Tracer(WRITE, pids=proc.pid) as t:
        release(gate)
        proc.wait()
        t0 = time.monotonic()
        df = t.to_dataframe(duration=30, max_events=100)
        assert time.monotonic() - t0 < 10
    assert len(df) == 100


# -- Ctrl-C ----------------------------------------------------------------------------

INTERRUPT = """
import os, signal, sys, threading, time, tracer_ebpf
if "dataframe" in {call!r}:
    import pandas  # imported first: the interrupt is meant for the collecting
t = tracer_ebpf.Tracer("syscalls/sys_enter_write", pids=[1])
print("READY", flush=True)
sys.stdin.readline()
def fire():
    time.sleep(0.5)
    global t0
    t0 = time.monotonic()
    os.kill(os.getpid(), signal.SIGINT)
threading.Thread(target=fire).start()
try:
    r = {call}
    print("RET", time.monotonic() - t0, t.closed, len(r), flush=True)
except KeyboardInterrupt:
    print("KI", time.monotonic() - t0, t.closed, flush=True)
time.sleep(30)  # held open: the parent checks nothing is attached any more
"""


@pytest.mark.parametrize("call", ["t.poll(60)", "t.read(60, 10)", "t.poll_columns(60, 10)",
                                  "[ev for ev in t]", "t.collect(60)", "t.to_dataframe(60)"])
def test_interrupting_a_cell_closes_the_tracer_and_detaches(call):
    """Ctrl-C in a cell: the tracer is closed within half a second; reading
    calls raise KeyboardInterrupt, collect() and to_dataframe() return what
    they captured until then (issue 14: stop is a drain)."""
    if "dataframe" in call:
        pytest.importorskip("pandas")
    p = subprocess.Popen([PY, "-c", INTERRUPT.format(call=call)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline() == "READY\n", p.stderr.read()
        held = prog_ids_of(p.pid)
        assert held
        p.stdin.write("go\n")
        p.stdin.flush()
        line = p.stdout.readline()
        returns = call in ("t.collect(60)", "t.to_dataframe(60)")
        assert line.startswith("RET" if returns else "KI"), line + p.stderr.read()
        latency, closed = line.split()[1:3]
        assert float(latency) < 0.5 and closed == "True"
        # Its programs are released (by the release thread, a grace period
        # or two after close)...
        assert wait_for(lambda: not prog_ids_of(p.pid)), prog_ids_of(p.pid)
        assert wait_for(lambda: not held & loaded_prog_ids())  # ...and are gone from the kernel
    finally:
        p.kill()
        p.wait()


# -- errors ---------------------------------------------------------------------------

def test_exception_classes():
    e = tracer_ebpf
    assert issubclass(e.TracerPermissionError, PermissionError) and issubclass(e.TracerPermissionError, e.TracerError)
    for cls in (e.UnknownEventError, e.ConfigError):
        assert issubclass(cls, ValueError) and issubclass(cls, e.TracerError)
    for cls in (e.BtfMissingError, e.TracefsError, e.TracepointMissingError, e.VerifierError):
        assert issubclass(cls, e.TracerError)


def run_hidden(setup: str, code: str) -> subprocess.CompletedProcess:
    """Runs `code` in a private mount namespace after the shell `setup`."""
    script = f"set -e\nmount --make-rprivate /\n{setup}\nexec {PY} -c '{code}'"
    return subprocess.run(["unshare", "-m", "sh", "-c", script], capture_output=True, text=True, timeout=60)


CATCH = ("import tracer_ebpf\ntry:\n    tracer_ebpf.Tracer(\"syscalls/sys_enter_write\")\n"
         "except tracer_ebpf.TracerError as e:\n    print(type(e).__name__, e)\n")


def test_missing_btf_says_so():
    r = run_hidden("mount -t tmpfs none /sys/kernel/btf", CATCH)
    assert r.stdout.startswith("BtfMissingError"), r.stdout + r.stderr
    assert "/sys/kernel/btf/vmlinux" in r.stdout and "CONFIG_DEBUG_INFO_BTF" in r.stdout


def test_missing_tracefs_says_so():
    # Neither tracefs nor debugfs visible, and no CAP_SYS_ADMIN to mount it
    # (CAP_BPF + CAP_PERFMON are enough for the rest).
    setup = ("mount -t tmpfs none /sys/kernel/tracing\nmount -t tmpfs none /sys/kernel/debug\n"
             f"exec setpriv --inh-caps=-sys_admin --bounding-set=-sys_admin {PY} -c '{CATCH}'")
    r = run_hidden(setup, "")
    assert r.stdout.startswith("TracefsError"), r.stdout + r.stderr
    assert "tracefs is not mounted" in r.stdout and "mount -t tracefs" in r.stdout


def test_the_poll_family_takes_its_arguments_in_one_order():
    import inspect
    for name in ("poll", "read", "read_json", "poll_columns"):
        params = list(inspect.signature(getattr(tracer_ebpf.Tracer, name)).parameters)
        assert params == ["self", "timeout", "max_events"], (name, params)
