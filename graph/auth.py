"""API keys and roles: create, list, revoke, resolve a key to its principal, check a role.

A key reads ``pg_<id>_<secret>``: ``id`` (8 hex digits) names the key in listings and on the
command line, ``secret`` is ``secrets.token_urlsafe(24)``. Only the SHA-256 of the whole key is
stored: a key carries 192 random bits, so a fast hash is enough (a slow password hash guards
low-entropy secrets, and would cost every request). The key itself is shown once, at creation.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from neo4j.exceptions import ConstraintError

from graph.db import Graph, Reader
from graph.errors import Conflict, Forbidden, InvalidInput, NotFound, Unauthenticated
from graph.settings import Settings


class Role(StrEnum):
    READER = "reader"
    """Chatbots: users' personas, segments and preferences."""
    WRITER = "writer"
    """Ingestion clients: event and webhook endpoints, data mutations."""
    ANALYST = "analyst"
    """Everything the API reads, including run pictures (all of it pseudonymized)."""
    ADMIN = "admin"
    """Everything, including starting a segmentation run."""


# Who may do what; the API's fields and routes name one of these.
PERSONA_READERS = frozenset({Role.READER, Role.ANALYST, Role.ADMIN})
ANALYSTS = frozenset({Role.ANALYST, Role.ADMIN})
ADMINS = frozenset({Role.ADMIN})
WRITERS = frozenset({Role.WRITER, Role.ADMIN})
"""Who may send data in: ingestion endpoints and mutations."""

KEY_PREFIX = "pg"
# Lower-case alphanumerics rather than only hex for the id, so the demo key's non-hex id
# ("demo0000") passes the format check yet can never collide with a generated one.
KEY_PATTERN = re.compile(r"pg_[0-9a-z]{8}_[A-Za-z0-9_-]{8,128}")
MAX_NAME_LENGTH = 100
CREATE_ATTEMPTS = 3

# The README's example key. It only ever exists in a graph pseudonymized with the public demo
# key (see ensure_demo_key), where it opens nothing but demo data.
DEMO_KEY_ID = "demo0000"
DEMO_API_KEY = f"{KEY_PREFIX}_{DEMO_KEY_ID}_reader-demo-key"
DEMO_KEY_NAME = "demo reader (README example)"

CREATE_KEY = """
CREATE (k:ApiKey {id: $id, name: $name, role: $role, hash: $hash, created_at: datetime()})
RETURN k.created_at AS created_at
"""

ENSURE_KEY = """
MERGE (k:ApiKey {id: $id})
ON CREATE SET k.name = $name, k.role = $role, k.hash = $hash, k.created_at = datetime()
RETURN k.hash = $hash AS same_key, k.revoked_at AS revoked_at
"""

LIST_KEYS = """
MATCH (k:ApiKey)
RETURN k.id AS id, k.name AS name, k.role AS role, k.created_at AS created_at,
       k.revoked_at AS revoked_at
ORDER BY k.created_at, k.id
"""

# Revoking twice keeps the first revocation time.
REVOKE_KEY = """
MATCH (k:ApiKey {id: $id})
WITH k, k.revoked_at IS NOT NULL AS already
SET k.revoked_at = coalesce(k.revoked_at, datetime())
RETURN already, k.revoked_at AS revoked_at
"""

# The API runs this one too (with its async driver): one definition for both.
RESOLVE_KEY = """
MATCH (k:ApiKey {hash: $hash})
WHERE k.revoked_at IS NULL
RETURN k.id AS id, k.name AS name, k.role AS role
"""


@dataclass(frozen=True)
class Principal:
    """Who is calling: the key's id and name, and the role that decides what it may do."""

    id: str
    name: str
    role: Role

    @classmethod
    def from_record(cls, row: dict[str, Any]) -> Principal:
        return cls(id=row["id"], name=row["name"], role=Role(row["role"]))


@dataclass(frozen=True)
class ApiKeyInfo:
    """What may be shown about a key: never its hash, and the key itself only at creation."""

    id: str
    name: str
    role: Role
    created_at: datetime
    revoked_at: datetime | None

    @classmethod
    def from_record(cls, row: dict[str, Any]) -> ApiKeyInfo:
        revoked = row["revoked_at"]
        return cls(id=row["id"], name=row["name"], role=Role(row["role"]),
                   created_at=row["created_at"].to_native(),
                   revoked_at=revoked.to_native() if revoked is not None else None)


@dataclass(frozen=True)
class CreatedKey:
    key: str
    """The full key: shown once, stored nowhere."""
    info: ApiKeyInfo


@dataclass(frozen=True)
class Revocation:
    revoked_at: datetime
    already: bool
    """The key was revoked before; its revocation time is unchanged."""


def parse_role(value: str) -> Role:
    try:
        return Role(value.strip().lower())
    except ValueError:
        raise InvalidInput(
            f"unknown role {value!r}; choose from {', '.join(r.value for r in Role)}") from None


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def looks_like_key(key: str) -> bool:
    """A cheap format check, so that garbage never costs a database round trip."""
    return KEY_PATTERN.fullmatch(key) is not None


def new_key() -> tuple[str, str]:
    """A fresh (id, key) pair."""
    key_id = secrets.token_hex(4)
    return key_id, f"{KEY_PREFIX}_{key_id}_{secrets.token_urlsafe(24)}"


def create_key(graph: Graph, role: Role | str, name: str) -> CreatedKey:
    """Store a new key for ``role`` and return it; only its hash stays in the graph."""
    role = role if isinstance(role, Role) else parse_role(role)
    name = name.strip()
    if not 1 <= len(name) <= MAX_NAME_LENGTH:
        raise InvalidInput(f"a key needs a name of 1 to {MAX_NAME_LENGTH} characters")
    for _ in range(CREATE_ATTEMPTS):
        key_id, key = new_key()
        try:
            rows = graph.execute(CREATE_KEY, id=key_id, name=name, role=role.value,
                                 hash=hash_key(key))
        except ConstraintError:
            # 32-bit ids: a clash is rare but possible among many keys; draw again.
            continue
        info = ApiKeyInfo(key_id, name, role, rows[0]["created_at"].to_native(), None)
        return CreatedKey(key, info)
    raise Conflict(f"could not draw an unused key id in {CREATE_ATTEMPTS} attempts")


def list_keys(graph: Graph) -> list[ApiKeyInfo]:
    return [ApiKeyInfo.from_record(row) for row in graph.rows(LIST_KEYS)]


def revoke_key(graph: Graph, key_id: str) -> Revocation:
    """Revoke a key for good. A running API may still accept it until its key cache expires
    (``PERSONAS_API_KEY_CACHE_SECONDS``)."""
    rows = graph.execute(REVOKE_KEY, id=key_id)
    if not rows:
        raise NotFound(f"no API key with id {key_id!r}")
    return Revocation(rows[0]["revoked_at"].to_native(), rows[0]["already"])


def resolve_key(graph: Graph, key: str) -> Principal | None:
    """The principal of a live key; None for a malformed, unknown or revoked one."""
    if not looks_like_key(key):
        return None
    rows = graph.rows(RESOLVE_KEY, hash=hash_key(key))
    return Principal.from_record(rows[0]) if rows else None


async def principal_of(reader: Reader, digest: str) -> Principal | None:
    """The principal of a live key, looked up by its hash (``hash_key``) with an async reader
    (the API's); None for an unknown or revoked key."""
    rows = await reader.rows(RESOLVE_KEY, hash=digest)
    return Principal.from_record(rows[0]) if rows else None


def require_role(principal: Principal | None, allowed: Collection[Role]) -> Principal:
    """The principal, if its role is among ``allowed``; else the error the edge reports."""
    if principal is None:
        raise Unauthenticated("a valid API key is required: send `Authorization: Bearer <key>` "
                              "or `X-API-Key: <key>`")
    if principal.role not in allowed:
        roles = ", ".join(r.value for r in Role if r in allowed)
        raise Forbidden(f"API key {principal.id} has role {principal.role.value}; "
                        f"this needs one of: {roles}")
    return principal


@dataclass(frozen=True)
class DemoKeyState:
    key: str
    usable: bool
    """False when the demo key was revoked (which sticks) or its id holds another key."""


def ensure_demo_key(graph: Graph, settings: Settings) -> DemoKeyState | None:
    """Make sure the README's reader key exists, in demo mode only (None otherwise).

    The key is public, so it must never open a graph holding real data: outside demo mode
    nothing is created. A revoked demo key stays revoked.
    """
    if not settings.demo_mode:
        return None
    row = graph.execute(ENSURE_KEY, id=DEMO_KEY_ID, name=DEMO_KEY_NAME, role=Role.READER.value,
                        hash=hash_key(DEMO_API_KEY))[0]
    return DemoKeyState(DEMO_API_KEY, bool(row["same_key"]) and row["revoked_at"] is None)
