#!/usr/bin/env python3
"""What one syscall costs the process that makes it, by the tracer's path.

C loops make N calls of one syscall and report ns per call: `write(fd, "x",
1)` to /dev/null (a typed event; contents are captured only for fds 1 and 2,
so no copy) and `getppid()` (never traced here). They run untraced, then
under tracers of:
- `sys_enter_write`, filtered out by comm, and recorded (a thread takes the
  events): the cost of a traced call;
- `sys_enter_write`, and the default event set, with the getppid loop: what
  every syscall the tracer does not record pays;
each through the shared raw `sys_enter`/`sys_exit` programs (the default) and
through one perf event per event (`TRACER_EBPF_PER_EVENT_SYSCALLS=1`),
alternating, median of --reps. `kernel.bpf_stats_enabled` must be 0: with it
on, each program run also reads the clock twice.

usage: python3 bench/syscall_paths.py [--calls N] [--reps R]
"""

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

COMM = "tbpaths"
# {call}: the loop's syscall.
LOOP_C = r"""
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>
int main(int argc, char **argv) {{
    long n = atol(argv[1]);
    int fd = open("/dev/null", O_WRONLY);
    struct timespec a, b;
    clock_gettime(CLOCK_MONOTONIC, &a);
    for (long i = 0; i < n; i++)
        {call};
    clock_gettime(CLOCK_MONOTONIC, &b);
    printf("%.1f\n", ((b.tv_sec - a.tv_sec) * 1e9 + (b.tv_nsec - a.tv_nsec)) / n);
    return 0;
}}
"""
LOOPS = {"write": 'write(fd, "x", 1)', "getppid": "getppid()"}


def ns_per_call(exe: Path, calls: int) -> float:
    out = subprocess.run([str(exe), str(calls)], capture_output=True, text=True, check=True, timeout=300)
    return float(out.stdout)


def traced(exe: Path, calls: int, per_event: bool, events, comm: str, drain: bool) -> "tuple[float, int]":
    """ns per call under a tracer of `events` for `comm`, and events taken."""
    import tracer_ebpf

    if per_event:
        os.environ["TRACER_EBPF_PER_EVENT_SYSCALLS"] = "1"
    else:
        os.environ.pop("TRACER_EBPF_PER_EVENT_SYSCALLS", None)
    taken = 0
    with tracer_ebpf.Tracer(events, comm=[comm]) as t:
        stop = threading.Event()

        def consume():
            nonlocal taken
            while not stop.is_set():
                taken += len(t.poll_columns(timeout=0.05)["event_id"])

        th = threading.Thread(target=consume, daemon=True) if drain else None
        if th:
            th.start()
        ns = ns_per_call(exe, calls)
        time.sleep(0.2)
        stop.set()
        if th:
            th.join(timeout=30)
    # close() leaves the detach of perf events (a grace period each) to a
    # background thread: let it end before the next run.
    time.sleep(1.0)
    return ns, taken


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calls", type=int, default=1_000_000)
    ap.add_argument("--reps", type=int, default=5)
    a = ap.parse_args()
    stats_on = Path("/proc/sys/kernel/bpf_stats_enabled").read_text().strip()
    if stats_on != "0":
        print("kernel.bpf_stats_enabled is on: set it to 0 for these figures", file=sys.stderr)
        return 2
    write, default = ["syscalls/sys_enter_write"], None
    cases = [  # (loop, what, events, comm, drain)
        ("write", "write traced, filtered out by comm", write, "nomatch", False),
        ("write", "write traced and recorded", write, COMM, True),
        ("getppid", "getppid, untraced, under a tracer of write", write, "nomatch", False),
        ("getppid", "getppid, untraced, under the default event set", default, "nomatch", False),
    ]
    untraced: "dict[str, list[float]]" = {}
    got: "dict[tuple[str, bool], list[float]]" = {}
    counts: "dict[tuple[str, bool], list[int]]" = {}
    with tempfile.TemporaryDirectory() as d:
        exes = {}
        for loop, call in LOOPS.items():
            exes[loop] = Path(d) / COMM if loop == "write" else Path(d) / f"{COMM}-{loop}"
            src = Path(d) / f"{loop}.c"
            src.write_text(LOOP_C.format(call=call))
            subprocess.run(["cc", "-O2", "-o", str(exes[loop]), str(src)], check=True)
        for _ in range(a.reps):
            for loop, exe in exes.items():
                untraced.setdefault(loop, []).append(ns_per_call(exe, a.calls))
            for loop, what, events, comm, drain in cases:
                for per_event in (False, True):
                    ns, n = traced(exes[loop], a.calls, per_event, events, comm, drain)
                    got.setdefault((what, per_event), []).append(ns)
                    counts.setdefault((what, per_event), []).append(n)
    print(f"# One syscall's cost by the tracer's path\n\n{a.calls:,} calls per run, median of {a.reps}; "
          f"kernel {os.uname().release}, {os.cpu_count()} CPUs, kernel.bpf_stats_enabled=0; "
          f"command: python3 bench/syscall_paths.py --calls {a.calls} --reps {a.reps}\n")
    print("| case | shared raw tracepoint programs | a perf event per event | events taken (fewest: shared, own) |")
    print("|---|---|---|---|")
    for loop in LOOPS:
        print(f"| {loop}, untraced | {statistics.median(untraced[loop]):.0f} ns | | |")
    for _, what, _, _, _ in cases:
        s, o = statistics.median(got[(what, False)]), statistics.median(got[(what, True)])
        cs, co = min(counts[(what, False)]), min(counts[(what, True)])
        print(f"| {what} | {s:.0f} ns | {o:.0f} ns | {cs:,}, {co:,} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
