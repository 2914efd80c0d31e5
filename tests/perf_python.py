"""Throughput of the Python front end on 64-byte writes (not a pytest module).

    python tests/perf_python.py [--events N] [--size BYTES]

A `dd` writing N blocks of --size bytes to /dev/null (through fd 1) is traced
with pid filtering; two measurements per form:

- drain: the writes happen first (the buffers are sized to hold them all),
  then the consumer is timed alone: the most it can take (decode in Rust +
  Python objects);
- live: the consumer runs while dd writes: bounded by how fast dd (with the
  tracepoint) can write on this machine.

Forms: the iterator (`for ev in t`), the iterator touching `ev.pid` and
`ev.payload["content"]`, the columnar `poll_columns()`, and `poll_json()`.
"""

from __future__ import annotations

import argparse
import subprocess
import tempfile
import threading
import time
from typing import Callable, Dict

import tracer_ebpf
from tracer_ebpf.run import release, start_gated

Consumer = Callable[[tracer_ebpf.Tracer, int], int]


def iterate(t: tracer_ebpf.Tracer, n: int) -> int:
    got = 0
    for _ev in t:
        got += 1
        if got >= n:
            break
    return got


def iterate_fields(t: tracer_ebpf.Tracer, n: int) -> int:
    got = 0
    size = 0
    for ev in t:
        size += len(ev.payload["content"] or b"") + (ev.pid & 0)
        got += 1
        if got >= n:
            break
    return got


def columns(t: tracer_ebpf.Tracer, n: int) -> int:
    got = 0
    while got < n:
        got += len(t.poll_columns(65536, 0.1)["event_id"])
    return got


def json_lines(t: tracer_ebpf.Tracer, n: int) -> int:
    got = 0
    native = t._n()
    while got < n:
        got += native.poll_json(65536, 0.1)[1]
    return got


FORMS: Dict[str, Consumer] = {
    "iterator": iterate,
    "iterator+fields": iterate_fields,
    "columns": columns,
    "json": json_lines,
}


def run(consume: Consumer, n: int, size: int, drain: bool, source: str) -> float:
    cmd = ["dd", f"if={source}", "of=/dev/null", f"bs={size}", f"count={n}", "status=none"]
    proc, gate = start_gated(cmd)
    # Room for every record and payload when draining afterwards.
    with tracer_ebpf.Tracer("syscalls/sys_enter_write", pids=[proc.pid], ring_bytes=1 << 30,
                            payload_bytes_per_cpu=1 << 29) as t:
        release(gate)
        if drain:
            proc.wait()
            time.sleep(0.2)
        watchdog = threading.Timer(120, t.close)  # ends a consumer that waits for too long
        watchdog.start()
        t0 = time.perf_counter()
        try:
            got = consume(t, n)
        except ValueError:  # polled after the watchdog closed the tracer
            got = -1
        dt = time.perf_counter() - t0
        watchdog.cancel()
        st = t.stats()
    proc.wait()
    assert got == n, (got, n, st)
    assert st["ring_full"] == 0 and st["payload_full"] == 0, st
    return n / dt


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=2_000_000)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--forms", default=",".join(FORMS))
    ap.add_argument("--text", action="store_true", help="write printable text (default: NUL bytes, the "
                    "costliest case for JSON)")
    a = ap.parse_args()
    subprocess.run(["dd", "--version"], capture_output=True, check=True)
    with tempfile.NamedTemporaryFile() as f:
        if a.text:
            f.write(((b"0123456789abcdef" * (a.size // 16 + 1))[:a.size - 1] + b"\n") * a.events)
            f.flush()
        for name in a.forms.split(","):
            for drain in (True, False):
                rate = run(FORMS[name], a.events, a.size, drain, f.name if a.text else "/dev/zero")
                print(f"{name:16} {'drain' if drain else 'live':5} {rate / 1e6:6.2f} M events/s", flush=True)


if __name__ == "__main__":
    main()
