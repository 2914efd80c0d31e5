#!/usr/bin/env python3
"""tracer-ebpf benchmark driver: one run, every tool, every case.

    python3 bench/run.py [--quick] [--tools tracer-ebpf,bpftrace,...]

For each case (payload size S x writer threads T) it runs the workload
(bench/workload.c, comm "tbwork": N writes of S self-describing bytes to
fd 1, which is /dev/null) untraced and under each tool, verifies every
captured payload byte for byte, and writes bench/results/results.md,
results.json and results.png. See bench/README.md for the columns.

Tools are entries in TOOLS (a tracer started before the workload and
stopped after it) or wrappers (strace, which runs the workload itself).
Adding a front end is one entry: a command, a ready marker, an output
parser and a stats parser.

Only the Python standard library is needed; matplotlib (for the PNG) is
used if importable here or by /usr/bin/python3.
"""

from __future__ import annotations

import argparse
import base64
import codecs
import datetime
import json
import os
import platform
import re
import resource
import shlex
import shutil
import signal
import statistics
import struct
import subprocess
import sys
import tempfile
import time
import zlib
from array import array
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional, Tuple

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
RESULTS = BENCH / "results"
COMM = "tbwork"
EXAMPLE = ROOT / "target" / "release" / "example"
TBWORK = ROOT / "target" / "bench" / "tbwork"
SYS_PY = "/usr/bin/python3"  # Debian's python3-bpfcc and python3-matplotlib live here
EVENT = "syscalls/sys_enter_write"

# (size, threads, writes in a full run, writes in --quick)
DEFAULT_SIZES = [64, 4096, 32768, 1 << 20]
DEFAULT_THREADS = [1, 4]
FULL_N = {64: 200000, 4096: 50000, 32768: 10000, 1 << 20: 500}
QUICK_N = {64: 20000, 4096: 5000, 32768: 1000, 1 << 20: 50}

# ---------------------------------------------------------------------------
# payload format (mirror of bench/workload.c)

MAGIC = 0x4B574254
HDR_LEN = 32
BLOCK_LEN = (2 << 20) + 65536
HDR = struct.Struct("<IIQIIII")  # magic thread seq len crc body_off hcrc
REC = struct.Struct("<IIII")  # bench record: tid count caplen flags


def make_block() -> bytes:
    """The workload's pseudo-random block (xorshift64*), regenerated here."""
    m = (1 << 64) - 1
    x = 0x9E3779B97F4A7C15
    out = array("Q")
    for _ in range(BLOCK_LEN // 8):
        x ^= x >> 12
        x ^= (x << 25) & m
        x ^= x >> 27
        out.append((x * 0x2545F4914F6CDD1D) & m)
    if sys.byteorder != "little":
        out.byteswap()
    return out.tobytes()


@dataclass
class Tally:
    """Verification result of one tool's capture for one case."""

    expected: int = 0
    events: int = 0  # records for fd 1 from tbwork
    unique: int = 0  # distinct (thread, seq) identified
    intact: int = 0
    truncated: int = 0  # a correct prefix, shorter than the payload
    corrupt: int = 0
    lost: int = 0  # event seen, content missing
    dup: int = 0
    count_mismatch: int = 0
    max_bytes: int = 0
    text_mismatch: int = 0  # tracer-ebpf JSON: "content" != lossy decode of content_base64
    lost_reasons: Dict[str, int] = field(default_factory=dict)
    examples: List[str] = field(default_factory=list)


class Verifier:
    def __init__(self, block: bytes, size: int, expected: int) -> None:
        self.block = block
        self.size = size
        self.t = Tally(expected=expected)
        self.seen: set = set()

    def _bad(self, why: str) -> None:
        self.t.corrupt += 1
        if len(self.t.examples) < 5:
            self.t.examples.append(why)

    def add(
        self,
        count: int,
        data: Optional[bytes],
        lost: Optional[str] = None,
        alt: Optional[Callable[[bytes], bool]] = None,
    ) -> None:
        t = self.t
        t.events += 1
        if count != self.size:
            t.count_mismatch += 1
        if not data:
            t.lost += 1
            why = lost or "no content"
            t.lost_reasons[why] = t.lost_reasons.get(why, 0) + 1
            return
        n = len(data)
        t.max_bytes = max(t.max_bytes, n)
        if n < HDR_LEN:
            self._bad(f"{n}-byte capture, shorter than the header")
            return
        magic, th, seq, ln, crc, off, hcrc = HDR.unpack_from(data)
        if magic != MAGIC or zlib.crc32(data[24:28], zlib.crc32(data[:20])) != hcrc:
            self._bad(f"bad header (magic {magic:#x}) in a {n}-byte capture")
            return
        if ln != self.size or off + ln - HDR_LEN > BLOCK_LEN:
            self._bad(f"header says len={ln} off={off}, expected len={self.size}")
            return
        key = (th, seq)
        if key in self.seen:
            t.dup += 1
        else:
            self.seen.add(key)
            t.unique += 1
        if n > ln:
            self._bad(f"thread {th} seq {seq}: {n} bytes captured for a {ln}-byte payload")
            return
        ok = data[HDR_LEN:] == self.block[off : off + n - HDR_LEN]
        if ok and n == ln:
            ok = zlib.crc32(data[24:], zlib.crc32(data[:20])) == crc
        if not ok and alt is not None:
            ok = alt(data[:HDR_LEN] + self.block[off : off + ln - HDR_LEN])
        if not ok:
            first = next((i for i in range(HDR_LEN, n) if data[i] != self.block[off + i - HDR_LEN]), None)
            self._bad(f"thread {th} seq {seq}: {n}/{ln} bytes, first wrong byte at offset {first}")
        elif n == ln:
            t.intact += 1
        else:
            t.truncated += 1


# ---------------------------------------------------------------------------
# output parsers: each yields (count, data or None, lost reason or None, alt check or None)

Capture = Tuple[int, Optional[bytes], Optional[str], Optional[Callable[[bytes], bool]]]


def parse_jsonl(path: Path, tally: Tally) -> Iterator[Capture]:
    """The JSON lines of tracer-ebpf's example and tracer-example."""
    with open(path, "rb") as f:
        for line in f:
            if not line.startswith(b"{"):
                continue
            try:
                ev = json.loads(line)
            except ValueError:
                yield 0, b"?", "unparsable JSON line", None
                continue
            if ev.get("event_type") != EVENT or not str(ev.get("comm", "")).startswith(COMM):
                continue
            p = ev.get("payload") or {}
            if p.get("fd") != 1:
                continue
            count = p.get("count", -1)
            content = p.get("content")
            if content is None:
                yield count, None, p.get("content_lost") or "null content", None
                continue
            b64 = p.get("content_base64")
            if b64 is not None:
                data = base64.b64decode(b64)
                if content != data.decode("utf-8", "tbbench-per-byte"):
                    tally.text_mismatch += 1
            else:
                data = content.encode("utf-8", "surrogatepass")
            yield count, data, p.get("content_lost"), None


def _per_byte_replace(e: UnicodeDecodeError) -> Tuple[str, int]:
    # tracer-ebpf's rule: each byte that does not start a valid UTF-8
    # sequence becomes one U+FFFD (Python's "replace" would use one per
    # maximal invalid subpart instead).
    return "\ufffd", e.start + 1


codecs.register_error("tbbench-per-byte", _per_byte_replace)

_BT_ESC = [chr(c) if 32 <= c < 127 else f"\\x{c:02x}" for c in range(256)]
_BT_HEX = re.compile(r"\\x([0-9a-f]{2})")


def bt_escape(b: bytes) -> str:
    """bpftrace 0.17's %r rendering of buf(): printable ASCII as is, else \\xHH."""
    return "".join(_BT_ESC[c] for c in b)


def parse_bpftrace(path: Path, tally: Tally) -> Iterator[Capture]:
    with open(path, "r", encoding="latin-1", newline="\n") as f:
        for line in f:
            if not line.startswith("W "):
                continue
            parts = line.rstrip("\n").split(" ", 3)
            if len(parts) < 4:
                parts.append("")
            text = parts[3]
            # Greedy decode; a literal backslash followed by "xHH" is
            # ambiguous in this format, so a mismatch is re-checked by
            # rendering the expected bytes the way bpftrace does.
            data = _BT_HEX.sub(lambda m: chr(int(m.group(1), 16)), text).encode("latin-1")
            n = len(data)
            yield int(parts[2]), data, None, (lambda exp, text=text, n=n: bt_escape(exp[:n]) == text)


def parse_strace(path: Path, tally: Tally) -> Iterator[Capture]:
    """strace -f -xx -e trace=write: '<pid> write(1, "\\xHH..."..., COUNT ...'."""
    with open(path, "rb") as f:
        for line in f:
            i = line.find(b" write(")
            if i < 0:
                continue
            j = line.find(b", ", i)
            if j < 0 or line[i + 7 : j] != b"1":
                continue
            q0 = line.find(b'"', j)
            q1 = line.find(b'"', q0 + 1)
            if q0 < 0 or q1 < 0:
                yield 0, b"?", "unparsable strace line", None
                continue
            try:
                data = bytes.fromhex(line[q0 + 1 : q1].replace(b"\\x", b"").decode("ascii"))
            except ValueError:
                yield 0, b"?", "unparsable strace string", None
                continue
            m = re.match(rb'(?:\.\.\.)?, (\d+)', line[q1 + 1 :])
            yield int(m.group(1)) if m else -1, data, None, None


def parse_records(path: Path, tally: Tally) -> Iterator[Capture]:
    """The bench record format of bcc_tracer.py and py_consumer.py:
    <u32 tid> <u32 count> <u32 caplen> <u32 flags> then caplen bytes; flags:
    1 truncated, content lost: 2 fault, 4 payload_full, 8 other."""
    with open(path, "rb") as f:
        while True:
            h = f.read(REC.size)
            if len(h) < REC.size:
                return
            tid, count, caplen, flags = REC.unpack(h)
            data = f.read(caplen)
            lost = "fault" if flags & 2 else "payload_full" if flags & 4 else "lost" if flags & 8 else None
            yield count, (None if lost else data), lost, None


# ---------------------------------------------------------------------------
# stats parsers: stdout/stderr text -> (dict of counters, short summary)


def kv(text: str) -> Dict[str, int]:
    return {k: int(v) for k, v in re.findall(r"(\w+)=(-?\d+)\b", text)}


def stats_example(out: str, err: str) -> Tuple[Dict[str, int], str]:
    """The last line with the counters (`... records=N ring_full=N ...`)."""
    m = None
    for m in re.finditer(r"^.*\brecords=\d+.*$", err, re.M):
        pass
    if not m:
        return {}, "no stats line"
    d = kv(m.group(0))
    keys = ["ring_full", "busy", "payload_full", "fault", "truncated", "decode_errors", "overwritten", "seq_gaps"]
    nz = [f"{k}={d[k]}" for k in keys if d.get(k)]
    return d, " ".join(nz) or "none"


def stats_bpftrace(out: str, err: str) -> Tuple[Dict[str, int], str]:
    lost = sum(int(x) for x in re.findall(r"Lost (\d+) events", out + err))
    return {"lost": lost}, f"lost={lost}" if lost else "none"


def stats_bcc(out: str, err: str) -> Tuple[Dict[str, int], str]:
    m = re.search(r"bcc: stats (.*)", err)
    if not m:
        return {}, "no stats line"
    d = kv(m.group(1))
    nz = [f"{k}={d[k]}" for k in ("reserve_failed", "fault") if d.get(k)]
    return d, " ".join(nz) or "none"


def stats_py(out: str, err: str) -> Tuple[Dict[str, int], str]:
    m = re.search(r"py-iter: stats (.*)", err)
    if not m:
        return {}, "no stats line"
    return stats_example("", m.group(1))


def stats_none(out: str, err: str) -> Tuple[Dict[str, int], str]:
    return {}, "n/a"


# ---------------------------------------------------------------------------
# tools


@dataclass
class Ctx:
    size: int
    threads: int
    writes: int
    out: Path  # where the tool's capture goes
    args: argparse.Namespace


@dataclass
class Tool:
    name: str
    # argv for a standalone tracer (started first, stopped after the
    # workload), or for a wrapper (the workload argv is appended).
    argv: Callable[[Ctx], List[str]]
    parse: Callable[[Path, Tally], Iterator[Capture]]
    stats: Callable[[str, str], Tuple[Dict[str, int], str]]
    probe: Callable[[argparse.Namespace], Tuple[bool, str]]  # (usable, version or reason)
    ready: Optional[str] = None  # regex on the tool's stdout+stderr that says it is attached
    stdout_is_capture: bool = False  # the capture is the tool's stdout (else it writes ctx.out)
    stdout_stats_prefix: Optional[str] = None  # lines of a stdout capture that the stats parser needs
    wrapper: bool = False
    env: Optional[Callable[[Ctx], Dict[str, str]]] = None
    note: str = ""
    # the tool's own counters of whole events it dropped (to check that
    # delivered + reported losses adds up to the writes made)
    event_loss_keys: Tuple[str, ...] = ()


def _run_text(argv: List[str], timeout: float = 30) -> Tuple[int, str]:
    try:
        p = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout)
        return p.returncode, (p.stdout + p.stderr).strip()
    except (OSError, subprocess.TimeoutExpired) as e:
        return -1, str(e)


def probe_example(a: argparse.Namespace) -> Tuple[bool, str]:
    if not EXAMPLE.exists():
        return False, f"{EXAMPLE} missing (run `cargo build --release`, or pass --cargo-build)"
    mtime = datetime.datetime.fromtimestamp(EXAMPLE.stat().st_mtime).isoformat(timespec="seconds")
    rc, head = _run_text(["git", "-C", str(ROOT), "describe", "--always", "--dirty"])
    return True, f"target/release/example built {mtime}, tree {head if rc == 0 else '?'}"


def tracer_example_path(a: argparse.Namespace) -> Optional[str]:
    """--tracer-example, else beside --python (a venv's bin), else on PATH."""
    if a.tracer_example:
        return a.tracer_example
    beside = Path(a.python).parent / "tracer-example"
    if beside.exists():
        return str(beside)
    return shutil.which("tracer-example")


def probe_tracer_example(a: argparse.Namespace) -> Tuple[bool, str]:
    exe = tracer_example_path(a)
    if not exe:
        return False, ("tracer-example not found (not on PATH nor beside --python; Python front end not installed; "
                       "see --tracer-example)")
    rc, out = _run_text([exe, "--help"])
    if rc != 0:
        return False, f"`tracer-example --help` failed: {out[-200:]}"
    return True, exe


def probe_py_iter(a: argparse.Namespace) -> Tuple[bool, str]:
    rc, out = _run_text([a.python, "-c", "import tracer_ebpf, sys; tracer_ebpf.Tracer; print(getattr(tracer_ebpf, '__version__', '?'))"])
    if rc != 0:
        return False, f"{a.python} cannot import tracer_ebpf.Tracer: {out.splitlines()[-1] if out else rc}"
    return True, f"tracer_ebpf {out.splitlines()[-1]} under {a.python}"


def probe_bpftrace(a: argparse.Namespace) -> Tuple[bool, str]:
    if not shutil.which("bpftrace"):
        return False, "bpftrace not installed (apt-get install bpftrace)"
    rc, out = _run_text(["bpftrace", "--version"])
    return rc == 0, out.splitlines()[0] if out else f"bpftrace --version exited {rc}"


def probe_strace(a: argparse.Namespace) -> Tuple[bool, str]:
    if not shutil.which("strace"):
        return False, "strace not installed (apt-get install strace)"
    rc, out = _run_text(["strace", "-V"])
    return rc == 0, out.splitlines()[0] if out else f"strace -V exited {rc}"


def probe_bcc(a: argparse.Namespace) -> Tuple[bool, str]:
    if not os.path.exists(SYS_PY):
        return False, f"{SYS_PY} missing"
    rc, out = _run_text([SYS_PY, "-c", "import bcc; print(bcc.__version__)"])
    if rc != 0:
        return False, "python3-bpfcc not importable by /usr/bin/python3 (apt-get install python3-bpfcc)"
    ok, why = ensure_kernel_headers(a)
    if not ok:
        return False, why
    return True, f"bcc {out.splitlines()[-1]}; {why}"


def bcc_tool(name: str, ring_mib: Callable[[argparse.Namespace], int], extra: List[str], note: str) -> Tool:
    """bench/bcc_tracer.py with a ring of ring_mib(args) MiB."""
    return Tool(
        name=name,
        event_loss_keys=("reserve_failed",),
        argv=lambda c: [SYS_PY, str(BENCH / "bcc_tracer.py"), "--comm", COMM, "--max-bytes", str(c.size),
                        "--ring-mib", str(ring_mib(c.args)), "--out", str(c.out), *extra],
        parse=parse_records,
        stats=stats_bcc,
        probe=probe_bcc,
        ready=r"bcc: ready",
        note=note,
    )


TOOLS: List[Tool] = [
    Tool(
        name="tracer-ebpf",
        event_loss_keys=("ring_full", "busy", "decode_errors", "overwritten"),
        argv=lambda c: [str(EXAMPLE), "--events", EVENT, "--comm", COMM],
        parse=parse_jsonl,
        stats=stats_example,
        probe=probe_example,
        ready=r"tracing",
        stdout_is_capture=True,
        note="target/release/example --events syscalls/sys_enter_write --comm tbwork > file (default buffers: sized from memory, at most 64 MiB of kernel memory; userspace queue 1/8 of memory; content_max 1 MiB)",
    ),
    Tool(
        name="tracer-example",
        event_loss_keys=("ring_full", "busy", "decode_errors", "overwritten"),
        argv=lambda c: [tracer_example_path(c.args) or "tracer-example", "--events", EVENT, "--comm", COMM],
        parse=parse_jsonl,
        stats=stats_example,
        probe=probe_tracer_example,
        ready=r"tracing",
        stdout_is_capture=True,
        note="the Python front end's CLI, same arguments and JSON as the Rust example",
    ),
    Tool(
        name="py-iter",
        event_loss_keys=("ring_full", "busy", "decode_errors", "overwritten"),
        argv=lambda c: [c.args.python, str(BENCH / "py_consumer.py"), "--comm", COMM, "--out", str(c.out)],
        parse=parse_records,
        stats=stats_py,
        probe=probe_py_iter,
        ready=r"py-iter: ready",
        note="`for ev in tracer_ebpf.Tracer(...)` in Python (bench/py_consumer.py), bytes to a file",
    ),
    Tool(
        name="bpftrace",
        event_loss_keys=("lost",),
        argv=lambda c: ["bpftrace", "-e", (
            'BEGIN { printf("READY\\n"); }\n'
            f'tracepoint:syscalls:sys_enter_write /comm == "{COMM}" && args->fd == 1/ '
            '{ printf("W %d %d %r\\n", tid, args->count, buf(args->buf, args->count)); }'
        )],
        env=lambda c: {"BPFTRACE_STRLEN": "200", "BPFTRACE_PERF_RB_PAGES": str(c.args.bpftrace_rb_pages)},
        parse=parse_bpftrace,
        stats=stats_bpftrace,
        probe=probe_bpftrace,
        ready=r"READY",
        stdout_is_capture=True,
        stdout_stats_prefix="Lost ",
        note="printf %r of buf(args->buf, args->count); BPFTRACE_STRLEN=200 is 0.17's maximum, so at most 200 bytes per write",
    ),
    bcc_tool("bcc", lambda a: a.bcc_ring_mib, [],
             "bench/bcc_tracer.py: ringbuf_reserve of a record with S data bytes, bpf_probe_read_user, "
             "Python callback writes a file"),
    bcc_tool("bcc-same", lambda a: a.bcc_big_ring_mib, ["--full-header"],
             "the same capture as tracer-ebpf: bcc_tracer.py --full-header (boot-time timestamp, pid and comm per "
             "event as well) with a ring of --bcc-big-ring-mib (default 1 GiB, about the kernel memory of "
             "tracer-ebpf's defaults here), so both hold the same bursts"),
    Tool(
        name="strace",
        argv=lambda c: ["strace", "-f", "-qq", "-e", "trace=write", "-xx", "-s", str(c.size), "-o", str(c.out)],
        parse=parse_strace,
        stats=stats_none,
        probe=probe_strace,
        wrapper=True,
        note="strace -f -qq -e trace=write -xx -s S -o file (runs the workload itself; ptrace, never loses events)",
    ),
]

# ---------------------------------------------------------------------------
# environment set-up


def log(msg: str) -> None:
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


def apt_install(pkgs: List[str], a: argparse.Namespace) -> bool:
    if not a.install or os.geteuid() != 0 or not shutil.which("apt-get") or not pkgs:
        return False
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    for attempt in range(2):
        log(f"apt-get install -y {' '.join(pkgs)}")
        try:
            r = subprocess.run(["apt-get", "install", "-y", "-q", *pkgs], env=env, stdin=subprocess.DEVNULL,
                               capture_output=True, text=True, timeout=900)
        except subprocess.TimeoutExpired:
            log("apt-get install timed out")
            return False
        if r.returncode == 0:
            return True
        if attempt == 0:
            log("apt-get install failed; running apt-get update once and retrying")
            subprocess.run(["apt-get", "update", "-q"], env=env, stdin=subprocess.DEVNULL,
                           capture_output=True, timeout=600)
    log(f"apt-get install failed: {r.stderr.strip()[-300:]}")
    return False


def install_missing(a: argparse.Namespace, tools: List[Tool]) -> None:
    names = {t.name for t in tools}
    want = []
    if "bpftrace" in names and not shutil.which("bpftrace"):
        want.append("bpftrace")
    if "strace" in names and not shutil.which("strace"):
        want.append("strace")
    if names & {"bcc", "bcc-same"} and _run_text([SYS_PY, "-c", "import bcc"])[0] != 0:
        want.append("python3-bpfcc")
    if not a.no_chart and _run_text([SYS_PY, "-c", "import matplotlib"])[0] != 0:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            want.append("python3-matplotlib")
    if want:
        apt_install(want, a)


def _headers_ok(d: Path) -> bool:
    return (d / "build" / "include").is_dir() or (d / "build" / "Makefile").exists()


def _version_key(name: str) -> List[int]:
    return [int(x) for x in re.findall(r"\d+", name)]


def ensure_kernel_headers(a: argparse.Namespace) -> Tuple[bool, str]:
    """bcc compiles at run time against /lib/modules/$(uname -r)/build (and
    ./source). Debian has no headers for this kernel; the newest installed
    linux-headers-*-<arch> serve for tracepoint-only programs, so link them
    there (idempotent)."""
    rel = os.uname().release
    kdir = Path("/lib/modules") / rel
    if _headers_ok(kdir):
        b = kdir / "build"
        return True, f"kernel headers {b} -> {os.path.realpath(b)}"

    def candidates() -> List[Path]:
        c = [p for p in Path("/lib/modules").glob("*") if p.name != rel and _headers_ok(p)]
        return sorted(c, key=lambda p: _version_key(p.name))

    cands = candidates()
    if not cands:
        arch = _run_text(["dpkg", "--print-architecture"])[1] or "amd64"
        if apt_install([f"linux-headers-{arch}"], a):
            cands = candidates()
    if not cands:
        return False, (f"no kernel headers: /lib/modules/{rel}/build is missing and no linux-headers-* package is "
                       f"installed (apt-get install linux-headers-amd64, or run without --no-install)")
    src = cands[-1]
    if os.geteuid() != 0:
        return False, f"kernel headers need a symlink /lib/modules/{rel}/build -> {src}/build (run as root)"
    try:
        kdir.mkdir(parents=True, exist_ok=True)
        for sub in ("build", "source"):
            target = os.path.realpath(src / sub)
            link = kdir / sub
            if not os.path.exists(target):
                continue
            if link.is_symlink() and not link.exists():
                link.unlink()  # dangling: replace
            if not link.exists():
                link.symlink_to(target)
                log(f"linked {link} -> {target}")
    except OSError as e:
        return False, f"could not link kernel headers into {kdir}: {e}"
    if not _headers_ok(kdir):
        return False, f"linked {kdir}/build but it has no headers"
    return True, f"kernel headers {kdir}/build -> {os.path.realpath(kdir / 'build')} (linked: {src.name} headers)"


def build_workload() -> None:
    TBWORK.parent.mkdir(parents=True, exist_ok=True)
    src = BENCH / "workload.c"
    if TBWORK.exists() and TBWORK.stat().st_mtime >= src.stat().st_mtime:
        return
    cc = os.environ.get("CC", "cc")
    r = subprocess.run([cc, "-O2", "-Wall", "-pthread", "-o", str(TBWORK), str(src)],
                       capture_output=True, text=True, timeout=120)
    if r.returncode != 0:
        sys.exit(f"bench: building the workload failed:\n{r.stderr}")


# ---------------------------------------------------------------------------
# processes

LIVE: Dict[int, subprocess.Popen] = {}


def cpu_seconds(pid: int) -> Optional[float]:
    """utime+stime of a live process (all its threads), from /proc."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            s = f.read()
        fields = s[s.rindex(")") + 2 :].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


BPF_STATS = Path("/proc/sys/kernel/bpf_stats_enabled")


def fdinfos(pid: int) -> Optional[List[str]]:
    """The /proc/PID/fdinfo texts of a live process (None if it is gone)."""
    try:
        fds = os.listdir(f"/proc/{pid}/fdinfo")
    except OSError:
        return None
    texts = []
    for fd in fds:
        try:
            with open(f"/proc/{pid}/fdinfo/{fd}") as f:
                texts.append(f.read())
        except OSError:
            continue
    return texts


def bpf_run_ns(pid: int) -> Optional[Tuple[int, int]]:
    """Total (run time ns, run count) of the BPF programs a process holds
    (needs kernel.bpf_stats_enabled=1), from /proc/PID/fdinfo."""
    if not BPF_STATS.exists() or BPF_STATS.read_text().strip() != "1":
        return None
    total, runs, found = 0, 0, False
    for info in fdinfos(pid) or []:
        if "prog_type:" not in info:
            continue
        m = re.search(r"run_time_ns:\s*(\d+)", info)
        k = re.search(r"run_cnt:\s*(\d+)", info)
        if m and k:
            total += int(m.group(1))
            runs += int(k.group(1))
            found = True
    return (total, runs) if found else None


def wait4(p: subprocess.Popen, timeout: float) -> Optional[Tuple[int, resource.struct_rusage]]:
    end = time.monotonic() + timeout
    while True:
        try:
            pid, status, ru = os.wait4(p.pid, os.WNOHANG)
        except ChildProcessError:
            return None
        if pid == p.pid:
            p.returncode = os.waitstatus_to_exitcode(status)
            LIVE.pop(p.pid, None)
            return p.returncode, ru
        if time.monotonic() >= end:
            return None
        time.sleep(0.02)


def stop(p: subprocess.Popen, grace: float) -> Tuple[Optional[int], Optional[resource.struct_rusage], str]:
    """SIGINT, then SIGKILL after `grace` seconds; returns (exit code, rusage, how)."""
    how = "exited"
    if p.returncode is None:
        r = wait4(p, 0)
        if r is None:
            how = "SIGINT"
            try:
                p.send_signal(signal.SIGINT)
            except ProcessLookupError:
                pass
            r = wait4(p, grace)
            if r is None:
                how = "SIGKILL"
                try:
                    p.kill()
                except ProcessLookupError:
                    pass
                r = wait4(p, 10)
        reap_group(p.pid)
        if r is not None:
            return r[0], r[1], how
    reap_group(p.pid)
    return p.returncode, None, how


def reap_group(pgid: int) -> None:
    """Kills what is left of a process group the driver created (each tool
    and workload starts its own session, pgid = its pid): e.g. the workload
    that strace detached from when it was stopped."""
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def child_signals() -> None:
    """In the child before exec: default SIGINT/SIGTERM, whatever the driver
    inherited (a shell's `&` ignores SIGINT, and an ignored signal stays
    ignored across exec: a Python tool would then never see Ctrl-C)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def kill_all() -> None:
    for p in list(LIVE.values()):
        stop(p, 3)


def tail(path: Path, n: int = 4000) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, 2)
            size = f.tell()
            f.seek(max(0, size - n))
            return f.read().decode("utf-8", "replace")
    except OSError:
        return ""


def head(path: Path, n: int = 65536) -> str:
    try:
        with open(path, "rb") as f:
            return f.read(n).decode("utf-8", "replace")
    except OSError:
        return ""


WORK_RE = re.compile(r"tbwork: (.*)")


def workload_argv(c: Ctx) -> List[str]:
    return [str(TBWORK), "-n", str(c.writes), "-s", str(c.size), "-t", str(c.threads)]


def run_workload(argv: List[str], timeout: float, stdout=subprocess.DEVNULL) -> Tuple[Dict[str, int], Optional[resource.struct_rusage], int, str]:
    """Runs argv (the workload, maybe under a wrapper); returns the workload's
    own report, the rusage of argv[0], the spawn time (CLOCK_MONOTONIC ns) and
    an error string."""
    with tempfile.TemporaryFile() as errf:
        t_spawn = time.monotonic_ns()
        p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=stdout, stderr=errf, start_new_session=True,
                             preexec_fn=child_signals)
        LIVE[p.pid] = p
        r = wait4(p, timeout)
        err = ""
        if r is None:
            stop(p, 5)
            err = f"timed out after {timeout:g} s"
            ru = None
        else:
            rc, ru = r
            if rc != 0:
                err = f"exited {rc}"
        errf.seek(0)
        text = errf.read().decode("utf-8", "replace")
    m = WORK_RE.search(text)
    rep = kv(m.group(1)) if m else {}
    if not m and not err:
        err = "no report from the workload"
    if err:
        err += ": " + text.strip()[-300:]
    return rep, ru, t_spawn, err


# ---------------------------------------------------------------------------
# one measurement


@dataclass
class Row:
    size: int
    threads: int
    writes: int
    tool: str
    status: str = "ok"  # ok | failed: .. | missing: ..
    wall_s: Optional[float] = None
    slowdown: Optional[float] = None
    added_us_per_write: Optional[float] = None
    startup_s: Optional[float] = None
    consumer_cpu_s: Optional[float] = None  # while the workload ran and the tool drained
    consumer_cpu_total_s: Optional[float] = None  # whole life, start-up included
    drain_s: Optional[float] = None  # workload end -> the tool's output went quiet
    close_s: Optional[float] = None  # SIGINT -> the tool exited (flush, detach, free)
    bpf_us_per_write: Optional[float] = None  # the tool's BPF programs' run time / writes
    bpf_runs_per_write: Optional[float] = None  # their runs / writes (>1: other writers, the tool's own output)
    kernel_mib: Optional[float] = None  # memlock of the tool's BPF maps and programs
    user_peak_mib: Optional[float] = None  # the tool's peak resident memory (VmHWM, all threads)
    tool_losses: str = ""
    tool_stats: Dict[str, int] = field(default_factory=dict)
    stop_how: str = ""
    tally: Optional[Tally] = None


def ru_cpu(ru: Optional[resource.struct_rusage]) -> Optional[float]:
    return None if ru is None else ru.ru_utime + ru.ru_stime


def wait_ready(p: subprocess.Popen, files: List[Path], pattern: str, timeout: float) -> Tuple[bool, str]:
    rx = re.compile(pattern)
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if any(rx.search(head(f)) for f in files):
            return True, ""
        if p.poll() is not None:
            LIVE.pop(p.pid, None)
            return False, f"exited {p.returncode} before it was ready"
        time.sleep(0.01)
    return False, f"not ready after {timeout:.0f} s"


def wait_quiet(p: subprocess.Popen, files: List[Path], quiet: float, timeout: float) -> float:
    """Waits until the files have not grown and the tool has used (almost)
    no CPU for `quiet` seconds (a tool may format a big batch before it
    writes anything); returns when the output last grew."""
    tick = 1.0 / os.sysconf("SC_CLK_TCK")

    def sizes() -> Tuple[int, ...]:
        return tuple(f.stat().st_size if f.exists() else 0 for f in files)

    last, last_grow = sizes(), time.monotonic()
    busy_at, cpu_last = last_grow, cpu_seconds(p.pid)
    end = last_grow + timeout
    while time.monotonic() < end and p.poll() is None:
        time.sleep(0.05)
        now = time.monotonic()
        s = sizes()
        if s != last:
            last, last_grow, busy_at = s, now, now
        cpu = cpu_seconds(p.pid)
        if cpu is not None and cpu_last is not None and cpu - cpu_last > 1.5 * tick:
            busy_at = now
        cpu_last = cpu if cpu is not None else cpu_last
        if now - busy_at >= quiet:
            break
    return last_grow


def bpf_memlock_mib(pid: int) -> Optional[float]:
    """Kernel memory of the BPF maps and programs a process holds: the sum of
    their `memlock` in /proc/PID/fdinfo (what the kernel charges for them)."""
    total, found = 0, False
    for info in fdinfos(pid) or []:
        if "map_type:" not in info and "prog_type:" not in info:
            continue
        m = re.search(r"memlock:\s*(\d+)", info)
        if m:
            total += int(m.group(1))
            found = True
    return total / (1 << 20) if found else None


def peak_rss_mib(pid: int) -> Optional[float]:
    """Peak resident memory of a live process (VmHWM), in MiB."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def measure(tool: Tool, c: Ctx, tmp: Path, block: bytes, a: argparse.Namespace) -> Row:
    row = Row(c.size, c.threads, c.writes, tool.name)
    cap = c.out
    out_f, err_f = tmp / f"{tool.name}.stdout", tmp / f"{tool.name}.stderr"
    if tool.stdout_is_capture:
        out_f = cap
    env = dict(os.environ, **(tool.env(c) if tool.env else {}))
    try:
        if tool.wrapper:
            rep, ru, t_spawn, err = run_workload(tool.argv(c) + workload_argv(c), a.timeout)
            if err:
                row.status = f"failed: {err}"
                return row
            row.wall_s = rep["elapsed_ns"] / 1e9
            row.startup_s = (rep["start_mono_ns"] - t_spawn) / 1e9
            total = ru_cpu(ru)
            if total is not None:
                # the wrapper's rusage includes the workload it reaped
                row.consumer_cpu_s = max(0.0, total - (rep["utime_us"] + rep["stime_us"]) / 1e6)
                row.consumer_cpu_total_s = row.consumer_cpu_s
            row.drain_s = 0.0
            so, se = "", ""
        else:
            with open(out_f, "wb") as so_h, open(err_f, "wb") as se_h:
                t0 = time.monotonic()
                p = subprocess.Popen(tool.argv(c), stdin=subprocess.DEVNULL, stdout=so_h, stderr=se_h, env=env,
                                     start_new_session=True, preexec_fn=child_signals)
            LIVE[p.pid] = p
            try:
                ok, why = wait_ready(p, [out_f, err_f], tool.ready or ".", a.ready_timeout)
                if not ok:
                    row.status = f"failed: {why}: {tail(err_f, 600).strip()[-400:]}"
                    return row
                row.startup_s = time.monotonic() - t0
                cpu0 = cpu_seconds(p.pid)
                bpf0 = bpf_run_ns(p.pid)
                rep, _, _, err = run_workload(workload_argv(c), a.timeout)
                t_end = time.monotonic()
                # BPF programs run in the writer's context: all of the
                # workload's BPF time is spent by now (reading later would
                # add other processes' writes during the drain).
                bpf1 = bpf_run_ns(p.pid)
                if err:
                    row.status = f"failed: workload {err}"
                    return row
                row.wall_s = rep["elapsed_ns"] / 1e9
                row.kernel_mib = bpf_memlock_mib(p.pid)
                last = wait_quiet(p, [cap, out_f], a.quiet, a.drain_timeout)
                row.drain_s = max(0.0, last - t_end)
                row.user_peak_mib = peak_rss_mib(p.pid)
                cpu1 = cpu_seconds(p.pid)
                if bpf0 is not None and bpf1 is not None:
                    row.bpf_us_per_write = (bpf1[0] - bpf0[0]) / c.writes / 1e3
                    row.bpf_runs_per_write = (bpf1[1] - bpf0[1]) / c.writes
                if cpu0 is not None and cpu1 is not None:
                    row.consumer_cpu_s = cpu1 - cpu0
            finally:
                t_stop = time.monotonic()
                rc, ru, how = stop(p, a.stop_grace)
                row.close_s = time.monotonic() - t_stop
                row.stop_how = how
                row.consumer_cpu_total_s = ru_cpu(ru)
            if tool.stdout_is_capture:
                so = _grep_file(out_f, tool.stdout_stats_prefix) if tool.stdout_stats_prefix else ""
            else:
                so = tail(out_f, 20000)
            se = tail(err_f, 20000)
            if rc not in (0, None) and how != "SIGKILL" and not (how == "SIGINT" and rc == -signal.SIGINT):
                row.status = f"failed: exited {rc} after {how}: {se.strip()[-300:]}"
            elif how == "SIGKILL":
                row.status = "failed: ignored SIGINT, killed (capture still verified)"
        row.tool_stats, row.tool_losses = tool.stats(so, se)
        v = Verifier(block, c.size, c.writes)
        for count, data, lost, alt in tool.parse(cap, v.t):
            v.add(count, data, lost, alt)
        row.tally = v.t
        return row
    finally:
        for f in (cap, out_f, err_f):
            if not a.keep:
                try:
                    f.unlink()
                except OSError:
                    pass


def _grep_file(path: Path, needle: str) -> str:
    out = []
    try:
        with open(path, "r", encoding="latin-1") as f:
            for line in f:
                if line.startswith(needle):
                    out.append(line)
    except OSError:
        pass
    return "".join(out)


def selftest(block: bytes, tmp: Path) -> None:
    """The workload writing to a file must verify as all intact."""
    for size in (32, 64, 4096, 1 << 20):
        n = 4 if size == 1 << 20 else 50
        path = tmp / "selftest.bin"
        with open(path, "wb") as f:
            rep, _, _, err = run_workload([str(TBWORK), "-n", str(n), "-s", str(size), "-t", "3"], 60, stdout=f)
        if err:
            sys.exit(f"bench: workload self-test failed: {err}")
        v = Verifier(block, size, n)
        with open(path, "rb") as f:
            while True:
                b = f.read(size)
                if not b:
                    break
                v.add(size, b)
        path.unlink()
        t = v.t
        if t.intact != n or t.unique != n:
            sys.exit(f"bench: workload self-test failed for size {size}: {asdict(t)}")


# ---------------------------------------------------------------------------
# report


def fmt(x: Optional[float], spec: str) -> str:
    return "—" if x is None else format(x, spec)


def human(n: int) -> str:
    for unit, k in (("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= k and n % k == 0:
            return f"{n // k} {unit}"
    return f"{n} B"


COLUMNS = ["case", "tool", "wall ms", "slowdown", "+µs/write", "events", "intact", "trunc", "corrupt", "lost",
           "max B/event", "tool-reported losses", "BPF µs/write", "consumer CPU s", "drain s", "drain GB/s",
           "start-up s", "close s", "kernel MiB", "user peak MiB"]


def drain_gbps(r: Row) -> Optional[float]:
    """Content bytes captured intact over the time from the first write to
    the tool's output going quiet: how fast the tool moved them out."""
    if r.tally is None or r.wall_s is None or r.drain_s is None or r.wall_s + r.drain_s <= 0:
        return None
    return r.tally.intact * r.size / (r.wall_s + r.drain_s) / 1e9


def table(rows: List[Row]) -> str:
    missing_everywhere = {r.tool for r in rows if r.status.startswith("missing")} - {
        r.tool for r in rows if not r.status.startswith("missing")}
    rows = [r for r in rows if r.tool not in missing_everywhere]
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "|".join("---" for _ in COLUMNS) + "|"]
    for r in rows:
        case = f"{human(r.size)} ×{r.threads}T n={r.writes}"
        if r.status.startswith(("missing", "failed")) and r.tally is None:
            cells = [case, r.tool, r.status.split(":")[0].upper()] + [""] * (len(COLUMNS) - 3)
            lines.append("| " + " | ".join(cells) + " |")
            continue
        t = r.tally
        tool = r.tool if r.status == "ok" else f"{r.tool} (FAILED, see notes)"
        if t is None:  # untraced
            ev = intact = trunc = corrupt = lost = maxb = "—"
        else:
            ev = f"{t.events}/{t.expected}" + (f" (+{t.dup} dup)" if t.dup else "")
            intact, trunc, corrupt, lost = str(t.intact), str(t.truncated), str(t.corrupt), str(t.lost)
            maxb = str(t.max_bytes)
        cells = [case, tool, fmt(r.wall_s and r.wall_s * 1e3, ".1f"), fmt(r.slowdown, ".2f") + ("×" if r.slowdown else ""),
                 fmt(r.added_us_per_write, ".2f"), ev, intact, trunc, corrupt, lost, maxb, r.tool_losses or "—",
                 fmt(r.bpf_us_per_write, ".2f"), fmt(r.consumer_cpu_s, ".2f"), fmt(r.drain_s, ".2f"),
                 fmt(drain_gbps(r), ".2f"), fmt(r.startup_s, ".3f"), fmt(r.close_s, ".3f"),
                 fmt(r.kernel_mib, ".0f"), fmt(r.user_peak_mib, ".0f")]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def loadavg() -> str:
    try:
        return " ".join(open("/proc/loadavg").read().split()[:3])
    except OSError:
        return "?"


def machine_facts(a: argparse.Namespace, versions: Dict[str, str], load0: str) -> List[Tuple[str, str]]:
    cpu = "?"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = "?"
    try:
        for line in open("/proc/meminfo"):
            if line.startswith("MemTotal"):
                mem = f"{int(line.split()[1]) / (1 << 20):.1f} GiB"
                break
    except OSError:
        pass
    facts = [
        ("date", datetime.datetime.now().astimezone().isoformat(timespec="seconds")),
        ("kernel", f"{platform.system()} {os.uname().release} ({platform.machine()})"),
        ("CPU", cpu),
        ("nproc", str(os.cpu_count())),
        ("memory", mem),
        ("python (driver)", f"{sys.executable} {platform.python_version()}"),
        ("load average (1/5/15 min) at start / end", f"{load0} / {loadavg()}  (other work on the machine makes numbers noisy)"),
    ]
    facts += [(f"tool: {k}", v) for k, v in versions.items()]
    return facts


def render_chart(results: dict, png: Path) -> str:
    """Draws the PNG with matplotlib here, or with /usr/bin/python3 if only it has it."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        if os.path.exists(SYS_PY) and os.path.realpath(sys.executable) != os.path.realpath(SYS_PY):
            js = png.with_suffix(".json")
            r = subprocess.run([SYS_PY, __file__, "--chart-only", str(js), str(png)], capture_output=True, text=True,
                               timeout=120)
            return "" if r.returncode == 0 else f"chart failed: {r.stderr.strip()[-300:]}"
        return "matplotlib not available: no chart"
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in results["rows"] if r["tool"] != "untraced"]
    cases = []
    for r in results["rows"]:
        k = (r["size"], r["threads"])
        if k not in cases:
            cases.append(k)
    tools = []
    for r in rows:
        if r["tool"] not in tools and r["slowdown"] is not None:
            tools.append(r["tool"])
    if not tools:
        return "nothing to chart"
    fig, (ax1, ax2, ax3) = plt.subplots(3, 1, figsize=(max(9, 1.7 * len(cases)), 11), sharex=True)
    width = 0.8 / len(tools)
    for i, tool in enumerate(tools):
        xs, slow, added, intact, trunc = [], [], [], [], []
        for j, k in enumerate(cases):
            r = next((r for r in rows if r["tool"] == tool and (r["size"], r["threads"]) == k), None)
            if r is None or r["slowdown"] is None:
                continue
            xs.append(j - 0.4 + width * (i + 0.5))
            slow.append(r["slowdown"])
            added.append(max(0.01, r["added_us_per_write"] or 0.01))
            t = r["tally"] or {}
            exp = max(1, t.get("expected", 1))
            intact.append(100.0 * t.get("intact", 0) / exp)
            trunc.append(100.0 * t.get("truncated", 0) / exp)
        color = f"C{i}"
        ax1.bar(xs, slow, width, label=tool, color=color)
        ax2.bar(xs, added, width, label=tool, color=color)
        ax3.bar(xs, intact, width, label=tool, color=color)
        ax3.bar(xs, trunc, width, bottom=intact, color=color, alpha=0.35, hatch="//")
    ax1.set_yscale("log")
    ax1.set_ylabel("workload wall time\nvs untraced (×, log)")
    ax1.axhline(1.0, color="black", linewidth=0.6)
    ax2.set_yscale("log")
    ax2.set_ylabel("time added per write\n(µs, log)")
    ax3.set_ylabel("payloads captured (%)\nsolid: intact, hatched: cut")
    ax3.set_ylim(0, 105)
    ax3.set_xticks(range(len(cases)))
    ax3.set_xticklabels([f"{human(s)}\n{t} thread{'s' if t > 1 else ''}" for s, t in cases])
    fig.suptitle(f"write(2) tracing: {results['facts'].get('kernel', '')}, {results['facts'].get('CPU', '')}", fontsize=10)
    handles, labels = ax1.get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper center", ncol=min(len(tools), 7), fontsize=9, bbox_to_anchor=(0.5, 0.965))
    fig.tight_layout(rect=(0, 0, 1, 0.94))
    fig.savefig(png, dpi=110)
    plt.close(fig)
    return ""


# ---------------------------------------------------------------------------
# main


def parse_n(spec: Optional[str]) -> Dict[int, int]:
    out: Dict[int, int] = {}
    if spec:
        for part in spec.split(","):
            k, _, v = part.partition("=")
            out[int(k)] = int(v)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fewer writes per case (a minute or two in all)")
    ap.add_argument("--sizes", default=",".join(map(str, DEFAULT_SIZES)), help="payload sizes in bytes")
    ap.add_argument("--threads", default=",".join(map(str, DEFAULT_THREADS)), help="writer thread counts")
    ap.add_argument("--n", default=None, help="writes per case by size, e.g. 64=50000,4096=20000 (overrides)")
    ap.add_argument("--tools", default=",".join(t.name for t in TOOLS), help="tools to run (untraced always runs)")
    ap.add_argument("--reps", type=int, default=1, help="runs per tool and case; the median-wall run is reported")
    ap.add_argument("--untraced-reps", type=int, default=5, help="untraced runs per case (median is the anchor)")
    ap.add_argument("--timeout", type=float, default=300, help="seconds a workload run may take")
    ap.add_argument("--ready-timeout", type=float, default=120, help="seconds a tracer may take to attach")
    ap.add_argument("--drain-timeout", type=float, default=120, help="seconds a tracer may take to catch up")
    ap.add_argument("--quiet", type=float, default=0.5, help="output unchanged this long = tracer caught up")
    ap.add_argument("--stop-grace", type=float, default=30, help="seconds between SIGINT and SIGKILL")
    ap.add_argument("--bpftrace-rb-pages", type=int, default=1024, help="BPFTRACE_PERF_RB_PAGES (per CPU)")
    ap.add_argument("--bcc-ring-mib", type=int, default=64, help="bcc ring-buffer size")
    ap.add_argument("--bcc-big-ring-mib", type=int, default=1024, help="bcc-same's ring-buffer size")
    ap.add_argument("--python", default=sys.executable, help="Python with tracer_ebpf, for py-iter")
    ap.add_argument("--tracer-example", default=None, help="the tracer-example CLI (default: beside --python, or on PATH)")
    ap.add_argument("--out", default=str(RESULTS), help="results directory")
    ap.add_argument("--workdir", default=None, help="where captures go while parsed (default: a temp dir)")
    ap.add_argument("--keep", action="store_true", help="keep the captures")
    ap.add_argument("--no-install", dest="install", action="store_false",
                    help="do not apt-get install missing tools or kernel headers")
    ap.add_argument("--cargo-build", action="store_true", help="run `cargo build --release` first")
    ap.add_argument("--no-chart", action="store_true")
    ap.add_argument("--no-bpf-stats", dest="bpf_stats", action="store_false",
                    help="do not set kernel.bpf_stats_enabled=1 during the run (BPF µs/write then stays empty)")
    ap.add_argument("--chart-only", nargs=2, metavar=("JSON", "PNG"), help=argparse.SUPPRESS)
    a = ap.parse_args()

    if a.chart_only:
        err = render_chart(json.loads(Path(a.chart_only[0]).read_text()), Path(a.chart_only[1]))
        if err:
            print(err, file=sys.stderr)
        return 1 if err else 0

    sizes = [int(x) for x in a.sizes.split(",") if x]
    threads = [int(x) for x in a.threads.split(",") if x]
    nmap = dict(QUICK_N if a.quick else FULL_N)
    nmap.update(parse_n(a.n))
    wanted = [x.strip() for x in a.tools.split(",") if x.strip()]
    unknown = [w for w in wanted if w not in {t.name for t in TOOLS}]
    if unknown:
        sys.exit(f"bench: unknown tool(s) {unknown}; known: {[t.name for t in TOOLS]}")
    tools = [t for t in TOOLS if t.name in wanted]
    for s in sizes:
        if not HDR_LEN <= s <= 1 << 20:
            sys.exit(f"bench: size {s} out of range ({HDR_LEN}..{1 << 20})")
    if os.geteuid() != 0:
        log("not root: the eBPF tools will fail")

    command = "python3 " + " ".join(shlex.quote(x) for x in [os.path.relpath(__file__, os.getcwd())] + sys.argv[1:])
    t_run = time.monotonic()
    load0 = loadavg()
    if a.cargo_build:
        log("cargo build --release")
        r = subprocess.run(["cargo", "build", "--release"], cwd=ROOT, timeout=1800)
        if r.returncode != 0:
            log("cargo build failed; tracer-ebpf will be reported as such")
    build_workload()
    install_missing(a, tools)
    log("generating the payload block")
    block = make_block()
    tmp = Path(a.workdir) if a.workdir else Path(tempfile.mkdtemp(prefix="tbbench-"))
    tmp.mkdir(parents=True, exist_ok=True)

    def on_term(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even if started with SIGINT ignored
    bpf_stats_before = None
    if a.bpf_stats and BPF_STATS.exists() and os.geteuid() == 0:
        try:
            bpf_stats_before = BPF_STATS.read_text().strip()
            BPF_STATS.write_text("1")
        except OSError as e:
            log(f"could not enable kernel.bpf_stats_enabled: {e}")
            bpf_stats_before = None
    rows: List[Row] = []
    versions: Dict[str, str] = {}
    try:
        selftest(block, tmp)
        usable: Dict[str, Tuple[bool, str]] = {}
        for t in tools:
            usable[t.name] = t.probe(a)
            versions[t.name] = usable[t.name][1]
            log(f"{t.name}: {'ok' if usable[t.name][0] else 'UNAVAILABLE'}: {usable[t.name][1]}")
        for size in sizes:
            for th in threads:
                n = nmap.get(size) or max(20, min(50000, (64 << 20) // size))
                base_rows = []
                for i in range(max(1, a.untraced_reps)):
                    rep, _, t_spawn, err = run_workload(
                        workload_argv(Ctx(size, th, n, tmp / "x", a)), a.timeout)
                    r = Row(size, th, n, "untraced")
                    if err:
                        r.status = f"failed: {err}"
                    else:
                        r.wall_s = rep["elapsed_ns"] / 1e9
                        r.startup_s = (rep["start_mono_ns"] - t_spawn) / 1e9
                    base_rows.append(r)
                good = [r for r in base_rows if r.wall_s is not None]
                base = sorted(good, key=lambda r: r.wall_s)[len(good) // 2] if good else base_rows[0]
                anchor = base.wall_s
                if anchor:
                    base.slowdown = 1.0
                    base.added_us_per_write = 0.0
                rows.append(base)
                log(f"case {human(size)} x{th} n={n}: untraced {fmt(anchor and anchor * 1e3, '.2f')} ms "
                    f"(median of {len(good)})")
                for t in tools:
                    ok, why = usable[t.name]
                    if not ok:
                        rows.append(Row(size, th, n, t.name, status=f"missing: {why}"))
                        continue
                    reps = []
                    for i in range(max(1, a.reps)):
                        c = Ctx(size, th, n, tmp / f"{t.name}.capture", a)
                        try:
                            reps.append(measure(t, c, tmp, block, a))
                        except KeyboardInterrupt:
                            raise
                        except Exception as e:  # a tool's failure must not end the run
                            reps.append(Row(size, th, n, t.name, status=f"failed: {type(e).__name__}: {e}"))
                    timed = [r for r in reps if r.wall_s is not None]
                    if len(timed) > 1:  # the spread the median hides
                        log(f"  {t.name}: runs: " + "; ".join(
                            f"{r.wall_s * 1e3:.1f} ms, intact {r.tally.intact if r.tally else '?'}, {r.tool_losses}"
                            for r in timed))
                    r = sorted(timed, key=lambda r: r.wall_s)[len(timed) // 2] if timed else reps[-1]
                    if r.wall_s is not None and anchor:
                        r.slowdown = r.wall_s / anchor
                        r.added_us_per_write = (r.wall_s - anchor) / n * 1e6
                    rows.append(r)
                    tl = r.tally
                    log(f"  {t.name}: {r.status}; wall {fmt(r.wall_s and r.wall_s * 1e3, '.1f')} ms"
                        + (f", {tl.events}/{tl.expected} events, intact {tl.intact}, trunc {tl.truncated}, "
                           f"corrupt {tl.corrupt}, lost {tl.lost}; tool: {r.tool_losses}" if tl else ""))
    except KeyboardInterrupt:
        log("interrupted: stopping tracers")
        kill_all()
        if not a.keep and not a.workdir:
            shutil.rmtree(tmp, ignore_errors=True)
        return 130
    finally:
        kill_all()
        if bpf_stats_before is not None:
            try:
                BPF_STATS.write_text(bpf_stats_before)
            except OSError:
                pass
    if not a.keep and not a.workdir:
        shutil.rmtree(tmp, ignore_errors=True)
    elif a.keep:
        log(f"captures kept in {tmp}")

    elapsed = time.monotonic() - t_run
    facts = machine_facts(a, versions, load0)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    results = {
        "command": command,
        "elapsed_s": round(elapsed, 1),
        "facts": dict(facts),
        "rows": [dict(asdict(r)) for r in rows],
        "tools": {t.name: t.note for t in tools},
    }
    (out / "results.json").write_text(json.dumps(results, indent=1))
    tbl = table(rows)
    chart_err = "" if a.no_chart else render_chart(results, out / "results.png")

    notes = []
    not_run: Dict[str, str] = {}
    for r in rows:
        if r.status.startswith("missing"):
            not_run.setdefault(r.tool, r.status)
        elif r.status != "ok":
            notes.append(f"- {human(r.size)} ×{r.threads}T, {r.tool}: " + " ".join(r.status.split()))
        t = r.tally
        if t:
            extra = []
            if t.examples:
                extra.append("corrupt examples: " + "; ".join(t.examples))
            if t.lost_reasons:
                extra.append("lost content: " + ", ".join(f"{k}={v}" for k, v in t.lost_reasons.items()))
            tool = next((x for x in tools if x.name == r.tool), None)
            if tool is not None and r.tool_stats is not None:
                reported = sum(r.tool_stats.get(k, 0) for k in tool.event_loss_keys)
                silent = t.expected - (t.events - t.dup) - reported
                if silent > 0:
                    extra.append(f"{silent} of {t.expected} writes are neither delivered nor in the tool's own loss "
                                 f"counters ({t.events - t.dup} delivered + {reported} reported lost)")
            if t.count_mismatch:
                extra.append(f"{t.count_mismatch} events with count != {r.size}")
            if t.text_mismatch:
                extra.append(f"{t.text_mismatch} events whose \"content\" differs from the lossy UTF-8 decoding of content_base64")
            if r.bpf_runs_per_write is not None and r.bpf_runs_per_write > 2.5:
                extra.append(f"its BPF programs ran {r.bpf_runs_per_write:.1f} times per workload write (other "
                             f"processes were writing), so BPF µs/write is inflated")
            if r.stop_how == "SIGKILL":
                extra.append("had to be killed")
            if extra:
                notes.append(f"- {human(r.size)} ×{r.threads}T, {r.tool}: " + "; ".join(extra))
    seen_notes = set()
    dedup = []
    for n_ in notes:
        if n_ not in seen_notes:
            seen_notes.add(n_)
            dedup.append(n_)

    md = ["# tracer-ebpf benchmark: write(2) capture", "",
          f"Produced by `{command}` (from the repository root) in {elapsed:.0f} s.", "",
          "## Machine", "", "| | |", "|---|---|"]
    md += [f"| {k} | {v} |" for k, v in facts]
    md += ["", "## Results", "",
           "Every ratio is against the untraced run of the same case in this same run "
           f"(median of {a.untraced_reps}). Columns are explained in bench/README.md.", "", tbl, ""]
    if not a.no_chart:
        md += ["![slowdown and intact payloads](results.png)" if not chart_err else f"(no chart: {chart_err})", ""]
    md += ["## Tools", ""] + [f"- **{t.name}**: {t.note}" for t in tools] + [""]
    if not_run:
        md += ["## Not run", ""] + [f"- **{k}**: {v}" for k, v in not_run.items()] + [""]
    if dedup:
        md += ["## Notes", ""] + dedup + [""]
    (out / "results.md").write_text("\n".join(md))

    print(tbl)
    for k, v in not_run.items():
        print(f"- not run: {k}: {v}")
    if dedup:
        print("\n".join(dedup))
    log(f"wrote {out / 'results.md'}, results.json" + ("" if chart_err or a.no_chart else ", results.png")
        + f" in {elapsed:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
