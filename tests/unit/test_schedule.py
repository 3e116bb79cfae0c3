from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from graph.segments.schedule import SegmentationScheduler

T0 = datetime(2026, 11, 1, tzinfo=UTC)


class Runs:
    """Records runs; the latest run's time is what the scheduler reads."""

    def __init__(self, fail: int = 0) -> None:
        self.at: list[datetime] = []
        self.fail = fail
        self.now = T0

    def run(self) -> None:
        if self.fail:
            self.fail -= 1
            raise RuntimeError("Neo4j went away")
        self.at.append(self.now)

    def last(self) -> datetime | None:
        return self.at[-1] if self.at else None


def test_first_run_at_once_then_weekly() -> None:
    runs = Runs()
    s = SegmentationScheduler(timedelta(days=7), runs.run, runs.last)
    assert s.tick(T0) is True and runs.at == [T0]
    assert s.tick(T0 + timedelta(days=6, hours=23)) is False
    runs.now = T0 + timedelta(days=7)
    assert s.tick(runs.now) is True and len(runs.at) == 2


def test_failures_back_off_exponentially_up_to_the_interval() -> None:
    runs = Runs(fail=3)
    s = SegmentationScheduler(timedelta(hours=1), runs.run, runs.last,
                              retry_after=timedelta(minutes=5))
    assert s.tick(T0) is False and s.next_attempt == T0 + timedelta(minutes=5)
    assert s.tick(T0 + timedelta(minutes=4)) is False and s.failures == 1  # not retried yet
    assert s.tick(T0 + timedelta(minutes=5)) is False and s.failures == 2
    assert s.next_attempt == T0 + timedelta(minutes=15)
    t = T0 + timedelta(minutes=15)
    assert s.tick(t) is False and s.next_attempt == t + timedelta(minutes=20)
    runs.now = t + timedelta(minutes=20)
    assert s.tick(runs.now) is True and s.failures == 0 and runs.at == [runs.now]
    capped = SegmentationScheduler(timedelta(minutes=7), Runs(fail=9).run, lambda: None,
                                   retry_after=timedelta(minutes=5))
    t = T0
    for _ in range(4):
        capped.tick(t)
        assert capped.next_attempt is not None
        t = capped.next_attempt
    assert capped.failures == 4
    waits = []
    for _ in range(2):
        before = t
        capped.tick(t)
        assert capped.next_attempt is not None
        t = capped.next_attempt
        waits.append(t - before)
    assert waits == [timedelta(minutes=7)] * 2


def test_interval_must_be_positive() -> None:
    with pytest.raises(ValueError, match="must be positive"):
        SegmentationScheduler(timedelta(0), lambda: None, lambda: None)
