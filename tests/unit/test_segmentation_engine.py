from __future__ import annotations

import itertools

import numpy as np
import pytest
from sklearn.datasets import make_blobs
from sklearn.metrics import adjusted_rand_score

from graph.migrate import split_statements
from graph.segments.engine import HierarchicalSegmenter, cut_tree, make_preparation
from graph.segments.naming import name_segments
from graph.segments.synthetic import planted_population


def test_picks_k_and_recovers_blobs() -> None:
    X, y = make_blobs(n_samples=300, centers=5, n_features=6, random_state=1, cluster_std=0.8)
    model = HierarchicalSegmenter().fit(X)
    assert model.n_clusters_ == 5
    assert adjusted_rand_score(y, model.labels_) > 0.95
    assert (model.predict(X) == model.labels_).mean() > 0.95
    assert model.cluster_centers_.shape == (5, 6)


def test_levels_nest() -> None:
    X, _ = make_blobs(n_samples=120, centers=6, random_state=2)
    model = HierarchicalSegmenter(n_clusters=6, parent_clusters=3).fit(X)
    for leaf in range(6):
        parents = set(model.parent_labels_[model.labels_ == leaf])
        assert parents == {model.leaf_parent_[leaf]}


def test_cut_tree_counts() -> None:
    X, _ = make_blobs(n_samples=50, centers=3, random_state=3)
    children = HierarchicalSegmenter(n_clusters=3).fit(X).children_
    for k in (1, 2, 7, 50):
        assert len(set(cut_tree(children, 50, k))) == k


def union_find_cut(children: np.ndarray, n: int, k: int) -> np.ndarray:
    """``cut_tree`` as it was: the first n - k merges by union-find, labels by first
    appearance."""
    parent = list(range(2 * n - 1))

    def find(i: int) -> int:
        while parent[i] != i:
            i = parent[i]
        return i

    for step in range(n - k):
        a, b = children[step]
        parent[find(int(a))] = parent[find(int(b))] = n + step
    order: dict[int, int] = {}
    return np.array([order.setdefault(find(i), len(order)) for i in range(n)])


@pytest.mark.parametrize("n", [3, 10, 257, 3000])
def test_cut_tree_equals_the_merges_applied_one_by_one(n: int) -> None:
    """Every cut of Ward's tree and of a chain (each merge takes the previous node: the
    deepest tree) labels every user as applying its merges one at a time does."""
    X = np.random.default_rng(n).normal(size=(n, 3))
    ward = HierarchicalSegmenter(n_clusters=2, n_resamples=0).fit(X).children_
    chain = np.array([[0, 1]] + [[n + s - 1, s + 1] for s in range(1, n - 1)])
    for children in (ward, chain):
        for k in sorted({1, 2, 3, n // 2, n - 1, n} - {0}):
            got = cut_tree(children, n, k)
            assert got.dtype == np.int64
            assert got.tolist() == union_find_cut(children, n, k).tolist()


def test_preparation_logs_and_standardizes() -> None:
    X = np.array([[1.0, 100.0], [2.0, 1000.0], [3.0, 10000.0]])
    Z = make_preparation(["a", "b"], ["b"]).fit_transform(X)
    assert np.allclose(Z.mean(axis=0), 0) and np.allclose(Z.std(axis=0), 1)
    # log1p makes the tenfold steps (almost) equal
    assert np.allclose(np.diff(Z[:, 1]), np.diff(Z[:, 1])[0], rtol=1e-2)


def test_names_are_distinct_and_explained() -> None:
    features = ["purchase_frequency", "avg_discount", "tenure_days", "share:toys"]
    centers = np.array([[1.5, 0.1, 0.2, 0.0], [1.2, 0.0, 0.1, 1.0], [-1, -0.2, -1.5, 0.0]])
    names = name_segments(centers, features)
    assert names[0].name == "Frequent Shoppers"
    assert names[1].name == "Toys Fans"  # the weaker claim on "Frequent Shoppers" yields
    assert names[2].name == "New Visitors"
    assert names[2].why[0] == ("tenure_days", -1.5)
    assert len({n.name for n in names}) == 3


def test_split_statements() -> None:
    text = "// comment; not a statement\nCREATE INDEX a;\n\nCREATE INDEX b\n  FOR x;\n"
    assert split_statements(text) == ["CREATE INDEX a", "CREATE INDEX b\n  FOR x"]


@pytest.mark.parametrize("kind", ["dendrogram", "k-choice", "elbow", "silhouette", "pca",
                                  "tsne", "profile"])
def test_every_picture_kind_is_a_valid_png(tmp_path, kind: str) -> None:
    from graph.segments.artifacts import RunArtifacts, load, save
    from graph.segments.plots import DPI, FIGSIZE, render

    X, _ = make_blobs(n_samples=300, centers=3, n_features=4, random_state=4)
    prep = make_preparation(["a", "b", "c", "d"], [])
    Z = prep.fit_transform(X)
    model = HierarchicalSegmenter().fit(Z)
    artifacts = RunArtifacts.build("run-20261128T000000-abcdef", prep, model,
                                   ["a", "b", "c", "d"], ["A", "B", "C"], Z)
    save(artifacts, tmp_path)
    loaded = load(tmp_path, "run-20261128T000000-abcdef")
    path = render(kind, loaded, tmp_path / f"{kind}.png")
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    assert (width, height) == (FIGSIZE[0] * DPI, FIGSIZE[1] * DPI)


def test_run_ids_cannot_escape_the_runs_folder(tmp_path) -> None:
    from graph.errors import InvalidInput, NotFound
    from graph.segments.artifacts import load

    with pytest.raises(InvalidInput):
        load(tmp_path, "../../etc/passwd")
    with pytest.raises(NotFound):
        load(tmp_path, "run-20261128T000000-abcdef")


def test_unknown_picture_kind(tmp_path) -> None:
    from graph.errors import InvalidInput
    from graph.segments.plots import render

    with pytest.raises(InvalidInput, match="unknown picture kind"):
        render("pie", None, tmp_path / "x.png")  # type: ignore[arg-type]


def test_weighted_ward_matches_sklearn_for_unit_weights() -> None:
    from sklearn.cluster import AgglomerativeClustering

    from graph.segments.engine import weighted_ward

    X, _ = make_blobs(n_samples=60, centers=4, random_state=6)
    ref = AgglomerativeClustering(n_clusters=None, distance_threshold=0, linkage="ward").fit(X)
    children, distances = weighted_ward(X, np.ones(60, dtype=np.int64))
    assert np.allclose(np.sort(distances), np.sort(ref.distances_))
    for k in (2, 4, 7):
        assert adjusted_rand_score(cut_tree(children, 60, k), cut_tree(ref.children_, 60, k)) == 1


def test_exact_ward_is_scikit_learns_tree() -> None:
    """The exact path's tree (fastcluster on the vectors) is scikit-learn's Ward tree, merge
    for merge, on blobs and on a continuum with repeated users (ties at distance 0)."""
    from sklearn.cluster import AgglomerativeClustering

    from graph.segments.engine import exact_ward

    blobs, _ = make_blobs(n_samples=400, centers=5, n_features=8, random_state=4)
    rng = np.random.default_rng(5)
    continuum = rng.normal(size=(300, 6))
    repeated = np.vstack([continuum, continuum[:40]])
    for X in (blobs, repeated):
        ref = AgglomerativeClustering(n_clusters=None, distance_threshold=0,
                                      linkage="ward").fit(X)
        children, distances = exact_ward(X)
        assert np.allclose(distances, ref.distances_, rtol=1e-12, atol=1e-12)
        n = X.shape[0]
        for k in range(1, 12):
            assert np.array_equal(cut_tree(children, n, k), cut_tree(ref.children_, n, k))
    blob_ref = AgglomerativeClustering(n_clusters=None, distance_threshold=0,
                                       linkage="ward").fit(blobs)
    assert np.array_equal(exact_ward(blobs)[0], blob_ref.children_)


def test_transform_in_blocks_is_the_distance_to_every_centre(monkeypatch) -> None:
    from graph.segments import engine

    X, _ = make_blobs(n_samples=257, centers=4, n_features=5, random_state=8)
    model = HierarchicalSegmenter(n_clusters=4, n_resamples=0).fit(X)
    whole = np.sqrt(((X[:, None, :] - model.cluster_centers_[None]) ** 2).sum(axis=2))
    monkeypatch.setattr(engine, "TRANSFORM_BLOCK", 50)
    assert np.array_equal(model.transform(X), whole)
    assert np.array_equal(model.predict(X), whole.argmin(axis=1))


def test_stability_refits_run_on_one_thread(monkeypatch) -> None:
    """The refits on subsets are many and small: k-means' and BLAS's threads are held to one
    there (they spent more CPU waiting on each other than they saved, docs/performance.md),
    and the fit's own threads are given back after."""
    from threadpoolctl import threadpool_info

    from graph.segments import engine

    seen: list[int] = []
    refit = engine.HierarchicalSegmenter._refit

    def counting(self, X, ks):  # type: ignore[no-untyped-def]
        seen.extend(lib["num_threads"] for lib in threadpool_info())
        return refit(self, X, ks)

    monkeypatch.setattr(engine.HierarchicalSegmenter, "_refit", counting)
    before = [lib["num_threads"] for lib in threadpool_info()]
    X, _ = make_blobs(n_samples=200, centers=3, n_features=4, random_state=9)
    engine.HierarchicalSegmenter(algorithm="kmeans", n_resamples=3).fit(X)
    assert seen and set(seen) == {1}
    assert [lib["num_threads"] for lib in threadpool_info()] == before


def test_scalable_path_recovers_groups() -> None:
    X, y = make_blobs(n_samples=30_000, centers=6, n_features=8, random_state=7,
                      cluster_std=1.0)
    model = HierarchicalSegmenter(max_exact=5000, n_micro=300).fit(X)
    assert model.scalable_ and model.n_units_ <= 300
    assert model.n_clusters_ == 6
    assert adjusted_rand_score(y, model.labels_) > 0.95


def test_personas_keep_ids_and_new_group_gets_one_new_persona() -> None:
    from graph.segments.personas import PreviousPersona, align_centers, match_personas

    names = ["a", "b"]
    previous = [PreviousPersona("p1", "Alpha", "d1", {"a": 0.0, "b": 0.0}),
                PreviousPersona("p2", "Beta", "d2", {"a": 5.0, "b": 5.0})]
    prev = align_centers(previous, names, np.array([9.0, 9.0]))
    new = np.array([[5.1, 4.9], [0.1, -0.1], [-5.0, 5.0]])
    generated = [("Gen0", "g0"), ("Gen1", "g1"), ("Gen2", "g2")]
    out = match_personas(new, generated, previous, prev, threshold=1.0)
    assert [m.persona_id for m in out[:2]] == ["p2", "p1"]
    assert [m.name for m in out] == ["Gen0", "Gen1", "Gen2"]  # names describe the current run
    assert out[2].is_new and out[2].persona_id.startswith("persona-")
    assert sum(m.is_new for m in out) == 1


def test_align_fills_missing_features_with_population_mean() -> None:
    from graph.segments.personas import PreviousPersona, align_centers

    rows = align_centers([PreviousPersona("p", "n", "d", {"a": 1.0})], ["a", "new"],
                         np.array([0.0, 7.0]))
    assert rows.tolist() == [[1.0, 7.0]]


@pytest.mark.parametrize("algorithm", ["agglomerative", "kmeans", "minibatch-kmeans", "birch",
                                       "hdbscan"])
def test_every_algorithm_finds_the_groups_and_nests(algorithm: str) -> None:
    X, y = make_blobs(n_samples=600, centers=4, n_features=5, random_state=9, cluster_std=0.7)
    model = HierarchicalSegmenter(algorithm=algorithm).fit(X)
    assert model.n_clusters_ == 4, model.k_reason_
    assert adjusted_rand_score(y, model.labels_) > 0.95
    for leaf in range(4):
        assert set(model.parent_labels_[model.labels_ == leaf]) == {model.leaf_parent_[leaf]}


def test_dbscan_assigns_noise_to_the_nearest_segment() -> None:
    X, y = make_blobs(n_samples=400, centers=3, n_features=2, random_state=10, cluster_std=0.5)
    X = np.vstack([X, [[30.0, 30.0]]])
    model = HierarchicalSegmenter(algorithm="dbscan", eps=0.8).fit(X)
    assert model.n_clusters_ == 3 and model.noise_ >= 1
    assert model.labels_.min() == 0 and len(model.labels_) == 401
    assert adjusted_rand_score(y, model.labels_[:400]) > 0.95


def test_unknown_algorithm() -> None:
    with pytest.raises(ValueError, match="unknown algorithm 'spectral'"):
        HierarchicalSegmenter(algorithm="spectral").fit(np.zeros((5, 2)))


@pytest.mark.parametrize("options", [{"algorithm": "kmeans"},
                                     {"max_exact": 500, "n_micro": 50}])
def test_dendrogram_of_flat_and_scalable_runs(tmp_path, options) -> None:
    from graph.segments.artifacts import RunArtifacts
    from graph.segments.plots import render

    X, _ = make_blobs(n_samples=2000, centers=3, n_features=4, random_state=12)
    model = HierarchicalSegmenter(**options).fit(X)
    artifacts = RunArtifacts.build("run-20261128T000000-abcdef", make_preparation([], []),
                                   model, ["a", "b", "c", "d"], ["A", "B", "C"], X)
    path = render("dendrogram", artifacts, tmp_path / "d.png")
    assert path.read_bytes()[:4] == b"\x89PNG"


def test_levels_up_to_a_root_and_distance_cut() -> None:
    X, y = make_blobs(n_samples=300, centers=6, n_features=3, random_state=13, cluster_std=0.5)
    model = HierarchicalSegmenter(n_clusters=6).fit(X)
    assert model.level_ks_[0] == 6 and model.level_ks_[-1] == 1
    assert all(a > b for a, b in itertools.pairwise(model.level_ks_))
    for upper in range(1, len(model.level_ks_)):
        below, above = model.level_labels_[upper - 1], model.level_labels_[upper]
        for c in range(model.level_ks_[upper - 1]):
            assert len(set(above[below == c].tolist())) == 1
    # A threshold between the 6th- and 5th-largest merge distances gives 6 segments.
    d = np.sort(model.distances_)[::-1]
    cut = HierarchicalSegmenter(distance_threshold=float((d[4] + d[5]) / 2)).fit(X)
    assert cut.n_clusters_ == 6 and "dendrogram cut at distance" in cut.k_reason_
    assert adjusted_rand_score(y, cut.labels_) > 0.95


@pytest.mark.parametrize(("n", "max_exact"), [(1500, 20_000), (12_000, 2000)])
def test_nested_groups_recovered_at_leaf_and_parent_level(n: int, max_exact: int) -> None:
    """Exact tree (1,500 users) and the micro-cluster path (12,000 users above max_exact)."""
    pop = planted_population(n, 12, parents=2, children=3, log_columns=(0, 1), seed=5)
    names = [f"f{j}" for j in range(12)]
    Z = make_preparation(names, names[:2]).fit_transform(pop.X)
    model = HierarchicalSegmenter(max_exact=max_exact, n_micro=300).fit(Z)
    assert model.scalable_ is (n > max_exact)
    assert model.n_clusters_ == 6
    assert adjusted_rand_score(pop.leaf, model.labels_) >= 0.9
    assert model.level_ks_[:2] == [6, 2]
    assert adjusted_rand_score(pop.parent, model.level_labels_[1]) >= 0.9
    # every planted child sits inside one found parent
    for child in range(6):
        assert len(set(model.level_labels_[1][pop.leaf == child])) == 1


@pytest.mark.parametrize("linkage", ["average", "complete"])
def test_scalable_path_uses_the_asked_linkage(linkage: str) -> None:
    pop = planted_population(6000, 8, parents=2, children=2, seed=9)
    ward = HierarchicalSegmenter(n_clusters=4, max_exact=1000, n_micro=200).fit(pop.X)
    other = HierarchicalSegmenter(n_clusters=4, max_exact=1000, n_micro=200,
                                  linkage=linkage).fit(pop.X)
    assert other.scalable_
    assert not np.array_equal(ward.distances_, other.distances_)
    assert adjusted_rand_score(pop.leaf, other.labels_) >= 0.9


def test_connectivity_constraint_merges_only_neighbours() -> None:
    """Two interleaved half-moons: only a neighbourhood-constrained single-style tree follows
    the shapes; the constraint must change the tree and still find both moons."""
    from sklearn.datasets import make_moons

    X, y = make_moons(n_samples=400, noise=0.04, random_state=0)
    free = HierarchicalSegmenter(n_clusters=2, linkage="average").fit(X)
    constrained = HierarchicalSegmenter(n_clusters=2, linkage="average", connectivity=8).fit(X)
    assert adjusted_rand_score(y, constrained.labels_) > 0.95
    assert adjusted_rand_score(y, free.labels_) < adjusted_rand_score(y, constrained.labels_)


def test_stability_is_measured_and_drives_the_choice_of_k() -> None:
    X, y = make_blobs(n_samples=400, centers=4, n_features=5, random_state=21, cluster_std=0.8)
    model = HierarchicalSegmenter().fit(X)
    assert model.n_clusters_ == 4 and model.clear_structure_, model.k_reason_
    assert model.stability_ > 0.95 and "most stable" in model.k_reason_
    assert model.segment_stability_.shape == (4,) and (model.segment_stability_ > 0.9).all()
    # Every k tried with large enough segments was resampled; the one chosen is the most
    # stable of those whose silhouette is within the tolerance of the best (ties by silhouette).
    best = max(model.scores_[k] for k in model.stability_by_k_)
    acceptable = [k for k in model.stability_by_k_
                  if model.scores_[k] >= best - model.silhouette_tolerance]
    top = max(model.stability_by_k_[k] for k in acceptable)
    assert model.stability_by_k_[model.n_clusters_] >= top - model.stability_tolerance
    assert all("stability" in model.selection_[k] for k in model.stability_by_k_)


def test_a_population_without_structure_is_flagged() -> None:
    X = np.random.default_rng(3).uniform(size=(600, 6))
    model = HierarchicalSegmenter().fit(X)
    assert not model.clear_structure_
    assert model.structure_note_.startswith("no clear structure")
    assert 0.0 <= model.stability_ <= 1.0


def test_stability_without_resamples_and_with_a_given_k() -> None:
    X, _ = make_blobs(n_samples=200, centers=3, n_features=3, random_state=4)
    plain = HierarchicalSegmenter(n_resamples=0).fit(X)
    assert plain.stability_by_k_ == {} and np.isnan(plain.stability_)
    assert "best silhouette" in plain.k_reason_
    given = HierarchicalSegmenter(n_clusters=3, algorithm="kmeans").fit(X)
    assert given.stability_ > 0.95 and given.segment_stability_.shape == (3,)


def test_resampled_stability_is_reproducible() -> None:
    X = np.random.default_rng(8).normal(size=(500, 4))
    a, b = HierarchicalSegmenter().fit(X), HierarchicalSegmenter().fit(X)
    assert a.stability_by_k_ == b.stability_by_k_ and a.n_clusters_ == b.n_clusters_


def test_unstable_ward_leaves_give_way_to_steadier_kmeans_leaves() -> None:
    """On a continuum (no groups), Ward cuts differently on every resample; k-means leaves
    are steadier and are kept, with the Ward hierarchy above them."""
    X = np.random.default_rng(0).uniform(size=(500, 2))
    ward = HierarchicalSegmenter(fallback_algorithm=None).fit(X)
    model = HierarchicalSegmenter().fit(X)
    assert ward.algorithm_ == "agglomerative" and ward.stability_ < 0.75
    assert model.algorithm_ == "kmeans" and model.algorithm == "agglomerative"
    assert model.stability_ > ward.stability_ + model.stability_tolerance
    assert "Ward's segments were unstable" in model.k_reason_
    assert model.level_ks_[-1] == 1 and len(set(model.labels_.tolist())) == model.n_clusters_
    # Clear groups keep Ward's leaves.
    blobs, _ = make_blobs(n_samples=300, centers=3, n_features=4, random_state=2)
    assert HierarchicalSegmenter().fit(blobs).algorithm_ == "agglomerative"
