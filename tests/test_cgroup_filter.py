"""Issue 18: the in-kernel cgroup filter (a cgroup v2 directory and its
descendants), on the real kernel: processes moved into cgroup v2 directories
made under the cgroup2 mount found in /proc/self/mountinfo."""

import json
import os
import select
import signal
import subprocess
import time
from pathlib import Path

import pytest

import tracer_ebpf
from tracer_ebpf import CgroupError, ConfigError
from conftest import PY

WRITE = "syscalls/sys_enter_write"
EXEC = "sched/sched_process_exec"

# Echoes each line it reads (a traced write whose content is the line) and
# for "exec ..." lines runs /bin/true first (an exec from a forked child).
WORKER = (
    "import os, subprocess, sys\n"
    "for line in sys.stdin:\n"
    "    if line.startswith('exec'):\n"
    "        subprocess.run(['/bin/true', line.split()[1]])\n"
    "    os.write(1, line.encode())\n"
)


def cgroup2_mount() -> Path:
    with open("/proc/self/mountinfo") as f:
        for line in f:
            pre, _, post = line.partition(" - ")
            if post.split(" ")[0] == "cgroup2":
                return Path(pre.split(" ")[4].replace("\\040", " "))
    pytest.fail("no cgroup2 mount in /proc/self/mountinfo")


class Worker:
    """A process that writes what it is told, its stdout a pipe read back
    (the acknowledgement that the write happened)."""

    def __init__(self):
        self.proc = subprocess.Popen([PY, "-c", WORKER], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     preexec_fn=lambda: signal.signal(signal.SIGPIPE, signal.SIG_DFL))
        self.pid = self.proc.pid

    def say(self, line: str) -> None:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(line.encode() + b"\n")
        self.proc.stdin.flush()
        # A timeout on the blocking read (the worker writes each line at once).
        ready, _, _ = select.select([self.proc.stdout], [], [], 30)
        assert ready, f"worker {self.pid} did not answer {line!r} within 30 s"
        assert self.proc.stdout.readline() == line.encode() + b"\n"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()


@pytest.fixture
def cgroups():
    """(parent, child) cgroup v2 directories, and move(pid, dir). At the end
    every process in them goes back to the root and both are removed."""
    root = cgroup2_mount()
    parent = root / f"tb-test-{os.getpid()}"
    child = parent / "child"
    child.mkdir(parents=True)
    moved = []

    def move(pid: int, where: Path) -> None:
        (where / "cgroup.procs").write_text(f"{pid}\n")
        moved.append(pid)

    try:
        yield parent, child, move
    finally:
        for d in (child, parent):
            for pid in (d / "cgroup.procs").read_text().split():
                try:
                    (root / "cgroup.procs").write_text(f"{pid}\n")
                except OSError:
                    pass  # exited meanwhile
        for d in (child, parent):
            for _ in range(50):  # a process just killed leaves its cgroup a little later
                try:
                    d.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.1)


def lines_of(events, pid):
    return [e.payload["content"] for e in events if e.event_type == WRITE and e.pid == pid]


def test_a_cgroup_and_its_descendants_are_traced_and_nothing_else(cgroups):
    parent, child, move = cgroups
    inside, outside = Worker(), Worker()
    try:
        move(inside.pid, child)
        # Relative to the cgroup2 root, like the `cgroup` of events.
        with tracer_ebpf.Tracer([WRITE, EXEC], cgroups=parent.name) as t:
            for w, tag in ((inside, "in"), (outside, "out")):
                w.say(f"{tag} 1")
                w.say(f"exec {tag}")
            evs = t.collect(0.3)
        assert lines_of(evs, inside.pid) == [b"in 1\n", b"exec in\n"]
        execs = [e for e in evs if e.event_type == EXEC]
        assert [e.payload["argv"] for e in execs] == [["/bin/true", "in"]]
        assert execs[0].ppid == inside.pid
        # Nothing of the process outside, nor of any other.
        assert {e.pid for e in evs} == {inside.pid, execs[0].pid}
    finally:
        inside.stop()
        outside.stop()


def test_live_changes_and_combination_with_comm(cgroups):
    parent, child, move = cgroups
    a, b = Worker(), Worker()
    try:
        move(a.pid, child)
        other = parent.parent / f"tb-test-other-{os.getpid()}"
        other.mkdir()
        try:
            move(b.pid, other)
            with tracer_ebpf.Tracer(WRITE, cgroups=[str(child)]) as t:
                a.say("a1")
                b.say("b1")
                t.set_cgroups([str(child), other])  # absolute, a PathLike
                a.say("a2")
                b.say("b2")
                t.set_cgroups(other.name)
                a.say("a3")
                b.say("b3")
                # Both filters: the comm of the workers is python..., not "sh".
                t.set_comm("sh")
                b.say("b4")
                t.set_comm(None)
                b.say("b5")
                t.set_cgroups(None)
                a.say("a4")
                evs = t.collect(0.3)
        finally:
            (parent.parent / "cgroup.procs").write_text(f"{b.pid}\n")
            b.stop()
            for _ in range(50):
                try:
                    other.rmdir()
                    break
                except OSError:
                    time.sleep(0.1)
        assert lines_of(evs, a.pid) == [b"a1\n", b"a2\n", b"a4\n"]
        assert lines_of(evs, b.pid) == [b"b2\n", b"b3\n", b"b5\n"]
    finally:
        a.stop()
        b.stop()


def test_combined_with_a_comm_filter_at_start(cgroups):
    parent, child, move = cgroups
    w = Worker()
    sh = subprocess.Popen(["sh", "-c", "read x; echo sh-$x"], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        move(w.pid, child)
        move(sh.pid, child)
        with tracer_ebpf.Tracer(WRITE, cgroups=[str(parent)], comm="sh") as t:
            w.say("python 1")
            out, _ = sh.communicate(b"1\n", timeout=30)
            assert out == b"sh-1\n"
            evs = t.collect(0.3)
        assert lines_of(evs, sh.pid) == [b"sh-1\n"]
        assert {e.pid for e in evs} == {sh.pid}
    finally:
        w.stop()
        if sh.poll() is None:
            sh.kill()
        sh.wait()


def test_bad_cgroups_are_refused_and_change_nothing(cgroups, tmp_path):
    parent, child, move = cgroups
    (tmp_path / "f").write_text("")
    bad = [
        ("no-such-cgroup-here", "does not exist"),
        ("", "does not exist"),
        (str(child / "cgroup.procs"), "not a directory"),
        (str(tmp_path), "not in the cgroup2 hierarchy"),
        ("..", "not in the cgroup2 hierarchy"),
        ([str(parent)] * 8 + ["x"], "at most 8 cgroups"),
    ]
    for value, message in bad:
        with pytest.raises(CgroupError, match=message):
            tracer_ebpf.Tracer(WRITE, cgroups=value)
    # A cgroup path as events show it, without the mount point: a hint.
    with pytest.raises(CgroupError, match="did you mean"):
        tracer_ebpf.Tracer(WRITE, cgroups="/" + parent.name)
    with pytest.raises(TypeError):
        tracer_ebpf.Tracer(WRITE, cgroups=[3])
    assert issubclass(CgroupError, ConfigError) and issubclass(CgroupError, ValueError)

    w = Worker()
    try:
        move(w.pid, child)
        with tracer_ebpf.Tracer(WRITE, cgroups=child.relative_to(cgroup2_mount())) as t:
            for value, message in bad:
                with pytest.raises(CgroupError, match=message):
                    t.set_cgroups(value)
            w.say("still")  # the filter in force is unchanged
            # A cgroup of the filter removed: another filter's change still works.
            gone = parent / "gone"
            gone.mkdir()
            t.set_cgroups([child, gone])
            gone.rmdir()
            t.set_comm("python")
            w.say("after rmdir")
            evs = t.collect(0.3)
        assert lines_of(evs, w.pid) == [b"still\n", b"after rmdir\n"]
        assert {e.pid for e in evs} == {w.pid}
    finally:
        w.stop()


def test_cli_cgroup_option(cgroups, tracer_example):
    parent, child, move = cgroups
    w = Worker()
    try:
        move(w.pid, child)
        p = subprocess.Popen([tracer_example, "--events", WRITE, "--cgroup", str(parent), "--duration", "3"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        # Attached once it says so on stderr.
        ready, _, _ = select.select([p.stderr], [], [], 60)
        assert ready and p.stderr is not None and p.stderr.readline().startswith(b"tracer-example: tracing ")
        w.say("cli 1")
        out, err = p.communicate(timeout=60)
        assert p.returncode == 0, err
        lines = [json.loads(x) for x in out.splitlines()]
        assert [(e["pid"], e["payload"]["content"]) for e in lines] == [(w.pid, "cli 1\n")]
    finally:
        w.stop()
    r = subprocess.run([tracer_example, "--cgroup", "no-such-cgroup-here", "--duration", "1"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and r.stdout == ""
    assert "does not exist" in r.stderr.strip().splitlines()[-1]
    assert "Traceback" not in r.stderr
