"""What every benchmark needs: its own local Neo4j instance (never the one holding your data)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from graph.db import Graph, create_driver
from graph.local import neo4j_server
from graph.migrate import migrate
from graph.settings import Settings


def bench_settings() -> Settings:
    """A separate instance ("bench", Bolt 7689, HTTP 7476): benchmarks wipe their database."""
    return Settings(neo4j_instance="bench", neo4j_bolt_port=7689, neo4j_http_port=7476,
                    neo4j_uri=None)


@contextmanager
def bench_graph(settings: Settings) -> Iterator[Graph]:
    """Start the bench instance if needed (stop it afterwards if we started it), migrated."""
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
