"""A persona's members page by page against the real graph: every member exactly once, nearest
the segment centre first (ties by id), from runs written now and from memberships written before
they carried their segment's id; and a page reads its own size, not the segment."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from graph.auth import Role, create_key
from graph.db import Graph
from graph.migrate import migrate
from graph.profile import queries as q
from graph.segments.publish import PendingRun
from graph.segments.queries import ASSIGN_USERS
from graph.settings import Settings
from tests.helpers import db_hits

pytestmark = pytest.mark.integration
RUN = "run-members"
SEGMENT = f"{RUN}-L0-0"
MEMBERS = """query($id: ID!, $after: String) { persona(id: $id) {
    members(first: 4, after: $after) { edges { node { id } } pageInfo { hasNextPage endCursor } }
} }"""


def publish_run(graph: Graph, members: int, distance: Any) -> None:
    """A run of two leaf segments through the run's own writer: `members` users in SEGMENT at
    `distance(n)`, three in the other; then two newcomers assigned as ingestion does."""
    graph.execute("UNWIND range(0, $n + 4) AS n CREATE (:User {id: 'u' + right('0000' + n, 5)})",
                  n=members)
    run = PendingRun(graph, RUN)
    run.begin({"algorithm": "test"})
    run.segments([{"id": SEGMENT, "props": {"level": 0, "size": members + 2}},
                  {"id": f"{RUN}-L0-1", "props": {"level": 0, "size": 3}}], [])
    ids = [f"u{n:05d}" for n in range(members + 5)]
    run.members([{"user_id": u, "segment_id": SEGMENT, "distance": distance(n)}
                 for n, u in enumerate(ids[:members])]
                + [{"user_id": u, "segment_id": f"{RUN}-L0-1", "distance": 0.0}
                   for u in ids[members:members + 3]])
    run.publish([{"segment_id": SEGMENT, "persona_id": "persona-m", "name": "M",
                  "description": "d"}])
    graph.execute(ASSIGN_USERS, run_id=RUN, assigned_by="ingest",
                  rows=[{"user_id": u, "segment_id": SEGMENT, "distance": 0.25}
                        for u in ids[members + 3:]])


@pytest.fixture
def client(graph: Graph, settings: Settings) -> Iterator[tuple[TestClient, str]]:
    key = create_key(graph, Role.READER, "members").key
    with TestClient(create_app(settings)) as c:
        yield c, key


def all_members(client: TestClient, key: str) -> list[str]:
    ids: list[str] = []
    after = None
    for _ in range(100):
        body = client.post("/graphql", json={"query": MEMBERS,
                                             "variables": {"id": "persona-m", "after": after}},
                           headers={"Authorization": f"Bearer {key}"}).json()
        assert "errors" not in body, body
        conn = body["data"]["persona"]["members"]
        ids += [e["node"]["id"] for e in conn["edges"]]
        if not conn["pageInfo"]["hasNextPage"]:
            return ids
        after = conn["pageInfo"]["endCursor"]
    raise AssertionError("paging did not end")


def expected(graph: Graph) -> list[str]:
    rows = graph.rows("MATCH (u:User)-[m:IN_SEGMENT]->(:Segment {id: $s}) RETURN u.id AS id "
                      "ORDER BY m.distance, u.id", s=SEGMENT)
    return [r["id"] for r in rows]


def test_pages_give_every_member_once_nearest_first_ties_by_id(
        graph: Graph, client: tuple[TestClient, str]) -> None:
    # Seven distances for 30 members: ties span pages (a page is 4), and the newcomers' 0.25
    # falls between the run's 0.2 and 0.3.
    publish_run(graph, 30, lambda n: (n % 7) / 10)
    ids = all_members(*client)
    assert len(ids) == len(set(ids)) == 32
    assert ids == expected(graph)
    assert graph.rows("MATCH ()-[m:IN_SEGMENT]->(s) WHERE m.segment_id <> s.id "
                      "OR m.segment_id IS NULL RETURN count(*) AS n") == [{"n": 0}]


def test_memberships_written_before_they_carried_the_segment_id_page_the_same(
        graph: Graph, client: tuple[TestClient, str], settings: Settings) -> None:
    publish_run(graph, 30, lambda n: (n % 5) / 10)
    graph.execute("MATCH ()-[m:IN_SEGMENT]->() REMOVE m.segment_id")
    graph.execute("MATCH (m:Migration {version: 14}) DELETE m")
    assert all_members(*client) == []  # what the index cannot find is not paged...
    migrate(graph, settings.migrations_dir)  # ...until the migration gives them their segment
    assert all_members(*client) == expected(graph)
    assert len(expected(graph)) == 32


def test_a_cursor_with_a_distance_we_never_give_out_is_bad_user_input(
        graph: Graph, client: tuple[TestClient, str]) -> None:
    publish_run(graph, 3, float)
    c, key = client
    for distance in ("nan", "inf", "-inf", "1e999", "x"):
        cursor = base64.urlsafe_b64encode(f"member:{distance}|u00001".encode()).decode()
        body = c.post("/graphql", json={"query": MEMBERS,
                                        "variables": {"id": "persona-m", "after": cursor}},
                      headers={"Authorization": f"Bearer {key}"}).json()
        assert body["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT", (distance, body)


def test_a_page_reads_its_size_not_the_segment(graph: Graph) -> None:
    """A page of 10 from the middle of a segment of 5,000 (all distances distinct): the seek
    reads the page, not the members before it (ordering the segment read 3-4 per member)."""
    publish_run(graph, 5000, lambda n: n / 1000)
    for after in (-float("inf"), 2.5):
        params = {"segment_id": SEGMENT, "after_distance": after, "after_id": "u02500",
                  "limit": 11}
        graph.rows(q.PERSONA_MEMBERS, **params)  # planned once
        hits, rows = db_hits(graph, q.PERSONA_MEMBERS, **params)
        assert len(rows) == 11
        assert rows[0]["distance"] > after
        assert hits < 300, hits

