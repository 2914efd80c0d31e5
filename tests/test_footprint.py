"""Small defaults that still lose nothing, on the real kernel.

- A default tracer holds at most 64 MiB of kernel memory on this machine
  (counted from the kernel's own figures for the maps this process owns).
- With default settings, a burst of 2,000 self-checking writes of 64 KiB
  (125 MiB, more than twice what the kernel buffers hold) from 4 threads,
  while the consumer sleeps: the reader thread drains the payload area into
  the userspace queue while the burst runs, so more arrives intact than
  the whole payload area holds (without the reader thread, at most that),
  and every write is delivered with its content or a counted reason.
  (The payload area is one pool of chunks shared by the CPUs.)
- An idle default tracer adds at most 96 MiB of RSS, and memory a burst took
  is given back once its events are consumed.
- Started in a cgroup limited to 256 MiB, a default tracer sizes its kernel
  buffers and queue from that limit, works, and is not OOM-killed: the same
  burst overflows its small queue and everything not delivered is counted.
- Buffers the kernel cannot allocate give an error that says what was
  asked and which options lower it.
"""

import contextlib
import json
import os
import signal
import struct
import subprocess
import sys
import textwrap
import time
import zlib
from pathlib import Path

import pytest

import tracer_ebpf
from conftest import PY, gated_process

MIB = 1 << 20
THREADS = 4
PER_THREAD = 500
SIZE = 64 * 1024
HDR = struct.Struct("<4sIII")  # magic, thread, sequence number, crc32 of the body

# Four threads, each writing PER_THREAD self-checking contents of SIZE bytes
# to fd 1, all prepared before the first write so the burst is only writes.
WRITER = textwrap.dedent(r"""
    import os, struct, sys, threading, zlib
    threads, per, size = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    block = os.urandom(2 * size)
    def payloads(t):
        out = []
        for i in range(per):
            off = (t * 7919 + i * 4099) % size
            body = block[off:off + size - 16]
            out.append(struct.pack("<4sIII", b"TBFP", t, i, zlib.crc32(body)) + body)
        return out
    work = [payloads(t) for t in range(threads)]
    start = threading.Barrier(threads)
    def run(t):
        start.wait()
        for p in work[t]:
            os.write(1, p)
    ts = [threading.Thread(target=run, args=(t,)) for t in range(threads)]
    for t in ts: t.start()
    for t in ts: t.join()
""")


def check(events, per_cpu=None):
    """(set of (thread, seq) delivered intact, contents lost, corrupt).
    `per_cpu`, when given, counts the intact contents by the CPU that wrote them."""
    intact, lost, corrupt = set(), 0, 0
    for ev in events:
        content = ev.payload["content"]
        if content is None:
            assert ev.payload_info["content"]["lost"] == "payload_full", ev
            lost += 1
            continue
        magic, thread, seq, crc = HDR.unpack_from(content)
        if magic == b"TBFP" and len(content) == SIZE and zlib.crc32(content[HDR.size:]) == crc:
            intact.add((thread, seq))
            if per_cpu is not None:
                per_cpu[ev.cpu] = per_cpu.get(ev.cpu, 0) + 1
        else:
            corrupt += 1
    return intact, lost, corrupt


def bpf_maps() -> dict:
    """Every BPF map on the system: id -> kernel memory (memlock), as bpftool
    reports them."""
    out = subprocess.run(["bpftool", "map", "show", "--json"], capture_output=True, text=True, check=True).stdout
    return {m["id"]: int(m["bytes_memlock"]) for m in json.loads(out)}


def own_map_ids() -> set:
    """Ids of the BPF maps this process holds a file descriptor of. (libbpf
    creates and closes small maps while it probes the kernel's features;
    their freeing is deferred, so bpftool may still list them afterwards.)"""
    ids = set()
    for fd in os.listdir("/proc/self/fdinfo"):
        try:
            info = Path(f"/proc/self/fdinfo/{fd}").read_text()
        except OSError:
            continue  # the fd listdir itself used, closed since
        for line in info.splitlines():
            if line.startswith("map_id:"):
                ids.add(int(line.split()[1]))
    return ids


def test_default_kernel_memory_is_at_most_64_mib():
    before = bpf_maps()
    with tracer_ebpf.Tracer("syscalls/sys_enter_write") as t:
        ours = own_map_ids()
        held = sum(v for k, v in bpf_maps().items() if k not in before and k in ours)
        mem = t.memory()
    assert held > 8 * MIB, held  # the maps really are ours and counted
    assert held <= 64 * MIB, (held, mem)
    # The tracer's own figure is the kernel's.
    assert mem["kernel_bytes"] == held, (mem, held)
    assert mem["payload_bytes_per_cpu"] * mem["ncpus"] + mem["ring_bytes"] <= held


def sleeping_consumer_burst(**options):
    """The burst traced by a default tracer whose consumer sleeps until the
    writer has exited. Returns (intact set, lost, stats, memory(), intact
    contents by CPU)."""
    with gated_process([PY, "-I", "-S", "-c", WRITER, str(THREADS), str(PER_THREAD), str(SIZE)],
                       stdout=subprocess.DEVNULL) as (proc, go):
        with tracer_ebpf.Tracer("syscalls/sys_enter_write", pids=[proc.pid], **options) as t:
            mem = t.memory()
            go()
            assert proc.wait(timeout=120) == 0
            # The consumer wakes only now; whatever moved meanwhile, the
            # reader thread moved.
            deadline = time.monotonic() + 10
            while t.stats()["records"] > t.stats()["delivered"] + t.stats()["queued"] and time.monotonic() < deadline:
                time.sleep(0.01)
            events = t.drain()
            st = t.stats()
    per_cpu: dict = {}
    intact, lost, corrupt = check(events, per_cpu)
    assert corrupt == 0, (corrupt, st)
    # Every write is delivered, and a content that is missing says why and is counted.
    assert len(events) == THREADS * PER_THREAD - st["ring_full"] == st["delivered"], st
    assert lost == st["payload_full"], (lost, st)
    return intact, lost, st, mem, per_cpu


def test_the_reader_drains_a_burst_far_larger_than_the_kernel_buffers_while_the_consumer_sleeps():
    intact, lost, st, mem, per_cpu = sleeping_consumer_burst()
    burst = THREADS * PER_THREAD * SIZE
    pool = mem["payload_bytes_per_cpu"] * mem["ncpus"]  # one pool, shared by the CPUs
    assert burst > 2 * pool, (burst, mem)  # the kernel buffers alone could not hold it
    # The pool's chunks are given back only by the reader thread (the
    # consumer is asleep), and it held at most `pool` bytes at any time:
    # contents beyond that arrived because the reader drained it during the
    # burst. (Whether all of the burst arrives depends on how fast this
    # machine provides fresh memory for the queue against how fast the
    # writers write: see bench/results/drain.md.)
    assert len(intact) * SIZE > pool + SIZE, (len(intact), per_cpu, lost, st, mem)
    assert len(intact) + lost == THREADS * PER_THREAD - st["ring_full"], st


def test_without_the_reader_thread_the_same_burst_keeps_only_what_the_kernel_buffers_hold():
    # The control of the test above: the same check fails without the drain.
    intact, lost, st, mem, per_cpu = sleeping_consumer_burst(reader_thread=False)
    pool = mem["payload_bytes_per_cpu"] * mem["ncpus"]
    assert 0 < len(intact) * SIZE <= pool, (len(intact), per_cpu, st, mem)
    assert lost > 0 and st["payload_full"] == lost, st


def rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def test_an_idle_default_tracer_grows_rss_by_at_most_96_mib():
    before = rss()
    with tracer_ebpf.Tracer("syscalls/sys_enter_write") as t:
        idle = rss() - before
        # The mapped kernel buffers count in RSS: they are most of it.
        assert idle <= 96 * MIB, (idle >> 20, t.memory())
        assert idle >= t.memory()["payload_bytes_per_cpu"], (idle >> 20, t.memory())  # measured what it should


def test_memory_a_burst_took_is_given_back_once_its_events_are_consumed():
    # A payload area that holds the whole burst, so that the queue surely
    # takes all 125 MiB of it whatever else the machine is doing.
    burst = THREADS * PER_THREAD * SIZE
    with gated_process([PY, "-I", "-S", "-c", WRITER, str(THREADS), str(PER_THREAD), str(SIZE)],
                       stdout=subprocess.DEVNULL) as (proc, go):
        with tracer_ebpf.Tracer("syscalls/sys_enter_write", pids=[proc.pid], payload_bytes_per_cpu=burst + 16 * MIB) as t:
            idle = rss()
            go()
            assert proc.wait(timeout=120) == 0
            deadline = time.monotonic() + 10
            while t.stats()["queued"] < THREADS * PER_THREAD and time.monotonic() < deadline:
                time.sleep(0.01)
            peak = t.stats()["queue_peak_bytes"]
            held = rss() - idle
            intact, lost, corrupt = check(t.drain())
            after = rss() - idle
    assert len(intact) == THREADS * PER_THREAD and lost == corrupt == 0, (len(intact), lost, corrupt)
    assert peak >= burst and held >= burst // 2, (peak >> 20, held >> 20)  # the burst did take memory
    # Given back: what stays is the warm blocks and allocator slack.
    assert after <= 32 * MIB, (held >> 20, after >> 20, peak >> 20)


def test_a_lagging_consumer_takes_a_queued_burst_in_batches_of_bounded_bytes():
    # tracer-example turns each batch into JSON text at once: 65,536 queued
    # events of 4 KiB each took it past 1.6 GB. A batch now stops at 16 MiB
    # of events (contents and event structs), whatever `max_events` says.
    per, batch_bytes = 500, 16 * MIB
    with gated_process([PY, "-I", "-S", "-c", WRITER, "1", str(per), str(SIZE)],
                       stdout=subprocess.DEVNULL) as (proc, go):
        with tracer_ebpf.Tracer("syscalls/sys_enter_write", pids=[proc.pid], payload_bytes_per_cpu=64 * MIB) as t:
            go()
            assert proc.wait(timeout=120) == 0
            deadline = time.monotonic() + 10
            while t.stats()["queued"] < per and time.monotonic() < deadline:
                time.sleep(0.01)
            assert t.stats()["queued"] == per, t.stats()
            counts, lines = [], []
            while sum(counts) < per and len(counts) < 100:
                data, n = t.read_json(timeout=1.0, max_events=65536)
                assert n * SIZE <= batch_bytes and len(data) <= 7 * batch_bytes, (n, len(data))
                counts.append(n)
                lines += data.splitlines()
    assert sum(counts) == len(lines) == per and len(counts) >= 2, counts
    assert all(json.loads(line)["payload"]["content"] is not None for line in lines)


# -- a memory cgroup -------------------------------------------------------

def _cgroup_mounts():
    """(v2 mount point with the memory controller, v1 memory mount point)."""
    v2 = v1 = None
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        pre, _, post = line.partition(" - ")
        fields, rest = pre.split(), post.split()
        if rest[0] == "cgroup2":
            ctrl = Path(fields[4]) / "cgroup.controllers"
            if ctrl.exists() and "memory" in ctrl.read_text().split():
                v2 = fields[4]
        elif rest[0] == "cgroup" and "memory" in rest[2].split(","):
            v1 = fields[4]
    return v2, v1


@contextlib.contextmanager
def memory_cgroup(limit: int):
    """A new memory cgroup limited to `limit` bytes (cgroup v2 where its
    memory controller is mounted, else v1). Yields a function that moves a
    pid into it. Everything left in it is killed at the end."""
    v2, v1 = _cgroup_mounts()
    name = f"tracer-ebpf-test-{os.getpid()}"
    if v2:
        parent = Path(v2)
        sub = (parent / "cgroup.subtree_control")
        if "memory" not in sub.read_text().split():
            sub.write_text("+memory")
        d = parent / name
        d.mkdir()
        (d / "memory.max").write_text(str(limit))
        (d / "memory.swap.max").write_text("0") if (d / "memory.swap.max").exists() else None
    elif v1:
        d = Path(v1) / name
        d.mkdir()
        (d / "memory.limit_in_bytes").write_text(str(limit))
    else:
        pytest.fail("no memory cgroup controller mounted (neither v2 nor v1)")
    try:
        yield lambda pid: (d / "cgroup.procs").write_text(str(pid))
    finally:
        for _ in range(50):
            pids = [p for p in (d / "cgroup.procs").read_text().split()]
            if not pids:
                break
            for p in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(p), signal.SIGKILL)
            time.sleep(0.05)
        d.rmdir()


# Runs inside the cgroup: a default tracer on a writer of its own (started
# in the same cgroup), a consumer that sleeps until the writer is done, then
# streams the events out; prints what it saw as JSON.
IN_CGROUP = textwrap.dedent(r"""
    import json, struct, subprocess, sys, time, zlib
    import tracer_ebpf
    from tracer_ebpf.run import release, start_gated
    writer, threads, per, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    proc, gate = start_gated([sys.executable, "-I", "-S", "-c", writer, str(threads), str(per), str(size)],
                             stdout=subprocess.DEVNULL)
    out = {"intact": 0, "lost": 0, "corrupt": 0, "events": 0}
    with tracer_ebpf.Tracer("syscalls/sys_enter_write", pids=[proc.pid]) as t:
        out["memory"] = t.memory()
        release(gate)
        proc.wait(timeout=120)
        time.sleep(0.2)
        while True:
            evs = t.read(max_events=200, timeout=0.2)
            if not evs:
                break
            for ev in evs:
                out["events"] += 1
                c = ev.payload["content"]
                if c is None:
                    out["lost"] += 1
                    continue
                magic, th, seq, crc = struct.unpack_from("<4sIII", c)
                ok = magic == b"TBFP" and len(c) == size and zlib.crc32(c[16:]) == crc
                out["intact" if ok else "corrupt"] += 1
        out["stats"] = t.stats()
    print(json.dumps(out))
""")


def test_a_default_tracer_in_a_256_mib_cgroup_sizes_itself_from_the_limit_and_counts_what_it_cannot_hold():
    limit = 256 * MIB
    with memory_cgroup(limit) as move:
        with gated_process([PY, "-c", IN_CGROUP, WRITER, str(THREADS), str(PER_THREAD), str(SIZE)],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE) as (proc, go):
            move(proc.pid)
            go()
            try:
                out, err = proc.communicate(timeout=180)
            except subprocess.TimeoutExpired:
                proc.kill()
                out, err = proc.communicate()
                pytest.fail(f"timed out: {err[-2000:]!r}")
    assert proc.returncode == 0, (proc.returncode, err[-3000:])  # -9 would be the OOM killer
    r = json.loads(out)
    mem, st = r["memory"], r["stats"]
    # Sized from the cgroup's limit, not from the host's RAM.
    assert mem["queue_bytes"] == limit // 8, mem
    # Kernel memory budget: limit / 384, at least 12 MiB (docs/protocol.md).
    assert mem["kernel_bytes"] <= 12 * MIB, mem
    assert mem["ring_bytes"] + mem["payload_bytes_per_cpu"] * mem["ncpus"] < 12 * MIB, mem
    # Every write delivered or counted; nothing corrupt; what the small queue
    # could not take shows as payload_full in the events and the counters.
    n = THREADS * PER_THREAD
    assert r["corrupt"] == 0, r
    assert r["events"] == st["delivered"], r
    assert st["delivered"] + st["ring_full"] == n, r
    assert r["lost"] == st["payload_full"], r
    assert r["intact"] + r["lost"] == r["events"], r
    assert st["queue_peak_bytes"] <= mem["queue_bytes"] + SIZE + 4096, r


def test_buffers_the_kernel_cannot_allocate_give_a_clear_error():
    # 600 MiB per CPU in a cgroup of 128 MiB: the kernel refuses the map.
    code = textwrap.dedent("""
        import sys, tracer_ebpf
        try:
            tracer_ebpf.Tracer("syscalls/sys_enter_write", payload_bytes_per_cpu=600 << 20)
        except tracer_ebpf.TracerMemoryError as e:
            assert isinstance(e, MemoryError)
            print(e)
            sys.exit(3)
    """)
    with memory_cgroup(128 * MIB) as move:
        with gated_process([PY, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as (proc, go):
            move(proc.pid)
            go()
            out, err = proc.communicate(timeout=60)
    assert proc.returncode == 3, (proc.returncode, out, err[-2000:])
    assert "600.0 MiB" in out or "637.5 MiB" in out, out  # what was asked, per CPU
    assert "payload_bytes_per_cpu" in out and "128.0 MiB" in out, out  # what lowers it, the limit
