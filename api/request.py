"""What each GraphQL request carries (strawberry's per-request context, ``info.context``): the
shared settings, the caller, and the request's reader of the graph (``graph.profile``)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Collection
from contextlib import asynccontextmanager

from graphql import GraphQLError
from neo4j import AsyncDriver
from starlette.websockets import WebSocket
from strawberry.extensions import SchemaExtension
from strawberry.fastapi import BaseContext

from api.auth import KeyLimits, PrincipalCache
from api.loaders import Loaders
from api.segmentation import SegmentationRunner
from graph import auth, consistency
from graph.auth import Principal, Role
from graph.db import AsyncGraph, DriverReader
from graph.errors import InvalidInput, LimitExceeded, PersonaError
from graph.ingest.writer import EventWriter
from graph.settings import Settings


class RequestContext(BaseContext):
    def __init__(self, driver: AsyncDriver, settings: Settings, principal: Principal | None,
                 segmentation: SegmentationRunner, writer: EventWriter, *,
                 key: str | None = None, principals: PrincipalCache | None = None,
                 key_limits: KeyLimits | None = None) -> None:
        super().__init__()
        self.settings = settings
        self.principal = principal
        """The API key's principal; None when the request presented no live key."""
        self.segmentation = segmentation
        self.writer = writer
        """The app's event writer (synchronous, on the app's one driver: call it through
        ``asyncio.to_thread``)."""
        self.reader = DriverReader(driver, settings.neo4j_database,
                                   timeout=settings.api_read_timeout_s)
        """The request's reads (``graph.profile``), on the app's one async driver."""
        self.graph = AsyncGraph(driver, settings.neo4j_database)
        """The request's writes that run on the app's async driver (transaction ``Work``)."""
        self.loaders = Loaders(self.reader)
        self._key = key
        self._principals = principals
        self._key_limits = key_limits

    async def visible(self, after: str | None) -> bool:
        """Wait (PERSONAS_CONSISTENCY_WAIT_MS at most) for the write a consistency token
        names; False when it is still pending (``graph.consistency``)."""
        return await consistency.visible(
            self.reader.driver, self.settings.neo4j_database, after,
            group=self.settings.kafka_group, timeout_s=self.settings.consistency_wait_ms / 1000)

    async def recheck(self, roles: Collection[Role]) -> None:
        """Resolve the request's key again (through the app's key cache): an open stream must
        end once its key is revoked, within PERSONAS_API_KEY_CACHE_SECONDS."""
        principal = None
        if self._key is not None and self._principals is not None:
            principal = await self._principals.resolve(self._key)
        self.principal = auth.require_role(principal, roles)

    async def operation_started(self) -> None:
        """Over a WebSocket, each operation is treated as an HTTP request is: its key resolved
        again (through the app's key cache: a revoked key's open connection runs nothing more)
        and counted against the key's rate (PERSONAS_API_KEY_RATE_PER_SECOND). Without this a
        connection resolved and counted its key once, at the handshake, and then ran queries
        without end. Over HTTP, ``api.auth.get_principal`` did both for the request."""
        if not isinstance(self.request, WebSocket):
            return
        if self._key is not None and self._principals is not None:
            self.principal = await self._principals.resolve(self._key)
        if self.principal is not None and self._key_limits is not None:
            self._key_limits.take(self.principal)

    @asynccontextmanager
    async def stream_slot(self) -> AsyncIterator[None]:
        """One of the caller's subscription slots (PERSONAS_API_MAX_STREAMS_PER_KEY), held while
        a subscription is open."""
        if self._key_limits is None or self.principal is None:
            yield
            return
        async with self._key_limits.stream(self.principal):
            yield

    def page(self, first: int) -> int:
        """A page size the caller asked for, within PERSONAS_API_MAX_PAGE_SIZE."""
        if first < 1:
            raise InvalidInput(f"`first` must be at least 1, got {first}")
        if first > self.settings.api_max_page_size:
            raise LimitExceeded(f"`first` is {first}, over the maximum page size of "
                                f"{self.settings.api_max_page_size}")
        return first

    @property
    def round_trips(self) -> int:
        """Cypher round trips this request made (logged per operation, see CypherRoundTrips)."""
        return self.reader.round_trips


class OperationChecks(SchemaExtension):
    """Runs ``RequestContext.operation_started`` before each operation executes; a refusal
    (RATE_LIMITED) reaches the client with its code."""

    async def on_execute(self) -> AsyncIterator[None]:
        context = self.execution_context.context
        if isinstance(context, RequestContext):
            try:
                await context.operation_started()
            except PersonaError as exc:
                raise GraphQLError(str(exc), extensions={"code": exc.code}) from None
        yield
