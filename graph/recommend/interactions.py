"""Every ``INTERACTED`` relationship as columns: what a run's recommender tables are computed from.

The run reads the graph's user x item interactions once, a page of users at a time, as lists (no
dict per row), into numpy columns; the item neighbours (``items``), the similar users
(``neighbours``) and the learned blend's validation pass (``blend``) all compute from this one
``Interactions``. Reading every interaction twice as Python dicts (once for the carted or
bought ones, once for all) and grouping them in Python loops was most of a run's time at 100,000
users (docs/performance.md).

A row is one ``INTERACTED``: its user and item (indices into ``user_ids`` and ``item_ids``), its
counts (0 where missing), its rating (NaN where missing) and the time that orders a user's
interactions (``coalesce(last_at, rated_at)``; ``has_at`` false where neither is set).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import datetime
from functools import cached_property, partial
from typing import Any

import numpy as np
from neo4j import ManagedTransaction
from numpy.typing import NDArray

from graph.db import Graph
from graph.recommend import queries as q

PAGE_USERS = 10_000
"""Users whose interactions are read in one round trip (``RUN_INTERACTIONS_PAGE``)."""
MISSING_AT = -(2**63)  # int64's least: no time (the query returns it for a null)
LOW_RATING = 2  # this or lower: the interaction says the user disliked the item
# How much one interaction says about the user's taste; the largest applicable one counts.
INTERACTION_WEIGHTS: dict[str, float] = {
    "purchase": 1.0,
    "liked": 1.0,  # rated 4 or 5
    "rated": 0.5,  # rated 3
    "cart": 0.5,
    "view": 0.2,
}

Ints = NDArray[np.int64]
Floats = NDArray[np.float64]
Bools = NDArray[np.bool_]


def id_rank(ids: list[str]) -> Ints:
    """Each id's place in id order (ties between rows are broken by it)."""
    if not ids:
        return np.zeros(0, dtype=np.int64)
    return np.argsort(np.argsort(np.array(ids))).astype(np.int64)


@dataclass(frozen=True)
class Interactions:
    """The interactions, one entry per ``INTERACTED`` in each row-wise array."""

    user_ids: list[str]
    item_ids: list[str]
    personal: Bools
    """Per user: personalization consent (false: no similar users stored for them)."""
    item_users: Ints
    """Per item: how many users interacted with it in the graph (``limits.MAX_ITEM_USERS``),
    kept as read when rows are left out (a validation split does not change who is a
    super-node)."""
    user: Ints
    item: Ints
    views: Floats
    carts: Floats
    purchases: Floats
    rating: Floats
    at: NDArray[Any]
    has_at: Bools

    @property
    def n_users(self) -> int:
        return len(self.user_ids)

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    @cached_property
    def user_rank(self) -> Ints:
        return id_rank(self.user_ids)

    @cached_property
    def item_rank(self) -> Ints:
        return id_rank(self.item_ids)

    def rated(self) -> Bools:
        return ~np.isnan(self.rating)

    def carted(self) -> Bools:
        """The rows ``queries.CARTED_OR_BOUGHT`` returns: carted, bought or rated 4-5, and not
        rated 2 or lower."""
        rated = self.rated()
        liked = rated & (np.nan_to_num(self.rating) >= 4)
        disliked = rated & (np.nan_to_num(self.rating) <= LOW_RATING)
        return ((self.carts + self.purchases > 0) | liked) & ~disliked

    def bought(self) -> Bools:
        """Bought or liked (rated 4-5): what makes the user a peer of those who had it."""
        return (self.purchases > 0) | (self.rated() & (np.nan_to_num(self.rating) >= 4))

    def weights(self) -> Floats:
        """``items.interaction_weight`` of every row."""
        w = INTERACTION_WEIGHTS
        rated = self.rated()
        rating = np.nan_to_num(self.rating)
        signal = np.maximum.reduce([
            np.where(self.purchases > 0, w["purchase"], 0.0),
            np.where(self.carts > 0, w["cart"], 0.0),
            np.where(self.views > 0, w["view"], 0.0),
            np.where(rated, np.where(rating >= 4, w["liked"], w["rated"]), 0.0)])
        return np.where(rated & (rating <= LOW_RATING), 0.0, signal)

    def take(self, rows: NDArray[Any]) -> Interactions:
        """The same users and items with only ``rows`` (a mask or indices)."""
        return replace(self, user=self.user[rows], item=self.item[rows],
                       views=self.views[rows], carts=self.carts[rows],
                       purchases=self.purchases[rows], rating=self.rating[rows],
                       at=self.at[rows], has_at=self.has_at[rows])

    @classmethod
    def from_rows(cls, rows: Iterable[dict[str, Any]]) -> Interactions:
        """From ``ITEM_INTERACTIONS``-like dicts (``user_id``, ``item_id``, optionally
        ``views``, ``carts``, ``purchases``, ``rating``, ``last_at``, ``personal``, and
        ``item_users``, else counted from the rows; ``last_at`` a number or a datetime)."""
        users: dict[str, int] = {}
        items: dict[str, int] = {}
        personal: dict[int, bool] = {}
        given_item_users: dict[int, int] = {}
        cols: dict[str, list[Any]] = {k: [] for k in (
            "user", "item", "views", "carts", "purchases", "rating", "at")}
        for r in rows:
            u = users.setdefault(r["user_id"], len(users))
            i = items.setdefault(r["item_id"], len(items))
            personal[u] = personal.get(u, True) and bool(r.get("personal", True))
            if "item_users" in r:
                given_item_users[i] = max(given_item_users.get(i, 0), int(r["item_users"]))
            cols["user"].append(u)
            cols["item"].append(i)
            for k in ("views", "carts", "purchases"):
                cols[k].append(r.get(k) or 0)
            cols["rating"].append(r.get("rating"))
            cols["at"].append(r.get("last_at"))
        user = np.array(cols["user"], dtype=np.int64)
        item = np.array(cols["item"], dtype=np.int64)
        ats = cols["at"]
        has_at = np.array([a is not None for a in ats], dtype=bool)
        if any(isinstance(a, datetime) for a in ats):
            at: NDArray[Any] = np.array(
                [_nanos(a) if a is not None else MISSING_AT for a in ats], dtype=np.int64)
        else:
            at = np.array([a if a is not None else 0 for a in ats], dtype=np.float64)
        counted = np.bincount(item, minlength=len(items)).astype(np.int64)
        item_users = (np.array([given_item_users.get(i, 0) for i in range(len(items))],
                               dtype=np.int64) if given_item_users else counted)
        floats = {k: np.array(cols[k], dtype=np.float64)
                  for k in ("views", "carts", "purchases", "rating")}
        return cls(list(users), list(items),
                   np.array([personal[u] for u in range(len(users))], dtype=bool), item_users,
                   user, item, floats["views"], floats["carts"], floats["purchases"],
                   floats["rating"], at, has_at)


def _nanos(at: Any) -> int:
    """A datetime (or a driver DateTime) as nanoseconds since the epoch, exactly."""
    if hasattr(at, "to_native"):
        native = at.to_native()
        return int(math.floor(native.timestamp()) * 1_000_000_000 + int(at.nanosecond))
    ts: datetime = at
    return math.floor(ts.timestamp()) * 1_000_000_000 + ts.microsecond * 1000


def read_interactions(graph: Graph, page_users: int = PAGE_USERS) -> Interactions:
    """Every ``INTERACTED`` in the graph, a page of users at a time (keyset on the user id, one
    read transaction per page: no result holds a million users' interactions at once)."""
    user_ids: list[str] = []
    personal: list[bool] = []
    item_of: dict[str, int] = {}
    user: list[int] = []
    item: list[int] = []
    views: list[Any] = []
    carts: list[Any] = []
    purchases: list[Any] = []
    rating: list[Any] = []
    at: list[int] = []
    after = ""
    while True:
        page = graph.read(partial(_page, after=after, limit=page_users),
                          query=q.RUN_INTERACTIONS_PAGE)
        if not page:
            break
        for uid, consent, seen in page:
            u = len(user_ids)
            user_ids.append(uid)
            personal.append(bool(consent))
            if not seen:
                continue
            its, vs, cs, ps, rs, ats = zip(*seen, strict=True)
            user.extend([u] * len(its))
            item.extend([item_of.setdefault(i, len(item_of)) for i in its])
            views.extend(vs)
            carts.extend(cs)
            purchases.extend(ps)
            rating.extend(rs)
            at.extend(ats)
        after = page[-1][0]
    items = np.array(item, dtype=np.int64)
    at_ = np.array(at, dtype=np.int64)
    return Interactions(
        user_ids, list(item_of), np.array(personal, dtype=bool),
        np.bincount(items, minlength=len(item_of)).astype(np.int64),
        np.array(user, dtype=np.int64), items,
        np.array(views, dtype=np.float64), np.array(carts, dtype=np.float64),
        np.array(purchases, dtype=np.float64), np.array(rating, dtype=np.float64),
        at_, at_ != MISSING_AT)


def _page(tx: ManagedTransaction, after: str, limit: int) -> list[list[Any]]:
    return tx.run(q.RUN_INTERACTIONS_PAGE, after=after, limit=limit, missing=MISSING_AT).values()


def newest_first(ix: Interactions, rows: Ints, missing_first: bool) -> tuple[Ints, Ints]:
    """``rows`` (indices) ordered by user, then newest first (a row without a time first when
    ``missing_first``, else last), ties by item id; and each one's place within its user's."""
    if not len(rows):
        return rows, rows
    users = ix.user[rows]
    has = ix.has_at[rows]
    at = np.where(has, ix.at[rows], 0)
    order = np.lexsort((ix.item_rank[ix.item[rows]], -at, has if missing_first else ~has, users))
    ordered = users[order]
    starts = np.r_[0, np.flatnonzero(np.diff(ordered)) + 1]
    sizes = np.diff(np.r_[starts, len(ordered)])
    place = np.arange(len(ordered)) - np.repeat(starts, sizes)
    return rows[order], place.astype(np.int64)
