"""The GraphQL type of a chatbot's prompt-ready brief on a user (``graph.profile.chat`` composes
it), named ``ChatContext`` in the schema."""

from __future__ import annotations

import strawberry

from api.types.user import Preference, Situation, UserPersona
from graph.profile import chat


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

    @classmethod
    def from_model(cls, c: chat.ChatBrief) -> ChatBrief:
        return cls(user_id=strawberry.ID(c.user_id), text=c.text, tokens=c.tokens,
                   personalized=c.personalized,
                   persona=UserPersona.from_model(c.persona) if c.persona else None,
                   preferences=[Preference.from_model(p) for p in c.preferences],
                   recent_intents=c.recent_intents, situation=Situation.from_model(c.situation),
                   dropped=c.dropped)
