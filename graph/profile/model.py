"""What the read model returns: plain, immutable values built from the rows of
``graph.profile.queries`` (Neo4j times become ``datetime``, unmeasured numbers ``None``)."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, TypeVar

from graph.times import from_cypher_text

T = TypeVar("T")


def time_of(value: Any) -> datetime:
    """A time a statement returned, as a ``datetime``: a Neo4j temporal value, or its text
    (``toString``), which the chatbot's statement returns instead (``queries.USER_PROFILE``;
    ``graph.times.from_cypher_text``)."""
    return from_cypher_text(value) if isinstance(value, str) else value.to_native()


def native(value: Any) -> datetime | None:
    """``time_of`` a time that may be missing (None stays None)."""
    return time_of(value) if value is not None else None


def _number(value: float | None) -> float | None:
    return None if value is None or value != value else value  # NaN: not measured


@dataclass(frozen=True)
class Page(Generic[T]):
    """A page of a list fetched with one row more than asked: ``keys`` are each item's sort key
    (for the caller's cursors), ``has_more`` whether another page follows, ``end`` where the
    next page starts when that is not the last item's key (a page that stopped examining rows
    before it filled)."""

    items: list[T]
    keys: list[str]
    has_more: bool
    end: str | None = None


def page(rows: list[dict[str, Any]], size: int, key: Any, item: Any) -> Page[Any]:
    """A ``Page`` of ``rows`` fetched with ``LIMIT size + 1``."""
    kept = rows[:size]
    return Page([item(r) for r in kept], [key(r) for r in kept], len(rows) > size)


FILTERED_PAGE_SCAN = 5000
"""The most rows a filtered page of users or items examines after its cursor
(``queries.USERS_PAGE``, ``ITEMS_PAGE``): a filter few rows pass costs this, not the graph."""


def scanned_page(rows: list[dict[str, Any]], size: int, scan: int, key: Any,
                 item: Any) -> Page[Any]:
    """A ``Page`` from a statement that examined at most ``scan`` rows after the cursor and
    kept ``size + 1`` of those passing its filter (each row says how many it ``scanned`` and
    the ``last_scanned`` key; a row with a null ``id`` only carries those). When the scan ran
    out before the page filled, more may follow after the last examined row."""
    found = page([r for r in rows if r["id"] is not None], size, key, item)
    if found.has_more or not rows or rows[0]["scanned"] < scan:
        return found
    return Page(found.items, found.keys, True, end=str(rows[0]["last_scanned"]))


@dataclass(frozen=True)
class Consents:
    """What the user agreed their data may be used for; a purpose never stated counts as
    granted."""

    personalization: bool
    analytics: bool


@dataclass(frozen=True)
class UserRecord:
    id: str
    first_seen: datetime | None
    last_seen: datetime | None
    age_band: str | None
    gender: str | None
    locale: str | None
    events: int
    purchases: int
    spend: float
    consents: Consents

    @classmethod
    def from_row(cls, u: dict[str, Any]) -> UserRecord:
        return cls(id=u["id"], first_seen=native(u["first_seen"]),
                   last_seen=native(u["last_seen"]), age_band=u["age_band"],
                   gender=u["gender"], locale=u["locale"], events=u["events"] or 0,
                   purchases=u["purchases"] or 0, spend=u["spend"] or 0.0,
                   consents=Consents(
                       personalization=u.get("consent_personalization") is not False,
                       analytics=u.get("consent_analytics") is not False))


@dataclass(frozen=True)
class PersonaRecord:
    id: str
    name: str
    description: str

    @classmethod
    def from_row(cls, p: dict[str, Any]) -> PersonaRecord:
        return cls(id=p["id"], name=p["name"], description=p["description"])


@dataclass(frozen=True)
class SegmentRecord:
    id: str
    label: str
    description: str
    size: int
    level: int
    run_id: str
    why: list[tuple[str, float]]
    """Features on which the segment differs most from everyone: (feature, z-score)."""
    persona: PersonaRecord | None
    parent_id: str | None
    stability: float | None
    median_distance: float | None

    @classmethod
    def from_row(cls, s: dict[str, Any], persona: dict[str, Any] | None,
                 parent_id: str | None = None) -> SegmentRecord:
        return cls(id=s["id"], label=s["label"], description=s["description"], size=s["size"],
                   level=s["level"], run_id=s["run_id"],
                   why=[(f, z) for f, z in json.loads(s.get("why") or "[]")],
                   persona=PersonaRecord.from_row(persona) if persona else None,
                   parent_id=parent_id or None, stability=_number(s.get("stability")),
                   median_distance=s.get("median_distance"))


def confidence(distance: float | None, median: float | None) -> float | None:
    """How surely the user belongs to the segment: 1 at its centre, 0.5 at the median member's
    distance, falling towards 0 further out."""
    if distance is None or not median:
        return None
    return float(math.pow(2.0, -((distance / median) ** 2)))


@dataclass(frozen=True)
class UserPersona:
    """The user's persona, their segment of that run, and how surely they belong to it."""

    persona: PersonaRecord
    segment: SegmentRecord | None
    distance: float | None
    confidence: float | None
    run_id: str | None = None
    """The segmentation run that gave the user this persona."""

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> UserPersona:
        seg = row["segment"]
        segment = SegmentRecord.from_row(seg, row["persona"]) if seg else None
        return cls(persona=PersonaRecord.from_row(row["persona"]), segment=segment,
                   distance=row["distance"],
                   confidence=confidence(row["distance"],
                                         segment.median_distance if segment else None),
                   run_id=row.get("run_id") or (segment.run_id if segment else None))


@dataclass(frozen=True)
class Preference:
    category: str
    weight: float
    source: str
    """explicit (stated) or inferred (from behaviour)."""
    updated_at: datetime | None

    @classmethod
    def from_row(cls, r: dict[str, Any]) -> Preference:
        return cls(category=r["category"], weight=r["weight"] or 0.0, source=r["source"],
                   updated_at=native(r["updated_at"]))


@dataclass(frozen=True)
class Weather:
    at: datetime
    temp_c: float
    condition: str
    valid_until: datetime | None
    id: str | None = None
    """The observation's id (the situation's reads return it)."""

    @classmethod
    def from_row(cls, w: dict[str, Any]) -> Weather:
        return cls(at=time_of(w["at"]), temp_c=w["temp_c"], condition=w["condition"],
                   valid_until=native(w.get("valid_until")), id=w.get("id"))


@dataclass(frozen=True)
class LocalEvent:
    id: str
    name: str
    starts_at: datetime
    ends_at: datetime | None

    @classmethod
    def from_row(cls, e: dict[str, Any]) -> LocalEvent:
        return cls(id=e["id"], name=e["name"], starts_at=time_of(e["starts_at"]),
                   ends_at=native(e.get("ends_at")))


@dataclass(frozen=True)
class Location:
    id: str
    city: str | None
    country: str | None
    latest_weather: Weather | None


@dataclass(frozen=True)
class Situation:
    """Where the user is and what is going on there."""

    location: Location
    current_weather: Weather | None
    upcoming_events: list[LocalEvent]

    @classmethod
    def from_columns(cls, loc: dict[str, Any] | None, weather: dict[str, Any] | None,
                     events: list[dict[str, Any]]) -> Situation | None:
        """The columns of ``SITUATION`` (also in ``USER_PROFILE``); no location, no
        situation."""
        if loc is None:
            return None
        now = Weather.from_row(weather) if weather else None
        return cls(location=Location(id=loc["id"], city=loc.get("city"),
                                     country=loc.get("country"), latest_weather=now),
                   current_weather=now, upcoming_events=[LocalEvent.from_row(e) for e in events])


@dataclass(frozen=True)
class PersonaPeriod:
    persona: PersonaRecord
    valid_from: datetime
    valid_to: datetime | None
    run_id: str | None


@dataclass(frozen=True)
class SimilarUser:
    id: str
    shared_items: int
    similarity: float


@dataclass(frozen=True)
class Interaction:
    event_id: str
    type: str
    at: datetime
    item_id: str | None
    category: str | None
    amount: float | None
    query: str | None
    text: str | None
    intent: str | None
    rating: int | None

    @classmethod
    def from_row(cls, i: dict[str, Any]) -> Interaction:
        return cls(event_id=i["event_id"], type=i["type"], at=i["at"].to_native(),
                   item_id=i.get("item_id"), category=i.get("category"),
                   amount=i.get("amount"), query=i.get("query"), text=i.get("text"),
                   intent=i.get("intent"), rating=i.get("rating"))


@dataclass(frozen=True)
class Session:
    id: str
    started_at: datetime | None
    ended_at: datetime | None
    events: int
    channel: str | None
    device_kind: str | None

    @classmethod
    def from_row(cls, s: dict[str, Any]) -> Session:
        return cls(id=s["id"], started_at=native(s.get("started_at")),
                   ended_at=native(s.get("ended_at")), events=s.get("events") or 0,
                   channel=s.get("channel"), device_kind=s.get("device_kind"))


@dataclass(frozen=True)
class Identifier:
    kind: str
    masked: str
    first_seen: datetime | None


@dataclass(frozen=True)
class PersonaSummary:
    """A persona with its leaf segment in the latest run (none if that run did not find it)."""

    persona: PersonaRecord
    size: int
    segment_id: str | None

    @classmethod
    def from_row(cls, r: dict[str, Any]) -> PersonaSummary:
        return cls(persona=PersonaRecord.from_row(r["persona"]), size=r["size"] or 0,
                   segment_id=r["segment_id"] or None)


@dataclass(frozen=True)
class Member:
    user: UserRecord
    distance: float


@dataclass(frozen=True)
class CategoryShare:
    category: str
    weight: float


@dataclass(frozen=True)
class PopularItem:
    id: str
    name: str | None
    category: str | None
    purchases: int
    users: int


@dataclass(frozen=True)
class SegmentationRun:
    id: str
    created_at: datetime
    algorithm: str
    k: int
    n_users: int
    silhouette: float | None
    k_reason: str
    ari_vs_previous: float | None
    users_moved: int | None
    new_personas: int | None
    features: list[str]
    code_version: str | None
    stability: float | None
    clear_structure: bool | None
    warnings: list[str]
    topics: list[str]

    @classmethod
    def from_row(cls, r: dict[str, Any]) -> SegmentationRun:
        return cls(id=r["id"], created_at=r["created_at"].to_native(),
                   algorithm=r["algorithm"], k=r["k"], n_users=r["n_users"],
                   silhouette=_number(r.get("silhouette")), k_reason=r["k_reason"],
                   ari_vs_previous=r.get("ari_vs_previous"), users_moved=r.get("users_moved"),
                   new_personas=r.get("new_personas"), features=list(r.get("features") or []),
                   code_version=r.get("code_version"), stability=_number(r.get("stability_ari")),
                   clear_structure=r.get("clear_structure"),
                   warnings=list(r.get("warnings") or []), topics=list(r.get("topics") or []))


@dataclass(frozen=True)
class CurrentPersona:
    """The user's open persona period."""

    persona: PersonaRecord
    valid_from: datetime
    run_id: str | None


@dataclass(frozen=True)
class Item:
    id: str
    name: str | None
    price: float | None
    category: str | None
    brand: str | None
    buyers: int

    @classmethod
    def from_row(cls, r: dict[str, Any]) -> Item:
        return cls(id=r["id"], name=r["name"], price=r["price"], category=r["category"],
                   brand=r["brand"], buyers=r["buyers"])


@dataclass(frozen=True)
class CategoryCount:
    name: str
    items: int
