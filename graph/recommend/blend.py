"""How much the item neighbours and the similar users weigh in a recommendation, learned with
each segmentation run on a validation split of the run's own data.

No fixed pair of weights suits every kind of data. Where purchases follow groups of like-minded
shoppers (the demo), what similar users bought predicts the next purchase and the item
neighbours add noise; where each user has a long, personal history (MovieLens: a hundred films
each), the EASE item neighbours of the user's newest items predict it and similar users drag the
ranking towards the popular (docs/performance.md, 2026-12-07). So the run chooses: each
validation user's newest bought or liked item is held out, item neighbours and similar users are
computed again without those, every pair of ``GRID`` is scored by NDCG@10 (then hit rate) on
predicting the held-out items, and the best pair is stored on the run (``rec_item_weight``,
``rec_similar_weight``, with the validation figures); the request reads them instead of
``engine.WEIGHTS``' ``item`` and ``similar`` (``queries.RECOMMEND_FOR_USER``). The segment,
preference, popularity and context terms keep their fixed weights.

The held-out items come from the graph as it is at the run; whatever a benchmark holds out for
its test was never loaded, so the test hold-out never tunes the weights. Bounded like the run's
own neighbours (``limits``): at most ``VALIDATION_USERS`` users (a fixed-seed sample) are
scored, a block of users at a time within ``SCORE_BUDGET`` dense scores, and no request does
any of this work. Too few validation users (under ``MIN_VALIDATION_USERS``) keeps the defaults.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import sparse

from graph.recommend.engine import WEIGHTS
from graph.recommend.items import item_neighbours
from graph.recommend.limits import ITEM_NEIGHBOURS, PEER_ITEMS, SEED_ITEMS
from graph.recommend.neighbours import _newest_first, similar_users

# (item, similar) pairs tried; (0, 0) would rank by popularity alone.
GRID: tuple[tuple[float, float], ...] = tuple(
    (item, similar) for item in (0.25, 0.5, 1.0, 2.0, 4.0, 8.0)
    for similar in (0.0, 0.5, 1.0, 2.0))
VALIDATION_USERS = 2000
MIN_VALIDATION_USERS = 50
SCORE_BUDGET = 4_000_000  # dense (user, item) scores held at once
SEED = 7
K = 10
TARGETS = 3  # held-out items per validation user: three times the evidence


@dataclass(frozen=True)
class Blend:
    """The weights chosen, and how they did on the validation split (None: not tuned)."""

    item: float
    similar: float
    validation_users: int = 0
    validation_hit: float | None = None
    validation_ndcg: float | None = None

    def run_props(self) -> dict[str, Any]:
        """What the run stores (read by ``queries.RECOMMEND_FOR_USER``)."""
        return {"rec_item_weight": self.item, "rec_similar_weight": self.similar,
                "rec_validation_users": self.validation_users,
                "rec_validation_hit": self.validation_hit,
                "rec_validation_ndcg": self.validation_ndcg}


@dataclass(frozen=True)
class _Held:
    items: tuple[str, ...]
    """The user's newest bought or liked items, to predict."""
    cut: Any
    """The time of the oldest of them: what the user did from then on is unknown."""
    carted: frozenset[str]
    """Those of them the user had carted (known before the purchase)."""


def _held_out(carted: Sequence[dict[str, Any]], carts: set[tuple[str, str]], most: int,
              seed: int) -> dict[str, _Held]:
    """For at most ``most`` users (fixed-seed sample) who carted, bought or liked something
    before: their ``TARGETS`` newest bought or liked items."""
    by_user: dict[str, list[tuple[Any, str, int]]] = {}
    for r in carted:
        if r.get("personal", True):
            by_user.setdefault(r["user_id"], []).append(
                (r["last_at"], r["item_id"], int(bool(r["bought"]))))
    held: dict[str, _Held] = {}
    for user, seen in by_user.items():
        if len(seen) < 2 or any(at is None for at, _, _ in seen):
            continue
        _newest_first(seen)
        bought = [(item, at) for at, item, b in seen if b][:TARGETS]
        if not bought:
            continue
        cut = bought[-1][1]
        if any(at < cut for at, _, _ in seen):
            items = tuple(item for item, _ in bought)
            held[user] = _Held(items, cut, frozenset(i for i in items if (user, i) in carts))
    users = sorted(held)
    if len(users) > most:
        users = sorted(random.Random(seed).sample(users, most))
    return {u: held[u] for u in users}


def tune_blend(interactions: Sequence[dict[str, Any]], carted: Sequence[dict[str, Any]],
               weights: dict[str, float] | None = None, most_users: int = VALIDATION_USERS,
               seed: int = SEED) -> Blend:
    """The best ``GRID`` pair on a validation split of ``interactions`` (``ITEM_INTERACTIONS``
    rows) and ``carted`` (``CARTED_OR_BOUGHT`` rows), with the popularity weight of ``weights``
    (default ``engine.WEIGHTS``); its ``item`` and ``similar`` when there are fewer than
    ``MIN_VALIDATION_USERS`` users to validate on. Ties go to the pair nearer those."""
    weights = weights or WEIGHTS
    default_item, default_similar = weights["item"], weights["similar"]
    carts = {(r["user_id"], r["item_id"]) for r in interactions if r.get("carts")}
    held = _held_out(carted, carts, most_users, seed)
    if len(held) < MIN_VALIDATION_USERS:
        return Blend(default_item, default_similar, len(held))

    # As a benchmark's hold-out: the user's purchases or ratings of the held-out items and
    # everything the user did from the oldest of them on are unknown; having carted one
    # stays known (it came before the purchase: on a shop, predicting the next purchase is
    # often recognising what is in the cart).
    def before(r: dict[str, Any], counts: bool) -> dict[str, Any] | None:
        h = held.get(r["user_id"])
        if h is None:
            return r
        if r["item_id"] not in h.items:
            return r if r["last_at"] is not None and r["last_at"] < h.cut else None
        if r["item_id"] not in h.carted:
            return None
        at = {"last_at": h.cut}  # the cart is older than anything the user did after it
        return ({**r, **at, "purchases": 0, "rating": None, "views": 0} if counts
                else {**r, **at, "bought": False})

    inter = [k for r in interactions if (k := before(r, True)) is not None]
    cart = [k for r in carted if (k := before(r, False)) is not None]
    items: dict[str, int] = {}
    for r in [*interactions, *carted]:
        items.setdefault(r["item_id"], len(items))
    n_items = len(items)
    ids = np.array(list(items))
    id_rank = np.argsort(np.argsort(ids))
    users = list(held)
    row_of = {u: n for n, u in enumerate(users)}

    # Item term: the item neighbours (as the run computes them) of each user's SEED_ITEMS
    # newest carted, bought or liked items, summed, over the user's largest such sum.
    found = item_neighbours(inter, top=ITEM_NEIGHBOURS)
    nr, nc, nv = [], [], []
    for row in found:
        for n in row["neighbours"]:
            nr.append(items[row["item_id"]])
            nc.append(items[n["item_id"]])
            nv.append(n["score"])
    N = sparse.csr_matrix((nv, (nr, nc)), shape=(n_items, n_items))
    newest: dict[str, list[tuple[Any, str, int]]] = {}
    for r in cart:
        newest.setdefault(r["user_id"], []).append((r["last_at"], r["item_id"], int(r["bought"])))
    for seen in newest.values():
        _newest_first(seen)
    sr, sc = [], []
    for u in users:
        for _, item, _ in newest.get(u, [])[:SEED_ITEMS]:
            sr.append(row_of[u])
            sc.append(items[item])
    S = sparse.csr_matrix((np.ones(len(sr)), (sr, sc)), shape=(len(users), n_items))

    # Similar-user term: each peer's PEER_ITEMS newest bought or liked items, weighted by the
    # peer's share of the user's overlaps.
    peers = {p["user_id"]: p["peers"] for p in similar_users(cart)}
    peer_ids: dict[str, int] = {}
    wr, wc, wv = [], [], []
    for u in users:
        mine = peers.get(u, [])
        total = float(sum(p["overlap"] for p in mine))
        for p in mine:
            wr.append(row_of[u])
            wc.append(peer_ids.setdefault(p["user_id"], len(peer_ids)))
            wv.append(p["overlap"] / total)
    pr, pc = [], []
    for peer, n in peer_ids.items():
        for item in [i for _, i, b in newest.get(peer, []) if b][:PEER_ITEMS]:
            pr.append(n)
            pc.append(items[item])
    W = sparse.csr_matrix((wv, (wr, wc)), shape=(len(users), len(peer_ids)))
    P = sparse.csr_matrix((np.ones(len(pr)), (pr, pc)), shape=(len(peer_ids), n_items))

    # Popularity: the share of users who interacted with the item; what the user bought or
    # rated is never offered.
    counts = np.zeros(n_items)
    all_users: set[str] = set()
    er, ec = [], []
    for r in inter:
        counts[items[r["item_id"]]] += 1
        all_users.add(r["user_id"])
        if r["user_id"] in row_of and ((r.get("purchases") or 0) > 0
                                       or r.get("rating") is not None):
            er.append(row_of[r["user_id"]])
            ec.append(items[r["item_id"]])
    popularity = counts / max(len(all_users), 1)
    E = sparse.csr_matrix((np.ones(len(er)), (er, ec)), shape=(len(users), n_items))
    # Each user's targets, -1 where the user has fewer than TARGETS.
    target = np.full((len(users), TARGETS), -1)
    for n, u in enumerate(users):
        target[n, :len(held[u].items)] = [items[i] for i in held[u].items]
    n_targets = int((target >= 0).sum())

    hits = np.zeros(len(GRID))
    gains = np.zeros(len(GRID))
    block = max(1, SCORE_BUDGET // max(n_items, 1))
    for lo in range(0, len(users), block):
        hi = min(lo + block, len(users))
        item_term = np.asarray((S[lo:hi] @ N).todense())
        top = item_term.max(axis=1, keepdims=True)
        item_term = item_term / np.where(top > 0, top, 1.0)
        sim_term = np.asarray((W[lo:hi] @ P).todense())
        candidate = (item_term > 0) | (sim_term > 0)
        candidate &= ~np.asarray(E[lo:hi].todense(), dtype=bool)
        rows = np.arange(hi - lo)
        for g, (wi, ws) in enumerate(GRID):
            score = wi * item_term + ws * sim_term + weights["popularity"] * popularity
            score = np.where(candidate, score, -np.inf)
            for j in range(TARGETS):
                t = target[lo:hi, j]
                known = t >= 0
                t = np.where(known, t, 0)
                mine = score[rows, t][:, None]
                ahead = (score > mine) | ((score == mine)
                                          & (id_rank[None, :] < id_rank[t][:, None]))
                rank = ahead.sum(axis=1)
                ok = known & np.isfinite(mine[:, 0]) & (rank < K)
                hits[g] += ok.sum()
                gains[g] += (ok / np.log2(rank + 2)).sum()
    best = max(range(len(GRID)), key=lambda g: (
        round(float(gains[g]), 9), hits[g],
        -abs(np.log2((GRID[g][0] + 0.125) / (default_item + 0.125)))
        - abs(np.log2((GRID[g][1] + 0.125) / (default_similar + 0.125)))))
    return Blend(GRID[best][0], GRID[best][1], len(users), float(hits[best] / n_targets),
                 float(gains[best] / n_targets))
