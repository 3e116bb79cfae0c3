"""What real data says, end to end (envelope -> writer -> graph) against the real Neo4j: item
ratings on ``INTERACTED`` without a category-wide preference, line totals, the under-18 band,
declared profile attributes (events, CSV files and CRM records), and conversations shared by
several users, each participant linked and each message its own sender's."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import pytest

from graph.aggregates import recompute_aggregates_tx
from graph.crm.importer import apply_records
from graph.crm.mapping import parse_mapping, parse_record
from graph.db import Graph
from graph.events import MAX_ATTRIBUTES, MAX_USER_ATTRIBUTES, Event
from graph.identity import merge_users, unmerge
from graph.ingest.files import ingest_file
from graph.ingest.writer import EventWriter
from graph.privacy import Pseudonymizer
from graph.subjects.erasure import forget_user

pytestmark = pytest.mark.integration

PZ = Pseudonymizer("k")
ANN, BOB, CAT = ({"cookie": "ck-ann"}, {"cookie": "ck-bob"}, {"cookie": "ck-cat"})
ANN_ID, BOB_ID, CAT_ID = (PZ.user_id("cookie", u["cookie"]) for u in (ANN, BOB, CAT))


def ev(event_id: str, user: dict[str, str], at: str, type_: str = "page_view",
       **extra: Any) -> Event:
    return Event.model_validate({"event_id": event_id, "type": type_, "source": "web",
                                 "occurred_at": at, "user": user, **extra})


def rating(event_id: str, user: dict[str, str], at: str, stars: int, item: str = "film-1",
           category: str | None = "Drama") -> Event:
    props: dict[str, Any] = {"item_id": item, "rating": stars}
    if category is not None:
        props["category"] = category
    return ev(event_id, user, at, "feedback", properties=props)


def write(graph: Graph, *events: Event) -> None:
    EventWriter(graph, PZ).write(list(events))


def interacted(graph: Graph, user_id: str, item: str = "film-1") -> dict[str, Any] | None:
    rows = graph.rows(
        "MATCH (:User {id: $u})-[r:INTERACTED]->(:Item {id: $i}) "
        "RETURN r.rating AS rating, toString(r.rated_at) AS rated_at, r.views AS views, "
        "r.carts AS carts, r.purchases AS purchases, r.spend AS spend", u=user_id, i=item)
    return rows[0] if rows else None


def explicit(graph: Graph, user_id: str) -> dict[str, float]:
    return {r["c"]: r["w"] for r in graph.rows(
        "MATCH (:User {id: $u})-[p:PREFERS {source: 'explicit'}]->(c:Category) "
        "RETURN c.name AS c, p.weight AS w", u=user_id)}


# ---- item-level ratings -----------------------------------------------------------------------

def test_a_rating_of_an_item_lands_on_interacted_not_on_its_category(graph: Graph) -> None:
    write(graph, rating("r1", ANN, "2026-10-01T10:00:00Z", 1))
    assert interacted(graph, ANN_ID) == {"rating": 1, "rated_at": "2026-10-01T10:00:00Z",
                                         "views": 0, "carts": 0, "purchases": 0, "spend": 0.0}
    # No category-wide statement: a film rated low says nothing of every drama.
    assert explicit(graph, ANN_ID) == {}
    # It still counts as interest in the category, like any interaction with it.
    inferred = graph.rows("MATCH (:User {id: $u})-[p:PREFERS {source: 'inferred'}]->"
                          "(c:Category) RETURN c.name AS c, p.score AS s", u=ANN_ID)
    assert inferred == [{"c": "drama", "s": 2.0}]
    # Feedback naming only a category keeps its category-wide meaning.
    write(graph, ev("r2", ANN, "2026-10-02T10:00:00Z", "feedback",
                    properties={"category": "Comedy", "rating": 5}))
    assert explicit(graph, ANN_ID) == {"comedy": 1.0}


def test_the_latest_rating_by_event_time_stands(graph: Graph) -> None:
    # Within one batch, out of order: the later event wins whatever the order given.
    write(graph, rating("r2", ANN, "2026-10-02T10:00:00Z", 5),
          rating("r1", ANN, "2026-10-01T10:00:00Z", 2),
          ev("v1", ANN, "2026-10-03T10:00:00Z", properties={"item_id": "film-1"}))
    assert interacted(graph, ANN_ID) == {"rating": 5, "rated_at": "2026-10-02T10:00:00Z",
                                         "views": 1, "carts": 0, "purchases": 0, "spend": 0.0}
    # A late (older) rating in a later batch does not overwrite it; a newer one does.
    write(graph, rating("r0", ANN, "2026-09-01T10:00:00Z", 1))
    assert interacted(graph, ANN_ID)["rating"] == 5  # type: ignore[index]
    write(graph, rating("r3", ANN, "2026-10-05T10:00:00Z", 3))
    assert interacted(graph, ANN_ID)["rating"] == 3  # type: ignore[index]
    assert interacted(graph, ANN_ID)["rated_at"] == "2026-10-05T10:00:00Z"  # type: ignore[index]
    # The user's ratings are theirs alone.
    write(graph, rating("b1", BOB, "2026-10-06T10:00:00Z", 1))
    assert interacted(graph, ANN_ID)["rating"] == 3  # type: ignore[index]
    assert interacted(graph, BOB_ID)["rating"] == 1  # type: ignore[index]


def test_the_aggregate_rebuild_keeps_the_latest_rating(graph: Graph) -> None:
    """After a merge the survivor's INTERACTED is rebuilt from the interactions: the latest
    rating of the two users', as if one user had given both; an unmerge gives each theirs."""
    write(graph, rating("a1", ANN, "2026-10-01T10:00:00Z", 2),
          ev("a2", ANN, "2026-10-01T11:00:00Z", "purchase",
             properties={"item_id": "film-1", "amount": "7.99"}),
          rating("b1", BOB, "2026-10-03T10:00:00Z", 4),
          rating("b2", BOB, "2026-10-04T10:00:00Z", 1, item="film-2"))
    before = {(u, i): interacted(graph, u, i) for u in (ANN_ID, BOB_ID)
              for i in ("film-1", "film-2")}
    # A rebuild of unmerged users changes nothing: incremental and rebuilt agree.
    graph.write(lambda tx: recompute_aggregates_tx(tx, [ANN_ID, BOB_ID]))
    assert {(u, i): interacted(graph, u, i) for u, i in before} == before

    merge_id = merge_users(graph, ANN_ID, BOB_ID, source="test", reason="same person")
    assert interacted(graph, ANN_ID) == {"rating": 4, "rated_at": "2026-10-03T10:00:00Z",
                                         "views": 0, "carts": 0, "purchases": 1,
                                         "spend": 7.99}
    assert interacted(graph, ANN_ID, "film-2")["rating"] == 1  # type: ignore[index]
    unmerge(graph, merge_id)
    assert {(u, i): interacted(graph, u, i) for u, i in before} == before


# ---- line totals ------------------------------------------------------------------------------

def test_spend_uses_the_line_total_and_an_item_price_only_a_stated_one(graph: Graph) -> None:
    write(graph,
          # 4 x 6.53 would be 26.12; the line came to 26.10.
          ev("p1", ANN, "2026-10-01T10:00:00Z", "purchase",
             properties={"item_id": "mug", "price": "6.53", "quantity": 4, "amount": "26.10"}),
          # A total alone: 10.00 for 3 is no unit price anyone stated.
          ev("p2", ANN, "2026-10-02T10:00:00Z", "purchase",
             properties={"item_id": "tea", "quantity": 3, "amount": "10.00"}),
          ev("p3", ANN, "2026-10-03T10:00:00Z", "purchase",
             properties={"item_id": "pot", "price": "5.00", "quantity": 2}))
    user = graph.rows("MATCH (u:User {id: $u}) RETURN u.spend AS spend, u.purchases AS n",
                      u=ANN_ID)[0]
    assert user == {"spend": pytest.approx(46.10), "n": 3}
    lines = {r["e"]: r for r in graph.rows(
        "MATCH (i:Interaction) RETURN i.event_id AS e, i.price AS price, "
        "i.quantity AS quantity, i.amount AS amount")}
    assert lines["p1"] == {"e": "p1", "price": 6.53, "quantity": 4, "amount": 26.10}
    assert lines["p2"] == {"e": "p2", "price": None, "quantity": 3, "amount": 10.00}
    assert lines["p3"] == {"e": "p3", "price": 5.00, "quantity": 2, "amount": 10.00}
    prices = {r["id"]: r["price"] for r in graph.rows(
        "MATCH (it:Item) RETURN it.id AS id, it.price AS price")}
    assert prices == {"mug": 6.53, "tea": None, "pot": 5.00}
    spend = {r["i"]: r["s"] for r in graph.rows(
        "MATCH (:User {id: $u})-[r:INTERACTED]->(it) RETURN it.id AS i, r.spend AS s",
        u=ANN_ID)}
    assert spend == {"mug": 26.10, "tea": 10.00, "pot": 10.00}
    # The rebuild (after identity merges) uses the same definition.
    graph.write(lambda tx: recompute_aggregates_tx(tx, [ANN_ID]))
    assert graph.rows("MATCH (u:User {id: $u}) RETURN u.spend AS s", u=ANN_ID)[0]["s"] == \
        pytest.approx(46.10)


# ---- age band and declared attributes -------------------------------------------------------

def user_props(graph: Graph, user_id: str) -> dict[str, Any]:
    return dict(graph.rows("MATCH (u:User {id: $u}) RETURN properties(u) AS p",
                           u=user_id)[0]["p"])


def attrs(graph: Graph, user_id: str) -> dict[str, Any]:
    return {k: v for k, v in user_props(graph, user_id).items() if k.startswith("attr_")}


def test_profiles_carry_under_18_and_declared_attributes(graph: Graph) -> None:
    write(graph, ev("x1", ANN, "2026-10-01T10:00:00Z", profile={
        "age_band": "under-18",
        "attributes": {"occupation": "student", "postal_code": "SW1A 1AA",
                       "school": "ask ann@example.com"}}))
    props = user_props(graph, ANN_ID)
    assert props["age_band"] == "under-18"
    assert attrs(graph, ANN_ID) == {
        "attr_occupation": "student", "attr_postal_code": "SW1A",
        "attr_school": f"ask [email:{PZ.digest('email', 'ann@example.com')[:10]}]"}
    # Last write wins by event time, as for every profile field.
    write(graph, ev("x0", ANN, "2026-09-01T10:00:00Z",
                    profile={"attributes": {"occupation": "pupil"}}),
          ev("x2", ANN, "2026-10-02T10:00:00Z",
             profile={"attributes": {"postal_code": "M1 1AE"}}))
    assert attrs(graph, ANN_ID)["attr_occupation"] == "student"
    assert attrs(graph, ANN_ID)["attr_postal_code"] == "M1"


def test_a_user_holds_a_bounded_number_of_attributes(graph: Graph) -> None:
    names = [f"a{n:03d}" for n in range(MAX_USER_ATTRIBUTES + 2 * MAX_ATTRIBUTES)]
    chunks = [names[i:i + MAX_ATTRIBUTES] for i in range(0, len(names), MAX_ATTRIBUTES)]
    # Most in one batch, the rest in a later one: the bound holds either way.
    write(graph, *[ev(f"n{k}", ANN, f"2026-10-01T10:{k:02d}:00Z",
                      profile={"attributes": dict.fromkeys(chunk, "x")})
                   for k, chunk in enumerate(chunks[:-1])])
    write(graph, ev("n-last", ANN, "2026-10-02T10:00:00Z",
                    profile={"attributes": {**dict.fromkeys(chunks[-1], "x"), "a000": "y"}}))
    held = attrs(graph, ANN_ID)
    assert len(held) == MAX_USER_ATTRIBUTES
    assert sorted(held) == [f"attr_{n}" for n in names[:MAX_USER_ATTRIBUTES]]
    assert held["attr_a000"] == "y"  # a name already held is still updated


def test_a_csv_file_with_line_totals_and_attribute_columns(graph: Graph, tmp_path: Path) -> None:
    path = tmp_path / "retail.csv"
    with path.open("w", newline="") as handle:
        out = csv.writer(handle)
        out.writerow(["event_id", "type", "occurred_at", "user_crm_id", "item_id", "quantity",
                      "amount", "age_band", "attr_postal_code", "attr_occupation"])
        out.writerow(["c1", "purchase", "2026-10-01T10:00:00Z", "C-9", "sku-1", "3", "26.10",
                      "under-18", "94107", "student"])
        out.writerow(["c2", "purchase", "2026-10-01T11:00:00Z", "C-9", "sku-1", "1", "", "", "",
                      ""])
        out.writerow(["c3", "purchase", "2026-10-01T12:00:00Z", "C-9", "sku-1", "1", "-1", "",
                      "", ""])
    summary = ingest_file(EventWriter(graph, PZ), path, batch_size=10, max_line_bytes=10_000)
    assert (summary.written, summary.rejected) == (1, 2)
    uid = PZ.user_id("crm_id", "C-9")
    props = user_props(graph, uid)
    assert (props["spend"], props["age_band"]) == (26.10, "under-18")
    assert attrs(graph, uid) == {"attr_postal_code": "941", "attr_occupation": "student"}
    reasons = sorted(r["reason"] for r in graph.rows("MATCH (d:DeadLetter) RETURN d.reason "
                                                     "AS reason"))
    assert reasons == ["properties.amount: an amount must not be negative",
                       "record: purchase event needs properties ['price'] "
                       "(or 'amount' instead of 'price')"]


def test_crm_records_write_declared_attributes_where_events_do(graph: Graph) -> None:
    mapping = parse_mapping({"source": "acme", "timestamp": "at", "columns": {
        "id": {"target": "crm_id"}, "job": {"target": "attr_occupation"},
        "zip": {"target": "attr_postal_code"},
        "age": {"target": "age_band", "type": "enum", "values": ["under-18", "18-24"]}}})
    record = parse_record(mapping, {"id": "C-1", "job": "Nurse", "zip": "sw1a 1aa",
                                    "age": "under-18", "at": "2026-10-01T10:00:00Z"}, PZ)
    result = apply_records(graph, [record], source="acme", via="import")
    assert result.fields_updated == 3
    uid = PZ.user_id("crm_id", "C-1")
    assert attrs(graph, uid) == {"attr_occupation": "Nurse", "attr_postal_code": "SW1A"}
    assert user_props(graph, uid)["age_band"] == "under-18"
    fields = {r["name"]: r["value"] for r in graph.rows(
        "MATCH (:User {id: $u})-[:HAS_FIELD]->(f:ProfileField) RETURN f.name AS name, "
        "f.value AS value", u=uid)}
    assert fields == {"attr_occupation": "Nurse", "attr_postal_code": "SW1A",
                      "age_band": "under-18"}


def test_a_merge_carries_declared_attributes_over(graph: Graph) -> None:
    write(graph, ev("a1", ANN, "2026-10-01T10:00:00Z",
                    profile={"attributes": {"occupation": "nurse"}}),
          ev("b1", BOB, "2026-10-02T10:00:00Z",
             profile={"attributes": {"postal_code": "94107"}}))
    merge_id = merge_users(graph, ANN_ID, BOB_ID, source="test", reason="same person")
    assert attrs(graph, ANN_ID) == {"attr_occupation": "nurse", "attr_postal_code": "941"}
    unmerge(graph, merge_id)
    assert attrs(graph, ANN_ID) == {"attr_occupation": "nurse"}


# ---- shared conversations -----------------------------------------------------------------

def said(event_id: str, user: dict[str, str], at: str, text: str) -> Event:
    return ev(event_id, user, at, "chat_message", session_id="conv-1",
              properties={"text": text, "channel": "chat"})


def participants(graph: Graph) -> list[str]:
    return sorted(r["u"] for r in graph.rows(
        "MATCH (u:User)-[:HAD_SESSION]->(:Session {id: 'conv-1'}) RETURN u.id AS u"))


def messages_of(graph: Graph) -> dict[str, list[str]]:
    rows = graph.rows("MATCH (u:User)-[:PERFORMED]->(i:Interaction)-[:IN_SESSION]->"
                      "(:Session {id: 'conv-1'}) RETURN u.id AS u, i.event_id AS e ORDER BY e")
    out: dict[str, list[str]] = {}
    for r in rows:
        out.setdefault(r["u"], []).append(r["e"])
    return out


def test_two_users_in_one_conversation_are_both_linked_in_one_batch(graph: Graph) -> None:
    write(graph, said("m1", ANN, "2026-10-01T10:00:00Z", "hi, anyone seen the new film?"),
          said("m2", BOB, "2026-10-01T10:01:00Z", "yes, loved it"),
          said("m3", ANN, "2026-10-01T10:02:00Z", "great"))
    assert participants(graph) == sorted([ANN_ID, BOB_ID])
    assert messages_of(graph) == {ANN_ID: ["m1", "m3"], BOB_ID: ["m2"]}
    counters = {r["u"]: r["n"] for r in graph.rows(
        "MATCH (u:User) RETURN u.id AS u, u.chat_messages AS n")}
    assert counters == {ANN_ID: 2, BOB_ID: 1}
    session = graph.rows("MATCH (s:Session {id: 'conv-1'}) RETURN s.events AS n, "
                         "toString(s.started_at) AS a, toString(s.ended_at) AS b")
    assert session == [{"n": 3, "a": "2026-10-01T10:00:00Z", "b": "2026-10-01T10:02:00Z"}]


def test_a_participant_joining_in_a_later_batch_is_linked_too(graph: Graph) -> None:
    write(graph, said("m1", ANN, "2026-10-01T10:00:00Z", "hello"))
    write(graph, said("m2", BOB, "2026-10-01T10:05:00Z", "hi"),
          said("m3", CAT, "2026-10-01T10:06:00Z", "hey"))
    assert participants(graph) == sorted([ANN_ID, BOB_ID, CAT_ID])
    assert messages_of(graph) == {ANN_ID: ["m1"], BOB_ID: ["m2"], CAT_ID: ["m3"]}
    assert graph.rows("MATCH (s:Session) RETURN count(s) AS n, sum(s.events) AS e") == [
        {"n": 1, "e": 3}]


def test_erasing_one_participant_leaves_the_conversation_to_the_other(graph: Graph) -> None:
    write(graph, said("m1", ANN, "2026-10-01T10:00:00Z", "hello"),
          said("m2", BOB, "2026-10-01T10:01:00Z", "hi"))
    forget_user(graph, ANN_ID, source="test")
    assert participants(graph) == [BOB_ID]
    assert messages_of(graph) == {BOB_ID: ["m2"]}
