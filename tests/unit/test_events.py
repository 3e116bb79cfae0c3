from __future__ import annotations

import json
import unicodedata
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from graph.events import Event, normalize_category
from graph.ingest.reader import InvalidJson, csv_row_to_envelope, load_json
from graph.privacy import blank


def base(**kw):
    e = {"event_id": "e1", "type": "page_view", "occurred_at": "2026-11-01T12:00:00+02:00",
         "user": {"cookie": "c"}}
    e.update(kw)
    return e


def test_timestamps_become_utc() -> None:
    assert Event.model_validate(base()).occurred_at.isoformat() == "2026-11-01T10:00:00+00:00"


@pytest.mark.parametrize("when", ["2026-11-01T12:00:00", "not a date", "2999-01-01T00:00:00Z"])
def test_bad_timestamps(when: str) -> None:
    with pytest.raises(ValidationError):
        Event.model_validate(base(occurred_at=when))


def test_amounts_are_decimals_to_the_cent() -> None:
    e = Event.model_validate(base(type="purchase", properties={"item_id": "i", "price": "10.5"}))
    assert e.properties.price == Decimal("10.50")
    with pytest.raises(ValidationError, match="negative"):
        Event.model_validate(base(type="purchase", properties={"item_id": "i", "price": "-1"}))


def test_required_properties_per_type() -> None:
    with pytest.raises(ValidationError, match=r"search event needs properties \['query'\]"):
        Event.model_validate(base(type="search"))
    with pytest.raises(ValidationError, match="unknown identifier kind"):
        Event.model_validate(base(user={"passport": "x"}))
    with pytest.raises(ValidationError, match="at least one user identifier"):
        Event.model_validate(base(user={}))


def test_category_normalization() -> None:
    assert normalize_category("  Home   &  Garden ") == "home & garden"
    # Every kind of whitespace run is one space, as with the regular expression it replaced.
    assert normalize_category("\tHome\u00a0\u2003Garden\n") == "home garden"
    assert normalize_category("Été\r\nFR") == "été fr"


@pytest.mark.parametrize("shown", ["Bücher", "Home & Garden", "Électronique"])
def test_a_category_that_looks_the_same_is_one_category(shown: str) -> None:
    """Composed or decomposed, fullwidth, with a zero-width space or a direction override
    pasted in: each had made a category of its own (a reader saw the same name twice)."""
    forms = {normalize_category(unicodedata.normalize("NFC", shown)),
             normalize_category(unicodedata.normalize("NFD", shown)),
             normalize_category(shown[:2] + "\u200b" + shown[2:]),
             normalize_category("\u202d" + shown + "\u2069"),
             normalize_category("".join(chr(ord(c) + 0xFEE0) if "!" <= c <= "~" else c
                                        for c in shown))}
    assert forms == {normalize_category(shown)}


BLANK = ["\u200b", "\u200c\u200d", "\ufeff", "\u2060\u2063", "\u202e", "\u3164",
         "\u3000\u200b", " \u00a0\u200b ", "\x00", "\x01\x7f", "\u180e", "\ufe0f",
         "\u2800", "\U000e0001", "\u034f", "\u00ad"]
"""Values that show nothing: zero-width and format characters, fillers, spaces of every kind,
controls."""


def test_invisible_only_categories_are_empty() -> None:
    """A name made only of invisible characters is the empty string, which every caller
    refuses: it had been kept as given, a category of its own that looked like none."""
    assert {normalize_category(v) for v in BLANK} == {""}


@pytest.mark.parametrize("value", BLANK)
@pytest.mark.parametrize("where", ["event_id", "session_id", "user", "device", "item_id",
                                   "category", "source"])
def test_ids_identifiers_and_categories_need_a_visible_character(value: str,
                                                                  where: str) -> None:
    """Each had been accepted: a user, an item or a category that looks like nothing."""
    changes: dict[str, object] = {
        "event_id": {"event_id": value}, "session_id": {"session_id": value},
        "user": {"user": {"email": value}}, "device": {"device": {"id": value}},
        "item_id": {"type": "add_to_cart", "properties": {"item_id": value}},
        "category": {"properties": {"category": value}}, "source": {"source": value}}
    with pytest.raises(ValidationError) as err:
        Event.model_validate(base(**changes[where]))
    reason = str(err.value)
    assert "invisible characters" in reason or "at least 1 character" in reason, reason


@given(st.lists(st.sampled_from(BLANK), min_size=1, max_size=4).map("".join),
       st.text(min_size=1, max_size=3).filter(lambda t: not blank(t)),
       st.integers(0, 4))
def test_one_visible_character_makes_an_id(padding: str, shown: str, at: int) -> None:
    """Invisible characters around or inside something visible are no reason to refuse it;
    without anything visible, always refused."""
    value = (padding[:at] + shown + padding[at:])[:200]
    assert shown.strip() in (Event.model_validate(base(session_id=value)).session_id or "")
    with pytest.raises(ValidationError):
        Event.model_validate(base(session_id=padding))


@pytest.mark.parametrize(("text", "reason"), [
    ('{"event_id": "bad-json", "type": ', "invalid JSON: unexpected end of data at column 34"),
    ("{oops", "invalid JSON: unexpected character, expected a string key at column 2"),
    ('{"a": 1} x', "invalid JSON: unexpected content after document at column 10"),
    # Not JSON, though the standard library's parser accepts them.
    ('{"duration_s": NaN}', "invalid JSON"),
    ('{"duration_s": Infinity}', "invalid JSON"),
])
def test_invalid_json_reasons(text: str, reason: str) -> None:
    with pytest.raises(InvalidJson) as caught:
        load_json(text)
    assert str(caught.value).startswith(reason)


def test_load_json_reads_what_the_standard_library_reads() -> None:
    text = '{"event_id": "é\\u00e9", "n": 12345678901234567, "x": [1.5, null, true], "k": {}}'
    assert load_json(text) == json.loads(text)


def test_csv_columns_map_to_envelope() -> None:
    env = csv_row_to_envelope({"event_id": "x", "type": "purchase", "user_email": "a@b.c",
                               "city": "Paris", "location_id": "paris", "price": "3",
                               "item_id": "i", "device_kind": "mobile", "device_id": "d",
                               "age_band": "", "category": "Toys"})
    assert env["user"] == {"email": "a@b.c"}
    assert env["profile"] == {"location": {"city": "Paris", "id": "paris"}}
    assert env["device"] == {"kind": "mobile", "id": "d"}
    assert env["properties"] == {"price": "3", "item_id": "i", "category": "Toys"}


@pytest.mark.parametrize("change", [
    {"event_id": "jane.doe@example.com"}, {"session_id": "chat-jane@example.org-1"},
    {"source": "crm:ops@example.com"},
    {"type": "purchase", "properties": {"item_id": "i", "order_id": "jane@example.com/1",
                                        "price": "1"}},
    {"type": "page_view", "properties": {"item_id": "wishlist-of-Jöhn@Exämple.de"}},
])
def test_ids_holding_an_email_address_are_refused(change: dict[str, object]) -> None:
    """Ids are stored as they are: one holding an email address would keep a person's
    identifier in plaintext in the graph. The same address as the user's identifier is fine
    (pseudonymized); an "@" that is no address is an id like any other."""
    with pytest.raises(ValidationError, match="holds an email address"):
        Event.model_validate(base(**change))
    assert Event.model_validate(base(user={"email": "jane.doe@example.com"}))
    assert Event.model_validate(base(event_id="e@1", session_id="s@home"))
