"""Batches planned ahead of their transaction (``EventWriter.plan``), as the file import does
while the previous batch is being written: a plan builds on the batch in flight, and a plan the
graph changed under is worked out again inside the transaction."""

from __future__ import annotations

import gc
import json
import sys
from pathlib import Path
from typing import Any

import pytest

from graph.consistency import offsets_statement
from graph.db import Graph, wipe
from graph.events import Event
from graph.identity.merge import merge_users, unmerge
from graph.ingest.files import ingest_file
from graph.ingest.writer import EventWriter, Plan, WriteResult
from graph.privacy import Pseudonymizer
from tests.helpers import graph_counts

pytestmark = pytest.mark.integration


def event(event_id: str, minute: int, user: dict[str, str], **properties: Any) -> Event:
    return Event.model_validate({
        "event_id": event_id, "type": "page_view", "source": "web",
        "occurred_at": f"2026-11-02T09:{minute:02d}:00Z", "user": user,
        "session_id": f"s-{user.get('cookie') or user.get('crm_id')}",
        "properties": {"item_id": "sku-1", "category": "books", **properties},
    })


class RecordingWriter(EventWriter):
    """Records, for each batch written, whether it came planned and was written as planned."""

    def __init__(self, graph: Graph) -> None:
        super().__init__(graph, Pseudonymizer("k"))
        self.writes: list[tuple[bool, bool]] = []

    def write(self, events: Any, *, source: str = "file") -> WriteResult:
        result = super().write(events, source=source)
        self.writes.append((isinstance(events, Plan), result.as_planned))
        return result


def write_file(path: Path, events: list[Event]) -> Path:
    path.write_text("".join(e.model_dump_json() + "\n" for e in events))
    return path


def user_rows(graph: Graph) -> list[dict[str, Any]]:
    return graph.rows("MATCH (u:User) OPTIONAL MATCH (i:Identifier)-[:IDENTIFIES]->(u) "
                      "RETURN u.id AS id, u.events AS events, count(i) AS identifiers "
                      "ORDER BY id")


def test_a_plan_builds_on_the_batch_written_meanwhile(graph: Graph) -> None:
    writer = EventWriter(graph, Pseudonymizer("k"))
    jane = {"cookie": "ck-1"}
    first = writer.prepare([event("e1", 1, jane), event("e2", 2, jane)])
    # The same user again, now also by email, and e2 once more.
    second = writer.prepare([event("e2", 2, jane),
                             event("e3", 3, {"cookie": "ck-1", "email": "jane@example.com"})])

    first_plan = writer.plan(first)
    # Planned before the first batch is written: its read cannot see that batch.
    second_plan = writer.plan(second, after=first_plan)
    assert second_plan.existing == {"e2"}
    assert [u["id"] for u in second_plan.params["users"]] == \
        [u["id"] for u in first_plan.params["users"]]

    r1 = writer.write(first_plan)
    r2 = writer.write(second_plan)
    assert (r1.written, r1.duplicates, r1.as_planned) == (2, 0, True)
    assert (r2.written, r2.duplicates, r2.as_planned) == (1, 1, True)
    assert user_rows(graph) == [{"id": first_plan.params["users"][0]["id"], "events": 3,
                                 "identifiers": 2}]


def test_a_plan_runs_the_callers_statement_in_its_transaction(graph: Graph) -> None:
    """``then`` (the stream consumer's offsets) is written with a plan's events, and on its
    own when the plan has nothing to write."""
    writer = EventWriter(graph, Pseudonymizer("k"))

    def recorded() -> list[dict[str, Any]]:
        return graph.rows("MATCH (o:StreamOffset {group: 'g'}) RETURN o.next AS next")

    plan = writer.plan(writer.prepare([event("a1", 1, {"cookie": "ck-ann"})]))
    result = writer.write(plan, then=offsets_statement("g", {("t", 0): 5}))
    assert (result.written, result.as_planned, recorded()) == (1, True, [{"next": 5}])

    again = writer.plan(writer.prepare([event("a1", 1, {"cookie": "ck-ann"})]))
    assert again.fresh == ()
    result = writer.write(again, then=offsets_statement("g", {("t", 0): 6}))
    assert (result.written, result.duplicates, recorded()) == (0, 1, [{"next": 6}])


def test_a_plan_whose_events_another_writer_stored_is_worked_out_again(graph: Graph) -> None:
    writer = EventWriter(graph, Pseudonymizer("k"))
    jane = {"cookie": "ck-1"}
    plan = writer.plan(writer.prepare([event("e1", 1, jane), event("e2", 2, jane)]))
    # Another writer (the stream consumer, the API) stores e1 after the plan's read.
    assert writer.write([event("e1", 1, jane)]).written == 1

    result = writer.write(plan)
    assert (result.written, result.duplicates, result.as_planned) == (1, 1, False)
    assert result.stored == {"e1"}
    assert user_rows(graph)[0]["events"] == 2
    assert graph_counts(graph)["node:Interaction"] == 2


def test_a_plan_whose_user_was_merged_meanwhile_goes_to_the_survivor(graph: Graph) -> None:
    writer = EventWriter(graph, Pseudonymizer("k"))
    ann, bob = {"crm_id": "crm-ann"}, {"cookie": "ck-bob"}
    writer.write([event("a1", 1, ann), event("b1", 2, bob)])
    ids = {r["id"] for r in user_rows(graph)}
    plan = writer.plan(writer.prepare([event("b2", 3, bob)]))
    (bob_id,) = {u["id"] for u in plan.params["users"]}
    (ann_id,) = ids - {bob_id}
    merge_users(graph, ann_id, bob_id, source="test", reason="same person")

    result = writer.write(plan)
    assert (result.written, result.as_planned) == (1, False)
    assert result.user_ids == (ann_id,)
    # Bob's id is not brought back as a user of its own: his new event is Ann's.
    assert user_rows(graph) == [{"id": ann_id, "events": 3, "identifiers": 2}]


def test_a_plan_whose_identifier_was_unmerged_meanwhile_follows_it(graph: Graph) -> None:
    writer = EventWriter(graph, Pseudonymizer("k"))
    ann, bob = {"crm_id": "crm-ann"}, {"cookie": "ck-bob"}
    writer.write([event("a1", 1, ann), event("b1", 2, bob)])
    (ann_id,) = writer.plan(writer.prepare([event("a2", 2, ann)])).params["users"]
    (bob_id,) = {r["id"] for r in user_rows(graph)} - {ann_id["id"]}
    merge_id = merge_users(graph, ann_id["id"], bob_id, source="test", reason="same person?")
    plan = writer.plan(writer.prepare([event("b2", 3, bob)]))
    assert [u["id"] for u in plan.params["users"]] == [ann_id["id"]]
    unmerge(graph, merge_id)  # not the same person after all: ck-bob is Bob's again

    result = writer.write(plan)
    assert (result.written, result.as_planned, result.user_ids) == (1, False, (bob_id,))
    assert {r["id"]: r["events"] for r in user_rows(graph)} == {ann_id["id"]: 1, bob_id: 2}


def test_planning_resumes_after_a_batch_that_merged_users(graph: Graph, tmp_path: Path) -> None:
    """A batch that merges users cannot be built on; the batch after it is planned on its own,
    and the ones after that build on their predecessor again."""
    ann, bob = {"cookie": "ck-ann"}, {"cookie": "ck-bob", "email": "bob@example.com"}
    events = [event(f"a{n}", n, ann) for n in range(6)] + \
        [event(f"b{n}", 10 + n, bob) for n in range(4)] + \
        [event("both", 20, {"cookie": "ck-ann", "email": "bob@example.com"})] + \
        [event(f"c{n}", 30 + n, ann) for n in range(9)]
    writer = RecordingWriter(graph)
    summary = ingest_file(writer, write_file(tmp_path / "events.jsonl", events), batch_size=4,
                          max_line_bytes=100_000)

    assert (summary.written, summary.duplicates) == (20, 0)
    # Batch 3 (b2, b3, both, c0) merges Ann and Bob; every batch still comes planned.
    assert writer.writes == [(True, True), (True, True), (True, False), (True, True),
                             (True, True)]
    assert [r["events"] for r in user_rows(graph)] == [20]


def test_small_batches_load_like_one(graph: Graph, tmp_path: Path) -> None:
    """Many planned batches, users spread over several of them and an event repeated in the
    next batch, give the graph one batch gives, every batch written as planned."""
    lines = []
    for n in range(60):
        user = {"cookie": f"ck-{n // 7}"} if n % 3 else {"cookie": f"ck-{n // 7}",
                                                         "email": f"u{n // 7}@example.com"}
        lines.append(event(f"e{n}", n % 60, user, price="2.50").model_dump_json())
        if n % 10 == 4:
            lines.append(lines[-1])
    path = tmp_path / "events.jsonl"
    path.write_text("\n".join(lines) + "\n")
    runtime = (sys.getswitchinterval(), gc.get_threshold())

    def load(batch_size: int) -> tuple[Any, ...]:
        wipe(graph)
        writer = RecordingWriter(graph)
        summary = ingest_file(writer, path, batch_size=batch_size, max_line_bytes=100_000)
        assert writer.writes == [(True, True)] * len(writer.writes)
        prefs = graph.rows("MATCH (u:User)-[p:PREFERS]->(c) RETURN u.id AS u, c.name AS c, "
                           "round(p.score, 9) AS s, round(p.weight, 9) AS w ORDER BY u, c")
        interacted = graph.rows("MATCH (u:User)-[r:INTERACTED]->(i) RETURN u.id AS u, "
                                "r.views AS v, r.spend AS s ORDER BY u")
        return (summary.written, summary.duplicates, graph_counts(graph), user_rows(graph),
                json.dumps(prefs, default=str), interacted)

    one = load(1000)
    assert one[:2] == (60, 6)
    assert load(4) == one
    assert (sys.getswitchinterval(), gc.get_threshold()) == runtime
