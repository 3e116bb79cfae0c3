"""Subscriptions (graphql-transport-ws only): a new segmentation run, and a user's persona
changing. Runs and assignments are written by any process (CLI, scheduler, ingestion), so each
subscription polls the graph every PERSONAS_API_SUBSCRIPTION_POLL_SECONDS rather than waiting
for an in-process signal.

Each open subscription holds one of its key's slots (PERSONAS_API_MAX_STREAMS_PER_KEY) and
checks its key again before every poll: a revoked key's streams end with UNAUTHENTICATED. A
user's persona changes pass the consent policy of every read at each poll: a chatbot key's
stream tells nothing of a user who withdrew personalization consent."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from datetime import datetime

import strawberry

from api.auth import allowed
from api.request import RequestContext
from api.types.persona import SegmentationRun
from api.types.segment import Persona
from graph.auth import PERSONA_READERS
from graph.errors import NotFound
from graph.profile import personas, users
from graph.profile.consent import withheld


async def next_poll(context: RequestContext) -> None:
    """Wait for the next poll; UNAUTHENTICATED or FORBIDDEN once the key lost its right."""
    await asyncio.sleep(context.settings.api_subscription_poll_seconds)
    await context.recheck(PERSONA_READERS)


async def _withheld(context: RequestContext, user_id: str) -> bool:
    """Whether the user's persona is withheld from the stream's key right now (the consent
    policy of every read, ``graph.profile.consent.withheld``): read again before each change
    is told, so a user who withdraws consent while a chatbot's stream is open stops showing in
    it; an erased user shows nothing either."""
    try:
        record = await users.user(context.reader, user_id)
    except NotFound:
        return True
    principal = context.principal
    return withheld(record.consents, principal.role if principal is not None else None)


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
        self, info: strawberry.Info[RequestContext, None],
    ) -> AsyncGenerator[SegmentationRun, None]:
        context = info.context
        async with context.stream_slot():
            found = await personas.runs(context.reader, after_at=None, after_id=None, size=1)
            last = found.items[0].id if found.items else None
            while True:
                await next_poll(context)
                found = await personas.runs(context.reader, after_at=None, after_id=None, size=1)
                if found.items and found.items[0].id != last:
                    last = found.items[0].id
                    yield SegmentationRun.from_model(found.items[0])

    @strawberry.subscription(description="The user's persona whenever it changes.",
                             extensions=allowed(PERSONA_READERS))
    async def persona_changed(
        self, info: strawberry.Info[RequestContext, None], user_id: strawberry.ID,
    ) -> AsyncGenerator[PersonaChange, None]:
        context = info.context
        async with context.stream_slot():
            user_id = strawberry.ID((await users.user(context.reader, user_id)).id)
            current = await personas.current_persona(context.reader, user_id)
            while True:
                await next_poll(context)
                if await _withheld(context, user_id):
                    continue  # as `User.persona` answers null: nothing, not even that it moved
                now = await personas.current_persona(context.reader, user_id)
                if now is None or (current is not None and now.persona.id == current.persona.id):
                    continue
                yield PersonaChange(
                    user_id=user_id, persona=Persona.from_model(now.persona),
                    previous=Persona.from_model(current.persona) if current else None,
                    valid_from=now.valid_from, run_id=now.run_id)
                current = now
