"""The per-request GraphQL context: the shared driver and settings, the caller, and a read
helper."""

from __future__ import annotations

from collections.abc import AsyncIterator, Collection
from contextlib import asynccontextmanager
from typing import Any, LiteralString

from neo4j import AsyncDriver, RoutingControl
from strawberry.fastapi import BaseContext

from api.auth import KeyLimits, PrincipalCache
from api.loaders import Loaders
from api.queries import USER
from api.segmentation import SegmentationRunner
from graph import auth
from graph.auth import Principal, Role
from graph.db import read_rows
from graph.errors import InvalidInput, LimitExceeded, NotFound
from graph.ingest.writer import EventWriter
from graph.settings import Settings


class Context(BaseContext):
    def __init__(self, driver: AsyncDriver, settings: Settings, principal: Principal | None,
                 segmentation: SegmentationRunner, writer: EventWriter, *,
                 key: str | None = None, principals: PrincipalCache | None = None,
                 key_limits: KeyLimits | None = None) -> None:
        super().__init__()
        self.driver = driver
        self.settings = settings
        self.principal = principal
        """The API key's principal; None when the request presented no live key."""
        self.segmentation = segmentation
        self.writer = writer
        """The app's event writer (synchronous: call it through ``asyncio.to_thread``)."""
        self.round_trips = 0
        """Cypher round trips this request made (logged per operation, see CypherRoundTrips)."""
        self.loaders = Loaders(self.rows)
        self._key = key
        self._principals = principals
        self._key_limits = key_limits

    async def recheck(self, roles: Collection[Role]) -> None:
        """Resolve the request's key again (through the app's key cache): an open stream must
        end once its key is revoked, within PERSONAS_API_KEY_CACHE_SECONDS."""
        principal = None
        if self._key is not None and self._principals is not None:
            principal = await self._principals.resolve(self._key)
        self.principal = auth.require_role(principal, roles)

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

    async def user_row(self, user_id: str) -> dict[str, Any]:
        """The user a request names, following merges to the survivor; NotFound otherwise.
        Later queries must use the row's ``id``: it is the survivor's."""
        rows = await self.rows(USER, id=user_id)
        if not rows:
            raise NotFound(f"no user with id {user_id!r}")
        return rows[0]

    async def rows(self, query: LiteralString, **params: Any) -> list[dict[str, Any]]:
        """Run one read query (``graph.db.read_rows``: retried on transient errors) and return
        dicts."""
        self.round_trips += 1
        return await read_rows(self.driver, self.settings.neo4j_database, query, params,
                               timeout=self.settings.api_read_timeout_s)

    async def write(self, query: LiteralString, **params: Any) -> list[dict[str, Any]]:
        """Run one write query in its own managed transaction (retried on transient errors)."""
        self.round_trips += 1
        records, _, _ = await self.driver.execute_query(
            query, params, database_=self.settings.neo4j_database, routing_=RoutingControl.WRITE
        )
        return [r.data() for r in records]
