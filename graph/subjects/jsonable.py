"""Neo4j values to plain JSON values (times as ISO 8601 strings)."""

from __future__ import annotations

from datetime import date, datetime, time, timedelta
from typing import Any

from neo4j.time import Date, DateTime, Duration, Time


def jsonable(value: Any) -> Any:
    """``value`` with every temporal value as an ISO 8601 string, recursively."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, DateTime | Date | Time):
        return value.iso_format()
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    if isinstance(value, Duration | timedelta):
        return str(value)
    return value
