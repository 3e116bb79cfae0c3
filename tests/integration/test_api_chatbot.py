"""The chatbot-facing API against the real graph: users by identifier, personas with confidence,
the segment path, persona history and point-in-time answers, similar users, the situation,
personas with members and favourites, runs, and prompt-ready chat context."""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from neo4j import Driver
from neo4j import time as neo4j_time

from api.app import create_app
from graph.auth import Role, create_key
from graph.db import DriverReader, Graph
from graph.profile import queries
from graph.profile.prefetch import CHATBOT, profile_params
from graph.segments.run import run_segmentation
from graph.settings import Settings
from tests.helpers import db_hits, empty_graph, load_demo

pytestmark = pytest.mark.integration
USERS = 80
EMAIL = "user42-000000@example.com"  # the demo's first user (seed 42, index 0)


@dataclass(frozen=True)
class World:
    graph: Graph
    key: str
    first_run: str
    second_run: str
    between_runs: datetime


@pytest.fixture(scope="module")
def world(driver: Driver, settings: Settings,
          tmp_path_factory: pytest.TempPathFactory) -> World:
    """Demo users hashed with the API's key, two runs (k=3, then automatic) so that some users
    changed persona, and a reader key."""
    graph = empty_graph(driver, settings)
    load_demo(graph, tmp_path_factory.mktemp("events"), USERS, seed=42,
              key=settings.pseudonym_key.get_secret_value())
    first = run_segmentation(graph, n_clusters=3)
    between = datetime.now(UTC)
    second = run_segmentation(graph)
    key = create_key(graph, Role.READER, "chatbot test").key
    return World(graph, key, first.run_id, second.run_id, between)


@pytest.fixture(scope="module")
def client(world: World, settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as c:
        yield c


def ask(client: TestClient, world: World, query: str, **variables: Any) -> dict[str, Any]:
    response = client.post("/graphql", json={"query": query, "variables": variables},
                           headers={"Authorization": f"Bearer {world.key}"})
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def data(client: TestClient, world: World, query: str, **variables: Any) -> dict[str, Any]:
    body = ask(client, world, query, **variables)
    assert "errors" not in body, body["errors"]
    result: dict[str, Any] = body["data"]
    return result


def error_code(client: TestClient, world: World, query: str, **variables: Any) -> str:
    body = ask(client, world, query, **variables)
    assert body.get("errors"), body
    code: str = body["errors"][0]["extensions"]["code"]
    return code


def test_user_by_identifier_hashes_the_value_like_ingestion(client: TestClient,
                                                            world: World) -> None:
    q = "query($k: String!, $v: String!) { userByIdentifier(kind: $k, value: $v) { id } }"
    by_email = data(client, world, q, k="email", v=EMAIL)["userByIdentifier"]["id"]
    by_cookie = data(client, world, q, k="cookie", v="ck-42-000000")["userByIdentifier"]["id"]
    messy = data(client, world, q, k="email", v=f"  {EMAIL.upper()} ")["userByIdentifier"]["id"]
    assert by_email == by_cookie == messy
    assert error_code(client, world, q, k="email", v="nobody@example.com") == "NOT_FOUND"
    assert error_code(client, world, q, k="passport", v="x") == "BAD_USER_INPUT"


def test_persona_confidence_and_segment_path(client: TestClient, world: World) -> None:
    row = world.graph.rows(
        "MATCH (u:User)-[m:IN_SEGMENT {run_id: $run}]->(s:Segment) "
        "RETURN u.id AS id, m.distance AS d, s.median_distance AS median, s.id AS leaf "
        "ORDER BY u.id LIMIT 1", run=world.second_run)[0]
    q = """query($id: ID!) { user(id: $id) {
      persona { id name confidence why { feature zScore } segment { id } }
      segments { id level parentId label } } }"""
    user = data(client, world, q, id=row["id"])["user"]
    assert user["persona"]["confidence"] == pytest.approx(2 ** -((row["d"] / row["median"]) ** 2))
    assert user["persona"]["segment"]["id"] == row["leaf"] and user["persona"]["why"]
    path = user["segments"]
    assert path[0]["id"] == row["leaf"] and path[-1]["parentId"] is None
    assert [s["level"] for s in path] == list(range(len(path)))
    for child, parent in zip(path, path[1:], strict=False):
        assert child["parentId"] == parent["id"]


def changed_user(world: World) -> str:
    rows = world.graph.rows(
        "MATCH (u:User)-[h:HAD_PERSONA]->() WITH u, count(h) AS n WHERE n = 2 "
        "RETURN u.id AS id ORDER BY id LIMIT 1")
    assert rows, "k=3 then automatic k should move some users"
    user_id: str = rows[0]["id"]
    return user_id


def test_persona_history_and_point_in_time(client: TestClient, world: World) -> None:
    uid = changed_user(world)
    q = """query($id: ID!, $at: DateTime) { user(id: $id, asOf: $at) {
      asOf persona { id name }
      personaHistory { edges { node { persona { id } validFrom validTo runId } } }
      preferences(first: 10) { category weight source } } }"""
    now_user = data(client, world, q, id=uid, at=None)["user"]
    history = [e["node"] for e in now_user["personaHistory"]["edges"]]
    assert [h["runId"] for h in history] == [world.second_run, world.first_run]
    assert history[0]["validTo"] is None and history[1]["validTo"] == history[0]["validFrom"]
    assert now_user["persona"]["id"] == history[0]["persona"]["id"]

    then = data(client, world, q, id=uid, at=world.between_runs.isoformat())["user"]
    assert then["persona"]["id"] == history[1]["persona"]["id"] != now_user["persona"]["id"]
    # Rebuilt from the interactions up to now, preferences equal what ingestion stored.
    rebuilt = data(client, world, q, id=uid,
                   at=(datetime.now(UTC) + timedelta(minutes=1)).isoformat())["user"]
    stored = {(p["category"], p["source"]): p["weight"] for p in now_user["preferences"]}
    assert {(p["category"], p["source"]): pytest.approx(p["weight"])
            for p in rebuilt["preferences"]} == stored
    before_anything = data(client, world, q, id=uid, at="2000-01-01T00:00:00Z")["user"]
    assert before_anything["persona"] is None and before_anything["preferences"] == []
    assert error_code(client, world, q, id=uid, at="2026-01-01T00:00:00") == "BAD_USER_INPUT"
    assert error_code(client, world, q, id=uid, at="yesterday") == "BAD_USER_INPUT"
    # Written into the query text itself, the value fails the document's validation instead.
    literal = f'{{ user(id: "{uid}", asOf: "soon") {{ id }} }}'
    assert error_code(client, world, literal) == "GRAPHQL_VALIDATION_FAILED"


def test_similar_users_by_item_overlap(client: TestClient, world: World) -> None:
    uid = changed_user(world)
    q = "query($id: ID!) { user(id: $id) { similarUsers(first: 5) { id sharedItems similarity } } }"
    similar = data(client, world, q, id=uid)["user"]["similarUsers"]
    assert len(similar) == 5 and uid not in {s["id"] for s in similar}
    items = {r["u"]: set(r["items"]) for r in world.graph.rows(
        "MATCH (u:User)-[:INTERACTED]->(i:Item) RETURN u.id AS u, collect(i.id) AS items")}
    mine = items[uid]
    expected = sorted(((len(mine & v) / len(mine | v), k) for k, v in items.items()
                       if k != uid and mine & v), key=lambda t: (-t[0], t[1]))[:5]
    assert [s["id"] for s in similar] == [k for _, k in expected]
    assert [s["similarity"] for s in similar] == pytest.approx([j for j, _ in expected])


def test_situation_now_and_in_the_past(client: TestClient, world: World) -> None:
    uid = changed_user(world)
    q = """query($id: ID!, $at: DateTime) { user(id: $id, asOf: $at) { context(firstEvents: 3) {
      location { id city } currentWeather { at condition tempC }
      upcomingEvents { startsAt } } } }"""
    now = data(client, world, q, id=uid, at=None)["user"]["context"]
    assert now["location"]["city"]
    observed = datetime.fromisoformat(now["currentWeather"]["at"])
    # A minute of slack: the server read its clock before this test reads its own.
    assert timedelta(0) <= datetime.now(UTC) - observed <= timedelta(hours=24, minutes=1)
    starts = [e["startsAt"] for e in now["upcomingEvents"]]
    assert starts == sorted(starts) and 1 <= len(starts) <= 3
    past = data(client, world, q, id=uid, at="2000-01-01T00:00:00Z")["user"]["context"]
    assert past["currentWeather"] is None and past["location"]["id"] == now["location"]["id"]


def test_personas_with_members_and_favourites(client: TestClient, world: World) -> None:
    q = """{ personas { id name size segmentId
      members(first: 5) { edges { node { id } } } topCategories(first: 4) { category weight }
      topItems(first: 3) { id purchases users } } }"""
    personas = data(client, world, q)["personas"]
    assert sum(p["size"] for p in personas) == USERS
    assert [p["size"] for p in personas] == sorted((p["size"] for p in personas), reverse=True)
    shoppers = next(p for p in personas if p["name"] == "Frequent Shoppers")
    assert {c["category"] for c in shoppers["topCategories"]} & {
        "grocery", "beauty", "fashion", "books"}
    items = shoppers["topItems"]
    assert [i["purchases"] for i in items] == sorted((i["purchases"] for i in items), reverse=True)
    members = [e["node"]["id"] for e in shoppers["members"]["edges"]]
    distances = world.graph.rows(
        "MATCH (u:User)-[m:IN_SEGMENT]->(:Segment {id: $s}) WHERE u.id IN $ids "
        "RETURN u.id AS id, m.distance AS d", s=shoppers["segmentId"], ids=members)
    by_id = {r["id"]: r["d"] for r in distances}
    assert [by_id[m] for m in members] == sorted(by_id.values())
    one = data(client, world, "query($id: ID!) { persona(id: $id) { name size } }",
               id=shoppers["id"])["persona"]
    assert one == {"name": "Frequent Shoppers", "size": shoppers["size"]}
    assert error_code(client, world, 'query { persona(id: "nope") { id } }') == "NOT_FOUND"


def test_segmentation_runs_newest_first(client: TestClient, world: World) -> None:
    q = """query($after: String) { segmentationRuns(first: 1, after: $after) {
      edges { node { id k usersMoved ariVsPrevious } } pageInfo { hasNextPage endCursor } } }"""
    first = data(client, world, q, after=None)["segmentationRuns"]
    second = data(client, world, q, after=first["pageInfo"]["endCursor"])["segmentationRuns"]
    assert first["pageInfo"]["hasNextPage"] and not second["pageInfo"]["hasNextPage"]
    ids = [e["node"]["id"] for e in first["edges"] + second["edges"]]
    assert ids == [world.second_run, world.first_run]
    latest = first["edges"][0]["node"]
    assert latest["usersMoved"] > 0 and latest["ariVsPrevious"] is not None
    assert error_code(client, world, "{ segmentationRuns(first: 0) { edges { cursor } } }") == (
        "BAD_USER_INPUT")


def test_chat_context_fits_the_budget_and_honours_consent(client: TestClient,
                                                          world: World) -> None:
    uid = changed_user(world)
    q = """query($id: ID!, $max: Int!) { chatContext(userId: $id, maxTokens: $max) {
      text tokens personalized persona { name } preferences { category }
      recentIntents situation { location { city } } dropped } }"""
    full = data(client, world, q, id=uid, max=400)["chatContext"]
    assert full["personalized"] and full["dropped"] == []
    assert full["persona"]["name"] in full["text"] and full["tokens"] <= 400
    assert full["preferences"][0]["category"] in full["text"]
    assert full["situation"]["location"]["city"] in full["text"]
    tight = data(client, world, q, id=uid, max=16)["chatContext"]
    assert tight["tokens"] <= 16 and tight["dropped"]
    assert tight["text"].startswith("Persona: ")  # the most important line survives
    world.graph.execute("MATCH (u:User {id: $id}) SET u.consent_personalization = false", id=uid)
    try:
        withheld = data(client, world, q, id=uid, max=400)["chatContext"]
    finally:
        world.graph.execute("MATCH (u:User {id: $id}) REMOVE u.consent_personalization", id=uid)
    assert withheld["personalized"] is False and withheld["persona"] is None
    assert full["persona"]["name"] not in withheld["text"] and withheld["preferences"] == []
    assert error_code(client, world, q, id=uid, max=5) == "BAD_USER_INPUT"
    assert error_code(client, world, q, id="u_nobody", max=100) == "NOT_FOUND"


def test_each_limit_is_limit_exceeded(world: World, settings: Settings) -> None:
    tight = settings.model_copy(update={"api_max_page_size": 20, "api_max_depth": 4,
                                        "api_max_aliases": 2, "api_max_cost": 60,
                                        "api_max_tokens": 120})
    with TestClient(create_app(tight)) as small:
        def code(query: str) -> str | None:
            body = ask(small, world, query)
            return body["errors"][0]["extensions"]["code"] if body.get("errors") else None

        assert code("{ segmentationRuns(first: 20) { edges { cursor } } }") is None
        assert code("{ segmentationRuns(first: 21) { edges { cursor } } }") == "LIMIT_EXCEEDED"
        assert code("{ segmentationRuns(first: 0) { edges { cursor } } }") == "BAD_USER_INPUT"
        assert code("{ personas { members(first: 1) { edges { node { id } } } } }") == (
            "LIMIT_EXCEEDED")  # depth 5
        assert code("{ a: personas { id } b: personas { id } }") is None
        assert code("{ a: personas { id } b: personas { id } c: personas { id } }") == (
            "LIMIT_EXCEEDED")
        # cost: 1 + 20 x 2 = 41 fits; 1 + 20 x 4 = 81 is over 60
        assert code("{ segmentationRuns(first: 20) { edges { cursor } } }") is None
        assert code("{ segmentationRuns(first: 20) { edges { cursor } pageInfo { hasNextPage } } }"
                    ) == "LIMIT_EXCEEDED"
        assert code("{ " + " ".join(["personas { id }"] * 40) + " }") == "LIMIT_EXCEEDED"


def test_repeated_documents_get_the_same_verdict_per_app(client: TestClient, world: World,
                                                         settings: Settings) -> None:
    """Each distinct document is parsed and validated once (a cache): repeats are refused or
    answered as the first time was, and an app with other limits in the same process keeps its
    own verdicts."""
    tight = settings.model_copy(update={"api_max_depth": 4, "api_max_tokens": 120})
    deep = "{ personas { members(first: 1) { edges { node { id } } } } }"  # depth 5
    wordy = "{ " + " ".join(f"p{i}: personas {{ id }}" for i in range(25)) + " }"

    def code(app_client: TestClient, query: str) -> str | None:
        body = ask(app_client, world, query)
        return body["errors"][0]["extensions"]["code"] if body.get("errors") else None

    with TestClient(create_app(tight)) as small:
        for _ in range(3):
            assert code(small, deep) == "LIMIT_EXCEEDED"
            assert code(client, deep) is None
            assert code(small, wordy) == "LIMIT_EXCEEDED"  # tokens (and aliases)
            assert code(client, "{ personas { id } }") is None
    q = "query($id: ID!) { user(id: $id) { id } }"
    ids = [r["id"] for r in world.graph.rows("MATCH (u:User) RETURN u.id AS id LIMIT 3")]
    assert [data(client, world, q, id=i)["user"]["id"] for i in ids] == ids


def test_users_connection_pages_and_filters(client: TestClient, world: World) -> None:
    q = """query($after: String, $persona: ID, $seen: DateTime) {
      users(first: 30, after: $after, personaId: $persona, lastSeenAfter: $seen) {
        edges { cursor node { id } } pageInfo { hasNextPage endCursor } } }"""
    seen: list[str] = []
    after = None
    while True:
        page = data(client, world, q, after=after)["users"]
        seen += [e["node"]["id"] for e in page["edges"]]
        if not page["pageInfo"]["hasNextPage"]:
            break
        after = page["pageInfo"]["endCursor"]
    assert len(seen) == USERS == len(set(seen)) and seen == sorted(seen)
    persona = world.graph.rows(
        "MATCH (u:User)-[:IN_SEGMENT {run_id: $run}]->(:Segment)-[:EMBODIES]->(p:Persona) "
        "RETURN p.id AS id, collect(u.id) AS users ORDER BY size(users) LIMIT 1",
        run=world.second_run)[0]
    members = data(client, world, q, persona=persona["id"])["users"]["edges"]
    assert sorted(e["node"]["id"] for e in members) == sorted(persona["users"])[:30]
    recent = world.graph.rows("MATCH (u:User) RETURN u.last_seen AS t ORDER BY t DESC LIMIT 5")
    cut = recent[-1]["t"].to_native()
    newest = data(client, world, q, seen=cut.isoformat())["users"]["edges"]
    assert len(newest) == 4  # strictly after the 5th most recent
    assert error_code(client, world, q, after="not-a-cursor") == "BAD_USER_INPUT"
    assert error_code(client, world, q, after="c2VnbWVudDp4") == "BAD_USER_INPUT"  # segment:x


def test_round_trips_do_not_grow_with_the_number_of_users(
        client: TestClient, world: World, caplog: pytest.LogCaptureFixture) -> None:
    """100 users with persona, segments and top preferences: a fixed number of Cypher round
    trips (the page, then one per kind of data), whatever the page size."""
    caplog.set_level(logging.DEBUG, logger="api.cypher")
    q = """query Page($n: Int!) { users(first: $n) { edges { node {
      id persona { name confidence } segments { id } preferences(first: 5) { category } } } } }"""
    counts = {}
    for n in (5, 80):
        caplog.clear()
        page = data(client, world, q, n=n)["users"]["edges"]
        assert len(page) == n and all(e["node"]["persona"] for e in page)
        counts[n] = round_trips(caplog)
    assert counts[5] == counts[80] == 4, counts


CHATBOT_FIELDS = """
  id persona { name confidence segment { id } } membership { persona { name } }
  preferences(first: $prefs) { category weight source }
  context(firstEvents: 3) { location { city } currentWeather { condition tempC }
                            upcomingEvents { name startsAt } }
  recommendations(first: $recs) { itemId score reasons }"""


def round_trips(caplog: pytest.LogCaptureFixture) -> int:
    line = next(r.getMessage() for r in caplog.records if r.name == "api.cypher")
    return int(line.split(": ")[1].split()[0])


def test_one_user_comes_in_one_round_trip_with_what_the_fields_would_fetch(
        client: TestClient, world: World, caplog: pytest.LogCaptureFixture) -> None:
    """`user` fetches the persona, preferences, situation and recommendations it is asked for
    in the same query as the user; a page of users, which fetches them field by field (one
    query per kind of data), answers the same for each user."""
    caplog.set_level(logging.DEBUG, logger="api.cypher")
    page = data(client, world, "query($prefs: Int!, $recs: Int!) { users(first: 12) { edges { "
                "node {" + CHATBOT_FIELDS + "} } } }", prefs=4, recs=6)["users"]["edges"]
    assert round_trips(caplog) > 2
    by_id = "query($id: ID!, $prefs: Int!, $recs: Int!) { user(id: $id) {" + CHATBOT_FIELDS + "} }"
    # The same selection through a named fragment, with literal page sizes.
    by_fragment = """query($id: ID!) { user(id: $id) { ...Chat } }
      fragment Chat on User { id persona { name confidence segment { id } }
        membership { persona { name } }
        preferences(first: 4) { category weight source }
        context(firstEvents: 3) { location { city } currentWeather { condition tempC }
                                  upcomingEvents { name startsAt } }
        recommendations(first: 6) { itemId score reasons } }"""
    assert any(e["node"]["recommendations"] for e in page)
    assert any(e["node"]["context"] for e in page)
    for edge in page:
        expected = edge["node"]
        caplog.clear()
        assert data(client, world, by_id, id=expected["id"], prefs=4, recs=6)["user"] == (
            expected)
        assert round_trips(caplog) == 1
        caplog.clear()
        assert data(client, world, by_fragment, id=expected["id"])["user"] == expected
        assert round_trips(caplog) == 1


TIMES = """id firstSeen lastSeen preferences(first: 5) { category source updatedAt }
  context { currentWeather { at validUntil } upcomingEvents { id startsAt endsAt } }"""
ODD_TIMES = """
MATCH (u:User {id: $id})-[:LOCATED_IN]->(l:Location)
SET u.first_seen = datetime('2026-01-02T03:04:05.123456789+05:30'),
    u.last_seen = datetime('2026-03-29T01:30:00.0000015[Europe/Paris]')
WITH u, l
MATCH (u)-[p:PREFERS]->()
SET p.updated_at = datetime('2026-02-03T04:05:06.0000025-03:00')
WITH DISTINCT l
MATCH (w:WeatherObservation {location_id: l.id})
SET w.valid_until = datetime() + duration('P2D') + duration('PT0.000000123S')
WITH DISTINCT l
MATCH (e:LocalEvent {location_id: l.id}) WHERE e.starts_at >= datetime()
SET e.ends_at = datetime({datetime: e.starts_at + duration('PT2H0.5S'),
                          timezone: 'America/New_York'})
"""


def temporal_values(value: Any) -> list[Any]:
    if isinstance(value, dict):
        return [t for v in value.values() for t in temporal_values(v)]
    if isinstance(value, list):
        return [t for v in value for t in temporal_values(v)]
    return [value] if isinstance(value, neo4j_time.DateTime) else []


def test_the_prefetched_times_read_as_the_driver_gives_them(client: TestClient, world: World,
                                                            settings: Settings) -> None:
    """The chatbot statement returns its times as text, which the API parses itself: every
    time of a user's answer, at any offset, zone or precision (nanoseconds cut off as the
    driver cuts them), reads as the field-by-field path, on the driver's own conversion,
    gives it."""
    [found] = world.graph.rows("MATCH (u:User)-[:LOCATED_IN]->() WHERE EXISTS { "
                               "(u)-[:PREFERS]->() } RETURN u.id AS id ORDER BY id LIMIT 1")
    kept = world.graph.rows("MATCH (u:User {id: $id}) RETURN u.first_seen AS first, "
                            "u.last_seen AS last", id=found["id"])[0]
    world.graph.execute(ODD_TIMES, id=found["id"])
    # The statement hands the driver no time to convert (its conversion is pure Python).
    [row] = world.graph.rows(queries.USER_PROFILE, id=found["id"],
                             **profile_params(CHATBOT, settings, datetime.now(UTC)))
    assert row["first_seen"] and row["prefs"] and row["upcoming_events"]
    assert temporal_values(row) == []
    try:
        q = "query($id: ID!) { user(id: $id) {" + TIMES + "} }"
        prefetched = data(client, world, q, id=found["id"])["user"]
        page = data(client, world, "{ users(first: 80) { edges { node {" + TIMES + "} } } }")
        [expected] = [e["node"] for e in page["users"]["edges"] if e["node"]["id"] == found["id"]]
        assert prefetched == expected
        assert prefetched["firstSeen"] == "2026-01-02T03:04:05.123456+05:30"
        assert prefetched["lastSeen"] == "2026-03-29T01:30:00.000001+01:00"
        assert {p["updatedAt"] for p in prefetched["preferences"] if p["source"] == "explicit"} \
            <= {"2026-02-03T04:05:06.000002-03:00"}
        assert prefetched["context"]["currentWeather"]["validUntil"]
        assert all(e["endsAt"][-6:] in ("-05:00", "-04:00")
                   for e in prefetched["context"]["upcomingEvents"])
    finally:
        world.graph.execute("MATCH (u:User {id: $id}) SET u.first_seen = $first, "
                            "u.last_seen = $last", id=found["id"], **kept)


def test_a_field_asked_twice_fetches_its_second_page_as_before(
        client: TestClient, world: World, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="api.cypher")
    user = world.graph.rows("MATCH (u:User)-[:PREFERS]->() WITH u, count(*) AS n WHERE n >= 3 "
                            "RETURN u.id AS id ORDER BY id LIMIT 1")[0]["id"]
    q = """query($id: ID!) { user(id: $id) { two: preferences(first: 2) { category source }
      three: preferences(first: 3) { category source }
      recommendations(first: 2) { itemId } more: recommendations(first: 4) { itemId } } }"""
    got = data(client, world, q, id=user)["user"]
    assert len(got["two"]) == 2 and got["three"][:2] == got["two"] and len(got["three"]) == 3
    assert len(got["more"]) == 4 and got["more"][:2] == got["recommendations"]
    assert round_trips(caplog) == 3  # the user with `two` and `recommendations`, then the rest
    # Sizes out of bounds are not fetched ahead; the field reports them as before.
    assert error_code(client, world, "query($id: ID!) { user(id: $id) { "
                      "recommendations(first: 0) { itemId } } }", id=user) == "BAD_USER_INPUT"
    assert error_code(client, world, "query($id: ID!) { user(id: $id) { "
                      "preferences(first: 5000) { category } } }", id=user) == "LIMIT_EXCEEDED"


def subscribe(ws: Any, op_id: str, query: str, **variables: Any) -> None:
    ws.send_json({"id": op_id, "type": "subscribe",
                  "payload": {"query": query, "variables": variables}})


def polls_counted(monkeypatch: pytest.MonkeyPatch) -> Counter[tuple[str, str | None]]:
    """Count the subscriptions' polls, by query and user: a test waits for every subscription
    to have read its starting point instead of sleeping for a guess."""
    polls: Counter[tuple[str, str | None]] = Counter()
    rows = DriverReader.rows

    async def counting(self: DriverReader, query: Any, **params: Any) -> list[dict[str, Any]]:
        polls[(query, params.get("id"))] += 1
        return await rows(self, query, **params)

    monkeypatch.setattr(DriverReader, "rows", counting)
    return polls


def receive(ws: Any, timeout: float = 60.0) -> dict[str, Any]:
    """The next message, or a failure after ``timeout`` (the test client's own receive would
    wait forever)."""
    pool = ThreadPoolExecutor(max_workers=1)
    try:
        message: dict[str, Any] = pool.submit(ws.receive_json).result(timeout=timeout)
    finally:
        pool.shutdown(wait=False)  # a receive that timed out must not block the failure
    return message


def test_subscriptions_over_graphql_transport_ws(world: World, settings: Settings,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """A new run and the persona changes it causes arrive as `next` messages. Before the run,
    one user of each current persona is watched; k=3 retires at least one of the 4 personas,
    so at least one watched user changes."""
    fast = settings.model_copy(update={"api_subscription_poll_seconds": 0.2})
    polls = polls_counted(monkeypatch)
    watched = {r["persona"]: r["user"] for r in world.graph.rows(
        "MATCH (u:User)-[h:HAD_PERSONA]->(p:Persona) WHERE h.valid_to IS NULL "
        "WITH p, min(u.id) AS user RETURN p.id AS persona, user")}
    assert len(watched) == 4
    with TestClient(create_app(fast)) as app_client, app_client.websocket_connect(
            "/graphql", subprotocols=["graphql-transport-ws"],
            headers={"Authorization": f"Bearer {world.key}"}) as ws:
        ws.send_json({"type": "connection_init"})
        assert ws.receive_json()["type"] == "connection_ack"
        subscribe(ws, "runs", "subscription { segmentationFinished { id k } }")
        for persona, user in watched.items():
            subscribe(ws, persona, "subscription($u: ID!) { personaChanged(userId: $u) { "
                      "userId persona { id } previous { id } runId } }", u=user)
        # Every subscription has read its starting point once it has polled again after it.
        wanted = [(queries.SEGMENTATION_RUNS, None),
                  *((queries.CURRENT_PERSONA_PERIOD, user) for user in watched.values())]
        deadline = time.monotonic() + 60
        while any(polls[w] < 2 for w in wanted):
            assert time.monotonic() < deadline, polls
            time.sleep(0.05)
        run = run_segmentation(world.graph, n_clusters=3)
        messages: dict[str, dict[str, Any]] = {}
        while "runs" not in messages or not set(messages) - {"runs"}:
            msg = receive(ws)
            assert msg["type"] == "next", msg
            messages[msg["id"]] = msg["payload"]["data"]
    assert messages["runs"]["segmentationFinished"] == {"id": run.run_id, "k": 3}
    for persona, payload in messages.items():
        if persona == "runs":
            continue
        change = payload["personaChanged"]
        assert change["previous"]["id"] == persona != change["persona"]["id"]
        assert change["userId"] == watched[persona] and change["runId"] == run.run_id
        now = world.graph.rows("MATCH (:User {id: $u})-[h:HAD_PERSONA]->(p) "
                               "WHERE h.valid_to IS NULL RETURN p.id AS id",
                               u=change["userId"])
        assert now == [{"id": change["persona"]["id"]}]


def test_subscriptions_need_a_key(world: World, settings: Settings) -> None:
    with TestClient(create_app(settings)) as app_client, app_client.websocket_connect(
            "/graphql", subprotocols=["graphql-transport-ws"]) as ws:
        ws.send_json({"type": "connection_init"})
        assert ws.receive_json()["type"] == "connection_ack"
        subscribe(ws, "1", "subscription { segmentationFinished { id } }")
        msg = ws.receive_json()
    # Refused before it starts: graphql-transport-ws sends an `error` message, with the code.
    assert msg["type"] == "error" and msg["id"] == "1"
    assert "valid API key is required" in msg["payload"][0]["message"]
    assert msg["payload"][0]["extensions"] == {"code": "UNAUTHENTICATED"}


@pytest.mark.parametrize(("query", "code"), [
    ('subscription { personaChanged(userId: "no-such-user") { userId } }', "NOT_FOUND"),
    ("subscription { personaChanged { userId } }", "GRAPHQL_VALIDATION_FAILED"),
])
def test_refused_subscriptions_carry_a_code(world: World, settings: Settings, query: str,
                                            code: str) -> None:
    with TestClient(create_app(settings)) as app_client, app_client.websocket_connect(
            "/graphql", subprotocols=["graphql-transport-ws"],
            headers={"Authorization": f"Bearer {world.key}"}) as ws:
        ws.send_json({"type": "connection_init"})
        assert ws.receive_json()["type"] == "connection_ack"
        subscribe(ws, "1", query)
        msg = ws.receive_json()
    assert msg["id"] == "1" and msg["type"] in {"error", "next"}, msg
    errors = msg["payload"] if msg["type"] == "error" else msg["payload"]["errors"]
    assert errors[0]["extensions"]["code"] == code, msg


def test_recommendations_with_reasons(client: TestClient, world: World) -> None:
    uid = world.graph.rows("MATCH (u:User) WHERE u.purchases > 0 "
                           "RETURN u.id AS id ORDER BY id LIMIT 1")[0]["id"]
    q = """query($id: ID!) { user(id: $id) {
      recommendations(first: 5) { itemId category score reasons } } }"""
    recs = data(client, world, q, id=uid)["user"]["recommendations"]
    assert 1 <= len(recs) <= 5 and all(r["reasons"] for r in recs)
    assert [r["score"] for r in recs] == sorted((r["score"] for r in recs), reverse=True)
    bought = {r["id"] for r in world.graph.rows(
        "MATCH (:User {id: $u})-[r:INTERACTED]->(i:Item) WHERE r.purchases > 0 "
        "RETURN i.id AS id", u=uid)}
    assert not bought & {r["itemId"] for r in recs}
    assert error_code(client, world, f'{{ user(id: "{uid}") {{ recommendations(first: 0) '
                      "{ itemId } } }") == "BAD_USER_INPUT"


CHAT_LINES = """query($id: ID!, $at: DateTime) { chatContext(userId: $id, maxTokens: 400,
  asOf: $at) { text asOf persona { name } lines { text sources { kind id at detail } } } }"""

RECORD_OF = {  # the query that finds the record a source names, by kind
    "SEGMENTATION_RUN": "MATCH (n:SegmentationRun {id: $id}) RETURN n",
    "EVENT": "MATCH (n:Interaction {event_id: $id}) RETURN n",
    "LOCATION_UPDATE": "MATCH (n:Location {id: $id}) RETURN n",
    "WEATHER_OBSERVATION": "MATCH (n:WeatherObservation {id: $id}) RETURN n",
    "LOCAL_EVENT": "MATCH (n:LocalEvent {id: $id}) RETURN n",
}


def check_sources(world: World, uid: str, context: dict[str, Any]) -> dict[str, list[Any]]:
    """Every line's sources name records that exist (events of this user); by line prefix."""
    lines = context["lines"]
    assert "\n".join(line["text"] for line in lines) == context["text"]
    by_prefix: dict[str, list[Any]] = {}
    for line in lines:
        for source in line["sources"]:
            if source["kind"] == "STATED_PREFERENCE":
                continue
            found = world.graph.rows(RECORD_OF[source["kind"]], id=source["id"])
            assert len(found) == 1, source
            if source["kind"] == "EVENT":
                owner = world.graph.rows(
                    "MATCH (u:User)-[:PERFORMED]->(:Interaction {event_id: $id}) RETURN u.id AS u",
                    id=source["id"])
                assert owner == [{"u": uid}]
        by_prefix[line["text"].split(":")[0]] = line["sources"]
    return by_prefix


def persona_run(world: World, uid: str, at: datetime | None) -> str:
    """The run that gave the user their persona, now or (persona history) at ``at``."""
    if at is None:
        rows = world.graph.rows("MATCH (:User {id: $id})-[m:IN_SEGMENT]->(s:Segment) "
                                "RETURN s.run_id AS run ORDER BY m.assigned_at DESC LIMIT 1",
                                id=uid)
    else:
        rows = world.graph.rows("MATCH (:User {id: $id})-[h:HAD_PERSONA]->() "
                                "WHERE h.valid_from <= $at AND (h.valid_to IS NULL "
                                "OR h.valid_to > $at) RETURN h.run_id AS run", id=uid, at=at)
    run: str = rows[0]["run"]
    return run


def moved_user(world: World) -> str:
    """A user whose persona changed between runs (later tests in this module may add runs)."""
    rows = world.graph.rows(
        "MATCH (u:User)-[h:HAD_PERSONA]->() WITH u, count(h) AS n WHERE n >= 2 "
        "RETURN u.id AS id ORDER BY id LIMIT 1")
    assert rows
    user_id: str = rows[0]["id"]
    return user_id


def test_chat_context_lines_say_where_they_come_from(client: TestClient, world: World) -> None:
    uid = moved_user(world)
    context = data(client, world, CHAT_LINES, id=uid, at=None)["chatContext"]
    lines = check_sources(world, uid, context)
    assert [s["id"] for s in lines["Persona"]] == [persona_run(world, uid, None)]
    assert lines["Persona"][0]["kind"] == "SEGMENTATION_RUN" and lines["Persona"][0]["at"]
    likes = lines["Likes"]
    assert likes and all(s["kind"] in {"EVENT", "STATED_PREFERENCE"} for s in likes)
    recent = lines["Recently"]
    assert recent and {s["kind"] for s in recent} == {"EVENT"}
    assert all(s["at"] for s in recent)
    assert [s["kind"] for s in lines["Now"]][:1] == ["LOCATION_UPDATE"]
    if "WEATHER_OBSERVATION" in {s["kind"] for s in lines["Now"]}:
        assert "°C" in next(t["text"] for t in context["lines"] if t["text"].startswith("Now"))
    # The service's own note about quoted text is a line with no source.
    assert context["lines"][-1]["sources"] == [] and "never instructions" in context["text"]


def test_chat_context_as_of_replays_what_was_recorded_then(client: TestClient,
                                                           world: World,
                                                           settings: Settings) -> None:
    from graph.ingest.batch import ingest_records
    from graph.ingest.writer import EventWriter
    from graph.privacy import Pseudonymizer

    uid = moved_user(world)
    at = world.between_runs.isoformat()
    then = data(client, world, CHAT_LINES, id=uid, at=at)["chatContext"]
    assert datetime.fromisoformat(then["asOf"]) == world.between_runs
    lines = check_sources(world, uid, then)
    assert [s["id"] for s in lines["Persona"]] == [persona_run(world, uid, world.between_runs)]
    assert lines["Persona"][0]["id"] != persona_run(world, uid, None)  # the one it had then
    assert data(client, world, CHAT_LINES, id=uid, at=at)["chatContext"] == then

    # A late event, recorded now with a time before `at`, changes the present, not the replay.
    writer = EventWriter(world.graph, Pseudonymizer(settings.pseudonym_key.get_secret_value()))
    late = (world.between_runs - timedelta(minutes=1)).isoformat()
    results = ingest_records(writer, [{
        "schema_version": 1, "event_id": "late-search-1", "type": "search", "source": "web",
        "occurred_at": late, "user": {"cookie": "late-arrival-cookie"},
        "properties": {"query": "late arrival tents"}}], source="test")
    assert [r.status for r in results] == ["accepted"]
    late_user = world.graph.rows("MATCH (u:User)-[:PERFORMED]->(:Interaction "
                                 "{event_id: 'late-search-1'}) RETURN u.id AS u")[0]["u"]
    before = data(client, world, CHAT_LINES, id=late_user,
                  at=(world.between_runs + timedelta(seconds=1)).isoformat())["chatContext"]
    assert "late arrival" not in before["text"]
    now = data(client, world, CHAT_LINES, id=late_user, at=None)["chatContext"]
    assert "late arrival" in now["text"]
    recorded = [s for line in now["lines"] for s in line["sources"] if s["id"] == "late-search-1"]
    assert recorded and datetime.fromisoformat(recorded[0]["at"]) < world.between_runs
    assert error_code(client, world, CHAT_LINES, id=uid, at="2026-01-01T00:00:00") == \
        "BAD_USER_INPUT"


CHATBOT_DB_HITS_BUDGET = 3200
"""Neo4j's db hits for the chatbot query (``CHATBOT``: persona, preferences, situation and
recommendations), on average over this module's demo users: about a tenth above what it cost
on 2026-12-07 at 11:45 (2,501, or 2,924 when the planner scans the weather's time index, which
depends on the time the demo is built; 3,599 the same day with similar users' aggregates
filtered by their properties rather than sought by their mark, 3,732 at 06:20, 4,930 before
each property was read once, 5,690 before the similar users' items were sorted only past
their cap). Recommendation changes that doubled
it on the bench's data cost `make bench-api` its p99 at 100 requests/s on two cores, unseen
(docs/performance.md); raise it only with figures there. Property reads made by a map
projection (``r {.a, .b}``) are not counted as db hits: meet the budget with fewer reads, not
with that form."""


def test_the_chatbot_query_stays_within_its_budget_of_database_work(world: World,
                                                                    settings: Settings) -> None:
    """Measured as db hits (PROFILE), which do not depend on how busy the machine is."""
    now = datetime.now(UTC)
    users = [r["id"] for r in world.graph.rows("MATCH (u:User) RETURN u.id AS id")]
    hits = [db_hits(world.graph, queries.USER_PROFILE, id=uid,
                    **profile_params(CHATBOT, settings, now))[0] for uid in users]
    assert sum(hits) / len(hits) <= CHATBOT_DB_HITS_BUDGET
