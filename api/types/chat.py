"""The GraphQL type of a chatbot's prompt-ready brief on a user (``graph.profile.chat`` composes
it), named ``ChatContext`` in the schema."""

from __future__ import annotations

from datetime import datetime

import strawberry

from api.types.user import Preference, Situation, UserPersona
from graph.profile import chat

# The read model's enum, made a GraphQL enum (strawberry marks the class itself).
strawberry.enum(chat.Origin, name="ProvenanceKind",
                description="What kind of record a context line comes from.")


@strawberry.type(description="A record behind a line of a chat context.")
class Provenance:
    kind: chat.Origin
    id: str | None = strawberry.field(
        description="The record's id: an event id, a segmentation run id, a location, weather "
                    "observation or local event id; a category for a stated preference.")
    at: datetime | None = strawberry.field(
        description="When it happened (an event), was published (a run), set (a location or "
                    "a stated preference) or recorded (weather, local events).")
    detail: str | None = strawberry.field(
        description="What the record is to the line, e.g. the event type, or how many events "
                    "an inferred preference sums up.")

    @classmethod
    def from_model(cls, s: chat.Source) -> Provenance:
        return cls(kind=s.kind, id=s.id, at=s.at, detail=s.detail)


@strawberry.type(description="A line of a chat context and the records it comes from.")
class ChatLine:
    text: str
    sources: list[Provenance] = strawberry.field(
        description="Empty for the service's own notes (what quoted text is, no consent).")


@strawberry.type(name="ChatContext", description="Compact, prompt-ready context for a chatbot, "
                 "and the same facts structured.")
class ChatBrief:
    user_id: strawberry.ID
    text: str = strawberry.field(description="Lines for a system prompt, within maxTokens.")
    tokens: int = strawberry.field(description="Estimated tokens of `text` (~4 characters each).")
    personalized: bool = strawberry.field(
        description="False when the user withheld consent to personalization: no profile facts.")
    persona: UserPersona | None
    preferences: list[Preference]
    recent_intents: list[str]
    situation: Situation | None
    dropped: list[str] = strawberry.field(
        description="Facts left out to stay within the token budget.")
    lines: list[ChatLine] = strawberry.field(
        description="`text` line by line, each with the records it comes from.")
    as_of: datetime | None = strawberry.field(
        description="The moment the context describes: the request's, or `asOf`.")
    pending: bool = strawberry.field(
        default=False, description="True when `after` named a write that was not visible "
        "within PERSONAS_CONSISTENCY_WAIT_MS: this context may not hold it yet.")

    @classmethod
    def from_model(cls, c: chat.ChatBrief) -> ChatBrief:
        return cls(user_id=strawberry.ID(c.user_id), text=c.text, tokens=c.tokens,
                   personalized=c.personalized,
                   persona=UserPersona.from_model(c.persona) if c.persona else None,
                   preferences=[Preference.from_model(p) for p in c.preferences],
                   recent_intents=c.recent_intents, situation=Situation.from_model(c.situation),
                   dropped=c.dropped,
                   lines=[ChatLine(text=line.text,
                                   sources=[Provenance.from_model(s) for s in line.sources])
                          for line in c.lines],
                   as_of=c.as_of)
