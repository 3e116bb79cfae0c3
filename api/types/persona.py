"""Personas as the root API serves them: their segment in the latest run, members and favourites."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import strawberry

from api import queries as q
from api.context import Context
from api.types.connection import Connection, decode_pair_cursor, paginate
from api.types.user import User
from graph.errors import InvalidInput


@strawberry.type(description="A category a persona's members favour.")
class CategoryShare:
    category: str
    weight: float = strawberry.field(description="Mean inferred preference weight of members.")


@strawberry.type(description="An item a persona's members interact with.")
class PopularItem:
    id: strawberry.ID
    name: str | None
    category: str | None
    purchases: int
    users: int


@strawberry.type(description="A stable, named behaviour group, as found by the latest run.")
class PersonaProfile:
    id: strawberry.ID
    name: str
    description: str
    size: int = strawberry.field(description="Users in its segment of the latest run (0: none).")
    segment_id: strawberry.ID | None

    @classmethod
    def from_row(cls, r: dict[str, Any]) -> PersonaProfile:
        p = r["persona"]
        return cls(id=strawberry.ID(p["id"]), name=p["name"], description=p["description"],
                   size=r["size"] or 0,
                   segment_id=strawberry.ID(r["segment_id"]) if r["segment_id"] else None)

    @strawberry.field(description="Members nearest the segment centre first.")
    async def members(self, info: strawberry.Info[Context, None], first: int = 10,
                      after: str | None = None) -> Connection[User]:
        size = info.context.page(first)
        distance, after_id = decode_pair_cursor("member", after)
        try:
            after_distance = float(distance) if distance is not None else None
        except ValueError:
            raise InvalidInput(f"malformed cursor {after!r}") from None
        rows = [] if self.segment_id is None else await info.context.rows(
            q.PERSONA_MEMBERS, segment_id=self.segment_id, after_distance=after_distance,
            after_id=after_id, limit=size + 1)
        return paginate(rows, size, "member", key=lambda r: f"{r['distance']!r}|{r['id']}",
                        node=User.from_record)

    @strawberry.field(description="Categories the members favour most.")
    async def top_categories(self, info: strawberry.Info[Context, None],
                             first: int = 5) -> list[CategoryShare]:
        if self.segment_id is None:
            return []
        rows = await info.context.rows(q.PERSONA_TOP_CATEGORIES, segment_id=self.segment_id,
                                       first=info.context.page(first))
        return [CategoryShare(category=r["category"], weight=r["weight"]) for r in rows]

    @strawberry.field(description="Items the members buy most (then: interact with most).")
    async def top_items(self, info: strawberry.Info[Context, None],
                        first: int = 5) -> list[PopularItem]:
        if self.segment_id is None:
            return []
        rows = await info.context.rows(q.PERSONA_TOP_ITEMS, segment_id=self.segment_id,
                                       first=info.context.page(first))
        return [PopularItem(id=strawberry.ID(r["id"]), name=r["name"], category=r["category"],
                            purchases=r["purchases"] or 0, users=r["users"]) for r in rows]


@strawberry.type(description="A recorded segmentation run and how it went.")
class SegmentationRun:
    id: strawberry.ID
    created_at: datetime
    algorithm: str
    k: int
    n_users: int
    silhouette: float | None
    k_reason: str
    ari_vs_previous: float | None = strawberry.field(
        description="Agreement with the previous run (adjusted Rand index).")
    users_moved: int | None = strawberry.field(
        description="Users whose persona changed since the previous run.")
    new_personas: int | None
    features: list[str]
    code_version: str | None
    stability: float | None = strawberry.field(
        description="Mean adjusted Rand index between the run and refits on random 80% "
                    "resamples of its users: 1 means the same personas whatever the sample "
                    "(null for runs that did not measure it).")
    clear_structure: bool | None = strawberry.field(
        description="False when the population has no clear structure (weak separation or "
                    "unstable under resampling): its personas are rough bands of a continuum, "
                    "not distinct groups; `warnings` says why (null for older runs).")
    warnings: list[str] = strawberry.field(
        description="What the analyst should know about the run: features without variance "
                    "or mostly missing, no clear structure.")
    topics: list[str] = strawberry.field(
        description="Topics learned from chat messages and searches for the run, each as its "
                    "label and top terms (empty when the run used no text).")

    @classmethod
    def from_record(cls, r: dict[str, Any]) -> SegmentationRun:
        silhouette = r.get("silhouette")
        stability = r.get("stability_ari")
        return cls(id=strawberry.ID(r["id"]), created_at=r["created_at"].to_native(),
                   algorithm=r["algorithm"], k=r["k"], n_users=r["n_users"],
                   silhouette=silhouette if silhouette == silhouette else None,  # NaN
                   k_reason=r["k_reason"], ari_vs_previous=r.get("ari_vs_previous"),
                   users_moved=r.get("users_moved"), new_personas=r.get("new_personas"),
                   features=list(r.get("features") or []), code_version=r.get("code_version"),
                   stability=stability if stability == stability else None,  # NaN
                   clear_structure=r.get("clear_structure"),
                   warnings=list(r.get("warnings") or []), topics=list(r.get("topics") or []))
