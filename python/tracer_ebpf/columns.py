"""Columns: a batch of events column by column."""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence


class Columns(Dict[str, Sequence[Any]]):
    """A batch of events column by column (see ``Tracer.poll_columns``):
    column name -> one value per event. ``fields`` maps each event name to
    its payload columns (the others hold 0 or None for its rows)."""

    def __init__(self, columns: Dict[str, Sequence[Any]], fields: Optional[Dict[str, List[str]]] = None) -> None:
        super().__init__(columns)
        self.fields: Dict[str, List[str]] = dict(fields or {})
