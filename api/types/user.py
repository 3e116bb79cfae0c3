"""Users and what the graph knows of them: the GraphQL types over ``graph.profile``'s read model
(preferences, interactions, location), and the consent policy applied to each field."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import strawberry

from api.auth import allowed
from api.prefetch import wanted
from api.request import RequestContext
from api.types.activity import (
    Interaction,
    InteractionType,
    Session,
    TimeOrder,
    interaction_page,
)
from api.types.connection import Connection, connection, decode_time_cursor
from api.types.consistency import Consistency
from api.types.segment import Membership, Persona, Segment, WhyScore
from api.types.situation import LocalEvent, WeatherObservation
from graph.auth import ANALYSTS
from graph.errors import InvalidInput, NotFound
from graph.profile import model, users
from graph.profile import prefetch as ahead
from graph.profile.consent import personal
from graph.profile.consent import withheld as withheld_from
from graph.profile.prefetch import (
    EVENTS_FIRST,
    PREFERENCES_FIRST,
    RECOMMENDATIONS_FIRST,
    Profile,
)
from graph.recommend.engine import Recommendation as RecommendationModel
from graph.recommend.engine import WhatIf as WhatIfModel


@strawberry.type
class Preference:
    category: str
    weight: float
    source: str = strawberry.field(description="explicit (stated) or inferred (from behaviour)")
    updated_at: datetime | None
    consistency: Consistency | None = strawberry.field(
        default=None, description="The consistency token of the write (`setPreference`'s "
        "answer only).")

    @classmethod
    def from_model(cls, p: model.Preference) -> Preference:
        return cls(category=p.category, weight=p.weight, source=p.source,
                   updated_at=p.updated_at)


@strawberry.type
class Location:
    id: strawberry.ID
    city: str | None
    country: str | None
    latest_weather: WeatherObservation | None = strawberry.field(
        description="The most recent weather observation at this location.")

    @classmethod
    def from_model(cls, loc: model.Location) -> Location:
        weather = loc.latest_weather
        return cls(id=strawberry.ID(loc.id), city=loc.city, country=loc.country,
                   latest_weather=WeatherObservation.from_model(weather) if weather else None)

    @strawberry.field(description="Local events starting from now, soonest first.")
    async def upcoming_events(self, info: strawberry.Info[RequestContext, None],
                              first: int = 5) -> list[LocalEvent]:
        found = await users.upcoming_events(info.context.reader, self.id,
                                            info.context.page(first))
        return [LocalEvent.from_model(e) for e in found]


@strawberry.type(description="The user's persona, how surely they belong to it, and why.")
class UserPersona:
    id: strawberry.ID
    name: str
    description: str
    confidence: float | None = strawberry.field(
        description="1 at the segment centre, 0.5 at the median member's distance.")
    why: list[WhyScore] = strawberry.field(
        description="Features on which the persona's segment differs most from everyone.")
    segment: Segment | None

    @classmethod
    def from_model(cls, p: model.UserPersona) -> UserPersona:
        segment = Segment.from_model(p.segment) if p.segment else None
        return cls(id=strawberry.ID(p.persona.id), name=p.persona.name,
                   description=p.persona.description, confidence=p.confidence,
                   why=segment.why if segment else [], segment=segment)


@strawberry.type(description="A persona the user had, and when.")
class PersonaPeriod:
    persona: Persona
    valid_from: datetime
    valid_to: datetime | None = strawberry.field(description="Null while it is current.")
    run_id: str | None

    @classmethod
    def from_model(cls, p: model.PersonaPeriod) -> PersonaPeriod:
        return cls(persona=Persona.from_model(p.persona), valid_from=p.valid_from,
                   valid_to=p.valid_to, run_id=p.run_id)


@strawberry.type(description="A user who interacted with many of the same items.")
class SimilarUser:
    id: strawberry.ID
    shared_items: int
    similarity: float = strawberry.field(description="Jaccard overlap of the users' item sets.")


@strawberry.type(description="Where the user is and what is going on there.")
class Situation:
    location: Location | None
    current_weather: WeatherObservation | None = strawberry.field(
        description="The latest observation still valid now: until its `validUntil`, or "
        "PERSONAS_WEATHER_VALID_HOURS after it when the provider gave none; else null.")
    upcoming_events: list[LocalEvent]

    @classmethod
    def from_model(cls, s: model.Situation | None) -> Situation | None:
        if s is None:
            return None
        weather = s.current_weather
        return cls(location=Location.from_model(s.location),
                   current_weather=WeatherObservation.from_model(weather) if weather else None,
                   upcoming_events=[LocalEvent.from_model(e) for e in s.upcoming_events])


@strawberry.type(description="An item suggested by graph traversal, with the reasons why.")
class Recommendation:
    item_id: strawberry.ID
    name: str
    category: str | None
    score: float
    reasons: list[str] = strawberry.field(
        description="Why: segment favourite, similar users' purchases, stated or inferred "
        "preference, weather or local events.")

    @classmethod
    def from_model(cls, r: RecommendationModel) -> Recommendation:
        return cls(item_id=strawberry.ID(r.item_id), name=r.name, category=r.category,
                   score=r.score, reasons=list(r.reasons))


@strawberry.input(description="A situation to rank for instead of the real one. What is "
                  "given replaces the real weather or the real upcoming events at the user's "
                  "place; what is left out stays as it is. Only items whose category the "
                  "situation favours move, and their reasons say `if it were ...`.")
class WhatIf:
    weather: str | None = strawberry.field(
        default=None, description="A weather condition: clear, cloudy, rain, snow or fog.")
    temp_c: float | None = strawberry.field(
        default=None, description="A temperature in °C (cold at or below 5, warm from 22).")
    local_event: str | None = strawberry.field(
        default=None, description="An event nearby, by name, e.g. `Berlin jazz concert`: its "
        "kind (concert, festival, football match, market, trade fair) decides what it favours.")

    def model(self) -> WhatIfModel:
        return WhatIfModel(self.weather, self.temp_c, self.local_event)


@strawberry.type(description="An identifier the user is known by. Only its kind and the start "
                 "of its keyed hash: the plaintext value is never stored.")
class Identifier:
    kind: str
    masked: str = strawberry.field(description="The first characters of the identifier's "
                                   "pseudonym, e.g. `3f9a1c0b…`.")
    first_seen: datetime | None


def utc_or_none(value: datetime | None, name: str) -> datetime | None:
    if value is not None and value.tzinfo is None:
        raise InvalidInput(f"`{name}` needs a time zone, e.g. 2026-11-01T12:00:00Z")
    return value


@strawberry.type(description="What the user agreed their data may be used for (a purpose "
                 "never stated counts as granted).")
class Consents:
    personalization: bool = strawberry.field(
        description="Profile facts, preferences and personal recommendations for chatbots.")
    analytics: bool = strawberry.field(description="Segmentation and analytics.")


def withheld(user: User, info: strawberry.Info[RequestContext, None]) -> bool:
    """``graph.profile.consent.withheld`` for the request's caller."""
    principal = info.context.principal
    return withheld_from(user.record.consents, principal.role if principal else None)


def _empty_page() -> Connection[Any]:
    return connection(model.Page([], [], False), "none", lambda r: r)


@strawberry.type(description="A pseudonymous user profile. For a user who withdrew "
                 "personalization consent, a reader key gets no personal field: they answer "
                 "null or empty.")
class User:
    id: strawberry.ID
    first_seen: datetime | None
    last_seen: datetime | None
    events: int
    purchases: int
    spend: float
    as_of: datetime | None = strawberry.field(
        description="The point in time persona and preferences answer for (null: now).")
    consents: Consents
    record: strawberry.Private[model.UserRecord]
    prefetched: strawberry.Private[Profile | None] = None
    pending: bool = strawberry.field(
        default=False, description="True when `after` named a write that was not visible "
        "within PERSONAS_CONSISTENCY_WAIT_MS: this answer may not hold it yet.")

    @classmethod
    def from_model(cls, u: model.UserRecord, as_of: datetime | None = None,
                   prefetched: Profile | None = None) -> User:
        return cls(id=strawberry.ID(u.id), first_seen=u.first_seen, last_seen=u.last_seen,
                   events=u.events, purchases=u.purchases, spend=u.spend, as_of=as_of,
                   consents=Consents(personalization=u.consents.personalization,
                                     analytics=u.consents.analytics),
                   record=u, prefetched=prefetched)

    @strawberry.field
    def age_band(self, info: strawberry.Info[RequestContext, None]) -> str | None:
        return None if withheld(self, info) else self.record.age_band

    @strawberry.field
    def gender(self, info: strawberry.Info[RequestContext, None]) -> str | None:
        return None if withheld(self, info) else self.record.gender

    @strawberry.field
    def locale(self, info: strawberry.Info[RequestContext, None]) -> str | None:
        return None if withheld(self, info) else self.record.locale

    @strawberry.field(description="The persona (at `asOf` when the user was asked for then), "
                      "with confidence and the features that explain it.")
    async def persona(self, info: strawberry.Info[RequestContext, None]) -> UserPersona | None:
        if withheld(self, info):
            return None
        if self.as_of is not None:
            found = await users.persona_as_of(info.context.reader, self.id, self.as_of)
        else:
            found = await self._persona(info)
        return UserPersona.from_model(found) if found else None

    async def _persona(self, info: strawberry.Info[RequestContext, None],
                       ) -> model.UserPersona | None:
        if self.prefetched and self.prefetched.wanted.persona:
            return self.prefetched.persona
        return await info.context.loaders.persona.load(self.id)

    @strawberry.field(description="The user's leaf segment in the latest run, then each parent "
                      "up to the root.")
    async def segments(self, info: strawberry.Info[RequestContext, None]) -> list[Segment]:
        if withheld(self, info):
            return []
        path = await info.context.loaders.segment_path.load(self.id)
        return [Segment.from_model(s) for s in path]

    @strawberry.field(description="Personas the user has had, newest first.")
    async def persona_history(self, info: strawberry.Info[RequestContext, None], first: int = 10,
                              after: str | None = None) -> Connection[PersonaPeriod]:
        if withheld(self, info):
            return _empty_page()
        size = info.context.page(first)
        after_at, after_id = decode_time_cursor("period", after)
        found = await users.persona_history(info.context.reader, self.id, after_at=after_at,
                                            after_id=after_id, size=size)
        return connection(found, "period", PersonaPeriod.from_model)

    @strawberry.field(description="Users with the most similar item sets (co-interaction).")
    async def similar_users(self, info: strawberry.Info[RequestContext, None],
                            first: int = 5) -> list[SimilarUser]:
        if withheld(self, info):
            return []
        found = await users.similar_users(info.context.reader, self.id, info.context.page(first))
        return [SimilarUser(id=strawberry.ID(s.id), shared_items=s.shared_items,
                            similarity=s.similarity) for s in found]

    @strawberry.field(description="Items to suggest, best first, each with its reasons "
                      "(at `asOf` for the context boost when given; with `whatIf`, as if the "
                      "situation were different). Without personalization consent: the "
                      "best-sellers, the same for everyone.")
    async def recommendations(self, info: strawberry.Info[RequestContext, None],
                              first: int = RECOMMENDATIONS_FIRST,
                              what_if: WhatIf | None = None) -> list[Recommendation]:
        granted = personal(self.record.consents)
        if self.prefetched and self.prefetched.wanted.recommendations == first and granted \
                and what_if is None:
            found = self.prefetched.recommendations
        else:
            found = await users.recommendations(
                info.context.reader, self.id, info.context.page(first), personal=granted,
                now=self.as_of, what_if=what_if.model() if what_if is not None else None)
        return [Recommendation.from_model(r) for r in found]

    @strawberry.field(description="The situation now: location, current weather, upcoming "
                      "local events.")
    async def context(self, info: strawberry.Info[RequestContext, None],
                      first_events: int = EVENTS_FIRST) -> Situation | None:
        if withheld(self, info):
            return None
        if self.prefetched and self.prefetched.wanted.events == first_events:
            return Situation.from_model(self.prefetched.situation)
        now = self.as_of or datetime.now(UTC)
        return Situation.from_model(await users.situation(
            info.context.reader, info.context.settings, self.id, now,
            info.context.page(first_events)))

    @strawberry.field(description="Persona and leaf segment from the latest segmentation.",
                      deprecation_reason="Use `persona` (with confidence) and `segments`.")
    async def membership(self, info: strawberry.Info[RequestContext, None]) -> Membership | None:
        if withheld(self, info):
            return None
        found = await self._persona(info)
        if found is None or found.segment is None or found.distance is None:
            return None
        segment = Segment.from_model(found.segment)
        return Membership(persona=segment.persona, segment=segment, distance=found.distance)

    @strawberry.field(description="Top category preferences, explicit ones first; none "
                      "without personalization consent.")
    async def preferences(self, info: strawberry.Info[RequestContext, None],
                          first: int = PREFERENCES_FIRST) -> list[Preference]:
        if not personal(self.record.consents):
            return []
        if self.as_of is not None:
            found = await users.preferences_as_of(info.context.reader, self.id, self.as_of,
                                                  info.context.page(first))
        elif self.prefetched and self.prefetched.wanted.preferences == first:
            found = self.prefetched.preferences
        else:
            found = await info.context.loaders.preferences.load((self.id,
                                                                 info.context.page(first)))
        return [Preference.from_model(p) for p in found]

    @strawberry.field(description="Most recent interactions first.",
                      deprecation_reason="Use `interactions`, a connection with filters.")
    async def recent_interactions(self, info: strawberry.Info[RequestContext, None],
                                  first: int = 10) -> list[Interaction]:
        if withheld(self, info):
            return []
        found = await users.recent_interactions(info.context.reader, self.id,
                                                info.context.page(first))
        return [Interaction.from_model(i) for i in found]

    @strawberry.field(description="Interactions, newest first by default, optionally of some "
                      "types and within [since, until).")
    async def interactions(self, info: strawberry.Info[RequestContext, None], first: int = 20,
                           after: str | None = None,
                           types: list[InteractionType] | None = None,
                           since: datetime | None = None, until: datetime | None = None,
                           order: TimeOrder = TimeOrder.NEWEST_FIRST) -> Connection[Interaction]:
        if withheld(self, info):
            return _empty_page()
        size = info.context.page(first)
        after_at, after_id = decode_time_cursor("interaction", after)
        return interaction_page(await users.interactions(
            info.context.reader, self.id, newest_first=order is TimeOrder.NEWEST_FIRST,
            types=[t.value for t in types] if types else None,
            since=utc_or_none(since, "since"), until=utc_or_none(until, "until"),
            after_at=after_at, after_id=after_id, size=size))

    @strawberry.field(description="Sessions, most recently started first.")
    async def sessions(self, info: strawberry.Info[RequestContext, None], first: int = 10,
                       after: str | None = None) -> Connection[Session]:
        if withheld(self, info):
            return _empty_page()
        size = info.context.page(first)
        after_at, after_id = decode_time_cursor("session", after)
        found = await users.sessions(info.context.reader, self.id, after_at=after_at,
                                     after_id=after_id, size=size)
        return connection(found, "session", Session.from_model)

    @strawberry.field(description="Identifiers the user is known by, masked (analysts and "
                      "admins only).", extensions=allowed(ANALYSTS))
    async def identifiers(self, info: strawberry.Info[RequestContext, None]) -> list[Identifier]:
        return [Identifier(kind=i.kind, masked=i.masked, first_seen=i.first_seen)
                for i in await users.identifiers(info.context.reader, self.id)]

    @strawberry.field(description="Where the user is, with the latest weather there.",
                      deprecation_reason="Use `context`: current weather within its validity "
                      "window, and upcoming events.")
    async def location(self, info: strawberry.Info[RequestContext, None]) -> Location | None:
        if withheld(self, info):
            return None
        found = await users.location(info.context.reader, self.id)
        return Location.from_model(found) if found else None


async def user_with_profile(info: strawberry.Info[RequestContext, None], missing: str, *,
                            user_id: str | None = None,
                            identifier: tuple[str, str] | None = None) -> User:
    """The user ``user_id`` or ``identifier`` (kind, keyed hash) names, with what the request
    selects of them fetched in the same round trip; NotFound (``missing``) if none."""
    found = await ahead.profile(info.context.reader, info.context.settings,
                                wanted(info, info.context.settings.api_max_page_size),
                                datetime.now(UTC), user_id=user_id, identifier=identifier)
    if found is None:
        raise NotFound(missing)
    return User.from_model(found.user, prefetched=found)
