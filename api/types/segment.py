"""Segments, personas and the reasons a segment was named as it was."""

from __future__ import annotations

import strawberry

from api.request import RequestContext
from graph.profile import model, personas


@strawberry.type(description="A stable, named behaviour group a chatbot can act on.")
class Persona:
    id: strawberry.ID
    name: str
    description: str

    @classmethod
    def from_model(cls, p: model.PersonaRecord) -> Persona:
        return cls(id=strawberry.ID(p.id), name=p.name, description=p.description)


@strawberry.type(description="A feature on which a segment differs from the population.")
class WhyScore:
    feature: str
    z_score: float = strawberry.field(description="Segment centre minus mean, in std units.")


@strawberry.type(description="A group of users from one segmentation run; level 0 is a leaf.")
class Segment:
    id: strawberry.ID
    label: str
    description: str
    size: int
    level: int
    run_id: str
    why: list[WhyScore]
    persona: Persona | None
    parent_id: strawberry.ID | None
    stability: float | None = strawberry.field(
        description="How reliably refits on resamples of the users find this segment (mean "
                    "best Jaccard index, 0-1; leaf segments of runs that measured it).")

    @classmethod
    def from_model(cls, s: model.SegmentRecord) -> Segment:
        return cls(id=strawberry.ID(s.id), label=s.label, description=s.description,
                   size=s.size, level=s.level, run_id=s.run_id,
                   why=[WhyScore(feature=f, z_score=z) for f, z in s.why],
                   persona=Persona.from_model(s.persona) if s.persona else None,
                   parent_id=strawberry.ID(s.parent_id) if s.parent_id else None,
                   stability=s.stability)

    @strawberry.field(description="The segment one level up (null at the root).")
    async def parent(self, info: strawberry.Info[RequestContext, None]) -> Segment | None:
        if self.parent_id is None:
            return None
        found = await personas.segment(info.context.reader, self.parent_id)
        return Segment.from_model(found) if found else None

    @strawberry.field(description="The segments one level down, largest first (none for a "
                      "leaf).")
    async def children(self, info: strawberry.Info[RequestContext, None]) -> list[Segment]:
        return [Segment.from_model(s)
                for s in await personas.segment_children(info.context.reader, self.id)]


@strawberry.type(description="The user's persona in the latest segmentation, and why.")
class Membership:
    persona: Persona | None
    segment: Segment
    distance: float = strawberry.field(description="Distance to the segment centre (z units).")
