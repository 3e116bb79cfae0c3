"""Merging two users into one, and undoing it exactly.

A merge moves what the merged user owns (identifiers, interactions, and any relationship type
not listed below) to the survivor, copies what may be shared (devices, sessions, the location,
explicit preferences) where the survivor lacks it, rebuilds the survivor's aggregates from its
interactions, and leaves the merged user as a tombstone (``MergedUser``, ``MERGED_INTO`` the
survivor) that keeps its segment memberships and persona history. A ``Merge`` node records it.
Every change carries provenance (see ``queries``), so ``unmerge`` restores both users as they
were; aggregates are rebuilt for both.

Merges into one user are undone latest first: undoing an older merge while a later one still
involves its survivor raises ``Conflict`` naming the merge to undo first.

Each operation is transaction ``Work`` written once (``graph.db``): the CLI, the event writer
and the CRM importer run it on the synchronous driver (the ``_tx`` functions run it inside their
transaction), the API on its async one.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections import Counter
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from neo4j import ManagedTransaction

from graph.aggregates import queries as aggregate_queries
from graph.aggregates import recompute_aggregates
from graph.db import AsyncGraph, Graph, Statement, Work, one, run_work
from graph.errors import Conflict, InvalidInput, NotFound
from graph.events import ATTRIBUTE_PREFIX, Profile
from graph.identity import queries as q
from graph.privacy import IDENTIFIER_KINDS, mask_contacts

log = logging.getLogger(__name__)

COPIED_TYPES = ("USES", "HAD_SESSION", "LOCATED_IN", "PREFERS")
"""Copied to the survivor where it lacks them; the tombstone keeps the originals (explicit
``PREFERS``; inferred ones are derived)."""
DERIVED_TYPES = ("INTERACTED",)
"""Rebuilt from interactions (with inferred ``PREFERS``); dropped from the tombstone."""
KEPT_TYPES = ("IN_SEGMENT", "HAD_PERSONA", "SIMILAR_TO", "MERGED_INTO")
"""Stay with the tombstone: a run's memberships, persona history and similar users describe
that user."""
NOT_MOVED_OUT = (*COPIED_TYPES, *DERIVED_TYPES, *KEPT_TYPES)
NOT_MOVED_IN = ("SIMILAR_TO", "MERGED_INTO")
"""A user named similar to the merged one stays pointed at the tombstone, which the recommender
skips; the next run finds the survivor."""
PROFILE_KEYS = (*(k for k in Profile.model_fields if k not in ("location", "attributes")),
                "profile_updated_at")
"""User properties from event profiles (and their time), with the declared attributes
(``attr_<name>``): the survivor takes those it lacks, or all when the merged user's profile is
the more recent."""
CONSENT_KEYS = ("consent_personalization", "consent_analytics")
"""Consent flags on the user (graph/subjects): a withdrawal on either side holds."""

MAX_ID = 200
MAX_TEXT = 500
LOCK_ATTEMPTS = 3


def _check_id(value: str, what: str) -> str:
    value = value.strip() if isinstance(value, str) else ""
    if not value or len(value) > MAX_ID:
        raise InvalidInput(f"{what} must be 1 to {MAX_ID} characters")
    return value


def _check_text(value: str, what: str) -> str:
    """Free text stored on the Merge node: trimmed, bounded, with emails and phone numbers
    replaced, so that no plaintext contact detail reaches the graph."""
    value = value.strip() if isinstance(value, str) else ""
    if not value or len(value) > MAX_TEXT:
        raise InvalidInput(f"{what} must be 1 to {MAX_TEXT} characters")
    return mask_contacts(value)


def _native(value: Any) -> datetime | None:
    return value.to_native() if value is not None else None


def resolve_users(user_ids: Sequence[str]) -> Work[dict[str, str]]:
    """The live user each id stands for: itself, or the survivor a tombstone was merged into
    (following chains). Unknown ids are left out."""
    found = yield Statement(q.FIND_USERS, {"ids": list(user_ids)})
    return {r["id"]: r["root_id"] for r in found if r["root_id"] is not None}


def resolve_users_tx(tx: ManagedTransaction, user_ids: Sequence[str]) -> dict[str, str]:
    """``resolve_users`` inside the caller's synchronous transaction."""
    return run_work(tx, resolve_users(user_ids))


def resolve_user(graph: Graph, user_id: str) -> str:
    """The live id for ``user_id`` (a merged user's survivor); ``NotFound`` if no such user."""
    user_id = _check_id(user_id, "user id")
    found = graph.read_work(lambda: resolve_users([user_id]))
    if user_id not in found:
        raise NotFound(f"no user with id {user_id!r}")
    return found[user_id]


def _find(ids: Sequence[str]) -> Work[dict[str, dict[str, Any]]]:
    rows = {r["id"]: r for r in (yield Statement(q.FIND_USERS, {"ids": list(ids)}))}
    for uid in ids:
        if not (rows[uid]["live"] or rows[uid]["merged"]):
            raise NotFound(f"no user with id {uid!r}")
        if rows[uid]["root_id"] is None:
            raise Conflict(f"user {uid!r} is merged into a user that no longer exists")
    return rows


def _existing_merge(rows: dict[str, dict[str, Any]], survivor_id: str, merged_id: str) -> str:
    """The merge that already joined two users with one root (the tombstone's of the pair)."""
    merge_id = rows[merged_id]["merge_id"] or rows[survivor_id]["merge_id"]
    assert merge_id is not None  # two distinct ids with one root: one is a tombstone
    return str(merge_id)


def merge_users_work(survivor_id: str, merged_id: str, *, source: str,
                     reason: str) -> Work[str]:
    """Merge ``merged_id`` into ``survivor_id``; returns the merge id.

    Tombstone ids stand for their survivors, so the live users behind the two ids are merged.
    Users already merged into one are left alone and the id of the merge that joined them is
    returned (idempotent). ``NotFound`` for an unknown id, ``InvalidInput`` for the same id
    twice or empty/oversized ``source``/``reason``.
    """
    survivor_id = _check_id(survivor_id, "survivor id")
    merged_id = _check_id(merged_id, "merged user id")
    if survivor_id == merged_id:
        raise InvalidInput(f"cannot merge user {survivor_id!r} with itself")
    source = _check_text(source, "source")
    reason = _check_text(reason, "reason")
    for _ in range(LOCK_ATTEMPTS):
        rows = yield from _find([survivor_id, merged_id])
        survivor, merged = rows[survivor_id]["root_id"], rows[merged_id]["root_id"]
        if survivor == merged:
            return _existing_merge(rows, survivor_id, merged_id)
        # Locked in id order, so two merges of overlapping users cannot deadlock each other.
        locked = {r["id"] for r in (yield Statement(q.LOCK_USERS,
                                                     {"ids": sorted([survivor, merged])}))}
        if locked == {survivor, merged}:
            break
    else:
        raise Conflict(f"users {survivor_id!r} and {merged_id!r} keep changing; try again")

    merge_id = f"merge-{uuid.uuid4().hex[:16]}"
    params: dict[str, Any] = {"survivor_id": survivor, "merged_id": merged, "merge_id": merge_id}
    moved: Counter[str] = Counter()
    yield Statement(q.HAND_OVER_INTERACTIONS, {"from_id": merged, "to_id": survivor})
    for query, kept in ((q.MOVE_OUTGOING, NOT_MOVED_OUT), (q.MOVE_INCOMING, NOT_MOVED_IN)):
        for row in (yield Statement(query, {"kept": list(kept), **params})):
            moved[row["type"]] += row["n"]
    copied: Counter[str] = Counter()
    overwritten = one((yield Statement(q.OVERWRITE_EXPLICIT_PREFERENCES, params)))
    replaced = one((yield Statement(q.REPLACE_LOCATION, params)))
    for name, query in (("PREFERS", q.COPY_EXPLICIT_PREFERENCES), ("USES", q.COPY_DEVICES),
                        ("HAD_SESSION", q.COPY_SESSIONS), ("LOCATED_IN", q.COPY_LOCATION)):
        record = one((yield Statement(query, params)))
        copied[name] += record["n"] if record is not None else 0
    if overwritten is not None and overwritten["n"]:
        copied["PREFERS overwritten"] = overwritten["n"]
    record = one((yield Statement(q.COPY_PROFILE, {
        "keys": list(PROFILE_KEYS), "restrictive": list(CONSENT_KEYS),
        "attribute_prefix": ATTRIBUTE_PREFIX, **params})))
    profile_before = list(record["before"]) if record is not None else []
    # The merged user's purchases leave its items' counters with its derived aggregates.
    dropped = one((yield Statement(aggregate_queries.ITEMS_OF_USERS, {"user_ids": [merged]})))
    yield Statement(q.DROP_DERIVED, params)
    yield Statement(q.TOMBSTONE, {
        "source": source, "reason": reason, "profile_before": json.dumps(profile_before),
        "location_before": replaced["before"] if replaced is not None else None,
        "location_before_via": replaced["via"] if replaced is not None else None,
        "location_before_at": replaced["before_at"] if replaced is not None else None,
        "moved": json.dumps(dict(sorted(moved.items()))),
        "copied": json.dumps(dict(sorted((k, v) for k, v in copied.items() if v))),
        **params})
    yield from recompute_aggregates([survivor])
    yield Statement(aggregate_queries.REFRESH_ITEM_COUNTERS,
                    {"item_ids": list(dropped["item_ids"]) if dropped is not None else []})
    log.info("merged user %s into %s (%s, source %s): %s", merged, survivor, merge_id, source,
             dict(moved))
    return merge_id


def merge_by_authority(user_a: str, user_b: str, *, source: str, reason: str) -> Work[str]:
    """Merge two users, choosing the survivor: the one owning the most authoritative identifier
    kind (``IDENTIFIER_KINDS`` order), then the earlier ``first_seen``, then the smaller id.
    Returns the merge id (that of the earlier merge when they are one user already)."""
    user_a, user_b = _check_id(user_a, "user id"), _check_id(user_b, "user id")
    if user_a == user_b:
        raise InvalidInput(f"cannot merge user {user_a!r} with itself")
    rows = yield from _find([user_a, user_b])
    roots = [rows[user_a]["root_id"], rows[user_b]["root_id"]]
    if roots[0] == roots[1]:
        return _existing_merge(rows, user_a, user_b)
    ranks = {kind: i for i, kind in enumerate(IDENTIFIER_KINDS)}
    authority = {r["id"]: r for r in (yield Statement(q.AUTHORITY, {"ids": roots,
                                                                     "ranks": ranks}))}

    def key(uid: str) -> tuple[int, float, str]:
        row: dict[str, Any] = authority.get(uid) or {}
        rank = row.get("rank")
        first = _native(row.get("first_seen"))
        return (len(IDENTIFIER_KINDS) if rank is None else int(rank),
                first.timestamp() if first is not None else float("inf"), uid)

    survivor, merged = sorted(roots, key=key)
    return (yield from merge_users_work(survivor, merged, source=source, reason=reason))


def merge_users_tx(tx: ManagedTransaction, survivor_id: str, merged_id: str, *, source: str,
                   reason: str) -> str:
    """``merge_users_work`` inside the caller's synchronous transaction."""
    return run_work(tx, merge_users_work(survivor_id, merged_id, source=source, reason=reason))


def merge_by_authority_tx(tx: ManagedTransaction, user_a: str, user_b: str, *, source: str,
                          reason: str) -> str:
    """``merge_by_authority`` inside the caller's synchronous transaction."""
    return run_work(tx, merge_by_authority(user_a, user_b, source=source, reason=reason))


def merge_users(graph: Graph, survivor_id: str, merged_id: str, *, source: str,
                reason: str) -> str:
    """Merge ``merged_id`` into ``survivor_id`` in a transaction of its own; see
    ``merge_users_work``. Returns the merge id."""
    return graph.write_work(lambda: merge_users_work(survivor_id, merged_id, source=source,
                                                     reason=reason))


async def merge_users_async(graph: AsyncGraph, survivor_id: str, merged_id: str, *,
                            source: str, reason: str) -> str:
    """``merge_users`` on the async driver (the API)."""
    return await graph.write_work(lambda: merge_users_work(survivor_id, merged_id,
                                                           source=source, reason=reason))


def unmerge_work(merge_id: str) -> Work[tuple[str, str]]:
    """Undo a merge; returns ``(survivor_id, merged_id)``.

    Both users get back what they had (moved relationships return, copies go; overwritten
    explicit preferences, profile fields and location are restored unless changed since), and
    their aggregates are rebuilt. Undoing an undone merge changes nothing. ``NotFound`` for an
    unknown merge; ``Conflict`` when a later merge involving the survivor must be undone first.
    """
    merge_id = _check_id(merge_id, "merge id")
    row = one((yield Statement(q.GET_MERGE, {"merge_id": merge_id})))
    if row is None:
        raise NotFound(f"no merge with id {merge_id!r}")
    survivor, merged = str(row["survivor_id"]), str(row["merged_id"])
    if row["undone"]:
        return survivor, merged
    if row["survivor_live"]:
        yield Statement(q.LOCK_USERS, {"ids": [survivor]})
        row = one((yield Statement(q.GET_MERGE, {"merge_id": merge_id})))
        assert row is not None
    if not row["survivor_live"]:
        raise Conflict(f"merge {merge_id} cannot be undone yet: its survivor {survivor} was "
                       f"merged into another user by merge {row['survivor_merged_by']}; "
                       "unmerge that first")
    stack = list(row["stack"] or [])
    if not stack or stack[-1] != merge_id:
        later = stack[-1] if stack else "?"
        raise Conflict(f"merge {merge_id} cannot be undone yet: merge {later} into {survivor} "
                       "is later; merges into a user are undone latest first, so unmerge "
                       f"{later} first")
    if not row["tombstone_found"]:
        raise Conflict(f"merge {merge_id}: the tombstone of {merged} is missing")
    params: dict[str, Any] = {"survivor_id": survivor, "merged_id": merged,
                              "merge_id": merge_id}
    yield Statement(q.UNDO_MOVE_OUTGOING, params)
    yield Statement(q.UNDO_MOVE_INCOMING, params)
    yield Statement(q.DELETE_COPIES, params)
    yield Statement(q.RESTORE_EXPLICIT_PREFERENCES, params)
    yield Statement(q.RESTORE_PROFILE, {"rows": json.loads(row["profile_before"] or "[]"),
                                        **params})
    if row["location_before"] is not None:
        yield Statement(q.RESTORE_LOCATION, {
            "location_id": row["location_before"], "via": row["location_before_via"],
            "at": row["location_before_at"], **params})
    yield Statement(q.UNTOMBSTONE, params)
    yield Statement(q.HAND_OVER_INTERACTIONS, {"from_id": merged, "to_id": merged})
    yield from recompute_aggregates([survivor, merged])
    log.info("unmerged %s: user %s split from %s again", merge_id, merged, survivor)
    return survivor, merged


def unmerge_tx(tx: ManagedTransaction, merge_id: str) -> tuple[str, str]:
    """``unmerge_work`` inside the caller's synchronous transaction."""
    return run_work(tx, unmerge_work(merge_id))


def unmerge(graph: Graph, merge_id: str) -> tuple[str, str]:
    """Undo a merge in a transaction of its own; see ``unmerge_work``."""
    return graph.write_work(lambda: unmerge_work(merge_id))


async def unmerge_async(graph: AsyncGraph, merge_id: str) -> tuple[str, str]:
    """``unmerge`` on the async driver (the API)."""
    return await graph.write_work(lambda: unmerge_work(merge_id))


def merges_of_work(user_id: str) -> Work[list[dict[str, Any]]]:
    """The merge history of a user and of the users merged into it, oldest first, undone
    merges included: ``id``, ``at``, ``source``, ``reason``, ``survivor_id``, ``merged_id``,
    ``undone_at`` (None while active), ``active``, ``moved`` and ``copied`` (counts by type).
    ``NotFound`` for an unknown user."""
    user_id = _check_id(user_id, "user id")
    yield from _find([user_id])
    history = []
    for r in (yield Statement(q.MERGES_OF, {"id": user_id})):
        history.append({
            "id": r["id"], "at": _native(r["at"]), "source": r["source"],
            "reason": r["reason"], "survivor_id": r["survivor_id"],
            "merged_id": r["merged_id"], "undone_at": _native(r["undone_at"]),
            "active": r["undone_at"] is None,
            "moved": json.loads(r["moved"] or "{}"), "copied": json.loads(r["copied"] or "{}"),
        })
    return history


def merges_of(graph: Graph, user_id: str) -> list[dict[str, Any]]:
    """``merges_of_work`` in a read transaction of its own."""
    return graph.read_work(lambda: merges_of_work(user_id))


async def merges_of_async(graph: AsyncGraph, user_id: str) -> list[dict[str, Any]]:
    """``merges_of`` on the async driver (the API)."""
    return await graph.read_work(lambda: merges_of_work(user_id))
