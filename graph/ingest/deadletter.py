"""Dead letters: rejected records, PII scrubbed, kept in a JSON Lines file and in the graph.

Every sink of rejects (the file import, the Kafka dead-letter topic, HTTP and CRM rejects) makes a
``DeadLetter`` with ``make_dead_letter`` and hands it to ``DeadLetterStore.record``, which writes
``(:DeadLetter {id, source, position, reason, at, record, identifiers, truncated})`` nodes. The
``identifiers`` are the ``kind:hash`` pseudonyms of the user identifiers readable from the
rejected record, so that a user's dead letters can be exported and erased with the user.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

import orjson

from graph.db import Graph, Statement, statements
from graph.events import ATTRIBUTE_PREFIX
from graph.privacy import (
    IDENTIFIER_KINDS,
    POSTAL_CODE_ATTRIBUTES,
    Pseudonymizer,
    coarsen_postal_code,
)

MAX_RAW_CHARS = 2000
SCRUB_CHARS = MAX_RAW_CHARS + 500
"""Text beyond this is cut before it is scrubbed: a dead letter keeps 2,000 characters, and a
contact detail (at most a few hundred characters) that the cut splits lies beyond them, while
scrubbing a huge record whole would cost time for nothing kept."""
STORE_BATCH = 500
MAX_DEPTH = 32
"""Nesting kept in a scrubbed record; deeper values become ``NESTED``. A rejected record may be
nested as deep as the parser allows (1,024 levels), and scrubbing walks it recursively."""
NESTED = "[nested]"
NAME_KEYS = frozenset({"name", "first_name", "last_name", "full_name", "given_name",
                       "family_name", "surname", "display_name", "firstname", "lastname"})
"""Keys whose string values are taken for personal names and pseudonymized in dead letters."""
# In a record that is not whole JSON (a line cut at the size limit, broken JSON), the quoted
# values of identifier keys are found by this pattern (its alternatives never overlap, so it is
# linear on any input; an unterminated value runs to the end of the text) and
# pseudonymized: the same keys a parsed record's ``user`` map and ``user_<kind>`` columns use,
# and a device's ``id``.
_IDENTIFIER_VALUE = re.compile(
    r'"(?:user_)?(' + "|".join(IDENTIFIER_KINDS) + r')"\s{0,20}:\s{0,20}"((?:[^"\\]|\\.)*)'
    r'|"device"\s{0,20}:\s{0,20}\{\s{0,20}"id"\s{0,20}:\s{0,20}"((?:[^"\\]|\\.)*)')

# A reject naming an erased user's identifier is not kept in the graph (a replay would otherwise
# bring back what the erasure removed; its time, being malformed, cannot be trusted).
RECORD_DEAD_LETTERS = """
UNWIND $rows AS row
WITH row WHERE none(k IN row.identifiers WHERE EXISTS { (:ErasedIdentifier {key: k}) })
MERGE (d:DeadLetter {id: row.id})
ON CREATE SET d.source = row.source, d.position = row.position, d.reason = row.reason,
              d.record = row.record, d.identifiers = row.identifiers,
              d.truncated = row.truncated, d.at = datetime({epochMillis: row.at})
"""


@dataclass(frozen=True)
class DeadLetter:
    """One rejected record, already scrubbed: nothing here is plaintext PII."""

    id: str
    source: str
    reason: str
    record: str
    identifiers: tuple[str, ...]
    at: datetime
    position: str | None = None
    truncated: bool = False

    def as_row(self) -> dict[str, Any]:
        return {"id": self.id, "source": self.source, "position": self.position,
                "reason": self.reason, "record": self.record,
                "identifiers": list(self.identifiers), "truncated": self.truncated,
                "at": int(self.at.timestamp() * 1000)}


def _user_map(data: Any) -> dict[str, Any]:
    """The identifiers a record names: its ``user`` map, CSV-style ``user_<kind>`` columns, and
    its device's id."""
    if not isinstance(data, dict):
        return {}
    found: dict[str, Any] = {}
    user = data.get("user")
    if isinstance(user, dict):
        found.update(user)
    device = data.get("device")
    if isinstance(device, dict) and "id" in device:
        found.setdefault("device_id", device["id"])
    for key in ("device_id",):
        if key in data:
            found.setdefault(key, data[key])
    for key, value in data.items():
        if isinstance(key, str) and key.startswith("user_"):
            found.setdefault(key.removeprefix("user_"), value)
    return found


def identifier_keys(pseudonymizer: Pseudonymizer, data: Any,
                    raw: str | None = None) -> tuple[str, ...]:
    """``kind:hash`` of each known identifier kind with a non-empty string value (best effort):
    from the parsed record, or (``data`` None) from the identifier values in its raw text."""
    pairs = list(_user_map(data).items()) if data is not None else _raw_identifiers(raw or "")
    keys = []
    for kind, value in pairs:
        if kind in IDENTIFIER_KINDS and isinstance(value, str) and value.strip():
            keys.append(f"{kind}:{pseudonymizer.digest(kind, value)}")
    return tuple(sorted(set(keys)))


def _raw_identifiers(text: str) -> list[tuple[str, str]]:
    found = []
    for m in _IDENTIFIER_VALUE.finditer(text[:SCRUB_CHARS]):
        kind, value = (m.group(1), m.group(2)) if m.group(1) else ("device_id", m.group(3))
        found.append((kind, _unescape(value)))
    return found


def _unescape(value: str) -> str:
    try:
        decoded: str = json.loads(f'"{value}"')
        decoded.encode()  # a lone surrogate (`\\ud800`) can be neither hashed nor stored
    except ValueError:  # UnicodeEncodeError included
        return value
    return decoded


def _storable(text: str) -> str:
    """``text`` with lone surrogates replaced: the driver and the hash need valid UTF-8."""
    return text.encode("utf-8", "replace").decode("utf-8")


def _scrub_raw(pseudonymizer: Pseudonymizer, text: str) -> str:
    """Text that is not a whole JSON record: identifier values (as ``_IDENTIFIER_VALUE``
    finds them) pseudonymized, then emails and phone numbers."""
    def token(m: re.Match[str]) -> str:
        kind, value = (m.group(1), m.group(2)) if m.group(1) else ("device_id", m.group(3))
        start, end = m.span(2) if m.group(1) else m.span(3)
        whole = m.group(0)
        offset = m.start(0)
        return (whole[:start - offset] + _token(pseudonymizer, kind, _unescape(value))
                + whole[end - offset:])
    return pseudonymizer.scrub_text(_IDENTIFIER_VALUE.sub(token, text))


def _token(pseudonymizer: Pseudonymizer, kind: str, value: str) -> str:
    return f"[{kind}:{pseudonymizer.digest(kind, value)[:10]}]"


def _parse(raw: str) -> Any:
    """The record's JSON, or None when it is not JSON. The ingest readers' parser (orjson):
    the standard library's recursion on deep nesting raised RecursionError on a line of
    100,000 ``[``, which stopped a file import and, re-read on restart, the Kafka consumer."""
    try:
        return orjson.loads(raw)
    except ValueError:  # orjson.JSONDecodeError, and str with lone surrogates
        return None


def _scrub(pseudonymizer: Pseudonymizer, value: Any, key: str | None = None,
           identifiers: bool = False, depth: int = 0) -> Any:
    if isinstance(value, dict | list) and depth >= MAX_DEPTH:
        return NESTED
    if isinstance(value, dict):
        if key == "device" and isinstance(value.get("id"), str):
            value = {**value, "id": _token(pseudonymizer, "device_id", value["id"])}
        return {pseudonymizer.scrub_text(str(k)[:SCRUB_CHARS]): _scrub(
                    pseudonymizer, v, str(k),
                    identifiers or str(k) == "user" or str(k).startswith("user_"), depth + 1)
                for k, v in value.items()}
    if isinstance(value, list):
        return [_scrub(pseudonymizer, v, key, identifiers, depth + 1) for v in value]
    if not isinstance(value, str):
        return value
    value = value[:SCRUB_CHARS]
    if value.startswith("[device_id:") and key == "id":
        return value  # pseudonymized above
    if identifiers or key in ("email", "phone", "device_id"):
        kind = (key or "").removeprefix("user_")
        return _token(pseudonymizer, kind if kind in IDENTIFIER_KINDS else "identifier", value)
    if key is not None and key.lower() in NAME_KEYS:
        return _token(pseudonymizer, "name", value)
    if key is not None and key.lower().removeprefix(ATTRIBUTE_PREFIX) in POSTAL_CODE_ATTRIBUTES:
        return coarsen_postal_code(value)  # kept as a stored attribute would be
    return pseudonymizer.scrub_text(value)


def scrub_record(pseudonymizer: Pseudonymizer, raw: str) -> str:
    """The raw record without plaintext PII, at most ``MAX_RAW_CHARS`` long.

    A JSON record has every identifier value (its ``user`` map, ``user_<kind>`` columns, any
    ``email``/``phone`` field) and name-like fields replaced by pseudonym tokens, and emails and
    phone numbers in other strings too; other text has its emails and phone numbers replaced.
    Scrubbing comes before truncation, so no identifier is cut in half and left readable.
    """
    data = _parse(raw)
    if data is None:
        text = _scrub_raw(pseudonymizer, raw[:SCRUB_CHARS])
    else:
        text = json.dumps(_scrub(pseudonymizer, data), ensure_ascii=False)
    return _storable(text[:MAX_RAW_CHARS])


def make_dead_letter(pseudonymizer: Pseudonymizer, *, source: str, reason: str, raw: str,
                     position: str | None = None, at: datetime | None = None) -> DeadLetter:
    """A scrubbed dead letter. Its id is stable for the same source, position and record, so a
    re-sent reject is stored once. ``position`` is where it was (a line, a partition/offset)."""
    record = scrub_record(pseudonymizer, raw)
    data = _parse(raw)
    clean_source = _storable(pseudonymizer.scrub_text(source))
    digest = hashlib.sha256(
        "\x00".join((clean_source, position or "", record)).encode()).hexdigest()[:32]
    return DeadLetter(id=f"dl_{digest}", source=clean_source,
                      reason=_storable(pseudonymizer.scrub_text(reason)), record=record,
                      identifiers=identifier_keys(pseudonymizer, data, raw),
                      at=at or datetime.now(UTC), position=position,
                      truncated=len(raw) > MAX_RAW_CHARS)


class DeadLetterStore:
    """Writes dead letters to the graph in batches (one UNWIND per batch, idempotent on id)."""

    def __init__(self, graph: Graph, batch_size: int = STORE_BATCH) -> None:
        self.graph = graph
        self.batch_size = batch_size

    def record(self, letters: Sequence[DeadLetter]) -> int:
        """Store ``letters``; returns how many were given (a re-sent one is stored once)."""
        for start in range(0, len(letters), self.batch_size):
            rows = [d.as_row() for d in letters[start:start + self.batch_size]]
            self.graph.write_work(partial(statements,
                                          Statement(RECORD_DEAD_LETTERS, {"rows": rows})))
        return len(letters)


@dataclass
class DeadLetterFile:
    """Appends rejects to a JSON Lines file, created only when the first reject arrives, and
    (with a ``store``) to the graph, in batches; ``close`` stores what is pending."""

    path: Path
    source: str
    pseudonymizer: Pseudonymizer
    store: DeadLetterStore | None = None
    count: int = 0
    _pending: list[DeadLetter] = field(default_factory=list, repr=False)

    def write(self, line: int, reason: str, raw: str) -> None:
        letter = make_dead_letter(self.pseudonymizer, source=self.source, reason=reason,
                                  raw=raw, position=f"line {line}")
        record = {
            "id": letter.id,
            "source": letter.source,
            "line": line,
            "reason": letter.reason,
            "record": letter.record,
            "truncated": letter.truncated,
            "identifiers": list(letter.identifiers),
            "rejected_at": letter.at.isoformat(),
        }
        if self.count == 0:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.path.write_text("")
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")
        self.count += 1
        if self.store is not None:
            self._pending.append(letter)
            if len(self._pending) >= self.store.batch_size:
                self.flush()

    def flush(self) -> None:
        if self.store is not None and self._pending:
            self.store.record(self._pending)
            self._pending.clear()

    def close(self) -> None:
        self.flush()
