"""The API as users reach it: `personas serve` in a process of its own on a free port, driven by
real clients (httpx over HTTP, `websockets` for graphql-transport-ws), not the in-process test
client. Every transport: GraphQL over HTTP, subscriptions, a REST route and both webhooks."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import socket
import subprocess
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from neo4j import Driver
from prometheus_client.parser import text_string_to_metric_families
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from graph.auth import Role, create_key, revoke_key
from graph.crm.webhook import signature
from graph.db import Graph
from graph.privacy import Pseudonymizer
from graph.segments.run import run_segmentation
from graph.settings import Settings
from tests.helpers import PERSONAS, empty_graph, load_demo

pytestmark = pytest.mark.integration

USERS = 40
CACHE_SECONDS = 0.5
POLL_SECONDS = 0.2
START_TIMEOUT_S = 90.0
WS_PROTOCOL = "graphql-transport-ws"
MAX_BODY_BYTES = 100_000
BODY_TIMEOUT_S = 2.0
HEADER_TIMEOUT_S = 2.0
CRM_MAPPING = Path(__file__).resolve().parents[2] / "docs" / "crm-mapping.example.yaml"
CRM_SECRET = "whsec-served-secret"


@dataclass(frozen=True)
class Served:
    base: str
    graph: Graph
    keys: dict[str, str]
    user_id: str
    log: Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_healthy(proc: subprocess.Popen[bytes], base: str, log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        assert proc.poll() is None, log.read_text()[-3000:]
        try:
            if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"personas serve did not get ready: {log.read_text()[-3000:]}")


@contextmanager
def serving(command: Sequence[str], env: dict[str, str], base: str, log: Path,
            cwd: Path | None = None) -> Iterator[subprocess.Popen[bytes]]:
    """A served API process, ready (``/readyz``) on ``base``, its output in ``log``; stopped
    after (killed when it does not stop within 30 s)."""
    with log.open("wb") as out:
        proc = subprocess.Popen(list(command), cwd=cwd, env=env, stdout=out,
                                stderr=subprocess.STDOUT)
    try:
        wait_healthy(proc, base, log)
        yield proc
    finally:
        stop(proc)


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@pytest.fixture(scope="module")
def served(driver: Driver, settings: Settings,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    graph = empty_graph(driver, settings)
    load_demo(graph, tmp_path_factory.mktemp("served-events"), USERS, seed=7,
              key=settings.pseudonym_key.get_secret_value())
    run = run_segmentation(graph, runs_dir=settings.resolved_runs_dir)
    keys = {role.value: create_key(graph, role, f"{role.value} served").key for role in Role}
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {**os.environ,
           "PERSONAS_NEO4J_URI": settings.bolt_uri,
           "PERSONAS_NEO4J_PASSWORD": settings.neo4j_password.get_secret_value(),
           "PERSONAS_PSEUDONYM_KEY": settings.pseudonym_key.get_secret_value(),
           "PERSONAS_RUNS_DIR": str(settings.resolved_runs_dir),
           "PERSONAS_API_KEY_CACHE_SECONDS": str(CACHE_SECONDS),
           "PERSONAS_API_SUBSCRIPTION_POLL_SECONDS": str(POLL_SECONDS),
           "PERSONAS_API_MAX_BODY_BYTES": str(MAX_BODY_BYTES),
           "PERSONAS_API_BODY_TIMEOUT_S": str(BODY_TIMEOUT_S),
           "PERSONAS_API_HEADER_TIMEOUT_S": str(HEADER_TIMEOUT_S),
           "PERSONAS_CRM_MAPPING_FILE": str(CRM_MAPPING),
           "PERSONAS_CRM_WEBHOOK_SECRET": CRM_SECRET}
    env.pop("PERSONAS_DEMO", None)
    log = tmp_path_factory.mktemp("served") / "serve.log"
    with serving([PERSONAS, "serve", "--host", "127.0.0.1", "--port", str(port)], env, base, log):
        yield Served(base, graph, keys, run.user_ids[0], log)


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def test_a_body_that_trickles_in_is_408_within_its_time(served: Served) -> None:
    """A slow client (slowloris) sends its headers and then a byte every half second of a body
    it says is 1,000 bytes: answered 408 TIMEOUT, and the connection closed, once
    PERSONAS_API_BODY_TIMEOUT_S has passed (before, the connection stayed open as long as the
    bytes kept coming: 400 such connections held a minute each)."""
    port = int(served.base.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(b"POST /graphql HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Authorization: Bearer " + served.keys["reader"].encode() +
                     b"\r\nContent-Length: 1000\r\n\r\n{")
        started = time.monotonic()
        sock.settimeout(0.5)
        answer = b""
        while time.monotonic() - started < 20:
            try:
                chunk = sock.recv(4096)
            except TimeoutError:
                with contextlib.suppress(OSError):
                    sock.sendall(b" ")
                continue
            if not chunk:
                break  # closed by the server
            answer += chunk
        took = time.monotonic() - started
    assert answer.startswith(b"HTTP/1.1 408"), answer
    assert b'"code":"TIMEOUT"' in answer
    assert BODY_TIMEOUT_S <= took < BODY_TIMEOUT_S + 8, took


def read_until_closed(sock: socket.socket, seconds: float, trickle: bytes = b"",
                      trickle_for: float = 0.0) -> bytes:
    """What the server sends until it closes the connection (or ``seconds`` pass), sending
    ``trickle`` one byte every half second for the first ``trickle_for`` seconds (a byte sent
    as the server closes would reset the connection and lose its answer)."""
    started, answer, sent = time.monotonic(), b"", 0
    sock.settimeout(0.5)
    while time.monotonic() - started < seconds:
        try:
            chunk = sock.recv(4096)
        except TimeoutError:
            if sent < len(trickle) and time.monotonic() - started < trickle_for:
                with contextlib.suppress(OSError):
                    sock.sendall(trickle[sent:sent + 1])
                sent += 1
            continue
        if not chunk:
            return answer
        answer += chunk
    raise AssertionError(f"still open after {seconds} s: {answer!r}")


@pytest.mark.parametrize("kind", ["trickled", "silent", "second request trickled"])
def test_headers_that_do_not_arrive_in_time_are_408_and_closed(served: Served,
                                                               kind: str) -> None:
    """Slowloris on headers: uvicorn has no header timeout, so a client sending a header byte
    every half second (or nothing at all after connecting, or trickling the headers of a
    second request on a kept-alive connection) held its connection for ever. Now answered
    408 TIMEOUT and closed once PERSONAS_API_HEADER_TIMEOUT_S has passed, while a client that
    sends its headers at once on another connection meanwhile is served."""
    port = int(served.base.rsplit(":", 1)[1])
    trickle = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 200
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        started = time.monotonic()
        if kind == "second request trickled":
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            first = b""
            while b"\r\n\r\n" not in first or not first.rstrip().endswith(b"}"):
                first += sock.recv(4096)
            assert first.startswith(b"HTTP/1.1 200"), first
            started = time.monotonic()
        meanwhile = httpx.get(f"{served.base}/healthz", timeout=10)
        answer = read_until_closed(sock, HEADER_TIMEOUT_S + 8,
                                   b"" if kind == "silent" else trickle,
                                   HEADER_TIMEOUT_S - 0.6 - (time.monotonic() - started))
        took = time.monotonic() - started
    assert meanwhile.status_code == 200
    assert answer.startswith(b"HTTP/1.1 408"), answer
    assert b'"code":"TIMEOUT"' in answer and b"PERSONAS_API_HEADER_TIMEOUT_S" in answer
    assert HEADER_TIMEOUT_S - 0.5 <= took < HEADER_TIMEOUT_S + 6, took


def test_a_kept_alive_connection_outliving_the_header_deadline_is_served(
        served: Served) -> None:
    """The deadline runs from a request's first byte, not from the connection's opening: three
    requests sent at once each, over a connection that lives longer than the header timeout
    (each pause shorter than uvicorn's keep-alive), are all answered."""
    port = int(served.base.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        started = time.monotonic()
        for _ in range(3):
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            answer = b""
            while not answer.rstrip().endswith(b"}"):
                chunk = sock.recv(4096)
                assert chunk, answer
                answer += chunk
            assert answer.startswith(b"HTTP/1.1 200"), answer
            time.sleep(HEADER_TIMEOUT_S * 0.7)
    assert time.monotonic() - started > HEADER_TIMEOUT_S * 1.5


MAX_HEADER_BYTES = 65_536  # the default of PERSONAS_API_MAX_HEADER_BYTES
UPGRADE = (b"GET /graphql HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
           b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
           b"Sec-WebSocket-Protocol: graphql-transport-ws\r\n")


@pytest.mark.parametrize("kind", ["one huge cookie", "many headers", "sent in small pieces",
                                  "pipelined after a good request", "a WebSocket upgrade"])
def test_headers_over_their_size_are_431_and_closed(served: Served, kind: str) -> None:
    """uvicorn (httptools) reads headers of any size: a 20 MB cookie was held whole and
    answered 200, so a few clients could exhaust the process's memory. Now the request line
    and headers together are bounded by PERSONAS_API_MAX_HEADER_BYTES: 431 LIMIT_EXCEEDED, in
    the request's turn (a pipelined request before it is answered first), and closed."""
    port = int(served.base.rsplit(":", 1)[1])
    big = b"a" * (MAX_HEADER_BYTES + 1000)
    request = {
        "one huge cookie": b"GET /healthz HTTP/1.1\r\nHost: x\r\nCookie: " + big + b"\r\n\r\n",
        "many headers": b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + b"X-A: b\r\n" * 10_000
        + b"\r\n",
        "sent in small pieces": b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-B: " + big + b"\r\n\r\n",
        "pipelined after a good request": b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
        b"POST /graphql HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nX-C: " + big
        + b"\r\n\r\n{}",
        "a WebSocket upgrade": UPGRADE + b"X-D: " + big + b"\r\n\r\n",
    }[kind]
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        piece = 2048 if kind == "sent in small pieces" else len(request)
        with contextlib.suppress(OSError):  # the server may close before it has it all
            for at in range(0, len(request), piece):
                sock.sendall(request[at:at + piece])
                if piece < len(request):
                    time.sleep(0.002)
        answer = read_until_closed(sock, 20)
    if kind == "pipelined after a good request":
        assert answer.startswith(b"HTTP/1.1 200"), answer
        answer = answer[answer.index(b"HTTP/1.1 ", 10):]
    assert answer.startswith(b"HTTP/1.1 431"), answer
    assert b'"code":"LIMIT_EXCEEDED"' in answer and b"PERSONAS_API_MAX_HEADER_BYTES" in answer
    within = httpx.get(f"{served.base}/healthz", timeout=10,
                       headers={"Cookie": "a" * (MAX_HEADER_BYTES - 2000)})
    assert within.status_code == 200


SMUGGLED = b"GET /v1/never HTTP/1.1\r\nHost: x\r\n\r\n"


@pytest.mark.parametrize("request_bytes", [
    b"POST /graphql HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked"
    b"\r\n\r\n0\r\n\r\n" + SMUGGLED,
    b"POST /graphql HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 40"
    b"\r\n\r\n0\r\n\r\n" + SMUGGLED,
    b"POST /graphql HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nContent-Length: 41\r\n\r\n{}"
    + SMUGGLED,
    b"POST /graphql HTTP/1.1\r\nHost: x\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\n"
    + SMUGGLED,
    b"POST /graphql HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"FFFFFFFFFFFFFFFFFF\r\nabc\r\n0\r\n\r\n",
    b"POST /graphql HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999999999999\r\n\r\n{}",
    b"GET /healthz HTTP/1.1\nHost: x\n\n",
    b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-A: a\x00b\r\n\r\n",
    b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
], ids=["CL.TE", "TE.CL", "two lengths", "TE with a space", "chunk size overflow",
        "length past 64 bits", "bare LF", "NUL in a header", "HTTP/2 preface"])
def test_ambiguous_or_malformed_requests_are_400_json_and_nothing_smuggled(
        served: Served, request_bytes: bytes) -> None:
    """Request smuggling (a Content-Length beside a Transfer-Encoding, two lengths, an
    obfuscated Transfer-Encoding) and malformed framing: the parser refuses each (held), and
    the answer is now the API's JSON error, not uvicorn's plain text; the request smuggled
    behind it is never answered."""
    port = int(served.base.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(request_bytes)
        answer = read_until_closed(sock, 20)
    assert answer.startswith(b"HTTP/1.1 400"), answer
    assert answer.count(b"\r\n\r\n") == 1, answer  # one response only
    assert b'"code":"BAD_USER_INPUT"' in answer and b"application/json" in answer


def test_graphql_over_http(served: Served) -> None:
    query = "query($id: ID!) { user(id: $id) { id persona { id name } } }"
    response = httpx.post(f"{served.base}/graphql", headers=bearer(served.keys["reader"]),
                          json={"query": query, "variables": {"id": served.user_id}}, timeout=30)
    assert response.status_code == 200, response.text
    user = response.json()["data"]["user"]
    assert user["id"] == served.user_id and user["persona"]["name"]
    anonymous = httpx.post(f"{served.base}/graphql", json={"query": query,
                                                           "variables": {"id": served.user_id}})
    assert anonymous.json()["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"


@pytest.mark.parametrize(("method", "path", "body", "status", "code"), [
    ("POST", "/graphql", {"json": [{"query": "{ __typename }"}]}, 400, "BAD_USER_INPUT"),
    ("POST", "/graphql", {"content": b"{ __typename }",
                          "headers": {"content-type": "text/plain"}}, 400, "BAD_USER_INPUT"),
    ("POST", "/graphql", {"json": {"query": "query A { __typename } query B { __typename }",
                                   "operationName": "C"}}, 400, "BAD_USER_INPUT"),
    ("DELETE", "/graphql", {}, 405, "METHOD_NOT_ALLOWED"),
    ("GET", "/no/such/route", {}, 404, "NOT_FOUND"),
    # A trailing slash was redirected to a Location built from the client's Host header.
    ("POST", "/graphql/", {"json": {"query": "{ __typename }"},
                           "headers": {"host": "evil.example"}}, 404, "NOT_FOUND"),
    ("GET", "/explorer/", {"headers": {"host": "evil.example"}}, 404, "NOT_FOUND"),
    # FastAPI's Swagger UI and ReDoc pages ran scripts from public CDNs on the API's origin.
    ("GET", "/docs", {}, 404, "NOT_FOUND"), ("GET", "/redoc", {}, 404, "NOT_FOUND"),
    ("GET", "/docs/oauth2-redirect", {}, 404, "NOT_FOUND"),
    # A subscription over plain HTTP ran as a query: INTERNAL_SERVER_ERROR ("Cannot return
    # null for non-nullable field"); subscriptions go over the WebSocket.
    ("POST", "/graphql", {"json": {"query": "subscription { segmentationFinished { id } }"}},
     400, "BAD_USER_INPUT"),
    ("GET", "/graphql", {"params": {"query": "subscription { segmentationFinished { id } }"}},
     400, "BAD_USER_INPUT"),
])
def test_the_frameworks_own_refusals_are_json_with_a_code(
        served: Served, method: str, path: str, body: dict[str, Any], status: int,
        code: str) -> None:
    """strawberry answered its transport refusals (a batch, a content type, an unknown operation
    name) in plain text and FastAPI its own with ``{"detail": ...}``: every refusal is the API's
    JSON error, with a code and the reason."""
    headers = {**bearer(served.keys["reader"]), **body.pop("headers", {})}
    response = httpx.request(method, f"{served.base}{path}", headers=headers, timeout=30,
                             follow_redirects=False, **body)
    assert response.status_code == status, response.text
    assert "location" not in response.headers
    error = response.json()["error"]
    assert error["code"] == code and error["message"], error


def test_every_405_names_the_methods_its_path_takes(served: Served) -> None:
    """RFC 9110: a 405 carries `Allow`. Starlette named only the first route matching the
    path (`PUT /graphql` answered `Allow: GET`, though POST is taken too). Each path the
    OpenAPI document lists, with each method it does not take: 405 and exactly its methods."""
    paths = httpx.get(f"{served.base}/openapi.json", timeout=30).json()["paths"]
    assert "/graphql" in paths
    for template, operations in paths.items():
        path = template.replace("{run_id}", "r").replace("{kind}", "elbow")
        taken = {method.upper() for method in operations}
        expected = taken | ({"HEAD"} if "GET" in taken else set())
        for method in sorted({"GET", "POST", "PUT", "DELETE", "PATCH"} - taken):
            response = httpx.request(method, f"{served.base}{path}", timeout=30,
                                     headers=bearer(served.keys["admin"]))
            assert response.status_code == 405, (method, path, response.text)
            allowed = {m.strip() for m in response.headers.get("allow", "").split(",")}
            assert taken <= allowed <= expected, (method, path, response.headers.get("allow"))
            assert response.json()["error"]["code"] == "METHOD_NOT_ALLOWED"


def test_the_schema_is_introspected_once_per_request_without_a_key(served: Served) -> None:
    """Introspection needs no key: twenty aliases of `__schema` in a 2.8 kB request made the
    served process spend 0.32 s of CPU answering 647 kB. Refused now before execution; one
    `__schema` (what GraphiQL sends) is answered."""
    fields = "{ types { name fields { name type { name ofType { name } } } } }"
    many = "{ " + " ".join(f"a{i}: __schema {fields}" for i in range(20)) + " }"
    refused = httpx.post(f"{served.base}/graphql", json={"query": many}, timeout=60)
    [error] = refused.json()["errors"]
    assert error["extensions"]["code"] == "LIMIT_EXCEEDED" and "__schema" in error["message"]
    assert len(refused.content) < 1000
    once = httpx.post(f"{served.base}/graphql", json={"query": f"{{ __schema {fields} }}"},
                      timeout=60).json()
    assert "errors" not in once and once["data"]["__schema"]["types"]


def test_chat_context_lines_and_replay_through_the_served_api(served: Served) -> None:
    query = """query($id: ID!, $at: DateTime) { chatContext(userId: $id, maxTokens: 300,
      asOf: $at) { text asOf lines { text sources { kind id at } } } }"""
    at = datetime.now(UTC).isoformat()

    def ask() -> str:
        response = httpx.post(f"{served.base}/graphql", headers=bearer(served.keys["reader"]),
                              json={"query": query, "variables": {"id": served.user_id,
                                                                  "at": at}}, timeout=30)
        assert response.status_code == 200, response.text
        return response.text

    body = ask()
    first = json.loads(body)["data"]["chatContext"]
    assert "\n".join(line["text"] for line in first["lines"]) == first["text"]
    persona = first["lines"][0]
    assert persona["text"].startswith("Persona: ")
    assert [s["kind"] for s in persona["sources"]] == ["SEGMENTATION_RUN"]
    assert ask() == body  # a past moment answers the same, byte for byte


@pytest.mark.parametrize(("method", "path", "body"), [
    ("POST", "/graphql", b'{"query": "mutation { ingestEvents(events: []) { accepted } }"}'),
    ("POST", "/v1/events", b'{"events": []}'),
    ("POST", "/mcp", b'{"jsonrpc": "2.0", "id": 1, "method": "tools/list"}'),
    ("GET", "/healthz", b""),
])
def test_a_credential_header_sent_twice_is_refused(served: Served, method: str, path: str,
                                                   body: bytes) -> None:
    """Two `Authorization` headers (or two `X-API-Key`): FastAPI used the first, the MCP gate
    and the rate limits the last, so a reader key and a writer key in one request wrote
    through `/v1/events` one way round and were refused by `/mcp` the other. 400, whatever
    the order, on every route; a WebSocket handshake is refused too."""
    reader, writer = served.keys["reader"], served.keys["writer"]
    for first, second in ((reader, writer), (writer, reader)):
        for name, value in (("authorization", "Bearer {}"), ("x-api-key", "{}")):
            headers = [(name, value.format(first)), (name, value.format(second)),
                       ("content-type", "application/json"),
                       ("accept", "application/json, text/event-stream")]
            response = httpx.request(method, f"{served.base}{path}", headers=headers,
                                     content=body, timeout=30)
            assert response.status_code == 400, (path, name, response.text[:200])
            assert response.json()["error"]["code"] == "BAD_USER_INPUT"

    async def handshake() -> None:
        async with connect(served.base.replace("http", "ws") + "/graphql",
                           subprotocols=[WS_PROTOCOL],
                           additional_headers=[("Authorization", f"Bearer {reader}"),
                                               ("Authorization", f"Bearer {writer}")]):
            pass

    with pytest.raises(InvalidStatus):
        asyncio.run(handshake())


def test_events_route_and_context_webhook(served: Served) -> None:
    event = {"event_id": "served-1", "type": "purchase", "source": "web",
             "occurred_at": "2026-11-01T10:00:00+01:00", "user": {"cookie": "ck-served"},
             "properties": {"item_id": "sku-served", "category": "Books", "price": "9.50"}}
    writer = bearer(served.keys["writer"])
    response = httpx.post(f"{served.base}/v1/events", json={"events": [event]},
                          headers=writer, timeout=30)
    assert response.status_code == 200, response.text
    assert response.json()["accepted"] == 1
    assert served.graph.rows("MATCH (i:Interaction {event_id: 'served-1'}) RETURN count(i) AS n"
                             ) == [{"n": 1}]
    push = {"schema_version": 1,
            "locations": [{"id": "served-town", "city": "Served", "country": "DE",
                           "lat": 50.0, "lon": 8.0}],
            "weather": [{"id": "served-wx-1", "location_id": "served-town",
                         "at": "2026-11-28T12:00:00Z", "temp_c": 3.5, "condition": "rain",
                         "source": "test"}]}
    hook = httpx.post(f"{served.base}/v1/webhooks/context", content=json.dumps(push),
                      headers={**writer, "content-type": "application/json"}, timeout=30)
    assert hook.status_code == 200, hook.text
    assert hook.json()["weather"] == 1
    reader = httpx.post(f"{served.base}/v1/webhooks/context", content=json.dumps(push),
                        headers=bearer(served.keys["reader"]), timeout=30)
    assert reader.status_code == 403 and reader.json()["error"]["code"] == "FORBIDDEN"


async def receive(ws: ClientConnection, timeout: float = 30.0) -> dict[str, Any]:
    message: dict[str, Any] = json.loads(await asyncio.wait_for(ws.recv(), timeout))
    return message


async def open_acked(base: str, key: str) -> ClientConnection:
    """A graphql-transport-ws connection, initialised and acknowledged."""
    ws = await connect(base.replace("http", "ws") + "/graphql", subprotocols=[WS_PROTOCOL],
                       additional_headers=bearer(key))
    await ws.send(json.dumps({"type": "connection_init"}))
    assert (await receive(ws))["type"] == "connection_ack"
    return ws


async def open_stream(base: str, key: str, op_id: str, query: str) -> ClientConnection:
    ws = await open_acked(base, key)
    await ws.send(json.dumps({"id": op_id, "type": "subscribe", "payload": {"query": query}}))
    return ws


async def closed_after(served: Served, message: str) -> tuple[int | None, str]:
    """The close code and reason the server answers ``message`` (raw text) with, on an
    acknowledged connection; any other answer fails the test."""
    async with await open_acked(served.base, served.keys["reader"]) as ws:
        await ws.send(message)
        try:
            answer = await asyncio.wait_for(ws.recv(), 30)
        except ConnectionClosed as closed:
            return (closed.rcvd.code, closed.rcvd.reason) if closed.rcvd else (None, "")
    raise AssertionError(f"answered {answer!r}")


def test_a_subscription_streams_a_new_run(served: Served) -> None:
    async def scenario() -> dict[str, Any]:
        ws = await open_stream(served.base, served.keys["reader"], "runs",
                               "subscription { segmentationFinished { id } }")
        async with ws:
            assert ws.subprotocol == WS_PROTOCOL
            # The stream reads its starting run within a poll of subscribing; a run takes
            # seconds, so one recorded after a few polls is new to it.
            await asyncio.sleep(POLL_SECONDS * 3)
            run = await asyncio.to_thread(run_segmentation, served.graph, n_clusters=3)
            message = await receive(ws, timeout=60)
            return {"run": run.run_id, "message": message}

    got = asyncio.run(scenario())
    assert got["message"]["type"] == "next", got
    assert got["message"]["payload"]["data"]["segmentationFinished"]["id"] == got["run"]


def test_a_revoked_key_ends_its_open_stream(served: Served) -> None:
    created = create_key(served.graph, Role.READER, "revoked while streaming")

    async def scenario() -> list[dict[str, Any]]:
        ws = await open_stream(served.base, created.key, "s",
                               "subscription { segmentationFinished { id } }")
        async with ws:
            await asyncio.sleep(POLL_SECONDS * 2)  # the stream is open and polling
            revoke_key(served.graph, created.info.id)
            return [await receive(ws, timeout=CACHE_SECONDS + POLL_SECONDS + 10),
                    await receive(ws)]

    error, complete = asyncio.run(scenario())
    assert error["type"] == "next" and error["id"] == "s", error
    assert error["payload"]["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"
    assert complete == {"id": "s", "type": "complete"}


def test_the_crm_webhook_takes_signed_deliveries_only(served: Served) -> None:
    body = json.dumps([{"customer_no": "C-served", "tier": "gold",
                        "updated_at": "2026-11-01T10:00:00Z"}]).encode()
    at = int(time.time())
    headers = {"X-Personas-Timestamp": str(at), "content-type": "application/json",
               "X-Personas-Signature": signature(CRM_SECRET, at, body)}
    with httpx.Client(base_url=served.base, timeout=30) as client:
        applied = client.post("/v1/webhooks/crm", content=body, headers=headers)
        replayed = client.post("/v1/webhooks/crm", content=body, headers=headers)
        forged = client.post("/v1/webhooks/crm", content=body, headers={
            **headers, "X-Personas-Signature": signature("not-the-secret", at, body)})
    assert applied.status_code == 200, applied.text
    assert applied.json()["accepted"] == 1
    assert replayed.status_code == 409 and replayed.json()["error"]["code"] == "CONFLICT"
    assert forged.status_code == 401 and forged.json()["error"]["code"] == "UNAUTHENTICATED"


def crm_delivery(body: bytes, at: int | None = None, secret: str = CRM_SECRET,
                 ) -> dict[str, str]:
    at = int(time.time()) if at is None else at
    return {"X-Personas-Timestamp": str(at), "content-type": "application/json",
            "X-Personas-Signature": signature(secret, at, body)}


def crm_users(served: Served, settings: Settings, crm_id: str) -> int:
    """Users the CRM id identifies (stored as its keyed hash)."""
    digest = Pseudonymizer(settings.pseudonym_key.get_secret_value()).digest("crm_id", crm_id)
    return int(served.graph.rows(
        "MATCH (:Identifier {kind: 'crm_id', hash: $hash})-[:IDENTIFIES]->(u:User) "
        "RETURN count(u) AS n", hash=digest)[0]["n"])


def test_the_crm_webhook_refuses_every_unsigned_stale_or_odd_delivery(served: Served,
                                                                     settings: Settings,
                                                                     ) -> None:
    """The CRM webhook, driven live as an attacker would: no signature, no timestamp, the wrong
    secret, a signature over another body or time, a time past the tolerance either way, a
    time that is not epoch seconds, a replay (also with the hex in capitals), then bodies of
    every shape under a good signature (empty, not UTF-8, not JSON, a scalar, deep, a key
    repeated, chunked). Each a 4xx with a code; nothing written but the one good delivery."""
    crm_id = "C-hostile"
    body = json.dumps([{"customer_no": crm_id, "tier": "silver",
                        "updated_at": "2026-11-01T10:00:00Z"}]).encode()
    now = int(time.time())
    good = crm_delivery(body, now)
    unsigned = {k: v for k, v in good.items() if k != "X-Personas-Signature"}
    untimed = {k: v for k, v in good.items() if k != "X-Personas-Timestamp"}
    attempts: list[tuple[str, dict[str, str], bytes, int, str]] = [
        ("no signature", unsigned, body, 401, "UNAUTHENTICATED"),
        ("no timestamp", untimed, body, 401, "UNAUTHENTICATED"),
        ("wrong secret", crm_delivery(body, now, "guess"), body, 401, "UNAUTHENTICATED"),
        ("another body", good, body.replace(b"silver", b"gold"), 401, "UNAUTHENTICATED"),
        ("another time", {**good, "X-Personas-Timestamp": str(now + 1)}, body, 401,
         "UNAUTHENTICATED"),
        ("stale", crm_delivery(body, now - 400), body, 401, "UNAUTHENTICATED"),
        ("future", crm_delivery(body, now + 400), body, 401, "UNAUTHENTICATED"),
        ("not epoch seconds", {**good, "X-Personas-Timestamp": "1e9"}, body, 401,
         "UNAUTHENTICATED"),
        ("negative", {**good, "X-Personas-Timestamp": "-1"}, body, 401, "UNAUTHENTICATED"),
        ("signature not hex", {**good, "X-Personas-Signature": "sha256=" + "z" * 64}, body,
         401, "UNAUTHENTICATED"),
    ]
    with httpx.Client(base_url=served.base, timeout=30) as client:
        for what, headers, sent, status, code in attempts:
            answer = client.post("/v1/webhooks/crm", content=sent, headers=headers)
            assert (answer.status_code, answer.json()["error"]["code"]) == (status, code), what
        assert crm_users(served, settings, crm_id) == 0
        applied = client.post("/v1/webhooks/crm", content=body, headers=good)
        assert applied.status_code == 200 and applied.json()["accepted"] == 1, applied.text
        upper = {**good, "X-Personas-Signature": good["X-Personas-Signature"].upper()}
        for headers in (good, upper):
            again = client.post("/v1/webhooks/crm", content=body, headers=headers)
            assert again.status_code == 409, again.text
            assert again.json()["error"]["code"] == "CONFLICT"
        bodies = {
            "empty": b"",
            "not UTF-8": b'[{"customer_no": "C-x\xff"}]',
            "not JSON": b"customer_no=C-x",
            "a scalar": b"42",
            "deep": b"[" * 5000 + b"]" * 5000,
            "a key repeated": b'[{"customer_no": "C-x", "customer_no": "C-y", '
                              b'"updated_at": "2026-11-01T10:00:00Z"}]',
        }
        for what, sent in bodies.items():
            answer = client.post("/v1/webhooks/crm", content=sent, headers=crm_delivery(sent))
            assert answer.status_code == 400, (what, answer.text)
            assert answer.json()["error"]["code"] == "BAD_USER_INPUT", what
        repeated = client.post("/v1/webhooks/crm", content=bodies["a key repeated"],
                               headers=crm_delivery(bodies["a key repeated"], now - 1))
        assert 'key "customer_no" repeated' in repeated.json()["error"]["message"]
        chunked_body = json.dumps({"customer_no": "C-chunked", "tier": "gold",
                                   "updated_at": "2026-11-01T10:00:00Z"}).encode()
        chunked = client.post("/v1/webhooks/crm", headers=crm_delivery(chunked_body),
                              content=iter([chunked_body[:10], chunked_body[10:]]))
        assert chunked.status_code == 200 and chunked.json()["accepted"] == 1, chunked.text
    assert crm_users(served, settings, "C-x") == crm_users(served, settings, "C-y") == 0
    assert crm_users(served, settings, crm_id) == 1
    assert crm_users(served, settings, "C-chunked") == 1


def test_one_crm_delivery_sent_many_times_at_once_is_applied_once(served: Served,
                                                                  settings: Settings) -> None:
    """A CRM retrying a delivery it thinks timed out, several times at the same moment: one
    answer 200, every other 409 CONFLICT (none 500), and the delivery applied once."""
    body = json.dumps([{"customer_no": f"C-burst-{i}", "points": 10 + i,
                        "updated_at": "2026-11-01T10:00:00Z"} for i in range(20)]).encode()
    headers = crm_delivery(body)
    start = threading.Barrier(8)

    def send() -> int:
        start.wait()
        return httpx.post(f"{served.base}/v1/webhooks/crm", content=body, headers=headers,
                          timeout=60).status_code

    with ThreadPoolExecutor(max_workers=8) as pool:
        statuses = sorted(pool.map(lambda _: send(), range(8)))
    assert statuses == [200] + [409] * 7, statuses
    deliveries = served.graph.rows("MATCH (d:WebhookDelivery {id: $id}) RETURN count(d) AS n",
                                   id=hashlib.sha256(headers["X-Personas-Signature"].lower()
                                                     .encode()).hexdigest())
    assert deliveries == [{"n": 1}]
    assert all(crm_users(served, settings, f"C-burst-{i}") == 1 for i in range(20))


@pytest.mark.parametrize(("path", "body"), [
    ("/graphql", b'{"query": "{ __typename }", "query": "{ categories { name } }"}'),
    ("/graphql", b'{"query": "query($id: ID!) { user(id: $id) { id } }", '
                 b'"variables": {"id": "a", "id": "b"}}'),
    ("/v1/events", b'{"events": [{"event_id": "dup-1", "event_id": "dup-2", "type": "view", '
                   b'"occurred_at": "2026-11-02T10:00:00Z", "user": {"email": "d@example.com"},'
                   b' "session_id": "s-dup"}]}'),
    ("/v1/events", b'{"events": [], "events": [{"event_id": "dup-3"}]}'),
    ("/v1/webhooks/context", b'{"weather": [], "weather": []}'),
])
def test_a_key_repeated_in_a_body_is_refused(served: Served, path: str, body: bytes) -> None:
    """Two values for one key (a body checked by one parser and run by another would mean two
    things): 400 BAD_USER_INPUT naming the key, on every JSON route, and nothing written."""
    headers = {**bearer(served.keys["admin"]), "content-type": "application/json"}
    answer = httpx.post(f"{served.base}{path}", content=body, headers=headers, timeout=30)
    assert answer.status_code == 400, answer.text
    error = answer.json()["error"]
    assert error["code"] == "BAD_USER_INPUT" and "repeated in one object" in error["message"]
    assert served.graph.rows("MATCH (i:Interaction) WHERE i.event_id STARTS WITH 'dup-' "
                             "RETURN count(i) AS n") == [{"n": 0}]


def test_a_key_repeated_in_a_websocket_message_is_refused(served: Served) -> None:
    """The same over graphql-transport-ws: a `subscribe` whose payload names `query` twice is
    not run (the connection is closed with 4400, as for any message it cannot read)."""
    message = ('{"id": "d", "type": "subscribe", "payload": {"query": '
               '"subscription { segmentationFinished { id } }", "query": "{ __typename }"}}')
    assert asyncio.run(closed_after(served, message))[0] == 4400


@pytest.mark.parametrize("message", [
    "[1, 2]", "42", '"subscribe"', "null", '{"type": 7}', '{"type": ["subscribe"]}',
    '{"id": {"x": 1}, "type": "subscribe", "payload": {"query": "{ __typename }"}}',
    '{"id": 1, "type": "complete"}',
    '{"id": "p", "type": "subscribe", "payload": "{ __typename }"}',
    '{"id": "p", "type": "subscribe", "payload": [1]}',
    '{"id": "p", "type": "subscribe", "payload": {"query": 5}}',
    '{"id": "p", "type": "subscribe", "payload": {"query": "{ __typename }", "variables": [1]}}',
    '{"id": "p", "type": "subscribe", "payload": {"query": "{ __typename }", '
    '"operationName": 3}}',
    '{"type": "ping", "payload": [1]}',
    # Every answer echoes the operation's id: one of 100 kB went back whole with each result
    # (under the test server's message limit: 10 kB).
    '{"id": "%s", "type": "subscribe", "payload": {"query": "{ __typename }"}}' % ("i" * 129),
    '{"id": "%s", "type": "complete"}' % ("i" * 10_000),
])
def test_websocket_messages_of_any_shape_close_with_4400(served: Served, message: str) -> None:
    """graphql-transport-ws messages that are JSON but not the protocol's shape (an array, an
    `id` that is not a string, a `payload` that is not an object): strawberry indexed them
    unchecked, raised (a traceback in the log per message) and dropped the connection with
    no close code. Now each closes it with 4400 and the reason, and nothing is logged as an
    error."""
    before = served.log.read_text()
    code, reason = asyncio.run(closed_after(served, message))
    assert code == 4400 and reason, (code, reason)
    time.sleep(0.2)
    assert "Traceback" not in served.log.read_text()[len(before):]


def test_websocket_messages_are_bounded(served: Served) -> None:
    async def scenario() -> tuple[dict[str, Any], int | None]:
        padded = "subscription { segmentationFinished { id } } # " + "x" * 30_000
        ws = await open_stream(served.base, served.keys["reader"], "big", padded)
        async with ws:
            refused = await receive(ws)
            # Over the body limit, a message is refused by the server's WebSocket layer
            # before it is parsed: the connection closes with 1009 (message too big).
            await ws.send("x" * (MAX_BODY_BYTES + 1))
            try:
                await asyncio.wait_for(ws.recv(), 30)
            except ConnectionClosed as closed:
                return refused, closed.rcvd.code if closed.rcvd else None
        raise AssertionError("the connection stayed open")

    refused, close_code = asyncio.run(scenario())
    assert refused["id"] == "big" and refused["type"] in ("next", "error"), refused
    errors = refused["payload"]["errors"] if refused["type"] == "next" else refused["payload"]
    assert errors[0]["extensions"]["code"] == "LIMIT_EXCEEDED", refused
    assert close_code == 1009


def test_requests_without_a_live_key_are_rate_limited_per_address(served: Served) -> None:
    query = {"query": "{ categories { name } }"}
    made_up = bearer("pg_0badc0de_" + "x" * 32)
    time.sleep(40 / 20)  # a full bucket, whatever keyless requests the tests before made
    with httpx.Client(base_url=served.base, timeout=30) as client:
        # Default limits: 20/s, bursts of 40. 120 requests at once from this address, half
        # without a key, half with a made-up one; a reader key meanwhile.
        answers = [client.post("/graphql", json=query, headers=made_up if i % 2 else None)
                   for i in range(120)]
        reader = client.post("/graphql", json=query, headers=bearer(served.keys["reader"]))
        time.sleep(40 / 20)  # the address's bucket fills again (and for the tests after this)
        scraped = client.get("/metrics")  # this host: no token needed
    statuses = [a.status_code for a in answers]
    assert statuses[:40] == [200] * 40  # the burst: GraphQL answers UNAUTHENTICATED
    assert answers[0].json()["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"
    limited = [a for a in answers if a.status_code == 429]
    assert len(limited) >= 40 and set(statuses) == {200, 429}
    assert all(a.json()["error"]["code"] == "RATE_LIMITED" for a in limited)
    assert all(int(a.headers["Retry-After"]) >= 1 for a in limited)
    assert reader.status_code == 200 and "errors" not in reader.json()
    assert scraped.status_code == 200
    assert 'route="unmatched",status="429"' in scraped.text


def test_identical_batches_sent_at_once_store_each_event_once(served: Served) -> None:
    """A client retrying after a timeout sends the batch again while the first is still being
    written: through the served process, by the REST route and by `ingestEvents` at the same
    moment, every copy answers 200 and each event is stored once."""
    mutation = ("mutation($events: [JSON!]!) { ingestEvents(events: $events) "
                "{ accepted duplicates rejected } }")
    headers = bearer(served.keys["writer"])
    rounds, size = 4, 40
    for round_ in range(rounds):
        events = [{"event_id": f"twice-{round_}-{i}", "type": "purchase", "source": "web",
                   "occurred_at": f"2026-11-02T10:{i:02d}:00+00:00",
                   "user": {"email": f"twice{round_}-{i % 9}@example.com"},
                   "session_id": f"twice-s{round_}-{i % 9}",
                   "properties": {"item_id": f"twice-sku-{i % 5}", "category": "Books",
                                  "price": "4.25"}} for i in range(size)]
        start = threading.Barrier(3)

        def rest(events: list[dict[str, Any]] = events,
                 start: threading.Barrier = start) -> dict[str, int]:
            start.wait()
            response = httpx.post(f"{served.base}/v1/events", json={"events": events},
                                  headers=headers, timeout=60)
            assert response.status_code == 200, response.text
            body = response.json()
            return {"accepted": body["accepted"], "duplicates": body["duplicates"]}

        def graphql(events: list[dict[str, Any]] = events,
                    start: threading.Barrier = start) -> dict[str, int]:
            start.wait()
            response = httpx.post(f"{served.base}/graphql", headers=headers, timeout=60,
                                  json={"query": mutation, "variables": {"events": events}})
            assert response.status_code == 200, response.text
            body = response.json()
            assert "errors" not in body, body
            result = body["data"]["ingestEvents"]
            assert result["rejected"] == 0, result
            return {"accepted": result["accepted"], "duplicates": result["duplicates"]}

        with ThreadPoolExecutor(max_workers=3) as pool:
            answers = [f.result() for f in [pool.submit(rest), pool.submit(graphql),
                                            pool.submit(rest)]]
        assert sum(a["accepted"] for a in answers) == size, answers
        assert sum(a["duplicates"] for a in answers) == 2 * size, answers
    stored = served.graph.rows(
        "MATCH (i:Interaction) WHERE i.event_id STARTS WITH 'twice-' "
        "RETURN count(i) AS n, count(DISTINCT i.event_id) AS ids")[0]
    assert stored == {"n": rounds * size, "ids": rounds * size}


MISREAD = {"events": [{"event_id": "charset-1", "type": "add_to_cart", "source": "web",
                       "occurred_at": "2026-11-01T10:00:00Z", "user": {"cookie": "ck-charset"},
                       "properties": {"item_id": "sku-charset", "category": "Ã©tÃ©"}}]}
"""A Latin-1 body whose bytes are valid UTF-8 too: read as UTF-8, the category `Ã©tÃ©` the
client sent became `été`, in silence."""


@pytest.mark.parametrize("charset", ["latin-1", "ISO-8859-1", '"windows-1252"', "utf-16",
                                     "UTF-16LE", "no-such-charset", "utf-8; charset=latin-1"])
@pytest.mark.parametrize("path", ["/graphql", "/v1/events", "/v1/webhooks/context",
                                  "/v1/webhooks/crm", "/mcp"])
def test_a_body_declared_in_another_charset_is_refused_not_misread(served: Served, path: str,
                                                                   charset: str) -> None:
    """Every route read its body as UTF-8 whatever charset the request declared: a Latin-1
    body that happened to be valid UTF-8 was misread without a word. JSON is UTF-8 (RFC 8259):
    a declared charset other than UTF-8 (or US-ASCII) is 415 UNSUPPORTED_MEDIA_TYPE, nothing
    read or written."""
    body = json.dumps(MISREAD, ensure_ascii=False).encode("latin-1")
    response = httpx.post(f"{served.base}{path}", content=body, timeout=30, headers={
        **bearer(served.keys["admin"]), "content-type": f"application/json; charset={charset}",
        "accept": "application/json, text/event-stream"})
    assert response.status_code == 415, response.text
    error = response.json()["error"]
    assert error["code"] == "UNSUPPORTED_MEDIA_TYPE" and "UTF-8" in error["message"]
    assert served.graph.rows("MATCH (i:Interaction {event_id: 'charset-1'}) RETURN count(i) AS n"
                             ) == [{"n": 0}]


@pytest.mark.parametrize("content_type", ["APPLICATION/JSON", 'Application/Json; Charset="UTF-8"',
                                          "application/json;charset=utf8",
                                          "application/JSON; charset=US-ASCII"])
def test_json_media_types_are_read_whatever_their_case(served: Served,
                                                       content_type: str) -> None:
    """Media types and charset names are case-insensitive (RFC 9110): strawberry refused
    `APPLICATION/JSON` ("Unsupported content type")."""
    response = httpx.post(f"{served.base}/graphql", content=b'{"query": "{ __typename }"}',
                          headers={**bearer(served.keys["reader"]),
                                   "content-type": content_type}, timeout=30)
    assert response.status_code == 200, response.text
    assert response.json() == {"data": {"__typename": "Query"}}


@pytest.mark.parametrize("path", ["/graphql", "/v1/events", "/mcp"])
def test_a_content_type_sent_twice_is_refused(served: Served, path: str) -> None:
    """Which of two Content-Type headers counts differs between readers (Starlette the first,
    a dict of the headers the last): such a request means two things, like two keys."""
    for types in (("application/json", "text/plain"), ("text/plain", "application/json")):
        headers = [*bearer(served.keys["admin"]).items(), *(("content-type", t) for t in types),
                   ("accept", "application/json, text/event-stream")]
        response = httpx.post(f"{served.base}{path}", headers=headers, timeout=30,
                              content=b'{"query": "{ __typename }", "events": []}')
        assert response.status_code == 400, response.text
        assert response.json()["error"]["code"] == "BAD_USER_INPUT"
        assert "content-type" in response.json()["error"]["message"]


def scraped_routes(base: str) -> dict[tuple[str, str], float]:
    """`personas_http_requests_total` by (route, status), from `/metrics` (this host: no
    token needed)."""
    text = httpx.get(f"{base}/metrics", timeout=30).text
    found: dict[tuple[str, str], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "personas_http_requests_total":
                key = (sample.labels["route"], sample.labels["status"])
                found[key] = found.get(key, 0.0) + sample.value
    return found


def test_mcp_requests_are_counted_under_their_route(served: Served) -> None:
    """`/mcp` was counted (and logged) as `unmatched`, beside scans of unknown paths. Now under
    its own route; unknown paths of any shape still share `unmatched`, so user input does not
    grow the label set."""
    httpx.get(f"{served.base}/scan", timeout=30)  # the labels a scan and a scrape make
    scraped_routes(served.base)
    before = scraped_routes(served.base)
    message = {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}
    for _ in range(3):
        answer = httpx.post(f"{served.base}/mcp", json=message, timeout=30, headers={
            **bearer(served.keys["reader"]), "accept": "application/json, text/event-stream"})
        assert answer.status_code == 200, answer.text
    for n in range(20):
        httpx.get(f"{served.base}/scan-{n}/{'x' * n}", headers=bearer(served.keys["reader"]),
                  timeout=30)
    after = scraped_routes(served.base)
    assert after.get(("/mcp", "200"), 0) - before.get(("/mcp", "200"), 0) == 3
    assert after[("unmatched", "404")] - before.get(("unmatched", "404"), 0) == 20
    assert {route for route, _ in after} - {route for route, _ in before} <= {"/mcp"}


def test_the_app_bounds_headers_under_any_server(served: Served, settings: Settings,
                                                 tmp_path: Path) -> None:
    """The app served by plain uvicorn (its factory, as one would run it by hand or under
    another process manager), not `personas serve`: uvicorn's default parser (httptools) has
    no limit, so a 100 kB cookie or 20,000 headers reached the app, which answered 200. The app
    now refuses them itself, 431 LIMIT_EXCEEDED (the memory the server spent reading them is
    its own to bound: docs/security.md)."""
    # served.py imports this module's serving helpers: imported here, not at the top.
    from tests.integration.served import server_env

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = server_env(settings)
    uvicorn = Path(PERSONAS).parent / "uvicorn"
    with serving([str(uvicorn), "--factory", "api.app:create_app", "--host", "127.0.0.1",
                  "--port", str(port)], env, base, tmp_path / "uvicorn.log"):
        for headers in ([("cookie", "a" * 100_000)], [(f"x-h{i}", "y") for i in range(20_000)]):
            response = httpx.get(f"{base}/healthz", headers=headers, timeout=60)
            assert response.status_code == 431, response.text[:200]
            assert response.json()["error"]["code"] == "LIMIT_EXCEEDED"
        assert httpx.get(f"{base}/healthz", headers={"cookie": "a" * 30_000},
                         timeout=30).status_code == 200


BLANKS = ["\u200b", "\u200c\u200d", "\ufeff", "\u2060 \u3000", "\u202e", "\u3164", "\x00"]
"""Values that show nothing (zero-width, format and filler characters, spaces, a control)."""


def test_values_that_show_nothing_are_refused_on_every_write_route(served: Served,
                                                                   settings: Settings) -> None:
    """Identifiers, ids and categories made only of invisible characters were stored: a user
    whose email looks empty, an item and a category that look like nothing. Each is now a
    rejected record with its reason (a dead letter on Kafka and files), BAD_USER_INPUT in
    GraphQL, and nothing is written."""
    writer = bearer(served.keys["writer"])
    events = []
    for n, blank in enumerate(BLANKS):
        events += [
            {"event_id": f"blank-user-{n}", "type": "page_view", "source": "web",
             "occurred_at": "2026-11-01T10:00:00Z", "user": {"email": blank}},
            {"event_id": f"blank-item-{n}", "type": "add_to_cart", "source": "web",
             "occurred_at": "2026-11-01T10:00:00Z", "user": {"cookie": "ck-blank"},
             "properties": {"item_id": blank}},
            {"event_id": f"blank-category-{n}", "type": "page_view", "source": "web",
             "occurred_at": "2026-11-01T10:00:00Z", "user": {"cookie": "ck-blank"},
             "properties": {"category": blank}},
            {"event_id": blank, "type": "page_view", "source": "web",
             "occurred_at": "2026-11-01T10:00:00Z", "user": {"cookie": "ck-blank"}}]
    response = httpx.post(f"{served.base}/v1/events", json={"events": events}, headers=writer,
                          timeout=60)
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert [r["status"] for r in results] == ["rejected"] * len(events)
    assert all("invisible characters" in r["reason"] or "at least 1 character" in r["reason"]
               for r in results), results
    pseudonymizer = Pseudonymizer(settings.pseudonym_key.get_secret_value())
    hashes = [pseudonymizer.digest("email", blank) for blank in BLANKS]
    assert served.graph.rows("MATCH (i:Identifier) WHERE i.hash IN $hashes "
                             "RETURN count(i) AS n", hashes=hashes) == [{"n": 0}]
    assert served.graph.rows("MATCH (i:Interaction) WHERE i.event_id STARTS WITH 'blank-' "
                             "RETURN count(i) AS n") == [{"n": 0}]
    mutation = ("mutation($value: String!) { upsertUser(profile: {identifiers: "
                "[{kind: \"email\", value: $value}]}) { userId } }")
    for blank in BLANKS:
        answer = httpx.post(f"{served.base}/graphql", headers=writer, timeout=30, json={
            "query": mutation, "variables": {"value": blank}}).json()
        assert answer["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT", answer
        assert "invisible characters" in answer["errors"][0]["message"]


@pytest.mark.parametrize(("day", "reason"), [
    ("9999-12-31", "date is more than a day in the future"),
    ("2999-01-01", "date is more than a day in the future"),
    ("1969-12-31", "date is before 1970"), ("0001-01-01", "date is before 1970")])
def test_crm_dates_out_of_bounds_are_refused(served: Served, settings: Settings, day: str,
                                             reason: str) -> None:
    """A CRM `signupDate` of 9999-12-31 was stored, through `upsertUser` and the signed CRM
    webhook alike: dates have the plausible-time bounds every event time has."""
    mutation = ("mutation($day: Date!) { upsertUser(profile: {identifiers: [{kind: \"crm_id\", "
                "value: \"C-far-date\"}], signupDate: $day}) { userId } }")
    answer = httpx.post(f"{served.base}/graphql", headers=bearer(served.keys["writer"]),
                        json={"query": mutation, "variables": {"day": day}}, timeout=30).json()
    assert answer["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT", answer
    assert reason in answer["errors"][0]["message"]
    body = json.dumps([{"customer_no": "C-far-date", "member_since": day,
                        "updated_at": "2026-11-01T10:00:00Z"}]).encode()
    hook = httpx.post(f"{served.base}/v1/webhooks/crm", content=body, headers=crm_delivery(body),
                      timeout=30)
    assert hook.status_code == 200, hook.text
    assert hook.json()["results"][0]["status"] == "rejected"
    assert "member_since" in hook.json()["results"][0]["reason"]
    assert crm_users(served, settings, "C-far-date") == 0


ALIASED = "mutation($e: [JSON!]!) { " + " ".join(
    f"a{n}: ingestEvents(events: $e) {{ accepted }}" for n in range(20)) + " }"
SPREAD = ("mutation($e: [JSON!]!) { ...Twice ... on Mutation { c: ingestEvents(events: $e) "
          "{ accepted } } } fragment Twice on Mutation { a: ingestEvents(events: $e) { accepted } "
          "b: ingestEvents(events: $e) { accepted } }")


@pytest.mark.parametrize(("query", "per_field"), [(ALIASED, 60), (SPREAD, 400)])
def test_aliased_batches_are_bounded_per_request(served: Served, query: str,
                                                 per_field: int) -> None:
    """Each `ingestEvents` field was held to PERSONAS_API_MAX_BATCH_EVENTS (1,000) on its own:
    twenty aliases given one variable of 60 events wrote 1,200 events' worth for one request
    (one token of the key's rate, a body well within its limit), and any number within the
    alias limit would multiply it. The events of all the fields count together, aliases and
    fragments included, before anything runs: LIMIT_EXCEEDED, nothing written."""
    tag = f"alias-{per_field}"
    events = [{"event_id": f"{tag}-{n}", "type": "page_view", "source": "web",
               "occurred_at": "2026-11-01T10:00:00Z", "user": {"cookie": f"ck-{tag}"}}
              for n in range(per_field)]
    answer = httpx.post(f"{served.base}/graphql", headers=bearer(served.keys["writer"]),
                        json={"query": query, "variables": {"e": events}}, timeout=60).json()
    assert answer.get("data") is None, str(answer)[:300]
    error = answer["errors"][0]
    assert error["extensions"]["code"] == "LIMIT_EXCEEDED", error
    assert "PERSONAS_API_MAX_BATCH_EVENTS" in error["message"]
    assert served.graph.rows("MATCH (i:Interaction) WHERE i.event_id STARTS WITH $tag "
                             "RETURN count(i) AS n", tag=tag) == [{"n": 0}]
    within = httpx.post(f"{served.base}/graphql", headers=bearer(served.keys["writer"]),
                        json={"query": query, "variables": {"e": events[:40]}},
                        timeout=60).json()
    assert "errors" not in within, within
    assert served.graph.rows("MATCH (i:Interaction) WHERE i.event_id STARTS WITH $tag "
                             "RETURN count(i) AS n", tag=tag) == [{"n": 40}]
