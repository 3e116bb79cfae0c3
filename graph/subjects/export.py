"""The right of access: `export_user` returns everything held on a user as plain JSON values.

Identifiers appear as kind and keyed hash only: no plaintext is stored, so none can be exported.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from neo4j import ManagedTransaction

from graph.db import Graph
from graph.errors import NotFound
from graph.subjects import queries as q
from graph.subjects.consent import DEFAULT_CONSENT, PURPOSES
from graph.subjects.erasure import check_user_id, find_subject
from graph.subjects.jsonable import jsonable

EXPORT_FORMAT = 1
COVERED = ["IDENTIFIES", "USES", "HAD_SESSION", "PERFORMED", "PREFERS", "INTERACTED",
           "IN_SEGMENT", "HAD_PERSONA", "GAVE_CONSENT", "LOCATED_IN", "MERGED_INTO",
           "SIMILAR_TO", "RETAINED"]
"""Relationship types the named sections of an export cover; others land in ``other``."""


def export_user(graph: Graph, user_id: str) -> dict[str, Any]:
    """All we hold on ``user_id`` (JSON-serializable), read in one transaction.

    Sections: profile (the user node, counters included), location, identifiers, devices,
    sessions, interactions, preferences, aggregates (INTERACTED per item), retained (what
    interactions pruned by retention contributed: the baseline's counters, items and interests,
    per origin), segments, persona
    history, similar users (how many per run: who they are is their data, not this user's),
    consents (current, defaults applied, and history), merged users (ids of the
    tombstones of users merged into this one) and merge records, dead letters, other. Raises
    ``NotFound`` for an unknown user, ``Conflict`` for one merged into another.
    """
    user_id = check_user_id(user_id)
    subject = find_subject(graph, user_id)
    if subject is None:
        raise NotFound(f"no user with id {user_id!r}")
    eids, ids = subject.eids, subject.ids

    def read(tx: ManagedTransaction) -> dict[str, Any]:
        def rows(query: Any, **params: Any) -> list[dict[str, Any]]:
            return [r.data() for r in tx.run(query, params)]

        profile = rows(q.EXPORT_PROFILE, id=user_id)
        identifiers = rows(q.EXPORT_IDENTIFIERS, eids=eids)
        keys = [f"{i['kind']}:{i['hash']}" for i in identifiers]
        props = profile[0]["profile"] if profile else {}
        return {
            "format": EXPORT_FORMAT,
            "user_id": user_id,
            "exported_at": datetime.now(UTC),
            "profile": props,
            "location": profile[0]["location"] if profile else None,
            "identifiers": identifiers,
            "devices": rows(q.EXPORT_DEVICES, eids=eids),
            "sessions": [r["session"] for r in rows(q.EXPORT_SESSIONS, eids=eids)],
            "interactions": [{**r["interaction"], "session_id": r["session_id"]}
                             for r in rows(q.EXPORT_INTERACTIONS, eids=eids)],
            "preferences": rows(q.EXPORT_PREFERENCES, eids=eids),
            "aggregates": rows(q.EXPORT_AGGREGATES, eids=eids),
            "retained": rows(q.EXPORT_RETAINED, eids=eids),
            "segments": rows(q.EXPORT_SEGMENTS, eids=eids),
            "persona_history": rows(q.EXPORT_PERSONA_HISTORY, eids=eids),
            "similar_users": rows(q.EXPORT_SIMILAR_USERS, eids=eids),
            "consents": {
                "current": {p: (props.get(f"consent_{p}") if props.get(f"consent_{p}")
                                is not None else DEFAULT_CONSENT[p]) for p in PURPOSES},
                "history": rows(q.CONSENT_HISTORY, eids=eids),
            },
            "merged_users": ids[1:],
            "merges": [r["merge"] for r in rows(q.EXPORT_MERGES, ids=ids)],
            "dead_letters": [r["dead_letter"]
                             for r in rows(q.EXPORT_DEAD_LETTERS, keys=keys)],
            "other": rows(q.EXPORT_OTHER, eids=eids, covered=COVERED),
        }

    result: dict[str, Any] = jsonable(graph.read(read))
    return result
