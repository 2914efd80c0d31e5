#!/usr/bin/python3
"""What does each step of a write-capture BPF handler cost on this kernel?

Ablation by construction: bcc programs on tracepoint syscalls:sys_enter_write
that add one step at a time (the comm filter alone; + ring-buffer reserve and
submit of a record as large as tracer-ebpf's; + the boot-time timestamp;
+ pid/tid; + copying the 64-byte content), each measured with the kernel's BPF
statistics (run time / runs) over the same workload (`tbwork`, 200,000 writes
of 64 bytes to /dev/null), and tracer-ebpf's own handler (the Rust example
with default settings) in the same run. The difference between two rows is
what that step costs; the last bcc row is the floor for a handler that
records a timestamped event with its content.

    sudo /usr/bin/python3 bench/handler_floor.py [--n 200000] [--reps 5]

Needs python3-bpfcc and kernel headers as bench/run.py sets them up (run it
once first), target/release/example and target/bench/tbwork. Prints a
Markdown table (median of --reps); writes nothing else.
"""

import argparse
import os
import re
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TBWORK = ROOT / "target" / "bench" / "tbwork"
EXAMPLE = ROOT / "target" / "release" / "example"
RECORD = 152 + 64  # tracer-ebpf's write record: header + fixed slot + inline room

STEPS = [
    ("comm filter only", ""),
    ("+ reserve/submit a 216-byte record", "RESERVE"),
    ("+ boot-time timestamp", "RESERVE TS"),
    ("+ pid/tid", "RESERVE TS PID"),
    ("+ copy the 64-byte content", "RESERVE TS PID COPY"),
]

PROG = r"""
struct rec { u64 ts; u32 pid, tid; u8 data[%(size)d]; };
BPF_RINGBUF_OUTPUT(rb, %(pages)d);
TRACEPOINT_PROBE(syscalls, sys_enter_write) {
    char comm[16];
    bpf_get_current_comm(&comm, sizeof(comm));
    if (comm[0] != 't' || comm[1] != 'b' || comm[2] != 'w' || comm[3] != 'o' || comm[4] != 'r' || comm[5] != 'k')
        return 0;
#ifdef RESERVE
    struct rec *r = rb.ringbuf_reserve(sizeof(struct rec));
    if (!r)
        return 0;
#ifdef TS
    r->ts = bpf_ktime_get_boot_ns();
#endif
#ifdef PID
    u64 id = bpf_get_current_pid_tgid();
    r->pid = id >> 32;
    r->tid = (u32)id;
#endif
#ifdef COPY
    bpf_probe_read_user(r->data, 64, args->buf);
#endif
    rb.ringbuf_submit(r, BPF_RB_NO_WAKEUP);
#endif
    return 0;
}
"""


def prog_stats(pid: int):
    """(run time ns, runs) of the BPF programs process `pid` holds."""
    total = runs = 0
    for fd in os.listdir(f"/proc/{pid}/fdinfo"):
        try:
            info = Path(f"/proc/{pid}/fdinfo/{fd}").read_text()
        except OSError:
            continue
        if "prog_type:" in info:
            total += int(re.search(r"run_time_ns:\s*(\d+)", info).group(1))
            runs += int(re.search(r"run_cnt:\s*(\d+)", info).group(1))
    return total, runs


def workload(n: int) -> None:
    subprocess.run([str(TBWORK), "-n", str(n), "-s", "64", "-t", "1"], stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL, check=True)


def ns_per_run(before, after) -> float:
    return (after[0] - before[0]) / max(1, after[1] - before[1])


def bcc_step(flags: str, n: int) -> float:
    from bcc import BPF

    cflags = [f"-D{f}" for f in flags.split()]
    size = RECORD - 16
    b = BPF(text=PROG % {"size": size, "pages": (64 << 20) // 4096}, cflags=cflags)
    try:
        before = prog_stats(os.getpid())
        workload(n)
        return ns_per_run(before, prog_stats(os.getpid()))
    finally:
        b.cleanup()


def tracer_ebpf(n: int, example: Path = EXAMPLE) -> float:
    """BPF ns per write of the handler of `example` (a build of the Rust
    example) with default settings."""
    p = subprocess.Popen([str(example), "--events", "syscalls/sys_enter_write", "--comm", "tbwork"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                         preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        line = p.stderr.readline()  # "example: tracing ..." once attached
        if "tracing" not in line:
            raise RuntimeError(f"example did not start: {line}")
        before = prog_stats(p.pid)
        workload(n)
        return ns_per_run(before, prog_stats(p.pid))
    finally:
        p.send_signal(signal.SIGINT)
        try:
            p.wait(timeout=30)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=200_000, help="writes per measurement")
    ap.add_argument("--reps", type=int, default=5, help="measurements per row (median reported)")
    a = ap.parse_args()
    stats = Path("/proc/sys/kernel/bpf_stats_enabled")
    old = stats.read_text().strip()
    stats.write_text("1")
    try:
        rows = []
        for name, flags in STEPS:
            rows.append((f"bcc: {name}", [bcc_step(flags, a.n) for _ in range(a.reps)]))
        rows.append(("tracer-ebpf handler (defaults, --comm tbwork)", [tracer_ebpf(a.n) for _ in range(a.reps)]))
    finally:
        stats.write_text(old)
    print(f"BPF run time per write(2) of 64 bytes, {a.n} writes, median of {a.reps} "
          f"(min-max), kernel {os.uname().release}\n")
    print("| handler | ns per write | min-max |")
    print("|---|---|---|")
    for name, v in rows:
        print(f"| {name} | {statistics.median(v):.0f} | {min(v):.0f}-{max(v):.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
