"""Reads of personas and the segmentation behind them: personas of the latest run with their
members and favourites, segments, runs, and a user's current persona period."""

from __future__ import annotations

import math
from typing import Any, LiteralString

from graph.db import Reader
from graph.profile import queries as q
from graph.profile.model import (
    CategoryShare,
    CurrentPersona,
    Member,
    Page,
    PersonaRecord,
    PersonaSummary,
    PopularItem,
    SegmentationRun,
    SegmentRecord,
    UserRecord,
    page,
)

LIVE_TOPS_SAMPLE = 2000
"""The members nearest the centre whose aggregates make the top categories and items of a
segment from a run written before runs stored them (``queries.LIVE_PERSONA_TOP_*``)."""
LIVE_TOPS_ITEMS_PER_MEMBER = 100
"""The latest aggregates (items) of each of those members that count in a segment's top items
read live: a member's long history costs no more than this."""


async def personas(reader: Reader) -> list[PersonaSummary]:
    """Personas of the latest run, largest first."""
    return [PersonaSummary.from_row(r) for r in await reader.rows(q.PERSONAS)]


async def persona(reader: Reader, persona_id: str) -> PersonaSummary | None:
    """A persona by id, with its segment in the latest run (none if that run did not find it)."""
    rows = await reader.rows(q.PERSONA, id=persona_id)
    return PersonaSummary.from_row(rows[0]) if rows else None


async def members(reader: Reader, segment_id: str, *, after_distance: float | None,
                  after_id: str | None, size: int) -> Page[Member]:
    """A segment's members, most typical (nearest the centre) first; keys are
    ``distance|user id``. A page costs its size, whatever the segment's (an index seek)."""
    rows = await reader.rows(q.PERSONA_MEMBERS, segment_id=segment_id,
                             after_distance=(-math.inf if after_distance is None
                                             else after_distance),
                             after_id=after_id or "", limit=size + 1)
    return page(rows, size, lambda r: f"{r['distance']!r}|{r['id']}",
                lambda r: Member(UserRecord.from_row(r), r["distance"]))


async def top_categories(reader: Reader, segment_id: str, first: int) -> list[CategoryShare]:
    """The categories a segment's members favour most (mean inferred weight), as of its run."""
    rows = await _tops(reader, q.PERSONA_TOP_CATEGORIES, q.LIVE_PERSONA_TOP_CATEGORIES,
                       segment_id, first)
    return [CategoryShare(category=r["category"], weight=r["weight"]) for r in rows]


async def top_items(reader: Reader, segment_id: str, first: int) -> list[PopularItem]:
    """The items a segment's members buy most (then: interact with most), as of its run."""
    rows = await _tops(reader, q.PERSONA_TOP_ITEMS, q.LIVE_PERSONA_TOP_ITEMS, segment_id, first)
    return [PopularItem(id=r["id"], name=r["name"], category=r["category"],
                        purchases=r["purchases"] or 0, users=r["users"]) for r in rows]


async def _tops(reader: Reader, stored: LiteralString, live: LiteralString, segment_id: str,
                first: int) -> list[dict[str, Any]]:
    found = await reader.rows(stored, segment_id=segment_id, first=first)
    if not found:
        return []
    if found[0]["written"]:
        return list(found[0]["tops"])
    return await reader.rows(live, segment_id=segment_id, first=first, sample=LIVE_TOPS_SAMPLE,
                             per_member=LIVE_TOPS_ITEMS_PER_MEMBER)


async def runs(reader: Reader, *, after_at: int | None, after_id: str | None,
               size: int) -> Page[SegmentationRun]:
    """Segmentation runs, newest first; keys are ``epoch ms|run id``."""
    rows = await reader.rows(q.SEGMENTATION_RUNS, after_at=after_at, after_id=after_id,
                             limit=size + 1)
    return page(rows, size, lambda r: f"{r['at_ms']}|{r['run']['id']}",
                lambda r: SegmentationRun.from_row(r["run"]))


async def latest_run_id(reader: Reader) -> str | None:
    rows = await reader.rows(q.LATEST_RUN)
    return str(rows[0]["id"]) if rows else None


async def segments_of_run(reader: Reader, run_id: str) -> list[SegmentRecord]:
    """A run's segments, parents first (empty: no such run)."""
    rows = await reader.rows(q.SEGMENTS_OF_RUN, run_id=run_id)
    return [SegmentRecord.from_row(r["segment"], r["persona"], r["parent_id"]) for r in rows]


async def segment(reader: Reader, segment_id: str) -> SegmentRecord | None:
    rows = await reader.rows(q.SEGMENT, id=segment_id)
    return (SegmentRecord.from_row(rows[0]["segment"], rows[0]["persona"], rows[0]["parent_id"])
            if rows else None)


async def segment_children(reader: Reader, segment_id: str) -> list[SegmentRecord]:
    """The segments one level down, largest first."""
    rows = await reader.rows(q.SEGMENT_CHILDREN, id=segment_id)
    return [SegmentRecord.from_row(r["segment"], r["persona"], r["parent_id"]) for r in rows]


async def current_persona(reader: Reader, user_id: str) -> CurrentPersona | None:
    """The user's open persona period, if any."""
    rows = await reader.rows(q.CURRENT_PERSONA_PERIOD, id=user_id)
    if not rows:
        return None
    r = rows[0]
    return CurrentPersona(persona=PersonaRecord.from_row(r["persona"]),
                          valid_from=r["valid_from"].to_native(), run_id=r["run_id"])
