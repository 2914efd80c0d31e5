"""Issue 4: every seed event triggered by a real action and checked field by
field, on the real kernel."""

import os
import signal
import subprocess
import threading
import time

import pytest

import tracer_ebpf
from tracer_ebpf.run import release, start_gated
from conftest import PY, gated_process, path_of_length


def run_traced(cmd, events, settle=0.3, **kw):
    """Runs cmd gated, traced with follow, returns (events, returncode, stats)."""
    r = tracer_ebpf.trace(cmd, events, settle=settle, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, **kw)
    return r


def of_type(events, name):
    return [e for e in events if e.event_type == name]


# -- exec --------------------------------------------------------------------

EXECVE_EMPTY_ARGV = r"""
import ctypes, os
libc = ctypes.CDLL(None, use_errno=True)
argv = (ctypes.c_char_p * 1)(None)
envp = (ctypes.c_char_p * 1)(None)
libc.execve(b"/bin/true", argv, envp)
raise SystemExit("execve failed: %d" % ctypes.get_errno())
"""


def exec_events(cmd):
    r = run_traced(cmd, "sched/sched_process_exec")
    assert r.returncode == 0
    return of_type(r.events, "sched/sched_process_exec")


def test_exec_with_empty_arguments_keeps_them():
    argv = ["/bin/true", "", "a b", "", "ü\x01"]
    evs = exec_events(argv)
    assert len(evs) == 1
    p = evs[0].payload
    assert p["argv"] == argv
    assert p["argc"] == len(argv)
    assert p["filename"] == "/bin/true"
    assert evs[0].comm == "true"


def test_exec_with_no_arguments():
    # Since Linux 5.18 an empty argv becomes [""] (argc 1) at exec.
    evs = exec_events([PY, "-c", EXECVE_EMPTY_ARGV])
    true_exec = [e for e in evs if e.payload["filename"] == "/bin/true"]
    assert len(true_exec) == 1, [e.payload for e in evs]
    assert true_exec[0].payload["argv"] == [""]
    assert true_exec[0].payload["argc"] == 1


def test_exec_with_100k_of_arguments_is_complete():
    args = [f"{i:05d}" + "x" * 995 for i in range(100)]  # 100 x 1000 bytes
    evs = exec_events(["/bin/true"] + args)
    p = evs[0].payload
    assert p["argv"] == ["/bin/true"] + args
    assert not evs[0].payload_info["argv"]["truncated"]


def test_exec_argv_over_the_limit_is_flagged_truncated():
    args = ["y" * 1000] * 10
    r = run_traced(["/bin/true"] + args, "sched/sched_process_exec", argv_max=4000)
    ev = of_type(r.events, "sched/sched_process_exec")[0]
    info = ev.payload_info["argv"]
    assert info["truncated"] and info["len"] == 4000
    assert info["size"] == len("/bin/true") + 1 + 10 * 1001
    assert r.stats["truncated"] >= 1


# -- openat --------------------------------------------------------------------

@pytest.mark.parametrize("n", [63, 64, 255, 4095])
def test_openat_paths_of_every_length_are_exact(n):
    path = path_of_length(n)
    code = f"import os\ntry:\n    os.open({path!r}, os.O_RDONLY)\nexcept OSError:\n    pass\n"
    r = run_traced([PY, "-c", code], "syscalls/sys_*_openat")
    enters = [e for e in of_type(r.events, "syscalls/sys_enter_openat") if e.payload["filename"] == path]
    assert len(enters) == 1, [e.payload["filename"][:80] for e in of_type(r.events, "syscalls/sys_enter_openat")]
    e = enters[0]
    assert e.payload["flags"] == os.O_RDONLY | os.O_CLOEXEC or e.payload["flags"] == os.O_RDONLY
    assert not e.payload_info["filename"]["truncated"]
    assert '"flags_name":"O_RDONLY' in e.to_json()
    # The matching exit on the same thread says ENOENT (or ENAMETOOLONG).
    exits = [x for x in of_type(r.events, "syscalls/sys_exit_openat")
             if x.tid == e.tid and x.timestamp_ns > e.timestamp_ns]
    assert exits and exits[0].payload["ret"] < 0
    assert '"ret_name":"ENOENT"' in exits[0].to_json() or '"ret_name":"ENAMETOOLONG"' in exits[0].to_json()


def test_openat_longer_than_the_limit_is_truncated_not_corrupted():
    path = path_of_length(5000)
    code = f"import os\ntry:\n    os.open({path!r}, os.O_RDONLY)\nexcept OSError:\n    pass\n"
    r = run_traced([PY, "-c", code], "syscalls/sys_enter_openat")
    e = [e for e in of_type(r.events, "syscalls/sys_enter_openat") if e.payload["filename"].startswith("/ppp")]
    assert len(e) == 1
    assert e[0].payload["filename"] == path[:4096]
    assert e[0].payload_info["filename"]["truncated"]


def test_openat_success_returns_the_fd():
    code = "import os\nfd = os.open('/etc/hostname', os.O_RDONLY)\nprint(fd)\n"
    r = tracer_ebpf.trace([PY, "-c", code], "syscalls/sys_*_openat", stdout=subprocess.PIPE)
    enter = [e for e in of_type(r.events, "syscalls/sys_enter_openat") if e.payload["filename"] == "/etc/hostname"]
    assert len(enter) == 1
    exits = [x for x in of_type(r.events, "syscalls/sys_exit_openat")
             if x.tid == enter[0].tid and x.timestamp_ns > enter[0].timestamp_ns]
    assert exits[0].payload["ret"] >= 3


# -- exit ----------------------------------------------------------------------

def test_exit_code_3_is_decoded():
    r = run_traced(["sh", "-c", "exit 3"], "sched/sched_process_exit")
    assert r.returncode == 3
    ex = [e for e in of_type(r.events, "sched/sched_process_exit") if e.pid == r.pid]
    assert len(ex) == 1
    p = ex[0].payload
    assert (p["exit_status"], p["signal"], p["exit_code"], p["group_leader"]) == (3, 0, 0x300, 1)


def test_exit_by_sigkill_is_decoded():
    proc, gate = start_gated(["sleep", "30"])
    with tracer_ebpf.Tracer("sched/sched_process_exit", pids=[proc.pid]) as t:
        release(gate)
        time.sleep(0.2)
        proc.kill()
        proc.wait()
        evs = t.collect(0.3)
    ex = [e for e in evs if e.pid == proc.pid]
    assert len(ex) == 1
    p = ex[0].payload
    assert (p["signal"], p["exit_status"], p["core_dumped"]) == (signal.SIGKILL, 0, 0)
    assert '"signal_name":"SIGKILL"' in ex[0].to_json()


# -- threads -------------------------------------------------------------------

THREADS = r"""
import os, sys, threading
N = int(sys.argv[1])
tids = {}
def work(k):
    tids[k] = threading.get_native_id()
    for i in range(N):
        os.write(1, b"T%d:%05d:%d\n" % (k, i, threading.get_native_id()))
ts = [threading.Thread(target=work, args=(k,)) for k in range(4)]
for t in ts: t.start()
for t in ts: t.join()
os.write(2, repr(tids).encode())
"""


def test_four_thread_writer_every_write_captured_with_its_tid():
    n = 500
    r = tracer_ebpf.trace([PY, "-c", THREADS, str(n)], "syscalls/sys_enter_write",
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    writes = [e for e in of_type(r.events, "syscalls/sys_enter_write") if e.payload["fd"] == 1]
    assert len(writes) == 4 * n
    seen = set()
    tids = set()
    for e in writes:
        k, i, tid = e.payload["content"].decode().strip().split(":")
        assert int(tid) == e.tid, e  # the event's tid is the writing thread
        assert e.pid == r.pid
        seen.add((k, i))
        tids.add(e.tid)
    assert len(seen) == 4 * n and len(tids) == 4
    assert r.pid not in tids  # worker threads, not the main thread
    assert r.stats["ring_full"] == 0 and r.stats["payload_full"] == 0


# -- writev / pwrite64 ---------------------------------------------------------

def test_writev_and_pwrite64_content_is_captured():
    code = r"""
import os
os.writev(1, [b"ab", b"", b"c\x00d", b"e" * 70000])
fd = os.open("/tmp/tracer-pwrite-test", os.O_WRONLY | os.O_CREAT, 0o600)
os.pwrite(fd, b"at-offset", 5)
"""
    r = run_traced([PY, "-c", code], ["syscalls/sys_enter_writev", "syscalls/sys_enter_pwrite64"],
                   content_fds=[1, 2, 3, 4, 5, 6, 7, 8, 9])
    wv = [e for e in of_type(r.events, "syscalls/sys_enter_writev") if e.pid == r.pid]
    assert len(wv) == 1
    assert wv[0].payload["content"] == b"abc\x00d" + b"e" * 70000
    assert wv[0].payload["iovcnt"] == 4 and wv[0].payload["count"] == 70005
    pw = [e for e in of_type(r.events, "syscalls/sys_enter_pwrite64") if e.pid == r.pid]
    assert len(pw) == 1
    assert pw[0].payload["content"] == b"at-offset" and pw[0].payload["pos"] == 5


def test_content_of_other_fds_is_not_captured_but_flagged():
    code = "import os\nfd = os.open('/dev/null', os.O_WRONLY)\nos.write(fd, b'secret')\n"
    r = run_traced([PY, "-c", code], "syscalls/sys_enter_write")
    ev = [e for e in of_type(r.events, "syscalls/sys_enter_write") if e.payload["count"] == 6]
    assert len(ev) == 1
    assert ev[0].payload["content"] is None
    assert ev[0].payload_info["content"]["captured"] is False
    assert '"content":null' in ev[0].to_json()


# -- filters -------------------------------------------------------------------

def test_comm_filter_in_the_kernel():
    code = "import ctypes, os\nctypes.CDLL(None).prctl(15, b'tbcommx', 0, 0, 0)\nos.write(1, b'from-tbcommx')\n"
    with tracer_ebpf.Tracer("syscalls/sys_enter_write", comm="tbcomm") as t:
        subprocess.run([PY, "-c", code], stdout=subprocess.DEVNULL)
        subprocess.run(["sh", "-c", "echo other"], stdout=subprocess.DEVNULL)
        evs = t.collect(0.3)
    assert evs, "nothing captured"
    assert all(e.comm.startswith("tbcomm") for e in evs), {e.comm for e in evs}
    assert any(e.payload["content"] == b"from-tbcommx" for e in evs)


# Comm prefixes ending before, at and after the 8-byte word the kernel
# compares at once, up to the longest (15 bytes), and non-ASCII bytes.
PREFIXES = ["tbpA", "tbpB-123", "tbpC-1234", "tbpD-1234567890", "tbp\u00e9"]
COMMS = {  # comm: whether one of PREFIXES starts it
    "tbpA": True, "tbpAxyz": True, "tbpX": False,
    "tbpB-123": True, "tbpB-12": False, "tbpB-124": False, "tbpB-1234567": True,
    "tbpC-1234": True, "tbpC-1234zz": True, "tbpC-1235": False, "tbpC-123": False,
    "tbpD-1234567890": True, "tbpD-1234567899": False, "tbpD-123456789": False,
    "tbp\u00e9!": True, "tbp\u00e8": False, "tbp\u00c3": False,
}


def test_comm_prefixes_match_exactly_their_bytes():
    # One process takes each comm in turn and writes it.
    code = ("import ctypes, os, sys\nlibc = ctypes.CDLL(None)\n"
            "for c in sys.argv[1:]:\n    b = c.encode()\n    libc.prctl(15, b, 0, 0, 0)\n    os.write(1, b)\n")
    with tracer_ebpf.Tracer("syscalls/sys_enter_write", comm=PREFIXES) as t:
        subprocess.run([PY, "-c", code, *COMMS], stdout=subprocess.DEVNULL, check=True, timeout=60)
        evs = t.collect(0.3)
    got = [e.comm for e in evs if e.payload["content"] == e.comm.encode()]
    assert got == [c for c, match in COMMS.items() if match], got
    assert all(e.comm in COMMS for e in evs), {e.comm for e in evs}


def test_pid_filter_changes_while_tracing():
    code = "import os, sys, time\nfor i in range(40):\n    os.write(1, b'tick %d\\n' % i); time.sleep(0.025)\n"
    a = subprocess.Popen([PY, "-c", code], stdout=subprocess.DEVNULL)
    b = subprocess.Popen([PY, "-c", code], stdout=subprocess.DEVNULL)
    try:
        with tracer_ebpf.Tracer("syscalls/sys_enter_write", pids=[a.pid]) as t:
            first = t.collect(0.3)
            t.set_pids([b.pid])
            time.sleep(0.05)
            t.drain()  # in flight at the switch
            second = t.collect(0.3)
    finally:
        a.wait()
        b.wait()
    assert first and {e.pid for e in first} == {a.pid}
    assert second and {e.pid for e in second} == {b.pid}


def test_follow_children_traces_a_shell_pipeline():
    r = tracer_ebpf.trace(["sh", "-c", "echo one; (echo two | cat) ; sh -c 'echo three >&2'"],
                          "syscalls/sys_enter_write", stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    contents = sorted(e.payload["content"] for e in of_type(r.events, "syscalls/sys_enter_write"))
    assert contents == [b"one\n", b"three\n", b"two\n", b"two\n"], contents
    pids = {e.pid for e in r.events}
    assert len(pids) >= 3  # the shell, echo|cat subshells, the inner sh
    assert r.stats["followed"] >= 2


def test_the_tracer_does_not_trace_itself_by_default():
    with tracer_ebpf.Tracer("syscalls/sys_enter_write") as t:
        os.write(1, b"")  # a write of our own
        os.write(2, b"self-write\n")
        evs = t.collect(0.2)
    assert not [e for e in evs if e.pid == os.getpid()]


# -- exactly one of the memory events fires here ------------------------------

def test_an_oom_kill_is_recorded_with_its_victim():
    # A child in a 48 MiB memory cgroup touches memory until the OOM killer
    # takes it: the event names the victim, not the task that ran the killer.
    from test_footprint import MIB, memory_cgroup

    hog = "b = []\nwhile True:\n    b.append(bytearray(1 << 20))\n"
    with memory_cgroup(48 * MIB) as move:
        with gated_process([PY, "-I", "-S", "-c", hog]) as (proc, go):
            move(proc.pid)
            with tracer_ebpf.Tracer("oom/mark_victim") as t:
                go()
                assert proc.wait(timeout=60) == -signal.SIGKILL
                events = t.collect(0.5)
    victims = [e for e in events if e.payload["victim_pid"] == proc.pid]
    assert len(victims) == 1, [e.payload for e in events]
    assert victims[0].payload["victim_comm"] == os.path.basename(PY)[:15], victims[0].payload


def test_memory_events_attach_and_unavailable_one_says_so():
    with tracer_ebpf.Tracer(["vmscan/mm_vmscan_direct_reclaim_begin", "oom/mark_victim"]) as t:
        assert sorted(t.events) == ["oom/mark_victim", "vmscan/mm_vmscan_direct_reclaim_begin"]
    if not os.path.isdir("/sys/kernel/tracing/events/sched/psi_memstall_enter"):
        with pytest.raises(tracer_ebpf.TracepointMissingError, match="psi_memstall_enter does not exist on this kernel"):
            tracer_ebpf.Tracer("sched/psi_memstall_enter")
