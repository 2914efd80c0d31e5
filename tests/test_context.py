"""Issue 18, process and container context on every event, on the real
kernel: the pid and tid as seen in the task's own pid namespace beside the
host's, and the cgroup v2 id of the task (the inode of its cgroup2
directory) in every front end: Python Event, JSON lines, columns."""

import json
import os
import select
import subprocess
import time
import uuid

import pytest

import tracer_ebpf
from conftest import PY

WRITE = "syscalls/sys_enter_write"


def cgroup2_mount():
    """Where cgroup2 is mounted here (/sys/fs/cgroup on pure v2 hosts, e.g.
    /sys/fs/cgroup/unified on hybrid ones), from /proc/self/mountinfo."""
    with open("/proc/self/mountinfo") as f:
        for line in f:
            left, _, right = line.partition(" - ")
            if right.split()[0] == "cgroup2":
                return left.split()[4].replace("\\040", " ")
    pytest.fail("no cgroup2 mount on this machine")


@pytest.fixture
def cgroups():
    """Makes cgroup2 directories (nested paths under a fresh top directory)
    and removes them afterwards, deepest first, their processes moved back
    to the root."""
    root = cgroup2_mount()
    top = os.path.join(root, f"tb-test-{uuid.uuid4().hex[:8]}")
    made = []

    def make(rel=""):
        path = top
        for part in [p for p in rel.split("/") if p]:
            path = os.path.join(path, part)
        for d in [top] + [os.path.join(top, *rel.split("/")[:i + 1]) for i in range(len([p for p in rel.split("/") if p]))]:
            if not os.path.isdir(d):
                os.mkdir(d)
                made.append(d)
        return path

    try:
        yield make
    finally:
        for d in reversed(made):
            with open(os.path.join(d, "cgroup.procs")) as f:
                pids = f.read().split()
            for pid in pids:
                with open(os.path.join(root, "cgroup.procs"), "w") as f:
                    f.write(pid)
            os.rmdir(d)


@pytest.fixture
def fresh_cgroup(cgroups):
    """A new cgroup2 directory."""
    return cgroups()


def rel(path):
    """`path` as events name it: under the cgroup2 root, from "/"."""
    return "/" + os.path.relpath(path, cgroup2_mount())


def writes_of(r, content):
    return [e for e in r.events if e.event_type == WRITE and e.payload.get("content") == content]


def test_a_task_in_a_new_pid_namespace_has_both_pids():
    # The child of `unshare --pid --fork` is pid 1 in its namespace; its
    # thread (started by the script) is that namespace's next id.
    code = ("import os, threading\n"
            "os.write(1, b'ns-main\\n')\n"
            "t = threading.Thread(target=lambda: os.write(1, b'ns-thread\\n')); t.start(); t.join()\n")
    r = tracer_ebpf.trace(["unshare", "--pid", "--fork", PY, "-c", code], WRITE, stdout=subprocess.DEVNULL, timeout=60)
    assert r.returncode == 0
    [main] = writes_of(r, b"ns-main\n")
    [thread] = writes_of(r, b"ns-thread\n")
    assert main.ns_pid == 1 and main.ns_tid == 1
    assert main.pid != 1 and main.tid == main.pid
    assert thread.pid == main.pid and thread.tid != main.tid
    assert thread.ns_pid == 1 and thread.ns_tid not in (1, thread.tid)
    d = json.loads(thread.to_json())
    assert (d["pid"], d["tid"], d["ns_pid"], d["ns_tid"]) == (thread.pid, thread.tid, 1, thread.ns_tid)
    assert thread.to_dict()["ns_tid"] == thread.ns_tid


def test_a_task_in_the_initial_namespace_has_its_host_pids_twice():
    r = tracer_ebpf.trace([PY, "-c", "import os; os.write(1, b'host-ns\\n')"], WRITE, stdout=subprocess.DEVNULL)
    [e] = writes_of(r, b"host-ns\n")
    assert (e.ns_pid, e.ns_tid) == (e.pid, e.tid) == (r.pid, r.pid)


def test_cgroup_id_is_the_inode_of_the_tasks_cgroup2_directory(fresh_cgroup):
    inode = os.stat(fresh_cgroup).st_ino
    root_inode = os.stat(cgroup2_mount()).st_ino
    # The command moves itself into the new cgroup, then writes.
    code = (f"import os\nopen({os.path.join(fresh_cgroup, 'cgroup.procs')!r}, 'w').write(str(os.getpid()))\n"
            "os.write(1, b'in-cgroup\\n')\n")
    r = tracer_ebpf.trace([PY, "-c", code], WRITE, stdout=subprocess.DEVNULL)
    assert r.returncode == 0
    [e] = writes_of(r, b"in-cgroup\n")
    assert e.cgroup_id == inode != root_inode
    assert e.cgroup == rel(fresh_cgroup) and e.container_id is None and e.pod_uid is None
    d = json.loads(e.to_json())
    assert (d["cgroup_id"], d["cgroup"], d["container_id"]) == (inode, rel(fresh_cgroup), None)
    assert "container_runtime" not in d and "pod_uid" not in d
    assert e.to_dict()["cgroup_id"] == inode and e.to_dict()["cgroup"] == rel(fresh_cgroup)
    assert r.stats["cgroup_unresolved"] == 0


HEX = "4f1c2b9d" * 8
POD = "0b7c9e4a-1f2d-4c3b-9a8e-7d6c5b4a3f21"


@pytest.mark.parametrize("path, runtime, container, pod", [
    (f"system.slice/docker-{HEX}.scope", "docker", HEX, None),
    (f"kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{POD.replace('-', '_')}.slice/cri-containerd-{HEX}.scope",
     "containerd", HEX, POD),
    (f"machine.slice/libpod-{HEX}.scope/container", "podman", HEX, None),
])
def test_container_and_pod_from_the_cgroup_path_on_the_real_kernel(cgroups, path, runtime, container, pod):
    # cgroup directories named as each runtime names them: the events of a
    # process inside carry its container id, runtime and pod UID.
    d = cgroups(path)
    code = (f"import os\nopen({os.path.join(d, 'cgroup.procs')!r}, 'w').write(str(os.getpid()))\n"
            "os.write(1, b'in-container\\n')\n")
    r = tracer_ebpf.trace([PY, "-c", code], WRITE, stdout=subprocess.DEVNULL)
    [e] = writes_of(r, b"in-container\n")
    assert (e.cgroup, e.container_id, e.container_runtime, e.pod_uid) == (rel(d), container, runtime, pod)
    j = json.loads(e.to_json())
    assert (j["cgroup"], j["container_id"], j["container_runtime"], j.get("pod_uid")) == (rel(d), container, runtime, pod)


def writer(tag, cgroup=None):
    """A Python command that names itself `tbctx` (its comm), joins
    `cgroup` if given, and writes `tag` to stdout."""
    join = f"open({os.path.join(cgroup, 'cgroup.procs')!r}, 'w').write(str(os.getpid()))\n" if cgroup else ""
    return [PY, "-c", f"import os\nopen('/proc/self/comm', 'w').write('tbctx')\n{join}os.write(1, {tag!r})\n"]


def test_context_columns_in_arrow_batches(fresh_cgroup):
    pa = pytest.importorskip("pyarrow")
    inode = os.stat(fresh_cgroup).st_ino
    with tracer_ebpf.Tracer(WRITE, comm=["tbctx"]) as t:
        subprocess.run(writer(b"arrow-ctx", fresh_cgroup), stdout=subprocess.DEVNULL, check=True, timeout=30)
        subprocess.run(["unshare", "--pid", "--fork"] + writer(b"arrow-ns"), stdout=subprocess.DEVNULL, check=True,
                       timeout=30)
        rows = []
        for _ in range(50):
            tab = pa.table(t.poll_arrow(0.1))
            rows += [r for r in tab.select(["pid", "ns_pid", "ns_tid", "cgroup_id", "cgroup", "container_id",
                                            "payload.fd", "payload.content"])
                     .to_pylist() if r["payload.fd"] == 1]
            if len(rows) >= 2:
                break
    by_content = {r["payload.content"]: r for r in rows}
    assert set(by_content) == {b"arrow-ctx", b"arrow-ns"}
    assert by_content[b"arrow-ctx"]["cgroup_id"] == inode
    assert by_content[b"arrow-ctx"]["cgroup"] == rel(fresh_cgroup) and by_content[b"arrow-ctx"]["container_id"] is None
    assert by_content[b"arrow-ctx"]["ns_pid"] == by_content[b"arrow-ctx"]["pid"]
    assert by_content[b"arrow-ns"]["ns_pid"] == 1 and by_content[b"arrow-ns"]["pid"] != 1
    assert tab.schema.field("cgroup_id").type == pa.uint64() and tab.schema.field("ns_pid").type == pa.uint32()


def read_lines(stream, n, timeout=30.0):
    """The first `n` lines of a pipe (bytes, read unbuffered from its fd), or
    fail after `timeout` seconds."""
    fd = stream.fileno()
    buf = b""
    deadline = time.monotonic() + timeout
    while buf.count(b"\n") < n:
        left = deadline - time.monotonic()
        assert left > 0 and select.select([fd], [], [], left)[0], f"timed out; got {buf!r}"
        chunk = os.read(fd, 65536)
        assert chunk, f"stream ended early; got {buf!r}"
        buf += chunk
    return buf.split(b"\n")[:n]


def test_context_in_the_json_of_every_front_end(tracer_example, rust_example, fresh_cgroup):
    inode = os.stat(fresh_cgroup).st_ino
    for tool in (tracer_example, rust_example):
        proc = subprocess.Popen([tool, "--events", WRITE, "--comm", "tbctx"], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE)
        try:
            err = read_lines(proc.stderr, 1)[0]
            assert b"tracing" in err, err
            subprocess.run(writer(b"json-ctx\n", fresh_cgroup), stdout=subprocess.DEVNULL, check=True, timeout=30)
            subprocess.run(["unshare", "--pid", "--fork"] + writer(b"json-ns\n"), stdout=subprocess.DEVNULL,
                           check=True, timeout=30)
            # Three lines: the write to cgroup.procs (fd 3, content not
            # selected) and the two to stdout.
            out = [d for d in map(json.loads, read_lines(proc.stdout, 3)) if d["payload"]["fd"] == 1]
        finally:
            proc.terminate()
            proc.communicate(timeout=30)
        by_content = {d["payload"]["content"]: d for d in out}
        assert by_content["json-ctx\n"]["cgroup_id"] == inode, tool
        assert by_content["json-ctx\n"]["cgroup"] == rel(fresh_cgroup), tool
        assert by_content["json-ctx\n"]["ns_pid"] == by_content["json-ctx\n"]["pid"], tool
        assert by_content["json-ns\n"]["ns_pid"] == 1 != by_content["json-ns\n"]["pid"], tool
        keys = list(by_content["json-ns\n"])
        assert keys[keys.index("comm") + 1:keys.index("payload")] == ["ns_pid", "ns_tid", "cgroup_id", "cgroup",
                                                                      "container_id"], tool
