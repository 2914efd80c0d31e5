"""tracer-example: print every captured event as one JSON line."""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from types import FrameType
from typing import IO, Callable, Dict, List, NoReturn, Optional

from . import _native
from .errors import TracerError
from .run import release, start_gated
from .tracer import STOP_DRAIN_SECONDS, Tracer

PROG = "tracer-example"
_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


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
        "is left is counted as discarded in the summary.",
        epilog="examples:\n"
        "  tracer-example --duration 5                 # every typed event, 5 seconds\n"
        "  tracer-example -o out.jsonl -- make         # one command and its children\n"
        "  tracer-example --comm python --events 'syscalls/sys_enter_write*'\n"
        "  tracer-example --pid 1234 --follow --content-fds 1,2,5\n"
        "\n"
        "exit status: with a command, the command's (128+N if signal N killed it);\n"
        "otherwise 0, 1 on a tracing error, 2 on bad arguments.\n"
        "Needs root (or CAP_BPF, CAP_PERFMON and CAP_SYS_ADMIN).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--events", metavar="A,B",
                   help="event names or wildcards, comma-separated, e.g. 'syscalls/sys_*_openat' "
                   "(default: every typed event the kernel has; see --list)")
    p.add_argument("--list", action="store_true", help="list the known events with their fields and exit")
    p.add_argument("--pid", type=_int_in(1, 2**22), action="append", default=[], metavar="PID",
                   help="only this process (repeatable)")
    p.add_argument("--follow", action="store_true",
                   help="also trace the children the --pid processes fork from now on")
    p.add_argument("--comm", action="append", default=[], metavar="PREFIX",
                   help="only tasks whose name (comm) starts with PREFIX (repeatable, at most 8, "
                   "1 to 15 bytes each)")
    p.add_argument("--content-fds", type=_fds, default=[1, 2], metavar="FDS",
                   help="comma-separated fds whose write content is captured (default: 1,2)")
    p.add_argument("--all-fds", action="store_true", help="capture the write content of every fd")
    p.add_argument("--content-max", type=_int_in(1, 1 << 20), default=_native.DEFAULT_CONTENT_MAX,
                   metavar="BYTES", help="most content bytes captured per write; longer ones are "
                   "flagged content_truncated (default and maximum: 1048576)")
    p.add_argument("--argv-max", type=_int_in(1, 1 << 20), default=_native.DEFAULT_ARGV_MAX,
                   metavar="BYTES", help="most argv bytes captured per exec (default: 131072)")
    p.add_argument("--ring-bytes", type=_int_in(4096, 1 << 30), default=None,
                   metavar="BYTES", help="ring buffer size for event records (default: sized from memory, "
                   f"{_native.DEFAULT_RING_BYTES >> 20} MiB here)")
    p.add_argument("--payload-bytes-per-cpu", type=_int_in(1, 1 << 30), default=None, metavar="BYTES",
                   help="payload buffer per CPU for contents, paths and argv (default: sized from the "
                   "memory this process may use, RAM or its cgroup's limit: "
                   f"{_native.DEFAULT_PAYLOAD_BYTES_PER_CPU / (1 << 20):.1f} MiB here)")
    p.add_argument("--queue-bytes", type=_int_in(1 << 16, 1 << 40), default=None,
                   metavar="BYTES", help="most bytes of events held in this process while the "
                   f"output catches up (default: 1/8 of that memory, {_native.DEFAULT_QUEUE_BYTES >> 20} MiB here)")
    p.add_argument("--duration", type=_seconds, metavar="SECS",
                   help="stop tracing after SECS seconds (a command keeps running; its exit "
                   "status is still returned)")
    p.add_argument("--drain-seconds", type=_seconds, default=STOP_DRAIN_SECONDS, metavar="SECS",
                   help="on stopping, print what was captured for at most SECS seconds "
                   f"(default: {STOP_DRAIN_SECONDS:g})")
    p.add_argument("--output", "-o", metavar="FILE",
                   help="write the JSON lines to FILE instead of stdout (truncated first)")
    p.add_argument("--quiet", "-q", action="store_true", help="no status line and no summary on stderr")
    p.add_argument("cmd", nargs=argparse.REMAINDER, metavar="-- CMD ARGS",
                   help="run CMD with ARGS and trace it and its children until it exits; "
                   "its output goes where tracer-example's does (use --output to keep them apart)")
    return p


def _say(msg: str) -> None:
    print(f"{PROG}: {msg}", file=sys.stderr, flush=True)


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
    args = parser.parse_args(argv)
    if args.list:
        return _list_events()
    cmd: List[str] = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
    if args.follow and not args.pid and not cmd:
        parser.error("--follow needs --pid (or a command after --)")
    with _Signals() as sig:
        return _run(parser, args, cmd, sig)


def _run(parser: argparse.ArgumentParser, args: argparse.Namespace, cmd: List[str], sig: _Signals) -> int:
    try:
        out: IO[bytes] = open(args.output, "wb") if args.output else sys.stdout.buffer
    except OSError as e:
        parser.error(f"cannot open --output {args.output!r}: {e.strerror or e}")
    proc: Optional["subprocess.Popen[bytes]"] = None
    gate = -1
    pids = list(args.pid)
    if cmd:
        try:
            proc, gate = start_gated(cmd)
        except OSError as e:
            _say(f"error: cannot run {cmd[0]!r}: {e.strerror or e}")
            return 127 if isinstance(e, FileNotFoundError) else 126
        pids.append(proc.pid)

    tracer: Optional[Tracer] = None
    n_events = 0
    broken_pipe = False
    started = time.monotonic()
    try:
        try:
            tracer = Tracer(
                [e.strip() for e in args.events.split(",")] if args.events is not None else None,
                pids=pids or None,
                follow_children=args.follow or bool(cmd),
                comm=args.comm or None,
                content_fds=args.content_fds,
                all_fds=args.all_fds,
                content_max=args.content_max,
                argv_max=args.argv_max,
                ring_bytes=args.ring_bytes,
                payload_bytes_per_cpu=args.payload_bytes_per_cpu,
                queue_bytes=args.queue_bytes,
            )
        except (ValueError, TypeError) as e:  # bad names or values: UnknownEventError, ConfigError
            _abandon(proc, gate)
            parser.error(str(e))
        except TracerError as e:
            _abandon(proc, gate)
            _say(f"error: {e}")
            return 1
        native = tracer._n()
        if not args.quiet:
            _say(f"tracing {len(tracer.events)} event(s) (attached in {tracer.startup_seconds * 1000:.0f} ms); "
                 "Ctrl-C to stop")
        if proc is not None:
            release(gate)
            gate = -1
        out_is_tty = out.isatty()
        # The status line only where nothing else scrolls the terminal (JSON
        # lines or the command's output would break it up).
        status = sys.stderr.isatty() and not args.quiet and not (sys.stdout.isatty() and (out_is_tty or cmd))
        started = time.monotonic()
        end = None if args.duration is None else started + args.duration
        last_status, last_n = started, 0
        try:
            while not sig.received:
                now = time.monotonic()
                if end is not None and now >= end:
                    break
                if proc is not None and proc.poll() is not None:
                    break
                data, n = native.poll_json(65536, 0.1 if end is None else max(0.0, min(0.1, end - now)))
                if n:
                    out.write(data)
                    n_events += n
                    if out_is_tty:
                        out.flush()
                elif not out_is_tty:
                    out.flush()
                if status and now - last_status >= 0.5:
                    rate = (n_events - last_n) / (now - last_status)
                    sys.stderr.write(f"\r\x1b[K{PROG}: {_status_line(n_events, rate, native.stats())}")
                    sys.stderr.flush()
                    last_status, last_n = now, n_events
            # Detach, then deliver what was captured before stopping.
            native.stop()
            signals_at_stop = len(sig.received)
            drain_end = time.monotonic() + args.drain_seconds
            while time.monotonic() < drain_end and len(sig.received) == signals_at_stop:
                data, n = native.poll_json(65536, 0.0)
                if n:
                    out.write(data)
                    n_events += n
                elif native.drained:
                    break
            out.flush()
        except BrokenPipeError:
            broken_pipe = True  # the reader went away (e.g. `| head`): not an error
        if status:
            sys.stderr.write("\r\x1b[K")
        tracer.close()
        stats = tracer.stats()
    except TracerError as e:
        _say(f"error: {e}")
        _abandon(proc, gate)
        return 1
    finally:
        if tracer is not None:
            tracer.close()
        if args.output:
            out.close()
        elif broken_pipe:
            _silence_stdout()
    if not args.quiet:
        summary = " ".join(f"{k}={v}" for k, v in stats.items())
        _say(f"{n_events} events in {time.monotonic() - started:.1f} s; {summary}")
        if stats.get("discarded") and not broken_pipe:
            _say(f"{stats['discarded']} captured events were not printed (discarded at stop): "
                 "the output was too slow for --drain-seconds")
    return _wait(proc, sig)


_LOSS_COUNTERS = ("ring_full", "busy", "payload_full", "fault", "decode_errors", "overwritten", "discarded")


def _status_line(n_events: int, rate: float, st: Dict[str, int]) -> str:
    """Events so far, the rate, the backlog in this process, and every loss
    counter that is not zero."""
    parts = [f"{n_events:,} events", f"{rate:,.0f}/s", f"queued {st['queued']:,} ({st['queued_bytes'] / (1 << 20):.1f} MiB)"]
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


def _silence_stdout() -> None:
    # Python flushes stdout at exit: point it at /dev/null so that flush
    # does not raise BrokenPipeError again.
    try:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    except OSError:
        pass


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
