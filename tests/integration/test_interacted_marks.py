"""The marks every writer keeps on ``INTERACTED`` (migrations/0016): the owner's id (``user_id``)
and ``bought_or_liked``, which the recommender's similar users are read by. After each kind of
write (the event writer, retention, merges, unmerges, erasure, the migration's backfill) they
equal a fresh computation of the rule from the aggregate's own properties; the bulk import's
are compared property by property with the event writer's (test_bulk_import.py)."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from neo4j import Driver

from graph.db import Graph
from graph.identity import merge_users, unmerge
from graph.migrate import split_statements
from graph.settings import Settings
from graph.subjects import forget_user
from tests.helpers import empty_graph
from tests.integration.test_identity import A_IDS, B_IDS, A, B, ev, write
from tests.integration.test_retention_merge import EARLY, LATE, a_events, b_events, prune_before

pytestmark = pytest.mark.integration

# The rule the mark stands for, from the aggregate's properties (the one RECOMMEND_FOR_USER
# applied before the mark): every INTERACTED whose mark or owner id differs from it.
MARKS_OFF = """
MATCH (u:User)-[r:INTERACTED]->(it:Item)
WITH u, r, it, (coalesce(r.purchases, 0) > 0 OR coalesce(r.rating, 0) >= 4)
               AND coalesce(r.rating, 3) > 2 AS rule
WHERE r.user_id IS NULL OR r.user_id <> u.id OR r.bought_or_liked IS NULL
   OR r.bought_or_liked <> rule
RETURN u.id AS user, it.id AS item, r.user_id AS owner, r.bought_or_liked AS mark, rule
"""
MARKS = """
MATCH (u:User)-[r:INTERACTED]->(it:Item)
RETURN u.id AS user, it.id AS item, r.bought_or_liked AS mark ORDER BY user, item
"""


def marks(graph: Graph) -> dict[tuple[str, str], bool]:
    """Each aggregate's mark, checked against the rule first."""
    assert graph.rows(MARKS_OFF) == []
    return {(r["user"], r["item"]): r["mark"] for r in graph.rows(MARKS)}


def more_events() -> list:
    """Each case of the rule on items of their own: liked without buying, bought then rated 2,
    rated 3 only, carted only, bought and not rated; and B liking then disliking."""
    def rating(i: str, user: dict[str, str], at: str, item: str, value: int):  # noqa: ANN202
        return ev(i, user, at, "feedback", properties={"item_id": item, "category": "Books",
                                                     "rating": value})

    def purchase(i: str, user: dict[str, str], at: str, item: str):  # noqa: ANN202
        return ev(i, user, at, "purchase", properties={"item_id": item, "category": "Books",
                                                       "price": "5.00"})

    return [rating("m1", A_IDS, "2026-10-01T09:00:00Z", "liked", 5),
            purchase("m2", A_IDS, "2026-10-01T09:01:00Z", "disliked"),
            rating("m3", A_IDS, "2026-10-03T09:02:00Z", "disliked", 2),
            rating("m4", A_IDS, "2026-10-03T09:03:00Z", "so-so", 3),
            ev("m5", A_IDS, "2026-10-03T09:04:00Z", "add_to_cart",
               properties={"item_id": "carted", "category": "Books"}),
            purchase("m6", B_IDS, "2026-10-01T09:05:00Z", "bought"),
            rating("m7", B_IDS, "2026-10-01T09:06:00Z", "turned", 5),
            rating("m8", B_IDS, "2026-10-03T09:07:00Z", "turned", 1)]


def test_every_writer_keeps_the_mark(driver: Driver, settings: Settings) -> None:
    graph = empty_graph(driver, settings)
    write(graph, a_events(), b_events(), more_events())
    apart = marks(graph)
    assert {k[1]: v for k, v in apart.items() if k[0] == A and k[1] in (
        "liked", "disliked", "so-so", "carted")} == {
        "liked": True, "disliked": False, "so-so": False, "carted": False}
    assert apart[(B, "bought")] is True and apart[(B, "turned")] is False
    # The later rating of sku-1 (B's 2) hides A's purchase once they are one user.
    assert apart[(A, "sku-1")] is True

    assert prune_before(graph, EARLY) > 0
    assert marks(graph) == apart
    merge_id = merge_users(graph, A, B, source="test", reason="same person")
    merged = marks(graph)
    assert merged[(A, "sku-1")] is False and merged[(A, "bought")] is True
    assert not any(user == B for user, _ in merged)
    assert unmerge(graph, merge_id) == (A, B)
    assert marks(graph) == apart
    assert prune_before(graph, LATE) > 0
    merge_users(graph, A, B, source="test", reason="same person again")
    assert marks(graph) == merged
    forget_user(graph, A)
    assert not any(user == A for user, _ in marks(graph))


def test_the_migration_backfills_the_marks(driver: Driver, settings: Settings) -> None:
    """Aggregates written before 0016 (no marks, or wrong ones) get them; a second run changes
    nothing."""
    graph = empty_graph(driver, settings)
    write(graph, a_events(), b_events(), more_events())
    want = marks(graph)
    graph.execute("MATCH ()-[r:INTERACTED]->() REMOVE r.user_id, r.bought_or_liked")
    graph.execute("MATCH (:User {id: $id})-[r:INTERACTED]->(:Item {id: 'liked'}) "
                  "SET r.bought_or_liked = false, r.user_id = 'someone else'", id=A)
    assert len(graph.rows(MARKS_OFF)) == len(want)
    migration = next(settings.migrations_dir.glob("0016_*.cypher"))
    for statement in split_statements(migration.read_text()):
        graph.auto_commit(statement)  # type: ignore[arg-type]
    assert marks(graph) == want
    again = graph.auto_commit(split_statements(migration.read_text())[-1])  # type: ignore[arg-type]
    assert again.counters.properties_set == 0


def test_a_late_rating_moves_the_mark_both_ways(driver: Driver, settings: Settings) -> None:
    """The event writer compares a batch's rating with the stored one's time: an older rating
    arriving late leaves the mark as the newer one set it."""
    graph = empty_graph(driver, settings)
    at = datetime.fromisoformat("2026-10-05T10:00:00+00:00")

    def rated(i: str, when: datetime, value: int):  # noqa: ANN202
        return ev(i, A_IDS, when.isoformat(), "feedback",
                  properties={"item_id": "late", "category": "Books", "rating": value})

    write(graph, [rated("l1", at, 5)])
    assert marks(graph) == {(A, "late"): True}
    write(graph, [rated("l2", at - timedelta(hours=1), 1)])  # older: the 5 stands
    assert marks(graph) == {(A, "late"): True}
    write(graph, [rated("l3", at + timedelta(hours=1), 2)])
    assert marks(graph) == {(A, "late"): False}
