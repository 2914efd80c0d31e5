"""Python-iterator consumer of tracer-ebpf, for bench/run.py ("py-iter").

Iterates ``for ev in tracer_ebpf.Tracer(...)`` the way a user would and
writes each write-to-fd-1 event to --out in the bench record format:

    <u32 tid> <u32 count> <u32 caplen> <u32 flags> then caplen bytes
    flags: 1 = content truncated; content lost: 2 = fault, 4 = payload_full,
           8 = another reason

Prints "py-iter: ready startup_s=.." on stderr once the Tracer is attached,
and after SIGINT or SIGTERM (which end the iteration) drains what is left and
prints "py-iter: stats k=v ..." with the tracer's counters.

Run with the Python that has the tracer_ebpf extension installed.
"""

import argparse
import signal
import struct
import sys
import time

t_start = time.monotonic()

REC = struct.Struct("<IIII")
LOST_FLAGS = {"fault": 2, "payload_full": 4}


class _Stop(Exception):
    pass


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--comm", default="tbwork")
    ap.add_argument("--content-max", type=int, default=None)
    ap.add_argument("--out", required=True)
    a = ap.parse_args()

    import tracer_ebpf

    kw = {"comm": [a.comm]}
    if a.content_max:
        kw["content_max"] = a.content_max
    t = tracer_ebpf.Tracer("syscalls/sys_enter_write", **kw)
    print(f"py-iter: ready startup_s={time.monotonic() - t_start:.3f}", file=sys.stderr, flush=True)
    out = open(a.out, "wb", buffering=1 << 20)
    n = 0

    def emit(ev) -> None:
        nonlocal n
        p = ev.payload
        if p.get("fd") != 1:
            return
        data = p.get("content")
        info = ev.payload_info.get("content", {})
        lost = info.get("lost")
        if data is None and not lost:
            lost = "null"
        flags = (1 if info.get("truncated") else 0) | LOST_FLAGS.get(lost, 8 if lost else 0)
        data = data or b""
        out.write(REC.pack(ev.tid, p.get("count", 0) & 0xFFFFFFFF, len(data), flags))
        out.write(data)
        n += 1

    # SIGINT/SIGTERM raise _Stop rather than KeyboardInterrupt: the library
    # closes the tracer on KeyboardInterrupt (so an interrupted notebook cell
    # leaves nothing attached), and this consumer wants to drain and read the
    # counters first.
    def on_signal(signum, frame):
        raise _Stop()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    last_flush = time.monotonic()
    try:
        for ev in t:
            emit(ev)
            now = time.monotonic()
            if now - last_flush > 0.05:
                out.flush()
                last_flush = now
    except _Stop:
        pass
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    for ev in t.drain():
        emit(ev)
    out.close()
    stats = t.stats()
    t.close()
    pairs = " ".join(f"{k}={v}" for k, v in stats.items())
    print(f"py-iter: stats {pairs} written={n}", file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
