"""Issue 5: tracer-example, the command-line front end, on the real kernel."""

import json
import os
import pty
import re
import select
import signal
import subprocess
import time

import pytest

import tracer_ebpf
from tracer_ebpf import events as catalogue
from tracer_ebpf.cli import build_parser
from conftest import PY
from test_python_api import loaded_prog_ids, prog_ids_of

WRITE = "syscalls/sys_enter_write"
EXEC = "sched/sched_process_exec"
EXIT = "sched/sched_process_exit"


def cli(tracer_example, *args, **kw) -> subprocess.CompletedProcess:
    if "stdout" not in kw and "stderr" not in kw:
        kw.setdefault("capture_output", True)
    return subprocess.run([tracer_example, *args], text=True, timeout=120, **kw)


def json_lines(path):
    with open(path) as f:
        return [json.loads(line) for line in f]


def assert_clean(stderr: str) -> None:
    assert "Traceback" not in stderr, stderr


# -- a command: its exit status ---------------------------------------------------

@pytest.mark.parametrize("script,status", [("exit 0", 0), ("exit 3", 3), ("kill -9 $$", 128 + 9),
                                           ("kill -TERM $$", 128 + 15)])
def test_exit_status_is_the_commands(tracer_example, tmp_path, script, status):
    out = tmp_path / "out.jsonl"
    r = cli(tracer_example, "-q", "--events", EXIT, "-o", str(out), "--", "sh", "-c", script)
    assert r.returncode == status, r.stderr
    assert_clean(r.stderr)
    exits = [e for e in json_lines(out) if e["event_type"] == EXIT]
    assert len(exits) == 1
    p = exits[0]["payload"]
    assert (p["exit_status"], p["signal"]) == ((status, 0) if status < 128 else (0, status - 128))


def test_missing_command(tracer_example):
    r = cli(tracer_example, "--", "no-such-command-xyz", "arg")
    assert r.returncode == 127
    assert r.stderr == "tracer-example: error: cannot run 'no-such-command-xyz': command not found\n"
    assert r.stdout == ""


# -- arguments -----------------------------------------------------------------------

BAD_ARGS = [
    ["--bogus"],
    ["--pid", "x"],
    ["--pid", "0"],
    ["--pid", "99999999999"],
    ["--content-max", "0"],
    ["--content-max", "2000000"],
    ["--argv-max", "-3"],
    ["--ring-bytes", "10"],
    ["--duration", "-1"],
    ["--duration", "soon"],
    ["--duration", "nan"],
    ["--content-fds", "a,b"],
    ["--content-fds", ","],
    ["--events", "nosuch/event"],
    ["--events", "syscalls/sys_enter_writ"],
    ["--events", ""],
    ["--events", "x" * 100000],
    ["--comm", "a-name-longer-than-15"],
    [x for i in range(9) for x in ("--comm", f"c{i}")],
    ["--follow"],
    ["--output", "/nonexistent/dir/out.jsonl"],
]


@pytest.mark.parametrize("args", BAD_ARGS, ids=lambda a: " ".join(a)[:40])
def test_bad_arguments_give_one_line_errors(tracer_example, args):
    t0 = time.monotonic()
    r = cli(tracer_example, *args)
    assert time.monotonic() - t0 < 30
    assert r.returncode == 2, r.stderr
    assert r.stdout == ""
    assert r.stderr.startswith("tracer-example: error: ") and r.stderr.count("\n") == 1, r.stderr
    assert len(r.stderr) < 600
    assert_clean(r.stderr)


def test_help_explains_every_option(tracer_example):
    r = cli(tracer_example, "--help")
    assert r.returncode == 0 and r.stderr == ""
    for action in build_parser()._actions:
        assert action.help, action
        for opt in action.option_strings:
            assert opt in r.stdout, opt
    for text in ("-- CMD ARGS", "exit status", "CAP_BPF", "JSON line", "Ctrl-C"):
        assert text in r.stdout, text


def test_list(tracer_example):
    r = cli(tracer_example, "--list")
    assert r.returncode == 0
    for name, (_, comment, fields) in catalogue.CATALOGUE.items():
        assert name in r.stdout and comment in r.stdout
        for f, t in fields:
            assert f"{f}: {t}" in r.stdout


# -- output ------------------------------------------------------------------------

def test_output_file_keeps_the_commands_output_apart(tracer_example, tmp_path):
    out = tmp_path / "out.jsonl"
    r = cli(tracer_example, "--events", WRITE, "--output", str(out), "--",
            "sh", "-c", "echo to-stdout; echo to-stderr >&2")
    assert r.returncode == 0
    assert r.stdout == "to-stdout\n"
    assert "to-stderr\n" in r.stderr
    lines = r.stderr.splitlines()
    assert lines[0].startswith("tracer-example: tracing 1 event(s)")
    assert re.match(r"tracer-example: 2 events in [0-9.]+ s; records=\d+ ring_full=0 .* queued=0 queued_bytes=0 queue_peak_bytes=\d+$", lines[-1]), lines
    evs = json_lines(out)
    assert [e["payload"]["content"] for e in evs] == ["to-stdout\n", "to-stderr\n"]
    assert "\r" not in r.stderr  # no status line: stderr is not a terminal


def test_json_lines_on_stdout_until_the_duration(tracer_example):
    code = ("import ctypes, os, time\nctypes.CDLL(None).prctl(15, b'tbclitick', 0, 0, 0)\n"
            "for i in range(100):\n    os.write(1, b'tick%d\\n' % i); time.sleep(0.005)\n")
    p = subprocess.Popen([tracer_example, "--events", WRITE, "--comm", "tbclitick", "--duration", "2"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert p.stderr.readline().startswith("tracer-example: tracing")
    t0 = time.monotonic()
    subprocess.run([PY, "-c", code], stdout=subprocess.DEVNULL, check=True)
    out, err = p.communicate(timeout=30)
    assert p.returncode == 0 and time.monotonic() - t0 < 10
    evs = [json.loads(line) for line in out.splitlines()]
    assert [e["payload"]["content"] for e in evs] == [f"tick{i}\n" for i in range(100)]
    assert {e["comm"] for e in evs} == {"tbclitick"}
    assert "100 events" in err


def test_same_json_as_python_to_json(tracer_example, tmp_path):
    """The CLI's line for a workload equals Event.to_json() of a Python
    Tracer for the same workload, but for ids, timestamps and process ids
    (compared by order of first appearance)."""
    cmd = ["sh", "-c", "printf 'x\\377\\000y\\n'; echo err >&2; exit 3"]
    events = [EXEC, WRITE, EXIT]
    out = tmp_path / "out.jsonl"
    r = cli(tracer_example, "-q", "--events", ",".join(events), "-o", str(out), "--", *cmd,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    assert r.returncode == 3
    with open(out) as f:
        from_cli = f.read().splitlines()
    res = tracer_ebpf.trace(cmd, events, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    from_python = [e.to_json() for e in res.events]
    assert len(from_cli) == 4 and '"content_base64":"eP8AeQo="' in from_cli[1]
    assert canonical(from_cli) == canonical(from_python)


def canonical(lines):
    ids = {}

    def num(kind):
        return lambda m: f'"{m.group(1)}":{ids.setdefault((kind, m.group(2)), len(ids))}'

    out = []
    for line in lines:
        line = re.sub(r'"(event_id|timestamp_ns)":\d+', r'"\1":0', line)
        line = re.sub(r'"(pid|tid|ppid|old_pid|ns_pid|ns_tid)":(\d+)', num("pid"), line)
        out.append(re.sub(r'"(upid|uppid)":(\d+)', num("upid"), line))
    return out


def test_a_closed_pipe_is_not_an_error(tracer_example):
    p = subprocess.Popen([tracer_example, "-q", "--events", WRITE, "--", "sh", "-c",
                          "i=0; while [ $i -lt 3000 ]; do echo line$i >&2; i=$((i+1)); done"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    first = p.stdout.readline()
    p.stdout.close()
    _, err = p.communicate(timeout=60)
    assert json.loads(first)["event_type"] == WRITE
    assert p.returncode == 0
    assert b"Traceback" not in err and b"BrokenPipe" not in err


# -- signals ---------------------------------------------------------------------------

def still_loaded(ids, timeout: float = 5.0):
    """Which of program `ids` are still loaded after up to `timeout` s: the
    kernel frees a program whose last reference went at process exit
    asynchronously (tracing programs after an RCU grace period)."""
    deadline = time.monotonic() + timeout
    while (left := ids & loaded_prog_ids()) and time.monotonic() < deadline:
        time.sleep(0.05)
    return left


def start(tracer_example, *args):
    p = subprocess.Popen([tracer_example, *args], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    line = p.stderr.readline()
    assert line.startswith("tracer-example: tracing"), line
    return p


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_stop_signal_ends_cleanly_and_detaches(tracer_example, tmp_path, sig):
    p = start(tracer_example, "--events", WRITE, "-o", str(tmp_path / "out.jsonl"))
    try:
        held = prog_ids_of(p.pid)
        assert held
        time.sleep(0.3)
        p.send_signal(sig)
        _, err = p.communicate(timeout=10)
    finally:
        p.kill()
    assert p.returncode == 0, err
    assert_clean(err)
    assert re.search(r"tracer-example: \d+ events in [0-9.]+ s; records=", err), err
    assert not still_loaded(held)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_stop_signal_is_passed_on_to_the_command(tracer_example, tmp_path, sig):
    p = start(tracer_example, "--events", WRITE, "-o", str(tmp_path / "out.jsonl"), "--", "sleep", "30")
    try:
        held = prog_ids_of(p.pid)
        child = int(open(f"/proc/{p.pid}/task/{p.pid}/children").read().split()[0])
        deadline = time.monotonic() + 10
        while open(f"/proc/{child}/comm").read().strip() != "sleep" and time.monotonic() < deadline:
            time.sleep(0.02)
        assert held and not prog_ids_of(child)  # no BPF fd leaks into the command
        p.send_signal(sig)
        _, err = p.communicate(timeout=10)
    finally:
        p.kill()
    assert p.returncode == 128 + sig, err
    assert_clean(err)
    assert not still_loaded(held)


# -- a terminal --------------------------------------------------------------------------

@pytest.mark.parametrize("to_file", [True, False])
def test_status_line_on_a_terminal(tracer_example, tmp_path, to_file):
    """A status line on a terminal, unless the JSON lines go there too."""
    master, slave = pty.openpty()
    writer = subprocess.Popen(["sh", "-c", "while :; do echo x; sleep 0.01; done"], stdout=subprocess.DEVNULL)
    try:
        output = ["-o", str(tmp_path / "o")] if to_file else ["--pid", str(writer.pid)]
        p = subprocess.Popen([tracer_example, "--events", WRITE, "--duration", "2", *output],
                             stdin=slave, stdout=slave, stderr=slave)
        os.close(slave)
        seen = b""
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if select.select([master], [], [], 0.2)[0]:
                try:
                    chunk = os.read(master, 4096)
                except OSError:
                    break
                if not chunk:
                    break
                seen += chunk
            elif p.poll() is not None:
                break
        p.wait(10)
    finally:
        writer.kill()
        writer.wait()
        os.close(master)
    text = seen.decode(errors="replace")
    assert p.returncode == 0, text
    status = re.search(r"\r\x1b\[Ktracer-example: [\d,]+ events, [\d,]+/s, queued [\d,]+ \([\d.]+ MiB\)", text)
    assert bool(status) == to_file, text
    assert re.search(r"tracer-example: \d+ events in [0-9.]+ s; records=", text), text


def test_status_line_shows_the_backlog_and_every_loss_counter_that_is_not_zero():
    from tracer_ebpf.cli import _status_line

    st = {"queued": 1234, "queued_bytes": 3 << 20, "ring_full": 0, "busy": 0, "payload_full": 7, "fault": 2,
          "decode_errors": 0, "overwritten": 0, "discarded": 5}
    assert _status_line(10000, 2500.4, st) == \
        "10,000 events, 2,500/s, queued 1,234 (3.0 MiB), payload_full 7, fault 2, discarded 5"
