"""The interpreter tuned for a bulk load while one runs (``bulk_load_runtime``).

The GIL switch interval and the garbage collector's thresholds are the process's: the first load
running sets them, the last one out restores what was there before, so loads running at once in
one process (``ingest_file`` called from several threads) never undo each other's.
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
which the reading thread (parsing, planning the next batch) holds most of the time; at Python's
default interval it waited long enough to slow a load measurably (docs/performance.md)."""

YOUNG_GC_THRESHOLD = 20_000
"""Net allocations of container objects between two collections of the youngest generation
(Python's default: 700); about what one 2,000-event batch holds.

A load allocates a dozen container objects an event (parsed JSON, the validated event, its
rows) and keeps them until its batch is written; none are in cycles, so every collection is
wasted work. At the default the collector ran every 50-odd events, and now and then a full
collection walked every object in the process. It saves Python CPU per event; the load's rate
barely moves, as Neo4j's side of a batch is the longer one (docs/performance.md)."""

_lock = threading.Lock()
_users = 0
_before: tuple[float, tuple[int, int, int]] = (0.0, (0, 0, 0))


@contextmanager
def bulk_load_runtime() -> Iterator[None]:
    """While any bulk load runs: the short GIL switch interval and the lazier cyclic garbage
    collector (module docstring). A collector switched off (threshold 0) stays off."""
    global _users, _before
    with _lock:
        if _users == 0:
            threshold = gc.get_threshold()
            _before = (sys.getswitchinterval(), threshold)
            sys.setswitchinterval(WRITER_SWITCH_INTERVAL_S)
            young = threshold[0] and max(threshold[0], YOUNG_GC_THRESHOLD)
            gc.set_threshold(young, threshold[1], threshold[2])
        _users += 1
    try:
        yield
    finally:
        with _lock:
            _users -= 1
            if _users == 0:
                interval, threshold = _before
                sys.setswitchinterval(interval)
                gc.set_threshold(*threshold)
