"""Read-your-writes: consistency tokens, and the bounded wait of a read for one.

A write answers with a token naming how far the graph must be for the write to be seen: the
Neo4j bookmarks after its transaction (a write through the API: ``POST /v1/events``,
``ingestEvents``, ``setPreference``, ``upsertUser``, the MCP write tools), or a Kafka message's
topic, partition and offset (a producer mints it from its delivery report, ``kafka_token``).
A read given the token (``after``) first waits, at most PERSONAS_CONSISTENCY_WAIT_MS, until the
graph has it: the bookmarks through a session opened with them (Neo4j itself waits until its
server has applied them), the Kafka position until the consumer group's recorded offset
(``offsets_statement`` in the batch's transaction, or ``record_offsets`` after it, written by
``graph.ingest.stream``) has passed it. A write that is not
visible by then makes the read answer ``pending`` instead of failing.

The token does not depend on the driver that committed the write (the bookmarks of a sync and
an async driver of the same database are the same values): it is ``v1.`` and the URL-safe
base64 (no padding) of a small JSON object, ``{"b": [bookmark, ...]}`` or
``{"k": [topic, partition, offset]}``, so any producer can make one. A token that does not
parse, or that Neo4j refuses, is BAD_USER_INPUT; a forged Kafka position or bookmark of a
write that never happens only waits out the bound and answers ``pending``.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import re
import time
from collections.abc import Collection, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, LiteralString

from neo4j import AsyncDriver
from neo4j.exceptions import ClientError

from graph.db import Graph, LoopGraph, Rows, Statement, read_rows
from graph.db import wait_for_bookmarks as db_wait_for_bookmarks
from graph.errors import InvalidInput, NotFound

VERSION = "v1"
MAX_TOKEN_CHARS = 4096
"""Longer than any real token (a bookmark is about a hundred characters): a bound on what a
caller can make the API decode."""
MAX_BOOKMARKS = 16
MAX_BOOKMARK_CHARS = 1024
MAX_PARTITION = 1_000_000
MAX_OFFSET = 2**63 - 1
KAFKA_POLL_S = 0.01
"""How often a read waiting for a Kafka position looks at the recorded offset again."""
TOPIC_RE = re.compile(r"^[A-Za-z0-9._-]{1,249}$")
BOOKMARK_RE = re.compile(r"^[\x21-\x7e]+$")
HEADER = "X-Consistency-Token"
"""The response header of ``POST /v1/events`` that carries the token too."""

RECORD_OFFSETS: LiteralString = (
    "CYPHER replan=skip "
    "UNWIND $rows AS row "
    "MERGE (o:StreamOffset {group: row.group, topic: row.topic, partition: row.partition}) "
    "SET o.next = CASE WHEN o.next IS NULL OR o.next < row.next THEN row.next "
    "ELSE o.next END, o.updated_at = datetime()")
"""A consumer group's next offset per partition, only ever moving forward (a batch read again
after a crash must not move it back). It runs in every stream batch's transaction, so, like the
writer's statements, it keeps its plan (a seek on the unique key) whatever the statistics do:
never planned again inside a batch's transaction (docs/performance.md)."""
APPLIED_OFFSET: LiteralString = (
    "MATCH (o:StreamOffset {group: $group, topic: $topic, partition: $partition}) "
    "RETURN o.next AS next")


@dataclass(frozen=True)
class KafkaPosition:
    topic: str
    partition: int
    offset: int


@dataclass(frozen=True)
class Token:
    """A decoded consistency token: bookmarks, or a Kafka position."""

    bookmarks: tuple[str, ...] = ()
    kafka: KafkaPosition | None = None


def encode(payload: Mapping[str, Any]) -> str:
    raw = json.dumps(payload, separators=(",", ":"), sort_keys=True).encode()
    return f"{VERSION}.{base64.urlsafe_b64encode(raw).decode().rstrip('=')}"


def bookmark_token(bookmarks: Collection[str]) -> str:
    """The token of a write whose transaction left ``bookmarks`` (a bookmark manager's set)."""
    return encode({"b": sorted(bookmarks)})


def kafka_token(topic: str, partition: int, offset: int) -> str:
    """The token of a Kafka message, from the producer's delivery report: visible once the
    consumer group has written the batch holding it."""
    return encode({"k": [topic, partition, offset]})


def written(graph: Graph) -> str:
    """The token of what this process wrote through ``graph`` so far: read right after a
    write, it covers that write (the driver's bookmark manager holds the bookmarks of its
    latest transactions, each at least as far as the write). On the API's ``LoopGraph``,
    from a worker thread; on the event loop, ``written_async``."""
    if isinstance(graph, LoopGraph):
        return graph.call(written_async(graph.async_graph.driver))
    return bookmark_token(graph.driver.execute_query_bookmark_manager.get_bookmarks())


async def written_async(driver: AsyncDriver) -> str:
    """``written`` for a write on the async driver."""
    return bookmark_token(await driver.execute_query_bookmark_manager.get_bookmarks())


def _refuse(why: str) -> InvalidInput:
    return InvalidInput(f"`after` is not a consistency token of this API ({why}); pass the "
                        "`token` a write answered with, unchanged")


def decode(token: str) -> Token:
    """The token ``encode`` made, or InvalidInput that says what is wrong with it."""
    if len(token) > MAX_TOKEN_CHARS:
        raise _refuse(f"{len(token)} characters, at most {MAX_TOKEN_CHARS}")
    version, dot, body = token.partition(".")
    if not dot or version != VERSION:
        raise _refuse(f"it does not start with `{VERSION}.`")
    try:
        raw = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
        data = json.loads(raw)
    except (binascii.Error, ValueError):
        raise _refuse("not URL-safe base64 of JSON") from None
    if not isinstance(data, dict) or len(data) != 1:
        raise _refuse("not a bookmark or Kafka token")
    if "b" in data:
        return Token(bookmarks=_bookmarks(data["b"]))
    if "k" in data:
        return Token(kafka=_position(data["k"]))
    raise _refuse("not a bookmark or Kafka token")


def _bookmarks(value: Any) -> tuple[str, ...]:
    if (not isinstance(value, list) or len(value) > MAX_BOOKMARKS
            or not all(isinstance(b, str) and len(b) <= MAX_BOOKMARK_CHARS
                       and BOOKMARK_RE.fullmatch(b) for b in value)):
        raise _refuse("malformed bookmarks")
    return tuple(value)


def _position(value: Any) -> KafkaPosition:
    if not (isinstance(value, list) and len(value) == 3):
        raise _refuse("a Kafka position is [topic, partition, offset]")
    topic, partition, offset = value
    if not (isinstance(topic, str) and TOPIC_RE.fullmatch(topic) and topic not in (".", "..")):
        raise _refuse("malformed Kafka topic")
    for number, limit in ((partition, MAX_PARTITION), (offset, MAX_OFFSET)):
        if isinstance(number, bool) or not isinstance(number, int) or not 0 <= number <= limit:
            raise _refuse("a partition and offset are whole numbers from 0")
    return KafkaPosition(topic, partition, offset)


def offsets_statement(group: str, offsets: Mapping[tuple[str, int], int]) -> Statement:
    """The statement recording the next offset of each partition of a batch; run in the
    batch's own transaction, a read that sees it sees the batch."""
    return Statement(RECORD_OFFSETS, {"rows": Rows(
        {"group": group, "topic": t, "partition": p, "next": n}
        for (t, p), n in offsets.items())})


def record_offsets(graph: Graph, group: str, offsets: Mapping[tuple[str, int], int]) -> None:
    """Record, after a batch's transaction committed, the next offset of each of its
    partitions: once a read sees it, it sees the batch (the batch committed first, so every
    server that has this transaction has the batch's)."""
    if offsets:
        statement = offsets_statement(group, offsets)
        graph.execute(statement.query, **statement.params)


async def wait_for(driver: AsyncDriver, database: str, token: Token, *, group: str,
                   timeout_s: float) -> bool:
    """Wait until the write ``token`` names is visible to this process's reads, at most
    ``timeout_s``; False (pending) if it is not by then. A bookmark that Neo4j refuses is
    InvalidInput."""
    try:
        if token.kafka is not None:
            return await _wait_for_offset(driver, database, token.kafka, group, timeout_s)
        if not token.bookmarks:
            return True
        await asyncio.wait_for(_wait_for_bookmarks(driver, database, token.bookmarks),
                               timeout_s)
        return True
    except TimeoutError:
        return False


async def _wait_for_bookmarks(driver: AsyncDriver, database: str,
                              bookmarks: Iterable[str]) -> None:
    try:
        await db_wait_for_bookmarks(driver, database, list(bookmarks))
    except ClientError as error:
        # InvalidBookmark and its kin: a token of no write of this database.
        if "Bookmark" in (error.code or ""):
            raise _refuse("Neo4j does not know its bookmarks") from None
        raise


async def _wait_for_offset(driver: AsyncDriver, database: str, position: KafkaPosition,
                           group: str, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    params = {"group": group, "topic": position.topic, "partition": position.partition}
    while True:
        rows = await read_rows(driver, database, APPLIED_OFFSET, params)
        if rows and rows[0]["next"] is not None and rows[0]["next"] > position.offset:
            return True
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        await asyncio.sleep(min(KAFKA_POLL_S, left))


async def visible(driver: AsyncDriver, database: str, after: str | None, *, group: str,
                  timeout_s: float) -> bool:
    """For a read given ``after`` (or not): False when the write it names is still pending
    after the bound; InvalidInput for a malformed token."""
    if after is None:
        return True
    return await wait_for(driver, database, decode(after), group=group, timeout_s=timeout_s)



PENDING_NOTE = "; the write `after` names is not visible yet (pending): ask again"


@contextmanager
def noting_pending(pending: bool) -> Iterator[None]:
    """A NotFound while the write ``after`` names is still pending says so: that write may be
    what creates the thing asked for."""
    try:
        yield
    except NotFound as exc:
        if not pending:
            raise
        raise NotFound(f"{exc}{PENDING_NOTE}") from None
