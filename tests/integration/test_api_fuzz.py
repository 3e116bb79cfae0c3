"""Property-based fuzzing of the API: GraphQL documents generated from our schema
(hypothesis-graphql, valid and invalid ones), the HTTP routes from the OpenAPI schema
(schemathesis), and hostile bodies on the routes that read raw JSON. The invariant everywhere: a
clear 4xx or error code, or success; never a 500 or a masked INTERNAL_SERVER_ERROR.

A few dozen examples each in the suite; `make fuzz` sets PERSONAS_FUZZ_EXAMPLES much higher."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from fastapi.testclient import TestClient
from graphql import StringValueNode, build_schema
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis_graphql import Mode, from_schema
from neo4j import Driver

from api.app import create_app
from api.sdl import render_sdl
from graph.auth import Role, create_key
from graph.settings import Settings
from tests.helpers import empty_graph, load_demo

pytestmark = pytest.mark.integration

EXAMPLES = int(os.environ.get("PERSONAS_FUZZ_EXAMPLES", "30"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize=EXAMPLES <= 30,
                suppress_health_check=[HealthCheck.function_scoped_fixture,
                                       HealthCheck.too_slow, HealthCheck.data_too_large])
SCHEMA = build_schema(render_sdl())
SLOW_MUTATIONS = {"runSegmentation"}  # minutes per call; its inputs have their own tests
MUTATIONS = [f for f in SCHEMA.mutation_type.fields if f not in SLOW_MUTATIONS] \
    if SCHEMA.mutation_type else []


def _string(value: str) -> StringValueNode:
    return StringValueNode(value=value)


SCALARS = {"DateTime": st.sampled_from(["2026-11-01T10:00:00Z", "2026-11-01T10:00:00",
                                        "0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59Z",
                                        "not a time", ""]).map(_string),
           "JSON": st.text(max_size=20).map(_string)}


@pytest.fixture(scope="module")
def fuzzed(driver: Driver, settings: Settings,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[TestClient, str, str]]:
    graph = empty_graph(driver, settings)
    load_demo(graph, tmp_path_factory.mktemp("fuzz"), 20, seed=3,
              key=settings.pseudonym_key.get_secret_value())
    admin = create_key(graph, Role.ADMIN, "fuzz admin").key
    writer = create_key(graph, Role.WRITER, "fuzz writer").key
    # No per-key rate here: the fuzzer is one fast client.
    fast = settings.model_copy(update={"api_key_rate_per_second": 0.0})
    with TestClient(create_app(fast), raise_server_exceptions=False) as client:
        yield client, admin, writer


def check(response: Any) -> None:
    """No 500; a 503 (an unconfigured webhook) or 504 only as JSON with its code."""
    assert response.status_code != 500, response.text[:2000]
    if response.status_code > 500:
        assert response.json()["error"]["code"] in ("UNAVAILABLE", "TIMEOUT"), response.text
    if response.headers.get("content-type", "").startswith("application/json"):
        body = response.json()
        for error in body.get("errors") or () if isinstance(body, dict) else ():
            code = (error.get("extensions") or {}).get("code")
            assert code and code != "INTERNAL_SERVER_ERROR", body


def post_graphql(client: TestClient, key: str, document: str) -> None:
    check(client.post("/graphql", json={"query": document},
                      headers={"Authorization": f"Bearer {key}"}))


def test_generated_queries_never_fail_with_500(fuzzed: tuple[TestClient, str, str]) -> None:
    client, admin, _ = fuzzed

    @FUZZ
    @given(document=from_schema(SCHEMA, fields=list(SCHEMA.query_type.fields),
                                custom_scalars=SCALARS))
    def run(document: str) -> None:
        post_graphql(client, admin, document)

    run()


def test_generated_mutations_never_fail_with_500(fuzzed: tuple[TestClient, str, str]) -> None:
    client, admin, _ = fuzzed

    @FUZZ
    @given(document=from_schema(SCHEMA, fields=MUTATIONS, custom_scalars=SCALARS))
    def run(document: str) -> None:
        post_graphql(client, admin, document)

    run()


def test_invalid_documents_are_refused_with_a_code(fuzzed: tuple[TestClient, str, str]) -> None:
    client, admin, _ = fuzzed

    @FUZZ
    @given(document=from_schema(SCHEMA, fields=list(SCHEMA.query_type.fields),
                                custom_scalars=SCALARS, mode=Mode.NEGATIVE))
    def run(document: str) -> None:
        post_graphql(client, admin, document)

    run()


JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False)
                    | st.text(max_size=30),
                    lambda inner: st.lists(inner, max_size=4)
                    | st.dictionaries(st.text(max_size=10), inner, max_size=4), max_leaves=20)
EVENT_KEYS = ("event_id", "type", "source", "occurred_at", "user", "session_id", "properties",
              "profile", "device", "location")


@pytest.mark.parametrize("route", ["/v1/events", "/v1/webhooks/context", "/graphql"])
def test_raw_bodies_never_fail_with_500(fuzzed: tuple[TestClient, str, str],
                                        route: str) -> None:
    client, admin, _ = fuzzed
    events = st.fixed_dictionaries({"events": st.lists(
        st.dictionaries(st.sampled_from(EVENT_KEYS), JSON, max_size=6), max_size=3)})

    @FUZZ
    @given(body=st.one_of(JSON, events).map(lambda v: json.dumps(v).encode())
           | st.binary(max_size=200))
    def run(body: bytes) -> None:
        check(client.post(route, content=body, headers={
            "Authorization": f"Bearer {admin}", "content-type": "application/json"}))

    run()


def test_openapi_operations_never_fail_with_500(fuzzed: tuple[TestClient, str, str]) -> None:
    client, admin, _ = fuzzed
    openapi = schemathesis.openapi.from_dict(client.app.openapi())  # type: ignore[attr-defined]
    for result in openapi.get_all_operations():
        operation = result.ok()

        @FUZZ
        @given(case=operation.as_strategy())
        def run(case: Any) -> None:
            headers = {k: v for k, v in (case.headers or {}).items()
                       if k.lower() not in ("authorization", "x-api-key")}
            headers["Authorization"] = f"Bearer {admin}"
            check(client.request(case.method, case.formatted_path, params=case.query,
                                 headers=headers))

        run()
