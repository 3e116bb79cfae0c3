"""/metrics counts the served process's garbage collections by generation, which bench-api
reads per rate (a full collection stops the event loop; docs/performance.md)."""

from __future__ import annotations

import gc

from prometheus_client import generate_latest

from api.metrics import RequestMetrics
from bench.api import FULL_GCS


def test_metrics_count_the_full_collections_the_bench_reads() -> None:
    registry = RequestMetrics().registry
    full = {"generation": "2"}
    before = registry.get_sample_value("python_gc_collections_total", full)
    assert before is not None
    gc.collect()
    assert registry.get_sample_value("python_gc_collections_total", full) == before + 1
    match = FULL_GCS.search(generate_latest(registry))  # what bench-api reads per rate
    assert match is not None and float(match.group(1)) == before + 1
