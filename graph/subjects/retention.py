"""Retention: raw interactions older than the configured age are pruned, aggregates stay.

What goes: ``Interaction`` nodes older than the cutoff, sessions that ended before it and hold
no interaction any more, and dead letters older than it. What stays: the user's counters,
``INTERACTED`` aggregates, ``PREFERS`` (inferred and explicit), segment memberships and persona
history, which were computed from the interactions when they arrived.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from typing import Any

from neo4j import ManagedTransaction

from graph.db import Graph
from graph.errors import InvalidInput
from graph.subjects import queries as q

log = logging.getLogger(__name__)

PRUNE_BATCH = 10_000


def _delete_in_batches(graph: Graph, query: Any, cutoff_ms: int, batch_size: int) -> int:
    """Run a ``... LIMIT $limit DETACH DELETE ... RETURN count(*) AS n`` statement, one managed
    transaction per batch, until a batch comes back short."""
    def batch(tx: ManagedTransaction) -> int:
        record = tx.run(query, cutoff=cutoff_ms, limit=batch_size).single()
        return int(record["n"]) if record is not None else 0

    total = 0
    while True:
        n = graph.write(batch)
        total += n
        if n < batch_size:
            return total


def prune_interactions(graph: Graph, older_than: timedelta, *, now: datetime | None = None,
                       batch_size: int = PRUNE_BATCH) -> int:
    """Delete raw interactions older than ``older_than`` (and the sessions and dead letters
    that leaves behind) in batches; returns the number of interactions deleted. Idempotent."""
    if older_than <= timedelta(0):
        raise InvalidInput("the retention age must be positive")
    if batch_size < 1:
        raise InvalidInput("the batch size must be at least 1")
    now = now or datetime.now(UTC)
    cutoff_ms = int((now - older_than).timestamp() * 1000)
    interactions = _delete_in_batches(graph, q.PRUNE_INTERACTIONS_BATCH, cutoff_ms, batch_size)
    sessions = _delete_in_batches(graph, q.PRUNE_EMPTY_SESSIONS_BATCH, cutoff_ms, batch_size)
    dead_letters = _delete_in_batches(graph, q.PRUNE_DEAD_LETTERS_BATCH, cutoff_ms, batch_size)
    log.info("retention (%s): pruned %d interactions, %d empty sessions, %d dead letters",
             older_than, interactions, sessions, dead_letters)
    return interactions
