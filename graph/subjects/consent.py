"""Consent per purpose, stored with provenance and history, and honoured.

Purposes: ``personalization`` (profile facts, preferences and recommendations in a chatbot's
context) and ``analytics`` (segmentation and analytics exports). Opt-out model: a purpose never
stated counts as granted (``DEFAULT_CONSENT``), as usual for personalization in a first-party
chatbot; a stated "no" holds until a newer "yes".

Each change is a ``(:User)-[:GAVE_CONSENT]->(:Consent {id, purpose, granted, source, at,
recorded_at})`` node (the history), and the user carries the current answer as
``u.consent_personalization`` / ``u.consent_analytics`` (absent: never stated), which is what
queries read. The newest change by ``at`` wins, so changes may arrive out of order. Withdrawing
analytics consent also removes the user's segment memberships and closes their open persona
history entry; the feature table leaves the user out of later runs.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from graph.db import AsyncGraph, Graph, Statement, Work, one
from graph.errors import InvalidInput, NotFound
from graph.recommend.queries import DROP_SIMILAR_USERS
from graph.subjects import queries as q
from graph.subjects.erasure import check_user_id, subject_nodes

PURPOSES = ("personalization", "analytics")
DEFAULT_CONSENT: dict[str, bool] = {"personalization": True, "analytics": True}
"""The answer for a purpose the user never stated (opt-out model)."""


def parse_purpose(purpose: str) -> str:
    value = purpose.strip().lower()
    if value not in PURPOSES:
        raise InvalidInput(f"unknown consent purpose {purpose!r}; one of {', '.join(PURPOSES)}")
    return value


def _current(row: dict[str, Any]) -> dict[str, bool]:
    return {p: DEFAULT_CONSENT[p] if row.get(p) is None else bool(row[p]) for p in PURPOSES}


def set_consent_work(user_id: str, purpose: str, granted: bool, *, source: str,
                     at: datetime) -> Work[dict[str, bool]]:
    """Record that ``user_id`` granted or withdrew consent for ``purpose`` at ``at``, said by
    ``source`` (who recorded it: ``cli``, ``api``, a CRM...). Returns the user's current
    consents. Idempotent: the same change recorded twice is stored once.

    Raises ``NotFound`` for an unknown user, ``InvalidInput`` for an unknown purpose, an empty
    source or a time without a time zone.
    """
    user_id = check_user_id(user_id)
    purpose = parse_purpose(purpose)
    source = source.strip()
    if not source or len(source) > 200:
        raise InvalidInput("the consent source must be 1 to 200 characters")
    if at.tzinfo is None or at.utcoffset() is None:
        raise InvalidInput("the consent time needs a time zone")
    at_ms = int(at.timestamp() * 1000)
    change_id = "c_" + hashlib.sha256(
        f"{user_id}\x00{purpose}\x00{granted}\x00{source}\x00{at_ms}".encode()).hexdigest()[:32]

    row = one((yield Statement(q.SET_CONSENT, {
        "user_id": user_id, "id": change_id, "purpose": purpose, "granted": bool(granted),
        "source": source, "at": at_ms})))
    if row is None:
        raise NotFound(f"no user with id {user_id!r}")
    if row["analytics"] is False:
        yield Statement(q.WITHDRAW_FROM_SEGMENTS, {"user_id": user_id, "at": at_ms})
    if row["personalization"] is False:
        yield Statement(DROP_SIMILAR_USERS, {"user_ids": [user_id]})
    return _current(row)


def set_consent(graph: Graph, user_id: str, purpose: str, granted: bool, *, source: str,
                at: datetime | None = None) -> dict[str, bool]:
    """``set_consent_work`` in a transaction of its own, ``at`` defaulting to now."""
    when = at or datetime.now(UTC)
    return graph.write_work(lambda: set_consent_work(user_id, purpose, granted, source=source,
                                                     at=when))


async def set_consent_async(graph: AsyncGraph, user_id: str, purpose: str, granted: bool, *,
                            source: str, at: datetime | None = None) -> dict[str, bool]:
    """``set_consent`` on the async driver (the API)."""
    when = at or datetime.now(UTC)
    return await graph.write_work(lambda: set_consent_work(user_id, purpose, granted,
                                                           source=source, at=when))


def consents_of(graph: Graph, user_ids: Sequence[str]) -> dict[str, dict[str, bool]]:
    """Current consents of each known user among ``user_ids``, defaults applied; unknown ids are
    left out. One round trip for the whole list (fit for a DataLoader)."""
    rows = graph.rows(q.CONSENTS_OF, ids=list(user_ids))
    return {r["id"]: _current(r) for r in rows}


def consent_history(graph: Graph, user_id: str) -> list[dict[str, Any]]:
    """Every consent change of the user, oldest first (purpose, granted, source, at,
    recorded_at)."""
    eids = subject_nodes(graph, check_user_id(user_id))
    if not eids:
        raise NotFound(f"no user with id {user_id!r}")
    return graph.rows(q.CONSENT_HISTORY, eids=eids)
