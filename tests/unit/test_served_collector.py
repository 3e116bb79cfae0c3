"""The garbage collector of a served process (``api.app.freeze_startup_objects``): the objects
loaded at start frozen, and requests' reference cycles collected young, not by full collections
that stop the event loop (docs/performance.md); /metrics counts those collections."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest
from prometheus_client import generate_latest

from api.app import SERVED_YOUNG_GC_THRESHOLD, freeze_startup_objects
from api.metrics import RequestMetrics
from bench.api import FULL_GCS


@pytest.fixture
def collector() -> Iterator[None]:
    before = gc.get_threshold()
    gc.set_threshold(700, 10, 10)  # Python's defaults, as a served process starts
    yield
    gc.unfreeze()
    gc.set_threshold(*before)


class Node:
    """An object of a request that refers back to the request (a reference cycle)."""

    def __init__(self, request: dict[str, object]) -> None:
        self.request = request
        self.fields = [request, {"name": "field"}]


def full_collections_serving(requests: int) -> int:
    """Full collections while ``requests`` requests are served one after another, each
    leaving about 300 objects in cycles, the next one starting before the last one ends
    (one request always in flight, as at 100 requests/s)."""
    before = gc.get_stats()[2]["collections"]
    in_flight: dict[str, object] | None = None
    for _ in range(requests):
        request: dict[str, object] = {}
        request["nodes"] = [Node(request) for _ in range(75)]
        in_flight = request  # the previous request ends here: only its cycles hold it
    del in_flight
    return gc.get_stats()[2]["collections"] - before


def test_the_served_process_collects_requests_cycles_young(collector: None) -> None:
    freeze_startup_objects(None)
    assert gc.get_freeze_count() > 0
    assert gc.get_threshold() == (SERVED_YOUNG_GC_THRESHOLD, 10, 10)
    gc.collect()  # a served process's first full collection after the freeze
    assert full_collections_serving(3000) == 0

    gc.set_threshold(700, 10, 10)  # the frozen process at Python's default, as before
    gc.collect()
    assert full_collections_serving(3000) >= 3


def test_a_collector_switched_off_stays_off(collector: None) -> None:
    gc.set_threshold(0, 10, 10)
    freeze_startup_objects(None)
    assert gc.get_threshold()[0] == 0


def test_metrics_count_the_full_collections_the_bench_reads() -> None:
    registry = RequestMetrics().registry
    full = {"generation": "2"}
    before = registry.get_sample_value("python_gc_collections_total", full)
    assert before is not None
    gc.collect()
    assert registry.get_sample_value("python_gc_collections_total", full) == before + 1
    match = FULL_GCS.search(generate_latest(registry))  # what bench-api reads per rate
    assert match is not None and float(match.group(1)) == before + 1
