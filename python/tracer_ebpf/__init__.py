"""tracer-ebpf: structured kernel events with whole payloads, from eBPF.

>>> import tracer_ebpf                                   # doctest: +SKIP
>>> with tracer_ebpf.Tracer("syscalls/sys_enter_write") as t:
...     for ev in t:
...         print(ev.to_json())
"""

import os
from typing import Dict, List, Optional, Tuple, TypedDict

from . import _native
from ._native import ArrowBatch, BytesColumn, Event
from .errors import (
    BtfMissingError,
    CgroupError,
    ConfigError,
    DatasetError,
    ExporterClosedError,
    TracerClosedError,
    TracefsError,
    TracepointMissingError,
    TracerError,
    TracerPermissionError,
    UnknownEventError,
    TracerMemoryError,
    VerifierError,
)
from .frame import to_dataframe
from .run import TraceResult, trace
from .columns import Columns
from .dataset import DatasetSummary, ParquetDataset
from .otlp import OtlpExporter
from .tracer import Tracer

__version__ = "0.1.0"


class EventInfo(TypedDict):
    """One entry of ``list_events()``."""

    name: str
    #: events.toml id for typed events; the tracefs ID for generic ones
    id: int
    comment: str
    optional: bool
    #: (field name, events.toml type) pairs, in payload order; empty for
    #: generic events (their fields come from the kernel's format file)
    fields: List[Tuple[str, str]]
    #: "typed" (declared in events.toml), "synthetic" (declared there too,
    #: made by the tracer itself: proc/snapshot, see ``Tracer(snapshot=True)``)
    #: or "generic" (any other tracepoint)
    kind: str
    #: whether the running kernel has this tracepoint (None: tracefs
    #: unreadable); always True for a synthetic event
    available: Optional[bool]


_TRACING = ("/sys/kernel/tracing", "/sys/kernel/debug/tracing")


def _kernel_tracepoints() -> Optional[Dict[str, int]]:
    """name -> tracefs ID of every tracepoint of the running kernel."""
    for root in _TRACING:
        try:
            with open(os.path.join(root, "available_events")) as f:
                names = sorted({ln.strip().replace(":", "/", 1) for ln in f if ":" in ln})
        except OSError:
            continue
        out: Dict[str, int] = {}
        for n in names:
            try:
                with open(os.path.join(root, "events", n, "id")) as f:
                    out[n] = int(f.read().strip() or 0)
            except (OSError, ValueError):
                out[n] = 0
        return out
    return None


def list_events(*, generic: bool = True) -> List[EventInfo]:
    """The catalogue: the typed events (events.toml), saying whether this
    kernel has each, the synthetic ones (made by the tracer), then (``generic=True``) every other tracepoint of the
    running kernel, which ``Tracer`` decodes from its format file. Generic
    entries need tracefs to be readable (root; a Tracer mounts it)."""
    kernel = _kernel_tracepoints()
    out: List[EventInfo] = [
        EventInfo(name=e["name"], id=e["id"], comment=e["comment"], optional=e["optional"],
                  fields=[(f, t) for f, t in e["fields"]], kind="synthetic" if e["synthetic"] else "typed",
                  available=True if e["synthetic"] else None if kernel is None else e["name"] in kernel)
        for e in _native.list_events()
    ]
    if generic and kernel is not None:
        typed = {e["name"] for e in out}
        out.extend(
            EventInfo(name=n, id=i, comment="tracepoint, decoded from its tracefs format", optional=False,
                      fields=[], kind="generic", available=True)
            for n, i in kernel.items() if n not in typed
        )
    return out


__all__ = [
    "Tracer",
    "OtlpExporter",
    "Event",
    "Columns",
    "BytesColumn",
    "ArrowBatch",
    "ParquetDataset",
    "DatasetSummary",
    "EventInfo",
    "trace",
    "TraceResult",
    "list_events",
    "to_dataframe",
    "TracerError",
    "TracerPermissionError",
    "BtfMissingError",
    "TracefsError",
    "UnknownEventError",
    "TracepointMissingError",
    "ConfigError",
    "CgroupError",
    "DatasetError",
    "TracerClosedError",
    "ExporterClosedError",
    "TracerMemoryError",
    "VerifierError",
]
