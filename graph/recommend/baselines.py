"""Classical recommenders the graph recommendations are measured against (`make bench-recommend`,
`make bench-quality`): global popularity, item-kNN cosine and EASE.

Pure numpy/scipy over a users x items ``scipy.sparse.csr_matrix`` of training interactions
(binary or weighted; build one with ``interaction_matrix``). Each is a scikit-learn style
estimator (parameters in ``__init__``, fitted state with a trailing underscore) whose ``top``
ranks the WHOLE catalogue for one user, as the leave-one-out evaluation demands; the functions
``popularity``, ``item_knn`` and ``ease`` fit one in a call.

Ties (a user with no training interactions scores every item 0) go to the more popular item,
then the lower index, so every baseline is deterministic and never worse than popularity on a
user it knows nothing about.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol, Self

import numpy as np
from scipy import sparse

from graph.errors import InvalidInput, NotFound

Vector = np.ndarray[Any, np.dtype[np.float64]]

# EASE inverts a dense items x items matrix: 15,000 items is 1.8 GB of float64, about what a
# bench machine has to spare. Larger catalogues get a clear error rather than a swapping host.
EASE_MAX_ITEMS = 15_000


class ItemScorer(Protocol):
    """A fitted recommender over the items (columns) of its training matrix."""

    def scores(self, user_index: int) -> Vector:
        """One score per item for the user (row) ``user_index``; higher is better."""
        ...

    def top(self, user_index: int, n: int, exclude_seen: bool = True) -> list[int]:
        """The ``n`` best item indexes for the user, best first, over the whole catalogue."""
        ...


def _check_train(train: sparse.csr_matrix) -> sparse.csr_matrix:
    if not sparse.issparse(train) or train.ndim != 2:
        raise InvalidInput("train must be a 2-d scipy.sparse matrix (users x items)")
    if train.shape[0] == 0 or train.shape[1] == 0:
        raise InvalidInput(f"train has no users or no items (shape {train.shape})")
    csr = sparse.csr_matrix(train, dtype=np.float64)
    if csr.nnz and csr.data.min() < 0:
        raise InvalidInput("train holds negative interaction weights")
    return csr


class _Scorer:
    """What every baseline shares: the training matrix, item popularity (the tie-break), and
    ranking a user's scores over the whole catalogue."""

    train_: sparse.csr_matrix
    popularity_: Vector

    def _fit_common(self, train: sparse.csr_matrix) -> sparse.csr_matrix:
        self.train_ = _check_train(train)
        # Users who touched each item (not summed weights): the tie-break is "more people".
        self.popularity_ = np.asarray((self.train_ > 0).sum(axis=0), dtype=np.float64).ravel()
        return self.train_

    def _row(self, user_index: int) -> sparse.csr_matrix:
        if not hasattr(self, "train_"):
            raise InvalidInput(f"{type(self).__name__} is not fitted: call fit(train) first")
        if not 0 <= user_index < self.train_.shape[0]:
            raise NotFound(f"no user index {user_index} (the matrix has "
                           f"{self.train_.shape[0]} users)")
        return self.train_[user_index]

    def scores(self, user_index: int) -> Vector:
        raise NotImplementedError

    def top(self, user_index: int, n: int, exclude_seen: bool = True) -> list[int]:
        """The ``n`` best items for the user, best first (ties: more popular, then lower
        index); items the user interacted with in training are left out unless
        ``exclude_seen`` is false."""
        if n < 1:
            raise InvalidInput(f"n must be at least 1, got {n}")
        s = np.array(self.scores(user_index), dtype=np.float64)
        if exclude_seen:
            s[self._row(user_index).indices] = -np.inf
        order = np.lexsort((np.arange(len(s)), -self.popularity_, -s))
        order = order[np.isfinite(s[order])]
        return [int(i) for i in order[:n]]


class Popularity(_Scorer):
    """Every user gets the items the most users interacted with."""

    def fit(self, train: sparse.csr_matrix) -> Self:
        self._fit_common(train)
        return self

    def scores(self, user_index: int) -> Vector:
        self._row(user_index)
        return self.popularity_.copy()


class ItemKNN(_Scorer):
    """Item-based k-nearest neighbours with cosine similarity (Deshpande & Karypis 2004).

    ``similarity_`` (items x items, sparse) keeps, for each item, its ``neighbours`` most
    similar other items; a user's score for item j is the sum, over the items i the user
    interacted with (weighted by the interaction's value), of sim(i, j).
    """

    def __init__(self, neighbours: int = 100) -> None:
        self.neighbours = neighbours

    def fit(self, train: sparse.csr_matrix) -> Self:
        if self.neighbours < 1:
            raise InvalidInput(f"neighbours must be at least 1, got {self.neighbours}")
        X = self._fit_common(train)
        norms = np.sqrt(np.asarray(X.multiply(X).sum(axis=0)).ravel())
        inv = np.divide(1.0, norms, out=np.zeros_like(norms), where=norms > 0)
        Xn = (X @ sparse.diags(inv)).tocsc()
        S = (Xn.T @ Xn).tocsr()
        S.setdiag(0.0)
        S.eliminate_zeros()
        self.similarity_ = _keep_top_per_row(S, self.neighbours)
        return self

    def scores(self, user_index: int) -> Vector:
        return np.asarray((self._row(user_index) @ self.similarity_).todense()).ravel()


def _keep_top_per_row(S: sparse.csr_matrix, k: int) -> sparse.csr_matrix:
    """Each row's ``k`` largest entries (ties by lower column), the rest dropped."""
    rows, cols, vals = [], [], []
    for r in range(S.shape[0]):
        lo, hi = S.indptr[r], S.indptr[r + 1]
        c, v = S.indices[lo:hi], S.data[lo:hi]
        if len(v) > k:
            keep = np.lexsort((c, -v))[:k]
            c, v = c[keep], v[keep]
        rows.append(np.full(len(c), r))
        cols.append(c)
        vals.append(v)
    if not rows:
        return sparse.csr_matrix(S.shape)
    return sparse.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
                             shape=S.shape)


class EASE(_Scorer):
    """Embarrassingly Shallow Autoencoder (Steck 2019), closed form.

    With G = XᵀX + l2·I and P = G⁻¹, the item-item weights are B = I − P·diag(1/diag(P)) (zero
    diagonal); a user's scores are their row of X times B. ``weights_`` is B (dense).
    """

    def __init__(self, l2: float = 500.0, max_items: int = EASE_MAX_ITEMS) -> None:
        self.l2 = l2
        self.max_items = max_items

    def fit(self, train: sparse.csr_matrix) -> Self:
        if self.l2 <= 0:
            raise InvalidInput(f"l2 must be positive, got {self.l2}")
        X = self._fit_common(train)
        if X.shape[1] > self.max_items:
            raise InvalidInput(f"EASE inverts a dense items x items matrix; {X.shape[1]} items "
                               f"exceed max_items={self.max_items}")
        G = np.asarray((X.T @ X).todense(), dtype=np.float64)
        G[np.diag_indices_from(G)] += self.l2
        P = np.linalg.inv(G)
        B = -P / np.diag(P)
        B[np.diag_indices_from(B)] = 0.0
        self.weights_ = B
        return self

    def scores(self, user_index: int) -> Vector:
        return np.asarray(self._row(user_index) @ self.weights_).ravel()


def popularity(train: sparse.csr_matrix) -> Popularity:
    """A fitted ``Popularity``."""
    return Popularity().fit(train)


def item_knn(train: sparse.csr_matrix, neighbours: int = 100) -> ItemKNN:
    """A fitted item-kNN cosine recommender keeping ``neighbours`` per item."""
    return ItemKNN(neighbours).fit(train)


def ease(train: sparse.csr_matrix, l2: float = 500.0) -> EASE:
    """A fitted EASE recommender with L2 regularisation ``l2``."""
    return EASE(l2).fit(train)


@dataclass(frozen=True)
class InteractionMatrix:
    """A users x items matrix with the ids behind its rows and columns."""

    matrix: sparse.csr_matrix
    users: list[Hashable]
    items: list[Hashable]
    rows: dict[Hashable, int] = field(repr=False)
    columns: dict[Hashable, int] = field(repr=False)

    def user_index(self, user: Hashable) -> int:
        """The row of ``user``; raises ``NotFound`` for a user the matrix does not hold."""
        try:
            return self.rows[user]
        except KeyError:
            raise NotFound(f"no user {user!r} in the interaction matrix") from None

    def item_index(self, item: Hashable) -> int:
        """The column of ``item``; raises ``NotFound`` for an item the matrix does not hold."""
        try:
            return self.columns[item]
        except KeyError:
            raise NotFound(f"no item {item!r} in the interaction matrix") from None


def interaction_matrix(
    triples: Iterable[tuple[Hashable, Hashable, float]],
    users: Iterable[Hashable] = (),
    items: Iterable[Hashable] = (),
) -> InteractionMatrix:
    """``(user, item, weight)`` triples as a users x items matrix; repeated pairs add up.

    ``users`` and ``items`` fix ids that must have a row/column (in that order) even without a
    triple, e.g. the whole catalogue, so that held-out items of no training interaction can
    still be ranked; ids only seen in ``triples`` follow in order of appearance.
    """
    user_rows: dict[Hashable, int] = {}
    item_cols: dict[Hashable, int] = {}
    for u in users:
        user_rows.setdefault(u, len(user_rows))
    for i in items:
        item_cols.setdefault(i, len(item_cols))
    rows, cols, vals = [], [], []
    for u, i, w in triples:
        if not np.isfinite(w) or w < 0:
            raise InvalidInput(f"interaction weight must be a finite number >= 0, got {w!r} "
                               f"for ({u!r}, {i!r})")
        rows.append(user_rows.setdefault(u, len(user_rows)))
        cols.append(item_cols.setdefault(i, len(item_cols)))
        vals.append(float(w))
    matrix = sparse.csr_matrix((np.array(vals, dtype=np.float64), (rows, cols)),
                               shape=(len(user_rows), len(item_cols)))
    matrix.sum_duplicates()
    return InteractionMatrix(matrix, list(user_rows), list(item_cols), user_rows, item_cols)
