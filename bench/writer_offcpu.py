#!/usr/bin/env python3
"""Where a slow burst's writer spends its time: on its CPU or waiting for it.

Runs the 4 KiB x1T burst of bench/run.py (tbwork, 50,000 writes of 4 KiB)
under `perf stat` while the Rust example traces it with output to a file,
`--runs` times, and prints per run, sorted by wall time: the writer's wall
time (its own clock), its CPU time (perf's task-clock), its context switches
and CPU migrations, and the contents the example wrote out. Wall time well
above CPU time is time the writer was runnable or preempted but not running:
another thread held its CPU.

    sudo python3 bench/writer_offcpu.py [--runs 12] [-- --no-yield-cpu]

Needs perf, target/release/example and target/bench/tbwork (bench/run.py
builds it). A measurement, never an assertion.
"""

import argparse
import json
import re
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Dict, List, Tuple

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
from writer_cost import finish  # noqa: E402  (ends a tool process, bounded in time)

EXAMPLE = ROOT / "target" / "release" / "example"
TBWORK = ROOT / "target" / "bench" / "tbwork"
COUNTERS = ("task-clock", "context-switches", "cpu-migrations")


def one_run(extra: List[str], n: int, size: int) -> Tuple[float, Dict[str, float], int]:
    with tempfile.TemporaryFile("w+") as out:
        p = subprocess.Popen([str(EXAMPLE), "--events", "syscalls/sys_enter_write", "--comm", "tbwork", *extra],
                             stdout=out, stderr=subprocess.PIPE, text=True,
                             preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        try:
            if "tracing" not in (p.stderr.readline() if p.stderr else ""):
                raise RuntimeError("example did not start")
            w = subprocess.run(["perf", "stat", "-x,", "-e", ",".join(COUNTERS), "--",
                                str(TBWORK), "-n", str(n), "-s", str(size), "-t", "1"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, timeout=120)
        finally:
            finish(p, signal.SIGINT)
        out.seek(0)
        kept = 0
        for line in out:
            ev = json.loads(line)
            if ev.get("comm") == "tbwork" and ev.get("payload", {}).get("content") is not None:
                kept += 1
    m = re.search(r"elapsed_ns=(\d+)", w.stderr)
    if not m:
        raise RuntimeError(f"no report from tbwork: {w.stderr.strip()[-300:]}")
    counters = {}
    for line in w.stderr.splitlines():
        f = line.split(",")
        if len(f) > 3 and f[2] in COUNTERS:
            counters[f[2]] = float(f[0])
    return int(m.group(1)) / 1e6, counters, kept


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=12)
    ap.add_argument("--n", type=int, default=50_000)
    ap.add_argument("--size", type=int, default=4096)
    ap.add_argument("extra", nargs="*", help="arguments for the Rust example (after --)")
    a = ap.parse_args()
    for exe in (EXAMPLE, TBWORK):
        if not exe.exists():
            sys.exit(f"{exe} is missing: cargo build --release --examples, and bench/run.py once for tbwork")
    rows = sorted(one_run(a.extra, a.n, a.size) for _ in range(a.runs))
    print(f"Rust example {' '.join(a.extra) or '(defaults)'}: {a.n} writes of {a.size} B, {a.runs} runs\n")
    print("| writer wall ms | writer CPU ms | off its CPU ms | context switches | migrations | contents written out |")
    print("|---|---|---|---|---|---|")
    for wall, c, kept in rows:
        cpu = c.get("task-clock", 0.0)
        print(f"| {wall:.1f} | {cpu:.1f} | {max(0.0, wall - cpu):.1f} | {c.get('context-switches', 0):.0f} | "
              f"{c.get('cpu-migrations', 0):.0f} | {kept} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
