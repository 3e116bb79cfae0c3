"""The interpreter settings a bulk load runs with are the process's: applied by the first load
in, restored by the last one out, whatever the order."""

from __future__ import annotations

import gc
import sys
from collections.abc import Iterator
from contextlib import ExitStack

import pytest

from graph.ingest import runtime
from graph.ingest.runtime import (
    WRITER_SWITCH_INTERVAL_S,
    YOUNG_GC_THRESHOLD,
    bulk_load_runtime,
)

Settings = tuple[float, tuple[int, int, int]]


def current() -> Settings:
    return sys.getswitchinterval(), gc.get_threshold()


@pytest.fixture
def defaults() -> Iterator[Settings]:
    before = current()
    sys.setswitchinterval(0.005)
    gc.set_threshold(700, 10, 10)
    yield current()
    sys.setswitchinterval(before[0])
    gc.set_threshold(*before[1])
    assert runtime._users == 0, "a load's settings were left applied"


def tuned() -> bool:
    return (sys.getswitchinterval() == pytest.approx(WRITER_SWITCH_INTERVAL_S)
            and gc.get_threshold() == (YOUNG_GC_THRESHOLD, 10, 10))


def test_overlapping_loads_restore_what_was_there(defaults: Settings) -> None:
    assert not tuned()
    with ExitStack() as second:
        with ExitStack() as first:
            first.enter_context(bulk_load_runtime())
            assert tuned()
            second.enter_context(bulk_load_runtime())
        assert tuned()  # the first one out leaves the second load tuned
    assert current() == defaults


def test_a_failing_load_restores_too(defaults: Settings) -> None:
    with pytest.raises(RuntimeError), bulk_load_runtime():
        raise RuntimeError("the file could not be read")
    assert current() == defaults


def test_a_collector_switched_off_stays_off(defaults: Settings) -> None:
    gc.set_threshold(0, 10, 10)
    with bulk_load_runtime():
        assert gc.get_threshold()[0] == 0
        assert sys.getswitchinterval() == pytest.approx(WRITER_SWITCH_INTERVAL_S)
    assert current() == (defaults[0], (0, 10, 10))
