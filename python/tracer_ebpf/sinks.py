"""Where tracer-example's events go: JSON lines (a file or stdout), a
Parquet dataset (``--parquet``), or an OTLP exporter (``--otlp``). Each sink takes events from the tracer, drains
what is left at the end, and reports its own counters."""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import IO, Callable, Dict, List, Optional, Tuple

from .errors import ConfigError
from .dataset import DatasetSummary, ParquetDataset
from .otlp import OtlpExporter
from .tracer import Tracer

_BATCH = 65536  # events per native call
_FLUSH_SLICE = 0.1  # seconds: how often a flush looks for a second Ctrl-C


class JsonLines:
    """The JSON lines, written to ``out`` (flushed at once on a terminal,
    else whenever no event is waiting)."""

    def __init__(self, out: IO[bytes], output: Optional[str]) -> None:
        self.out = out
        self.output = output
        self.tty = out.isatty()

    def take(self, tracer: Tracer, timeout: float) -> int:
        data, n = tracer.read_json(timeout, _BATCH)
        if n:
            self.out.write(data)
            if self.tty:
                self.out.flush()
        elif not self.tty:
            self.out.flush()
        return n

    def drain(self, tracer: Tracer) -> int:
        data, n = tracer.read_json(0.0, _BATCH)
        if n:
            self.out.write(data)
        return n

    def finish(self, end: float, interrupted: Callable[[], bool]) -> None:
        self.out.flush()

    def close(self, failed: bool) -> Optional[OSError]:
        """Closes --output FILE (an error if its last lines could not be
        written); after a failure on stdout, silences it."""
        if self.output:
            return _close_file(self.out)
        if failed:
            _silence_stdout()
        return None

    def stats(self) -> Dict[str, int]:
        return {}

    def lost_message(self, discarded: int) -> Optional[str]:
        return _discarded_message(discarded, "printed")


class ParquetSink:
    """Events written into a Parquet dataset (``--parquet``), opened once the
    tracer runs (``open``); with ``--output FILE`` the same events also as
    JSON lines. ``close_dataset`` completes every file with the final
    counters."""

    tty = False

    def __init__(self, out: Optional[IO[bytes]], output: Optional[str]) -> None:
        self.out = out
        self.output = output
        self.dataset: Optional[ParquetDataset] = None

    def open(self, dataset: ParquetDataset) -> None:
        self.dataset = dataset

    def _write(self, tracer: Tracer, timeout: float) -> int:
        assert self.dataset is not None, "opened before the first event"
        if self.out is None:
            return tracer.write_parquet(self.dataset, timeout, _BATCH)
        data, n = tracer.write_parquet_json(self.dataset, timeout, _BATCH)
        if n:
            self.out.write(data)
        return n

    def take(self, tracer: Tracer, timeout: float) -> int:
        n = self._write(tracer, timeout)
        if not n and self.out is not None:
            self.out.flush()
        return n

    def drain(self, tracer: Tracer) -> int:
        return self._write(tracer, 0.0)

    def finish(self, end: float, interrupted: Callable[[], bool]) -> None:
        if self.out is not None:
            self.out.flush()

    def close_dataset(self, stats: Dict[str, int]) -> Optional[DatasetSummary]:
        """Completes every file, recording `stats`; raises DatasetError when
        one could not be written."""
        if self.dataset is None or self.dataset.closed:
            return None
        return self.dataset.close(stats)

    def close(self, failed: bool) -> Optional[OSError]:
        """Completes the files left open (after an error) and closes
        --output FILE; the first error that happens is returned."""
        error: Optional[OSError] = None
        if self.dataset is not None and not self.dataset.closed:
            try:
                self.dataset.close()
            except OSError as e:  # DatasetError
                error = e
        if self.output and self.out is not None:
            error = error or _close_file(self.out)
        return error

    def stats(self) -> Dict[str, int]:
        return {}

    def lost_message(self, discarded: int) -> Optional[str]:
        return _discarded_message(discarded, "written")


class Otlp:
    """Events exported as OTLP log records; ``finish`` flushes the exporter
    within the drain time, then closes it (what is left is counted)."""

    tty = False

    def __init__(self, exporter: OtlpExporter) -> None:
        self.exporter = exporter
        self.final: Optional[Dict[str, int]] = None

    def take(self, tracer: Tracer, timeout: float) -> int:
        return tracer.export(self.exporter, timeout, _BATCH)

    def drain(self, tracer: Tracer) -> int:
        return tracer.export(self.exporter, 0.0, _BATCH)

    def finish(self, end: float, interrupted: Callable[[], bool]) -> None:
        """Sends what is buffered until ``end`` (monotonic) or a new stop
        signal, in short slices so that a second Ctrl-C is seen at once."""
        while not interrupted():
            left = end - time.monotonic()
            if left <= 0 or self.exporter.flush(min(_FLUSH_SLICE, left)):
                break
        self.final = self.exporter.close(0.0)

    def close(self, failed: bool) -> Optional[OSError]:
        self.exporter.close(0.0)
        return None

    def stats(self) -> Dict[str, int]:
        return self.final if self.final is not None else self.exporter.stats()

    def lost_message(self, discarded: int) -> Optional[str]:
        st = self.stats()
        lost = st.get("export_failed", 0) + st.get("export_dropped", 0)
        parts = [m for m in [_discarded_message(discarded, "exported", "the export")] if m]
        if lost:
            why = self.exporter.last_error
            parts.append(f"{lost} events did not reach the OTLP receiver (export_failed={st.get('export_failed', 0)}, "
                         f"export_dropped={st.get('export_dropped', 0)})" + (f"; last error: {why}" if why else ""))
        return "\n".join(parts) or None


def add_otlp_arguments(p: argparse.ArgumentParser, seconds: Callable[[str], float],
                       size: Callable[[str], int]) -> None:
    g = p.add_argument_group(
        "OTLP export (docs/otlp.md)",
        "Unset options come from the standard variables OTEL_EXPORTER_OTLP_[LOGS_]ENDPOINT, _PROTOCOL,\n"
        "_HEADERS, _COMPRESSION, _TIMEOUT, _CERTIFICATE, OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES.")
    g.add_argument("--otlp", nargs="?", const="", default=None, metavar="ENDPOINT",
                   help="export the events as OpenTelemetry logs instead of printing them: to ENDPOINT "
                   "(e.g. http://collector:4318, or http://collector:4317 with --otlp-protocol grpc), else to "
                   "the environment's endpoint (default http://localhost:4318/v1/logs). Put -- before a "
                   "command that follows it")
    g.add_argument("--otlp-protocol", choices=("grpc", "http/protobuf"), help="default: http/protobuf")
    g.add_argument("--otlp-header", action="append", default=[], metavar="KEY=VALUE",
                   help="a request header, e.g. 'authorization=Bearer x' (repeatable; replaces the environment's)")
    g.add_argument("--otlp-compression", choices=("gzip", "none"), help="default: none")
    g.add_argument("--otlp-timeout", type=seconds, metavar="SECS", help="time allowed per request (default: 10)")
    g.add_argument("--otlp-certificate", metavar="FILE",
                   help="PEM CA certificate(s) that verify an https receiver (default: the system's)")
    g.add_argument("--otlp-buffer-bytes", type=size, metavar="BYTES",
                   help="most bytes of records waiting to be sent (default: 64M); past it, new ones are "
                   "dropped and counted as export_dropped")
    g.add_argument("--service-name", metavar="NAME", help="service.name of the records (default: tracer-ebpf)")


_OTLP_OPTIONS = ("otlp_protocol", "otlp_compression", "otlp_timeout", "otlp_certificate", "otlp_buffer_bytes",
                 "service_name")


def otlp_exporter(parser: argparse.ArgumentParser, args: argparse.Namespace) -> Optional[OtlpExporter]:
    """The exporter --otlp asks for (None without --otlp); bad options or
    variables are a usage error (exit 2, nothing started)."""
    if args.otlp is None:
        given = [o for o in _OTLP_OPTIONS if getattr(args, o) is not None] + (["otlp_header"] if args.otlp_header else [])
        if given:
            parser.error(f"--{given[0].replace('_', '-')} needs --otlp")
        return None
    if args.output:
        parser.error("--otlp exports the events instead of printing them: leave out --output")
    headers: List[Tuple[str, str]] = []
    for h in args.otlp_header:
        k, eq, v = h.partition("=")
        if not eq or not k.strip():
            parser.error(f"--otlp-header {h[:60]!r}: not KEY=VALUE")
        headers.append((k.strip(), v.strip()))
    if args.otlp_timeout == 0:
        parser.error("--otlp-timeout must be more than 0 seconds")
    try:
        return OtlpExporter(
            args.otlp or None,
            protocol=args.otlp_protocol,
            headers=headers or None,
            compression=args.otlp_compression,
            timeout=args.otlp_timeout,
            certificate=args.otlp_certificate,
            service_name=args.service_name,
            buffer_bytes=args.otlp_buffer_bytes,
        )
    except ConfigError as e:
        hint = ""
        if args.otlp and "://" not in args.otlp and "not a URL" in str(e):
            hint = " (to run a command, put -- before it: --otlp -- CMD)"
        parser.error(f"{e}{hint}")


def _close_file(out: IO[bytes]) -> Optional[OSError]:
    """Closes --output FILE: an error if its last buffered lines could not
    be written."""
    try:
        out.close()
    except OSError as e:
        return e
    return None


def _discarded_message(discarded: int, done: str, what: str = "the output") -> Optional[str]:
    """The line that names events captured but never delivered at stop."""
    if not discarded:
        return None
    return (f"{discarded} captured events were not {done} (discarded at stop): "
            f"{what} was too slow for --drain-seconds")


def _silence_stdout() -> None:
    # Python flushes stdout at exit: point it at /dev/null so that flush
    # does not raise BrokenPipeError again.
    try:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    except OSError:
        pass
