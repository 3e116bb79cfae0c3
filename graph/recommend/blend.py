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
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from scipy import sparse

from graph.recommend.engine import WEIGHTS
from graph.recommend.interactions import Interactions, newest_first
from graph.recommend.items import item_neighbours_of
from graph.recommend.limits import ITEM_NEIGHBOURS, PEER_ITEMS, SEED_ITEMS
from graph.recommend.neighbours import similar_users_of

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
    users: np.ndarray[Any, Any]
    """The validation users (indices, in id order)."""
    targets: np.ndarray[Any, Any]
    """Per validation user: its newest bought or liked items (indices, newest first), -1
    where it has fewer than ``TARGETS``."""


def _held_out(ix: Interactions, most: int, seed: int) -> tuple[_Held, Interactions]:
    """For at most ``most`` users (fixed-seed sample) who carted, bought or liked something
    before: their ``TARGETS`` newest bought or liked items; and ``ix`` as it was before them.

    As a benchmark's hold-out: the user's purchases or ratings of the held-out items and
    everything the user did from the oldest of them on are unknown; having carted one stays
    known (it came before the purchase: on a shop, predicting the next purchase is often
    recognising what is in the cart), as of that oldest one's time."""
    carted = np.flatnonzero(ix.carted() & ix.personal[ix.user])
    bought = carted[ix.bought()[carted]]
    ordered, place = newest_first(ix, bought, missing_first=True)
    targets = ordered[place < TARGETS]
    n = ix.n_users
    seen = np.bincount(ix.user[carted], minlength=n)
    timeless = np.bincount(ix.user[carted], weights=(~ix.has_at[carted]).astype(np.float64),
                           minlength=n) > 0
    big = np.iinfo(np.int64).max if ix.at.dtype.kind == "i" else np.inf
    cut = np.full(n, big, dtype=ix.at.dtype)
    np.minimum.at(cut, ix.user[targets], ix.at[targets])
    oldest = np.full(n, big, dtype=ix.at.dtype)
    np.minimum.at(oldest, ix.user[carted], ix.at[carted])
    has_target = np.bincount(ix.user[targets], minlength=n) > 0
    eligible = (seen >= 2) & ~timeless & has_target & (oldest < cut)
    users = sorted(ix.user_ids[u] for u in np.flatnonzero(eligible))
    if len(users) > most:
        users = sorted(random.Random(seed).sample(users, most))
    index_of = {uid: u for u, uid in enumerate(ix.user_ids)}
    chosen = np.array([index_of[uid] for uid in users], dtype=np.int64)
    held = np.zeros(n, dtype=bool)
    held[chosen] = True
    row_of = np.full(n, -1, dtype=np.int64)
    row_of[chosen] = np.arange(len(chosen))
    mine = targets[held[ix.user[targets]]]
    target = np.full((len(chosen), TARGETS), -1, dtype=np.int64)
    target[row_of[ix.user[mine]], place[place < TARGETS][held[ix.user[targets]]]] = ix.item[mine]

    key = ix.user * ix.n_items + ix.item
    is_target = np.isin(key, key[mine])
    of_held = held[ix.user]
    in_cart = of_held & is_target & (ix.carts > 0)
    earlier = ix.has_at & (ix.at < cut[ix.user])
    keep = ~of_held | in_cart | (~is_target & earlier)
    at = ix.at.copy()
    at[in_cart] = cut[ix.user[in_cart]]  # the cart is older than anything the user did after it
    has_at = ix.has_at | in_cart
    before = replace(ix, at=at, has_at=has_at,
                     purchases=np.where(in_cart, 0.0, ix.purchases),
                     views=np.where(in_cart, 0.0, ix.views),
                     rating=np.where(in_cart, np.nan, ix.rating)).take(keep)
    return _Held(chosen, target), before


def tune_blend(ix: Interactions, weights: dict[str, float] | None = None,
               most_users: int = VALIDATION_USERS, seed: int = SEED) -> Blend:
    """The best ``GRID`` pair on a validation split of ``ix`` (the run's ``Interactions``),
    with the popularity weight of ``weights`` (default ``engine.WEIGHTS``); its ``item`` and
    ``similar`` when there are fewer than ``MIN_VALIDATION_USERS`` users to validate on. Ties
    go to the pair nearer those."""
    weights = weights or WEIGHTS
    default_item, default_similar = weights["item"], weights["similar"]
    held, inter = _held_out(ix, most_users, seed)
    if len(held.users) < MIN_VALIDATION_USERS:
        return Blend(default_item, default_similar, len(held.users))
    n_items = ix.n_items
    id_rank = ix.item_rank
    users = held.users
    row_of = np.full(ix.n_users, -1, dtype=np.int64)
    row_of[users] = np.arange(len(users))
    item_of = {item: n for n, item in enumerate(ix.item_ids)}

    # Item term: the item neighbours (as the run computes them) of each user's SEED_ITEMS
    # newest carted, bought or liked items, summed, over the user's largest such sum.
    found = item_neighbours_of(inter, top=ITEM_NEIGHBOURS)
    nr, nc, nv = [], [], []
    for row in found:
        for nb in row["neighbours"]:
            nr.append(item_of[row["item_id"]])
            nc.append(item_of[nb["item_id"]])
            nv.append(nb["score"])
    N = sparse.csr_matrix((nv, (nr, nc)), shape=(n_items, n_items))
    carted = np.flatnonzero(inter.carted())
    ordered, place = newest_first(inter, carted, missing_first=True)
    seeds = ordered[(place < SEED_ITEMS) & (row_of[inter.user[ordered]] >= 0)]
    S = sparse.csr_matrix((np.ones(len(seeds)), (row_of[inter.user[seeds]], inter.item[seeds])),
                          shape=(len(users), n_items))

    # Similar-user term: each peer's PEER_ITEMS newest bought or liked items, weighted by the
    # peer's share of the user's overlaps.
    user_of = {uid: u for u, uid in enumerate(ix.user_ids)}
    wr, wc, wv = [], [], []
    for found_peers in similar_users_of(inter, only=users):
        mine = found_peers["peers"]
        total = float(sum(p["overlap"] for p in mine))
        for p in mine:
            wr.append(row_of[user_of[found_peers["user_id"]]])
            wc.append(user_of[p["user_id"]])
            wv.append(p["overlap"] / total)
    bought = carted[inter.bought()[carted]]
    ordered, place = newest_first(inter, bought, missing_first=True)
    latest = ordered[place < PEER_ITEMS]
    W = sparse.csr_matrix((wv, (wr, wc)), shape=(len(users), ix.n_users))
    P = sparse.csr_matrix((np.ones(len(latest)), (inter.user[latest], inter.item[latest])),
                          shape=(ix.n_users, n_items))

    # Popularity: the share of users who interacted with the item; what the user bought or
    # rated is never offered.
    counts = np.bincount(inter.item, minlength=n_items).astype(np.float64)
    popularity = counts / max(len(np.unique(inter.user)), 1)
    had = (row_of[inter.user] >= 0) & ((inter.purchases > 0) | inter.rated())
    E = sparse.csr_matrix((np.ones(int(had.sum())), (row_of[inter.user[had]], inter.item[had])),
                          shape=(len(users), n_items))
    return best_of_grid(S, N, W, P, E, held.targets, popularity, id_rank,
                        weights["popularity"], default_item, default_similar)


def best_of_grid(S: sparse.csr_matrix, N: sparse.csr_matrix, W: sparse.csr_matrix,
                 P: sparse.csr_matrix, E: sparse.csr_matrix, target: np.ndarray,
                 popularity: np.ndarray, id_rank: np.ndarray, popularity_weight: float,
                 default_item: float, default_similar: float) -> Blend:
    """Every ``GRID`` pair scored on the validation users (rows of ``S``, ``W`` and ``E``):
    ``S`` their seed items, ``N`` the item neighbours, ``W`` their peers' shares, ``P`` the
    peers' items, ``E`` what they bought or rated (never offered), ``target`` their held-out
    items (-1 for none). The best pair by NDCG@K, then hit rate, then nearness to the
    defaults.

    Only a user's candidates (an item term or a similar-user term above 0, not had) can rank
    ahead of a held-out item, and a held-out item that is not one never ranks: so each pair
    is scored over the candidates alone, a few hundred per user, not over every item (a dense
    users x items score per pair and held-out item was most of the blend's time)."""
    n_items = N.shape[0]
    n_targets = int((target >= 0).sum())

    hits = np.zeros(len(GRID))
    gains = np.zeros(len(GRID))
    block = max(1, SCORE_BUDGET // max(n_items, 1))
    for lo in range(0, S.shape[0], block):
        hi = min(lo + block, S.shape[0])
        row, col, item_term, sim_term = _candidates(S[lo:hi] @ N, W[lo:hi] @ P, E[lo:hi])
        if not len(row):
            continue  # no candidate: nothing ranks
        key = row * n_items + col  # sorted: by row, then item
        rows = np.arange(hi - lo)
        pop = popularity[col]
        for g, (wi, ws) in enumerate(GRID):
            score = wi * item_term + ws * sim_term + popularity_weight * pop
            for j in range(TARGETS):
                t = target[lo:hi, j]
                known = t >= 0
                t = np.where(known, t, 0)
                want = rows * n_items + t
                at = np.minimum(np.searchsorted(key, want), len(key) - 1)
                found = known & (key[at] == want)
                mine = np.where(found, score[at], -np.inf)
                theirs = mine[row]
                ahead = (score > theirs) | ((score == theirs) & (id_rank[col] < id_rank[t][row]))
                rank = np.bincount(row, weights=ahead, minlength=hi - lo).astype(np.int64)
                ok = found & (rank < K)
                hits[g] += ok.sum()
                gains[g] += (ok / np.log2(rank + 2)).sum()
    best = max(range(len(GRID)), key=lambda g: (
        round(float(gains[g]), 9), hits[g],
        -abs(np.log2((GRID[g][0] + 0.125) / (default_item + 0.125)))
        - abs(np.log2((GRID[g][1] + 0.125) / (default_similar + 0.125)))))
    return Blend(GRID[best][0], GRID[best][1], S.shape[0], float(hits[best] / n_targets),
                 float(gains[best] / n_targets))


def _candidates(item_scores: Any, similar_scores: Any, had_items: Any,
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The candidates of a block of users: (row, item) where the item term or the
    similar-user term is above 0 and the user has not had the item, ordered by row then item,
    with the item term (over the row's largest) and the similar-user term there."""
    n_items = item_scores.shape[1]
    items = sparse.coo_matrix(item_scores)
    similar = sparse.coo_matrix(similar_scores)
    had = sparse.coo_matrix(had_items)
    # The row's largest item term, implicit zeros included (the terms are never negative).
    top = np.zeros(items.shape[0])
    np.maximum.at(top, items.row, items.data)
    ikey = items.row.astype(np.int64) * n_items + items.col
    skey = similar.row.astype(np.int64) * n_items + similar.col
    keys = np.union1d(ikey[items.data > 0], skey[similar.data > 0])
    keys = keys[~np.isin(keys, had.row.astype(np.int64) * n_items + had.col)]
    item_term = np.zeros(len(keys))
    sim_term = np.zeros(len(keys))
    for values, key, out in ((items.data, ikey, item_term), (similar.data, skey, sim_term)):
        # A product's coordinates are unique; those among the candidates take their value.
        at = np.searchsorted(keys, key)
        hit = at < len(keys)
        hit[hit] = keys[at[hit]] == key[hit]
        out[at[hit]] = values[hit]
    row = keys // n_items
    item_term = item_term / np.where(top > 0, top, 1.0)[row]
    return row, keys % n_items, item_term, sim_term
