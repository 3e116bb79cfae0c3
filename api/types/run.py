"""Segmentation runs started through the API."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import strawberry

if TYPE_CHECKING:
    from graph.segments.run import RunResult


@strawberry.type(description="A finished segmentation run: its id and how it chose k.")
class SegmentationRunResult:
    run_id: strawberry.ID
    n_users: int
    n_segments: int
    silhouette: float | None = strawberry.field(
        description="Mean silhouette of the leaf segments; null when undefined (one segment).")
    k_reason: str

    @classmethod
    def from_result(cls, result: RunResult) -> SegmentationRunResult:
        # GraphQL floats cannot carry NaN, which the engine reports for a single segment.
        silhouette = result.silhouette if math.isfinite(result.silhouette) else None
        return cls(run_id=strawberry.ID(result.run_id), n_users=result.n_users,
                   n_segments=result.n_segments, silhouette=silhouette,
                   k_reason=result.k_reason)
