"""The served API opens one Neo4j driver, an async one, and every kind of write it takes runs on
it through the write code every other source uses: events (REST, GraphQL, MCP), stated
preferences, CRM records (GraphQL, the signed webhook), situation pushes, subject export and
erasure, and a segmentation run. The server is `personas serve` with its driver factories
counted (``tests.drivers_counted``)."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from neo4j import Driver, ManagedTransaction
from neo4j.exceptions import TransientError

from graph.auth import Role, create_key
from graph.crm.webhook import signature
from graph.db import Graph, LoopGraph, Statement, create_async_driver, statements
from graph.segments.run import run_segmentation
from graph.settings import Settings
from tests.helpers import empty_graph, load_demo
from tests.integration.served import server_env
from tests.integration.test_api_served import CRM_MAPPING, free_port, serving

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
CRM_SECRET = "whsec-one-driver"
INGEST = """mutation($events: [JSON!]!) { ingestEvents(events: $events) {
  accepted duplicates rejected results { status } } }"""


@dataclass(frozen=True)
class Server:
    base: str
    graph: Graph
    keys: dict[str, str]
    user_id: str
    drivers: Path
    """One line per driver the server created ("sync" or "async")."""


@pytest.fixture(scope="module")
def server(driver: Driver, settings: Settings,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    folder = tmp_path_factory.mktemp("one-driver")
    graph = empty_graph(driver, settings)
    load_demo(graph, folder, 20, seed=11, key=settings.pseudonym_key.get_secret_value())
    run = run_segmentation(graph, runs_dir=settings.resolved_runs_dir)
    keys = {role.value: create_key(graph, role, f"{role.value} one-driver").key
            for role in Role}
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {**server_env(settings), "PERSONAS_CRM_MAPPING_FILE": str(CRM_MAPPING),
           "PERSONAS_CRM_WEBHOOK_SECRET": CRM_SECRET}
    drivers, log = folder / "drivers.txt", folder / "serve.log"
    with serving([sys.executable, "-m", "tests.drivers_counted", str(drivers), "serve",
                  "--host", "127.0.0.1", "--port", str(port)], env, base, log, cwd=ROOT):
        yield Server(base, graph, keys, run.user_ids[0], drivers)


def gql(server: Server, role: str, query: str, **variables: Any) -> dict[str, Any]:
    response = httpx.post(f"{server.base}/graphql", json={"query": query, "variables": variables},
                          headers={"Authorization": f"Bearer {server.keys[role]}"}, timeout=60)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    assert "errors" not in body, body
    data: dict[str, Any] = body["data"]
    return data


def event(event_id: str, cookie: str) -> dict[str, Any]:
    return {"event_id": event_id, "type": "purchase", "source": "web",
            "occurred_at": "2026-11-01T10:00:00Z", "user": {"cookie": cookie},
            "properties": {"item_id": "sku-one", "category": "Books", "price": "9.50"}}


def count(graph: Graph, query: str, **params: Any) -> int:
    return int(graph.rows(query, **params)[0]["n"])


def test_every_api_write_runs_on_the_one_async_driver(server: Server) -> None:
    writer = {"Authorization": f"Bearer {server.keys['writer']}"}
    # REST events: one written, one rejected (and dead-lettered in the graph).
    posted = httpx.post(f"{server.base}/v1/events", headers=writer, timeout=60,
                        json={"events": [event("one-1", "ck-one"), {"type": "nope"}]})
    assert posted.status_code == 200, posted.text
    assert (posted.json()["accepted"], posted.json()["rejected"]) == (1, 1)
    assert count(server.graph, "MATCH (d:DeadLetter {source: 'http'}) RETURN count(d) AS n") >= 1

    # The same new GraphQL batch four times at once: stored once, the others duplicates.
    batch = [event(f"one-gql-{i}", f"ck-gql-{i}") for i in range(20)]
    with ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(lambda _: gql(server, "writer", INGEST, events=batch)
                                ["ingestEvents"], range(4)))
    assert sorted(a["accepted"] for a in answers) == [0, 0, 0, 20]
    assert sorted(a["duplicates"] for a in answers) == [0, 20, 20, 20]
    assert count(server.graph, "MATCH (i:Interaction) WHERE i.event_id STARTS WITH 'one-gql-' "
                 "RETURN count(i) AS n") == 20

    stated = gql(server, "writer", """mutation($u: ID!) { setPreference(userId: $u,
      category: "one driver", weight: 0.5) { weight } }""", u=server.user_id)
    assert stated["setPreference"]["weight"] == 0.5

    upserted = gql(server, "writer", """mutation($p: ProfileInput!) { upsertUser(profile: $p)
      { userId created } }""", p={"identifiers": [{"kind": "crm_id", "value": "crm-one"}],
                                  "at": "2026-11-10T10:00:00Z", "tier": "gold"})
    assert upserted["upsertUser"]["created"] is True

    body = json.dumps([{"customer_no": "C-one", "tier": "gold",
                        "updated_at": "2026-11-01T10:00:00Z"}]).encode()
    at = int(time.time())
    hook = httpx.post(f"{server.base}/v1/webhooks/crm", content=body, timeout=60, headers={
        "X-Personas-Timestamp": str(at), "content-type": "application/json",
        "X-Personas-Signature": signature(CRM_SECRET, at, body)})
    assert hook.status_code == 200 and hook.json()["accepted"] == 1, hook.text

    push = {"schema_version": 1,
            "locations": [{"id": "one-town", "city": "One", "country": "DE",
                           "lat": 50.0, "lon": 8.0}],
            "weather": [{"id": "one-wx", "location_id": "one-town",
                         "at": "2026-11-28T12:00:00Z", "temp_c": 3.5, "condition": "rain",
                         "source": "test"}]}
    situation = httpx.post(f"{server.base}/v1/webhooks/context", json=push, headers=writer,
                           timeout=60)
    assert situation.status_code == 200 and situation.json()["weather"] == 1, situation.text

    async def mcp_writes() -> None:
        async with httpx2.AsyncClient(headers=writer, timeout=60) as http, \
                Client(streamable_http_client(f"{server.base}/mcp", http_client=http)) as client:
            recorded = await client.call_tool("record_event",
                                              {"event": event("one-mcp", "ck-mcp-one")})
            assert not recorded.is_error, recorded.content
            preferred = await client.call_tool("set_preference", {
                "user_id": server.user_id, "category": "mcp one", "weight": -0.5})
            assert not preferred.is_error, preferred.content

    asyncio.run(mcp_writes())
    assert count(server.graph, "MATCH (i:Interaction {event_id: 'one-mcp'}) "
                 "RETURN count(i) AS n") == 1

    exported = gql(server, "admin", "mutation($u: ID!) { exportUser(userId: $u) }",
                   u=server.user_id)
    assert exported["exportUser"]
    forgotten = gql(server, "admin", """mutation($u: ID!) { forgetUser(userId: $u)
      { alreadyErased } }""", u=server.user_id)
    assert forgotten["forgetUser"]["alreadyErased"] is False

    ran = gql(server, "admin", "mutation { runSegmentation(k: 2) { runId nSegments } }")
    assert ran["runSegmentation"]["nSegments"] == 2
    assert count(server.graph, "MATCH (r:SegmentationRun {id: $id}) RETURN count(r) AS n",
                 id=ran["runSegmentation"]["runId"]) == 1

    assert server.drivers.read_text().split() == ["async"]


def test_loop_graph_runs_sync_write_code_on_the_async_driver(graph: Graph,
                                                             settings: Settings) -> None:
    """``LoopGraph`` from a worker thread: transaction functions (retried ones included),
    ``Work``, reads and auto-commit statements on the async driver; on the loop's own thread it
    refuses rather than wait for itself."""
    attempts: list[int] = []

    def flaky(tx: ManagedTransaction) -> int:
        tx.run("CREATE (:LoopProbe {n: $n})", n=len(attempts))
        attempts.append(1)
        if len(attempts) == 1:  # the driver retries a transient error with a new transaction
            raise TransientError("a transient failure")
        record = tx.run("MATCH (p:LoopProbe) RETURN count(p) AS n").single()
        assert record is not None
        return int(record["n"])

    async def scenario() -> tuple[int, list[dict[str, Any]], int, int]:
        driver = create_async_driver(settings)
        try:
            loop_graph = LoopGraph(driver, settings.neo4j_database, asyncio.get_running_loop())
            with pytest.raises(RuntimeError, match="event loop's thread"):
                loop_graph.rows("RETURN 1 AS one")
            seen = await asyncio.to_thread(loop_graph.write, flaky)
            await asyncio.to_thread(loop_graph.write_work, partial(
                statements, Statement("CREATE (:LoopProbe {n: 9})")))
            rows = await asyncio.to_thread(loop_graph.rows,
                                           "MATCH (p:LoopProbe) RETURN p.n AS n ORDER BY n")
            summary = await asyncio.to_thread(loop_graph.auto_commit,
                                              "MATCH (p:LoopProbe) DELETE p")
            return seen, rows, summary.counters.nodes_deleted, len(attempts)
        finally:
            await driver.close()

    seen, rows, deleted, tries = asyncio.run(scenario())
    # The first attempt rolled back: only the retry's node and the Work's are stored.
    assert (seen, tries) == (1, 2)
    assert rows == [{"n": 1}, {"n": 9}]
    assert deleted == 2
