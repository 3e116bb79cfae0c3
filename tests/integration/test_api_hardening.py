"""Bounded cost before authentication and parsing, and clear errors for hostile input: body and
document limits (chunked too), linear validation, costs with real variables, JSON that would
crash a parser, huge cursors and identifiers, per-key rate and stream limits, read timeouts,
the rate of requests without a live key, `/metrics` kept private, and quick 503s while Neo4j is
unreachable."""

from __future__ import annotations

import base64
import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest
from fastapi.testclient import TestClient
from neo4j import Driver
from starlette.websockets import WebSocketDisconnect

from api.app import create_app
from graph.auth import Role, create_key, revoke_key
from graph.db import Graph, create_async_driver, read_rows
from graph.errors import ReadTimedOut
from graph.settings import Settings
from tests.helpers import METRICS_TOKEN, empty_graph

pytestmark = pytest.mark.integration

ROUTES = ("/graphql", "/v1/events", "/v1/webhooks/context", "/v1/webhooks/crm")


@pytest.fixture(scope="module")
def keyed(driver: Driver, settings: Settings) -> tuple[Graph, dict[str, str]]:
    graph = empty_graph(driver, settings)
    return graph, {role.value: create_key(graph, role, f"{role.value} hard").key
                   for role in Role}


@pytest.fixture(scope="module")
def small(settings: Settings) -> Settings:
    return settings.model_copy(update={"api_max_body_bytes": 4096,
                                       "api_max_document_bytes": 2048})


@pytest.fixture(scope="module")
def client(keyed: tuple[Graph, dict[str, str]], small: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(small)) as c:
        yield c


def auth(keys: dict[str, str], role: str = "reader") -> dict[str, str]:
    return {"Authorization": f"Bearer {keys[role]}"}


def gql(client: TestClient, keys: dict[str, str], query: str, **variables: Any) -> Any:
    response = client.post("/graphql", json={"query": query, "variables": variables},
                           headers=auth(keys))
    assert response.status_code == 200, response.text
    return response.json()


def code(body: dict[str, Any]) -> str | None:
    errors = body.get("errors")
    return errors[0]["extensions"]["code"] if errors else None


@pytest.mark.parametrize("route", ROUTES)
def test_bodies_over_the_limit_are_413_before_authentication(client: TestClient,
                                                             route: str) -> None:
    declared = client.post(route, content=b"x" * 5000,
                           headers={"content-type": "application/json"})

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted while streaming
        for _ in range(5):
            yield b"y" * 1000

    streamed = client.post(route, content=chunks(), headers={"content-type": "application/json"})
    for response in (declared, streamed):
        assert response.status_code == 413, response.text
        assert response.json()["error"]["code"] == "LIMIT_EXCEEDED"
        assert "over the limit of 4096 bytes" in response.json()["error"]["message"]


def test_a_document_over_its_limit_is_refused_before_parsing(
        client: TestClient, keyed: tuple[Graph, dict[str, str]]) -> None:
    _, keys = keyed
    body = gql(client, keys, "{ categories { name } }" + " " * 3000)
    assert code(body) == "LIMIT_EXCEEDED"
    assert "PERSONAS_API_MAX_DOCUMENT_BYTES" in body["errors"][0]["message"]


def fragment_chain(n: int) -> str:
    fragments = [f"fragment F{i} on Query {{ ...F{i + 1} ...F{i + 1} }}" for i in range(n)]
    fragments.append(f"fragment F{n} on Query {{ categories {{ name }} }}")
    return "query { ...F0 }\n" + "\n".join(fragments)


def test_nested_fragments_are_refused_fast(keyed: tuple[Graph, dict[str, str]],
                                           settings: Settings) -> None:
    _, keys = keyed
    with TestClient(create_app(settings)) as client:
        started = time.perf_counter()
        body = gql(client, keys, fragment_chain(17))
        elapsed = time.perf_counter() - started
    assert code(body) == "LIMIT_EXCEEDED", body
    assert elapsed < 1.0, elapsed  # 0.18 s and doubling per fragment before


def test_costs_count_variables_and_defaults(client: TestClient,
                                            keyed: tuple[Graph, dict[str, str]]) -> None:
    _, keys = keyed
    nested = ("query($n: Int!) { users(first: $n) { edges { node { sessions(first: $n) { edges "
              "{ node { interactions(first: $n) { edges { node { eventId } } } } } } } } } }")
    assert code(gql(client, keys, nested, n=100)) == "LIMIT_EXCEEDED"
    assert code(gql(client, keys, nested, n=2)) is None
    # Omitted: users 20 x sessions 10 x interactions 20 (was counted 1 x 1 x 1).
    omitted = ("{ users { edges { node { sessions { edges { node { interactions { edges { "
               "node { eventId } } } } } } } } } }")
    assert code(gql(client, keys, omitted)) == "LIMIT_EXCEEDED"


@pytest.mark.parametrize("route", ["/graphql", "/v1/events", "/v1/webhooks/context"])
@pytest.mark.parametrize("body", [b"[" * 1500 + b"]" * 1500,
                                  b'{"query": "{ categories { name } }", "n": ' + b"9" * 2000
                                  + b"}"])
def test_json_that_breaks_parsers_is_400(keyed: tuple[Graph, dict[str, str]],
                                         settings: Settings, route: str, body: bytes) -> None:
    _, keys = keyed
    with TestClient(create_app(settings)) as client:
        response = client.post(route, content=body, headers={
            **auth(keys, "admin"), "content-type": "application/json"})
    assert response.status_code == 400, response.text
    assert response.json()["error"]["code"] == "BAD_USER_INPUT"


def test_huge_cursors_and_identifiers_are_bad_user_input(
        client: TestClient, keyed: tuple[Graph, dict[str, str]]) -> None:
    _, keys = keyed
    for millis in ("9" * 30, "-" + "9" * 19, "9" * 400):
        cursor = base64.urlsafe_b64encode(f"run:{millis}|r-1".encode()).decode()
        body = gql(client, keys, "query($c: String) { segmentationRuns(after: $c) { edges { "
                   "cursor } } }", c=cursor)
        assert code(body) == "BAD_USER_INPUT", body
    body = gql(client, keys, "query($c: String) { users(after: $c) { edges { cursor } } }",
               c="x" * 1500)
    assert code(body) == "BAD_USER_INPUT"
    body = gql(client, keys, 'query($v: String!) { userByIdentifier(kind: "email", value: $v) '
               "{ id } }", v="a" * 3000 + "@example.com")
    assert code(body) == "BAD_USER_INPUT"
    assert "at most 200 characters" in body["errors"][0]["message"]


def test_a_key_over_its_rate_is_429(keyed: tuple[Graph, dict[str, str]],
                                    settings: Settings) -> None:
    _, keys = keyed
    slow = settings.model_copy(update={"api_key_rate_per_second": 0.5, "api_key_rate_burst": 2})
    with TestClient(create_app(slow)) as client:
        answers = [client.post("/graphql", json={"query": "{ categories { name } }"},
                               headers=auth(keys)) for _ in range(3)]
        other = client.post("/graphql", json={"query": "{ categories { name } }"},
                            headers=auth(keys, "admin"))
    assert [a.status_code for a in answers] == [200, 200, 429]
    assert answers[2].json()["error"]["code"] == "RATE_LIMITED"
    assert int(answers[2].headers["Retry-After"]) >= 1
    assert other.status_code == 200  # each key has its own rate


def _operations_over_one_websocket(client: TestClient, key: str, n: int,
                                   between: Any = None) -> list[str | None]:
    """``n`` query operations, one after the other, over one graphql-transport-ws connection;
    the code of each answer (None: data). ``between(i)`` runs before operation ``i``."""
    codes: list[str | None] = []
    with client.websocket_connect("/graphql", subprotocols=["graphql-transport-ws"],
                                  headers={"Authorization": f"Bearer {key}"}) as ws:
        ws.send_json({"type": "connection_init"})
        assert ws.receive_json()["type"] == "connection_ack"
        for i in range(n):
            if between is not None:
                between(i)
            ws.send_json({"id": str(i), "type": "subscribe",
                          "payload": {"query": "{ categories { name } }"}})
            msg = ws.receive_json()
            assert msg["id"] == str(i) and msg["type"] in ("next", "error"), msg
            errors = msg["payload"].get("errors") if msg["type"] == "next" else msg["payload"]
            codes.append(errors[0]["extensions"]["code"] if errors else None)
            if msg["type"] == "next":
                assert ws.receive_json() == {"id": str(i), "type": "complete"}
    return codes


def test_operations_over_a_websocket_count_against_the_keys_rate(
        keyed: tuple[Graph, dict[str, str]], settings: Settings) -> None:
    """Queries sent as graphql-transport-ws operations are each counted as an HTTP request
    is (issue 19: the key was counted once, at the handshake, and one connection then ran
    queries without end, whatever PERSONAS_API_KEY_RATE_PER_SECOND said)."""
    _, keys = keyed
    slow = settings.model_copy(update={"api_key_rate_per_second": 0.01,
                                       "api_key_rate_burst": 4})
    with TestClient(create_app(slow)) as client:
        codes = _operations_over_one_websocket(client, keys["reader"], 6)
    # The handshake takes one token of the burst of 4, each operation one more.
    assert codes == [None, None, None, "RATE_LIMITED", "RATE_LIMITED", "RATE_LIMITED"]


def test_a_revoked_key_runs_nothing_more_over_its_open_websocket(
        keyed: tuple[Graph, dict[str, str]], settings: Settings) -> None:
    """The key of an open connection is resolved again (through the key cache) before each
    operation, as subscriptions already did before each poll."""
    graph, _ = keyed
    created = create_key(graph, Role.READER, "revoked on an open websocket")
    fresh = settings.model_copy(update={"api_key_cache_seconds": 0.0})

    def revoke_before_the_third(i: int) -> None:
        if i == 2:
            revoke_key(graph, created.info.id)

    with TestClient(create_app(fresh)) as client:
        codes = _operations_over_one_websocket(client, created.key, 4, revoke_before_the_third)
    assert codes == [None, None, "UNAUTHENTICATED", "UNAUTHENTICATED"]


def test_a_key_holds_a_bounded_number_of_streams(keyed: tuple[Graph, dict[str, str]],
                                                 settings: Settings) -> None:
    _, keys = keyed
    one = settings.model_copy(update={"api_max_streams_per_key": 1,
                                      "api_subscription_poll_seconds": 0.2})
    with TestClient(create_app(one)) as client, client.websocket_connect(
            "/graphql", subprotocols=["graphql-transport-ws"], headers=auth(keys)) as ws:
        ws.send_json({"type": "connection_init"})
        assert ws.receive_json()["type"] == "connection_ack"
        for op in ("1", "2"):
            ws.send_json({"id": op, "type": "subscribe",
                          "payload": {"query": "subscription { segmentationFinished { id } }"}})
        refused = ws.receive_json()
        ws.send_json({"id": "1", "type": "complete"})
    assert refused["id"] == "2" and refused["type"] == "next", refused
    assert refused["payload"]["errors"][0]["extensions"]["code"] == "LIMIT_EXCEEDED"


def test_reads_stop_at_their_server_side_timeout(settings: Settings,
                                                 neo4j_running: Settings) -> None:
    import asyncio

    async def slow() -> None:
        driver = create_async_driver(settings)
        try:
            await read_rows(driver, settings.neo4j_database,
                            "UNWIND range(1, 1000000000) AS x RETURN sum(x) AS s",
                            timeout=0.2)
        finally:
            await driver.close()

    started = time.monotonic()
    with pytest.raises(ReadTimedOut) as refused:
        asyncio.run(slow())
    assert refused.value.code == "TIMEOUT"
    assert time.monotonic() - started < 10


def test_a_key_holds_a_bounded_number_of_websockets(keyed: tuple[Graph, dict[str, str]],
                                                    settings: Settings) -> None:
    _, keys = keyed
    one = settings.model_copy(update={"api_max_streams_per_key": 1})
    with TestClient(create_app(one)) as client:
        with client.websocket_connect("/graphql", subprotocols=["graphql-transport-ws"],
                                      headers=auth(keys)) as ws:
            ws.send_json({"type": "connection_init"})
            assert ws.receive_json()["type"] == "connection_ack"
            with pytest.raises(WebSocketDisconnect) as refused, client.websocket_connect(
                    "/graphql", subprotocols=["graphql-transport-ws"], headers=auth(keys)):
                pass
            assert refused.value.code == 1008
            # Another key has its own allowance.
            with client.websocket_connect("/graphql", subprotocols=["graphql-transport-ws"],
                                          headers=auth(keys, "admin")) as other:
                other.send_json({"type": "connection_init"})
                assert other.receive_json()["type"] == "connection_ack"
        # Closed connections give their place back.
        with client.websocket_connect("/graphql", subprotocols=["graphql-transport-ws"],
                                      headers=auth(keys)) as again:
            again.send_json({"type": "connection_init"})
            assert again.receive_json()["type"] == "connection_ack"


def test_requests_without_a_live_key_are_limited_per_address(
        keyed: tuple[Graph, dict[str, str]], settings: Settings) -> None:
    _, keys = keyed
    # A token per 100 s: none comes back during the test.
    slow = settings.model_copy(update={"api_address_rate_per_second": 0.01,
                                       "api_address_rate_burst": 4})
    query = {"query": "{ categories { name } }"}
    made_up = {"Authorization": "Bearer pg_0badc0de_" + "x" * 32}
    with TestClient(create_app(slow)) as client:
        # The key is not known yet: its first request takes a token of the address too.
        keyed_first = client.post("/graphql", json=query, headers=auth(keys))
        anonymous = [client.post("/graphql", json=query),
                     client.post("/v1/events", json={"events": []}),
                     client.post("/graphql", json=query, headers=made_up)]
        refused = [client.post("/graphql", json=query, headers=made_up),
                   client.post("/v1/events", content=b"x" * 100_000),  # before the body limit
                   client.get("/healthz")]
        # A live key is limited per key, not per address: the flood does not shut it out.
        keyed_after = client.post("/graphql", json=query, headers=auth(keys))
        elsewhere = TestClient(client.app, client=("10.0.0.9", 4000)).post("/graphql",
                                                                            json=query)
    assert keyed_first.status_code == 200 and keyed_after.status_code == 200
    assert [code(a.json()) for a in (anonymous[0], anonymous[2])] == ["UNAUTHENTICATED"] * 2
    assert anonymous[1].status_code == 401
    for answer in refused:
        assert answer.status_code == 429, answer.text
        assert answer.json()["error"]["code"] == "RATE_LIMITED"
        assert int(answer.headers["Retry-After"]) >= 1
    assert code(elsewhere.json()) == "UNAUTHENTICATED"  # another address has its own bucket


def test_metrics_need_the_token_or_a_local_client(settings: Settings,
                                                  neo4j_running: Settings) -> None:
    with TestClient(create_app(settings)) as client:
        scraped = client.get("/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"})
        wrong = client.get("/metrics", headers={"Authorization": "Bearer not-the-token"})
        none = client.get("/metrics")
    assert scraped.status_code == 200 and "personas_http_requests_total" in scraped.text
    for answer in (wrong, none):
        assert answer.status_code == 401 and answer.json()["error"]["code"] == "UNAUTHENTICATED"
    untokened = settings.model_copy(update={"metrics_token": None})
    app = create_app(untokened)
    with TestClient(app, client=("127.0.0.1", 4000)) as local, \
            TestClient(app, client=("192.0.2.7", 4000)) as remote:
        assert local.get("/metrics").status_code == 200
        far = remote.get("/metrics")
    assert far.status_code == 403 and far.json()["error"]["code"] == "FORBIDDEN"


class Plug:
    """A TCP forwarder in front of Neo4j that can be pulled out: open connections drop and new
    ones are refused, as when the server dies, without stopping the shared test server."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.1)
        self.port = int(self.listener.getsockname()[1])
        self.sockets: list[socket.socket] = []
        self.pulled = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.pulled.is_set():
            try:
                client, _ = self.listener.accept()
            except TimeoutError:
                continue
            upstream = socket.create_connection(self.target)
            self.sockets += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()
        self.listener.close()

    @staticmethod
    def _pipe(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        for s in (source, sink):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)

    def pull(self) -> None:
        self.pulled.set()
        for s in self.sockets:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
        deadline = time.monotonic() + 5
        while self.listener.fileno() != -1 and time.monotonic() < deadline:
            time.sleep(0.05)


EVENT = {"event_id": "unplugged-1", "type": "purchase", "source": "web",
         "occurred_at": "2026-11-01T10:00:00+01:00", "user": {"cookie": "ck-unplugged"},
         "properties": {"item_id": "sku-1", "category": "Books", "price": "9.50"}}


def test_requests_answer_503_within_seconds_while_neo4j_is_unreachable(
        keyed: tuple[Graph, dict[str, str]], settings: Settings) -> None:
    _, keys = keyed
    target = urlsplit(settings.bolt_uri)
    plug = Plug(target.hostname or "127.0.0.1", target.port or 7687)
    through = settings.model_copy(update={"neo4j_uri": f"bolt://127.0.0.1:{plug.port}",
                                          "api_unavailable_wait_s": 1.0})
    query = {"query": "{ categories { name } }"}
    with TestClient(create_app(through)) as client:
        # Both keys are now cached: what follows measures the database calls, not the key.
        posted = client.post("/v1/events", json={"events": [EVENT]}, headers=auth(keys, "writer"))
        assert posted.status_code == 200 and posted.json()["accepted"] == 1, posted.text
        assert client.post("/graphql", json=query, headers=auth(keys)).status_code == 200
        plug.pull()
        again = {**EVENT, "event_id": "unplugged-2"}
        started = time.monotonic()
        events = client.post("/v1/events", json={"events": [again]}, headers=auth(keys, "writer"))
        events_s = time.monotonic() - started
        started = time.monotonic()
        read = client.post("/graphql", json=query, headers=auth(keys))
        read_s = time.monotonic() - started
    # Before: 62 s for the event batch (the driver's 30 s of retries, twice).
    assert events.status_code == 503, events.text
    assert events.json()["error"]["code"] == "UNAVAILABLE" and events.headers["Retry-After"]
    assert events_s < 5, events_s
    assert read.status_code == 503 and read.headers["Retry-After"]
    assert [e["extensions"]["code"] for e in read.json()["errors"]] == ["UNAVAILABLE"]
    assert read_s < 8, read_s
