"""Issue 8 (reliability): overload and soak, on the real kernel.

Overload: the smallest buffers (a payload pool of two 1 MiB chunks per CPU,
shared by the CPUs, a 64 KiB ring, no reader thread: the kernel buffers are drained only by the test's
own polls, so "stalled" means stalled), a writer producing 32 KiB
self-checking writes as fast as it can, traced by pid. Whatever the
consumer does (stalled, keeping up, stalling and resuming), nothing
delivered is corrupt and every loss is counted:
    delivered + ring_full == writes           (busy is 0, asserted)
    events whose content is null == payload_full
    decode_errors == overwritten == 0

Soak: a steady ~100k events/s for 60 s (10 minutes with -m slow) consumed
by a Python Tracer in a child process: its RSS stays flat and the counters
add up at the end.

The long variants are marked slow and run only when selected
(`pytest -m slow`) or with TRACER_EBPF_SLOW=1.
"""

import json
import os
import struct
import subprocess
import sys
import time
import zlib
from collections import defaultdict

import pytest

import tracer_ebpf
from conftest import PY, gated_process

WRITE_EVENT = "syscalls/sys_enter_write"
SIZE = 32 * 1024
CHUNK = 1 << 20  # one payload chunk (TB_CHUNK_SIZE); the smallest area is 2 per CPU, checked in overload()
TINY = dict(ring_bytes=65536, payload_bytes_per_cpu=1, reader_thread=False)
HDR = struct.Struct("<4sIII")  # magic, sequence number, thread, crc32 of the body


def _slow_selected(config) -> bool:
    return "slow" in (config.getoption("markexpr") or "") or os.environ.get("TRACER_EBPF_SLOW") == "1"


@pytest.fixture
def slow_only(request):
    if not _slow_selected(request.config):
        pytest.skip("long variant: run with -m slow or TRACER_EBPF_SLOW=1")


# -- the self-checking writer ---------------------------------------------------

# argv: N THREADS SIZE. Write i (0 <= i < N, by thread i % THREADS) is
# HDR(b"TBRL", i, thread, crc32(body)) + body, where body is a slice of a
# fixed pseudo-random block chosen by i: a reader can check both that the
# write is intact (crc) and that it is write i's (offset). It makes no other
# write(2) call, so every event of its pid is one of these writes.
WRITER = r"""
import os, struct, sys, threading, zlib
N, T, SIZE = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
hdr = struct.Struct("<4sIII")
base = bytes((i * 7919 + (i >> 8) * 31 + (i >> 16)) & 0xff for i in range(1 << 17))
def work(k):
    w = os.write
    for i in range(k, N, T):
        off = (i * 4099) % (len(base) - SIZE)
        body = base[off:off + SIZE - hdr.size]
        w(1, hdr.pack(b"TBRL", i, k, zlib.crc32(body)) + body)
ts = [threading.Thread(target=work, args=(k,)) for k in range(T)]
for t in ts: t.start()
for t in ts: t.join()
"""

_BASE = bytes((i * 7919 + (i >> 8) * 31 + (i >> 16)) & 0xFF for i in range(1 << 17))


def verify_content(c: bytes, threads: int):
    """The write's sequence number if `c` is intact, else raises AssertionError."""
    assert len(c) == SIZE, f"content of {len(c)} bytes, expected {SIZE}"
    magic, i, k, crc = HDR.unpack_from(c)
    body = c[HDR.size:]
    assert magic == b"TBRL", f"bad magic {magic!r}"
    assert zlib.crc32(body) == crc, f"write {i}: checksum mismatch"
    off = (i * 4099) % (len(_BASE) - SIZE)
    assert body == _BASE[off:off + SIZE - HDR.size], f"write {i}: intact but not write {i}'s bytes"
    assert k == i % threads, f"write {i} claims thread {k}"
    return i


class Tally:
    """Checks every event as it arrives, keeps only counts (10,000 x 32 KiB
    events would not fit comfortably in memory otherwise)."""

    def __init__(self, pid: int, threads: int):
        self.pid, self.threads = pid, threads
        self.events = 0
        self.with_content = 0
        self.null = 0
        self.corrupt = []
        self.seen = set()
        self.dups = 0
        self.per_cpu = defaultdict(list)  # cpu -> [has content] in delivery order
        self.pool_bytes = 0  # the payload pool of the tracer (set by overload())
        self.tids = set()

    def add(self, evs):
        for e in evs:
            self.events += 1
            assert e.event_type == WRITE_EVENT and e.pid == self.pid, e
            p = e.payload
            assert p["fd"] == 1 and p["count"] == SIZE, p
            self.tids.add(e.tid)
            c = p["content"]
            self.per_cpu[e.cpu].append(c is not None)
            if c is None:
                self.null += 1
                info = e.payload_info["content"]
                assert info["lost"] == "payload_full", info
                assert e.payload_lost
                continue
            assert not e.payload_lost
            self.with_content += 1
            try:
                i = verify_content(c, self.threads)
            except AssertionError as err:
                self.corrupt.append(str(err))
                continue
            if i in self.seen:
                self.dups += 1
            self.seen.add(i)

    def summary(self, st):
        return (f"events={self.events} with_content={self.with_content} null={self.null} "
                f"corrupt={len(self.corrupt)} dups={self.dups} tids={len(self.tids)} stats={st}")


def overload(n: int, threads: int, consumer: str, timeout: float = 300):
    """Runs the writer under a tracer with the tiny buffers.

    consumer: "stalled" (nothing read until the writer exits), "flowing"
    (read continuously) or "bursty" (read 20 ms, stall 100 ms, repeat).
    Returns (Tally, stats)."""
    cmd = [PY, "-I", "-S", "-c", WRITER, str(n), str(threads), str(SIZE)]
    with gated_process(cmd, stdout=subprocess.DEVNULL) as (proc, go):
        tally = Tally(proc.pid, threads)
        with tracer_ebpf.Tracer(WRITE_EVENT, pids=[proc.pid], **TINY) as t:
            mem = t.memory()
            assert mem["payload_bytes_per_cpu"] == 2 * CHUNK, mem
            tally.pool_bytes = mem["payload_bytes_per_cpu"] * mem["ncpus"]
            go()
            deadline = time.monotonic() + timeout
            if consumer == "stalled":
                proc.wait(timeout=timeout)
            else:
                while proc.poll() is None and time.monotonic() < deadline:
                    if consumer == "flowing":
                        tally.add(t.poll(0.01))
                    else:
                        end = time.monotonic() + 0.02
                        while time.monotonic() < end:
                            tally.add(t.poll(0.005))
                        time.sleep(0.1)
                assert proc.poll() is not None, "writer did not finish in time"
            # Everything still in the ring; a last poll after a pause catches
            # records submitted without a wake-up.
            for _ in range(3):
                tally.add(t.drain())
                time.sleep(0.05)
            st = t.stats()
    assert proc.returncode == 0, proc.returncode
    return tally, st


def check_accounting(tally: Tally, st, n: int):
    """The invariants that must hold under any overload."""
    s = tally.summary(st)
    assert not tally.corrupt, f"corrupt payloads: {tally.corrupt[:5]}; {s}"
    assert tally.dups == 0, s
    assert st["decode_errors"] == 0 and st["overwritten"] == 0, s
    assert st["fault"] == 0 and st["truncated"] == 0, s
    assert st["busy"] == 0, s  # otherwise delivered + ring_full + busy == n
    assert st["queued"] == 0, s
    assert tally.events == st["delivered"], s
    assert st["records"] == st["delivered"], s
    assert st["delivered"] + st["ring_full"] == n, s
    assert tally.null == st["payload_full"], s
    assert tally.with_content == len(tally.seen), s
    # Gaps are only seen when a later record of that CPU arrives; never more
    # than the records the kernel failed to submit.
    assert st["seq_gaps"] <= st["ring_full"] + st["busy"], s


def report(name: str, tally: Tally, st, n: int):
    print(f"\n[{name}] writes={n} delivered={st['delivered']} ring_full={st['ring_full']} "
          f"payload_full={st['payload_full']} with_content={tally.with_content} null={tally.null} "
          f"corrupt={len(tally.corrupt)} seq_gaps={st['seq_gaps']} busy={st['busy']}")


# -- overload -------------------------------------------------------------------

@pytest.mark.parametrize("threads", [1, 8])
def test_overload_stalled_consumer_loses_nothing_silently(threads):
    n = 10_000
    tally, st = overload(n, threads, "stalled")
    report(f"stalled x{threads}", tally, st, n)
    check_accounting(tally, st, n)
    # The 64 KiB ring holds a few hundred records: the writer overran it.
    assert st["ring_full"] > 0 and st["payload_full"] > 0, tally.summary(st)
    if threads > 1:
        assert len(tally.tids) > 1, tally.summary(st)
    # Nothing was read while the writer ran, so no pool chunk was ever
    # handed back: on each CPU the first writes have their content and none
    # after its last free chunk was gone (writes fill chunks exactly), and
    # together no more than the pool holds (the kernel never overwrote
    # unread bytes).
    kept = 0
    for cpu, has in tally.per_cpu.items():
        k = has.count(True)
        assert has == [True] * k + [False] * (len(has) - k), (cpu, has[:40])
        kept += k
    assert 0 < kept * SIZE <= tally.pool_bytes, (kept, tally.summary(st))


@pytest.mark.parametrize("threads", [1, 8])
def test_overload_flowing_consumer_reuses_the_area_without_corruption(threads):
    n = 10_000
    tally, st = overload(n, threads, "flowing")
    report(f"flowing x{threads}", tally, st, n)
    check_accounting(tally, st, n)
    # The pool's chunks were reused many times over (given back under flow control).
    assert tally.with_content * SIZE > 4 * tally.pool_bytes, tally.summary(st)


def test_overload_bursty_consumer():
    n = 10_000
    tally, st = overload(n, 8, "bursty")
    report("bursty x8", tally, st, n)
    check_accounting(tally, st, n)


@pytest.mark.slow
@pytest.mark.parametrize("consumer", ["stalled", "flowing", "bursty"])
def test_overload_long(slow_only, consumer):
    n = 200_000
    tally, st = overload(n, 8, consumer, timeout=1800)
    report(f"long {consumer} x8", tally, st, n)
    check_accounting(tally, st, n)


# -- soak -----------------------------------------------------------------------

# A steady writer: RATE writes per second of 56 bytes to fd 1 for DURATION
# seconds, in 10 ms ticks; write i's content is its sequence number (8
# bytes, little endian) and 48 bytes of padding. When it falls more than
# 100 ms behind (starved of CPU) it skips ahead instead of catching up in a
# burst, so the offered load stays steady. Its last write is b"END" + the
# number of writes before it.
SOAK_WRITER = r"""
import os, struct, sys, time
rate, dur = float(sys.argv[1]), float(sys.argv[2])
w, pack, pad = os.write, struct.Struct("<Q").pack, b"s" * 48
tick = 0.01
per = max(1, int(rate * tick))
n = 0
t0 = time.monotonic()
end, nxt = t0 + dur, t0
while time.monotonic() < end:
    for _ in range(per):
        w(1, pack(n) + pad)
        n += 1
    nxt += tick
    d = nxt - time.monotonic()
    if d > 0:
        time.sleep(d)
    elif d < -0.1:
        nxt = time.monotonic()
w(1, b"END" + pack(n))
"""

# The consumer, in its own process so its RSS is its own: starts the writer
# gated, traces it with default buffers, checks every event's sequence
# number, samples RSS and counters once a second, prints one JSON summary.
SOAK_CONSUMER = r"""
import json, os, struct, subprocess, sys, time
import tracer_ebpf
from tracer_ebpf.run import release, start_gated

rate, dur, writer = sys.argv[1], float(sys.argv[2]), sys.argv[3]
page = os.sysconf("SC_PAGE_SIZE")
def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * page

proc, gate = start_gated([sys.executable, "-I", "-S", "-c", writer, rate, str(dur)], stdout=subprocess.DEVNULL)
unpack = struct.Struct("<Q").unpack_from
expect, missing, bad, end_n, events = 0, 0, [], None, 0
samples = []
with tracer_ebpf.Tracer("syscalls/sys_enter_write", pids=[proc.pid]) as t:
    release(gate)
    t0 = time.monotonic()
    next_sample = t0
    def take(evs):
        global expect, missing, end_n, events
        events += len(evs)
        for e in evs:
            c = e.payload["content"]
            if c is None or len(c) != 56:
                if c is not None and c.startswith(b"END"):
                    end_n = unpack(c, 3)[0]
                else:
                    bad.append(repr(e.payload)[:200])
                continue
            i = unpack(c)[0]
            if i < expect:
                bad.append(f"sequence {i} after {expect - 1}: repeated or out of order")
            else:
                missing += i - expect  # lost writes: must all be counted by the kernel
                expect = i + 1
    while proc.poll() is None:
        take(t.poll(0.1, max_events=4096))  # bounded batches: RSS high-water is small, a leak is not
        now = time.monotonic()
        if now >= next_sample:
            st = t.stats()
            samples.append({"t": round(now - t0, 2), "events": events, "rss": rss(),
                            "in_flight": st["records"] - st["delivered"] - st["queued"],
                            "ring_full": st["ring_full"], "payload_full": st["payload_full"]})
            next_sample += 1.0
    elapsed = time.monotonic() - t0
    for _ in range(3):
        take(t.drain())
        time.sleep(0.05)
    final = t.stats()
print(json.dumps({"elapsed": elapsed, "events": events, "last": expect, "missing": missing, "end_n": end_n,
                  "bad": bad[:10], "nbad": len(bad), "samples": samples, "stats": final,
                  "returncode": proc.wait()}))
"""


def soak(rate: int, duration: float):
    r = subprocess.run([PY, "-c", SOAK_CONSUMER, str(rate), str(duration), SOAK_WRITER],
                       capture_output=True, text=True, timeout=duration + 120)
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(r.stdout)


def check_soak(res, rate, duration, name):
    st, samples = res["stats"], res["samples"]
    assert res["returncode"] == 0
    achieved = res["events"] / res["elapsed"]
    warm = [s for s in samples if s["t"] >= min(10.0, duration / 4)]
    rss0, rss_warm, rss_end = samples[0]["rss"], warm[0]["rss"], samples[-1]["rss"]
    rss_max = max(s["rss"] for s in samples)
    mib = 1 << 20
    print(f"\n[{name}] target {rate}/s for {duration:.0f} s: {res['events']} events in {res['elapsed']:.1f} s "
          f"= {achieved:,.0f}/s; consumer RSS {rss0 / mib:.1f} MiB at start, {rss_warm / mib:.1f} MiB after "
          f"warm-up, {rss_end / mib:.1f} MiB at the end (max {rss_max / mib:.1f}); growth after warm-up "
          f"{(rss_end - rss_warm) / mib:+.2f} MiB; max in flight {max(s['in_flight'] for s in samples)}; "
          f"lost (ring_full) {st['ring_full']}; stats {st}")
    # Every write delivered intact and in order, or lost and counted; the
    # counters add up.
    assert res["nbad"] == 0, res["bad"]
    assert res["end_n"] is not None, "the writer's final marker was not delivered"
    writes = res["end_n"]
    lost = res["missing"] + (writes - res["last"])
    assert lost == st["ring_full"] + st["busy"], (lost, st)
    assert res["events"] == writes - lost + 1, (res["events"], writes, lost)
    assert st["records"] == st["delivered"] + st["queued"] and st["queued"] == 0, st
    assert st["delivered"] == res["events"], st
    assert st["payload_full"] == 0, st
    assert st["decode_errors"] == st["overwritten"] == 0, st
    assert st["seq_gaps"] <= st["ring_full"] + st["busy"], st
    # Keeping up and the achieved rate are performance properties, reported
    # above, not asserted (the machines are noisy): losses happen only when
    # the consumer is starved of CPU, and then every one is counted (above).
    # Flat memory: after warm-up the consumer's RSS grows by less than 8 MiB.
    assert rss_end - rss_warm < 8 * mib, [(s["t"], s["rss"] // 1024) for s in samples]
    return achieved, rss_end - rss_warm


def test_soak_100k_events_per_second_60s():
    rate, duration = 100_000, 60.0
    check_soak(soak(rate, duration), rate, duration, "soak 60 s")


@pytest.mark.slow
def test_soak_100k_events_per_second_10min(slow_only):
    rate, duration = 100_000, 600.0
    check_soak(soak(rate, duration), rate, duration, "soak 10 min")


# -- front ends under sustained load -------------------------------------------------
# A front end must stop when told (--duration, SIGINT, SIGTERM) even while a
# process keeps producing events faster than it can print them: the final
# drain of what was captured is bounded, and a signal during it is no
# traceback.

# Writes 100-byte lines to stdout as fast as it can, for argv[1] seconds.
LOAD = r"""
import os, sys, time
end = time.monotonic() + float(sys.argv[1])
w, line = os.write, b"L" * 99 + b"\n"
while time.monotonic() < end:
    for _ in range(1000):
        w(1, line)
"""

def _front_end(name, tracer_example, rust_example):
    return [tracer_example, "-q"] if name == "tracer-example" else [rust_example]


@pytest.mark.parametrize("name", ["tracer-example", "example"])
def test_duration_is_honoured_under_sustained_load(name, tracer_example, rust_example):
    load = subprocess.Popen([PY, "-c", LOAD, "60"], stdout=subprocess.DEVNULL)
    try:
        time.sleep(0.3)
        argv = _front_end(name, tracer_example, rust_example) + [
            "--events", WRITE_EVENT, "--pid", str(load.pid), "--duration", "1"]
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        try:
            _, err = proc.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            pytest.fail(f"{name} --duration 1 still running after 15 s under a steady writer")
        assert proc.returncode == 0, err[-2000:]
        assert "Traceback" not in err and "panicked" not in err, err[-2000:]
    finally:
        load.kill()
        load.wait()


@pytest.mark.parametrize("sig", ["SIGINT", "SIGTERM"])
@pytest.mark.parametrize("name", ["tracer-example", "example"])
def test_signal_under_sustained_load_stops_cleanly(name, sig, tracer_example, rust_example):
    import signal as _signal

    load = subprocess.Popen([PY, "-c", LOAD, "60"], stdout=subprocess.DEVNULL)
    try:
        time.sleep(0.3)
        argv = _front_end(name, tracer_example, rust_example) + ["--events", WRITE_EVENT, "--pid", str(load.pid)]
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        time.sleep(3)
        proc.send_signal(getattr(_signal, sig))
        try:
            _, err = proc.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            pytest.fail(f"{name} still running 15 s after {sig} under a steady writer")
        assert proc.returncode == 0, err[-2000:]
        assert "Traceback" not in err and "panicked" not in err, err[-2000:]
    finally:
        load.kill()
        load.wait()
