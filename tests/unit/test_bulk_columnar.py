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
    # An id holding an email address (the base's category has spaces to strip, which sends a
    # record to the model whatever else it holds: "books" does not).
    {"event_id": "jane.doe@example.com", "properties": {"category": "books"}},
    {"session_id": "s@1", "properties": {"category": "books"}},
    {"properties": {"item_id": "sku-1 for jane@example.org", "category": "books"}},
    {"profile": {"location": {"id": "x", "city": "a@b.de"}}, "properties": {"category": "books"}},
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


# Values of every JSON type, valid and subtly not, for any field at any level.
TEXTS = st.one_of(
    st.sampled_from(["web", "a", " padded", "tail ", "", "x" * 201, "\u00e9t\u00e9", "\u200b",
                     "ck-\U0001f600", "a\tb", "\x1f", "mobile", "Books", "DE", "de", "en-GB",
                     "25-34", "female", "1", "12.5", "-1", "1e3", "null", "NaN"]),
    st.text(max_size=5))
TIMES = st.sampled_from([
    "2026-11-02T10:00:00Z", "2026-11-02T10:00:00.123456+01:00", "0001-01-01T00:00:00Z",
    "9999-12-31T23:59:59Z", "1969-12-31T23:59:59.999Z", "1970-01-01T00:00:00Z",
    "2026-11-02T10:00:00.1234567Z", "2026-13-01T00:00:00Z", "2026-11-02T24:00:00Z",
    "2026-11-02T10:00:00+24:00", "2026-11-02t10:00:00z", "2026-11-02T10:00Z",
    "2126-01-01T00:00:00Z", "\u0662\u0660\u0662\u0666-11-02T10:00:00Z"])
NUMBERS = st.one_of(st.integers(-3, 10_002), st.sampled_from([2**63 - 1, 2**64 - 1, -(2**63)]),
                    st.floats(-1e3, 1e5), st.sampled_from([0.0, -0.0, 1.0, 4.0, 1e300, 5e-324]))
RAW_NUMBERS = st.sampled_from(["NaN", "Infinity", "-Infinity", "1E2", "1e-2", "-0", "1.0",
                               "18446744073709551616", "00", "1."])
"""Number literals as text: some not JSON at all (orjson and the model refuse them)."""
VALUES = st.one_of(TEXTS, NUMBERS, st.booleans(), st.none(), st.just({}), st.just([]),
                   st.just({"id": "x"}), st.just(["a"]))
FIELD_VALUES: dict[str, Any] = {
    "occurred_at": st.one_of(TIMES, VALUES), "price": st.one_of(
        st.decimals(0, 10**12, places=2).map(str), st.sampled_from(["1.005", "01.50", "1e2"]),
        NUMBERS, VALUES),
    "amount": st.one_of(st.decimals(0, 10**12, places=2).map(str), NUMBERS, VALUES),
    "quantity": st.one_of(NUMBERS, VALUES), "rating": st.one_of(st.integers(0, 6), VALUES),
    "discount": st.one_of(st.floats(-0.1, 1.1), VALUES), "lat": st.one_of(NUMBERS, VALUES),
    "duration_s": st.one_of(NUMBERS, VALUES),
}
LEVELS = {  # where each key lives in ``base``, and keys that belong elsewhere or nowhere
    "top": ["event_id", "type", "source", "occurred_at", "session_id", "schema_version",
            "price", "extra", "id"],
    "user": ["cookie", "email", "phone", "crm_id", "fax", "event_id"],
    "device": ["id", "kind", "city", "extra"],
    "profile": ["age_band", "gender", "locale", "demo_group", "location", "city", "attributes"],
    "location": ["id", "city", "country", "lat", "lon", "price", "kind"],
    "properties": ["item_id", "item_name", "category", "brand", "price", "amount", "quantity",
                   "discount", "order_id", "query", "text", "intent", "rating", "duration_s",
                   "channel", "source", "extra"],
}
CHANGE = st.tuples(st.sampled_from(sorted(LEVELS)), st.data())


def _target(record: dict[str, Any], level: str) -> dict[str, Any] | None:
    if level == "top":
        return record
    if level == "location":
        profile = record.get("profile")
        part = profile.get("location") if isinstance(profile, dict) else None
    else:
        part = record.get(level)
    return part if isinstance(part, dict) else None


@st.composite
def records(draw: st.DrawFn, i: int) -> str:
    """A record as text: ``base(i)`` with a few fields changed, removed or added anywhere, and
    the text itself now and then bent (a key given twice, a number literal, spacing)."""
    record = base(i)
    record["type"] = draw(st.sampled_from(["purchase", "page_view", "search", "feedback",
                                           "add_to_cart", "chat_message"]))
    for level, data in draw(st.lists(CHANGE, max_size=3)):
        target = _target(record, level)
        if target is None:
            continue
        key = data.draw(st.sampled_from(LEVELS[level]))
        if data.draw(st.integers(0, 4)) == 0:
            target.pop(key, None)
        else:
            target[key] = data.draw(FIELD_VALUES.get(key, VALUES))
    text = json.dumps(record, allow_nan=True, separators=draw(st.sampled_from(
        [(",", ":"), (", ", ": ")])), ensure_ascii=draw(st.booleans()))
    bend = draw(st.integers(0, 5))
    if bend == 1:  # a key twice: the last one counts (orjson, as the model reads it)
        text = text[:-1] + ', "event_id": ' + json.dumps(draw(TEXTS)) + "}"
    elif bend == 2 and '"quantity": 3' in text.replace('"quantity":3', '"quantity": 3'):
        text = text.replace('"quantity":3', '"quantity": 3').replace(
            '"quantity": 3', '"quantity": ' + draw(RAW_NUMBERS))
    elif bend == 3:
        text = text.replace('"price"', '"\\u0070rice"', 1)  # an escaped key
    return text


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_any_record_is_staged_as_the_event_model_stages_it(tmp_path_factory: Any,
                                                          data: st.DataObject) -> None:
    """The columnar path's equivalence with the per-event path, on records of every kind: the
    same events, profiles, locations, and rejects with the same reasons."""
    lines = [data.draw(records(i)) for i in range(6)]
    fast, slow = stage_both(tmp_path_factory.mktemp("h"), lines)
    assert_same(fast, slow)


def test_each_guarded_key_names_one_kind_of_value() -> None:
    """``MISTYPED`` tells a value's type by its key's name at any level: each name it checks
    must be read as one type wherever it appears, and never name a container or an
    identifier kind (whose values ``_shape_ok`` checks)."""
    kinds = [columnar.STR_KEYS, columnar.INT_KEYS, columnar.NUMBER_KEYS, columnar.MONEY_KEYS]
    names = [name for kind in kinds for name in set(kind)]
    assert len(names) == len(set(names))
    containers = {"user", "device", "profile", "location", "properties", "attributes"}
    assert not set(names) & (columnar.KINDS | containers)
    every = (columnar.EVENT_KEYS | columnar.PROPERTY_KEYS | columnar.DEVICE_KEYS
             | columnar.PROFILE_KEYS | columnar.LOCATION_KEYS) - containers
    assert set(names) == every


BLANK_VALUES = [{"event_id": "\u200b"}, {"user": {"cookie": "\u2060\u200b"}},
                {"device": {"id": "\ufeff"}}, {"session_id": "\u3164"},
                {"properties": {"item_id": "\u00a0\u200d", "price": "1"}},
                {"properties": {"category": "\u202e", "price": "1"}}]


def test_values_that_show_nothing_are_dead_letters_on_both_paths(tmp_path: Path) -> None:
    """Ids, identifiers and categories made only of invisible characters had been staged as
    given on both paths; now both dead-letter them, saying why."""
    lines = [json.dumps(merged(change, i)) for i, change in enumerate(BLANK_VALUES)]
    fast, slow = stage_both(tmp_path, lines)
    assert_same(fast, slow)
    assert fast.events.height == 0
    reasons = fast.dead_letters["reason"].to_list()
    assert len(reasons) == len(BLANK_VALUES)
    assert all("invisible characters" in reason for reason in reasons), reasons


def test_a_record_repeating_a_key_is_refused_on_both_paths(tmp_path: Path) -> None:
    """A key named twice in one record (at the top, or inside `user` or `properties`): left by
    the fast path to the per-event path, which dead-letters it naming the key, as the stream
    and the file import do; the records around it are staged as before."""
    good = [json.dumps(base(i)) for i in range(4)]
    twice = [json.dumps(base(10))[:-1] + ', "event_id": "e-other"}',
             json.dumps(base(11)).replace('"user": {', '"user": {"cookie": "ck-x", ', 1),
             json.dumps(base(12)).replace('"properties": {', '"properties": {"price": 1, ', 1)]
    lines = good[:2] + twice + good[2:]
    fast, slow = stage_both(tmp_path, lines)
    assert_same(fast, slow)
    reasons = fast.dead_letters["reason"].to_list()
    assert len(reasons) == 3 and all("repeated in one object" in r for r in reasons), reasons
    raw, left = columnar.flatten([(n, line.encode()) for n, line in enumerate(lines, 1)], 1 << 16)
    assert raw["line"].to_list() == [1, 2, 6, 7] and [n for n, _ in left] == [3, 4, 5]
