"""Retention and identity together, against the real Neo4j: a merge or an unmerge after raw
interactions were pruned leaves the users the aggregates they would have had unpruned."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from neo4j import Driver

from graph.aggregates.rules import DECAY_PER_MS
from graph.db import Graph
from graph.events import Event
from graph.identity import merge_users, unmerge
from graph.settings import Settings
from graph.subjects import forget_user, prune_interactions
from graph.subjects.export import export_user
from tests.helpers import empty_graph
from tests.integration.test_identity import A_IDS, B_IDS, A, B, ev, write
from tests.integration.test_identity import a_events as identity_a_events
from tests.integration.test_identity import b_events as identity_b_events

pytestmark = pytest.mark.integration

COUNTERS = ("events", "page_views", "searches", "carts", "purchases", "chat_messages",
            "feedbacks", "spend", "first_seen", "last_seen")


def a_events(user: dict[str, str] = A_IDS) -> list[Event]:
    """test_identity's events of A, with an early rating of an item."""
    return [*identity_a_events(user),
            ev("a4", user, "2026-10-01T11:00:00Z", "feedback",
               properties={"item_id": "sku-1", "category": "Books", "rating": 4})]


def b_events(user: dict[str, str] = B_IDS) -> list[Event]:
    """test_identity's events of B, with a later rating of A's item."""
    return [*identity_b_events(user),
            ev("b6", user, "2026-10-03T08:06:00Z", "feedback",
               properties={"item_id": "sku-1", "category": "Books", "rating": 2})]


REFERENCE = datetime(2026, 11, 1, tzinfo=UTC)
"""Inferred scores are compared decayed to this one time."""


def aggregates(graph: Graph, uid: str) -> dict[tuple[Any, ...], Any]:
    """A user's aggregates, flat: counters, first/last seen and spend; ``INTERACTED`` per item;
    inferred ``PREFERS`` per category (score decayed to ``REFERENCE``, weight)."""
    out: dict[tuple[Any, ...], Any] = {}
    user = graph.rows("MATCH (u:User {id: $id}) RETURN properties(u) AS p", id=uid)
    assert len(user) == 1, uid
    for key in COUNTERS:
        out[("user", key)] = user[0]["p"].get(key)
    for r in graph.rows("MATCH (:User {id: $id})-[r:INTERACTED]->(it:Item) "
                        "RETURN it.id AS item, properties(r) AS p", id=uid):
        for key, value in r["p"].items():
            out[("interacted", r["item"], key)] = value
    ref_ms = REFERENCE.timestamp() * 1000
    for r in graph.rows("MATCH (:User {id: $id})-[p:PREFERS {source: 'inferred'}]->(c) "
                        "RETURN c.name AS category, p.score AS score, p.weight AS weight, "
                        "p.updated_at.epochMillis AS at", id=uid):
        out[("prefers", r["category"], "score")] = (
            r["score"] * math.exp(-DECAY_PER_MS * (ref_ms - r["at"])))
        out[("prefers", r["category"], "weight")] = r["weight"]
    return {k: v.iso_format() if hasattr(v, "iso_format") else v for k, v in out.items()}


def assert_same(got: dict[tuple[Any, ...], Any], want: dict[tuple[Any, ...], Any]) -> None:
    """Equal keys and values, floats to 1e-9; the differences listed when not."""
    def same(a: Any, b: Any) -> bool:
        if isinstance(b, float) and isinstance(a, float):
            return bool(a == pytest.approx(b, rel=1e-9, abs=1e-9))
        return bool(a == b)

    diff = sorted(((k, got.get(k), want.get(k)) for k in set(got) | set(want)
                   if k not in got or k not in want or not same(got[k], want[k])), key=repr)
    assert diff == [], "(key, got, want)"


def prune_before(graph: Graph, cutoff: str) -> int:
    """Prune every interaction before ``cutoff`` (retention of one day, ``now`` a day later)."""
    at = datetime.fromisoformat(cutoff)
    return prune_interactions(graph, timedelta(days=1), now=at + timedelta(days=1),
                              batch_size=2)


def references(driver: Driver, settings: Settings) -> dict[str, dict[tuple[Any, ...], Any]]:
    """A's and B's aggregates loaded apart, and A's loaded as one user with B, unpruned."""
    graph = empty_graph(driver, settings)
    write(graph, a_events(), b_events())
    apart = {A: aggregates(graph, A), B: aggregates(graph, B)}
    graph = empty_graph(driver, settings)
    write(graph, a_events(), b_events({**A_IDS, **B_IDS}))
    return {**apart, "AB": aggregates(graph, A)}


# A's purchase and view pruned; then every event before B's search.
EARLY, LATE = "2026-10-01T12:00:00+00:00", "2026-10-03T08:03:30+00:00"


@pytest.mark.parametrize("cutoff", [EARLY, LATE])
def test_a_merge_after_pruning_keeps_the_pruned_history(driver: Driver, settings: Settings,
                                                        cutoff: str) -> None:
    want = references(driver, settings)
    # The later rating of the item wins, in the merged user too.
    assert [want[u][("interacted", "sku-1", "rating")] for u in (A, B, "AB")] == [4, 2, 2]
    graph = empty_graph(driver, settings)
    write(graph, a_events(), b_events())
    assert prune_before(graph, cutoff) == (3 if cutoff == EARLY else 7)
    assert_same(aggregates(graph, A), want[A])
    assert_same(aggregates(graph, B), want[B])
    merge_id = merge_users(graph, A, B, source="test", reason="same person")
    assert_same(aggregates(graph, A), want["AB"])
    survivor, merged = unmerge(graph, merge_id)
    assert (survivor, merged) == (A, B)
    assert_same(aggregates(graph, A), want[A])
    assert_same(aggregates(graph, B), want[B])


def test_pruning_a_merged_users_events_keeps_their_origin(driver: Driver,
                                                          settings: Settings) -> None:
    """Events moved by a merge and pruned afterwards go back with the unmerge."""
    want = references(driver, settings)
    graph = empty_graph(driver, settings)
    write(graph, a_events(), b_events())
    assert prune_before(graph, EARLY) == 3
    merge_id = merge_users(graph, A, B, source="test", reason="same person")
    assert prune_before(graph, LATE) == 4
    assert graph.rows("MATCH (i:Interaction) RETURN count(i) AS n") == [{"n": 3}]
    assert_same(aggregates(graph, A), want["AB"])
    unmerge(graph, merge_id)
    assert_same(aggregates(graph, A), want[A])
    assert_same(aggregates(graph, B), want[B])
    merge_users(graph, A, B, source="test", reason="same person again")
    assert_same(aggregates(graph, A), want["AB"])


def test_erasure_deletes_the_pruned_history(driver: Driver, settings: Settings) -> None:
    graph = empty_graph(driver, settings)
    write(graph, a_events(), b_events())
    prune_before(graph, LATE)
    merge_users(graph, A, B, source="test", reason="same person")
    held = graph.rows("MATCH (n:Retained) RETURN count(n) AS n")[0]["n"]
    assert held == 2
    report = forget_user(graph, A)
    assert report.counts["other_nodes"] >= held
    assert graph.rows("MATCH (n:Retained) RETURN count(n) AS n") == [{"n": 0}]
    assert graph.rows("MATCH ()-[r:RETAINED|RETAINED_ITEM|RETAINED_INTEREST]->() "
                      "RETURN count(r) AS n") == [{"n": 0}]


def test_export_lists_the_retained_baseline_as_such(driver: Driver, settings: Settings) -> None:
    """Pruned history is the user's data still: `exportUser` lists each retained baseline
    (per origin) with the counters, items and interests it holds, not as an unnamed other
    relationship; with the raw interactions left it accounts for every event counted."""
    graph = empty_graph(driver, settings)
    write(graph, a_events(), b_events())
    pruned = prune_before(graph, LATE)
    merge_users(graph, A, B, source="test", reason="same person")
    data = export_user(graph, A)
    assert data["other"] == []
    retained = data["retained"]
    assert len(retained) == 2 and sorted(len(r["merges"]) for r in retained) == [0, 1]
    assert sum(r["counters"]["events"] for r in retained) == pruned
    assert pruned + len(data["interactions"]) == data["profile"]["events"]
    assert {i["item_id"] for r in retained for i in r["items"]} == {"sku-1", "sku-2", "sku-3"}
    assert all(i["aggregate"]["views"] >= 0 for r in retained for i in r["items"])
    assert {c["category"] for r in retained for c in r["interests"]} >= {"books"}
