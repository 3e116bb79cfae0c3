"""Batched, idempotent writes of validated events into the graph.

One batch is one managed transaction: events already in the graph are filtered out first, then
users, identifiers, catalogue, sessions, interactions and the per-user aggregates and inferred
preferences are written, one ``UNWIND`` each, all in one statement (``WRITE_BATCH``). A retry
after a transient error re-runs the whole function, including the filter, so nothing is counted
twice. Which user each event belongs to (found by its identifiers, minted, or merged) is worked
out by identity resolution, the path CRM records take too (``graph/identity/resolution.py``).

The file import works a batch out ahead (``EventWriter.plan``: the filter and look-ups in a read
transaction of their own, the rows built) while the previous batch is being written. The
batch's transaction then checks that the identifier links the plan relied on still hold, and
writes; an event another writer stored meanwhile makes the uniqueness constraint on
``event_id`` refuse the transaction, and the batch is worked out again inside one.

The transactions are ``Work`` (``graph.db``): the CLI, the Kafka consumer and the file import
run them on their synchronous driver, the API on its one async driver (``LoopGraph``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from functools import partial
from typing import Any, Protocol

from neo4j.exceptions import ConstraintError

from graph.aggregates import COUNTER, DECAY_PER_MS, INTEREST_SCORE, decayed
from graph.db import Graph, Rows, Statement, Work, one, statements
from graph.events import ATTRIBUTE_PREFIX, MAX_USER_ATTRIBUTES, Event, EventType
from graph.identity.merge import resolve_users
from graph.identity.resolution import (
    Pair,
    Resolved,
    UserResolution,
    contested_links_work,
    merge_owners,
    resolve_identifiers_work,
)
from graph.ingest import queries as q
from graph.ingest.metrics import IngestMetrics
from graph.ingest.tally import Tally
from graph.privacy import Pseudonymizer
from graph.times import epoch_ms

log = logging.getLogger(__name__)
# Attempts of a batch whose commit a concurrent writer's equal rows refused (see _write_unplanned).
CONSTRAINT_ATTEMPTS = 3


@dataclass(frozen=True)
class Conflicting:
    """An event naming identifiers of different users (most authoritative identifier's first)."""

    event_id: str
    source: str
    user_ids: tuple[str, ...]


@dataclass(frozen=True)
class WriteResult:
    written: int
    duplicates: int
    user_ids: tuple[str, ...] = ()
    """Users the written events belong to."""
    stored: frozenset[str] = frozenset()
    """Event ids of the batch that the graph already held (or, for a plan, that the batch
    written before it stored)."""
    erased: frozenset[str] = frozenset()
    """Event ids refused: they name an identifier of a user erased after the event happened."""
    as_planned: bool = False
    """Written exactly as its ``Plan`` said, and no users merged: a plan made on top of this
    batch (``EventWriter.plan(after=...)``) holds."""

    def tally(self) -> Tally:
        """The batch's counts, to add to a load's."""
        return Tally(written=self.written, duplicates=self.duplicates, erased=len(self.erased))


@dataclass(frozen=True)
class StatedPreference:
    """A preference a user stated outside an event (the API's ``setPreference``), -1 to 1."""

    user_id: str
    category: str
    weight: float
    at: datetime


@dataclass(frozen=True)
class EventRow:
    """What an event contributes that does not depend on who its user turns out to be."""

    at: int
    """``occurred_at`` in epoch milliseconds."""
    props: dict[str, Any]
    """The Interaction node's properties (PII scrubbed, the device's id pseudonymous)."""


@dataclass(frozen=True)
class PreparedBatch:
    """A batch made ready for its transaction without the graph (``EventWriter.prepare``):
    de-duplicated by ``event_id`` (first wins), identifiers hashed, each event's own rows."""

    size: int
    """Events given, duplicates included."""
    events: dict[str, Event]
    hashed: dict[str, list[Pair]]
    rows: dict[str, EventRow]


@dataclass(frozen=True)
class Plan:
    """A batch's writes worked out ahead of its transaction (``EventWriter.plan``), from a read
    of the graph and the writes of the batch in flight meanwhile."""

    batch: PreparedBatch
    existing: frozenset[str]
    """Event ids the graph (or the batch in flight) already holds."""
    erased: frozenset[str]
    fresh: tuple[Event, ...]
    params: dict[str, Any]
    """The batch statement's parameters (``EventWriter._params``); empty when nothing is fresh."""
    conflicts: tuple[Conflicting, ...]
    links: Rows
    """The identifier-to-user links (``kind``, ``hash``, ``user_id``) a plan made ahead of its
    transaction relied on (none for one made inside it). It is written only if they all still
    hold then: a merge, an unmerge or an erasure meanwhile changes them, and the batch is
    worked out again."""


_Outcome = tuple[Plan, list[str], bool]
"""A batch transaction's result: the plan it wrote (worked out again inside it if the graph had
changed under the one given), the batch's users, and whether users were merged."""


class StalePlan(Exception):
    """The graph changed under a plan between its read and its transaction."""


class Assigner(Protocol):
    """What runs after each committed batch: segment assignment of newcomers. ``preload`` readies
    it ahead of the first newcomer (the Kafka consumer and the API call it when they start)."""

    def assign(self, user_ids: Sequence[str]) -> int: ...

    def preload(self) -> bool: ...


class EventWriter:
    """Writes batches of events; one instance per process, shared by every source."""

    def __init__(self, graph: Graph, pseudonymizer: Pseudonymizer,
                 assigner: Assigner | None = None, metrics: IngestMetrics | None = None) -> None:
        self.graph = graph
        self.pseudonymizer = pseudonymizer
        self.assigner = assigner
        self.metrics = metrics

    def prepare_assignment(self) -> None:
        """Ready segment assignment ahead of the first newcomer (``Assigner.preload``). Like an
        assignment after a batch, a failure here is logged and never stops ingestion."""
        if self.assigner is None:
            return
        try:
            if self.assigner.preload():
                log.info("segment assignment ready (latest run's model loaded)")
        except Exception:  # noqa: BLE001 - a bad model file must not stop ingestion
            log.exception("could not prepare segment assignment; it is tried again with the "
                          "first newcomer")

    def prepare(self, events: Sequence[Event]) -> PreparedBatch:
        """The part of a write that needs no graph. The file import runs it on the thread that
        reads, so that the writer's thread keeps Neo4j busy; the stream consumer too, for a
        full batch while the one before it is written (a smaller one is prepared on the
        writer's thread, in ``write``)."""
        unique: dict[str, Event] = {}
        for event in events:
            unique.setdefault(event.event_id, event)
        # A user's events name the same identifiers: each set is hashed once a batch (the
        # events share its list, which nothing changes).
        digest = self.pseudonymizer.digest
        by_user: dict[tuple[tuple[str, str], ...], list[Pair]] = {}
        hashed: dict[str, list[Pair]] = {}
        for eid, e in unique.items():
            named = tuple(e.user.items())
            pairs = by_user.get(named)
            if pairs is None:
                pairs = by_user[named] = [(kind, digest(kind, value))
                                          for kind, value in e.identifiers()]
            hashed[eid] = pairs
        rows = {eid: self._event_row(e) for eid, e in unique.items()}
        return PreparedBatch(len(events), unique, hashed, rows)

    def plan(self, batch: PreparedBatch, after: Plan | None = None) -> Plan:
        """Work out ``batch``'s writes ahead of its transaction, so that the writer's thread only
        sends them: the look-ups run in a read transaction of their own and the rows are built
        here (the file import does this on its reading thread, while the previous batch is
        being written).

        ``after`` is the plan of the batch being written meanwhile, which this read may not see:
        its events and identifier links count as stored. A plan holds only if that batch is
        written as planned (``WriteResult.as_planned``); the caller writes the batch itself
        otherwise. ``write`` checks inside its transaction that the identifier links the plan
        relied on still hold, and works the batch out again there if the graph changed
        meanwhile.
        """
        existing, resolved = self.graph.read_work(lambda: self._look_up(batch))
        if after is not None:
            existing |= batch.events.keys() & {e.event_id for e in after.fresh}
            resolved.owners.update(((link["kind"], link["hash"]), link["user_id"])
                                   for link in after.params.get("identifiers", ()))
        plan = self._plan(batch, existing, resolved)
        pairs = {p for e in plan.fresh for p in batch.hashed[e.event_id] if p in resolved.owners}
        return replace(plan, links=Rows(
            {"kind": kind, "hash": digest, "user_id": resolved.owners[(kind, digest)]}
            for kind, digest in sorted(pairs)))

    def write(self, events: Sequence[Event] | Plan, *, source: str = "file",
              then: Statement | None = None, assign: bool = True) -> WriteResult:
        """Write one batch in one transaction; events already stored are skipped, not re-counted.

        ``events`` may come from ``plan``; the batch metric times the write only, either way.
        ``source`` labels the batch in the metrics (a source family, see ``IngestMetrics``).
        ``then`` runs in the batch's transaction after its writes, whether or not any event was
        new (the stream consumer records its offsets there: one commit a batch, not two); with a
        plan that has nothing to write, in a transaction of its own. ``assign=False``
        leaves the newcomers' segment assignment to the caller (``assign_newcomers`` with the
        result's ``user_ids``): the stream consumer commits the batch's offsets meanwhile.
        """
        if isinstance(events, Plan):
            plan, prepared = events, events.batch
        else:
            if then is not None and not events:
                raise TypeError("`then` needs a batch with events: no transaction without")
            plan, prepared = None, self.prepare(events)
        start = time.perf_counter()
        result = self._write(prepared, plan, then, assign)
        if self.metrics is not None:
            self.metrics.batch(source, time.perf_counter() - start, result.written,
                               result.duplicates)
            if result.erased:
                self.metrics.reject(source, "erased", len(result.erased))
        if result.erased:
            log.info("refused %d events of erased users (source %s)", len(result.erased), source)
        return result

    def state_preferences(self, stated: Sequence[StatedPreference], *, source: str) -> None:
        """Write stated preferences with the statement explicit feedback uses (per user and
        category, the latest by time wins), counted in the metrics like any batch of
        ``source``."""
        rows = Rows({"user_id": p.user_id, "category": p.category, "weight": p.weight,
                     "at": epoch_ms(p.at)} for p in stated)
        start = time.perf_counter()
        self.graph.write_work(lambda: statements(
            Statement(q.SET_EXPLICIT_PREFERENCES, {"rows": rows})))
        if self.metrics is not None:
            self.metrics.received.labels(source).inc(len(rows))
            self.metrics.batch(source, time.perf_counter() - start, len(rows), 0)

    def assign_newcomers(self, user_ids: Sequence[str]) -> None:
        """Give the users of a written batch that the latest run lacks their segment. A failure
        is logged and never stops ingestion: the events are committed, the next run assigns."""
        if self.assigner is None or not user_ids:
            return
        try:
            self.assigner.assign(user_ids)
        except Exception:  # noqa: BLE001 - the events are committed; the next run assigns
            log.exception("segment assignment after a batch failed; the events are stored")

    def _write(self, prepared: PreparedBatch, plan: Plan | None,
               then: Statement | None = None, assign: bool = True) -> WriteResult:
        if not prepared.events:
            return WriteResult(0, 0)
        if plan is not None and not plan.fresh:
            # Nothing to write: no transaction (every batch of a file loaded again) but the
            # caller's own statement's.
            if then is not None:
                self.graph.write_work(lambda: statements(then))
            outcome: _Outcome | None = (plan, [], False)
        else:
            outcome = self._write_planned(plan, then) if plan is not None else None
        planned = outcome is not None
        if outcome is None:
            outcome = self._write_unplanned(prepared, then)
        written_plan, users, merged = outcome
        if assign:
            self.assign_newcomers(users)
        written, erased = len(written_plan.fresh), written_plan.erased
        return WriteResult(written, prepared.size - written - len(erased), tuple(users),
                           written_plan.existing, erased, as_planned=planned and not merged)

    def _write_unplanned(self, prepared: PreparedBatch,
                         then: Statement | None = None) -> _Outcome:
        """Look up and write in one transaction. Another writer may commit the same events or
        mint the same identifiers between our look-up and our commit (a client retrying a
        batch that timed out sends it twice at once): the unique constraints refuse ours, and
        a new attempt finds them stored (its events then count as duplicates)."""
        for attempt in range(1, CONSTRAINT_ATTEMPTS + 1):
            try:
                return self.graph.write_work(lambda: self._write_work(prepared, then))
            except ConstraintError as exc:
                if attempt == CONSTRAINT_ATTEMPTS:
                    raise
                log.info("a batch met a concurrent writer's events; looking again: %s", exc)
        raise AssertionError("unreachable")  # pragma: no cover - the loop returns or raises

    def _write_planned(self, plan: Plan, then: Statement | None = None) -> _Outcome | None:
        """Write a plan (and ``then`` after it), or None if the graph changed under it since
        the plan's read: another writer stored some of its events, or changed an identifier
        link it relied on."""
        try:
            return self.graph.write_work(lambda: self._apply(plan, then))
        except (StalePlan, ConstraintError) as exc:
            log.info("a batch planned ahead is worked out again: %s", exc)
            return None

    @staticmethod
    def _look_up(batch: PreparedBatch) -> Work[tuple[set[str], Resolved]]:
        """The batch's events already stored, and what the graph holds on the identifiers of
        the others."""
        existing = {r["id"] for r in (yield Statement(q.EXISTING_EVENTS,
                                                      {"ids": Rows(batch.events)}))}
        pairs = {p for eid in batch.events if eid not in existing for p in batch.hashed[eid]}
        return existing, (yield from resolve_identifiers_work(pairs))

    def _plan(self, batch: PreparedBatch, existing: set[str], resolved: Resolved) -> Plan:
        fresh = [e for eid, e in batch.events.items() if eid not in existing]
        # A replay of old events must not bring an erased user back (newer events are a new
        # start).
        erased = {e.event_id for e in fresh
                  if resolved.erased_since(batch.hashed[e.event_id], e.occurred_at)
                  } if resolved.erased_at else set()
        if erased:
            fresh = [e for e in fresh if e.event_id not in erased]
        params, conflicts = self._params(fresh, batch, resolved.owners) if fresh else ({}, [])
        return Plan(batch, frozenset(existing), frozenset(erased), tuple(fresh), params,
                    tuple(conflicts), Rows())

    def _write_work(self, batch: PreparedBatch,
                    then: Statement | None = None) -> Work[_Outcome]:
        found = yield from self._look_up(batch)
        return (yield from self._apply(self._plan(batch, *found), then))

    def _apply(self, plan: Plan, then: Statement | None = None) -> Work[_Outcome]:
        """The plan's writes, if the identifier links it relied on still hold (``plan.links``:
        a plan made ahead of the transaction has them, one made inside it none), then
        ``then``."""
        outcome = yield from self._apply_plan(plan)
        if then is not None:
            yield then
        return outcome

    def _apply_plan(self, plan: Plan) -> Work[_Outcome]:
        fresh, hashed, params = list(plan.fresh), plan.batch.hashed, plan.params
        if not fresh:
            return plan, [], False
        conflicts = list(plan.conflicts)
        record = one((yield Statement(q.WRITE_BATCH, {**params, "links": plan.links})))
        if record is None:
            raise StalePlan("an identifier link it relied on changed")
        if record["contested"]:
            conflicts += yield from self._contested(fresh, hashed, params["identifiers"],
                                                    record["contested"])
        users = [u["id"] for u in params["users"]]
        if conflicts:
            users = yield from self._merge_conflicts(conflicts, users)
        return plan, users, bool(conflicts)

    @staticmethod
    def _contested(fresh: list[Event], hashed: dict[str, list[Pair]],
                   links: list[dict[str, Any]], found: list[dict[str, Any]],
                   ) -> Work[list[Conflicting]]:
        """Identifiers this batch linked that a concurrent writer linked to another user first
        (``found`` by ``WRITE_BATCH``): their owners are to be merged (``_merge_conflicts``)."""
        contested = yield from contested_links_work(links, found)
        if not contested:
            return []
        by_pair: dict[Pair, Event] = {}
        for e in fresh:
            for pair in hashed[e.event_id]:
                by_pair.setdefault(pair, e)
        conflicts: list[Conflicting] = []
        for link, owners in contested:
            event = by_pair[(link["kind"], link["hash"])]
            conflicts.append(Conflicting(event.event_id, event.source, tuple(owners)))
        return conflicts

    @staticmethod
    def _merge_conflicts(conflicts: list[Conflicting], users: list[str]) -> Work[list[str]]:
        """Merge the users that events of this batch name identifiers of, once the batch is
        written (so users new in the batch exist too); returns the batch's users as survivors
        (``merge_owners``: by identifier authority, a chain of links ending in one user)."""
        for c in conflicts:
            yield from merge_owners(c.user_ids, source=c.source,
                                    reason=f"event {c.event_id} names identifiers of both users")
        live = yield from resolve_users(users)
        return list(dict.fromkeys(live.get(u, u) for u in users))

    def _resolve_users(
        self,
        fresh: list[Event],
        hashed: dict[str, list[Pair]],
        known: dict[Pair, str],
    ) -> tuple[dict[str, str], list[dict[str, Any]], list[Conflicting]]:
        """Map each event to a user id, list the identifier links that are new, and the events
        that name identifiers of two or more different users (``UserResolution``; merged at the
        end of the batch's transaction, ``_merge_conflicts``)."""
        resolution = UserResolution.of(known)
        user_of: dict[str, str] = {}
        conflicts: list[Conflicting] = []
        for event in fresh:
            uid, others = resolution.assign(hashed[event.event_id], epoch_ms(event.occurred_at),
                                            partial(self._new_user, event))
            if others:
                conflicts.append(Conflicting(event.event_id, event.source, (uid, *others)))
            user_of[event.event_id] = uid
        links, _ = resolution.settle()
        return user_of, links, conflicts

    def _new_user(self, event: Event) -> str:
        """The id of a user minted for ``event``: after its most authoritative identifier."""
        kind, value = event.identifiers()[0]
        return self.pseudonymizer.user_id(kind, value)

    def _event_row(self, e: Event) -> EventRow:
        """An event's own contribution (``EventRow``): the same whoever its user is."""
        p = e.properties
        total = p.line_total()
        device_id = self.pseudonymizer.device_id(e.device.id) if e.device is not None else None
        props: dict[str, Any] = {
            "event_id": e.event_id, "type": e.type.value, "source": e.source,
        }
        for key in ("item_id", "category", "brand", "order_id", "intent", "rating",
                    "duration_s", "channel"):
            value = getattr(p, key)
            if value is not None:
                props[key] = value
        if total is not None:
            # Only a price the event gave is stored: a unit price worked out from a line total
            # would be a figure nobody stated (the total may hold a discount or a rounding).
            if p.price is not None:
                props["price"] = float(p.price)
            props["quantity"] = p.quantity
            props["amount"] = float(total)
        if p.discount:
            props["discount"] = p.discount
        if p.text is not None:
            props["text"] = self.pseudonymizer.scrub_text(p.text)
        if p.query is not None:
            props["query"] = self.pseudonymizer.scrub_text(p.query)
        if device_id is not None:
            props["device_id"] = device_id
        return EventRow(epoch_ms(e.occurred_at), props)

    def _params(
        self,
        fresh: list[Event],
        batch: PreparedBatch,
        known: dict[Pair, str],
    ) -> tuple[dict[str, Any], list[Conflicting]]:
        user_of, links, conflicts = self._resolve_users(fresh, batch.hashed, known)
        users: dict[str, dict[str, Any]] = {}
        sessions: dict[str, dict[str, Any]] = {}
        items: dict[str, dict[str, Any]] = {}
        interacted: dict[tuple[str, str], dict[str, Any]] = {}
        inferred: dict[tuple[str, str], dict[str, Any]] = {}
        explicit: dict[tuple[str, str], dict[str, Any]] = {}
        locations: dict[str, dict[str, Any]] = {}
        devices: dict[tuple[str, str], dict[str, Any]] = {}
        categories: set[str] = set()
        brands: set[str] = set()
        interactions: list[dict[str, Any]] = []
        refs: dict[str, dict[str, int]] = {"users": {}, "sessions": {}, "items": {},
                                           "categories": {}}

        def ref(kind: str, name: str | None) -> int | None:
            """``name``'s position in ``refs[kind]`` (see ``CREATE_INTERACTIONS``)."""
            return None if name is None else refs[kind].setdefault(name, len(refs[kind]))

        for e in sorted(fresh, key=lambda ev: ev.occurred_at):
            uid = user_of[e.event_id]
            row = batch.rows[e.event_id]
            at, amount = row.at, row.props.get("amount")
            p = e.properties
            user = users.setdefault(uid, {
                "id": uid, "first_seen": at, "last_seen": at, "events": 0, "page_views": 0,
                "searches": 0, "carts": 0, "purchases": 0, "chat_messages": 0, "feedbacks": 0,
                "spend": 0.0, "profile": {}, "profile_at": None,
            })
            user["first_seen"] = min(user["first_seen"], at)
            user["last_seen"] = max(user["last_seen"], at)
            user["events"] += 1
            user[COUNTER[e.type]] += 1
            if e.type is EventType.PURCHASE and amount is not None:
                user["spend"] += amount
            if e.profile is not None:
                # Profiles are last-write-wins by event time: a late or replayed event does not
                # overwrite what a newer one set (see UPSERT_USERS, UPSERT_LOCATIONS).
                for key, value in e.profile.model_dump(
                        exclude_none=True, exclude={"location", "attributes"}).items():
                    user["profile"][key] = {"key": key, "value": value, "at": at}
                for name, value in (e.profile.attributes or {}).items():
                    key = ATTRIBUTE_PREFIX + name
                    user["profile"][key] = {
                        "key": key, "value": self.pseudonymizer.attribute_value(name, value),
                        "at": at}
                user["profile_at"] = at
                if e.profile.location is not None:
                    locations[uid] = {"user_id": uid, "at": at,
                                      "location": e.profile.location.model_dump(exclude_none=True)}
            if e.device is not None:
                device_id = row.props["device_id"]
                devices[(uid, device_id)] = {"user_id": uid, "id": device_id,
                                             "kind": e.device.kind}
            if p.category:
                categories.add(p.category)
            if p.brand:
                brands.add(p.brand)
            if p.item_id:
                item = items.setdefault(p.item_id, {"id": p.item_id, "name": None, "price": None,
                                                    "category": None, "brand": None})
                item["name"] = p.item_name or item["name"]
                # A discounted sale's price is not the item's (list) price, and a line total
                # alone says nothing of it.
                if p.price is not None and not p.discount:
                    item["price"] = float(p.price)
                item["category"] = p.category or item["category"]
                item["brand"] = p.brand or item["brand"]
                agg = interacted.setdefault((uid, p.item_id), {
                    "user_id": uid, "item_id": p.item_id, "views": 0, "carts": 0, "purchases": 0,
                    "spend": 0.0, "first_at": at, "last_at": at, "rating": None,
                    "rated_at": None})
                agg["last_at"] = max(agg["last_at"], at)
                if e.type is EventType.PAGE_VIEW:
                    agg["views"] += 1
                elif e.type is EventType.ADD_TO_CART:
                    agg["carts"] += 1
                elif e.type is EventType.PURCHASE:
                    agg["purchases"] += p.quantity
                    agg["spend"] += amount or 0.0
                elif e.type is EventType.FEEDBACK and p.rating is not None:
                    # A rating of this item: the latest by event time stands (events come in
                    # time order; UPDATE_INTERACTED compares with what is stored).
                    agg["rating"], agg["rated_at"] = p.rating, at
            if e.session_id:
                s = sessions.setdefault(e.session_id, {
                    "id": e.session_id, "user_ids": [], "started_at": at, "ended_at": at,
                    "events": 0, "channel": p.channel or e.source,
                    "device_kind": e.device.kind if e.device else None})
                # A conversation may have several participants: each is linked to it, and
                # each event stays its own user's (PERFORMED).
                if uid not in s["user_ids"]:
                    s["user_ids"].append(uid)
                s["started_at"] = min(s["started_at"], at)
                s["ended_at"] = max(s["ended_at"], at)
                s["events"] += 1
            if p.category:
                pref = inferred.setdefault((uid, p.category), {
                    "user_id": uid, "category": p.category, "score": 0.0, "at": at})
                # Events come in time order: decay what the batch has so far to this one.
                pref["score"] = decayed(pref["score"], at - pref["at"]) + INTEREST_SCORE[e.type]
                pref["at"] = at
                # A rating of an item is about that item (INTERACTED.rating), not a statement
                # about its whole category; feedback naming only a category is.
                if e.type is EventType.FEEDBACK and p.rating is not None and not p.item_id:
                    explicit[(uid, p.category)] = {"user_id": uid, "category": p.category,
                                                   "weight": (p.rating - 3) / 2.0, "at": at}
            interactions.append({"u": ref("users", uid), "s": ref("sessions", e.session_id),
                                 "it": ref("items", p.item_id),
                                 "c": ref("categories", p.category), "at": at,
                                 "props": row.props})

        return {
            "users": Rows({**u, "profile": list(u["profile"].values())} for u in users.values()),
            "identifiers": Rows(links),
            "locations": Rows(locations.values()),
            "devices": Rows(devices.values()),
            "categories": Rows(sorted(categories)),
            "brands": Rows(sorted(brands)),
            "items": Rows(items.values()),
            "sessions": Rows(sessions.values()),
            "interactions": Rows(interactions),
            "interaction_refs": {kind: Rows(names) for kind, names in refs.items()},
            "interacted": Rows(interacted.values()),
            "inferred": Rows(inferred.values()),
            "inferred_users": Rows(sorted({uid for uid, _ in inferred})),
            "decay_per_ms": DECAY_PER_MS,
            "explicit": Rows(explicit.values()),
            "max_attributes": MAX_USER_ATTRIBUTES,
        }, conflicts

