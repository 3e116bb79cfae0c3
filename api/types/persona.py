"""Personas as the root API serves them: their segment in the latest run, members and favourites."""

from __future__ import annotations

import math
from datetime import datetime

import strawberry

from api.request import RequestContext
from api.types.connection import Connection, connection, decode_pair_cursor
from api.types.user import User
from graph.errors import InvalidInput
from graph.profile import model, personas


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
    def from_model(cls, p: model.PersonaSummary) -> PersonaProfile:
        return cls(id=strawberry.ID(p.persona.id), name=p.persona.name,
                   description=p.persona.description, size=p.size,
                   segment_id=strawberry.ID(p.segment_id) if p.segment_id else None)

    @strawberry.field(description="Members nearest the segment centre first.")
    async def members(self, info: strawberry.Info[RequestContext, None], first: int = 10,
                      after: str | None = None) -> Connection[User]:
        size = info.context.page(first)
        distance, after_id = decode_pair_cursor("member", after)
        try:
            after_distance = float(distance) if distance is not None else None
        except ValueError:
            raise InvalidInput(f"malformed cursor {after!r}") from None
        if after_distance is not None and not math.isfinite(after_distance):
            raise InvalidInput(f"malformed cursor {after!r}")
        found = model.Page[model.Member]([], [], False) if self.segment_id is None else (
            await personas.members(info.context.reader, self.segment_id,
                                   after_distance=after_distance, after_id=after_id, size=size))
        return connection(found, "member", lambda m: User.from_model(m.user))

    @strawberry.field(description="Categories the members favour most.")
    async def top_categories(self, info: strawberry.Info[RequestContext, None],
                             first: int = 5) -> list[CategoryShare]:
        if self.segment_id is None:
            return []
        found = await personas.top_categories(info.context.reader, self.segment_id,
                                              info.context.page(first))
        return [CategoryShare(category=c.category, weight=c.weight) for c in found]

    @strawberry.field(description="Items the members buy most (then: interact with most).")
    async def top_items(self, info: strawberry.Info[RequestContext, None],
                        first: int = 5) -> list[PopularItem]:
        if self.segment_id is None:
            return []
        found = await personas.top_items(info.context.reader, self.segment_id,
                                         info.context.page(first))
        return [PopularItem(id=strawberry.ID(i.id), name=i.name, category=i.category,
                            purchases=i.purchases, users=i.users) for i in found]


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
    def from_model(cls, r: model.SegmentationRun) -> SegmentationRun:
        return cls(id=strawberry.ID(r.id), created_at=r.created_at, algorithm=r.algorithm,
                   k=r.k, n_users=r.n_users, silhouette=r.silhouette, k_reason=r.k_reason,
                   ari_vs_previous=r.ari_vs_previous, users_moved=r.users_moved,
                   new_personas=r.new_personas, features=r.features,
                   code_version=r.code_version, stability=r.stability,
                   clear_structure=r.clear_structure, warnings=r.warnings, topics=r.topics)
