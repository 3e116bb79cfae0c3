"""What the read side needs to know of the graph itself before serving it."""

from __future__ import annotations

from graph.db import Reader
from graph.profile import queries as q


async def schema_version(reader: Reader) -> int | None:
    """The newest migration applied to the graph (None: none)."""
    rows = await reader.rows(q.READY)
    version: int | None = rows[0]["version"]
    return version
