"""pandas DataFrames of events, built through Arrow (optional extra:
``pip install 'tracer-ebpf[pandas]'``: pandas and pyarrow)."""

from __future__ import annotations

import importlib
from array import array
from typing import TYPE_CHECKING, Any, Dict, Iterable, List, Sequence, Set, Union, cast

from . import _native
from ._native import ArrowBatch, BytesColumn, Event
from .columns import Columns
from .events import CATALOGUE

if TYPE_CHECKING:
    import pandas

#: Header columns, in JSON order, then the extra per-event columns.
HEADER = ("event_id", "event_type", "timestamp_ns", "pid", "tid", "ppid", "upid", "uppid", "comm", "ns_pid", "ns_tid",
          "cgroup_id", "cgroup", "container_id", "container_runtime", "pod_uid")
EXTRA = ("cpu", "payload_lost")
_TYPECODES = {"event_id": "Q", "timestamp_ns": "Q", "pid": "I", "tid": "I", "ppid": "I", "upid": "Q",
              "uppid": "Q", "ns_pid": "I", "ns_tid": "I", "cgroup_id": "Q", "cpu": "I", "payload_lost": "B"}


def require_pandas() -> Any:
    """pandas, and pyarrow which DataFrames are built through."""
    try:
        import pandas
        importlib.import_module("pyarrow")
    except ImportError:
        raise ImportError("DataFrames need pandas and pyarrow: pip install 'tracer-ebpf[pandas]'") from None
    return pandas


Source = Union[ArrowBatch, Dict[str, Sequence[Any]], Iterable[ArrowBatch], Iterable[Dict[str, Sequence[Any]]], Iterable[Event]]


def to_dataframe(source: Source) -> "pandas.DataFrame":
    """A DataFrame with one row per event, built through Arrow: the columns
    of ``Tracer.poll_arrow()`` (docs/columnar.md): header columns
    (``event_type`` categorical, ``timestamp`` UTC datetimes), then one
    ``payload.<field>`` column per payload field with its companions;
    integers keep their declared width (nullable dtypes where an event has
    no such field), bytes stay ``bytes``, lists are lists, missing values
    ``<NA>``/None.

    ``source``: an ``ArrowBatch`` from ``Tracer.poll_arrow()`` or a list of
    them, events (a list of ``Event``, ``TraceResult.events``), or
    ``Tracer.poll_columns()`` batches (their own, older columns).
    """
    require_pandas()
    if isinstance(source, ArrowBatch):
        return arrow_to_dataframe([source])
    if isinstance(source, dict):
        return columns_to_dataframe([source])
    items: List[Any] = list(source)
    if items and all(isinstance(x, dict) for x in items):
        return columns_to_dataframe(items)
    if items and all(isinstance(x, ArrowBatch) for x in items):
        return arrow_to_dataframe(items)
    for x in items:
        if not isinstance(x, Event):
            raise TypeError(f"to_dataframe takes events, ArrowBatches or poll_columns() batches, not {type(x).__name__}")
    return arrow_to_dataframe([_native.events_to_arrow(items)])


def arrow_to_dataframe(batches: Sequence[ArrowBatch]) -> "pandas.DataFrame":
    """One DataFrame of record batches of one schema: non-null integer
    columns as numpy integers, nullable ones as pandas' nullable integer
    dtypes, lists as Python lists."""
    pd = require_pandas()
    pa: Any = importlib.import_module("pyarrow")
    table = pa.Table.from_batches([pa.record_batch(b) for b in batches])
    nullable = {pa.int8(): pd.Int8Dtype(), pa.int16(): pd.Int16Dtype(), pa.int32(): pd.Int32Dtype(),
                pa.int64(): pd.Int64Dtype(), pa.uint8(): pd.UInt8Dtype(), pa.uint16(): pd.UInt16Dtype(),
                pa.uint32(): pd.UInt32Dtype(), pa.uint64(): pd.UInt64Dtype(), pa.bool_(): pd.BooleanDtype()}
    data: Dict[str, Any] = {}
    for field, col in zip(table.schema, table.columns):
        if pa.types.is_list(field.type):
            data[field.name] = pd.Series(col.to_pylist(), dtype=object)
        elif field.nullable and field.type in nullable:
            data[field.name] = col.to_pandas(types_mapper=nullable.get)
        else:
            data[field.name] = col.to_pandas()
    return cast("pandas.DataFrame", pd.DataFrame(data, columns=table.column_names))


def events_to_columns(events: Sequence[Event]) -> Columns:
    """Events in the form of ``Tracer.poll_columns()`` (but ``u8[]`` fields
    as lists of bytes)."""
    header: Dict[str, Any] = {k: array(_TYPECODES[k]) if k in _TYPECODES else [] for k in HEADER + EXTRA}
    payload: Dict[str, List[Any]] = {}
    fields: Dict[str, List[str]] = {}
    for row, ev in enumerate(events):
        for k in HEADER + EXTRA:
            header[k].append(getattr(ev, k))
        p = ev.payload
        if ev.event_type not in fields:
            fields[ev.event_type] = ["payload." + f for f in p]
        for f, v in p.items():
            payload.setdefault("payload." + f, [None] * row).append(v)
        for col in payload.values():
            if len(col) <= row:
                col.append(None)
    signed = _signed_fields()
    packed: Dict[str, Any] = {}
    for k, v in payload.items():
        if _ints_or_none(v):  # as poll_columns(): an array, 0 where absent
            code = "q" if k in signed or any(x is not None and x < 0 for x in v) else "Q"
            packed[k] = array(code, [0 if x is None else x for x in v])
        else:
            packed[k] = v
    return Columns({**header, **packed}, fields)


def columns_to_dataframe(batches: Sequence[Dict[str, Sequence[Any]]]) -> "pandas.DataFrame":
    """One DataFrame of several ``poll_columns()`` batches."""
    pd = require_pandas()
    cols = _concat(batches)
    df = _frame(pd, cols) if len(cols["event_id"]) else pd.DataFrame({k: [] for k in cols})
    df["timestamp"] = pd.to_datetime(df["timestamp_ns"].astype("int64"), unit="ns", utc=True)
    return cast("pandas.DataFrame", df)


def _concat(batches: Sequence[Dict[str, Sequence[Any]]]) -> Columns:
    """The batches as one: arrays extended, BytesColumns as lists; a column
    missing from some batches gets 0 or None for their rows."""
    out: Dict[str, Any] = {k: array(_TYPECODES[k]) if k in _TYPECODES else [] for k in HEADER + EXTRA}
    fields: Dict[str, List[str]] = {}
    rows = 0
    for b in batches:
        n = len(b["event_id"])
        fields.update(getattr(b, "fields", {}))
        for k, v in b.items():
            if k not in out:
                out[k] = array(v.typecode, bytes(rows * v.itemsize)) if isinstance(v, array) else [None] * rows
            col = out[k]
            if isinstance(col, array) and isinstance(v, array) and col.typecode == v.typecode:
                col.extend(v)
            else:
                if isinstance(col, array):  # mixed integer kinds: fall back to a list
                    col = out[k] = col.tolist()
                col.extend(v.to_list() if isinstance(v, BytesColumn) else v)
        rows += n
        for k, col in out.items():
            if len(col) < rows:
                col.extend(array(col.typecode, bytes((rows - len(col)) * col.itemsize)) if isinstance(col, array)
                           else [None] * (rows - len(col)))
    return Columns(out, fields)


def _frame(pd: Any, cols: Dict[str, Sequence[Any]]) -> "pandas.DataFrame":
    import numpy as np

    absent = _absent_rows(np, cols)
    data: Dict[str, Any] = {}
    for k, v in cols.items():
        if isinstance(v, array):
            a = np.frombuffer(v, dtype=v.typecode)
            if k == "payload_lost":
                a = a.astype(bool)
            elif k in absent:
                a = pd.arrays.IntegerArray(a.copy(), absent[k])
            data[k] = a
        elif v and all(x is None or isinstance(x, bytes) for x in v):
            data[k] = pd.array(v, dtype=object)  # bytes stay bytes
        else:
            data[k] = v
    return cast("pandas.DataFrame", pd.DataFrame(data))


def _ints_or_none(v: Sequence[Any]) -> bool:
    return any(isinstance(x, int) for x in v) and all(x is None or (isinstance(x, int) and not isinstance(x, bool)) for x in v)


def _absent_rows(np: Any, cols: Dict[str, Sequence[Any]]) -> Dict[str, Any]:
    """For each integer payload column, a bool mask of the rows whose event
    has no such field (when there are any)."""
    fields = getattr(cols, "fields", None) or _catalogue_columns()
    int_cols = [k for k, v in cols.items() if k.startswith("payload.") and isinstance(v, array)]
    types = cols["event_type"]
    distinct = set(types)
    out: Dict[str, Any] = {}
    for name in distinct:
        have = fields.get(name)
        missing = [k for k in int_cols if have is not None and k not in have]
        if not missing:
            continue
        rows = np.ones(len(types), dtype=bool) if len(distinct) == 1 else np.asarray(types, dtype=object) == name
        for k in missing:
            out[k] = out[k] | rows if k in out else rows
    return out


def _signed_fields() -> Set[str]:
    return {"payload." + f for _, _, fields in CATALOGUE.values() for f, kind in fields if kind.startswith("i")}


def _catalogue_columns() -> Dict[str, List[str]]:
    return {name: ["payload." + f for f, _ in fields] for name, (_, _, fields) in CATALOGUE.items()}
