"""The segmentation engine: feature preparation and hierarchical clustering, scikit-learn style."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray
from sklearn.base import BaseEstimator, ClusterMixin, TransformerMixin
from sklearn.cluster import AgglomerativeClustering
from sklearn.metrics import silhouette_score
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]


class Log1pColumns(TransformerMixin, BaseEstimator):  # type: ignore[misc]
    """``log1p`` on the given columns (negative values clipped to 0), others passed through."""

    def __init__(self, columns: Sequence[int] = ()) -> None:
        self.columns = columns

    def fit(self, X: FloatArray, y: Any = None) -> Log1pColumns:  # noqa: ARG002 - sklearn API
        self.n_features_in_ = X.shape[1]
        return self

    def transform(self, X: FloatArray) -> FloatArray:
        out = np.array(X, dtype=np.float64, copy=True)
        cols = list(self.columns)
        if cols:
            out[:, cols] = np.log1p(np.clip(out[:, cols], 0.0, None))
        return out


def make_preparation(feature_names: Sequence[str], log_features: Sequence[str]) -> Pipeline:
    """Log-scale heavy-tailed features, then z-score every feature."""
    log_cols = [i for i, name in enumerate(feature_names) if name in set(log_features)]
    return Pipeline([("log", Log1pColumns(log_cols)), ("zscore", StandardScaler())])


def cluster_roots(children: IntArray, n_samples: int, n_clusters: int) -> IntArray:
    """For each sample, the tree node that heads its cluster when the tree is cut at k.

    Applying the first ``n_samples - n_clusters`` merges of one tree gives nested partitions for
    every k, which is what makes the segment hierarchy consistent across levels.
    """
    parent = np.arange(2 * n_samples - 1)

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = int(parent[i])
        return i

    for step in range(n_samples - n_clusters):
        a, b = children[step]
        node = n_samples + step
        parent[find(int(a))] = node
        parent[find(int(b))] = node
    return np.array([find(i) for i in range(n_samples)], dtype=np.int64)


def cut_tree(children: IntArray, n_samples: int, n_clusters: int) -> IntArray:
    """Flat labels 0..k-1 from an agglomerative merge tree cut at ``n_clusters``."""
    roots = cluster_roots(children, n_samples, n_clusters)
    # Number clusters by first appearance so labels are deterministic.
    _, first = np.unique(roots, return_index=True)
    order = {root: rank for rank, root in enumerate(roots[np.sort(first)])}
    return np.array([order[r] for r in roots], dtype=np.int64)


class HierarchicalSegmenter(ClusterMixin, BaseEstimator):  # type: ignore[misc]
    """Agglomerative clustering with automatic choice of k and a parent level for nesting.

    k is ``n_clusters`` when given, else the k in ``[k_min, k_max]`` with the best silhouette
    whose smallest segment holds at least ``min_segment_share`` of the users.
    """

    def __init__(
        self,
        n_clusters: int | None = None,
        *,
        k_min: int = 2,
        k_max: int = 10,
        linkage: str = "ward",
        min_segment_share: float = 0.02,
        parent_clusters: int | None = None,
        silhouette_sample: int = 5000,
        random_state: int = 0,
    ) -> None:
        self.n_clusters = n_clusters
        self.k_min = k_min
        self.k_max = k_max
        self.linkage = linkage
        self.min_segment_share = min_segment_share
        self.parent_clusters = parent_clusters
        self.silhouette_sample = silhouette_sample
        self.random_state = random_state

    def _silhouette(self, X: FloatArray, labels: IntArray) -> float:
        sample = min(self.silhouette_sample, X.shape[0])
        return float(silhouette_score(X, labels, sample_size=sample,
                                      random_state=self.random_state))

    def fit(self, X: FloatArray, y: Any = None) -> HierarchicalSegmenter:  # noqa: ARG002
        n = X.shape[0]
        if n < 3:
            raise ValueError(f"need at least 3 users to segment, got {n}")
        tree = AgglomerativeClustering(
            n_clusters=None, distance_threshold=0.0, linkage=self.linkage,
            compute_full_tree=True,
        ).fit(X)
        self.children_: IntArray = tree.children_
        self.distances_: FloatArray = tree.distances_
        self.scores_: dict[int, float] = {}
        if self.n_clusters is not None:
            k = self.n_clusters
            self.k_reason_ = f"k={k} given"
        else:
            best: tuple[float, int] | None = None
            for k in range(self.k_min, min(self.k_max, n - 1) + 1):
                labels = cut_tree(self.children_, n, k)
                score = self._silhouette(X, labels)
                self.scores_[k] = score
                smallest = np.bincount(labels).min() / n
                if smallest >= self.min_segment_share and (best is None or score > best[0]):
                    best = (score, k)
            k = best[1] if best else self.k_min
            self.k_reason_ = (
                f"k={k} has the best silhouette ({self.scores_.get(k, float('nan')):.3f}) in "
                f"{self.k_min}..{self.k_max} with every segment >= "
                f"{self.min_segment_share:.0%} of users"
            )
        self.n_clusters_ = k
        self.labels_: IntArray = cut_tree(self.children_, n, k)
        self.cluster_centers_: FloatArray = np.vstack(
            [X[self.labels_ == c].mean(axis=0) for c in range(k)]
        )
        parent_k = self.parent_clusters or max(1, k // 2)
        parent_k = min(parent_k, k)
        self.parent_n_clusters_ = parent_k
        self.parent_labels_: IntArray = cut_tree(self.children_, n, parent_k)
        # Each leaf lies wholly inside one parent, because both cuts come from one tree.
        self.leaf_parent_: IntArray = np.array(
            [int(self.parent_labels_[self.labels_ == c][0]) for c in range(k)], dtype=np.int64
        )
        self.silhouette_ = self._silhouette(X, self.labels_) if k > 1 else float("nan")
        return self

    def predict(self, X: FloatArray) -> IntArray:
        """Nearest leaf centre: how users arriving between runs are assigned."""
        d = ((X[:, None, :] - self.cluster_centers_[None, :, :]) ** 2).sum(axis=2)
        return np.asarray(d.argmin(axis=1), dtype=np.int64)

    def distances(self, X: FloatArray) -> FloatArray:
        """Euclidean distance of each row to the centre of its assigned leaf."""
        centers = self.cluster_centers_[self.labels_]
        return np.asarray(np.sqrt(((X - centers) ** 2).sum(axis=1)), dtype=np.float64)
