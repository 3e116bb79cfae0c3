"""Helpers shared by the tests."""

from __future__ import annotations

import sys
from pathlib import Path

from graph.db import Graph

PERSONAS = str(Path(sys.executable).parent / "personas")
"""The `personas` console script of the virtual environment running the tests."""


def graph_counts(graph: Graph) -> dict[str, int]:
    """Nodes per label and relationships per type, for before/after comparisons."""
    nodes = graph.rows("MATCH (n) RETURN labels(n)[0] AS k, count(*) AS c")
    rels = graph.rows("MATCH ()-[r]->() RETURN type(r) AS k, count(*) AS c")
    return {**{f"node:{r['k']}": r["c"] for r in nodes}, **{f"rel:{r['k']}": r["c"] for r in rels}}
