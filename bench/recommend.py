"""Benchmark: offline evaluation of recommendations against classical baselines.

A demo population (fixed seed) is split leave-last-purchase-out: each user's last purchase, and
everything that user did at or after it, is held back. The rest is ingested into the bench
instance with the demo's weather and local events, and segmented. Then, for every user with a
held-out purchase, `graph.recommend.engine.recommend` (asked as of the moment of that purchase),
`popular` and the classical baselines of `graph.recommend.baselines` (item-kNN cosine and EASE,
fitted on the same kept purchases, each ranking the whole catalogue) are scored by hit-rate@10
and NDCG@10, and one `recommend` call is timed. Prints a table per planted group and ends with
one `RESULT` line.

``--validate`` holds out each user's last two purchases and scores the second-to-last: the
split the recommender's weights are tuned on, so that the test hold-out never tunes them.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import track
from rich.table import Table

from bench.common import bench_graph, bench_settings
from graph import situation
from graph.db import Graph, wipe
from graph.ingest.files import ingest_file
from graph.ingest.writer import EventWriter
from graph.privacy import IDENTIFIER_KINDS, Pseudonymizer
from graph.recommend.baselines import InteractionMatrix, ease, interaction_matrix, item_knn
from graph.recommend.engine import WEIGHTS, popular, recommend
from graph.recommend.evaluation import (
    HeldOut,
    UserKey,
    hit_at,
    ndcg_at,
    percentile,
    rank_of,
    split_last_purchase,
    user_key,
)
from graph.segments.run import run_segmentation
from personas.demo import DemoPopulation

K = 10
KEY = "bench-key"
# Beside ``popular`` (the same ranking as ``baselines.popularity``, from the graph).
BASELINES: dict[str, Callable[[Any], Any]] = {"item-kNN": item_knn, "EASE": ease}

# Whether the user had already bought the held-out item: a repeat purchase, which neither
# recommender can hit since both leave out what the user bought.
ALREADY_BOUGHT = """
MATCH (:User {id: $user_id})-[r:INTERACTED]->(:Item {id: $item_id})
RETURN r.purchases > 0 AS bought
"""


class Baselines:
    """``models`` (default ``BASELINES``) fitted on the kept purchases (one binary users x
    items matrix; the catalogue includes every held-out item, so that each can be ranked)."""

    def __init__(self, kept: list[dict[str, Any]], held: dict[UserKey, HeldOut],
                 models: dict[str, Callable[[Any], Any]] | None = None) -> None:
        catalogue = sorted({e["properties"]["item_id"] for e in kept
                            if e["properties"].get("item_id")}
                           | {h.item_id for h in held.values()})
        triples = [(user_key(e), e["properties"]["item_id"], 1.0)
                   for e in kept if e["type"] == "purchase"]
        self.matrix: InteractionMatrix = interaction_matrix(triples, items=catalogue)
        self.fitted = {name: fit(self.matrix.matrix)
                       for name, fit in (models or BASELINES).items()}

    def knows(self, key: UserKey) -> bool:
        """Whether the user bought anything before the held-out purchase."""
        return key in self.matrix.rows

    def top(self, key: UserKey, k: int = K) -> dict[str, list[str]]:
        """Each baseline's ``k`` best items for the user, over the whole catalogue, without
        what the user bought before."""
        row = self.matrix.user_index(key)
        return {name: [str(self.matrix.items[i]) for i in model.top(row, k)]
                for name, model in self.fitted.items()}


def split(population: DemoPopulation, validate: bool,
          ) -> tuple[list[dict[str, Any]], dict[UserKey, HeldOut]]:
    """The events to load and the purchase to predict per user: the last one, or with
    ``validate`` the second-to-last (the last one, and all after it, never loaded)."""
    kept, held = split_last_purchase(population.events())
    return split_last_purchase(kept) if validate else (kept, held)


def load(graph: Graph, population: DemoPopulation, kept: list[dict[str, Any]],
         held_path: Path) -> None:
    """Wipe the bench database, ingest the events that are not held out, context, segments."""
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
    situation.upsert_weather(graph, weather)
    situation.upsert_local_events(graph, local_events)
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
    parser.add_argument("--resegment", action="store_true",
                        help="with --reuse: run the segmentation again before evaluating")
    parser.add_argument("--validate", action="store_true",
                        help="predict the second-to-last purchase (the tuning split)")
    parser.add_argument("--weight", action="append", default=[], metavar="NAME=W",
                        help="try another engine.WEIGHTS value (e.g. segment=0.5), for "
                             "tuning; item and similar are learned by the run "
                             "(graph/recommend/blend.py) and only default to these")
    args = parser.parse_args()
    for item in args.weight:
        name, _, value = item.partition("=")
        if name not in WEIGHTS:
            parser.error(f"--weight {item}: no weight {name!r} (one of {', '.join(WEIGHTS)})")
        WEIGHTS[name] = float(value)
    settings = bench_settings()
    population = DemoPopulation(args.users, seed=args.seed)
    kept, held = split(population, args.validate)
    pseudonymizer = Pseudonymizer(KEY)
    print(f"{args.users} demo users (seed {args.seed}); {len(held)} with a held-out purchase"
          + (" (validation split: the second-to-last)" if args.validate else ""))
    t0 = time.perf_counter()
    baselines = Baselines(kept, held)
    print(f"baselines fitted on {baselines.matrix.matrix.nnz} purchases of "
          f"{len(baselines.matrix.items)} items in {time.perf_counter() - t0:.1f}s")
    names = ["graph", "popular", *BASELINES]

    scores: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    latencies: list[float] = []
    repeats = 0
    with tempfile.TemporaryDirectory() as tmp, bench_graph(settings) as graph:
        if not args.reuse:
            load(graph, population, kept, Path(tmp) / "events")
        elif args.resegment:
            print(f"segmented into {run_segmentation(graph).n_segments} segments")
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
            ranked = {"graph": [r.item_id for r in recs], "popular": [r.item_id for r in base]}
            key = tuple(sorted(h.user.items()))
            # A user who bought nothing before: the classical models know only popularity.
            ranked |= (baselines.top(key) if baselines.knows(key)
                       else {name: ranked["popular"] for name in BASELINES})
            for group in ("all", h.group or "unknown"):
                for name in names:
                    rank = rank_of(h.item_id, ranked[name])
                    scores[group][f"{name}_hit"].append(hit_at(rank, K))
                    scores[group][f"{name}_ndcg"].append(ndcg_at(rank, K))

    def mean(values: list[float]) -> float:
        return sum(values) / len(values)

    table = Table(title=f"leave-last-purchase-out, @{K}: hit rate / NDCG")
    table.add_column("planted group", no_wrap=True)
    table.add_column("users", justify="right")
    for name in names:
        table.add_column(name, justify="right", no_wrap=True)
    for group in sorted(scores, key=lambda g: (g == "all", g)):
        s = scores[group]
        table.add_row(group, str(len(s["graph_hit"])),
                      *(f"{mean(s[f'{n}_hit']):.3f} / {mean(s[f'{n}_ndcg']):.3f}"
                        for n in names))
    Console(width=120).print(table)
    print(f"held-out purchases that repeat an earlier one (no recommender can hit them): "
          f"{repeats} of {len(held)} ({repeats / len(held):.0%})")
    p50, p99 = percentile(latencies, 50), percentile(latencies, 99)
    print(f"recommend latency over {len(latencies)} calls: p50 {p50:.1f} ms, p99 {p99:.1f} ms")
    total = scores["all"]
    baseline_keys = " ".join(
        f"{slug}_hit_rate_at_10={mean(total[f'{n}_hit']):.3f} "
        f"{slug}_ndcg_at_10={mean(total[f'{n}_ndcg']):.3f}"
        for n, slug in (("popular", "popular"), ("item-kNN", "item_knn"), ("EASE", "ease")))
    print(f"RESULT hit_rate_at_10={mean(total['graph_hit']):.3f} "
          f"ndcg_at_10={mean(total['graph_ndcg']):.3f} {baseline_keys} p99_ms={p99:.1f}"
          + (" split=validation" if args.validate else ""))


if __name__ == "__main__":
    main()
