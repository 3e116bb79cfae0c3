"""Per-request DataLoaders: every user a request names is answered by one Cypher round trip per
kind of data, however many users the request lists."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, LiteralString

from strawberry.dataloader import DataLoader

from api import queries as q

Rows = Callable[..., Awaitable[list[dict[str, Any]]]]


class Loaders:
    """Created with each request's context, so nothing is cached between requests."""

    def __init__(self, rows: Rows) -> None:
        self._rows = rows
        self.persona: DataLoader[str, dict[str, Any] | None] = DataLoader(self._personas)
        self.segment_path: DataLoader[str, list[dict[str, Any]]] = DataLoader(self._paths)
        self.preferences: DataLoader[tuple[str, int], list[dict[str, Any]]] = DataLoader(
            self._preferences)

    async def _by_id(self, query: LiteralString, ids: Sequence[str],
                     **params: Any) -> dict[str, dict[str, Any]]:
        return {r["id"]: r for r in await self._rows(query, ids=list(dict.fromkeys(ids)),
                                                       **params)}

    async def _personas(self, ids: list[str]) -> list[dict[str, Any] | None]:
        found = await self._by_id(q.USERS_PERSONA, ids)
        return [found.get(i) for i in ids]

    async def _paths(self, ids: list[str]) -> list[list[dict[str, Any]]]:
        found = await self._by_id(q.USERS_SEGMENT_PATH, ids)
        return [found[i]["path"] if i in found else [] for i in ids]

    async def _preferences(self, keys: list[tuple[str, int]]) -> list[list[dict[str, Any]]]:
        # One round trip per distinct page size asked for (usually one).
        by_first: dict[int, list[str]] = defaultdict(list)
        for user_id, first in keys:
            by_first[first].append(user_id)
        answers: dict[tuple[str, int], list[dict[str, Any]]] = {}
        for first, ids in by_first.items():
            found = await self._by_id(q.USERS_PREFERENCES, ids, preferences_first=first)
            for user_id in ids:
                answers[(user_id, first)] = found[user_id]["prefs"] if user_id in found else []
        return [answers[k] for k in keys]
