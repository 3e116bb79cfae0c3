"""After the whole suite: no plaintext email or phone number in the database (searched before
every wipe and now), in the test process's logs, or in any dead letter the tests produced
(dead-letter files, `DeadLetter` nodes, the Kafka dead-letter topics on disk)."""

from __future__ import annotations

from pathlib import Path

import pytest
from neo4j import Driver

from graph.db import Graph
from graph.settings import Settings
from tests.pii import FOUND, pii_in, scan_files, scan_graph

pytestmark = [pytest.mark.integration, pytest.mark.last]


def test_the_sweep_finds_what_it_looks_for(driver: Driver, settings: Settings) -> None:
    """The search itself: plaintext is found, in text and in the graph (a string or a list
    property, on a node or a relationship); pseudonyms, timestamps and latencies are not."""
    assert pii_in("mail jane.doe@example.com or call +49 151 2345 6789") == [
        "jane.doe@example.com", "+49 151 2345 6789"]
    assert pii_in("run-20261206T195343-7306ab, dl_c8d99935688b3059652095ed8b414f7a") == []
    assert pii_in("[email:3f9a1c0b2e] [phone:0c1d2e3f4a] at 2026-11-28T10:00:00.123Z, "
                  "POST /graphql 200 1374.1 ms, [[\"recency\", 1024.8385756557827]]") == []
    graph = Graph(driver, settings.neo4j_database)
    # Ids, digests and decimals that happen to be dialable are not phones; an email is an email
    # anywhere.
    graph.execute("CREATE (:SweepProbe {note: 'ok', id: '41-000008-11', hash: '4378507449',"
                  " order_id: '42-000016-14', scores: '[0.0894084134425, 3]'})"
                  "-[:PROBE {notes: ['x', 'a@b.io']}]->"
                  "(:SweepProbe {note: 'call 0151 2345 6789', session_id: 'jo@c.io'})")
    try:
        # Only the probe's own properties: what earlier tests left is the final sweep's business.
        found = {(leak.where, leak.what) for leak in scan_graph(graph)
                 if leak.where.startswith(("Neo4j SweepProbe.", "Neo4j PROBE."))}
    finally:
        graph.execute("MATCH (p:SweepProbe) DETACH DELETE p")
    assert found == {("Neo4j PROBE.notes", "a@b.io"),
                     ("Neo4j SweepProbe.note", "0151 2345 6789"),
                     ("Neo4j SweepProbe.session_id", "jo@c.io")}


def test_no_plaintext_pii_anywhere_after_the_suite(
        driver: Driver, settings: Settings, tmp_path_factory: pytest.TempPathFactory,
        session_log: Path) -> None:
    leaks = list(FOUND)
    leaks += scan_graph(Graph(driver, settings.neo4j_database))
    base = tmp_path_factory.getbasetemp()
    leaks += scan_files([session_log], "log")
    leaks += scan_files(sorted(p for p in base.rglob("*deadletter*") if p.is_file()),
                        "dead-letter file")
    # The Kafka dead-letter topics' log segments on disk (the tests name them `...-dlq`; the
    # event topics hold plaintext identifiers by design: that is what comes in).
    kafka_data = settings.kafka_instance_dir / "data"
    dlq_segments = sorted(f for d in kafka_data.glob("*-dlq-*") if d.is_dir()
                          for f in d.glob("*.log"))
    leaks += scan_files(dlq_segments, "Kafka dead-letter segment")
    assert not leaks, "\n".join(str(leak) for leak in leaks[:20])
