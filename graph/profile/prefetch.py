"""One user with everything a chatbot asks of them, in one round trip (``USER_PROFILE``).

A chatbot's question (persona, preferences, situation, recommendations) cost five round trips,
and each costs the API about a millisecond of CPU in the driver; see docs/performance.md. The
caller says which parts it wants (``Wanted``); each comes back as the field-by-field reads of
``graph.profile.users`` would return it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from graph.db import Reader
from graph.profile import queries as q
from graph.profile.model import Preference, Situation, UserPersona, UserRecord
from graph.profile.users import situation_window
from graph.recommend.engine import Recommendation, as_utc, recommend_params
from graph.settings import Settings

# The page sizes the user's parts default to.
PREFERENCES_FIRST = 5
EVENTS_FIRST = 5
RECOMMENDATIONS_FIRST = 5


@dataclass(frozen=True)
class Wanted:
    """The parts of a user to fetch ahead, with their page sizes; None: not fetched ahead."""

    persona: bool = False
    preferences: int | None = None
    events: int | None = None
    recommendations: int | None = None

    def flags(self) -> dict[str, bool]:
        """``$want`` of ``queries.USER_PROFILE``."""
        return {"persona": self.persona, "preferences": self.preferences is not None,
                "situation": self.events is not None,
                "recommendations": self.recommendations is not None}


CHATBOT = Wanted(persona=True, preferences=PREFERENCES_FIRST, events=EVENTS_FIRST,
                 recommendations=RECOMMENDATIONS_FIRST)
"""Every part at its default page size: what a chatbot asks (planned at start, benchmarked)."""


@dataclass(frozen=True)
class Profile:
    """A user and the parts of them ``wanted`` asked for. Preferences and recommendations are
    empty without personalization consent (the query reads neither)."""

    user: UserRecord
    wanted: Wanted
    persona: UserPersona | None = None
    preferences: list[Preference] = field(default_factory=list)
    situation: Situation | None = None
    recommendations: list[Recommendation] = field(default_factory=list)


def profile_params(want: Wanted, settings: Settings, now: datetime) -> dict[str, Any]:
    """Parameters of ``queries.USER_PROFILE`` besides the user's id or identifier (also used
    by the API benchmark's plain Cypher). Parts not wanted get valid placeholders."""
    now = as_utc(now)  # one $now, for the situation and the recommendations alike
    params = {**situation_window(now, settings, want.events or EVENTS_FIRST),
              **recommend_params("", want.recommendations or RECOMMENDATIONS_FIRST, now)}
    del params["user_id"]
    params.update(want=want.flags(), preferences_first=want.preferences or PREFERENCES_FIRST)
    return params


def _profile(row: dict[str, Any], want: Wanted) -> Profile:
    return Profile(
        user=UserRecord.from_row(row), wanted=want,
        persona=UserPersona.from_row(row) if row["persona"] is not None else None,
        preferences=[Preference.from_row(r) for r in row["prefs"] or ()],
        situation=Situation.from_columns(row["location"], row["weather"],
                                         row["upcoming_events"] or []),
        recommendations=[Recommendation(r["item_id"], r["name"], r["category"], r["score"],
                                        list(r["reasons"]))
                         for r in row["recommendations"] or ()])


async def profile(reader: Reader, settings: Settings, want: Wanted, now: datetime, *,
                  user_id: str | None = None,
                  identifier: tuple[str, str] | None = None) -> Profile | None:
    """The user with ``user_id`` (merged-away ids find the survivor) or the identifier
    ``(kind, keyed hash)``, with the parts ``want`` names; None if there is no such user."""
    params = profile_params(want, settings, now)
    if identifier is not None:
        kind, digest = identifier
        rows = await reader.rows(q.USER_PROFILE_BY_IDENTIFIER, kind=kind, hash=digest, **params)
    else:
        rows = await reader.rows(q.USER_PROFILE, id=user_id, **params)
    return _profile(rows[0], want) if rows else None


async def plan_ahead(reader: Reader, settings: Settings, now: datetime) -> None:
    """Have Neo4j plan the chatbot's queries (by id and by identifier, every part), for a
    user that does not exist: a fresh server's first plan of them takes seconds."""
    params = profile_params(CHATBOT, settings, now)
    await reader.rows(q.USER_PROFILE, id="", **params)
    await reader.rows(q.USER_PROFILE_BY_IDENTIFIER, kind="", hash="", **params)
