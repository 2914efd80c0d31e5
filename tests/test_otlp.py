"""Issue 17: live export as OTLP logs, against real receivers of both
protocols (tests/otlp_receiver.py: grpcio's LogsService and an HTTP/protobuf
server), on the real kernel.

Every record is checked against the JSON line of the same event (a second
tracer on the same workload): exact bodies and attributes for writes with
binary content, 1 MiB and cut 2 MiB contents, exec argv that is not UTF-8,
a comm that is not UTF-8, exit codes. Delivery: a receiver absent at start
(delivered once it is up), killed and restarted mid-stream (every event
delivered exactly once: the tracer_ebpf.seq numbers), slow (the exporter's
memory stays within its bound, what does not fit is counted), refusing
(counted as failed), asking to retry later (Retry-After honoured). Bad
settings are clear errors, from Python and from tracer-example.
"""

import base64
import json
import os
import select
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

import tracer_ebpf
from tracer_ebpf import events as catalogue
from conftest import PY, gated_process

pytestmark = pytest.mark.timeout(180)
pytest.importorskip("grpc", reason="pip install grpcio opentelemetry-proto")
pb = pytest.importorskip("opentelemetry.proto.collector.logs.v1.logs_service_pb2",
                         reason="pip install grpcio opentelemetry-proto")

HERE = Path(__file__).resolve().parent
WRITE = "syscalls/sys_enter_write"
EXEC = "sched/sched_process_exec"
EXIT = "sched/sched_process_exit"
OPENAT = "syscalls/sys_enter_openat"
OPENAT_EXIT = "syscalls/sys_exit_openat"
MIB = 1 << 20
PROTOCOLS = ["grpc", "http"]


# -- the receiver ----------------------------------------------------------------------

class Receiver:
    """tests/otlp_receiver.py in its own process (so that it can be killed)."""

    def __init__(self, protocol, out, port=0, *options):
        self.protocol, self.out, self.options = protocol, Path(out), options
        self.proc = subprocess.Popen([PY, str(HERE / "otlp_receiver.py"), protocol, str(port), str(out), *options],
                                     stdout=subprocess.PIPE, text=True)
        ready, _, _ = select.select([self.proc.stdout], [], [], 20)
        line = self.proc.stdout.readline() if ready else ""
        if not line.startswith("PORT "):
            self.kill()
            pytest.fail(f"the {protocol} receiver did not start: {line!r}")
        self.port = int(line.split()[1])

    @property
    def endpoint(self):
        return f"http://127.0.0.1:{self.port}"

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=10)

    def lines(self):
        if not self.out.exists():
            return []
        with open(self.out) as f:
            return [json.loads(ln) for ln in f if ln.endswith("\n")]

    def requests(self):
        """The decoded requests it took (refused ones left out)."""
        return [pb.ExportLogsServiceRequest.FromString(base64.b64decode(ln["request"]))
                for ln in self.lines() if ln["request"] is not None]

    def records(self):
        """Every LogRecord taken, in order of arrival."""
        return [r for req in self.requests() for rl in req.resource_logs for sl in rl.scope_logs for r in sl.log_records]


@pytest.fixture
def receivers(tmp_path):
    started = []

    def start(protocol, *options, port=0, name="received.jsonl"):
        r = Receiver(protocol, tmp_path / name, port, *options)
        started.append(r)
        return r

    yield start
    for r in started:
        r.kill()


def exporter_for(protocol, endpoint, **kw):
    return tracer_ebpf.OtlpExporter(endpoint, protocol="grpc" if protocol == "grpc" else "http/protobuf", **kw)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- reading records ---------------------------------------------------------------------

def any_value(v):
    """An AnyValue as Python: int, str, bytes, bool, list, dict; None if empty."""
    kind = v.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        return [any_value(x) for x in v.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: any_value(kv.value) for kv in v.kvlist_value.values}
    return getattr(v, kind)


def attrs(r):
    out = {}
    for kv in r.attributes:
        assert kv.key not in out, f"attribute {kv.key} twice"
        out[kv.key] = any_value(kv.value)
    return out


def seq(r):
    return attrs(r)["tracer_ebpf.seq"]


def exact(p, name):
    """The exact bytes of a JSON string field (its _base64 when not UTF-8)."""
    if name + "_base64" in p:
        return base64.b64decode(p[name + "_base64"])
    return None if p[name] is None else p[name].encode()


def text_value(p, name):
    """What the record holds for a char[] field: str if UTF-8, else the bytes."""
    if p[name] is None:
        return None
    return exact(p, name) if name + "_base64" in p else p[name]


def check_record(r, line):
    """The LogRecord `r` holds exactly what the JSON line of the same event
    (from another tracer) holds, as docs/otlp.md maps it."""
    d = json.loads(line)
    p = d["payload"]
    a = attrs(r)
    assert r.event_name == d["event_type"]
    assert abs(r.time_unix_nano - d["timestamp_ns"]) < 100_000_000  # the same kernel event, seen by two programs
    assert d["timestamp_ns"] - 100_000_000 < r.time_unix_nano <= r.observed_time_unix_nano
    assert a["process.pid"] == d["pid"] and a["thread.id"] == d["tid"] and a["process.parent_pid"] == d["ppid"]
    assert a["tracer_ebpf.upid"] == d["upid"] and a["tracer_ebpf.uppid"] == d["uppid"]
    comm = base64.b64decode(d["comm_base64"]) if "comm_base64" in d else d["comm"].encode()
    assert a["process.executable.name"] == comm.decode(errors="replace")
    assert a.get("tracer_ebpf.comm_bytes") == (comm if "comm_base64" in d else None)
    fields = catalogue.CATALOGUE[d["event_type"]][2]
    write_like = any(kind == "u8[]" for _, kind in fields)
    body = any_value(r.body) if r.HasField("body") else None
    expected_attrs = set()
    for f, kind in fields:
        for suffix in ("_truncated", "_size", "_lost"):
            key = f"tracer_ebpf.payload.{f}{suffix}"
            if f + suffix in p:
                expected_attrs.add(key)
                assert a[key] == p[f + suffix], key
            else:
                assert key not in a, key
        if kind == "u8[]":
            assert body == exact(p, f), f
            continue
        if kind == "char[]":
            value = text_value(p, f)
        elif kind == "char[][]":
            value = None if p[f] is None else [utf8_or_bytes(b) for b in exact_list(p, f)]
        else:
            value = p[f]
        if write_like:
            key = f"tracer_ebpf.payload.{f}"
            expected_attrs.add(key)
            assert a[key] == value, key
            if f + "_name" in p:
                expected_attrs.add(key + "_name")
                assert a[key + "_name"] == p[f + "_name"], key
        else:
            assert f in body and body[f] == value, f
            assert body.get(f + "_name") == p.get(f + "_name"), f
    if not write_like:
        assert set(body) == {f for f, _ in fields} | {f + "_name" for f, _ in fields if f + "_name" in p}
    # Semantic conventions beyond the header.
    if d["event_type"] == EXEC:
        expected_attrs |= {"process.args_count", "process.command_args"}
        assert a["process.args_count"] == p["argc"]
        assert a["process.command_args"] == [b.decode(errors="replace") for b in exact_list(p, "argv")]
        expected_attrs.add("process.real_user.id")
        assert a["process.real_user.id"] == p["uid"]
        if p["cwd"] is not None and not p.get("cwd_truncated"):  # only a whole path is a directory
            expected_attrs.add("process.working_directory")
            assert a["process.working_directory"] == exact(p, "cwd").decode(errors="replace")
    if d["event_type"] == EXIT and p["signal"] == 0:
        expected_attrs.add("process.exit.code")
        assert a["process.exit.code"] == p["exit_status"]
    common = {"process.pid", "thread.id", "process.parent_pid", "process.executable.name", "tracer_ebpf.upid",
              "tracer_ebpf.uppid", "tracer_ebpf.event_id", "tracer_ebpf.cpu", "tracer_ebpf.seq"}
    if "comm_base64" in d:
        common.add("tracer_ebpf.comm_bytes")
    # The task's context, as in the JSON line (docs/context.md).
    common.add("tracer_ebpf.cgroup_id")
    assert a["tracer_ebpf.cgroup_id"] == d["cgroup_id"]
    for key, attr in (("cgroup", "tracer_ebpf.cgroup"), ("container_id", "container.id"),
                      ("container_runtime", "container.runtime"), ("pod_uid", "k8s.pod.uid")):
        if d.get(key) is not None:
            common.add(attr)
            assert a[attr] == d[key], key
    if (d["ns_pid"], d["ns_tid"]) != (d["pid"], d["tid"]):
        common |= {"tracer_ebpf.ns_pid", "tracer_ebpf.ns_tid"}
        assert (a["tracer_ebpf.ns_pid"], a["tracer_ebpf.ns_tid"]) == (d["ns_pid"], d["ns_tid"])
    assert set(a) == common | expected_attrs, d["event_type"]


def exact_list(p, name):
    """The exact strings of a char[][] JSON field."""
    if name + "_base64" in p:
        return [base64.b64decode(b) for b in p[name + "_base64"]]
    return [s.encode() for s in p[name]]


def utf8_or_bytes(b):
    try:
        return b.decode()
    except UnicodeDecodeError:
        return b


# -- running a workload ------------------------------------------------------------------

def export_workload(code, events, ex, also_json=False, export_timeout=0.05, **kw):
    """Runs `code` in a child traced by pid, its events handed to `ex`
    (Tracer.export) and, with also_json, seen as JSON lines by a second
    tracer. Returns (JSON lines, the exporting tracer's stats, returncode)."""
    with gated_process([PY, "-c", code], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) as (proc, go):
        with tracer_ebpf.Tracer(events, pids=proc.pid, **kw) as t:
            other = tracer_ebpf.Tracer(events, pids=proc.pid, **kw) if also_json else None
            try:
                go()
                deadline = time.monotonic() + 60
                while proc.poll() is None and time.monotonic() < deadline:
                    t.export(ex, export_timeout)
                proc.wait(timeout=10)
                time.sleep(0.2)
                t.stop()
                while not t.drained:
                    t.export(ex, 0.0)
                stats = t.stats()
                lines = []
                if other is not None:
                    other.stop()
                    while not other.drained:
                        data, _ = other.read_json(0.0)
                        lines += data.decode().splitlines()
            finally:
                if other is not None:
                    other.close()
    return lines, stats, proc.returncode


# Everything the byte-exact promise covers: NUL and invalid UTF-8 in a
# write, 1 MiB (whole) and 2 MiB (cut) contents, a path that is not UTF-8,
# a comm that is not UTF-8, a failed open (errno name), argv strings that
# are not UTF-8 and empty, an exit code. Contents are written from heap
# copies (BPF cannot read pages not yet mapped).
WORKLOAD = f"""
import ctypes, os
ctypes.CDLL(None).prctl(15, b"tb\\xffotlp", 0, 0, 0)
os.write(1, bytearray(b"a\\x00\\xff\\xfe\\n"))
os.write(2, bytearray(bytes(range(256)) * 4096))
os.write(1, bytearray(b"z" * (2 * {MIB})))
try:
    os.open(b"/nonexistent/tb\\xffx", os.O_RDONLY)
except OSError:
    pass
pid = os.fork()
if pid == 0:
    os.execv(b"/bin/sh", [b"sh", b"-c", b"exit 7", b"x\\xffy", b""])
os.waitpid(pid, 0)
"""


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("compression", ["none", "gzip"])
def test_records_hold_exactly_what_the_json_lines_hold(receivers, protocol, compression):
    rx = receivers(protocol)
    ex = exporter_for(protocol, rx.endpoint, compression=compression, headers={"x-test": "t 1"},
                      service_name="otlp-test", resource_attributes={"deployment.environment.name": "ci"})
    lines, _, rc = export_workload(WORKLOAD, [WRITE, EXEC, EXIT, OPENAT, OPENAT_EXIT], ex, also_json=True,
                                   follow_children=True)
    assert rc == 0
    final = ex.close(10)
    records = rx.records()
    assert final["exported"] == final["export_records"] == len(records) == len(lines), final
    assert final["export_failed"] == final["export_dropped"] == 0
    kinds = [json.loads(ln)["event_type"] for ln in lines]
    assert kinds.count(WRITE) == 3 and kinds.count(EXEC) == 2 and kinds.count(EXIT) == 2  # python's exec, sh's
    for r, line in zip(records, lines):
        check_record(r, line)
    assert sorted(seq(r) for r in records) == list(range(1, len(records) + 1))
    by_kind = {}
    for r in records:
        by_kind.setdefault(r.event_name, []).append(r)
    # The spot checks a reader of docs/otlp.md would make.
    w = by_kind[WRITE]
    assert [any_value(x.body)[:5] for x in w] == [b"a\x00\xff\xfe\n", bytes(range(5)), b"zzzzz"]
    assert any_value(w[1].body) == bytes(range(256)) * 4096  # 1 MiB, whole
    assert len(any_value(w[2].body)) == MIB
    assert attrs(w[2])["tracer_ebpf.payload.content_truncated"] is True
    assert attrs(w[2])["tracer_ebpf.payload.content_size"] == 2 * MIB
    assert attrs(w[0])["process.executable.name"] == "tb\ufffdotlp"
    assert attrs(w[0])["tracer_ebpf.comm_bytes"] == b"tb\xffotlp"
    e = by_kind[EXEC][1]
    assert any_value(e.body)["argv"] == ["sh", "-c", "exit 7", b"x\xffy", ""]
    assert attrs(e)["process.command_args"] == ["sh", "-c", "exit 7", "x\ufffdy", ""]
    assert [attrs(x).get("process.exit.code") for x in by_kind[EXIT]] == [7, 0]
    opened = [any_value(x.body) for x in by_kind[OPENAT] if any_value(x.body)["filename"] == b"/nonexistent/tb\xffx"]
    assert len(opened) == 1 and opened[0]["flags_name"].startswith("O_RDONLY"), opened
    assert {"ret": -2, "ret_name": "ENOENT"} in [any_value(x.body) for x in by_kind[OPENAT_EXIT]]
    # Resource, scope, headers, compression.
    req = rx.requests()[0]
    res = {kv.key: any_value(kv.value) for kv in req.resource_logs[0].resource.attributes}
    assert res["service.name"] == "otlp-test" and res["deployment.environment.name"] == "ci"
    assert res["host.name"] == os.uname().nodename
    if os.path.exists("/etc/machine-id"):
        assert res["host.id"] == open("/etc/machine-id").read().strip()
    assert res["service.instance.id"] == res["tracer_ebpf.source"] == ex.source
    scope = req.resource_logs[0].scope_logs[0].scope
    assert (scope.name, scope.version) == ("tracer-ebpf", tracer_ebpf.__version__)
    for ln in rx.lines():
        assert ln["status"] in (200, "OK")
        assert ln["headers"]["x-test"] == "t 1"
        assert ln["headers"]["user-agent"].startswith("tracer-ebpf/")
        assert ln["size"] <= 4 * MIB
        if protocol == "http":
            assert ln["gzip"] == (compression == "gzip")
            assert ln["path"] == "/v1/logs"


def test_exit_codes_and_signals(receivers):
    rx = receivers("http")
    ex = exporter_for("http", rx.endpoint)
    code = ("import os, signal\n"
            "for script in (b'exit 0', b'exit 3', b'kill -9 $$', b'kill -TERM $$'):\n"
            "    pid = os.fork()\n"
            "    if pid == 0:\n"
            "        os.execv(b'/bin/sh', [b'sh', b'-c', script])\n"
            "    os.waitpid(pid, 0)\n")
    export_workload(code, [EXIT], ex, follow_children=True)
    ex.close(10)
    exits = [r for r in rx.records() if attrs(r)["process.executable.name"] == "sh"]
    got = [(attrs(r).get("process.exit.code"), any_value(r.body)["signal"], any_value(r.body).get("signal_name"))
           for r in exits]
    assert got == [(0, 0, None), (3, 0, None), (None, 9, "SIGKILL"), (None, 15, "SIGTERM")]


# -- delivery ------------------------------------------------------------------------------

# Writes "line <i>\n" every few ms for `seconds`: each event's body says
# which write it is.
STEADY = """
import os, sys, time
end = time.monotonic() + float(sys.argv[1])
i = 0
while time.monotonic() < end:
    os.write(1, bytearray(b"line %d\\n" % i))
    i += 1
    time.sleep(0.003)
"""


def steady(seconds):
    return STEADY.replace("float(sys.argv[1])", repr(float(seconds)))


def check_each_once(records, final):
    """Every record handed over arrived exactly once, in write order, or
    was counted: the seq numbers and the bodies say so."""
    seqs = [seq(r) for r in records]
    assert len(seqs) == len(set(seqs)), "a record arrived twice"
    assert final["exported"] == len(records)
    assert final["export_records"] == final["exported"] + final["export_failed"] + final["export_dropped"], final
    assert set(seqs) <= set(range(1, final["export_records"] + 1))
    bodies = [any_value(r.body) for r in sorted(records, key=seq)]
    numbers = [int(b.split()[1]) for b in bodies]
    assert numbers == sorted(numbers), "records out of write order"


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_receiver_absent_at_start_then_started(receivers, protocol):
    port = free_port()
    ex = exporter_for(protocol, f"http://127.0.0.1:{port}")
    with gated_process([PY, "-c", steady(1.0)], stdout=subprocess.DEVNULL) as (proc, go):
        with tracer_ebpf.Tracer(WRITE, pids=proc.pid) as t:
            go()
            while proc.poll() is None:
                t.export(ex, 0.05)
            proc.wait(timeout=10)
            time.sleep(0.2)
            t.stop()
            while not t.drained:
                t.export(ex, 0.0)
    time.sleep(0.5)
    before = ex.stats()
    assert before["exported"] == 0 and before["export_retries"] > 0, before
    assert "refused" in (ex.last_error or "").lower() or "connect" in (ex.last_error or "").lower(), ex.last_error
    rx = receivers(protocol, port=port)
    assert ex.flush(20), ex.stats()
    final = ex.close(5)
    records = rx.records()
    check_each_once(records, final)
    assert final["exported"] == final["export_records"] > 100, final


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_receiver_absent_for_good_is_counted_at_close(protocol):
    ex = exporter_for(protocol, f"http://127.0.0.1:{free_port()}")
    export_workload(steady(0.3), WRITE, ex)
    started = time.monotonic()
    final = ex.close(1.0)
    assert time.monotonic() - started < 3, "close() kept to its time"
    assert final["export_records"] > 10
    assert final["exported"] == 0 and final["export_dropped"] == final["export_records"], final
    assert final["export_buffered"] == 0
    with pytest.raises(tracer_ebpf.ExporterClosedError):
        ex.export([])


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_receiver_killed_and_restarted_mid_stream(receivers, protocol):
    rx = receivers(protocol)
    port = rx.port
    ex = exporter_for(protocol, rx.endpoint)
    with gated_process([PY, "-c", steady(3.0)], stdout=subprocess.DEVNULL) as (proc, go):
        with tracer_ebpf.Tracer(WRITE, pids=proc.pid) as t:
            go()
            started = time.monotonic()
            phase = "before"
            first = second = rx
            while proc.poll() is None:
                t.export(ex, 0.02)
                now = time.monotonic()
                if phase == "before" and now - started > 0.8:
                    # Kill it between two requests (batches leave every
                    # 100 ms at this rate): just after one was recorded.
                    n = len(first.lines())
                    while len(first.lines()) == n and time.monotonic() - now < 10:
                        t.export(ex, 0.005)
                    time.sleep(0.03)
                    first.kill()
                    killed_at, phase = time.monotonic(), "down"
                elif phase == "down" and now - killed_at > 0.8:
                    second = receivers(protocol, port=port, name="after.jsonl")
                    phase = "up"
            proc.wait(timeout=10)
            time.sleep(0.2)
            t.stop()
            while not t.drained:
                t.export(ex, 0.0)
    assert phase == "up"
    assert ex.flush(20), ex.stats()
    final = ex.close(5)
    records = first.records() + second.records()
    assert first.records() and second.records()
    check_each_once(records, final)
    assert final["exported"] == final["export_records"], final  # nothing lost: it was retried
    assert final["export_retries"] > 0


def rss_kib(field):
    with open("/proc/self/status") as f:
        for ln in f:
            if ln.startswith(field + ":"):
                return int(ln.split()[1])
    raise AssertionError(field)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_slow_receiver_memory_stays_within_the_bound(receivers, protocol):
    rx = receivers(protocol, "--delay", "0.3")
    bound = 4 * MIB
    ex = exporter_for(protocol, rx.endpoint, buffer_bytes=bound)
    # 5000 writes of 64 KiB: 312 MiB of content, far more than the bound,
    # paced so that the tracer captures them whole (the content must flow
    # through the exporter for the bound to mean something).
    code = ("import os, time\nb = bytearray(os.urandom(65536))\nfor i in range(5000):\n"
            "    os.write(1, b)\n    time.sleep(0.0005)\n")
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # resets VmHWM: the peak from here on
    base = rss_kib("VmRSS")
    _, stats, _ = export_workload(code, WRITE, ex, export_timeout=0.01, queue_bytes=16 * MIB,
                                  payload_bytes_per_cpu=4 * MIB)
    peak = rss_kib("VmHWM")
    live = ex.stats()
    final = ex.close(1.0)
    assert stats["delivered"] == 5000 and stats["payload_full"] < 100, stats
    assert final["export_records"] == stats["delivered"]
    assert live["export_buffer_peak_bytes"] <= bound, live
    assert final["export_dropped"] > 0, final
    assert final["export_records"] == final["exported"] + final["export_failed"] + final["export_dropped"]
    records = rx.records()
    assert final["exported"] == len(records)
    assert len({seq(r) for r in records}) == len(records)
    # Each record holds its whole content or, if the payload area was full
    # when it was written (counted above), says so and has no body.
    lost = [r for r in records if not r.HasField("body")]
    assert all(attrs(r)["tracer_ebpf.payload.content_lost"] == "payload_full" for r in lost)
    assert len(lost) <= stats["payload_full"], (len(lost), stats)
    assert all(len(any_value(r.body)) == 65536 for r in records if r.HasField("body"))
    # The process grew by far less than what went through it (312 MiB): the
    # exporter's bound, the tracer's 16 MiB queue, reader blocks and
    # payload area, slack.
    assert (peak - base) * 1024 < 150 * MIB, f"peak RSS grew by {(peak - base) // 1024} MiB"


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_refused_records_are_counted_as_failed(receivers, protocol):
    rx = receivers(protocol, "--refuse")
    ex = exporter_for(protocol, rx.endpoint)
    export_workload(steady(0.3), WRITE, ex)
    final = ex.close(10)
    assert final["export_records"] > 10
    assert final["export_failed"] == final["export_records"] and final["exported"] == 0, final
    assert final["export_retries"] == 0
    assert "refused by the test receiver" in ex.last_error
    assert ("InvalidArgument" if protocol == "grpc" else "HTTP 400") in ex.last_error


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_partial_success_rejections_are_counted(receivers, protocol):
    rx = receivers(protocol, "--reject", "1")
    ex = exporter_for(protocol, rx.endpoint)
    export_workload(steady(0.3), WRITE, ex)
    final = ex.close(10)
    requests = len(rx.requests())
    assert final["export_failed"] == requests and final["exported"] == final["export_records"] - requests, final
    assert "rejected by the test receiver" in ex.last_error


def test_retry_after_is_honoured(receivers):
    rx = receivers("http", "--unavailable", "1", "--retry-after", "2")
    ex = exporter_for("http", rx.endpoint)
    export_workload(steady(0.2), WRITE, ex)
    assert ex.flush(20), ex.stats()
    final = ex.close(5)
    assert final["export_retries"] == 1 and final["exported"] == final["export_records"], final
    answers = rx.lines()
    assert [a["status"] for a in answers[:2]] == [503, 200]
    assert answers[1]["t"] - answers[0]["t"] > 1.9, "sent again before Retry-After: 2 was up"
    assert answers[1]["request"] and rx.records()[0].event_name == WRITE
    assert "503" in ex.last_error


def test_unavailable_grpc_is_retried(receivers):
    rx = receivers("grpc", "--unavailable", "2")
    ex = exporter_for("grpc", rx.endpoint)
    export_workload(steady(0.2), WRITE, ex)
    assert ex.flush(20), ex.stats()
    final = ex.close(5)
    assert final["export_retries"] == 2 and final["exported"] == final["export_records"], final
    check_each_once(rx.records(), final)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_batches_stay_under_4_mib(receivers, protocol):
    """Ten 1 MiB writes: several requests, each under the Collector's (and
    grpcio's) default 4 MiB limit; all delivered."""
    rx = receivers(protocol)
    ex = exporter_for(protocol, rx.endpoint)
    code = "import os\nb = bytearray(os.urandom(1 << 20))\nfor i in range(10):\n    os.write(1, b)\n"
    _, stats, _ = export_workload(code, WRITE, ex)
    final = ex.close(20)
    assert stats["delivered"] == 10 and final["exported"] == 10, final
    sizes = [ln["size"] for ln in rx.lines()]
    assert len(sizes) >= 3 and max(sizes) <= 4 * MIB, sizes
    bodies = [any_value(r.body) for r in rx.records()]
    assert all(len(b) == MIB for b in bodies) and len(set(bodies)) == 1


# -- TLS ---------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tls_files(tmp_path_factory):
    """A CA and a server certificate it signed for 127.0.0.1 (openssl)."""
    d = tmp_path_factory.mktemp("tls")

    def openssl(*args):
        subprocess.run(["openssl", *args], cwd=d, check=True, capture_output=True, timeout=60)

    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
            "-subj", "/CN=tracer-ebpf test CA")
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr",
            "-subj", "/CN=127.0.0.1")
    (d / "ext.cnf").write_text("subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n"
                               "keyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n")
    openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
            "-out", "server.pem", "-days", "2", "-extfile", "ext.cnf")
    return d


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_tls_with_a_given_ca(receivers, tls_files, protocol):
    rx = receivers(protocol, "--tls", str(tls_files / "server.pem"), str(tls_files / "server.key"))
    https = f"https://127.0.0.1:{rx.port}"
    ex = exporter_for(protocol, https, certificate=tls_files / "ca.pem")
    export_workload(steady(0.2), WRITE, ex)
    final = ex.close(10)
    assert final["exported"] == final["export_records"] > 10, (final, ex.last_error)
    check_each_once(rx.records(), final)
    # The system's roots do not know the test CA: nothing is sent, the
    # error says why, and every record is counted.
    untrusting = exporter_for(protocol, https)
    export_workload(steady(0.2), WRITE, untrusting)
    final = untrusting.close(1.0)
    assert final["exported"] == 0 and final["export_dropped"] == final["export_records"] > 10, final
    assert "certificate" in (untrusting.last_error or "").lower(), untrusting.last_error


# -- configuration ---------------------------------------------------------------------------

def test_bad_settings_are_clear_errors(monkeypatch, tmp_path):
    with pytest.raises(tracer_ebpf.ConfigError, match=r"invalid OTLP setting protocol: \"grcp\" is not a protocol"):
        tracer_ebpf.OtlpExporter(protocol="grcp")
    with pytest.raises(tracer_ebpf.ConfigError, match="header name"):
        tracer_ebpf.OtlpExporter(headers={"bad header": "x"})
    with pytest.raises(tracer_ebpf.ConfigError, match="not a URL"):
        tracer_ebpf.OtlpExporter("localhost:4318")
    with pytest.raises(tracer_ebpf.ConfigError, match="buffer_bytes"):
        tracer_ebpf.OtlpExporter(buffer_bytes=1000)
    with pytest.raises(TypeError, match="headers"):
        tracer_ebpf.OtlpExporter(headers="a=b")  # type: ignore[arg-type]
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", "a=1,novalue")
    with pytest.raises(tracer_ebpf.ConfigError, match=r"OTEL_EXPORTER_OTLP_HEADERS: item 2 \(\"novalue\"\) is not key=value"):
        tracer_ebpf.OtlpExporter()
    tracer_ebpf.OtlpExporter(headers={"a": "1"}).close(0)  # an option replaces the variable
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_HEADERS")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_LOGS_PROTOCOL", "http/json")
    with pytest.raises(tracer_ebpf.ConfigError, match="OTEL_EXPORTER_OTLP_LOGS_PROTOCOL: http/json is not supported"):
        tracer_ebpf.OtlpExporter()
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_LOGS_PROTOCOL", "grpc")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "https://collector.example:4317")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_CERTIFICATE", str(tmp_path / "missing.pem"))
    with pytest.raises(tracer_ebpf.ConfigError, match="OTEL_EXPORTER_OTLP_CERTIFICATE: cannot read"):
        tracer_ebpf.OtlpExporter()
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_CERTIFICATE")
    ex = tracer_ebpf.OtlpExporter()
    assert (ex.protocol, ex.endpoint) == ("grpc", "https://collector.example:4317/")
    ex.close(0)


def test_settings_come_from_the_environment(monkeypatch):
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318/prefix")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_COMPRESSION", "gzip")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_LOGS_TIMEOUT", "2500")
    monkeypatch.setenv("OTEL_SERVICE_NAME", "svc")
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "service.name=ignored,team=a%2Cb")
    with tracer_ebpf.OtlpExporter() as ex:
        assert ex.endpoint == "http://collector:4318/prefix/v1/logs"
        assert (ex.protocol, ex.compression, ex.timeout) == ("http/protobuf", "gzip", 2.5)
        assert ex.resource == {"service.name": "svc", "team": "a,b"}
    assert ex.closed


# -- tracer-example --otlp ----------------------------------------------------------------------

def cli(tracer_example, *args, **kw):
    return subprocess.run([tracer_example, *args], capture_output=True, text=True, timeout=120, **kw)


def summary(stderr):
    line = [ln for ln in stderr.splitlines() if " events in " in ln][-1]
    return {k: int(v) for k, v in (kv.split("=") for kv in line.split("; ", 1)[1].split())}


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_cli_exports_a_command(receivers, tracer_example, protocol):
    rx = receivers(protocol)
    r = cli(tracer_example, "--otlp", rx.endpoint, "--otlp-protocol", "grpc" if protocol == "grpc" else "http/protobuf",
            "--otlp-header", "x-test=cli", "--service-name", "cli-test", "--events", f"{EXEC},{EXIT},{WRITE}",
            "--", "sh", "-c", "echo hello; exit 5")
    assert r.returncode == 5, r.stderr
    assert "Traceback" not in r.stderr
    assert r.stdout == "hello\n"  # the command's own output; no JSON lines
    s = summary(r.stderr)
    assert s["exported"] == s["export_records"] == s["delivered"] > 0 and s["export_dropped"] == 0, s
    records = rx.records()
    assert len(records) == s["exported"]
    writes = [any_value(x.body) for x in records if x.event_name == WRITE]
    assert b"hello\n" in writes
    assert [attrs(x)["process.exit.code"] for x in records if x.event_name == EXIT] == [5]
    assert rx.lines()[0]["headers"]["x-test"] == "cli"
    res = {kv.key: any_value(kv.value) for kv in rx.requests()[0].resource_logs[0].resource.attributes}
    assert res["service.name"] == "cli-test"


def test_cli_flushes_on_sigint_and_sigterm(receivers, tracer_example, tmp_path):
    # A receiver that takes a second to answer: at the signal, the last
    # records are still buffered or on their way, and must be flushed.
    rx = receivers("http", "--delay", "1")
    for sig in (signal.SIGINT, signal.SIGTERM):
        p = subprocess.Popen([tracer_example, "--otlp", rx.endpoint, "--events", EXEC],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        time.sleep(1.5)
        marker = tmp_path / f"marker-{sig}"
        marker.write_text("#!/bin/sh\n")
        marker.chmod(0o755)
        subprocess.run([str(marker)], timeout=10)
        p.send_signal(sig)
        out, err = p.communicate(timeout=30)
        assert p.returncode == 0, err
        assert "Traceback" not in err
        s = summary(err)
        assert s["exported"] == s["export_records"] >= 1 and s["export_dropped"] == 0, s
        execs = [any_value(r.body)["filename"] for r in rx.records()]
        assert str(marker) in execs


def test_cli_receiver_absent_is_bounded_and_counted(tracer_example):
    started = time.monotonic()
    r = cli(tracer_example, "--otlp", f"http://127.0.0.1:{free_port()}", "--drain-seconds", "1",
            "--events", EXEC, "--", "sh", "-c", "true")
    assert time.monotonic() - started < 15
    assert r.returncode == 0, r.stderr
    s = summary(r.stderr)
    assert s["exported"] == 0 and s["export_dropped"] == s["export_records"] >= 1, s
    assert "did not reach the OTLP receiver" in r.stderr and "Connection refused" in r.stderr, r.stderr


@pytest.mark.parametrize("args,env,message", [
    (["--otlp", "--otlp-header", "novalue"], {}, "--otlp-header 'novalue': not KEY=VALUE"),
    (["--otlp", "--otlp-protocol", "grcp"], {}, "argument --otlp-protocol: invalid choice"),
    (["--otlp"], {"OTEL_EXPORTER_OTLP_PROTOCOL": "grcp"}, "invalid OTLP setting OTEL_EXPORTER_OTLP_PROTOCOL"),
    (["--otlp"], {"OTEL_EXPORTER_OTLP_HEADERS": "a"}, "invalid OTLP setting OTEL_EXPORTER_OTLP_HEADERS"),
    (["--otlp", "make"], {}, "put -- before it"),
    (["--otlp-compression", "gzip"], {}, "--otlp-compression needs --otlp"),
    (["--otlp", "-o", "x.jsonl"], {}, "leave out --output"),
])
def test_cli_bad_settings(tracer_example, tmp_path, args, env, message):
    r = cli(tracer_example, *args, env={**os.environ, **env}, cwd=tmp_path)
    assert r.returncode == 2, r.stderr
    assert message in r.stderr
    assert len(r.stderr.splitlines()) == 1 and "Traceback" not in r.stderr
    assert not (tmp_path / "x.jsonl").exists()
