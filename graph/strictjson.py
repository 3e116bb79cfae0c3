"""JSON from outside, parsed one way everywhere: orjson, and a repeated key refused.

Every entry point that takes JSON from a client or a source (GraphQL bodies and WebSocket
messages, `POST /v1/events`, both webhooks, Kafka messages, event and CRM files) parses it
here. orjson keeps the last of a repeated key, as most parsers do; but parsers disagree (some
keep the first, some refuse), so a body such as ``{"query": "<checked>", "query": "<run>"}``
or an event with two ``event_id`` means one thing to whatever inspected it on the way in (a
proxy, a WAF, an audit log, the producer's own checks) and another here. A careful service
refuses it, with the key named.
"""

from __future__ import annotations

import json
import re
from typing import Any

import orjson

JSONDecodeError = orjson.JSONDecodeError
"""What :func:`loads` raises: orjson's error (a ``ValueError``), for a repeated key too."""

_TOKEN = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"|[{}\[\]:]', re.DOTALL)
"""A JSON string literal (escapes included; linear, no alternation under a star) or a bracket
or colon: what :func:`first_repeated_key` walks."""


def first_repeated_key(raw: bytes) -> tuple[str, int] | None:
    """The first key repeated within one object of valid JSON text, and its byte offset; None
    when there is none. Iterative (no recursion, whatever the nesting)."""
    objects: list[set[str] | None] = []
    pending: tuple[bytes, int] | None = None
    for match in _TOKEN.finditer(raw):
        token = match.group()
        if token == b":" and pending is not None:
            keys = objects[-1] if objects else None
            name = json.loads(pending[0])
            if keys is not None:
                if name in keys:
                    return name, pending[1]
                keys.add(name)
        pending = None
        if token == b"{":
            objects.append(set())
        elif token == b"[":
            objects.append(None)
        elif token in (b"}", b"]"):
            if objects:
                objects.pop()
        elif token.startswith(b'"'):
            pending = (token, match.start())
    return None


def may_repeat_a_key(raw: bytes, encoded: bytes) -> bool:
    """Whether valid JSON text ``raw`` may repeat a key, given ``encoded``, orjson's encoding
    of what it parsed to (see :func:`loads`): False proves it repeats none."""
    return (raw.count(b":") != encoded.count(b":") or b"\\u003a" in raw
            or b"\\u003A" in raw)


def loads(text: str | bytes) -> Any:
    """Parse ``text`` as orjson does (nesting beyond its depth limit, numbers beyond a double,
    ``NaN`` and ``Infinity`` are errors), and refuse an object that repeats a key:
    :data:`JSONDecodeError` naming it.

    The check costs no second parse. A colon in valid JSON text is either a member's or a
    literal character of a string (no escape writes one but ``\\u003a``). Re-encoded, the
    value has one colon per member and per colon of its strings; a repeated key drops a member
    and the strings of the dropped value, so the text has more colons than its re-encoding
    exactly when a key was dropped. Only then (or with ``\\u003a`` in the text) are keys
    walked one by one."""
    value = orjson.loads(text)
    if not isinstance(value, dict | list):
        return value
    raw = text.encode() if isinstance(text, str) else bytes(text)
    try:
        encoded = orjson.dumps(value)
    except TypeError:  # a value orjson reads but does not write back (an integer past 64 bits)
        encoded = b""
    if may_repeat_a_key(raw, encoded):
        repeated = first_repeated_key(raw)
        if repeated is not None:
            name, at = repeated
            shown = name if len(name) <= 60 else name[:60] + "…"
            raise JSONDecodeError(f"key {json.dumps(shown)} repeated in one object",
                                  raw.decode(errors="replace"), at)
    return value
