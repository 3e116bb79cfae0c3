"""Every timestamp a source sends is plausible or a clear ValueError, never a crash."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from neo4j import time as neo4j_time
from pydantic import ValidationError

from graph.crm.mapping import parse_timestamp
from graph.events import Event
from graph.situation.models import LocalEvent, WeatherObservation
from graph.times import FAR_FUTURE, from_cypher_text, from_epoch, to_utc


def event(occurred_at: Any) -> dict[str, Any]:
    return {"event_id": "e1", "type": "page_view", "occurred_at": occurred_at,
            "user": {"crm_id": "c1"}}


@pytest.mark.parametrize("text", ["0001-01-01T00:00:00+01:00", "0001-01-01T00:00:00Z",
                                  "1000-06-01T00:00:00Z", "1969-12-31T23:59:59Z",
                                  "9999-12-31T23:59:59-01:00", "9999-12-31T23:59:59Z"])
def test_implausible_event_times_are_validation_errors(text: str) -> None:
    with pytest.raises(ValidationError, match="occurred_at"):
        Event.model_validate_json(json.dumps(event(text)))


@pytest.mark.parametrize("value", ["0001-01-01T00:00:00+01:00", "1000-01-01T00:00:00Z",
                                   float("inf"), float("-inf"), float("nan"), 1e20, -1e20])
def test_crm_times_out_of_range_are_value_errors(value: Any) -> None:
    with pytest.raises(ValueError, match="range|before 1970|plausible"):
        parse_timestamp(value)


def test_context_times_may_lie_ahead_but_not_centuries() -> None:
    soon = (datetime.now(UTC) + timedelta(days=200)).isoformat()
    LocalEvent.model_validate({"id": "x", "location_id": "l", "name": "Fair", "starts_at": soon})
    for text in ("0001-01-01T00:00:00+01:00", "2999-01-01T00:00:00Z"):
        with pytest.raises(ValidationError):
            WeatherObservation.model_validate({"id": "w", "location_id": "l", "at": text,
                                               "temp_c": 10, "condition": "rain"})


@settings(max_examples=300, deadline=None)
@given(st.datetimes(timezones=st.sampled_from([UTC, timezone(timedelta(hours=14)),
                                               timezone(timedelta(hours=-12))])))
def test_any_aware_time_is_accepted_in_bounds_or_refused_clearly(at: datetime) -> None:
    try:
        out = to_utc(at, ahead=FAR_FUTURE)
    except ValueError as exc:
        assert "time" in str(exc)
    else:
        assert out.tzinfo is UTC and out.year >= 1970 and out == at


@settings(max_examples=200, deadline=None)
@given(st.floats(allow_nan=True, allow_infinity=True))
def test_any_epoch_number_is_a_time_or_a_value_error(seconds: float) -> None:
    try:
        at = from_epoch(seconds)
    except ValueError:
        return
    assert at.tzinfo is UTC


@settings(max_examples=200, deadline=None)
@given(st.one_of(st.text(max_size=40), st.integers(), st.floats(), st.none()))
def test_any_occurred_at_is_an_event_or_a_validation_error(value: Any) -> None:
    try:
        accepted = Event.model_validate(event(value))
    except ValidationError as exc:
        assert "occurred_at" in str(exc)
    else:
        assert accepted.occurred_at.year >= 1970 and accepted.occurred_at.tzinfo is UTC


def test_a_validator_failing_unexpectedly_gives_a_reject_not_a_crash(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Whatever a validator raises (OverflowError on year 1 was one such case), the file reader
    and the Kafka consumer get a reject with a reason, so the record cannot become a poison
    pill."""
    from graph.ingest.reader import Reject, validate
    from graph.ingest.stream import Rejected, parse_message

    def overflow(*_: Any, **__: Any) -> Event:
        raise OverflowError("date value out of range")

    monkeypatch.setattr(Event, "model_validate", overflow)
    record = validate(7, event("2026-01-01T00:00:00Z"), "{}")
    assert isinstance(record, Reject) and record.reason == "invalid record (OverflowError)"
    message = parse_message(json.dumps(event("2026-01-01T00:00:00Z")).encode(), 3, 10_000)
    assert isinstance(message, Rejected) and message.reason == "invalid record (OverflowError)"


@settings(max_examples=300)
@given(st.datetimes(min_value=datetime(1970, 1, 1), max_value=datetime(9000, 1, 1)),
       st.integers(0, 999), st.integers(-18 * 60, 18 * 60), st.booleans())
def test_a_time_as_cypher_text_reads_as_the_driver_converts_it(
        at: datetime, nanos: int, offset_minutes: int, zoned: bool) -> None:
    """``toString`` of a Neo4j DateTime (nanoseconds, any offset, a zone id after it) parses to
    what the driver's ``to_native`` gives for the same value."""
    tz = timezone(timedelta(minutes=offset_minutes))
    value = neo4j_time.DateTime.from_native(at.replace(tzinfo=tz))
    value = value.replace(nanosecond=value.nanosecond + nanos)
    text = value.iso_format() + ("[Etc/Unknown]" if zoned else "")
    parsed = from_cypher_text(text)
    assert parsed == value.to_native()
    assert parsed.isoformat() == value.to_native().isoformat()


def test_cypher_text_without_seconds_or_with_z() -> None:
    assert from_cypher_text("2026-12-07T20:00Z").isoformat() == "2026-12-07T20:00:00+00:00"
    assert from_cypher_text("2026-12-07T20:00:00.341Z") == datetime(2026, 12, 7, 20, 0, 0,
                                                                     341000, tzinfo=UTC)
