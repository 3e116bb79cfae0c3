"""Recommendations on a real Neo4j holding a small demo population."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, LiteralString

import pytest
from neo4j import Driver

from graph import situation
from graph.aggregates.queries import UPDATE_INTERACTED
from graph.db import Graph
from graph.errors import InvalidInput, NotFound
from graph.events import Event
from graph.ingest.writer import EventWriter
from graph.privacy import Pseudonymizer
from graph.recommend.engine import (
    CONTEXT_BOOSTS,
    WEIGHTS,
    popular,
    recommend,
    recommend_params,
)
from graph.segments.run import RunResult, run_segmentation
from graph.settings import Settings
from personas.demo import DemoPopulation
from tests.helpers import db_hits, empty_graph, load_demo, mark_interacted

pytestmark = pytest.mark.integration

USERS, SEED, KEY = 120, 31, "k"  # load_demo's default pseudonymization key
# Demo user 0 is a frequent shopper (grocery, beauty, fashion, books), known by a CRM id.
CRM_ID = f"crm-{SEED}-000000"

BOUGHT = """
MATCH (:User {id: $user_id})-[r:INTERACTED]->(it:Item) WHERE r.purchases > 0
RETURN collect(it.id) AS items
"""
BUYERS = """
MATCH (u:User)-[r:INTERACTED]->() WHERE r.purchases > 0
RETURN DISTINCT u.id AS id ORDER BY id LIMIT $n
"""


def frequent_shopper(graph: Graph) -> str:
    """The id ingestion gave demo user 0 (named after the most authoritative identifier)."""
    uid = Pseudonymizer(KEY).user_id("crm_id", CRM_ID)
    assert graph.rows("MATCH (u:User {id: $id}) RETURN u.id AS id", id=uid), "demo user 0"
    return uid


def bought(graph: Graph, user_id: str) -> set[str]:
    return set(graph.rows(BOUGHT, user_id=user_id)[0]["items"])


@pytest.fixture(scope="module")
def segmented(driver: Driver, settings: Settings,
              tmp_path_factory: pytest.TempPathFactory) -> tuple[Graph, RunResult]:
    """The demo loaded and segmented once, for the two tests that only read it (the first of
    the module: every later test starts from the ``graph`` fixture's wiped graph)."""
    graph = empty_graph(driver, settings)
    load_demo(graph, tmp_path_factory.mktemp("demo"), users=USERS, seed=SEED)
    return graph, run_segmentation(graph)


def test_recommendations_leave_out_what_the_user_bought(
        segmented: tuple[Graph, RunResult]) -> None:
    graph, _ = segmented
    buyers = [r["id"] for r in graph.rows(BUYERS, n=20)]
    assert len(buyers) == 20
    for uid in buyers:
        own = bought(graph, uid)
        assert own, uid
        recs = recommend(graph, uid, first=50)
        assert recs, uid
        assert not own & {r.item_id for r in recs}, uid
        assert not own & {r.item_id for r in popular(graph, uid, first=50)}, uid


def test_every_recommendation_has_a_reason(segmented: tuple[Graph, RunResult]) -> None:
    """... with the weights the run learned (``blend``), which it stores."""
    from graph.recommend.blend import GRID

    graph, result = segmented
    run = graph.rows("MATCH (r:SegmentationRun {id: $id}) RETURN r.rec_item_weight AS item, "
                     "r.rec_similar_weight AS similar, r.rec_validation_users AS users",
                     id=result.run_id)[0]
    assert run["users"] > 0
    assert (run["item"], run["similar"]) in {*GRID, (WEIGHTS["item"], WEIGHTS["similar"])}
    users = [r["id"] for r in graph.rows("MATCH (u:User) RETURN u.id AS id ORDER BY id")]
    seen = 0
    for uid in users[::4]:
        recs = recommend(graph, uid, first=100)
        assert [r.score for r in recs] == sorted((r.score for r in recs), reverse=True), uid
        for rec in recs:
            assert rec.reasons and all(isinstance(s, str) and s for s in rec.reasons), rec
        seen += len(recs)
    assert seen > 100


def test_explicit_negative_feedback_suppresses_a_category(graph: Graph, tmp_path: Path) -> None:
    load_demo(graph, tmp_path, users=USERS, seed=SEED)
    uid = frequent_shopper(graph)
    before = recommend(graph, uid, first=100)
    disliked = before[0].category
    assert disliked is not None and sum(r.category == disliked for r in before) >= 3

    # The user tells the shop, through an ordinary feedback event, that they dislike it.
    feedback = Event.model_validate({
        "event_id": "fb-negative-1", "type": "feedback", "source": "chat",
        "occurred_at": datetime.now(UTC).isoformat(), "user": {"crm_id": CRM_ID},
        "properties": {"category": disliked.upper(), "rating": 1},
    })
    result = EventWriter(graph, Pseudonymizer(KEY)).write([feedback])
    assert result.written == 1 and result.user_ids == (uid,)
    assert graph.rows(
        "MATCH (:User {id: $uid})-[p:PREFERS {source: 'explicit'}]->(:Category {name: $c}) "
        "RETURN p.weight AS w", uid=uid, c=disliked) == [{"w": -1.0}]

    after = recommend(graph, uid, first=100)
    assert after, "other categories are still recommended"
    assert disliked not in {r.category for r in after}
    categories = graph.rows("UNWIND $ids AS id MATCH (:Item {id: id})-[:IN_CATEGORY]->(c) "
                            "RETURN collect(DISTINCT c.name) AS names",
                            ids=[r.item_id for r in after])[0]["names"]
    assert disliked not in categories


def test_an_item_the_user_rated_is_never_offered_back(graph: Graph, tmp_path: Path) -> None:
    """Whatever the rating, high or low, and without a category: the user knows the item."""
    load_demo(graph, tmp_path, users=USERS, seed=SEED)
    run_segmentation(graph)
    uid = frequent_shopper(graph)
    liked = recommend(graph, uid, first=10)[0].item_id
    disliked = popular(graph, uid, first=10)[0].item_id
    assert liked != disliked
    now = datetime.now(UTC)
    feedback = [Event.model_validate({
        "event_id": f"fb-item-{n}", "type": "feedback", "source": "web",
        "occurred_at": (now + timedelta(seconds=n)).isoformat(), "user": {"crm_id": CRM_ID},
        "properties": {"item_id": item, "rating": rating},
    }) for n, (item, rating) in enumerate(((liked, 5), (disliked, 1)))]
    assert EventWriter(graph, Pseudonymizer(KEY)).write(feedback).written == 2
    for offered in (recommend(graph, uid, first=100), popular(graph, uid, first=100)):
        assert offered
        assert not {liked, disliked} & {r.item_id for r in offered}


def test_popularity_counts_buyers_not_units(graph: Graph, tmp_path: Path) -> None:
    load_demo(graph, tmp_path, users=USERS, seed=SEED)
    uid = frequent_shopper(graph)
    # One user buying one new item many times does not make it popular.
    graph.execute("CREATE (:Item {id: 'bulk', name: 'bulk'})")
    graph.execute(UPDATE_INTERACTED, rows=[{
        "user_id": uid, "item_id": "bulk", "views": 0, "carts": 0, "purchases": 10000,
        "spend": 0.0, "first_at": 0, "last_at": 0, "rating": None, "rated_at": None}])
    other = next(r["id"] for r in graph.rows(BUYERS, n=2) if r["id"] != uid)
    ranked = popular(graph, other, first=100)
    assert len(ranked) == 100 and "bulk" not in [r.item_id for r in ranked]
    assert ranked[-1].score >= 2  # every item of two buyers or more first, whatever the units
    buyers = graph.rows("MATCH (:Item {id: $id})<-[r:INTERACTED]-(u:User) WHERE r.purchases > 0 "
                        "RETURN count(DISTINCT u) AS n", id=ranked[0].item_id)[0]["n"]
    assert ranked[0].score == buyers


def test_rain_at_the_users_location_boosts_fitting_categories(
    graph: Graph, tmp_path: Path
) -> None:
    load_demo(graph, tmp_path, users=USERS, seed=SEED)
    uid = frequent_shopper(graph)
    location = graph.rows("MATCH (:User {id: $uid})-[:LOCATED_IN]->(l:Location) "
                          "RETURN l.id AS id, l.city AS city", uid=uid)[0]
    # Three days after the demo's last weather observation: no current weather there yet.
    now = DemoPopulation(USERS, SEED).as_of + timedelta(days=3)
    rainy = set(CONTEXT_BOOSTS["weather"]["rain"])
    dry = recommend(graph, uid, first=100, now=now)
    fitting = [r for r in dry if r.category in rainy]
    other = [r for r in dry if r.category not in rainy]
    assert fitting and other
    assert not any("rain in " in reason for r in dry for reason in r.reasons)

    situation.upsert_weather(graph, [{
        "id": "wx-test-rain", "location_id": location["id"], "at": now - timedelta(hours=1),
        "temp_c": 12.0, "condition": "rain", "source": "test"}])
    wet = {r.item_id: r for r in recommend(graph, uid, first=100, now=now)}

    for rec in fitting:
        assert wet[rec.item_id].score == pytest.approx(rec.score + WEIGHTS["context"])
        assert f"rain in {location['city']} today" in wet[rec.item_id].reasons
    for rec in other:
        if rec.item_id in wet:
            assert wet[rec.item_id].score == pytest.approx(rec.score)
    # An observation older than the validity window no longer counts.
    later = recommend(graph, uid, first=100,
                      now=now + timedelta(hours=CONTEXT_BOOSTS["weather_valid_hours"] + 1))
    assert not any("rain in " in reason for r in later for reason in r.reasons)


def test_unknown_user_is_not_found(graph: Graph) -> None:
    with pytest.raises(NotFound):
        recommend(graph, "u_nobody")
    with pytest.raises(NotFound):
        popular(graph, "u_nobody")


@pytest.mark.parametrize("first", [0, -1, 101])
def test_first_outside_1_to_100_is_invalid(graph: Graph, first: int) -> None:
    with pytest.raises(InvalidInput):
        recommend(graph, "u_nobody", first=first)
    with pytest.raises(InvalidInput):
        popular(graph, "u_nobody", first=first)


def test_segment_favourites_appear_once_a_run_exists(graph: Graph, tmp_path: Path) -> None:
    load_demo(graph, tmp_path, users=USERS, seed=SEED)
    uid = frequent_shopper(graph)
    assert not any(reason.startswith("popular with your segment")
                   for r in recommend(graph, uid, first=100) for reason in r.reasons)

    result = run_segmentation(graph)
    label = graph.rows("MATCH (:User {id: $uid})-[:IN_SEGMENT {run_id: $run}]->(s:Segment) "
                       "RETURN s.label AS label", uid=uid, run=result.run_id)[0]["label"]
    recs = recommend(graph, uid, first=10)
    favourites = [r for r in recs if f"popular with your segment {label}" in r.reasons]
    assert favourites, recs
    own = bought(graph, uid)
    assert not own & {r.item_id for r in favourites}


def test_a_run_writes_each_leaf_segments_favourites(graph: Graph, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """FAVOURITE: the items most bought by the members nearest each leaf segment's centre, with
    the share of them who bought each (small limits, so that both cut-offs are exercised)."""
    from graph.segments import run as run_module

    monkeypatch.setattr(run_module, "TYPICAL_MEMBERS", 10)
    monkeypatch.setattr(run_module, "FAVOURITES", 5)
    load_demo(graph, tmp_path, users=USERS, seed=SEED)
    result = run_segmentation(graph)
    members = graph.rows(
        "MATCH (:SegmentationRun {id: $run})-[:PRODUCED]->(s:Segment {level: 0})"
        "<-[m:IN_SEGMENT]-(u:User) "
        "OPTIONAL MATCH (u)-[r:INTERACTED]->(it:Item) WHERE r.purchases > 0 "
        "RETURN s.id AS segment, u.id AS user, m.distance AS distance, "
        "collect(it.id) AS items", run=result.run_id)
    by_segment: dict[str, list[dict[str, object]]] = {}
    for row in members:
        by_segment.setdefault(row["segment"], []).append(row)
    assert len(by_segment) == result.n_segments
    assert any(len(rows) > 10 for rows in by_segment.values())
    for segment, rows in by_segment.items():
        typical = sorted(rows, key=lambda r: (r["distance"], r["user"]))[:10]
        counts: dict[str, int] = {}
        for row in typical:
            for item in row["items"]:  # type: ignore[attr-defined]
                counts[item] = counts.get(item, 0) + 1
        expected = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:5]
        stored = graph.rows("MATCH (:Segment {id: $s})-[f:FAVOURITE]->(it:Item) "
                            "RETURN it.id AS item, f.buyers AS buyers, f.share AS share "
                            "ORDER BY buyers DESC, item", s=segment)
        assert [(r["item"], r["buyers"]) for r in stored] == expected, segment
        assert all(r["share"] == pytest.approx(r["buyers"] / len(typical)) for r in stored)

    # A later run writes its own; the earlier run's segments keep theirs.
    second = run_segmentation(graph)
    counts = {r["run"]: r["n"] for r in graph.rows(
        "MATCH (r:SegmentationRun)-[:PRODUCED]->(:Segment)-[f:FAVOURITE]->() "
        "RETURN r.id AS run, count(f) AS n")}
    assert counts.keys() == {result.run_id, second.run_id}


ACTIVITY = """
MATCH (u:User)-[r:INTERACTED]->(it:Item)
RETURN u.id AS user, it.id AS item, r.last_at AS at, r.carts AS carts, r.purchases AS purchases
"""
STORED_PEERS = """
MATCH (:User {id: $id})-[s:SIMILAR_TO]->(p:User)
RETURN p.id AS id, s.overlap AS overlap ORDER BY overlap DESC, id
"""


def test_a_run_writes_each_users_similar_users(graph: Graph, tmp_path: Path) -> None:
    load_demo(graph, tmp_path, users=USERS, seed=SEED)
    result = run_segmentation(graph)
    # The rule, counted here from the interactions: who bought the most of the user's 10 most
    # recently carted or bought items (ties: the earlier id), 50 at most.
    activity = graph.rows(ACTIVITY)
    bought: dict[str, set[str]] = {}
    for r in activity:
        if r["purchases"] > 0:
            bought.setdefault(r["user"], set()).add(r["item"])
    users = sorted({r["user"] for r in activity})
    with_peers = 0
    for uid in users:
        mine = sorted((r for r in activity if r["user"] == uid and r["carts"] + r["purchases"]),
                      key=lambda r: r["item"])
        recent = {r["item"] for r in sorted(mine, key=lambda r: r["at"], reverse=True)[:10]}
        overlaps = sorted(((len(recent & items), other) for other, items in bought.items()
                           if other != uid and recent & items), key=lambda o: (-o[0], o[1]))
        expected = [{"id": other, "overlap": n} for n, other in overlaps[:50]]
        assert graph.rows(STORED_PEERS, id=uid) == expected, uid
        with_peers += bool(expected)
    assert with_peers > USERS // 2
    assert graph.rows("MATCH ()-[s:SIMILAR_TO]->() RETURN collect(DISTINCT s.run_id) AS runs"
                      ) == [{"runs": [result.run_id]}]

    # Recommendations are the same whether the peers were stored or are found per request
    # (as for a user the run has not seen).
    buyers = [r["id"] for r in graph.rows(BUYERS, n=15)]
    stored_recs = {uid: recommend(graph, uid, first=10) for uid in buyers}
    assert any("similar user" in reason for recs in stored_recs.values()
               for r in recs for reason in r.reasons)
    graph.execute("MATCH ()-[s:SIMILAR_TO]->() DELETE s")
    assert {uid: recommend(graph, uid, first=10) for uid in buyers} == stored_recs

    # The next run replaces them whole.
    second = run_segmentation(graph)
    assert graph.rows("MATCH ()-[s:SIMILAR_TO]->() RETURN collect(DISTINCT s.run_id) AS runs"
                      ) == [{"runs": [second.run_id]}]


def test_stored_similar_users_give_way_when_they_no_longer_hold(graph: Graph,
                                                                tmp_path: Path) -> None:
    """Only the latest run's links are read; a merge, an unmerge and a withdrawal of
    personalization consent drop the users' own links (found per request until the next run)."""
    from graph.identity.merge import merge_users, unmerge
    from graph.subjects.consent import set_consent

    load_demo(graph, tmp_path, users=USERS, seed=SEED)
    run = run_segmentation(graph)
    a, b, c = [r["id"] for r in graph.rows(
        "MATCH (u:User)-[:SIMILAR_TO]->() WITH DISTINCT u RETURN u.id AS id ORDER BY id LIMIT 3")]
    live = recommend(graph, a, first=10)  # the stored links hold what the traversal finds
    # A link of the latest run is read: one to a user who bought other things changes the list.
    odd = graph.rows("MATCH (u:User) WHERE u.id <> $a AND NOT EXISTS { (:User {id: $a})"
                     "-[:SIMILAR_TO]->(u) } AND EXISTS { (u)-[r:INTERACTED]->() WHERE "
                     "r.purchases > 0 } RETURN u.id AS id ORDER BY id LIMIT 1", a=a)[0]["id"]
    link = ("MATCH (x:User {id: $a}), (y:User {id: $odd}) "
            "CREATE (x)-[:SIMILAR_TO {overlap: 1000, run_id: $run}]->(y)")
    graph.execute(link, a=a, odd=odd, run=run.run_id)
    assert recommend(graph, a, first=10) != live
    # The same link from an earlier run is not.
    graph.execute("MATCH (:User {id: $a})-[s:SIMILAR_TO {overlap: 1000}]->() "
                  "SET s.run_id = 'run-earlier'", a=a)
    assert recommend(graph, a, first=10) == live

    def links(uid: str) -> int:
        return graph.rows("MATCH (u {id: $id})-[s:SIMILAR_TO]->() RETURN count(s) AS n",
                          id=uid)[0]["n"]

    assert links(b) and links(c)
    merge_id = merge_users(graph, a, b, source="test", reason="test")
    assert links(a) == 0 and links(b) > 0  # the tombstone keeps its own, unread
    unmerge(graph, merge_id)
    assert links(a) == 0 and links(b) == 0
    set_consent(graph, c, "personalization", False, source="test")
    assert links(c) == 0
    run_segmentation(graph)
    assert links(c) == 0 and links(a) > 0 and links(b) > 0


def test_migration_0009_gives_a_run_from_before_it_the_favourites_a_run_writes(
        graph: Graph, tmp_path: Path) -> None:
    from graph.migrate import discover
    from graph.settings import Settings

    load_demo(graph, tmp_path, users=USERS, seed=SEED)
    run_segmentation(graph)
    favourites = ("MATCH (s:Segment)-[f:FAVOURITE]->(it:Item) "
                  "RETURN s.id AS s, it.id AS it, f.buyers AS buyers, f.share AS share "
                  "ORDER BY s, it")
    written = graph.rows(favourites)
    assert written
    graph.execute("MATCH ()-[f:FAVOURITE]->() DELETE f")  # a run from before favourites
    [migration] = [m for m in discover(Settings().migrations_dir) if m.version == 9]
    for _ in range(2):  # the second time changes nothing
        for statement in migration.statements:
            graph.auto_commit(statement)
        assert graph.rows(favourites) == written


def plan_operators(graph: Graph, query: LiteralString, **params: Any) -> list[str]:
    """The operators of the plan Neo4j picks for ``query`` (EXPLAIN: nothing runs), each with
    its details."""
    def walk(plan: dict[str, Any]) -> Iterator[str]:
        yield f"{plan['operatorType']} {plan.get('args', {}).get('Details', '')}"
        for child in plan.get("children", []):
            yield from walk(child)

    with graph.driver.session(database=graph.database) as session:
        summary = session.run("EXPLAIN " + query, params).consume()
    assert summary.plan is not None
    return list(walk(summary.plan))


@pytest.mark.parametrize("name", ["RECOMMEND", "RUN_EDGES_OF_FIRST_USER",
                                  "DELETE_RUN_SIMILAR_USERS_OF", "RUN_EDGES_OF_FIRST_ITEM",
                                  "DELETE_RUN_ITEM_NEIGHBOURS_OF"])
def test_a_users_or_items_run_edges_are_read_from_the_node_not_the_run_index(
        graph: Graph, name: str) -> None:
    """The run_id indexes of SIMILAR_TO and SIMILAR_ITEM (migration 0012) are for dropping a
    whole run. A per-user read or per-row write that seeks them gets every edge of the run and
    filters by endpoint: O(edges of the run) per user, which made writing 150,000 similar users
    take minutes. The planner picks such a seek on a young index (few edges counted), as here.
    (A similar user's marked INTERACTED are an index seek on purpose, migration 0016.)"""
    from graph.recommend import queries as q
    from graph.recommend.items import write_item_neighbours
    from graph.recommend.neighbours import write_similar_users

    graph.execute("UNWIND range(1, 3) AS n CREATE (:User {id: 'u' + n}), (:Item {id: 'i' + n})")
    peers = [{"user_id": "u1", "peers": [{"user_id": "u2", "overlap": 2}]}]
    neighbours = [{"item_id": "i1", "neighbours": [{"item_id": "i2", "score": 0.5}]}]
    params = {**recommend_params("u1"), "run_id": "run-1", "rows": peers + neighbours}
    operators = plan_operators(graph, getattr(q, name), **params)
    assert "Expand" in " ".join(operators), operators
    assert not [op for op in operators
                if "RelationshipIndex" in op and ":INTERACTED(user_id, " not in op], operators

    # Written once per run, whatever a retry repeats: the run's edges are replaced.
    for _ in range(2):
        assert write_similar_users(graph, "run-1", peers) == 1
        assert write_item_neighbours(graph, "run-1", neighbours) == 1
    peers[0]["peers"][0]["overlap"] = 3
    assert write_similar_users(graph, "run-1", peers) == 1
    assert write_similar_users(graph, "run-2", peers) == 1
    assert graph.rows("MATCH ()-[s:SIMILAR_TO]->() RETURN s.run_id AS run, s.overlap AS overlap "
                      "ORDER BY run") == [{"run": "run-1", "overlap": 3},
                                          {"run": "run-2", "overlap": 3}]
    assert graph.rows("MATCH ()-[s:SIMILAR_ITEM]->() RETURN s.run_id AS run, s.score AS score"
                      ) == [{"run": "run-1", "score": 0.5}]
    # A user written again has exactly the run's new edges (a shorter list leaves none behind).
    peers[0]["peers"] = [{"user_id": "u3", "overlap": 1}]
    assert write_similar_users(graph, "run-1", peers) == 1
    assert graph.rows("MATCH (:User {id: 'u1'})-[s:SIMILAR_TO {run_id: 'run-1'}]->(p) "
                      "RETURN p.id AS peer, s.overlap AS overlap"
                      ) == [{"peer": "u3", "overlap": 1}]


def test_a_runs_edges_are_written_exactly_as_found_over_several_transactions(
        graph: Graph) -> None:
    """The similar users and item neighbours written are the rows found, edge for edge: each
    (user, peer, overlap) and (item, neighbour, score) once, across transactions of
    ``EDGES_PER_TRANSACTION`` edges, and a chunk written again replaces its edges."""
    from graph.recommend.items import write_item_neighbours
    from graph.recommend.neighbours import EDGES_PER_TRANSACTION, write_similar_users

    users = 600
    graph.execute("UNWIND range(0, $n - 1) AS n CREATE (:User {id: 'u' + n}), "
                  "(:Item {id: 'i' + n})", n=users)
    peers = [{"user_id": f"u{n}", "peers": [{"user_id": f"u{(n + k) % users}", "overlap": k}
                                             for k in range(1, 1 + n % 41)]}
             for n in range(users)]
    neighbours = [{"item_id": f"i{n}", "neighbours": [
        {"item_id": f"i{(n * 7 + k) % users}", "score": 1.0 / k} for k in range(1, 1 + n % 37)]}
        for n in range(users)]
    want_peers = {(r["user_id"], p["user_id"], p["overlap"]) for r in peers for p in r["peers"]}
    want_items = {(r["item_id"], e["item_id"], e["score"])
                  for r in neighbours for e in r["neighbours"]}
    assert len(want_peers) > EDGES_PER_TRANSACTION  # more than one transaction
    assert write_similar_users(graph, "run-1", peers) == len(want_peers)
    assert write_item_neighbours(graph, "run-1", neighbours) == len(want_items)
    # A retry: the last chunk's rows written again replace their edges.
    assert write_similar_users(graph, "run-1", peers[-50:]) == sum(
        len(r["peers"]) for r in peers[-50:])

    def stored(kind: LiteralString, prop: LiteralString) -> list[tuple[str, str, Any]]:
        return [(r["a"], r["b"], r["v"]) for r in graph.rows(
            "MATCH (a)-[s:" + kind + "]->(b) WHERE s.run_id = 'run-1' "
            "RETURN a.id AS a, b.id AS b, s." + prop + " AS v")]

    for got, want in ((stored("SIMILAR_TO", "overlap"), want_peers),
                      (stored("SIMILAR_ITEM", "score"), want_items)):
        assert len(got) == len(want)
        assert set(got) == want


# Every user bought the one item 'every' and, the day before, one of $items others.
SHARED_ITEM_SHOP = """
CREATE (:Item {id: 'every', name: 'every'})
WITH 1 AS one
UNWIND range(0, $items - 1) AS n
CREATE (:Item {id: 'i' + n, name: 'i' + n})
WITH count(*) AS created
UNWIND range(0, $users - 1) AS n
MATCH (every:Item {id: 'every'}), (own:Item {id: 'i' + (n % $items)})
CREATE (u:User {id: 'u' + n}),
       (u)-[:INTERACTED {purchases: 1, last_at: datetime()}]->(every),
       (u)-[:INTERACTED {purchases: 1, last_at: datetime() - duration({days: 1})}]->(own)
"""


def test_an_item_every_user_bought_is_never_expanded_per_request(graph: Graph) -> None:
    """A smaller, faster sibling of the 30,000-user run in test_run_publication.py: the
    recommendation's reads stay far below the users who share the item, with stored similar
    users and without them (found per request)."""
    from graph.recommend import queries as q
    from graph.recommend.items import find_item_neighbours, write_item_neighbours
    from graph.recommend.limits import MAX_ITEM_USERS
    from graph.recommend.neighbours import find_similar_users, write_similar_users

    users, items = 3 * MAX_ITEM_USERS, 300
    graph.execute(SHARED_ITEM_SHOP, users=users, items=items)
    mark_interacted(graph)
    peers = find_similar_users(graph)
    assert len(peers) == users
    assert all(len(row["peers"]) == users // items - 1 for row in peers)  # 'every' says nothing
    write_similar_users(graph, "run-1", peers)
    write_item_neighbours(graph, "run-1", find_item_neighbours(graph))
    graph.execute("CREATE (:SegmentationRun {id: 'run-1', created_at: datetime()})")
    graph.execute("MATCH (:User {id: 'u1'})-[s:SIMILAR_TO]->() DELETE s")  # found per request

    for uid in ("u0", "u1"):
        recommend(graph, uid)  # planned once
        hits, rows = db_hits(graph, q.RECOMMEND, **recommend_params(uid, first=10))
        assert rows and "every" not in {r["item_id"] for r in rows}, uid
        # Neighbours' items come from their own few purchases, never from 'every''s buyers.
        assert hits < users, (uid, hits)


# "me" and "peer" bought x a week ago; peer then bought o1 to o5, a day apart (o5 the latest).
PEER_WITH_A_HISTORY = """
CREATE (x:Item {id: 'x'}), (me:User {id: 'me'}), (peer:User {id: 'peer'}),
       (me)-[:INTERACTED {purchases: 1, last_at: datetime() - duration({days: 7})}]->(x),
       (peer)-[:INTERACTED {purchases: 1, last_at: datetime() - duration({days: 7})}]->(x)
WITH peer
UNWIND range(1, 5) AS n
CREATE (peer)-[:INTERACTED {purchases: 1,
                            last_at: datetime() - duration({days: 6 - n})}]->(:Item {id: 'o' + n})
"""


@pytest.mark.parametrize(("peer_items", "offered"), [
    (3, {"o3", "o4", "o5"}),  # six interactions, over the cap: the three most recent
    (6, {"o1", "o2", "o3", "o4", "o5"}),  # not over it: all of them (x is the user's own)
])
def test_a_similar_user_adds_their_most_recent_items_up_to_the_cap(
        graph: Graph, peer_items: int, offered: set[str]) -> None:
    from graph.recommend import queries as q

    graph.execute(PEER_WITH_A_HISTORY)
    mark_interacted(graph)
    params = recommend_params("me", first=10)
    rows = graph.rows(q.RECOMMEND, **{**params,
                                      "limits": {**params["limits"], "peer_items": peer_items}})
    assert {r["item_id"] for r in rows} == offered
    assert all("bought by a similar user" in r["reasons"] for r in rows)


# Ten fans of a1 and a3 (five of them also of a2), ten of b1 and b2; "me" bought a1 and rated
# a3 1 (bought and disliked) a day later. Film titles as names, as the reasons show them.
TWO_TASTES_SHOP = """
UNWIND ['a1', 'a2', 'a3', 'b1', 'b2'] AS id
CREATE (:Item {id: id, name: 'Item ' + id})
WITH count(*) AS created
UNWIND range(0, 19) AS n
WITH n, CASE WHEN n < 10 THEN ['a1', 'a3'] + CASE WHEN n < 5 THEN ['a2'] ELSE [] END
             ELSE ['b1', 'b2'] END AS taste
CREATE (u:User {id: 'u' + n})
WITH u, taste
UNWIND taste AS id
MATCH (it:Item {id: id})
CREATE (u)-[:INTERACTED {purchases: 1, last_at: datetime() - duration({days: 3})}]->(it)
WITH count(*) AS created
MATCH (a1:Item {id: 'a1'}), (a3:Item {id: 'a3'})
CREATE (me:User {id: 'me'}),
       (me)-[:INTERACTED {purchases: 1, last_at: datetime() - duration({days: 2})}]->(a1),
       (me)-[:INTERACTED {purchases: 1, rating: 1, rated_at: datetime() - duration({days: 1}),
                          last_at: datetime() - duration({days: 1})}]->(a3)
"""


def test_item_neighbours_carry_the_item_models_weights_and_name_the_users_item(
        graph: Graph) -> None:
    """SIMILAR_ITEM holds EASE's weights (the baseline's own fit over the same purchases); a
    candidate reached through one says which of the user's items it came from; an item the
    user rated low is neither offered nor a reason, however strong its neighbours."""
    import numpy as np
    from scipy import sparse

    from graph.recommend.baselines import EASE
    from graph.recommend.items import EASE_L2, find_item_neighbours, write_item_neighbours

    graph.execute(TWO_TASTES_SHOP)
    mark_interacted(graph)
    write_item_neighbours(graph, "run-1", find_item_neighbours(graph))
    graph.execute("CREATE (:SegmentationRun {id: 'run-1', created_at: datetime()})")

    rows = graph.rows("MATCH (u:User)-[r:INTERACTED]->(it:Item) WHERE coalesce(r.rating, 3) > 2 "
                      "RETURN u.id AS user, it.id AS item")
    users = sorted({r["user"] for r in rows})
    ids = ["a1", "a2", "a3", "b1", "b2"]
    X = np.zeros((len(users), len(ids)))
    for r in rows:
        X[users.index(r["user"]), ids.index(r["item"])] = 1.0
    B = EASE(EASE_L2).fit(sparse.csr_matrix(X)).weights_
    stored = graph.rows("MATCH (a:Item)-[s:SIMILAR_ITEM]->(b:Item) "
                        "RETURN a.id AS a, b.id AS b, s.score AS score ORDER BY a, b")
    assert [(s["a"], s["b"]) for s in stored] == [
        (ids[i], ids[j]) for i in range(len(ids)) for j in range(len(ids)) if B[i, j] > 0]
    assert [s["score"] for s in stored] == pytest.approx(
        [B[ids.index(s["a"]), ids.index(s["b"])] for s in stored])
    assert {"a2", "a3"} <= {s["b"] for s in stored if s["a"] == "a1"}

    recs = {r.item_id: r for r in recommend(graph, "me", first=10)}
    assert "a3" not in recs and "a1" not in recs  # disliked, and bought
    assert "because you bought Item a1" in recs["a2"].reasons
    assert not [reason for r in recs.values() for reason in r.reasons if "a3" in reason]
    # Nothing leads from a1 to the other taste.
    assert list(recs) == ["a2"]


# Users, their purchases (``k``: the order they came in, a day apart) and the items.
CHAIN_SHOP = """
UNWIND $items AS id CREATE (:Item {id: id, name: 'Film ' + id})
WITH count(*) AS created
UNWIND $rows AS row
MERGE (u:User {id: row.user_id})
WITH u, row
MATCH (it:Item {id: row.item_id})
CREATE (u)-[:INTERACTED {purchases: 1,
                         last_at: datetime('2026-01-01T00:00:00Z') + duration({days: row.k})}]->(it)
"""


def test_learned_weights_rank_held_out_items_at_least_as_well_as_ease(graph: Graph) -> None:
    """A run's learned weights (``blend``) over its stored edges predict each user's held-out
    last purchase at least as well as EASE over the whole catalogue, on a shop whose next
    purchase follows from the newest ones; with the fixed default weights they do not. Every
    recommendation keeps its reasons, and a hit names the user's item it follows from."""
    import numpy as np

    from graph.recommend.baselines import ease, interaction_matrix
    from graph.recommend.blend import tune_blend
    from graph.recommend.evaluation import hit_rate_ndcg
    from graph.recommend.interactions import read_interactions
    from graph.recommend.items import item_neighbours_of, write_item_neighbours
    from graph.recommend.neighbours import similar_users_of, write_similar_users
    from tests.unit.test_recommend_blend import chain_shop

    rows = chain_shop(4)
    last: dict[str, dict[str, Any]] = {}
    for r in rows:
        if r["user_id"] not in last or r["last_at"] > last[r["user_id"]]["last_at"]:
            last[r["user_id"]] = r
    kept = [r for r in rows if r is not last[r["user_id"]]]
    items = sorted({r["item_id"] for r in rows})
    graph.execute(CHAIN_SHOP, items=items, rows=[{"user_id": r["user_id"],
                                                  "item_id": r["item_id"],
                                                  "k": int(r["last_at"])} for r in kept])
    mark_interacted(graph)
    interactions = read_interactions(graph)
    blend = tune_blend(interactions)
    write_similar_users(graph, "run-1", list(similar_users_of(interactions)))
    write_item_neighbours(graph, "run-1", item_neighbours_of(interactions))

    matrix = interaction_matrix(((r["user_id"], r["item_id"], 1.0) for r in kept), items=items)
    model = ease(matrix.matrix)
    baseline = [([str(matrix.items[i]) for i in model.top(matrix.user_index(u), 10)],
                 held["item_id"]) for u, held in sorted(last.items())]

    def graph_ranking(run_props: dict[str, Any]) -> list[tuple[list[str], str]]:
        graph.execute("MATCH (r:SegmentationRun) DETACH DELETE r")
        graph.execute("CREATE (r:SegmentationRun {id: 'run-1', created_at: datetime()}) "
                      "SET r += $props", props=run_props)
        out = []
        for u, held in sorted(last.items()):
            recs = recommend(graph, u, first=10)
            assert recs and all(r.reasons for r in recs), u
            for r in recs:
                if r.item_id == held["item_id"]:
                    assert any(s.startswith("because you bought Film ") for s in r.reasons), r
            out.append(([r.item_id for r in recs], held["item_id"]))
        return out

    learned = hit_rate_ndcg(graph_ranking(blend.run_props()))
    fixed = hit_rate_ndcg(graph_ranking({}))
    ease_hit, ease_ndcg = hit_rate_ndcg(baseline)
    assert blend.item >= blend.similar, blend
    assert learned[0] >= ease_hit and learned[1] >= ease_ndcg, (learned, ease_hit, ease_ndcg)
    assert fixed[1] < learned[1], (fixed, learned)
    assert np.isfinite(learned).all()


# Each user 'u<n>' and item 'i<n>' with $edges of each run's SIMILAR_TO and SIMILAR_ITEM.
RUNS_EDGES = """
UNWIND range(0, $n - 1) AS n
CREATE (:User {id: 'u' + n}), (:Item {id: 'i' + n})
WITH count(*) AS created
UNWIND $runs AS run
UNWIND range(0, run.users - 1) AS n
UNWIND range(1, $edges) AS k
MATCH (u:User {id: 'u' + n}), (v:User {id: 'u' + ((n + k) % $n)}),
      (it:Item {id: 'i' + n}), (jt:Item {id: 'i' + ((n + k) % $n)})
CREATE (u)-[:SIMILAR_TO {run_id: run.id, overlap: k}]->(v),
       (it)-[:SIMILAR_ITEM {run_id: run.id, score: 1.0 / k}]->(jt)
"""
RUN_EDGE_COUNTS = """
MATCH ()-[s:SIMILAR_TO|SIMILAR_ITEM]->()
RETURN type(s) AS type, s.run_id AS run, count(*) AS edges ORDER BY type, run
"""


def test_dropping_other_runs_edges_reads_only_the_edges_it_deletes(graph: Graph) -> None:
    """Once a run is published, the other runs' SIMILAR_TO and SIMILAR_ITEM go, found by range
    seeks of the run_id indexes: the drop's work follows the edges it deletes, not the run's
    own (a scan for `run_id <> $run_id` read every edge: 92 s at 100k users). Dropping again
    (a retry after an error or an unknown outcome) deletes nothing more."""
    from graph.migrate import split_statements
    from graph.recommend import queries as q
    from graph.recommend.items import drop_item_neighbours_except
    from graph.recommend.neighbours import drop_similar_users_except

    earlier, current, later = ("run-20261206T000000-aaaaaa", "run-20261207T000000-bbbbbb",
                               "run-20261208T000000-cccccc")
    graph.execute(RUNS_EDGES, n=300, edges=3, runs=[
        {"id": earlier, "users": 20}, {"id": current, "users": 300}, {"id": later, "users": 5}])
    graph.execute("CALL db.awaitIndexes(60)")
    # Edges written before every writer gave them a run id: migration 0018 deletes them.
    graph.execute("MATCH (u:User {id: 'u0'}), (v:User {id: 'u9'}), (i:Item {id: 'i0'}), "
                  "(j:Item {id: 'i9'}) CREATE (u)-[:SIMILAR_TO {overlap: 1}]->(v), "
                  "(i)-[:SIMILAR_ITEM {score: 0.5}]->(j)")
    folder = Settings.model_fields["migrations_dir"].default
    for statement in split_statements(next(folder.glob("0018_*.cypher")).read_text()):
        graph.auto_commit(statement)  # type: ignore[arg-type]
    assert graph.rows(RUN_EDGE_COUNTS) == [
        {"type": t, "run": run, "edges": edges} for t in ("SIMILAR_ITEM", "SIMILAR_TO")
        for run, edges in ((earlier, 60), (current, 900), (later, 15))]

    # The statements the drop runs, profiled on the same edges: 75 of each type to delete,
    # 900 of the current run to keep.
    for name in ("DROP_SIMILAR_USERS_BELOW", "DROP_SIMILAR_USERS_ABOVE",
                 "DROP_ITEM_NEIGHBOURS_BELOW", "DROP_ITEM_NEIGHBOURS_ABOVE"):
        operators = " ".join(plan_operators(graph, getattr(q, name), run_id=current))
        assert "RelationshipIndexSeekByRange" in operators, (name, operators)
    hits = 0
    for query in (q.DROP_SIMILAR_USERS_BELOW, q.DROP_SIMILAR_USERS_ABOVE,
                  q.DROP_ITEM_NEIGHBOURS_BELOW, q.DROP_ITEM_NEIGHBOURS_ABOVE):
        hits += db_hits(graph, query, run_id=current)[0]
    assert hits <= 3 * 150 + 10, hits  # about 2 per edge deleted; a scan: 5 per edge read
    assert graph.rows(RUN_EDGE_COUNTS) == [
        {"type": t, "run": current, "edges": 900} for t in ("SIMILAR_ITEM", "SIMILAR_TO")]

    # The functions the run calls, on edges of three runs again, then once more.
    graph.execute("MATCH ()-[s:SIMILAR_TO|SIMILAR_ITEM]->() DELETE s")
    graph.execute("MATCH (n) DETACH DELETE n")
    graph.execute(RUNS_EDGES, n=300, edges=3, runs=[
        {"id": earlier, "users": 20}, {"id": current, "users": 300}, {"id": later, "users": 5}])
    assert drop_similar_users_except(graph, current) == 75
    assert drop_item_neighbours_except(graph, current) == 75
    assert drop_similar_users_except(graph, current) == 0
    assert drop_item_neighbours_except(graph, current) == 0
    assert graph.rows(RUN_EDGE_COUNTS) == [
        {"type": t, "run": current, "edges": 900} for t in ("SIMILAR_ITEM", "SIMILAR_TO")]
    assert graph.rows("MATCH ()-[s:SIMILAR_TO {run_id: $run}]->() RETURN sum(s.overlap) AS o",
                      run=current) == [{"o": 300 * 6}]
