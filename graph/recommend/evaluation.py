"""Offline evaluation of recommendations: leave-last-purchase-out split and ranking metrics.

Pure functions over event dicts (the JSON envelope of ``graph.events``), used by
`make bench-recommend`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

UserKey = tuple[tuple[str, str], ...]
T = TypeVar("T")


@dataclass(frozen=True)
class HeldOut:
    """A user's last purchase, kept back from the graph to be predicted."""

    user: dict[str, str]
    item_id: str
    at: datetime
    group: str | None


def user_key(event: dict[str, Any]) -> UserKey:
    """Events of one user carry the same identifiers."""
    return tuple(sorted(event["user"].items()))


def split_last_purchase(
    events: Iterable[dict[str, Any]],
) -> tuple[list[dict[str, Any]], dict[UserKey, HeldOut]]:
    """Hold out each user's last purchase (by ``occurred_at``) with everything the user did at
    or after it, so nothing after the moment of prediction leaks into the graph.

    Returns the events to load, in their original order, and the held-out purchase per user
    (users who never bought are kept whole and have none).
    """
    events = list(events)
    at = [datetime.fromisoformat(e["occurred_at"]) for e in events]
    last: dict[UserKey, int] = {}
    groups: dict[UserKey, str] = {}
    for i, event in enumerate(events):
        key = user_key(event)
        group = (event.get("profile") or {}).get("demo_group")
        if group is not None:
            groups.setdefault(key, group)
        if event["type"] == "purchase" and (key not in last or at[i] >= at[last[key]]):
            last[key] = i
    held = {key: HeldOut(dict(events[i]["user"]), events[i]["properties"]["item_id"], at[i],
                         groups.get(key)) for key, i in last.items()}
    kept = [e for e, t in zip(events, at, strict=True)
            if (h := held.get(user_key(e))) is None or t < h.at]
    return kept, held


def rank_of(item_id: T, ranked: Sequence[T]) -> int | None:
    """1-based position of ``item_id`` in ``ranked``, or None when absent."""
    try:
        return ranked.index(item_id) + 1
    except ValueError:
        return None


def hit_at(rank: int | None, k: int) -> float:
    """1.0 when the held-out item is among the first ``k``."""
    return 1.0 if rank is not None and rank <= k else 0.0


def ndcg_at(rank: int | None, k: int) -> float:
    """NDCG@k with one relevant item: 1 / log2(rank + 1) within the first ``k``, else 0."""
    return 1.0 / math.log2(rank + 1) if rank is not None and rank <= k else 0.0


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0..100) by linear interpolation between closest ranks."""
    if not values:
        raise ValueError("percentile of no values")
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100
    lo = math.floor(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def hit_rate_ndcg(ranked_and_held: Iterable[tuple[Sequence[T], T]], k: int = 10,
                  ) -> tuple[float, float]:
    """Mean hit-rate@k and NDCG@k over ``(ranked list, held-out item)`` pairs (one per user);
    (0.0, 0.0) for no pairs."""
    hits, gains = [], []
    for ranked, held in ranked_and_held:
        rank = rank_of(held, ranked)
        hits.append(hit_at(rank, k))
        gains.append(ndcg_at(rank, k))
    if not hits:
        return 0.0, 0.0
    return sum(hits) / len(hits), sum(gains) / len(gains)
