"""Users and what the graph knows of them: preferences, interactions, location."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import strawberry

from api import queries as q
from api.context import Context
from api.types.context_types import LocalEvent, WeatherObservation, native
from api.types.segment import Membership, Segment
from graph.errors import InvalidInput

MAX_FIRST = 100


def bounded(first: int) -> int:
    if not 1 <= first <= MAX_FIRST:
        raise InvalidInput(f"`first` must be between 1 and {MAX_FIRST}, got {first}")
    return first


@strawberry.type
class Preference:
    category: str
    weight: float
    source: str = strawberry.field(description="explicit (stated) or inferred (from behaviour)")
    updated_at: datetime | None


@strawberry.type
class Interaction:
    event_id: strawberry.ID
    type: str
    at: datetime
    item_id: str | None
    category: str | None
    amount: float | None
    query: str | None
    text: str | None = strawberry.field(description="Chat text, with PII pseudonymized.")
    intent: str | None
    rating: int | None

    @classmethod
    def from_record(cls, i: dict[str, Any]) -> Interaction:
        return cls(event_id=strawberry.ID(i["event_id"]), type=i["type"], at=i["at"].to_native(),
                   item_id=i.get("item_id"), category=i.get("category"),
                   amount=i.get("amount"), query=i.get("query"), text=i.get("text"),
                   intent=i.get("intent"), rating=i.get("rating"))


@strawberry.type
class Location:
    id: strawberry.ID
    city: str | None
    country: str | None
    latest_weather: WeatherObservation | None = strawberry.field(
        description="The most recent weather observation at this location.")

    @strawberry.field(description="Local events starting from now, soonest first.")
    async def upcoming_events(self, info: strawberry.Info[Context, None],
                              first: int = 5) -> list[LocalEvent]:
        rows = await info.context.rows(q.UPCOMING_EVENTS, location_id=self.id,
                                       first=bounded(first))
        return [LocalEvent.from_record(r["event"]) for r in rows]


@strawberry.type(description="A pseudonymous user profile.")
class User:
    id: strawberry.ID
    first_seen: datetime | None
    last_seen: datetime | None
    age_band: str | None
    gender: str | None
    locale: str | None
    events: int
    purchases: int
    spend: float

    @classmethod
    def from_record(cls, u: dict[str, Any]) -> User:
        return cls(id=strawberry.ID(u["id"]), first_seen=native(u["first_seen"]),
                   last_seen=native(u["last_seen"]), age_band=u["age_band"],
                   gender=u["gender"], locale=u["locale"], events=u["events"] or 0,
                   purchases=u["purchases"] or 0, spend=u["spend"] or 0.0)

    @strawberry.field(description="Persona and leaf segment from the latest segmentation.")
    async def membership(self, info: strawberry.Info[Context, None]) -> Membership | None:
        rows = await info.context.rows(q.USER_SEGMENT, id=self.id)
        if not rows:
            return None
        row = rows[0]
        segment = Segment.from_record(row["segment"], row["persona"])
        return Membership(persona=segment.persona, segment=segment, distance=row["distance"])

    @strawberry.field(description="Top category preferences, explicit ones first.")
    async def preferences(self, info: strawberry.Info[Context, None],
                          first: int = 5) -> list[Preference]:
        rows = await info.context.rows(q.PREFERENCES, id=self.id, first=bounded(first))
        return [Preference(category=r["category"], weight=r["weight"] or 0.0,
                           source=r["source"], updated_at=native(r["updated_at"]))
                for r in rows]

    @strawberry.field(description="Most recent interactions first.")
    async def recent_interactions(self, info: strawberry.Info[Context, None],
                                  first: int = 10) -> list[Interaction]:
        rows = await info.context.rows(q.RECENT_INTERACTIONS, id=self.id, first=bounded(first))
        return [Interaction.from_record(r["interaction"]) for r in rows]

    @strawberry.field(description="Where the user is, with the latest weather there.")
    async def location(self, info: strawberry.Info[Context, None]) -> Location | None:
        rows = await info.context.rows(q.LOCATION, id=self.id)
        if not rows:
            return None
        loc, weather = rows[0]["location"], rows[0]["weather"]
        return Location(id=strawberry.ID(loc["id"]), city=loc.get("city"),
                        country=loc.get("country"),
                        latest_weather=WeatherObservation.from_record(weather) if weather else None)
