"""The segmentation engine: feature preparation and hierarchical clustering, scikit-learn style."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import fastcluster
import numpy as np
from numpy.typing import ArrayLike, NDArray
from sklearn.base import BaseEstimator, ClusterMixin, TransformerMixin, clone
from sklearn.cluster import (
    DBSCAN,
    HDBSCAN,
    AgglomerativeClustering,
    Birch,
    KMeans,
    MiniBatchKMeans,
)
from sklearn.decomposition import PCA
from sklearn.impute import SimpleImputer
from sklearn.metrics import (
    adjusted_rand_score,
    calinski_harabasz_score,
    davies_bouldin_score,
    silhouette_score,
)
from sklearn.neighbors import kneighbors_graph
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.validation import check_is_fitted, validate_data
from threadpoolctl import threadpool_limits

from graph.errors import InvalidInput

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]
TRANSFORM_BLOCK = 50_000
"""Rows whose distances to the leaf centres ``transform`` computes at once."""
ALGORITHMS = ("agglomerative", "kmeans", "minibatch-kmeans", "birch", "dbscan", "hdbscan")


def check_algorithm(name: str) -> str:
    if name not in ALGORITHMS:
        raise InvalidInput(f"unknown algorithm {name!r}; choose from {', '.join(ALGORITHMS)}")
    return name


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


class QuantileClipper(TransformerMixin, BaseEstimator):  # type: ignore[misc]
    """Clip each feature to its ``[lower, upper]`` quantiles learned in ``fit``, so a few extreme
    users cannot stretch a feature's scale; ``outliers`` flags the rows that were clipped."""

    def __init__(self, lower: float = 0.005, upper: float = 0.995) -> None:
        self.lower = lower
        self.upper = upper

    def fit(self, X: FloatArray, y: Any = None) -> QuantileClipper:  # noqa: ARG002 - sklearn API
        self.n_features_in_ = X.shape[1]
        self.low_: FloatArray = np.nanquantile(X, self.lower, axis=0)
        self.high_: FloatArray = np.nanquantile(X, self.upper, axis=0)
        self.n_outliers_ = int(self.outliers(X).sum())
        return self

    def transform(self, X: FloatArray) -> FloatArray:
        return np.asarray(np.clip(X, self.low_, self.high_), dtype=np.float64)

    def outliers(self, X: FloatArray) -> NDArray[np.bool_]:
        return np.asarray(((self.low_ > X) | (self.high_ < X)).any(axis=1))


class FamilyScaler(TransformerMixin, BaseEstimator):  # type: ignore[misc]
    """Scale columns by family, so that each family weighs what it is given in distances.

    ``families`` gives each column's family (an index into ``weights`` and ``compositional``).
    A column of an ordinary family is z-scored; a column of a compositional family (shares
    that sum to 1, such as topic shares) is only centred, because its columns already share
    one scale and z-scoring would let a rare topic's noise weigh as much as a common topic.
    Each family is then scaled so that its mean squared distance from the centre is
    ``weight ** 2``: a family of twenty columns no longer outweighs one of four just by having
    more of them."""

    def __init__(self, families: Sequence[int] = (), weights: Sequence[float] = (),
                 compositional: Sequence[bool] = ()) -> None:
        self.families = families
        self.weights = weights
        self.compositional = compositional

    def fit(self, X: FloatArray, y: Any = None) -> FamilyScaler:  # noqa: ARG002 - sklearn API
        X = np.asarray(X, dtype=np.float64)
        family = np.asarray(self.families, dtype=np.int64)
        if family.shape[0] != X.shape[1]:
            raise ValueError(f"{family.shape[0]} family indexes for {X.shape[1]} columns")
        self.n_features_in_ = X.shape[1]
        self.mean_: FloatArray = X.mean(axis=0)
        std = X.std(axis=0)
        raw = np.array([bool(self.compositional[f]) for f in family], dtype=bool)
        self.scale_: FloatArray = np.where(raw | (std == 0), 1.0, std)
        centred = (X - self.mean_) / self.scale_
        factor = np.ones(X.shape[1])
        for f, weight in enumerate(self.weights):
            cols = family == f
            spread = float(np.sqrt((centred[:, cols] ** 2).sum(axis=1).mean())) if cols.any() else 0
            factor[cols] = weight / spread if spread > 0 else 0.0
        self.factor_: FloatArray = factor
        return self

    def transform(self, X: FloatArray) -> FloatArray:
        out = (np.asarray(X, dtype=np.float64) - self.mean_) / self.scale_ * self.factor_
        return np.asarray(out, dtype=np.float64)


@dataclass(frozen=True)
class Family:
    """A family of features weighed together by ``make_preparation``: its columns, its weight,
    and whether its columns are shares of one whole (compositional)."""

    name: str
    features: tuple[str, ...]
    weight: float = 1.0
    compositional: bool = False


def make_preparation(
    feature_names: Sequence[str],
    log_features: Sequence[str],
    *,
    clip: tuple[float, float] | None = (0.005, 0.995),
    pca_components: int | float | None = None,
    families: Sequence[Family] = (),
) -> Pipeline:
    """Impute missing values (median), log-scale heavy-tailed features, clip extreme quantiles,
    z-score every feature, and optionally project on principal components. With ``families``,
    the z-score is replaced by ``FamilyScaler``: the features of each family weigh its weight,
    and features of no family form one more family of weight 1."""
    log_cols = [i for i, name in enumerate(feature_names) if name in set(log_features)]
    steps: list[tuple[str, Any]] = [
        ("impute", SimpleImputer(strategy="median", keep_empty_features=True)),
        ("log", Log1pColumns(log_cols)),
    ]
    if clip is not None:
        steps.append(("clip", QuantileClipper(*clip)))
    if families:
        index = {name: f for f, fam in enumerate(families) for name in fam.features}
        rest = len(families)
        steps.append(("zscore", FamilyScaler(
            [index.get(name, rest) for name in feature_names],
            [fam.weight for fam in families] + [1.0],
            [fam.compositional for fam in families] + [False])))
    else:
        steps.append(("zscore", StandardScaler()))
    if pca_components is not None:
        steps.append(("pca", PCA(n_components=pca_components, random_state=0)))
    return Pipeline(steps)


def cluster_roots(children: IntArray, n_samples: int, n_clusters: int) -> IntArray:
    """For each sample, the tree node that heads its cluster when the tree is cut at k.

    Applying the first ``n_samples - n_clusters`` merges of one tree gives nested partitions for
    every k, which is what makes the segment hierarchy consistent across levels. Each merged
    node points at the node its merge made, and the pointers are followed by doubling (each
    pass jumps twice as far), a few array passes instead of a Python step per merge and user.
    """
    merges = max(0, n_samples - n_clusters)
    parent = np.arange(2 * n_samples - 1, dtype=np.int64)
    if merges:
        made = n_samples + np.arange(merges, dtype=np.int64)
        parent[np.asarray(children[:merges, 0], dtype=np.int64)] = made
        parent[np.asarray(children[:merges, 1], dtype=np.int64)] = made
    while True:
        jumped = parent[parent]
        if np.array_equal(jumped, parent):
            return parent[:n_samples].copy()
        parent = jumped


def cut_tree(children: IntArray, n_samples: int, n_clusters: int) -> IntArray:
    """Flat labels 0..k-1 from an agglomerative merge tree cut at ``n_clusters``."""
    roots = cluster_roots(children, n_samples, n_clusters)
    # Number clusters by first appearance so labels are deterministic.
    _, first, inverse = np.unique(roots, return_index=True, return_inverse=True)
    rank = np.empty(len(first), dtype=np.int64)
    rank[np.argsort(first, kind="stable")] = np.arange(len(first))
    return np.asarray(rank[inverse.ravel()], dtype=np.int64)


def exact_ward(X: FloatArray) -> tuple[IntArray, FloatArray]:
    """Ward's merge tree over every row of ``X`` (children, distances) in scikit-learn's
    layout: the tree ``AgglomerativeClustering(linkage="ward")`` builds, from fastcluster's
    nearest-neighbour chain on the vectors. Its memory is the rows, where scikit-learn's
    (scipy's ``linkage``) holds every pairwise distance twice: 3.2 GB at 20,000 users."""
    z = fastcluster.linkage_vector(np.ascontiguousarray(X, dtype=np.float64), method="ward")
    return np.asarray(z[:, :2], dtype=np.int64), np.asarray(z[:, 2], dtype=np.float64)


def best_jaccard(ref: IntArray, new: IntArray, k: int) -> FloatArray:
    """For each of ``ref``'s labels 0..k-1, the best Jaccard index with any label of ``new``
    (NaN for a label absent from ``ref``)."""
    _, ref_idx = np.unique(ref, return_inverse=True)
    present = np.unique(ref)
    _, new_idx = np.unique(new, return_inverse=True)
    table = np.zeros((len(present), int(new_idx.max()) + 1))
    np.add.at(table, (ref_idx, new_idx), 1.0)
    union = table.sum(axis=1)[:, None] + table.sum(axis=0)[None, :] - table
    out = np.full(k, np.nan)
    out[present] = (table / union).max(axis=1)
    return out


def weighted_ward(centers: FloatArray, weights: IntArray) -> tuple[IntArray, FloatArray]:
    """Ward's agglomeration of weighted points: merge tree (children, distances) in
    scikit-learn's layout, leaves ``0..m-1`` and merge ``i`` creating node ``m + i``.

    The merge cost of clusters a and b is ``w_a w_b / (w_a + w_b) * |c_a - c_b|^2``; the distance
    reported is its square root times sqrt(2), matching scikit-learn's Ward distances for
    unit weights. O(m^2) memory and O(m^3 / vectorized) time: meant for m up to a few thousand.
    """
    m = centers.shape[0]
    c = np.array(centers, dtype=np.float64, copy=True)
    w = np.asarray(weights, dtype=np.float64).copy()
    node = np.arange(m)
    active = np.ones(m, dtype=bool)

    def costs(i: int) -> FloatArray:
        d2 = ((c - c[i]) ** 2).sum(axis=1)
        out: FloatArray = w * w[i] / (w + w[i]) * d2
        out[~active] = np.inf
        out[i] = np.inf
        return out

    cost = np.vstack([costs(i) for i in range(m)]) if m > 1 else np.full((1, 1), np.inf)
    children = np.zeros((max(m - 1, 0), 2), dtype=np.int64)
    distances = np.zeros(max(m - 1, 0))
    for step in range(m - 1):
        flat = int(np.argmin(cost))
        a, b = divmod(flat, m)
        children[step] = (node[a], node[b])
        distances[step] = np.sqrt(2.0 * cost[a, b])
        c[a] = (w[a] * c[a] + w[b] * c[b]) / (w[a] + w[b])
        w[a] += w[b]
        active[b] = False
        node[a] = m + step
        cost[b, :] = np.inf
        cost[:, b] = np.inf
        row = costs(a)
        cost[a, :] = row
        cost[:, a] = row
    return children, distances


class HierarchicalSegmenter(TransformerMixin, ClusterMixin, BaseEstimator):  # type: ignore[misc]
    """Agglomerative clustering with automatic choice of k and a parent level for nesting.

    k is ``n_clusters`` when given. Otherwise every k in ``[k_min, k_max]`` whose smallest
    segment holds at least ``min_segment_share`` of the users is scored for separation
    (silhouette) and, with ``n_resamples`` > 0, for stability (mean adjusted Rand index of
    refits on random subsets, compared on the users each refit saw). Among the ks whose
    silhouette is acceptable (at least ``1 - silhouette_tolerance`` times the best), the most
    stable is chosen; ties within ``stability_tolerance`` go to the better silhouette, and
    when the silhouettes tie too (within ``silhouette_tie``) to the fewest segments.
    Without resamples, the best silhouette wins. When automatic Ward leaves are less stable
    than ``fallback_below``, ``fallback_algorithm`` is fitted too and kept unless Ward is
    steadier by more than ``stability_tolerance``. Above ``max_exact`` users the tree is built
    over ``n_micro`` Mini-Batch K-Means micro-clusters (size-weighted Ward), so memory stays
    bounded. For the flat algorithms the hierarchy above the leaves is Ward on the leaf
    centres, weighted by size.

    Parameters
    ----------
    n_clusters : int or None, default=None
        Number of leaf segments; None chooses k automatically.
    algorithm : {"agglomerative", "kmeans", "minibatch-kmeans", "birch", "dbscan", \
"hdbscan"}, default="agglomerative"
        How leaf segments are found. The density-based ones find k themselves; users they
        call noise join the nearest segment.
    k_min, k_max : int, default=2, 10
        Range of k tried when choosing automatically.
    linkage : {"ward", "average", "complete"}, default="ward"
        Agglomerative linkage.
    min_segment_share : float, default=0.02
        Smallest segment, as a share of users, for a k to be eligible.
    parent_clusters : int or None, default=None
        Segments on the parent level; None takes the dendrogram's widest gap.
    silhouette_sample : int, default=5000
        Users the silhouette is computed on.
    max_exact : int, default=20000
        Above this many users, Ward runs on micro-clusters.
    n_micro : int, default=1000
        Micro-clusters on the scalable path.
    preferred_k : int or None, default=None
        The previous run's k, kept unless another k is better by more than ``k_tolerance``.
    k_tolerance : float, default=0.03
        How much better (silhouette and stability) another k must be to replace
        ``preferred_k``.
    eps : float or None, default=None
        DBSCAN's neighbourhood radius (None: 1.0).
    min_samples : int, default=5
        DBSCAN and HDBSCAN core-point size.
    distance_threshold : float or None, default=None
        Cut the dendrogram at this merge distance instead of choosing k.
    connectivity : int or None, default=None
        Agglomerative merges only among each unit's that many nearest neighbours.
    n_resamples : int, default=10
        Refits on random subsets that measure stability; 0 skips stability. Fewer make the
        estimate itself unsteady (5 gave 0.79 and 10 gave 0.88 for one k on a real set).
    resample_fraction : float, default=0.8
        Share of the users in each refit.
    stability_sample : int, default=4000
        Users resampled at most (a random sample of them above that), by the stability
        refits and by the choice of ``topic_weight``.
    silhouette_tolerance : float, default=0.5
        Relative: a k is acceptably separated with a silhouette of at least
        ``(1 - silhouette_tolerance)`` times the best.
    stability_tolerance : float, default=0.1
        Stability differences below this are ties (resample ARI varies by about this much
        between subsets of one population).
    silhouette_tie : float, default=0.01
        Silhouettes this close are ties, and the fewer segments win.
    min_clear_silhouette : float, default=0.15
        Below this silhouette the population has no clear structure.
    min_clear_stability : float, default=0.8
        Below this resample ARI the population has no clear structure.
    fallback_algorithm : str or None, default="kmeans"
        Tried when automatic Ward leaves are unsteady (mini-batch above ``max_exact``).
    fallback_below : float, default=0.95
        Ward stability under which the fallback is tried.
    random_state : int, default=0
        Seed of every random choice (samples, resamples, k-means).
    topic_columns : sequence of int, default=()
        Columns of ``X`` that are one compositional family prepared at weight 1 (topic
        shares, ``make_preparation``'s ``FamilyScaler``). Empty: no weight to choose.
    topic_weight : float or "auto", default="auto"
        Factor on ``topic_columns`` in every distance (the family's weight against all other
        features together). "auto" takes the smallest of ``topic_weights`` whose choice of k
        is stable (``_choose_weight``).
    topic_weights : sequence of float, default=(1.0, 1.5, 2.0)
        The weights "auto" tries, smallest first.
    weight_resamples : int, default=5
        Refits of the whole k choice per weight tried, on random subsets of at most
        ``stability_sample`` users, so the choice costs the same at any population size.

    Attributes
    ----------
    n_features_in_ : int
        Number of features seen in ``fit``.
    labels_ : ndarray of shape (n_samples,)
        Leaf segment of each training row.
    n_clusters_ : int
        Number of leaf segments.
    cluster_centers_ : ndarray of shape (n_clusters_, n_features_in_)
        Mean of each leaf segment.
    algorithm_ : str
        The algorithm whose leaves were kept (``algorithm`` or the fallback).
    k_reason_ : str
        Why this k, in words.
    children_, distances_ : ndarray
        The merge tree over units, in scikit-learn's layout.
    unit_of_, unit_sizes_, unit_labels_ : ndarray
        Unit (user, micro-cluster or flat leaf) of each row, unit sizes, and unit leaf labels.
    n_units_ : int
        Number of units the tree was built on.
    scalable_ : bool
        Whether the tree was built over micro-clusters.
    level_ks_, level_labels_ : list
        Segments per level, leaves first, and each row's label on each level.
    parent_n_clusters_, parent_labels_, leaf_parent_ :
        The parent level: its size, each row's parent and each leaf's parent.
    scores_, selection_ : dict
        Silhouette, and all model-selection figures, per k tried.
    stability_by_k_ : dict
        Resample ARI per eligible k.
    resamples_ : list
        The resampled row indices and refit labels per k.
    silhouette_ : float
        Silhouette of the leaves.
    stability_ : float
        Mean resample ARI of the leaves (NaN when not measured).
    segment_stability_ : ndarray of shape (n_clusters_,)
        Per leaf, mean best Jaccard index with a refit's segment.
    clear_structure_ : bool
        False when separation or stability is below the clear thresholds.
    structure_note_ : str
        The warning when there is no clear structure.
    noise_ : int
        Rows the density-based algorithms called noise (flat algorithms only).
    topic_weight_ : float or None
        The weight the topic columns were given (None without ``topic_columns``).
    feature_scale_ : ndarray of shape (n_features_in_,)
        Factor on each column before every distance: ``topic_weight_`` on the topic columns,
        1 elsewhere. ``cluster_centers_`` are in that weighted space.
    weight_choice_ : dict
        Per weight tried by "auto": its k, the ks and mean ARI of the resampled k choices,
        and whether it was stable.
    """

    def __init__(
        self,
        n_clusters: int | None = None,
        *,
        algorithm: str = "agglomerative",
        k_min: int = 2,
        k_max: int = 10,
        linkage: str = "ward",
        min_segment_share: float = 0.02,
        parent_clusters: int | None = None,
        silhouette_sample: int = 5000,
        max_exact: int = 20_000,
        n_micro: int = 1000,
        preferred_k: int | None = None,
        k_tolerance: float = 0.03,
        eps: float | None = None,
        min_samples: int = 5,
        distance_threshold: float | None = None,
        connectivity: int | None = None,
        n_resamples: int = 10,
        resample_fraction: float = 0.8,
        stability_sample: int = 4000,
        silhouette_tolerance: float = 0.5,
        stability_tolerance: float = 0.1,
        min_clear_silhouette: float = 0.15,
        min_clear_stability: float = 0.8,
        fallback_algorithm: str | None = "kmeans",
        fallback_below: float = 0.95,
        silhouette_tie: float = 0.01,
        random_state: int = 0,
        topic_columns: Sequence[int] = (),
        topic_weight: float | str = "auto",
        topic_weights: Sequence[float] = (1.0, 1.5, 2.0),
        weight_resamples: int = 5,
    ) -> None:
        self.n_clusters = n_clusters
        self.algorithm = algorithm
        self.k_min = k_min
        self.k_max = k_max
        self.linkage = linkage
        self.min_segment_share = min_segment_share
        self.parent_clusters = parent_clusters
        self.silhouette_sample = silhouette_sample
        self.max_exact = max_exact
        self.n_micro = n_micro
        self.preferred_k = preferred_k
        self.k_tolerance = k_tolerance
        self.eps = eps
        self.min_samples = min_samples
        self.distance_threshold = distance_threshold
        self.connectivity = connectivity
        self.n_resamples = n_resamples
        self.resample_fraction = resample_fraction
        self.stability_sample = stability_sample
        self.silhouette_tolerance = silhouette_tolerance
        self.stability_tolerance = stability_tolerance
        self.min_clear_silhouette = min_clear_silhouette
        self.min_clear_stability = min_clear_stability
        self.fallback_algorithm = fallback_algorithm
        self.fallback_below = fallback_below
        self.silhouette_tie = silhouette_tie
        self.random_state = random_state
        self.topic_columns = topic_columns
        self.topic_weight = topic_weight
        self.topic_weights = topic_weights
        self.weight_resamples = weight_resamples

    def _metrics(self, X: FloatArray, labels: IntArray, silhouette: float) -> dict[str, float]:
        """Model-selection figures for one k: elbow (WCSS), silhouette, CH and DB indices."""
        k = int(labels.max()) + 1
        centers = np.vstack([X[labels == c].mean(axis=0) for c in range(k)])
        wcss = float(((X - centers[labels]) ** 2).sum())
        return {"wcss": wcss, "silhouette": silhouette,
                "calinski_harabasz": float(calinski_harabasz_score(X, labels)),
                "davies_bouldin": float(davies_bouldin_score(X, labels))}

    def _silhouette(self, X: FloatArray, labels: IntArray) -> float:
        sample = min(self.silhouette_sample, X.shape[0])
        return float(silhouette_score(X, labels, sample_size=sample,
                                      random_state=self.random_state))

    def _tree(self, X: FloatArray) -> None:
        """Build the merge tree over units: the users themselves, or micro-clusters at scale."""
        n = X.shape[0]
        if n <= self.max_exact:
            children: IntArray
            distances: FloatArray
            if self.linkage == "ward" and self.connectivity is None:
                children, distances = exact_ward(X)
            else:
                tree = AgglomerativeClustering(
                    n_clusters=None, distance_threshold=0.0, linkage=self.linkage,
                    compute_full_tree=True, connectivity=self._neighbours(X),
                ).fit(X)
                children, distances = tree.children_, tree.distances_
            self.children_: IntArray = children
            self.distances_: FloatArray = distances
            self.unit_of_: IntArray = np.arange(n, dtype=np.int64)
            self.unit_sizes_: IntArray = np.ones(n, dtype=np.int64)
            self.scalable_ = False
            return
        # Plain Ward needs memory quadratic in n; above max_exact, users are first summarized
        # by Mini-Batch K-Means micro-clusters, and Ward (weighted by micro-cluster size) runs on
        # their centres. Each user then follows its micro-cluster.
        self.unit_of_, micro_centers = self._micro_clusters(X, min(self.n_micro, n))
        self.unit_sizes_ = np.bincount(self.unit_of_, minlength=micro_centers.shape[0])
        keep = self.unit_sizes_ > 0
        if not keep.all():
            remap = np.cumsum(keep) - 1
            self.unit_of_ = remap[self.unit_of_]
        centers = micro_centers[keep]
        self.unit_sizes_ = self.unit_sizes_[keep]
        if self.linkage == "ward":
            self.children_, self.distances_ = weighted_ward(centers, self.unit_sizes_)
        else:
            # Average and complete linkage over micro-cluster centres; unlike Ward they have no
            # size-weighted form, so each centre counts once.
            tree = AgglomerativeClustering(
                n_clusters=None, distance_threshold=0.0, linkage=self.linkage,
                compute_full_tree=True, connectivity=self._neighbours(centers),
            ).fit(centers)
            self.children_, self.distances_ = tree.children_, tree.distances_
        self.scalable_ = True

    def _micro_clusters(self, X: FloatArray, m: int) -> tuple[IntArray, FloatArray]:
        """Each user's micro-cluster (0..m-1) and the m centres; the Spark engine
        (spark_engine.py) finds them with Spark MLlib instead."""
        micro = MiniBatchKMeans(n_clusters=m, batch_size=4096, n_init=1,
                                random_state=self.random_state).fit(X)
        return np.asarray(micro.labels_, dtype=np.int64), micro.cluster_centers_

    def _neighbours(self, X: FloatArray) -> Any:
        """The optional connectivity constraint: only merge among each unit's k nearest
        neighbours (segments stay contiguous in feature space). Size-weighted Ward on
        micro-clusters has no such constraint; the micro-clusters are local already."""
        if self.connectivity is None:
            return None
        return kneighbors_graph(X, n_neighbors=min(self.connectivity, X.shape[0] - 1),
                                include_self=False)

    def _labels(self, k: int) -> IntArray:
        units = self.unit_sizes_.shape[0]
        return cut_tree(self.children_, units, k)[self.unit_of_]

    def _select_k(self, X: FloatArray, label_sets: dict[int, IntArray]) -> int:
        """The most stable k among those separated about as well as the best (see the class
        docstring), kept at the previous run's k unless another is better by more than
        ``k_tolerance``."""
        n = X.shape[0]
        allowed: list[int] = []
        for k, labels in sorted(label_sets.items()):
            if len(np.unique(labels)) < 2:
                continue
            score = self._silhouette(X, labels)
            self.scores_[k] = score
            self.selection_[k] = self._metrics(X, labels, score)
            if np.bincount(labels).min() / n >= self.min_segment_share:
                allowed.append(k)
        share = f"every segment >= {self.min_segment_share:.0%} of users"
        if not allowed:
            k = min(label_sets)
            self.k_reason_ = (f"no k in {self.k_min}..{self.k_max} gives {share}; "
                              f"k={k}, the smallest tried")
            return k
        if self.n_resamples > 0:
            self._resample(X, {k: label_sets[k] for k in allowed})
            for k in allowed:
                self.selection_[k]["stability"] = self.stability_by_k_[k]
        best_score = max(self.scores_[k] for k in allowed)
        acceptable = [k for k in allowed
                      if self.scores_[k] >= best_score * (1.0 - self.silhouette_tolerance)]
        stab = self.stability_by_k_
        if stab:
            top = max(stab[k] for k in acceptable)
            steady = [k for k in acceptable if stab[k] >= top - self.stability_tolerance]
            # Among equally steady ks the better separated wins; when their silhouettes are
            # about equal too, the fewest segments (a coin toss between near-equal ks would
            # change the personas from one run to the next).
            best_steady = max(self.scores_[c] for c in steady)
            k = min(c for c in steady if self.scores_[c] >= best_steady - self.silhouette_tie)
            self.k_reason_ = (
                f"k={k} is the most stable (resample ARI {stab[k]:.3f}, silhouette "
                f"{self.scores_[k]:.3f}) of the ks in {self.k_min}..{self.k_max} with {share} "
                f"and a silhouette at least {1.0 - self.silhouette_tolerance:.0%} of the best "
                f"({best_score:.3f})"
            )
        else:
            k = max(allowed, key=lambda c: self.scores_[c])
            self.k_reason_ = (f"k={k} has the best silhouette ({self.scores_[k]:.3f}) in "
                              f"{self.k_min}..{self.k_max} with {share}")
        # Segments should only appear or vanish when the data says so clearly: keep the
        # previous run's k unless another k is better by more than k_tolerance.
        pk = self.preferred_k
        if (pk is not None and pk != k and pk in allowed
                and self.scores_[pk] >= self.scores_[k] - self.k_tolerance
                and (not stab or stab[pk] >= stab[k] - self.k_tolerance)):
            self.k_reason_ = (
                f"kept the previous run's k={pk} (silhouette {self.scores_[pk]:.3f}"
                + (f", stability {stab[pk]:.3f}" if stab else "")
                + f"; within {self.k_tolerance} of k={k})"
            )
            k = pk
        return k

    def _refit(self, X: FloatArray, ks: Sequence[int]) -> dict[int, IntArray]:
        """Labels of the same algorithm refitted on ``X`` (a resample), at each of ``ks``; the
        density-based algorithms find their own k, keyed by the first of ``ks``."""
        twin = clone(self).set_params(n_resamples=0, n_clusters=None, preferred_k=None,
                                      distance_threshold=None)
        if self.algorithm == "agglomerative":
            twin._tree(X)
            units = twin.unit_sizes_.shape[0]
            return {k: twin._labels(k) for k in ks if k <= units}
        if self.algorithm in ("dbscan", "hdbscan"):
            return {ks[0]: twin.fit(X).labels_}
        return {k: np.asarray(twin._flat_model(k, X.shape[0]).fit_predict(X), dtype=np.int64)
                for k in ks if k < X.shape[0]}

    def _resample(self, X: FloatArray, label_sets: dict[int, IntArray]) -> None:
        """Refit on ``n_resamples`` random subsets and score each k's agreement (ARI on the
        users a refit saw); the refits are kept to score the final labels too."""
        rng = np.random.default_rng(self.random_state)
        n = X.shape[0]
        pool = (np.sort(rng.choice(n, size=self.stability_sample, replace=False))
                if n > self.stability_sample else np.arange(n))
        size = max(3, round(self.resample_fraction * len(pool)))
        self.resamples_: list[tuple[IntArray, dict[int, IntArray]]] = []
        # The refits are small (at most stability_sample users) and many: on one thread each,
        # as k-means' OpenMP threads spend more waiting on each other than they save there.
        with threadpool_limits(limits=1):
            for _ in range(self.n_resamples):
                idx = np.sort(rng.choice(pool, size=size, replace=False))
                self.resamples_.append((idx, self._refit(X[idx], sorted(label_sets))))
        for k, labels in label_sets.items():
            scores = [float(adjusted_rand_score(labels[idx], refit[k]))
                      for idx, refit in self.resamples_ if k in refit]
            self.stability_by_k_[k] = float(np.mean(scores)) if scores else float("nan")

    def _final_stability(self, X: FloatArray) -> None:
        """The chosen labels' stability overall (mean ARI) and per leaf segment (mean best
        Jaccard index with a segment of each refit: Hennig's cluster-wise stability)."""
        k = self.n_clusters_
        nan = np.full(k, np.nan)
        if self.n_resamples <= 0 or k < 2:
            self.stability_, self.segment_stability_ = float("nan"), nan
            return
        if k not in self.stability_by_k_:
            self._resample(X, {k: self.labels_})
        aris, jaccards = [], []
        for idx, refit in self.resamples_:
            if k not in refit:
                continue
            ref, new = self.labels_[idx], refit[k]
            aris.append(float(adjusted_rand_score(ref, new)))
            jaccards.append(best_jaccard(ref, new, k))
        self.stability_ = float(np.mean(aris)) if aris else float("nan")
        self.segment_stability_ = (np.nanmean(np.vstack(jaccards), axis=0) if jaccards
                                   else nan)

    def _cut_at_distance(self, units: int) -> int:
        """k from a distance threshold on the dendrogram: merges above it are not made."""
        t = float(self.distance_threshold or 0.0)
        k = int(min(units, max(1, 1 + int((self.distances_ > t).sum()))))
        self.k_reason_ = f"dendrogram cut at distance {t:g} gives k={k}"
        return k

    def _k_range(self, limit: int) -> range:
        if self.n_clusters is not None:
            return range(min(self.n_clusters, limit), min(self.n_clusters, limit) + 1)
        return range(self.k_min, min(self.k_max, limit - 1) + 1)

    def _flat_model(self, k: int, n: int) -> Any:
        if self.algorithm == "kmeans":
            return KMeans(n_clusters=k, n_init=4, random_state=self.random_state)
        if self.algorithm == "minibatch-kmeans":
            return MiniBatchKMeans(n_clusters=k, batch_size=4096, n_init=3,
                                   random_state=self.random_state)
        if self.algorithm == "birch":
            return Birch(n_clusters=k, threshold=0.5)
        if self.algorithm == "dbscan":
            return DBSCAN(eps=self.eps or 1.0, min_samples=self.min_samples)
        if self.algorithm == "hdbscan":
            return HDBSCAN(min_cluster_size=max(5, int(self.min_segment_share * n)),
                           min_samples=self.min_samples, copy=True)
        raise InvalidInput(f"unknown algorithm {self.algorithm!r}")

    def _fit_flat(self, X: FloatArray) -> None:
        """Leaf segments from a flat algorithm; the tree is weighted Ward on their centres."""
        n = X.shape[0]
        if self.algorithm in ("dbscan", "hdbscan"):
            raw = np.asarray(self._flat_model(0, n).fit_predict(X), dtype=np.int64)
            found = sorted(set(raw.tolist()) - {-1})
            if not found:
                raise ValueError(f"{self.algorithm} found no segment; loosen its parameters")
            remap = {c: i for i, c in enumerate(found)}
            centers = np.vstack([X[raw == c].mean(axis=0) for c in found])
            noise = raw == -1
            labels = np.array([remap.get(int(c), -1) for c in raw], dtype=np.int64)
            if noise.any():
                d = ((X[noise][:, None, :] - centers[None, :, :]) ** 2).sum(axis=2)
                labels[noise] = d.argmin(axis=1)
            self.noise_ = int(noise.sum())
            k = len(found)
            self.k_reason_ = (f"{self.algorithm} found k={k} segments; {self.noise_} users it "
                              "called noise joined the nearest segment")
        else:
            sets = {k: np.asarray(self._flat_model(k, n).fit_predict(X), dtype=np.int64)
                    for k in self._k_range(n)}
            k = self._select_k(X, sets)
            labels = sets[k]
            self.noise_ = 0
        # Empty clusters (possible with BIRCH) are dropped; units are the non-empty leaves.
        present = np.unique(labels)
        relabel = np.full(int(labels.max()) + 1, -1, dtype=np.int64)
        relabel[present] = np.arange(len(present))
        self.unit_of_ = relabel[labels]
        self.unit_sizes_ = np.bincount(self.unit_of_)
        centers = np.vstack([X[self.unit_of_ == u].mean(axis=0) for u in range(len(present))])
        self.children_, self.distances_ = weighted_ward(centers, self.unit_sizes_)
        self.scalable_ = False

    def fit(self, X: ArrayLike, y: Any = None) -> HierarchicalSegmenter:  # noqa: ARG002
        """Build the tree, choose k and the levels, and measure separation and stability.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Prepared features (``make_preparation``): finite, at least 3 rows.
        y : None
            Ignored; present for the scikit-learn API.

        Returns
        -------
        self : HierarchicalSegmenter
        """
        check_algorithm(self.algorithm)
        rows: FloatArray = validate_data(self, X, dtype=np.float64, ensure_min_samples=3)
        columns = np.asarray(self.topic_columns, dtype=np.int64)
        if columns.size and (columns.min() < 0 or columns.max() >= rows.shape[1]):
            raise ValueError(f"topic_columns {list(columns)} out of range for "
                             f"{rows.shape[1]} features")
        if not columns.size:
            self._fit_weighted(rows, columns, 1.0)
            self.weight_choice_: dict[float, dict[str, Any]] = {}
            return self
        if self.topic_weight != "auto":
            weight = float(self.topic_weight)
            if not weight > 0:
                raise ValueError(f"topic_weight must be positive or 'auto', got {weight}")
            self._fit_weighted(rows, columns, weight)
            self.weight_choice_ = {}
            return self
        weight, choice, fitted = self._choose_weight(rows)
        if fitted is not None:
            self._adopt(fitted)
        else:
            self._fit_weighted(rows, columns, weight)
        self.weight_choice_ = choice
        return self

    def _choose_weight(
        self, X: FloatArray,
    ) -> tuple[float, dict[float, dict[str, Any]], HierarchicalSegmenter | None]:
        """The smallest of ``topic_weights`` whose choice of k is stable: the whole fit (k
        chosen afresh) is repeated on ``weight_resamples`` random subsets of a pool of at most
        ``stability_sample`` users, and a weight is stable when most subsets choose the pool's
        k and the subsets agree with the pool's segments (mean ARI) by at least
        ``min_clear_stability + stability_tolerance``: the margin of a resample estimate, so
        that an independent check on other subsets still clears ``min_clear_stability``.
        Stability at a given k (``stability_``) does not catch this: on a real chat corpus
        every k was steady at topic weight 1, yet subsets of the users chose different ks and
        agreed at ARI 0.79 (docs/performance.md); on the demo one subset in five choosing one
        more segment still agrees at 0.98, and weight 1 stays. When no weight is stable, the
        one whose refits agree best (ties to the smaller). Returns the weight, the figures
        per weight, and the pool's fit when the pool is the whole population (else None: the
        caller fits the population at the weight)."""
        rng = np.random.default_rng(self.random_state)
        n = X.shape[0]
        whole = n <= self.stability_sample
        pool = np.arange(n) if whole else np.sort(
            rng.choice(n, size=self.stability_sample, replace=False))
        size = max(3, round(self.resample_fraction * len(pool)))
        subsets = [np.sort(rng.choice(len(pool), size=size, replace=False))
                   for _ in range(self.weight_resamples)]
        choice: dict[float, dict[str, Any]] = {}
        best: tuple[float, float, HierarchicalSegmenter] | None = None
        for weight in sorted(float(w) for w in self.topic_weights):
            fixed = clone(self).set_params(topic_weight=weight)
            ref = fixed.fit(X[pool])
            ks, aris = [], []
            for idx in subsets:
                sub = clone(fixed).fit(X[pool[idx]])
                ks.append(int(sub.n_clusters_))
                aris.append(float(adjusted_rand_score(ref.labels_[idx], sub.labels_)))
            ari = float(np.mean(aris)) if aris else float("nan")
            same = sum(k == ref.n_clusters_ for k in ks)
            stable = (2 * same > len(ks)
                      and not ari < self.min_clear_stability + self.stability_tolerance)
            choice[weight] = {"k": int(ref.n_clusters_), "resample_ks": ks,
                              "resample_ari": ari, "stable": stable}
            if stable:
                return weight, choice, ref if whole else None
            if best is None or ari > best[1] + 1e-9:
                best = (weight, ari, ref)
        assert best is not None, "topic_weights is empty"
        return best[0], choice, best[2] if whole else None

    def _adopt(self, other: HierarchicalSegmenter) -> None:
        """Take ``other``'s fitted attributes (a clone fitted on the same rows)."""
        for name, value in vars(other).items():
            if name.endswith("_") and not name.startswith("_"):
                setattr(self, name, value)

    def _fit_weighted(self, rows: FloatArray, columns: IntArray, weight: float) -> None:
        """Fit on ``rows`` with the topic ``columns`` scaled by ``weight``."""
        scale = np.ones(rows.shape[1])
        scale[columns] = weight
        X = rows * scale
        self._fit(X)
        self.algorithm_ = self.algorithm
        fallback = self._fallback(X.shape[0])
        if fallback is not None:
            # Ward's leaves were not steady under resampling: on a population without crisp
            # groups a different cut of the continuum each time. Centroid leaves (k-means)
            # are usually far steadier there (the hierarchy above them is still Ward on their
            # centres). Ward is kept only when clearly steadier: a Ward and a k-means cut of
            # the same continuum can disagree completely (ARI near 0 on a real ratings set),
            # so leaning one way on a tie keeps refits of the same population on the same
            # algorithm.
            twin = clone(self).set_params(algorithm=fallback, fallback_algorithm=None,
                                          topic_columns=(), topic_weight=1.0).fit(X)
            if twin.stability_ >= self.stability_ - self.stability_tolerance:
                unsteady = self.stability_
                self._adopt(twin)
                self.k_reason_ = (f"Ward's segments were unstable under resampling (ARI "
                                  f"{unsteady:.3f}), {fallback} leaves as steady or "
                                  f"steadier: {twin.k_reason_}")
        self.feature_scale_: FloatArray = scale
        self.topic_weight_: float | None = weight if columns.size else None

    def _fallback(self, n: int) -> str | None:
        """The algorithm to try when automatic Ward leaves came out unstable, if any."""
        if (self.fallback_algorithm is None or self.algorithm != "agglomerative"
                or self.n_clusters is not None or self.distance_threshold is not None
                or self.connectivity is not None or self.n_resamples <= 0
                or not self.stability_ < self.fallback_below):
            return None
        if self.fallback_algorithm == "kmeans" and n > self.max_exact:
            return "minibatch-kmeans"  # as Ward goes to micro-clusters there
        return str(self.fallback_algorithm)

    def _fit(self, X: FloatArray) -> None:
        n = X.shape[0]
        if n < 3:
            raise ValueError(f"need at least 3 users to segment, got {n}")
        check_algorithm(self.algorithm)
        self.scores_: dict[int, float] = {}
        self.selection_: dict[int, dict[str, float]] = {}
        self.stability_by_k_: dict[int, float] = {}
        self.resamples_ = []
        if self.algorithm == "agglomerative":
            self._tree(X)
            units = self.unit_sizes_.shape[0]
            if self.distance_threshold is not None:
                k = self._cut_at_distance(units)
            elif self.n_clusters is not None:
                k = min(self.n_clusters, units)
                self.k_reason_ = f"k={k} given"
            else:
                k = self._select_k(X, {k: self._labels(k) for k in self._k_range(units)})
        else:
            self._fit_flat(X)
            units = self.unit_sizes_.shape[0]
            k = units
            if self.n_clusters is not None and self.algorithm not in ("dbscan", "hdbscan"):
                self.k_reason_ = f"k={k} given"
            if self.distance_threshold is not None:
                k = self._cut_at_distance(units)
        self.n_units_ = units
        self.n_clusters_ = k
        self.unit_labels_: IntArray = cut_tree(self.children_, units, k)
        self.labels_: IntArray = self.unit_labels_[self.unit_of_]
        self.cluster_centers_: FloatArray = np.vstack(
            [X[self.labels_ == c].mean(axis=0) for c in range(k)]
        )
        # Levels of the hierarchy: the leaves, the parent level, then cuts of the same tree with
        # about half as many segments each, up to a single root. Each segment lies wholly inside
        # one segment of the level above, because every cut comes from one tree.
        self.level_ks_: list[int] = [k]
        while self.level_ks_[-1] > 1:
            if len(self.level_ks_) == 1:
                nxt = self.parent_clusters or self._parent_k(k)
            else:
                nxt = self.level_ks_[-1] // 2
            self.level_ks_.append(max(1, min(nxt, self.level_ks_[-1] - 1)))
        self.level_labels_: list[IntArray] = [self.labels_] + [
            self._labels(lk) for lk in self.level_ks_[1:]]
        self.parent_n_clusters_ = self.level_ks_[1] if k > 1 else 1
        self.parent_labels_: IntArray = (self.level_labels_[1] if k > 1
                                         else np.zeros(n, dtype=np.int64))
        self.leaf_parent_: IntArray = np.array(
            [int(self.parent_labels_[self.labels_ == c][0]) for c in range(k)], dtype=np.int64
        )
        self.silhouette_ = self._silhouette(X, self.labels_) if k > 1 else float("nan")
        self._final_stability(X)
        weak = []
        if not self.silhouette_ >= self.min_clear_silhouette:
            weak.append(f"silhouette {self.silhouette_:.3f} < {self.min_clear_silhouette}")
        if not self.stability_ >= self.min_clear_stability and self.n_resamples > 0:
            weak.append(f"resample stability {self.stability_:.3f} < "
                        f"{self.min_clear_stability}")
        self.clear_structure_ = not weak
        self.structure_note_ = (
            "" if not weak else
            "no clear structure (" + ", ".join(weak) + "): the segments divide a continuum "
            "of users rather than separate distinct groups; read them as rough bands"
        )

    def _parent_k(self, k: int) -> int:
        """The number of parent segments: the cut between 2 and k-1 segments that the dendrogram
        holds longest (the widest gap between consecutive merge heights), so natural groups of
        segments become the parents."""
        if k <= 2:
            return 1
        heights = np.sort(self.distances_)
        units = heights.shape[0] + 1
        # The merge that takes m segments to m-1 is at heights[units - m].
        gaps = {pk: float(heights[units - pk] - heights[units - pk - 1]) for pk in range(2, k)}
        return max(gaps, key=lambda pk: gaps[pk])

    def transform(self, X: ArrayLike) -> FloatArray:
        """Euclidean distance of each row to each leaf centre.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Prepared features, with the columns the model was fitted on.

        Returns
        -------
        distances : ndarray of shape (n_samples, n_clusters_)
        """
        check_is_fitted(self)
        rows: FloatArray = validate_data(self, X, dtype=np.float64, reset=False)
        # Models saved before topic weights existed have no scale: every column weighs 1.
        scale = getattr(self, "feature_scale_", None)
        if scale is not None:
            rows = rows * scale
        # A block of rows at a time: the differences of every row to every centre at once are
        # n x k x features floats (2.3 GB at a million users and ten segments).
        out = np.empty((rows.shape[0], self.cluster_centers_.shape[0]))
        for start in range(0, rows.shape[0], TRANSFORM_BLOCK):
            block = rows[start:start + TRANSFORM_BLOCK]
            d2 = ((block[:, None, :] - self.cluster_centers_[None, :, :]) ** 2).sum(axis=2)
            out[start:start + TRANSFORM_BLOCK] = np.sqrt(d2)
        return out

    def predict(self, X: ArrayLike) -> IntArray:
        """Nearest leaf centre: how users arriving between runs are assigned.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Prepared features, with the columns the model was fitted on.

        Returns
        -------
        labels : ndarray of shape (n_samples,)
            Leaf segment of each row, ``0 .. n_clusters_ - 1``.
        """
        return np.asarray(self.transform(X).argmin(axis=1), dtype=np.int64)

    def fit_transform(self, X: ArrayLike, y: Any = None) -> FloatArray:  # noqa: ARG002
        """``fit(X)`` then ``transform(X)``: each row's distance to each leaf centre."""
        return self.fit(X).transform(X)
