"""What the bounded reads rely on stays true whatever moves interactions: an item's counters
(`buyers`, `units`) and each interaction's owner and session ids (migrations/0015), after merges,
unmerges and erasure, under concurrent writers, and after the migration backfills data written
before them. Each check compares with a recount from the interactions themselves."""

from __future__ import annotations

import math
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from graph.aggregates.queries import UPDATE_INFERRED_PREFERENCES, UPDATE_INTERACTED
from graph.db import Graph
from graph.events import Event
from graph.identity import merge_users, unmerge
from graph.ingest.writer import EventWriter
from graph.migrate import migrate, split_statements
from graph.privacy import Pseudonymizer
from graph.subjects.erasure import forget_user

pytestmark = pytest.mark.integration

PZ = Pseudonymizer("k")
MIGRATIONS = Path(__file__).resolve().parents[2] / "migrations"

# Each item's buyers and units as its counters say, and as the live users' purchase
# interactions count them.
COUNTERS = """
MATCH (it:Item)
OPTIONAL MATCH (u:User)-[:PERFORMED]->(i:Interaction {type: 'purchase', item_id: it.id})
WITH it, u, sum(CASE WHEN i IS NULL THEN 0 ELSE coalesce(i.quantity, 1) END) AS units
WITH it, count(u) AS buyers, sum(units) AS units
RETURN it.id AS id, [coalesce(it.buyers, 0), coalesce(it.units, 0)] AS counters,
       [buyers, units] AS recount
ORDER BY id
"""

# Each item's users as its counter says (none rather than 0), and as the live users who
# performed an interaction with it count them.
USERS = """
MATCH (it:Item)
OPTIONAL MATCH (u:User)-[:PERFORMED]->(:Interaction {item_id: it.id})
WITH it, count(DISTINCT u) AS users
RETURN it.id AS id, it.users AS counter, CASE WHEN users > 0 THEN users END AS recount
ORDER BY id
"""

# Interactions whose owner or session id is not the user who performed them or their session.
WRONG_OWNERS = """
MATCH (u)-[:PERFORMED]->(i:Interaction)
OPTIONAL MATCH (i)-[:IN_SESSION]->(s:Session)
WITH i, u, s WHERE i.user_id IS NULL OR i.user_id <> u.id
                   OR coalesce(i.session_id, '') <> coalesce(s.id, '')
RETURN i.event_id AS event_id, i.user_id AS user_id, u.id AS owner, i.session_id AS session_id,
       s.id AS session
"""


def event(event_id: str, who: dict[str, str], at: str, type_: str = "purchase",
          item: str = "sku-1", quantity: int = 1, session: str | None = None,
          catalogue: bool = True) -> Event:
    """An event on `item` at a price of 10; with `catalogue`, the item's category and price
    (without, the purchase's amount only)."""
    body: dict[str, Any] = {
        "event_id": event_id, "type": type_, "source": "web", "occurred_at": at, "user": who,
        "properties": {"item_id": item,
                       **({"category": "books", "price": "10"} if catalogue else {}),
                       **({"quantity": quantity} if type_ == "purchase" else {}),
                       **({"amount": str(10 * quantity)}
                          if type_ == "purchase" and not catalogue else {})}}
    if session:
        body["session_id"] = session
    return Event.model_validate(body)


def check(graph: Graph, when: str) -> None:
    counters = graph.rows(COUNTERS)
    assert counters, when
    assert [r for r in counters if r["counters"] != r["recount"]] == [], when
    assert [r for r in graph.rows(USERS) if r["counter"] != r["recount"]] == [], when
    assert graph.rows(WRONG_OWNERS) == [], when


A, B, C = {"crm_id": "crm-A"}, {"cookie": "ck-B"}, {"email": "c@example.com"}
UID = {k: PZ.user_id(*next(iter(v.items()))) for k, v in (("A", A), ("B", B), ("C", C))}


def test_merges_unmerges_and_erasure_keep_counters_and_owner_ids(graph: Graph) -> None:
    """Three buyers of shared items (two of them the same person, found out later): their
    merge, its undoing, a merge again and an erasure leave counters and owner ids as a
    recount gives them."""
    EventWriter(graph, PZ).write([
        event("a1", A, "2026-10-01T10:00:00Z", quantity=2, session="sA"),
        event("a2", A, "2026-10-01T10:05:00Z", item="sku-2", session="sA"),
        event("a3", A, "2026-10-01T10:06:00Z", "page_view", item="sku-3", session="sA"),
        event("b1", B, "2026-10-03T08:00:00Z", quantity=3, session="sB"),
        event("b2", B, "2026-10-03T08:01:00Z", item="sku-3", session="sB"),
        event("b3", B, "2026-10-03T08:02:00Z", "add_to_cart", item="sku-2"),
        event("c1", C, "2026-10-04T08:00:00Z", item="sku-2", session="sC"),
    ])
    check(graph, "written")
    assert {r["id"]: r["counters"] for r in graph.rows(COUNTERS)} == {
        "sku-1": [2, 5], "sku-2": [2, 2], "sku-3": [1, 1]}
    assert {r["id"]: r["counter"] for r in graph.rows(USERS)} == {
        "sku-1": 2, "sku-2": 3, "sku-3": 2}
    merge_id = merge_users(graph, UID["A"], UID["B"], source="test", reason="same person")
    check(graph, "merged")
    assert {r["id"]: r["counters"] for r in graph.rows(COUNTERS)}["sku-1"] == [1, 5]
    unmerge(graph, merge_id)
    check(graph, "unmerged")
    merge_users(graph, UID["B"], UID["A"], source="test", reason="the other way round")
    check(graph, "merged again")
    forget_user(graph, UID["C"], source="test")
    check(graph, "C erased")
    forget_user(graph, UID["B"], source="test")
    assert graph.rows("MATCH (i:Interaction) RETURN count(i) AS n") == [{"n": 0}]
    assert {r["id"]: r["counters"] for r in graph.rows(COUNTERS)} == {
        "sku-1": [0, 0], "sku-2": [0, 0], "sku-3": [0, 0]}
    assert graph.rows("MATCH (it:Item) WHERE it.users IS NOT NULL RETURN it.id AS id") == []


BATCHES, BUYERS = 12, 4
"""Each writer's batches, and its users buying in each."""


def test_concurrent_purchase_batches_of_the_same_items_give_exact_counters(
        graph: Graph) -> None:
    """Four writers at once, each its own users buying the same three items in every batch:
    no update to a counter is lost. (A batch locks each item it links a new interaction to
    before it adds to the counters: the counters' own read under the lock is isolated by
    test_a_purchase_waiting_on_another_of_the_same_item_loses_no_count.)"""
    items = ["sku-1", "sku-2", "sku-3"]
    graph.execute("UNWIND $ids AS id MERGE (:Item {id: id})", ids=items)
    errors: list[BaseException] = []
    start = threading.Barrier(4)

    def writer(w: int) -> None:
        try:
            out = EventWriter(graph, PZ)
            start.wait()
            for batch in range(BATCHES):
                out.write([event(f"w{w}-b{batch}-u{u}-{it}", {"cookie": f"w{w}-u{u}"},
                                 f"2026-10-01T{batch:02}:{u:02}:00Z", item=it,
                                 quantity=1 + (u + batch) % 3, catalogue=False)
                           for u in range(BUYERS) for it in items])
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    check(graph, "concurrent")
    # 4 x BUYERS buyers of each item, each BATCHES purchases of 1 + (u + batch) % 3 units.
    units = 4 * sum(1 + (u + b) % 3 for u in range(BUYERS) for b in range(BATCHES))
    assert {r["id"]: r["counters"] for r in graph.rows(COUNTERS)} == {
        it: [4 * BUYERS, units] for it in items}


def _aggregate(user: str, purchases: int, views: int = 0, *, rating: int | None = None,
               rated_at: int | None = None) -> dict[str, Any]:
    """A row of UPDATE_INTERACTED (the event writer's aggregates, with the item's counters)
    for `user` and the item `sku`."""
    return {"user_id": user, "item_id": "sku", "views": views, "carts": 0,
            "purchases": purchases, "spend": 0.0, "first_at": 1000, "last_at": 2000,
            "rating": rating, "rated_at": rated_at}


ITEM = "MATCH (it:Item {id: 'sku'}) RETURN [it.buyers, it.units] AS counters"


def _writers_in_turn(graph: Graph, statement: Any, first: dict[str, Any],
                     second: dict[str, Any]) -> None:
    """`statement` with the `first` parameters in a transaction left open, then with `second`
    in another that runs until it waits for the first (SHOW TRANSACTIONS says it is blocked);
    then the first committed, then the second."""
    errors: list[BaseException] = []

    def run_second() -> None:
        try:
            with graph.driver.session(database=graph.database) as session, \
                    session.begin_transaction() as tx:
                tx.run(statement, **second).consume()
                tx.commit()
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            errors.append(exc)

    with graph.driver.session(database=graph.database) as session, \
            session.begin_transaction() as tx:
        tx.run(statement, **first).consume()
        thread = threading.Thread(target=run_second)
        thread.start()
        waited = 0.0
        while not graph.rows("SHOW TRANSACTIONS YIELD status WHERE status STARTS WITH 'Blocked' "
                             "RETURN status"):
            assert waited < 30 and thread.is_alive() and not errors, errors
            time.sleep(0.05)
            waited += 0.05
        tx.commit()
    thread.join()
    assert errors == []


def _second_waits_on_the_first(graph: Graph, statement: Any,
                               first: dict[str, Any] | None = None,
                               second: dict[str, Any] | None = None,
                               read: str = ITEM) -> Any:
    """Two aggregates of `sku` (by default two buyers, u1 and u2; each viewed it before: their
    aggregates exist, so the statement creates no relationship, which would lock the item):
    the first row written in a transaction left open, the second in another that runs until it
    waits for the first (SHOW TRANSACTIONS says it is blocked), then the first committed, then
    the second. Returns the one value `read` answers (by default the item's [buyers, units])."""
    first = first or _aggregate("u1", 2)
    second = second or _aggregate("u2", 3)
    graph.execute("MATCH (n) DETACH DELETE n")
    graph.execute("CREATE (:Item {id: 'sku'}) WITH * UNWIND ['u1', 'u2'] AS id "
                  "CREATE (:User {id: id})")
    graph.execute(statement, rows=[_aggregate("u1", 0, views=1), _aggregate("u2", 0, views=1)])
    _writers_in_turn(graph, statement, {"rows": [first]}, {"rows": [second]})
    [row] = graph.rows(read)
    return next(iter(row.values()))


def test_a_purchase_waiting_on_another_of_the_same_item_loses_no_count(graph: Graph) -> None:
    """The item's counters are read in the SET that writes them (a direct dependency), so
    Neo4j takes the item's write lock before reading them: a writer that waits on another's
    open transaction reads the counters that one committed. The same statement reading the
    counters in a WITH before its SET (its read not a direct dependency) loses the first
    purchase under the same interleaving: the interleaving is one that can lose an update."""
    assert _second_waits_on_the_first(graph, UPDATE_INTERACTED) == [2, 5]
    counters = UPDATE_INTERACTED[UPDATE_INTERACTED.index("SET it.users"):]
    read_first = UPDATE_INTERACTED.replace(
        counters,
        "WITH it, buyers, units, it.buyers AS had_buyers, it.units AS had_units\n"
        "SET it.buyers = coalesce(had_buyers, 0) + buyers, "
        "it.units = coalesce(had_units, 0) + units\n")
    assert read_first != UPDATE_INTERACTED
    assert _second_waits_on_the_first(graph, read_first) == [1, 3]


def test_two_batches_buying_the_same_item_for_one_user_count_one_buyer(graph: Graph) -> None:
    """Two batches of the same user (u1, who viewed `sku` before) each with a purchase of it,
    the second waiting on the first's open transaction: one buyer, both purchases' units, and
    the aggregate holds both. Whether the user was a buyer before the batch is read after the
    aggregate's lock is held (issue 19): read before it, both batches saw no purchase yet and
    the item counted the user twice."""
    assert _second_waits_on_the_first(
        graph, UPDATE_INTERACTED, _aggregate("u1", 2), _aggregate("u1", 3)) == [1, 5]
    assert graph.rows("MATCH (:User {id: 'u1'})-[r:INTERACTED]->(:Item {id: 'sku'}) "
                      "RETURN r.purchases AS p") == [{"p": 5}]


@pytest.mark.parametrize(("second_user", "users"), [("u1", 1), ("u2", 2)])
def test_batches_creating_aggregates_of_one_item_in_turn_count_its_users(
        graph: Graph, second_user: str, users: int) -> None:
    """Two batches each creating a first aggregate of `sku`, the second waiting on the first's
    open transaction: the same user (u1 twice) is one user of the item, two users are two.
    Whether the aggregate is new is what the MERGE did, which re-reads once the first has
    committed: the waiting batch finds u1's aggregate, with its mark (`bought_or_liked`), and
    does not count u1 again."""
    graph.execute("MATCH (n) DETACH DELETE n")
    graph.execute("CREATE (:Item {id: 'sku'}) WITH * UNWIND ['u1', 'u2'] AS id "
                  "CREATE (:User {id: id})")
    _writers_in_turn(graph, UPDATE_INTERACTED, {"rows": [_aggregate("u1", 1)]},
                     {"rows": [_aggregate(second_user, 2)]})
    assert graph.rows("MATCH (it:Item {id: 'sku'}) RETURN it.users AS users, COUNT "
                      "{ (it)<-[r:INTERACTED]-() WHERE r.bought_or_liked IS NOT NULL } AS marked"
                      ) == [{"users": users, "marked": users}]


def test_a_new_aggregate_is_counted_without_a_mark_written_and_removed(graph: Graph) -> None:
    """An aggregate the batch creates makes its item's users one more, with each property
    written once: its 7 starting values, its 6 counters added to, its mark (`bought_or_liked`)
    and its item's 3 counters; one the batch adds to, its 6 counters and its mark. A temporary
    property set on creation and removed after counting (two writes more per new aggregate,
    the statement of branch catcount) would show in the summary's count."""
    graph.execute("MATCH (n) DETACH DELETE n")
    graph.execute("CREATE (:User {id: 'u1'}) WITH * UNWIND range(0, 9) AS k "
                  "CREATE (:Item {id: 'sku' + k})")
    rows = [{**_aggregate("u1", 0, views=1), "item_id": f"sku{k}"} for k in range(10)]
    with graph.driver.session(database=graph.database) as session:
        created = session.run(UPDATE_INTERACTED, rows=rows).consume().counters
        added = session.run(UPDATE_INTERACTED, rows=rows).consume().counters
    assert (created.relationships_created, created.properties_set) == (10, 10 * (7 + 6 + 1 + 3))
    assert (added.relationships_created, added.properties_set) == (0, 10 * (6 + 1))
    assert graph.rows("MATCH (it:Item) RETURN sum(it.users) AS users, "
                      "sum(COUNT { (it)<-[:INTERACTED]-() }) AS recount"
                      ) == [{"users": 10, "recount": 10}]


def test_an_older_rating_waiting_on_a_newer_one_does_not_replace_it(graph: Graph) -> None:
    """The latest rating stands whatever order two batches commit in: a batch rating `sku`
    at 1500 that waits on another's open transaction rating it at 2000 compares with the
    rating that one committed, not with what it read before waiting."""
    rating = ("MATCH (:User {id: 'u1'})-[r:INTERACTED]->(:Item {id: 'sku'}) "
              "RETURN [r.rating, r.rated_at.epochMillis, r.bought_or_liked] AS rating")
    assert _second_waits_on_the_first(
        graph, UPDATE_INTERACTED, _aggregate("u1", 0, rating=5, rated_at=2000),
        _aggregate("u1", 0, rating=1, rated_at=1500), rating) == [5, 2000, True]


def test_an_older_interest_waiting_on_a_newer_one_keeps_the_newer_time(graph: Graph) -> None:
    """Two batches adding interest in one category for one user, the newer (at 2000) in a
    transaction left open, the older (at 1500) waiting on it: the interest stays as of 2000,
    and the older score is added decayed to it (before, the waiting batch had read the time
    before the lock: it decayed the newer score by a stale interval and moved the time back
    to 1500)."""
    graph.execute("MATCH (n) DETACH DELETE n")
    graph.execute("CREATE (:User {id: 'u1'}), (:Category {name: 'books'})")
    decay = 1e-3

    def row(at: int) -> dict[str, Any]:
        return {"user_id": "u1", "category": "books", "at": at, "score": 1.0}

    graph.execute(UPDATE_INFERRED_PREFERENCES, rows=[row(1000)], decay_per_ms=decay)
    _writers_in_turn(graph, UPDATE_INFERRED_PREFERENCES,
                     {"rows": [row(2000)], "decay_per_ms": decay},
                     {"rows": [row(1500)], "decay_per_ms": decay})
    [found] = graph.rows("MATCH (:User {id: 'u1'})-[p:PREFERS]->() "
                         "RETURN p.updated_at.epochMillis AS at, p.score AS score")
    assert found["at"] == 2000
    expected = math.exp(-decay * 1000) + 1.0 + math.exp(-decay * 500)
    assert found["score"] == pytest.approx(expected)


# What migration 0015 gives data written before it (0017 memberships and periods, 0020 the
# items' users: one taken away, one wrong).
SIMULATE_OLD = [
    "MATCH (i:Interaction) REMOVE i.user_id, i.session_id",
    "MATCH ()-[h:HAD_SESSION]->() REMOVE h.user_id, h.started_at",
    "MATCH (it:Item) REMOVE it.buyers, it.units",
    "MATCH (it:Item {id: 'sku-1'}) REMOVE it.users",
    "MATCH (it:Item {id: 'sku-2'}) SET it.users = 7",
    "MATCH (w:WeatherObservation) REMOVE w.location_id",
    "MATCH (e:LocalEvent) REMOVE e.location_id",
    "MATCH ()-[m:IN_SEGMENT]->() REMOVE m.user_id",
    "MATCH ()-[h:HAD_PERSONA]->() REMOVE h.user_id",
    "MATCH (m:Migration) WHERE m.version IN [15, 17, 20] DELETE m",
]
OWNED = """
CALL () { MATCH (i:Interaction) RETURN collect([i.event_id, i.user_id, i.session_id]) AS i }
CALL () { MATCH (u)-[h:HAD_SESSION]->(s)
          RETURN collect([u.id, s.id, h.user_id, h.started_at]) AS h }
CALL () { MATCH (it:Item) RETURN collect([it.id, it.buyers, it.units, it.users]) AS it }
CALL () { MATCH (w:WeatherObservation) RETURN collect([w.id, w.location_id]) AS w }
CALL () { MATCH (e:LocalEvent) RETURN collect([e.id, e.location_id]) AS e }
CALL () { MATCH (u)-[m:IN_SEGMENT]->(s) RETURN collect([u.id, s.id, m.user_id]) AS m }
CALL () { MATCH (u)-[h:HAD_PERSONA]->(p) RETURN collect([u.id, p.id, h.user_id]) AS p }
RETURN i, h, it, w, e, m, p
"""


def owned(graph: Graph) -> dict[str, list[Any]]:
    [row] = graph.rows(OWNED)
    return {k: sorted(v, key=str) for k, v in row.items()}


def test_the_backfill_gives_old_data_what_fresh_writes_give(graph: Graph) -> None:
    """Events, a location's weather and events, and a run's memberships and persona periods
    written by today's writers; their owner ids, session links and counters taken away as
    data from before 0015 (and 0017, 0020) lacks them, and those migrations run again: the
    graph is as written; 0020 run again changes nothing."""
    EventWriter(graph, PZ).write([
        event("a1", A, "2026-10-01T10:00:00Z", quantity=2, session="sA"),
        event("a2", A, "2026-10-01T10:05:00Z", "page_view", item="sku-2", session="sA"),
        event("b1", B, "2026-10-03T08:00:00Z", quantity=3, session="sB"),
        event("b2", B, "2026-10-03T08:01:00Z", "add_to_cart"),
    ])
    graph.execute("""
        CREATE (l:Location {id: 'paris'})
        CREATE (:WeatherObservation {id: 'w1', at: datetime(), location_id: 'paris'})
               -[:OBSERVED_AT]->(l)
        CREATE (:LocalEvent {id: 'e1', starts_at: datetime(), location_id: 'paris'})
               -[:HELD_IN]->(l)
        CREATE (s:Segment {id: 's'}), (p:Persona {id: 'p'})
        WITH s, p
        MATCH (u:User)
        CREATE (u)-[:IN_SEGMENT {run_id: 'r', assigned_at: datetime(), user_id: u.id}]->(s)
        CREATE (u)-[:HAD_PERSONA {run_id: 'r', valid_from: datetime(), user_id: u.id}]->(p)
    """)
    fresh = owned(graph)
    assert all(fresh.values())
    for statement in SIMULATE_OLD:
        graph.execute(statement)
    assert owned(graph) != fresh
    assert [m.version for m in migrate(graph, MIGRATIONS)] == [15, 17, 20]
    assert owned(graph) == fresh
    [backfill] = [s for s in split_statements((MIGRATIONS / "0020_item_users.cypher").read_text())
                  if "IN TRANSACTIONS" in s]
    with graph.driver.session(database=graph.database) as session:
        assert session.run(backfill).consume().counters.properties_set == 0


SESSION_LINKS = """
MATCH (u:User)-[h:HAD_SESSION]->(s:Session {id: $id})
RETURN u.id AS user, h.user_id AS user_id, h.started_at = s.started_at AS start_kept,
       s.started_at.epochMillis AS started
ORDER BY user
"""


def test_a_late_event_moves_the_start_on_every_link_of_a_shared_session(graph: Graph) -> None:
    """A session two users take part in, each seen in a batch of their own: every link carries
    its user's id and the session's start, also after a third batch with a late event of one
    of them moves the start earlier, and after a fourth that does not move it."""
    writer = EventWriter(graph, PZ)
    writer.write([event("a1", A, "2026-10-01T10:05:00Z", "page_view", session="s1")])
    writer.write([event("b1", B, "2026-10-01T10:06:00Z", "page_view", session="s1")])
    writer.write([event("b0", B, "2026-10-01T10:00:00Z", "page_view", session="s1")])
    links = graph.rows(SESSION_LINKS, id="s1")
    assert [(r["user"], r["user_id"], r["start_kept"]) for r in links] == sorted(
        [(UID["A"], UID["A"], True), (UID["B"], UID["B"], True)])
    assert {r["started"] for r in links} == {1790848800000}  # 2026-10-01T10:00:00Z
    writer.write([event("a2", A, "2026-10-01T10:09:00Z", "page_view", session="s1")])
    assert graph.rows(SESSION_LINKS, id="s1") == links
