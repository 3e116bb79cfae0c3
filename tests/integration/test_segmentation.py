from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from graph.db import Graph
from graph.demo import DemoPopulation
from graph.ingest.files import ingest_file
from graph.ingest.writer import EventWriter
from graph.privacy import Pseudonymizer
from graph.segments.run import run_segmentation

pytestmark = pytest.mark.integration

EXPECTED_NAMES = {
    "frequent_shoppers": "Frequent Shoppers",
    "bargain_hunters": "Bargain Hunters",
    "seasonal_buyers": "Seasonal Buyers",
    "new_visitors": "New Visitors",
}


def load_demo(graph: Graph, tmp_path: Path, users: int, seed: int) -> None:
    path = tmp_path / "demo.jsonl"
    DemoPopulation(users, seed).write_events(path)
    summary = ingest_file(EventWriter(graph, Pseudonymizer("k")), path, batch_size=2000,
                          max_line_bytes=1_000_000)
    assert summary.rejected == 0


def test_segmentation_recovers_planted_groups(graph: Graph, tmp_path: Path) -> None:
    load_demo(graph, tmp_path, users=240, seed=5)
    result = run_segmentation(graph)
    assert result.planted_ari is not None and result.planted_ari >= 0.8, result.k_reason
    assert result.n_segments == 4

    # Every user is in exactly one leaf segment of the run, and it is written to the graph.
    rows = graph.rows(
        "MATCH (u:User)-[m:IN_SEGMENT {run_id: $run}]->(s:Segment)-[:EMBODIES]->(p:Persona) "
        "RETURN u.id AS user, u.demo_group AS planted, s.level AS level, p.name AS persona",
        run=result.run_id)
    assert len(rows) == 240 == len({r["user"] for r in rows})
    assert {r["level"] for r in rows} == {0}
    # Each planted group lands mostly in the segment whose persona is named for it.
    for group, name in EXPECTED_NAMES.items():
        personas = Counter(r["persona"] for r in rows if r["planted"] == group)
        top, n = personas.most_common(1)[0]
        assert top == name and n >= 0.8 * sum(personas.values()), (group, personas)

    run = graph.rows("MATCH (r:SegmentationRun {id: $run})-[:PRODUCED]->(s:Segment) "
                     "RETURN r.k AS k, r.algorithm AS algo, size(r.features) AS nf, "
                     "count(s) AS segments", run=result.run_id)[0]
    assert run["k"] == 4 and run["algo"] == "agglomerative-ward" and run["nf"] >= 12
    # Leaves nest in parents; sizes add up.
    nesting = graph.rows(
        "MATCH (leaf:Segment {run_id: $run, level: 0})-[:CHILD_OF]->(p:Segment {level: 1}) "
        "RETURN p.id AS parent, p.size AS size, sum(leaf.size) AS leaves", run=result.run_id)
    assert nesting and all(r["size"] == r["leaves"] for r in nesting)
    assert run["segments"] == 4 + len(nesting)


def test_rerun_keeps_persona_ids(graph: Graph, tmp_path: Path) -> None:
    load_demo(graph, tmp_path, users=120, seed=8)
    first = run_segmentation(graph)
    second = run_segmentation(graph)
    personas = graph.rows("MATCH (p:Persona) RETURN p.id AS id ORDER BY id")
    assert len(personas) == first.n_segments == second.n_segments
    assert sorted(n.name for n in first.names) == sorted(n.name for n in second.names)
