"""Which user a record belongs to: the one path by which events (``graph/ingest/writer.py``), CRM
records and the API's ``upsertUser`` (``graph/crm/importer.py``) find users by their
identifiers, mint new ones and merge the users one record names.

The rules, whatever the source:

- identifiers are ``(kind, keyed hash)`` pairs, most authoritative kind first;
- an identifier bound to a user keeps that user; a record whose identifiers are all new belongs
  to a user minted after its most authoritative identifier, and its new identifiers are linked
  to the user it belongs to;
- a record naming identifiers of several users makes them one: they are merged by identifier
  authority (``merge.merge_by_authority``), inside the transaction that writes the record;
- an identifier a concurrent writer linked to another user between the look-up and the link
  (``contested_links``) merges the two users the same way;
- a record from before the erasure of one of its identifiers is refused (``Resolved``).

A batch is worked out in one transaction: ``resolve_identifiers`` looks its identifiers up in one
round trip, then ``UserResolution.assign`` takes its records in time order.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from neo4j import ManagedTransaction

from graph.db import Rows, Statement, Work, run_work
from graph.identity import queries as q
from graph.identity.merge import merge_by_authority, resolve_users
from graph.times import epoch_ms

log = logging.getLogger(__name__)

Pair = tuple[str, str]
"""An identifier as stored: ``(kind, keyed hash)``."""


@dataclass(frozen=True)
class Resolved:
    """What the graph holds on a set of identifier pairs (``resolve_identifiers``)."""

    owners: dict[Pair, str]
    """The user each pair identifies, for pairs that identify one."""
    erased_at: dict[Pair, int]
    """When each erased pair was erased (epoch milliseconds)."""

    def erased_since(self, pairs: Iterable[Pair], at: datetime) -> bool:
        """Whether one of ``pairs`` was erased at or after ``at``: what a record from ``at``
        says about that user was erased with them, and must be refused."""
        at_ms = epoch_ms(at)
        return any(self.erased_at.get(pair, -1) >= at_ms for pair in pairs)


def resolve_identifiers_work(pairs: Collection[Pair]) -> Work[Resolved]:
    """Owners and erasure times of ``(kind, hash)`` pairs, in one round trip."""
    if not pairs:
        return Resolved({}, {})
    owners: dict[Pair, str] = {}
    erased_at: dict[Pair, int] = {}
    for r in (yield Statement(q.RESOLVE_IDENTIFIERS,
                              {"rows": Rows({"kind": k, "hash": h} for k, h in pairs)})):
        pair = (r["kind"], r["hash"])
        if r["user_id"] is not None:
            owners[pair] = r["user_id"]
        if r["erased_at"] is not None:
            erased_at[pair] = r["erased_at"]
    return Resolved(owners, erased_at)


def resolve_identifiers(tx: ManagedTransaction, pairs: Collection[Pair]) -> Resolved:
    """``resolve_identifiers_work`` inside the caller's synchronous transaction."""
    return run_work(tx, resolve_identifiers_work(pairs))


@dataclass
class UserResolution:
    """The users of a batch's records, worked out inside the batch's transaction.

    ``fold_minted`` says what becomes of a user minted for an earlier record of the batch when a
    later record names its identifier together with a stored user's: folded into the stored
    user (never created; CRM records, whose users exist only through their fields), or kept and
    merged like any other (events, whose batch statement has written its interactions by the time
    merges run). ``merge_now`` merges two users in the caller's transaction and returns the
    survivor; without it, ``assign`` returns the users to merge for the caller to merge once its
    batch is written (``merge_owners_tx``).
    """

    owner: dict[Pair, str]
    """Whom each identifier names: from the graph, then as this batch links them."""
    fold_minted: bool = False
    merge_now: Callable[[str, str], str] | None = None
    stored: set[str] = field(default_factory=set)
    """Users the graph holds (and that merges have not folded away)."""
    minted: dict[str, int] = field(default_factory=dict)
    """Users this batch creates, with the time of the first record of each."""
    links: list[dict[str, Any]] = field(default_factory=list)
    """New identifier links (``LINK_IDENTIFIERS`` rows)."""
    alias: dict[str, str] = field(default_factory=dict)
    """Users that became another within the batch (folded or merged), to the one they became."""

    @classmethod
    def of(cls, owners: Mapping[Pair, str], *, fold_minted: bool = False,
           merge_now: Callable[[str, str], str] | None = None) -> UserResolution:
        """A resolution starting from the stored owners of the batch's identifiers."""
        return cls(dict(owners), fold_minted, merge_now, set(owners.values()))

    def find(self, user_id: str) -> str:
        """The user ``user_id`` became within the batch (itself if none)."""
        while user_id in self.alias:
            user_id = self.alias[user_id]
        return user_id

    def assign(self, pairs: Sequence[Pair], at: int,
               new_user: str | Callable[[], str]) -> tuple[str, list[str]]:
        """The user a record naming ``pairs`` (at ``at``, epoch ms) belongs to, and the other
        users it names that are left to merge with it (none with ``merge_now``). ``new_user`` is
        the id of the user minted for a record whose identifiers are all new, or makes it
        (the event writer mints one only when needed: the id is a keyed hash)."""
        uids = list(dict.fromkeys(self.find(self.owner[p]) for p in pairs if p in self.owner))
        others: list[str] = []
        if not uids:
            uid = self.find(new_user if isinstance(new_user, str) else new_user())
            if uid not in self.stored:
                self.minted.setdefault(uid, at)
        else:
            stored = [u for u in uids if u in self.stored] if self.fold_minted else []
            uid = stored[0] if stored else uids[0]
            for other in uids:
                if other == uid:
                    continue
                if self.fold_minted and other not in self.stored:
                    self.alias[other] = uid
                    self.minted.pop(other, None)
                elif self.merge_now is not None:
                    uid = self.merged(uid, other, self.merge_now(uid, other))
                else:
                    others.append(other)
        for pair in pairs:
            if pair not in self.owner:
                self.owner[pair] = uid
                self.links.append({"user_id": uid, "kind": pair[0], "hash": pair[1], "at": at})
        return uid, others

    def merged(self, a: str, b: str, survivor: str) -> str:
        """Note that users ``a`` and ``b`` were merged into ``survivor``; returns it."""
        loser = b if survivor == a else a
        self.alias[loser] = survivor
        self.stored.discard(loser)
        return survivor

    def settle(self) -> tuple[list[dict[str, Any]], dict[str, int]]:
        """The batch's new links and minted users, as the users they became in the batch."""
        for link in self.links:
            link["user_id"] = self.find(link["user_id"])
        return self.links, {self.find(u): at for u, at in self.minted.items()}


def contested_links_work(links: list[dict[str, Any]],
                         found: list[dict[str, Any]] | None = None,
                         ) -> Work[list[tuple[dict[str, Any], list[str]]]]:
    """Links this transaction just made (``LINK_IDENTIFIERS`` rows) to identifiers that a
    concurrent writer linked to another user first, each with the users the identifier names
    now. This transaction's link to each is removed again, so that merging the users (the
    caller's part) moves the other writer's link to the survivor and an unmerge gives it back.
    ``found``: the ``CONTESTED_IDENTIFIERS`` rows when the caller's statement returned them
    already (the event writer's ``WRITE_BATCH``)."""
    if not links:
        return []
    rows = found if found is not None else (yield Statement(
        q.CONTESTED_IDENTIFIERS,
        {"rows": Rows({"kind": r["kind"], "hash": r["hash"]} for r in links)}))
    if not rows:
        return []
    owners = {(r["kind"], r["hash"]): list(r["owners"]) for r in rows}
    mine = [link for link in links if (link["kind"], link["hash"]) in owners]
    yield Statement(q.UNLINK_IDENTIFIERS, {"rows": mine})
    for link in mine:
        log.info("identifier %s linked to %d users by concurrent writers; merging them",
                 link["kind"], len(owners[(link["kind"], link["hash"])]))
    return [(link, owners[(link["kind"], link["hash"])]) for link in mine]


def contested_links(tx: ManagedTransaction, links: list[dict[str, Any]],
                    found: list[dict[str, Any]] | None = None,
                    ) -> list[tuple[dict[str, Any], list[str]]]:
    """``contested_links_work`` inside the caller's synchronous transaction."""
    return run_work(tx, contested_links_work(links, found))


def link_identifiers(tx: ManagedTransaction, links: list[dict[str, Any]]) -> None:
    """Write new identifier links (``UserResolution.settle``) on their own; the event writer
    sends them within its batch statement instead."""
    if links:
        tx.run(q.LINK_IDENTIFIERS, rows=links).consume()


def merge_owners(user_ids: Sequence[str], *, source: str, reason: str) -> Work[str]:
    """Merge the users one record names (``user_ids``, the record's own user first) into one by
    identifier authority; returns the survivor. Users that are one already are left alone, so a
    chain of links ends in one user."""
    first = user_ids[0]
    for other in user_ids[1:]:
        yield from merge_by_authority(first, other, source=source, reason=reason)
    return (yield from resolve_users([first]))[first]


def merge_owners_tx(tx: ManagedTransaction, user_ids: Sequence[str], *, source: str,
                    reason: str) -> str:
    """``merge_owners`` inside the caller's synchronous transaction."""
    return run_work(tx, merge_owners(user_ids, source=source, reason=reason))
