"""Helpers shared by the tests."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, LiteralString

from neo4j import Driver

from graph import situation
from graph.db import Graph, wipe
from graph.ingest.files import ingest_file
from graph.ingest.tally import Tally
from graph.ingest.writer import Assigner, EventWriter
from graph.migrate import migrate, split_statements
from graph.privacy import Pseudonymizer
from graph.settings import Settings
from personas.demo import DemoPopulation
from tests.pii import record_graph_leaks

PERSONAS = str(Path(sys.executable).parent / "personas")
"""The `personas` console script of the virtual environment running the tests."""
METRICS_TOKEN = "test-metrics-token"
"""PERSONAS_METRICS_TOKEN of the test settings: in-process clients are not on loopback."""


def scrape(client: Any) -> str:
    """What Prometheus reads from `/metrics` of an in-process app (a ``TestClient``)."""
    response = client.get("/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"})
    assert response.status_code == 200, response.text
    return str(response.text)


def graph_counts(graph: Graph) -> dict[str, int]:
    """Nodes per label and relationships per type, for before/after comparisons."""
    nodes = graph.rows("MATCH (n) RETURN labels(n)[0] AS k, count(*) AS c")
    rels = graph.rows("MATCH ()-[r]->() RETURN type(r) AS k, count(*) AS c")
    return {**{f"node:{r['k']}": r["c"] for r in nodes}, **{f"rel:{r['k']}": r["c"] for r in rels}}


def db_hits(graph: Graph, query: LiteralString, **params: Any) -> tuple[int, list[Any]]:
    """The database hits of one run of ``query`` (PROFILE), and its rows: Neo4j's work for a
    query, the same however busy the machine is."""
    def total(plan: dict[str, Any]) -> int:
        return int(plan.get("dbHits", 0)) + sum(total(c) for c in plan.get("children", []))

    with graph.driver.session(database=graph.database) as session:
        result = session.run("PROFILE " + query, params)
        rows = list(result)
        summary = result.consume()
    assert summary.profile is not None
    return total(summary.profile), rows


def mark_interacted(graph: Graph) -> None:
    """Give ``INTERACTED`` written by hand in a test what every writer of them keeps (their
    owner's id and ``bought_or_liked``): migration 0016's backfill, the one statement of it
    that writes data."""
    folder = Settings.model_fields["migrations_dir"].default
    backfill = split_statements(next(folder.glob("0016_*.cypher")).read_text())[-1]
    graph.auto_commit(backfill)  # type: ignore[arg-type]


def empty_graph(driver: Driver, settings: Settings) -> Graph:
    """The test database wiped and migrated."""
    graph = Graph(driver, settings.neo4j_database)
    record_graph_leaks(graph)
    wipe(graph)
    migrate(graph, settings.migrations_dir)
    return graph


def load_demo(graph: Graph, folder: Path, users: int, seed: int, *, key: str = "k",
              with_context: bool = True, assigner: Assigner | None = None) -> Tally:
    """A demo population written to ``folder``, ingested, and (by default) its weather and
    local events stored: the data most integration tests start from."""
    population = DemoPopulation(users, seed)
    path = folder / f"demo-{seed}.jsonl"
    population.write_events(path)
    summary = ingest_file(EventWriter(graph, Pseudonymizer(key), assigner), path,
                          batch_size=2000, max_line_bytes=1_000_000)
    assert summary.rejected == 0, summary
    if with_context:
        weather, events = population.context()
        situation.upsert_weather(graph, weather)
        situation.upsert_local_events(graph, events)
    return summary


def plan_rows(plan: dict[str, Any]) -> dict[str, int]:
    """The most rows each operator type of a PROFILE plan produced."""
    found = {plan["operatorType"].split("@")[0]: int(plan.get("rows", 0))}
    for child in plan.get("children", []):
        for op, rows in plan_rows(child).items():
            found[op] = max(found.get(op, 0), rows)
    return found
