"""The right to erasure: `forget_user` deletes a user and everything derived from them.

Deleted: the user node (and the tombstones of users merged into it, with the ``Merge``
records naming any of them), identifiers, sessions,
interactions, devices no one else uses, consent records, dead letters naming one of the user's
identifiers, the user's relationships (segment memberships, persona history, preferences,
INTERACTED aggregates, location), the retained baselines of pruned interactions
(``Retained``) and any other node that only the user links to. Shared nodes
(items, categories, brands, locations, segments, personas, runs, weather, local events) stay.

An ``(:Erasure {id, subject, at, source, <counts>})`` node records that an erasure happened;
``subject`` is the SHA-256 of the user id (no identifier, no PII), so asking to forget the same
user again answers "already erased" instead of "not found". The user's identifier pseudonyms are
kept as ``(:ErasedIdentifier {key, at})`` (``kind:hash``, no plaintext): the writer refuses any
event from before the erasure that names one, so a replayed stream or file cannot bring the
user back, while events the person sends afterwards are stored as a new start.
"""

from __future__ import annotations

import hashlib
import logging
import uuid
from dataclasses import dataclass, field
from typing import Any

from neo4j import ManagedTransaction

from graph.aggregates import queries as aggregate_queries
from graph.db import Graph
from graph.errors import Conflict, InvalidInput, NotFound
from graph.subjects import queries as q

log = logging.getLogger(__name__)

INTERACTION_BATCH = 10_000
SHARED_LABELS = ("User", "MergedUser", "Item", "Category", "Brand", "Location",
                 "WeatherObservation", "LocalEvent", "Segment", "Persona", "SegmentationRun",
                 "PendingRun", "PendingSegment", "FailedRun",
                 "ApiKey", "Migration")
"""Kinds of node that are never a single user's, whoever links to them."""

RELATIONSHIP_COUNTS = {"IN_SEGMENT": "segment_memberships", "HAD_PERSONA": "persona_history",
                       "PREFERS": "preferences", "INTERACTED": "interacted",
                       "LOCATED_IN": "locations", "SIMILAR_TO": "similar_users"}


@dataclass(frozen=True)
class ForgetReport:
    """What an erasure removed, per kind; ``already_erased`` when there was nothing left."""

    user_id: str
    erasure_id: str
    counts: dict[str, int] = field(default_factory=dict)
    already_erased: bool = False


def subject_hash(user_id: str) -> str:
    return hashlib.sha256(user_id.encode()).hexdigest()


def check_user_id(user_id: str) -> str:
    user_id = user_id.strip()
    if not user_id or len(user_id) > 200:
        raise InvalidInput("a user id must be 1 to 200 characters")
    return user_id


@dataclass(frozen=True)
class Subject:
    """A user as stored: their node and the tombstones of users merged into them."""

    eids: list[str]
    """Element ids of the nodes, the user's first."""
    ids: list[str]
    """User ids of the same nodes."""


def find_subject(graph: Graph, user_id: str) -> Subject | None:
    """The user ``user_id`` with the tombstones merged into them; None for no such live user.
    An id merged into another user raises ``Conflict`` naming the survivor to ask for."""
    rows = graph.rows(q.SUBJECT_NODES, id=user_id)
    if rows:
        return Subject(rows[0]["eids"], rows[0]["ids"])
    root = graph.rows(q.MERGED_INTO_ROOT, id=user_id)
    if root:
        raise Conflict(f"user {user_id!r} was merged into {root[0]['id']!r}; ask for that "
                       "user (which includes what was merged into it)")
    return None


def subject_nodes(graph: Graph, user_id: str) -> list[str]:
    """Element ids of the user's node and of the merge tombstones of users merged into it
    (empty when there is no such user)."""
    subject = find_subject(graph, user_id)
    return subject.eids if subject is not None else []


def _count(tx: ManagedTransaction, query: Any, **params: Any) -> int:
    record = tx.run(query, params).single()
    return int(record["n"]) if record is not None else 0


def forget_user(graph: Graph, user_id: str, *, source: str = "api") -> ForgetReport:
    """Erase ``user_id`` and everything derived from them; idempotent.

    Raises ``NotFound`` for an id that never named a user, ``Conflict`` for one merged into
    another user (forget the survivor: that covers the merged users). Interactions go first,
    in batches of their own transactions (a retry after a failure finishes the job), the rest
    in one transaction with the erasure record.
    """
    user_id = check_user_id(user_id)
    subject = find_subject(graph, user_id)
    if subject is None:
        before = graph.rows(q.ERASED_BEFORE, subject=subject_hash(user_id))
        if before:
            return ForgetReport(user_id, before[0]["id"], {}, already_erased=True)
        raise NotFound(f"no user with id {user_id!r}")
    eids, ids = subject.eids, subject.ids

    interactions = 0
    while True:
        n = graph.write(lambda tx: _count(tx, q.DELETE_INTERACTIONS_BATCH, eids=eids,
                                          limit=INTERACTION_BATCH))
        interactions += n
        if n < INTERACTION_BATCH:
            break

    erasure_id = f"erasure-{uuid.uuid4().hex[:16]}"

    def erase(tx: ManagedTransaction) -> dict[str, int]:
        counts = {"users": 0, "interactions": interactions, "sessions": 0, "identifiers": 0,
                  "devices": 0, "consents": 0, "dead_letters": 0, "merges": 0,
                  "other_nodes": 0}
        # Events of the user that arrived while the batches ran.
        counts["interactions"] += _count(tx, q.DELETE_INTERACTIONS_BATCH, eids=eids,
                                         limit=1_000_000_000)
        record = tx.run(q.IDENTIFIER_KEYS, eids=eids).single()
        keys = list(record["keys"]) if record is not None else []
        for r in tx.run(q.COUNT_RELATIONSHIPS, eids=eids):
            if r["type"] in RELATIONSHIP_COUNTS:
                counts[RELATIONSHIP_COUNTS[r["type"]]] = r["n"]
        counts["dead_letters"] = _count(tx, q.DELETE_DEAD_LETTERS, keys=keys)
        counts["sessions"] = _count(tx, q.DELETE_SESSIONS, eids=eids)
        counts["devices"] = _count(tx, q.DELETE_DEVICES, eids=eids)
        counts["identifiers"] = _count(tx, q.DELETE_IDENTIFIERS, eids=eids)
        counts["consents"] = _count(tx, q.DELETE_CONSENTS, eids=eids)
        counts["merges"] = _count(tx, q.DELETE_MERGES, ids=ids)
        # Retained baselines (pruned interactions' aggregates) link to items and categories
        # too, so the sweep below would not take them; they count as other nodes.
        counts["other_nodes"] = _count(tx, q.DELETE_RETAINED, eids=eids)
        counts["other_nodes"] += _count(tx, q.DELETE_OTHER_OWNED, eids=eids,
                                        shared=list(SHARED_LABELS))
        # The items the user bought lose a buyer: their counters are recounted without them.
        record = tx.run(aggregate_queries.ITEMS_OF_USERS, user_ids=ids).single()
        items = list(record["item_ids"]) if record is not None else []
        counts["users"] = _count(tx, q.DELETE_USERS, eids=eids)
        tx.run(aggregate_queries.REFRESH_ITEM_COUNTERS, item_ids=items).consume()
        tx.run(q.RECORD_ERASED_IDENTIFIERS, keys=keys, erasure_id=erasure_id).consume()
        tx.run(q.RECORD_ERASURE, erasure_id=erasure_id, subject=subject_hash(user_id),
               source=source, counts=counts).consume()
        return counts

    counts = graph.write(erase)
    log.info("erased user (erasure %s): %s", erasure_id, counts)
    return ForgetReport(user_id, erasure_id, counts)
