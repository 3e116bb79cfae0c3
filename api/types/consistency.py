"""The GraphQL type of a write's consistency token (``graph.consistency``)."""

from __future__ import annotations

import strawberry

from graph import consistency
from graph.db import Graph


@strawberry.type(description="How a later read can see this write: pass `token` as `after` to "
                 "`user` or `chatContext` (or to the MCP read tools).")
class Consistency:
    token: str = strawberry.field(description="An opaque, URL-safe consistency token.")


def written(graph: Graph) -> Consistency:
    """The token of the write just made through ``graph``."""
    return Consistency(token=consistency.written(graph))
