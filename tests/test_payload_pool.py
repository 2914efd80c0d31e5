"""The payload area is one pool of 1 MiB chunks shared by every CPU, on the
real kernel (docs/protocol.md).

- A writer pinned to one CPU, traced without the reader thread and with a
  consumer that reads nothing until it exits (so no chunk is given back),
  fills the whole pool, not one CPU's share of it: exactly pool / SIZE of
  its contents arrive intact, the first ones, and every other write arrives
  flagged `payload_full` and counted.
- Chunks that were read go back to the pool: a second writer, pinned to
  another CPU, then gets the whole pool again.
"""

import os
import struct
import subprocess
import zlib

import pytest

import tracer_ebpf
from conftest import PY, gated_process

MIB = 1 << 20
SIZE = 64 * 1024
WRITES = 200  # 12.5 MiB: more than the pool below
POOL_PER_CPU = 4 * MIB
HDR = struct.Struct("<4sII")  # magic, sequence number, crc32 of the body

# Pins itself to CPU argv[1], then writes WRITES self-checking contents to fd 1.
WRITER = r"""
import os, struct, sys, zlib
os.sched_setaffinity(0, {int(sys.argv[1])})
n, size = int(sys.argv[2]), int(sys.argv[3])
block = os.urandom(2 * size)
for i in range(n):
    off = (i * 4099) % size
    body = block[off:off + size - 12]
    os.write(1, struct.pack("<4sII", b"TBPP", i, zlib.crc32(body)) + body)
"""

pytestmark = pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs two CPUs to pin the writers to")


def intact_sequence(events, pid):
    """Per event of `pid` in order: its sequence number if its content is
    intact, None if the content was lost for lack of room."""
    out = []
    for ev in events:
        if ev.pid != pid:
            continue
        content = ev.payload["content"]
        if content is None:
            assert ev.payload_info["content"]["lost"] == "payload_full", ev
            out.append(None)
            continue
        magic, seq, crc = HDR.unpack_from(content)
        assert magic == b"TBPP" and len(content) == SIZE and zlib.crc32(content[HDR.size:]) == crc, ev
        out.append(seq)
    return out


def test_one_cpu_fills_the_whole_pool_and_read_chunks_serve_another_cpu():
    cpus = sorted(os.sched_getaffinity(0))[:2]
    cmd = lambda cpu: [PY, "-I", "-S", "-c", WRITER, str(cpu), str(WRITES), str(SIZE)]  # noqa: E731
    with gated_process(cmd(cpus[0]), stdout=subprocess.DEVNULL) as (first, go_first), \
         gated_process(cmd(cpus[1]), stdout=subprocess.DEVNULL) as (second, go_second):
        with tracer_ebpf.Tracer("syscalls/sys_enter_write", pids=[first.pid, second.pid],
                                payload_bytes_per_cpu=POOL_PER_CPU, reader_thread=False) as t:
            mem = t.memory()
            pool = mem["payload_bytes_per_cpu"] * mem["ncpus"]
            assert mem["payload_bytes_per_cpu"] == POOL_PER_CPU and WRITES * SIZE > pool, mem
            fits = pool // SIZE

            go_first()
            assert first.wait(timeout=60) == 0
            got = intact_sequence(t.drain(), first.pid)
            st = t.stats()
            # All of the pool, in order, then nothing: a per-CPU share
            # (pool / ncpus) would have stopped at half of that.
            assert got == list(range(fits)) + [None] * (WRITES - fits), (got[fits - 2:fits + 2], st, mem)
            assert st["payload_full"] == WRITES - fits and st["ring_full"] == 0, st

            # Everything was read: every chunk is back in the pool, and the
            # other CPU's writer gets all of it.
            go_second()
            assert second.wait(timeout=60) == 0
            got = intact_sequence(t.drain(), second.pid)
            st = t.stats()
            assert got == list(range(fits)) + [None] * (WRITES - fits), (got[fits - 2:fits + 2], st, mem)
            assert st["payload_full"] == 2 * (WRITES - fits) and st["delivered"] == 2 * WRITES, st
