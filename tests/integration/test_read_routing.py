"""Reads go out as READ transactions and writes as WRITE ones, so that a `neo4j://` URI on a
cluster spreads the reads over its secondaries and sends the writes to the leader.

Seen on the wire: a Bolt tap (``tests.bolt_tap``) between the real Neo4j and the code records
the access mode of every transaction jobs (the file import, the feature table) and the API start. No
query that only reads may go out as WRITE (it would load the leader), none that writes as READ
(a server refuses it, as the first test shows), and a job's reads carry the bookmarks of its
own earlier writes (a secondary waits for them before answering).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from neo4j.exceptions import ClientError

from api.app import create_app
from graph.auth import Role, create_key
from graph.db import Graph, create_driver
from graph.features.table import build_feature_table
from graph.settings import Settings
from tests.bolt_tap import BoltTap, Transaction
from tests.helpers import load_demo

pytestmark = pytest.mark.integration

WRITES = re.compile(r"\b(CREATE|MERGE|SET|DELETE|REMOVE|FOREACH|LOAD CSV)\b")
"""Cypher's writing clauses (the project writes keywords in capitals, labels in CamelCase)."""


def writes(tx: Transaction) -> bool:
    return any(WRITES.search(query) for query in tx.queries)


def misrouted(transactions: list[Transaction]) -> list[Transaction]:
    """Transactions whose mode does not match what their queries do."""
    return [tx for tx in transactions if (tx.mode == "w") != writes(tx)]


@pytest.fixture
def tap(neo4j_running: Settings) -> Iterator[BoltTap]:
    relay = BoltTap(("127.0.0.1", neo4j_running.neo4j_bolt_port))
    yield relay
    relay.close()


def test_the_server_refuses_a_write_sent_as_read(graph: Graph) -> None:
    """What makes the access mode matter even on one server: it is enforced."""
    with pytest.raises(ClientError) as refused:
        graph.rows("CREATE (p:Probe) RETURN p")
    assert refused.value.code == "Neo.ClientError.Statement.AccessMode"
    assert graph.rows("MATCH (p:Probe) RETURN count(p) AS n") == [{"n": 0}]


def test_jobs_read_as_read_and_after_their_own_writes(
        graph: Graph, settings: Settings, tap: BoltTap, tmp_path: Path) -> None:
    """The file import (its look-ups ahead of each batch's write) and the feature table that
    segmentation reads, through the tap."""
    tapped = create_driver(settings.model_copy(update={"neo4j_uri": tap.uri}))
    try:
        over = Graph(tapped, settings.neo4j_database)
        load_demo(over, tmp_path, 10, seed=4, key=settings.pseudonym_key.get_secret_value())
        loaded = len(tap.taken())
        table = build_feature_table(over)
    finally:
        tapped.close()
    assert len(table.user_ids) == 10
    seen = tap.taken()
    assert len([tx for tx in seen[loaded:] if not writes(tx)]) >= 3, seen[loaded:]
    assert any(writes(tx) for tx in seen[:loaded]) and any(
        not writes(tx) for tx in seen[:loaded]), seen[:loaded]
    assert misrouted(seen) == []
    # Once a job has written, every later transaction waits for what it wrote.
    first_write = next(i for i, tx in enumerate(seen) if writes(tx))
    assert all(tx.bookmarks for tx in seen[first_write + 1:]), seen[first_write + 1:]


def test_the_api_reads_as_read_and_writes_as_write(
        graph: Graph, settings: Settings, tap: BoltTap, tmp_path: Path) -> None:
    load_demo(graph, tmp_path, 20, seed=6, key=settings.pseudonym_key.get_secret_value())
    user_id = graph.rows("MATCH (u:User) RETURN u.id AS id ORDER BY id LIMIT 1")[0]["id"]
    reader = create_key(graph, Role.READER, "routing reader").key
    writer = create_key(graph, Role.WRITER, "routing writer").key
    app = create_app(settings.model_copy(update={"neo4j_uri": tap.uri}))
    with TestClient(app) as client:
        query = ("query($id: ID!) { user(id: $id) { id persona { name } "
                 "preferences(first: 3) { category } "
                 "interactions(first: 3) { edges { node { type } } } "
                 "recommendations(first: 3) { itemId } } "
                 "chatContext(userId: $id) { text } segments { id } }")
        # Start-up reads (the segmentation model's look-up) are not what is measured here.
        assert client.get("/readyz").status_code == 200
        tap.clear()
        asked = client.post("/graphql", json={"query": query, "variables": {"id": user_id}},
                            headers={"Authorization": f"Bearer {reader}"})
        assert asked.status_code == 200 and "errors" not in asked.json(), asked.text
        assert asked.json()["data"]["user"]["id"] == user_id
        reads = tap.taken()
        assert len(reads) >= 3 and all(tx.mode == "r" for tx in reads), reads

        tap.clear()
        event = {"event_id": "routing-1", "type": "purchase", "source": "web",
                 "occurred_at": "2026-11-01T10:00:00+01:00", "user": {"cookie": "ck-routing"},
                 "properties": {"item_id": "sku-routing", "category": "Books", "price": "9.50"}}
        sent = client.post("/v1/events", json={"events": [event]},
                           headers={"Authorization": f"Bearer {writer}"})
        assert sent.status_code == 200, sent.text
        seen = tap.taken()
        assert any(tx.mode == "w" and writes(tx) for tx in seen), seen
        assert misrouted(seen) == []


def test_a_routing_uri_works_on_a_single_server(settings: Settings, graph: Graph) -> None:
    """`neo4j://` (what a cluster or Aura needs) against one server: it routes to itself."""
    routed = settings.model_copy(
        update={"neo4j_uri": f"neo4j://127.0.0.1:{settings.neo4j_bolt_port}"})
    driver = create_driver(routed)
    try:
        over = Graph(driver, settings.neo4j_database)
        over.execute("CREATE (:Probe {id: 'routed'})")
        assert over.rows("MATCH (p:Probe) RETURN p.id AS id") == [{"id": "routed"}]
        over.execute("MATCH (p:Probe) DELETE p")
    finally:
        driver.close()
