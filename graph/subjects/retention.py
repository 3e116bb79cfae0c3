"""Retention: raw interactions older than the configured age are pruned, aggregates stay.

What goes: ``Interaction`` nodes older than the cutoff, sessions that ended before it and hold
no interaction any more, and dead letters older than it. What stays: the user's counters,
``INTERACTED`` aggregates, ``PREFERS`` (inferred and explicit), segment memberships and persona
history, which were computed from the interactions when they arrived. What the pruned
interactions contributed is folded into the user's retained baseline in the transaction that
deletes them (``graph.aggregates.fold_pruned``), so aggregates rebuilt later (after a merge or
an unmerge) still count them.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from typing import Any

from neo4j import ManagedTransaction

from graph.aggregates import fold_pruned
from graph.db import Graph, Statement, Work
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


def _prune_interaction_batch(cutoff_ms: int, batch_size: int) -> Work[int]:
    """One batch of old interactions folded into their users' baselines, then deleted."""
    found = yield Statement(q.OLD_INTERACTIONS_BATCH, {"cutoff": cutoff_ms, "limit": batch_size})
    eids = list(found[0]["eids"]) if found else []
    if not eids:
        return 0
    yield from fold_pruned(eids)
    deleted = yield Statement(q.DELETE_INTERACTIONS, {"eids": eids})
    return int(deleted[0]["n"]) if deleted else 0


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
    interactions = 0
    while True:
        n = graph.write_work(lambda: _prune_interaction_batch(cutoff_ms, batch_size))
        interactions += n
        if n < batch_size:
            break
    sessions = _delete_in_batches(graph, q.PRUNE_EMPTY_SESSIONS_BATCH, cutoff_ms, batch_size)
    dead_letters = _delete_in_batches(graph, q.PRUNE_DEAD_LETTERS_BATCH, cutoff_ms, batch_size)
    log.info("retention (%s): pruned %d interactions, %d empty sessions, %d dead letters",
             older_than, interactions, sessions, dead_letters)
    return interactions
