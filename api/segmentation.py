"""Segmentation runs started through the API: input checked first, one run at a time per
process, the work on a worker thread so the event loop keeps serving."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import anyio.to_thread

from graph.db import Graph
from graph.errors import Conflict, InvalidInput
from graph.features.registry import check_selection
from graph.settings import Settings

if TYPE_CHECKING:
    from graph.segments.run import RunResult

# The same bounds as `personas segment --k`.
K_MIN, K_MAX = 2, 100
DEFAULT_ALGORITHM = "agglomerative"


@dataclass(frozen=True)
class SegmentationOptions:
    n_clusters: int | None
    algorithm: str
    features: list[str]
    distance_threshold: float | None


def check_options(settings: Settings, k: int | None, algorithm: str | None,
                  features: Sequence[str] | None,
                  distance_threshold: float | None) -> SegmentationOptions:
    """The run's options, or InvalidInput before any work is done."""
    # The algorithm check lives beside the engine, whose module imports scikit-learn (seconds,
    # the first time): callers run this on a worker thread.
    from graph.segments.engine import check_algorithm

    if k is not None and not K_MIN <= k <= K_MAX:
        raise InvalidInput(f"`k` must be between {K_MIN} and {K_MAX}, got {k}")
    if distance_threshold is not None and distance_threshold < 0:
        raise InvalidInput(f"`distanceThreshold` must not be negative, got {distance_threshold}")
    return SegmentationOptions(
        n_clusters=k,
        algorithm=check_algorithm(algorithm or DEFAULT_ALGORITHM),
        features=check_selection(features) if features is not None
        else list(settings.segment_features),
        distance_threshold=distance_threshold,
    )


class SegmentationRunner:
    """Starts segmentation runs for the API process, one at a time.

    A run reads the whole feature table and writes a new run; two at once would only compete for
    CPU and memory and race to be "the latest run", so a second caller is told CONFLICT instead
    of queueing. The lock is per process: several API workers can each run one.
    """

    def __init__(self, settings: Settings, graph: Graph) -> None:
        self.settings = settings
        self.graph = graph
        self._lock = asyncio.Lock()

    @property
    def busy(self) -> bool:
        return self._lock.locked()

    async def run(self, *, k: int | None = None, algorithm: str | None = None,
                  features: Sequence[str] | None = None,
                  distance_threshold: float | None = None) -> RunResult:
        options = await anyio.to_thread.run_sync(functools.partial(
            check_options, self.settings, k, algorithm, features, distance_threshold))
        # No await between the test and the acquisition: no other request can slip in.
        if self._lock.locked():
            raise Conflict("a segmentation run is already in progress; try again when it ends")
        async with self._lock:
            # A cancelled request does not abandon the thread: the lock stays held until the
            # run really ends, so a new one cannot start beside it.
            return await anyio.to_thread.run_sync(self._run, options)

    def _run(self, options: SegmentationOptions) -> RunResult:
        from graph.segments.run import run_segmentation

        # The job's own code, as `personas segment` runs it, on a worker thread (fitting is CPU
        # work for seconds to minutes); its reads and writes go through the app's one driver
        # (``self.graph``, a ``LoopGraph``), so a run sees what the API wrote before and shares
        # its connection pool instead of opening a second one.
        return run_segmentation(
            self.graph, n_clusters=options.n_clusters, algorithm=options.algorithm,
            features=options.features, distance_threshold=options.distance_threshold,
            runs_dir=self.settings.resolved_runs_dir)
