#!/usr/bin/env python3
"""How long does a tracer take to start, and what does the kernel verify?

Start-up as a user meets it: a fresh Python process builds
`tracer_ebpf.Tracer(...)` (the constructor returns with every handler
loaded and attached) and closes it; the time of each is measured inside
that process. Each event set runs --reps times (a fresh process each,
--pause seconds apart so that the previous process's tracepoints are
detached), median and range. Then one tracer of each set stays open while
the kernel's own figure of each loaded program is read from `bpftool prog
show` and the program's fdinfo: the instructions the verifier walked
(`verified_insns`).

    sudo .venv/bin/python bench/startup.py [--reps 7] [--pause 1.5]

Needs the tracer_ebpf package in the running Python and bpftool. Prints a
Markdown report on stdout; writes nothing else.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys

SETS = {
    "write": ["syscalls/sys_enter_write"],
    "the ten typed events (the default)": [],
    "a generic tracepoint (sched/sched_switch)": ["sched/sched_switch"],
    "every syscall (syscalls/*)": ["syscalls/*"],
}

CHILD = """
import sys, time, tracer_ebpf
t0 = time.perf_counter()
tr = tracer_ebpf.Tracer(*sys.argv[1:])
t1 = time.perf_counter()
tr.close()
t2 = time.perf_counter()
print(t1 - t0, t2 - t1)
"""

HOLD = """
import os, sys, tracer_ebpf
with tracer_ebpf.Tracer(*sys.argv[1:]):
    print("ready", flush=True)
    sys.stdin.readline()
"""


def timings(events, reps, pause):
    starts, closes = [], []
    for _ in range(reps):
        out = subprocess.run([sys.executable, "-c", CHILD, *events], capture_output=True, text=True,
                             timeout=120, check=True).stdout.split()
        starts.append(float(out[0]))
        closes.append(float(out[1]))
        subprocess.run(["sleep", str(pause)], check=True)
    return starts, closes


def verified(events):
    """(program name, verified instructions) of each program a tracer of
    `events` holds, from the kernel."""
    p = subprocess.Popen([sys.executable, "-c", HOLD, *events], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         text=True)
    try:
        assert p.stdout.readline().strip() == "ready"
        insns = {}  # program id: verified instructions (the fd's fdinfo)
        for fd in os.listdir(f"/proc/{p.pid}/fdinfo"):
            try:
                info = dict(line.split(":", 1) for line in open(f"/proc/{p.pid}/fdinfo/{fd}").read().splitlines()
                            if ":" in line)
            except OSError:
                continue
            if "verified_insns" in info:  # a program's fd (a link's has a prog_id too)
                insns[int(info["prog_id"])] = int(info["verified_insns"])
        progs = json.loads(subprocess.run(["bpftool", "--json", "prog", "show"], capture_output=True, text=True,
                                          timeout=60, check=True).stdout)
        return sorted((q.get("name", "?"), insns[q["id"]], q.get("bytes_xlated", 0)) for q in progs if q["id"] in insns)
    finally:
        p.communicate("\n", timeout=60)


def fmt(xs):
    return f"{statistics.median(xs):.3f} ({min(xs):.3f}-{max(xs):.3f})"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--pause", type=float, default=1.5)
    a = ap.parse_args()
    uname = os.uname()
    print(f"# Start-up and close, and what the kernel verifies\n\nProduced by `bench/startup.py --reps {a.reps}` "
          f"on Linux {uname.release}, {os.cpu_count()} CPUs. Seconds, median of {a.reps} fresh processes "
          "(min-max), measured inside each process around the constructor and `close()`.\n")
    print("| event set | start-up s | close s |\n|---|---|---|")
    for name, events in SETS.items():
        s, c = timings(events, a.reps, a.pause)
        print(f"| {name} | {fmt(s)} | {fmt(c)} |")
    for name, events in SETS.items():
        rows = verified(events)
        print(f"\nPrograms of a tracer of {name}: instructions the verifier walked (`verified_insns`), "
              f"size after the verifier's rewrites (bytes).\n\n| program | verified insns | bytes |\n|---|---|---|")
        for prog, insns, size in rows:
            print(f"| {prog} | {insns} | {size} |")
        print(f"| all | {sum(r[1] for r in rows)} | {sum(r[2] for r in rows)} |")


if __name__ == "__main__":
    main()
