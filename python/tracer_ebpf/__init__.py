"""tracer-ebpf: structured kernel events with whole payloads, from eBPF.

>>> import tracer_ebpf                                   # doctest: +SKIP
>>> with tracer_ebpf.Tracer("syscalls/sys_enter_write") as t:
...     for ev in t:
...         print(ev.to_json())
"""

from typing import Any, Dict, List

from . import _native
from ._native import Event
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
from .tracer import Tracer

__version__ = "0.1.0"


def list_events() -> List[Dict[str, Any]]:
    """The typed event catalogue: name, id, comment, optional, fields."""
    return list(_native.list_events())


__all__ = [
    "Tracer",
    "Event",
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
