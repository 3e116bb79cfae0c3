"""Scheduled re-segmentation: a new run when the latest is older than the configured interval.

``personas scheduler`` (and ``personas up`` while it serves the API) checks every few minutes;
the interval is ``PERSONAS_SEGMENT_EVERY_HOURS`` (a week by default, 0 turns it off). A failed
run is retried with exponential backoff, never more often than ``retry_after``.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from graph.backoff import Backoff
from graph.db import Graph

log = logging.getLogger(__name__)

LAST_RUN_AT = """
MATCH (r:SegmentationRun)
RETURN max(r.created_at) AS at
"""


def last_run_at(graph: Graph) -> datetime | None:
    at = graph.rows(LAST_RUN_AT)[0]["at"]
    return None if at is None else at.to_native()


class SegmentationScheduler:
    """Decides when a run is due and starts it; ``tick`` is one check, ``run_forever`` loops."""

    def __init__(
        self,
        every: timedelta,
        run: Callable[[], object],
        last_run: Callable[[], datetime | None],
        *,
        check_every: timedelta = timedelta(minutes=5),
        retry_after: timedelta = timedelta(minutes=5),
    ) -> None:
        if every <= timedelta(0):
            raise ValueError("the re-segmentation interval must be positive")
        self.every = every
        self.run = run
        self.last_run = last_run
        self.check_every = check_every
        # Doubling from retry_after, and never longer than the interval itself.
        self.backoff = Backoff(base_seconds=min(retry_after, every).total_seconds(), factor=2.0,
                               max_seconds=every.total_seconds())
        self.failures = 0
        self.next_attempt: datetime | None = None

    def due(self, now: datetime) -> bool:
        if self.next_attempt is not None and now < self.next_attempt:
            return False
        last = self.last_run()
        return last is None or now - last >= self.every

    def tick(self, now: datetime | None = None) -> bool:
        """Run once if due; returns whether a run completed. Failures are logged, not raised,
        so the loop survives a bad night."""
        now = now or datetime.now(UTC)
        if not self.due(now):
            return False
        try:
            self.run()
        except Exception:  # noqa: BLE001 - a scheduler must outlive one failed run
            self.failures += 1
            self.next_attempt = now + timedelta(seconds=self.backoff.delay(self.failures))
            log.exception("scheduled segmentation failed (%d in a row); next try at %s",
                          self.failures, self.next_attempt.isoformat())
            return False
        self.failures = 0
        self.next_attempt = None
        log.info("scheduled segmentation done; next one in %s", self.every)
        return True

    def run_forever(self, stop: threading.Event) -> None:
        """Check until ``stop`` is set (the caller's signal handler or shutdown sets it)."""
        while not stop.is_set():
            try:
                self.tick()
            except Exception:  # noqa: BLE001 - e.g. Neo4j briefly unreachable while checking
                log.exception("could not check whether a segmentation is due")
            stop.wait(self.check_every.total_seconds())
