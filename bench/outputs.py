#!/usr/bin/env python3
"""tracer-example's outputs side by side, same run: JSON lines, a Parquet
dataset, OTLP export over HTTP/protobuf and gRPC.

    python3 bench/outputs.py [--python VENV_PYTHON] [--n 1000000] [--reps 3] [--size 64]

The workload (bench/workload.c, comm "tbwork") makes N writes of SIZE bytes
to /dev/null, once untraced and once under each output of tracer-example
(defaults otherwise: the sizes a user gets):

- json: ``tracer-example --comm tbwork -o FILE``;
- parquet: ``tracer-example --comm tbwork --parquet DIR`` (zstd);
- otlp-http / otlp-grpc: ``tracer-example --comm tbwork --otlp URL`` to a
  local receiver (bench/otlp_sink.py) that takes each request's bytes and
  answers success without decoding them, so the exporter is what is measured.

Capacity (a second table): the workload runs first with nobody reading
(its events wait in the tracer's queue), then the output is timed alone,
from its first event to the last one written (JSON, Parquet) or accepted by
the receiver (OTLP, flushed): the most events per second it can deliver,
through the same calls tracer-example makes (``Tracer.read_json``,
``write_parquet``, ``export``).

Reported per output (median of --reps): the workload's slowdown against
untraced, the events that reached the output (they must be all N: rows in
the file or dataset, `exported` for OTLP), the tracer's CPU (every thread,
from its rusage) per event, the output's bytes per event (file sizes; for
OTLP the request bytes the receiver got), the rate at which events reached
the output (N over the time from the workload's start to the end of the
stop's drain), start-up, drain time and peak RSS. For OTLP also the
receiver's CPU per event: it runs on the same CPUs as the workload, so it
is part of the slowdown that the JSON file output does not have.
Run as root from the repository root; --python needs pyarrow (to count
Parquet rows) and grpcio. Writes bench/results/outputs.md.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
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


def start_sink(python: str, proto: str, tmp: Path) -> Tuple[subprocess.Popen, int, Path]:
    counts = tmp / f"sink-{proto}.txt"
    p = subprocess.Popen([python, str(BENCH / "otlp_sink.py"), proto, str(counts)], stdout=subprocess.PIPE, text=True)
    assert p.stdout is not None
    line = p.stdout.readline()
    if not line.startswith("PORT "):
        p.kill()
        raise RuntimeError(f"otlp_sink.py did not start: {line!r}")
    return p, int(line.split()[1]), counts


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
    sink = None
    if kind == "json":
        argv += ["-o", str(out)]
    elif kind == "parquet":
        argv += ["--parquet", str(out), "--host", "bench"]
    else:
        proto = kind.split("-")[1]
        sink, port, out = start_sink(python, proto, tmp)
        argv += ["--otlp", f"http://127.0.0.1:{port}", "--otlp-protocol", "grpc" if proto == "grpc" else "http/protobuf"]
        argv += ["--drain-seconds", "60"]
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
    err.seek(0)
    summary = err.read()
    losses = {k: int(v) for k, v in re.findall(r"\b(ring_full|payload_full|discarded|export_failed|export_dropped)=(\d+)", summary)
              if int(v)}
    receiver_cpu = 0.0
    if sink is not None:
        sink.terminate()
        sink_ru = wait4(sink, 30)
        receiver_cpu = (sink_ru.ru_utime + sink_ru.ru_stime) if sink_ru else float("nan")
        err.seek(0)
        counters = dict(re.findall(r"\b(exported|export_failed|export_dropped)=(\d+)", err.read()))
        rows = int(counters.get("exported", 0))
        size_out = int(out.read_text().split()[1]) if out.exists() else 0
    else:
        rows = count_rows(python, kind, out)
        size_out = out.stat().st_size if kind == "json" else dir_bytes(out)
    return {"startup_s": ready, "workload_s": wl, "stop_s": drained, "rows": rows,
            "rate_mps": rows / (wl + 0.5 + drained) / 1e6,
            "cpu_us_per_event": (ru.ru_utime + ru.ru_stime) / max(rows, 1) * 1e6,
            "receiver_cpu_us_per_event": receiver_cpu / max(rows, 1) * 1e6, "losses": losses,
            "bytes_per_event": size_out / max(rows, 1), "maxrss_mib": ru.ru_maxrss / 1024}


def capacity_child(kind: str, n: int, size: int, tmp: Path, port: int) -> None:
    """In a process of its own: queue N events, then time their delivery."""
    import tracer_ebpf
    from tracer_ebpf.dataset import ParquetDataset

    with tracer_ebpf.Tracer("syscalls/sys_enter_write", comm=COMM) as t:
        subprocess.run([str(TBWORK), "-n", str(n), "-s", str(size)], stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, check=True)
        deadline = time.monotonic() + 60
        while t.stats()["queued"] < n and time.monotonic() < deadline:
            time.sleep(0.05)
        queued = t.stats()["queued"]
        if queued < n:
            raise SystemExit(f"capacity {kind}: {queued} of {n} events queued: {t.stats()}")
        got, out = 0, {}
        t0 = time.perf_counter()
        end = time.monotonic() + 300
        if kind == "json":
            with open(tmp / "cap.jsonl", "wb") as f:
                while got < n and time.monotonic() < end:
                    data, k = t.read_json(0.1, 65536)
                    f.write(data)
                    got += k
        elif kind == "parquet":
            ds = ParquetDataset(str(tmp / "cap-dataset"), host="bench")
            while got < n and time.monotonic() < end:
                got += t.write_parquet(ds, 0.1, 65536)
            ds.close(t.stats())
        else:
            proto = "grpc" if kind == "otlp-grpc" else "http/protobuf"
            ex = tracer_ebpf.OtlpExporter(f"http://127.0.0.1:{port}", protocol=proto)
            while got < n and time.monotonic() < end:
                got += t.export(ex, 0.1, 65536)
            if not ex.flush(60):
                raise SystemExit(f"capacity {kind}: not flushed within 60 s: {ex.stats()}")
            out = ex.close(1)
        dt = time.perf_counter() - t0
        if got < n:
            raise SystemExit(f"capacity {kind}: {got} of {n} delivered in 300 s")
    print(json.dumps({"seconds": dt, "events": got, "exported": out.get("exported", got),
                      "dropped": out.get("export_dropped", 0)}))


def run_capacity(python: str, kind: str, n: int, size: int, tmp: Path) -> Dict[str, float]:
    sink, port = None, 0
    if kind.startswith("otlp"):
        sink, port, _ = start_sink(python, kind.split("-")[1], tmp)
    try:
        r = subprocess.run([python, __file__, "--capacity-child", kind, "--n", str(n), "--size", str(size),
                            "--tmp", str(tmp), "--port", str(port)], capture_output=True, text=True, timeout=600, cwd=ROOT)
    finally:
        if sink is not None:
            sink.terminate()
            sink.wait(30)
    if r.returncode != 0:
        raise RuntimeError(f"capacity {kind}: exit {r.returncode}: {r.stderr.strip()[-500:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--python", default=sys.executable, help="a Python with tracer_ebpf (and pyarrow) installed")
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--outputs", default="json,parquet,otlp-http,otlp-grpc")
    ap.add_argument("--out", default=str(BENCH / "results" / "outputs.md"))
    ap.add_argument("--capacity-child", help=argparse.SUPPRESS)
    ap.add_argument("--tmp", help=argparse.SUPPRESS)
    ap.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.capacity_child:
        capacity_child(a.capacity_child, a.n, a.size, Path(a.tmp), a.port)
        return 0
    if os.geteuid() != 0:
        print("outputs: run as root (it loads BPF programs)", file=sys.stderr)
        return 2
    cli = str(Path(a.python).parent / "tracer-example")
    subprocess.run(["make", "-s", "-C", str(BENCH)], check=True)
    base = statistics.median(workload(a.n, a.size) for _ in range(a.reps))
    res: Dict[str, List[Dict[str, float]]] = {k: [] for k in a.outputs.split(",")}
    with tempfile.TemporaryDirectory(prefix="tb-bench-") as d:
        for _ in range(a.reps):
            for kind in res:
                res[kind].append(run_one(a.python, cli, kind, a.n, a.size, Path(d)))
        cap: Dict[str, List[Dict[str, float]]] = {k: [] for k in res}
        for _ in range(a.reps):
            for kind in cap:
                cap[kind].append(run_capacity(a.python, kind, a.n, a.size, Path(d)))
    lines = [f"# tracer-example's outputs ({datetime.date.today()})", "",
             f"{platform.node()}, {os.cpu_count()} CPUs, kernel {platform.release()}; "
             f"{a.n:,} writes of {a.size} B, untraced {base:.3f} s; median of {a.reps} runs, defaults.", "",
             "| output | events | counted losses (runs) | slowdown | tracer CPU µs/event | receiver CPU µs/event | bytes/event | M events/s out | start-up s | stop (drain) s | peak RSS MiB |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for kind, runs in res.items():
        def med(k: str) -> float:
            return statistics.median(r[k] for r in runs)
        recv = f"{med('receiver_cpu_us_per_event'):.2f}" if kind.startswith("otlp") else "—"
        lost = "; ".join(", ".join(f"{k}={v:,}" for k, v in r["losses"].items()) for r in runs if r["losses"]) or "none"
        lines.append(f"| {kind} | {int(med('rows')):,} | {lost} | {med('workload_s') / base:.2f}x | {med('cpu_us_per_event'):.2f} | {recv} | "
                     f"{med('bytes_per_event'):.1f} | {med('rate_mps'):.2f} | {med('startup_s'):.2f} | {med('stop_s'):.2f} | {med('maxrss_mib'):.0f} |")
    lines += ["", f"Capacity: {a.n:,} events queued first, then delivered by the output alone (median of {a.reps}).", "",
              "| output | delivered | dropped | s | M events/s |", "|---|---|---|---|---|"]
    for kind, runs in cap.items():
        secs = statistics.median(r["seconds"] for r in runs)
        done = int(statistics.median(r["exported"] for r in runs))
        lines.append(f"| {kind} | {done:,} | {int(statistics.median(r['dropped'] for r in runs)):,} | {secs:.2f} | "
                     f"{done / secs / 1e6:.2f} |")
    text = "\n".join(lines) + "\n"
    print(text)
    print(json.dumps({"live": res, "capacity": cap}), file=sys.stderr)
    Path(a.out).write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
