"""The bulk import's columnar fast path against the per-event path it stands in for: the same
file staged both ways gives the same events, profiles, locations and dead letters, whatever the
records (valid, invalid, or valid in a form the fast path leaves to the event model)."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import polars as pl
from hypothesis import given, settings
from hypothesis import strategies as st

from graph.ingest import bulk, columnar
from graph.privacy import Pseudonymizer

PSEUDONYMIZER = Pseudonymizer("k")


def base(i: int) -> dict[str, Any]:
    return {"event_id": f"e-{i}", "type": "purchase", "occurred_at": "2026-11-02T10:00:00.123456Z",
            "source": "web", "session_id": f"s-{i % 3}",
            "user": {"cookie": f"ck-{i % 5}", "email": f"U{i % 4}@Example.com"},
            "device": {"id": f"dev-{i % 2}", "kind": "mobile"},
            "profile": {"age_band": "25-34", "gender": "female", "locale": "en-GB",
                        "location": {"id": "ber", "city": "Berlin", "country": "de",
                                     "lat": 52.5, "lon": 13}},
            "properties": {"item_id": "it-1", "item_name": "Kettle", "category": " Home  Kitchen",
                           "brand": "acme", "price": "19.99", "quantity": 3,
                           "order_id": "o-1"}}


# Each: a change to a valid record, valid or not; the per-event path is the judge.
VARIANTS: list[dict[str, Any]] = [
    {}, {"occurred_at": "2026-11-02T10:00:00+05:30"}, {"occurred_at": "2026-11-02T10:00:00Z"},
    {"occurred_at": "2026-11-02 10:00:00Z"}, {"occurred_at": "2026-11-02T10:00:00"},
    {"occurred_at": "2026-02-30T10:00:00Z"}, {"occurred_at": "1969-12-31T23:59:59Z"},
    {"occurred_at": "2999-01-01T00:00:00Z"}, {"occurred_at": 1764000000},
    {"event_id": " padded "}, {"event_id": ""}, {"event_id": "x" * 201}, {"event_id": 7},
    {"type": "teleport"}, {"source": None}, {"schema_version": 2}, {"schema_version": 1},
    {"unknown": 1}, {"user": {}}, {"user": {"cookie": 5}}, {"user": {"fax": "1"}},
    {"user": {"phone": "+44 20 7946 0958"}}, {"device": {}}, {"device": {"id": "d", "x": 1}},
    {"device": {"id": "d", "kind": "fridge"}}, {"device": None}, {"profile": None},
    {"profile": {}}, {"profile": {"attributes": {"occupation": "baker"}}},
    {"profile": {"age_band": "30"}}, {"profile": {"locale": "english"}},
    {"profile": {"location": {"id": "x", "country": "DEU"}}},
    {"profile": {"location": {"id": "x", "lat": 91}}}, {"profile": {"location": {}}},
    {"properties": {"item_id": "i", "price": "12.345"}},
    {"properties": {"item_id": "i", "price": 12.5}}, {"properties": {"item_id": "i", "price": 12}},
    {"properties": {"item_id": "i", "price": "-1"}}, {"properties": {"item_id": "i"}},
    {"properties": {"item_id": "i", "amount": "10.00"}},
    {"properties": {"item_id": "i", "price": "3.30", "quantity": 7, "discount": 0.1}},
    {"properties": {"item_id": "i", "price": "1", "quantity": 0}},
    {"properties": {"item_id": "i", "price": "1", "quantity": True}},
    {"properties": {"item_id": "i", "price": "1", "discount": None}},
    {"properties": {"item_id": "i", "price": "1", "unknown": 1}}, {"properties": None},
    {"type": "search", "properties": {"query": "call me on +44 20 7946 0958 "}},
    {"type": "search", "properties": {"query": "mail a@b.com", "category": "Books"}},
    {"type": "search", "properties": {}}, {"type": "chat_message", "properties": {"text": "hi"}},
    {"type": "feedback", "properties": {"rating": 5, "category": "toys"}},
    {"type": "feedback", "properties": {"rating": 6}},
    {"type": "feedback", "properties": {"rating": 4.0}},
    {"type": "page_view", "properties": {"duration_s": 12, "channel": "app"}},
    {"type": "page_view", "properties": {"duration_s": -1}},
    {"type": "page_view", "properties": {"item_name": " Kettle"}},
]


def stage_both(tmp_path: Path, lines: list[str]) -> tuple[bulk.StagedFile, bulk.StagedFile]:
    path = tmp_path / "h.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return tuple(bulk.stage_file(0, path, PSEUDONYMIZER, 1 << 16,  # type: ignore[return-value]
                                 tmp_path / f"dl-{fast}.jsonl", fast=fast)
                 for fast in (True, False))


def assert_same(fast: bulk.StagedFile, slow: bulk.StagedFile) -> None:
    assert (fast.records, fast.parsed) == (slow.records, slow.parsed)
    for name in ("events", "locations"):
        a, b = (getattr(s, name).sort("line", maintain_order=True) for s in (fast, slow))
        assert a.to_dicts() == b.to_dicts(), name
    a, b = (s.profiles.sort(["line", "key"]) for s in (fast, slow))
    assert a.to_dicts() == b.to_dicts()
    assert fast.dead_letters.drop("at", "id").to_dicts() == \
        slow.dead_letters.drop("at", "id").to_dicts()


def merged(change: dict[str, Any], i: int) -> dict[str, Any]:
    record = base(i)
    for key, value in change.items():
        if isinstance(value, dict) and isinstance(record.get(key), dict) and value:
            record[key] = {**record[key], **value}
        else:
            record[key] = value
    return record


def test_each_kind_of_record_is_staged_as_the_event_model_stages_it(tmp_path: Path) -> None:
    lines = [json.dumps(merged(change, i)) for i, change in enumerate(VARIANTS)]
    lines += ["", "{not json", json.dumps(["a list"]), "   "]
    fast, slow = stage_both(tmp_path, lines)
    assert_same(fast, slow)
    assert 0 < fast.dead_letters.height < len(lines)
    # Most of the valid variants took the fast path.
    raw, left = columnar.flatten([(n, line.encode()) for n, line in enumerate(lines, 1)], 1 << 16)
    assert raw.height > len(VARIANTS) // 2 and left


FIELDS = st.sampled_from([
    ("occurred_at", st.sampled_from(["2026-11-02T10:00:00Z", "2026-11-02T10:00:00.000001+01:00",
                                     "2026-11-02T23:59:59.999Z", "2026-11-02T10:00:00"])),
    ("price", st.one_of(st.decimals(min_value=0, max_value=10**13, places=2).map(str),
                        st.integers(-5, 10**13), st.floats(0, 1e6))),
    ("quantity", st.integers(-1, 10_001)), ("discount", st.floats(-0.5, 1.5)),
    ("category", st.text(max_size=6)), ("item_id", st.text(max_size=4)),
])


@settings(max_examples=12, deadline=None)
@given(st.lists(st.tuples(FIELDS, st.data()), max_size=4), st.randoms())
def test_generated_records_are_staged_alike(tmp_path_factory: Any, changes: list[Any],
                                           rng: random.Random) -> None:
    lines = []
    for i in range(8):
        record = base(i)
        for (name, strategy), data in changes:
            target = record if name == "occurred_at" else record["properties"]
            if rng.random() < 0.7:
                target[name] = data.draw(strategy)
        lines.append(json.dumps(record))
    fast, slow = stage_both(tmp_path_factory.mktemp("h"), lines)
    assert_same(fast, slow)


def test_a_large_file_is_staged_in_blocks(tmp_path: Path, monkeypatch: Any) -> None:
    monkeypatch.setattr(bulk, "LINE_BLOCK", 7)
    lines = [json.dumps(merged(VARIANTS[i % len(VARIANTS)], i)) for i in range(60)]
    fast, slow = stage_both(tmp_path, lines)
    assert_same(fast, slow)
    assert isinstance(fast.events, pl.DataFrame) and fast.events.height > 20
