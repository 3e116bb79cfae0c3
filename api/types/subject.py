"""What the mutations on identities and data subjects answer: merges, erasures, consents."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import strawberry

from graph.subjects.erasure import ForgetReport


@strawberry.type(description="Two users found to be one: the merged user's data now belongs to "
                 "the survivor. Reversible with `unmergeUser`.")
class Merge:
    id: strawberry.ID
    at: datetime | None
    source: str
    reason: str
    survivor_id: strawberry.ID
    merged_id: strawberry.ID
    undone_at: datetime | None
    active: bool

    @classmethod
    def from_dict(cls, m: dict[str, Any]) -> Merge:
        return cls(id=strawberry.ID(m["id"]), at=m["at"], source=m["source"],
                   reason=m["reason"], survivor_id=strawberry.ID(m["survivor_id"]),
                   merged_id=strawberry.ID(m["merged_id"]), undone_at=m["undone_at"],
                   active=m["active"])


@strawberry.type(description="An undone merge: both users stand apart again.")
class Unmerge:
    survivor_id: strawberry.ID
    restored_id: strawberry.ID


@strawberry.type
class ErasedCount:
    kind: str
    count: int


@strawberry.type(description="What `forgetUser` erased (nothing again when already erased).")
class Erasure:
    user_id: strawberry.ID
    erasure_id: strawberry.ID
    already_erased: bool
    erased: list[ErasedCount]

    @classmethod
    def from_report(cls, r: ForgetReport) -> Erasure:
        return cls(user_id=strawberry.ID(r.user_id), erasure_id=strawberry.ID(r.erasure_id),
                   already_erased=r.already_erased,
                   erased=[ErasedCount(kind=k, count=v) for k, v in sorted(r.counts.items())])
