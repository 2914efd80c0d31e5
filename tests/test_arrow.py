"""Arrow record batches (Tracer.poll_arrow, events_to_arrow, ArrowBatch):
exactly what the JSON lines hold, taken as they are by pyarrow, polars and
DuckDB, with no dependency of the core on any of them. Real kernel."""

import base64
import bisect
import json
import subprocess
import sys
import time

import pytest

import tracer_ebpf
from tracer_ebpf import events as catalogue
from conftest import PY, gated_process, path_of_length

pa = pytest.importorskip("pyarrow")

WRITE = "syscalls/sys_enter_write"
EXEC = "sched/sched_process_exec"
EXIT = "sched/sched_process_exit"
EVENTS = [WRITE, EXEC, EXIT, "syscalls/sys_enter_openat", "syscalls/sys_exit_openat"]
MIB = 1 << 20


LONG_PATH = path_of_length(4095)

# Everything the byte-exact promise covers: NUL and invalid UTF-8 in a
# write, 1 MiB (whole) and 2 MiB (cut) contents, a 4095-byte path, a path
# and argv strings that are not UTF-8, empty arguments, a comm that is not
# UTF-8. Contents are written from heap copies (never from pages not yet
# mapped, whose bytes BPF cannot read).
WORKLOAD = f"""
import ctypes, os
ctypes.CDLL(None).prctl(15, b"tb\\xffarrow", 0, 0, 0)
os.write(1, bytearray(b"a\\x00\\xff\\xfe\\n"))
os.write(1, bytearray(bytes(range(256)) * 4096))
os.write(1, bytearray(b"z" * (2 * {MIB})))
for p in ({LONG_PATH!r}.encode(), b"/nonexistent/tb\\xffx"):
    try:
        os.open(p, os.O_RDONLY)
    except OSError:
        pass
os.execv(b"/bin/true", [b"/bin/true", b"", b"x\\xffy", b""])
"""


def traced_both_ways(code, events, arrow=False, **kw):
    """One workload seen by two tracers at once: Events and ArrowBatches
    (built by the reader with ``arrow``)."""
    with gated_process([PY, "-c", code], stdout=subprocess.DEVNULL) as (proc, go):
        with tracer_ebpf.Tracer(events, pids=proc.pid, **kw) as a, \
                tracer_ebpf.Tracer(events, pids=proc.pid, arrow=arrow, **kw) as b:
            go()
            proc.wait(timeout=30)
            time.sleep(0.2)
            evs = a.drain()
            batches = []
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                batch = b.poll_arrow(timeout=0.2, max_events=7)
                if not len(batch):
                    break
                batches.append(batch)
            b.stop()
            assert b.stats()["records"] == sum(len(x) for x in batches), "every event came as a row"
    return evs, batches


def exact(d, name):
    """The exact bytes of a JSON string field (its _base64 when not UTF-8)."""
    if name + "_base64" in d:
        return base64.b64decode(d[name + "_base64"])
    return None if d[name] is None else d[name].encode()


def check_row(row, line, schema_payload):
    """`row` (a pyarrow row as a dict) holds exactly what the JSON line holds."""
    d = json.loads(line)
    for k in ("event_type", "pid", "tid", "ppid", "upid", "uppid", "comm"):
        assert row[k] == d[k], k
    assert row["comm_bytes"] == (base64.b64decode(d["comm_base64"]) if "comm_base64" in d else None)
    p = d["payload"]
    seen = set()
    for f, kind in catalogue.CATALOGUE[d["event_type"]][2]:
        col = "payload." + f
        seen.add(col)
        if kind in ("u8[]", "char[]", "char[][]"):
            aux = [col + s for s in ("_truncated", "_lost", "_size")]
            seen.update(aux)
            assert row[aux[0]] == p.get(f + "_truncated", False), col
            assert row[aux[1]] == p.get(f + "_lost"), col
            assert row[aux[2]] == p.get(f + "_size"), col
        if kind == "u8[]":
            assert row[col] == exact(p, f), col
        elif kind == "char[]":
            seen.add(col + "_bytes")
            assert row[col] == p[f], col
            assert row[col + "_bytes"] == (exact(p, f) if f + "_base64" in p else None), col
        elif kind == "char[][]":
            seen.add(col + "_bytes")
            assert row[col] == p[f], col
            raw = [base64.b64decode(x) for x in p[f + "_base64"]] if f + "_base64" in p else None
            assert row[col + "_bytes"] == raw, col
        else:
            assert row[col] == p[f], col
            if col + "_name" in schema_payload:
                seen.add(col + "_name")
                assert row[col + "_name"] == p.get(f + "_name"), col
    for other in schema_payload - seen:
        assert row[other] is None, (d["event_type"], other)


def by_thread(items, key):
    """{(event type, tid, n): item}: the n-th event of that type on that
    thread (two tracers agree on that, not on the clock's last ns)."""
    out, seen = {}, {}
    for x in items:
        k = key(x)
        seen[k] = seen.get(k, -1) + 1
        out[k + (seen[k],)] = x
    return out


def matched(evs, batches):
    """(Event, row) pairs of the same event, rows as dicts. Each tracer turns
    boot time into wall time with the clocks' offset read when it starts, and
    a wall clock being slewed moves that offset (5 ms a second on this VM at
    times): the two tracers' times differ by that much throughout. Besides,
    each program reads the clock itself, one after the other on the same
    tracepoint, so one event's times also differ by what ran in between (the
    first program's copy of a content, a preemption: 1.1 ms seen). So, once
    the tracers' median difference is taken out, each row's time must fall
    between the other tracer's times of the thread's previous and next events
    (the thread cannot go on before both programs ran)."""
    table = pa.Table.from_batches([pa.record_batch(b) for b in batches])
    rows = by_thread(table.to_pylist(), lambda r: (r["event_type"], r["tid"]))
    events = by_thread(evs, lambda e: (e.event_type, e.tid))
    assert rows.keys() == events.keys() and len(rows) == table.num_rows
    pairs = [(events[k], rows[k]) for k in events]
    diffs = sorted(r["timestamp_ns"] - e.timestamp_ns for e, r in pairs)
    offset = diffs[len(diffs) // 2]
    # Two offsets read well under a second apart, the clock slewed at most 10%.
    assert abs(offset) < 50_000_000, diffs
    on_thread: dict = {}
    for e in evs:
        on_thread.setdefault(e.tid, []).append(e.timestamp_ns)
    for times in on_thread.values():
        times.sort()
    slack = 100_000  # offsets read from two clocks, microseconds apart
    for e, r in pairs:
        times = on_thread[e.tid]
        at = bisect.bisect_left(times, e.timestamp_ns)
        before = times[at - 1] if at > 0 else e.timestamp_ns - 1_000_000_000
        after = times[at + 1] if at + 1 < len(times) else e.timestamp_ns + 1_000_000_000
        t = r["timestamp_ns"] - offset
        assert before - slack <= t <= after + slack, (e.event_type, e.timestamp_ns, t, before, after)
    for e, r in pairs:
        assert r["timestamp"].value == r["timestamp_ns"]
    return table, pairs


@pytest.mark.parametrize("arrow", [False, True], ids=["events", "built-by-reader"])
def test_poll_arrow_holds_exactly_what_the_json_lines_hold(arrow):
    evs, batches = traced_both_ways(WORKLOAD, EVENTS, arrow=arrow)
    table, pairs = matched(evs, batches)
    schema_payload = {n for n in table.column_names if n.startswith("payload.")}
    for e, r in pairs:
        check_row(r, e.to_json(), schema_payload)
    rows = {i: r for i, (_, r) in enumerate(pairs)}
    # The cases themselves were there (so the comparison covered them).
    writes = [r for r in rows.values() if r["event_type"] == WRITE]
    contents = [r["payload.content"] for r in writes]
    assert b"a\x00\xff\xfe\n" in contents and bytes(range(256)) * 4096 in contents
    cut = [r for r in writes if r["payload.content_truncated"]]
    assert len(cut) == 1 and cut[0]["payload.content_size"] == 2 * MIB and len(cut[0]["payload.content"]) == MIB
    assert {r["comm_bytes"] for r in writes} == {b"tb\xffarrow"}
    opens = {r["payload.filename"] for r in rows.values() if r["event_type"] == "syscalls/sys_enter_openat"}
    assert LONG_PATH in opens
    raw = [r["payload.filename_bytes"] for r in rows.values() if r["payload.filename_bytes"]]
    assert b"/nonexistent/tb\xffx" in raw
    ex = [r for r in rows.values() if r["event_type"] == EXEC and r["payload.filename"] == "/bin/true"]
    assert len(ex) == 1 and ex[0]["payload.argv_bytes"] == [b"/bin/true", b"", b"x\xffy", b""]
    assert ex[0]["payload.argv"] == ["/bin/true", "", "x\ufffdy", ""]


def test_schema_types_and_stable_columns():
    with tracer_ebpf.Tracer(EVENTS + ["syscalls/sys_enter_close"], comm="tb-none-such") as t:
        first = pa.record_batch(t.poll_arrow(timeout=0))
        second = pa.record_batch(t.poll_arrow(timeout=0.05))
    assert first.num_rows == second.num_rows == 0 and first.schema == second.schema
    s = first.schema
    assert s.names[:20] == ["event_id", "event_type", "timestamp", "timestamp_ns", "pid", "tid", "ppid", "upid",
                            "uppid", "comm", "comm_bytes", "ns_pid", "ns_tid", "cgroup_id", "cgroup", "container_id",
                            "container_runtime", "pod_uid", "cpu", "payload_lost"]
    for name in ("cgroup", "container_id", "container_runtime", "pod_uid"):
        assert s.field(name).type == pa.dictionary(pa.int32(), pa.string()) and s.field(name).nullable
    assert s.field("event_type").type == pa.dictionary(pa.int32(), pa.string())
    assert s.field("timestamp").type == pa.timestamp("ns", tz="UTC")
    assert s.field("pid").type == pa.uint32() and s.field("upid").type == pa.uint64()
    assert s.field("payload.fd").type == pa.int32() and s.field("payload.count").type == pa.uint64()
    assert s.field("payload.content").type == pa.large_binary()
    assert s.field("payload.filename").type == pa.large_string()
    assert s.field("payload.argv").type.value_type == pa.large_string()
    assert s.field("payload.content_lost").type == pa.dictionary(pa.int8(), pa.string())
    assert s.field("payload.ret").type == pa.int64() and s.field("payload.ret_name").type == pa.string()
    # A generic tracepoint's fields from its tracefs format: close's fd is
    # an unsigned int there, so it gets a column of its own.
    assert s.field("payload.syscalls/sys_enter_close.fd").type == pa.uint64()


@pytest.mark.parametrize("arrow", [False, True], ids=["events", "built-by-reader"])
def test_generic_tracepoint_rows_match_json(arrow):
    code = "import os\nfd = os.open('/etc/hostname', os.O_RDONLY)\nos.close(fd)\nos.rmdir(b'/nonexistent-tb\\xff')\n"
    code = code.replace("os.rmdir(", "import contextlib\nwith contextlib.suppress(OSError):\n    os.rmdir(")
    evs, batches = traced_both_ways(code, ["syscalls/sys_enter_close", "syscalls/sys_enter_rmdir"], arrow=arrow)
    _, pairs = matched(evs, batches)
    rm = [(e, r) for e, r in pairs if e.event_type == "syscalls/sys_enter_rmdir"]
    assert len(rm) == 1
    e, r = rm[0]
    d = json.loads(e.to_json())["payload"]
    assert r["payload.pathname"] == d["pathname"] and r["payload.pathname_bytes"] == b"/nonexistent-tb\xff"
    closes = [(e, r) for e, r in pairs if e.event_type == "syscalls/sys_enter_close"]
    assert closes
    for e, r in closes:  # no typed event's fd here: the plain name
        assert r["payload.fd"] == e.payload["fd"] and r["payload.pathname"] is None


def test_polars_and_duckdb_take_the_batch_as_it_is():
    pl = pytest.importorskip("polars")
    duckdb = pytest.importorskip("duckdb")
    code = "import os\nfor i in range(50):\n    os.write(1, b'x' * i)\n"
    with gated_process([PY, "-c", code], stdout=subprocess.DEVNULL) as (proc, go):
        with tracer_ebpf.Tracer(WRITE, pids=proc.pid) as t:
            go()
            proc.wait(timeout=30)
            time.sleep(0.1)
            batch = t.poll_arrow(timeout=2.0, max_events=1000)
    assert len(batch) == 50
    df = pl.DataFrame(batch)
    assert df.shape[0] == 50 and df["payload.count"].dtype == pl.UInt64 and df["pid"].dtype == pl.UInt32
    assert df["payload.content"].to_list() == [b"x" * i for i in range(50)]
    assert df["payload.exit_code"].null_count() == 50 if "payload.exit_code" in df.columns else True
    got = duckdb.sql('select sum("payload.count")::BIGINT, count(*), min(pid) from batch').fetchall()[0]
    assert got == (sum(range(50)), 50, proc.pid)
    assert pa.table(batch).num_rows == 50 and pa.record_batch(batch).num_rows == 50


CORE_ONLY = r"""
import subprocess, sys, time
for m in ("pyarrow", "polars", "duckdb", "pandas", "numpy"):
    sys.modules[m] = None                    # as if not installed
import tracer_ebpf
with tracer_ebpf.Tracer("syscalls/sys_enter_write", pids=[int(sys.argv[1])]) as t:
    b = t.poll_arrow(timeout=0.1)
    print(type(b).__name__, len(b), len(b.column_names), b.__arrow_c_schema__().__class__.__name__)
"""


def test_the_core_needs_no_arrow_library():
    sleeper = subprocess.Popen(["sleep", "30"])
    try:
        r = subprocess.run([PY, "-c", CORE_ONLY, str(sleeper.pid)], capture_output=True, text=True, timeout=60)
    finally:
        sleeper.kill()
        sleeper.wait()
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["ArrowBatch", "0", "26", "PyCapsule"]


def test_bad_calls_fail_clearly():
    t = tracer_ebpf.Tracer(WRITE, comm="tb-none-such")
    with pytest.raises(ValueError):
        t.poll_arrow(timeout=-1)
    with pytest.raises(ValueError):
        t.poll_arrow(max_events=0)
    t.close()
    with pytest.raises(tracer_ebpf.TracerClosedError):
        t.poll_arrow()
    with pytest.raises(TypeError, match="Event objects"):
        tracer_ebpf._native.events_to_arrow([1])


def test_to_dataframe_of_arrow_batches_and_of_events():
    pd = pytest.importorskip("pandas")
    evs, batches = traced_both_ways("import os\nos.write(1, bytearray(b'q\\x00\\xff'))\nos._exit(3)\n", [WRITE, EXIT])
    a = tracer_ebpf.to_dataframe(batches)
    b = tracer_ebpf.to_dataframe(evs)
    c = tracer_ebpf.to_dataframe(tracer_ebpf._native.events_to_arrow(evs))
    assert len(a) == len(b) == len(c) == 2
    assert list(a.columns) == list(b.columns) == list(c.columns)
    w = a[a.event_type == WRITE]
    assert w["payload.content"].tolist() == [b"q\x00\xff"] and str(a["payload.exit_code"].dtype) == "Int32"
    assert a[a.event_type == EXIT]["payload.exit_status"].tolist() == [3]
    assert isinstance(a, pd.DataFrame) and str(a["timestamp"].dtype) == "datetime64[ns, UTC]"
    assert str(a["event_type"].dtype) == "category" and str(a["pid"].dtype) == "uint32"


BURST = """
import os, sys, threading
n = int(sys.argv[1])
def work(k):
    for i in range(n // 4):
        os.write(1, b"%d:%08d:" % (k, i) + bytes(54))
ts = [threading.Thread(target=work, args=(k,)) for k in range(4)]
for t in ts: t.start()
for t in ts: t.join()
"""


def test_reader_built_batches_hold_a_whole_burst_in_full_batches():
    """arrow=True: while nobody polls, the reader makes full batches of
    65,536 rows; they come out as they are (a smaller max_events cuts one,
    its rest next), the last rows as the batch being built, with every
    write's bytes, in each thread's order; the counters add up at each step."""
    n = 200_000
    with gated_process([PY, "-c", BURST, str(n)], stdout=subprocess.DEVNULL) as (proc, go):
        # Room for the whole burst in the queue (the test is about batches).
        with tracer_ebpf.Tracer(WRITE, pids=proc.pid, arrow=True, queue_bytes=512 << 20) as t:
            go()
            proc.wait(timeout=60)
            deadline = time.monotonic() + 30
            while t.stats()["queued"] < n and time.monotonic() < deadline:
                time.sleep(0.05)
            st = t.stats()
            assert st["queued"] == st["records"] == n and st["delivered"] == 0, st
            batches, delivered = [], 0
            # Taken at once, a batch the consumer finished would hold all n.
            for want, got in [(1 << 20, 65536), (1000, 1000), (1 << 20, 64536), (1 << 20, 65536), (1 << 20, 3392)]:
                b = t.poll_arrow(timeout=1.0, max_events=want)
                assert len(b) == got, [len(x) for x in batches]
                batches.append(b)
                delivered += got
                st = t.stats()
                assert (st["delivered"], st["queued"], st["discarded"]) == (delivered, n - delivered, 0), st
            assert len(t.poll_arrow(timeout=0.2)) == 0
            st = t.stats()
            assert st["queued_bytes"] == 0 and st["ring_full"] == st["payload_full"] == 0, st
    table = pa.Table.from_batches([pa.record_batch(b) for b in batches])
    assert table.num_rows == n and table.schema == pa.record_batch(batches[0]).schema
    contents = table.column("payload.content").to_pylist()
    per_thread = {}
    for tid, c in zip(table.column("tid").to_pylist(), contents):
        per_thread.setdefault(tid, []).append(c)
    assert len(per_thread) == 4
    for got in per_thread.values():
        k = got[0][:1]
        assert got == [b"%s:%08d:" % (k, i) + bytes(54) for i in range(n // 4)]


def reader_built_with_writes(n):
    """A tracer with arrow=True (not closed) holding the rows of `n` writes
    of a finished process."""
    code = f"import os\nfor i in range({n}):\n    os.write(1, b'w%d' % i)\n"
    with gated_process([PY, "-c", code], stdout=subprocess.DEVNULL) as (proc, go):
        t = tracer_ebpf.Tracer(WRITE, pids=proc.pid, arrow=True)
        go()
        proc.wait(timeout=30)
    deadline = time.monotonic() + 10
    while t.stats()["queued"] < n and time.monotonic() < deadline:
        time.sleep(0.02)
    return t


def test_a_reader_built_tracer_refuses_per_event_forms_and_takes_nothing(tmp_path):
    t = reader_built_with_writes(300)
    exporter = tracer_ebpf.OtlpExporter("http://127.0.0.1:9")
    dataset = tracer_ebpf.ParquetDataset(str(tmp_path / "ds"))
    try:
        for call in (lambda: t.poll(0.1), lambda: next(iter(t)), lambda: t.poll_columns(0.1),
                     lambda: t.read_json(0.1), lambda: t.export(exporter, 0.1),
                     lambda: t.write_parquet(dataset, 0.1)):
            with pytest.raises(tracer_ebpf.ConfigError, match="poll_arrow"):
                call()
        assert exporter.close(0)["export_records"] == 0
        assert t.stats()["queued"] == 300 and t.stats()["delivered"] == 0  # nothing taken by them
        assert len(t.poll_arrow(timeout=1.0, max_events=100)) == 100
        # An idle tracer's poll_arrow waits its timeout, then gives no rows.
        rest = t.poll_arrow(timeout=1.0)
        assert len(rest) == 200
        t0 = time.monotonic()
        empty = t.poll_arrow(timeout=0.3)
        assert len(empty) == 0 and 0.25 < time.monotonic() - t0 < 5
        assert empty.column_names == rest.column_names
    finally:
        t.close()
        dataset.close()
    st = t.stats()
    assert (st["records"], st["delivered"], st["queued"], st["discarded"]) == (300, 300, 0, 0)


@pytest.mark.parametrize("taken", [0, 123])
def test_rows_left_in_a_reader_built_tracer_are_discarded_and_counted(taken):
    t = reader_built_with_writes(500)
    try:
        if taken:  # the rest is then in a finished batch, else all still being built
            assert len(t.poll_arrow(timeout=1.0, max_events=taken)) == taken
    finally:
        t.close()
    st = t.stats()
    assert (st["records"], st["delivered"], st["queued"], st["discarded"]) == (500, taken, 0, 500 - taken)


def test_to_dataframe_of_a_reader_built_tracer():
    pytest.importorskip("pandas")
    code = "import os\nfor i in range(20):\n    os.write(1, b'd' * i)\n"
    with gated_process([PY, "-c", code], stdout=subprocess.DEVNULL) as (proc, go):
        with tracer_ebpf.Tracer(WRITE, pids=proc.pid, arrow=True) as t:
            go()
            proc.wait(timeout=30)
            df = t.to_dataframe(1.0)
    assert df["payload.content"].tolist() == [b"d" * i for i in range(20)]


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-v"]))
