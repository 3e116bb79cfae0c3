"""POST /v1/events against the real graph: per-record results (accepted, duplicate, rejected),
size limits, malformed bodies, the role matrix, and the metrics it feeds."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from graph.auth import Role, create_key, revoke_key
from graph.db import Graph
from graph.segments.run import run_segmentation
from graph.settings import Settings
from tests.helpers import graph_counts, load_demo, scrape

pytestmark = pytest.mark.integration


def event(event_id: str, **overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "event_id": event_id, "type": "purchase", "source": "web",
        "occurred_at": "2026-11-01T10:00:00+01:00",
        "user": {"cookie": "ck-http-1", "email": "Http.Tester@Example.com"},
        "properties": {"item_id": "sku-1", "category": "Books", "price": "9.50"},
    }
    data.update(overrides)
    return data


def keys_for(graph: Graph) -> dict[str, str]:
    keys = {role.value: create_key(graph, role, f"{role.value} http").key for role in Role}
    revoked = create_key(graph, Role.WRITER, "revoked writer")
    revoke_key(graph, revoked.info.id)
    keys["revoked"] = revoked.key
    return keys


@pytest.fixture
def world(graph: Graph, settings: Settings) -> Iterator[tuple[TestClient, dict[str, str]]]:
    keys = keys_for(graph)
    with TestClient(create_app(settings)) as client:
        yield client, keys


def auth(keys: dict[str, str], who: str = "writer") -> dict[str, str]:
    return {"Authorization": f"Bearer {keys[who]}"}


def interactions(graph: Graph) -> list[str]:
    return [r["id"] for r in graph.rows(
        "MATCH (i:Interaction) RETURN i.event_id AS id ORDER BY id")]


def metric(text: str, name: str, **labels: str) -> float:
    """The value of one sample of the Prometheus text format (0 when absent)."""
    for line in text.splitlines():
        if not line.startswith(name + "{"):
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', line.split("}")[0]))
        if found == labels:
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_per_record_results_accepted_duplicate_rejected(world: Any, graph: Graph) -> None:
    client, keys = world
    first = client.post("/v1/events", json={"events": [event("e-0")]}, headers=auth(keys))
    assert first.status_code == 200, first.text
    assert first.json()["accepted"] == 1

    batch = [
        event("e-1"),
        event("e-0"),                                       # stored by the first request
        event("e-2", type="search", properties={"query": "mail me at a@b.co"}),
        event("e-1"),                                       # repeats record 0 of this batch
        event("e-3", properties={"category": "books"}),     # a purchase needs item_id and price
        "not an object",
        event("e-4", occurred_at="2026-11-01T10:00:00"),    # no offset
        event("e-5", user={"passport": "X1"}),
    ]
    response = client.post("/v1/events", json={"events": batch}, headers=auth(keys))
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["accepted"], body["duplicates"], body["rejected"]) == (2, 2, 4)
    results = body["results"]
    assert [r["index"] for r in results] == list(range(len(batch)))
    assert [(r["event_id"], r["status"]) for r in results] == [
        ("e-1", "accepted"), ("e-0", "duplicate"), ("e-2", "accepted"), ("e-1", "duplicate"),
        ("e-3", "rejected"), (None, "rejected"), ("e-4", "rejected"), ("e-5", "rejected")]
    assert results[0]["reason"] is None
    assert results[1]["reason"] == "event_id already stored"
    assert results[3]["reason"] == "event_id repeats record 0 of this batch"
    assert "purchase event needs properties ['item_id', 'price']" in results[4]["reason"]
    assert results[5]["reason"] == "record is not a JSON object"
    assert "timezone offset" in results[6]["reason"]
    assert "unknown identifier kind(s) ['passport']" in results[7]["reason"]
    assert interactions(graph) == ["e-0", "e-1", "e-2"]
    # The events are written as the file importer writes them: one user, hashed identifiers,
    # scrubbed text.
    [user] = graph.rows("MATCH (u:User) RETURN u.events AS events, u.purchases AS purchases")
    assert user == {"events": 3, "purchases": 2}
    [query] = graph.rows("MATCH (i:Interaction {event_id: 'e-2'}) RETURN i.query AS q")
    assert "a@b.co" not in query["q"] and "[email:" in query["q"]

    metrics = scrape(client)
    assert metric(metrics, "personas_events_received_total", source="http") == 9
    assert metric(metrics, "personas_events_accepted_total", source="http") == 3
    assert metric(metrics, "personas_events_duplicate_total", source="http") == 2
    assert metric(metrics, "personas_events_rejected_total", source="http",
                  reason="invalid") == 3
    assert metric(metrics, "personas_events_rejected_total", source="http",
                  reason="malformed") == 1
    assert metric(metrics, "personas_event_freshness_seconds_count", source="http") == 3


def test_rejects_become_scrubbed_dead_letters(world: Any, graph: Graph) -> None:
    client, keys = world
    bad = event("e-bad", user={"email": "Secret.Person@Example.com"}, type="dance")
    response = client.post("/v1/events", json={"events": [bad]}, headers=auth(keys))
    assert response.json()["rejected"] == 1
    letters = graph.rows("MATCH (d:DeadLetter) RETURN d.source AS source, d.reason AS reason, "
                         "d.record AS record")
    assert len(letters) == 1
    assert letters[0]["source"] == "http" and "type" in letters[0]["reason"]
    assert "secret.person" not in json.dumps(letters).lower()
    assert "[email:" in letters[0]["record"]


def test_a_batch_over_the_limit_is_413_and_writes_nothing(graph: Graph,
                                                          settings: Settings) -> None:
    keys = keys_for(graph)
    small = settings.model_copy(update={"api_max_batch_events": 3})
    before = graph_counts(graph)
    with TestClient(create_app(small)) as client:
        response = client.post("/v1/events", json={"events": [event(f"x-{n}") for n in range(4)]},
                               headers=auth(keys))
        ok = client.post("/v1/events", json={"events": [event(f"y-{n}") for n in range(3)]},
                         headers=auth(keys))
    assert response.status_code == 413
    error = response.json()["error"]
    assert error["code"] == "LIMIT_EXCEEDED"
    assert "4 events in one request, over the limit of 3" in error["message"]
    assert ok.status_code == 200 and ok.json()["accepted"] == 3
    assert interactions(graph) == ["y-0", "y-1", "y-2"]
    assert graph_counts(graph)["node:ApiKey"] == before["node:ApiKey"]


def test_a_body_over_the_byte_limit_is_refused_before_parsing(graph: Graph,
                                                              settings: Settings) -> None:
    keys = keys_for(graph)
    small = settings.model_copy(update={"api_max_body_bytes": 2048})
    with TestClient(create_app(small)) as client:
        # Not even JSON: a 400 would mean the body was parsed before its size was checked.
        huge = client.post("/v1/events", content=b"x" * 5000,
                           headers={**auth(keys), "content-type": "application/json"})

        def chunks() -> Iterator[bytes]:  # no Content-Length: the limit holds while streaming
            for _ in range(5):
                yield b"y" * 1000

        streamed = client.post("/v1/events", content=chunks(),
                               headers={**auth(keys), "content-type": "application/json"})
    for response in (huge, streamed):
        assert response.status_code == 413, response.text
        assert response.json()["error"]["code"] == "LIMIT_EXCEEDED"
        assert "over the limit of 2048" in response.json()["error"]["message"]
    assert interactions(graph) == []


@pytest.mark.parametrize(("content", "message"), [
    (b'{"events": [', "malformed JSON body"),
    (b'[{"event_id": "e-1"}]', 'the body must be a JSON object {"events": [...]}'),
    (b'{"events": {"event_id": "e-1"}}', 'the body must be a JSON object {"events": [...]}'),
    (b'{"events": [], "dry_run": true}', "unknown key(s) ['dry_run']"),
    (b"", "malformed JSON body"),
])
def test_malformed_bodies_are_400(world: Any, graph: Graph, content: bytes,
                                  message: str) -> None:
    client, keys = world
    response = client.post("/v1/events", content=content,
                           headers={**auth(keys), "content-type": "application/json"})
    assert response.status_code == 400, response.text
    assert response.json()["error"]["code"] == "BAD_USER_INPUT"
    assert message in response.json()["error"]["message"]
    assert interactions(graph) == []


@pytest.mark.parametrize(("caller", "status"), [
    ("writer", 200), ("admin", 200), ("reader", 403), ("analyst", 403), ("none", 401),
    ("revoked", 401),
])
def test_role_matrix(world: Any, graph: Graph, caller: str, status: int) -> None:
    client, keys = world
    headers = {} if caller == "none" else auth(keys, caller)
    response = client.post("/v1/events", json={"events": [event(f"r-{caller}")]},
                           headers=headers)
    assert response.status_code == status, response.text
    if status == 200:
        assert response.json()["results"][0]["status"] == "accepted"
        assert interactions(graph) == [f"r-{caller}"]
    else:
        code = "FORBIDDEN" if status == 403 else "UNAUTHENTICATED"
        assert response.json()["error"]["code"] == code
        assert interactions(graph) == []


def test_refusal_by_role_comes_before_the_body_is_read(world: Any, graph: Graph) -> None:
    client, keys = world
    response = client.post("/v1/events", content=b"{not json",
                           headers={**auth(keys, "reader"), "content-type": "application/json"})
    assert response.status_code == 403
    anonymous = client.post("/v1/events", content=b"{not json")
    assert anonymous.status_code == 401
    assert anonymous.headers["www-authenticate"] == "Bearer"


def test_an_empty_batch_is_fine(world: Any) -> None:
    client, keys = world
    response = client.post("/v1/events", json={"events": []}, headers=auth(keys))
    assert response.status_code == 200
    body = response.json()
    assert body.pop("consistency")["token"] == response.headers["x-consistency-token"]
    assert body == {"accepted": 0, "duplicates": 0, "rejected": 0, "results": []}


def test_newcomers_over_http_join_the_latest_run(graph: Graph, settings: Settings,
                                                 tmp_path: Path) -> None:
    load_demo(graph, tmp_path, users=80, seed=41)
    run = run_segmentation(graph, runs_dir=settings.resolved_runs_dir)
    keys = keys_for(graph)
    with TestClient(create_app(settings)) as client:
        # The app loads the run's model when it starts, before any request needs it.
        assigner = client.app.state.writer.assigner  # type: ignore[attr-defined]
        deadline = time.monotonic() + 30
        while assigner.run_id is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert assigner.run_id == run.run_id
        response = client.post("/v1/events", headers=auth(keys),
                               json={"events": [event("http-new-1",
                                                         user={"cookie": "ck-newcomer"})]})
        assert response.status_code == 200, response.text
    rows = graph.rows("MATCH (u:User)-[:PERFORMED]->(:Interaction {event_id: 'http-new-1'}) "
                      "MATCH (u)-[m:IN_SEGMENT]->(s:Segment) "
                      "RETURN m.assigned_by AS by, s.run_id AS run")
    assert rows == [{"by": "ingest", "run": run.run_id}]
