"""Users and what the graph knows of them: preferences, interactions, location."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any, LiteralString

import strawberry

from api import queries as q
from api.auth import allowed
from api.context import Context
from api.prefetch import (
    EVENTS_FIRST,
    PREFERENCES_FIRST,
    RECOMMENDATIONS_FIRST,
    Prefetched,
    Wanted,
    wanted,
)
from api.types.activity import (
    Interaction,
    InteractionType,
    Session,
    TimeOrder,
    interaction_page,
    session_page,
)
from api.types.connection import Connection, decode_time_cursor, paginate
from api.types.context_types import LocalEvent, WeatherObservation, native
from api.types.segment import Membership, Persona, Segment, WhyScore
from graph.auth import ANALYSTS
from graph.context.models import weather_lookback_hours
from graph.errors import InvalidInput, NotFound
from graph.ingest.aggregates import DECAY_PER_MS, INTEREST_SCORE
from graph.recommend.engine import as_utc, recommend_params
from graph.recommend.limits import MAX_ITEM_USERS
from graph.recommend.queries import POPULAR, RECOMMEND
from graph.settings import Settings

# The user's latest items whose other users are compared (see ``q.SIMILAR_USERS``).
SIMILAR_USER_ITEMS = 200

INTEREST = {t.value: score for t, score in INTEREST_SCORE.items()}


@strawberry.type
class Preference:
    category: str
    weight: float
    source: str = strawberry.field(description="explicit (stated) or inferred (from behaviour)")
    updated_at: datetime | None


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
                                       first=info.context.page(first))
        return [LocalEvent.from_record(r["event"]) for r in rows]


def confidence(distance: float | None, median: float | None) -> float | None:
    """How surely the user belongs to the segment: 1 at its centre, 0.5 at the median member's
    distance, falling towards 0 further out."""
    if distance is None or not median:
        return None
    return float(math.pow(2.0, -((distance / median) ** 2)))


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
    def from_row(cls, row: dict[str, Any]) -> UserPersona:
        persona = Persona.from_record(row["persona"])
        seg = row["segment"]
        segment = Segment.from_record(seg, row["persona"]) if seg else None
        return cls(id=persona.id, name=persona.name, description=persona.description,
                   confidence=confidence(row["distance"], seg.get("median_distance")
                                         if seg else None),
                   why=segment.why if segment else [], segment=segment)


@strawberry.type(description="A persona the user had, and when.")
class PersonaPeriod:
    persona: Persona
    valid_from: datetime
    valid_to: datetime | None = strawberry.field(description="Null while it is current.")
    run_id: str | None


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


def situation_window(now: datetime, settings: Settings, first: int) -> dict[str, Any]:
    """The situation's parameters besides the user (``SITUATION_OF_USER``)."""
    return {"now": now, "valid_hours": settings.weather_valid_hours,
            "lookback_hours": weather_lookback_hours(settings.weather_valid_hours),
            "days": settings.event_horizon_days, "events_first": first}


def situation_params(user_id: str, now: datetime, settings: Settings,
                     first: int) -> dict[str, Any]:
    """Parameters of ``queries.SITUATION``."""
    return {"id": user_id, **situation_window(now, settings, first)}


def profile_params(want: Wanted, settings: Settings, now: datetime) -> dict[str, Any]:
    """Parameters of ``queries.USER_PROFILE`` besides the user's id or identifier (also used
    by the API benchmark's plain Cypher). Parts not wanted get valid placeholders."""
    now = as_utc(now)  # one $now, for the situation and the recommendations alike
    params = {**situation_window(now, settings, want.events or EVENTS_FIRST),
              **recommend_params("", want.recommendations or RECOMMENDATIONS_FIRST, now)}
    del params["user_id"]
    params.update(want=want.flags(), preferences_first=want.preferences or PREFERENCES_FIRST)
    return params


def situation_from(loc: dict[str, Any] | None, weather_record: dict[str, Any] | None,
                   events: list[dict[str, Any]]) -> Situation | None:
    """The columns of ``SITUATION`` (also in ``USER_PROFILE``); no location, no situation."""
    if loc is None:
        return None
    weather = WeatherObservation.from_record(weather_record) if weather_record else None
    location = Location(id=strawberry.ID(loc["id"]), city=loc.get("city"),
                        country=loc.get("country"), latest_weather=weather)
    return Situation(location=location, current_weather=weather,
                     upcoming_events=[LocalEvent.from_record(e) for e in events])


async def situation(context: Context, user_id: str, now: datetime,
                    first: int = EVENTS_FIRST) -> Situation | None:
    rows = await context.rows(q.SITUATION,
                              **situation_params(user_id, now, context.settings, first))
    if not rows:
        return None
    return situation_from(rows[0]["location"], rows[0]["weather"], rows[0]["events"])


async def preferences_as_of(context: Context, user_id: str, as_of: datetime,
                            first: int) -> list[Preference]:
    """Preferences as they stood at ``as_of``, rebuilt from the interactions before it with
    the same rules ingestion applies (explicit: last feedback wins; inferred: interest shares)."""
    explicit = await context.rows(q.EXPLICIT_PREFERENCES_AS_OF, id=user_id, as_of=as_of)
    inferred = await context.rows(q.INFERRED_PREFERENCES_AS_OF, id=user_id, as_of=as_of,
                                  scores=INTEREST, decay_per_ms=DECAY_PER_MS)
    prefs = [Preference(category=r["category"], weight=r["weight"], source=source,
                        updated_at=native(r["updated_at"]))
             for source, rows in (("explicit", explicit), ("inferred", inferred))
             for r in rows]
    return prefs[:first]


@strawberry.type(description="An item suggested by graph traversal, with the reasons why.")
class Recommendation:
    item_id: strawberry.ID
    name: str
    category: str | None
    score: float
    reasons: list[str] = strawberry.field(
        description="Why: segment favourite, similar users' purchases, stated or inferred "
        "preference, weather or local events.")


MASKED_CHARS = 8


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


CONSENT_EXEMPT = ANALYSTS
"""Roles that see a user's personal fields whatever their personalization consent (analysis is
governed by the analytics consent, at segmentation). Chatbot keys (readers) do not."""


def withheld(user: User, info: strawberry.Info[Context, None]) -> bool:
    """The one consent policy of the API: a user who withdrew personalization consent shows a
    chatbot key no personal field (profile facts, persona and segments, location and situation,
    interactions, sessions, similar users, preferences); those answer null or empty."""
    principal = info.context.principal
    return not user.consents.personalization and (principal is None
                                                  or principal.role not in CONSENT_EXEMPT)


def _empty_page() -> Connection[Any]:
    return paginate([], 1, "none", key=str, node=lambda r: r)


@strawberry.type(description="A pseudonymous user profile. For a user who withdrew "
                 "personalization consent, a reader key gets no personal field: they answer "
                 "null or empty.")
class User:
    id: strawberry.ID
    first_seen: datetime | None
    last_seen: datetime | None
    stored_age_band: strawberry.Private[str | None]
    stored_gender: strawberry.Private[str | None]
    stored_locale: strawberry.Private[str | None]
    events: int
    purchases: int
    spend: float
    as_of: datetime | None = strawberry.field(
        description="The point in time persona and preferences answer for (null: now).")
    consents: Consents
    prefetched: strawberry.Private[Prefetched | None] = None

    @classmethod
    def from_record(cls, u: dict[str, Any], as_of: datetime | None = None,
                    prefetched: Prefetched | None = None) -> User:
        return cls(id=strawberry.ID(u["id"]), first_seen=native(u["first_seen"]),
                   last_seen=native(u["last_seen"]), stored_age_band=u["age_band"],
                   stored_gender=u["gender"], stored_locale=u["locale"],
                   events=u["events"] or 0,
                   purchases=u["purchases"] or 0, spend=u["spend"] or 0.0, as_of=as_of,
                   consents=Consents(
                       personalization=u.get("consent_personalization") is not False,
                       analytics=u.get("consent_analytics") is not False),
                   prefetched=prefetched)

    @strawberry.field
    def age_band(self, info: strawberry.Info[Context, None]) -> str | None:
        return None if withheld(self, info) else self.stored_age_band

    @strawberry.field
    def gender(self, info: strawberry.Info[Context, None]) -> str | None:
        return None if withheld(self, info) else self.stored_gender

    @strawberry.field
    def locale(self, info: strawberry.Info[Context, None]) -> str | None:
        return None if withheld(self, info) else self.stored_locale

    def _ahead(self) -> tuple[Wanted, dict[str, Any]] | None:
        return (self.prefetched.wanted, self.prefetched.row) if self.prefetched else None

    @strawberry.field(description="The persona (at `asOf` when the user was asked for then), "
                      "with confidence and the features that explain it.")
    async def persona(self, info: strawberry.Info[Context, None]) -> UserPersona | None:
        if withheld(self, info):
            return None
        if self.as_of is not None:
            rows = await info.context.rows(q.USER_PERSONA_AS_OF, id=self.id, as_of=self.as_of)
            return UserPersona.from_row(rows[0]) if rows else None
        row = await self._persona_row(info)
        return UserPersona.from_row(row) if row else None

    async def _persona_row(self, info: strawberry.Info[Context, None]) -> dict[str, Any] | None:
        ahead = self._ahead()
        if ahead and ahead[0].persona:
            return ahead[1] if ahead[1]["persona"] is not None else None
        return await info.context.loaders.persona.load(self.id)

    @strawberry.field(description="The user's leaf segment in the latest run, then each parent "
                      "up to the root.")
    async def segments(self, info: strawberry.Info[Context, None]) -> list[Segment]:
        if withheld(self, info):
            return []
        path = await info.context.loaders.segment_path.load(self.id)
        return [Segment.from_record(r["segment"], r["persona"], r["parent_id"]) for r in path]

    @strawberry.field(description="Personas the user has had, newest first.")
    async def persona_history(self, info: strawberry.Info[Context, None], first: int = 10,
                              after: str | None = None) -> Connection[PersonaPeriod]:
        if withheld(self, info):
            return _empty_page()
        size = info.context.page(first)
        after_at, after_id = decode_time_cursor("period", after)
        rows = await info.context.rows(q.PERSONA_HISTORY, id=self.id, after_at=after_at,
                                       after_id=after_id, limit=size + 1)
        return paginate(rows, size, "period",
                        key=lambda r: f"{r['at_ms']}|{r['persona']['id']}",
                        node=lambda r: PersonaPeriod(
                            persona=Persona.from_record(r["persona"]),
                            valid_from=r["valid_from"].to_native(),
                            valid_to=native(r["valid_to"]), run_id=r["run_id"]))

    @strawberry.field(description="Users with the most similar item sets (co-interaction).")
    async def similar_users(self, info: strawberry.Info[Context, None],
                            first: int = 5) -> list[SimilarUser]:
        if withheld(self, info):
            return []
        rows = await info.context.rows(q.SIMILAR_USERS, id=self.id, first=info.context.page(first),
                                       max_item_users=MAX_ITEM_USERS,
                                       recent_items=SIMILAR_USER_ITEMS)
        return [SimilarUser(id=strawberry.ID(r["id"]), shared_items=r["shared"],
                            similarity=r["similarity"]) for r in rows]

    @strawberry.field(description="Items to suggest, best first, each with its reasons "
                      "(at `asOf` for the context boost when given). Without personalization "
                      "consent: the best-sellers, the same for everyone.")
    async def recommendations(self, info: strawberry.Info[Context, None],
                              first: int = RECOMMENDATIONS_FIRST) -> list[Recommendation]:
        ahead = self._ahead()
        if ahead and ahead[0].recommendations == first and self.consents.personalization:
            rows = ahead[1]["recommendations"]
        elif not self.consents.personalization:
            # Nothing of the user is read: the same best-sellers everyone is offered.
            rows = await info.context.rows(POPULAR, user_id=self.id,
                                           first=info.context.page(first), personal=False)
        else:
            params = recommend_params(self.id, info.context.page(first), self.as_of)
            rows = await info.context.rows(RECOMMEND, **params)
        return [Recommendation(item_id=strawberry.ID(r["item_id"]), name=r["name"],
                               category=r["category"], score=r["score"],
                               reasons=list(r["reasons"])) for r in rows]

    @strawberry.field(description="The situation now: location, current weather, upcoming "
                      "local events.")
    async def context(self, info: strawberry.Info[Context, None],
                      first_events: int = EVENTS_FIRST) -> Situation | None:
        if withheld(self, info):
            return None
        ahead = self._ahead()
        if ahead and ahead[0].events == first_events:
            row = ahead[1]
            return situation_from(row["location"], row["weather"], row["upcoming_events"])
        now = self.as_of or datetime.now(UTC)
        return await situation(info.context, self.id, now, info.context.page(first_events))

    @strawberry.field(description="Persona and leaf segment from the latest segmentation.",
                      deprecation_reason="Use `persona` (with confidence) and `segments`.")
    async def membership(self, info: strawberry.Info[Context, None]) -> Membership | None:
        if withheld(self, info):
            return None
        row = await self._persona_row(info)
        if row is None:
            return None
        segment = Segment.from_record(row["segment"], row["persona"])
        return Membership(persona=segment.persona, segment=segment, distance=row["distance"])

    @strawberry.field(description="Top category preferences, explicit ones first; none "
                      "without personalization consent.")
    async def preferences(self, info: strawberry.Info[Context, None],
                          first: int = PREFERENCES_FIRST) -> list[Preference]:
        if not self.consents.personalization:
            return []
        ahead = self._ahead()
        if self.as_of is not None:
            return await preferences_as_of(info.context, self.id, self.as_of,
                                           info.context.page(first))
        if ahead and ahead[0].preferences == first:
            rows = ahead[1]["prefs"]
        else:
            rows = await info.context.loaders.preferences.load((self.id,
                                                                info.context.page(first)))
        return [Preference(category=r["category"], weight=r["weight"] or 0.0,
                           source=r["source"], updated_at=native(r["updated_at"]))
                for r in rows]

    @strawberry.field(description="Most recent interactions first.",
                      deprecation_reason="Use `interactions`, a connection with filters.")
    async def recent_interactions(self, info: strawberry.Info[Context, None],
                                  first: int = 10) -> list[Interaction]:
        if withheld(self, info):
            return []
        rows = await info.context.rows(q.RECENT_INTERACTIONS, id=self.id,
                                       first=info.context.page(first))
        return [Interaction.from_record(r["interaction"]) for r in rows]

    @strawberry.field(description="Interactions, newest first by default, optionally of some "
                      "types and within [since, until).")
    async def interactions(self, info: strawberry.Info[Context, None], first: int = 20,
                           after: str | None = None,
                           types: list[InteractionType] | None = None,
                           since: datetime | None = None, until: datetime | None = None,
                           order: TimeOrder = TimeOrder.NEWEST_FIRST) -> Connection[Interaction]:
        if withheld(self, info):
            return _empty_page()
        size = info.context.page(first)
        after_at, after_id = decode_time_cursor("interaction", after)
        query = (q.USER_INTERACTIONS_NEWEST if order is TimeOrder.NEWEST_FIRST
                 else q.USER_INTERACTIONS_OLDEST)
        rows = await info.context.rows(
            query, id=self.id, types=[t.value for t in types] if types else None,
            since=utc_or_none(since, "since"), until=utc_or_none(until, "until"),
            after_at=after_at, after_id=after_id, limit=size + 1)
        return interaction_page(rows, size)

    @strawberry.field(description="Sessions, most recently started first.")
    async def sessions(self, info: strawberry.Info[Context, None], first: int = 10,
                       after: str | None = None) -> Connection[Session]:
        if withheld(self, info):
            return _empty_page()
        size = info.context.page(first)
        after_at, after_id = decode_time_cursor("session", after)
        rows = await info.context.rows(q.USER_SESSIONS, id=self.id, after_at=after_at,
                                       after_id=after_id, limit=size + 1)
        return session_page(rows, size)

    @strawberry.field(description="Identifiers the user is known by, masked (analysts and "
                      "admins only).", extensions=allowed(ANALYSTS))
    async def identifiers(self, info: strawberry.Info[Context, None]) -> list[Identifier]:
        rows = await info.context.rows(q.USER_IDENTIFIERS, id=self.id)
        return [Identifier(kind=r["kind"], masked=r["hash"][:MASKED_CHARS] + "…",
                           first_seen=native(r["first_seen"])) for r in rows]

    @strawberry.field(description="Where the user is, with the latest weather there.",
                      deprecation_reason="Use `context`: current weather within its validity "
                      "window, and upcoming events.")
    async def location(self, info: strawberry.Info[Context, None]) -> Location | None:
        if withheld(self, info):
            return None
        rows = await info.context.rows(q.LOCATION, id=self.id)
        if not rows:
            return None
        loc, weather = rows[0]["location"], rows[0]["weather"]
        return Location(id=strawberry.ID(loc["id"]), city=loc.get("city"),
                        country=loc.get("country"),
                        latest_weather=WeatherObservation.from_record(weather) if weather else None)


async def user_with_profile(info: strawberry.Info[Context, None], query: LiteralString,
                            missing: str, **params: Any) -> User:
    """The user ``query`` (``USER_PROFILE`` or ``USER_PROFILE_BY_IDENTIFIER``) finds, with what
    the request selects of them fetched in the same round trip; NotFound (``missing``) if none."""
    want = wanted(info, info.context.settings.api_max_page_size)
    rows = await info.context.rows(
        query, **params, **profile_params(want, info.context.settings, datetime.now(UTC)))
    if not rows:
        raise NotFound(missing)
    return User.from_record(rows[0], prefetched=Prefetched(want, rows[0]))
