"""What the read side needs to know of the graph itself before serving it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from graph.db import Reader
from graph.profile import queries as q


async def schema_version(reader: Reader) -> int | None:
    """The newest migration applied to the graph (None: none)."""
    rows = await reader.rows(q.READY)
    version: int | None = rows[0]["version"]
    return version


@dataclass(frozen=True)
class RunStatus:
    """Segmentation runs stored, and what the latest one says of itself (for monitoring)."""

    complete: int
    failed: int
    latest: dict[str, Any] | None
    """``k``, ``n_users``, ``silhouette``, ``stability_ari`` (under resampling),
    ``ari_vs_previous``, ``users_moved``, ``new_personas`` and ``created_at_ms``; None before
    the first run."""


async def run_status(reader: Reader) -> RunStatus:
    """How many runs were published and failed, and the latest run's measures, in one read."""
    row = (await reader.rows(q.RUN_STATUS))[0]
    return RunStatus(row["complete"], row["failed"], row["latest"])
