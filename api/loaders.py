"""Per-request DataLoaders: every user a request names is answered by one Cypher round trip per
kind of data, however many users the request lists (``graph.profile.users``' batched reads)."""

from __future__ import annotations

from collections import defaultdict

from strawberry.dataloader import DataLoader

from graph.db import Reader
from graph.profile import users
from graph.profile.model import Preference, SegmentRecord, UserPersona


class Loaders:
    """Created with each request's context, so nothing is cached between requests."""

    def __init__(self, reader: Reader) -> None:
        self._reader = reader
        self.persona: DataLoader[str, UserPersona | None] = DataLoader(self._personas)
        self.segment_path: DataLoader[str, list[SegmentRecord]] = DataLoader(self._paths)
        self.preferences: DataLoader[tuple[str, int], list[Preference]] = DataLoader(
            self._preferences)

    async def _personas(self, ids: list[str]) -> list[UserPersona | None]:
        found = await users.personas_of(self._reader, ids)
        return [found.get(i) for i in ids]

    async def _paths(self, ids: list[str]) -> list[list[SegmentRecord]]:
        found = await users.segment_paths_of(self._reader, ids)
        return [found.get(i, []) for i in ids]

    async def _preferences(self, keys: list[tuple[str, int]]) -> list[list[Preference]]:
        # One round trip per distinct page size asked for (usually one).
        by_first: dict[int, list[str]] = defaultdict(list)
        for user_id, first in keys:
            by_first[first].append(user_id)
        answers: dict[tuple[str, int], list[Preference]] = {}
        for first, ids in by_first.items():
            found = await users.preferences_of(self._reader, ids, first)
            for user_id in ids:
                answers[(user_id, first)] = found.get(user_id, [])
        return [answers[k] for k in keys]
