"""The GraphQL schema: root queries over users and segments, and the admin mutation that starts a
segmentation run. Every root field names the roles it admits (`graph.auth`)."""

from __future__ import annotations

from typing import Annotated

import strawberry

from api import queries as q
from api.auth import allowed
from api.context import Context
from api.errors import ErrorCodes
from api.types.run import SegmentationRunResult
from api.types.segment import Segment
from api.types.user import User
from graph.auth import ADMINS, PERSONA_READERS
from graph.errors import NotFound


@strawberry.type
class Query:
    @strawberry.field(description="A user by pseudonymous id.",
                      extensions=allowed(PERSONA_READERS))
    async def user(self, info: strawberry.Info[Context, None], id: strawberry.ID) -> User:
        rows = await info.context.rows(q.USER, id=id)
        if not rows:
            raise NotFound(f"no user with id {id!r}")
        return User.from_record(rows[0])

    @strawberry.field(description="Segments of a run (default: the latest), parents first.",
                      extensions=allowed(PERSONA_READERS))
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

    @strawberry.field(description="One segment by id.", extensions=allowed(PERSONA_READERS))
    async def segment(self, info: strawberry.Info[Context, None], id: strawberry.ID) -> Segment:
        rows = await info.context.rows(q.SEGMENT, id=id)
        if not rows:
            raise NotFound(f"no segment with id {id!r}")
        r = rows[0]
        return Segment.from_record(r["segment"], r["persona"], r["parent_id"])


@strawberry.type
class Mutation:
    @strawberry.mutation(
        description="Segment every user now, as `personas segment` does, and record the run. "
        "One run at a time: a call while one is in progress fails with CONFLICT.",
        extensions=allowed(ADMINS))
    async def run_segmentation(
        self, info: strawberry.Info[Context, None],
        k: Annotated[int | None, strawberry.argument(
            description="Number of leaf segments (default: automatic).")] = None,
        algorithm: Annotated[str | None, strawberry.argument(
            description="agglomerative (default), kmeans, minibatch-kmeans, birch, dbscan or "
            "hdbscan.")] = None,
        features: Annotated[list[str] | None, strawberry.argument(
            description="Families or feature names (default: PERSONAS_SEGMENT_FEATURES).")
        ] = None,
        distance_threshold: Annotated[float | None, strawberry.argument(
            description="Cut the dendrogram at this merge distance instead of choosing k.")
        ] = None,
    ) -> SegmentationRunResult:
        result = await info.context.segmentation.run(
            k=k, algorithm=algorithm, features=features, distance_threshold=distance_threshold)
        return SegmentationRunResult.from_result(result)


def build_schema() -> strawberry.Schema:
    return strawberry.Schema(query=Query, mutation=Mutation, extensions=[ErrorCodes])
