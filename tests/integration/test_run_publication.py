"""A segmentation run is written in bounded transactions yet seen whole or not at all."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from graph import situation
from graph.db import DriverReader, Graph, create_async_driver
from graph.features.table import features_of_users
from graph.ingest.files import ingest_file
from graph.ingest.writer import EventWriter
from graph.privacy import Pseudonymizer
from graph.profile import personas
from graph.profile import queries as pq
from graph.recommend.engine import recommend
from graph.segments import publish
from graph.segments.run import run_segmentation
from graph.settings import Settings
from tests.helpers import load_demo

pytestmark = pytest.mark.integration

# What readers see of runs: the latest published run, a user's persona (as the API reads it),
# and anything a pending or failed run left behind.
LATEST = "MATCH (r:SegmentationRun) RETURN r.id AS id ORDER BY r.created_at DESC LIMIT 1"
PERSONA = """
MATCH (:User {id: $user})-[m:IN_SEGMENT]->(s:Segment)
WITH m, s ORDER BY m.assigned_at DESC LIMIT 1
MATCH (s)-[:EMBODIES]->(p:Persona)
RETURN s.run_id AS run_id, p.id AS persona
"""
LEFTOVERS = """
RETURN COUNT { (:PendingRun) } AS pending, COUNT { (:PendingSegment) } AS segments,
       COUNT { ()-[:IN_SEGMENT {run_id: $run}]->() } AS memberships,
       COUNT { ()-[:SIMILAR_TO {run_id: $run}]->() }
       + COUNT { ()-[:SIMILAR_ITEM {run_id: $run}]->() } AS similar,
       COUNT { (:Segment {run_id: $run}) } AS published_segments
"""


def _seen(graph: Graph, user: str) -> dict[str, Any]:
    return {"latest": graph.rows(LATEST)[0]["id"], "persona": graph.rows(PERSONA, user=user)[0]}


def test_a_run_is_invisible_until_published(graph: Graph, tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    load_demo(graph, tmp_path, users=200, seed=3)
    first = run_segmentation(graph)
    user = first.user_ids[0]
    before = _seen(graph, user)
    seen_while_writing: list[dict[str, Any]] = []
    original = publish.PendingRun.publish

    def look_then_publish(self: publish.PendingRun, personas: Any) -> None:
        # Memberships, favourites and similar users of the new run are all written by now.
        seen_while_writing.append(_seen(graph, user))
        counts = graph.rows(LEFTOVERS, run=self.run_id)[0]
        assert counts["memberships"] == 200 and counts["published_segments"] == 0
        original(self, personas)

    monkeypatch.setattr(publish.PendingRun, "publish", look_then_publish)
    second = run_segmentation(graph)
    assert seen_while_writing == [before]
    assert before["latest"] == first.run_id
    after = _seen(graph, user)
    assert after["latest"] == second.run_id and after["persona"]["run_id"] == second.run_id
    counts = graph.rows(LEFTOVERS, run=second.run_id)[0]
    assert counts["pending"] == 0 and counts["segments"] == 0
    # Only the published run's similar users remain.
    for kind in ("SIMILAR_TO", "SIMILAR_ITEM"):
        runs = graph.rows("MATCH ()-[s]->() WHERE type(s) = $kind "
                          "RETURN collect(DISTINCT s.run_id) AS runs", kind=kind)
        assert runs[0]["runs"] == [second.run_id], kind
    history = graph.rows("MATCH (r:SegmentationRun {id: $run}) "
                         "RETURN r.history_pending AS pending, r.status AS status",
                         run=second.run_id)[0]
    assert history == {"pending": None, "status": "complete"}


def test_a_failed_run_is_removed_and_recorded(graph: Graph, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    load_demo(graph, tmp_path, users=150, seed=4)
    first = run_segmentation(graph)
    similar_before = graph.rows("MATCH ()-[s:SIMILAR_TO]->() RETURN count(s) AS n")[0]["n"]

    def fail(self: publish.PendingRun, *_: Any) -> None:
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(publish.PendingRun, "favourites", fail)
    with pytest.raises(RuntimeError, match="disk on fire"):
        run_segmentation(graph)
    failed = graph.rows("MATCH (r:FailedRun) RETURN r.id AS id, r.error AS error, "
                        "r.status AS status")
    assert len(failed) == 1 and failed[0]["status"] == "failed"
    assert failed[0]["error"] == "RuntimeError: disk on fire"
    counts = graph.rows(LEFTOVERS, run=failed[0]["id"])[0]
    assert counts == {"pending": 0, "segments": 0, "memberships": 0, "similar": 0,
                      "published_segments": 0}
    # The previous run is untouched and still the one everybody reads.
    assert graph.rows(LATEST)[0]["id"] == first.run_id
    assert graph.rows("MATCH ()-[s:SIMILAR_TO]->() RETURN count(s) AS n")[0]["n"] \
        == similar_before
    assert graph.rows(PERSONA, user=first.user_ids[0])[0]["run_id"] == first.run_id


def test_an_abandoned_run_is_swept_before_the_next(graph: Graph, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """A writer that died mid-run (here: fails, and cannot clean up either, as when Neo4j is
    restarted under it) leaves a pending run; the next run takes it apart."""
    load_demo(graph, tmp_path, users=120, seed=6)

    def die(self: publish.PendingRun, *_: Any) -> None:
        raise ConnectionError("server went away")

    monkeypatch.setattr(publish.PendingRun, "favourites", die)
    monkeypatch.setattr(publish.PendingRun, "discard", die)
    with pytest.raises(ConnectionError):
        run_segmentation(graph)
    stuck = graph.rows("MATCH (r:PendingRun) RETURN r.id AS id")
    assert len(stuck) == 1
    assert graph.rows(LEFTOVERS, run=stuck[0]["id"])[0]["memberships"] == 120
    assert graph.rows(LATEST) == []  # still nothing published
    monkeypatch.undo()

    # A sweep leaves a pending run whose writer was heard from recently alone...
    assert publish.sweep(graph, timedelta(minutes=10)).discarded == []
    # ...and the next run takes apart one silent for longer than allowed.
    result = run_segmentation(graph, abandoned_after=timedelta(0))
    assert graph.rows(LEFTOVERS, run=stuck[0]["id"])[0] == {
        "pending": 0, "segments": 0, "memberships": 0, "similar": 0, "published_segments": 0}
    failed = graph.rows("MATCH (r:FailedRun) RETURN r.id AS id, r.error AS error")
    assert [f["id"] for f in failed] == [stuck[0]["id"]]
    assert failed[0]["error"].startswith("abandoned")
    assert graph.rows(LATEST)[0]["id"] == result.run_id


def test_history_left_unfinished_is_completed_by_the_next_sweep(
        graph: Graph, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    load_demo(graph, tmp_path, users=100, seed=8)

    def die(self: publish.PendingRun, at: str) -> None:
        raise ConnectionError("gone after publishing")

    monkeypatch.setattr(publish.PendingRun, "write_history", die)
    with pytest.raises(ConnectionError):
        run_segmentation(graph)
    run = graph.rows("MATCH (r:SegmentationRun) RETURN r.id AS id, r.history_pending AS p")
    assert len(run) == 1 and run[0]["p"] is True
    assert graph.rows("MATCH ()-[h:HAD_PERSONA]->() RETURN count(h) AS n")[0]["n"] == 0
    monkeypatch.undo()
    assert publish.sweep(graph, timedelta(minutes=10)).histories_finished == [run[0]["id"]]
    rows = graph.rows("MATCH (u:User)-[h:HAD_PERSONA {run_id: $run}]->(p:Persona) "
                      "WHERE h.valid_to IS NULL RETURN count(DISTINCT u) AS users",
                      run=run[0]["id"])
    assert rows[0]["users"] == 100
    # Finishing twice changes nothing.
    publish.write_history(graph, run[0]["id"], datetime.now(UTC).isoformat())
    again = graph.rows("MATCH ()-[h:HAD_PERSONA]->() RETURN count(h) AS n")[0]["n"]
    assert again == 100


def _one_item_population(path: Path, users: int) -> int:
    """Every user bought the main item of the catalogue, once or a few times; every tenth
    also a second item, every hundredth a third. Returns the number of events."""
    start = datetime(2026, 1, 1, tzinfo=UTC)
    events = 0
    with path.open("w") as out:
        for u in range(users):
            items = ["the-only-item"] * (1 + u % 3)
            items += ["second-item"] if u % 10 == 0 else []
            items += ["third-item"] if u % 100 == 1 else []
            for n, item in enumerate(items):
                at = start + timedelta(days=(u * 7 + n * 31) % 300, minutes=u % 600)
                out.write(json.dumps({
                    "event_id": f"e-{u}-{n}", "type": "purchase", "source": "pos",
                    "occurred_at": at.isoformat(), "user": {"crm_id": f"c{u}"},
                    "profile": {"location": {"id": "the-town", "city": "Springfield"}},
                    "properties": {"item_id": item, "category": "music",
                                   "price": "11.99", "quantity": 1 + n % 2},
                }) + "\n")
                events += 1
    return events


START = datetime(2026, 1, 1, tzinfo=UTC)


def _hourly_weather(days: int) -> list[dict[str, Any]]:
    """A year of hourly observations in the one town: rain every third day."""
    return [{"id": f"w-{h}", "location_id": "the-town",
             "at": (START + timedelta(hours=h)).isoformat(),
             "temp_c": 15.0, "condition": "rain" if (h // 24) % 3 == 0 else "clear"}
            for h in range(days * 24)]


def test_thirty_thousand_users_of_one_item_segment_and_get_recommendations(
        graph: Graph, tmp_path: Path) -> None:
    """The shape that exhausted the transaction memory: one shared item, every user its
    buyer, and one shared town with a year of hourly weather. Memberships, favourites and
    similar users stay within the test server's default transaction memory (70% of its 1 GiB
    heap), and the traversals stay bounded: no user's features expand the town's weather."""
    path = tmp_path / "one-item.jsonl"
    events = _one_item_population(path, 30_000)
    summary = ingest_file(EventWriter(graph, Pseudonymizer("k")), path, batch_size=5000,
                          max_line_bytes=10_000)
    assert summary.rejected == 0 and summary.written == events
    situation.upsert_weather(graph, _hourly_weather(330))
    result = run_segmentation(graph)
    assert result.n_users == 30_000
    counts = graph.rows("MATCH (r:SegmentationRun {id: $run}) RETURN r.n_users AS n, "
                        "COUNT { ()-[:IN_SEGMENT {run_id: $run}]->() } AS members",
                        run=result.run_id)[0]
    assert counts == {"n": 30_000, "members": 30_000}
    buyer_of_one = next(u for u in result.user_ids
                        if graph.rows("MATCH (:User {id: $u})-[:INTERACTED]->(it:Item) "
                                      "RETURN count(it) AS n", u=u)[0]["n"] == 1)
    recs = recommend(graph, buyer_of_one, first=5)
    assert {r.item_id for r in recs} == {"second-item", "third-item"}
    # The weather feature is exact: user c5's purchases were on days 35, 66 and 97 of the
    # year, one of them rainy (66, a multiple of 3).
    user = graph.rows("MATCH (:Identifier {kind: 'crm_id', hash: $h})-[:IDENTIFIES]->(u) "
                      "RETURN u.id AS id", h=Pseudonymizer("k").digest("crm_id", "c5"))[0]["id"]
    share = features_of_users(graph, [user], ["bad_weather_share"]).X[0, 0]
    assert share == pytest.approx(1 / 3)


def test_persona_tops_are_written_with_the_run(graph: Graph, settings: Settings,
                                               tmp_path: Path) -> None:
    """A persona card's top categories and items are the segment's as of its run, read in one
    bounded query instead of aggregated over the whole segment per request; a run written
    before runs carried them is still answered, by aggregating."""
    load_demo(graph, tmp_path, users=150, seed=5)
    run = run_segmentation(graph)
    leaves = [r["id"] for r in graph.rows(
        "MATCH (s:Segment {run_id: $run, level: 0}) RETURN s.id AS id ORDER BY id",
        run=run.run_id)]

    async def read(segment: str) -> tuple[list[Any], list[Any]]:
        driver = create_async_driver(settings)
        try:
            reader = DriverReader(driver, settings.neo4j_database)
            return (await personas.top_categories(reader, segment, 7),
                    await personas.top_items(reader, segment, 7))
        finally:
            await driver.close()

    def live(segment: str) -> tuple[list[Any], list[Any]]:
        sample = personas.LIVE_TOPS_SAMPLE
        return (graph.rows(pq.LIVE_PERSONA_TOP_CATEGORIES, segment_id=segment, first=7,
                           sample=sample),
                graph.rows(pq.LIVE_PERSONA_TOP_ITEMS, segment_id=segment, first=7,
                           sample=sample, per_member=personas.LIVE_TOPS_ITEMS_PER_MEMBER))

    at_run = {s: live(s) for s in leaves}
    for segment in leaves:
        categories, items = asyncio.run(read(segment))
        assert categories and items, segment
        assert [(c.category, c.weight) for c in categories] == [
            (r["category"], pytest.approx(r["weight"])) for r in at_run[segment][0]]
        assert [(i.id, i.purchases, i.users) for i in items] == [
            (r["id"], r["purchases"], r["users"]) for r in at_run[segment][1]]
    # New purchases by a segment's members change the live aggregate, not the run's card.
    segment = leaves[0]
    members = [r["id"] for r in graph.rows(
        "MATCH (u:User)-[:IN_SEGMENT]->(:Segment {id: $s}) RETURN u.id AS id", s=segment)]
    graph.execute("""
        UNWIND $ids AS id MATCH (u:User {id: id})
        MERGE (it:Item {id: 'tops-new-item'})
        MERGE (u)-[r:INTERACTED]->(it)
        SET r.user_id = u.id, r.purchases = 1000, r.last_at = datetime(),
            r.bought_or_liked = true""", ids=members)
    assert live(segment)[1][0]["id"] == "tops-new-item"
    assert asyncio.run(read(segment))[1][0].id == at_run[segment][1][0]["id"]
    # A run from before tops were written: aggregated at read time.
    graph.execute("MATCH (s:Segment {id: $s}) REMOVE s.tops_written "
                  "WITH s MATCH (s)-[t:TOP_ITEM|TOP_CATEGORY]->() DELETE t", s=segment)
    assert asyncio.run(read(segment))[1][0].id == "tops-new-item"
