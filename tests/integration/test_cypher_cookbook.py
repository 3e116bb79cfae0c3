"""Every query of docs/cypher-cookbook.md runs on the demo data, with the parameters its `:param`
lines give, and answers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from neo4j import ManagedTransaction
from neo4j.graph import Path as GraphPath

from graph.db import Graph
from graph.segments.run import run_segmentation
from graph.settings import Settings
from tests.docs import Recipe, cookbook
from tests.helpers import load_demo

pytestmark = pytest.mark.integration
DEMO_KEY = Settings().pseudonym_key.get_secret_value()
DEMO_USER = "u_df274c9e684b56cdd53a"  # the README's user, whom the cookbook's :param lines name

# Queries allowed to answer with no rows on the demo data, each with the reason. None today:
# the fixture below makes two runs that disagree, so "changed persona" has rows too.
MAY_BE_EMPTY: dict[str, str] = {}

PICTURE = "A user's neighbourhood, as a picture"
PICTURED_LABELS = {"User", "Persona", "Segment", "SegmentationRun", "Item", "Category",
                   "Location", "Interaction", "Session"}


@pytest.fixture
def cookbook_graph(graph: Graph, tmp_path: Path, settings: Settings) -> Graph:
    """The README's demo population (seed 42, demo pseudonym key) with context and two runs.

    The first run is held to k=3, which merges two planted groups; the second chooses k itself
    (4) and splits them again, so some users change persona between the two, and the latest run
    has the demo's four personas, which the cookbook's :param lines name.
    """
    load_demo(graph, tmp_path, 80, seed=42, key=DEMO_KEY)
    run_segmentation(graph, n_clusters=3, runs_dir=settings.resolved_runs_dir)
    latest = run_segmentation(graph, runs_dir=settings.resolved_runs_dir)
    assert latest.n_segments == 4 and latest.agreement["users_moved"], latest.agreement
    return graph


def parameters(graph: Graph, recipe: Recipe) -> dict[str, Any]:
    """The values Neo4j Browser would set: the right of `=>`, evaluated as `RETURN <expr>`."""
    return {name: graph.rows(f"RETURN {expr} AS value")[0]["value"]
            for name, expr in recipe.params.items()}


def pictured_labels(graph: Graph, recipe: Recipe) -> set[str]:
    """The labels of the nodes on the paths a query returns, as the graph view would draw them."""
    params = parameters(graph, recipe)

    def labels(tx: ManagedTransaction) -> set[str]:
        found: set[str] = set()
        for record in tx.run(recipe.cypher, params):
            for value in record.values():
                for path in value if isinstance(value, list) else [value]:
                    if isinstance(path, GraphPath):
                        found.update(label for node in path.nodes for label in node.labels)
        return found

    return graph.read(labels)


def test_every_cookbook_query_answers_on_the_demo_data(cookbook_graph: Graph) -> None:
    recipes = cookbook()
    titles = {r.title for r in recipes}
    assert set(MAY_BE_EMPTY) <= titles, f"stale exceptions: {set(MAY_BE_EMPTY) - titles}"
    results: dict[str, list[dict[str, Any]]] = {}
    failures: list[str] = []
    for recipe in recipes:
        try:
            # A read transaction, so a query that writes fails here as well.
            rows = cookbook_graph.rows(recipe.cypher,
                                       **parameters(cookbook_graph, recipe))
        except Exception as exc:  # noqa: BLE001 - report every broken query at once
            failures.append(f"{recipe.title!r} failed: {exc}")
            continue
        results[recipe.title] = rows
        if not rows and recipe.title not in MAY_BE_EMPTY:
            failures.append(f"{recipe.title!r} answered no rows on the demo data")
    assert not failures, "\n".join(failures)

    # A few answers checked against what the demo data is known to hold.
    personas = results["Personas of the latest run, with sizes"]
    assert len(personas) == 4 and sum(p["users"] for p in personas) == 80
    assert {"Frequent Shoppers", "Bargain Hunters"} <= {p["persona"] for p in personas}
    moves = results["Users who changed persona between the last two runs"]
    latest_moved = cookbook_graph.rows(
        "MATCH (r:SegmentationRun) RETURN r.users_moved AS moved "
        "ORDER BY r.created_at DESC LIMIT 1")[0]["moved"]
    assert sum(m["users"] for m in moves) == latest_moved > 0
    history = results["A user's persona history"]
    assert history and history[-1]["current"] and sum(h["current"] for h in history) == 1
    found = results["A user from a plain identifier"]
    assert [f["user"] for f in found] == [DEMO_USER]
    identifiers = results["Identifiers of a user"]
    assert {"crm_id", "email", "cookie"} <= {i["kind"] for i in identifiers}
    assert all(len(i["hash"]) == 64 for i in identifiers)
    hierarchy = results["The segment hierarchy of a run"]
    assert hierarchy[0]["level"] > 0 and hierarchy[-1]["level"] == 0
    assert sum(h["users"] for h in hierarchy if h["level"] == 0) == 80
    # The picture shows every label the Browser style (docs/persona-graph.grass) is made for.
    picture = next(r for r in recipes if r.title == PICTURE)
    assert pictured_labels(cookbook_graph, picture) >= PICTURED_LABELS
