"""Who is calling the API: credentials from the request, resolved to a principal (briefly
cached), and the role checks on GraphQL fields and HTTP routes."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable, Collection
from contextlib import asynccontextmanager
from typing import Annotated, Any

from fastapi import Depends, Header
from neo4j import AsyncDriver
from starlette.requests import HTTPConnection
from starlette.types import ASGIApp, Receive, Scope, Send
from strawberry.extensions import FieldExtension
from strawberry.permission import BasePermission, PermissionExtension
from strawberry.types import Info

from graph import auth
from graph.auth import Principal, Role
from graph.db import DriverReader
from graph.errors import LimitExceeded, RateLimited

Loader = Callable[[str], Awaitable[Principal | None]]
MAX_CACHED_KEYS = 10_000


def credentials(authorization: str | None, x_api_key: str | None) -> str | None:
    """The key a request presents: ``Authorization: Bearer <key>`` first, else ``X-API-Key``."""
    if authorization:
        scheme, _, value = authorization.strip().partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
    if x_api_key and x_api_key.strip():
        return x_api_key.strip()
    return None


class PrincipalCache:
    """Resolves keys to principals, remembering each answer for ``ttl`` seconds.

    Without it every request would cost a Neo4j round trip before any work. The price is that a
    key revoked in the graph keeps working in this process for at most ``ttl`` seconds; unknown
    keys are remembered too (as None), so a flood of wrong keys does not reach Neo4j either.
    Entries are keyed by the key's hash, and the cache is bounded, so that random keys cannot
    grow it without limit.
    """

    def __init__(self, load: Loader, ttl: float, *, max_entries: int = MAX_CACHED_KEYS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._load = load
        self._ttl = ttl
        self._max_entries = max_entries
        self._clock = clock
        self._entries: dict[str, tuple[Principal | None, float]] = {}

    async def resolve(self, key: str) -> Principal | None:
        if not auth.looks_like_key(key):
            return None
        digest = auth.hash_key(key)
        now = self._clock()
        cached = self._entries.get(digest)
        if cached is not None and cached[1] > now:
            return cached[0]
        principal = await self._load(digest)
        if self._ttl > 0:
            self._remember(digest, principal, now)
        return principal

    def known(self, key: str) -> bool:
        """Whether ``key`` was live when this process last checked it, answered from memory,
        never from Neo4j (``AddressLimit`` asks this of every request). An answer due for a
        refresh still counts, so that refreshing a live key never costs its holder the
        allowance of its address; a key revoked since passes once more, and is then
        remembered as unknown."""
        if not auth.looks_like_key(key):
            return False
        cached = self._entries.get(auth.hash_key(key))
        return cached is not None and cached[0] is not None

    def _remember(self, digest: str, principal: Principal | None, now: float) -> None:
        self._entries.pop(digest, None)
        if len(self._entries) >= self._max_entries:
            self._entries = {d: e for d, e in self._entries.items() if e[1] > now}
        while len(self._entries) >= self._max_entries:
            # Insertion order is age order: drop the oldest answer.
            del self._entries[next(iter(self._entries))]
        self._entries[digest] = (principal, now + self._ttl)


def neo4j_loader(driver: AsyncDriver, database: str, *, demo: bool = False) -> Loader:
    """Looks a key hash up in the graph with the API's async driver. The README's public demo
    key opens nothing unless the API runs in demo mode (``demo``): a graph that once held demo
    data may later hold real data, and the demo key's node may still be there."""

    reader = DriverReader(driver, database)

    async def load(digest: str) -> Principal | None:
        principal = await auth.principal_of(reader, digest)
        if principal is not None and principal.id == auth.DEMO_KEY_ID and not demo:
            return None
        return principal

    return load


async def get_credential(
    authorization: Annotated[str | None, Header()] = None,
    x_api_key: Annotated[str | None, Header()] = None,
) -> str | None:
    """The key the request (or WebSocket handshake) presents, unchecked."""
    return credentials(authorization, x_api_key)


CredentialDep = Annotated[str | None, Depends(get_credential)]


async def get_principal(request: HTTPConnection, key: CredentialDep) -> Principal | None:
    """The caller, or None. Never raises for a missing or unknown key: GraphQL must answer an
    anonymous call with a GraphQL error, so each field or route decides whether it needs a
    principal. A live key over its request rate is refused here (429), before any work."""
    if key is None:
        return None
    cache: PrincipalCache = request.app.state.principals
    principal = await cache.resolve(key)
    if principal is not None:
        limits: KeyLimits = request.app.state.key_limits
        limits.take(principal)
    return principal


PrincipalDep = Annotated[Principal | None, Depends(get_principal)]


def requires(roles: Collection[Role]) -> Callable[[Principal | None], Awaitable[Principal]]:
    """A route dependency admitting only ``roles``; the error handler turns its errors into
    401 or 403."""

    async def dependency(principal: PrincipalDep) -> Principal:
        return auth.require_role(principal, roles)

    return dependency


class HasRole(BasePermission):
    """Lets a GraphQL field resolve only for a principal with one of ``roles``.

    It raises the domain error itself instead of returning False: strawberry's own
    ``on_unauthorized`` cannot tell a missing key (UNAUTHENTICATED) from a wrong role
    (FORBIDDEN), while ``api.errors.ErrorCodes`` gives domain errors their code.
    """

    def __init__(self, roles: Collection[Role]) -> None:
        self.roles = frozenset(roles)

    def has_permission(
        self, source: Any, info: Info, **kwargs: Any,  # noqa: ARG002 - strawberry's signature
    ) -> bool:
        auth.require_role(info.context.principal, self.roles)
        return True


def allowed(roles: Collection[Role]) -> list[FieldExtension]:
    """Field extensions for ``strawberry.field(extensions=...)`` admitting only ``roles``."""
    return [PermissionExtension(permissions=[HasRole(roles)], use_directives=False)]


class TokenBuckets:
    """Request rates by holder (an API key, a client address): a token bucket each, refilled at
    ``rate`` per second up to ``burst``. Bounded: past ``MAX_CACHED_KEYS`` holders, full
    buckets (which hold no state worth keeping) are dropped. ``rate`` 0: no limit."""

    def __init__(self, rate: float, burst: int, *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self._burst = float(burst)
        self._clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}

    def take(self, holder: str) -> float | None:
        """Count one request of ``holder``: None when allowed, else the seconds until its
        next token (nothing is counted then)."""
        if self.rate <= 0:
            return None
        now = self._clock()
        tokens, at = self._buckets.get(holder, (self._burst, now))
        tokens = min(self._burst, tokens + (now - at) * self.rate)
        if tokens < 1:
            self._buckets[holder] = (tokens, now)
            return (1 - tokens) / self.rate
        self._buckets[holder] = (tokens - 1, now)
        if len(self._buckets) > MAX_CACHED_KEYS:
            self._buckets = {k: v for k, v in self._buckets.items()
                             if v[0] + (now - v[1]) * self.rate < self._burst}
        return None


class KeyLimits:
    """What one API key may hold of the service: a request rate (token bucket: ``rate`` per
    second, bursts up to ``burst``) and a number of open subscription streams. A leaked or
    runaway client then slows only itself. Per process: with N API processes a key gets N times
    the rate."""

    def __init__(self, rate: float, burst: int, streams: int, *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._rate = rate
        self._requests = TokenBuckets(rate, burst, clock=clock)
        self._streams = streams
        self._open: dict[str, int] = {}
        self._sockets: dict[str, int] = {}

    def take(self, principal: Principal) -> None:
        """Count one request of ``principal``; RateLimited when its bucket is empty."""
        wait = self._requests.take(principal.id)
        if wait is not None:
            raise RateLimited(f"API key {principal.id} is over its rate of {self._rate:g} "
                              "requests/s (PERSONAS_API_KEY_RATE_PER_SECOND); retry later",
                              retry_after=wait)

    def connect(self, holder: str) -> bool:
        """Count one more open WebSocket of ``holder`` (a key id, or "" for anonymous ones);
        False, counting nothing, when it already holds its limit."""
        held = self._sockets.get(holder, 0)
        if held >= self._streams:
            return False
        self._sockets[holder] = held + 1
        return True

    def disconnect(self, holder: str) -> None:
        left = self._sockets[holder] - 1
        if left:
            self._sockets[holder] = left
        else:
            del self._sockets[holder]

    @asynccontextmanager
    async def stream(self, principal: Principal) -> AsyncIterator[None]:
        """Hold one of the key's subscription slots while a stream is open."""
        held = self._open.get(principal.id, 0)
        if held >= self._streams:
            raise LimitExceeded(f"API key {principal.id} already holds {held} open "
                                f"subscriptions, the limit (PERSONAS_API_MAX_STREAMS_PER_KEY)")
        self._open[principal.id] = held + 1
        try:
            yield
        finally:
            left = self._open[principal.id] - 1
            if left:
                self._open[principal.id] = left
            else:
                del self._open[principal.id]


class WebSocketLimit:
    """ASGI middleware: at most PERSONAS_API_MAX_STREAMS_PER_KEY open WebSocket connections per
    key (anonymous ones share one allowance: they can subscribe to nothing). A handshake over
    the limit is refused before it is accepted (HTTP 403)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "websocket":
            await self.app(scope, receive, send)
            return
        state = scope["app"].state
        headers = {k.decode("latin-1").lower(): v.decode("latin-1")
                   for k, v in scope["headers"]}
        key = credentials(headers.get("authorization"), headers.get("x-api-key"))
        principal = await state.principals.resolve(key) if key is not None else None
        holder = principal.id if principal is not None else ""
        limits: KeyLimits = state.key_limits
        if not limits.connect(holder):
            await send({"type": "websocket.close", "code": 1008,
                        "reason": "too many open connections for this key"})
            return
        try:
            await self.app(scope, receive, send)
        finally:
            limits.disconnect(holder)
