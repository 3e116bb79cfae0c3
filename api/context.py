"""The per-request GraphQL context: the shared driver and settings, the caller, and a read
helper."""

from __future__ import annotations

from typing import Any, LiteralString

from neo4j import AsyncDriver, RoutingControl
from strawberry.fastapi import BaseContext

from api.loaders import Loaders
from api.segmentation import SegmentationRunner
from graph.auth import Principal
from graph.errors import InvalidInput, LimitExceeded
from graph.settings import Settings


class Context(BaseContext):
    def __init__(self, driver: AsyncDriver, settings: Settings, principal: Principal | None,
                 segmentation: SegmentationRunner) -> None:
        super().__init__()
        self.driver = driver
        self.settings = settings
        self.principal = principal
        """The API key's principal; None when the request presented no live key."""
        self.segmentation = segmentation
        self.round_trips = 0
        """Cypher round trips this request made (logged per operation, see CypherRoundTrips)."""
        self.loaders = Loaders(self.rows)

    def page(self, first: int) -> int:
        """A page size the caller asked for, within PERSONAS_API_MAX_PAGE_SIZE."""
        if first < 1:
            raise InvalidInput(f"`first` must be at least 1, got {first}")
        if first > self.settings.api_max_page_size:
            raise LimitExceeded(f"`first` is {first}, over the maximum page size of "
                                f"{self.settings.api_max_page_size}")
        return first

    async def rows(self, query: LiteralString, **params: Any) -> list[dict[str, Any]]:
        """Run one read query (retried on transient errors by the driver) and return dicts."""
        self.round_trips += 1
        records, _, _ = await self.driver.execute_query(
            query, params, database_=self.settings.neo4j_database, routing_=RoutingControl.READ
        )
        return [r.data() for r in records]
