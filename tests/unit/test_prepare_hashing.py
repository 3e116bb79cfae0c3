"""``EventWriter.prepare`` hashes a user's identifiers once a batch, in authority order."""

from __future__ import annotations

from typing import Any

from graph.events import Event
from graph.ingest.writer import EventWriter
from graph.privacy import Pseudonymizer


class CountingPseudonymizer(Pseudonymizer):
    def __init__(self) -> None:
        super().__init__("test-key")
        self.calls = 0

    def digest(self, kind: str, value: str) -> str:
        self.calls += 1
        return super().digest(kind, value)


def event(n: int, user: dict[str, str], **kw: Any) -> Event:
    return Event.model_validate({"event_id": f"e{n}", "type": "page_view",
                                 "occurred_at": "2026-11-01T12:00:00Z", "user": user, **kw})


def test_each_users_identifiers_hashed_once_a_batch() -> None:
    pseudonymizer = CountingPseudonymizer()
    writer = EventWriter(None, pseudonymizer)  # type: ignore[arg-type]  # prepare reads no graph
    alice = {"cookie": "ck-a", "email": "a@example.com", "crm_id": "crm-a"}
    events = [event(n, alice) for n in range(10)] + [event(10, {"cookie": "ck-b"})]
    prepared = writer.prepare(events)
    assert pseudonymizer.calls == 4  # three of alice's, one of bob's; not one per event
    plain = Pseudonymizer("test-key")
    expected = [(kind, plain.digest(kind, value))
                for kind, value in (("crm_id", "crm-a"), ("email", "a@example.com"),
                                    ("cookie", "ck-a"))]
    assert all(prepared.hashed[f"e{n}"] == expected for n in range(10))
    assert prepared.hashed["e10"] == [("cookie", plain.digest("cookie", "ck-b"))]


def test_same_identifiers_in_another_order_hash_alike() -> None:
    writer = EventWriter(None, Pseudonymizer("test-key"))  # type: ignore[arg-type]
    one = event(1, {"cookie": "c", "email": "x@example.com"})
    two = event(2, {"email": "x@example.com", "cookie": "c"})
    prepared = writer.prepare([one, two])
    assert prepared.hashed["e1"] == prepared.hashed["e2"]
    assert [kind for kind, _ in prepared.hashed["e2"]] == ["email", "cookie"]


def test_duplicate_event_ids_keep_the_first() -> None:
    writer = EventWriter(None, Pseudonymizer("test-key"))  # type: ignore[arg-type]
    first = event(1, {"cookie": "c"})
    again = event(1, {"cookie": "d"})
    prepared = writer.prepare([first, again])
    assert prepared.size == 2 and prepared.events == {"e1": first}
    assert prepared.hashed["e1"] == [("cookie", Pseudonymizer("test-key").digest("cookie", "c"))]
