"""trace(): run a command under the tracer and collect its events."""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Dict, List, Mapping, Optional, Sequence, Union

from ._native import Event
from . import checks
from .frame import require_pandas, to_dataframe
from .tracer import EventSpec, Tracer

if TYPE_CHECKING:
    import pandas


@dataclass
class TraceResult:
    """What ``trace()`` returns."""

    #: the events of the command and its children, in order of delivery
    events: List[Event]
    #: its exit code; -N if a signal N killed it (as in subprocess)
    returncode: int
    #: its process id
    pid: int
    #: the tracer's counters at the end (see ``Tracer.stats()``)
    stats: Dict[str, int] = field(default_factory=dict)
    #: True if Ctrl-C ended the trace (the command was killed; the events are
    #: those captured until then)
    interrupted: bool = False

    def to_dataframe(self) -> "pandas.DataFrame":
        """The events as a pandas DataFrame (``pip install tracer-ebpf[pandas]``)."""

        require_pandas()  # ImportError naming the extra to install, before any work

        return to_dataframe(self.events)


# Runs in the child: waits on the gate pipe until the tracer is attached, then execs
# the command in the same process (so the pid the tracer follows is the
# command's). The read is already blocked when the tracer attaches, so the
# gate adds no traced syscall of its own but the exec: the program's path is
# resolved by the parent (os.execvp would import modules after the gate).
# argv[3], if not 0, is the parent's pid: the child asks the kernel for
# SIGKILL when the parent dies (PR_SET_PDEATHSIG, kept across exec), then
# checks that the parent is still the one it was started by (had it died
# before the prctl, the child was already re-parented and would never get
# the signal). It fails without writing to `ready` if either does not hold.
_GATE = (
    "import os, sys\n"
    "gate, ready, parent = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])\n"
    "if parent:\n"
    "    import ctypes\n"
    "    if ctypes.CDLL(None, use_errno=True).prctl(1, 9, 0, 0, 0) != 0 or os.getppid() != parent:\n"
    "        os._exit(125)\n"
    "os.write(ready, b'r')\n"
    "os.close(ready)\n"
    "if os.read(gate, 1) != b'x':\n"
    "    os._exit(125)\n"
    "os.close(gate)\n"
    "try:\n"
    "    os.execv(sys.argv[4], sys.argv[5:])\n"
    "except OSError as e:\n"
    "    sys.stderr.write('%s: %s\\n' % (sys.argv[5], e.strerror))\n"
    "    os._exit(127 if isinstance(e, FileNotFoundError) else 126)\n"
)


def _resolve(prog: str, cwd: Optional[str], env: Mapping[str, str]) -> str:
    """The absolute path the command will run, as a shell would find it."""
    path: Optional[str]
    if os.sep in prog:
        candidate = os.path.join(cwd, prog) if cwd else prog
        path = candidate if os.path.exists(candidate) else None
    else:
        path = shutil.which(prog, path=env.get("PATH", os.defpath))
    if path is None:
        raise FileNotFoundError(errno.ENOENT, "command not found", prog)
    return os.path.abspath(path)


def start_gated(
    cmd: Union[str, Sequence[str]],
    cwd: Optional[str] = None,
    env: Optional[Dict[str, str]] = None,
    *,
    die_with_parent: bool = False,
    **popen_kwargs: Any,
) -> "tuple[subprocess.Popen[bytes], int]":
    """Starts ``cmd`` held just before exec until ``release()`` is called on
    the returned fd, so a tracer can be attached to its pid first.

    ``die_with_parent``: the command gets SIGKILL when the thread that called
    this exits (``PR_SET_PDEATHSIG``, set before exec and kept by it; not
    passed on to the command's own children). A traced command then never
    outlives its tracer untraced, even when the tracer is SIGKILLed. Call it
    from a thread that lives as long as the command should (the main thread,
    or the one that waits for the command)."""
    if isinstance(cmd, str):
        cmd = [cmd]
    cmd = list(cmd)
    if not cmd:
        raise ValueError("empty command")
    for arg in cmd:
        if not isinstance(arg, (str, os.PathLike)):
            raise TypeError(f"command arguments must be strings, not {type(arg).__name__} ({arg!r:.60})")
    cmd = [os.fspath(a) for a in cmd]
    path = _resolve(cmd[0], cwd, os.environ if env is None else env)
    r, w = os.pipe()
    ready_r, ready_w = os.pipe()

    try:
        proc = subprocess.Popen(
            [sys.executable, "-I", "-S", "-c", _GATE, str(r), str(ready_w), str(os.getpid() if die_with_parent else 0),
             path, *cmd],
            pass_fds=(r, ready_w),
            cwd=cwd,
            env=env,
            **popen_kwargs,
        )
    except BaseException:
        os.close(w)
        raise
    finally:
        os.close(r)
        os.close(ready_w)
    try:
        # Wait until the gate is about to block: its own start-up (module
        # imports) must not show up in the trace.
        ready = os.read(ready_r, 1)
    finally:
        os.close(ready_r)
    if ready != b"r":  # the gate exited: PR_SET_PDEATHSIG failed, or Python could not start
        os.close(w)
        status = proc.wait()
        raise OSError(errno.ECHILD, f"the command could not be started under the gate (exit status {status})", cmd[0])
    return proc, w


def release(gate_fd: int) -> None:
    """Lets a command started by ``start_gated`` proceed to exec."""
    try:
        os.write(gate_fd, b"x")
    finally:
        os.close(gate_fd)


def trace(
    cmd: Union[str, Sequence[str]],
    events: EventSpec = None,
    *,
    timeout: Optional[float] = None,
    settle: float = 0.2,
    stdin: Any = None,
    stdout: Any = None,
    stderr: Any = None,
    cwd: Optional[str] = None,
    env: Optional[Dict[str, str]] = None,
    **tracer_kwargs: Any,
) -> TraceResult:
    """Runs ``cmd`` (a list, as for subprocess) under the tracer, following
    its children, and returns its events and exit code.

    The tracer is attached before the command starts, and it keeps tracing
    ``settle`` seconds after the command exits (for children still
    writing). ``timeout``: kill the command after that many seconds and raise
    ``subprocess.TimeoutExpired``. Ctrl-C kills the command and returns what
    was captured until then, with ``interrupted`` set. Raises
    ``FileNotFoundError`` if the command does not exist; other Tracer
    arguments (``content_max``, ...) are passed on.

    >>> r = trace(["sh", "-c", "echo hi | tr a-z A-Z"])   # doctest: +SKIP
    >>> [e.payload["content"] for e in r.events if e.event_type == "syscalls/sys_enter_write"]
    """
    limit = None if timeout is None else checks.seconds("timeout", timeout)
    settle = checks.duration("settle", settle)
    # die_with_parent: this thread waits for the command (or kills it), so it
    # outlives it; if this process is killed, the command goes with it.
    proc, gate = start_gated(cmd, stdin=stdin, stdout=stdout, stderr=stderr, cwd=cwd, env=env, die_with_parent=True)
    try:
        tracer = Tracer(events, pids=[proc.pid], follow_children=True, **tracer_kwargs)
    except BaseException:
        proc.kill()
        os.close(gate)
        proc.wait()
        raise
    out: List[Event] = []
    interrupted = False
    with tracer:
        release(gate)
        native = tracer._n()
        deadline = None if limit is None else time.monotonic() + limit
        try:
            with tracer._yielding():
                while proc.poll() is None:
                    if deadline is not None and time.monotonic() > deadline:
                        proc.kill()
                        proc.wait()
                        raise subprocess.TimeoutExpired(cmd, limit or 0)
                    out.extend(native.poll(65536, 0.05))
                # Children may outlive the command a moment; events in flight
                # land within a poll interval.
                end = time.monotonic() + settle
                while time.monotonic() < end:
                    out.extend(native.poll(65536, 0.05))
        except KeyboardInterrupt:
            interrupted = True
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        # Everything captured is handed out (bounded in time; the rest is
        # counted as discarded).
        out.extend(tracer._finish())
    return TraceResult(events=out, returncode=proc.returncode, pid=proc.pid, stats=tracer.stats(), interrupted=interrupted)
