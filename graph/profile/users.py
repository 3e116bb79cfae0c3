"""Reads of users: who they are, their persona (now or at a point in time), preferences,
situation, similar users, recommendations and activity. The batched reads (``*_of``) answer
many users in one round trip."""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from graph.aggregates import DECAY_PER_MS, INTEREST_SCORE
from graph.db import Reader
from graph.errors import NotFound
from graph.profile import queries as q
from graph.profile.model import (
    FILTERED_PAGE_SCAN,
    Identifier,
    Interaction,
    LocalEvent,
    Location,
    Page,
    PersonaPeriod,
    PersonaRecord,
    Preference,
    SegmentRecord,
    Session,
    SimilarUser,
    Situation,
    UserPersona,
    UserRecord,
    Weather,
    native,
    page,
    scanned_page,
)
from graph.recommend.engine import Recommendation, WhatIf, now_param, recommend_params
from graph.recommend.limits import MAX_ITEM_USERS
from graph.recommend.queries import POPULAR, RECOMMEND
from graph.settings import Settings
from graph.situation.models import weather_lookback_hours

SIMILAR_USER_ITEMS = 200
"""The user's latest items whose other users are compared (see ``queries.SIMILAR_USERS``)."""
MASKED_CHARS = 8
"""How much of an identifier's keyed hash is shown."""
INTEREST = {t.value: score for t, score in INTEREST_SCORE.items()}
AS_OF_EPSILON = 1e-6
"""The decay factor below which an interaction's interest no longer shows in an ``asOf`` share
(weights are served to a few decimals): 20 half-lives, about 600 days."""
AS_OF_HORIZON_MS = math.ceil(math.log(1 / AS_OF_EPSILON) / DECAY_PER_MS)
"""How far before the user's newest interaction an ``asOf`` rebuild reads."""
AS_OF_MAX_INTERACTIONS = 2000
"""The newest interactions before ``asOf`` a rebuild reads at most: an ``asOf`` read costs the
same for a user with years of history. A user with more interactions than this is rebuilt
from the newest of them only. Chat evidence counts a preference's events among as many."""
RECENT_INTENT_SCAN = 500
"""The newest interactions in the window that a recent-intent read looks through at most."""
EVER = datetime(1, 1, 1, tzinfo=UTC)
NEVER = datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC)
"""The time range of an interaction read that sets no bound (see ``queries.py``)."""


def _time_range(since: datetime | None, until: datetime | None, after_at: int | None,
                newest_first: bool) -> tuple[datetime, datetime]:
    """The inclusive time range a page of interactions seeks (``lower``, ``upper``): within
    ``since`` and ``until``, and from the cursor's time on in the page's direction."""
    low, high = since or EVER, until or NEVER
    if after_at is not None:
        cursor = datetime.fromtimestamp(after_at / 1000, UTC)
        if newest_first:
            high = min(high, cursor)
        else:
            low = max(low, cursor)
    return low, high


async def user(reader: Reader, user_id: str) -> UserRecord:
    """The user ``user_id`` names, following merges to the survivor; NotFound otherwise. Later
    reads must use the record's ``id``: it is the survivor's."""
    rows = await reader.rows(q.USER, id=user_id)
    if not rows:
        raise NotFound(f"no user with id {user_id!r}")
    return UserRecord.from_row(rows[0])


async def user_by_identifier(reader: Reader, kind: str, digest: str) -> UserRecord | None:
    """The user an identifier (its kind and keyed hash) belongs to."""
    rows = await reader.rows(q.USER_BY_IDENTIFIER, kind=kind, hash=digest)
    return UserRecord.from_row(rows[0]) if rows else None


async def users_page(reader: Reader, *, after: str, size: int, persona_id: str | None,
                     segment_id: str | None, last_seen_after: datetime | None,
                     ) -> Page[UserRecord]:
    """Users in id order after ``after``, optionally of one persona (latest run) or segment,
    or last seen after a time. A filtered page examines at most ``FILTERED_PAGE_SCAN`` users:
    it may hold fewer than ``size`` (even none) and still have more, going on after the last
    examined."""
    filtered = persona_id is not None or segment_id is not None or last_seen_after is not None
    scan = max(size + 1, FILTERED_PAGE_SCAN) if filtered else size + 1
    rows = await reader.rows(q.USERS_PAGE, after=after, limit=size + 1, scan=scan,
                             persona_id=persona_id, segment_id=segment_id,
                             last_seen_after=last_seen_after)
    return scanned_page(rows, size, scan, lambda r: str(r["id"]), UserRecord.from_row)


async def _by_id(reader: Reader, query: Any, ids: Sequence[str],
                 **params: Any) -> dict[str, dict[str, Any]]:
    return {r["id"]: r for r in await reader.rows(query, ids=list(dict.fromkeys(ids)),
                                                  **params)}


async def personas_of(reader: Reader, ids: Sequence[str]) -> dict[str, UserPersona]:
    """Each user's persona in the latest run that includes them (users without one left out)."""
    return {i: UserPersona.from_row(r) for i, r in (await _by_id(reader, q.USERS_PERSONA,
                                                                 ids)).items()}


async def segment_paths_of(reader: Reader, ids: Sequence[str]) -> dict[str, list[SegmentRecord]]:
    """Each user's leaf segment of the latest run, then each parent up to the root."""
    found = await _by_id(reader, q.USERS_SEGMENT_PATH, ids)
    return {i: [SegmentRecord.from_row(p["segment"], p["persona"], p["parent_id"])
                for p in r["path"]] for i, r in found.items()}


async def preferences_of(reader: Reader, ids: Sequence[str],
                         first: int) -> dict[str, list[Preference]]:
    """Each user's first ``first`` preferences, explicit ones first."""
    found = await _by_id(reader, q.USERS_PREFERENCES, ids, preferences_first=first)
    return {i: [Preference.from_row(p) for p in r["prefs"]] for i, r in found.items()}


async def persona_as_of(reader: Reader, user_id: str, as_of: datetime) -> UserPersona | None:
    """The persona the user had at ``as_of`` (persona history), with the segment of that run."""
    rows = await reader.rows(q.USER_PERSONA_AS_OF, id=user_id, as_of=as_of)
    return UserPersona.from_row(rows[0]) if rows else None


async def preferences_as_of(reader: Reader, user_id: str, as_of: datetime,
                            first: int) -> list[Preference]:
    """Preferences as they stood at ``as_of``, rebuilt from the interactions before it with
    the same rules ingestion applies (explicit: last feedback wins; inferred: interest shares),
    reading at most ``AS_OF_MAX_INTERACTIONS`` of them within ``AS_OF_HORIZON_MS``."""
    explicit = await reader.rows(q.EXPLICIT_PREFERENCES_AS_OF, id=user_id, as_of=as_of,
                                 max_interactions=AS_OF_MAX_INTERACTIONS)
    inferred = await reader.rows(q.INFERRED_PREFERENCES_AS_OF, id=user_id, as_of=as_of,
                                 scores=INTEREST, decay_per_ms=DECAY_PER_MS,
                                 max_interactions=AS_OF_MAX_INTERACTIONS,
                                 horizon_ms=AS_OF_HORIZON_MS)
    prefs = [Preference(category=r["category"], weight=r["weight"], source=source,
                        updated_at=native(r["updated_at"]))
             for source, rows in (("explicit", explicit), ("inferred", inferred))
             for r in rows]
    return prefs[:first]


async def explicit_preference(reader: Reader, user_id: str, category: str) -> Preference:
    """The preference the user stated for ``category`` (as stored: the latest by time)."""
    [row] = await reader.rows(q.EXPLICIT_PREFERENCE, id=user_id, category=category)
    return Preference(category=category, weight=row["weight"], source="explicit",
                      updated_at=row["updated_at"].to_native())


async def persona_history(reader: Reader, user_id: str, *, after_at: int | None,
                          after_id: str | None, size: int) -> Page[PersonaPeriod]:
    """Personas the user has had, newest first; keys are ``epoch ms|persona id``."""
    _, high = _time_range(None, None, after_at, True)
    rows = await reader.rows(q.PERSONA_HISTORY, id=user_id, after_at=after_at,
                             after_id=after_id, limit=size + 1, upper=high)
    return page(rows, size, lambda r: f"{r['at_ms']}|{r['persona']['id']}",
                lambda r: PersonaPeriod(persona=PersonaRecord.from_row(r["persona"]),
                                        valid_from=r["valid_from"].to_native(),
                                        valid_to=native(r["valid_to"]), run_id=r["run_id"]))


async def similar_users(reader: Reader, user_id: str, first: int) -> list[SimilarUser]:
    """Users with the most similar item sets (Jaccard overlap), most similar first."""
    rows = await reader.rows(q.SIMILAR_USERS, id=user_id, first=first,
                             max_item_users=MAX_ITEM_USERS, recent_items=SIMILAR_USER_ITEMS)
    return [SimilarUser(id=r["id"], shared_items=r["shared"], similarity=r["similarity"])
            for r in rows]


async def recommendations(reader: Reader, user_id: str, first: int, *, personal: bool,
                          now: datetime | None = None,
                          what_if: WhatIf | None = None) -> list[Recommendation]:
    """Items to suggest, best first, with their reasons (``now``: the time for the context
    boost; ``what_if``: a supposed situation instead of the real one). Without ``personal`` (no
    personalization consent) nothing of the user is read: the same best-sellers everyone is
    offered, whatever the situation."""
    if not personal:
        rows = await reader.rows(POPULAR, user_id=user_id, first=first, personal=False)
    else:
        rows = await reader.rows(RECOMMEND, **recommend_params(user_id, first, now, what_if))
    return [Recommendation(r["item_id"], r["name"], r["category"], r["score"], list(r["reasons"]))
            for r in rows]


def situation_window(now: datetime, settings: Settings, first: int) -> dict[str, Any]:
    """The situation's parameters besides the user (``SITUATION_OF_USER``)."""
    return {"now": now_param(now), "valid_hours": settings.weather_valid_hours,
            "lookback_hours": weather_lookback_hours(settings.weather_valid_hours),
            "days": settings.event_horizon_days, "events_first": first}


async def situation(reader: Reader, settings: Settings, user_id: str, now: datetime,
                    first: int) -> Situation | None:
    """Where the user is at ``now``: the weather still valid then and the next ``first`` local
    events; None without a location."""
    rows = await reader.rows(q.SITUATION, id=user_id, **situation_window(now, settings, first))
    if not rows:
        return None
    return Situation.from_columns(rows[0]["location"], rows[0]["weather"], rows[0]["events"])


async def location(reader: Reader, user_id: str) -> Location | None:
    """Where the user is, with the latest weather observed there (whatever its validity)."""
    rows = await reader.rows(q.LOCATION, id=user_id)
    if not rows:
        return None
    loc, weather = rows[0]["location"], rows[0]["weather"]
    return Location(id=loc["id"], city=loc.get("city"), country=loc.get("country"),
                    latest_weather=Weather.from_row(weather) if weather else None)


async def upcoming_events(reader: Reader, location_id: str, first: int) -> list[LocalEvent]:
    """Local events at a location starting from now, soonest first."""
    rows = await reader.rows(q.UPCOMING_EVENTS, location_id=location_id, first=first)
    return [LocalEvent.from_row(r["event"]) for r in rows]


async def recent_intent(reader: Reader, user_id: str, now: datetime, days: int,
                        first: int) -> list[dict[str, Any]]:
    """The user's latest searches, chat intents and categories within ``days`` before ``now``,
    as recorded by ``now``, newest first (type, query, intent, category, event id and time)."""
    return await reader.rows(q.RECENT_INTENT, id=user_id, since=now - timedelta(days=days),
                             until=now, first=first, scan=RECENT_INTENT_SCAN)


def _interaction_page(rows: list[dict[str, Any]], size: int) -> Page[Interaction]:
    return page(rows, size, lambda r: f"{r['at_ms']}|{r['interaction']['event_id']}",
                lambda r: Interaction.from_row(r["interaction"]))


async def recent_interactions(reader: Reader, user_id: str, first: int) -> list[Interaction]:
    rows = await reader.rows(q.RECENT_INTERACTIONS, id=user_id, first=first)
    return [Interaction.from_row(r["interaction"]) for r in rows]


async def interactions(reader: Reader, user_id: str, *, newest_first: bool,
                       types: list[str] | None, since: datetime | None, until: datetime | None,
                       after_at: int | None, after_id: str | None,
                       size: int) -> Page[Interaction]:
    """The user's interactions of ``types`` (all: None) within [since, until), in time order;
    keys are ``epoch ms|event id``."""
    if types is None:
        query = q.USER_INTERACTIONS_NEWEST if newest_first else q.USER_INTERACTIONS_OLDEST
    else:  # each type read from its own seek: a type filter never passes over the others
        query = q.USER_TYPED_NEWEST if newest_first else q.USER_TYPED_OLDEST
        types = list(dict.fromkeys(types))
    low, high = _time_range(since, until, after_at, newest_first)
    rows = await reader.rows(query, id=user_id, types=types, since=since, until=until,
                             after_at=after_at, after_id=after_id, limit=size + 1,
                             lower=low, upper=high)
    return _interaction_page(rows, size)


async def session_interactions(reader: Reader, session_id: str, *, after_at: int | None,
                               after_id: str | None, size: int) -> Page[Interaction]:
    """A session's interactions, oldest first."""
    low, high = _time_range(None, None, after_at, False)
    rows = await reader.rows(q.SESSION_INTERACTIONS, id=session_id, after_at=after_at,
                             after_id=after_id, limit=size + 1, lower=low, upper=high)
    return _interaction_page(rows, size)


async def sessions(reader: Reader, user_id: str, *, after_at: int | None, after_id: str | None,
                   size: int) -> Page[Session]:
    """The user's sessions, most recently started first; keys are ``epoch ms|session id``."""
    _, high = _time_range(None, None, after_at, True)
    rows = await reader.rows(q.USER_SESSIONS, id=user_id, after_at=after_at, after_id=after_id,
                             limit=size + 1, upper=high)
    return page(rows, size, lambda r: f"{r['at_ms']}|{r['session']['id']}",
                lambda r: Session.from_row(r["session"]))


async def identifiers(reader: Reader, user_id: str) -> list[Identifier]:
    """The identifiers the user is known by: kinds and the start of their keyed hashes."""
    rows = await reader.rows(q.USER_IDENTIFIERS, id=user_id)
    return [Identifier(kind=r["kind"], masked=r["hash"][:MASKED_CHARS] + "…",
                       first_seen=native(r["first_seen"])) for r in rows]
