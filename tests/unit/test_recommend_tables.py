"""The recommender's run-time tables from one columnar read equal what the row-by-row code computed.

The reference below is that code as it was (dicts per row, Python loops), kept here only as the
oracle: a random small shop (ties in time, missing times, dislikes, super-nodes, users without
personalization consent) goes through both, and the tables must agree.
"""
# ruff: noqa: E501

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
from scipy import sparse

from graph.errors import InvalidInput
from graph.recommend import blend
from graph.recommend.baselines import EASE
from graph.recommend.blend import (
    GRID,
    MIN_VALIDATION_USERS,
    SCORE_BUDGET,
    SEED,
    TARGETS,
    VALIDATION_USERS,
    Blend,
    K,
    best_of_grid,
    tune_blend,
)
from graph.recommend.engine import WEIGHTS
from graph.recommend.interactions import INTERACTION_WEIGHTS, LOW_RATING, Interactions
from graph.recommend.items import EASE_L2, _best, _cosine_neighbours, item_neighbours_of
from graph.recommend.limits import (
    ITEM_NEIGHBOURS,
    MAX_ITEM_USERS,
    MODEL_ITEMS,
    PEER_ITEMS,
    PEERS,
    RECENT_ITEMS,
    SEED_ITEMS,
    USER_ITEMS,
)
from graph.recommend.neighbours import BLOCK, OVERLAP_BUDGET, blocks, similar_users_of

# --- the reference: the row-by-row code as it was -------------------------------------------

def _newest_first(seen: list[tuple[Any, str, int]]) -> None:
    seen.sort(key=lambda t: t[1])
    seen.sort(key=lambda t: (t[0] is None, t[0] if t[0] is not None else 0), reverse=True)


def old_similar_users(rows: Iterable[dict[str, Any]], recent: int = RECENT_ITEMS, peers: int = PEERS,
                  max_item_users: int = MAX_ITEM_USERS) -> Iterator[dict[str, Any]]:
    """``rows``: a user's carted, bought or liked items, ``{user_id, item_id, last_at,
    bought}`` (``bought``: bought or liked, which makes the user a peer of those who had it
    recently) and optionally ``personal`` and ``item_users`` (``last_at`` comparable: a
    datetime or a number). Yields ``{user_id, peers: [{user_id, overlap}]}``, best first, for
    every user with at least one similar user, except those whose ``personal`` is false (no
    personalization consent): they are left out, though their purchases still make others
    similar, as at request time. Items whose ``item_users`` exceed ``max_item_users`` are
    skipped before the user's ``recent`` newest are taken, as the request-time traversal does.

    Memory stays bounded whatever the data: a block of users holds at most ``BLOCK`` users and,
    unless one user alone exceeds it, ``OVERLAP_BUDGET`` overlaps (each user's at most
    ``recent`` x ``max_item_users``).
    """
    users: dict[str, int] = {}
    items: dict[str, int] = {}
    touched: dict[int, list[tuple[Any, str, int]]] = defaultdict(list)
    impersonal: set[int] = set()
    bought_rows, bought_cols = [], []
    for r in rows:
        u = users.setdefault(r["user_id"], len(users))
        if not r.get("personal", True):
            impersonal.add(u)
        if r.get("item_users", 0) > max_item_users:
            continue
        i = items.setdefault(r["item_id"], len(items))
        touched[u].append((r["last_at"], r["item_id"], i))
        if r["bought"]:
            bought_rows.append(u)
            bought_cols.append(i)
    if not bought_rows:
        return
    shape = (len(users), len(items))
    recent_rows, recent_cols = [], []
    for u, seen in touched.items():
        if u in impersonal:
            continue
        _newest_first(seen)
        for _, _, i in seen[:recent]:
            recent_rows.append(u)
            recent_cols.append(i)
    R = sparse.csr_matrix((np.ones(len(recent_rows)), (recent_rows, recent_cols)), shape=shape)
    B = sparse.csr_matrix((np.ones(len(bought_rows)), (bought_rows, bought_cols)), shape=shape)
    ids = list(users)
    rank = np.argsort(np.argsort(np.array(ids)))  # each user's place in id order
    BT = B.T.tocsc()
    # An upper bound of each user's overlaps: the buyers of each of the user's recent items.
    cost = np.asarray(R @ np.asarray(B.sum(axis=0)).ravel()).ravel()
    for start, stop in blocks(cost, BLOCK, OVERLAP_BUDGET):
        overlap = (R[start:stop] @ BT).tocsr()
        for row in range(overlap.shape[0]):
            u = start + row
            lo, hi = overlap.indptr[row], overlap.indptr[row + 1]
            others, counts = overlap.indices[lo:hi], overlap.data[lo:hi]
            keep = others != u
            others, counts = others[keep], counts[keep]
            if not len(others):
                continue
            best = np.lexsort((rank[others], -counts))[:peers]
            yield {"user_id": ids[u], "peers": [{"user_id": ids[others[j]],
                                                 "overlap": int(counts[j])} for j in best]}




def old_interaction_weight(row: dict[str, Any]) -> float:
    """What one ``INTERACTED`` (``views``, ``carts``, ``purchases``, ``rating``, any missing)
    says about the user's taste, 0 for nothing."""
    rating = row.get("rating")
    if rating is not None and rating <= LOW_RATING:
        return 0.0
    w = INTERACTION_WEIGHTS
    signals = [w["purchase"] if (row.get("purchases") or 0) > 0 else 0.0,
               w["cart"] if (row.get("carts") or 0) > 0 else 0.0,
               w["view"] if (row.get("views") or 0) > 0 else 0.0]
    if rating is not None:
        signals.append(w["liked"] if rating >= 4 else w["rated"])
    return max(signals)


def _recent_per_user(rows: Iterable[dict[str, Any]], most: int,
                     ) -> Iterator[tuple[str, str, float]]:
    """``(user, item, weight)`` of each user's ``most`` newest weighing interactions (ties by
    item id; a missing time counts as oldest)."""
    by_user: dict[str, list[tuple[Any, str, float]]] = {}
    for r in rows:
        weight = old_interaction_weight(r)
        if weight > 0:
            by_user.setdefault(r["user_id"], []).append((r.get("last_at"), r["item_id"], weight))
    for user, seen in by_user.items():
        if len(seen) > most:
            seen.sort(key=lambda t: t[1])
            seen.sort(key=lambda t: (t[0] is not None, t[0] if t[0] is not None else 0),
                      reverse=True)
            seen = seen[:most]
        for _, item, weight in seen:
            yield user, item, weight


def old_item_neighbours(rows: Iterable[dict[str, Any]], top: int = ITEM_NEIGHBOURS,
                    max_user_items: int = USER_ITEMS, model_items: int = MODEL_ITEMS,
                    l2: float = EASE_L2) -> list[dict[str, Any]]:
    """``rows``: ``{user_id, item_id, views, carts, purchases, rating, last_at}`` (counts and
    rating may be missing). Returns ``{item_id, neighbours: [{item_id, score}]}`` for every
    item with at least one neighbour: its ``top`` items of the largest positive weight, best
    first, ties by item id. The weights are EASE's (``l2``) for up to ``model_items`` items,
    cosine similarities in (0, 1] beyond."""
    if top < 1:
        raise InvalidInput(f"top must be at least 1, got {top}")
    users: dict[str, int] = {}
    items: dict[str, int] = {}
    r_, c_, v_ = [], [], []
    for user, item, weight in _recent_per_user(rows, max_user_items):
        r_.append(users.setdefault(user, len(users)))
        c_.append(items.setdefault(item, len(items)))
        v_.append(weight)
    if not items:
        return []
    X = sparse.csr_matrix((np.array(v_), (r_, c_)), shape=(len(users), len(items)))
    X.sum_duplicates()
    ids = list(items)
    rank = np.argsort(np.argsort(np.array(ids)))
    if len(ids) <= model_items:
        weights = EASE(l2, max_items=model_items).fit(X).weights_
        return [row for i in range(len(ids))
                if (row := _best(ids, rank, i, np.arange(len(ids)), weights[i], top))]
    return list(_cosine_neighbours(X, ids, rank, top))





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


def old_tune_blend(interactions: Sequence[dict[str, Any]], carted: Sequence[dict[str, Any]],
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
    found = old_item_neighbours(inter, top=ITEM_NEIGHBOURS)
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
    peers = {p["user_id"]: p["peers"] for p in old_similar_users(cart)}
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
    # Scored as the run scores (the preparation above is what this compares).
    return best_of_grid(S, N, W, P, E, target, popularity, id_rank, weights["popularity"],
                        default_item, default_similar)


def dense_best_of_grid(S: sparse.csr_matrix, N: sparse.csr_matrix, W: sparse.csr_matrix,
                       P: sparse.csr_matrix, E: sparse.csr_matrix, target: np.ndarray,
                       popularity: np.ndarray, id_rank: np.ndarray, popularity_weight: float,
                       default_item: float, default_similar: float) -> tuple[Any, ...]:
    """``best_of_grid`` as it was: every pair scored over a dense users x items block."""
    n_items = N.shape[0]
    n_targets = int((target >= 0).sum())
    hits = np.zeros(len(GRID))
    gains = np.zeros(len(GRID))
    block = max(1, blend.SCORE_BUDGET // max(n_items, 1))
    for lo in range(0, S.shape[0], block):
        hi = min(lo + block, S.shape[0])
        item_term = np.asarray((S[lo:hi] @ N).todense())
        top = item_term.max(axis=1, keepdims=True)
        item_term = item_term / np.where(top > 0, top, 1.0)
        sim_term = np.asarray((W[lo:hi] @ P).todense())
        candidate = (item_term > 0) | (sim_term > 0)
        candidate &= ~np.asarray(E[lo:hi].todense(), dtype=bool)
        rows = np.arange(hi - lo)
        for g, (wi, ws) in enumerate(GRID):
            score = wi * item_term + ws * sim_term + popularity_weight * popularity
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
    return (GRID[best][0], GRID[best][1], S.shape[0], float(hits[best] / n_targets),
            float(gains[best] / n_targets))


# --- the shop and the comparison ------------------------------------------------------------

def shop(seed: int, users: int = 160, items: int = 70) -> list[dict[str, Any]]:
    """``ITEM_INTERACTIONS`` rows (with ``personal``): a few popular items, times with ties and
    gaps, ratings, dislikes, users without consent."""
    rng = random.Random(seed)
    rows = []
    for u in range(users):
        personal = rng.random() > 0.1
        for i in rng.sample(range(items), rng.randint(1, 14)):
            item = i if rng.random() > 0.3 else i % 5  # a few popular items
            if any(r["user_id"] == f"u{u:03d}" and r["item_id"] == f"i{item:02d}" for r in rows[-20:]):
                continue
            rating = rng.choice([None, None, None, 1, 2, 3, 4, 5])
            rows.append({"user_id": f"u{u:03d}", "item_id": f"i{item:02d}",
                         "views": rng.choice([None, 0, 1, 3]), "carts": rng.choice([None, 0, 1]),
                         "purchases": rng.choice([None, 0, 0, 1, 2]), "rating": rating,
                         "last_at": None if rng.random() < 0.03 else float(rng.randint(0, 40)),
                         "personal": personal})
    return rows


def carted_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """What ``CARTED_OR_BOUGHT`` returns for ``rows``."""
    item_users: dict[str, int] = defaultdict(int)
    for r in rows:
        item_users[r["item_id"]] += 1
    out = []
    for r in rows:
        rating = r["rating"]
        if not (((r["carts"] or 0) + (r["purchases"] or 0) > 0 or (rating is not None and rating >= 4))
                and (3 if rating is None else rating) > 2):
            continue
        out.append({"user_id": r["user_id"], "item_id": r["item_id"], "last_at": r["last_at"],
                    "bought": (r["purchases"] or 0) > 0 or (rating or 0) >= 4,
                    "personal": r["personal"], "item_users": item_users[r["item_id"]]})
    return out


def same_neighbours(old: list[dict[str, Any]], new: list[dict[str, Any]]) -> None:
    got = {r["item_id"]: r["neighbours"] for r in new}
    want = {r["item_id"]: r["neighbours"] for r in old}
    assert got.keys() == want.keys()
    for item, ns in want.items():
        assert [n["item_id"] for n in got[item]] == [n["item_id"] for n in ns], item
        assert [n["score"] for n in got[item]] == pytest.approx([n["score"] for n in ns], rel=1e-9, abs=1e-12)


@pytest.mark.parametrize("seed", [1, 2, 3, 4])
def test_similar_users_from_the_columns_equal_the_row_by_row_ones(seed: int) -> None:
    rows = shop(seed)
    ix = Interactions.from_rows(rows)
    for recent, peers, most in [(RECENT_ITEMS, PEERS, MAX_ITEM_USERS), (3, 4, 40)]:
        old = {r["user_id"]: r["peers"] for r in old_similar_users(carted_rows(rows), recent, peers, most)}
        new = {r["user_id"]: r["peers"] for r in similar_users_of(ix, recent, peers, most)}
        assert new == old and old


@pytest.mark.parametrize("seed", [1, 2, 3, 4])
def test_item_neighbours_from_the_columns_equal_the_row_by_row_ones(seed: int) -> None:
    rows = shop(seed)
    ix = Interactions.from_rows(rows)
    # Every positive weight (no cut at the boundary of a near tie), then the run's bounds.
    same_neighbours(old_item_neighbours(rows, top=100), item_neighbours_of(ix, top=100))
    same_neighbours(old_item_neighbours(rows, top=100, max_user_items=4),
                    item_neighbours_of(ix, top=100, max_user_items=4))
    same_neighbours(old_item_neighbours(rows, top=100, model_items=10),
                    item_neighbours_of(ix, top=100, model_items=10))


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_the_learned_blend_from_the_columns_equals_the_row_by_row_one(seed: int) -> None:
    rows = shop(seed, users=300)
    old = old_tune_blend(rows, carted_rows(rows), most_users=120)
    new = tune_blend(Interactions.from_rows(rows), most_users=120)
    assert old.validation_users >= MIN_VALIDATION_USERS
    assert (new.item, new.similar, new.validation_users) == (old.item, old.similar, old.validation_users)
    assert new.validation_hit == pytest.approx(old.validation_hit)
    assert new.validation_ndcg == pytest.approx(old.validation_ndcg)


@pytest.mark.parametrize("seed", [5, 6])
def test_vectorised_top_k_keeps_the_per_row_order_at_the_cut(seed: int) -> None:
    """A larger shop at the run's own bounds (20 neighbours, 50 peers): many rows longer than
    the cut, with equal scores straddling it (integer weights and overlaps), so the order of
    ties at the cut is what decides which neighbours are kept. Both item paths (EASE below
    the model's items, cosine above) and the similar users equal the per-row code."""
    rows = shop(seed, users=1500, items=300)
    ix = Interactions.from_rows(rows)
    ease_new = item_neighbours_of(ix)
    same_neighbours(old_item_neighbours(rows), ease_new)
    assert sum(len(r["neighbours"]) == ITEM_NEIGHBOURS for r in ease_new) > 100
    cosine_new = item_neighbours_of(ix, model_items=50)
    same_neighbours(old_item_neighbours(rows, model_items=50), cosine_new)
    assert sum(len(r["neighbours"]) == ITEM_NEIGHBOURS for r in cosine_new) > 100
    old = {r["user_id"]: r["peers"] for r in old_similar_users(carted_rows(rows))}
    new = {r["user_id"]: r["peers"] for r in similar_users_of(ix)}
    assert new == old
    assert sum(len(p) == PEERS for p in new.values()) > 100


@pytest.mark.parametrize(("seed", "items", "budget"), [(0, 7, SCORE_BUDGET), (1, 300, SCORE_BUDGET), (2, 2_000, SCORE_BUDGET), (3, 2_000, 20_000), (4, 300, 3_000), (5, 7, 20)])
def test_grid_scored_over_the_candidates_equals_the_dense_scores(
        seed: int, items: int, budget: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """The grid is scored over each user's candidates only; the figures are the dense ones,
    bit for bit: ties in score (integer weights, equal popularity), held-out items that are
    no candidate, that the user had, or missing (-1), users without a candidate, and blocks
    of users (a small budget for several)."""
    monkeypatch.setattr(blend, "SCORE_BUDGET", budget)  # a small budget: blocks of users
    rng = np.random.default_rng(seed)
    users, peers = int(rng.integers(20, 300)), int(rng.integers(5, 200))

    def integers(rows: int, cols: int, density: float) -> sparse.csr_matrix:
        m = sparse.random(rows, cols, density=density, format="csr", random_state=int(rng.integers(2**31)))
        m.data = np.ceil(m.data * 3)
        return m

    density = min(0.05, 200 / items)
    S, N = integers(users, items, density), integers(items, items, density)
    W, P = integers(users, peers, 0.05), integers(peers, items, density)
    E = integers(users, items, density / 2)
    E.data[:] = 1.0
    target = rng.integers(-1, items, size=(users, TARGETS))
    # Most users' first held-out item is one of their candidates, so that ranks are compared.
    C = (S @ N).tocsr()
    for u in range(users):
        lo, hi = C.indptr[u], C.indptr[u + 1]
        if hi > lo and u % 5:
            target[u, 0] = C.indices[lo + int(rng.integers(hi - lo))]
    popularity = rng.integers(0, 4, items) / 4
    id_rank = rng.permutation(items)
    got = best_of_grid(S, N, W, P, E, target, popularity, id_rank, 0.3, 1.0, 1.0)
    want = dense_best_of_grid(S, N, W, P, E, target, popularity, id_rank, 0.3, 1.0, 1.0)
    assert (got.item, got.similar, got.validation_users, got.validation_hit,
            got.validation_ndcg) == want
    assert want[3] > 0  # some held-out items ranked in the top K
