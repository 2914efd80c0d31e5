#!/usr/bin/env python3
"""tracer-example writing a Parquet dataset beside writing JSON lines, same run.

    python3 bench/parquet_vs_json.py [--python VENV_PYTHON] [--n 1000000] [--reps 3] [--size 64]

The workload (bench/workload.c, comm "tbwork") makes N writes of SIZE bytes
to /dev/null, once untraced and once under each output of tracer-example
(defaults otherwise: the sizes a user gets):

- JSON: ``tracer-example --comm tbwork -o FILE``;
- Parquet: ``tracer-example --comm tbwork --parquet DIR`` (zstd).

Reported per output (median of --reps): the workload's slowdown against
untraced, the events in the output (they must be all N), the tracer's CPU
(every thread, from its rusage) per event, the output's bytes per event,
its peak RSS and the time from start to the stop's end (the drain).
Run as root from the repository root; needs pyarrow in --python to count
the Parquet rows. Writes bench/results/parquet.md.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional, Tuple

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
TBWORK = ROOT / "target" / "bench" / "tbwork"
COMM = "tbwork"


def workload(n: int, size: int) -> float:
    t0 = time.perf_counter()
    subprocess.run([str(TBWORK), "-n", str(n), "-s", str(size)], stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL, check=True)
    return time.perf_counter() - t0


def wait4(p: subprocess.Popen, timeout: float) -> Optional[resource.struct_rusage]:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        pid, _status, ru = os.wait4(p.pid, os.WNOHANG)
        if pid == p.pid:
            p.returncode = 0
            return ru
        time.sleep(0.02)
    p.kill()
    os.wait4(p.pid, 0)
    return None


def dir_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def count_rows(python: str, kind: str, out: Path) -> int:
    if kind == "json":
        with open(out, "rb") as f:
            return sum(1 for line in f if b'"tbwork"' in line)
    code = ("import sys, pyarrow.dataset as ds\n"
            "d = ds.dataset(sys.argv[1], format='parquet', partitioning='hive')\n"
            "print(d.to_table(columns=['comm']).column('comm').to_pylist().count('tbwork'))\n")
    r = subprocess.run([python, "-c", code, str(out)], capture_output=True, text=True, timeout=600, check=True)
    return int(r.stdout.strip())


def run_one(python: str, cli: str, kind: str, n: int, size: int, tmp: Path) -> Dict[str, float]:
    out = tmp / ("out.jsonl" if kind == "json" else "dataset")
    shutil.rmtree(out, ignore_errors=True)
    if out.exists():
        out.unlink()
    argv = [cli, "--events", "syscalls/sys_enter_write", "--comm", COMM]
    argv += ["-o", str(out)] if kind == "json" else ["--parquet", str(out), "--host", "bench"]
    err = open(tmp / "stderr", "w+")
    started = time.perf_counter()
    p = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=err, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    # Ready once it reports (tracer-example prints a "tracing" line on stderr).
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        err.seek(0)
        if "tracing" in err.read() or p.poll() is not None:
            break
        time.sleep(0.02)
    ready = time.perf_counter() - started
    wl = workload(n, size)
    time.sleep(0.5)
    stop_at = time.perf_counter()
    p.send_signal(signal.SIGINT)
    ru = wait4(p, 600)
    drained = time.perf_counter() - stop_at
    if ru is None:
        raise RuntimeError(f"{kind}: tracer-example did not end")
    rows = count_rows(python, kind, out)
    size_out = out.stat().st_size if kind == "json" else dir_bytes(out)
    return {"startup_s": ready, "workload_s": wl, "stop_s": drained, "rows": rows,
            "cpu_us_per_event": (ru.ru_utime + ru.ru_stime) / max(rows, 1) * 1e6,
            "bytes_per_event": size_out / max(rows, 1), "maxrss_mib": ru.ru_maxrss / 1024}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--python", default=sys.executable, help="a Python with tracer_ebpf (and pyarrow) installed")
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--out", default=str(BENCH / "results" / "parquet.md"))
    a = ap.parse_args()
    if os.geteuid() != 0:
        print("parquet_vs_json: run as root (it loads BPF programs)", file=sys.stderr)
        return 2
    cli = str(Path(a.python).parent / "tracer-example")
    subprocess.run(["make", "-s", "-C", str(BENCH)], check=True)
    base = statistics.median(workload(a.n, a.size) for _ in range(a.reps))
    res: Dict[str, List[Dict[str, float]]] = {"json": [], "parquet": []}
    with tempfile.TemporaryDirectory(prefix="tb-bench-") as d:
        for _ in range(a.reps):
            for kind in res:
                res[kind].append(run_one(a.python, cli, kind, a.n, a.size, Path(d)))
    lines = [f"# tracer-example: Parquet beside JSON lines ({datetime.date.today()})", "",
             f"{platform.node()}, {os.cpu_count()} CPUs, kernel {platform.release()}; "
             f"{a.n:,} writes of {a.size} B, untraced {base:.3f} s; median of {a.reps} runs, defaults.", "",
             "| output | events | slowdown | tracer CPU µs/event | bytes/event | start-up s | stop (drain) s | peak RSS MiB |",
             "|---|---|---|---|---|---|---|---|"]
    for kind, runs in res.items():
        def med(k: str) -> float:
            return statistics.median(r[k] for r in runs)
        lines.append(f"| {kind} | {int(med('rows')):,} | {med('workload_s') / base:.2f}x | {med('cpu_us_per_event'):.2f} | "
                     f"{med('bytes_per_event'):.1f} | {med('startup_s'):.2f} | {med('stop_s'):.2f} | {med('maxrss_mib'):.0f} |")
    text = "\n".join(lines) + "\n"
    print(text)
    print(json.dumps(res), file=sys.stderr)
    Path(a.out).write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
