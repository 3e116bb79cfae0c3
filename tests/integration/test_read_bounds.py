"""Every read the API makes of one user, session, location or persona costs a bounded amount of
Neo4j work, whatever the length of that entity's history: each statement below is profiled on a
small history and on one ten times longer, for two entities in the same graph, and its database
hits must not grow with the history.

The statements are listed explicitly: a statement of ``graph/profile/queries.py`` must be here
(with its parameters), or in ``NOT_PER_ENTITY`` (reads whose size is a page of a whole
population, or of the graph's runs), or in ``UNBOUNDED`` with the reason, for the module to pass.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any, LiteralString

import pytest

from graph.aggregates import DECAY_PER_MS
from graph.aggregates.queries import REFRESH_ITEM_COUNTERS
from graph.db import Graph
from graph.profile import queries as q
from graph.profile.users import AS_OF_HORIZON_MS, EVER, INTEREST, NEVER
from graph.recommend.engine import now_param, recommend_params
from graph.recommend.limits import MAX_ITEM_USERS, OWN_ITEMS
from graph.recommend.queries import POPULAR, RECOMMEND
from graph.segments.publish import PendingRun
from tests.helpers import db_hits

pytestmark = pytest.mark.integration

NOW = datetime(2026, 11, 1, tzinfo=UTC)
SMALL, BIG = 300, 3000
"""Interactions (observations, events, members) of the small and of the big history."""
CAP = 50
"""The caps the bounded reads are given here (the API's are larger and work the same way)."""

# Two users, each with their history of SMALL or BIG interactions (an hour apart, types and
# categories in turn, three sessions), their location with as many weather observations and
# local events (past and coming), and a segment with as many members.
HISTORY = """
UNWIND [['small', $small], ['big', $big]] AS h
WITH h[0] AS name, h[1] AS n
CREATE (u:User {id: name})
CREATE (l:Location {id: 'loc-' + name, city: name})
CREATE (u)-[:LOCATED_IN {at: $now}]->(l)
CREATE (r:SegmentationRun {id: 'run-' + name, created_at: $now})
CREATE (s:Segment {id: 'seg-' + name, level: 0, size: n, run_id: 'run-' + name,
                   tops_written: $now})
CREATE (p:Persona {id: 'persona-' + name, name: name})
CREATE (r)-[:PRODUCED]->(s), (s)-[:EMBODIES]->(p)
CREATE (u)-[:IN_SEGMENT {run_id: 'run-' + name, segment_id: s.id, user_id: u.id,
                         distance: 0.0, assigned_at: $now}]->(s)
WITH name, n, u, l, s
CALL (name, n, u, l, s) {
  UNWIND range(1, n) AS k
  CREATE (u)-[:PERFORMED]->(i:Interaction {
    user_id: name, session_id: name + '-' + (k % 3), event_id: name + '-' + k,
    at: $now - duration({hours: k}), recorded_at: $now - duration({hours: k}),
    type: ['page_view', 'search', 'add_to_cart', 'purchase', 'feedback'][k % 5],
    category: ['books', 'garden', 'music'][k % 3], rating: 1 + k % 5})
  CREATE (w:WeatherObservation {id: name + '-w' + k, location_id: l.id,
                                at: $now - duration({minutes: 10 * k}), temp_c: 10.0,
                                condition: 'rain'})-[:OBSERVED_AT]->(l)
  CREATE (:LocalEvent {id: name + '-e' + k, location_id: l.id, name: 'fair',
                       starts_at: datetime() + duration({hours: k - n / 2})})-[:HELD_IN]->(l)
  CREATE (m:User {id: name + '-m' + k})-[:IN_SEGMENT {run_id: 'run-' + name, segment_id: s.id,
                                                      user_id: name + '-m' + k,
                                                      distance: toFloat(k),
                                                      assigned_at: $now}]->(s)
  MERGE (c:Category {name: ['books', 'garden', 'music'][k % 3]})
  CREATE (m)-[:PREFERS {source: 'inferred', weight: 0.5}]->(c)
}
WITH name, n
MATCH (u:User {id: name})
UNWIND range(0, n) AS k
CREATE (u)-[:HAD_SESSION {user_id: name, started_at: $now - duration({hours: k})}]->
       (:Session {id: name + '-' + k, started_at: $now - duration({hours: k}), ended_at: $now})
"""

# A shopper beside each user, with aggregates (what the event writer keeps, with their owner's
# id, migrations/0016): SMALL or BIG items, the newest an hour ago, each shared with a user of
# its own. The shopper is a member of the user's segment (when HISTORY made one), among its
# most typical.
AGGREGATES = """
UNWIND [['small', $small], ['big', $big]] AS h
CREATE (u:User {id: h[0] + '-shopper'})
WITH u, h
OPTIONAL MATCH (s:Segment {id: 'seg-' + h[0]})
FOREACH (_ IN CASE WHEN s IS NULL THEN [] ELSE [1] END |
  CREATE (u)-[:IN_SEGMENT {run_id: s.run_id, segment_id: s.id, user_id: u.id, distance: 0.5,
                           assigned_at: $now}]->(s))
WITH u, h
CALL (u, h) {
  UNWIND range(1, h[1]) AS k
  CREATE (m:User {id: h[0] + '-peer-' + k})
  CREATE (it:Item {id: h[0] + '-item-' + k})
  CREATE (u)-[:INTERACTED {user_id: u.id, views: 1, carts: 0, purchases: k % 2, spend: 0.0,
                           first_at: $now - duration({hours: k}),
                           last_at: $now - duration({hours: k}),
                           bought_or_liked: k % 2 = 1}]->(it)
  CREATE (m)-[:INTERACTED {user_id: m.id, views: 1, carts: 0, purchases: 1, spend: 0.0,
                           first_at: $now, last_at: $now, bought_or_liked: true}]->(it)
}
"""

PREFERENCES = [{"category": "books", "source": "inferred", "until": NOW},
               {"category": "music", "source": "explicit", "until": NOW - timedelta(hours=5)}]


def _user(name: str) -> dict[str, Any]:
    return {"id": name}


# Each statement, with the parameters of one entity (the small or the big one).
BOUNDED: dict[str, tuple[LiteralString, Any]] = {
    "RECENT_INTENT": (q.RECENT_INTENT, lambda n: {
        **_user(n), "since": NOW - timedelta(days=3650), "until": NOW, "first": 5,
        "scan": CAP}),
    "CHAT_EVIDENCE": (q.CHAT_EVIDENCE, lambda n: {
        **_user(n), "until": NOW, "scan": CAP, "run_id": "run-" + n,
        "preferences": PREFERENCES, "location_id": "loc-" + n, "weather_id": n + "-w1",
        "event_ids": [n + "-e1"]}),
    "EXPLICIT_PREFERENCES_AS_OF": (q.EXPLICIT_PREFERENCES_AS_OF, lambda n: {
        **_user(n), "as_of": NOW, "max_interactions": CAP}),
    "INFERRED_PREFERENCES_AS_OF": (q.INFERRED_PREFERENCES_AS_OF, lambda n: {
        **_user(n), "as_of": NOW, "max_interactions": CAP, "scores": INTEREST,
        "decay_per_ms": DECAY_PER_MS, "horizon_ms": AS_OF_HORIZON_MS}),
    "RECENT_INTERACTIONS": (q.RECENT_INTERACTIONS, lambda n: {**_user(n), "first": 10}),
    "USER_INTERACTIONS_NEWEST": (q.USER_INTERACTIONS_NEWEST, lambda n: {
        **_user(n), "types": None, "since": None, "until": None, "lower": EVER,
        "upper": NOW - timedelta(hours=SMALL // 2), "after_at": None, "after_id": None,
        "limit": 11}),
    "USER_INTERACTIONS_OLDEST": (q.USER_INTERACTIONS_OLDEST, lambda n: {
        **_user(n), "types": None, "since": None, "until": None,
        "lower": NOW - timedelta(hours=SMALL // 2), "upper": NEVER, "after_at": None,
        "after_id": None, "limit": 11}),
    "SESSION_INTERACTIONS": (q.SESSION_INTERACTIONS, lambda n: {
        "id": n + "-1", "after_at": None, "after_id": None, "lower": EVER, "upper": NEVER,
        "limit": 11}),
    "LOCATION": (q.LOCATION, _user),
    "UPCOMING_EVENTS": (q.UPCOMING_EVENTS, lambda n: {"location_id": "loc-" + n, "first": 5}),
    "SITUATION": (q.SITUATION, lambda n: {
        **_user(n), "now": now_param(NOW), "lookback_hours": 6, "valid_hours": 3, "days": 7,
        "events_first": 3}),
    "PERSONA_MEMBERS": (q.PERSONA_MEMBERS, lambda n: {
        "segment_id": "seg-" + n, "after_distance": float(SMALL // 2), "after_id": "",
        "limit": 10}),
    "PERSONA_TOP_CATEGORIES": (q.PERSONA_TOP_CATEGORIES, lambda n: {
        "segment_id": "seg-" + n, "first": 5}),
    "PERSONA_TOP_ITEMS": (q.PERSONA_TOP_ITEMS, lambda n: {"segment_id": "seg-" + n,
                                                          "first": 5}),
    "PERSONA": (q.PERSONA, lambda n: {"id": "persona-" + n}),
    "USERS_PERSONA": (q.USERS_PERSONA, lambda n: {"ids": [n]}),
    "USERS_PREFERENCES": (q.USERS_PREFERENCES, lambda n: {"ids": [n], "preferences_first": 5}),
    "USER": (q.USER, _user),
    "EXPLICIT_PREFERENCE": (q.EXPLICIT_PREFERENCE, lambda n: {**_user(n), "category": "x"}),
    "ITEM": (q.ITEM, lambda n: {"id": "item-" + n}),
    "USER_SESSIONS": (q.USER_SESSIONS, lambda n: {
        **_user(n), "after_at": None, "after_id": None, "upper": NOW - timedelta(hours=10),
        "limit": 11}),
    "LIVE_PERSONA_TOP_CATEGORIES": (q.LIVE_PERSONA_TOP_CATEGORIES, lambda n: {
        "segment_id": "seg-" + n, "first": 5, "sample": CAP}),
    "LIVE_PERSONA_TOP_ITEMS": (q.LIVE_PERSONA_TOP_ITEMS, lambda n: {
        "segment_id": "seg-" + n, "first": 5, "sample": CAP, "per_member": CAP}),
    "SIMILAR_USERS": (q.SIMILAR_USERS, lambda n: {
        "id": n + "-shopper", "first": 5, "recent_items": 10, "max_item_users": MAX_ITEM_USERS}),
    # Two of the five types, mid-history (a type filter reads each type's own index entries).
    "USER_TYPED_NEWEST": (q.USER_TYPED_NEWEST, lambda n: {
        **_user(n), "types": ["search", "purchase"], "since": None, "until": None,
        "lower": EVER, "upper": NOW - timedelta(hours=SMALL // 2), "after_at": None,
        "after_id": None, "limit": 11}),
    "USER_TYPED_OLDEST": (q.USER_TYPED_OLDEST, lambda n: {
        **_user(n), "types": ["purchase"], "since": None, "until": None,
        "lower": NOW - timedelta(hours=SMALL // 2), "upper": NEVER, "after_at": None,
        "after_id": None, "limit": 11}),
}

# Each item of `$items` bought by `$buyers` new users (plus its position in `$items`: so many
# purchases in the graph), its counters then recounted as merges and erasures do.
PURCHASES = """
UNWIND range(0, size($items) - 1) AS p
MERGE (it:Item {id: $items[p]})
WITH it, p
UNWIND range(1, $buyers + p) AS k
CREATE (:User {id: it.id + '-b' + k})-[:INTERACTED {user_id: it.id + '-b' + k,
                                                   purchases: 1 + k % 3, bought_or_liked: true,
                                                   last_at: datetime()}]->(it)
"""

# Reads whose size is a page of a whole population or of the graph's runs, not one entity's
# history (bounded by their own tests: test_users_page_bounds.py, test_member_pages.py).
NOT_PER_ENTITY = {
    "USERS_PAGE", "ITEMS_PAGE", "PERSONAS", "SEGMENTATION_RUNS", "SEGMENTS_OF_RUN", "SEGMENT",
    "SEGMENT_CHILDREN", "CATEGORIES", "READY", "RUN_STATUS", "LATEST_RUN", "USER_BY_IDENTIFIER",
    "USER_IDENTIFIERS",
}

# Reads that still grow with something of the entity's, and why (docs/performance.md).
UNBOUNDED = {
    "USER_PROFILE": "its parts: PERSONA_OF_USER, PREFERENCES_OF_USER and SITUATION_OF_USER "
                    "(the recommender's RECOMMEND_FOR_USER is bounded: "
                    "test_recommendations_do_not_grow_with_the_users_own_items)",
    "USER_PROFILE_BY_IDENTIFIER": "as USER_PROFILE",
}

# Reads of one user's persona that grew with the runs the user was in: profiled on 3 runs
# and on 30 (test_persona_reads_do_not_grow_with_the_runs_a_user_was_in).
PER_RUN = {"USERS_PERSONA", "USERS_SEGMENT_PATH", "USER_PERSONA_AS_OF", "CURRENT_PERSONA_PERIOD",
           "PERSONA_HISTORY"}

# Fragments other statements are built of (checked through those).
PARTS = {"PERSONA_OF_USER", "PREFERENCES_OF_USER", "SITUATION_OF_USER", "RECOMMEND_FOR_USER"}


def statements() -> set[str]:
    """The names of the Cypher statements of graph/profile/queries.py."""
    return {name for name, value in vars(q).items()
            if name.isupper() and isinstance(value, str) and not name.startswith("_")}


def test_every_statement_is_listed() -> None:
    listed = set(BOUNDED) | NOT_PER_ENTITY | set(UNBOUNDED) | PARTS | PER_RUN
    assert statements() - listed == set(), "list the new statement in test_read_bounds.py"
    assert listed - statements() - PARTS == set()


def buy(graph: Graph, items: list[str], buyers: int) -> None:
    graph.execute(PURCHASES, items=items, buyers=buyers)
    graph.execute(REFRESH_ITEM_COUNTERS, item_ids=items)


def test_reads_of_one_entity_do_not_grow_with_its_history(graph: Graph) -> None:
    graph.execute(HISTORY, small=SMALL, big=BIG, now=NOW)
    graph.execute(AGGREGATES, small=SMALL, big=BIG, now=NOW)
    buy(graph, ["item-small"], SMALL)
    buy(graph, ["item-big"], BIG)
    grew: dict[str, tuple[int, int]] = {}
    for name, (query, params) in BOUNDED.items():
        small, small_rows = db_hits(graph, query, **params("small"))
        big, big_rows = db_hits(graph, query, **params("big"))
        assert len(big_rows) == len(small_rows), name
        if big > small * 1.2 + 20:
            grew[name] = (small, big)
    assert grew == {}, f"db hits (small, 10x history) that grew: {grew}"


def test_best_sellers_do_not_grow_with_the_purchases_in_the_graph(graph: Graph) -> None:
    """POPULAR (what a user without personalization consent is offered): a read of the
    first items in the index's order (and of the ties of the last one), whatever the graph
    its plan was cached on: here one of many users, few items and no purchases, on which the
    planner chose, without a hint, to scan every user's id for each item."""
    graph.execute("CALL db.clearQueryCaches()")
    graph.execute("UNWIND range(1, 20000) AS k CREATE (:User {id: 'x' + k})")
    graph.execute("UNWIND range(1, 3) AS k CREATE (:Item {id: 'i' + k, buyers: 9, units: 9})")
    for personal in (False, True):
        graph.rows(POPULAR, personal=personal, user_id="x1", first=5)
    graph.execute("MATCH (n) DETACH DELETE n")
    buy(graph, [f"item-{k:03}" for k in range(10)], 1)
    graph.execute("CREATE (:User {id: 'shopper'})")
    params = {"user_id": "shopper", "first": 5}
    small = [db_hits(graph, POPULAR, personal=p, **params)[0] for p in (False, True)]
    buy(graph, [f"item-{k:03}" for k in range(10, 100)], 1)
    big = [db_hits(graph, POPULAR, personal=p, **params)[0] for p in (False, True)]
    assert all(b <= s * 1.2 + 20 for s, b in zip(small, big, strict=True)), (small, big)


# LIVE_PERSONA_TOP_ITEMS as it was before each member's latest aggregates were capped
# (2026-12-07): every aggregate of each sampled member.
LIVE_TOP_ITEMS_OF_EVERY_AGGREGATE = """
MATCH (s:Segment {id: $segment_id})
CALL (s) {
  MATCH (member:User)-[m:IN_SEGMENT]->(:Segment)
  WHERE m.segment_id = $segment_id AND m.distance > -1.0
  WITH member ORDER BY m.segment_id, m.distance LIMIT $sample
  RETURN collect(member) AS members
}
UNWIND members AS u
MATCH (u)-[r:INTERACTED]->(it:Item)
WITH it, sum(r.purchases) AS purchases, count(u) AS users
OPTIONAL MATCH (it)-[:IN_CATEGORY]->(c:Category)
RETURN it.id AS id, it.name AS name, c.name AS category, purchases, users
ORDER BY purchases DESC, users DESC, id
LIMIT $first
"""


def test_live_top_items_are_those_of_every_aggregate_under_the_cap(graph: Graph) -> None:
    """A segment's top items read live count each sampled member's latest aggregates: with
    no member past the cap, the items every aggregate gives; past it, the member's older
    items drop out (the shopper of `big` has 60 aggregates, that of `small` 30)."""
    graph.execute(HISTORY, small=30, big=60, now=NOW)
    graph.execute(AGGREGATES, small=30, big=60, now=NOW)
    # Members who share some of the shoppers' items, and an item bought by many of them.
    graph.execute("""
        UNWIND ['small', 'big'] AS n
        UNWIND range(1, 20) AS k
        MATCH (m:User {id: n + '-m' + k}), (it:Item {id: n + '-item-' + (k % 7 + 1)})
        MERGE (top:Item {id: n + '-top'})
        CREATE (m)-[:INTERACTED {user_id: m.id, purchases: k % 3, last_at: $now,
                                 bought_or_liked: k % 3 > 0}]->(it)
        CREATE (m)-[:INTERACTED {user_id: m.id, purchases: 1, last_at: $now,
                                 bought_or_liked: true}]->(top)""", now=NOW)
    for n in ("small", "big"):
        for first, sample, cap in ((5, 10, 60), (50, 25, 100), (100, 200, 60)):
            params = {"segment_id": "seg-" + n, "first": first, "sample": sample}
            want = graph.rows(LIVE_TOP_ITEMS_OF_EVERY_AGGREGATE, **params)
            got = graph.rows(q.LIVE_PERSONA_TOP_ITEMS, per_member=cap, **params)
            assert got == want, (n, first, sample, cap)
            assert want[0]["id"] == n + "-top"
    params = {"segment_id": "seg-big", "first": 100, "sample": 200}
    capped = graph.rows(q.LIVE_PERSONA_TOP_ITEMS, per_member=40, **params)
    every = graph.rows(LIVE_TOP_ITEMS_OF_EVERY_AGGREGATE, **params)
    assert len(every) == 61 and len(capped) == 41


# SIMILAR_USERS as it was before its latest items came from an index seek (2026-12-07): every
# item of the user, sorted.
SIMILAR_USERS_BY_EXPANSION = """
MATCH (u:User {id: $id})-[r:INTERACTED]->(it:Item)
WHERE COUNT { (it)<-[:INTERACTED]-() } <= $max_item_users
WITH u, it ORDER BY r.last_at DESC LIMIT $recent_items
MATCH (it)<-[:INTERACTED]-(other:User)
WHERE other <> u
WITH u, other, count(it) AS shared
WITH other, shared,
     toFloat(shared) / (COUNT { (u)-[:INTERACTED]->() } + COUNT { (other)-[:INTERACTED]->() }
                        - shared) AS similarity
ORDER BY similarity DESC, other.id
LIMIT $first
RETURN other.id AS id, shared, similarity
"""


def test_similar_users_are_those_found_by_expanding_every_item(graph: Graph) -> None:
    """Users whose latest items are one set (no two items last touched at the same time) get
    the same similar users as from a sort of all their items, an item past the cap of users
    skipped by both; a user without aggregates gets none."""
    graph.execute(HISTORY, small=30, big=60, now=NOW)
    graph.execute(AGGREGATES, small=30, big=60, now=NOW)
    # Users who share several of the small shopper's items, and a crowded item among its
    # latest.
    graph.execute("""
        UNWIND range(1, 12) AS k
        MATCH (m:User {id: 'small-peer-' + k}), (it:Item {id: 'small-item-' + (k % 4 + 1)})
        MERGE (m)-[r:INTERACTED]->(it)
        SET r.user_id = m.id, r.last_at = $now, r.purchases = 1, r.bought_or_liked = true
        WITH count(*) AS done
        MATCH (it:Item {id: 'small-item-2'})
        UNWIND range(1, 5) AS k
        CREATE (:User {id: 'crowd-' + k})-[:INTERACTED {user_id: 'crowd-' + k, last_at: $now,
                                                        purchases: 1,
                                                        bought_or_liked: true}]->(it)""",
        now=NOW)
    graph.execute("CREATE (:User {id: 'newcomer'})")
    for uid in ("small-shopper", "big-shopper", "small-peer-3", "newcomer"):
        for first, recent, cap in ((5, 10, 1000), (50, 3, 1000), (50, 10, 6)):
            params = {"id": uid, "first": first, "recent_items": recent, "max_item_users": cap}
            want = graph.rows(SIMILAR_USERS_BY_EXPANSION, **params)
            assert graph.rows(q.SIMILAR_USERS, **params) == want, (uid, first, recent, cap)
            assert want or uid == "newcomer"



# Beside each shopper's 40 newest items: the user who shares the item also bought another
# (a new one), and the item's neighbour in the run's item model is that other item.
SHOPPERS_NEIGHBOURS = """
CREATE (:SegmentationRun {id: 'run-1', created_at: $now})
WITH 1 AS one
UNWIND ['small', 'big'] AS name
UNWIND range(1, 40) AS k
MATCH (m:User {id: name + '-peer-' + k}), (it:Item {id: name + '-item-' + k})
CREATE (other:Item {id: name + '-other-' + k})
CREATE (m)-[:INTERACTED {user_id: m.id, views: 1, carts: 0, purchases: 1, spend: 0.0,
                         first_at: $now, last_at: $now, bought_or_liked: true}]->(other)
CREATE (it)-[:SIMILAR_ITEM {run_id: 'run-1', score: 1.0 / k}]->(other)
"""

# Operators that pass rows on in the order they get them, one by one.
_IN_ORDER = {"Filter", "CacheProperties", "Projection"}


def _own_item_reads(plan: dict[str, Any]) -> list[tuple[str, ...]]:
    """How a RECOMMEND plan reads the user's own INTERACTED: for each operator that does,
    its type and the types of the operators above it up to the first one that does not pass
    rows on in order (Limit: the read stops there; Sort or Top: it is read whole), and for an
    expansion from the user, the operator below it."""
    found: list[tuple[str, ...]] = []

    def walk(op: dict[str, Any], above: list[str]) -> None:
        kind = op["operatorType"].split("@")[0]
        details = op.get("args", {}).get("Details", "")
        children = op.get("children", [])
        stop = next((a for a in reversed(above) if a not in _IN_ORDER), "")
        # The user's id as read from the user, or from the seek that found it (`cache[u.id]`,
        # as the planner gives it once no pattern comprehension reads the candidates' items).
        if ":INTERACTED(user_id, last_at)" in details and (
                "user_id = u.id" in details or "user_id = cache[u.id]" in details):
            tie = "last_at IS NOT NULL" not in details
            found.append((kind, "ties" if tie else "newest", stop))
        elif details.startswith("(u)-[") and ":INTERACTED]" in details:
            below = children[0].get("args", {}).get("Details", "") if children else ""
            found.append((kind, below if kind == "Expand(All)" else "", stop))
        for child in children:
            walk(child, [*above, kind])

    walk(plan, [])
    return sorted(found)


def _plan(graph: Graph, query: LiteralString, **params: Any) -> dict[str, Any]:
    with graph.driver.session(database=graph.database) as session:
        summary = session.run("EXPLAIN " + query, params).consume()
    assert summary.plan is not None
    return dict(summary.plan)


def test_recommendations_do_not_grow_with_the_users_own_items(graph: Graph) -> None:
    """RECOMMEND_FOR_USER reads the user's own aggregates three times: the items it leaves out
    (past OWN_ITEMS aggregates each candidate is tested, in rank order), the newest bought,
    carted or liked items whose neighbours are candidates, and those whose buyers are similar
    users (found per request here: no stored ones). None grows with the user's own items,
    whatever plan the statistics of the moment give: planned on the empty graph (as a test
    before leaves them) and used on this one, and planned again on this one."""
    assert SMALL > OWN_ITEMS  # both shoppers' candidates are tested one by one
    params = {name: recommend_params(name + "-shopper", first=50, now=NOW)
              for name in ("small", "big")}
    assert graph.rows(RECOMMEND, **params["small"]) == []  # planned with no data
    graph.execute(AGGREGATES, small=SMALL, big=BIG, now=NOW)
    graph.execute(SHOPPERS_NEIGHBOURS, now=NOW)
    reads = {}
    for situation in ("planned on the empty graph", "planned on this graph"):
        if situation == "planned on this graph":
            graph.auto_commit("CALL db.clearQueryCaches()")
        reads[situation] = _own_item_reads(_plan(graph, RECOMMEND, **params["big"]))
        hits = {}
        for name in ("small", "big"):
            hits[name], rows = db_hits(graph, RECOMMEND, **params[name])
            # The neighbours of the 10 newest bought items, bought by similar users too;
            # the similar users' other items (the shopper's own) left out.
            assert [r["item_id"] for r in rows] == [f"{name}-other-{k}"
                                                    for k in range(1, 20, 2)], (situation, name)
        assert hits["big"] <= hits["small"] * 1.2 + 20, (situation, hits)
    # The newest items: an index seek in time order, stopped by a limit (never sorted whole);
    # the items left out: the user's aggregates read only when few, each candidate tested
    # (an expansion into it) otherwise, after they are ranked.
    assert reads["planned on the empty graph"] == [
        ("DirectedRelationshipIndexSeek", "newest", "Limit"),
        ("DirectedRelationshipIndexSeek", "newest", "Limit"),
        ("DirectedRelationshipIndexSeek", "ties", "Apply"),
        ("DirectedRelationshipIndexSeek", "ties", "Apply"),
        ("Expand(All)", "CoerceToPredicate(few)", "EagerAggregation"),
        ("Expand(Into)", "", "SelectOrAntiSemiApply"),
    ], reads
    assert reads["planned on this graph"] == reads["planned on the empty graph"]

# -- The preferred categories' items (source (c) of RECOMMEND_FOR_USER) ----------------------

# A category of `$n` items, item k (from 1) interacted with by k % 7 of seven users (ties
# everywhere, a seventh of them with none) while k <= `$interacted` (by nobody after), its
# items' users counted as every writer counts them; and a fan, who prefers it and nothing else.
CATEGORY = """
MERGE (c:Category {name: $name})
CREATE (:User {id: $name + '-fan'})-[:PREFERS {source: 'explicit', weight: 1.0}]->(c)
WITH c
UNWIND range(0, 6) AS j
MERGE (:User {id: 'viewer-' + j})
WITH DISTINCT c
UNWIND range(1, $n) AS k
CREATE (it:Item {id: $name + '-' + right('0000' + toString(k), 5), category: c.name})
CREATE (it)-[:IN_CATEGORY]->(c)
WITH it, k
UNWIND range(0, CASE WHEN k <= $interacted THEN k % 7 - 1 ELSE -1 END) AS j
MATCH (v:User {id: 'viewer-' + j})
CREATE (v)-[:INTERACTED {user_id: v.id, views: 1, carts: 0, purchases: 0, spend: 0.0,
                         first_at: $now, last_at: $now, bought_or_liked: false}]->(it)
"""


def count_users(graph: Graph) -> None:
    """Every item's counters as the writers keep them (REFRESH_ITEM_COUNTERS)."""
    ids = [r["id"] for r in graph.rows("MATCH (it:Item) RETURN it.id AS id")]
    graph.execute(REFRESH_ITEM_COUNTERS, item_ids=ids)


def assert_fans_cost_alike(graph: Graph) -> None:
    """The fans of the categories "small" and "big" each get the 100 items a sort of their
    whole category gives (most users first, then id), and the big one's fan costs what the
    small one's does."""
    hits = {}
    for name in ("small", "big"):
        expected = [r["id"] for r in graph.rows(
            "MATCH (it:Item {category: $name}) "
            "WITH it, COUNT { (it)<-[:INTERACTED]-() } AS users "
            "RETURN it.id AS id ORDER BY users DESC, id LIMIT 100", name=name)]
        hits[name], rows = db_hits(graph, RECOMMEND,
                                   **recommend_params(name + "-fan", first=100, now=NOW))
        assert [r["item_id"] for r in rows] == expected, name
        assert len(expected) == 100, name
    assert hits["big"] <= hits["small"] * 1.2 + 20, hits


def test_a_categorys_top_items_do_not_grow_with_the_category(graph: Graph) -> None:
    """Each preferred category's most interacted-with items are an ordered seek of its items'
    users counters (migrations/0020), not a count of every item's users: a fan of a category
    of BIG items costs what a fan of one of SMALL items does (before, the step read each of
    up to 20,000 items' degree: 5 db hits an item), and both are recommended the items a
    sort of the whole category gives (most users first, then id; ties re-read)."""
    for name, n in (("small", SMALL), ("big", BIG)):
        graph.execute(CATEGORY, name=name, n=n, interacted=n, now=NOW)
    count_users(graph)
    assert_fans_cost_alike(graph)


def test_a_category_with_few_interacted_items_adds_the_others_by_id(graph: Graph) -> None:
    """A category with fewer interacted-with items than the step keeps: those, most users
    first, then the items nobody interacted with, by id (as a sort of the whole category)."""
    graph.execute(CATEGORY, name="few", n=40, interacted=40, now=NOW)
    count_users(graph)
    expected = [r["id"] for r in graph.rows(
        "MATCH (it:Item {category: 'few'}) "
        "WITH it, COUNT { (it)<-[:INTERACTED]-() } AS users "
        "RETURN it.id AS id ORDER BY users DESC, id")]
    rows = graph.rows(RECOMMEND, **recommend_params("few-fan", first=100, now=NOW))
    assert [r["item_id"] for r in rows] == expected
    assert len(expected) == 40


def test_a_category_with_few_interacted_items_does_not_grow_with_its_other_items(
        graph: Graph) -> None:
    """A category's items nobody interacted with, added by id when it has fewer interacted-with
    items than the step keeps, are an ordered seek of the index on the items' category and id
    (migrations/0022) stopped by the limit, not an expansion of every item of the category
    (before, up to 20,000 of them): a fan of a category of BIG items, 30 of them interacted
    with, costs what a fan of one of SMALL items does, and both get what a sort of the whole
    category gives."""
    for name, n in (("small", SMALL), ("big", BIG)):
        graph.execute(CATEGORY, name=name, n=n, interacted=30, now=NOW)
    count_users(graph)
    assert_fans_cost_alike(graph)


# -- Reads that grew with the segmentation runs a user was in ---------------------------------

FEW, MANY = 3, 30
"""Segmentation runs the user `few` and the user `many` were in (`many` in each of them)."""
RUN_DAY = NOW - timedelta(days=MANY + 5)
"""The snapshot time of the first run (each next run a day later)."""


def write_runs(graph: Graph) -> list[datetime]:
    """MANY runs, written by the run writer (pending, published, then the persona history):
    two leaves under a root, personas `even` and `odd`; `many` is in every run and `few` in
    the last FEW, each in the leaf of the run's parity, so each run opens them a new period.
    Returns the runs' snapshot times."""
    graph.execute("UNWIND ['few', 'many'] AS id CREATE (:User {id: id})")
    times = []
    for k in range(MANY):
        run_id, at = f"run-{k:02}", RUN_DAY + timedelta(days=k)
        pending = PendingRun(graph, run_id)
        pending.begin({"snapshot_at": at, "k": 2})
        pending.segments(
            [{"id": f"{run_id}-L{level}-{j}", "props": {"level": level, "size": 2, "label": "x"}}
             for level, j in ((0, 0), (0, 1), (1, 0))],
            [{"child": f"{run_id}-L0-{j}", "parent": f"{run_id}-L1-0"} for j in (0, 1)])
        leaf = f"{run_id}-L0-{k % 2}"
        pending.members([{"user_id": u, "segment_id": leaf, "distance": float(k)}
                         for u in ("few", "many") if u == "many" or k >= MANY - FEW])
        pending.publish([{"segment_id": f"{run_id}-L0-{j}", "persona_id": ("even", "odd")[j],
                          "name": ("Even", "Odd")[j], "description": "d"} for j in (0, 1)])
        pending.write_history(at.isoformat())
        # A run takes its snapshot and writes its memberships at once: its day, here.
        graph.execute("MATCH ()-[m:IN_SEGMENT {run_id: $run_id}]->() "
                      "SET m.assigned_at = $at + duration('PT10M')", run_id=run_id, at=at)
        times.append(at)
    return times


# The statements as they were (a sort of every membership or period of the user): the
# answers the index seeks must give.
REFERENCE = {
    "USERS_PERSONA": """
UNWIND $ids AS id
MATCH (u:User {id: id})
CALL (u) {
  MATCH (u)-[m:IN_SEGMENT]->(s:Segment)
  WITH m, s ORDER BY m.assigned_at DESC LIMIT 1
  MATCH (s)-[:EMBODIES]->(p:Persona)
  RETURN p {.id, .name, .description} AS persona, s {.id, .run_id} AS segment,
         m.distance AS distance
}
RETURN id, persona, segment.id AS segment, distance
""",
    "USERS_SEGMENT_PATH": """
UNWIND $ids AS id
MATCH (:User {id: id})-[m:IN_SEGMENT]->(leaf:Segment)
WITH id, leaf ORDER BY m.assigned_at DESC
WITH id, head(collect(leaf)) AS leaf
MATCH path = (leaf)-[:CHILD_OF*0..]->(s:Segment)
WITH id, length(path) AS depth, s.id AS segment ORDER BY id, depth
RETURN id, collect(segment) AS path
""",
    "USER_PERSONA_AS_OF": """
MATCH (u:User {id: $id})-[h:HAD_PERSONA]->(p:Persona)
WHERE h.valid_from <= $as_of AND (h.valid_to IS NULL OR h.valid_to > $as_of)
WITH u, p, h ORDER BY h.valid_from DESC LIMIT 1
OPTIONAL MATCH (u)-[m:IN_SEGMENT {run_id: h.run_id}]->(s:Segment)
RETURN p.id AS persona, s.id AS segment, m.distance AS distance, h.run_id AS run_id
""",
    "CURRENT_PERSONA_PERIOD": """
MATCH (:User {id: $id})-[h:HAD_PERSONA]->(p:Persona)
WHERE h.valid_to IS NULL
RETURN p.id AS persona, h.valid_from AS valid_from, h.run_id AS run_id
ORDER BY h.valid_from DESC
LIMIT 1
""",
    "PERSONA_HISTORY": """
MATCH (:User {id: $id})-[h:HAD_PERSONA]->(p:Persona)
WHERE $after_at IS NULL OR h.valid_from < datetime({epochMillis: $after_at})
      OR (h.valid_from = datetime({epochMillis: $after_at}) AND p.id < $after_id)
RETURN p.id AS persona, h.valid_from AS valid_from, h.valid_to AS valid_to,
       h.run_id AS run_id, h.valid_from.epochMillis AS at_ms
ORDER BY h.valid_from DESC, p.id DESC
LIMIT $limit
""",
}


def _answer(name: str, rows: list[Any]) -> list[Any]:
    """The columns REFERENCE returns, from a statement's rows."""
    def pick(r: Any) -> Any:
        if name == "USERS_PERSONA":
            return (r["id"], r["persona"], r["segment"]["id"], r["distance"])
        if name == "USERS_SEGMENT_PATH":
            return (r["id"], [p["segment"]["id"] for p in r["path"]])
        if name == "USER_PERSONA_AS_OF":
            return (r["persona"]["id"], r["segment"] and r["segment"]["id"], r["distance"],
                    r["run_id"])
        if name == "CURRENT_PERSONA_PERIOD":
            return (r["persona"]["id"], r["valid_from"], r["run_id"])
        return (r["persona"]["id"], r["valid_from"], r["valid_to"], r["run_id"], r["at_ms"])
    return [pick(r) for r in rows]


def _reference(name: str, rows: list[Any]) -> list[Any]:
    if name == "USERS_PERSONA":
        return [(r["id"], r["persona"], r["segment"], r["distance"]) for r in rows]
    if name == "USERS_SEGMENT_PATH":
        return [(r["id"], r["path"]) for r in rows]
    return [tuple(r.values()) for r in rows]


def _persona_reads(times: list[datetime]) -> dict[str, tuple[LiteralString, Any]]:
    """Each per-user persona read with the parameters of one user (`few` or `many`): the
    same question for both (the persona at the start of the last run but one, a page of
    three periods, and the page after it)."""
    as_of = times[-2] + timedelta(hours=1)
    cursor = int(times[-2].timestamp() * 1000)
    return {
        "USERS_PERSONA": (q.USERS_PERSONA, lambda n: {"ids": [n]}),
        "USERS_SEGMENT_PATH": (q.USERS_SEGMENT_PATH, lambda n: {"ids": [n]}),
        "USER_PERSONA_AS_OF": (q.USER_PERSONA_AS_OF, lambda n: {**_user(n), "as_of": as_of}),
        "CURRENT_PERSONA_PERIOD": (q.CURRENT_PERSONA_PERIOD, _user),
        "PERSONA_HISTORY": (q.PERSONA_HISTORY, lambda n: {
            **_user(n), "after_at": None, "after_id": None, "limit": FEW, "upper": NEVER}),
        "PERSONA_HISTORY_AFTER": (q.PERSONA_HISTORY, lambda n: {
            **_user(n), "after_at": cursor, "after_id": "odd", "limit": 2,
            "upper": times[-2]}),
    }


def test_persona_reads_do_not_grow_with_the_runs_a_user_was_in(graph: Graph) -> None:
    """`few` was in 3 runs, `many` in 30 (each a new membership and persona period): reading
    either one's persona, segment path, persona at a time, current period or a page of
    history costs the same, and answers as the sort of every membership or period did."""
    times = write_runs(graph)
    grew: dict[str, tuple[int, int]] = {}
    reads = _persona_reads(times)
    assert {name.removesuffix("_AFTER") for name in reads} == PER_RUN
    for name, (query, params) in reads.items():
        small, small_rows = db_hits(graph, query, **params("few"))
        big, big_rows = db_hits(graph, query, **params("many"))
        assert small_rows and len(big_rows) == len(small_rows), name
        reference = REFERENCE[name.removesuffix("_AFTER")]
        for user, rows in (("few", small_rows), ("many", big_rows)):
            expected = graph.rows(reference, **params(user))
            assert _answer(name, rows) == _reference(name, expected), (name, user)
        if big > small * 1.2 + 20:
            grew[name] = (small, big)
    assert grew == {}, f"db hits ({FEW} runs, {MANY} runs) that grew: {grew}"


def test_persona_at_every_time_is_the_one_the_sort_gave(graph: Graph) -> None:
    """The persona at a time (the newest period begun by then, if still open then, with the
    membership of the run that opened it) before, at, between and after every run."""
    times = write_runs(graph)
    probes = [t + d for t in times for d in (timedelta(0), timedelta(hours=12),
                                             -timedelta(milliseconds=1))]
    for user in ("few", "many"):
        for as_of in probes:
            params = {"id": user, "as_of": as_of}
            got = _answer("USER_PERSONA_AS_OF", graph.rows(q.USER_PERSONA_AS_OF, **params))
            expected = _reference("USER_PERSONA_AS_OF",
                                  graph.rows(REFERENCE["USER_PERSONA_AS_OF"], **params))
            assert got == expected, (user, as_of)
    assert got[0][1] is not None  # the segments are found, not only the personas


def test_a_type_filter_gives_the_page_the_filter_gave(graph: Graph) -> None:
    """USER_TYPED_* (each type's own seek) against the filter over every type, both ways, on
    pages walked with their cursors."""
    graph.execute(HISTORY, small=30, big=40, now=NOW)
    filtered = {True: q.USER_INTERACTIONS_NEWEST.replace(
                    "WITH i ORDER BY", "  AND i.type IN $types\nWITH i ORDER BY"),
                False: q.USER_INTERACTIONS_OLDEST.replace(
                    "WITH i ORDER BY", "  AND i.type IN $types\nWITH i ORDER BY")}
    for newest, typed in ((True, q.USER_TYPED_NEWEST), (False, q.USER_TYPED_OLDEST)):
        for types in (["search", "purchase"], ["feedback"], [], ["none"]):
            after: tuple[Any, Any] = (None, None)
            pages = 0
            while True:
                params = {"id": "big", "types": types, "since": NOW - timedelta(hours=35),
                          "until": None, "after_at": after[0], "after_id": after[1],
                          "limit": 4, "lower": EVER, "upper": NEVER}
                got = graph.rows(typed, **params)
                assert got == graph.rows(filtered[newest], **params), (newest, types, after)
                if not got:
                    break
                pages += 1
                after = (got[-1]["at_ms"], got[-1]["interaction"]["event_id"])
            assert pages == (0 if types in ([], ["none"]) else 2 if len(types) == 1 else 4)
