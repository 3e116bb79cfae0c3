"""Cursor connections over a user's interactions and sessions and over the catalogue, against
the real graph: paging reaches every row exactly once, filters agree with plain Cypher, and bad
cursors, dates and types are BAD_USER_INPUT."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from fastapi.testclient import TestClient
from neo4j import Driver

from api.app import create_app
from api.types.activity import InteractionType
from graph.auth import Role, create_key
from graph.db import Graph
from graph.events import EventType
from graph.settings import Settings
from tests.helpers import empty_graph, load_demo

pytestmark = pytest.mark.integration
USERS = 30


@dataclass(frozen=True)
class World:
    graph: Graph
    reader: str
    analyst: str
    user_id: str
    category: str


@pytest.fixture(scope="module")
def world(driver: Driver, settings: Settings,
          tmp_path_factory: pytest.TempPathFactory) -> World:
    graph = empty_graph(driver, settings)
    load_demo(graph, tmp_path_factory.mktemp("events"), USERS, seed=7,
              key=settings.pseudonym_key.get_secret_value())
    # The busiest user, so that their lists span several pages.
    [user] = graph.rows("MATCH (u:User) RETURN u.id AS id ORDER BY u.events DESC, id LIMIT 1")
    [cat] = graph.rows("MATCH (c:Category)<-[:IN_CATEGORY]-(it:Item) "
                       "RETURN c.name AS name, count(it) AS n ORDER BY n DESC, name LIMIT 1")
    return World(graph, create_key(graph, Role.READER, "lists").key,
                 create_key(graph, Role.ANALYST, "lists").key, user["id"], cat["name"])


@pytest.fixture(scope="module")
def client(world: World, settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as c:
        yield c


def ask(client: TestClient, key: str, query: str, **variables: Any) -> dict[str, Any]:
    response = client.post("/graphql", json={"query": query, "variables": variables},
                           headers={"Authorization": f"Bearer {key}"})
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def all_pages(client: TestClient, key: str, query: str, path: list[str],
              **variables: Any) -> list[dict[str, Any]]:
    """Every node of a connection, following `endCursor` until `hasNextPage` is false."""
    nodes: list[dict[str, Any]] = []
    after = None
    for _ in range(1000):
        body = ask(client, key, query, after=after, **variables)
        assert "errors" not in body, body["errors"]
        conn = body["data"]
        for step in path:
            conn = conn[step]
        nodes += [e["node"] for e in conn["edges"]]
        if not conn["pageInfo"]["hasNextPage"]:
            return nodes
        after = conn["pageInfo"]["endCursor"]
    raise AssertionError("paging did not end")


INTERACTIONS = """
query($id: ID!, $after: String, $types: [InteractionType!], $since: DateTime,
      $until: DateTime, $order: TimeOrder! = NEWEST_FIRST) {
  user(id: $id) {
    interactions(first: 7, after: $after, types: $types, since: $since, until: $until,
                 order: $order) {
      edges { cursor node { eventId type at } }
      pageInfo { hasNextPage endCursor }
    }
  }
}"""


def cypher_interactions(graph: Graph, user_id: str, where: str = "true",
                        **params: Any) -> list[str]:
    rows = graph.rows(
        "MATCH (:User {id: $id})-[:PERFORMED]->(i:Interaction) WHERE " + where +
        " RETURN i.event_id AS id ORDER BY i.at DESC, i.event_id DESC", id=user_id, **params)
    return [r["id"] for r in rows]


def test_interaction_pages_reach_every_interaction_once_newest_first(
        world: World, client: TestClient) -> None:
    nodes = all_pages(client, world.reader, INTERACTIONS, ["user", "interactions"],
                      id=world.user_id)
    expected = cypher_interactions(world.graph, world.user_id)
    assert len(expected) > 14, "the test needs a user with several pages"
    assert [n["eventId"] for n in nodes] == expected


def test_oldest_first_is_the_reverse_order(world: World, client: TestClient) -> None:
    nodes = all_pages(client, world.reader, INTERACTIONS, ["user", "interactions"],
                      id=world.user_id, order="OLDEST_FIRST")
    assert [n["eventId"] for n in nodes] == cypher_interactions(world.graph, world.user_id)[::-1]


def test_interactions_filter_by_type_and_time(world: World, client: TestClient) -> None:
    """[since, until): an interaction exactly at `since` is in, one exactly at `until` out."""
    rows = world.graph.rows(
        "MATCH (:User {id: $id})-[:PERFORMED]->(i:Interaction) RETURN i.event_id AS id, "
        "i.type AS type, i.at.epochMillis AS ms, i.at AS at "
        "ORDER BY i.at DESC, i.event_id DESC", id=world.user_id)
    views = [r for r in rows if r["type"] in ("page_view", "purchase")]
    since, until = views[3 * len(views) // 4], views[len(views) // 4]
    nodes = all_pages(client, world.reader, INTERACTIONS, ["user", "interactions"],
                      id=world.user_id, types=["PAGE_VIEW", "PURCHASE"],
                      since=since["at"].to_native().isoformat(),
                      until=until["at"].to_native().isoformat())
    expected = [r["id"] for r in views if since["ms"] <= r["ms"] < until["ms"]]
    assert len(expected) > 7, "the window should span pages"
    assert since["id"] in expected and until["id"] not in expected
    assert [n["eventId"] for n in nodes] == expected
    assert {n["type"] for n in nodes} <= {"page_view", "purchase"}


def test_sessions_page_and_hold_their_interactions(world: World, client: TestClient) -> None:
    query = """query($id: ID!, $after: String) { user(id: $id) {
        sessions(first: 3, after: $after) {
          edges { node { id events startedAt interactions(first: 100) {
            edges { node { eventId } } pageInfo { hasNextPage } } } }
          pageInfo { hasNextPage endCursor } } } }"""
    nodes = all_pages(client, world.reader, query, ["user", "sessions"], id=world.user_id)
    expected = world.graph.rows(
        "MATCH (:User {id: $id})-[:HAD_SESSION]->(s:Session) "
        "RETURN s.id AS id, s.events AS events ORDER BY s.started_at DESC, s.id DESC",
        id=world.user_id)
    assert len(expected) > 3
    assert [n["id"] for n in nodes] == [r["id"] for r in expected]
    for node in nodes:
        assert len(node["interactions"]["edges"]) == node["events"]


def test_items_of_a_category_page_in_id_order(world: World, client: TestClient) -> None:
    query = """query($after: String, $category: String) {
        items(first: 4, after: $after, category: $category) {
          edges { node { id category buyers } } pageInfo { hasNextPage endCursor } } }"""
    # The category is matched as ingestion normalizes names.
    nodes = all_pages(client, world.reader, query, ["items"],
                      category=f"  {world.category.upper()} ")
    expected = world.graph.rows(
        "MATCH (it:Item)-[:IN_CATEGORY]->(:Category {name: $c}) RETURN it.id AS id ORDER BY id",
        c=world.category)
    assert len(expected) > 4
    assert [n["id"] for n in nodes] == [r["id"] for r in expected]
    assert {n["category"] for n in nodes} == {world.category}
    every = all_pages(client, world.reader, query, ["items"])
    assert len(every) == world.graph.rows("MATCH (it:Item) RETURN count(it) AS n")[0]["n"]
    none = ask(client, world.reader, query, category="no such category")
    assert none["data"]["items"]["edges"] == []


def test_one_item_and_the_categories(world: World, client: TestClient) -> None:
    [top] = world.graph.rows(
        "MATCH (u:User)-[r:INTERACTED]->(it:Item) WHERE r.purchases > 0 "
        "RETURN it.id AS id, count(u) AS buyers ORDER BY buyers DESC, id LIMIT 1")
    body = ask(client, world.reader, 'query($id: ID!) { item(id: $id) { id buyers } }',
               id=top["id"])
    assert body["data"]["item"] == {"id": top["id"], "buyers": top["buyers"]}
    cats = ask(client, world.reader, "{ categories { name itemCount items(first: 100) { "
               "edges { node { category } } } } }")["data"]["categories"]
    expected = world.graph.rows("MATCH (c:Category) RETURN c.name AS name, "
                                "COUNT { (:Item)-[:IN_CATEGORY]->(c) } AS n ORDER BY name")
    assert [(c["name"], c["itemCount"]) for c in cats] == [(r["name"], r["n"]) for r in expected]
    for cat in cats:
        assert len(cat["items"]["edges"]) == cat["itemCount"]
        assert {e["node"]["category"] for e in cat["items"]["edges"]} <= {cat["name"]}


def test_segments_know_their_parent_and_children(world: World, client: TestClient,
                                                 settings: Settings) -> None:
    from graph.segments.run import run_segmentation

    run_segmentation(world.graph, runs_dir=settings.resolved_runs_dir)
    segments = ask(client, world.reader, "{ segments { id level parentId parent { id } "
                   "children { id parentId } } }")["data"]["segments"]
    by_id = {s["id"]: s for s in segments}
    roots = [s for s in segments if s["parentId"] is None]
    assert len(roots) == 1 and roots[0]["parent"] is None
    for seg in segments:
        if seg["parentId"] is not None:
            assert seg["parent"]["id"] == seg["parentId"]
            assert seg["id"] in {c["id"] for c in by_id[seg["parentId"]]["children"]}
        assert all(c["parentId"] == seg["id"] for c in seg["children"])
        assert (seg["level"] == 0) == (seg["children"] == [])
    # A persona's members, nearest the segment centre first, page by page.
    [persona] = ask(client, world.reader, "{ personas { id segmentId } }")["data"]["personas"][:1]
    query = """query($id: ID!, $after: String) { persona(id: $id) {
        members(first: 4, after: $after) { edges { node { id } }
                                           pageInfo { hasNextPage endCursor } } } }"""
    members = all_pages(client, world.reader, query, ["persona", "members"], id=persona["id"])
    expected = world.graph.rows(
        "MATCH (u:User)-[m:IN_SEGMENT]->(:Segment {id: $s}) RETURN u.id AS id "
        "ORDER BY m.distance, u.id", s=persona["segmentId"])
    assert len(expected) > 4
    assert [m["id"] for m in members] == [r["id"] for r in expected]


def test_identifiers_are_masked_hashes(world: World, client: TestClient) -> None:
    body = ask(client, world.analyst,
               'query($id: ID!) { user(id: $id) { identifiers { kind masked firstSeen } } }',
               id=world.user_id)
    idents = body["data"]["user"]["identifiers"]
    stored = world.graph.rows("MATCH (i:Identifier)-[:IDENTIFIES]->(:User {id: $id}) "
                              "RETURN i.kind AS kind, i.hash AS hash ORDER BY kind, hash",
                              id=world.user_id)
    assert [i["kind"] for i in idents] == [r["kind"] for r in stored]
    for ident, row in zip(idents, stored, strict=True):
        assert ident["masked"] == row["hash"][:8] + "…"
        assert "@" not in ident["masked"]


@pytest.mark.parametrize(("query", "variables"), [
    (INTERACTIONS, {"after": "not-a-cursor"}),
    (INTERACTIONS, {"after": "dXNlcjp4"}),  # a cursor of another list ("user:x")
    (INTERACTIONS, {"since": "2026-11-01T10:00:00"}),  # no time zone
    (INTERACTIONS, {"types": ["NOT_A_TYPE"]}),
    ('query($id: ID!) { item(id: $id) { id } }', {"id": "no-such-item"}),
])
def test_bad_list_arguments(world: World, client: TestClient, query: str,
                            variables: dict[str, Any]) -> None:
    body = ask(client, world.reader, query, **{"id": world.user_id, **variables})
    expected = "NOT_FOUND" if "item(" in query else "BAD_USER_INPUT"
    assert body["errors"][0]["extensions"]["code"] == expected, body


def test_interaction_type_enum_matches_the_event_envelope() -> None:
    assert {t.value for t in InteractionType} == {t.value for t in EventType}
