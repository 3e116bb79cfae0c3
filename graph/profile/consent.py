"""The read model's consent policy: what a caller may see of a user who withdrew consent."""

from __future__ import annotations

from graph.auth import ANALYSTS, Role
from graph.profile.model import Consents

CONSENT_EXEMPT = ANALYSTS
"""Roles that see a user's personal fields whatever their personalization consent (analysis is
governed by the analytics consent, at segmentation). Chatbot keys (readers) do not."""


def withheld(consents: Consents, role: Role | None) -> bool:
    """The one consent policy of the read side: a user who withdrew personalization consent
    shows a caller outside ``CONSENT_EXEMPT`` (a chatbot key, or no key) no personal field
    (profile facts, persona and segments, location and situation, interactions, sessions,
    similar users); those answer null or empty."""
    return not consents.personalization and (role is None or role not in CONSENT_EXEMPT)


def personal(consents: Consents) -> bool:
    """Whether the user's own data may shape what they are offered (preferences, personal
    recommendations, chat facts): only with personalization consent, whoever asks."""
    return consents.personalization
