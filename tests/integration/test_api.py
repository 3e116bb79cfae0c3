from __future__ import annotations

import re
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from graph import context
from graph.db import Graph
from graph.demo import DemoPopulation
from graph.ingest.files import ingest_file
from graph.ingest.writer import EventWriter
from graph.privacy import Pseudonymizer
from graph.segments.run import run_segmentation
from graph.settings import Settings

pytestmark = pytest.mark.integration
DEMO_KEY = Settings().pseudonym_key.get_secret_value()


def readme_query(repo_root: Path) -> str:
    text = (repo_root / "README.md").read_text()
    return re.search(r"```graphql\n(.*?)```", text, re.S).group(1)  # type: ignore[union-attr]


@pytest.fixture
def demo_graph(graph: Graph, tmp_path: Path, settings: Settings) -> Graph:
    """The README's demo: seed 42 with the demo pseudonym key, context and one segmentation."""
    population = DemoPopulation(80, seed=42)
    path = tmp_path / "demo.jsonl"
    population.write_events(path)
    ingest_file(EventWriter(graph, Pseudonymizer(DEMO_KEY)), path, batch_size=2000,
                max_line_bytes=1_000_000)
    weather, events = population.context()
    context.upsert_weather(graph, weather)
    context.upsert_local_events(graph, events)
    run_segmentation(graph, runs_dir=settings.resolved_runs_dir)
    return graph


@pytest.fixture
def client(settings: Settings, neo4j_running) -> TestClient:
    with TestClient(create_app(settings)) as c:
        yield c


def test_readme_query_answers_on_demo_data(demo_graph: Graph, client: TestClient,
                                           repo_root: Path) -> None:
    response = client.post("/graphql", json={"query": readme_query(repo_root)})
    assert response.status_code == 200
    body = response.json()
    assert "errors" not in body, body
    user = body["data"]["user"]
    assert user["id"] == "u_df274c9e684b56cdd53a"
    membership = user["membership"]
    assert membership["persona"]["name"] == "Frequent Shoppers"
    assert len(membership["segment"]["why"]) == 3
    assert all(isinstance(w["zScore"], float) for w in membership["segment"]["why"])
    prefs = user["preferences"]
    assert 1 <= len(prefs) <= 3
    assert [p["weight"] for p in prefs if p["source"] == "inferred"] == sorted(
        (p["weight"] for p in prefs if p["source"] == "inferred"), reverse=True)
    interactions = user["recentInteractions"]
    assert len(interactions) == 3
    assert interactions[0]["at"] >= interactions[1]["at"] >= interactions[2]["at"]
    location = user["location"]
    assert location["city"] and location["latestWeather"]["condition"]
    assert len(location["upcomingEvents"]) == 2
    segments = body["data"]["segments"]
    assert {s["level"] for s in segments} == {0, 1, 2}
    assert sum(s["size"] for s in segments if s["level"] == 0) == 80


def test_unknown_user_is_not_found(demo_graph: Graph, client: TestClient) -> None:
    body = client.post("/graphql", json={"query": '{ user(id: "u_nobody") { id } }'}).json()
    assert body["data"] is None
    assert body["errors"][0]["extensions"]["code"] == "NOT_FOUND"


def test_bad_arguments_are_bad_user_input(demo_graph: Graph, client: TestClient) -> None:
    query = '{ user(id: "u_df274c9e684b56cdd53a") { preferences(first: 1000) { category } } }'
    body = client.post("/graphql", json={"query": query}).json()
    assert body["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"
    body = client.post("/graphql", json={"query": "{ user { id } }"}).json()
    assert body["errors"][0]["extensions"]["code"] == "GRAPHQL_VALIDATION_FAILED"


def test_health_readiness_and_graphiql(demo_graph: Graph, client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["schema_version"] == 2
    page = client.get("/graphql", headers={"accept": "text/html"})
    assert page.status_code == 200 and "graphiql" in page.text.lower()


def test_run_pictures_are_served(demo_graph: Graph, client: TestClient) -> None:
    run_id = demo_graph.rows("MATCH (r:SegmentationRun) RETURN r.id AS id")[0]["id"]
    for kind in ("dendrogram", "profile", "pca"):
        response = client.get(f"/runs/{run_id}/plots/{kind}.png")
        assert response.status_code == 200, response.text
        assert response.headers["content-type"] == "image/png"
        assert response.content[:8] == b"\x89PNG\r\n\x1a\n"
    bad_kind = client.get(f"/runs/{run_id}/plots/pie.png")
    assert bad_kind.status_code == 400 and bad_kind.json()["error"]["code"] == "BAD_USER_INPUT"
    unknown = client.get("/runs/run-20000101T000000-abcdef/plots/pca.png")
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "NOT_FOUND"
    escape = client.get("/runs/..%2F..%2Fetc/plots/pca.png")
    assert escape.status_code in (400, 404)
