"""Pictures of a segmentation: the dendrogram and the choice of k."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no display on servers

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from scipy.cluster.hierarchy import dendrogram  # noqa: E402

from graph.segments.engine import HierarchicalSegmenter, cluster_roots  # noqa: E402

FIGSIZE = (10, 6)
DPI = 100


def linkage_matrix(model: HierarchicalSegmenter) -> np.ndarray:
    """The fitted merge tree in SciPy's linkage format (children, distance, size)."""
    n = model.n_units_
    counts = np.zeros(n - 1)
    for i, (a, b) in enumerate(model.children_):
        counts[i] = sum(model.unit_sizes_[c] if c < n else counts[c - n] for c in (a, b))
    return np.column_stack([model.children_, model.distances_, counts]).astype(float)


def plot_dendrogram(model: HierarchicalSegmenter, names: Sequence[str], path: Path) -> Path:
    """Dendrogram truncated at the chosen k, each leaf labelled with its persona and size."""
    roots = cluster_roots(model.children_, model.n_units_, model.n_clusters_)
    label_of_root = {int(r): int(model.unit_labels_[i]) for i, r in enumerate(roots)}
    sizes = np.bincount(model.labels_)

    def leaf_label(node: int) -> str:
        c = label_of_root.get(node)
        return f"{names[c]} ({sizes[c]})" if c is not None else str(node)

    fig, ax = plt.subplots(figsize=FIGSIZE, dpi=DPI)
    dendrogram(linkage_matrix(model), truncate_mode="lastp", p=model.n_clusters_,
               leaf_label_func=leaf_label, leaf_rotation=20, ax=ax)
    ax.set_title(f"Segment hierarchy ({model.linkage} linkage, {model.n_clusters_} segments)")
    ax.set_ylabel("merge distance")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def plot_k_choice(model: HierarchicalSegmenter, path: Path) -> Path:
    """Silhouette by k, with the chosen k marked (the elbow-style view of model selection)."""
    fig, ax = plt.subplots(figsize=FIGSIZE, dpi=DPI)
    if model.scores_:
        ks = sorted(model.scores_)
        ax.plot(ks, [model.scores_[k] for k in ks], marker="o")
    ax.axvline(model.n_clusters_, color="tab:red", linestyle="--",
               label=f"chosen k = {model.n_clusters_}")
    ax.set_xlabel("number of segments k")
    ax.set_ylabel("silhouette")
    ax.set_title("Choice of k")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
