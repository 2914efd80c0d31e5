"""tracer-ebpf: structured kernel events with whole payloads, from eBPF.

>>> import tracer_ebpf                                   # doctest: +SKIP
>>> with tracer_ebpf.Tracer("syscalls/sys_enter_write") as t:
...     for ev in t:
...         print(ev.to_json())
"""

from typing import List, Tuple, TypedDict

from . import _native
from ._native import BytesColumn, Event
from .errors import (
    BtfMissingError,
    ConfigError,
    TracefsError,
    TracepointMissingError,
    TracerError,
    TracerPermissionError,
    UnknownEventError,
    VerifierError,
)
from .frame import to_dataframe
from .run import TraceResult, trace
from .tracer import Columns, Tracer

__version__ = "0.1.0"


class EventInfo(TypedDict):
    """One entry of ``list_events()``."""

    name: str
    id: int
    comment: str
    optional: bool
    #: (field name, events.toml type) pairs, in payload order
    fields: List[Tuple[str, str]]


def list_events() -> List[EventInfo]:
    """The typed event catalogue: name ("category/tracepoint"), id,
    comment, optional (may be missing from a kernel) and payload fields."""
    return [
        EventInfo(name=e["name"], id=e["id"], comment=e["comment"], optional=e["optional"],
                  fields=[(f, t) for f, t in e["fields"]])
        for e in _native.list_events()
    ]


__all__ = [
    "Tracer",
    "Event",
    "Columns",
    "BytesColumn",
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
    "VerifierError",
]
