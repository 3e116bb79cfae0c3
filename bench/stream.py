"""Benchmark: streaming ingestion from Kafka against the batch-file path, and freshness.

One run, on its own Kafka ("bench", 127.0.0.1:9094) and the bench Neo4j (see bench.common),
after a warm-up load of the same events that is wiped again:

1. a topic preloaded with demo events (100k by default) is consumed into an empty graph by the
   code behind `personas consume`: sustained events/s from the first poll to the last commit;
2. the same events through `personas ingest`'s code (`ingest_file`) on a wiped graph;
3. events produced at fixed rates (1,000/s, then 2,000/s, 30 s each, into a wiped graph) while
   the consumer runs: freshness, from the Kafka timestamp the producer sets to the event's
   commit in the graph (the transaction that records its offsets for reads; the metric
   ``personas_event_freshness_seconds``), p50 and p99, the same to the Kafka commit of its
   offset, and where a batch's time went (filling, writing, committing), for all batches and
   for those holding the slowest 1% of events.

Each phase prints the CPU time per event of this process (the consumer) and of Neo4j, which
say what the work costs whatever else shares the cores, and the load average.

Prints figures and ends with one `RESULT` line, with the stream's events/s over the file path's
(``stream_to_file``) and the freshness at each rate.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from bench.api import cpu_seconds, neo4j_log
from bench.common import bench_graph, bench_settings, warm_up
from graph.db import Graph, wipe
from graph.ingest import stream
from graph.ingest.files import ingest_file
from graph.ingest.metrics import IngestMetrics
from graph.ingest.pipeline import build_writer
from graph.ingest.replay import replay_file
from graph.settings import Settings
from personas.demo import DemoPopulation
from personas.local import kafka_server, neo4j_server

EVENTS_PER_USER = 107  # the demo population's average, measured
PERSONAS = str(Path(sys.executable).parent / "personas")


def stream_bench_settings() -> Settings:
    """The bench Neo4j plus a Kafka instance of the benchmark's own ("bench", 9094 and 9095;
    PERSONAS_BENCH_KAFKA_INSTANCE, _PORT and _CONTROLLER_PORT choose another)."""
    return bench_settings().model_copy(update={
        "kafka_bootstrap": None,
        "kafka_instance": os.environ.get("PERSONAS_BENCH_KAFKA_INSTANCE", "bench"),
        "kafka_port": int(os.environ.get("PERSONAS_BENCH_KAFKA_PORT", "9094")),
        "kafka_controller_port": int(os.environ.get("PERSONAS_BENCH_KAFKA_CONTROLLER_PORT",
                                                    "9095")),
        "kafka_heap": "1g", "consumer_metrics_port": 0})


@contextmanager
def bench_kafka(settings: Settings) -> Iterator[None]:
    """Start the bench Kafka if needed (and stop it afterwards if we started it)."""
    started = False
    if not kafka_server.status(settings).answering:
        kafka_server.start(settings, echo=print)
        started = True
    try:
        yield
    finally:
        if started:
            kafka_server.stop(settings)


def write_events(path: Path, events: int, seed: int) -> int:
    users = max(1, events // EVENTS_PER_USER)
    count = 0
    with path.open("w") as handle:
        for event in DemoPopulation(users, seed).events():
            if count == events:
                break
            handle.write(json.dumps(event, separators=(",", ":")) + "\n")
            count += 1
    return count


class CpuMeter:
    """CPU seconds this process and Neo4j used since it was made."""

    def __init__(self, settings: Settings) -> None:
        self.neo4j_pid = neo4j_server.status(settings).pid
        self.start = (time.process_time(), cpu_seconds(self.neo4j_pid))

    def per_event_us(self, events: int) -> str:
        own, neo4j = time.process_time(), cpu_seconds(self.neo4j_pid)
        return (f"CPU per event: consumer {(own - self.start[0]) / events * 1e6:.0f} µs, "
                f"Neo4j {(neo4j - self.start[1]) / events * 1e6:.0f} µs; "
                f"load {os.getloadavg()[0]:.1f}")


def topics() -> tuple[str, str, str]:
    tag = uuid.uuid4().hex[:8]
    return f"bench-{tag}", f"bench-{tag}-dlq", f"bench-group-{tag}"


def stream_throughput(graph: Graph, settings: Settings, path: Path, n: int,
                      batch_max: int) -> float:
    topic, dlq, group = topics()
    stream.ensure_topics(settings, [topic, dlq])
    sent = replay_file(settings, path, topic=topic, rate=0)
    assert sent.sent == n and sent.failed == 0, sent
    print(f"preloaded {sent.sent} messages in {sent.seconds:.1f}s "
          f"({sent.sent / sent.seconds:,.0f}/s)")
    wipe(graph)
    last_commit = 0.0

    planned = 0

    def on_batch(report: stream.BatchReport) -> None:
        nonlocal last_commit, planned
        last_commit = time.perf_counter()
        planned += report.planned

    meter = CpuMeter(settings)
    t0 = time.perf_counter()
    summary = stream.consume(graph, settings, stop=threading.Event(), topic=topic,
                             dead_letter_topic=dlq, group=group, batch_max=batch_max,
                             idle_exit=3.0, metrics=IngestMetrics(), on_batch=on_batch)
    assert summary.written == n and summary.dead_letters == 0, summary
    elapsed = last_commit - t0
    print(f"stream (batch_max {batch_max}): {n} events in {elapsed:.1f}s "
          f"= {n / elapsed:,.0f} events/s ({summary.batches} batches)")
    print(f"  {meter.per_event_us(n)}; {planned} batches planned ahead")
    return n / elapsed


def batch_throughput(graph: Graph, settings: Settings, path: Path, n: int) -> float:
    wipe(graph)
    writer = build_writer(graph, settings, IngestMetrics())
    meter = CpuMeter(settings)
    t0 = time.perf_counter()
    summary = ingest_file(writer, path, batch_size=settings.batch_size,
                          max_line_bytes=settings.max_line_bytes)
    elapsed = time.perf_counter() - t0
    assert summary.written == n, summary
    print(f"batch file (batch {settings.batch_size}): {n} events in {elapsed:.1f}s "
          f"= {n / elapsed:,.0f} events/s")
    print(f"  {meter.per_event_us(n)}")
    return n / elapsed


def freshness(graph: Graph, settings: Settings, path: Path, n: int,
              rate: float) -> tuple[float, float]:
    """Freshness p50 and p99 in ms of ``n`` events produced at ``rate`` a second."""
    topic, dlq, group = topics()
    stream.ensure_topics(settings, [topic, dlq])
    samples: list[float] = []
    to_kafka: list[float] = []
    reports: list[stream.BatchReport] = []
    stop = threading.Event()
    consumed = threading.Event()

    def on_batch(report: stream.BatchReport) -> None:
        samples.extend(report.freshness_s)
        to_kafka.extend(f + report.kafka_after_seconds for f in report.freshness_s)
        reports.append(report)
        if len(samples) >= n:
            consumed.set()

    def run() -> None:
        stream.consume(graph, settings, stop=stop, topic=topic, dead_letter_topic=dlq,
                       group=group, metrics=IngestMetrics(), on_batch=on_batch)

    consumer = threading.Thread(target=run, name="bench-consumer")
    consumer.start()
    time.sleep(3.0)  # let it join the group before the clock starts
    meter = CpuMeter(settings)
    neo4j_events = neo4j_log(settings)
    full_gcs = gc.get_stats()[2]["collections"]
    # The producer is a process of its own, as it would be: it does not compete with the
    # consumer for this interpreter. Kafka timestamps come from the same machine clock.
    env = {**os.environ, "PERSONAS_KAFKA_BOOTSTRAP": settings.kafka_bootstrap_servers,
           "PERSONAS_PSEUDONYM_KEY": "bench-stream-producer-key"}
    t0 = time.monotonic()
    proc = subprocess.run([PERSONAS, "produce", "--rate", str(rate), "--topic", topic, str(path)],
                          env=env, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    print(f"produced {n} events in {time.monotonic() - t0:.1f}s (asked {rate:,.0f}/s)")
    finished = consumed.wait(120)
    cpu = meter.per_event_us(n)
    stop.set()
    consumer.join(60)
    assert finished, f"only {len(samples)} of {n} events committed"
    ms = np.array(samples) * 1000
    p50, p99, top = (float(np.percentile(ms, q)) for q in (50, 99, 100))
    print(f"freshness at {rate:,.0f}/s: p50 {p50:.0f} ms, p99 {p99:.0f} ms, max {top:.0f} ms "
          f"over {len(ms)} events")
    kafka_ms = np.array(to_kafka) * 1000
    print(f"  to the Kafka commit: p50 {np.percentile(kafka_ms, 50):.0f} ms, p99 "
          f"{np.percentile(kafka_ms, 99):.0f} ms")
    print(f"  {cpu}")
    # What may stall every batch at once: Neo4j planning a statement again or pausing its JVM
    # (its debug.log), this process's full garbage collections.
    events = ", ".join(f"{e.kind} {e.detail} at {e.at - (time.time() - time.monotonic()) - t0:.1f}s"
                       for e in neo4j_events.events()) or "none"
    print(f"  Neo4j replans and pauses: {events}; full Python collections "
          f"{gc.get_stats()[2]['collections'] - full_gcs}")
    describe_batches("all", reports)
    # The batches the slowest 1% of events were in: what made the p99.
    cut = p99 / 1000
    describe_batches("slowest 1%", [r for r in reports if max(r.freshness_s, default=0) > cut])
    return p50, p99


def describe_batches(title: str, reports: list[stream.BatchReport]) -> None:
    """Batch sizes and the parts of a batch's time (see ``stream.BatchReport``); ``before``
    is each event's time from its Kafka timestamp to its batch going to the writer, ``kafka``
    from its commit in the graph to its offset's Kafka commit."""
    if not reports:
        return
    sizes = np.array([r.messages for r in reports])
    print(f"  {title}: {len(reports)} batches, median {np.median(sizes):.0f} events, p99 "
          f"{np.percentile(sizes, 99):.0f}, max {sizes.max()}")
    before = [f - r.write_seconds - r.commit_seconds + r.kafka_after_seconds
              for r in reports for f in r.freshness_s]
    for name, values in (("before", before),
                         ("fill", [r.fill_seconds for r in reports]),
                         ("write", [r.write_seconds for r in reports]),
                         ("commit", [r.commit_seconds for r in reports]),
                         ("kafka", [r.kafka_after_seconds for r in reports])):
        ms = np.array(values) * 1000
        print(f"  {name:>8}: p50 {np.percentile(ms, 50):.0f} ms, p99 "
              f"{np.percentile(ms, 99):.0f} ms, max {ms.max():.0f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--batch-max", type=int, default=None)
    parser.add_argument("--rates", default="1000,2000",
                        help="events/s of the freshness phases, comma separated")
    parser.add_argument("--seconds", type=float, default=30.0)
    args = parser.parse_args()
    try:
        rates = [float(r) for r in args.rates.split(",")]
    except ValueError:
        parser.error(f"--rates: expected numbers separated by commas, got {args.rates!r}")
    if not rates or min(rates) <= 0:
        parser.error("--rates: every rate must be positive")
    settings = stream_bench_settings()
    batch_max = args.batch_max or settings.kafka_batch_max

    with tempfile.TemporaryDirectory() as tmp, bench_kafka(settings), \
            bench_graph(settings) as graph:
        path = Path(tmp) / "events.jsonl"
        n = write_events(path, args.events, seed=11)
        print(f"generated {n} events")
        warm_up(graph, build_writer(graph, settings), path, settings)
        stream_rate = stream_throughput(graph, settings, path, n, batch_max)
        batch_rate = batch_throughput(graph, settings, path, n)
        fresh: list[str] = []
        for rate in rates:
            fresh_path = Path(tmp) / f"fresh-{rate:.0f}.jsonl"
            fresh_n = write_events(fresh_path, int(rate * args.seconds), seed=12)
            wipe(graph)
            p50, p99 = freshness(graph, settings, fresh_path, fresh_n, rate)
            fresh.append(f"freshness_p50_ms_{rate:.0f}={p50:.0f} "
                         f"freshness_p99_ms_{rate:.0f}={p99:.0f}")
        wipe(graph)
    print(f"stream / file path: {stream_rate / batch_rate:.2f}")
    print(f"RESULT stream_events_per_s={stream_rate:.0f} batch_events_per_s={batch_rate:.0f} "
          f"stream_to_file={stream_rate / batch_rate:.2f} {' '.join(fresh)}")


if __name__ == "__main__":
    main()
