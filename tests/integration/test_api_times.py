"""Times a client names in a read, at and past every bound, against the real Neo4j: each
`DateTime` argument of the schema (`asOf`, `since`, `until`, `lastSeenAfter`, and the mutations'
`at`) and each cursor over a time-ordered list, asked of a real user so that every resolver
that sends the time to Neo4j runs. A time beyond what the driver, Neo4j or a resolver's window
arithmetic can take is refused as the client's mistake; none is an unexpected error (issue 19:
`asOf: "0001-01-01T00:00:00+01:00"`, `"9999-12-31T23:59:59-14:00"`, an offset of `+23:59` and
a cursor of year 300 million each answered INTERNAL_SERVER_ERROR, and the offset dropped the
Neo4j connection under another request)."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from graphql import GraphQLNamedType, build_schema, get_named_type
from neo4j import Driver

from api.app import create_app
from api.sdl import render_sdl
from graph.auth import Role, create_key
from graph.settings import Settings
from tests.helpers import empty_graph, load_demo

pytestmark = pytest.mark.integration

# Each DateTime argument of the schema, in a read (or write) that reaches it with a real
# user ($u) or a real category; checked against the SDL below, so a new one must be added.
READS = {
    ("Query", "user", "asOf"):
        "query($t: DateTime, $u: ID!) { user(id: $u, asOf: $t) { asOf persona { name } "
        "preferences { category } recommendations(first: 2) { name } context { location "
        "{ city } } personaHistory(first: 2) { edges { node { validFrom } } } } }",
    ("Query", "chatContext", "asOf"):
        "query($t: DateTime, $u: ID!) { chatContext(userId: $u, asOf: $t) { text } }",
    ("Query", "users", "lastSeenAfter"):
        "query($t: DateTime) { users(first: 2, lastSeenAfter: $t) { edges { node { id } } } }",
    ("User", "interactions", "since"):
        "query($t: DateTime, $u: ID!) { user(id: $u) { interactions(first: 2, since: $t) "
        "{ edges { node { type } } } } }",
    ("User", "interactions", "until"):
        "query($t: DateTime, $u: ID!) { user(id: $u) { interactions(first: 2, until: $t) "
        "{ edges { node { type } } } } }",
    ("Mutation", "setPreference", "at"):
        'mutation($t: DateTime, $u: ID!) { setPreference(userId: $u, category: "books", '
        "weight: 0.5, at: $t) { category } }",
    ("Mutation", "setConsent", "at"):
        'mutation($t: DateTime, $u: ID!) { setConsent(userId: $u, purpose: "analytics", '
        "granted: true, at: $t) { analytics } }",
    ("ProfileInput", "at", None):
        'mutation($t: DateTime) { upsertUser(profile: {identifiers: [{kind: "crm_id", '
        'value: "crm-times"}], at: $t}) { userId } }',
}
# Past a bound: beyond years 1..9999 in UTC, beyond Neo4j's offsets (±18:00), and within
# them but where a window subtracted from the time leaves Python's range.
REFUSED = ["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-14:00", "2026-01-01T00:00:00+23:59",
           "2026-01-01T00:00:00-18:01", "0001-01-01T00:00:00Z", "0999-12-31T23:59:59Z",
           "9000-01-01T00:00:00Z", "9999-12-31T23:59:59+14:00"]
# At the bounds: answered (a write may still refuse a time outside its own plausible range).
ANSWERED = ["1000-01-01T00:00:00Z", "8999-12-31T23:59:59Z", "2026-01-01T00:00:00+18:00",
            "2026-01-01T00:00:00-18:00", "1969-12-31T23:59:59Z"]
TIME_CURSORS = [
    ("interaction", "query($c: String, $u: ID!) { user(id: $u) { interactions(first: 2, "
                    "after: $c) { edges { cursor } } } }"),
    ("session", "query($c: String, $u: ID!) { user(id: $u) { sessions(first: 2, after: $c) "
                "{ edges { cursor } } } }"),
    ("period", "query($c: String, $u: ID!) { user(id: $u) { personaHistory(first: 2, "
               "after: $c) { edges { cursor } } } }"),
    ("run", "query($c: String) { segmentationRuns(first: 2, after: $c) { edges { cursor } } }"),
]


@pytest.fixture(scope="module")
def asked(driver: Driver, settings: Settings,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[TestClient, str, str]]:
    graph = empty_graph(driver, settings)
    load_demo(graph, tmp_path_factory.mktemp("times"), 12, seed=5,
              key=settings.pseudonym_key.get_secret_value())
    [row] = graph.rows("MATCH (u:User)-[:PERFORMED]->() RETURN u.id AS id "
                       "ORDER BY id LIMIT 1")
    admin = create_key(graph, Role.ADMIN, "times admin").key
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        yield client, admin, row["id"]


def ask(asked: tuple[TestClient, str, str], document: str, **variables: Any) -> Any:
    client, key, user = asked
    if "$u" in document:
        variables["u"] = user
    response = client.post("/graphql", json={"query": document, "variables": variables},
                           headers={"Authorization": f"Bearer {key}"})
    assert response.status_code == 200, response.text
    return response.json()


def codes(body: dict[str, Any]) -> set[str]:
    return {(e.get("extensions") or {}).get("code") for e in body.get("errors") or ()}


def test_every_datetime_argument_is_listed() -> None:
    """The reads above cover each DateTime argument and input field of the schema."""
    schema = build_schema(render_sdl())
    found = set()
    for name, kind in schema.type_map.items():
        fields = getattr(kind, "fields", None)
        if name.startswith("__") or not fields:
            continue
        for field_name, field in fields.items():
            if _named(field.type).name == "DateTime" and not hasattr(field, "args"):
                found.add((name, field_name, None))
            for arg_name, arg in getattr(field, "args", {}).items():
                if _named(arg.type).name == "DateTime":
                    found.add((name, field_name, arg_name))
    assert found == set(READS)


def _named(kind: Any) -> GraphQLNamedType:
    return get_named_type(kind)


@pytest.mark.parametrize("where", list(READS), ids=lambda w: ".".join(filter(None, w)))
def test_times_past_a_bound_are_the_clients_mistake(asked: tuple[TestClient, str, str],
                                                    where: tuple[str, str, str | None]) -> None:
    for time in REFUSED:
        body = ask(asked, READS[where], t=time)
        assert codes(body) == {"BAD_USER_INPUT"}, (time, body)
        assert "out of range" in str(body) or "offset beyond" in str(body), body
    for time in ANSWERED:
        body = ask(asked, READS[where], t=time)
        assert "INTERNAL_SERVER_ERROR" not in codes(body), (time, body)
        if where[0] != "Mutation" and where[0] != "ProfileInput":
            assert codes(body) == set(), (time, body)


def test_a_literal_time_past_a_bound_fails_validation(asked: tuple[TestClient, str, str]) -> None:
    body = ask(asked, 'query($u: ID!) { user(id: $u, asOf: "0001-01-01T00:00:00+01:00") '
               "{ persona { name } } }")
    assert codes(body) == {"GRAPHQL_VALIDATION_FAILED"}, body


@pytest.mark.parametrize(("kind", "document"), TIME_CURSORS, ids=[k for k, _ in TIME_CURSORS])
def test_time_cursors_past_a_bound_are_bad_user_input(asked: tuple[TestClient, str, str],
                                                      kind: str, document: str) -> None:
    """A cursor's time is epoch milliseconds that Neo4j makes a DateTime of: 64-bit numbers
    beyond years 1000..8999 are refused before the database sees them."""
    for millis in (2**63 - 1, -(2**63), 10**17, -62135596800001, 253402300800000,
                   -30610224000001, 221845392000000):
        cursor = base64.urlsafe_b64encode(f"{kind}:{millis}|x".encode()).decode()
        body = ask(asked, document, c=cursor)
        assert codes(body) == {"BAD_USER_INPUT"}, (millis, body)
    for millis in (-30610224000000, 0, 221845391999999):
        cursor = base64.urlsafe_b64encode(f"{kind}:{millis}|x".encode()).decode()
        assert codes(ask(asked, document, c=cursor)) == set(), millis
