"""pandas DataFrames of events (optional extra: ``pip install tracer-ebpf[pandas]``)."""

from __future__ import annotations

from typing import Any, Iterable

from ._native import Event

HEADER = ("event_id", "event_type", "timestamp_ns", "pid", "tid", "ppid", "upid", "uppid", "comm")


def to_dataframe(events: Iterable[Event]) -> Any:
    """One row per event: the header columns, then one column per payload
    field (prefixed ``payload.``), missing where an event lacks the field."""
    try:
        import pandas as pd
    except ImportError:
        raise ImportError("to_dataframe needs pandas: pip install 'tracer-ebpf[pandas]'") from None
    cols: dict = {h: [] for h in HEADER}
    payload_cols: dict = {}
    n = 0
    for ev in events:
        for h in HEADER:
            cols[h].append(getattr(ev, h))
        for k, v in ev.payload.items():
            col = payload_cols.setdefault("payload." + k, [None] * n)
            col.append(v)
        n += 1
        for col in payload_cols.values():
            if len(col) < n:
                col.append(None)
    cols.update(payload_cols)
    df = pd.DataFrame(cols)
    if n:
        df["timestamp"] = pd.to_datetime(df["timestamp_ns"], unit="ns")
    return df
