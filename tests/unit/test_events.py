from __future__ import annotations

from decimal import Decimal

import pytest
from pydantic import ValidationError

from graph.events import Event, normalize_category
from graph.ingest.reader import csv_row_to_envelope


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


def test_csv_columns_map_to_envelope() -> None:
    env = csv_row_to_envelope({"event_id": "x", "type": "purchase", "user_email": "a@b.c",
                               "city": "Paris", "location_id": "paris", "price": "3",
                               "item_id": "i", "device_kind": "mobile", "device_id": "d",
                               "age_band": "", "category": "Toys"})
    assert env["user"] == {"email": "a@b.c"}
    assert env["profile"] == {"location": {"city": "Paris", "id": "paris"}}
    assert env["device"] == {"kind": "mobile", "id": "d"}
    assert env["properties"] == {"price": "3", "item_id": "i", "category": "Toys"}
