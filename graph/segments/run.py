"""One segmentation run: features from the graph, clustering, names, and the result written back."""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.metrics import adjusted_rand_score

from graph.db import Graph
from graph.features.table import LOG_FEATURES, FeatureTable, build_feature_table
from graph.segments import queries as q
from graph.segments.engine import HierarchicalSegmenter, make_preparation
from graph.segments.naming import SegmentName, name_segments, slug

log = logging.getLogger(__name__)
WRITE_BATCH = 5000


@dataclass(frozen=True)
class RunResult:
    run_id: str
    n_users: int
    n_segments: int
    silhouette: float
    k_reason: str
    names: list[SegmentName]
    sizes: list[int]
    labels: list[int]
    user_ids: list[str]
    planted_ari: float | None
    plots: list[Path]


def planted_agreement(table: FeatureTable, labels: np.ndarray[Any, Any]) -> float | None:
    """Adjusted Rand index against the demo's planted groups, when every user has one."""
    if not table.planted or any(p is None for p in table.planted):
        return None
    return float(adjusted_rand_score(table.planted, labels))


def run_segmentation(
    graph: Graph,
    *,
    n_clusters: int | None = None,
    k_max: int = 10,
    plots_dir: Path | None = None,
    on_progress: Callable[[str], None] | None = None,
) -> RunResult:
    """Segment every user and record the run; earlier runs stay as history.

    With ``plots_dir``, the dendrogram and the choice-of-k chart go to ``plots_dir/<run id>/``.
    """
    note = on_progress or (lambda msg: log.info(msg))
    note("reading features from the graph")
    table = build_feature_table(graph)
    if len(table.user_ids) < 3:
        raise ValueError(f"need at least 3 users to segment, found {len(table.user_ids)}")
    prep = make_preparation(table.names, LOG_FEATURES)
    Z = prep.fit_transform(table.X)
    note(f"clustering {Z.shape[0]} users on {Z.shape[1]} features")
    model = HierarchicalSegmenter(n_clusters=n_clusters, k_max=k_max).fit(Z)
    names = name_segments(model.cluster_centers_, table.names)
    parent_centers = np.vstack([Z[model.parent_labels_ == p].mean(axis=0)
                                for p in range(model.parent_n_clusters_)])
    parent_names = name_segments(parent_centers, table.names)
    distances = model.distances(Z)
    ari = planted_agreement(table, model.labels_)
    run_id = f"run-{table.snapshot_at:%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:6]}"
    sizes = np.bincount(model.labels_, minlength=model.n_clusters_).tolist()
    parent_sizes = np.bincount(model.parent_labels_,
                               minlength=model.parent_n_clusters_).tolist()
    run_props = {
        "id": run_id, "algorithm": f"agglomerative-{model.linkage}",
        "params": json.dumps(model.get_params()), "features": table.names,
        "n_users": len(table.user_ids), "k": model.n_clusters_,
        "k_reason": model.k_reason_, "silhouette": model.silhouette_,
        "silhouette_by_k": json.dumps(model.scores_),
        "snapshot_at": table.snapshot_at,
        "planted_ari": ari,
    }

    def seg_props(level: int, label: str, n: SegmentName, size: int,
                  center: list[float]) -> dict[str, Any]:
        return {"level": level, "label": label, "description": n.description,
                "why": json.dumps(n.why), "size": size, "center": center}

    leaves = [{"id": f"{run_id}-L0-{c}",
               "props": seg_props(0, names[c].name, names[c], sizes[c],
                                  model.cluster_centers_[c].tolist())}
              for c in range(model.n_clusters_)]
    parents = [{"id": f"{run_id}-L1-{p}",
                "props": seg_props(1, parent_names[p].name, parent_names[p], parent_sizes[p],
                                   parent_centers[p].tolist())}
               for p in range(model.parent_n_clusters_)]
    links = [{"child": f"{run_id}-L0-{c}", "parent": f"{run_id}-L1-{int(model.leaf_parent_[c])}"}
             for c in range(model.n_clusters_)]
    personas = [{"segment_id": f"{run_id}-L0-{c}", "persona_id": slug(names[c].name),
                 "name": names[c].name, "description": names[c].description}
                for c in range(model.n_clusters_)]
    members = [{"user_id": uid, "segment_id": f"{run_id}-L0-{int(label)}",
                "distance": float(dist)}
               for uid, label, dist in zip(table.user_ids, model.labels_, distances, strict=True)]

    note(f"writing run {run_id}: {model.n_clusters_} segments")

    def write(tx: Any) -> None:
        tx.run(q.CREATE_RUN, run=run_props).consume()
        tx.run(q.CREATE_SEGMENTS, run_id=run_id, rows=leaves + parents).consume()
        tx.run(q.LINK_SEGMENT_PARENTS, rows=links).consume()
        tx.run(q.UPSERT_PERSONAS, rows=personas).consume()
        for start in range(0, len(members), WRITE_BATCH):
            tx.run(q.ASSIGN_USERS, run_id=run_id,
                   rows=members[start:start + WRITE_BATCH]).consume()

    # One transaction: a run is visible whole or not at all.
    graph.write(write)
    plots: list[Path] = []
    if plots_dir is not None:
        from graph.segments.plots import plot_dendrogram, plot_k_choice

        folder = plots_dir / run_id
        folder.mkdir(parents=True, exist_ok=True)
        plots = [plot_dendrogram(model, [n.name for n in names], folder / "dendrogram.png"),
                 plot_k_choice(model, folder / "k-choice.png")]
    return RunResult(run_id, len(table.user_ids), model.n_clusters_, model.silhouette_,
                     model.k_reason_, names, sizes, model.labels_.tolist(), table.user_ids, ari,
                     plots)
