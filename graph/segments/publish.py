"""Writing a segmentation run in bounded transactions, visible to readers only once published.

A population of any size fits the server's default transaction memory because no transaction
holds more than a chunk of memberships (``graph.db.WRITE_BATCH`` rows) or one segment's
favourites; yet readers never see half a run: until ``publish`` the run and its segments carry
the labels ``:PendingRun`` and ``:PendingSegment``, which no reader matches. ``publish`` is one
small transaction (its size is the number of segments). A run that fails is taken apart in
bounded batches and kept as a ``:FailedRun`` with its error; a writer that died (killed, or
Neo4j restarted under it) leaves a pending run whose heartbeat stops, which ``sweep`` takes
apart the same way before the next run.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from graph.db import Graph, chunks
from graph.segments import queries as q

log = logging.getLogger(__name__)
ERROR_CHARS = 500  # what a failed run keeps of its error: enough to act on, never a dump


class PendingRun:
    """One run being written: ``begin``, the parts in any number of transactions, ``publish``;
    ``discard`` instead of ``publish`` when anything fails."""

    def __init__(self, graph: Graph, run_id: str) -> None:
        self.graph = graph
        self.run_id = run_id

    def begin(self, props: dict[str, Any]) -> None:
        self.graph.execute(q.BEGIN_RUN, run={**props, "id": self.run_id})

    def segments(self, rows: Sequence[dict[str, Any]], links: Sequence[dict[str, str]]) -> None:
        """Every level's segments and their CHILD_OF links (a few dozen rows: one transaction)."""
        def work(tx: Any) -> None:
            tx.run(q.CREATE_PENDING_SEGMENTS, run_id=self.run_id, rows=list(rows)).consume()
            tx.run(q.LINK_PENDING_PARENTS, rows=list(links)).consume()
        self.graph.write(work)

    def members(self, rows: Sequence[dict[str, Any]],
                on_progress: Callable[[int, int], None] | None = None) -> None:
        """``{user_id, segment_id, distance}`` rows, a transaction per chunk. A retried chunk
        assigns nobody twice (the statement's guard)."""
        done = 0
        for chunk in chunks(rows):
            self.graph.execute(q.ASSIGN_RUN_MEMBERS, run_id=self.run_id, rows=chunk)
            done += len(chunk)
            if on_progress:
                on_progress(done, len(rows))

    def favourites(self, typical: int, favourites: int) -> None:
        for row in self.graph.rows(q.PENDING_LEAVES, run_id=self.run_id):
            self.graph.execute(q.WRITE_SEGMENT_FAVOURITES, segment_id=row["id"],
                               typical=typical, favourites=favourites)

    def tops(self, top: int) -> None:
        """Each leaf's top categories and items as of the run (one transaction per leaf)."""
        for row in self.graph.rows(q.PENDING_LEAVES, run_id=self.run_id):
            self.graph.execute(q.WRITE_SEGMENT_TOPS, segment_id=row["id"], top=top)

    def publish(self, personas: Sequence[dict[str, Any]]) -> None:
        """Make the run visible, with its personas, in one transaction."""
        self.graph.execute(q.PUBLISH_RUN, run_id=self.run_id, personas=list(personas))

    def write_history(self, at: str) -> None:
        """Members' persona history, after publication (bounded transactions); a writer that
        stops half-way leaves ``history_pending`` on the run, and ``sweep`` finishes it."""
        write_history(self.graph, self.run_id, at)

    def discard(self, error: str) -> None:
        """Take the unpublished run apart in bounded batches and record it as failed."""
        discard(self.graph, self.run_id, error)


def write_history(graph: Graph, run_id: str, at: str) -> None:
    graph.auto_commit(q.WRITE_PERSONA_HISTORY, run_id=run_id, at=at)
    graph.execute(q.HISTORY_WRITTEN, run_id=run_id)


def discard(graph: Graph, run_id: str, error: str) -> None:
    for statement in (q.DISCARD_MEMBERSHIPS, q.DISCARD_SIMILAR_USERS, q.DISCARD_SIMILAR_ITEMS,
                      q.DISCARD_SEGMENTS):
        graph.auto_commit(statement, run_id=run_id)
    graph.execute(q.MARK_FAILED, run_id=run_id, error=error[:ERROR_CHARS])


@dataclass(frozen=True)
class Sweep:
    discarded: list[str]
    histories_finished: list[str]


def sweep(graph: Graph, stale_after: timedelta) -> Sweep:
    """Before a run: take apart the pending runs whose writer has been silent for
    ``stale_after``, and finish the persona history of published runs that lack it."""
    stale_ms = int(stale_after.total_seconds() * 1000)
    discarded = []
    for row in graph.rows(q.ABANDONED_RUNS, stale_ms=stale_ms):
        log.warning("segmentation: run %s was abandoned while being written; removing it",
                    row["run_id"])
        discard(graph, row["run_id"],
                f"abandoned: its writer stopped (no progress for {stale_after})")
        discarded.append(row["run_id"])
    finished = []
    for row in graph.rows(q.HISTORY_PENDING):
        if not row["is_latest"]:
            # A later run's history supersedes it: writing it now would put an old persona
            # after a newer one.
            graph.execute(q.HISTORY_WRITTEN, run_id=row["run_id"])
            continue
        log.warning("segmentation: finishing the persona history of run %s", row["run_id"])
        write_history(graph, row["run_id"], row["at"])
        finished.append(row["run_id"])
    return Sweep(discarded, finished)
