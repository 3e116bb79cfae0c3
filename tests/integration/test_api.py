from __future__ import annotations

import asyncio
import logging
import re
import shutil
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from neo4j import Driver
from pydantic import SecretStr

from api.app import create_app, warm_chatbot_plan
from graph.auth import DEMO_API_KEY, Role, create_key, ensure_demo_key
from graph.db import Graph, create_async_driver
from graph.segments.run import run_segmentation
from graph.settings import Settings
from tests.helpers import empty_graph, load_demo, scrape

pytestmark = pytest.mark.integration
DEMO_KEY = Settings().pseudonym_key.get_secret_value()


def readme_query(repo_root: Path) -> str:
    text = (repo_root / "README.md").read_text()
    return re.search(r"```graphql\n(.*?)```", text, re.S).group(1)  # type: ignore[union-attr]


def readme_auth_header(repo_root: Path) -> tuple[str, str]:
    """The header the README's curl example sends."""
    text = (repo_root / "README.md").read_text()
    match = re.search(r"-H '(Authorization): (Bearer pg_[A-Za-z0-9_-]+)'", text)
    assert match, "the README's example sends no Authorization header"
    return match.group(1), match.group(2)


@pytest.fixture(scope="module")
def demo_graph(driver: Driver, settings: Settings,
               tmp_path_factory: pytest.TempPathFactory) -> Graph:
    """The README's demo: seed 42 with the demo pseudonym key, context and one segmentation.
    Loaded once for the module: its tests only read it (one adds an analyst key), and the
    tests that need an empty graph (the ``graph`` fixture wipes it) come after them all."""
    graph = empty_graph(driver, settings)
    load_demo(graph, tmp_path_factory.mktemp("demo"), 80, seed=42, key=DEMO_KEY)
    run_segmentation(graph, runs_dir=settings.resolved_runs_dir)
    # As `personas up` does in demo mode: the README's reader key.
    demo_mode = settings.model_copy(update={"pseudonym_key": SecretStr(DEMO_KEY)})
    demo = ensure_demo_key(graph, demo_mode)
    assert demo is not None and demo.usable
    return graph


def demo_settings(settings: Settings) -> Settings:
    """The settings `personas up` runs the API with when no key is set: demo mode."""
    return settings.model_copy(update={"pseudonym_key": SecretStr(DEMO_KEY), "demo": True})


@pytest.fixture
def client(settings: Settings, neo4j_running) -> TestClient:
    with TestClient(create_app(demo_settings(settings)),
                    headers={"Authorization": f"Bearer {DEMO_API_KEY}"}) as c:
        yield c


def test_readme_query_answers_on_demo_data(demo_graph: Graph, client: TestClient,
                                           repo_root: Path) -> None:
    name, value = readme_auth_header(repo_root)
    assert value == f"Bearer {DEMO_API_KEY}"
    response = client.post("/graphql", json={"query": readme_query(repo_root)},
                           headers={name: value})
    assert response.status_code == 200
    body = response.json()
    assert "errors" not in body, body
    user = body["data"]["user"]
    assert user["id"] == "u_df274c9e684b56cdd53a"
    persona = user["persona"]
    assert persona["name"] == "Frequent Shoppers" and 0 < persona["confidence"] <= 1
    assert len(persona["why"]) == 3
    assert all(isinstance(w["zScore"], float) for w in persona["why"])
    # leaf first, then each parent up to the one root
    levels = [s["level"] for s in user["segments"]]
    assert levels == list(range(len(levels))) and len(levels) >= 2
    assert user["segments"][0]["label"] == "Frequent Shoppers"
    prefs = user["preferences"]
    assert 1 <= len(prefs) <= 3
    assert [p["weight"] for p in prefs if p["source"] == "inferred"] == sorted(
        (p["weight"] for p in prefs if p["source"] == "inferred"), reverse=True)
    interactions = [e["node"] for e in user["interactions"]["edges"]]
    assert len(interactions) == 3
    assert interactions[0]["at"] >= interactions[1]["at"] >= interactions[2]["at"]
    assert {i["type"] for i in interactions} <= {"purchase", "add_to_cart"}
    situation = user["context"]
    assert situation["location"]["city"] and situation["currentWeather"]["condition"]
    assert len(situation["upcomingEvents"]) == 2
    segments = body["data"]["segments"]
    assert {s["level"] for s in segments} == {0, 1, 2}
    assert sum(s["size"] for s in segments if s["level"] == 0) == 80


def test_every_readme_query_answers_on_demo_data(demo_graph: Graph, settings: Settings,
                                                 repo_root: Path) -> None:
    """The chatbot examples: each `graphql` block that is a query (mutations need an admin key
    and are tested with the roles) answers without errors and with data in every field. The
    API runs in demo mode, as after `make up`, so identifiers hash as in the demo data."""
    text = (repo_root / "README.md").read_text()
    blocks = [b for b in re.findall(r"```graphql\n(.*?)```", text, re.S)
              if not b.lstrip().startswith("mutation")]
    assert len(blocks) >= 4
    name, value = readme_auth_header(repo_root)
    with TestClient(create_app(demo_settings(settings))) as client:
        for block in blocks:
            body = client.post("/graphql", json={"query": block}, headers={name: value}).json()
            assert "errors" not in body, (block, body)
            assert all(v not in (None, []) for v in body["data"].values()), (block, body)
        chat = client.post("/graphql", json={"query": blocks[1]},
                           headers={name: value}).json()
    assert chat["data"]["userByIdentifier"]["id"] == "u_df274c9e684b56cdd53a"
    assert chat["data"]["chatContext"]["tokens"] <= 80


def test_unknown_user_is_not_found(demo_graph: Graph, client: TestClient) -> None:
    body = client.post("/graphql", json={"query": '{ user(id: "u_nobody") { id } }'}).json()
    assert body["data"] is None
    assert body["errors"][0]["extensions"]["code"] == "NOT_FOUND"


def test_bad_arguments_are_bad_user_input(demo_graph: Graph, client: TestClient) -> None:
    query = '{ user(id: "u_df274c9e684b56cdd53a") { preferences(first: 0) { category } } }'
    body = client.post("/graphql", json={"query": query}).json()
    assert body["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"
    too_many = query.replace("first: 0", "first: 1000")
    body = client.post("/graphql", json={"query": too_many}).json()
    assert body["errors"][0]["extensions"]["code"] == "LIMIT_EXCEEDED"
    body = client.post("/graphql", json={"query": "{ user { id } }"}).json()
    assert body["errors"][0]["extensions"]["code"] == "GRAPHQL_VALIDATION_FAILED"


def test_health_readiness_and_graphiql(demo_graph: Graph, client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    # The newest migration shipped (each part of the system may add one).
    newest = max(int(m.name[:4]) for m in Settings().migrations_dir.glob("[0-9]*_*.cypher"))
    assert ready.status_code == 200 and ready.json()["schema_version"] == newest
    page = client.get("/graphql", headers={"accept": "text/html"})
    assert page.status_code == 200 and "graphiql" in page.text.lower()



def test_run_pictures_are_served(demo_graph: Graph, client: TestClient) -> None:
    run_id = demo_graph.rows("MATCH (r:SegmentationRun) RETURN r.id AS id")[0]["id"]
    # Pictures are for analysts; the client's default key is the demo reader's.
    client.headers["Authorization"] = f"Bearer {create_key(demo_graph, Role.ANALYST, 'a').key}"
    for kind in ("dendrogram", "profile", "pca"):
        response = client.get(f"/runs/{run_id}/plots/{kind}.png")
        assert response.status_code == 200, response.text
        assert response.headers["content-type"] == "image/png"
        assert response.content[:8] == b"\x89PNG\r\n\x1a\n"
    bad_kind = client.get(f"/runs/{run_id}/plots/pie.png")
    assert bad_kind.status_code == 400 and bad_kind.json()["error"]["code"] == "BAD_USER_INPUT"
    unknown = client.get("/runs/run-20000101T000000-abcdef/plots/pca.png")
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "NOT_FOUND"
    # The server's runs folder is not named to the client (it was: an internal path).
    assert "/" not in unknown.json()["error"]["message"], unknown.text
    escape = client.get("/runs/..%2F..%2Fetc/plots/pca.png")
    assert escape.status_code in (400, 404)


def test_metrics_count_requests_by_route_and_log_latency(
        demo_graph: Graph, client: TestClient, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="api.access")
    query = {"query": "{ segments { id } }"}
    auth = {"Authorization": f"Bearer {DEMO_API_KEY}"}
    for _ in range(3):
        assert client.post("/graphql", json=query, headers=auth).status_code == 200
    assert client.get("/runs/not-a-run/plots/pca.png", headers=auth).status_code in (400, 403)
    assert client.get("/no/such/route").status_code == 404
    text = scrape(client)
    assert 'personas_http_requests_total{method="POST",route="/graphql",status="200"} 3.0' in text
    assert 'personas_http_request_seconds_count{method="POST",route="/graphql"} 3.0' in text
    assert 'route="/runs/{run_id}/plots/{kind}.png"' in text  # the template, not the raw path
    assert 'route="unmatched",status="404"' in text
    lines = [r.getMessage() for r in caplog.records if r.name == "api.access"]
    assert any(re.fullmatch(r"POST /graphql 200 \d+\.\d ms", line) for line in lines)



def test_the_demo_key_opens_nothing_outside_demo_mode(demo_graph: Graph,
                                                       settings: Settings) -> None:
    """The demo key's node is still in the graph; an API with a real pseudonymization key
    refuses it like an unknown key."""
    query = {"query": "{ segments { id } }"}
    auth = {"Authorization": f"Bearer {DEMO_API_KEY}"}
    with TestClient(create_app(settings)) as real:
        body = real.post("/graphql", json=query, headers=auth).json()
    assert body["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"
    with TestClient(create_app(demo_settings(settings))) as demo:
        assert "errors" not in demo.post("/graphql", json=query, headers=auth).json()


# Tests on an empty graph: after every test of the module's demo graph (`demo_graph`).


def test_not_ready_while_the_schema_is_behind(graph: Graph, settings: Settings,
                                              tmp_path: Path) -> None:
    """The API writes too (ingestion, webhooks, runs): with a migration of its code not yet
    applied, it is up but not ready, and says which version it has and expects."""
    folder = tmp_path / "migrations"
    shutil.copytree(settings.migrations_dir, folder)
    (folder / "9003_later.cypher").write_text(
        "CREATE INDEX test_later3 IF NOT EXISTS FOR (n:Item) ON (n.price);\n")
    newest = max(int(m.name[:4]) for m in settings.migrations_dir.glob("[0-9]*_*.cypher"))
    with TestClient(create_app(settings.model_copy(update={"migrations_dir": folder}))) as c:
        assert c.get("/healthz").status_code == 200
        ready = c.get("/readyz")
    assert ready.status_code == 503
    assert ready.json() == {"status": "schema_behind", "schema_version": newest,
                            "expected_version": 9003}


def test_the_chatbot_queries_are_planned_at_start(
        graph: Graph, settings: Settings, caplog: pytest.LogCaptureFixture) -> None:
    """`personas serve` has Neo4j plan the chatbot's queries as it starts (a fresh server took
    3 s over the first request). The queries and their parameters must agree; a database that
    cannot answer is logged, and the service starts all the same."""

    async def warm(s: Settings) -> None:
        driver = create_async_driver(s)
        try:
            await warm_chatbot_plan(driver, s)
        finally:
            await driver.close()

    caplog.set_level(logging.WARNING, logger="api.app")
    asyncio.run(warm(settings))
    assert not [r for r in caplog.records if r.name == "api.app"], caplog.text
    asyncio.run(warm(settings.model_copy(update={"neo4j_database": "no-such-database"})))
    assert "could not plan the chatbot query ahead" in caplog.text
