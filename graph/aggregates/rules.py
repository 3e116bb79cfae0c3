"""What a user's aggregates are, and how to rebuild them from the user's interactions.

The event writer adds each batch to the aggregates incrementally (``graph/ingest/writer.py``,
with the statements of ``queries.py``); identity resolution (``graph/identity``) moves
interactions between users and then rebuilds the aggregates of the users concerned from scratch
with ``recompute_aggregates``. Both use the definitions here, so
a merged user ends up with the aggregates it would have had if its events had been loaded as one
user: counters, first/last seen and spend on the user, ``INTERACTED`` per item (with the latest
rating of the item, if any), and inferred
``PREFERS`` with their scores (decayed with a half-life) and normalized weights.

Retention (``graph/subjects/retention.py``) deletes old interactions; ``fold_pruned`` first adds
what they contributed to the user's retained baseline (``Retained``, one per origin, see
``queries.py``), and the rebuild is that baseline plus the remaining interactions, so a merge or
an unmerge after a prune loses nothing.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from neo4j import ManagedTransaction

from graph.aggregates import queries as q
from graph.db import Statement, Work, run_work
from graph.events import EventType
from graph.recommend.queries import DROP_SIMILAR_USERS

# How much one event says about interest in its category (feeds inferred preferences).
INTEREST_SCORE: dict[EventType, float] = {
    EventType.PAGE_VIEW: 1.0,
    EventType.SEARCH: 0.5,
    EventType.ADD_TO_CART: 3.0,
    EventType.PURCHASE: 5.0,
    EventType.CHAT_MESSAGE: 1.0,
    EventType.FEEDBACK: 2.0,
}
PREFERENCE_HALF_LIFE_DAYS = 30.0
"""Inferred interest halves every 30 days: what a user did last week outweighs last year."""
DECAY_PER_MS = math.log(2) / (PREFERENCE_HALF_LIFE_DAYS * 86_400_000)
"""The exponential decay rate of inferred interest, per millisecond (``$decay_per_ms``)."""


def decayed(score: float, age_ms: float) -> float:
    """``score`` as it counts ``age_ms`` milliseconds later."""
    return score * math.exp(-DECAY_PER_MS * age_ms)


# The user counter each event type increments.
COUNTER = {
    EventType.PAGE_VIEW: "page_views",
    EventType.SEARCH: "searches",
    EventType.ADD_TO_CART: "carts",
    EventType.PURCHASE: "purchases",
    EventType.CHAT_MESSAGE: "chat_messages",
    EventType.FEEDBACK: "feedbacks",
}


def _types() -> dict[str, Any]:
    return {"view": EventType.PAGE_VIEW.value, "cart": EventType.ADD_TO_CART.value,
            "purchase": EventType.PURCHASE.value, "feedback": EventType.FEEDBACK.value}


def fold_pruned(interaction_eids: Sequence[str]) -> Work[None]:
    """Add what the interactions ``interaction_eids`` (element ids) contributed to their users'
    aggregates to those users' retained baselines, before retention deletes them in the same
    transaction (a retried batch folds once: the transaction is rolled back whole)."""
    eids = list(interaction_eids)
    if not eids:
        return
    counters = {t.value: name for t, name in COUNTER.items()}
    zero: dict[str, Any] = {"events": 0, "spend": 0.0, **dict.fromkeys(counters.values(), 0)}
    yield Statement(q.ENSURE_RETAINED, {"eids": eids, "zero": zero})
    yield Statement(q.FOLD_USER_COUNTERS, {"eids": eids, "purchase": _types()["purchase"],
                                           "counters": counters})
    yield Statement(q.FOLD_INTERACTED, {"eids": eids, **_types()})
    yield Statement(q.FOLD_INFERRED_INTEREST, {
        "eids": eids, "decay_per_ms": DECAY_PER_MS,
        "interest": {t.value: score for t, score in INTEREST_SCORE.items()}})


def recompute_aggregates(user_ids: Sequence[str]) -> Work[None]:
    """Rebuild the aggregates of ``user_ids`` (live ``User`` nodes) from their retained
    baselines (what pruned interactions contributed, ``fold_pruned``) and their interactions.

    Counters, ``first_seen``/``last_seen`` (kept as they are for a user without interactions)
    and ``spend`` on the user; ``INTERACTED`` per item (stale ones deleted), and the buyer
    and unit counters of those items; inferred
    ``PREFERS`` per category, then their weights normalized as the writer does. The users'
    stored similar users, derived from the old ``INTERACTED``, are dropped (found per request
    until the next segmentation run).
    """
    ids = sorted(set(user_ids))
    if not ids:
        return
    types = _types()
    yield Statement(q.RECOMPUTE_USER_COUNTERS, {
        "user_ids": ids, "purchase": types["purchase"],
        "counters": {t.value: name for t, name in COUNTER.items()}})
    before = yield Statement(q.ITEMS_OF_USERS, {"user_ids": ids})
    yield Statement(q.DELETE_STALE_INTERACTED, {"user_ids": ids})
    yield Statement(q.RECOMPUTE_INTERACTED, {"user_ids": ids, **types})
    after = yield Statement(q.ITEMS_OF_USERS, {"user_ids": ids})
    items = {i for rows in (before, after) for row in rows for i in row["item_ids"]}
    yield Statement(q.REFRESH_ITEM_COUNTERS, {"item_ids": sorted(items)})
    yield Statement(q.DELETE_STALE_INFERRED_PREFERENCES, {"user_ids": ids})
    yield Statement(q.RECOMPUTE_INFERRED_PREFERENCES, {
        "user_ids": ids, "decay_per_ms": DECAY_PER_MS,
        "interest": {t.value: score for t, score in INTEREST_SCORE.items()}})
    yield Statement(q.NORMALIZE_INFERRED_PREFERENCES, {"user_ids": ids,
                                                       "decay_per_ms": DECAY_PER_MS})
    yield Statement(DROP_SIMILAR_USERS, {"user_ids": ids})


def recompute_aggregates_tx(tx: ManagedTransaction, user_ids: Sequence[str]) -> None:
    """``recompute_aggregates`` inside the caller's synchronous transaction."""
    run_work(tx, recompute_aggregates(user_ids))
