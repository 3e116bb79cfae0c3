"""Recommendations for one user, by graph traversal, each with the reasons behind it.

``recommend`` runs ``queries.RECOMMEND`` (see there for how candidates are found and scored);
``popular`` runs the global-popularity baseline the offline evaluation (`make bench-recommend`)
compares it with. Both are synchronous; the API runs the same Cypher through its async driver with
``recommend_params``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from graph.db import Graph
from graph.errors import InvalidInput, NotFound
from graph.recommend import queries as q
from graph.recommend.limits import LIMITS

MAX_FIRST = 100

# How much each signal adds to an item's score (see queries.RECOMMEND; tuned on the validation
# split, `make bench-recommend --validate`, and an offline check on MovieLens's; see
# docs/performance.md), and the smallest category weight that counts as a preference (a
# reason, and a source of candidates). `item` and `similar` are only the defaults: each
# segmentation run learns its own pair on its data (``blend``), which the request reads.
WEIGHTS: dict[str, float] = {
    "segment": 0.25,
    "similar": 2.0,
    "item": 0.5,
    "preference": 0.25,
    "popularity": 0.2,
    "context": 0.1,
    "preference_min": 0.15,
}

# Which categories the situation at the user's location makes more fitting. The weather is the
# latest observation at most `weather_valid_hours` before now: its `condition` picks a row of
# `weather`, and its temperature adds `cold` (at or below `cold_below_c`) or `warm` (at or above
# `warm_from_c`). A local event starting within `event_horizon_days` adds the categories of each
# kind its name contains (LocalEvent nodes carry no kind of their own: "Berlin concert").
CONTEXT_BOOSTS: dict[str, Any] = {
    "weather_valid_hours": 6,
    "event_horizon_days": 7,
    "weather": {
        "rain": ["home & garden", "books", "electronics"],
        "snow": ["home & garden", "books", "electronics"],
        "fog": ["books"],
        "clear": ["sports", "fashion"],
        "cloudy": [],
    },
    "cold_below_c": 5.0,
    "cold": ["home & garden", "books", "electronics"],
    "warm_from_c": 22.0,
    "warm": ["sports", "fashion"],
    "event_kinds": {
        "concert": ["fashion", "beauty"],
        "festival": ["fashion", "beauty", "sports"],
        "football match": ["sports"],
        "market": ["grocery", "home & garden"],
        "trade fair": ["electronics", "books"],
    },
}


MAX_EVENT_NAME = 100
"""Longest supposed event name: it is quoted back in the reasons."""


@dataclass(frozen=True)
class WhatIf:
    """A situation to rank for instead of the real one (counterfactual context): a weather
    (``condition`` and/or ``temp_c``) replaces the weather at the user's place, a ``local_event``
    (by name, whose kind decides what it favours) replaces the events coming up there. What is
    not supposed stays as it really is; only the context term of the score changes, so only
    items whose category the real or supposed situation favours move."""

    condition: str | None = None
    temp_c: float | None = None
    local_event: str | None = None

    def __post_init__(self) -> None:
        conditions = CONTEXT_BOOSTS["weather"]
        if self.condition is not None and self.condition not in conditions:
            raise InvalidInput(f"unknown weather {self.condition!r}; one of "
                               f"{', '.join(conditions)}")
        if self.temp_c is not None and not -90.0 <= self.temp_c <= 60.0:
            raise InvalidInput(f"a temperature of {self.temp_c} °C is not on Earth")
        if self.local_event is not None and not 0 < len(self.local_event.strip()) \
                <= MAX_EVENT_NAME:
            raise InvalidInput(f"`localEvent` must have 1 to {MAX_EVENT_NAME} characters")

    def param(self) -> dict[str, Any]:
        """``$what_if`` of ``queries.RECOMMEND``."""
        return {"weather": self.condition, "temp_c": self.temp_c,
                "supposes_weather": self.condition is not None or self.temp_c is not None,
                "local_event": " ".join(self.local_event.split()) if self.local_event else None}


@dataclass(frozen=True)
class Recommendation:
    item_id: str
    name: str
    category: str | None
    score: float
    reasons: list[str]


def check_first(first: int) -> int:
    """How many recommendations may be asked for at once: 1 to ``MAX_FIRST``."""
    if not 1 <= first <= MAX_FIRST:
        raise InvalidInput(f"first must be between 1 and {MAX_FIRST}, got {first}")
    return first


def as_utc(at: datetime | None) -> datetime:
    """``$now`` as the queries take it: a UTC datetime, the current time for None; naive
    datetimes count as UTC."""
    at = at or datetime.now(UTC)
    return at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)


def now_param(at: datetime | None) -> str:
    """``$now`` as the statements take it: the UTC instant ``as_utc`` gives, as ISO 8601 text
    to the microsecond (``2026-12-07T12:00:00.000001+00:00``), which the Cypher turns into a
    datetime once (``datetime($now)``): the same instant, so comparisons with stored times
    are unchanged. The driver converts a datetime parameter in Python, through its own
    temporal types, at a cost in CPU per query far above that of text (docs/performance.md)."""
    return as_utc(at).isoformat(timespec="microseconds")


def recommend_params(user_id: str, first: int = 10, now: datetime | None = None,
                     what_if: WhatIf | None = None) -> dict[str, Any]:
    """Every parameter ``queries.RECOMMEND`` needs, checked (``first`` within 1..100)."""
    return {"user_id": user_id, "recommendations_first": check_first(first), "now": now_param(now),
            "weights": WEIGHTS, "context": CONTEXT_BOOSTS, "limits": LIMITS,
            "what_if": what_if.param() if what_if is not None else None}


def _results(graph: Graph, rows: list[dict[str, Any]], user_id: str) -> list[Recommendation]:
    if not rows and not graph.rows(q.USER_EXISTS, user_id=user_id):
        raise NotFound(f"no user {user_id!r}")
    return [Recommendation(r["item_id"], r["name"], r["category"], float(r["score"]),
                           list(r["reasons"])) for r in rows]


def recommend(graph: Graph, user_id: str, first: int = 10, now: datetime | None = None,
              what_if: WhatIf | None = None) -> list[Recommendation]:
    """Up to ``first`` items the user has neither bought nor rated, best first, each with its
    reasons.

    ``now`` (default: the current time) decides which weather and local events count;
    ``what_if`` supposes another weather or event instead (``WhatIf``). Raises
    ``NotFound`` for an unknown user and ``InvalidInput`` when ``first`` is outside 1..100.
    """
    rows = graph.rows(q.RECOMMEND, **recommend_params(user_id, first, now, what_if))
    return _results(graph, rows, user_id)


def popular(graph: Graph, user_id: str, first: int = 10) -> list[Recommendation]:
    """The baseline: the items bought by the most distinct users, without those this user
    bought or rated.

    Raises ``NotFound`` for an unknown user and ``InvalidInput`` when ``first`` is outside 1..100.
    """
    rows = graph.rows(q.POPULAR, user_id=user_id, first=check_first(first), personal=True)
    return _results(graph, rows, user_id)
