"""The classical baselines of the recommendation benchmarks: popularity, item-kNN, EASE."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pytest
from scipy import sparse

from graph.errors import InvalidInput, NotFound
from graph.recommend.baselines import (
    EASE,
    ItemKNN,
    ItemScorer,
    ease,
    interaction_matrix,
    item_knn,
    popularity,
)
from graph.recommend.evaluation import hit_rate_ndcg


def two_tastes(seed: int = 0) -> sparse.csr_matrix:
    """40 users: the first 20 buy from items 0-4, the rest from items 5-9; item 10 is bought by
    nearly everyone (the most popular item, which a personal recommender should not push over
    the user's own taste); each user misses one item of their taste."""
    rng = np.random.default_rng(seed)
    X = np.zeros((40, 11))
    for u in range(40):
        taste = range(0, 5) if u < 20 else range(5, 10)
        missing = int(rng.choice(list(taste)))
        for i in taste:
            if i != missing:
                X[u, i] = 1.0
        X[u, 10] = 1.0 if u % 10 else 0.0
    return sparse.csr_matrix(X)


def test_ease_matches_its_closed_form() -> None:
    X = two_tastes()
    model = ease(X, l2=3.0)
    dense = X.toarray()
    P = np.linalg.inv(dense.T @ dense + 3.0 * np.eye(11))
    B = np.eye(11) - P / np.diag(P)
    assert np.allclose(model.weights_, B)
    assert np.allclose(np.diag(model.weights_), 0.0)
    assert np.allclose(model.scores(3), dense[3] @ B)


def test_item_knn_is_cosine_with_top_neighbours() -> None:
    X = two_tastes()
    dense = X.toarray()
    norms = np.linalg.norm(dense, axis=0)
    cosine = (dense.T @ dense) / np.outer(norms, norms)
    np.fill_diagonal(cosine, 0.0)
    full = item_knn(X, neighbours=100)
    assert np.allclose(full.similarity_.toarray(), cosine)
    pruned = item_knn(X, neighbours=2)
    S = pruned.similarity_.toarray()
    assert ((S > 0).sum(axis=1) <= 2).all()
    for i in range(11):  # what is kept are the row's largest
        kept = S[i][S[i] > 0]
        dropped = np.delete(cosine[i], np.flatnonzero(S[i] > 0))
        assert kept.min() >= dropped.max() - 1e-12


@pytest.mark.parametrize("make", [lambda X: ease(X, 10.0), lambda X: item_knn(X, 20)])
def test_personal_baselines_recover_the_missing_item_of_the_users_taste(
        make: Callable[[sparse.csr_matrix], ItemScorer]) -> None:
    X = two_tastes()
    model = make(X)
    dense = X.toarray()
    hits = 0
    for u in range(40):
        taste = set(range(0, 5) if u < 20 else range(5, 10))
        missing = next(i for i in taste if dense[u, i] == 0)
        ranked = model.top(u, 11)
        assert not set(ranked) & set(np.flatnonzero(dense[u]))  # seen left out
        hits += [i for i in ranked if i != 10][:1] == [missing]  # before the other taste's
    assert hits == 40
    # popularity, by contrast, offers the item everyone buys
    assert all(popularity(X).top(u, 1) == [10] for u in range(40) if not dense[u, 10])


def test_popularity_ranks_by_users_and_ties_by_index() -> None:
    X = sparse.csr_matrix(np.array([[1, 0, 0, 0], [1, 1, 0, 0], [0, 1, 0, 5.0]]))
    model = popularity(X)
    assert model.top(0, 4) == [1, 3, 2]  # item 0 seen; 1 by two users; 3 before 2
    assert model.top(0, 4, exclude_seen=False) == [0, 1, 3, 2]


def test_a_user_without_interactions_gets_the_popular_items() -> None:
    X = sparse.vstack([two_tastes(), sparse.csr_matrix((1, 11))]).tocsr()
    for model in (ease(X), item_knn(X), popularity(X)):
        assert model.top(40, 3) == popularity(X).top(40, 3)
        assert model.top(40, 3)[0] == 10


def test_top_never_returns_more_than_the_unseen_catalogue() -> None:
    X = sparse.csr_matrix(np.array([[1.0, 1.0, 0.0], [0.0, 1.0, 1.0]]))
    assert item_knn(X).top(0, 10) == [2]
    assert len(ease(X).top(0, 10, exclude_seen=False)) == 3


def test_bad_inputs_are_refused_clearly() -> None:
    X = two_tastes()
    with pytest.raises(InvalidInput, match="neighbours"):
        ItemKNN(0).fit(X)
    with pytest.raises(InvalidInput, match="l2"):
        EASE(0.0).fit(X)
    with pytest.raises(InvalidInput, match="max_items"):
        EASE(max_items=5).fit(X)
    with pytest.raises(InvalidInput, match="not fitted"):
        EASE().top(0, 1)
    with pytest.raises(InvalidInput, match="negative"):
        ease(sparse.csr_matrix(np.array([[1.0, -1.0]])))
    with pytest.raises(InvalidInput, match="no users or no items"):
        ease(sparse.csr_matrix((0, 3)))
    with pytest.raises(InvalidInput, match="scipy.sparse"):
        ease(np.ones((2, 2)))  # type: ignore[arg-type]
    model = ease(X)
    with pytest.raises(NotFound, match="no user index 40"):
        model.top(40, 1)
    with pytest.raises(InvalidInput, match="at least 1"):
        model.top(0, 0)


def test_interaction_matrix_keeps_ids_and_adds_repeats() -> None:
    m = interaction_matrix([("a", "x", 1.0), ("b", "y", 2.0), ("a", "x", 0.5)],
                           items=["z", "y"])
    assert m.items == ["z", "y", "x"] and m.users == ["a", "b"]
    assert m.matrix.shape == (2, 3)
    assert m.matrix[m.user_index("a"), m.item_index("x")] == 1.5
    assert m.matrix[m.user_index("b"), m.item_index("y")] == 2.0
    assert m.matrix[:, m.item_index("z")].nnz == 0  # in the catalogue without interactions
    with pytest.raises(NotFound):
        m.user_index("c")
    with pytest.raises(InvalidInput, match="weight"):
        interaction_matrix([("a", "x", -1.0)])
    with pytest.raises(InvalidInput, match="weight"):
        interaction_matrix([("a", "x", math.nan)])


def test_hit_rate_and_ndcg_over_users() -> None:
    pairs = [(["a", "b", "c"], "a"), (["a", "b", "c"], "c"), (["a"], "z")]
    hit, ndcg = hit_rate_ndcg(pairs, k=10)
    assert hit == pytest.approx(2 / 3)
    assert ndcg == pytest.approx((1.0 + 1 / math.log2(4)) / 3)
    assert hit_rate_ndcg(pairs, k=2) == (pytest.approx(1 / 3), pytest.approx(1 / 3))
    assert hit_rate_ndcg([], k=10) == (0.0, 0.0)
