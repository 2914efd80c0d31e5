"""Issue 16: Parquet datasets on the real kernel. Events written from Python
and from tracer-example are read back with pyarrow, DuckDB and Spark and
compared, field by field and byte for byte, with the JSON lines of the same
events; a writer killed with SIGKILL leaves only complete files visible;
files rotate by size and time; bad options change nothing."""

import base64
import glob
import importlib.util
import json
import os
import select
import shutil
import signal
import subprocess
import time
from decimal import Decimal
from pathlib import Path

import pytest

import tracer_ebpf
from tracer_ebpf import ConfigError, DatasetError, ParquetDataset, TracerError
from tracer_ebpf.run import release, start_gated
from conftest import PY

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")
duckdb = pytest.importorskip("duckdb")

WRITE = "syscalls/sys_enter_write"
OPENAT = "syscalls/sys_enter_openat"
EXEC = "sched/sched_process_exec"
EXIT = "sched/sched_process_exit"
MIB = 1 << 20

# The README's queries (README.md, "Parquet datasets"), with DIR filled in.
README_DUCKDB = """
SELECT host, event, count(*) AS events
FROM read_parquet('{dir}/**/*.parquet', hive_partitioning = true, union_by_name = true)
GROUP BY ALL ORDER BY ALL
"""


def readme_spark(spark, d):
    df = spark.read.option("mergeSchema", "true").parquet(d)
    return df.groupBy("host", "event").count().orderBy("host", "event")


def readline_within(f, seconds):
    """A line of a text pipe, or "" if none came within `seconds`."""
    ready, _, _ = select.select([f], [], [], seconds)
    return f.readline() if ready else ""


# -- reading back -------------------------------------------------------------------------

def parquet_files(d):
    return sorted(glob.glob(f"{d}/**/*.parquet", recursive=True))


def temp_files(d):
    return sorted(glob.glob(f"{d}/**/.*.tmp", recursive=True))


def size_now(path):
    """The file's size, 0 once it is gone: a temporary file listed a moment
    ago may have been completed (renamed) since, by the live tracer."""
    try:
        return os.path.getsize(path)
    except FileNotFoundError:
        return 0


def rows_pyarrow(d):
    """Every row of every file, as dicts, with `ts_us` for `timestamp`."""
    out = []
    for f in parquet_files(d):
        t = pq.read_table(f)
        ts = t.column("timestamp").cast(pa.int64()).to_pylist()
        for r, us in zip(t.to_pylist(), ts):
            del r["timestamp"]
            r["ts_us"] = us
            r["host"] = f.split("/host=")[1].split("/")[0]
            r["event"] = f.split("/event=")[1].split("/")[0]
            out.append(r)
    return out


def duckdb_source(d):
    return f"read_parquet('{d}/**/*.parquet', hive_partitioning = true, union_by_name = true)"


def rows_duckdb(d, where="true"):
    rel = duckdb.sql(f'SELECT * EXCLUDE ("timestamp"), epoch_us("timestamp") AS ts_us FROM {duckdb_source(d)} WHERE {where}')
    return [dict(zip(rel.columns, r)) for r in rel.fetchall()]


def rows_spark(spark, d):
    from pyspark.sql import functions as F

    df = spark.read.option("mergeSchema", "true").parquet(d)
    df = df.withColumn("ts_us", F.unix_micros("timestamp")).drop("timestamp")
    return [r.asDict() for r in df.collect()]


# -- the same event from its JSON line and from a row --------------------------------------

COMPANIONS = ("_base64", "_lost", "_truncated", "_size", "_name", "_bytes")
HEADER = ("event_id", "event_type", "timestamp_ns", "pid", "tid", "ppid", "upid", "uppid")


def num(v):
    """An integer as any engine returns it (Spark: Decimal for uint64)."""
    if isinstance(v, Decimal):
        assert v == int(v)
        return int(v)
    return v


def exact(v):
    return bytes(v) if isinstance(v, (bytes, bytearray, memoryview)) else v


def from_json(line):
    """(header, {field: (exact value, lost, truncated, size, name)}) of a JSON line;
    strings as their exact bytes (from `_base64` where they are not UTF-8)."""
    js = json.loads(line)
    head = {k: js[k] for k in HEADER}
    head["comm"] = base64.b64decode(js["comm_base64"]) if "comm_base64" in js else js["comm"].encode()
    p = js["payload"]
    fields = {}
    for f, v in p.items():
        if any(f.endswith(s) and f[: -len(s)] in p for s in COMPANIONS):
            continue
        raw = p.get(f + "_base64")
        if isinstance(v, str):
            v = base64.b64decode(raw) if raw is not None else v.encode()
        elif isinstance(v, list) and v and isinstance(v[0], str):
            v = [base64.b64decode(x) for x in raw] if raw is not None else [s.encode() for s in v]
        fields[f] = (v, p.get(f + "_lost"), p.get(f + "_truncated", False), p.get(f + "_size"), p.get(f + "_name"))
    return head, fields


def from_row(row):
    """The same of a row read back (any engine): columns of other event types
    (null) are left out; a variable field not captured is None, as in JSON."""
    head = {k: num(row[k]) for k in HEADER}
    cb = row.get("comm_bytes")
    head["comm"] = exact(cb) if cb is not None else row["comm"].encode()
    cols = {k[len("payload."):]: v for k, v in row.items() if k.startswith("payload.")}
    fields = {}
    for f, v in cols.items():
        if any(f.endswith(s) and f[: -len(s)] in cols for s in COMPANIONS):
            continue
        trunc = cols.get(f + "_truncated")
        if v is None and trunc is None:
            continue  # not a field of this row's event type
        raw = cols.get(f + "_bytes")
        if isinstance(v, str):
            v = exact(raw) if raw is not None else v.encode()
        elif isinstance(v, (bytes, bytearray)):
            v = exact(v)
        elif isinstance(v, list) and v and isinstance(v[0], str):
            v = [exact(x) for x in raw] if raw is not None else [s.encode() for s in v]
        elif isinstance(v, list):
            v = [num(x) for x in v]
        else:
            v = num(v)
        size = cols.get(f + "_size")
        fields[f] = (v, cols.get(f + "_lost"), bool(trunc), None if size is None else num(size), cols.get(f + "_name"))
    return head, fields


def assert_same_events(rows, lines, what):
    """Rows read back hold exactly the events of the JSON lines: the same
    set, and each field by field (timestamp too, at microseconds)."""
    by_id = {}
    for r in rows:
        head, fields = from_row(r)
        assert head["event_id"] not in by_id, f"{what}: event {head['event_id']} twice"
        assert num(r["ts_us"]) == head["timestamp_ns"] // 1000, what
        assert r["event"] == head["event_type"].replace("/", "."), what
        by_id[head["event_id"]] = (head, fields)
    expected = {}
    for line in lines:
        head, fields = from_json(line)
        expected[head["event_id"]] = (head, fields)
    assert sorted(by_id) == sorted(expected), f"{what}: {len(by_id)} rows for {len(expected)} JSON lines"
    for k, (head, fields) in expected.items():
        got_head, got_fields = by_id[k]
        assert got_head == head, what
        assert got_fields.keys() == fields.keys(), (what, head["event_type"])
        for f in fields:
            assert got_fields[f] == fields[f], (what, head["event_type"], f, str(got_fields[f])[:200], str(fields[f])[:200])


# -- Spark ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def spark():
    """One local Spark session for the module (starting one takes seconds)."""
    if importlib.util.find_spec("pyspark") is None or shutil.which("java") is None:
        pytest.skip("Spark needs pyspark and a Java runtime (Debian: openjdk-17-jre-headless); "
                    ".ci/setup and .ci/run install both")
    from pyspark.sql import SparkSession

    # Local mode on the loopback interface only.
    os.environ["SPARK_LOCAL_IP"] = "127.0.0.1"
    s = (SparkSession.builder.master("local[1]").appName("tracer-ebpf-tests")
         .config("spark.driver.host", "127.0.0.1")
         .config("spark.driver.bindAddress", "127.0.0.1")
         .config("spark.ui.enabled", "false")
         .config("spark.sql.session.timeZone", "UTC")
         .config("spark.sql.shuffle.partitions", "1")
         .getOrCreate())
    s.sparkContext.setLogLevel("OFF")
    yield s
    s.stop()


# -- byte-exact round trip -----------------------------------------------------------------

def path_of_length(n):
    """An absolute path of exactly n bytes, in nested directories of
    200-byte names (each under NAME_MAX), as tests/test_events.py makes them."""
    parts, left = [], n - 1
    while left > 0:
        k = min(200, left)
        parts.append("p" * k)
        left -= k + 1
    p = ("/" + "/".join(parts))[:n]
    assert len(p) == n
    return p


ROUND_TRIP_CHILD = r"""
import os, sys
os.write(1, b"nul\x00and invalid utf-8 \xff\xfe\xc3\x28\xe2\x82 end\n")
os.write(1, bytes(range(256)) * 4096)                  # 1 MiB
try:
    os.open(sys.argv[1], os.O_RDONLY)                  # a 4095-byte path
except OSError:
    pass
os.execv(b"/bin/true", [b"/bin/true", b"", b"arg\xffnot utf-8", b"", b"last"])
"""


def test_python_events_round_trip_byte_exact_through_parquet_duckdb_and_spark(tmp_path, spark):
    path = path_of_length(4095)
    r = tracer_ebpf.trace([PY, "-c", ROUND_TRIP_CHILD, path], [WRITE, OPENAT, EXEC], content_max=MIB,
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=60)
    assert r.returncode == 0
    events = r.events
    lines = [e.to_json() for e in events]
    # What the workload did, as the tracer captured it.
    big = [e for e in events if e.event_type == WRITE and e.payload_raw["content"] == bytes(range(256)) * 4096]
    assert len(big) == 1 and not big[0].payload_info["content"]["truncated"]
    assert any(e.event_type == WRITE and e.payload_raw["content"].startswith(b"nul\x00and invalid utf-8 \xff") for e in events)
    assert any(e.event_type == OPENAT and e.payload["filename"] == path for e in events)
    execs = [e for e in events if e.event_type == EXEC and e.payload["filename"] == "/bin/true"]
    assert len(execs) == 1 and execs[0].payload_raw["argv"] == [b"/bin/true", b"", b"arg\xffnot utf-8", b"", b"last"]

    d = str(tmp_path / "ds")
    with ParquetDataset(d, host="h1") as ds:
        ds.write(events)
        summary = ds.close(r.stats)
    assert summary["rows"] == len(events) and summary["rows_lost"] == 0
    assert sorted(summary["paths"]) == parquet_files(d)
    assert summary["bytes"] == sum(os.path.getsize(f) for f in summary["paths"])
    assert temp_files(d) == []
    print(f"\n[parquet] {len(events)} events (1 MiB of content among them): {summary['bytes']} bytes in "
          f"{summary['files']} files, {summary['bytes'] / len(events):.0f} bytes/event")

    assert_same_events(rows_pyarrow(d), lines, "pyarrow")
    assert_same_events(rows_duckdb(d), lines, "DuckDB")
    assert_same_events(rows_spark(spark, d), lines, "Spark")
    if importlib.util.find_spec("polars") is not None:  # CI has it
        import polars as pl  # docs/parquet.md's way: the union of the files' columns

        frame = pl.concat([pl.read_parquet(f, hive_partitioning=False) for f in parquet_files(d)], how="diagonal_relaxed")
        assert frame.height == len(events)
        assert sorted(frame["event_id"].to_list()) == sorted(e.event_id for e in events)
        assert bytes(range(256)) * 4096 in frame["payload.content"].to_list()

    # The bytes, spelled out once, as DuckDB returns them.
    got = rows_duckdb(d, "\"payload.filename\" IS NOT NULL AND length(\"payload.filename\") = 4095")
    assert len(got) == 1 and got[0]["payload.filename"] == path
    got = rows_duckdb(d, "event = 'sched.sched_process_exec' AND \"payload.filename\" = '/bin/true'")
    assert got[0]["payload.argv_bytes"] == [b"/bin/true", b"", b"arg\xffnot utf-8", b"", b"last"]
    assert got[0]["payload.argv"][1] == "" and got[0]["payload.argv"][3] == ""
    got = rows_duckdb(d, "octet_length(\"payload.content\") = 1048576")
    assert len(got) == 1 and got[0]["payload.content"] == bytes(range(256)) * 4096

    # Metadata: version, host, the counters; the side file: schema and stats.
    for f in summary["paths"]:
        md = {k.decode(): v.decode() for k, v in pq.read_metadata(f).metadata.items()}
        assert md["tracer_ebpf.version"] == tracer_ebpf.__version__
        assert md["tracer_ebpf.host"] == "h1" and md["tracer_ebpf.run"] == summary["run"]
        assert md["tracer_ebpf.event_type"].replace("/", ".") in f
        assert json.loads(md["tracer_ebpf.stats"]) == r.stats
        assert md["tracer_ebpf.events_lost"] == "0"
    side = json.loads(Path(summary["side_file"]).read_text())
    assert side["complete"] is True and side["host"] == "h1" and side["rows"] == len(events)
    assert side["stats"] == r.stats and side["events_lost"] == 0
    cols = {c["name"]: c["type"] for c in side["event_types"][WRITE]["columns"]}
    assert cols["payload.content"] == "LargeBinary" and cols["timestamp"].startswith("Timestamp(µs")
    assert sorted(os.path.join(os.path.dirname(summary["side_file"]), p) for p in side["paths"]) == parquet_files(d)


# -- two hosts, through the CLI ------------------------------------------------------------

def cli_run(tracer_example, d, host, jsonl, script):
    r = subprocess.run([tracer_example, "-q", "--events", f"{WRITE},{EXEC},{EXIT}", "--parquet", d, "--host", host,
                        "-o", str(jsonl), "--", "sh", "-c", script],
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr, r.stderr
    return jsonl.read_text().splitlines()


def test_two_hosts_from_the_cli_read_back_with_duckdb_and_spark_equal_the_json(tracer_example, tmp_path, spark):
    d = str(tmp_path / "ds")
    a = cli_run(tracer_example, d, "a", tmp_path / "a.jsonl", "printf 'host a\\377\\000\\n'; echo err >&2; /bin/echo '' x ''")
    b = cli_run(tracer_example, d, "b", tmp_path / "b.jsonl", "printf 'host b\\n'; sh -c 'exit 3'; /bin/echo b")
    assert a and b
    assert sorted(os.listdir(d)) == ["host=a", "host=b"]
    for host, lines in (("a", a), ("b", b)):
        sides = glob.glob(f"{d}/host={host}/_tracer_ebpf-*.json")
        assert len(sides) == 1 and json.loads(Path(sides[0]).read_text())["rows"] == len(lines)

    def counts(lines, host):
        out = {}
        for line in lines:
            k = (host, json.loads(line)["event_type"].replace("/", "."))
            out[k] = out.get(k, 0) + 1
        return out

    want = {**counts(a, "a"), **counts(b, "b")}
    got = {(h, e): n for h, e, n in duckdb.sql(README_DUCKDB.format(dir=d)).fetchall()}
    assert got == want
    got = {(r["host"], r["event"]): r["count"] for r in readme_spark(spark, d).collect()}
    assert got == want

    for what, rows in (("DuckDB", rows_duckdb(d)), ("Spark", rows_spark(spark, d))):
        for host, lines in (("a", a), ("b", b)):
            assert_same_events([r for r in rows if r["host"] == host], lines, f"{what}, host {host}")


# -- SIGKILL mid-file ----------------------------------------------------------------------

KILL_WRITER = r"""
import os, time
end = time.monotonic() + 90
while time.monotonic() < end:
    os.write(1, os.urandom(65536))
    time.sleep(0.002)
"""


def kill_mid_file(tracer_example, d):
    """Starts tracer-example --parquet on a writer of incompressible 64 KiB
    writes, rotating every 256 KiB; SIGKILLs it once two files are complete
    while another is being written. Returns whether a temporary file was
    left (the point of the test)."""
    p = subprocess.Popen([tracer_example, "-q", "--events", WRITE, "--parquet", d, "--host", "k",
                          "--max-file-bytes", "256K", "--", PY, "-c", KILL_WRITER],
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and p.poll() is None:
            if len(parquet_files(d)) >= 2 and [t for t in temp_files(d) if size_now(t) > 0]:
                break
            time.sleep(0.01)
        if p.poll() is not None:
            _, err = p.communicate(timeout=10)
            pytest.fail(f"tracer-example ended by itself: {err}")
        p.send_signal(signal.SIGKILL)
        p.communicate(timeout=10)
    finally:
        if p.poll() is None:
            p.kill()
            p.communicate(timeout=10)
    assert p.returncode == -signal.SIGKILL
    return bool(temp_files(d))


def test_sigkill_mid_file_leaves_only_complete_files_visible(tracer_example, tmp_path, spark):
    for attempt in range(3):
        d = str(tmp_path / f"ds{attempt}")
        if kill_mid_file(tracer_example, d):
            break
    else:
        pytest.fail("no file was being written at any of three kills")
    finals, temps = parquet_files(d), temp_files(d)
    assert len(finals) >= 2 and temps
    # Every file under its final name is complete: it reads whole, every
    # row group, as many rows as its footer says.
    total = 0
    for f in finals:
        meta = pq.read_metadata(f)
        t = pq.read_table(f)
        assert t.num_rows == meta.num_rows > 0, f
        assert meta.metadata[b"tracer_ebpf.host"] == b"k"
        assert all(len(c) for c in t.column("payload.content").to_pylist())
        total += t.num_rows
    # The temporary file has a name no reader takes: hidden, not *.parquet.
    for t in temps:
        name = os.path.basename(t)
        assert name.startswith(".part-") and name.endswith(".parquet.tmp"), name
    files, rows = duckdb.sql(
        f"SELECT count(DISTINCT filename), count(*) FROM read_parquet('{d}/**/*.parquet', "
        "hive_partitioning = true, union_by_name = true, filename = true)").fetchall()[0]
    assert (files, rows) == (len(finals), total)
    from pyspark.sql import functions as F

    df = spark.read.option("mergeSchema", "true").parquet(d)
    assert df.count() == total
    assert df.select(F.input_file_name()).distinct().count() == len(finals)
    # The run never ended: its side file says so.
    (side,) = glob.glob(f"{d}/host=k/_tracer_ebpf-*.json")
    assert json.loads(Path(side).read_text())["complete"] is False


# -- rotation ------------------------------------------------------------------------------

SIZE_WRITER = r"""
import os
for _ in range(48):
    os.write(1, os.urandom(65536))        # 3 MiB that zstd cannot shrink
"""


def test_files_rotate_by_size(tmp_path):
    r = tracer_ebpf.trace([PY, "-c", SIZE_WRITER], WRITE, stdout=subprocess.DEVNULL, timeout=60)
    writes = [e for e in r.events if e.event_type == WRITE and len(e.payload_raw["content"] or b"") == 65536]
    assert len(writes) == 48
    d = str(tmp_path / "ds")
    limit = 256 << 10
    with ParquetDataset(d, host="s", max_file_bytes=limit) as ds:
        ds.write(r.events)
        s = ds.close()
    files = [f for f in s["paths"] if "event=syscalls.sys_enter_write" in f]
    assert len(files) >= 8, s
    sizes = [os.path.getsize(f) for f in files]
    # A file ends once it reaches the limit, within one chunk of writes
    # (64 KiB at this limit) and one event.
    assert max(sizes) <= limit + 64 * 1024 + 65536 + 16 * 1024, sizes
    assert sum(sizes[:-1]) / (len(sizes) - 1) >= limit * 0.75, sizes
    assert sum(pq.read_metadata(f).num_rows for f in files) == len([e for e in r.events if e.event_type == WRITE])
    assert s["rows"] == len(r.events)


def test_files_rotate_by_time_with_the_fast_path(tmp_path):
    proc, gate = start_gated(["sh", "-c", "i=0; while [ $i -lt 30 ]; do echo tick$i; sleep 0.1; i=$((i+1)); done"],
                             stdout=subprocess.DEVNULL)
    d = str(tmp_path / "ds")
    n = 0
    try:
        with tracer_ebpf.Tracer(WRITE, pids=[proc.pid]) as t, ParquetDataset(d, host="t", max_file_seconds=1) as ds:
            release(gate)
            gate = -1
            end = time.monotonic() + 30
            while proc.poll() is None and time.monotonic() < end:
                n += t.write_parquet(ds, timeout=0.1)
            t.stop()
            while not t.drained:
                n += t.write_parquet(ds, timeout=0.0)
            t.close()
            s = ds.close(t.stats())
    finally:
        if gate >= 0:
            os.close(gate)
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)
    assert proc.returncode == 0
    assert n == s["rows"] == 30
    # About 3 s of ticks in files of at most 1 s: at least 3 files.
    assert s["files"] >= 3, s
    ticks = []
    for f in s["paths"]:
        ticks += [c.split(b"\n")[0] for c in pq.read_table(f).column("payload.content").to_pylist()]
        md = pq.read_metadata(f).metadata
        assert json.loads(md[b"tracer_ebpf.stats"])["records"] >= 1
    assert sorted(ticks) == sorted(f"tick{i}".encode() for i in range(30))


# -- bad options ---------------------------------------------------------------------------

@pytest.mark.parametrize("kw, exc, message", [
    (dict(max_file_bytes=-1), ConfigError, "max_file_bytes must be from 65536 to"),
    (dict(max_file_bytes=1 << 41), ConfigError, "max_file_bytes must be from 65536 to"),
    (dict(max_file_seconds=0), ConfigError, "max_file_seconds must be from 1 to 3600"),
    (dict(max_file_seconds=float("nan")), ConfigError, "max_file_seconds must be from 1 to 3600"),
    (dict(row_group_bytes=-5), ConfigError, "row_group_bytes must be from"),
    (dict(max_open_files=0), ConfigError, "max_open_files must be from 1 to 4096"),
    (dict(zstd_level=0), ConfigError, "zstd_level must be from 1 to 22"),
    (dict(host="a/b"), ConfigError, "'/' is not allowed"),
    (dict(host=".hidden"), ConfigError, "starts with '.' or '_'"),
    (dict(host=""), ConfigError, "it is empty"),
    (dict(max_file_bytes="1M"), TypeError, "max_file_bytes must be an int"),
])
def test_bad_options_are_clear_errors_and_create_nothing(tmp_path, kw, exc, message):
    d = tmp_path / "new" / "ds"
    with pytest.raises(exc, match=message.replace("(", r"\(").replace(".", r"\.")):
        ParquetDataset(str(d), **kw)
    assert os.listdir(tmp_path) == []


def test_a_directory_that_cannot_be_written_is_an_error_and_creates_nothing(tmp_path):
    f = tmp_path / "file"
    f.write_text("not a directory")
    with pytest.raises(TracerError, match="Not a directory|not a directory"):
        ParquetDataset(str(f / "sub" / "ds"), host="x")
    d = tmp_path / "ds"
    d.mkdir()
    (d / "host=x").write_text("a file where the host directory goes")
    with pytest.raises(TracerError, match="is not a directory"):
        ParquetDataset(str(d), host="x")
    assert sorted(os.listdir(tmp_path)) == ["ds", "file"] and os.listdir(d) == ["host=x"]
    # A directory the dataset cannot write into (a read-only file system).
    with pytest.raises(DatasetError, match="cannot write in the dataset directory|cannot create the dataset directory"):
        ParquetDataset("/proc/sys/tracer-ebpf-test", host="x")


@pytest.mark.parametrize("args, message", [
    (["--host", "a/b"], "'/' is not allowed"),
    (["--max-file-bytes", "-1"], "argument --max-file-bytes"),
    (["--max-file-seconds", "0"], "argument --max-file-seconds: must be from 1 to 3600"),
])
def test_cli_bad_parquet_options_exit_2_and_create_nothing(tracer_example, tmp_path, args, message):
    d = tmp_path / "ds"
    r = subprocess.run([tracer_example, "--events", WRITE, "--duration", "1", "--parquet", str(d), *args],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2, r.stderr
    assert message in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert not d.exists()


def test_cli_parquet_options_need_parquet(tracer_example):
    r = subprocess.run([tracer_example, "--host", "a", "--duration", "1"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "--host needs --parquet DIR" in r.stderr, r.stderr


# -- the CLI: stop signals complete every file -------------------------------------------

@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_cli_stop_signal_completes_every_file(tracer_example, tmp_path, sig):
    d = str(tmp_path / "ds")
    p = subprocess.Popen([tracer_example, "--events", WRITE, "--parquet", d, "--host", "s", "--",
                          "sh", "-c", "while :; do echo tick; sleep 0.01; done"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        assert p.stderr is not None
        line = readline_within(p.stderr, 30)
        assert line.startswith("tracer-example: tracing"), line
        deadline = time.monotonic() + 30
        while not temp_files(d) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert temp_files(d), "no file was being written"
        p.send_signal(sig)
        _, err = p.communicate(timeout=30)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert "Traceback" not in err, err
    assert temp_files(d) == []
    files = parquet_files(d)
    rows = sum(pq.read_table(f).num_rows for f in files)
    assert files and rows > 0
    assert f"parquet: {len(files)} file(s), {rows} rows" in err, err
    (side,) = glob.glob(f"{d}/host=s/_tracer_ebpf-*.json")
    meta = json.loads(Path(side).read_text())
    assert meta["complete"] is True and meta["rows"] == rows and meta["stats"]["delivered"] == rows


# -- the Rust example ------------------------------------------------------------------------

RUST_WRITER = r"""
import os, time
with open("/proc/self/comm", "w") as f:
    f.write("tbrustpq")
time.sleep(1.0)                            # the example attaches meanwhile
for i in range(20):
    os.write(1, b"line %d\xff\n" % i)
"""


def test_rust_example_writes_a_dataset(rust_example, tmp_path):
    d = str(tmp_path / "ds")
    w = subprocess.Popen([PY, "-c", RUST_WRITER], stdout=subprocess.DEVNULL)
    try:
        r = subprocess.run([rust_example, "--events", WRITE, "--comm", "tbrustpq", "--parquet", d, "--host", "r",
                            "--duration", "3"], capture_output=True, text=True, timeout=60)
    finally:
        w.wait(timeout=30)
    assert r.returncode == 0, r.stderr
    assert r.stdout == ""
    files = parquet_files(d)
    rows = [row for f in files for row in pq.read_table(f).to_pylist()]
    assert sorted(row["payload.content"] for row in rows) == sorted(b"line %d\xff\n" % i for i in range(20))
    assert f"example: parquet: {len(files)} files, 20 rows" in r.stderr, r.stderr
    md = pq.read_metadata(files[0]).metadata
    assert json.loads(md[b"tracer_ebpf.stats"])["delivered"] == 20
    r = subprocess.run([rust_example, "--parquet", d, "--host", "a/b", "--duration", "1"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "'/' is not allowed" in r.stderr, r.stderr


# -- a full disk ---------------------------------------------------------------------------

@pytest.fixture
def small_fs(tmp_path):
    """A 1 MiB tmpfs, unmounted afterwards."""
    d = tmp_path / "small"
    d.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m,mode=0700", "tbtest", str(d)],
                       capture_output=True, text=True, timeout=30)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip()}")
    try:
        yield d
    finally:
        subprocess.run(["umount", "-l", str(d)], timeout=30)


def test_cli_full_disk_is_one_line_exit_1_and_stops_the_command(tracer_example, small_fs):
    d = str(small_fs / "ds")
    r = subprocess.run([tracer_example, "-q", "--events", WRITE, "--parquet", d, "--host", "f",
                        "--max-file-bytes", "256K", "--", PY, "-c", KILL_WRITER],
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, timeout=120)
    assert r.returncode == 1, r.stderr
    assert "Traceback" not in r.stderr, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("tracer-example: error: cannot write the Parquet dataset: ")
    assert "No space left on device" in lines[0] and lines[0].endswith("; stopping the command"), lines[0]
    # What was completed before the disk filled is whole; nothing partial is visible.
    for f in parquet_files(d):
        assert pq.read_table(f).num_rows == pq.read_metadata(f).num_rows > 0
    assert temp_files(d) == []


# -- threads -------------------------------------------------------------------------------

def test_closing_a_dataset_while_another_thread_writes_it(tmp_path):
    import threading

    from tracer_ebpf import TracerClosedError

    ended = []
    with tracer_ebpf.Tracer(WRITE, all_fds=True) as t:
        ds = ParquetDataset(str(tmp_path / "ds"), host="c")

        def writer():
            deadline = time.monotonic() + 30
            try:
                while time.monotonic() < deadline:
                    t.write_parquet(ds, timeout=0.01)
            except TracerClosedError as e:
                ended.append(str(e))

        th = threading.Thread(target=writer, daemon=True)
        th.start()
        time.sleep(0.5)
        for _ in range(20):
            with open(os.devnull, "wb") as f:
                f.write(b"x")
        s = ds.close()
        th.join(timeout=20)
        assert not th.is_alive(), "the writing thread hung"
    assert ended == ["I/O operation on a closed dataset"]
    assert s["rows"] == sum(pq.read_metadata(f).num_rows for f in s["paths"])
    assert ds.close() == s  # idempotent
