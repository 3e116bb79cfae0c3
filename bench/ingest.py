"""Benchmark: file ingestion of 200k demo events vs a naive one-transaction-per-event baseline.

Both run the code behind `personas ingest` (`graph.ingest.files.ingest_file`) on the same
machine and Neo4j in the same run: batched (the configured batch size, writes overlapping with
parsing) and naive (batch size 1: one transaction per event, on a sample of the same file).
Both are measured after one unmeasured load of the file (``bench.common.warm_up``), whose
figure is reported too as ``cold_events_per_s``. The batched load is timed ``--repeat`` times
(each into an empty graph) and its median is the result: on a shared two-core machine the same
load varies by 10-20% from one minute to the next, and one run says more about the minute than
about the code. Prints figures and ends with one `RESULT` line.
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import tempfile
import time
from pathlib import Path

from bench.common import bench_graph, bench_settings, warm_up
from graph.db import Graph, wipe
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

        cold = warm_up(graph, EventWriter(graph, Pseudonymizer("bench-key")), path,
                       settings.model_copy(update={"batch_size": batch_size}))
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

        wipe(graph)
        naive_n, naive_elapsed = timed_ingest(graph, sample, 1, settings.max_line_bytes)
        naive_rate = naive_n / naive_elapsed
        print(f"naive (1 event per transaction): {naive_n} events in {naive_elapsed:.1f}s "
              f"= {naive_rate:,.0f} events/s")
        wipe(graph)
    print(f"RESULT events_per_s={rate:.0f} naive_events_per_s={naive_rate:.0f} "
          f"ratio={rate / naive_rate:.1f} cold_events_per_s={cold:.0f} "
          f"min_events_per_s={min(rates):.0f} max_events_per_s={max(rates):.0f}")


if __name__ == "__main__":
    main()
