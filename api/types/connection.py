"""Relay-style cursor connections: opaque cursors, edges, and whether more pages follow."""

from __future__ import annotations

import base64
import binascii

import strawberry

from api.types.user import User
from graph.errors import InvalidInput


def encode_cursor(kind: str, key: str) -> str:
    return base64.urlsafe_b64encode(f"{kind}:{key}".encode()).decode()


def decode_cursor(kind: str, cursor: str | None) -> str:
    """The key inside a cursor of this kind ("" for the first page); anything else a client
    did not get from us is BAD_USER_INPUT."""
    if cursor is None:
        return ""
    try:
        text = base64.urlsafe_b64decode(cursor.encode()).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise InvalidInput(f"malformed cursor {cursor!r}") from None
    prefix, _, key = text.partition(":")
    if prefix != kind or not key:
        raise InvalidInput(f"malformed cursor {cursor!r}")
    return key


@strawberry.type
class PageInfo:
    has_next_page: bool
    end_cursor: str | None


@strawberry.type
class UserEdge:
    cursor: str
    node: User


@strawberry.type(description="A page of users; pass `pageInfo.endCursor` as `after` for the next.")
class UserConnection:
    edges: list[UserEdge]
    page_info: PageInfo
