"""What every benchmark needs: its own local Neo4j instance (never the one holding your data)."""

from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from graph.db import Graph, create_driver, wipe
from graph.ingest.files import ingest_file
from graph.ingest.writer import EventWriter
from graph.migrate import migrate
from graph.settings import Settings
from personas.local import neo4j_server


def bench_settings() -> Settings:
    """A separate instance ("bench", Bolt 7689, HTTP 7476): benchmarks wipe their database.

    PERSONAS_BENCH_INSTANCE, PERSONAS_BENCH_BOLT_PORT and PERSONAS_BENCH_HTTP_PORT choose
    another, e.g. to run two benchmarks side by side; never the PERSONAS_NEO4J_* ones, which
    name the instance holding your data."""
    return Settings(neo4j_instance=os.environ.get("PERSONAS_BENCH_INSTANCE", "bench"),
                    neo4j_bolt_port=int(os.environ.get("PERSONAS_BENCH_BOLT_PORT", "7689")),
                    neo4j_http_port=int(os.environ.get("PERSONAS_BENCH_HTTP_PORT", "7476")),
                    neo4j_uri=None)


@contextmanager
def bench_graph(settings: Settings) -> Iterator[Graph]:
    """Start the bench instance if needed (stop it afterwards if we started it), migrated.

    Benchmarks wipe the instance, so one at a time holds it: a second one waits for the first
    (across checkouts too: the instance lives in the shared cache directory)."""
    with _exclusive(settings):
        yield from _bench_graph(settings)


@contextmanager
def _exclusive(settings: Settings) -> Iterator[None]:
    lock_path = settings.local_instance_dir.with_name(f"{settings.neo4j_instance}.bench.lock")
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with lock_path.open("a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"another benchmark holds the bench instance {settings.neo4j_instance!r}; "
                  "waiting for it (PERSONAS_BENCH_INSTANCE and PERSONAS_BENCH_*_PORT pick "
                  "another)", flush=True)
            fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _bench_graph(settings: Settings) -> Iterator[Graph]:
    started = False
    if not neo4j_server.status(settings).answering:
        neo4j_server.start(settings, echo=print)
        started = True
    driver = create_driver(settings)
    try:
        graph = Graph(driver, settings.neo4j_database)
        migrate(graph, settings.migrations_dir)
        yield graph
    finally:
        driver.close()
        if started:
            neo4j_server.stop(settings)


def warm_up(graph: Graph, writer: EventWriter, path: Path, settings: Settings) -> float:
    """Load the events once through the file path and wipe them; returns that load's events/s.

    A freshly started Neo4j compiles its queries, warms its JIT and grows its store files on
    whatever runs first. A long-running server has done all that, so benchmarks measure
    after this load, and print its figure beside theirs.
    """
    wipe(graph)
    t0 = time.perf_counter()
    summary = ingest_file(writer, path, batch_size=settings.batch_size,
                          max_line_bytes=settings.max_line_bytes)
    elapsed = time.perf_counter() - t0
    assert summary.rejected == 0, summary
    rate = summary.written / elapsed
    print(f"warm-up, the first load after the server started: {summary.written} events in "
          f"{elapsed:.1f}s = {rate:,.0f} events/s (not the result)")
    wipe(graph)
    return rate
