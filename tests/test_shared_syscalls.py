"""Many syscall events at once (`syscalls/*`) through the two shared programs
on the raw sys_enter/sys_exit tracepoints (c/bpf/syscalls.h): each call is
labelled with the event the kernel's own metadata gives its number, records
the same fields as one perf event per syscall would, 32-bit syscalls are not
mistaken for 64-bit ones, and closing does not wait a grace period per
syscall."""

import json
import os
import subprocess
import time

import tracer_ebpf
from conftest import PY

TRACING = "/sys/kernel/tracing"

# Direct syscalls whose event names differ from their numbers' names in
# <asm/unistd_64.h>: a table of names would get these wrong.
CHILD = r"""
import ctypes, os
libc = ctypes.CDLL(None, use_errno=True)
buf = ctypes.create_string_buffer(1024)
libc.syscall(4, b"/tmp/tb-shared-newstat", buf)      # stat -> sys_enter_newstat
libc.syscall(166, b"/tmp/tb-shared-umount", 0)       # umount2 -> sys_enter_umount
libc.syscall(40, 12345, 12346, None, 7)              # sendfile -> sys_enter_sendfile64
libc.syscall(63, buf)                                # uname -> sys_enter_newuname
os.write(1, b"shared-syscalls-probe")
os._exit(7)
"""

# Fields that are the same in every run (no addresses, which ASLR moves).
STABLE = {
    "syscalls/sys_enter_newstat": ["__syscall_nr", "filename"],
    "syscalls/sys_exit_newstat": ["__syscall_nr", "ret"],
    "syscalls/sys_enter_umount": ["__syscall_nr", "flags"],
    "syscalls/sys_exit_umount": ["__syscall_nr", "ret"],
    "syscalls/sys_enter_sendfile64": ["__syscall_nr", "out_fd", "in_fd", "count"],
    "syscalls/sys_exit_sendfile64": ["__syscall_nr", "ret"],
    "syscalls/sys_enter_newuname": ["__syscall_nr"],
    "syscalls/sys_exit_newuname": ["__syscall_nr", "ret"],
    "syscalls/sys_enter_write": ["fd", "count"],  # a typed event: its own handler
    "syscalls/sys_exit_write": ["__syscall_nr", "ret"],
    "syscalls/sys_enter_exit_group": ["__syscall_nr", "error_code"],
}


def probe_calls(events):
    """The child's events of STABLE, in order, with their stable fields;
    after its first newstat call (Python's own start-up comes before)."""
    calls = [(e.event_type, {k: e.payload.get(k) for k in STABLE[e.event_type]}) for e in events if e.event_type in STABLE]
    start = next(i for i, (name, _) in enumerate(calls) if name == "syscalls/sys_enter_newstat")
    return calls[start:]


def run_probe(events):
    r = tracer_ebpf.trace([PY, "-c", CHILD], events, stdout=subprocess.PIPE, timeout=60)
    assert r.returncode == 7
    return probe_calls([e for e in r.events if e.pid == r.pid])


def test_every_syscall_is_labelled_by_the_kernels_own_number():
    calls = run_probe("syscalls/*")
    assert calls == [
        ("syscalls/sys_enter_newstat", {"__syscall_nr": 4, "filename": "/tmp/tb-shared-newstat"}),
        ("syscalls/sys_exit_newstat", {"__syscall_nr": 4, "ret": -2}),
        ("syscalls/sys_enter_umount", {"__syscall_nr": 166, "flags": 0}),
        ("syscalls/sys_exit_umount", {"__syscall_nr": 166, "ret": -2}),
        ("syscalls/sys_enter_sendfile64", {"__syscall_nr": 40, "out_fd": 12345, "in_fd": 12346, "count": 7}),
        ("syscalls/sys_exit_sendfile64", {"__syscall_nr": 40, "ret": -9}),
        ("syscalls/sys_enter_newuname", {"__syscall_nr": 63}),
        ("syscalls/sys_exit_newuname", {"__syscall_nr": 63, "ret": 0}),
        ("syscalls/sys_enter_write", {"fd": 1, "count": 21}),
        ("syscalls/sys_exit_write", {"__syscall_nr": 1, "ret": 21}),
        ("syscalls/sys_enter_exit_group", {"__syscall_nr": 231, "error_code": 7}),
    ]


def test_shared_programs_record_what_one_perf_event_per_syscall_records():
    # Fewer than 17 syscall events: one perf event each (the other path).
    few = run_probe(sorted(STABLE))
    shared = run_probe("syscalls/*")
    assert few == shared
    assert len(shared) == len(STABLE)


def test_32_bit_syscalls_are_not_taken_for_64_bit_ones(tmp_path):
    # getpid is 20 in the 32-bit table (writev in the 64-bit one), exit is 1
    # (write). The syscalls/* tracepoints ignore 32-bit syscalls, and so
    # must the shared programs.
    (tmp_path / "c32.s").write_text(
        ".globl _start\n_start:\n"
        "  mov $20, %eax\n  int $0x80\n"
        "  mov $20, %eax\n  int $0x80\n"
        "  mov $1, %eax\n  mov $5, %ebx\n  int $0x80\n"
    )
    subprocess.run(["as", "--32", "-o", str(tmp_path / "c32.o"), str(tmp_path / "c32.s")], check=True)
    exe = str(tmp_path / "c32")
    subprocess.run(["ld", "-m", "elf_i386", "-o", exe, str(tmp_path / "c32.o")], check=True)
    r = tracer_ebpf.trace([exe], "syscalls/*", timeout=60)
    assert r.returncode == 5
    mine = [e.event_type for e in r.events if e.pid == r.pid]
    assert "syscalls/sys_enter_execve" in mine  # traced up to the exec
    after_exec = mine[mine.index("syscalls/sys_enter_execve") + 1:]
    wrong = {"syscalls/sys_enter_writev", "syscalls/sys_exit_writev", "syscalls/sys_enter_write", "syscalls/sys_exit_write"}
    assert not wrong & set(after_exec), after_exec
    # Skipping a 32-bit syscall must leave the CPU free for the next event:
    # 64-bit syscalls after it on the same CPU are recorded, none dropped as
    # busy (each CPU's payload stream is taken from the filter to the record's end).
    cpus = sorted(os.sched_getaffinity(0))
    with tracer_ebpf.Tracer("syscalls/*", comm=["c32", "true"]) as t:
        truths = []
        for cpu in cpus:
            for _ in range(5):
                subprocess.run(["taskset", "-c", str(cpu), exe])
            truths.append(subprocess.Popen(["taskset", "-c", str(cpu), "true"]))
            truths[-1].wait(timeout=30)
        got = t.collect(0.5)
        assert t.stats()["busy"] == 0
    for cpu, p in zip(cpus, truths):
        cpus_seen = {e.cpu for e in got if e.pid == p.pid}
        assert cpu in cpus_seen, f"no event on CPU {cpu} of the 64-bit command after the 32-bit runs"


def test_closing_a_tracer_of_every_syscall_does_not_wait_per_syscall():
    listed = [n for n in os.listdir(f"{TRACING}/events/syscalls") if n.startswith(("sys_enter_", "sys_exit_"))]
    t = tracer_ebpf.Tracer("syscalls/*")
    assert len(t.events) == len(listed)
    t0 = time.monotonic()
    t.close()
    took = time.monotonic() - t0
    # One perf event per syscall took about 25 s here (a grace period each
    # under event_mutex); two raw tracepoints take milliseconds.
    assert took < 5.0, f"closing took {took:.1f} s for {len(listed)} syscall events"


# The typed syscall events, recorded by the shared programs or (as on a
# kernel that refuses those) by one program each: a child's file I/O.
TYPED = ["syscalls/sys_enter_write", "syscalls/sys_enter_writev", "syscalls/sys_enter_pwrite64",
         "syscalls/sys_enter_read", "syscalls/sys_enter_openat", "syscalls/sys_exit_openat"]

TYPED_CHILD = r"""
import os, sys
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o600)
os.dup2(fd, 2)  # contents are captured for fds 1 and 2 by default
os.write(2, b"abc")
os.writev(2, [b"de", b"fgh"])
os.pwrite(2, b"xyz", 2)
os.lseek(fd, 0, 0)
os.read(fd, 5)
os.close(fd)
os.write(1, b"typed-probe\n")
"""

# In a fresh process, as the mode is chosen when a tracer loads: which raw
# tracepoints a tracer of TYPED holds links on, then the child's events.
TYPED_RUN = r"""
import glob, json, os, subprocess, sys
import tracer_ebpf
events, child, path = json.loads(sys.argv[1]), sys.argv[2], sys.argv[3]
with tracer_ebpf.Tracer(events) as t:
    notes = t.notes
    tps = set()
    for f in glob.glob("/proc/self/fdinfo/*"):
        try:
            tps.update(l.split()[1] for l in open(f).read().splitlines() if l.startswith("tp_name:"))
        except OSError:
            pass
r = tracer_ebpf.trace([sys.executable, "-c", child, path], events, stdout=subprocess.PIPE, timeout=60)
mine = [(e.event_type, {k: repr(v) for k, v in e.payload.items()}) for e in r.events if e.pid == r.pid]
print(json.dumps({"raw_tracepoints": sorted(tps), "notes": notes, "events": mine}))
"""


def typed_run(tmp_path, per_event: bool):
    env = dict(os.environ)
    env.pop("TRACER_EBPF_PER_EVENT_SYSCALLS", None)
    if per_event:
        env["TRACER_EBPF_PER_EVENT_SYSCALLS"] = "1"
    path = str(tmp_path / f"typed-{int(per_event)}")
    p = subprocess.run([PY, "-c", TYPED_RUN, json.dumps(TYPED), TYPED_CHILD, path], env=env,
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr[-2000:]
    out = json.loads(p.stdout)
    # From the child's open of its file on (Python's start-up comes before);
    # the path differs between the runs.
    calls = out["events"]
    start = next(i for i, (name, pl) in enumerate(calls) if name == "syscalls/sys_enter_openat" and path in pl["filename"])
    calls = [(n, {k: v.replace(path, "PATH") for k, v in pl.items()}) for n, pl in calls[start:]]
    return out["raw_tracepoints"], out["notes"], calls


def test_typed_syscall_events_are_the_same_through_the_shared_programs_and_their_own(tmp_path):
    shared_tps, shared_notes, shared = typed_run(tmp_path, per_event=False)
    own_tps, own_notes, own = typed_run(tmp_path, per_event=True)
    # The links: the two raw tracepoints, or one perf event per syscall event.
    assert shared_tps == ["sys_enter", "sys_exit"], shared_tps
    assert own_tps == sorted(n.split("/")[1] for n in TYPED), own_tps
    # The slower way is said, with why.
    assert shared_notes == [], shared_notes
    assert len(own_notes) == 1 and "TRACER_EBPF_PER_EVENT_SYSCALLS is set" in own_notes[0], own_notes
    names = [n for n, _ in shared]
    assert names[:7] == ["syscalls/sys_enter_openat", "syscalls/sys_exit_openat", "syscalls/sys_enter_write",
                         "syscalls/sys_enter_writev", "syscalls/sys_enter_pwrite64", "syscalls/sys_enter_read",
                         "syscalls/sys_enter_write"], shared
    fd = shared[1][1]["ret"]
    assert [pl["content"] for _, pl in shared[2:5]] == ["b'abc'", "b'defgh'", "b'xyz'"], shared
    assert shared[4][1]["pos"] == "2" and shared[5][1]["fd"] == fd and shared[5][1]["count"] == "5", shared
    assert shared == own
