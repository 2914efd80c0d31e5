#!/usr/bin/python3
"""Where does a traced writer's extra time go in a burst of large writes?

Ablation of the writer's cost for one burst (default: 50,000 writes of
4 KiB from one thread, `tbwork`, as in bench/run.py), tracer-ebpf beside the
bcc ring-buffer tracer of bench/bcc_tracer.py, one path at a time:

- copy path: nothing reads, and the kernel buffers hold the whole burst, so
  every write is copied and nothing else runs (tracer-ebpf: no reader thread,
  a payload pool larger than the burst; bcc: a 1 GiB ring, never polled);
- full path: nothing reads and the buffers are already full (a first burst,
  not measured, filled them), so every write finds no room (tracer-ebpf
  still records the event with its content flagged lost; bcc's reserve
  fails and the write leaves no trace);
- reader only: default settings, the reader thread drains into the queue
  while the Python loop does not iterate (tracer-ebpf), what the drain
  itself costs the writer;
- as users run them: the Python iterator and the Rust example with default
  settings (both yield the CPU while the queue is light: `yield_cpu`), and
  each without yielding (`yield_cpu=False`, `--no-yield-cpu`), bcc with its
  64 MiB ring and its Python callback.

Each row: the writer's wall time (tbwork's own clock), its slowdown against
the untraced run, and the tool's BPF run time per write (kernel BPF
statistics), median of --reps (min-max). The difference between rows is what
a path costs.

    sudo /usr/bin/python3 bench/writer_cost.py --python .venv/bin/python [--size 4096 --n 50000 --threads 1] [--reps 3]

Needs what bench/run.py sets up (run it once first): python3-bpfcc with
kernel headers, target/release/example, target/bench/tbwork, and a Python
with tracer_ebpf installed (--python). Prints a Markdown table; writes
nothing else. Run it on an otherwise idle machine.
"""

import argparse
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import threading
from pathlib import Path
from typing import Dict, List, Optional, Tuple

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
from handler_floor import prog_stats  # noqa: E402  (the same BPF statistics)
TBWORK = ROOT / "target" / "bench" / "tbwork"
EXAMPLE = ROOT / "target" / "release" / "example"
MIB = 1 << 20
WORK_RE = re.compile(r"tbwork: (.*)")


# --- the tracer-ebpf side, run as a child under --python ----------------------

def tracer_child(spec: Dict) -> int:
    """Holds a Tracer with spec["kwargs"] until a line arrives on stdin,
    iterating its events meanwhile if spec["iterate"]; then prints its
    stats() as JSON."""
    import tracer_ebpf

    t = tracer_ebpf.Tracer("syscalls/sys_enter_write", comm=["tbwork"], **spec["kwargs"])
    print("ready", flush=True)
    if spec["iterate"]:
        def stopper() -> None:
            sys.stdin.readline()
            t.stop()

        threading.Thread(target=stopper, daemon=True).start()
        kept = 0
        for ev in t:  # what a user's loop does with each write
            c = ev.payload.get("content")
            if c is not None:
                kept += len(c)
    else:
        sys.stdin.readline()
    print(json.dumps(t.stats()), flush=True)
    t.close()
    return 0


# --- measurement helpers -----------------------------------------------------

def workload(a: argparse.Namespace) -> float:
    """Runs one burst; returns the writer's wall time in ms (its own clock)."""
    p = subprocess.run([str(TBWORK), "-n", str(a.n), "-s", str(a.size), "-t", str(a.threads)],
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, timeout=120)
    if p.returncode != 0:
        raise RuntimeError(f"tbwork exited {p.returncode}: {p.stderr.strip()[-300:]}")
    m = WORK_RE.search(p.stderr)
    rep = dict(kv.split("=", 1) for kv in m.group(1).split()) if m else {}
    if "elapsed_ns" not in rep:
        raise RuntimeError(f"no report from tbwork: {p.stderr.strip()[-300:]}")
    return int(rep["elapsed_ns"]) / 1e6


def finish(p: subprocess.Popen, sig: Optional[int] = None, stdin: Optional[str] = None) -> Tuple[str, str]:
    """Ends tool process `p` (signal `sig` and/or a line on its stdin) and
    returns its output; killed if it does not end within 120 s."""
    if sig is not None:
        p.send_signal(sig)
    try:
        return p.communicate(input=stdin, timeout=120)
    except subprocess.TimeoutExpired:
        p.kill()
        p.communicate()
        raise RuntimeError(f"{p.args[0]} did not end within 120 s") from None


class Sample:
    def __init__(self, wall_ms: float, bpf_ns: Optional[float], note: str = "") -> None:
        self.wall_ms, self.bpf_ns, self.note = wall_ms, bpf_ns, note


def measured(a: argparse.Namespace, pid: Optional[int], prefill: bool) -> Sample:
    if prefill:
        workload(a)
    before = prog_stats(pid) if pid else None
    wall = workload(a)
    bpf = (prog_stats(pid)[0] - before[0]) / a.n if pid else None
    return Sample(wall, bpf)


def untraced(a: argparse.Namespace) -> Sample:
    return measured(a, None, False)


def tracer_ebpf(a: argparse.Namespace, kwargs: Dict, iterate: bool, prefill: bool) -> Sample:
    spec = json.dumps({"kwargs": kwargs, "iterate": iterate})
    p = subprocess.Popen([a.python, __file__, "--child", spec], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    try:
        if p.stdout.readline().strip() != "ready":
            raise RuntimeError(f"tracer child did not start: {p.stderr.read()[-500:]}")
        s = measured(a, p.pid, prefill)
    except BaseException:
        p.kill()
        p.communicate()
        raise
    out, _ = finish(p, stdin="stop\n")
    st = json.loads(out.strip().splitlines()[-1])
    s.note = f"records={st['records']} payload_full={st['payload_full']} ring_full={st['ring_full']}"
    return s


def rust_example(a: argparse.Namespace, extra: List[str]) -> Sample:
    p = subprocess.Popen([str(EXAMPLE), "--events", "syscalls/sys_enter_write", "--comm", "tbwork", *extra],
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                         preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        if "tracing" not in p.stderr.readline():
            raise RuntimeError("example did not start")
        return measured(a, p.pid, False)
    finally:
        finish(p, signal.SIGINT)


def bcc_in_process(a: argparse.Namespace, ring_mib: int, prefill: bool) -> Sample:
    """bench/bcc_tracer.py's program, loaded here and never polled."""
    import bcc_tracer
    from bcc import BPF

    checks = "\n".join(f"    if (comm[{i}] != {b}) return 0;" for i, b in enumerate(b"tbwork"))
    text = bcc_tracer.PROG % {"maxs": a.size, "pages": ring_mib * MIB // 4096, "comm_check": checks,
                              "header_fields": "", "header_fill": ""}
    b = BPF(text=text)
    try:
        s = measured(a, os.getpid(), prefill)
        c = b["counters"]
        import ctypes
        seen, failed = (sum(c[ctypes.c_int(i)]) for i in range(2))
        s.note = f"seen={seen} reserve_failed={failed}"
        return s
    finally:
        b.cleanup()


def bcc_consumer(a: argparse.Namespace) -> Sample:
    """bench/bcc_tracer.py as bench/run.py runs it (64 MiB ring, Python callback), output to /dev/null."""
    p = subprocess.Popen(["/usr/bin/python3", str(ROOT / "bench" / "bcc_tracer.py"), "--max-bytes", str(a.size),
                          "--ring-mib", "64", "--out", "/dev/null"], stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE, text=True)
    try:
        if "ready" not in p.stderr.readline():
            raise RuntimeError("bcc_tracer did not start")
        s = measured(a, p.pid, False)
    finally:
        _, err = finish(p, signal.SIGINT)
    m = re.search(r"reserve_failed=(\d+)", err)
    s.note = f"reserve_failed={m.group(1) if m else '?'}"
    return s


def main() -> int:
    if len(sys.argv) == 3 and sys.argv[1] == "--child":
        return tracer_child(json.loads(sys.argv[2]))
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--python", required=True, help="a Python with tracer_ebpf installed")
    ap.add_argument("--size", type=int, default=4096, help="bytes per write")
    ap.add_argument("--n", type=int, default=50_000, help="writes per burst")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--reps", type=int, default=3, help="measurements per row (median reported)")
    ap.add_argument("--rows", action="append", default=[],
                    help="only the rows whose name contains this (repeatable; untraced always runs)")
    a = ap.parse_args()
    burst = a.n * a.size
    # A pool holding the whole burst: chunks per CPU x CPUs >= burst (+ a chunk per CPU in use).
    ncpu = os.cpu_count() or 1
    per_cpu = ((burst // ncpu) // MIB + 2) * MIB
    # Two bursts of records (the prefill and the measured one) in the ring.
    ring = 1 << max(22, (2 * a.n * 256 - 1).bit_length())
    big_ring_mib = 1 << max(6, (2 * burst // MIB).bit_length())  # bcc: at least twice the burst

    rows = [
        ("untraced", lambda: untraced(a)),
        ("bcc: copy path (ring holds the burst, never polled)", lambda: bcc_in_process(a, big_ring_mib, False)),
        ("tracer-ebpf: copy path (pool holds the burst, no reader thread)",
         lambda: tracer_ebpf(a, {"reader_thread": False, "payload_bytes_per_cpu": per_cpu, "ring_bytes": ring}, False, False)),
        ("bcc: full path (ring already full)", lambda: bcc_in_process(a, 16, True)),
        ("tracer-ebpf: full path (pool already full, no reader thread)",
         lambda: tracer_ebpf(a, {"reader_thread": False, "payload_bytes_per_cpu": 2 * MIB, "ring_bytes": ring}, False, True)),
        ("tracer-ebpf: defaults, reader thread drains, loop idle", lambda: tracer_ebpf(a, {}, False, False)),
        ("tracer-ebpf: defaults, Python iterator", lambda: tracer_ebpf(a, {}, True, False)),
        ("tracer-ebpf: Python iterator, yield_cpu=False", lambda: tracer_ebpf(a, {"yield_cpu": False}, True, False)),
        ("tracer-ebpf: defaults, Rust example", lambda: rust_example(a, [])),
        ("tracer-ebpf: Rust example --no-yield-cpu", lambda: rust_example(a, ["--no-yield-cpu"])),
        ("bcc: 64 MiB ring, Python callback", lambda: bcc_consumer(a)),
    ]
    if a.rows:
        rows = rows[:1] + [r for r in rows[1:] if any(w in r[0] for w in a.rows)]
    stats = Path("/proc/sys/kernel/bpf_stats_enabled")
    old = stats.read_text().strip()
    stats.write_text("1")
    results: List[Tuple[str, List[Sample]]] = [(name, []) for name, _ in rows]
    try:
        for _ in range(a.reps):  # rows interleaved: drift hits every row alike
            for (name, fn), (_, samples) in zip(rows, results):
                samples.append(fn())
    finally:
        stats.write_text(old)
    base = statistics.median(s.wall_ms for s in results[0][1])
    print(f"{a.n} writes of {a.size} bytes from {a.threads} thread(s), median of {a.reps} (min-max), "
          f"kernel {os.uname().release}, {ncpu} CPUs\n")
    print("| writer's path | wall ms | slowdown | BPF ns per write | last run |")
    print("|---|---|---|---|---|")
    for name, samples in results:
        w = [s.wall_ms for s in samples]
        b = [s.bpf_ns for s in samples if s.bpf_ns is not None]
        bcol = f"{statistics.median(b):.0f} ({min(b):.0f}-{max(b):.0f})" if b else "—"
        print(f"| {name} | {statistics.median(w):.1f} ({min(w):.1f}-{max(w):.1f}) | "
              f"{statistics.median(w) / base:.2f}x | {bcol} | {samples[-1].note} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
