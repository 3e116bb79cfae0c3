"""Pictures of a segmentation run, drawn from its saved artifacts."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no display on servers

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from scipy.cluster.hierarchy import dendrogram  # noqa: E402
from sklearn.decomposition import PCA  # noqa: E402
from sklearn.manifold import TSNE  # noqa: E402
from sklearn.metrics import silhouette_samples  # noqa: E402

from graph.errors import InvalidInput  # noqa: E402
from graph.segments.artifacts import RunArtifacts  # noqa: E402
from graph.segments.engine import HierarchicalSegmenter, cluster_roots  # noqa: E402

FIGSIZE = (10, 6)
DPI = 100
TSNE_SAMPLE = 2000
SILHOUETTE_SAMPLE = 3000
DEFAULT_KINDS = ("dendrogram", "k-choice", "elbow")


def linkage_matrix(model: HierarchicalSegmenter) -> np.ndarray:
    """The fitted merge tree in SciPy's linkage format (children, distance, size).

    Sizes count tree leaves (users, or micro-clusters and flat segments), as SciPy requires;
    the leaf labels carry the user counts."""
    n = model.n_units_
    counts = np.zeros(n - 1)
    for i, (a, b) in enumerate(model.children_):
        counts[i] = sum(1 if c < n else counts[c - n] for c in (a, b))
    return np.column_stack([model.children_, model.distances_, counts]).astype(float)


def _legend_labels(a: RunArtifacts) -> list[str]:
    sizes = np.bincount(a.model.labels_, minlength=a.model.n_clusters_)
    return [f"{name} ({sizes[c]})" for c, name in enumerate(a.persona_names)]


def draw_dendrogram(a: RunArtifacts, fig: Figure) -> None:
    """Truncated at the chosen k, each leaf labelled with its persona and size."""
    model = a.model
    roots = cluster_roots(model.children_, model.n_units_, model.n_clusters_)
    label_of_root = {int(r): int(model.unit_labels_[i]) for i, r in enumerate(roots)}
    labels = _legend_labels(a)
    ax = fig.add_subplot()
    dendrogram(linkage_matrix(model), truncate_mode="lastp", p=model.n_clusters_,
               leaf_label_func=lambda node: labels[label_of_root[node]]
               if node in label_of_root else str(node), leaf_rotation=20, ax=ax)
    ax.set_title(f"Segment hierarchy ({model.linkage} linkage, {model.n_clusters_} segments)")
    ax.set_ylabel("merge distance")


def _by_k(a: RunArtifacts, metric: str, ylabel: str, title: str, fig: Figure) -> None:
    ax = fig.add_subplot()
    sel = a.model.selection_
    if sel:
        ks = sorted(sel)
        ax.plot(ks, [sel[k][metric] for k in ks], marker="o")
    ax.axvline(a.model.n_clusters_, color="tab:red", linestyle="--",
               label=f"chosen k = {a.model.n_clusters_}")
    ax.set_xlabel("number of segments k")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend()


def draw_k_choice(a: RunArtifacts, fig: Figure) -> None:
    _by_k(a, "silhouette", "silhouette", "Choice of k: silhouette", fig)


def draw_elbow(a: RunArtifacts, fig: Figure) -> None:
    _by_k(a, "wcss", "within-cluster sum of squares", "Elbow curve", fig)


def draw_silhouette(a: RunArtifacts, fig: Figure) -> None:
    """Per-user silhouette, grouped by segment (on a sample)."""
    n = min(SILHOUETTE_SAMPLE, a.Z_sample.shape[0])
    Z, labels = a.Z_sample[:n], a.labels_sample[:n]
    ax = fig.add_subplot()
    if len(set(labels.tolist())) < 2:
        ax.set_title("Silhouette needs two segments or more")
        return
    values = silhouette_samples(Z, labels)
    y = 0
    names = _legend_labels(a)
    for c in range(a.model.n_clusters_):
        vals = np.sort(values[labels == c])
        ax.fill_betweenx(np.arange(y, y + len(vals)), 0, vals, alpha=0.8, label=names[c])
        y += len(vals) + 10
    ax.axvline(float(values.mean()), color="black", linestyle="--", label="mean")
    ax.set_xlabel("silhouette")
    ax.set_yticks([])
    ax.set_title(f"Silhouette by segment ({n} users)")
    ax.legend(loc="lower right", fontsize="small")


def _scatter(a: RunArtifacts, xy: np.ndarray, title: str, fig: Figure,
             labels: np.ndarray) -> None:
    ax = fig.add_subplot()
    names = _legend_labels(a)
    for c in range(a.model.n_clusters_):
        mask = labels == c
        ax.scatter(xy[mask, 0], xy[mask, 1], s=6, alpha=0.6, label=names[c])
    ax.set_title(title)
    ax.legend(markerscale=3, fontsize="small")


def draw_pca(a: RunArtifacts, fig: Figure) -> None:
    xy = PCA(n_components=2, random_state=0).fit_transform(a.Z_sample)
    _scatter(a, xy, f"Segments on the first two principal components ({len(xy)} users)", fig,
             a.labels_sample)


def draw_tsne(a: RunArtifacts, fig: Figure) -> None:
    n = min(TSNE_SAMPLE, a.Z_sample.shape[0])
    perplexity = float(min(30, max(2, n // 4)))
    xy = TSNE(n_components=2, random_state=0, perplexity=perplexity,
              init="pca").fit_transform(a.Z_sample[:n])
    _scatter(a, xy, f"Segments in a t-SNE map ({n} users)", fig, a.labels_sample[:n])


def draw_profile(a: RunArtifacts, fig: Figure) -> None:
    """Each persona's centre, feature by feature, in standard deviations from the mean."""
    centers = a.model.cluster_centers_
    names = a.feature_names if centers.shape[1] == len(a.feature_names) else [
        f"component {i + 1}" for i in range(centers.shape[1])]
    ax = fig.add_subplot()
    limit = max(1.0, float(np.abs(centers).max()))
    image = ax.imshow(centers.T, cmap="RdBu_r", vmin=-limit, vmax=limit, aspect="auto")
    ax.set_xticks(range(centers.shape[0]), _legend_labels(a), rotation=20, ha="right")
    ax.set_yticks(range(len(names)), names, fontsize="small")
    ax.set_title("Feature profile per persona (z-score of the segment centre)")
    fig.colorbar(image, ax=ax, label="z-score")


KINDS: dict[str, Callable[[RunArtifacts, Figure], None]] = {
    "dendrogram": draw_dendrogram,
    "k-choice": draw_k_choice,
    "elbow": draw_elbow,
    "silhouette": draw_silhouette,
    "pca": draw_pca,
    "tsne": draw_tsne,
    "profile": draw_profile,
}


def check_kind(kind: str) -> Callable[[RunArtifacts, Figure], None]:
    draw = KINDS.get(kind)
    if draw is None:
        raise InvalidInput(f"unknown picture kind {kind!r}; choose from {', '.join(KINDS)}")
    return draw


def render(kind: str, artifacts: RunArtifacts, path: Path) -> Path:
    """Draw one picture of the run as a PNG of FIGSIZE x DPI pixels."""
    draw = check_kind(kind)
    fig = plt.figure(figsize=FIGSIZE, dpi=DPI)
    try:
        draw(artifacts, fig)
        fig.tight_layout()
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path)
    finally:
        plt.close(fig)
    return path
