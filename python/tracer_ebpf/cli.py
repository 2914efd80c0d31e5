"""tracer-example: print every captured event as one JSON line, write the
events into a Parquet dataset (--parquet), or export them as OpenTelemetry
logs (--otlp)."""

from __future__ import annotations

import argparse
import errno
import fcntl
import os
import re
import resource
import signal
import stat
import subprocess
import sys
import time
from types import FrameType
from typing import IO, Callable, Dict, List, NoReturn, Optional, Tuple, Union

from . import _native
from .dataset import DatasetSummary, ParquetDataset
from .errors import DatasetError, TracerError
from .run import release, start_gated
from .sinks import JsonLines, Otlp, ParquetSink, add_otlp_arguments, otlp_exporter
from .tracer import STOP_DRAIN_SECONDS, Tracer

PROG = "tracer-example"
_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
_MAX_PIDS = 65536  # the core's limit (Config::validate), checked before /proc is read
_WATCH_INTERVAL = 0.5  # seconds between checks that --pid targets still live
_STOP_GRACE = 3.0  # seconds a command gets after SIGTERM before SIGKILL (write errors)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        """One line, no usage dump."""
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def _int_in(lo: int, hi: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            v = int(text, 0)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
        if not lo <= v <= hi:
            raise argparse.ArgumentTypeError(f"must be from {lo} to {hi}: {text!r}")
        return v

    return parse


_SIZE = re.compile(r"([0-9]+)\s*([kmg](?:ib)?)?", re.IGNORECASE)
_SIZE_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}


def _size_in(lo: int, hi: int) -> Callable[[str], int]:
    """A size in bytes: an integer with an optional K, M or G suffix (binary
    multiples, as the defaults in --help are; KiB/MiB/GiB also accepted)."""

    def parse(text: str) -> int:
        m = _SIZE.fullmatch(text.strip())
        if m is None:
            try:
                v = int(text, 0)  # plain integers as before, 0x1000 included
            except ValueError:
                raise argparse.ArgumentTypeError(
                    f"not a size: {text[:40]!r} (a number of bytes, optionally with a K, M or G "
                    "suffix: K=1024, e.g. 64K, 16M, 1G)") from None
        else:
            v = int(m.group(1)) * _SIZE_UNITS[(m.group(2) or "")[:1].lower()]
        if not lo <= v <= hi:
            raise argparse.ArgumentTypeError(f"must be from {_human(lo)} to {_human(hi)}: {text[:40]!r}")
        return v

    return parse


def _human(n: int) -> str:
    for unit, shift in (("G", 30), ("M", 20), ("K", 10)):
        if n >= 1 << shift and n % (1 << shift) == 0:
            return f"{n >> shift}{unit}"
    return str(n)


def _fds(text: str) -> List[int]:
    fd = _int_in(0, 2**31 - 1)
    fds = [fd(x.strip()) for x in text.split(",") if x.strip()]
    if not fds:
        raise argparse.ArgumentTypeError(f"not a comma-separated list of fds: {text!r}")
    return fds


def _seconds(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not 0 <= v < 1e9:
        raise argparse.ArgumentTypeError(f"must be a non-negative number of seconds: {text!r}")
    return v


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog=PROG,
        description="Trace kernel events with eBPF and print each as one JSON line on stdout\n"
        "(the format of the Rust and C++ examples; see README.md). Diagnostics, a live\n"
        "status line (when stderr is a terminal that the JSON lines and the command do\n"
        "not write to) and a summary of the counters go to stderr. At --duration, Ctrl-C,\n"
        "SIGTERM or the command's end the tracer detaches, then prints every event it\n"
        "had captured (for at most --drain-seconds; a second Ctrl-C cuts it short); what\n"
        "is left is counted as discarded in the summary. With --otlp the events go to an\n"
        "OpenTelemetry Collector (or any OTLP logs receiver) instead, flushed at the end\n"
        "within --drain-seconds too.",
        epilog="examples:\n"
        "  tracer-example --duration 5                 # every typed event, 5 seconds\n"
        "  tracer-example -o out.jsonl -- make         # one command and its children\n"
        "  tracer-example --comm python --events 'syscalls/sys_enter_write*'\n"
        "  tracer-example --pid 1234 --follow --content-fds 1,2,5\n"
        "  tracer-example --parquet /var/tmp/trace --duration 60   # a Parquet dataset\n"
        "  tracer-example --otlp http://collector:4318 -- make   # as OpenTelemetry logs\n"
        "\n"
        "sizes (BYTES) take a K, M or G suffix, powers of 1024: 64K, 16M, 1G.\n"
        "\n"
        "exit status: with a command, the command's (128+N if signal N killed it);\n"
        "otherwise 0, 1 on a tracing error or when the JSON lines cannot be written\n"
        "(or the --parquet files; e.g. a full disk: the command is then stopped, SIGTERM\n"
        "then SIGKILL), 2 on bad arguments (nothing is traced, run or written then).\n"
        "Needs root (or CAP_BPF, CAP_PERFMON and CAP_SYS_ADMIN).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--events", metavar="A,B",
                   help="event names or wildcards, comma-separated, e.g. 'syscalls/sys_*_openat' "
                   "(default: every typed event the kernel has; see --list)")
    p.add_argument("--list", action="store_true", help="list the known events with their fields and exit")
    p.add_argument("--pid", type=_int_in(*_native.LIMITS["pid"]), action="append", default=[], metavar="PID",
                   help="only this process (repeatable, at most 65536). It must exist and not be "
                   "tracer-example itself (which is never traced); without a command, tracing ends "
                   "when every --pid process has exited")
    p.add_argument("--follow", action="store_true",
                   help="also trace the children the --pid processes fork from now on; tracing then "
                   "ends when the --pid processes and those children have exited (children are "
                   f"found by scanning /proc every {_WATCH_INTERVAL} s: one whose parent exited "
                   "before a scan saw it is not waited for)")
    p.add_argument("--snapshot", action="store_true",
                   help="first, one proc/snapshot event per process already running (exe, argv, cwd, "
                   "uid, gid), parents before children, before any live event; --pid, --comm and "
                   "their exclusions select them, and with --follow the --pid processes' existing "
                   "descendants are snapshotted and traced too")
    p.add_argument("--comm", action="append", default=[], metavar="PREFIX",
                   help="only tasks whose name (comm) starts with PREFIX (repeatable, at most 8, "
                   "1 to 15 bytes each)")
    p.add_argument("--cgroup", action="append", default=[], metavar="PATH",
                   help="only tasks in this cgroup v2 directory or below it (repeatable, at most 8): "
                   "absolute inside the cgroup2 mount, or relative to its root, e.g. "
                   "system.slice/docker-<id>.scope")
    p.add_argument("--exclude-pid", type=_int_in(*_native.LIMITS["pid"]), action="append", default=[], metavar="PID",
                   help="never this process (repeatable)")
    p.add_argument("--exclude-comm", action="append", default=[], metavar="PREFIX",
                   help="never tasks whose name (comm) starts with PREFIX (repeatable, at most 8)")
    p.add_argument("--trace-output-readers", action="store_true",
                   help="also trace the processes that read tracer-example's output (by default the "
                   "other end of its stdout/stderr pipe or terminal, e.g. `| jq`, `| less`, the terminal "
                   "or sshd, and the readers of theirs, are not traced: their writes of the JSON lines "
                   "would become events without end)")
    p.add_argument("--content-fds", type=_fds, default=[1, 2], metavar="FDS",
                   help="comma-separated fds whose write content is captured (default: 1,2)")
    p.add_argument("--all-fds", action="store_true", help="capture the write content of every fd")
    p.add_argument("--content-max", type=_size_in(*_native.LIMITS["content_max"]), default=_native.DEFAULT_CONTENT_MAX,
                   metavar="BYTES", help="most content bytes captured per write; longer ones are "
                   "flagged content_truncated (default and maximum: 1048576)")
    p.add_argument("--argv-max", type=_size_in(*_native.LIMITS["argv_max"]), default=_native.DEFAULT_ARGV_MAX,
                   metavar="BYTES", help="most argv bytes captured per exec (default: 131072)")
    p.add_argument("--ring-bytes", type=_size_in(*_native.LIMITS["ring_bytes"]), default=None,
                   metavar="BYTES", help="ring buffer size for event records (default: sized from memory, "
                   f"{_native.DEFAULT_RING_BYTES >> 20} MiB here)")
    p.add_argument("--payload-bytes-per-cpu", type=_size_in(*_native.LIMITS["payload_bytes_per_cpu"]), default=None, metavar="BYTES",
                   help="payload buffer for contents, paths and argv, per CPU (one pool shared by the CPUs; default: sized from the "
                   "memory this process may use, RAM or its cgroup's limit: "
                   f"{_native.DEFAULT_PAYLOAD_BYTES_PER_CPU / (1 << 20):.1f} MiB here)")
    p.add_argument("--queue-bytes", type=_size_in(*_native.LIMITS["queue_bytes"]), default=None,
                   metavar="BYTES", help="most bytes of events held in this process while the "
                   f"output catches up (default: 1/8 of that memory, {_native.DEFAULT_QUEUE_BYTES >> 20} MiB here)")
    p.add_argument("--no-yield-cpu", action="store_true",
                   help="keep formatting at this process's priority during a burst (default: the output "
                   "thread runs as SCHED_IDLE while the queue holds less than a quarter of --queue-bytes, "
                   "so the traced programs keep their CPUs; the queue holds what is not printed yet)")
    p.add_argument("--duration", type=_seconds, metavar="SECS",
                   help="stop tracing after SECS seconds (a command keeps running; its exit "
                   "status is still returned)")
    p.add_argument("--drain-seconds", type=_seconds, default=STOP_DRAIN_SECONDS, metavar="SECS",
                   help="on stopping, print (or export) what was captured for at most SECS seconds "
                   f"(default: {STOP_DRAIN_SECONDS:g})")
    p.add_argument("--output", "-o", metavar="FILE",
                   help="write the JSON lines to FILE instead of stdout. FILE is created with mode "
                   "0600 and must not exist: an existing file or a symbolic link is refused, and so "
                   "is a file or FIFO of another user (a device such as /dev/null is written to)")
    p.add_argument("--append", action="store_true",
                   help="with --output: add to FILE if it is a regular file of yours (created 0600 "
                   "if missing; symbolic links and other users' files are still refused)")
    p.add_argument("--parquet", metavar="DIR",
                   help="write the events into a Parquet dataset in DIR instead of JSON lines on "
                   "stdout: DIR/host=HOST/date=YYYY-MM-DD/hour=HH/event=CATEGORY.NAME/part-*.parquet, "
                   "zstd, one event type per file; each file is renamed to its final name only once "
                   "complete (a stop closes every file; see docs/parquet.md). With --output, the "
                   "JSON lines go to FILE as well. The summary (files, rows, bytes) goes to stderr")
    p.add_argument("--host", metavar="NAME",
                   help="with --parquet: the host=NAME directory (default: this machine's host name; "
                   "ASCII letters, digits, '-', '_', '.')")
    p.add_argument("--max-file-bytes", type=_size_in(*_native.LIMITS["max_file_bytes"]), default=None, metavar="BYTES",
                   help="with --parquet: start a new file once one holds about BYTES (default: 128M)")
    p.add_argument("--max-file-seconds", type=_int_in(*_native.LIMITS["max_file_seconds"]), default=None,
                   metavar="SECS", help="with --parquet: start a new file once one has been open SECS "
                   "seconds (default: 300); files also end at each UTC hour")
    p.add_argument("--quiet", "-q", action="store_true", help="no status line and no summary on stderr")
    add_otlp_arguments(p, _seconds, _size_in(4 << 20, 64 << 30))
    p.add_argument("cmd", nargs=argparse.REMAINDER, metavar="-- CMD ARGS",
                   help="run CMD with ARGS and trace it and its children until it exits; "
                   "its output goes where tracer-example's does (use --output to keep them apart: "
                   "a warning says so when both go to stdout). CMD is killed if tracer-example "
                   "dies, so it never runs untraced")
    return p


def _say(msg: str) -> None:
    if sys.stderr is None:  # started with stderr closed: nowhere to say it
        return
    try:
        print(f"{PROG}: {msg}", file=sys.stderr, flush=True)
    except (OSError, ValueError):
        pass  # a broken stderr must not turn a message into a traceback


def _list_events() -> int:
    try:
        _print_events()
    except BrokenPipeError:  # e.g. `tracer-example --list | head`
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0


def _print_events() -> None:
    from . import list_events

    events = list_events()
    typed = [e for e in events if e["kind"] == "typed"]
    generic = [e for e in events if e["kind"] == "generic"]
    print(f"typed events ({len(typed)}, from events.toml):")
    for e in typed:
        fields = ", ".join(f"{n}: {t}" for n, t in e["fields"])
        if e["available"] is False:
            state = " [NOT ON THIS KERNEL]"
        elif e["optional"]:
            state = " (optional: not on every kernel)"
        else:
            state = ""
        print(f"  {e['name']}{state}\n      {e['comment']}\n      fields: {fields or '(none)'}")
    synthetic = [e for e in events if e["kind"] == "synthetic"]
    if synthetic:
        print(f"synthetic events ({len(synthetic)}, made by the tracer itself):")
        for e in synthetic:
            fields = ", ".join(f"{n}: {t}" for n, t in e["fields"])
            print(f"  {e['name']} (with --snapshot)\n      {e['comment']}\n      fields: {fields}")
    if generic:
        print(f"generic tracepoints of this kernel ({len(generic)}, fields decoded from their format files):")
        for e in generic:
            print(f"  {e['name']}")
    else:
        print("generic tracepoints: tracefs is not readable (run as root)")


def _exit_status(rc: int) -> int:
    return rc if rc >= 0 else 128 - rc


class _Signals:
    """Turns SIGINT/SIGTERM/SIGHUP into a request to stop (no exception in
    the middle of clean-up); remembers which signals came, in order."""

    def __init__(self) -> None:
        self.received: List[int] = []
        self._old: Dict[int, object] = {}

    def __enter__(self) -> "_Signals":
        for s in _STOP_SIGNALS:
            self._old[s] = signal.signal(s, self._on_signal)
        return self

    def __exit__(self, *exc: object) -> None:
        for s, h in self._old.items():
            signal.signal(s, h)  # type: ignore[arg-type]

    def _on_signal(self, signum: int, frame: Optional[FrameType]) -> None:
        self.received.append(signum)


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    args = parse_args(parser, sys.argv[1:] if argv is None else list(argv))
    if args.list:
        return _list_events()
    if args.cmd == ["--"]:
        parser.error("-- must be followed by a command (without one, leave -- out)")
    cmd: List[str] = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
    if args.follow and not args.pid and not cmd:
        parser.error("--follow needs --pid (or a command after --)")
    if args.append and not args.output:
        parser.error("--append needs --output FILE")
    for flag, value in (("--host", args.host), ("--max-file-bytes", args.max_file_bytes),
                        ("--max-file-seconds", args.max_file_seconds)):
        if value is not None and args.parquet is None:
            parser.error(f"{flag} needs --parquet DIR")
    if args.parquet == "":
        parser.error("--parquet needs a directory")
    if args.parquet is not None and args.otlp is not None:
        parser.error("--parquet and --otlp: choose one output")
    args.pid = _check_pids(parser, args.pid)
    with _Signals() as sig:
        return _run(parser, args, cmd, sig)


# -- parsing many --pid flags in linear time -------------------------------------------

_NEGATIVE = re.compile(r"^-\d+$|^-\d*\.\d+$")  # argparse's test for a value, not an option


def parse_args(parser: argparse.ArgumentParser, argv: List[str]) -> argparse.Namespace:
    """parser.parse_args(argv), in linear time for any number of --pid flags.

    argparse scans the list of remaining option positions once per option
    (quadratic: 70,000 --pid flags took minutes), so the plain `--pid N` and
    `--pid=N` flags before the command are taken out first and only the rest
    goes through argparse. The prefix is read exactly as argparse reads it;
    at anything less plain (an abbreviation, bundled short flags, a value
    that looks like an option) this stops and leaves the rest to argparse."""
    pid_type = _int_in(*_native.LIMITS["pid"])
    takes_value = {opt: a.nargs is None for a in parser._actions for opt in a.option_strings}
    rest: List[str] = []
    pids: List[int] = []
    i = 0

    def pid(text: str) -> None:
        try:
            pids.append(pid_type(text))
        except argparse.ArgumentTypeError as e:
            parser.error(f"argument --pid: {e}")

    while i < len(argv):
        a = argv[i]
        if a == "--" or not a.startswith("-") or a == "-" or _NEGATIVE.match(a):
            break  # the command (or argparse's business) starts here
        if a.startswith("--pid="):
            pid(a[len("--pid="):])
            i += 1
            continue
        if a not in takes_value:
            break
        value_next = i + 1 < len(argv) and (not argv[i + 1].startswith("-") or bool(_NEGATIVE.match(argv[i + 1])))
        if not takes_value[a]:
            rest.append(a)
            i += 1
        elif not value_next:
            break  # a missing value: argparse says so
        elif a == "--pid":
            pid(argv[i + 1])
            i += 2
        else:
            rest += argv[i:i + 2]
            i += 2
    args = parser.parse_args(rest + argv[i:])
    args.pid = pids + args.pid
    return args


# -- --pid targets: they must exist; the run ends when they are gone ---------------------

def _proc_stat(pid: int) -> Optional[Tuple[str, int, int]]:
    """(state, ppid, start time in clock ticks) of a process or thread, or
    None if there is none. The start time tells a reused pid apart."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    fields = data[data.rfind(b")") + 2:].split()  # comm may hold spaces and parentheses
    try:
        return fields[0].decode(), int(fields[1]), int(fields[19])
    except (IndexError, ValueError):
        return None


def _tgid(pid: int) -> Optional[int]:
    try:
        with open(f"/proc/{pid}/status", "rb") as f:
            for line in f:
                if line.startswith(b"Tgid:"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


def _check_pids(parser: argparse.ArgumentParser, pids: List[int]) -> List[int]:
    """The --pid values without repeats; an error (exit 2, nothing started)
    for too many, tracer-example's own pid, a thread id or a process that
    does not exist (the kernel filter would match nothing: silence, not a
    trace)."""
    pids = list(dict.fromkeys(pids))
    if len(pids) > _MAX_PIDS:
        parser.error(f"at most {_MAX_PIDS} --pid values, got {len(pids)}")
    if not pids:
        return pids
    me = os.getpid()
    if me in pids:
        parser.error(f"--pid {me} is tracer-example itself: the tracer never traces itself "
                     "(its own writes of events would be new events without end)")
    processes = {int(n) for n in os.listdir("/proc") if n.isdigit()}  # threads are not listed
    for pid in pids:
        st = _proc_stat(pid)
        if st is None or st[0] in "ZX":
            parser.error(f"--pid {pid}: no such process" + (" (it has exited)" if st else ""))
        if pid not in processes:
            owner = _tgid(pid)
            parser.error(f"--pid {pid} is a thread of process {owner}: give the process id"
                         if owner else f"--pid {pid}: no such process")
    return pids


class _Targets:
    """Tells when every --pid target is gone (checked every _WATCH_INTERVAL s).

    Gone means: no target is alive (a zombie counts as exited) and, with
    --follow, neither is any process that descends from a target through
    parent links seen by a scan of /proc, that a scan first saw after the run
    began (processes that existed before are not followed by the kernel
    either, unless --snapshot made it follow them: then they count too). A child whose parent exits before a scan saw it (a daemon's
    double fork within 0.5 s) is reparented away and not waited for. Every
    process is known by (pid, start time), so a reused pid is not mistaken
    for a target."""

    def __init__(self, pids: List[int], follow: bool, existing_followed: bool = False) -> None:
        self._follow = follow
        self._live: Dict[int, int] = {}  # pid -> start time, of what is waited for
        for pid in pids:
            st = _proc_stat(pid)
            if st is not None:
                self._live[pid] = st[2]
        # What existed before tracing: never a followed child.
        self._before = set(self._scan().items()) if follow and not existing_followed else set()
        self._next = time.monotonic() + _WATCH_INTERVAL

    @staticmethod
    def _scan() -> Dict[int, int]:
        out = {}
        for n in os.listdir("/proc"):
            if n.isdigit():
                st = _proc_stat(int(n))
                if st is not None and st[0] not in "ZX":
                    out[int(n)] = st[2]
        return out

    def gone(self, now: float) -> bool:
        if now < self._next:
            return False
        self._next = now + _WATCH_INTERVAL
        if not self._follow:
            for pid, start in list(self._live.items()):
                st = _proc_stat(pid)
                if st is None or st[0] in "ZX" or st[2] != start:
                    del self._live[pid]
            return not self._live
        children: Dict[int, List[Tuple[int, int]]] = {}
        alive: Dict[int, int] = {}
        for n in os.listdir("/proc"):
            if not n.isdigit():
                continue
            st = _proc_stat(int(n))
            if st is None or st[0] in "ZX":
                continue
            alive[int(n)] = st[2]
            children.setdefault(st[1], []).append((int(n), st[2]))
        todo = [p for p, start in self._live.items() if alive.get(p) == start]
        live = {p: self._live[p] for p in todo}
        while todo:
            for child, start in children.get(todo.pop(), ()):
                if child not in live and (child, start) not in self._before:
                    live[child] = start
                    todo.append(child)
        self._live = live
        return not live


def _stdout_problem() -> Optional[str]:
    """Why the JSON lines cannot go to stdout, if they cannot: found before
    anything starts rather than as a failed write."""
    try:
        flags = fcntl.fcntl(1, fcntl.F_GETFL)
    except OSError:
        return "stdout is closed"
    if flags & os.O_ACCMODE == os.O_RDONLY:
        return "stdout is open read-only"
    if sys.stdout is None:
        return "stdout is closed"
    return None


# -- the output file ------------------------------------------------------------------------

def _open_output(path: str, append: bool) -> Tuple[IO[bytes], bool]:
    """Opens --output FILE safely; returns (file, created). Raises _Refused
    or OSError.

    Traces hold whatever the traced processes wrote (passwords included), so
    a new file is created 0600 with O_CREAT|O_EXCL|O_NOFOLLOW: never through a
    symbolic link, never into a file someone else created beforehand (in
    /tmp, say) and now reads, never over an existing file. --append adds to
    a regular file of the caller's. An existing device (/dev/null, a
    terminal) or a FIFO of the caller's is written to as it is. Checked on
    the open fd (fstat), so nothing can be swapped in between."""
    base = os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NOCTTY
    try:
        fd = os.open(path, base | os.O_CREAT | os.O_EXCL, 0o600)
        return os.fdopen(fd, "wb"), True
    except FileExistsError:
        pass  # checked below: what exists, and whose it is
    try:
        # O_NONBLOCK: a FIFO with no reader fails at once (ENXIO) instead of
        # blocking where Ctrl-C cannot end it.
        fd = os.open(path, base | os.O_NONBLOCK | (os.O_APPEND if append else 0))
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise _Refused("is a symbolic link (refused: the JSON lines could land anywhere)") from None
        raise
    try:
        st = os.fstat(fd)
        if stat.S_ISREG(st.st_mode):
            if not append:
                raise _Refused("exists (refused, nothing is overwritten: remove it, choose another "
                               "name, or --append to add to it)")
            if st.st_uid != os.geteuid():
                raise _Refused(f"belongs to another user (uid {st.st_uid}): refused, they could read the trace")
        elif stat.S_ISFIFO(st.st_mode):
            if st.st_uid != os.geteuid():
                raise _Refused(f"is a FIFO of another user (uid {st.st_uid}): refused, they could read the trace")
        elif not stat.S_ISCHR(st.st_mode):
            raise _Refused("is not a regular file, a FIFO or a character device")
        fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~os.O_NONBLOCK)
        return os.fdopen(fd, "wb"), False
    except BaseException:
        os.close(fd)
        raise


class _Refused(Exception):
    """An --output FILE that is not written to (the message says why)."""


def _discard_output(path: str, ident: os.stat_result) -> None:
    """Removes the file this run created when tracing never started (bad
    arguments change nothing), if it is still that file and still empty."""
    try:
        here = os.lstat(path)
        if here.st_size == 0 and (ident.st_dev, ident.st_ino) == (here.st_dev, here.st_ino):
            os.unlink(path)
    except OSError:
        pass


def _stop_command(proc: Optional["subprocess.Popen[bytes]"]) -> None:
    """Ends a command whose trace can no longer be written: SIGTERM, then
    SIGKILL if it is still there after _STOP_GRACE seconds; waited for."""
    if proc is None:
        return
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(_STOP_GRACE)
        except subprocess.TimeoutExpired:
            proc.kill()
    proc.wait()


def _run(parser: argparse.ArgumentParser, args: argparse.Namespace, cmd: List[str], sig: _Signals) -> int:
    exporter = otlp_exporter(parser, args)
    if exporter is not None:
        args.traced = False
        otlp = Otlp(exporter)
        try:
            return _run_to(otlp, parser, args, cmd, sig)
        finally:
            otlp.close(False)
    created = False
    out: Optional[IO[bytes]] = None
    if args.output:
        try:
            out, created = _open_output(args.output, args.append)
        except _Refused as e:
            parser.error(f"--output {args.output!r} {e}")
        except OSError as e:
            parser.error(f"cannot open --output {args.output!r}: {e.strerror or e}")
    elif args.parquet is None:
        problem = _stdout_problem()
        if problem:
            _say(f"error: cannot write the JSON lines: {problem} (use -o FILE)")
            return 1
        out = sys.stdout.buffer
    ident = os.fstat(out.fileno()) if created and out is not None else None
    args.traced = False
    sink: Union[JsonLines, ParquetSink]
    if args.parquet is not None:
        sink = ParquetSink(out, args.output)
    else:
        assert out is not None  # stdout, or --output FILE
        sink = JsonLines(out, args.output)
    try:
        return _run_to(sink, parser, args, cmd, sig)
    finally:
        if ident is not None and not args.traced:
            _discard_output(args.output, ident)


def _open_dataset(parser: argparse.ArgumentParser, args: argparse.Namespace) -> ParquetDataset:
    """The --parquet dataset; bad options or a directory that cannot be
    written: exit 2 (the caller has started nothing that runs on)."""
    opts = {}
    if args.max_file_bytes is not None:
        opts["max_file_bytes"] = args.max_file_bytes
    try:
        if args.max_file_seconds is not None:
            return ParquetDataset(args.parquet, args.host, max_file_seconds=args.max_file_seconds, **opts)
        return ParquetDataset(args.parquet, args.host, **opts)
    except TracerError as e:  # ConfigError (bad host), DatasetError (the directory)
        parser.error(f"--parquet {args.parquet!r}: {e}")


def _cpu_seconds() -> float:
    """CPU time of this process so far (every thread: the reader's too)."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _parquet_summary(s: DatasetSummary, root: str, cpu: float) -> str:
    """Files, rows, bytes, and per event: bytes on disk and CPU time of
    tracer-example while tracing (decoding and writing)."""
    per_event = f" ({s['bytes'] / s['rows']:.1f} bytes/event, {cpu * 1e6 / s['rows']:.2f} us CPU/event)" if s["rows"] else ""
    where = os.path.join(root, f"host={s['host']}")
    lost = f"; {s['rows_lost']} rows lost with files that could not be completed" if s["rows_lost"] else ""
    return (f"parquet: {s['files']} file(s), {s['rows']} rows, {s['bytes']} bytes{per_event}, {cpu:.2f} s CPU, "
            f"in {where} (run {s['run']}){lost}")


def _run_to(sink: Union[JsonLines, Otlp, ParquetSink], parser: argparse.ArgumentParser, args: argparse.Namespace,
            cmd: List[str], sig: _Signals) -> int:
    proc: Optional["subprocess.Popen[bytes]"] = None
    gate = -1
    pids = list(args.pid)
    # Before the tracer attaches: what existed then is not a followed child.
    targets = _Targets(pids, args.follow, existing_followed=args.snapshot) if pids and not cmd else None
    if cmd:
        try:
            # die_with_parent: a SIGKILLed tracer-example must not leave the
            # command running untraced.
            proc, gate = start_gated(cmd, die_with_parent=True)
        except OSError as e:
            _say(f"error: cannot run {cmd[0]!r}: {e.strerror or e}")
            return 127 if isinstance(e, FileNotFoundError) else 126
        pids.append(proc.pid)

    tracer: Optional[Tracer] = None
    summary: Optional[DatasetSummary] = None
    n_events = 0
    broken_pipe = False
    write_error: Optional[OSError] = None
    started = time.monotonic()
    cpu_started = 0.0
    try:
        try:
            tracer = Tracer(
                [e.strip() for e in args.events.split(",")] if args.events is not None else None,
                pids=pids or None,
                follow_children=args.follow or bool(cmd),
                comm=args.comm or None,
                cgroups=args.cgroup or None,
                exclude_pids=args.exclude_pid or None,
                exclude_comm=args.exclude_comm or None,
                exclude_output_readers=not args.trace_output_readers,
                snapshot=args.snapshot,
                content_fds=args.content_fds,
                all_fds=args.all_fds,
                content_max=args.content_max,
                argv_max=args.argv_max,
                ring_bytes=args.ring_bytes,
                payload_bytes_per_cpu=args.payload_bytes_per_cpu,
                queue_bytes=args.queue_bytes,
                yield_cpu=not args.no_yield_cpu,
            )
        except (ValueError, TypeError) as e:  # bad names or values: UnknownEventError, ConfigError
            _abandon(proc, gate)
            parser.error(str(e))
        except TracerError as e:
            _abandon(proc, gate)
            _say(f"error: {e}")
            return 1
        if isinstance(sink, ParquetSink):
            try:
                sink.open(_open_dataset(parser, args))
            except SystemExit:
                _abandon(proc, gate)
                raise
        args.traced = True
        if not args.quiet:
            _say(f"tracing {len(tracer.events)} event(s) (attached in {tracer.startup_seconds * 1000:.0f} ms); "
                 "Ctrl-C to stop")
            for note in tracer.notes:
                _say(f"note: {note}")
            if tracer.output_readers:
                _say(f"not tracing the readers of this output: {_describe(tracer.output_readers)} "
                     "(--trace-output-readers to trace them)")
            if isinstance(sink, Otlp):
                _say(f"exporting to {sink.exporter.describe()}")
            elif cmd and not args.output and not isinstance(sink, ParquetSink):
                # `tracer-example -- CMD | jq`: CMD writes to that pipe too.
                _say("warning: the command writes to stdout too, between the JSON lines; "
                     "use -o FILE to keep them apart")
        if proc is not None:
            release(gate)
            gate = -1
        # The status line only where nothing else scrolls the terminal (JSON
        # lines or the command's output would break it up).
        status = sys.stderr.isatty() and not args.quiet and not (sys.stdout.isatty() and (sink.tty or cmd))
        started = time.monotonic()
        cpu_started = _cpu_seconds()
        end = None if args.duration is None else started + args.duration
        last_status, last_n = started, 0
        try:
            while not sig.received:
                now = time.monotonic()
                if end is not None and now >= end:
                    break
                if proc is not None and proc.poll() is not None:
                    break
                if targets is not None and targets.gone(now):
                    if not args.quiet:
                        _say("every --pid process has exited" + (" (and its children)" if args.follow else ""))
                    break
                n_events += sink.take(tracer, 0.1 if end is None else max(0.0, min(0.1, end - now)))
                if status and now - last_status >= 0.5:
                    rate = (n_events - last_n) / (now - last_status)
                    line = _status_line(n_events, rate, {**tracer.stats(), **sink.stats()})
                    sys.stderr.write(f"\r\x1b[K{PROG}: {line}")
                    sys.stderr.flush()
                    last_status, last_n = now, n_events
            # Detach, then deliver what was captured before stopping.
            tracer.stop()
            signals_at_stop = len(sig.received)
            drain_end = time.monotonic() + args.drain_seconds
            while time.monotonic() < drain_end and len(sig.received) == signals_at_stop:
                n = sink.drain(tracer)
                n_events += n
                if not n and tracer.drained:
                    break
            sink.finish(drain_end, lambda: len(sig.received) != signals_at_stop)
        except BrokenPipeError:
            broken_pipe = True  # the reader went away (e.g. `| head`): not an error
        except DatasetError as e:  # a Parquet file could not be written
            write_error = e
        except TracerError:
            raise
        except OSError as e:  # ENOSPC, EIO, EBADF...: the trace cannot be kept
            write_error = e
        if status:
            sys.stderr.write("\r\x1b[K")
        tracer.close()
        stats = {**tracer.stats(), **sink.stats()}
        if isinstance(sink, ParquetSink):
            # Every file completed, with the final counters.
            try:
                summary = sink.close_dataset(tracer.stats())
            except DatasetError as e:
                write_error = write_error or e
    except TracerError as e:
        _say(f"error: {e}")
        _abandon(proc, gate)
        return 1
    finally:
        if tracer is not None:
            tracer.close()
        # The last buffered lines of --output FILE may fail to be written too.
        closing_error = sink.close(broken_pipe or write_error is not None)
        write_error = write_error or closing_error
    if not args.quiet:
        counters = " ".join(f"{k}={v}" for k, v in stats.items())
        _say(f"{n_events} events in {time.monotonic() - started:.1f} s; {counters}")
        if summary is not None:
            _say(_parquet_summary(summary, args.parquet, _cpu_seconds() - cpu_started))
        lost = sink.lost_message(stats.get("discarded", 0))
        if lost and not (broken_pipe or write_error):
            _say(lost)
    if write_error is not None:
        return _write_failed(write_error, args.output, proc)
    return _wait(proc, sig)


def _describe(pids: List[int]) -> str:
    """`jq (1234), less (1235)`, from /proc (a process gone meanwhile: its pid)."""
    def one(pid: int) -> str:
        try:
            with open(f"/proc/{pid}/comm") as f:
                return f"{f.read().strip()} ({pid})"
        except OSError:
            return str(pid)
    shown = ", ".join(one(p) for p in pids[:8])
    return shown + (f" and {len(pids) - 8} more" if len(pids) > 8 else "")


def _write_failed(e: OSError, output: Optional[str], proc: Optional["subprocess.Popen[bytes]"]) -> int:
    """One line, the command stopped (its trace is lost from here on), exit 1."""
    where = repr(output) if output else "stdout"
    what = f"the Parquet dataset: {e}" if isinstance(e, DatasetError) else f"the JSON lines to {where}: {e.strerror or e}"
    _say(f"error: cannot write {what}"
         + ("; stopping the command" if proc is not None and proc.poll() is None else ""))
    _stop_command(proc)
    return 1


_LOSS_COUNTERS = ("ring_full", "busy", "payload_full", "fault", "decode_errors", "overwritten", "discarded",
                  "export_failed", "export_dropped", "snapshot_lost")


def _status_line(n_events: int, rate: float, st: Dict[str, int]) -> str:
    """Events so far, the rate, the backlog in this process, and every loss
    counter that is not zero."""
    parts = [f"{n_events:,} events", f"{rate:,.0f}/s", f"queued {st['queued']:,} ({st['queued_bytes'] / (1 << 20):.1f} MiB)"]
    if "exported" in st:
        parts.append(f"exported {st['exported']:,} (buffered {st['export_buffered_bytes'] / (1 << 20):.1f} MiB)")
    parts += [f"{k} {st[k]:,}" for k in _LOSS_COUNTERS if st.get(k)]
    return ", ".join(parts)


def _wait(proc: Optional["subprocess.Popen[bytes]"], sig: _Signals) -> int:
    """The command's exit status; stop signals we got are passed on to it
    (the first as is, SIGKILL for any more)."""
    if proc is None:
        return 0
    forwarded = 0
    while True:
        try:
            return _exit_status(proc.wait(0.1))
        except subprocess.TimeoutExpired:
            pass
        while forwarded < len(sig.received):
            proc.send_signal(sig.received[0] if forwarded == 0 else signal.SIGKILL)
            forwarded += 1


def _abandon(proc: Optional["subprocess.Popen[bytes]"], gate: int) -> None:
    """Kills a command that was never released."""
    if gate >= 0:
        os.close(gate)
    if proc is not None:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
