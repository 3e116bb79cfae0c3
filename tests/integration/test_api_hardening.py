"""Bounded cost before authentication and parsing, and clear errors for hostile input: body and
document limits (chunked too), linear validation, costs with real variables, JSON that would
crash a parser, huge cursors and identifiers, per-key rate and stream limits, read timeouts."""

from __future__ import annotations

import base64
import time
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from neo4j import Driver
from starlette.websockets import WebSocketDisconnect

from api.app import create_app
from graph.auth import Role, create_key
from graph.db import Graph, create_async_driver, read_rows
from graph.errors import ReadTimedOut
from graph.settings import Settings
from tests.helpers import empty_graph

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
