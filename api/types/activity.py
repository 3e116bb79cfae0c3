"""What users did: interactions and the sessions that group them."""

from __future__ import annotations

from datetime import datetime
from enum import Enum

import strawberry

from api.request import RequestContext
from api.types.connection import Connection, connection, decode_time_cursor
from graph.events import EventType
from graph.profile import model, users


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
    def from_model(cls, i: model.Interaction) -> Interaction:
        return cls(event_id=strawberry.ID(i.event_id), type=i.type, at=i.at, item_id=i.item_id,
                   category=i.category, amount=i.amount, query=i.query, text=i.text,
                   intent=i.intent, rating=i.rating)


def interaction_page(found: model.Page[model.Interaction]) -> Connection[Interaction]:
    return connection(found, "interaction", Interaction.from_model)


@strawberry.type(description="A visit: interactions from one device and channel close in time.")
class Session:
    id: strawberry.ID
    started_at: datetime | None
    ended_at: datetime | None
    events: int
    channel: str | None
    device_kind: str | None

    @classmethod
    def from_model(cls, s: model.Session) -> Session:
        return cls(id=strawberry.ID(s.id), started_at=s.started_at, ended_at=s.ended_at,
                   events=s.events, channel=s.channel, device_kind=s.device_kind)

    @strawberry.field(description="The session's interactions, oldest first.")
    async def interactions(self, info: strawberry.Info[RequestContext, None], first: int = 20,
                           after: str | None = None) -> Connection[Interaction]:
        size = info.context.page(first)
        after_at, after_id = decode_time_cursor("interaction", after)
        return interaction_page(await users.session_interactions(
            info.context.reader, self.id, after_at=after_at, after_id=after_id, size=size))
