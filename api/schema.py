"""The GraphQL schema: root queries over users and segments, and the admin mutation that starts a
segmentation run. Every root field names the roles it admits (`graph.auth`)."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Annotated, Any

import strawberry
from graphql import GraphQLError
from strawberry.schema.schema import DEFAULT_ALLOWED_OPERATION_TYPES
from strawberry.types import ExecutionContext, ExecutionResult
from strawberry.types.graphql import OperationType

from api.auth import allowed
from api.documents import document_extensions
from api.errors import ErrorCodes, log_errors
from api.limits import limit_extensions
from api.metrics import CypherRoundTrips
from api.mutations import Mutation
from api.request import OperationChecks, RequestContext
from api.subscriptions import Subscription
from api.types.catalogue import Category, Item, items_of
from api.types.chat import ChatBrief
from api.types.connection import Connection, connection, decode_cursor, decode_time_cursor
from api.types.persona import PersonaProfile, SegmentationRun
from api.types.scalars import SCALAR_OVERRIDES
from api.types.segment import Segment
from api.types.user import User, user_with_profile, utc_or_none
from graph.auth import PERSONA_READERS
from graph.consistency import noting_pending
from graph.errors import InvalidInput, NotFound
from graph.events import MAX_KEY_CHARS, normalize_category
from graph.privacy import IDENTIFIER_KINDS
from graph.profile import catalogue, chat, personas, users
from graph.profile.model import FILTERED_PAGE_SCAN
from graph.settings import Settings

AfterArg = Annotated[str | None, strawberry.argument(
    description="A consistency token a write answered with: wait (at most "
    "PERSONAS_CONSISTENCY_WAIT_MS) until that write is visible; if it is not by then, answer "
    "anyway with `pending: true`.")]


@strawberry.type
class Query:
    @strawberry.field(description="A user by pseudonymous id; with `asOf`, persona and "
                      "preferences answer as they were at that time.",
                      extensions=allowed(PERSONA_READERS))
    async def user(self, info: strawberry.Info[RequestContext, None], id: strawberry.ID,
                   as_of: datetime | None = None, after: AfterArg = None) -> User:
        as_of = utc_or_none(as_of, "asOf")
        pending = not await info.context.visible(after)
        with noting_pending(pending):
            if as_of is not None:
                found = User.from_model(await users.user(info.context.reader, id), as_of)
            else:
                found = await user_with_profile(info, f"no user with id {id!r}", user_id=id)
        found.pending = pending
        return found

    @strawberry.field(description="Users in id order, a page at a time, optionally of one "
                      "persona (latest run) or segment, or seen after a time. A filtered page "
                      f"examines at most {FILTERED_PAGE_SCAN:,} users, so it may hold fewer than "
                      "`first` (even none) while `hasNextPage` is true: follow `endCursor`.",
                      extensions=allowed(PERSONA_READERS))
    async def users(self, info: strawberry.Info[RequestContext, None], first: int = 20,
                    after: str | None = None, persona_id: strawberry.ID | None = None,
                    segment_id: strawberry.ID | None = None,
                    last_seen_after: datetime | None = None) -> Connection[User]:
        size = info.context.page(first)
        found = await users.users_page(
            info.context.reader, after=decode_cursor("user", after), size=size,
            persona_id=persona_id, segment_id=segment_id,
            last_seen_after=utc_or_none(last_seen_after, "lastSeenAfter"))
        return connection(found, "user", User.from_model)

    @strawberry.field(description="The user an identifier (cookie, CRM id, email, phone, chat "
                      "handle) belongs to. The value is hashed as at ingestion; it is never "
                      "stored or logged.", extensions=allowed(PERSONA_READERS))
    async def user_by_identifier(self, info: strawberry.Info[RequestContext, None], kind: str,
                                 value: str) -> User:
        if kind not in IDENTIFIER_KINDS:
            raise InvalidInput(f"unknown identifier kind {kind!r}; one of "
                               f"{', '.join(IDENTIFIER_KINDS)}")
        if len(value) > MAX_KEY_CHARS:
            # Refused before hashing or caching: no stored identifier is that long.
            raise InvalidInput(f"an identifier is at most {MAX_KEY_CHARS} characters, this one "
                               f"has {len(value)}")
        digest = info.context.writer.pseudonymizer.digest(kind, value)
        return await user_with_profile(info, f"no user with that {kind}",
                                       identifier=(kind, digest))

    @strawberry.field(description="Personas of the latest run, largest first.",
                      extensions=allowed(PERSONA_READERS))
    async def personas(self, info: strawberry.Info[RequestContext, None]) -> list[PersonaProfile]:
        return [PersonaProfile.from_model(p)
                for p in await personas.personas(info.context.reader)]

    @strawberry.field(description="One persona by id.", extensions=allowed(PERSONA_READERS))
    async def persona(self, info: strawberry.Info[RequestContext, None],
                      id: strawberry.ID) -> PersonaProfile:
        found = await personas.persona(info.context.reader, id)
        if found is None:
            raise NotFound(f"no persona with id {id!r}")
        return PersonaProfile.from_model(found)

    @strawberry.field(description="Segmentation runs, newest first.",
                      extensions=allowed(PERSONA_READERS))
    async def segmentation_runs(self, info: strawberry.Info[RequestContext, None], first: int = 10,
                                after: str | None = None) -> Connection[SegmentationRun]:
        size = info.context.page(first)
        after_at, after_id = decode_time_cursor("run", after)
        found = await personas.runs(info.context.reader, after_at=after_at, after_id=after_id,
                                    size=size)
        return connection(found, "run", SegmentationRun.from_model)

    @strawberry.field(description="Prompt-ready context for a chatbot within a token budget: "
                      "persona, top preferences, recent intent, current situation, each line "
                      "with where it comes from. With `asOf`, the context as it could have "
                      "been given then, from what was recorded by that moment (the same on "
                      "every call for a past moment). Honours the user's personalization "
                      "consent.", extensions=allowed(PERSONA_READERS))
    async def chat_context(self, info: strawberry.Info[RequestContext, None],
                           user_id: strawberry.ID, max_tokens: int = 120,
                           as_of: datetime | None = None, after: AfterArg = None) -> ChatBrief:
        as_of = utc_or_none(as_of, "asOf")
        pending = not await info.context.visible(after)
        with noting_pending(pending):
            found = ChatBrief.from_model(await chat.chat_brief(
                info.context.reader, info.context.settings, user_id, max_tokens, as_of=as_of))
        found.pending = pending
        return found

    @strawberry.field(description="Segments of a run (default: the latest), parents first.",
                      extensions=allowed(PERSONA_READERS))
    async def segments(self, info: strawberry.Info[RequestContext, None],
                       run_id: strawberry.ID | None = None) -> list[Segment]:
        if run_id is None:
            latest = await personas.latest_run_id(info.context.reader)
            if latest is None:
                return []
            run_id = strawberry.ID(latest)
        found = await personas.segments_of_run(info.context.reader, run_id)
        if not found:
            raise NotFound(f"no segmentation run with id {run_id!r}")
        return [Segment.from_model(s) for s in found]

    @strawberry.field(description="Catalogue items in id order, optionally of one category. A "
                      f"page of one category examines at most {FILTERED_PAGE_SCAN:,} items, so "
                      "it may hold fewer than `first` (even none) while `hasNextPage` is true: "
                      "follow `endCursor`.",
                      extensions=allowed(PERSONA_READERS))
    async def items(self, info: strawberry.Info[RequestContext, None], first: int = 20,
                    after: str | None = None, category: str | None = None) -> Connection[Item]:
        return await items_of(info.context,
                              normalize_category(category) if category is not None else None,
                              first, after)

    @strawberry.field(description="One catalogue item by id.",
                      extensions=allowed(PERSONA_READERS))
    async def item(self, info: strawberry.Info[RequestContext, None], id: strawberry.ID) -> Item:
        found = await catalogue.item(info.context.reader, id)
        if found is None:
            raise NotFound(f"no item with id {id!r}")
        return Item.from_model(found)

    @strawberry.field(description="Every category, by name, with its number of items.",
                      extensions=allowed(PERSONA_READERS))
    async def categories(self, info: strawberry.Info[RequestContext, None]) -> list[Category]:
        return [Category(name=c.name, item_count=c.items)
                for c in await catalogue.categories(info.context.reader)]

    @strawberry.field(description="One segment by id.", extensions=allowed(PERSONA_READERS))
    async def segment(self, info: strawberry.Info[RequestContext, None],
                      id: strawberry.ID) -> Segment:
        found = await personas.segment(info.context.reader, id)
        if found is None:
            raise NotFound(f"no segment with id {id!r}")
        return Segment.from_model(found)


def build_schema(settings: Settings | None = None) -> strawberry.Schema:
    """The schema with its request limits (from ``settings``; defaults when exporting SDL)."""
    settings = settings or Settings()
    return PersonaSchema(query=Query, mutation=Mutation, subscription=Subscription,
                         extensions=[*limit_extensions(settings),
                                     *document_extensions(settings.api_max_document_bytes),
                                     CypherRoundTrips, ErrorCodes, OperationChecks],
                         scalar_overrides=SCALAR_OVERRIDES)


class PersonaSchema(strawberry.Schema):
    async def execute(  # noqa: PLR0913
            self, query: str | None, variable_values: dict[str, Any] | None = None,
            context_value: Any | None = None, root_value: Any | None = None,
            operation_name: str | None = None,
            allowed_operation_types: Iterable[OperationType] | None = None,
            operation_extensions: dict[str, Any] | None = None) -> ExecutionResult:
        """As strawberry's, without subscriptions: ``execute`` answers one result (GraphQL over
        HTTP; WebSocket operations go through ``stream``), and a subscription run by it
        ended in INTERNAL_SERVER_ERROR ("Cannot return null for non-nullable field"). Now
        strawberry's 400, "subscriptions are not allowed when using POST"."""
        allowed = set(allowed_operation_types or DEFAULT_ALLOWED_OPERATION_TYPES)
        return await super().execute(query, variable_values, context_value, root_value,
                                     operation_name, allowed - {OperationType.SUBSCRIPTION},
                                     operation_extensions)

    def process_errors(self, errors: list[GraphQLError],
                       execution_context: ExecutionContext | None = None,  # noqa: ARG002
                       ) -> None:
        # strawberry's default logs each error with the request document, PII literals and all.
        log_errors(errors)
