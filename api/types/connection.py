"""Relay-style cursor connections: opaque cursors, edges, and whether more pages follow.

``Connection[User]`` is the GraphQL type ``UserConnection`` (with ``UserEdge``); every list that
can grow without bound is one of these.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Sequence
from typing import Any, Generic, TypeVar

import strawberry

from graph.errors import InvalidInput
from graph.profile.model import Page
from graph.times import READ_EARLIEST, READ_LATEST, epoch_ms

T = TypeVar("T")
M = TypeVar("M")


MAX_CURSOR_CHARS = 1024
"""Longer than any cursor we hand out (ids are bounded); checked before decoding."""
EARLIEST_MS = epoch_ms(READ_EARLIEST)
LATEST_MS = epoch_ms(READ_LATEST)


def encode_cursor(kind: str, key: str) -> str:
    return base64.urlsafe_b64encode(f"{kind}:{key}".encode()).decode()


def decode_cursor(kind: str, cursor: str | None) -> str:
    """The key inside a cursor of this kind ("" for the first page); anything else a client
    did not get from us is BAD_USER_INPUT."""
    if cursor is None:
        return ""
    if len(cursor) > MAX_CURSOR_CHARS:
        raise InvalidInput(f"malformed cursor: {len(cursor)} characters, longer than any we "
                           "give out")
    try:
        text = base64.urlsafe_b64decode(cursor.encode()).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise InvalidInput(f"malformed cursor {cursor!r}") from None
    prefix, _, key = text.partition(":")
    if prefix != kind or not key:
        raise InvalidInput(f"malformed cursor {cursor!r}")
    return key


def decode_time_cursor(kind: str, cursor: str | None) -> tuple[int | None, str | None]:
    """(epoch milliseconds, id) of a cursor over a time-ordered list; (None, None) at the start."""
    millis, ident = decode_pair_cursor(kind, cursor)
    if millis is None:
        return None, None
    digits = millis.removeprefix("-")
    # The statements make a DateTime of it: a number beyond the times a read may name (a
    # 64-bit integer, but year 300 million) would fail in the database, not here.
    if not (digits.isascii() and digits.isdigit()) or len(digits) > 19 \
            or not EARLIEST_MS <= int(millis) < LATEST_MS:
        raise InvalidInput(f"malformed cursor {cursor!r}")
    return int(millis), ident


def decode_pair_cursor(kind: str, cursor: str | None) -> tuple[str | None, str | None]:
    """(sort key, id) of a cursor over a list ordered by a key, ties broken by id."""
    key = decode_cursor(kind, cursor)
    if not key:
        return None, None
    first, sep, ident = key.rpartition("|")
    if not sep or not ident or not first:
        raise InvalidInput(f"malformed cursor {cursor!r}")
    return first, ident


@strawberry.type
class PageInfo:
    has_next_page: bool
    end_cursor: str | None


@strawberry.type
class Edge(Generic[T]):
    cursor: str
    node: T


@strawberry.type(description="A page of a list; pass `pageInfo.endCursor` as `after` for the "
                 "next.")
class Connection(Generic[T]):
    edges: list[Edge[T]]
    page_info: PageInfo


def paginate(rows: Sequence[dict[str, Any]], size: int, kind: str,
             key: Callable[[dict[str, Any]], str],
             node: Callable[[dict[str, Any]], T]) -> Connection[T]:
    """A page from ``rows`` fetched with ``LIMIT size + 1``: the extra row only says whether
    another page follows."""
    edges = [Edge(cursor=encode_cursor(kind, key(r)), node=node(r)) for r in rows[:size]]
    return Connection(edges=edges, page_info=PageInfo(
        has_next_page=len(rows) > size, end_cursor=edges[-1].cursor if edges else None))


def connection(page: Page[M], kind: str, node: Callable[[M], T]) -> Connection[T]:
    """A read model's page as a connection, each item's key its cursor."""
    edges = [Edge(cursor=encode_cursor(kind, key), node=node(item))
             for key, item in zip(page.keys, page.items, strict=True)]
    end = (encode_cursor(kind, page.end) if page.end is not None
           else edges[-1].cursor if edges else None)
    return Connection(edges=edges, page_info=PageInfo(has_next_page=page.has_more,
                                                      end_cursor=end))
