"""`asOf` preferences on a long history, against the real graph: the bounded rebuild (newest
interactions within the decay horizon, at most a cap of them) answers what the rebuild over the
whole history answers, and the statement reads no more than the cap (an ordered seek of the
index on the owner's id and time, migrations/0015) whatever the history."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any, LiteralString

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from graph.aggregates import DECAY_PER_MS
from graph.auth import Role, create_key
from graph.db import Graph
from graph.profile import queries as q
from graph.profile.users import AS_OF_HORIZON_MS, INTEREST
from graph.settings import Settings

pytestmark = pytest.mark.integration
AS_OF = datetime(2026, 11, 1, tzinfo=UTC)
YEARS = 3

# One user's history: an interaction every `$step_h` hours for YEARS years before AS_OF, types
# and categories in turn (the mix drifts, so shares differ by category), feedback every tenth.
HISTORY = """
CREATE (u:User {id: 'long'})
WITH u
UNWIND range(1, $n) AS k
WITH u, k, ['page_view', 'search', 'add_to_cart', 'purchase', 'feedback'] AS types
CREATE (u)-[:PERFORMED]->(:Interaction {
  user_id: 'long', event_id: 'e' + k, at: $as_of - duration({hours: k * $step_h}),
  type: CASE WHEN k % 10 = 0 THEN 'feedback' ELSE types[k % 4] END,
  category: ['books', 'garden', 'music', 'toys'][(k / 7 + k % 3) % 4],
  rating: CASE WHEN k % 10 = 0 THEN 1 + (k / 10) % 5 END})
"""

# The rebuild over the whole history, as it was before the bounds: the reference.
UNBOUNDED_INFERRED = """
MATCH (:User {id: $id})-[:PERFORMED]->(i:Interaction)
WHERE i.at <= $as_of AND coalesce(i.recorded_at, i.at) <= $as_of AND i.category IS NOT NULL
WITH collect(i) AS its, max(i.at).epochMillis AS ref
UNWIND its AS i
WITH i.category AS category, max(i.at) AS updated_at,
     sum($scores[i.type] * exp(-$decay_per_ms * (ref - i.at.epochMillis))) AS score
WITH collect({category: category, score: score, updated_at: updated_at}) AS rows,
     sum(score) AS total
UNWIND rows AS r
RETURN r.category AS category, r.score / total AS weight
ORDER BY weight DESC, category
"""

UNBOUNDED_EXPLICIT = """
MATCH (:User {id: $id})-[:PERFORMED]->(i:Interaction {type: 'feedback'})
WHERE i.at <= $as_of AND coalesce(i.recorded_at, i.at) <= $as_of
  AND i.category IS NOT NULL AND i.rating IS NOT NULL
WITH i.category AS category, i ORDER BY i.at DESC
WITH category, head(collect(i)) AS last
RETURN category, (last.rating - 3) / 2.0 AS weight
ORDER BY weight DESC, category
"""

PREFERENCES = """query($at: DateTime) { user(id: "long", asOf: $at) {
    preferences(first: 20) { category weight source } } }"""


@pytest.fixture
def client(graph: Graph, settings: Settings) -> Iterator[tuple[TestClient, str]]:
    key = create_key(graph, Role.READER, "as-of").key
    with TestClient(create_app(settings)) as c:
        yield c, key


def history(graph: Graph, step_h: int) -> int:
    n = YEARS * 365 * 24 // step_h
    graph.execute(HISTORY, n=n, step_h=step_h, as_of=AS_OF)
    return n


def test_a_long_history_gives_the_unbounded_answer(
        graph: Graph, client: tuple[TestClient, str]) -> None:
    # Three years, one interaction every 18 hours: the horizon (about 600 days) leaves out the
    # oldest third, the cap (2,000) nothing.
    assert AS_OF_HORIZON_MS < YEARS * 365 * 86_400_000
    history(graph, step_h=18)
    c, key = client
    body = c.post("/graphql", json={"query": PREFERENCES, "variables": {"at": AS_OF.isoformat()}},
                  headers={"Authorization": f"Bearer {key}"}).json()
    assert "errors" not in body, body
    served = body["data"]["user"]["preferences"]
    params: dict[str, Any] = {"id": "long", "as_of": AS_OF}
    explicit = graph.rows(UNBOUNDED_EXPLICIT, **params)
    inferred = graph.rows(UNBOUNDED_INFERRED, scores=INTEREST, decay_per_ms=DECAY_PER_MS,
                          **params)
    assert len(explicit) == len(inferred) == 4
    expected = ([("explicit", r["category"], r["weight"]) for r in explicit]
                + [("inferred", r["category"], r["weight"]) for r in inferred])
    assert [(p["source"], p["category"]) for p in served] == [e[:2] for e in expected]
    for p, (_, _, weight) in zip(served, expected, strict=True):
        assert p["weight"] == pytest.approx(weight, abs=1e-6), (p, weight)


@pytest.mark.parametrize("query", [q.INFERRED_PREFERENCES_AS_OF, q.EXPLICIT_PREFERENCES_AS_OF])
def test_the_rebuild_reads_at_most_the_cap(graph: Graph, query: LiteralString) -> None:
    n = history(graph, step_h=6)
    cap = 50
    with graph.driver.session(database=graph.database) as session:
        result = session.run("PROFILE " + query, id="long", as_of=AS_OF, scores=INTEREST,
                             decay_per_ms=DECAY_PER_MS, max_interactions=cap,
                             horizon_ms=AS_OF_HORIZON_MS)
        rows = list(result)
        profile = result.consume().profile
    assert profile is not None
    assert rows and n > 4000
    # The newest `cap` interactions (and the next one, which ends the ordered seek) come from
    # the index; no operator sees more.
    rows_of = all_rows(profile)
    assert any(op.startswith("NodeIndexSeek") for op, _ in rows_of), rows_of
    assert max(n for _, n in rows_of) <= cap + 1, str(rows_of)


def all_rows(plan: dict[str, Any]) -> list[tuple[str, int]]:
    """Every operator of ``plan`` with the rows it produced."""
    return [(plan["operatorType"].split("@")[0], int(plan.get("rows", 0))),
            *(r for child in plan.get("children", []) for r in all_rows(child))]
