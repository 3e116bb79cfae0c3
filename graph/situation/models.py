"""What a situation is made of: weather observations and local events, time-bounded and tied to a
location, validated the same way whatever brings them (a provider, a file, a webhook, the demo).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Annotated, Any, Literal, get_args

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    field_validator,
    model_validator,
)

from graph.errors import InvalidInput, InvalidRecords
from graph.events import Key, Location, describe_validation_error
from graph.privacy import mask_contacts
from graph.times import FAR_FUTURE, to_utc

Condition = Literal["clear", "cloudy", "rain", "snow", "fog"]
CONDITIONS: tuple[str, ...] = get_args(Condition)
"""The weather conditions the graph knows (the demo, the recommendation boosts, the API)."""

MIN_TEMP_C, MAX_TEMP_C = -90.0, 60.0
"""Beyond the records ever measured on Earth (-89.2 and 56.7 degrees C): a unit or sign error."""
MAX_WEATHER_VALIDITY = timedelta(days=7)
"""The longest a provider may declare one observation valid; the API looks no further back."""
SECTIONS = ("locations", "weather", "local_events")
MAX_PROBLEMS_IN_MESSAGE = 10

EventName = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1,
                                             max_length=300)]


def weather_lookback_hours(valid_hours: float) -> float:
    """How far back a query for the current weather must look: no observation is valid longer
    than the default window or the longest a provider may declare."""
    return max(valid_hours, MAX_WEATHER_VALIDITY.total_seconds() / 3600)


def utc(value: datetime) -> datetime:
    """An aware time in UTC between 1970 and ten years ahead (forecasts and coming events lie
    ahead); naive times are refused, as everywhere in the graph."""
    return to_utc(value, ahead=FAR_FUTURE)


class WeatherObservation(BaseModel):
    """The weather at a location at ``at``, the current weather until ``valid_until`` (the
    writer fills in ``at`` + PERSONAS_WEATHER_VALID_HOURS when the provider says nothing)."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    id: Key
    location_id: Key
    at: datetime
    valid_until: datetime | None = None
    temp_c: float = Field(ge=MIN_TEMP_C, le=MAX_TEMP_C)
    condition: Condition
    source: Key = "unknown"

    @field_validator("at", "valid_until")
    @classmethod
    def _utc(cls, value: datetime | None) -> datetime | None:
        return utc(value) if value is not None else None

    @model_validator(mode="after")
    def _window(self) -> WeatherObservation:
        if self.valid_until is not None:
            if self.valid_until <= self.at:
                raise ValueError("valid_until must be after at")
            if self.valid_until - self.at > MAX_WEATHER_VALIDITY:
                raise ValueError(f"valid_until may be at most {MAX_WEATHER_VALIDITY.days} days "
                                 "after at")
        return self

    def window_end(self, valid_hours: float) -> datetime:
        """Until when this observation is the current weather."""
        return self.valid_until or self.at + timedelta(hours=valid_hours)


class LocalEvent(BaseModel):
    """Something happening at a location between ``starts_at`` and ``ends_at``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: Key
    location_id: Key
    name: EventName
    starts_at: datetime
    ends_at: datetime | None = None
    source: Key = "unknown"

    @field_validator("starts_at", "ends_at")
    @classmethod
    def _utc(cls, value: datetime | None) -> datetime | None:
        return utc(value) if value is not None else None

    @field_validator("name")
    @classmethod
    def _mask(cls, value: str) -> str:
        return mask_contacts(value)

    @model_validator(mode="after")
    def _order(self) -> LocalEvent:
        if self.ends_at is not None and self.ends_at < self.starts_at:
            raise ValueError("ends_at is before starts_at")
        return self


class SituationBatch(BaseModel):
    """Locations (optional descriptions: city, country, lat, lon), weather and local events that
    are written together, in one transaction."""

    model_config = ConfigDict(frozen=True)

    locations: tuple[Location, ...] = ()
    weather: tuple[WeatherObservation, ...] = ()
    local_events: tuple[LocalEvent, ...] = ()

    @property
    def size(self) -> int:
        return len(self.locations) + len(self.weather) + len(self.local_events)


MODELS: dict[str, type[BaseModel]] = {
    "locations": Location, "weather": WeatherObservation, "local_events": LocalEvent}


def _label(section: str, index: int, record: Any) -> str:
    rid = record.get("id") if isinstance(record, Mapping) else None
    if isinstance(rid, str) and rid.strip():
        return f"{section}[{index}] (id {rid.strip()[:80]!r})"
    return f"{section}[{index}]"


def _comparable(model: BaseModel) -> str:
    return model.model_dump_json()


def parse_situation(data: Any, *, origin: str, max_records: int | None = None) -> SituationBatch:
    """Validate a context document (an object with ``locations``, ``weather`` and
    ``local_events`` lists, each optional) into a batch.

    Every record is checked; if any is bad, ``InvalidRecords`` names each one (section, index,
    id) with its reason and nothing is returned, so a caller never writes part of a batch. The
    same id twice in a section is fine when both records say the same, else an error.
    """
    if not isinstance(data, Mapping):
        raise InvalidInput(f"{origin}: expected a JSON object with {', '.join(SECTIONS)}")
    unknown = sorted(set(data) - {*SECTIONS, "schema_version"})
    if unknown:
        raise InvalidInput(f"{origin}: unknown key(s) {unknown}; expected {list(SECTIONS)}")
    if data.get("schema_version", 1) != 1:
        raise InvalidInput(f"{origin}: schema_version must be 1")
    sections: dict[str, Sequence[Any]] = {}
    for section in SECTIONS:
        records = data.get(section, [])
        if not isinstance(records, list | tuple):
            raise InvalidInput(f"{origin}: {section} must be a list")
        sections[section] = records
    total = sum(len(r) for r in sections.values())
    if max_records is not None and total > max_records:
        raise InvalidInput(f"{origin}: {total} records; at most {max_records} in one batch")
    problems: list[tuple[str, str]] = []
    parsed: dict[str, list[Any]] = {s: [] for s in SECTIONS}
    for section, records in sections.items():
        seen: dict[str, tuple[str, str]] = {}
        for index, record in enumerate(records):
            label = _label(section, index, record)
            if not isinstance(record, Mapping):
                problems.append((label, "a record must be a JSON object"))
                continue
            try:
                model = MODELS[section].model_validate(record)
            except ValidationError as exc:
                problems.append((label, describe_validation_error(exc.errors())))
                continue
            rid = model.id  # type: ignore[attr-defined]
            previous = seen.get(rid)
            if previous is None:
                seen[rid] = (label, _comparable(model))
                parsed[section].append(model)
            elif previous[1] != _comparable(model):
                problems.append((label, f"id {rid!r} repeats {previous[0]} with other values"))
    if problems:
        shown = "; ".join(f"{where}: {why}" for where, why in problems[:MAX_PROBLEMS_IN_MESSAGE])
        more = len(problems) - MAX_PROBLEMS_IN_MESSAGE
        raise InvalidRecords(
            f"{origin}: {len(problems)} bad record(s), nothing written: {shown}"
            + (f"; and {more} more" if more > 0 else ""), problems)
    return SituationBatch(locations=tuple(parsed["locations"]), weather=tuple(parsed["weather"]),
                          local_events=tuple(parsed["local_events"]))

