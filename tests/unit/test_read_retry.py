"""``graph.db.read_rows``: the API's auto-commit reads retry what a managed transaction would
retry, and nothing else, and reuse their sessions (a driver double: failures on demand cannot be
had from a live server)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any

import pytest
from neo4j import Query
from neo4j.exceptions import CypherSyntaxError, ServiceUnavailable, SessionExpired

from graph import db
from graph.backoff import Backoff


class Result:
    def keys(self) -> tuple[str, ...]:
        return ("n",)

    async def __aiter__(self) -> AsyncIterator[tuple[int]]:
        await asyncio.sleep(0)  # records arrive later: other reads run meanwhile
        yield (1,)


class Session:
    def __init__(self, driver: Driver) -> None:
        self.driver = driver
        self.closed = False

    async def close(self) -> None:
        self.closed = True

    async def run(self, query: Query, params: dict[str, Any] | None) -> Result:
        self.driver.calls.append((query.text, params))
        self.driver.timeouts.append(query.timeout)
        if self.driver.failures:
            raise self.driver.failures.pop(0)
        return Result()


class Driver:
    def __init__(self, *failures: Exception, always: Exception | None = None) -> None:
        self.failures = list(failures)
        self.always = always
        self.calls: list[tuple[str, dict[str, Any] | None]] = []
        self.timeouts: list[float | None] = []
        self.modes: list[str] = []
        self.sessions: list[Session] = []
        self.execute_query_bookmark_manager = object()
        self.closed = False

    async def close(self) -> None:
        self.closed = True

    def session(self, database: str, default_access_mode: str,
                bookmark_manager: object) -> Session:
        assert database == "neo4j"
        # The reads follow what the API wrote through execute_query (on a cluster).
        assert bookmark_manager is self.execute_query_bookmark_manager
        self.modes.append(default_access_mode)
        if self.always is not None:
            self.failures.append(self.always)
        self.sessions.append(Session(self))
        return self.sessions[-1]


def read(driver: Driver) -> list[dict[str, Any]]:
    return asyncio.run(db.read_rows(driver, "neo4j", "RETURN 1 AS n", {"x": 1}))  # type: ignore[arg-type]


@pytest.fixture(autouse=True)
def no_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(db, "READ_RETRY_BACKOFF", Backoff(base_seconds=1e-6, max_seconds=1e-6))


def test_a_read_runs_once_in_read_mode() -> None:
    driver = Driver()
    assert read(driver) == [{"n": 1}]
    assert driver.calls == [("RETURN 1 AS n", {"x": 1})] and driver.modes == ["READ"]


def test_the_timeout_goes_to_the_server_with_the_query() -> None:
    driver = Driver()
    asyncio.run(db.read_rows(driver, "neo4j", "RETURN 1 AS n", {"x": 1},  # type: ignore[arg-type]
                             timeout=2.5))
    assert driver.timeouts == [2.5]


def test_retryable_failures_are_retried() -> None:
    driver = Driver(SessionExpired("gone"), ServiceUnavailable("down"))
    assert read(driver) == [{"n": 1}]
    assert len(driver.calls) == 3
    # A session that failed is closed, never used again.
    assert [s.closed for s in driver.sessions] == [True, True, False]


def test_reads_one_after_another_share_a_session() -> None:
    driver = Driver()

    async def reads() -> list[list[dict[str, Any]]]:
        return [await db.read_rows(driver, "neo4j", "RETURN 1 AS n")  # type: ignore[arg-type]
                for _ in range(3)]

    assert asyncio.run(reads()) == [[{"n": 1}]] * 3
    assert len(driver.calls) == 3 and len(driver.sessions) == 1
    assert not driver.sessions[0].closed


def test_reads_at_the_same_time_each_have_their_own_session() -> None:
    driver = Driver()

    async def reads() -> list[list[dict[str, Any]]]:
        return list(await asyncio.gather(*(db.read_rows(driver, "neo4j",  # type: ignore[arg-type]
                                                        "RETURN 1 AS n") for _ in range(3))))

    assert asyncio.run(reads()) == [[{"n": 1}]] * 3
    assert len(driver.sessions) == 3


def test_idle_sessions_are_bounded_and_closed_with_the_driver(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A burst keeps at most MAX_IDLE_READ_SESSIONS for later reads (the rest are closed after
    their read); closing the driver closes those kept."""
    monkeypatch.setattr(db, "MAX_IDLE_READ_SESSIONS", 2)
    driver = Driver()

    async def burst_then_close() -> None:
        await asyncio.gather(*(db.read_rows(driver, "neo4j",  # type: ignore[arg-type]
                                            "RETURN 1 AS n") for _ in range(5)))
        assert len(driver.sessions) == 5
        assert sum(not s.closed for s in driver.sessions) == 2
        await db.close_async_driver(driver)  # type: ignore[arg-type]

    asyncio.run(burst_then_close())
    assert driver.closed and all(s.closed for s in driver.sessions)


def test_retries_end_when_the_time_budget_is_spent(monkeypatch: pytest.MonkeyPatch) -> None:
    # A clock that moves 10 ms each time it is read (twice per failure): the budget (50 ms)
    # is spent at the third failure, whatever the machine's load.
    ticks = iter(range(1000))
    monkeypatch.setattr(db, "time", SimpleNamespace(monotonic=lambda: next(ticks) * 0.01))
    monkeypatch.setattr(db, "READ_RETRY_BUDGET_S", 0.05)
    driver = Driver(always=ServiceUnavailable("down"))
    with pytest.raises(ServiceUnavailable):
        read(driver)
    assert len(driver.calls) == 3


def test_other_failures_are_raised_at_once() -> None:
    driver = Driver(CypherSyntaxError("bad"))
    with pytest.raises(CypherSyntaxError):
        read(driver)
    assert len(driver.calls) == 1

