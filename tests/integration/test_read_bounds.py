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
from graph.recommend.engine import recommend_params
from graph.recommend.limits import MAX_ITEM_USERS
from graph.recommend.queries import POPULAR, RECOMMEND
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
CREATE (u)-[:IN_SEGMENT {run_id: 'run-' + name, segment_id: s.id, distance: 0.0,
                         assigned_at: $now}]->(s)
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
# its own.
AGGREGATES = """
UNWIND [['small', $small], ['big', $big]] AS h
CREATE (u:User {id: h[0] + '-shopper'})
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
        **_user(n), "now": NOW, "lookback_hours": 6, "valid_hours": 3, "days": 7,
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
        "segment_id": "seg-" + n, "first": 5, "sample": CAP}),
    "SIMILAR_USERS": (q.SIMILAR_USERS, lambda n: {
        "id": n + "-shopper", "first": 5, "recent_items": 10, "max_item_users": MAX_ITEM_USERS}),
}

# Each item of `$items` bought by `$buyers` new users (plus its position in `$items`: so many
# purchases in the graph), its counters then recounted as merges and erasures do.
PURCHASES = """
UNWIND range(0, size($items) - 1) AS p
MERGE (it:Item {id: $items[p]})
WITH it, p
UNWIND range(1, $buyers + p) AS k
CREATE (:User {id: it.id + '-b' + k})-[:INTERACTED {purchases: 1 + k % 3}]->(it)
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
    "PERSONA_OF_USER": "sorts the user's memberships of every run (grows with runs)",
    "PERSONA_HISTORY": "sorts the user's persona periods (grows with runs)",
    "USER_PERSONA_AS_OF": "sorts the user's persona periods (grows with runs)",
    "CURRENT_PERSONA_PERIOD": "sorts the user's persona periods (grows with runs)",
    "USERS_SEGMENT_PATH": "sorts the user's memberships of every run (grows with runs)",
    "USER_PROFILE": "its parts: PERSONA_OF_USER, PREFERENCES_OF_USER, SITUATION_OF_USER and "
                    "the recommender's RECOMMEND_FOR_USER (test_recommend.py)",
    "USER_PROFILE_BY_IDENTIFIER": "as USER_PROFILE",
}

# Fragments other statements are built of (checked through those).
PARTS = {"PERSONA_OF_USER", "PREFERENCES_OF_USER", "SITUATION_OF_USER", "RECOMMEND_FOR_USER"}


def statements() -> set[str]:
    """The names of the Cypher statements of graph/profile/queries.py."""
    return {name for name, value in vars(q).items()
            if name.isupper() and isinstance(value, str) and not name.startswith("_")}


def test_every_statement_is_listed() -> None:
    listed = set(BOUNDED) | NOT_PER_ENTITY | set(UNBOUNDED) | PARTS
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
    first items in the index's order (and of the ties of the last one)."""
    buy(graph, [f"item-{k:03}" for k in range(10)], 1)
    graph.execute("CREATE (:User {id: 'shopper'})")
    params = {"user_id": "shopper", "first": 5}
    small = [db_hits(graph, POPULAR, personal=p, **params)[0] for p in (False, True)]
    buy(graph, [f"item-{k:03}" for k in range(10, 100)], 1)
    big = [db_hits(graph, POPULAR, personal=p, **params)[0] for p in (False, True)]
    assert all(b <= s * 1.2 + 20 for s, b in zip(small, big, strict=True)), (small, big)


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
                                                        purchases: 1}]->(it)""", now=NOW)
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


def test_recommendations_do_not_grow_with_the_users_own_items(graph: Graph) -> None:
    """RECOMMEND_FOR_USER reads the user's own aggregates three times: the items it leaves out
    (each candidate tested), the newest bought, carted or liked items whose neighbours are
    candidates, and those whose buyers are similar users (found per request here: no stored
    ones). None of them grows with the user's own items."""
    graph.execute(AGGREGATES, small=SMALL, big=BIG, now=NOW)
    graph.execute(SHOPPERS_NEIGHBOURS, now=NOW)
    hits = {}
    for name in ("small", "big"):
        params = recommend_params(name + "-shopper", first=50, now=NOW)
        graph.rows(RECOMMEND, **params)  # planned once
        hits[name], rows = db_hits(graph, RECOMMEND, **params)
        offered = {r["item_id"] for r in rows}
        # The neighbours of the 10 newest bought items, bought by similar users too; the
        # similar users' other items (the shopper's own) left out.
        assert offered == {f"{name}-other-{k}" for k in range(1, 20, 2)}, name
    assert hits["big"] <= hits["small"] * 1.2 + 20, hits
