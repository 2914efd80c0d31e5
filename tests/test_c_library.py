"""Issue 6: the C library (c/libbootstrap.a, the Rust core's C ABI) and its C++
example (c/example).

The C example must print, for the same events, exactly the JSON lines of the
Rust reference example (target/release/example) except for event_id and
timestamp_ns, which are per tracer. Every tracer in TRACERS runs at the same
time on the same scripted workload, each filtered to it by comm (or pid), so
they all see the same events. The ASan+UBSan build (make -C c SANITIZE=1)
runs alongside and must stay silent and exit 0.

To compare another front end, add one Tracer(...) line to tracers().
"""

from __future__ import annotations

import base64
import json
import os
import re
import signal
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional

import pytest

from conftest import PY, ROOT

C_EXAMPLE = ROOT / "c" / "example"
C_EXAMPLE_ASAN = ROOT / "c" / ".build" / "asan" / "example"
EVENTS = "syscalls/sys_enter_write"
CONTENT_MAX = 200_000
SANITIZER_MARKERS = ("AddressSanitizer", "LeakSanitizer", "UndefinedBehaviorSanitizer", "runtime error:", "SUMMARY: ")
REFERENCE = "rust"


# --------------------------------------------------------------------------
# Build


def _make(*args: str) -> None:
    r = subprocess.run(["make", "-C", str(ROOT / "c"), *args], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.fail(
            f"`make -C c {' '.join(args)}` failed (exit {r.returncode}); build prerequisites: cargo (Rust) and "
            "apt-get install -y clang llvm libelf-dev zlib1g-dev make gcc g++ pkg-config\n"
            f"--- stdout\n{r.stdout[-4000:]}\n--- stderr\n{r.stderr[-8000:]}"
        )


@pytest.fixture(scope="session")
def c_example() -> str:
    _make()
    assert C_EXAMPLE.exists() and (ROOT / "c" / "libbootstrap.a").exists()
    return str(C_EXAMPLE)


@pytest.fixture(scope="session")
def c_example_asan() -> str:
    _make("SANITIZE=1")
    assert C_EXAMPLE_ASAN.exists()
    return str(C_EXAMPLE_ASAN)


ASAN_ENV = {
    "ASAN_OPTIONS": "detect_leaks=1:abort_on_error=0:halt_on_error=1:exitcode=86",
    "UBSAN_OPTIONS": "print_stacktrace=1:halt_on_error=1",
}


@dataclass
class Tracer:
    """One front end printing JSON lines: argv before the common options."""

    name: str
    argv: List[str]
    env: Dict[str, str] = field(default_factory=dict)
    sanitized: bool = False


@pytest.fixture
def tracers(rust_example, c_example, c_example_asan, tracer_example) -> List[Tracer]:
    return [
        Tracer("rust", [rust_example]),
        Tracer("c", [c_example]),
        Tracer("c-asan", [c_example_asan], env=ASAN_ENV, sanitized=True),
        Tracer("python", [tracer_example]),
    ]


# --------------------------------------------------------------------------
# The workload: one Python process that renames itself (comm with a control
# character, a quote, a backslash and an invalid UTF-8 byte) and writes known
# bytes to stdout, stderr and an fd whose content is not captured.

WORKLOAD = r'''
import ctypes, os, random, sys, time
libc = ctypes.CDLL(None, use_errno=True)
comm = bytes.fromhex(sys.argv[1])
assert libc.prctl(15, comm, 0, 0, 0) == 0   # PR_SET_NAME
w = os.write
w(1, b"hello world\n")
w(1, b"bin:\x00\xff\x01\x02\x1f\x7f\x80\xc3(end")
w(2, "utf8 \u00e9\u20ac\U0001F600 \"quoted\" back\\slash\ttab\r\n\x1b[0m".encode())
# UTF-8 boundaries, valid and not, each alone so each is its own field
for b in [b"\xc2\x80", b"\xdf\xbf", b"\xe0\xa0\x80", b"\xe0\x9f\x80", b"\xed\x9f\xbf",
          b"\xed\xa0\x80", b"\xef\xbf\xbf", b"\xf0\x90\x80\x80", b"\xf0\x8f\xbf\xbf",
          b"\xf4\x8f\xbf\xbf", b"\xf4\x90\x80\x80", b"\xf5\x80\x80\x80", b"\xc0\x80",
          b"\xc1\xbf", b"x\xe2\x82", b"\xe2\x82\xacx\xff"]:
    w(1, b)
w(2, b"")                                   # empty write
libc.write(1, ctypes.c_void_p(16), 64)      # bad pointer: content lost to a fault
null = os.open("/dev/null", os.O_WRONLY)
os.dup2(null, 9)
w(9, b"fd 9 is not a content fd")           # content not captured: null
w(1, bytes(range(256)) * 1200)             # 307200 bytes: cut at content_max
w(2, b"0123456789abcdef" * 9375)           # 150000 bytes: crosses a 256 KiB chunk boundary
rnd = random.Random(6)
w(1, bytes(rnd.getrandbits(8) for _ in range(5000)))
for i in range(200):
    w(1, b"line %d\n" % i)
time.sleep(0.05)   # the producer batches wake-ups: end on a lone, woken record
w(2, b"END\n")
'''
NWRITES = 2 + 1 + 16 + 1 + 1 + 1 + 1 + 1 + 1 + 200 + 1

# Every kind of field: strings, string lists, decode hints (open flags, errno,
# signal), forks followed, a thread, an exec with awkward argv.
RICH_WORKLOAD = r'''
import ctypes, os, sys, threading
libc = ctypes.CDLL(None, use_errno=True)
sys.stdin.buffer.read(1)                   # wait until the tracers are attached
libc.prctl(15, b"tbrich\x01\xff", 0, 0, 0)
w = os.write
w(1, b"rich \x00\xff\n")
try:
    os.open(b"/nonexistent/\xff\x01dir", os.O_RDONLY | os.O_CLOEXEC)
except OSError:
    pass
fd = os.open("/dev/null", os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
z = os.open("/dev/zero", os.O_RDONLY)
os.read(z, 100)
os.writev(1, [b"vec1 ", b"\xffvec2\n"])
os.pwrite(fd, b"pwrite to a non-content fd", 0)
t = threading.Thread(target=lambda: w(2, b"from a thread\n"))
t.start()
t.join()
pid = os.fork()
if pid == 0:
    w(1, b"child\n")
    os._exit(3)
os.waitpid(pid, 0)
pid = os.fork()
if pid == 0:
    os.kill(os.getpid(), 9)
os.waitpid(pid, 0)
os.setgroups([])                           # the exec's uid and gid
os.setresgid(4321, 4321, 4321)
os.setresuid(1234, 1234, 1234)
os.execv(b"/bin/sh", [b"sh", b"-c", b"echo from sh; exit 5", b"a\x01b", "\u00e9\u20ac".encode(), b"",
                      b"\xff\xfe", b'q"uote\\'])
'''
RICH_ARGV = [b"sh", b"-c", b"echo from sh; exit 5", b"a\x01b", "\u00e9\u20ac".encode(), b"", b"\xff\xfe", b'q"uote\\']


def _unique_prefix() -> str:
    return "tb%05x" % ((os.getpid() * 7919 + time.time_ns()) & 0xFFFFF)


# --------------------------------------------------------------------------
# Running tracers side by side


class Running:
    def __init__(self, tracer: Tracer, args: List[str], tmp: Path):
        self.tracer = tracer
        self.out_path = tmp / f"{tracer.name}.out"
        self.out = open(self.out_path, "wb")
        env = dict(os.environ, **tracer.env)
        self.proc = subprocess.Popen(tracer.argv + args, stdout=self.out, stderr=subprocess.PIPE, env=env)
        self.stderr: List[str] = []
        self.ready = threading.Event()
        self.reader = threading.Thread(target=self._read_stderr, daemon=True)
        self.reader.start()

    def _read_stderr(self) -> None:
        for raw in self.proc.stderr:
            line = raw.decode("utf-8", "replace")
            self.stderr.append(line)
            if "tracing" in line:
                self.ready.set()
        self.ready.set()  # exited: do not wait for it

    def finish(self, timeout: float) -> None:
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            pytest.fail(f"{self.tracer.name} did not exit in time; stderr:\n{''.join(self.stderr)}")
        self.reader.join(timeout=10)
        self.out.close()

    @property
    def stderr_text(self) -> str:
        return "".join(self.stderr)

    def lines(self) -> List[bytes]:
        return self.out_path.read_bytes().splitlines()


HEAD = re.compile(rb'^\{"event_id":\d+,(.*?)"timestamp_ns":\d+,')


def normalize(line: bytes) -> bytes:
    """The line without event_id and timestamp_ns, other bytes untouched."""
    m = HEAD.match(line)
    assert m, line[:200]
    return b"{" + m.group(1) + line[m.end():]


def run_side_by_side(tracers: List[Tracer], common: List[str], start_workload, stop_with_signal: bool,
                     deadline: float = 60) -> Dict[str, Running]:
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        running = [Running(t, common, tmp) for t in tracers]
        try:
            for r in running:
                assert r.ready.wait(deadline), f"{r.tracer.name} never attached"
                assert r.proc.poll() is None, f"{r.tracer.name} exited early:\n{r.stderr_text}"
            start_workload()
            time.sleep(0.3)
            if stop_with_signal:
                for r in running:
                    r.proc.send_signal(signal.SIGINT)
            for r in running:
                r.finish(timeout=deadline)
        finally:
            for r in running:
                if r.proc.poll() is None:
                    r.proc.kill()
                    r.proc.wait()
        for r in running:
            r.out_lines = r.lines()  # read before the directory goes away
        return {r.tracer.name: r for r in running}


def check_outputs(results: Dict[str, "Running"], workload_pid: int, comm: bytes) -> None:
    for name, r in results.items():
        assert r.proc.returncode == 0, f"{name} exited {r.proc.returncode}:\n{r.stderr_text}"
        # Every front end ends with its counters (records=... delivered=...).
        assert re.search(r"records=\d+ .*delivered=\d+", r.stderr_text), f"{name} printed no stats:\n{r.stderr_text}"
        if r.tracer.sanitized:
            found = [m for m in SANITIZER_MARKERS if m in r.stderr_text]
            assert not found, f"{name}: sanitizer report:\n{r.stderr_text}"

    ref = results[REFERENCE].out_lines
    # The reference itself saw the whole workload, as expected.
    assert len(ref) == NWRITES, (len(ref), [l[:160] for l in ref[-3:]])
    parsed = [json.loads(l.decode("utf-8")) for l in ref]  # strict UTF-8, valid JSON
    assert all(e["pid"] == workload_pid for e in parsed)
    comm_json = json.loads(json.dumps(comm.decode("utf-8", "replace")))
    assert all(e["comm"] == comm_json for e in parsed), parsed[0]["comm"]
    p = [e["payload"] for e in parsed]
    assert p[0] == {"fd": 1, "count": 12, "content": "hello world\n"}
    assert "content_base64" in p[1] and "content_base64" not in p[2]
    assert p[19] == {"fd": 2, "count": 0, "content": ""}
    assert p[20]["content_lost"] == "fault" and p[20]["content"] == ""
    assert p[21] == {"fd": 9, "count": 24, "content": None, "content_lost": "not_selected"}
    assert p[22]["content_truncated"] is True and p[22]["content_size"] == 307200
    assert p[23]["content"] == "0123456789abcdef" * 9375
    assert p[-1]["content"] == "END\n"

    want = [normalize(l) for l in ref]
    for name, r in results.items():
        if name == REFERENCE:
            continue
        got = [normalize(l) for l in r.out_lines]
        if got != want:
            diff = next((i for i, (a, b) in enumerate(zip(got, want)) if a != b), min(len(got), len(want)))
            a = got[diff][:400] if diff < len(got) else b"<missing>"
            b = want[diff][:400] if diff < len(want) else b"<missing>"
            pytest.fail(f"{name} differs from {REFERENCE} at line {diff} ({len(got)} vs {len(want)} lines)\n"
                        f"{name}:      {a!r}\n{REFERENCE}: {b!r}\nstderr of {name}:\n{r.stderr_text}")


# --------------------------------------------------------------------------
# Tests


def test_same_json_as_rust_with_comm_filter(tracers):
    """Comm filter; tracers stopped with SIGINT."""
    prefix = _unique_prefix()
    comm = prefix.encode() + b'"\\\x01\xff\xc2\x9b'  # C1 CSI: escaped by every writer
    child: Dict[str, subprocess.Popen] = {}

    def start():
        child["p"] = subprocess.Popen([PY, "-c", WORKLOAD, comm.hex()], stdout=subprocess.DEVNULL,
                                      stderr=subprocess.DEVNULL)
        assert child["p"].wait(30) == 0

    common = ["--events", EVENTS, "--comm", prefix, "--content-max", str(CONTENT_MAX), "--duration", "120"]
    results = run_side_by_side(tracers, common, start, stop_with_signal=True)
    check_outputs(results, child["p"].pid, comm)


def test_same_json_as_rust_every_event_pid_follow_until_duration(tracers):
    """Every default event, pid filter with --follow (forks, a thread, exec);
    tracers stop by themselves at --duration. Processes run concurrently, so
    the lines are compared per thread, in order."""
    cwd = tempfile.mkdtemp(prefix="tb-rich-")  # the exec's cwd
    child = subprocess.Popen([PY, "-c", RICH_WORKLOAD], stdin=subprocess.PIPE, cwd=cwd,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        def start():
            child.stdin.write(b"g")
            child.stdin.close()
            assert child.wait(30) == 5  # the exit status of the exec'd sh

        common = ["--pid", str(child.pid), "--follow", "--duration", "10"]
        results = run_side_by_side(tracers, common, start, stop_with_signal=False)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        os.rmdir(cwd)
    for name, r in results.items():
        assert r.proc.returncode == 0, f"{name} exited {r.proc.returncode}:\n{r.stderr_text}"
        if r.tracer.sanitized:
            found = [m for m in SANITIZER_MARKERS if m in r.stderr_text]
            assert not found, f"{name}: sanitizer report:\n{r.stderr_text}"

    ref = [json.loads(l.decode("utf-8")) for l in results[REFERENCE].out_lines]
    by_type: Dict[str, list] = {}
    for e in ref:
        by_type.setdefault(e["event_type"], []).append(e)
    execs = [e["payload"] for e in by_type["sched/sched_process_exec"]]
    assert {"old_pid": child.pid, "argc": 8, "filename": "/bin/sh",
            "argv": ["sh", "-c", "echo from sh; exit 5", "a\x01b", "\u00e9\u20ac", "", "\ufffd\ufffd", 'q"uote\\'],
            "argv_base64": [base64.b64encode(a).decode() for a in RICH_ARGV],
            "uid": 1234, "gid": 4321, "cwd": os.path.realpath(cwd)} in execs, execs
    exits = [e["payload"] for e in by_type["sched/sched_process_exit"]]
    assert any(x["signal"] == 9 and x.get("signal_name") == "SIGKILL" for x in exits), exits
    assert any(x["group_leader"] == 0 for x in exits), exits  # the thread
    opens = [e["payload"] for e in by_type["syscalls/sys_enter_openat"]]
    assert any(o["filename"] == "/nonexistent/\ufffd\u0001dir" for o in opens), opens
    assert any(o["flags_name"].startswith("O_WRONLY|O_CREAT|O_APPEND|O_NOFOLLOW") for o in opens), opens
    assert any(x["payload"].get("ret_name") == "ENOENT" for x in by_type["syscalls/sys_exit_openat"])
    assert any(x["payload"]["content_base64"] for x in by_type["syscalls/sys_enter_writev"]
               if "content_base64" in x["payload"])
    assert any(x["payload"]["content"] is None for x in by_type["syscalls/sys_enter_pwrite64"])
    assert any(e["tid"] != e["pid"] for e in by_type["syscalls/sys_enter_write"])
    assert any(x["payload"]["count"] == 100 for x in by_type["syscalls/sys_enter_read"])

    def per_thread(lines: List[bytes]) -> Dict[int, List[bytes]]:
        out: Dict[int, List[bytes]] = {}
        for l in lines:
            out.setdefault(json.loads(l)["tid"], []).append(normalize(l))
        return out

    want = per_thread(results[REFERENCE].out_lines)
    for name, r in results.items():
        if name == REFERENCE:
            continue
        got = per_thread(r.out_lines)
        assert sorted(got) == sorted(want), f"{name}: threads {sorted(got)} vs {sorted(want)}"
        for tid in want:
            if got[tid] != want[tid]:
                i = next((i for i, (a, b) in enumerate(zip(got[tid], want[tid])) if a != b),
                         min(len(got[tid]), len(want[tid])))
                a = got[tid][i][:400] if i < len(got[tid]) else b"<missing>"
                b = want[tid][i][:400] if i < len(want[tid]) else b"<missing>"
                pytest.fail(f"{name} differs from {REFERENCE} for tid {tid} at its event {i}\n"
                            f"{name}:      {a!r}\n{REFERENCE}: {b!r}")


@pytest.mark.parametrize("build", ["obj", "asan"])
def test_c_api(build, c_example, c_example_asan):
    """c/api-test.c: option errors, reopen, tb_stop() from a thread and a
    signal handler, callback stop, filter changes, stats, JSON edge cases."""
    exe = ROOT / "c" / ".build" / build / "api-test"
    env = dict(os.environ, **(ASAN_ENV if build == "asan" else {}))
    r = subprocess.run([str(exe)], capture_output=True, text=True, timeout=120, env=env)
    assert r.returncode == 0 and "all passed" in r.stdout, r.stdout + r.stderr
    found = [m for m in SANITIZER_MARKERS if m in r.stderr]
    assert not found, r.stderr


def test_errors_say_what_to_do(c_example):
    # Bad usage: exit 2.
    r = subprocess.run([c_example, "--bogus"], capture_output=True, text=True)
    assert r.returncode == 2 and "unknown argument" in r.stderr
    # Unknown event: the close matches are suggested.
    r = subprocess.run([c_example, "--events", "syscalls/sys_enter_writ", "--duration", "0"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and 'did you mean "syscalls/sys_enter_write"' in r.stderr, r.stderr
    # Without privileges: the capabilities to grant are named.
    r = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all",
                        c_example, "--events", EVENTS, "--duration", "0"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 1, r.stderr
    for cap in ("CAP_BPF", "CAP_PERFMON", "CAP_SYS_ADMIN"):
        assert cap in r.stderr, r.stderr


def test_mounts_tracefs_when_missing(c_example):
    """In a private mount namespace without tracefs, the library mounts it."""
    script = (
        "set -e; umount /sys/kernel/tracing 2>/dev/null || true; "
        "umount /sys/kernel/debug 2>/dev/null || true; "
        "test ! -d /sys/kernel/tracing/events; "
        f"{c_example} --events {EVENTS} --comm tbnone --duration 0.2; "
        "test -d /sys/kernel/tracing/events && echo MOUNTED"
    )
    r = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c", script],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "MOUNTED" in r.stdout, r.stdout + r.stderr


# Forks and a thread from a process whose comm is not valid UTF-8 (so the
# tracepoint's own comm strings need base64 too).
FORK_WORKLOAD = r'''
import ctypes, os, sys, threading
libc = ctypes.CDLL(None, use_errno=True)
assert libc.prctl(15, bytes.fromhex(sys.argv[1]), 0, 0, 0) == 0   # PR_SET_NAME
for i in range(5):
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)
t = threading.Thread(target=lambda: None)
t.start()
t.join()
'''
NFORKS = 5 + 1


def test_generic_tracepoint_same_json_as_python(c_example, c_example_asan, tracer_example):
    """A tracepoint events.toml does not declare (decoded from its tracefs
    format): the C++ example, in both builds, prints the lines tracer-example
    prints."""
    prefix = _unique_prefix()
    comm = prefix.encode() + b"\xff"
    child: Dict[str, subprocess.Popen] = {}

    def start():
        child["p"] = subprocess.Popen([PY, "-c", FORK_WORKLOAD, comm.hex()], stdout=subprocess.DEVNULL,
                                      stderr=subprocess.DEVNULL)
        assert child["p"].wait(30) == 0

    tracers = [
        Tracer("python", [tracer_example]),
        Tracer("c", [c_example]),
        Tracer("c-asan", [c_example_asan], env=ASAN_ENV, sanitized=True),
    ]
    common = ["--events", "sched/sched_process_fork", "--comm", prefix, "--duration", "120"]
    results = run_side_by_side(tracers, common, start, stop_with_signal=True)
    for name, r in results.items():
        assert r.proc.returncode == 0, f"{name} exited {r.proc.returncode}:\n{r.stderr_text}"
        if r.tracer.sanitized:
            found = [m for m in SANITIZER_MARKERS if m in r.stderr_text]
            assert not found, f"{name}: sanitizer report:\n{r.stderr_text}"

    ref = results["python"].out_lines
    parsed = [json.loads(l.decode("utf-8")) for l in ref]
    assert len(parsed) == NFORKS, ref
    assert all(e["event_type"] == "sched/sched_process_fork" and e["pid"] == child["p"].pid for e in parsed), parsed
    payloads = [e["payload"] for e in parsed]
    assert all(p["parent_pid"] == child["p"].pid and p["parent_comm_base64"] == base64.b64encode(comm).decode()
               for p in payloads), payloads
    assert len({p["child_pid"] for p in payloads}) == NFORKS, payloads

    want = [normalize(l) for l in ref]
    for name in ("c", "c-asan"):
        got = [normalize(l) for l in results[name].out_lines]
        assert got == want, f"{name}:\n{got}\npython:\n{want}\nstderr:\n{results[name].stderr_text}"
