#!/usr/bin/python3
"""bcc ring-buffer anchor for bench/run.py.

Attaches to tracepoint syscalls:sys_enter_write, keeps writes to fd 1 by
tasks whose comm starts with --comm, copies up to --max-bytes of each
write's buffer with bpf_probe_read_user into a BPF ring-buffer sample
(bpf_ringbuf_reserve of a fixed-size record: the program is compiled per
case with MAXS = --max-bytes) and writes every sample to --out in the
bench record format:

    <u32 tid> <u32 count> <u32 caplen> <u32 flags> then caplen bytes
    flags: 1 = truncated (count > caplen), 2 = content lost (read fault)

Prints "bcc: ready startup_s=.." on stderr once BPF() has compiled, loaded
and attached the program, and on SIGINT/SIGTERM drains the ring and prints
"bcc: stats seen=.. reserve_failed=.. fault=.. delivered=..".

Needs the Debian python3-bpfcc package, run with /usr/bin/python3 (bcc is
installed for the system Python), and kernel headers at
/lib/modules/$(uname -r)/build (bench/run.py provides them).
"""

import argparse
import ctypes
import signal
import struct
import sys
import time

t_start = time.monotonic()

from bcc import BPF  # noqa: E402  (import time counts as start-up)

PROG = r"""
#define MAXS %(maxs)d

struct rec {
    u32 tid;
    u32 count;
    u32 caplen;
    u32 flags;
%(header_fields)s    u8 data[MAXS];
};

BPF_RINGBUF_OUTPUT(rb, %(pages)d);
BPF_PERCPU_ARRAY(counters, u64, 4);   /* 0 seen, 1 reserve failed, 2 fault */

static __always_inline void bump(int i) {
    u64 *v = counters.lookup(&i);
    if (v)
        (*v)++;
}

TRACEPOINT_PROBE(syscalls, sys_enter_write) {
    if (args->fd != 1)
        return 0;
    char comm[16] = {};
    bpf_get_current_comm(&comm, sizeof(comm));
%(comm_check)s
    bump(0);
    struct rec *r = rb.ringbuf_reserve(sizeof(struct rec));
    if (!r) {
        bump(1);
        return 0;
    }
    u64 n = args->count;
    u32 flags = 0;
    if (n > MAXS) {
        n = MAXS;
        flags |= 1;
    }
    u64 pid_tgid = bpf_get_current_pid_tgid();
    r->tid = (u32)pid_tgid;
%(header_fill)s
    r->count = (u32)args->count;
    if (bpf_probe_read_user(r->data, n, (void *)args->buf) != 0) {
        n = 0;
        flags |= 2;
        bump(2);
    }
    r->caplen = (u32)n;
    r->flags = flags;
    rb.ringbuf_submit(r, 0);
    return 0;
}
"""

HDR = struct.Struct("<IIII")

# --full-header: the common header fields tracer-ebpf records for every event
# that bcc can read correctly here (its kernel headers are Debian's 6.1, whose
# task_struct layout is not this kernel's, so ppid/upid are left out).
FULL_FIELDS = "    u64 timestamp_ns;\n    u32 pid;\n    u32 pad;\n    char comm[16];\n"
FULL_FILL = (
    "    r->timestamp_ns = bpf_ktime_get_boot_ns();\n"
    "    r->pid = pid_tgid >> 32;\n"
    "    __builtin_memcpy(r->comm, comm, sizeof(comm));\n"
)
FULL = struct.Struct("<QII16s")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--comm", default="tbwork")
    ap.add_argument("--max-bytes", type=int, required=True)
    ap.add_argument("--ring-mib", type=int, default=32, help="ring-buffer size (power of two)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--full-header", action="store_true",
                    help="also record timestamp, pid and comm per event (as tracer-ebpf does)")
    a = ap.parse_args()

    comm = a.comm.encode()[:15]
    checks = "\n".join(f"    if (comm[{i}] != {b}) return 0;" for i, b in enumerate(comm))
    pages = (a.ring_mib << 20) // 4096
    # The ring must hold at least a couple of the fixed-size records.
    while pages * 4096 < 4 * (a.max_bytes + 4096):
        pages *= 2
    text = PROG % {
        "maxs": a.max_bytes,
        "pages": pages,
        "comm_check": checks,
        "header_fields": FULL_FIELDS if a.full_header else "",
        "header_fill": FULL_FILL if a.full_header else "",
    }
    skip = FULL.size if a.full_header else 0

    stop = False

    def on_signal(signum, frame):
        nonlocal stop
        stop = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)

    out = open(a.out, "wb", buffering=1 << 20)
    delivered = 0

    def on_sample(ctx, data, size):
        nonlocal delivered
        tid, count, caplen, flags = HDR.unpack(ctypes.string_at(data, HDR.size))
        if skip:  # a real tool would print these; reading them is the least it does
            FULL.unpack(ctypes.string_at(data + HDR.size, skip))
        out.write(HDR.pack(tid, count, caplen, flags))
        out.write(ctypes.string_at(data + HDR.size + skip, caplen))
        delivered += 1

    b = BPF(text=text)
    b["rb"].open_ring_buffer(on_sample)
    print(f"bcc: ready startup_s={time.monotonic() - t_start:.3f} ring_bytes={pages * 4096}", file=sys.stderr, flush=True)
    while not stop:
        b.ring_buffer_poll(100)
        out.flush()  # so the driver sees progress (it waits for output to go quiet)
    b.ring_buffer_consume()
    out.close()
    c = b["counters"]
    tot = [sum(c[ctypes.c_int(i)]) for i in range(3)]
    print(
        f"bcc: stats seen={tot[0]} reserve_failed={tot[1]} fault={tot[2]} delivered={delivered}",
        file=sys.stderr,
        flush=True,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
