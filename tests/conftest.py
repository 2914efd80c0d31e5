"""Shared fixtures: every test here runs against the real kernel."""

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable


def pytest_configure(config):
    """Tests send SIGINT and SIGQUIT to the processes they start and expect
    the default reaction (KeyboardInterrupt, a core-less exit). A background
    job of a non-interactive shell (`bash .ci/run &`) starts with both
    ignored, and an ignored signal stays ignored across exec: give this
    process handlers, which exec resets to the default in every child."""
    for sig, handler in ((signal.SIGINT, signal.default_int_handler), (signal.SIGQUIT, signal.SIG_DFL)):
        if signal.getsignal(sig) == signal.SIG_IGN:
            signal.signal(sig, handler)


def path_of_length(n, letter="p"):
    """An absolute path of exactly n bytes (components under NAME_MAX)."""
    parts, left = [], n - 1
    while left > 0:
        k = min(200, left)
        parts.append(letter * k)
        left -= k + 1
    p = ("/" + "/".join(parts))[:n]
    assert len(p) == n
    return p


@contextlib.contextmanager
def gated_process(cmd, **kw):
    """Starts `cmd` held before exec (tracer_ebpf.run.start_gated), so a
    tracer can be attached to its pid first. Yields (proc, go): go() lets it
    exec. On exit the gate is closed if unused and a live process killed."""
    from tracer_ebpf.run import release, start_gated

    proc, gate = start_gated(cmd, **kw)
    held = [gate]

    def go():
        release(held.pop())

    try:
        yield proc, go
    finally:
        if held:
            os.close(held.pop())
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def tool(name: str) -> str:
    """A console script installed beside this interpreter."""
    p = Path(PY).parent / name
    if p.exists():
        return str(p)
    found = shutil.which(name)
    if not found:
        pytest.fail(f"{name} is not installed (pip install the package first)")
    return found


@pytest.fixture(scope="session")
def tracer_example() -> str:
    return tool("tracer-example")


@pytest.fixture(scope="session")
def rust_example() -> str:
    # Always build: a no-op when fresh, and never a stale reference binary.
    subprocess.run(["cargo", "build", "--release", "--bin", "example"], cwd=ROOT, check=True)
    return str(ROOT / "target" / "release" / "example")


def run_child(code: str, **kw) -> subprocess.CompletedProcess:
    """Runs a Python snippet as a child process."""
    return subprocess.run([PY, "-c", code], **kw)


def wait_for(pred, timeout=5.0, interval=0.05):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        v = pred()
        if v:
            return v
        time.sleep(interval)
    return pred()


def our_bpf_prog_ids():
    """Ids of loaded BPF programs of ours (names start with handle__ or tb_)."""
    out = subprocess.run(["bpftool", "prog", "show", "--json"], capture_output=True, text=True, check=True).stdout
    import json

    return [p["id"] for p in json.loads(out) if p.get("name", "").startswith(("handle__", "tb_follow"))]
