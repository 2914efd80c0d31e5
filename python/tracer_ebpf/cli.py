"""tracer-example: print every captured event as one JSON line."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from typing import IO, List, NoReturn, Optional

from . import _native
from .errors import TracerError
from .run import release, start_gated
from .tracer import Tracer

PROG = "tracer-example"


class _Stop(Exception):
    """Raised by the SIGTERM handler to end the loop cleanly."""


def _fds(text: str) -> List[int]:
    try:
        fds = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a comma-separated list of fds: {text!r}") from None
    if any(fd < 0 for fd in fds):
        raise argparse.ArgumentTypeError(f"fds must be non-negative: {text!r}")
    return fds


def _positive_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if v <= 0:
        raise argparse.ArgumentTypeError(f"must be positive: {text!r}")
    return v


def _pid(text: str) -> int:
    v = _positive_int(text)
    if v > 2**22:
        raise argparse.ArgumentTypeError(f"not a process id: {text!r}")
    return v


def _seconds(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not (v >= 0 and v < 1e9):
        raise argparse.ArgumentTypeError(f"must be a non-negative number of seconds: {text!r}")
    return v


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=PROG,
        description="Trace kernel events with eBPF and print each as one JSON line "
        "(the same format as the Rust and C++ examples).",
        epilog="Examples:\n"
        "  tracer-example --duration 5                 # everything, 5 seconds\n"
        "  tracer-example -- sh -c 'echo hi'           # one command and its children\n"
        "  tracer-example --comm python --events syscalls/sys_enter_write\n"
        "Needs root (or CAP_BPF, CAP_PERFMON and CAP_SYS_ADMIN).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--events", metavar="A,B", help="event names or wildcards, comma-separated "
                   "(default: every typed event; see --list)")
    p.add_argument("--list", action="store_true", help="list the known events and exit")
    p.add_argument("--pid", type=_pid, action="append", default=[], metavar="PID",
                   help="only this process (repeatable)")
    p.add_argument("--follow", action="store_true", help="also trace children forked by the --pid processes")
    p.add_argument("--comm", action="append", default=[], metavar="PREFIX",
                   help="only tasks whose comm starts with PREFIX (repeatable, at most 8)")
    p.add_argument("--content-fds", type=_fds, default=[1, 2], metavar="1,2",
                   help="fds whose write content is captured (default: 1,2)")
    p.add_argument("--all-fds", action="store_true", help="capture write content of every fd")
    p.add_argument("--content-max", type=_positive_int, default=_native.DEFAULT_CONTENT_MAX, metavar="BYTES",
                   help="most content bytes captured per write (default and maximum: 1048576)")
    p.add_argument("--argv-max", type=_positive_int, default=_native.DEFAULT_ARGV_MAX, metavar="BYTES",
                   help="most argv bytes captured per exec (default: 131072)")
    p.add_argument("--ring-bytes", type=_positive_int, default=_native.DEFAULT_RING_BYTES, metavar="BYTES",
                   help="ring buffer size for event records (default: 8 MiB)")
    p.add_argument("--payload-bytes-per-cpu", type=_positive_int, default=_native.DEFAULT_PAYLOAD_BYTES_PER_CPU,
                   metavar="BYTES", help="payload area per CPU (default: 16 MiB)")
    p.add_argument("--duration", type=_seconds, metavar="SECS", help="stop after SECS seconds")
    p.add_argument("--output", "-o", metavar="FILE", help="write JSON lines to FILE instead of stdout")
    p.add_argument("--quiet", "-q", action="store_true", help="no status line and no stats summary")
    p.add_argument("cmd", nargs=argparse.REMAINDER, metavar="-- CMD ARGS",
                   help="trace this command and its children, exit with its exit code")
    return p


def _fail(msg: str, code: int = 1) -> NoReturn:
    print(f"{PROG}: error: {msg}", file=sys.stderr)
    sys.exit(code)


def _list_events() -> int:
    from . import list_events

    for e in list_events():
        fields = ", ".join(f"{n}: {t}" for n, t in e["fields"])
        opt = " (optional)" if e["optional"] else ""
        print(f"{e['name']:<45} {e['id']:>5}  {e['comment']}{opt}\n{'':<52}{fields}")
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    if args.list:
        return _list_events()
    cmd = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
    if args.follow and not args.pid and not cmd:
        _fail("--follow needs --pid (or a command after --)", 2)
    events = [e.strip() for e in args.events.split(",")] if args.events else None

    def on_term(signum: int, frame: object) -> None:
        raise _Stop()

    signal.signal(signal.SIGTERM, on_term)

    out: IO[bytes]
    try:
        out = open(args.output, "wb") if args.output else sys.stdout.buffer
    except OSError as e:
        _fail(f"cannot open --output: {e}")

    proc = None
    gate = -1
    pids = list(args.pid)
    if cmd:
        try:
            proc, gate = start_gated(cmd)
        except OSError as e:
            _fail(f"cannot run {cmd[0]!r}: {e.strerror or e}", 127)
        pids.append(proc.pid)
    try:
        tracer = Tracer(
            events,
            pids=pids or None,
            follow_children=args.follow or bool(cmd),
            comm=args.comm or None,
            content_fds=args.content_fds,
            all_fds=args.all_fds,
            content_max=args.content_max,
            argv_max=args.argv_max,
            ring_bytes=args.ring_bytes,
            payload_bytes_per_cpu=args.payload_bytes_per_cpu,
        )
    except (TracerError, ValueError, TypeError) as e:
        if proc is not None:
            proc.kill()
            os.close(gate)
            proc.wait()
        _fail(str(e))

    status = sys.stderr.isatty() and not args.quiet
    interrupted = False
    n_events = 0
    try:
        with tracer:
            native = tracer._n()
            if not args.quiet:
                print(f"{PROG}: tracing {len(tracer.events)} event(s) "
                      f"(started in {tracer.startup_seconds * 1000:.0f} ms); Ctrl-C to stop", file=sys.stderr)
            if proc is not None:
                release(gate)
            start = time.monotonic()
            end = None if args.duration is None else start + args.duration
            last_status, last_n = start, 0
            try:
                while True:
                    now = time.monotonic()
                    if end is not None and now >= end:
                        break
                    if proc is not None and proc.poll() is not None:
                        break
                    wait = 0.1 if end is None else max(0.0, min(0.1, end - now))
                    data, n = native.poll_json(65536, wait)
                    if n:
                        out.write(data)
                        n_events += n
                    else:
                        out.flush()
                    if status and now - last_status >= 0.5:
                        st = native.stats()
                        drops = st["ring_full"] + st["payload_full"] + st["busy"]
                        rate = (n_events - last_n) / (now - last_status)
                        sys.stderr.write(f"\r{PROG}: {n_events} events, {rate:,.0f}/s, drops {drops}   ")
                        last_status, last_n = now, n_events
            except (KeyboardInterrupt, _Stop):
                interrupted = True
            # Deliver what was captured before stopping.
            while True:
                data, n = native.poll_json(65536, 0.05)
                if not n:
                    break
                out.write(data)
                n_events += n
            out.flush()
            stats = tracer.stats()
    except BrokenPipeError:
        # Reader went away (e.g. `| head`): not an error.
        try:
            sys.stdout = open(os.devnull, "w")
        except OSError:
            pass
        return 0
    except TracerError as e:
        _fail(str(e))
    finally:
        if args.output:
            out.close()
    if status:
        sys.stderr.write("\n")
    if not args.quiet:
        summary = " ".join(f"{k}={v}" for k, v in stats.items())
        print(f"{PROG}: {n_events} events; stats {summary}", file=sys.stderr)
    if proc is not None:
        if interrupted and proc.poll() is None:
            proc.send_signal(signal.SIGINT)
        rc = proc.wait()
        return rc if rc >= 0 else 128 - rc
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
