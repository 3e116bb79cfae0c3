"""Benchmark: offline evaluation of recommendations against the global-popularity baseline.

A demo population (fixed seed) is split leave-last-purchase-out: each user's last purchase, and
everything that user did at or after it, is held back. The rest is ingested into the bench
instance with the demo's weather and local events, and segmented. Then, for every user with a
held-out purchase, `graph.recommend.engine.recommend` (asked as of the moment of that purchase)
and `popular` are scored by hit-rate@10 and NDCG@10, and one `recommend` call is timed.
Prints a table per planted group and ends with one `RESULT` line.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections import defaultdict
from pathlib import Path

from rich.console import Console
from rich.progress import track
from rich.table import Table

from bench.common import bench_graph, bench_settings
from graph import context
from graph.db import Graph, wipe
from graph.ingest.files import ingest_file
from graph.ingest.writer import EventWriter
from graph.privacy import IDENTIFIER_KINDS, Pseudonymizer
from graph.recommend.engine import popular, recommend
from graph.recommend.evaluation import (
    HeldOut,
    hit_at,
    ndcg_at,
    percentile,
    rank_of,
    split_last_purchase,
)
from graph.segments.run import run_segmentation
from personas.demo import DemoPopulation

K = 10
KEY = "bench-key"

# Whether the user had already bought the held-out item: a repeat purchase, which neither
# recommender can hit since both leave out what the user bought.
ALREADY_BOUGHT = """
MATCH (:User {id: $user_id})-[r:INTERACTED]->(:Item {id: $item_id})
RETURN r.purchases > 0 AS bought
"""


def load(graph: Graph, population: DemoPopulation, held_path: Path) -> None:
    """Wipe the bench database, ingest the events that are not held out, context, segments."""
    kept, _ = split_last_purchase(population.events())
    wipe(graph)
    events_path = held_path.with_suffix(".jsonl")
    with events_path.open("w", encoding="utf-8") as handle:
        handle.writelines(json.dumps(e, separators=(",", ":")) + "\n" for e in kept)
    t0 = time.perf_counter()
    summary = ingest_file(EventWriter(graph, Pseudonymizer(KEY)), events_path,
                          batch_size=2000, max_line_bytes=1_000_000)
    assert summary.rejected == 0, summary
    print(f"ingested {summary.written} events in {time.perf_counter() - t0:.0f}s")
    weather, local_events = population.context()
    context.upsert_weather(graph, weather)
    context.upsert_local_events(graph, local_events)
    result = run_segmentation(graph)
    print(f"segmented into {result.n_segments} segments (run {result.run_id})")


def graph_user_id(held: HeldOut, pseudonymizer: Pseudonymizer) -> str:
    """The id ingestion gave the user: named after the most authoritative identifier."""
    kind = next(k for k in IDENTIFIER_KINDS if k in held.user)
    return pseudonymizer.user_id(kind, held.user[kind])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--users", type=int, default=1500)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--reuse", action="store_true",
                        help="evaluate on the graph a previous run left in the bench instance")
    args = parser.parse_args()
    settings = bench_settings()
    population = DemoPopulation(args.users, seed=args.seed)
    _, held = split_last_purchase(population.events())
    pseudonymizer = Pseudonymizer(KEY)
    print(f"{args.users} demo users (seed {args.seed}); {len(held)} with a held-out purchase")

    scores: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    latencies: list[float] = []
    repeats = 0
    with tempfile.TemporaryDirectory() as tmp, bench_graph(settings) as graph:
        if not args.reuse:
            load(graph, population, Path(tmp) / "events")
        first = next(iter(held.values()))
        recommend(graph, graph_user_id(first, pseudonymizer), K, now=first.at)  # plan cached
        for h in track(list(held.values()), description=f"evaluating {len(held)} users"):
            uid = graph_user_id(h, pseudonymizer)
            t0 = time.perf_counter()
            recs = recommend(graph, uid, K, now=h.at)
            latencies.append((time.perf_counter() - t0) * 1000)
            base = popular(graph, uid, K)
            repeats += any(r["bought"] for r in graph.rows(ALREADY_BOUGHT, user_id=uid,
                                                           item_id=h.item_id))
            for group in ("all", h.group or "unknown"):
                for name, ranked in (("graph", recs), ("popular", base)):
                    rank = rank_of(h.item_id, [r.item_id for r in ranked])
                    scores[group][f"{name}_hit"].append(hit_at(rank, K))
                    scores[group][f"{name}_ndcg"].append(ndcg_at(rank, K))

    def mean(values: list[float]) -> float:
        return sum(values) / len(values)

    table = Table(title=f"leave-last-purchase-out, @{K}")
    table.add_column("planted group", no_wrap=True)
    for column in ("users", "hit graph", "hit popular", "NDCG graph", "NDCG popular"):
        table.add_column(column, justify="right", no_wrap=True)
    for group in sorted(scores, key=lambda g: (g == "all", g)):
        s = scores[group]
        table.add_row(group, str(len(s["graph_hit"])),
                      *(f"{mean(s[m]):.3f}" for m in ("graph_hit", "popular_hit", "graph_ndcg",
                                                       "popular_ndcg")))
    Console(width=100).print(table)
    print(f"held-out purchases that repeat an earlier one (no recommender can hit them): "
          f"{repeats} of {len(held)} ({repeats / len(held):.0%})")
    p50, p99 = percentile(latencies, 50), percentile(latencies, 99)
    print(f"recommend latency over {len(latencies)} calls: p50 {p50:.1f} ms, p99 {p99:.1f} ms")
    total = scores["all"]
    print(f"RESULT hit_rate_at_10={mean(total['graph_hit']):.3f} "
          f"ndcg_at_10={mean(total['graph_ndcg']):.3f} "
          f"popular_hit_rate_at_10={mean(total['popular_hit']):.3f} "
          f"popular_ndcg_at_10={mean(total['popular_ndcg']):.3f} p99_ms={p99:.1f}")


if __name__ == "__main__":
    main()
