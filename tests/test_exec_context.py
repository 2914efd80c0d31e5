"""Issue 18: exec events carry the real uid and gid of the new image and its
working directory (`cwd`), walked by BPF from task->fs up to the task's root
across mounts. Real kernel; every case checks the exact path or ids."""

import json
import os
import shutil
import subprocess
import tempfile
from contextlib import contextmanager

import pytest

import tracer_ebpf
from conftest import PY, gated_process

EXEC = "sched/sched_process_exec"
PATH_BYTES = 4096  # cwd's max in events.toml
MAX_STEPS = 1024   # TB_PATH_MAX_STEPS in c/bpf/path.h
NOBODY = 65534


def execs_of(events, filename):
    return [e for e in events if e.event_type == EXEC and e.payload["filename"] == filename]


def traced_exec(cmd, filename, **kw):
    """Runs cmd traced (following children); returns the one exec of
    `filename` and the trace result."""
    r = tracer_ebpf.trace(cmd, EXEC, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=60, **kw)
    assert r.returncode == 0, r.returncode
    found = execs_of(r.events, filename)
    assert len(found) == 1, [e.payload for e in r.events]
    return found[0], r


@pytest.fixture
def shared_dir():
    """A fresh directory that other users may enter (pytest's are 0700),
    removed with rm -rf (shutil.rmtree recurses once per level, and some
    trees here are deeper than Python's recursion limit)."""
    d = tempfile.mkdtemp(prefix="tb-exec-ctx-")
    os.chmod(d, 0o755)
    try:
        yield os.path.realpath(d)
    finally:
        subprocess.run(["rm", "-rf", "--one-file-system", d], check=True, timeout=120)


@contextmanager
def mounted(*mount_args):
    """`mount *mount_args` (the last one is the mount point), unmounted after."""
    subprocess.run(["mount", *mount_args], check=True, timeout=30)
    try:
        yield
    finally:
        subprocess.run(["umount", mount_args[-1]], check=True, timeout=30)


def cut_to_fit(components, limit=PATH_BYTES, steps=MAX_STEPS):
    """What a cut cwd holds: the deepest whole components that fit in `limit`
    bytes (each with its '/') and in `steps`, joined by '/', no leading '/'."""
    kept, used = [], 0
    for c in reversed(components):
        if len(kept) == steps or used + len(c) + 1 > limit:
            break
        kept.insert(0, c)
        used += len(c) + 1
    return "/".join(kept)


def check_whole(ev, path):
    assert ev.payload["cwd"] == path
    info = ev.payload_info["cwd"]
    assert not info["truncated"] and info["lost"] is None, info


def check_cut(ev, want, r):
    assert not want.startswith("/")
    assert ev.payload["cwd"] == want, (len(ev.payload["cwd"] or ""), len(want))
    info = ev.payload_info["cwd"]
    assert info["truncated"] and info["lost"] is None, info
    assert r.stats["truncated"] >= 1
    assert '"cwd_truncated":true' in ev.to_json()


# -- the working directory ------------------------------------------------------

def test_cwd_is_the_real_path_of_the_directory(shared_dir):
    d = os.path.join(shared_dir, "work dir", "ü")
    os.makedirs(d)
    link = os.path.join(shared_dir, "link")
    os.symlink(d, link)
    ev, _ = traced_exec(["/bin/true"], "/bin/true", cwd=link)
    check_whole(ev, os.path.realpath(link))
    assert ev.payload["cwd"] == d


def test_cwd_at_the_root_is_a_slash():
    ev, _ = traced_exec(["/bin/true"], "/bin/true", cwd="/")
    check_whole(ev, "/")


def test_cwd_inside_a_mount_is_the_whole_path(shared_dir):
    mnt = os.path.join(shared_dir, "mnt")
    os.mkdir(mnt)
    with mounted("-t", "tmpfs", "tb-exec-ctx", mnt):
        inner = os.path.join(mnt, "sub", "deeper")
        os.makedirs(inner)
        ev, _ = traced_exec(["/bin/true"], "/bin/true", cwd=inner)
        check_whole(ev, inner)
        # The mount's own root: only a crossing, no component of its own.
        ev, _ = traced_exec(["/bin/true"], "/bin/true", cwd=mnt)
        check_whole(ev, mnt)
        # A second mount on the same point: two crossings in a row.
        with mounted("-t", "tmpfs", "tb-exec-ctx2", mnt):
            os.mkdir(os.path.join(mnt, "top"))
            ev, _ = traced_exec(["/bin/true"], "/bin/true", cwd=os.path.join(mnt, "top"))
            check_whole(ev, os.path.join(mnt, "top"))


def test_cwd_in_a_bind_mount_of_a_subdirectory_is_the_mount_path(shared_dir):
    """The root of a bind mount of src/inner is the dentry `inner`, whose
    parent is `src`: the walk must leave it by the mount point, not by the
    dentry's parent."""
    inner = os.path.join(shared_dir, "src", "inner")
    os.makedirs(os.path.join(inner, "x"))
    bind = os.path.join(shared_dir, "bind")
    os.mkdir(bind)
    with mounted("--bind", inner, bind):
        ev, _ = traced_exec(["/bin/true"], "/bin/true", cwd=os.path.join(bind, "x"))
        check_whole(ev, os.path.join(bind, "x"))


DELETED = r"""
import os, sys
d, out = sys.argv[1], sys.argv[2]
os.mkdir(d)
os.chdir(d)
os.rmdir(d)
with open(out, "w") as f:
    f.write(os.readlink("/proc/self/cwd"))
os.execv("/bin/true", ["/bin/true"])
"""


def test_a_removed_cwd_ends_with_deleted_like_proc_pid_cwd(shared_dir):
    d = os.path.join(shared_dir, "gone")
    out = os.path.join(shared_dir, "readlink")
    ev, _ = traced_exec([PY, "-c", DELETED, d, out], "/bin/true")
    with open(out) as f:
        proc_says = f.read()
    assert proc_says == d + " (deleted)"
    check_whole(ev, proc_says)


CHROOT = r"""
import os, sys
root, cwd = sys.argv[1], sys.argv[2]
os.chdir(cwd)
os.chroot(root)
if len(sys.argv) > 3:
    os.chdir(sys.argv[3])
os.execv("/bin/busybox", ["true"])
"""


def busybox():
    b = shutil.which("busybox")
    if not b or "statically linked" not in subprocess.run(["file", "-L", b], capture_output=True, text=True).stdout:
        pytest.fail("these tests need a static busybox (apt-get install busybox-static)")
    return b


def test_cwd_is_relative_to_the_root_of_a_chrooted_process(shared_dir):
    root = os.path.join(shared_dir, "root")
    os.makedirs(os.path.join(root, "bin"))
    os.makedirs(os.path.join(root, "work", "dir"))
    shutil.copy(busybox(), os.path.join(root, "bin", "busybox"))
    ev, _ = traced_exec([PY, "-c", CHROOT, root, shared_dir, "/work/dir"], "/bin/busybox")
    check_whole(ev, "/work/dir")


def test_a_cwd_outside_the_chroot_is_given_from_the_namespace_root(shared_dir):
    """chroot without chdir: as /proc/PID/cwd shows it (d_path), not
    getcwd's "(unreachable)"."""
    root = os.path.join(shared_dir, "root")
    os.makedirs(os.path.join(root, "bin"))
    outside = os.path.join(shared_dir, "outside")
    os.mkdir(outside)
    shutil.copy(busybox(), os.path.join(root, "bin", "busybox"))
    ev, _ = traced_exec([PY, "-c", CHROOT, root, outside], "/bin/busybox")
    check_whole(ev, outside)


# -- limits: longer than 4096 bytes, deeper than the step bound -------------------

DIVE = r"""
import os, sys
os.chdir(sys.argv[1])
for name in sys.argv[2].split("/"):
    os.mkdir(name)
    os.chdir(name)
os.execv("/bin/true", ["/bin/true"])
"""


def dive(base, names):
    """Runs a process that makes base/names[0]/names[1]/... (relative
    mkdir and chdir: the path may be longer than PATH_MAX) and execs
    /bin/true there; returns that exec and the trace result."""
    return traced_exec([PY, "-c", DIVE, base, "/".join(names)], "/bin/true")


def names_for_length(base, total):
    """Component names (distinct, at most 200 bytes) that make base/... exactly
    `total` bytes long."""
    names, left = [], total - len(base)
    i = 0
    while left > 0:
        n = min(200, left - 1) if left - 1 <= 200 or left - 1 - 200 >= 2 else left - 1 - 2
        names.append((f"{i:03d}" + "d" * 200)[:n])
        left -= n + 1
        i += 1
    assert len(os.path.join(base, *names)) == total
    return names


def test_a_cwd_of_exactly_4096_bytes_is_whole(shared_dir):
    names = names_for_length(shared_dir, PATH_BYTES)
    ev, _ = dive(shared_dir, names)
    check_whole(ev, os.path.join(shared_dir, *names))


@pytest.mark.parametrize("total", [PATH_BYTES + 1, 5000, 9000])
def test_a_cwd_longer_than_4096_bytes_keeps_its_deepest_components(shared_dir, total):
    names = names_for_length(shared_dir, total)
    ev, r = dive(shared_dir, names)
    components = shared_dir.strip("/").split("/") + names
    check_cut(ev, cut_to_fit(components), r)
    assert ev.payload["cwd"].endswith("/" + names[-1])


def test_a_cwd_deeper_than_the_step_bound_keeps_its_deepest_components(shared_dir):
    names = [f"{i % 100:02d}" for i in range(MAX_STEPS + 40)]  # 3 bytes a level: far below 4096
    ev, r = dive(shared_dir, names)
    check_cut(ev, "/".join(names[-MAX_STEPS:]), r)


def test_a_cwd_exactly_at_the_step_bound_is_whole():
    """MAX_STEPS components in all (the walk's last step reaches the root).
    Starts at / (no mount crossed on the way, since / is one mount)."""
    base = tempfile.mkdtemp(prefix="tbx", dir="/")
    try:
        assert os.path.ismount("/") and not os.path.ismount(base)
        names = [f"{i % 100:02d}" for i in range(MAX_STEPS - 1)]
        ev, _ = dive(base, names)
        check_whole(ev, os.path.join(base, *names))
        ev, r = dive(os.path.join(base, *names), ["zz"])  # one more: cut
        check_cut(ev, "/".join(names + ["zz"]), r)
    finally:
        subprocess.run(["rm", "-rf", "--one-file-system", base], check=True, timeout=120)


# -- uid and gid ----------------------------------------------------------------

def test_uid_and_gid_are_the_new_images_real_ids(shared_dir):
    ev, r = traced_exec(["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", "/bin/true"],
                        "/bin/true", cwd=shared_dir)
    assert (ev.payload["uid"], ev.payload["gid"]) == (NOBODY, NOBODY)
    assert ev.payload["cwd"] == shared_dir
    setpriv = [e for e in r.events if e.event_type == EXEC and e.payload["filename"] != "/bin/true"]
    assert [(e.payload["uid"], e.payload["gid"]) for e in setpriv] == [(os.getuid(), os.getgid())]


def test_uid_and_gid_are_the_real_ids_not_the_effective_ones():
    # Real 1234/4321, effective still root.
    ev, _ = traced_exec(["setpriv", "--ruid=1234", "--rgid=4321", "--clear-groups", "/bin/true"], "/bin/true")
    assert (ev.payload["uid"], ev.payload["gid"]) == (1234, 4321)


def test_a_setuid_program_shows_its_callers_real_uid(shared_dir):
    prog = os.path.join(shared_dir, "id-suid")
    shutil.copy("/usr/bin/id", prog)
    os.chown(prog, 0, 0)
    os.chmod(prog, 0o4755)
    out = os.path.join(shared_dir, "out")
    with open(out, "w") as f:
        r = tracer_ebpf.trace(["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", prog, "-u"],
                              EXEC, stdout=f, timeout=60)
    assert r.returncode == 0
    with open(out) as f:
        assert f.read() == "0\n"  # the setuid bit took effect: euid 0
    ev = execs_of(r.events, prog)
    assert len(ev) == 1
    assert (ev[0].payload["uid"], ev[0].payload["gid"]) == (NOBODY, NOBODY)


# -- every front end ------------------------------------------------------------

SETUID = r"""
import os
os.setgroups([])
os.setgid(4343)
os.setuid(4242)
os.execv("/bin/true", ["/bin/true"])
"""


def test_the_fields_in_json_columns_and_arrow(shared_dir):
    pa = pytest.importorskip("pyarrow")
    cmd = [PY, "-c", SETUID]
    with gated_process(cmd, cwd=shared_dir) as (proc, go):
        with tracer_ebpf.Tracer([EXEC, "syscalls/sys_enter_setuid"], pids=proc.pid) as a, \
                tracer_ebpf.Tracer([EXEC, "syscalls/sys_enter_setuid"], pids=proc.pid) as b, \
                tracer_ebpf.Tracer(EXEC, pids=proc.pid) as c:
            go()
            assert proc.wait(timeout=30) == 0
            evs = a.collect(0.5)
            batch = pa.record_batch(b.poll_arrow(timeout=0.5))
            cols = c.poll_columns(timeout=0.5)
    ev = execs_of(evs, "/bin/true")[0]
    assert {k: ev.payload[k] for k in ("uid", "gid", "cwd")} == {"uid": 4242, "gid": 4343, "cwd": shared_dir}
    line = json.loads(ev.to_json())["payload"]
    assert list(line)[-3:] == ["uid", "gid", "cwd"]  # after the older fields
    assert (line["uid"], line["gid"], line["cwd"]) == (4242, 4343, shared_dir)

    # Arrow: the typed exec's uid is payload.uid (uint32); the generic setuid's
    # uid (an unsigned long argument) is another kind, so it gets its own name.
    schema = batch.schema
    assert schema.field("payload.uid").type == pa.uint32()
    assert schema.field("payload.gid").type == pa.uint32()
    assert schema.field("payload.cwd").type == pa.large_utf8()
    assert schema.field("payload.syscalls/sys_enter_setuid.uid").type == pa.uint64()
    rows = [r for r in batch.to_pylist() if r["event_type"] == EXEC and r["payload.filename"] == "/bin/true"]
    assert [(r["payload.uid"], r["payload.gid"], r["payload.cwd"], r["payload.cwd_truncated"]) for r in rows] \
        == [(4242, 4343, shared_dir, False)]
    setuids = [r for r in batch.to_pylist() if r["event_type"] == "syscalls/sys_enter_setuid"]
    assert [r["payload.syscalls/sys_enter_setuid.uid"] for r in setuids] == [4242]
    assert all(r["payload.uid"] is None for r in setuids)

    i = [k for k, (t, f) in enumerate(zip(cols["event_type"], cols["payload.filename"]))
         if t == EXEC and f == "/bin/true"]
    assert len(i) == 1
    assert (cols["payload.uid"][i[0]], cols["payload.gid"][i[0]], cols["payload.cwd"][i[0]]) \
        == (4242, 4343, shared_dir)
    assert cols.fields[EXEC][-3:] == ["payload.uid", "payload.gid", "payload.cwd"]
