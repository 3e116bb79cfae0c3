"""Two writers sending the same batch at the same moment (a client retrying after a timeout):
both succeed, the events are stored once, and the second sees duplicates."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import pytest

from graph.db import Graph
from graph.events import Event
from graph.ingest.writer import EventWriter, WriteResult
from graph.privacy import Pseudonymizer

pytestmark = pytest.mark.integration


def batch(round_: int, size: int = 200) -> list[Event]:
    at = datetime(2026, 3, 1, tzinfo=UTC)
    return [Event.model_validate({
        "event_id": f"r{round_}-e{i}", "type": "purchase", "source": "web",
        "occurred_at": (at + timedelta(minutes=i)).isoformat(),
        "user": {"email": f"shopper{round_}-{i % 40}@example.com"},
        "session_id": f"s{round_}-{i % 40}",
        "properties": {"item_id": f"item-{i % 25}", "category": "books", "price": "9.50"},
    }) for i in range(size)]


def send_twice_at_once(writer: EventWriter, events: list[Event]
                       ) -> tuple[list[WriteResult], list[BaseException]]:
    results: list[WriteResult] = []
    errors: list[BaseException] = []
    start = threading.Barrier(2)

    def send() -> None:
        start.wait()
        try:
            results.append(writer.write(events, source="http"))
        except BaseException as exc:  # noqa: BLE001 - the test reports it
            errors.append(exc)

    threads = [threading.Thread(target=send) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results, errors


def test_identical_batches_at_once_store_each_event_once(graph: Graph) -> None:
    writer = EventWriter(graph, Pseudonymizer("k"))
    for round_ in range(6):
        events = batch(round_)
        results, errors = send_twice_at_once(writer, events)
        assert errors == [], errors
        assert sum(r.written for r in results) == len(events)
        assert sum(r.duplicates for r in results) == len(events)
    stored = graph.rows("MATCH (i:Interaction) RETURN count(i) AS n, "
                        "count(DISTINCT i.event_id) AS ids")[0]
    assert stored == {"n": 6 * 200, "ids": 6 * 200}
    users = graph.rows("MATCH (:Identifier {kind: 'email'})-[:IDENTIFIES]->(u:User) "
                       "RETURN count(DISTINCT u) AS n")[0]["n"]
    assert users == 6 * 40
