"""Subscriptions (graphql-transport-ws only): a new segmentation run, and a user's persona
changing. Runs and assignments are written by any process (CLI, scheduler, ingestion), so each
subscription polls the graph every PERSONAS_API_SUBSCRIPTION_POLL_SECONDS rather than waiting
for an in-process signal.

Each open subscription holds one of its key's slots (PERSONAS_API_MAX_STREAMS_PER_KEY) and
checks its key again before every poll: a revoked key's streams end with UNAUTHENTICATED."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from datetime import datetime

import strawberry

from api import queries as q
from api.auth import allowed
from api.context import Context
from api.types.persona import SegmentationRun
from api.types.segment import Persona
from graph.auth import PERSONA_READERS


async def next_poll(context: Context) -> None:
    """Wait for the next poll; UNAUTHENTICATED or FORBIDDEN once the key lost its right."""
    await asyncio.sleep(context.settings.api_subscription_poll_seconds)
    await context.recheck(PERSONA_READERS)


@strawberry.type(description="A user's persona changed (a run or an assignment at ingest).")
class PersonaChange:
    user_id: strawberry.ID
    persona: Persona
    previous: Persona | None
    valid_from: datetime
    run_id: str | None


@strawberry.type
class Subscription:
    @strawberry.subscription(description="Each segmentation run as it is recorded.",
                             extensions=allowed(PERSONA_READERS))
    async def segmentation_finished(
        self, info: strawberry.Info[Context, None],
    ) -> AsyncGenerator[SegmentationRun, None]:
        context = info.context
        async with context.stream_slot():
            rows = await context.rows(q.SEGMENTATION_RUNS, after_at=None, after_id=None, limit=1)
            last = rows[0]["run"]["id"] if rows else None
            while True:
                await next_poll(context)
                rows = await context.rows(q.SEGMENTATION_RUNS, after_at=None, after_id=None,
                                          limit=1)
                if rows and rows[0]["run"]["id"] != last:
                    last = rows[0]["run"]["id"]
                    yield SegmentationRun.from_record(rows[0]["run"])

    @strawberry.subscription(description="The user's persona whenever it changes.",
                             extensions=allowed(PERSONA_READERS))
    async def persona_changed(
        self, info: strawberry.Info[Context, None], user_id: strawberry.ID,
    ) -> AsyncGenerator[PersonaChange, None]:
        context = info.context
        async with context.stream_slot():
            user_id = strawberry.ID((await context.user_row(user_id))["id"])
            rows = await context.rows(q.CURRENT_PERSONA_PERIOD, id=user_id)
            current = rows[0] if rows else None
            while True:
                await next_poll(context)
                rows = await context.rows(q.CURRENT_PERSONA_PERIOD, id=user_id)
                if not rows or (current is not None
                                and rows[0]["persona"]["id"] == current["persona"]["id"]):
                    continue
                now = rows[0]
                yield PersonaChange(
                    user_id=user_id, persona=Persona.from_record(now["persona"]),
                    previous=Persona.from_record(current["persona"]) if current else None,
                    valid_from=now["valid_from"].to_native(), run_id=now["run_id"])
                current = now
