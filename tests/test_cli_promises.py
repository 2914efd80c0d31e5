"""Issue 14, the command line's part: tracer-example keeps its promises under
real use (safe output files, clean ends on write errors, a command that never
outlives the tracer, strict --pid, linear parsing, size suffixes, a warning
for mixed output) and to_dataframe() fails at once without pandas. Every test
runs `tracer-example` as a console script on the real kernel, but those that
check the argument parser alone."""

import contextlib
import json
import os
import select
import signal
import subprocess
import time
from pathlib import Path

import pytest

from conftest import PY, wait_for

WRITE = "syscalls/sys_enter_write"
TIMEOUT = 60  # no run here may take longer; a hang fails the test instead of the suite


def _child_setup():
    # The dispositions these tests rely on, whatever pytest was started with;
    # umask 022 so that 0600 is the tracer's doing, not ours.
    for s in (signal.SIGINT, signal.SIGTERM, signal.SIGPIPE):
        signal.signal(s, signal.SIG_DFL)
    os.umask(0o022)


def cli(tracer_example, *args, timeout=TIMEOUT, **kw) -> subprocess.CompletedProcess:
    kw.setdefault("stdin", subprocess.DEVNULL)
    if "stdout" not in kw and "stderr" not in kw:
        kw["capture_output"] = True
    return subprocess.run([tracer_example, *args], text=True, timeout=timeout, preexec_fn=_child_setup, **kw)


def popen(argv, **kw) -> subprocess.Popen:
    return subprocess.Popen(argv, preexec_fn=_child_setup, **kw)


def one_error_line(r, code=2) -> str:
    """Exit `code`, no traceback, stderr exactly one `tracer-example: error: ...` line."""
    assert r.returncode == code, (r.returncode, r.stderr)
    assert "Traceback" not in r.stderr, r.stderr
    assert r.stderr.startswith("tracer-example: error: ") and r.stderr.count("\n") == 1, r.stderr
    return r.stderr


def read_line(proc, timeout=30.0) -> bytes:
    """The first line of proc's (binary) stderr, read with a deadline."""
    fd, buf = proc.stderr.fileno(), b""
    deadline = time.monotonic() + timeout
    while b"\n" not in buf:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            proc.kill()
            pytest.fail(f"no line on stderr within {timeout} s: {buf!r}")
        chunk = os.read(fd, 4096)
        if not chunk:
            break
        buf += chunk
    return buf


def finish(proc, timeout=TIMEOUT):
    """communicate() with a deadline: a run that does not end fails the test."""
    try:
        return proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        pytest.fail(f"{proc.args[:6]} did not end within {timeout} s")


def gone(pid: int) -> bool:
    """No such process, or a zombie (it has exited; only its parent's wait is missing)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return True
    return data[data.rfind(b")") + 2:data.rfind(b")") + 3] in (b"Z", b"X")


def dead_pid() -> int:
    """A pid no process has: a child's, once reaped."""
    p = subprocess.Popen(["true"])
    p.wait()
    assert gone(p.pid)
    return p.pid


# -- 1. output files ------------------------------------------------------------------

def test_output_file_is_created_0600(tracer_example, tmp_path):
    out = tmp_path / "out.jsonl"
    r = cli(tracer_example, "-q", "--events", WRITE, "-o", str(out), "--", "sh", "-c", "echo password=hunter2")
    assert r.returncode == 0, r.stderr
    assert out.stat().st_mode & 0o777 == 0o600, oct(out.stat().st_mode)
    assert "password=hunter2" in out.read_text()


def _existing(tmp_path):
    f = tmp_path / "exists"
    f.write_text("old\n")
    return f, f


def _symlink_to_missing(tmp_path):
    link = tmp_path / "link"
    link.symlink_to(tmp_path / "target")
    return link, tmp_path / "target"


def _symlink_to_own_file(tmp_path):
    f = tmp_path / "mine"
    f.write_text("old\n")
    link = tmp_path / "link"
    link.symlink_to(f)
    return link, f


def _other_users_file(tmp_path):
    f = tmp_path / "theirs"
    f.write_text("old\n")
    os.chown(f, 65534, 65534)  # nobody: planted beforehand, readable by them afterwards
    return f, f


REFUSED = [
    (_existing, []),
    (_symlink_to_missing, []),
    (_symlink_to_own_file, []),
    (_other_users_file, []),
    (_symlink_to_missing, ["--append"]),
    (_symlink_to_own_file, ["--append"]),
    (_other_users_file, ["--append"]),
]


@pytest.mark.parametrize("make,extra", REFUSED, ids=[f"{m.__name__[1:]}{' '.join(e)}" for m, e in REFUSED])
def test_output_file_refused_changes_nothing_and_traces_nothing(tracer_example, tmp_path, make, extra):
    path, target = make(tmp_path)
    before = target.read_bytes() if target.exists() else None
    marker = tmp_path / "ran"
    t0 = time.monotonic()
    r = cli(tracer_example, "--events", WRITE, "-o", str(path), *extra, "--",
            "sh", "-c", f"echo ran > {marker}; echo x")
    msg = one_error_line(r)
    assert "--output" in msg and str(path) in msg, msg
    assert time.monotonic() - t0 < 10
    assert not marker.exists()  # the command never ran
    assert (target.read_bytes() if target.exists() else None) == before
    assert r.stdout == ""


def test_append_adds_to_a_file_of_ones_own(tracer_example, tmp_path):
    out = tmp_path / "out.jsonl"
    out.write_text('{"kept":1}\n')
    out.chmod(0o640)
    for word in ("first", "second"):
        r = cli(tracer_example, "-q", "--events", WRITE, "-o", str(out), "--append", "--",
                "sh", "-c", f"echo {word}")
        assert r.returncode == 0, r.stderr
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert lines[0] == {"kept": 1}
    assert [e["payload"]["content"] for e in lines[1:]] == ["first\n", "second\n"]
    assert out.stat().st_mode & 0o777 == 0o640  # the owner's file, as the owner left it


def test_append_creates_a_missing_file_0600(tracer_example, tmp_path):
    out = tmp_path / "new.jsonl"
    r = cli(tracer_example, "-q", "--events", WRITE, "-o", str(out), "--append", "--", "sh", "-c", "echo hi")
    assert r.returncode == 0, r.stderr
    assert out.stat().st_mode & 0o777 == 0o600
    assert [json.loads(line)["payload"]["content"] for line in out.read_text().splitlines()] == ["hi\n"]


def test_output_to_a_device_is_written(tracer_example):
    r = cli(tracer_example, "-q", "--events", WRITE, "-o", "/dev/null", "--", "sh", "-c", "echo hi")
    assert r.returncode == 0 and r.stderr == "", r.stderr


def test_a_refused_run_leaves_no_file_behind(tracer_example, tmp_path):
    """Bad arguments found after the file was created (an unknown event)
    leave nothing: the empty file this run made is removed."""
    out = tmp_path / "out.jsonl"
    r = cli(tracer_example, "--events", "nosuch/event", "-o", str(out), "--", "true")
    one_error_line(r)
    assert not out.exists()


def test_help_tells_the_new_rules(tracer_example):
    r = cli(tracer_example, "--help", env={**os.environ, "COLUMNS": "10000"})  # no wrapping at hyphens
    assert r.returncode == 0
    text = " ".join(r.stdout.split())
    for words in ("--append", "0600", "symbolic link", "K, M or G", "powers of 1024", "itself",
                  "every --pid process has exited", "CMD is killed if tracer-example dies",
                  "when the JSON lines cannot be written"):
        assert words in text, words


# -- 2. write errors ---------------------------------------------------------------------

@pytest.mark.parametrize("ignores_term", [False, True], ids=["stops-on-SIGTERM", "ignores-SIGTERM"])
def test_a_write_error_ends_cleanly_and_stops_the_command(tracer_example, tmp_path, ignores_term):
    pidfile = tmp_path / "pid"
    trap = 'trap "" TERM; ' if ignores_term else ""
    script = f"echo $$ > {pidfile}; {trap}while :; do echo x; sleep 0.05; done"
    t0 = time.monotonic()
    with killed_after(pidfile):
        r = cli(tracer_example, "-q", "--events", WRITE, "-o", "/dev/full", "--", "sh", "-c", script,
                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        took = time.monotonic() - t0
        msg = one_error_line(r, 1)
        assert "/dev/full" in msg and "No space left on device" in msg, msg
        assert took < 30, took  # SIGKILL after a bounded wait for the one that ignores SIGTERM
        assert gone(int(pidfile.read_text()))  # stopped and waited for, not left to init


@contextlib.contextmanager
def killed_after(pidfile: Path):
    """Kills the command whose pid is in pidfile if the run under test left it running."""
    try:
        yield
    finally:
        try:
            pid = int(pidfile.read_text())
        except (OSError, ValueError):
            pid = 0
        if pid and not gone(pid):
            os.kill(pid, signal.SIGKILL)


def test_a_write_error_on_stdout_ends_cleanly(tracer_example, tmp_path):
    pidfile = tmp_path / "pid"
    with open("/dev/full", "wb") as full, killed_after(pidfile):
        r = cli(tracer_example, "-q", "--events", WRITE, "--", "sh", "-c",
                f"echo $$ > {pidfile}; while :; do echo x > /dev/null; sleep 0.05; done",
                stdout=full, stderr=subprocess.PIPE)
        msg = one_error_line(r, 1)
        assert "stdout" in msg, msg
        assert gone(int(pidfile.read_text()))


@pytest.mark.parametrize("redirect", [">&-", "1</dev/null"], ids=["closed", "read-only"])
def test_an_unwritable_stdout_is_an_error_before_anything_runs(tracer_example, tmp_path, redirect):
    marker = tmp_path / "ran"
    r = subprocess.run(["sh", "-c", f'exec "$0" --events {WRITE} -- sh -c "echo ran > {marker}" {redirect}',
                        tracer_example], capture_output=True, text=True, timeout=TIMEOUT, preexec_fn=_child_setup)
    msg = one_error_line(r, 1)
    assert "stdout" in msg and "-o FILE" in msg, msg
    assert not marker.exists()


# -- 3. the command dies with the tracer ----------------------------------------------

def _child_of(pid: int, comm: str, timeout=10.0) -> int:
    """The child of `pid` once it runs `comm` (exec'd: released from the gate)."""
    def find():
        try:
            kids = open(f"/proc/{pid}/task/{pid}/children").read().split()
            return next((int(k) for k in kids if open(f"/proc/{k}/comm").read().strip() == comm), None)
        except (OSError, StopIteration):
            return None
    child = wait_for(find, timeout)
    assert child, f"no {comm} child of {pid}"
    return child


@pytest.mark.parametrize("front_end", ["tracer-example", "trace()"])
def test_sigkill_of_the_tracer_kills_the_command(tracer_example, tmp_path, front_end):
    """tracer-example -- CMD, and trace() in Python (the same start_gated
    option: the thread that waits for the command is the one it dies with)."""
    if front_end == "trace()":
        argv = [PY, "-c", "import tracer_ebpf; tracer_ebpf.trace(['sleep', '60'], 'syscalls/sys_enter_write')"]
    else:
        argv = [tracer_example, "-q", "--events", WRITE, "-o", str(tmp_path / "out"), "--", "sleep", "60"]
    p = popen(argv)
    child = None
    try:
        child = _child_of(p.pid, "sleep", timeout=20)
        p.send_signal(signal.SIGKILL)
        p.wait(timeout=10)
        assert wait_for(lambda: gone(child), 5), "the command outlived its tracer, untraced"
    finally:
        p.kill()
        p.wait()
        if child and not gone(child):
            os.kill(child, signal.SIGKILL)


# -- 4. `--` needs a command --------------------------------------------------------------

def test_double_dash_without_a_command_is_an_error(tracer_example):
    t0 = time.monotonic()
    r = cli(tracer_example, "--events", WRITE, "--duration", "2", "--")
    assert "command" in one_error_line(r)
    assert time.monotonic() - t0 < 10


# -- 5. many --pid flags -----------------------------------------------------------------

def test_70000_pid_flags_are_parsed_in_linear_time(tracer_example):
    """Rejected after parsing (more than the core's 65,536), so nothing is
    traced; argparse alone took minutes for these."""
    argv = [x for i in range(70000) for x in ("--pid", str(i + 1))]
    t0 = time.monotonic()
    try:
        r = cli(tracer_example, "--duration", "0", *argv, timeout=30)
    except subprocess.TimeoutExpired:
        pytest.fail("70,000 --pid flags: not parsed within 30 s")
    took = time.monotonic() - t0
    assert "at most 65536" in one_error_line(r), r.stderr
    assert took < 10, took


PARSE_CASES = [
    ["--pid", "5"],
    ["--pid=5", "--pid", "6", "--follow"],
    ["-q", "--pid", "7", "--comm", "x", "--pid", "8", "--", "sleep", "1", "--pid", "9"],
    ["--events", "a,b", "--pid", "3", "sleep", "--pid", "4"],
    ["--pi", "5", "--pid", "6"],                # an abbreviation: argparse's
    ["-qo", "f", "--pid", "6"],                 # bundled short flags: argparse's
    ["--pid", "6", "-o", "f", "--pid", "7", "--duration", "1"],
    ["--content-max", "16K", "--pid", "1"],
]


@pytest.mark.parametrize("argv", PARSE_CASES, ids=lambda a: " ".join(a))
def test_the_fast_pid_parser_reads_argv_as_argparse_does(argv):
    from tracer_ebpf.cli import build_parser, parse_args

    parser = build_parser()
    assert vars(parse_args(parser, list(argv))) == vars(parser.parse_args(list(argv)))


@pytest.mark.parametrize("argv", [["--pid"], ["--pid", "--follow"], ["--pid", "0"], ["--pid=x"], ["--pid", "-3"]],
                         ids=lambda a: " ".join(a))
def test_the_fast_pid_parser_refuses_what_argparse_refuses(tracer_example, argv):
    one_error_line(cli(tracer_example, "--duration", "0", *argv))


# -- 6. sizes with suffixes ----------------------------------------------------------------

def test_sizes_take_k_m_g_suffixes():
    from tracer_ebpf.cli import build_parser

    a = build_parser().parse_args(["--payload-bytes-per-cpu", "16M", "--ring-bytes", "64K", "--queue-bytes", "1G",
                                   "--content-max", "1M", "--argv-max", "4k"])
    assert (a.payload_bytes_per_cpu, a.ring_bytes, a.queue_bytes, a.content_max, a.argv_max) == (
        16 << 20, 64 << 10, 1 << 30, 1 << 20, 4 << 10)
    b = build_parser().parse_args(["--ring-bytes", "128KiB", "--content-max", "4096", "--argv-max", "0x1000"])
    assert (b.ring_bytes, b.content_max, b.argv_max) == (128 << 10, 4096, 4096)


def test_sizes_with_suffixes_trace(tracer_example, tmp_path):
    out = tmp_path / "out.jsonl"
    r = cli(tracer_example, "-q", "--events", WRITE, "--ring-bytes", "64K", "--payload-bytes-per-cpu", "2M",
            "--queue-bytes", "1M", "--content-max", "4K", "--argv-max", "1K", "-o", str(out), "--",
            "sh", "-c", "echo hi")
    assert r.returncode == 0, r.stderr
    assert [json.loads(line)["payload"]["content"] for line in out.read_text().splitlines()] == ["hi\n"]


@pytest.mark.parametrize("opt,value", [("--content-max", "16X"), ("--ring-bytes", "1.5M"), ("--queue-bytes", "16MB"),
                                       ("--payload-bytes-per-cpu", "M"), ("--argv-max", "2M"), ("--ring-bytes", "1K"),
                                       ("--content-max", "1e3")])
def test_bad_sizes_are_clear_errors(tracer_example, opt, value):
    msg = one_error_line(cli(tracer_example, "--duration", "0", opt, value))
    assert opt in msg and value in msg, msg
    assert "K, M or G" in msg or "must be from" in msg, msg


# -- 7. --pid targets --------------------------------------------------------------------

def test_pid_of_no_process_is_an_error(tracer_example):
    pid = dead_pid()
    t0 = time.monotonic()
    r = cli(tracer_example, "--events", WRITE, "--pid", str(pid), "--duration", "5")
    assert f"--pid {pid}: no such process" in one_error_line(r)
    assert time.monotonic() - t0 < 4  # refused, not traced for the 5 s


def test_own_pid_is_an_error(tracer_example):
    # exec: the shell's pid ($$) becomes tracer-example's.
    r = subprocess.run(["sh", "-c", f'exec "$0" --events {WRITE} --pid $$ --duration 5', tracer_example],
                       capture_output=True, text=True, timeout=TIMEOUT, preexec_fn=_child_setup)
    assert "itself" in one_error_line(r)


def test_thread_id_is_an_error(tracer_example):
    code = ("import threading, time\nt = threading.Thread(target=time.sleep, args=(30,), daemon=True)\n"
            "t.start()\nprint(t.native_id, flush=True)\ntime.sleep(30)\n")
    p = popen([PY, "-c", code], stdout=subprocess.PIPE, stdin=subprocess.DEVNULL)
    try:
        assert select.select([p.stdout], [], [], 20)[0]
        tid = int(p.stdout.readline())
        r = cli(tracer_example, "--events", WRITE, "--pid", str(tid), "--duration", "5")
        assert f"thread of process {p.pid}" in one_error_line(r)
    finally:
        p.kill()
        p.wait()


def test_tracing_ends_when_every_pid_target_has_exited(tracer_example):
    targets = [popen(["sleep", "1"]), popen(["sleep", "2.5"])]
    try:
        t0 = time.monotonic()
        p = popen([tracer_example, "--events", WRITE, *[x for t in targets for x in ("--pid", str(t.pid))]],
                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        _, err = finish(p, 30)
        took = time.monotonic() - t0
    finally:
        for t in targets:
            t.kill()
            t.wait()
    assert p.returncode == 0, err
    assert b"every --pid process has exited" in err, err
    assert 2.5 <= took < 15, took  # after the last target, not the first


FOLLOW_TARGET = r"""
import os, sys, time
sys.stdin.readline()                    # forked only once tracing has begun
if os.fork() == 0:
    time.sleep(4)
    open(sys.argv[1], "w").write(repr(time.monotonic()))
    os._exit(0)
time.sleep(1.5)                         # the parent exits first: the child is re-parented
"""


@pytest.mark.parametrize("follow", [True, False], ids=["follow", "no-follow"])
def test_follow_ends_when_the_targets_and_their_children_have_exited(tracer_example, tmp_path, follow):
    marker = tmp_path / "child-ended"
    target = popen([PY, "-c", FOLLOW_TARGET, str(marker)], stdin=subprocess.PIPE)
    try:
        p = popen([tracer_example, "--events", WRITE, "--pid", str(target.pid), *(["--follow"] if follow else [])],
                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        assert read_line(p).startswith(b"tracer-example: tracing")
        target.stdin.write(b"go\n")
        target.stdin.close()
        _, err = finish(p, 30)
        ended = time.monotonic()
        assert p.returncode == 0, err
        assert wait_for(marker.exists, 10)
        child_ended = float(marker.read_text())
    finally:
        target.kill()
        target.wait()
    if follow:
        assert child_ended <= ended < child_ended + 10, (child_ended, ended)
    else:
        assert ended < child_ended, "without --follow, the children are not waited for"


# -- 8. the command's stdout mixed into the JSON ---------------------------------------

@pytest.mark.parametrize("args,warned", [([], True), (["-q"], False), (["-o", "{out}"], False)],
                         ids=["stdout", "quiet", "to-a-file"])
def test_a_warning_when_the_command_shares_stdout_with_the_json(tracer_example, tmp_path, args, warned):
    args = [a.format(out=tmp_path / "out") for a in args]
    r = cli(tracer_example, "--events", WRITE, *args, "--", "sh", "-c", "echo hi")
    assert r.returncode == 0, r.stderr
    warnings = [line for line in r.stderr.splitlines() if line.startswith("tracer-example: warning:")]
    assert len(warnings) == (1 if warned else 0), r.stderr
    if warned:
        assert "-o FILE" in warnings[0]


# -- 9. to_dataframe() without pandas ---------------------------------------------------

NO_PANDAS = r"""
import json, sys, time
sys.modules["pandas"] = None            # as if pandas were not installed
import tracer_ebpf
kind = sys.argv[1]
t0 = time.monotonic()
try:
    if kind == "tracer":
        with tracer_ebpf.Tracer("syscalls/sys_enter_write", comm="tb-no-such") as t:
            t.to_dataframe(20.0)
    else:
        tracer_ebpf.trace(["true"], "syscalls/sys_enter_write").to_dataframe()
except ImportError as e:
    print(json.dumps({"error": str(e), "took": time.monotonic() - t0}))
"""


@pytest.mark.parametrize("kind", ["tracer", "trace_result"])
def test_to_dataframe_without_pandas_fails_at_once(kind):
    r = subprocess.run([PY, "-c", NO_PANDAS, kind], capture_output=True, text=True, timeout=TIMEOUT,
                       preexec_fn=_child_setup)
    assert r.returncode == 0 and r.stdout, r.stderr
    res = json.loads(r.stdout)
    assert "pip install 'tracer-ebpf[pandas]'" in res["error"], res
    assert res["took"] < 5, res  # not after collecting for the 20 s
