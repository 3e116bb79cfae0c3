"""What users did: interactions and the sessions that group them."""

from __future__ import annotations

from datetime import datetime
from enum import Enum
from typing import Any

import strawberry

from api import queries as q
from api.context import Context
from api.types.connection import Connection, decode_time_cursor, paginate
from api.types.context_types import native
from graph.events import EventType


@strawberry.enum(description="Kinds of interaction, as ingested.")
class InteractionType(Enum):
    # The event envelope's types (graph.events.EventType); a unit test keeps them equal.
    PAGE_VIEW = EventType.PAGE_VIEW.value
    SEARCH = EventType.SEARCH.value
    ADD_TO_CART = EventType.ADD_TO_CART.value
    PURCHASE = EventType.PURCHASE.value
    CHAT_MESSAGE = EventType.CHAT_MESSAGE.value
    FEEDBACK = EventType.FEEDBACK.value


@strawberry.enum(description="Order of a time-ordered list.")
class TimeOrder(Enum):
    NEWEST_FIRST = "newest_first"
    OLDEST_FIRST = "oldest_first"


@strawberry.type
class Interaction:
    event_id: strawberry.ID
    type: str
    at: datetime
    item_id: str | None
    category: str | None
    amount: float | None
    query: str | None
    text: str | None = strawberry.field(description="Chat text, with PII pseudonymized.")
    intent: str | None
    rating: int | None

    @classmethod
    def from_record(cls, i: dict[str, Any]) -> Interaction:
        return cls(event_id=strawberry.ID(i["event_id"]), type=i["type"], at=i["at"].to_native(),
                   item_id=i.get("item_id"), category=i.get("category"),
                   amount=i.get("amount"), query=i.get("query"), text=i.get("text"),
                   intent=i.get("intent"), rating=i.get("rating"))


def interaction_page(rows: list[dict[str, Any]], size: int) -> Connection[Interaction]:
    return paginate(rows, size, "interaction",
                    key=lambda r: f"{r['at_ms']}|{r['interaction']['event_id']}",
                    node=lambda r: Interaction.from_record(r["interaction"]))


@strawberry.type(description="A visit: interactions from one device and channel close in time.")
class Session:
    id: strawberry.ID
    started_at: datetime | None
    ended_at: datetime | None
    events: int
    channel: str | None
    device_kind: str | None

    @classmethod
    def from_record(cls, s: dict[str, Any]) -> Session:
        return cls(id=strawberry.ID(s["id"]), started_at=native(s.get("started_at")),
                   ended_at=native(s.get("ended_at")), events=s.get("events") or 0,
                   channel=s.get("channel"), device_kind=s.get("device_kind"))

    @strawberry.field(description="The session's interactions, oldest first.")
    async def interactions(self, info: strawberry.Info[Context, None], first: int = 20,
                           after: str | None = None) -> Connection[Interaction]:
        size = info.context.page(first)
        after_at, after_id = decode_time_cursor("interaction", after)
        rows = await info.context.rows(q.SESSION_INTERACTIONS, id=self.id, after_at=after_at,
                                       after_id=after_id, limit=size + 1)
        return interaction_page(rows, size)


def session_page(rows: list[dict[str, Any]], size: int) -> Connection[Session]:
    return paginate(rows, size, "session",
                    key=lambda r: f"{r['at_ms']}|{r['session']['id']}",
                    node=lambda r: Session.from_record(r["session"]))
