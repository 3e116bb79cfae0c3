"""The one place that creates Neo4j drivers and runs managed transactions.

A process creates one driver at its edge (CLI command, API lifespan, test session) and passes it
down; nothing else builds drivers.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, LiteralString, Protocol, TypeVar

from neo4j import (
    READ_ACCESS,
    AsyncDriver,
    AsyncGraphDatabase,
    Driver,
    GraphDatabase,
    ManagedTransaction,
    Query,
)
from neo4j.exceptions import DriverError, Neo4jError

from graph.backoff import Backoff
from graph.errors import ReadTimedOut
from graph.settings import Settings

T = TypeVar("T")
WRITE_BATCH = 5000
"""Rows per ``UNWIND`` statement when a job writes a large result (a run's memberships, similar
users): bounded transaction state, few round trips."""


class Rows(list[Any]):
    """A batch parameter (``UNWIND $rows``) whose ``repr`` is its size.

    The driver formats every statement's parameters into its debug log line even when debug
    logging is off (neo4j 6.4, Bolt 5.5+): about 1 ms per 2,000-row statement, on the thread
    that waits for Neo4j, and the batch's contents in any debug log that is on. The packer
    sends a ``Rows`` like any list.
    """

    def __repr__(self) -> str:
        return f"<{len(self)} rows>"


def chunks(rows: Sequence[Any], size: int = WRITE_BATCH) -> Iterator[Rows]:
    """``rows`` in consecutive batches of at most ``size``, one ``UNWIND`` statement each."""
    for start in range(0, len(rows), size):
        yield Rows(rows[start:start + size])


def _auth(settings: Settings) -> tuple[str, str]:
    return (settings.neo4j_user, settings.neo4j_password.get_secret_value())


DRIVER_RETRY_S = 30.0
"""The driver's own bound on a managed transaction's retries."""


def create_driver(settings: Settings, *, retry_s: float = DRIVER_RETRY_S) -> Driver:
    """A synchronous driver for the CLI, batch jobs and tests. ``retry_s`` bounds how long a
    managed transaction retries while the server is unreachable or restarting; batch jobs keep
    the driver's patient default, a process serving requests should answer sooner. (The
    connection and pool timeouts stay the driver's: on a busy machine a new connection can take
    seconds, which is load, not an outage.)"""
    return GraphDatabase.driver(
        settings.bolt_uri, auth=_auth(settings), notifications_min_severity="OFF",
        max_transaction_retry_time=retry_s,
    )


def create_async_driver(settings: Settings, *, retry_s: float = DRIVER_RETRY_S) -> AsyncDriver:
    """An asyncio driver for the API, so no request blocks the event loop (``retry_s``: as for
    ``create_driver``)."""
    return AsyncGraphDatabase.driver(
        settings.bolt_uri, auth=_auth(settings), notifications_min_severity="OFF",
        max_transaction_retry_time=retry_s,
    )


READ_RETRY_BUDGET_S = 5.0
READ_RETRY_BACKOFF = Backoff(base_seconds=0.05, factor=2.0, max_seconds=1.0, jitter=0.2)
_rng = random.Random()


async def read_rows(driver: AsyncDriver, database: str, query: LiteralString,
                    params: dict[str, Any] | None = None, *,
                    timeout: float | None = None) -> list[dict[str, Any]]:
    """One read query for the API, as an auto-commit transaction.

    Not ``execute_query``: its explicit transaction (BEGIN and COMMIT) costs the API about 0.5 ms
    of CPU per query and the server some too (docs/performance.md), and a single read needs
    none. What a managed transaction would still give is kept: the reads share
    ``execute_query``'s bookmarks, so on a cluster they see what the API wrote before, and a
    retryable failure is retried (a read is idempotent) with jittered exponential backoff for up
    to ``READ_RETRY_BUDGET_S`` (a request should fail rather than wait 30 s, the driver's
    default for managed transactions).

    ``timeout``: the transaction timeout in seconds, enforced by the server (a read cut off by
    it raises ``ReadTimedOut``, and is not retried).
    """
    started = time.monotonic()
    failures = 0
    while True:
        try:
            async with driver.session(
                    database=database, default_access_mode=READ_ACCESS,
                    bookmark_manager=driver.execute_query_bookmark_manager) as session:
                result = await session.run(Query(query, timeout=timeout), params)
                return await result.data()
        except (Neo4jError, DriverError) as error:
            if timeout is not None and isinstance(error, Neo4jError) \
                    and "TransactionTimedOut" in (error.code or ""):
                raise ReadTimedOut(f"the read took longer than its {timeout:g} s "
                                   "(PERSONAS_API_READ_TIMEOUT_S)") from None
            if (not error.is_retryable()
                    or time.monotonic() - started >= READ_RETRY_BUDGET_S):
                raise
            failures += 1
            left = READ_RETRY_BUDGET_S - (time.monotonic() - started)
            await asyncio.sleep(min(READ_RETRY_BACKOFF.delay(failures, _rng), left))


class Reader(Protocol):
    """What an async read needs: one read query (one round trip) with its parameters, the rows
    as dicts. The read model (``graph.profile``) takes one; the API's is a ``DriverReader``."""

    async def rows(self, query: LiteralString, **params: Any) -> list[dict[str, Any]]: ...


class DriverReader:
    """A ``Reader`` on an async driver (``read_rows``), counting its round trips."""

    def __init__(self, driver: AsyncDriver, database: str, *,
                 timeout: float | None = None) -> None:
        self.driver = driver
        self.database = database
        self.timeout = timeout
        self.round_trips = 0

    async def rows(self, query: LiteralString, **params: Any) -> list[dict[str, Any]]:
        self.round_trips += 1
        return await read_rows(self.driver, self.database, query, params, timeout=self.timeout)


@contextmanager
def driver_for(settings: Settings) -> Iterator[Driver]:
    driver = create_driver(settings)
    try:
        yield driver
    finally:
        driver.close()


class Graph:
    """A driver bound to one database, with the managed-transaction helpers the jobs use."""

    def __init__(self, driver: Driver, database: str) -> None:
        self.driver = driver
        self.database = database

    def write(self, work: Callable[[ManagedTransaction], T]) -> T:
        """Run ``work`` in a managed write transaction (retried on transient errors)."""
        with self.driver.session(database=self.database) as session:
            return session.execute_write(work)

    def read(self, work: Callable[[ManagedTransaction], T]) -> T:
        with self.driver.session(database=self.database) as session:
            return session.execute_read(work)

    def rows(self, query: LiteralString, **params: Any) -> list[dict[str, Any]]:
        """Read query results as plain dicts."""
        def work(tx: ManagedTransaction) -> list[dict[str, Any]]:
            return [record.data() for record in tx.run(query, params)]
        return self.read(work)

    def execute(self, query: LiteralString, **params: Any) -> list[dict[str, Any]]:
        """Run one write query in a managed transaction and return its rows."""
        def work(tx: ManagedTransaction) -> list[dict[str, Any]]:
            return [record.data() for record in tx.run(query, params)]
        return self.write(work)

    def auto_commit(self, query: LiteralString, **params: Any) -> None:
        """For `CALL { ... } IN TRANSACTIONS`, which needs an auto-commit transaction."""
        with self.driver.session(database=self.database) as session:
            session.run(query, params).consume()


@contextmanager
def open_graph(settings: Settings) -> Iterator[Graph]:
    with driver_for(settings) as driver:
        yield Graph(driver, settings.neo4j_database)


WIPE_RELATIONSHIPS = "MATCH ()-[r]->() CALL (r) { DELETE r } IN TRANSACTIONS OF 20000 ROWS"
WIPE_NODES = (
    "MATCH (n) WHERE NOT n:Migration CALL (n) { DELETE n } IN TRANSACTIONS OF 20000 ROWS"
)


def wipe(graph: Graph) -> None:
    """Delete all data but the migration records (schema stays). Relationships go first, in
    batches, so that dense nodes never need one huge transaction."""
    graph.auto_commit(WIPE_RELATIONSHIPS)
    graph.auto_commit(WIPE_NODES)
