"""The Tracer: a context manager and iterator over live kernel events."""

from __future__ import annotations

import os
import time
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Callable, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple, TypeVar, Union

from . import _native
from ._native import LIMITS, ArrowBatch, Event
from . import checks
from .columns import Columns
from .dataset import ParquetDataset
from .errors import TracerClosedError, TracerError
from .frame import arrow_to_dataframe, require_pandas

if TYPE_CHECKING:
    import pandas

    from .otlp import OtlpExporter

EventSpec = Union[str, Iterable[str], None]

_POLL_INTERVAL = 0.1  # seconds: how long the iterator waits per batch
STOP_DRAIN_SECONDS = 5.0  # at most this long to hand out what was captured before a stop
_BATCH = 65536  # events per native call

T = TypeVar("T")


class Tracer:
    """Traces kernel events live: attached on creation, detached by
    ``close()`` (or leaving the ``with`` block).

    >>> with Tracer(events="syscalls/sys_enter_write") as t:   # doctest: +SKIP
    ...     for ev in t:
    ...         print(ev.pid, ev.comm, ev.payload["content"])

    Args:
        events: event names or wildcards ("syscalls/*"); default: every typed
            event the kernel has (see ``list_events()``).
        pids: only these processes; ``follow_children`` adds their children.
        comm: only tasks whose comm starts with one of these prefixes (at most 8).
        cgroups: only tasks in these cgroup v2 directories or below them (at
            most 8): absolute paths inside the cgroup2 mount, or relative to
            its root ("system.slice/docker-<id>.scope"). Bad paths raise
            ``CgroupError``. Combined with ``pids`` and ``comm``, a task must
            pass every filter.
        content_fds: fds whose write content is captured (default 1 and 2);
            ``all_fds=True`` captures every fd.
        content_max: most content bytes per write (default and maximum 1 MiB).
        argv_max: most argv bytes per exec.
        ring_bytes, payload_bytes_per_cpu: kernel buffer sizes. Default
            (None): sized from the memory this process may use, M = RAM or
            its cgroup's memory limit if lower: M/384 of kernel memory in
            all, 12 to 64 MiB (ring 1 to 16 MiB, the payload area the rest,
            at least 2 MiB per CPU, rounded up to 1 MiB chunks; the area is
            one pool of CPUs x this, and one CPU may use all of it); see
            docs/protocol.md.
        queue_bytes: most bytes of events held in this process between the
            tracer's reader thread, which drains the kernel buffers, and your
            loop (default: M/8, 16 MiB to 1 GiB). A loop slower than
            the events loses nothing until this is full; then the kernel
            buffers fill and count their losses (``stats()``).
        reader_thread: drain the kernel buffers from a background thread
            (default). False: only while you poll, in your thread.
        yield_cpu: the thread that iterates or polls runs as SCHED_IDLE while
            the queue holds less than a quarter of ``queue_bytes``, and at
            its own policy from then until the queue is down to an eighth:
            a burst's writers keep their CPUs while the queue holds what
            your loop has not handled yet. None (default): only inside the
            tracer's own loops: while a ``for`` loop iterates the tracer,
            and during ``collect()``, ``to_dataframe()`` and ``trace()``;
            the thread has its policy back as soon as the loop ends (also
            by ``break`` or an exception) or the call returns. True: from
            every poll on, until ``close()``. False: never. Needs the reader
            thread and CAP_SYS_NICE (with True, ``notes`` says when it is
            off). Threads and processes your loop body starts while it is
            idle are SCHED_IDLE too (Linux keeps the policy across fork),
            and so is the loop body: on a machine whose every CPU is busy,
            a loop body holding the GIL runs slowly until the queue fills.
        trace_self: also trace this process (off by default). Without it,
            a pid list naming this process is an error.
        exclude_pids: never these processes.
        exclude_comm: never tasks whose comm starts with one of these
            prefixes (at most 8).
        exclude_output_readers: never the processes that read this
            process's stdout or stderr (the other end of its pipe or pty,
            and the readers of theirs in turn, found at start): tracing them
            would trace the tracer's own output without end (default on;
            ``output_readers`` lists them).
        snapshot: right after attaching, one ``proc/snapshot`` event per
            process already running (pid, ppid, upid, comm, uid, gid, exe,
            cwd, argv), before any live event and parents before children;
            the pid and comm filters select them like any event, and with
            ``follow_children`` the targets' existing descendants are
            snapshotted and followed too. A field /proc no longer had is
            None with ``<field>_lost`` "exited" or "unreadable" (counted in
            ``stats()["snapshot_lost"]``). See docs/snapshot.md.
        arrow: the reader thread builds Apache Arrow record batches as
            events arrive (no per-event object is ever queued), and
            ``poll_arrow()`` / ``to_dataframe()`` hand them out as they are:
            the fastest way to columns. Such a tracer has no per-event forms:
            iterating, ``poll()``, ``poll_columns()``, ``read_json()``,
            ``export()`` and ``write_parquet()`` raise ``ConfigError``. See
            docs/columnar.md.

    Pids must be those of running processes (else ``ConfigError``).

    Iterating yields events until ``stop()`` (then the events captured
    before it, then the loop ends) or ``close()``. Ctrl-C
    (KeyboardInterrupt) while iterating or polling closes the tracer, so an
    interrupted notebook cell leaves nothing attached; ``collect()`` and
    ``to_dataframe()`` then return what they captured until then.

    Whatever was captured but never handed out (queued when ``close()``
    ran) is counted in ``stats()["discarded"]``.
    """

    def __init__(
        self,
        events: EventSpec = None,
        *,
        pids: Union[int, Iterable[int], None] = None,
        follow_children: bool = False,
        comm: Union[str, Iterable[str], None] = None,
        cgroups: Union[str, "os.PathLike[str]", Iterable[Union[str, "os.PathLike[str]"]], None] = None,
        content_fds: Union[int, Iterable[int], None] = (1, 2),
        all_fds: bool = False,
        content_max: int = _native.DEFAULT_CONTENT_MAX,
        argv_max: int = _native.DEFAULT_ARGV_MAX,
        ring_bytes: Optional[int] = None,
        payload_bytes_per_cpu: Optional[int] = None,
        queue_bytes: Optional[int] = None,
        reader_thread: bool = True,
        trace_self: bool = False,
        exclude_pids: Union[int, Iterable[int], None] = None,
        exclude_comm: Union[str, Iterable[str], None] = None,
        exclude_output_readers: bool = True,
        snapshot: bool = False,
        arrow: bool = False,
        yield_cpu: Optional[bool] = None,
    ) -> None:
        self._native: Optional[_native.NativeTracer] = None
        # yield_cpu=None: switched on only while one of the tracer's own loops runs.
        self._yield_in_loops = yield_cpu is None
        self._loops = 0
        self._native = _native.NativeTracer(
            events=checks.event_names(events),
            pids=checks.int_list("pids", pids, *LIMITS["pid"]),
            follow_children=checks.flag("follow_children", follow_children),
            comm=checks.str_list("comm", comm),
            content_fds=checks.int_list("content_fds", content_fds, 0, 2**31 - 1),
            all_fds=checks.flag("all_fds", all_fds),
            content_max=checks.size("content_max", content_max, *LIMITS["content_max"]),
            argv_max=checks.size("argv_max", argv_max, *LIMITS["argv_max"]),
            ring_bytes=checks.opt_size("ring_bytes", ring_bytes, *LIMITS["ring_bytes"]),
            payload_bytes_per_cpu=checks.opt_size("payload_bytes_per_cpu", payload_bytes_per_cpu, *LIMITS["payload_bytes_per_cpu"]),
            queue_bytes=checks.opt_size("queue_bytes", queue_bytes, *LIMITS["queue_bytes"]),
            reader_thread=checks.flag("reader_thread", reader_thread),
            trace_self=checks.flag("trace_self", trace_self),
            exclude_pids=checks.int_list("exclude_pids", exclude_pids, *LIMITS["pid"]),
            exclude_comm=checks.str_list("exclude_comm", exclude_comm),
            exclude_output_readers=checks.flag("exclude_output_readers", exclude_output_readers),
            cgroups=checks.path_list("cgroups", cgroups),
            snapshot=checks.flag("snapshot", snapshot),
            arrow=checks.flag("arrow", arrow),
            yield_cpu=yield_cpu is not None and checks.flag("yield_cpu", yield_cpu),
        )

    # -- lifecycle ---------------------------------------------------------
    def __enter__(self) -> "Tracer":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass

    def close(self) -> None:
        """Stops everything and frees the buffers; idempotent. Events not
        handed out yet are counted as ``discarded``; ``stats()`` keeps the
        final counters. The programs are detached and the kernel's memory
        freed by a background thread right after (the next tracer waits for
        it); more than 16 tracepoints are detached before it returns. To get them instead, ``stop()`` first and read on.
        In a child process made by ``os.fork()`` it does nothing to the
        parent's tracer (which the child cannot use)."""
        native = self._native
        if native is not None and not native.closed:
            native.close()

    def stop(self) -> None:
        """Stops the programs: once it returns nothing new is captured (up to
        16 are detached in the background), and reading hands out what already
        was, then ends (iteration stops; ``poll()`` returns ``[]`` at once
        and ``drained`` becomes True). ``close()`` still frees the buffers.
        Idempotent."""
        self._n().stop()

    @property
    def stopped(self) -> bool:
        """Whether ``stop()`` (or ``close()``) was called."""
        return self.closed or bool(self._n().stopped)

    @property
    def drained(self) -> bool:
        """Stopped, and everything captured was handed out."""
        return not self.closed and bool(self._n().drained)

    def _finish(self, budget: float = STOP_DRAIN_SECONDS) -> List[Event]:
        """Stops, then returns what was captured, for at most ``budget``
        seconds (what is left then is counted as discarded by ``close()``)."""
        out: List[Event] = []
        if self.closed:
            return out
        native = self._n()
        native.stop()
        end = time.monotonic() + budget
        while time.monotonic() < end:
            batch = native.poll(_BATCH, 0.0)
            if not batch and native.drained:
                break
            out.extend(batch)
        return out

    @property
    def closed(self) -> bool:
        return self._native is None or self._native.closed

    def __repr__(self) -> str:
        if self.closed:
            return "<Tracer closed>"
        return f"<Tracer events={self.events!r}>"

    def _n(self) -> _native.NativeTracer:
        if self._native is None or self._native.closed:
            raise TracerClosedError("I/O operation on a closed tracer")
        return self._native

    def _interruptible(self, call: Callable[[], T]) -> T:
        try:
            return call()
        except KeyboardInterrupt:
            self.close()
            raise

    # -- reading -----------------------------------------------------------
    def poll(self, timeout: float = _POLL_INTERVAL, max_events: int = _BATCH) -> List[Event]:
        """Waits up to ``timeout`` seconds for events; returns those
        available, at most ``max_events`` (maybe none), and no more after
        those that reach 16 MiB of contents (at least one event), here and
        in every batched form: a consumer that lags never holds a whole
        queued burst at once. After ``stop()``: what is left, without
        waiting."""
        n, wait, native = checks.size("max_events", max_events, 1, 1 << 24), checks.seconds("timeout", timeout), self._n()
        return self._interruptible(lambda: native.poll(n, wait))

    def read(self, timeout: float = _POLL_INTERVAL, max_events: int = _BATCH) -> List[Event]:
        """The same as ``poll()``."""
        return self.poll(timeout, max_events)

    def read_json(self, timeout: float = _POLL_INTERVAL, max_events: int = _BATCH) -> Tuple[bytes, int]:
        """Like ``poll()``, but the events as JSON lines (one per event, each
        ending in a newline; the format of every front end) and their count:
        no Python object per event. ``tracer-example`` prints these."""
        n, wait, native = checks.size("max_events", max_events, 1, 1 << 24), checks.seconds("timeout", timeout), self._n()
        return self._interruptible(lambda: native.poll_json(n, wait))

    def poll_columns(self, timeout: float = _POLL_INTERVAL, max_events: int = _BATCH) -> Columns:
        """Like ``poll()``, column by column, with no Python object per event:
        ``{"event_id": array('Q'), "event_type": [str], "timestamp_ns",
        "pid", "tid", "ppid", "upid", "uppid", "comm", "ns_pid", "ns_tid",
        "cgroup_id", "cgroup", "container_id", "container_runtime", "pod_uid"
        (lists of str or None), "cpu", "payload_lost":
        array('B'), "payload.<field>": ...}``, one entry per event in each.

        Integer payload fields are ``array('Q')``/``array('q')`` (0 where an
        event has no such field), ``u8[]`` fields a ``BytesColumn``
        (a sequence of ``bytes``/None, with the raw ``data``/``offsets``
        buffers), other fields lists (None where absent). Every batch of a
        tracer has the same columns (more appear only when a new generic
        tracepoint first shows up). ``to_dataframe()`` turns a batch into a
        pandas DataFrame.
        """
        n, wait, native = checks.size("max_events", max_events, 1, 1 << 24), checks.seconds("timeout", timeout), self._n()
        cols = self._interruptible(lambda: native.poll_columns(n, wait))
        return Columns(cols, native.event_columns)

    def poll_arrow(self, timeout: float = _POLL_INTERVAL, max_events: int = _BATCH) -> ArrowBatch:
        """Like ``poll()``, as one Apache Arrow record batch (an
        ``ArrowBatch``, possibly of no rows), built in the Rust core with no
        Python object per event. It implements the Arrow PyCapsule interface:
        ``pyarrow.record_batch(b)``, ``pyarrow.table(b)``,
        ``polars.DataFrame(b)`` and DuckDB (``duckdb.sql("from b")``) take it
        without copying. Every batch of a tracer has the same schema: the
        header columns, then ``payload.<field>`` columns of every event type
        it traces (null where a row's event has none); see docs/columnar.md.
        """
        n, wait, native = checks.size("max_events", max_events, 1, 1 << 24), checks.seconds("timeout", timeout), self._n()
        return self._interruptible(lambda: native.poll_arrow(n, wait))

    def write_parquet(self, dataset: "ParquetDataset", timeout: float = _POLL_INTERVAL,
                      max_events: int = _BATCH) -> int:
        """Like ``poll()``, but the events go straight into ``dataset`` (a
        ``ParquetDataset``), with no Python object per event; returns how
        many were written. Each call also records the tracer's counters for
        the files it closes and closes the files that are due, so call it
        in a loop even when nothing happens."""
        n, wait, native = checks.size("max_events", max_events, 1, 1 << 24), checks.seconds("timeout", timeout), self._n()
        if not isinstance(dataset, ParquetDataset):
            raise TypeError(f"dataset must be a ParquetDataset, not {type(dataset).__name__}")
        target = dataset._n()
        return self._interruptible(lambda: native.write_parquet(target, n, wait))

    def write_parquet_json(self, dataset: "ParquetDataset", timeout: float = _POLL_INTERVAL,
                           max_events: int = _BATCH) -> Tuple[bytes, int]:
        """``write_parquet()`` that also returns the same events as JSON
        lines, as ``read_json()`` does: ``(lines, count)``.
        ``tracer-example --parquet DIR -o FILE`` writes both."""
        n, wait, native = checks.size("max_events", max_events, 1, 1 << 24), checks.seconds("timeout", timeout), self._n()
        if not isinstance(dataset, ParquetDataset):
            raise TypeError(f"dataset must be a ParquetDataset, not {type(dataset).__name__}")
        target = dataset._n()
        return self._interruptible(lambda: native.write_parquet_json(target, n, wait))

    def export(self, exporter: "OtlpExporter", timeout: float = _POLL_INTERVAL, max_events: int = _BATCH) -> int:
        """Like ``poll()``, but hands the events to an ``OtlpExporter``
        (docs/otlp.md), with no Python object per event: returns how many
        events were handed over. It never waits for the network: events
        that do not fit in the exporter's buffer are counted in its
        ``export_dropped``."""
        from .otlp import OtlpExporter

        if not isinstance(exporter, OtlpExporter):
            raise TypeError(f"exporter must be an OtlpExporter, not {type(exporter).__name__}")
        n, wait, native = checks.size("max_events", max_events, 1, 1 << 24), checks.seconds("timeout", timeout), self._n()
        target = exporter._n()
        return self._interruptible(lambda: native.export(target, n, wait))

    @contextmanager
    def _yielding(self) -> Iterator[None]:
        """Around the tracer's own loops: ``yield_cpu`` on while it runs
        (with the default None); the policy is given back when the outermost
        one ends."""
        native = self._native
        if not self._yield_in_loops or native is None or native.closed:
            yield
            return
        self._loops += 1
        if self._loops == 1:
            native.set_yield_cpu(True)
        try:
            yield
        finally:
            self._loops -= 1
            if self._loops == 0:
                native.set_yield_cpu(False)

    def __iter__(self) -> Iterator[Event]:
        with self._yielding():
            while True:
                native = self._native
                if native is None or native.closed:
                    return
                try:
                    batch = native.poll(_BATCH, _POLL_INTERVAL)
                    if not batch and native.drained:
                        return  # stopped, and all of it handed out
                except KeyboardInterrupt:
                    self.close()
                    raise
                except (TracerError, ValueError):
                    if native.closed:  # closed by another thread
                        return
                    raise
                yield from batch

    def collect(self, duration: float) -> List[Event]:
        """Every event of the next ``duration`` seconds (the tracer keeps
        running). Ctrl-C ends it early: the events captured until then are
        returned and the tracer is closed."""
        out: List[Event] = []
        end = time.monotonic() + checks.duration("duration", duration)
        native = self._n()
        try:
            with self._yielding():
                while True:
                    left = end - time.monotonic()
                    if left <= 0:
                        break
                    out.extend(native.poll(_BATCH, min(left, _POLL_INTERVAL)))
        except KeyboardInterrupt:
            out.extend(self._finish())
            self.close()
            return out
        out.extend(self.drain())
        return out

    def drain(self) -> List[Event]:
        """Everything already captured, without waiting (for at most
        5 seconds while events keep coming)."""
        out: List[Event] = []
        end = time.monotonic() + STOP_DRAIN_SECONDS
        while time.monotonic() < end:
            batch = self.poll(0.0)
            if not batch:
                break
            out.extend(batch)
        return out

    def to_dataframe(self, duration: float, max_events: Optional[int] = None) -> "pandas.DataFrame":
        """The events of the next ``duration`` seconds (stopping early at
        ``max_events``) as a pandas DataFrame, built from Arrow batches (``poll_arrow()``;
        ``pip install 'tracer-ebpf[pandas]'``)."""
        # Without pandas: ImportError now, not after collecting for `duration`.
        self._interruptible(require_pandas)

        limit = None if max_events is None else checks.size("max_events", max_events, 1, 1 << 40)
        end = time.monotonic() + checks.duration("duration", duration)
        batches: List[ArrowBatch] = []
        got = 0
        native = self._n()
        try:
            with self._yielding():
                while True:
                    left = end - time.monotonic()
                    want = _BATCH if limit is None else min(_BATCH, limit - got)
                    batch = native.poll_arrow(want, max(0.0, min(left, _POLL_INTERVAL)))
                    batches.append(batch)
                    got += len(batch)
                    if left <= 0 or (limit is not None and got >= limit):
                        break
        except KeyboardInterrupt:
            # Ctrl-C: what was captured until now, then closed.
            native.stop()
            stop_end = time.monotonic() + STOP_DRAIN_SECONDS
            while time.monotonic() < stop_end and (limit is None or got < limit):
                batch = native.poll_arrow(_BATCH if limit is None else min(_BATCH, limit - got), 0.0)
                if not len(batch) and native.drained:
                    break
                batches.append(batch)
                got += len(batch)
            self.close()
        return arrow_to_dataframe(batches)

    # -- state -------------------------------------------------------------
    def stats(self) -> Dict[str, int]:
        """Every counter, by name: kernel side ``records``, ``ring_full``,
        ``payload_full``, ``fault``, ``truncated``, ``busy``, ``followed``;
        user side ``delivered`` (events handed to you), ``discarded``
        (captured but never handed out: left when ``close()`` ran),
        ``decode_errors``, ``overwritten``, ``seq_gaps``, ``queued`` (waiting
        to be read), and for ``snapshot=True`` ``snapshot_events``,
        ``snapshot_lost`` (fields /proc no longer had), ``snapshot_truncated``,
        ``snapshot_followed`` (existing descendants added in follow mode),
        ``snapshot_unseen`` (processes hidden from the kernel's task walk).
        ``records + snapshot_events == delivered + queued + discarded`` once the
        kernel buffers are read, less the records lost to
        ``decode_errors``/``overwritten``. After ``close()``: the final
        values."""
        if self._native is None:
            raise TracerClosedError("I/O operation on a closed tracer")
        return dict(self._native.stats())

    def memory(self) -> Dict[str, int]:
        """The buffers in force: ``ring_bytes``, ``payload_bytes_per_cpu``
        (over ``ncpus`` possible CPUs), ``queue_bytes``, and ``kernel_bytes``,
        the kernel memory all of this tracer's BPF maps hold (as charged by
        the kernel)."""
        return dict(self._n().memory())

    @property
    def events(self) -> List[str]:
        """The attached event names."""
        return list(self._n().events)

    @property
    def attach_failures(self) -> List[Tuple[str, str]]:
        """Tracepoints matched by a wildcard that could not be attached (the
        others are traced): ``[(name, reason)]``."""
        return list(self._n().attach_failures())

    @property
    def notes(self) -> List[str]:
        """What is traced by a slower way than the usual one on this kernel,
        and why: e.g. typed syscall events on a perf event each when the
        kernel refuses the shared ``sys_enter``/``sys_exit`` programs. The
        events are recorded all the same."""
        return list(self._n().notes)

    @property
    def output_readers(self) -> List[int]:
        """Pids not traced because they read this process's output (see
        ``exclude_output_readers``)."""
        return list(self._n().output_readers)

    @property
    def startup_seconds(self) -> float:
        """Seconds it took to load, verify and attach."""
        return float(self._n().startup_seconds)

    def set_pids(self, pids: Union[int, Iterable[int], None]) -> None:
        """Replaces the pid filter while tracing (empty or None: all processes)."""
        self._n().set_pids(checks.int_list("pids", pids, *LIMITS["pid"]))

    def set_comm(self, comm: Union[str, Iterable[str], None]) -> None:
        """Replaces the comm prefix filter while tracing (empty or None: none)."""
        self._n().set_comm(checks.str_list("comm", comm))

    def set_cgroups(self, cgroups: Union[str, "os.PathLike[str]", Iterable[Union[str, "os.PathLike[str]"]], None]) -> None:
        """Replaces the cgroup filter while tracing (empty or None: none);
        paths as for ``cgroups=``. A bad path raises ``CgroupError`` and
        leaves the filter as it was."""
        self._n().set_cgroups(checks.path_list("cgroups", cgroups))


