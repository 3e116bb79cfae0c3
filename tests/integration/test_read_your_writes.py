"""Read-your-writes through the served API (`personas serve` and httpx, as a chatbot reaches it):
a write's consistency token, given as `after` to a read on another connection, makes the read
see the write, in 1,000 rounds over HTTP and 1,000 through Kafka (`personas consume`); a token
of a write that never happens answers `pending` within the bound; malformed tokens are
BAD_USER_INPUT, never a 500."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import httpx2
import pytest
from confluent_kafka import KafkaError, Message, Producer
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from neo4j import Driver

from graph import consistency
from graph.auth import Role, create_key
from graph.db import Graph
from graph.ingest import stream
from graph.privacy import Pseudonymizer
from graph.settings import Settings
from tests.helpers import PERSONAS, empty_graph
from tests.integration.served import server_env
from tests.integration.test_api_served import free_port, wait_healthy
from tests.integration.test_mcp import error_text, payload

pytestmark = pytest.mark.integration

ROUNDS = int(os.environ.get("PERSONAS_RYW_ROUNDS", "100"))
"""Rounds per path: a few in the suite, 1,000 in `make test-read-your-writes`."""
HTTP_WORKERS = 4
KAFKA_WORKERS = 25
"""Rounds run side by side (each of its own user): a Kafka round waits for the consumer's
next batch (about 0.1-0.3 s), so 1,000 one after the other would take minutes."""
TAG = uuid.uuid4().hex[:8]
GROUP = f"ryw-group-{TAG}"
WAIT_MS = 2000
"""PERSONAS_CONSISTENCY_WAIT_MS of the served API: the default (500 ms) covers a Kafka round
on a quiet machine, but the suite's machine is shared and at times several times overloaded;
the rounds report their read latencies, to compare with the default."""


@dataclass(frozen=True)
class Api:
    base: str
    writer: dict[str, str]
    reader: dict[str, str]
    env: dict[str, str]
    settings: Settings
    graph: Graph

    def user_id(self, email: str) -> str:
        return Pseudonymizer(self.settings.pseudonym_key.get_secret_value()).user_id(
            "email", email)


@pytest.fixture(scope="module")
def api(driver: Driver, settings: Settings,
        tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    graph = empty_graph(driver, settings)
    writer = create_key(graph, Role.WRITER, "ryw writer").key
    reader = create_key(graph, Role.READER, "ryw reader").key
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {**server_env(settings), "PERSONAS_KAFKA_GROUP": GROUP,
           "PERSONAS_CONSISTENCY_WAIT_MS": str(WAIT_MS),
           # The rounds are many and quick: the per-key and per-address rates are not tested here.
           "PERSONAS_API_KEY_RATE_PER_SECOND": "100000", "PERSONAS_API_KEY_RATE_BURST": "100000",
           "PERSONAS_API_ADDRESS_RATE_PER_SECOND": "100000",
           "PERSONAS_API_ADDRESS_RATE_BURST": "100000"}
    log = tmp_path_factory.mktemp("ryw") / "serve.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([PERSONAS, "serve", "--host", "127.0.0.1", "--port", str(port)],
                                env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_healthy(proc, base, log)
        # The first write of a fresh server plans its statements: not a round's time.
        httpx.post(f"{base}/v1/events", json={"events": [envelope(f"warm-{TAG}@example.com", 1)]},
                   headers={"Authorization": f"Bearer {writer}"}, timeout=120,
                   ).raise_for_status()
        yield Api(base, {"Authorization": f"Bearer {writer}"},
                  {"Authorization": f"Bearer {reader}"}, env, settings, graph)
    finally:
        proc.terminate()
        proc.wait(timeout=120)


def envelope(email: str, n: int) -> dict[str, Any]:
    # The id names the address by a digest: an id is stored as it comes (it is not PII).
    digest = hashlib.sha256(email.encode()).hexdigest()[:16]
    return {"event_id": f"ryw-{TAG}-{digest}-{n}", "type": "purchase", "source": "web",
            "occurred_at": "2026-11-01T10:00:00+01:00", "user": {"email": email},
            "properties": {"item_id": f"sku-{n % 7}", "category": "Books", "price": "9.50"}}


def gql(client: httpx.Client, headers: dict[str, str], query: str,
        **variables: Any) -> dict[str, Any]:
    response = client.post("/graphql", json={"query": query, "variables": variables},
                           headers=headers)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


USER_EVENTS = ("query($id: ID!, $after: String) { user(id: $id, after: $after) "
               "{ events pending } }")
CHAT_PREFERENCES = ("query($id: ID!, $after: String) { chatContext(userId: $id, after: $after) "
                    "{ pending preferences { category weight source } } }")
INGEST = ("mutation($events: [JSON!]!) { ingestEvents(events: $events) "
          "{ accepted consistency { token } } }")
SET_PREFERENCE = ("mutation($id: ID!, $w: Float!) { setPreference(userId: $id, "
                  "category: \"books\", weight: $w) { weight consistency { token } } }")


def run_rounds(workers: int, rounds: int, one: Callable[[int, int], tuple[bool, bool]],
               ) -> tuple[int, int, int]:
    """``rounds`` write-then-read rounds over ``workers`` threads, worker ``w`` doing its
    ``i``-th round as ``one(w, i)`` -> (the fact was seen, the read was pending)."""
    lock = threading.Lock()
    totals = [0, 0, 0]

    def worker(w: int) -> None:
        for i in range(rounds // workers + (w < rounds % workers)):
            seen, pending = one(w, i)
            with lock:
                totals[0] += 1
                totals[1] += seen
                totals[2] += pending

    with ThreadPoolExecutor(workers) as pool:
        for done in [pool.submit(worker, w) for w in range(workers)]:
            done.result()
    return totals[0], totals[1], totals[2]


def test_a_write_over_http_is_read_back_every_time(api: Api) -> None:
    """Rounds cycle through `POST /v1/events`, `ingestEvents` and `setPreference`; each reads
    back, on a second connection, the fact it wrote: the user's event count, or the weight it
    just stated."""
    clients = [(httpx.Client(base_url=api.base, timeout=120),
                httpx.Client(base_url=api.base, timeout=120)) for _ in range(HTTP_WORKERS)]
    emails = [f"http-{TAG}-{w}@example.com" for w in range(HTTP_WORKERS)]
    events = [0] * HTTP_WORKERS

    def one(w: int, i: int) -> tuple[bool, bool]:
        writes, reads = clients[w]
        user_id = api.user_id(emails[w])
        kind = i % 3 if i > 0 else 0  # the user exists after the first round
        if kind == 0:
            events[w] += 1
            response = writes.post("/v1/events", json={"events": [envelope(emails[w],
                                                                            events[w])]},
                                   headers=api.writer)
            assert response.status_code == 200, response.text
            token = response.json()["consistency"]["token"]
            assert response.headers[consistency.HEADER] == token
        elif kind == 1:
            events[w] += 1
            written = gql(writes, api.writer, INGEST, events=[envelope(emails[w], events[w])])
            assert written["data"]["ingestEvents"]["accepted"] == 1, written
            token = written["data"]["ingestEvents"]["consistency"]["token"]
        else:
            weight = (i % 97 + 1) / 100
            written = gql(writes, api.writer, SET_PREFERENCE, id=user_id, w=weight)
            assert "errors" not in written, written
            token = written["data"]["setPreference"]["consistency"]["token"]
            read = gql(reads, api.reader, CHAT_PREFERENCES, id=user_id, after=token)
            assert "errors" not in read, read
            brief = read["data"]["chatContext"]
            stated = [p["weight"] for p in brief["preferences"]
                      if p["category"] == "books" and p["source"] == "explicit"]
            return stated == [weight], brief["pending"]
        read = gql(reads, api.reader, USER_EVENTS, id=user_id, after=token)
        assert "errors" not in read, read
        return read["data"]["user"]["events"] == events[w], read["data"]["user"]["pending"]

    started = time.monotonic()
    try:
        rounds, seen, pending = run_rounds(HTTP_WORKERS, ROUNDS, one)
    finally:
        for writes, reads in clients:
            writes.close()
            reads.close()
    print(f"HTTP: {rounds} rounds in {time.monotonic() - started:.1f} s")  # noqa: T201
    assert (rounds, seen, pending) == (ROUNDS, ROUNDS, 0)


def test_upsert_user_is_read_back(api: Api) -> None:
    email = f"upsert-{TAG}@example.com"
    with httpx.Client(base_url=api.base, timeout=120) as writes, \
            httpx.Client(base_url=api.base, timeout=120) as reads:
        written = gql(writes, api.writer,
                      "mutation($e: String!) { upsertUser(profile: {identifiers: "
                      "[{kind: \"email\", value: $e}], tier: \"gold\"}) "
                      "{ userId consistency { token } } }", e=email)
        assert "errors" not in written, written
        answer = written["data"]["upsertUser"]
        read = gql(reads, api.reader, "query($id: ID!, $after: String) { user(id: $id, "
                   "after: $after) { id pending } }", id=answer["userId"],
                   after=answer["consistency"]["token"])
    assert read["data"]["user"] == {"id": answer["userId"], "pending": False}


def delivered(producer: Producer, topic: str, key: str, value: bytes) -> tuple[int, int]:
    """Produce one message and wait for its acknowledgement: (partition, offset)."""
    got: list[Message] = []

    def report(err: KafkaError | None, msg: Message) -> None:
        assert err is None, err
        got.append(msg)

    producer.produce(topic, value, key=key, on_delivery=report)
    producer.flush(10)
    [msg] = got
    partition, offset = msg.partition(), msg.offset()
    assert partition is not None and offset is not None
    return partition, offset


@pytest.fixture
def consumer(api: Api, kafka_running: Settings, tmp_path: Path) -> Iterator[str]:
    """`personas consume` of a topic of this test's own, into the API's graph, with the
    API's consumer group; yields the topic."""
    topic = f"ryw-{uuid.uuid4().hex[:8]}"
    stream.ensure_topics(kafka_running, [topic, f"{topic}-dlq"])
    log = tmp_path / "consume.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [PERSONAS, "consume", "--topic", topic, "--dead-letter-topic", f"{topic}-dlq",
             "--group", GROUP],
            env={**api.env, "PERSONAS_KAFKA_BOOTSTRAP": kafka_running.kafka_bootstrap_servers,
                 "PERSONAS_CONSUMER_METRICS_PORT": "0"},
            stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        while "assigned" not in log.read_text():  # the group gave it the partitions
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.1)
        yield topic
    finally:
        proc.terminate()
        proc.wait(timeout=60)
        assert proc.returncode == 0, log.read_text()[-3000:]


def test_a_message_through_kafka_is_read_back_every_time(
        api: Api, kafka_running: Settings, consumer: str) -> None:
    """Each round produces an event, mints the token from the broker's acknowledgement, and
    reads the user's event count with it at once: the read waits for the consumer."""
    emails = [f"kafka-{TAG}-{w}@example.com" for w in range(KAFKA_WORKERS)]
    producers = [Producer({"bootstrap.servers": kafka_running.kafka_bootstrap_servers,
                           "acks": "all", "linger.ms": 0}) for _ in range(KAFKA_WORKERS)]
    clients = [httpx.Client(base_url=api.base, timeout=120) for _ in range(KAFKA_WORKERS)]
    waits: list[float] = []

    def one(w: int, i: int) -> tuple[bool, bool]:
        user_id = api.user_id(emails[w])
        partition, offset = delivered(producers[w], consumer, user_id,
                                      json.dumps(envelope(emails[w], i + 1)).encode())
        token = consistency.kafka_token(consumer, partition, offset)
        asked = time.monotonic()
        read = gql(clients[w], api.reader, USER_EVENTS, id=user_id, after=token)
        waits.append(time.monotonic() - asked)
        if read.get("errors"):  # the first event of a user not yet consumed: pending
            assert "pending" in read["errors"][0]["message"], read
            return False, True
        return read["data"]["user"]["events"] == i + 1, read["data"]["user"]["pending"]

    started = time.monotonic()
    try:
        rounds, seen, pending = run_rounds(KAFKA_WORKERS, ROUNDS, one)
    finally:
        for client in clients:
            client.close()
    waits.sort()
    print(f"Kafka: {rounds} rounds in {time.monotonic() - started:.1f} s; "  # noqa: T201
          "read with the token "
          f"p50 {waits[len(waits) // 2] * 1000:.0f} ms, p99 "
          f"{waits[int(len(waits) * 0.99)] * 1000:.0f} ms, over 500 ms: "
          f"{sum(w > 0.5 for w in waits)}")
    assert (rounds, seen, pending) == (ROUNDS, ROUNDS, 0)


def test_a_token_of_a_write_that_never_happens_answers_pending_within_the_bound(
        api: Api) -> None:
    user_id = api.user_id(f"never-{TAG}@example.com")
    never = consistency.kafka_token(f"ryw-never-{TAG}", 0, 10**12)
    with httpx.Client(base_url=api.base, timeout=120) as client:
        client.post("/v1/events", json={"events": [envelope(f"never-{TAG}@example.com", 1)]},
                    headers=api.writer).raise_for_status()
        for query, field in ((USER_EVENTS, "user"), (CHAT_PREFERENCES, "chatContext")):
            # Timed against the same read without a token: the machine may be slow.
            started = time.monotonic()
            assert gql(client, api.reader, query, id=user_id)["data"][field]["pending"] is False
            plain = time.monotonic() - started
            started = time.monotonic()
            read = gql(client, api.reader, query, id=user_id, after=never)
            took = time.monotonic() - started
            assert "errors" not in read, read
            assert read["data"][field]["pending"] is True
            # Bounded: the wait, then one read; the slack is for a loaded machine (the
            # client would wait 120 s for a read that hung).
            assert WAIT_MS / 1000 <= took < WAIT_MS / 1000 + 2 * plain + 5.0, (took, plain)
        # A user the pending write may be creating: NOT_FOUND, saying it is pending.
        read = gql(client, api.reader, USER_EVENTS, id="u_nobody", after=never)
    assert read["errors"][0]["extensions"]["code"] == "NOT_FOUND"
    assert "pending" in read["errors"][0]["message"]


def test_a_forged_bookmark_is_bad_user_input(api: Api) -> None:
    with httpx.Client(base_url=api.base, timeout=120) as client:
        response = client.post("/v1/events", json={"events": [envelope("forge@example.com",
                                                                        1)]},
                               headers=api.writer)
        real = consistency.decode(response.json()["consistency"]["token"]).bookmarks
        user_id = api.user_id("forge@example.com")
        # The real one, then forgeries: malformed, or the write's bookmark altered (Neo4j
        # 5.26 refuses those it did not hand out).
        read = gql(client, api.reader, USER_EVENTS, id=user_id,
                   after=consistency.bookmark_token(real))
        assert read["data"]["user"] == {"events": 1, "pending": False}, read
        for bookmarks in (["not-a-bookmark"], [b[:-4] + "AAAA" for b in real],
                          [b + "x" for b in real]):
            read = gql(client, api.reader, USER_EVENTS, id=user_id,
                       after=consistency.bookmark_token(bookmarks))
            assert [e["extensions"]["code"] for e in read["errors"]] == ["BAD_USER_INPUT"], read
            assert "Neo4j does not know its bookmarks" in read["errors"][0]["message"]


def raw_token(payload: object) -> str:
    return "v1." + base64.urlsafe_b64encode(json.dumps(payload).encode()).decode().rstrip("=")


@hypothesis_settings(max_examples=15, deadline=None, derandomize=True,
                     suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(token=st.one_of(
    st.text(max_size=80),
    st.lists(st.text(min_size=1, max_size=40), max_size=3).map(lambda b: raw_token({"b": b})),
    st.tuples(st.text(max_size=10), st.integers(), st.integers()).map(
        lambda k: raw_token({"k": list(k)}))))
def test_any_after_is_answered_never_a_500(api: Api, token: str) -> None:
    with httpx.Client(base_url=api.base, timeout=120) as client:
        for query in (USER_EVENTS, CHAT_PREFERENCES):
            response = client.post("/graphql", json={"query": query, "variables": {
                "id": api.user_id(f"http-{TAG}-0@example.com"), "after": token}},
                headers=api.reader)
            assert response.status_code == 200, response.text
            codes = [e["extensions"]["code"] for e in response.json().get("errors") or []]
            assert codes in ([], ["BAD_USER_INPUT"], ["NOT_FOUND"]), response.text


def test_mcp_tools_take_after_and_answer_pending(api: Api) -> None:
    email = f"mcp-{TAG}@example.com"
    never = consistency.kafka_token(f"ryw-never-{TAG}", 0, 10**12)

    async def run() -> tuple[dict[str, Any], ...]:
        async with httpx2.AsyncClient(headers=api.writer, timeout=120) as w_http, \
                Client(streamable_http_client(f"{api.base}/mcp", http_client=w_http)) as writer, \
                httpx2.AsyncClient(headers=api.reader, timeout=120) as r_http, \
                Client(streamable_http_client(f"{api.base}/mcp", http_client=r_http)) as reader:
            written = payload(await writer.call_tool("record_event", {
                "event": envelope(email, 1)}))
            after = written["consistency_token"]
            found = payload(await reader.call_tool("find_user", {
                "kind": "email", "value": email, "after": after}))
            stated = payload(await writer.call_tool("set_preference", {
                "user_id": found["user_id"], "category": "books", "weight": 0.75}))
            after = stated["consistency_token"]
            reads = [payload(await reader.call_tool(tool, {"user_id": found["user_id"],
                                                           "after": after}))
                     for tool in ("persona", "chat_context", "recommend")]
            late = payload(await reader.call_tool("chat_context", {
                "user_id": found["user_id"], "after": never}))
            bad = error_text(await reader.call_tool("persona", {
                "user_id": found["user_id"], "after": "forged"}))
            return written, found, *reads, late, {"bad": bad}

    written, found, *reads, late, bad = asyncio.run(run())
    assert written["status"] == "accepted"
    assert found["user_id"] == api.user_id(email) and found["pending"] is False
    assert [r["pending"] for r in reads] == [False, False, False]
    assert "books" in reads[1]["text"]  # the stated preference, in the chat context
    assert late["pending"] is True
    assert "BAD_USER_INPUT: `after` is not a consistency token" in bad["bad"]
