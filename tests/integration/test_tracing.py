"""OpenTelemetry traces, as an operator turns them on: `personas serve` with
PERSONAS_OTEL_TRACES=console prints its spans, and a GraphQL request and an HTTP event batch
each make one trace, continuing the caller's ``traceparent``: the request's server span (made
by FastAPI once a provider is installed) with the Neo4j transactions it ran beneath it. Off by
default."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest

from api.tracing import span_processor
from graph.auth import Role, create_key
from graph.db import Graph
from graph.settings import Settings
from tests.helpers import PERSONAS, load_demo
from tests.integration.test_api_served import free_port, wait_healthy

pytestmark = pytest.mark.integration

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"


def spans_in(text: str) -> list[dict[str, Any]]:
    """The console exporter's spans: JSON objects one after another."""
    decoder = json.JSONDecoder()
    spans, i = [], 0
    while True:
        i = text.find("{", i)
        if i < 0:
            return spans
        span, i = decoder.raw_decode(text, i)
        spans.append(span)


def hex_id(value: str) -> str:
    return value.removeprefix("0x")


def below(span: dict[str, Any], ancestor: dict[str, Any], by_id: dict[str, Any]) -> bool:
    """Whether ``span`` descends from ``ancestor``."""
    parent = span["parent_id"]
    while parent is not None:
        if hex_id(parent) == hex_id(ancestor["context"]["span_id"]):
            return True
        parent = by_id.get(hex_id(parent), {}).get("parent_id")
    return False


def test_tracing_is_off_by_default() -> None:
    assert Settings().otel_traces == "off"
    assert span_processor(Settings()) is None
    assert span_processor(Settings(otel_traces="console")) is not None


def test_a_request_is_traced_from_the_api_into_neo4j(graph: Graph, settings: Settings,
                                                     tmp_path: Path) -> None:
    load_demo(graph, tmp_path, 5, seed=31, key=settings.pseudonym_key.get_secret_value())
    reader = create_key(graph, Role.READER, "traced reader").key
    writer = create_key(graph, Role.WRITER, "traced writer").key
    user_id = graph.rows("MATCH (u:User) RETURN u.id AS id LIMIT 1")[0]["id"]
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {**os.environ, "PERSONAS_NEO4J_URI": settings.bolt_uri,
           "PERSONAS_NEO4J_PASSWORD": settings.neo4j_password.get_secret_value(),
           "PERSONAS_PSEUDONYM_KEY": settings.pseudonym_key.get_secret_value(),
           "PERSONAS_RUNS_DIR": str(settings.resolved_runs_dir),
           "PERSONAS_OTEL_TRACES": "console", "PERSONAS_OTEL_SERVICE_NAME": "traced-api"}
    env.pop("PERSONAS_DEMO", None)
    out_path, log = tmp_path / "spans.out", tmp_path / "serve.log"
    with out_path.open("wb") as out, log.open("wb") as err:
        proc = subprocess.Popen([PERSONAS, "serve", "--host", "127.0.0.1", "--port", str(port)],
                                env=env, stdout=out, stderr=err)
    try:
        wait_healthy(proc, base, log)
        asked = httpx.post(
            f"{base}/graphql", json={"query": "query($id: ID!) { user(id: $id) { id "
                                              "preferences(first: 2) { category } } }",
                                     "variables": {"id": user_id}},
            headers={"Authorization": f"Bearer {reader}",
                     "traceparent": f"00-{TRACE_ID}-{PARENT_ID}-01"}, timeout=30)
        assert asked.status_code == 200 and "errors" not in asked.json(), asked.text
        event = {"event_id": "traced-1", "type": "purchase", "source": "web",
                 "occurred_at": "2026-11-01T10:00:00+01:00", "user": {"cookie": "ck-traced"},
                 "properties": {"item_id": "sku-traced", "category": "Books", "price": "9.50"}}
        sent = httpx.post(f"{base}/v1/events", json={"events": [event]},
                          headers={"Authorization": f"Bearer {writer}"}, timeout=30)
        assert sent.status_code == 200, sent.text
    finally:
        proc.terminate()  # the spans are on standard output, flushed as the process ends
        proc.wait(timeout=30)
    spans = spans_in(out_path.read_text())
    by_id = {hex_id(s["context"]["span_id"]): s for s in spans}

    graphql = [s for s in spans if s["name"] == "POST /graphql"]
    assert len(graphql) == 1, [s["name"] for s in spans]
    server = graphql[0]
    assert server["kind"] == "SpanKind.SERVER"
    assert server["resource"]["attributes"]["service.name"] == "traced-api"
    # The caller's trace goes on through the API.
    assert hex_id(server["context"]["trace_id"]) == TRACE_ID
    assert hex_id(server["parent_id"]) == PARENT_ID
    assert server["attributes"]["http.response.status_code"] == 200
    named = [s for s in spans if s["attributes"].get("graphql.operation")]
    assert [s["attributes"]["graphql.operation"] for s in named] == ["query user"]
    assert below(named[0], server, by_id)
    reads = [s for s in spans if s["name"] == "neo4j read" and below(s, server, by_id)]
    assert reads, [(s["name"], s["parent_id"]) for s in spans]
    for read in reads:
        assert read["kind"] == "SpanKind.CLIENT"
        assert hex_id(read["context"]["trace_id"]) == TRACE_ID
        attributes = read["attributes"]
        assert attributes["db.system.name"] == "neo4j"
        assert attributes["db.namespace"] == settings.neo4j_database
        assert "MATCH" in attributes["db.query.text"]
        # Values are parameters: the user's id never reaches a span.
        assert user_id not in json.dumps(read)

    events = [s for s in spans if s["name"] == "POST /v1/events"]
    assert len(events) == 1
    writes = [s for s in spans if s["name"] == "neo4j write" and below(s, events[0], by_id)]
    assert writes, [(s["name"], s["parent_id"]) for s in spans]
    assert "ck-traced" not in out_path.read_text()
