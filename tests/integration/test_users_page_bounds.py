"""`users` filtered by segment, persona or last-seen time, against the real graph: a page
examines at most `FILTERED_PAGE_SCAN` users after its cursor, so a filter few users pass costs the
same on any population; paging still reaches every user that passes, once, in id order."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from graph.auth import Role, create_key
from graph.db import Graph
from graph.profile import queries as q
from graph.profile.model import FILTERED_PAGE_SCAN
from graph.settings import Settings
from tests.helpers import plan_rows

pytestmark = pytest.mark.integration
USERS = 2 * FILTERED_PAGE_SCAN + 2000
MEMBERS = ["u00010", f"u{FILTERED_PAGE_SCAN + 2000:05d}", f"u{USERS - 1:05d}"]
PAGE = """query($after: String) { users(first: 2, after: $after, segmentId: "s-rare") {
    edges { node { id } } pageInfo { hasNextPage endCursor } } }"""


@pytest.fixture
def client(graph: Graph, settings: Settings) -> Iterator[tuple[TestClient, str]]:
    graph.execute("UNWIND range(0, $n - 1) AS k "
                  "CREATE (:User {id: 'u' + right('0000' + k, 5)})", n=USERS)
    graph.execute("CREATE (s:Segment {id: 's-rare'}) WITH s "
                  "MATCH (u:User) WHERE u.id IN $ids "
                  "CREATE (u)-[:IN_SEGMENT {user_id: u.id}]->(s)", ids=MEMBERS)
    key = create_key(graph, Role.ANALYST, "users").key
    with TestClient(create_app(settings)) as c:
        yield c, key


def test_a_rare_segment_pages_every_member_once_examining_a_bounded_run(
        graph: Graph, client: tuple[TestClient, str]) -> None:
    c, key = client
    pages: list[list[str]] = []
    after = None
    while True:
        body = c.post("/graphql", json={"query": PAGE, "variables": {"after": after}},
                      headers={"Authorization": f"Bearer {key}"}).json()
        assert "errors" not in body, body
        conn = body["data"]["users"]
        pages.append([e["node"]["id"] for e in conn["edges"]])
        if not conn["pageInfo"]["hasNextPage"]:
            break
        after = conn["pageInfo"]["endCursor"]
        assert after is not None
    assert [u for p in pages for u in p] == MEMBERS
    # Each page stopped after FILTERED_PAGE_SCAN users: one member in each of the three runs.
    assert pages == [[m] for m in MEMBERS]


def test_a_filtered_page_reads_at_most_the_scan(graph: Graph,
                                                client: tuple[TestClient, str]) -> None:
    params: dict[str, Any] = {"after": "", "limit": 3, "scan": FILTERED_PAGE_SCAN,
                              "persona_id": None, "segment_id": "s-none",
                              "last_seen_after": None}
    with graph.driver.session(database=graph.database) as session:
        result = session.run("PROFILE " + q.USERS_PAGE, params)
        rows = list(result)
        profile = result.consume().profile
    assert profile is not None
    assert [(r["id"], r["scanned"]) for r in rows] == [(None, FILTERED_PAGE_SCAN)]
    examined = max(n for op, n in plan_rows(profile).items() if "Index" in op or "Scan" in op)
    assert examined <= FILTERED_PAGE_SCAN + 1, plan_rows(profile)


def test_a_rare_category_pages_its_items_the_same_way(graph: Graph,
                                                      client: tuple[TestClient, str]) -> None:
    c, key = client
    graph.execute("UNWIND range(0, $n - 1) AS k CREATE (:Item {id: 'i' + right('0000' + k, 5)})",
                  n=USERS)
    rare = [m.replace("u", "i") for m in MEMBERS]
    graph.execute("CREATE (c:Category {name: 'rare'}) WITH c "
                  "MATCH (it:Item) WHERE it.id IN $ids CREATE (it)-[:IN_CATEGORY]->(c)", ids=rare)
    query = """query($after: String) { items(first: 2, after: $after, category: "rare") {
        edges { node { id category } } pageInfo { hasNextPage endCursor } } }"""
    pages: list[list[str]] = []
    after = None
    while True:
        body = c.post("/graphql", json={"query": query, "variables": {"after": after}},
                      headers={"Authorization": f"Bearer {key}"}).json()
        assert "errors" not in body, body
        conn = body["data"]["items"]
        assert all(e["node"]["category"] == "rare" for e in conn["edges"])
        pages.append([e["node"]["id"] for e in conn["edges"]])
        if not conn["pageInfo"]["hasNextPage"]:
            break
        after = conn["pageInfo"]["endCursor"]
    assert pages == [[i] for i in rare]
