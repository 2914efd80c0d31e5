"""The Tracer: a context manager and iterator over live kernel events."""

from __future__ import annotations

import time
from typing import Any, Dict, Iterable, Iterator, List, Optional, Sequence, Union

from . import _native
from ._native import Event
from .errors import ConfigError

EventSpec = Union[str, Iterable[str], None]

_POLL_INTERVAL = 0.1  # seconds: bounds the reaction time to Ctrl-C and close()


def _str_list(name: str, value: Any) -> List[str]:
    if value is None:
        return []
    if isinstance(value, str):
        value = [value]
    try:
        items = list(value)
    except TypeError:
        raise TypeError(f"{name} must be a string or an iterable of strings, not {type(value).__name__}") from None
    for v in items:
        if not isinstance(v, str):
            raise TypeError(f"{name} must contain strings, not {type(v).__name__} ({v!r})")
        if not v.strip():
            raise ConfigError(f"{name} contains an empty name")
    return items


def _int_list(name: str, value: Any, lo: int, hi: int) -> List[int]:
    if value is None:
        return []
    if isinstance(value, int) and not isinstance(value, bool):
        value = [value]
    try:
        items = list(value)
    except TypeError:
        raise TypeError(f"{name} must be an int or an iterable of ints, not {type(value).__name__}") from None
    for v in items:
        if isinstance(v, bool) or not isinstance(v, int):
            raise TypeError(f"{name} must contain ints, not {type(v).__name__} ({v!r})")
        if not lo <= v <= hi:
            raise ConfigError(f"{name}: {v} is out of range ({lo} to {hi})")
    return items


def _size(name: str, value: Any, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, not {type(value).__name__}")
    if not lo <= value <= hi:
        raise ConfigError(f"{name} must be from {lo} to {hi}, got {value}")
    return value


class Tracer:
    """Traces kernel events live.

    >>> with Tracer(events="syscalls/sys_enter_write") as t:   # doctest: +SKIP
    ...     for ev in t:
    ...         print(ev.pid, ev.comm, ev.payload["content"])

    Args:
        events: event names or wildcards ("syscalls/*"); default: every typed
            event the kernel has (see ``list_events()``).
        pids: only these processes; ``follow_children`` adds their children.
        comm: only tasks whose comm starts with one of these prefixes.
        content_fds: fds whose write content is captured (default 1 and 2);
            ``all_fds=True`` captures every fd.
        content_max: most content bytes per write (default 1 MiB, at most 1 MiB).
        argv_max: most argv bytes per exec.
        ring_bytes, payload_bytes_per_cpu: buffer sizes.
        trace_self: also trace this process (off by default).

    Iterating yields events until ``close()``; stop with ``break`` or Ctrl-C
    (which detaches everything when used as a context manager).
    """

    def __init__(
        self,
        events: EventSpec = None,
        *,
        pids: Union[int, Iterable[int], None] = None,
        follow_children: bool = False,
        comm: Union[str, Iterable[str], None] = None,
        content_fds: Union[int, Iterable[int], None] = (1, 2),
        all_fds: bool = False,
        content_max: int = _native.DEFAULT_CONTENT_MAX,
        argv_max: int = _native.DEFAULT_ARGV_MAX,
        ring_bytes: int = _native.DEFAULT_RING_BYTES,
        payload_bytes_per_cpu: int = _native.DEFAULT_PAYLOAD_BYTES_PER_CPU,
        trace_self: bool = False,
    ) -> None:
        for flag, v in (("follow_children", follow_children), ("all_fds", all_fds), ("trace_self", trace_self)):
            if not isinstance(v, bool):
                raise TypeError(f"{flag} must be a bool, not {type(v).__name__}")
        self._native: Optional[_native.NativeTracer] = None
        self._native = _native.NativeTracer(
            events=_str_list("events", events),
            pids=_int_list("pids", pids, 1, 2**22),
            follow_children=follow_children,
            comm=_str_list("comm", comm),
            content_fds=_int_list("content_fds", content_fds, 0, 2**31 - 1),
            all_fds=all_fds,
            content_max=_size("content_max", content_max, 1, 1 << 20),
            argv_max=_size("argv_max", argv_max, 1, 1 << 20),
            ring_bytes=_size("ring_bytes", ring_bytes, 4096, 1 << 30),
            payload_bytes_per_cpu=_size("payload_bytes_per_cpu", payload_bytes_per_cpu, 1, 1 << 30),
            trace_self=trace_self,
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
        """Detaches everything; idempotent."""
        if self._native is not None:
            self._native.close()

    @property
    def closed(self) -> bool:
        return self._native is None or self._native.closed

    def _n(self) -> _native.NativeTracer:
        if self._native is None or self._native.closed:
            raise ValueError("I/O operation on a closed Tracer")
        return self._native

    # -- reading -----------------------------------------------------------
    def poll(self, timeout: float = _POLL_INTERVAL, max_events: int = 65536) -> List[Event]:
        """Waits up to ``timeout`` seconds; returns the events available (maybe none)."""
        return self._n().poll(max_events, float(timeout))

    def read(self, max_events: int = 65536, timeout: float = _POLL_INTERVAL) -> List[Event]:
        """Returns up to ``max_events`` events, waiting up to ``timeout`` for the first."""
        return self._n().poll(max_events, float(timeout))

    def __iter__(self) -> Iterator[Event]:
        while True:
            native = self._native
            if native is None or native.closed:
                return
            batch = native.poll(65536, _POLL_INTERVAL)
            yield from batch

    def collect(self, duration: float) -> List[Event]:
        """Every event of the next ``duration`` seconds."""
        out: List[Event] = []
        end = time.monotonic() + duration
        while True:
            left = end - time.monotonic()
            if left <= 0:
                break
            out.extend(self.poll(min(left, _POLL_INTERVAL)))
        out.extend(self.drain())
        return out

    def drain(self) -> List[Event]:
        """Everything already captured, without waiting."""
        out: List[Event] = []
        while True:
            batch = self.poll(0.0)
            if not batch:
                return out
            out.extend(batch)

    # -- state -------------------------------------------------------------
    def stats(self) -> Dict[str, int]:
        """Every counter: kernel losses (ring_full, payload_full, fault,
        truncated, busy), records, delivered, decode_errors, overwritten,
        seq_gaps, queued."""
        return dict(self._n().stats())

    @property
    def events(self) -> List[str]:
        """The attached event names."""
        return list(self._n().events)

    @property
    def startup_seconds(self) -> float:
        return float(self._n().startup_seconds)

    def set_pids(self, pids: Union[int, Sequence[int]]) -> None:
        """Replaces the pid filter while tracing (empty: all processes)."""
        self._n().set_pids(_int_list("pids", pids, 1, 2**22))

    def set_comm(self, comm: Union[str, Sequence[str]]) -> None:
        """Replaces the comm prefix filter while tracing (empty: none)."""
        self._n().set_comm(_str_list("comm", comm))
