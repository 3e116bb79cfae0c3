"""The situation around a user: location, weather, local events."""

from __future__ import annotations

from datetime import datetime

import strawberry

from graph.profile import model


@strawberry.type
class WeatherObservation:
    at: datetime
    temp_c: float
    condition: str
    valid_until: datetime | None = strawberry.field(
        default=None, description="Until when the observation counts as current.")

    @classmethod
    def from_model(cls, w: model.Weather) -> WeatherObservation:
        return cls(at=w.at, temp_c=w.temp_c, condition=w.condition, valid_until=w.valid_until)


@strawberry.type
class LocalEvent:
    id: strawberry.ID
    name: str
    starts_at: datetime
    ends_at: datetime | None

    @classmethod
    def from_model(cls, e: model.LocalEvent) -> LocalEvent:
        return cls(id=strawberry.ID(e.id), name=e.name, starts_at=e.starts_at, ends_at=e.ends_at)
