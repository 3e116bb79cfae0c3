"""Per-key limits of the API: the request rate (token bucket) and the open subscription slots."""

from __future__ import annotations

import asyncio

import pytest

from api.auth import KeyLimits
from graph.auth import Principal, Role
from graph.errors import LimitExceeded, RateLimited

ALICE = Principal(id="alice001", name="alice", role=Role.READER)
BOB = Principal(id="bob00001", name="bob", role=Role.READER)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_key_gets_its_burst_then_its_rate_and_others_are_untouched() -> None:
    clock = Clock()
    limits = KeyLimits(rate=2.0, burst=3, streams=1, clock=clock)
    for _ in range(3):
        limits.take(ALICE)
    with pytest.raises(RateLimited) as refused:
        limits.take(ALICE)
    assert refused.value.code == "RATE_LIMITED" and 0 < refused.value.retry_after <= 0.5
    limits.take(BOB)  # another key has its own bucket
    clock.now += 0.5  # one request's worth at 2/s
    limits.take(ALICE)
    with pytest.raises(RateLimited):
        limits.take(ALICE)


def test_rate_zero_means_no_limit() -> None:
    limits = KeyLimits(rate=0, burst=1, streams=1)
    for _ in range(1000):
        limits.take(ALICE)


def test_stream_slots_are_held_while_open_and_given_back() -> None:
    limits = KeyLimits(rate=0, burst=1, streams=2)

    async def scenario() -> None:
        async with limits.stream(ALICE), limits.stream(ALICE):
            with pytest.raises(LimitExceeded):
                async with limits.stream(ALICE):
                    pass
            async with limits.stream(BOB):
                pass
        async with limits.stream(ALICE), limits.stream(ALICE):
            pass  # both slots came back

    asyncio.run(scenario())
