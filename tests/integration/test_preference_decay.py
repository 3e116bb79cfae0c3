"""Inferred preferences decay with time, the same whichever way the events arrive: one batch,
several batches in any order (late events included), or a rebuild from the interactions."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from graph.aggregates import PREFERENCE_HALF_LIFE_DAYS, recompute_aggregates_tx
from graph.db import Graph
from graph.events import Event
from graph.ingest.writer import EventWriter
from graph.privacy import Pseudonymizer

pytestmark = pytest.mark.integration
NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)


def view(n: int, category: str, days_ago: float, cookie: str = "ck-decay") -> Event:
    return Event.model_validate({
        "event_id": f"decay-{cookie}-{n}", "type": "page_view", "source": "test",
        "occurred_at": NOW - timedelta(days=days_ago), "user": {"cookie": cookie},
        "properties": {"item_id": f"sku-{category}", "category": category}})


def weights(graph: Graph) -> dict[str, float]:
    rows = graph.rows("MATCH (:User)-[p:PREFERS {source: 'inferred'}]->(c:Category) "
                      "RETURN c.name AS c, p.weight AS w")
    return {r["c"]: r["w"] for r in rows}


def test_recent_interest_outweighs_old(graph: Graph) -> None:
    """Ten views three half-lives ago count like 1.25 views now: two fresh views win."""
    events = [view(i, "garden", 3 * PREFERENCE_HALF_LIFE_DAYS) for i in range(10)]
    events += [view(10 + i, "books", 0) for i in range(2)]
    EventWriter(graph, Pseudonymizer("k")).write(events)
    w = weights(graph)
    assert w["books"] == pytest.approx(2 / 3.25, rel=1e-6)
    assert w["garden"] == pytest.approx(1.25 / 3.25, rel=1e-6)


def test_any_batching_and_order_and_the_rebuild_agree(graph: Graph) -> None:
    rng = random.Random(5)
    events = [view(i, rng.choice(["books", "garden", "toys"]), rng.uniform(0, 120))
              for i in range(60)]
    writer = EventWriter(graph, Pseudonymizer("k"))
    writer.write(events)
    one_batch = weights(graph)
    graph.execute("MATCH (n) WHERE NOT n:Migration DETACH DELETE n")
    shuffled = events[:]
    rng.shuffle(shuffled)
    for start in range(0, 60, 7):  # newer batches first, older events arriving late
        writer.write(shuffled[start:start + 7])
    assert weights(graph) == pytest.approx(one_batch, rel=1e-9)
    [user] = graph.rows("MATCH (u:User) RETURN u.id AS id")
    graph.write(lambda tx: recompute_aggregates_tx(tx, [user["id"]]))
    assert weights(graph) == pytest.approx(one_batch, rel=1e-9)
    scores: dict[str, Any] = {r["c"]: r["s"] for r in graph.rows(
        "MATCH (:User)-[p:PREFERS {source: 'inferred'}]->(c:Category) "
        "RETURN c.name AS c, p.score AS s")}
    assert all(0 < s < 60 for s in scores.values())
