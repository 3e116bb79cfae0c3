"""The interpreter tuned for a bulk load while one runs (``bulk_load_runtime``).

Both settings are the process's: the first load running applies them, the last one out restores
what was there before, so loads running at once in one process (``ingest_file`` called from
several threads) never undo each other's.
"""

from __future__ import annotations

import gc
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager

WRITER_SWITCH_INTERVAL_S = 0.0005
"""How long the reading thread may keep the GIL while the writer's thread waits for it.

The writer's thread wakes up each time Neo4j answers (twice a batch), and then needs the GIL,
which the reading thread (parsing, planning the next batch) holds most of the time. With
Python's default switch interval, 5 ms, a load ran at 8,522-9,468 events/s against
10,041-10,183 with this one, measured when it woke three or four times a batch
(docs/performance.md)."""

YOUNG_GC_THRESHOLD = 20_000
"""Allocations between two collections of the youngest generation (Python's default: 700).

A load allocates a dozen container objects an event (parsed JSON, the validated event, its
rows), nearly all freed by reference counting, none in cycles; at the default the collector ran
every 50-odd events, and its full collections walked every object the process holds. Objects
alive when the load starts are frozen (``gc.freeze``) out of those walks too. Alternated
200k-event loads: the Python process's CPU went from 78-93 to 71-83 µs an event (preparing a
batch from 16-19 to 11-13); the load's rate did not move measurably, as Neo4j's side of a batch
is the longer one (docs/performance.md)."""

_lock = threading.Lock()
_users = 0
_before: tuple[float, tuple[int, int, int], bool] = (0.0, (0, 0, 0), False)


@contextmanager
def bulk_load_runtime() -> Iterator[None]:
    """While any bulk load runs: the short GIL switch interval and the lazier cyclic garbage
    collector (module docstring)."""
    global _users, _before
    with _lock:
        if _users == 0:
            threshold = gc.get_threshold()
            # Someone else's freeze (an app that froze its start-up objects) is left as it was.
            froze = gc.get_freeze_count() == 0
            _before = (sys.getswitchinterval(), threshold, froze)
            sys.setswitchinterval(WRITER_SWITCH_INTERVAL_S)
            if froze:
                gc.freeze()
            gc.set_threshold(max(threshold[0], YOUNG_GC_THRESHOLD), *threshold[1:])
        _users += 1
    try:
        yield
    finally:
        with _lock:
            _users -= 1
            if _users == 0:
                interval, threshold, froze = _before
                sys.setswitchinterval(interval)
                gc.set_threshold(*threshold)
                if froze:
                    gc.unfreeze()
