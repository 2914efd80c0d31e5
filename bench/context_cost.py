#!/usr/bin/python3
"""What does recording the task's context (cgroup id, pid and tid in its own
pid namespace) cost the write handler?

A/B on the same workload as bench/handler_floor.py (`tbwork`, writes of 64
bytes): BPF run time per write of two builds of the Rust example, the one
without the context (`--base`, e.g. built from the commit before it) and the
one with it (`--new`, default target/release/example), measured alternately
(A B A B ...) so drift of the machine hits both alike.

    sudo /usr/bin/python3 bench/context_cost.py --base /path/to/old/example [--n 200000] [--reps 9]

Prints a Markdown table: median and min-max of each, and the difference of
the medians beside the spread of the runs (the noise).
"""

import argparse
import statistics
import sys
from pathlib import Path

from handler_floor import EXAMPLE, TBWORK, tracer_ebpf


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--base", type=Path, required=True, help="example built without the task context")
    ap.add_argument("--new", type=Path, default=EXAMPLE, help="example built with it")
    ap.add_argument("--n", type=int, default=200_000, help="writes per measurement")
    ap.add_argument("--reps", type=int, default=9, help="measurements of each (median reported)")
    a = ap.parse_args()
    for p in (a.base, a.new, TBWORK):
        if not p.exists():
            sys.exit(f"context_cost: {p} does not exist (build it first; see the docstring)")
    stats = Path("/proc/sys/kernel/bpf_stats_enabled")
    old = stats.read_text().strip()
    stats.write_text("1")
    base, new = [], []
    try:
        for _ in range(a.reps):
            base.append(tracer_ebpf(a.n, a.base))
            new.append(tracer_ebpf(a.n, a.new))
    finally:
        stats.write_text(old)
    print(f"BPF run time per write(2) of 64 bytes, {a.n} writes, median of {a.reps} (min-max), alternating\n")
    print("| handler | ns per write | min-max |")
    print("|---|---|---|")
    for name, v in (("without the context (--base)", base), ("with cgroup_id, ns_pid, ns_tid (--new)", new)):
        print(f"| {name} | {statistics.median(v):.0f} | {min(v):.0f}-{max(v):.0f} |")
    diff = statistics.median(new) - statistics.median(base)
    spread = statistics.median([max(base) - min(base), max(new) - min(new)])
    print(f"\nDifference of the medians: {diff:+.0f} ns per write; spread (max-min) of one handler's runs: {spread:.0f} ns.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
