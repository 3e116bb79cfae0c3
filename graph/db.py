"""The one place that creates Neo4j drivers and runs managed transactions.

A process creates one driver at its edge (CLI command, API lifespan, test session) and passes it
down; nothing else builds drivers.

Transaction work that both the synchronous callers (CLI, Kafka consumer, file import) and the
async API run is written once, without I/O (``Work``): a generator that yields each statement
and is sent its records. ``Graph`` runs it on the sync driver, ``AsyncGraph`` on the async one.
"""

from __future__ import annotations

import asyncio
import functools
import queue
import random
import time
from collections.abc import Callable, Coroutine, Generator, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, field
from typing import Any, LiteralString, Protocol, TypeVar, cast
from weakref import WeakKeyDictionary

from neo4j import (
    READ_ACCESS,
    WRITE_ACCESS,
    AsyncDriver,
    AsyncGraphDatabase,
    AsyncManagedTransaction,
    AsyncSession,
    Bookmarks,
    Driver,
    GraphDatabase,
    ManagedTransaction,
    Query,
    Record,
    ResultSummary,
    Session,
)
from neo4j.exceptions import DriverError, Neo4jError
from neo4j.graph import Node, Path, Relationship
from opentelemetry import trace
from opentelemetry.trace import INVALID_SPAN, Span, SpanKind

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
    logging is off (neo4j 6.4, Bolt 5.5+): time on the thread that waits for Neo4j that grows
    with the batch, and the batch's contents in any debug log that is on. The packer
    sends a ``Rows`` like any list.
    """

    def __repr__(self) -> str:
        return f"<{len(self)} rows>"


class QueryText(str):
    """Cypher whose ``repr`` is its start and size, for the same debug line as ``Rows``: the
    driver formats each statement's text into it on every run, whatever the log level (about
    60 us for the chatbot's 15,000 characters). The driver sends it as any ``str``."""

    __slots__ = ()

    def __str__(self) -> str:  # ``str()`` of a subclass copies to a plain str, repr and all
        return self

    def __repr__(self) -> str:
        return f"<Cypher of {len(self)} characters: {self.strip()[:60]!r}...>"


@functools.lru_cache(maxsize=1024)
def _query_text(query: str) -> QueryText:
    """One ``QueryText`` per statement, not a copy per read (the statements are constants, or
    built from a few shapes)."""
    return QueryText(query)


def chunks(rows: Sequence[Any], size: int = WRITE_BATCH) -> Iterator[Rows]:
    """``rows`` in consecutive batches of at most ``size``, one ``UNWIND`` statement each."""
    for start in range(0, len(rows), size):
        yield Rows(rows[start:start + size])


@dataclass(frozen=True)
class Statement:
    """One statement of transaction ``Work``: its Cypher and its parameters."""

    query: LiteralString
    params: dict[str, Any] = field(default_factory=dict)


Records = list[dict[str, Any]]
Work = Generator[Statement, Records, T]
"""Transaction work written once for both drivers: it yields each ``Statement``, is sent that
statement's records (as dicts), and returns its result. ``run_work`` runs it in a synchronous
transaction, ``run_work_async`` in an async one; a retried transaction runs a new generator."""


def statements(*items: Statement) -> Work[None]:
    """``Work`` that runs ``items`` in order, for writes whose records nobody reads."""
    # Not ``yield from items``: that would pass the records sent in on to a tuple's iterator.
    for item in items:  # noqa: UP028
        yield item


def one(records: Records) -> dict[str, Any] | None:
    """The first record of a statement's records, or None (``Result.single`` without the
    warning on several)."""
    return records[0] if records else None


def run_work(tx: ManagedTransaction, work: Work[T]) -> T:
    """Run ``work`` inside the caller's synchronous transaction."""
    try:
        statement = next(work)
        while True:
            statement = work.send(tx.run(statement.query, statement.params).data())
    except StopIteration as done:
        result: T = done.value
        return result


async def run_work_async(tx: AsyncManagedTransaction, work: Work[T]) -> T:
    """Run ``work`` inside the caller's async transaction."""
    try:
        statement = next(work)
        while True:
            found = await tx.run(statement.query, statement.params)
            statement = work.send(await found.data())
    except StopIteration as done:
        result: T = done.value
        return result


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


_tracer = trace.get_tracer("graph.db")
_tracing = False


def trace_transactions() -> None:
    """Have every Neo4j transaction of this process open a client span from now on (the API
    calls it when it installs a tracer provider, ``api.tracing``)."""
    global _tracing
    _tracing = True


QUERY_TEXT_MAX = 2000
"""Characters of Cypher a span keeps (the batch statements run to several thousand)."""


def traced(operation: str, database: str,
           query: str | None = None) -> AbstractContextManager[Span]:
    """A client span around a Neo4j transaction, for the API's traces (``api.tracing``): a
    no-op until ``trace_transactions`` is called. Only the Cypher text is recorded; values
    travel as parameters and never reach a span."""
    if not _tracing:
        # Tracing off: not even OpenTelemetry's no-op span, which costs 10-50 us a read.
        return nullcontext(INVALID_SPAN)
    attributes = {"db.system.name": "neo4j", "db.namespace": database,
                  "db.operation.name": operation}
    if query is not None:
        attributes["db.query.text"] = query.strip()[:QUERY_TEXT_MAX]
    return _tracer.start_as_current_span(f"neo4j {operation}", kind=SpanKind.CLIENT,
                                         attributes=attributes)


READ_RETRY_BUDGET_S = 5.0
READ_RETRY_BACKOFF = Backoff(base_seconds=0.05, factor=2.0, max_seconds=1.0, jitter=0.2)
_rng = random.Random()


PING: LiteralString = "RETURN 1"
"""The cheapest statement: what a session runs to wait for its bookmarks."""


async def wait_for_bookmarks(driver: AsyncDriver, database: str,
                             bookmarks: Sequence[str]) -> None:
    """Return once this server has applied ``bookmarks`` (Neo4j waits, up to its own
    timeout); the driver's later reads in this process wait for them too. A bookmark of no
    transaction of this database raises Neo4j's ClientError."""
    async with driver.session(database=database, default_access_mode=READ_ACCESS,
                              bookmarks=Bookmarks.from_raw_values(bookmarks)) as session:
        await (await session.run(PING)).consume()
        seen = await session.last_bookmarks()
    # On a cluster, later reads routed anywhere must not be older than this one.
    await driver.execute_query_bookmark_manager.update_bookmarks((), seen.raw_values)


async def read_rows(driver: AsyncDriver, database: str, query: LiteralString,
                    params: dict[str, Any] | None = None, *,
                    timeout: float | None = None) -> list[dict[str, Any]]:
    """One read query for the API, as an auto-commit transaction.

    Not ``execute_query``: its explicit transaction (BEGIN and COMMIT) costs the API CPU on every
    query and the server some too (docs/performance.md), and a single read needs none. What a
    managed transaction would still give is kept: the reads share ``execute_query``'s
    bookmarks, so on a cluster they see what the API wrote before, and a retryable failure is
    retried (a read is idempotent) with jittered exponential backoff for up to
    ``READ_RETRY_BUDGET_S`` (a request should fail rather than wait 30 s, the driver's
    default for managed transactions).

    ``timeout``: the transaction timeout in seconds, enforced by the server (a read cut off by
    it raises ``ReadTimedOut``, and is not retried).
    """
    with traced("read", database, query):
        return await _read_rows(driver, database, query, params, timeout)


_idle_sessions: WeakKeyDictionary[AsyncDriver, dict[str, list[AsyncSession]]] = \
    WeakKeyDictionary()
"""Each driver's read sessions between two reads, by database (``_read_rows``)."""

MAX_IDLE_READ_SESSIONS = 64
"""Idle read sessions kept per driver and database: a burst's reads beyond it open sessions
that are closed after their read, so a saturated moment does not leave thousands behind."""


async def close_async_driver(driver: AsyncDriver) -> None:
    """Close ``driver`` and the idle read sessions ``read_rows`` kept for it (a session left
    open warns when collected)."""
    for sessions in _idle_sessions.pop(driver, {}).values():
        for session in sessions:
            await session.close()
    await driver.close()


def _read_session(driver: AsyncDriver, database: str) -> AsyncSession:
    """An idle read session of ``driver`` on ``database``, or a new one. Opening a session per
    read cost the API a visible share of its CPU per chatbot request (the driver builds and
    checks the session's configuration each time; docs/performance.md). A session runs one
    query at a time: a read takes it from here and gives it back once its result is consumed,
    when the session holds no connection (the driver's pool keeps those)."""
    idle = _idle_sessions.setdefault(driver, {}).setdefault(database, [])
    if idle:
        return idle.pop()
    return driver.session(database=database, default_access_mode=READ_ACCESS,
                          bookmark_manager=driver.execute_query_bookmark_manager)


class _GraphValue(Exception):
    """A row holds a node, relationship or path: ``Record.data()`` converts it."""


def _plain(value: Any) -> Any:
    """A value of a row as ``Record.data()`` gives it, for rows without nodes, relationships
    or paths (``_GraphValue`` otherwise). The driver's own export tests every value, nested
    ones too, against abstract classes: several times the cost, for the maps and lists that
    rows hold, of testing exact types first (docs/performance.md)."""
    kind = type(value)
    if kind is str or kind is int or kind is float or kind is bool or value is None:
        return value
    if kind is dict:
        return {k: _plain(v) for k, v in value.items()}
    if kind is list:
        return [_plain(v) for v in value]
    if isinstance(value, Node | Relationship | Path):
        raise _GraphValue
    return value  # temporal and spatial values, as the driver hydrated them


def _row(keys: tuple[str, ...], record: Record) -> dict[str, Any]:
    try:
        return {k: _plain(v) for k, v in zip(keys, record, strict=True)}
    except _GraphValue:
        return record.data()


async def _read_rows(driver: AsyncDriver, database: str, query: LiteralString,
                     params: dict[str, Any] | None, timeout: float | None,
                     ) -> list[dict[str, Any]]:
    started = time.monotonic()
    failures = 0
    text = _query_text(query)
    while True:
        session = _read_session(driver, database)
        try:
            result = await session.run(Query(text, timeout=timeout), params)
            keys = result.keys()
            rows = [_row(keys, record) async for record in result]
        except (Neo4jError, DriverError) as error:
            await session.close()
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
            continue
        except BaseException:  # cancelled, or anything unexpected: never reused
            await session.close()
            raise
        idle = _idle_sessions.setdefault(driver, {}).setdefault(database, [])
        if len(idle) < MAX_IDLE_READ_SESSIONS:
            idle.append(session)
        else:
            await session.close()
        return rows


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
    """A driver bound to one database, with the managed-transaction helpers the jobs use.

    Reads are READ transactions and writes WRITE ones, so that with a ``neo4j://`` URI on a
    cluster the driver sends reads to secondaries and writes to the leader. Every session
    shares the driver's bookmark manager (the one ``execute_query`` and the API's reads use):
    a read routed to a secondary waits until it has applied what this process wrote before,
    as a job reading back its own writes (a run's members, the next batch's look-ups) needs.
    """

    def __init__(self, driver: Driver, database: str) -> None:
        self.driver = driver
        self.database = database

    def _session(self, access_mode: str = WRITE_ACCESS) -> Session:
        return self.driver.session(
            database=self.database, default_access_mode=access_mode,
            bookmark_manager=self.driver.execute_query_bookmark_manager)

    def write(self, work: Callable[[ManagedTransaction], T], *,
              query: str | None = None) -> T:
        """Run ``work`` in a managed write transaction (retried on transient errors);
        ``query`` names its statement in traces."""
        with traced("write", self.database, query), self._session() as session:
            return session.execute_write(work)

    def read(self, work: Callable[[ManagedTransaction], T], *,
             query: str | None = None) -> T:
        """Run ``work`` in a managed read transaction (a secondary's, on a cluster)."""
        with traced("read", self.database, query), self._session(READ_ACCESS) as session:
            return session.execute_read(work)

    def write_work(self, make: Callable[[], Work[T]]) -> T:
        """Run the ``Work`` that ``make`` returns in a managed write transaction (a retry runs
        a new one)."""
        return self.write(lambda tx: run_work(tx, make()))

    def read_work(self, make: Callable[[], Work[T]]) -> T:
        """Run the ``Work`` that ``make`` returns in a managed read transaction."""
        return self.read(lambda tx: run_work(tx, make()))

    def rows(self, query: LiteralString, **params: Any) -> list[dict[str, Any]]:
        """Read query results as plain dicts."""
        def work(tx: ManagedTransaction) -> list[dict[str, Any]]:
            return [record.data() for record in tx.run(query, params)]
        return self.read(work, query=query)

    def execute(self, query: LiteralString, **params: Any) -> list[dict[str, Any]]:
        """Run one write query in a managed transaction and return its rows."""
        def work(tx: ManagedTransaction) -> list[dict[str, Any]]:
            return [record.data() for record in tx.run(query, params)]
        return self.write(work, query=query)

    def auto_commit(self, query: LiteralString, **params: Any) -> ResultSummary:
        """For `CALL { ... } IN TRANSACTIONS`, which needs an auto-commit transaction; returns
        the statement's summary (its counters)."""
        with traced("write", self.database, query), self._session() as session:
            return session.run(query, params).consume()


class AsyncGraph:
    """The async driver bound to one database: the API's writes, running the same ``Work`` as
    the synchronous ``Graph`` of every other caller."""

    def __init__(self, driver: AsyncDriver, database: str) -> None:
        self.driver = driver
        self.database = database

    def session(self, access_mode: str = WRITE_ACCESS) -> AsyncSession:
        """A session sharing the driver's bookmark manager (``Graph``: reads see what this
        process wrote before)."""
        return self.driver.session(
            database=self.database, default_access_mode=access_mode,
            bookmark_manager=self.driver.execute_query_bookmark_manager)

    async def write_work(self, make: Callable[[], Work[T]]) -> T:
        """Run the ``Work`` that ``make`` returns in a managed write transaction (retried on
        transient errors, each time with a new one)."""
        with traced("write", self.database):
            async with self.session() as session:
                result: T = await session.execute_write(
                    lambda tx: run_work_async(tx, make()))
                return result

    async def read_work(self, make: Callable[[], Work[T]]) -> T:
        """Run the ``Work`` that ``make`` returns in a managed read transaction."""
        with traced("read", self.database):
            async with self.session(READ_ACCESS) as session:
                result: T = await session.execute_read(lambda tx: run_work_async(tx, make()))
                return result


class _Fetched:
    """A statement's records, fetched whole on the event loop, read the way synchronous code
    reads a ``neo4j.Result`` (iteration, ``single``, ``data``, ``value``, ``values``,
    ``consume``)."""

    def __init__(self, records: list[Record], summary: ResultSummary) -> None:
        self._records = records
        self._summary = summary

    def __iter__(self) -> Iterator[Record]:
        return iter(self._records)

    def single(self) -> Record | None:
        return self._records[0] if self._records else None

    def data(self, *keys: str) -> list[dict[str, Any]]:
        return [record.data(*keys) for record in self._records]

    def value(self, key: int | str = 0, default: Any = None) -> list[Any]:
        return [record.value(key, default) for record in self._records]

    def values(self, *keys: int | str) -> list[list[Any]]:
        return [record.values(*keys) for record in self._records]

    def keys(self) -> tuple[str, ...]:
        return tuple(self._records[0].keys()) if self._records else ()

    def consume(self) -> ResultSummary:
        return self._summary


async def _fetch(runner: AsyncManagedTransaction | AsyncSession, query: LiteralString,
                 params: dict[str, Any]) -> _Fetched:
    result = await runner.run(query, params)
    records = [record async for record in result]
    return _Fetched(records, await result.consume())


class _LoopTransaction:
    """A synchronous face on an async transaction, for transaction functions written for
    ``Graph`` running on a worker thread: each statement is sent on the event loop, and the
    thread waits for its records."""

    def __init__(self, tx: AsyncManagedTransaction, loop: asyncio.AbstractEventLoop) -> None:
        self._tx = tx
        self._loop = loop

    def run(self, query: LiteralString, parameters: dict[str, Any] | None = None,
            **kwargs: Any) -> _Fetched:
        params = {**(parameters or {}), **kwargs}
        return asyncio.run_coroutine_threadsafe(_fetch(self._tx, query, params),
                                                self._loop).result()


def _settle(done: asyncio.Future[Any], value: Any, error: BaseException | None) -> None:
    if done.done():  # cancelled meanwhile (the request or the process ended)
        return
    if error is not None:
        done.set_exception(error)
    else:
        done.set_result(value)


class LoopGraph(Graph):
    """A ``Graph`` on an async process's one driver: the synchronous write code every source
    shares (the event writer, CRM records, erasure, situation pushes, segmentation) run by
    the API on its ``AsyncDriver``, called from a worker thread.

    Each transaction is opened on the event loop (``execute_write``, so transient errors are
    retried as on the sync driver, and its sessions share the driver's bookmark manager); the
    transaction function runs on the calling thread and sends each statement to the loop.
    ``Work`` skips the thread: it runs on the loop (``AsyncGraph``). Called on the loop's own
    thread it would wait for itself, so it refuses.
    """

    def __init__(self, driver: AsyncDriver, database: str,
                 loop: asyncio.AbstractEventLoop) -> None:
        # Not Graph.__init__: there is no sync driver here, and nothing may reach for one.
        self.async_graph = AsyncGraph(driver, database)
        self.database = database
        self.loop = loop

    def _off_loop(self) -> None:
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            return
        if running is self.loop:
            raise RuntimeError("LoopGraph called on its event loop's thread; await AsyncGraph")

    def call(self, coroutine: Coroutine[Any, Any, T]) -> T:
        """Run ``coroutine`` on the driver's loop and wait for it (from another thread)."""
        try:
            self._off_loop()
        except RuntimeError:
            coroutine.close()
            raise
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result()

    def _transaction(self, access_mode: str, work: Callable[[ManagedTransaction], T]) -> T:
        # Each attempt of the managed transaction hands its transaction to this thread, which
        # runs ``work`` and settles the attempt; None says the transaction is over.
        attempts: queue.SimpleQueue[tuple[AsyncManagedTransaction, asyncio.Future[T]] | None]
        attempts = queue.SimpleQueue()

        async def attempt(tx: AsyncManagedTransaction) -> T:
            done: asyncio.Future[T] = self.loop.create_future()
            attempts.put((tx, done))
            return await done

        async def transact() -> T:
            async with self.async_graph.session(access_mode) as session:
                if access_mode == READ_ACCESS:
                    return await session.execute_read(attempt)
                return await session.execute_write(attempt)

        self._off_loop()
        outcome = asyncio.run_coroutine_threadsafe(transact(), self.loop)
        outcome.add_done_callback(lambda _: attempts.put(None))
        while (handed := attempts.get()) is not None:
            tx, done = handed
            value: Any = None
            error: BaseException | None = None
            try:
                value = work(cast(ManagedTransaction, _LoopTransaction(tx, self.loop)))
            except BaseException as exc:  # noqa: BLE001 - handed to the driver, which retries or raises
                error = exc
            self.loop.call_soon_threadsafe(_settle, done, value, error)
        return outcome.result()

    def write(self, work: Callable[[ManagedTransaction], T], *,
              query: str | None = None) -> T:
        with traced("write", self.database, query):
            return self._transaction(WRITE_ACCESS, work)

    def read(self, work: Callable[[ManagedTransaction], T], *,
             query: str | None = None) -> T:
        with traced("read", self.database, query):
            return self._transaction(READ_ACCESS, work)

    def write_work(self, make: Callable[[], Work[T]]) -> T:
        return self.call(self.async_graph.write_work(make))

    def read_work(self, make: Callable[[], Work[T]]) -> T:
        return self.call(self.async_graph.read_work(make))

    def auto_commit(self, query: LiteralString, **params: Any) -> ResultSummary:
        async def run() -> ResultSummary:
            async with self.async_graph.session(WRITE_ACCESS) as session:
                return (await _fetch(session, query, params)).consume()
        with traced("write", self.database, query):
            return self.call(run())


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
