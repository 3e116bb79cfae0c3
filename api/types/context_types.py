"""The situation around a user: location, weather, local events."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import strawberry


def native(value: Any) -> datetime | None:
    return value.to_native() if value is not None else None


@strawberry.type
class WeatherObservation:
    at: datetime
    temp_c: float
    condition: str
    valid_until: datetime | None = strawberry.field(
        default=None, description="Until when the observation counts as current.")

    @classmethod
    def from_record(cls, w: dict[str, Any]) -> WeatherObservation:
        return cls(at=w["at"].to_native(), temp_c=w["temp_c"], condition=w["condition"],
                   valid_until=native(w.get("valid_until")))


@strawberry.type
class LocalEvent:
    id: strawberry.ID
    name: str
    starts_at: datetime
    ends_at: datetime | None

    @classmethod
    def from_record(cls, e: dict[str, Any]) -> LocalEvent:
        return cls(id=strawberry.ID(e["id"]), name=e["name"], starts_at=e["starts_at"].to_native(),
                   ends_at=native(e.get("ends_at")))
