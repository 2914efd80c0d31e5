"""ParquetDataset: events written as a partitioned Parquet dataset (see
docs/parquet.md)."""

from __future__ import annotations

import math
import os
from typing import Any, Iterable, List, Mapping, Optional, TypedDict, Union

from . import _native
from ._native import LIMITS, Event
from . import checks
from .errors import ConfigError, TracerClosedError

#: Defaults of the options (docs/parquet.md).
DEFAULT_MAX_FILE_BYTES = 128 << 20
DEFAULT_MAX_FILE_SECONDS = 300.0
DEFAULT_ROW_GROUP_BYTES = 32 << 20
DEFAULT_MAX_BUFFERED_BYTES = 256 << 20
DEFAULT_MAX_OPEN_FILES = 64
DEFAULT_ZSTD_LEVEL = 1


class DatasetSummary(TypedDict):
    """What ``ParquetDataset.close()`` returns."""

    #: complete files written
    files: int
    rows: int
    #: bytes of those files
    bytes: int
    #: rows of files that could not be completed (write errors); 0 otherwise
    rows_lost: int
    #: the complete files, in the order they were closed
    paths: List[str]
    host: str
    #: the run id in this run's file names
    run: str
    #: the run's side file (schema, final counters)
    side_file: str


def _summary(d: Mapping[str, Any]) -> DatasetSummary:
    return DatasetSummary(files=int(d["files"]), rows=int(d["rows"]), bytes=int(d["bytes"]),
                          rows_lost=int(d["rows_lost"]), paths=[str(p) for p in d["paths"]],
                          host=str(d["host"]), run=str(d["run"]), side_file=str(d["side_file"]))


def _seconds_in(name: str, value: Any, lo: int, hi: int) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number of seconds, not {type(value).__name__}")
    if math.isnan(value) or not lo <= value <= hi:
        raise ConfigError(f"{name} must be from {lo} to {hi}, got {value}")
    return float(value)


class ParquetDataset:
    """A Parquet dataset being written (docs/parquet.md):
    ``path/host=<host>/date=YYYY-MM-DD/hour=HH/event=<category>.<name>/part-*.parquet``,
    zstd-compressed, one event type per file, each file written under a
    hidden temporary name and renamed once complete.

    >>> with Tracer("syscalls/sys_enter_write") as t, ParquetDataset("/var/tmp/trace") as ds:  # doctest: +SKIP
    ...     for _ in range(50):
    ...         t.write_parquet(ds)

    Args:
        path: the dataset directory (created if missing, mode 0700).
        host: the ``host=`` partition (default: this machine's host name):
            ASCII letters, digits, ``-``, ``_``, ``.``; not starting with
            ``.`` or ``_``.
        max_file_bytes: a file is closed (the next one started) once it
            holds about this many bytes (default 128 MiB).
        max_file_seconds: ... or once it has been open this long (default
            300): readers see events within that time.
        row_group_bytes: row groups are written out at this encoded size.
        max_buffered_bytes: most bytes all open files hold in memory.
        max_open_files: most files open at once (one per event type and hour).
        zstd_level: 1 (fastest, default) to 22.

    Bad options raise ``ConfigError`` (a ``ValueError``) and an unusable
    directory ``TracerError``, before anything is created. ``close()`` (or
    leaving the ``with`` block) completes every file and returns a summary;
    files are also completed if the object is garbage-collected unclosed.
    """

    def __init__(
        self,
        path: Union[str, "os.PathLike[str]"],
        host: Optional[str] = None,
        *,
        max_file_bytes: int = DEFAULT_MAX_FILE_BYTES,
        max_file_seconds: float = DEFAULT_MAX_FILE_SECONDS,
        row_group_bytes: int = DEFAULT_ROW_GROUP_BYTES,
        max_buffered_bytes: int = DEFAULT_MAX_BUFFERED_BYTES,
        max_open_files: int = DEFAULT_MAX_OPEN_FILES,
        zstd_level: int = DEFAULT_ZSTD_LEVEL,
    ) -> None:
        self._native: Optional[_native.ParquetDataset] = None
        if not isinstance(path, (str, os.PathLike)):
            raise TypeError(f"path must be a str or os.PathLike, not {type(path).__name__}")
        path = os.fspath(path)
        if not isinstance(path, str):
            raise TypeError("path must be a str path")
        if not path:
            raise ConfigError("path is empty")
        if host is not None and not isinstance(host, str):
            raise TypeError(f"host must be a str, not {type(host).__name__}")
        if isinstance(zstd_level, bool) or not isinstance(zstd_level, int):
            raise TypeError(f"zstd_level must be an int, not {type(zstd_level).__name__}")
        if not 1 <= zstd_level <= 22:
            raise ConfigError(f"zstd_level must be from 1 to 22, got {zstd_level}")
        self._native = _native.ParquetDataset(
            path,
            host=host,
            max_file_bytes=checks.size("max_file_bytes", max_file_bytes, *LIMITS["max_file_bytes"]),
            max_file_seconds=_seconds_in("max_file_seconds", max_file_seconds, *LIMITS["max_file_seconds"]),
            row_group_bytes=checks.size("row_group_bytes", row_group_bytes, *LIMITS["row_group_bytes"]),
            max_buffered_bytes=checks.size("max_buffered_bytes", max_buffered_bytes, *LIMITS["max_buffered_bytes"]),
            max_open_files=checks.size("max_open_files", max_open_files, *LIMITS["max_open_files"]),
            zstd_level=zstd_level,
        )
        self.path = path

    def __enter__(self) -> "ParquetDataset":
        return self

    def __exit__(self, *exc: object) -> None:
        if not self.closed:
            self.close()

    def _n(self) -> _native.ParquetDataset:
        if self._native is None or self._native.closed:
            raise TracerClosedError("I/O operation on a closed dataset")
        return self._native

    def write(self, events: Iterable[Event]) -> None:
        """Writes events (``Event`` objects, e.g. from ``Tracer.poll()``),
        each into the partition of its event type and UTC hour, then closes
        the files that are due. Call it with ``[]`` now and then when no
        events come, so files are closed by age (``Tracer.write_parquet``
        does that by itself)."""
        self._n().write(events if isinstance(events, list) else list(events))

    def set_stats(self, stats: Mapping[str, int]) -> None:
        """The tracer's counters (``Tracer.stats()``), recorded in every file
        closed from now on."""
        self._n().set_stats(dict(stats))

    def close(self, stats: Optional[Mapping[str, int]] = None) -> DatasetSummary:
        """Completes every file, records ``stats`` (``Tracer.stats()``; by
        default the last ``set_stats``) in them and in the side file, and
        returns what was written. Idempotent: a second call returns the same
        summary."""
        if self._native is None:
            raise TracerClosedError("I/O operation on a closed dataset")
        return _summary(self._native.close(None if stats is None else dict(stats)))

    def summary(self) -> DatasetSummary:
        """What was written so far (complete files only)."""
        if self._native is None:
            raise TracerClosedError("I/O operation on a closed dataset")
        return _summary(self._native.summary())

    @property
    def closed(self) -> bool:
        return self._native is None or self._native.closed

    @property
    def host(self) -> str:
        """The ``host=`` partition value."""
        if self._native is None:
            raise TracerClosedError("I/O operation on a closed dataset")
        return self._native.host

    @property
    def run(self) -> str:
        """The run id in this run's file names (start time and pid)."""
        if self._native is None:
            raise TracerClosedError("I/O operation on a closed dataset")
        return self._native.run

    def __repr__(self) -> str:
        state = "closed" if self.closed else "open"
        return f"<ParquetDataset {self.path!r} {state}>"

