"""Item neighbours, computed with each segmentation run and read by the recommender.

Each item's ``top`` strongest item-to-item weights, written as
``(:Item)-[:SIMILAR_ITEM {score, run_id}]->(:Item)``. The weights are EASE's (Steck 2019, the
closed form of ``baselines.EASE`` over the users x items matrix of ``INTERACTED``): how much
having item i predicts item j once every other item the user has is accounted for, which
ranks better than plain co-occurrence (`make bench-recommend`, `make bench-quality`). Only
positive weights become edges. A catalogue beyond ``limits.MODEL_ITEMS`` (EASE inverts a dense
items x items matrix) gets item-kNN cosine instead, computed a block of items at a time.
At request time the recommender sums them from the user's most recently bought, carted or
liked items (EASE's score, restricted to the user's newest items, which on the benchmarks
predicts the next purchase better than all of them) and says which one a candidate owes the
most ("because you bought X"); how much that sum weighs against similar users is learned with
each run (``blend``).

A user's interaction with an item weighs what it says about taste
(``interactions.INTERACTION_WEIGHTS``): a purchase or a rating of 4-5 most, a cart less, a
view least; the strongest signal counts, not their sum, so that a shopper who viewed an item
twenty times is not made more alike than one who bought it. An item rated 2 or lower weighs
nothing: disliking both does not make two items alike for the shop's purposes.

Bounded whatever the data (see ``limits``): a user contributes their ``limits.USER_ITEMS`` most
recent interactions (the pairs one user adds grow with the square of their items), the
EASE runs only up to ``limits.MODEL_ITEMS`` items, cosine similarities are computed for a
block of items at a time within ``PAIR_BUDGET`` non-zeros, and each item keeps ``top``
neighbours (``limits.ITEM_NEIGHBOURS``). An item shared by every user costs one column, no
more.

The run calls ``find_item_neighbours`` (reads only), ``write_item_neighbours`` (its own bounded
transactions, while the run is unpublished) and, once published, ``drop_item_neighbours_except``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import numpy as np
from scipy import sparse

from graph.db import Graph
from graph.errors import InvalidInput
from graph.recommend import queries as q
from graph.recommend.baselines import EASE
from graph.recommend.interactions import (
    Interactions,
    newest_first,
    read_interactions,
)
from graph.recommend.limits import ITEM_NEIGHBOURS, MODEL_ITEMS, USER_ITEMS
from graph.recommend.neighbours import (
    Progress,
    RunEdges,
    blocks,
    deleted_in_batches,
    write_run_edges,
)

PAIR_BUDGET = 5_000_000
# EASE's L2 regularisation, chosen on the validation split (second-to-last purchase) of the demo
# bench and MovieLens; see docs/performance.md.
EASE_L2 = 1000.0


def interaction_weight(row: dict[str, Any]) -> float:
    """What one ``INTERACTED`` (``views``, ``carts``, ``purchases``, ``rating``, any missing)
    says about the user's taste, 0 for nothing (``Interactions.weights``)."""
    return float(Interactions.from_rows([{"user_id": "", "item_id": "", **row}]).weights()[0])


def item_neighbours(rows: Iterable[dict[str, Any]], top: int = ITEM_NEIGHBOURS,
                    max_user_items: int = USER_ITEMS, model_items: int = MODEL_ITEMS,
                    l2: float = EASE_L2) -> list[dict[str, Any]]:
    """``rows``: ``{user_id, item_id, views, carts, purchases, rating, last_at}`` (counts and
    rating may be missing). ``item_neighbours_of`` those rows."""
    return item_neighbours_of(Interactions.from_rows(rows), top=top,
                              max_user_items=max_user_items, model_items=model_items, l2=l2)


def item_neighbours_of(ix: Interactions, top: int = ITEM_NEIGHBOURS,
                       max_user_items: int = USER_ITEMS, model_items: int = MODEL_ITEMS,
                       l2: float = EASE_L2) -> list[dict[str, Any]]:
    """``{item_id, neighbours: [{item_id, score}]}`` for every item of ``ix`` with at least
    one neighbour: its ``top`` items of the largest positive weight, best first, ties by item
    id, from each user's ``max_user_items`` newest weighing interactions (ties by item id; a
    missing time counts as oldest). The weights are EASE's (``l2``) for up to
    ``model_items`` items, cosine similarities in (0, 1] beyond."""
    if top < 1:
        raise InvalidInput(f"top must be at least 1, got {top}")
    weight = ix.weights()
    ordered, place = newest_first(ix, np.flatnonzero(weight > 0), missing_first=False)
    kept = ordered[place < max_user_items]
    if not len(kept):
        return []
    # Only the items some user's kept interactions have (how many decides EASE or cosine).
    used, col = np.unique(ix.item[kept], return_inverse=True)
    X = sparse.csr_matrix((weight[kept], (ix.user[kept], col)), shape=(ix.n_users, len(used)))
    X.sum_duplicates()
    ids = [ix.item_ids[i] for i in used]
    rank = ix.item_rank[used]
    if len(ids) <= model_items:
        weights = EASE(l2, max_items=model_items).fit(X).weights_
        return [row for i in range(len(ids))
                if (row := _best(ids, rank, i, np.arange(len(ids)), weights[i], top))]
    return list(_cosine_neighbours(X, ids, rank, top))


def _best(ids: list[str], rank: np.ndarray[Any, Any], i: int, others: np.ndarray[Any, Any],
          scores: np.ndarray[Any, Any], top: int) -> dict[str, Any] | None:
    """Item ``i``'s row: its ``top`` positive ``scores`` (over ``others``, itself left out),
    best first, ties by item id; None without one."""
    keep = (others != i) & (scores > 0)
    others, scores = others[keep], scores[keep]
    if not len(others):
        return None
    best = np.lexsort((rank[others], -scores))[:top]
    return {"item_id": ids[i], "neighbours": [
        {"item_id": ids[others[j]], "score": float(scores[j])} for j in best]}


def _cosine_neighbours(X: sparse.csr_matrix, ids: list[str], rank: np.ndarray[Any, Any],
                       top: int) -> Iterator[dict[str, Any]]:
    """Item-kNN cosine rows, a block of items at a time within ``PAIR_BUDGET``."""
    norms = np.sqrt(np.asarray(X.multiply(X).sum(axis=0)).ravel())
    Xn = (X @ sparse.diags(1.0 / np.where(norms > 0, norms, 1.0))).tocsc()
    XnT = Xn.T.tocsr()
    # An upper bound of each item's non-zero similarities: its users' items.
    per_user = np.diff(X.indptr).astype(np.float64)
    ones = sparse.csr_matrix((np.ones(X.nnz), X.indices, X.indptr), shape=X.shape)
    cost = np.asarray(ones.T @ per_user).ravel()
    for lo, hi in blocks(cost, len(ids), PAIR_BUDGET):
        S = (XnT[lo:hi] @ Xn).tocsr()
        for row in range(S.shape[0]):
            a, b = S.indptr[row], S.indptr[row + 1]
            found = _best(ids, rank, lo + row, S.indices[a:b], np.minimum(S.data[a:b], 1.0), top)
            if found:
                yield found


def find_item_neighbours(graph: Graph, top: int = ITEM_NEIGHBOURS) -> list[dict[str, Any]]:
    """Every item's ``top`` neighbours in the graph as it is now (reads only)."""
    return item_neighbours_of(read_interactions(graph), top=top)


def write_item_neighbours(graph: Graph, run_id: str, found: Sequence[dict[str, Any]],
                          on_progress: Progress | None = None) -> int:
    """``SIMILAR_ITEM {score, run_id}`` for ``found`` (``find_item_neighbours``), one write
    transaction per chunk of about 10,000 edges; other runs' edges stay until
    ``drop_item_neighbours_except``; a chunk written again (a retried transaction, the same
    rows again) replaces the run's edges of its items, never doubles them. Returns the edges
    written."""
    return write_run_edges(graph, found, "neighbours", RunEdges(
        q.RUN_EDGES_OF_FIRST_ITEM, q.DELETE_RUN_ITEM_NEIGHBOURS_OF, q.CREATE_ITEM_NEIGHBOURS),
        run_id=run_id, on_progress=on_progress)


def drop_item_neighbours_except(graph: Graph, run_id: str) -> int:
    """Delete every ``SIMILAR_ITEM`` not of ``run_id``, found by the run id index, in
    transactions of 10,000; returns how many."""
    return deleted_in_batches(
        graph, (q.DROP_ITEM_NEIGHBOURS_BELOW, q.DROP_ITEM_NEIGHBOURS_ABOVE), run_id=run_id)
