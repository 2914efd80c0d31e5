#!/usr/bin/env python3
"""Overhead of tracing every syscall of a busy process (issue 7).

Runs the same syscall-heavy workload untraced, under tracer-ebpf attached to
`syscalls/*` (the Rust example: every sys_enter_*/sys_exit_* tracepoint,
typed where events.toml has the event, generic elsewhere) and under bpftrace
attached to the same tracepoints, in one run, and prints a Markdown table:
wall time, slowdown, events captured, attach and detach times.

usage: python3 bench/syscalls_overhead.py [--iterations N] [--repeat R]
"""

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
COMM = "tbsys"
WORKLOAD_C = r"""
#include <fcntl.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>
int main(int argc, char **argv) {
    long n = atol(argv[1]);
    char buf[256];
    struct stat st;
    for (long i = 0; i < n; i++) {
        getppid();
        int fd = open("/etc/hostname", O_RDONLY);
        if (fd >= 0) { read(fd, buf, sizeof buf); close(fd); }
        stat("/etc/hostname", &st);
        write(1, "x", 1);
    }
    return 0;
}
"""  # 6 syscalls per iteration


def build_workload(tmp: Path) -> Path:
    src = tmp / "w.c"
    src.write_text(WORKLOAD_C)
    exe = tmp / COMM
    subprocess.run(["cc", "-O2", "-o", str(exe), str(src)], check=True)
    return exe


def run_workload(exe: Path, n: int) -> float:
    t0 = time.perf_counter()
    subprocess.run([str(exe), str(n)], stdout=subprocess.DEVNULL, check=True)
    return time.perf_counter() - t0


def start(argv, ready: str, out, timeout=300.0, ready_on_stdout=False):
    """Starts a tracer; returns (proc, attach seconds) once `ready` is printed
    (on stderr, or on stdout for bpftrace, whose output then goes to a pipe)."""
    t0 = time.perf_counter()
    if ready_on_stdout:
        p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        stream = p.stdout
    else:
        p = subprocess.Popen(argv, stdout=out, stderr=subprocess.PIPE, text=True)
        stream = p.stderr
    deadline = t0 + timeout
    while time.perf_counter() < deadline:
        line = stream.readline()
        if not line:
            break
        if ready in line:
            return p, time.perf_counter() - t0
    p.kill()
    raise RuntimeError(f"{argv[0]} did not start: {stream.read()[-500:]}")


def stop(p) -> "tuple[float, str]":
    t0 = time.perf_counter()
    p.send_signal(2)
    try:
        out, _ = p.communicate(timeout=300)
    except subprocess.TimeoutExpired:
        p.kill()
        out, _ = p.communicate()
    return time.perf_counter() - t0, out if isinstance(out, str) else ""


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--iterations", type=int, default=50000, help="workload loop iterations (6 syscalls each)")
    ap.add_argument("--repeat", type=int, default=3)
    a = ap.parse_args()
    example = ROOT / "target" / "release" / "example"
    if not example.exists():
        subprocess.run(["cargo", "build", "--release", "--bin", "example"], cwd=ROOT, check=True)
    rows = []
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        exe = build_workload(tmp)
        base = statistics.median(run_workload(exe, a.iterations) for _ in range(a.repeat))
        rows.append(("untraced", base, "—", "—", "—"))

        out = open(tmp / "tb.jsonl", "w")
        p, attach = start([str(example), "--events", "syscalls/*", "--comm", COMM], "tracing", out)
        t = statistics.median(run_workload(exe, a.iterations) for _ in range(a.repeat))
        detach, _ = stop(p)
        out.close()
        n = sum(1 for _ in open(tmp / "tb.jsonl"))
        rows.append(("tracer-ebpf (syscalls/*)", t, f"{n}", f"{attach:.2f}", f"{detach:.2f}"))

        if shutil.which("bpftrace"):
            script = (f'tracepoint:syscalls:sys_enter_*, tracepoint:syscalls:sys_exit_* '
                      f'/comm == "{COMM}"/ {{ @n = count(); }}')
            try:
                os.environ["BPFTRACE_MAX_PROBES"] = "2000"  # 720 syscall tracepoints exceed its default 512
                p, attach = start(["bpftrace", "-e", script], "Attaching", None, ready_on_stdout=True)
                time.sleep(1.0)  # "Attaching N probes..." comes before attaching finishes
                t = statistics.median(run_workload(exe, a.iterations) for _ in range(a.repeat))
                detach, txt = stop(p)
                n = next((ln.split(":")[1].strip() for ln in txt.splitlines() if ln.startswith("@n")), "?")
                rows.append(("bpftrace (same tracepoints)", t, n, f"{attach:.2f}", f"{detach:.2f}"))
            except Exception as e:  # report, don't crash the run
                rows.append((f"bpftrace: failed ({e})", float("nan"), "—", "—", "—"))
        else:
            rows.append(("bpftrace: not installed (apt-get install bpftrace)", float("nan"), "—", "—", "—"))

    expected = a.iterations * 6 * 2 * a.repeat  # enter + exit
    print(f"# Tracing every syscall of a busy process\n\nworkload: {a.iterations} iterations x 6 syscalls, "
          f"median of {a.repeat}; expected events per tracer: about {expected} (enter+exit, all repeats)\n"
          f"kernel {os.uname().release}, {os.cpu_count()} CPUs; command: python3 bench/syscalls_overhead.py "
          f"--iterations {a.iterations} --repeat {a.repeat}\n")
    print("| tracer | workload s | slowdown | events | attach s | detach s |\n|---|---|---|---|---|---|")
    for name, t, n, att, det in rows:
        print(f"| {name} | {t:.3f} | {t / base:.2f}x | {n} | {att} | {det} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
