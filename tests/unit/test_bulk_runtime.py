"""The interpreter settings a bulk load runs with are the process's: applied by the first load
in, restored by the last one out, whatever the order."""

from __future__ import annotations

import gc
import sys
from collections.abc import Iterator

import pytest

from graph.ingest.runtime import (
    WRITER_SWITCH_INTERVAL_S,
    YOUNG_GC_THRESHOLD,
    bulk_load_runtime,
)


@pytest.fixture
def defaults() -> Iterator[tuple[float, tuple[int, int, int], int]]:
    before = (sys.getswitchinterval(), gc.get_threshold(), gc.get_freeze_count())
    sys.setswitchinterval(0.005)
    gc.set_threshold(700, 10, 10)
    yield sys.getswitchinterval(), gc.get_threshold(), gc.get_freeze_count()
    sys.setswitchinterval(before[0])
    gc.set_threshold(*before[1])


def tuned() -> bool:
    return (sys.getswitchinterval() == pytest.approx(WRITER_SWITCH_INTERVAL_S)
            and gc.get_threshold() == (YOUNG_GC_THRESHOLD, 10, 10))


def test_overlapping_loads_restore_what_was_there(
        defaults: tuple[float, tuple[int, int, int], int]) -> None:
    assert not tuned()
    first, second = bulk_load_runtime(), bulk_load_runtime()
    first.__enter__()
    assert tuned()
    assert gc.get_freeze_count() > 0  # objects alive at the start are out of the collector's walks
    second.__enter__()
    first.__exit__(None, None, None)  # the first one out leaves the second load tuned
    assert tuned()
    second.__exit__(None, None, None)
    assert (sys.getswitchinterval(), gc.get_threshold(), gc.get_freeze_count()) == defaults


def test_a_failing_load_restores_too(defaults: tuple[float, tuple[int, int, int], int]) -> None:
    with pytest.raises(RuntimeError), bulk_load_runtime():
        raise RuntimeError("the file could not be read")
    assert (sys.getswitchinterval(), gc.get_threshold(), gc.get_freeze_count()) == defaults


def test_someone_elses_freeze_is_kept(defaults: tuple[float, tuple[int, int, int], int]) -> None:
    gc.freeze()
    try:
        with bulk_load_runtime():
            assert tuned()
        assert gc.get_freeze_count() > 0  # not unfrozen by the load
    finally:
        gc.unfreeze()
