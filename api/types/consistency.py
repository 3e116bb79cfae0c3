"""The GraphQL type of a write's consistency token (``graph.consistency``)."""

from __future__ import annotations

import strawberry
from neo4j import AsyncDriver

from graph import consistency


@strawberry.type(description="How a later read can see this write: pass `token` as `after` to "
                 "`user` or `chatContext` (or to the MCP read tools).")
class Consistency:
    token: str = strawberry.field(description="An opaque, URL-safe consistency token.")


async def written(driver: AsyncDriver) -> Consistency:
    """The token of the write just made on the app's ``driver``."""
    return Consistency(token=await consistency.written_async(driver))
