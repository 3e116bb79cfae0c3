"""The API's keys and roles against the real graph: the role matrix of every query, the run
pictures and runSegmentation, and the runSegmentation mutation itself."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from fastapi.testclient import TestClient
from neo4j import Driver

from api.app import create_app
from api.segmentation import SegmentationRunner
from graph.auth import Role, create_key, revoke_key
from graph.db import Graph
from graph.segments.run import run_segmentation
from graph.settings import Settings
from tests.helpers import empty_graph, load_demo

pytestmark = pytest.mark.integration

USERS = 80
ALLOWED = None
UNAUTHENTICATED, FORBIDDEN = "UNAUTHENTICATED", "FORBIDDEN"
# Who calls: a live key of each role, no key, a revoked admin key (revocation beats the role)
# and a well-formed key that was never issued.
CALLERS = ("reader", "writer", "analyst", "admin", "none", "revoked", "unknown")
READ_MATRIX = {"reader": ALLOWED, "writer": FORBIDDEN, "analyst": ALLOWED, "admin": ALLOWED,
               "none": UNAUTHENTICATED, "revoked": UNAUTHENTICATED, "unknown": UNAUTHENTICATED}
ANALYSIS_MATRIX = {**READ_MATRIX, "reader": FORBIDDEN}
ADMIN_MATRIX = {**ANALYSIS_MATRIX, "analyst": FORBIDDEN}
HTTP_STATUS = {ALLOWED: 200, UNAUTHENTICATED: 401, FORBIDDEN: 403}
RUN = "mutation($k: Int) { runSegmentation(k: $k) { runId nUsers nSegments silhouette kReason } }"


@dataclass(frozen=True)
class World:
    graph: Graph
    keys: dict[str, str]
    user_id: str
    segment_id: str
    run_id: str
    persona_id: str
    item_id: str


@pytest.fixture(scope="module")
def world(driver: Driver, settings: Settings,
          tmp_path_factory: pytest.TempPathFactory) -> World:
    """Demo users, one segmentation run with its pictures, and a key for every caller; built
    once for the module (the tests here only add runs)."""
    graph = empty_graph(driver, settings)
    load_demo(graph, tmp_path_factory.mktemp("events"), USERS, seed=42,
              key=settings.pseudonym_key.get_secret_value())
    result = run_segmentation(graph, runs_dir=settings.resolved_runs_dir)
    keys = {role.value: create_key(graph, role, f"{role.value} test").key for role in Role}
    revoked = create_key(graph, Role.ADMIN, "revoked admin")
    revoke_key(graph, revoked.info.id)
    keys["revoked"] = revoked.key
    keys["unknown"] = "pg_0123abcd_" + "x" * 32
    [item] = graph.rows("MATCH (it:Item) RETURN it.id AS id ORDER BY id LIMIT 1")
    return World(graph, keys, result.user_ids[0], f"{result.run_id}-L0-0", result.run_id,
                 result.persona_ids[0], item["id"])


@pytest.fixture(scope="module")
def client(world: World, settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as c:
        yield c


def headers(world: World, caller: str) -> dict[str, str]:
    return {} if caller == "none" else {"Authorization": f"Bearer {world.keys[caller]}"}


def graphql(client: TestClient, query: str, hdrs: dict[str, str],
            **variables: Any) -> dict[str, Any]:
    response = client.post("/graphql", json={"query": query, "variables": variables},
                           headers=hdrs)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def error_code(body: dict[str, Any]) -> str | None:
    errors = body.get("errors")
    return errors[0]["extensions"]["code"] if errors else None


def run_count(graph: Graph) -> int:
    return int(graph.rows("MATCH (r:SegmentationRun) RETURN count(r) AS n")[0]["n"])


QUERIES = {
    "user": ('query($id: ID!) { user(id: $id) { id } }', "user_id"),
    "segments": ("{ segments { id } }", None),
    "segment": ('query($id: ID!) { segment(id: $id) { id } }', "segment_id"),
    "userByIdentifier": ('{ userByIdentifier(kind: "email", value: "user42-000000@example.com") '
                         "{ id } }", None),
    "personas": ("{ personas { id } }", None),
    "persona": ('query($id: ID!) { persona(id: $id) { id } }', "persona_id"),
    "segmentationRuns": ("{ segmentationRuns { edges { node { id } } } }", None),
    "chatContext": ('query($id: ID!) { chatContext(userId: $id) { text } }', "user_id"),
    "users": ("{ users(first: 2) { edges { node { id } } } }", None),
    "items": ("{ items(first: 2) { edges { node { id } } } }", None),
    "item": ('query($id: ID!) { item(id: $id) { id } }', "item_id"),
    "categories": ("{ categories { name } }", None),
}


def test_the_matrix_covers_every_root_query(client: TestClient, world: World) -> None:
    body = graphql(client, "{ __schema { queryType { fields { name } } } }",
                   headers(world, "admin"))
    assert {f["name"] for f in body["data"]["__schema"]["queryType"]["fields"]} == set(QUERIES)


@pytest.mark.parametrize("caller", CALLERS)
def test_identifiers_are_for_analysts_and_admins(world: World, client: TestClient,
                                                 caller: str) -> None:
    body = graphql(client, 'query($id: ID!) { user(id: $id) { identifiers { kind masked } } }',
                   headers(world, caller), id=world.user_id)
    expected = ANALYSIS_MATRIX[caller]
    assert error_code(body) == expected, body
    if expected is ALLOWED:
        assert body["data"]["user"]["identifiers"]


@pytest.mark.parametrize("caller", CALLERS)
@pytest.mark.parametrize("field", sorted(QUERIES))
def test_query_role_matrix(world: World, client: TestClient, field: str, caller: str) -> None:
    query, id_attr = QUERIES[field]
    variables = {"id": getattr(world, id_attr)} if id_attr else {}
    body = graphql(client, query, headers(world, caller), **variables)
    expected = READ_MATRIX[caller]
    assert error_code(body) == expected, body
    if expected is ALLOWED:
        assert body["data"][field], body
    else:
        assert body["data"] is None
        assert "API key" in body["errors"][0]["message"]


@pytest.mark.parametrize("caller", CALLERS)
def test_run_pictures_role_matrix(world: World, client: TestClient, caller: str) -> None:
    response = client.get(f"/runs/{world.run_id}/plots/dendrogram.png",
                          headers=headers(world, caller))
    expected = ANALYSIS_MATRIX[caller]
    assert response.status_code == HTTP_STATUS[expected], response.text
    if expected is ALLOWED:
        assert response.content[:8] == b"\x89PNG\r\n\x1a\n"
    else:
        assert response.json()["error"]["code"] == expected
    if expected == UNAUTHENTICATED:
        assert response.headers["www-authenticate"] == "Bearer"


@pytest.mark.parametrize("caller", CALLERS)
def test_run_segmentation_role_matrix(world: World, client: TestClient, caller: str) -> None:
    before = run_count(world.graph)
    body = graphql(client, RUN, headers(world, caller), k=3)
    expected = ADMIN_MATRIX[caller]
    assert error_code(body) == expected, body
    if expected is ALLOWED:
        assert body["data"]["runSegmentation"]["nSegments"] == 3
        assert run_count(world.graph) == before + 1
    else:
        assert body["data"] is None
        assert run_count(world.graph) == before


def test_admin_run_writes_a_segmentation_run_and_returns_its_id(world: World,
                                                                client: TestClient) -> None:
    query = """mutation { runSegmentation(k: 4, algorithm: "kmeans",
                                          features: ["behaviour", "share:*"]) {
                 runId nUsers nSegments silhouette kReason } }"""
    body = graphql(client, query, headers(world, "admin"))
    assert "errors" not in body, body
    result = body["data"]["runSegmentation"]
    assert result["nUsers"] == USERS and result["nSegments"] == 4
    assert isinstance(result["silhouette"], float) and result["kReason"]
    [run] = world.graph.rows(
        "MATCH (r:SegmentationRun {id: $id}) OPTIONAL MATCH (r)-[:PRODUCED]->(s:Segment) "
        "WHERE s.level = 0 RETURN r.algorithm AS algorithm, r.n_users AS n_users, r.k AS k, "
        "count(s) AS leaves", id=result["runId"])
    assert run == {"algorithm": "kmeans", "n_users": USERS, "k": 4, "leaves": 4}
    # The API's notion of the latest run follows.
    latest = graphql(client, "{ segments { runId level } }", headers(world, "reader"))
    assert {s["runId"] for s in latest["data"]["segments"]} == {result["runId"]}


@pytest.mark.parametrize("arguments", [
    'algorithm: "nope"', 'features: ["nope"]', "features: []", "k: 1", "k: 1000",
    "distanceThreshold: -1.0", 'features: ["share:NoSuchCategory"]',
])
def test_bad_run_arguments_are_bad_user_input(world: World, client: TestClient,
                                              arguments: str) -> None:
    before = run_count(world.graph)
    body = graphql(client, f"mutation {{ runSegmentation({arguments}) {{ runId }} }}",
                   headers(world, "admin"))
    assert error_code(body) == "BAD_USER_INPUT", body
    assert run_count(world.graph) == before


def test_a_second_run_while_one_is_in_progress_is_a_conflict(
        world: World, client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    runner: SegmentationRunner = client.app.state.segmentation  # type: ignore[attr-defined]
    # The first run holds until the second request has been answered, however fast it is.
    release = threading.Event()
    run = SegmentationRunner._run

    def held(self: SegmentationRunner, options: Any) -> Any:
        release.wait(timeout=120)
        return run(self, options)

    monkeypatch.setattr(SegmentationRunner, "_run", held)
    admin = headers(world, "admin")
    first: dict[str, Any] = {}
    thread = threading.Thread(target=lambda: first.update(graphql(client, RUN, admin)))
    thread.start()
    try:
        deadline = time.monotonic() + 60
        while not runner.busy and thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.005)
        assert runner.busy, "the first run never started"
        second = graphql(client, RUN, admin)
    finally:
        release.set()
    thread.join(timeout=300)
    assert error_code(second) == "CONFLICT", second
    assert "errors" not in first, first
    assert not runner.busy
    # Once the first run is over, the next one goes ahead.
    third = graphql(client, RUN, admin, k=2)
    assert "errors" not in third, third


def test_x_api_key_header_works_like_bearer(world: World, client: TestClient) -> None:
    query = "{ segments { id } }"
    assert error_code(graphql(client, query, {"X-API-Key": world.keys["reader"]})) is None
    assert error_code(graphql(client, query, {"X-API-Key": world.keys["writer"]})) == FORBIDDEN
    # Another scheme is no credential at all.
    basic = {"Authorization": "Basic cmVhZGVyOnNlY3JldA=="}
    assert error_code(graphql(client, query, basic)) == UNAUTHENTICATED


def test_probes_and_graphiql_need_no_key(world: World, client: TestClient) -> None:
    assert client.get("/healthz").status_code == 200
    assert client.get("/readyz").json()["status"] == "ready"
    page = client.get("/graphql", headers={"accept": "text/html"})
    assert page.status_code == 200 and "graphiql" in page.text.lower()


def test_revocation_takes_effect_within_the_cache_ttl(world: World,
                                                      settings: Settings) -> None:
    query = "{ segments { id } }"
    cached = settings.model_copy(update={"api_key_cache_seconds": 30.0})
    uncached = settings.model_copy(update={"api_key_cache_seconds": 0.0})
    key = create_key(world.graph, Role.READER, "short-lived")
    hdrs = {"Authorization": f"Bearer {key.key}"}
    with TestClient(create_app(cached)) as slow, TestClient(create_app(uncached)) as fast:
        assert error_code(graphql(slow, query, hdrs)) is None
        assert error_code(graphql(fast, query, hdrs)) is None
        revoke_key(world.graph, key.info.id)
        # The cache answers until its entry expires (at most 30 s); without it, at once.
        assert error_code(graphql(slow, query, hdrs)) is None
        assert error_code(graphql(fast, query, hdrs)) == UNAUTHENTICATED
    with TestClient(create_app(cached)) as fresh:
        assert error_code(graphql(fresh, query, hdrs)) == UNAUTHENTICATED


def test_refused_requests_are_logged_without_the_document(
        world: World, client: TestClient, caplog: pytest.LogCaptureFixture) -> None:
    """A request's literals may be PII: a refusal is logged with its code and path only."""
    query = '{ userByIdentifier(kind: "email", value: "jane.logged@example.com") { id } }'
    with caplog.at_level(logging.DEBUG):
        body = graphql(client, query, headers(world, "writer"))
    assert error_code(body) == FORBIDDEN
    refused = [r.getMessage() for r in caplog.records if "request refused" in r.getMessage()]
    assert refused and "FORBIDDEN at userByIdentifier" in refused[0]
    assert not [r for r in caplog.records if "jane.logged@example.com" in r.getMessage()]
