#!/usr/bin/env python3
"""Events per second delivered to Python: tracer-ebpf beside bcc, same run.

    python3 bench/python_throughput.py [--python VENV_PYTHON] [--n 1000000] [--reps 3]

The workload (bench/workload.c, comm "tbwork") makes N writes of 64 bytes to
/dev/null. Each consumer traces syscalls/sys_enter_write for comm "tbwork"
and captures the 64 content bytes; it runs in its own process:

- tracer-ebpf, iterator: ``for ev in tracer``;
- tracer-ebpf, iterator + fields: the same, reading ``ev.pid`` and
  ``ev.payload["content"]`` (bytes) of each event;
- tracer-ebpf, columns: ``tracer.poll_columns()`` batches (the form behind
  ``to_dataframe()``): no per-event Python object at all;
- tracer-ebpf, Arrow: ``tracer.poll_arrow()`` batches taken by pyarrow
  (``pyarrow.record_batch(batch)``, no copy) and made one ``pyarrow.Table``;
- tracer-ebpf, Arrow built by the reader: the same with
  ``Tracer(..., arrow=True)``, whose reader thread builds the batches as
  events arrive (so its cost is in the CPU column, not in the drain);
- bcc, callback: the usual bcc ring-buffer consumer, a Python callback per
  event casting it with ``b["rb"].event(data)``;
- bcc, callback + fields: the same, reading ``ev.pid`` and the content as
  bytes.

Two measures per consumer:
- drain: the workload runs to completion first (tracer-ebpf with its default
  sizes, timed once all N events are in its userspace queue; bcc with a ring
  sized to hold every event), then the consumer is timed alone from its
  first event to its Nth: the most it can deliver;
- CPU µs/event: all CPU time the consumer process used (every thread) over
  the whole run, divided by N: what delivering one event costs.

Run from the repository root as root. tracer-ebpf needs a Python with the
extension installed (--python); bcc runs under /usr/bin/python3 (Debian's
python3-bpfcc; bench/run.py explains the kernel headers it needs). Writes
bench/results/python.md.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
TBWORK = ROOT / "target" / "bench" / "tbwork"
SYS_PY = "/usr/bin/python3"

FORMS = {
    "tracer-ebpf iterator": "tracer:iter",
    "tracer-ebpf iterator + fields": "tracer:fields",
    "tracer-ebpf columns": "tracer:columns",
    "tracer-ebpf Arrow into pyarrow": "tracer:arrow",
    "tracer-ebpf Arrow built by the reader (arrow=True)": "tracer:arrow-reader",
    "bcc callback": "bcc:iter",
    "bcc callback + fields": "bcc:fields",
}

BCC_PROG = r"""
struct rec {
    u32 pid;
    u32 tid;
    u64 ts;
    u32 fd;
    u32 count;
    u8 data[64];
};
BPF_RINGBUF_OUTPUT(rb, %(pages)d);
TRACEPOINT_PROBE(syscalls, sys_enter_write) {
    char comm[16] = {};
    bpf_get_current_comm(&comm, sizeof(comm));
    if (comm[0] != 't' || comm[1] != 'b' || comm[2] != 'w' || comm[3] != 'o' || comm[4] != 'r' || comm[5] != 'k')
        return 0;
    struct rec *r = rb.ringbuf_reserve(sizeof(struct rec));
    if (!r)
        return 0;
    u64 id = bpf_get_current_pid_tgid();
    r->pid = id >> 32;
    r->tid = (u32)id;
    r->ts = bpf_ktime_get_ns();
    r->fd = args->fd;
    r->count = args->count;
    u64 n = args->count;
    if (n > 64)
        n = 64;
    bpf_probe_read_user(r->data, n & 127, (void *)args->buf);
    rb.ringbuf_submit(r, 0);
    return 0;
}
"""


def workload(n: int) -> None:
    subprocess.run([str(TBWORK), "-n", str(n), "-s", "64"], stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL, check=True)


def consume_tracer(form: str, n: int) -> float:
    import tracer_ebpf

    if form.startswith("arrow"):
        import pyarrow as pa  # imported before the timing (about 0.1 s)

    # Defaults: the reader drains the burst into the userspace queue (the
    # run fails below if anything was lost); the drain is timed after it.
    with tracer_ebpf.Tracer("syscalls/sys_enter_write", comm="tbwork", arrow=form == "arrow-reader") as t:
        workload(n)
        # Timed from when every event is in the tracer's queue (the reader
        # has drained the kernel buffers: with arrow=True, built into rows).
        deadline = time.monotonic() + 60
        while t.stats()["queued"] < n and time.monotonic() < deadline:
            time.sleep(0.02)
        got = 0
        t0 = time.perf_counter()
        if form == "iter":
            for _ev in t:
                got += 1
                if got >= n:
                    break
        elif form == "fields":
            size = 0
            for ev in t:
                size += len(ev.payload["content"]) + (ev.pid & 0)
                got += 1
                if got >= n:
                    break
        elif form in ("arrow", "arrow-reader"):
            batches = []
            while got < n:
                b = pa.record_batch(t.poll_arrow(0.1))  # the default batch size
                batches.append(b)
                got += b.num_rows
            got = pa.Table.from_batches(batches).num_rows
        else:
            while got < n:
                got += len(t.poll_columns(0.1, 65536)["event_id"])
        dt = time.perf_counter() - t0
        st = t.stats()
    # Columns come in whole batches: the last one may hold the workload's
    # report line on stderr (comm "tbwork" too) after the N writes.
    if got < n or st["ring_full"] or st["payload_full"]:
        raise SystemExit(f"tracer-ebpf delivered {got} of {n}: {st}")
    return dt


def consume_bcc(form: str, n: int) -> float:
    import ctypes  # noqa: F401  (bcc's event() builds ctypes structures)
    from bcc import BPF

    pages = 1
    while pages * 4096 < n * 112 * 2:
        pages *= 2
    b = BPF(text=BCC_PROG % {"pages": pages})
    got = 0
    size = 0
    rb = b["rb"]

    def on_event_fields(ctx, data, sz):
        nonlocal got, size
        ev = rb.event(data)
        size += len(bytes(ev.data[:ev.count])) + (ev.pid & 0)
        got += 1

    def on_event_cast(ctx, data, sz):
        nonlocal got
        rb.event(data)
        got += 1

    rb.open_ring_buffer(on_event_fields if form == "fields" else on_event_cast)
    workload(n)
    time.sleep(0.1)
    t0 = time.perf_counter()
    while got < n:
        b.ring_buffer_consume()
        if got < n:
            b.ring_buffer_poll(100)
    dt = time.perf_counter() - t0
    if got < n:  # n + 1 when it also caught the workload's report line
        raise SystemExit(f"bcc delivered {got} of {n}")
    return dt


def child(spec: str, n: int) -> None:
    kind, form = spec.split(":")
    dt = (consume_tracer if kind == "tracer" else consume_bcc)(form, n)
    ru = resource.getrusage(resource.RUSAGE_SELF)
    print(json.dumps({"drain_s": dt, "cpu_s": ru.ru_utime + ru.ru_stime, "maxrss_mib": ru.ru_maxrss / 1024}))


def run_one(python: str, spec: str, n: int) -> Dict[str, float]:
    r = subprocess.run([python, __file__, "--child", spec, "--n", str(n)], capture_output=True, text=True,
                       timeout=600, cwd=ROOT)
    if r.returncode != 0:
        raise RuntimeError(f"{spec}: exit {r.returncode}: {r.stderr.strip()[-500:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--python", default=sys.executable, help="a Python with tracer_ebpf installed")
    ap.add_argument("--n", type=int, default=1_000_000, help="events per run")
    ap.add_argument("--reps", type=int, default=3, help="runs per consumer (the median is reported)")
    ap.add_argument("--out", default=str(BENCH / "results" / "python.md"))
    ap.add_argument("--child", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        child(a.child, a.n)
        return 0
    if os.geteuid() != 0:
        print("python_throughput: run as root (it loads BPF programs)", file=sys.stderr)
        return 2
    subprocess.run(["make", "-s", "-C", str(BENCH)], check=True)
    started = time.monotonic()
    rows: List[tuple] = []
    for name, spec in FORMS.items():
        python = SYS_PY if spec.startswith("bcc") else a.python
        runs = []
        for _ in range(a.reps):
            try:
                runs.append(run_one(python, spec, a.n))
            except (RuntimeError, subprocess.TimeoutExpired) as e:
                print(f"python_throughput: {name}: {e}", file=sys.stderr)
        if not runs:
            rows.append((name, None, None, None))
            continue
        drain = statistics.median(r["drain_s"] for r in runs)
        cpu = statistics.median(r["cpu_s"] for r in runs)
        rss = statistics.median(r["maxrss_mib"] for r in runs)
        rows.append((name, a.n / drain, cpu / a.n * 1e6, rss))
        print(f"{name:32} {a.n / drain / 1e6:6.2f} M events/s  {cpu / a.n * 1e6:6.2f} CPU µs/event  "
              f"{rss:6.0f} MiB peak RSS", flush=True)

    def rate_of(name: str):
        return next((r[1] for r in rows if r[0] == name), None)

    lines = [
        "# Events per second delivered to Python (64-byte writes)", "",
        f"Produced by `python3 bench/python_throughput.py --python {a.python} --n {a.n} --reps {a.reps}` "
        f"in {time.monotonic() - started:.0f} s on {datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds')}, "
        f"{platform.node()}: Linux {platform.release()}, {os.cpu_count()} CPUs, load average "
        f"{' '.join(open('/proc/loadavg').read().split()[:3])} at the end. Median of {a.reps} runs each.", "",
        "drain = events/s from the first event to the Nth with every event already captured (the most "
        "the consumer can deliver; tracer-ebpf with its default sizes); CPU µs/event = all CPU time of the consumer process (every thread, "
        "start-up included) / N. Ratios are against the bcc form doing the same work "
        "(iterator and columns vs callback; + fields vs callback + fields).", "",
        "| consumer | drain M events/s | vs bcc | CPU µs/event | peak RSS MiB |",
        "|---|---|---|---|---|",
    ]
    for name, rate, cpu_us, rss in rows:
        anchor = rate_of("bcc callback + fields" if "fields" in name else "bcc callback")
        ratio = f"{rate / anchor:.1f}x" if rate and anchor and not name.startswith("bcc") else "—"
        lines.append(f"| {name} | {rate / 1e6:.2f} | {ratio} | {cpu_us:.2f} | {rss:.0f} |" if rate
                     else f"| {name} | FAILED | — | — | — |")
    Path(a.out).write_text("\n".join(lines) + "\n")
    print(f"python_throughput: wrote {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
