"""The GraphQL schema: root queries over users and segments."""

from __future__ import annotations

import strawberry

from api import queries as q
from api.context import Context
from api.errors import ErrorCodes
from api.types.segment import Segment
from api.types.user import User
from graph.errors import NotFound


@strawberry.type
class Query:
    @strawberry.field(description="A user by pseudonymous id.")
    async def user(self, info: strawberry.Info[Context, None], id: strawberry.ID) -> User:
        rows = await info.context.rows(q.USER, id=id)
        if not rows:
            raise NotFound(f"no user with id {id!r}")
        return User.from_record(rows[0])

    @strawberry.field(description="Segments of a run (default: the latest), parents first.")
    async def segments(self, info: strawberry.Info[Context, None],
                       run_id: strawberry.ID | None = None) -> list[Segment]:
        if run_id is None:
            latest = await info.context.rows(q.LATEST_RUN)
            if not latest:
                return []
            run_id = strawberry.ID(latest[0]["id"])
        rows = await info.context.rows(q.SEGMENTS_OF_RUN, run_id=run_id)
        if not rows:
            raise NotFound(f"no segmentation run with id {run_id!r}")
        return [Segment.from_record(r["segment"], r["persona"], r["parent_id"]) for r in rows]

    @strawberry.field(description="One segment by id.")
    async def segment(self, info: strawberry.Info[Context, None], id: strawberry.ID) -> Segment:
        rows = await info.context.rows(q.SEGMENT, id=id)
        if not rows:
            raise NotFound(f"no segment with id {id!r}")
        r = rows[0]
        return Segment.from_record(r["segment"], r["persona"], r["parent_id"])


def build_schema() -> strawberry.Schema:
    return strawberry.Schema(query=Query, extensions=[ErrorCodes])
