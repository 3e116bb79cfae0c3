"""The data mutations against the real graph: stated preferences (last statement wins) and event
batches with one result per record, each behind the writer role."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from fastapi.testclient import TestClient
from neo4j import Driver

from api.app import create_app
from graph.auth import Role, create_key
from graph.db import Graph
from graph.privacy import Pseudonymizer
from graph.settings import Settings
from personas.demo import DemoPopulation
from tests.helpers import empty_graph, load_demo

pytestmark = pytest.mark.integration
USERS, SEED = 10, 3
KEY = "test-pseudonym-key"  # the session's key (tests/conftest.py): the API hashes with it

SET_PREFERENCE = """mutation($u: ID!, $c: String!, $w: Float!, $at: DateTime) {
  setPreference(userId: $u, category: $c, weight: $w, at: $at) {
    category weight source updatedAt } }"""
INGEST = """mutation($events: [JSON!]!) { ingestEvents(events: $events) {
  accepted duplicates rejected results { index eventId status reason } } }"""


@dataclass(frozen=True)
class World:
    graph: Graph
    keys: dict[str, str]
    user_id: str
    others: list[str]
    """More demo users, one per test that changes a user for good."""


@pytest.fixture(scope="module")
def world(driver: Driver, settings: Settings,
          tmp_path_factory: pytest.TempPathFactory) -> World:
    graph = empty_graph(driver, settings)
    load_demo(graph, tmp_path_factory.mktemp("events"), USERS, seed=SEED, key=KEY)
    keys = {role.value: create_key(graph, role, f"{role.value} mutations").key for role in Role}
    users = [r["id"] for r in graph.rows("MATCH (u:User) RETURN u.id AS id ORDER BY id")]
    return World(graph, keys, users[0], users[1:])


@pytest.fixture(scope="module")
def client(world: World, settings: Settings) -> Iterator[TestClient]:
    small = settings.model_copy(update={"api_max_batch_events": 5})
    with TestClient(create_app(small)) as c:
        yield c


def ask(client: TestClient, world: World, caller: str, query: str,
        **variables: Any) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {world.keys[caller]}"} if caller != "none" else {}
    response = client.post("/graphql", json={"query": query, "variables": variables},
                           headers=headers)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def code(body: dict[str, Any]) -> str | None:
    return body["errors"][0]["extensions"]["code"] if body.get("errors") else None


def explicit(graph: Graph, user_id: str, category: str) -> list[dict[str, Any]]:
    return graph.rows("MATCH (:User {id: $u})-[p:PREFERS {source: 'explicit'}]->"
                      "(:Category {name: $c}) RETURN p.weight AS weight", u=user_id, c=category)


def test_set_preference_states_and_the_latest_statement_wins(world: World,
                                                             client: TestClient) -> None:
    body = ask(client, world, "writer", SET_PREFERENCE, u=world.user_id, c="  Board GAMES ",
               w=0.8, at="2026-11-20T10:00:00Z")
    assert body["data"]["setPreference"] == {"category": "board games", "weight": 0.8,
                                             "source": "explicit",
                                             "updatedAt": "2026-11-20T10:00:00+00:00"}
    assert explicit(world.graph, world.user_id, "board games") == [{"weight": 0.8}]
    # An older statement arriving late changes nothing; a newer one wins.
    older = ask(client, world, "writer", SET_PREFERENCE, u=world.user_id, c="board games",
                w=-1.0, at="2026-11-01T10:00:00Z")
    assert older["data"]["setPreference"]["weight"] == 0.8
    newer = ask(client, world, "admin", SET_PREFERENCE, u=world.user_id, c="board games",
                w=-0.5, at="2026-11-21T10:00:00Z")
    assert newer["data"]["setPreference"]["weight"] == -0.5
    assert explicit(world.graph, world.user_id, "board games") == [{"weight": -0.5}]
    prefs = ask(client, world, "reader",
                'query($u: ID!) { user(id: $u) { preferences(first: 50) { category source } } }',
                u=world.user_id)["data"]["user"]["preferences"]
    assert {"category": "board games", "source": "explicit"} in prefs


@pytest.mark.parametrize(("variables", "expected"), [
    ({"w": 1.5}, "BAD_USER_INPUT"),
    ({"c": "   "}, "BAD_USER_INPUT"),
    ({"at": "2026-11-20T10:00:00"}, "BAD_USER_INPUT"),
    ({"u": "no-such-user"}, "NOT_FOUND"),
])
def test_bad_preferences_are_refused(world: World, client: TestClient,
                                     variables: dict[str, Any], expected: str) -> None:
    before = world.graph.rows("MATCH ()-[p:PREFERS {source: 'explicit'}]->() "
                              "RETURN count(p) AS n")
    body = ask(client, world, "writer", SET_PREFERENCE,
               **{"u": world.user_id, "c": "garden", "w": 0.5, **variables})
    assert code(body) == expected, body
    assert world.graph.rows("MATCH ()-[p:PREFERS {source: 'explicit'}]->() "
                            "RETURN count(p) AS n") == before


def event(event_id: str, **overrides: Any) -> dict[str, Any]:
    return {"event_id": event_id, "type": "page_view", "source": "web",
            "occurred_at": "2026-11-27T09:00:00Z", "user": {"cookie": "ck-mutation"},
            "properties": {"item_id": "sku-m1", "category": "Books"}, **overrides}


def test_ingest_events_returns_one_result_per_record(world: World, client: TestClient) -> None:
    before = world.graph.rows("MATCH (i:Interaction) RETURN count(i) AS n")[0]["n"]
    batch = [event("m-1"), event("m-2"), event("m-1"),
             event("m-3", occurred_at="yesterday"), "not an object"]
    body = ask(client, world, "writer", INGEST, events=batch)
    result = body["data"]["ingestEvents"]
    assert (result["accepted"], result["duplicates"], result["rejected"]) == (2, 1, 2)
    statuses = [(r["index"], r["eventId"], r["status"]) for r in result["results"]]
    assert statuses == [(0, "m-1", "accepted"), (1, "m-2", "accepted"),
                        (2, "m-1", "duplicate"), (3, "m-3", "rejected"),
                        (4, None, "rejected")]
    assert "occurred_at" in result["results"][3]["reason"]
    assert world.graph.rows("MATCH (i:Interaction) RETURN count(i) AS n")[0]["n"] == before + 2
    # The same batch again: nothing new.
    again = ask(client, world, "writer", INGEST, events=batch[:2])["data"]["ingestEvents"]
    assert (again["accepted"], again["duplicates"]) == (0, 2)
    assert world.graph.rows("MATCH (i:Interaction) RETURN count(i) AS n")[0]["n"] == before + 2


def test_a_batch_over_the_limit_is_refused_whole(world: World, client: TestClient) -> None:
    before = world.graph.rows("MATCH (i:Interaction) RETURN count(i) AS n")
    body = ask(client, world, "writer", INGEST, events=[event(f"big-{i}") for i in range(6)])
    assert code(body) == "LIMIT_EXCEEDED", body
    assert world.graph.rows("MATCH (i:Interaction) RETURN count(i) AS n") == before


MERGE = """mutation($s: ID!, $m: ID!) { mergeUsers(survivorId: $s, mergedId: $m, reason: "test") {
  id survivorId mergedId source reason active } }"""
UNMERGE = """mutation($id: ID!) { unmergeUser(mergeId: $id) { survivorId restoredId } }"""
FORGET = """mutation($u: ID!) { forgetUser(userId: $u) { userId alreadyErased
  erased { kind count } } }"""
EXPORT = "mutation($u: ID!) { exportUser(userId: $u) }"
CONSENT = """mutation($u: ID!, $p: String!, $g: Boolean!) {
  setConsent(userId: $u, purpose: $p, granted: $g) { personalization analytics } }"""


def interactions_of(graph: Graph, user_id: str) -> int:
    return int(graph.rows("MATCH (:User {id: $u})-[:PERFORMED]->(i) RETURN count(i) AS n",
                          u=user_id)[0]["n"])


def test_merge_and_unmerge_users(world: World, client: TestClient) -> None:
    survivor, merged = world.others[0], world.others[1]
    a, b = interactions_of(world.graph, survivor), interactions_of(world.graph, merged)
    body = ask(client, world, "admin", MERGE, s=survivor, m=merged)
    m = body["data"]["mergeUsers"]
    assert (m["survivorId"], m["mergedId"], m["source"], m["active"]) == (
        survivor, merged, "api", True)
    assert interactions_of(world.graph, survivor) == a + b
    # The merged-away id still finds the person: the survivor.
    found = ask(client, world, "reader", "query($u: ID!) { user(id: $u) { id } }", u=merged)
    assert found["data"]["user"]["id"] == survivor
    undone = ask(client, world, "admin", UNMERGE, id=m["id"])["data"]["unmergeUser"]
    assert undone == {"survivorId": survivor, "restoredId": merged}
    assert (interactions_of(world.graph, survivor), interactions_of(world.graph, merged)) == (a, b)
    assert code(ask(client, world, "admin", MERGE, s=survivor, m=survivor)) == "BAD_USER_INPUT"
    assert code(ask(client, world, "admin", UNMERGE, id="no-such-merge")) == "NOT_FOUND"


def test_export_then_forget_a_user(world: World, client: TestClient) -> None:
    user = world.others[2]
    exported = ask(client, world, "admin", EXPORT, u=user)["data"]["exportUser"]
    assert user in str(exported) and "@" not in str(exported)
    assert len(str(exported)) > 1000  # the profile, identifiers, sessions, interactions...
    erased = ask(client, world, "admin", FORGET, u=user)["data"]["forgetUser"]
    assert erased["userId"] == user and not erased["alreadyErased"]
    assert {e["kind"] for e in erased["erased"] if e["count"]} >= {"interactions", "identifiers"}
    assert world.graph.rows("MATCH (u:User {id: $u}) RETURN u", u=user) == []
    assert interactions_of(world.graph, user) == 0
    again = ask(client, world, "admin", FORGET, u=user)["data"]["forgetUser"]
    assert again["alreadyErased"] and again["erased"] == []
    assert code(ask(client, world, "admin", EXPORT, u=user)) == "NOT_FOUND"
    assert code(ask(client, world, "admin", FORGET, u="u_never_was")) == "NOT_FOUND"


def test_without_personalization_consent_the_api_answers_impersonally(
        world: World, client: TestClient) -> None:
    user = world.others[3]
    query = """query($u: ID!) { user(id: $u) { consents { personalization analytics }
      preferences(first: 5) { category } recommendations(first: 5) { itemId reasons } }
      chatContext(userId: $u) { personalized } }"""
    before = ask(client, world, "reader", query, u=user)["data"]
    assert before["user"]["preferences"] and before["chatContext"]["personalized"]
    consents = ask(client, world, "writer", CONSENT, u=user, p="personalization", g=False)
    assert consents["data"]["setConsent"] == {"personalization": False, "analytics": True}
    after = ask(client, world, "reader", query, u=user)["data"]
    assert after["user"]["consents"] == {"personalization": False, "analytics": True}
    assert after["user"]["preferences"] == [] and not after["chatContext"]["personalized"]
    # The best-sellers everyone gets, whatever this user bought.
    other = ask(client, world, "reader", query, u=world.others[4])["data"]
    everyone = world.graph.rows(
        "MATCH (it:Item)<-[r:INTERACTED]-(:User) WHERE r.purchases > 0 WITH it, count(*) AS "
        "buyers, sum(r.purchases) AS units RETURN it.id AS id ORDER BY buyers DESC, units DESC, "
        "id LIMIT 5")
    assert [r["itemId"] for r in after["user"]["recommendations"]] == [
        r["id"] for r in everyone]
    assert all(r["reasons"][0].startswith("bought by") for r in after["user"]["recommendations"])
    assert other["user"]["consents"]["personalization"]
    assert code(ask(client, world, "writer", CONSENT, u=user, p="marketing", g=True)) == (
        "BAD_USER_INPUT")


PERSONAL = """query($u: ID!) { user(id: $u) { id ageBand gender locale persona { name }
  segments { id } personaHistory { edges { node { runId } } } similarUsers { id }
  context { location { id } } location { id } recentInteractions { eventId }
  interactions { edges { node { eventId } } } sessions { edges { cursor } } } }"""


def test_without_consent_a_reader_gets_no_personal_field(world: World,
                                                         client: TestClient) -> None:
    user = world.others[6]
    before = ask(client, world, "reader", PERSONAL, u=user)["data"]["user"]
    # (No segmentation in this module: persona and segments are empty for everyone.)
    assert before["interactions"]["edges"] and before["sessions"]["edges"]
    assert before["recentInteractions"] and before["ageBand"]
    ask(client, world, "writer", CONSENT, u=user, p="personalization", g=False)
    withheld = ask(client, world, "reader", PERSONAL, u=user)
    assert "errors" not in withheld, withheld
    assert withheld["data"]["user"] == {
        "id": user, "ageBand": None, "gender": None, "locale": None, "persona": None,
        "segments": [], "personaHistory": {"edges": []}, "similarUsers": [], "context": None,
        "location": None, "recentInteractions": [], "interactions": {"edges": []},
        "sessions": {"edges": []}}
    # Analysis is governed by the analytics consent: an analyst still sees the profile.
    analyst = ask(client, world, "analyst", PERSONAL, u=user)["data"]["user"]
    assert analyst == before
    ask(client, world, "writer", CONSENT, u=user, p="personalization", g=True)


UPSERT = """mutation($p: ProfileInput!) { upsertUser(profile: $p) {
  userId created fieldsUpdated merges } }"""


def test_upsert_user_creates_updates_by_time_and_merges(world: World,
                                                        client: TestClient) -> None:
    new = {"identifiers": [{"kind": "email", "value": "Upsert.Person@Example.com"},
                           {"kind": "crm_id", "value": "crm-upsert-1"}],
           "at": "2026-11-10T10:00:00Z", "ageBand": "35-44", "tier": "gold",
           "firstName": "Upsert", "lifetimeValue": 120.5, "signupDate": "2024-02-29"}
    first = ask(client, world, "writer", UPSERT, p=new)["data"]["upsertUser"]
    assert first["created"] and first["merges"] == 0
    assert set(first["fieldsUpdated"]) == {"age_band", "tier", "first_name", "lifetime_value",
                                           "signup_date"}
    user_id = first["userId"]
    assert world.graph.rows("MATCH (u:User {id: $u}) RETURN u.age_band AS band",
                            u=user_id) == [{"band": "35-44"}]
    # Found again by the email alone (normalized as at ingestion); an older value loses.
    older = {"identifiers": [{"kind": "email", "value": "upsert.person@example.com"}],
             "at": "2026-11-01T10:00:00Z", "tier": "bronze"}
    stale = ask(client, world, "writer", UPSERT, p=older)["data"]["upsertUser"]
    assert (stale["userId"], stale["created"], stale["fieldsUpdated"]) == (
        user_id, False, [])
    newer = {**older, "at": "2026-11-20T10:00:00Z"}
    fresh = ask(client, world, "admin", UPSERT.replace("userId", "userId user { ageBand }"),
                p=newer)["data"]["upsertUser"]
    assert fresh["fieldsUpdated"] == ["tier"]
    assert fresh["user"] == {"ageBand": "35-44"}  # an admin may read the profile too
    [field] = world.graph.rows("MATCH (:User {id: $u})-[:HAS_FIELD]->(f:ProfileField "
                               "{name: 'tier'}) RETURN f.value AS value, f.source AS source",
                               u=user_id)
    assert field == {"value": "bronze", "source": "api"}
    # A profile naming this user's CRM id and another demo user's cookie merges the two.
    hashes = {r["hash"] for r in world.graph.rows(
        "MATCH (i:Identifier {kind: 'cookie'})-[:IDENTIFIES]->(:User {id: $u}) "
        "RETURN i.hash AS hash", u=world.others[5])}
    pseudonymizer = Pseudonymizer(KEY)
    cookie = next(e["user"]["cookie"] for e in DemoPopulation(USERS, SEED).events()
                  if pseudonymizer.digest("cookie", e["user"]["cookie"]) in hashes)
    both = {"identifiers": [{"kind": "crm_id", "value": "crm-upsert-1"},
                            {"kind": "cookie", "value": cookie}],
            "at": "2026-11-21T10:00:00Z"}
    merged = ask(client, world, "writer", UPSERT, p=both)["data"]["upsertUser"]
    assert merged["merges"] == 1


def test_a_writer_reads_no_profile_through_upsert_user(world: World, client: TestClient) -> None:
    """A writer key may write a profile, not read one back (persona, interactions, location)."""
    peek = UPSERT.replace("userId", "userId user { ageBand persona { name } "
                          "interactions { edges { node { eventId } } } }")
    body = ask(client, world, "writer", peek,
               p={"identifiers": [{"kind": "cookie", "value": "ck-peek"}], "ageBand": "25-34"})
    assert body["data"] is None
    assert body["errors"][0]["extensions"]["code"] == "FORBIDDEN"
    assert body["errors"][0]["path"] == ["upsertUser", "user"]


@pytest.mark.parametrize(("profile", "message"), [
    ({"identifiers": []}, "at least one identifier"),
    ({"identifiers": [{"kind": "passport", "value": "x"}]}, "unknown identifier kind"),
    ({"identifiers": [{"kind": "email", "value": "a@b.io"}], "ageBand": "teen"}, "age_band"),
    ({"identifiers": [{"kind": "email", "value": "a@b.io"}], "at": "2026-11-01T10:00:00"},
     "time zone"),
])
def test_bad_profiles_are_refused(world: World, client: TestClient, profile: dict[str, Any],
                                  message: str) -> None:
    body = ask(client, world, "writer", UPSERT, p=profile)
    assert code(body) == "BAD_USER_INPUT", body
    assert message in body["errors"][0]["message"]
    assert "a@b.io" not in body["errors"][0]["message"]


MUTATIONS = {
    "upsertUser": (UPSERT, {"p": {"identifiers": [{"kind": "cookie", "value": "ck-roles"}]}}),
    "setPreference": (SET_PREFERENCE, {"c": "roles", "w": 0.1}),
    "ingestEvents": (INGEST, {"events": [event("role-check")]}),
    "setConsent": (CONSENT, {"p": "analytics", "g": True}),
    "mergeUsers": (MERGE, {"s": "u_nobody_1", "m": "u_nobody_2"}),
    "unmergeUser": (UNMERGE, {"id": "no-such-merge"}),
    "forgetUser": (FORGET, {"u": "u_never_was"}),
    "exportUser": (EXPORT, {"u": "u_never_was"}),
    "runSegmentation": ("mutation { runSegmentation(k: 1) { runId } }", {}),
}
WRITE_MATRIX = {"reader": "FORBIDDEN", "writer": None, "analyst": "FORBIDDEN", "admin": None,
                "none": "UNAUTHENTICATED"}
ADMIN_MATRIX = {**WRITE_MATRIX, "writer": "FORBIDDEN"}
ADMIN_ONLY = {"mergeUsers", "unmergeUser", "forgetUser", "exportUser", "runSegmentation"}
# Allowed calls of admin-only mutations here name things that do not exist (or a bad k), so
# that the matrix changes nothing: the admin's answer is that error, past the role check.
ADMIN_ANSWER = {"mergeUsers": "NOT_FOUND", "unmergeUser": "NOT_FOUND", "forgetUser": "NOT_FOUND",
                "exportUser": "NOT_FOUND", "runSegmentation": "BAD_USER_INPUT"}


def test_the_matrix_covers_every_mutation(world: World, client: TestClient) -> None:
    body = ask(client, world, "admin", "{ __schema { mutationType { fields { name } } } }")
    assert {f["name"] for f in body["data"]["__schema"]["mutationType"]["fields"]} == set(
        MUTATIONS)


@pytest.mark.parametrize("caller", sorted(WRITE_MATRIX))
@pytest.mark.parametrize("name", sorted(MUTATIONS))
def test_mutation_role_matrix(world: World, client: TestClient, name: str, caller: str) -> None:
    query, variables = MUTATIONS[name]
    body = ask(client, world, caller, query, **{"u": world.user_id, **variables})
    expected = (ADMIN_MATRIX if name in ADMIN_ONLY else WRITE_MATRIX)[caller]
    if expected is None and name in ADMIN_ANSWER:
        expected = ADMIN_ANSWER[name]
    assert code(body) == expected, body
