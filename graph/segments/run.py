"""One segmentation run: features from the graph, clustering, names, and the result written back."""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from sklearn.metrics import adjusted_rand_score
from sklearn.pipeline import Pipeline

from graph.db import Graph
from graph.errors import InvalidInput
from graph.features.registry import DEFAULT_SELECTION, TOPIC_PREFIX, log_scaled, select
from graph.features.table import FeatureTable, build_feature_table, latest_activity
from graph.recommend.blend import tune_blend
from graph.recommend.interactions import read_interactions
from graph.recommend.items import (
    drop_item_neighbours_except,
    item_neighbours_of,
    write_item_neighbours,
)
from graph.recommend.limits import FAVOURITES, PERSONA_TOPS, TYPICAL_MEMBERS
from graph.recommend.neighbours import (
    drop_similar_users_except,
    similar_users_of,
    write_similar_users,
)
from graph.segments import queries as q
from graph.segments.engine import Family, HierarchicalSegmenter, make_preparation
from graph.segments.naming import SegmentName, name_segments
from graph.segments.personas import (
    PersonaMatch,
    PreviousPersona,
    align_centers,
    match_personas,
)
from graph.segments.publish import PendingRun, sweep
from graph.segments.separation import TopicSeparation, topic_separation
from graph.version import code_version

log = logging.getLogger(__name__)
# A run still being written whose writer has not written for this long was abandoned (killed,
# or Neo4j restarted under it); the next run takes it apart. Writing never pauses this long.
ABANDONED_AFTER = timedelta(minutes=10)


class SegmentationEngine(Protocol):
    """What differs between engines: how the feature table is read and how the segmenter is
    fitted. Naming, persona matching and writing the run are the same code for every engine."""

    name: str

    def feature_table(self, graph: Graph, as_of: datetime | None) -> FeatureTable: ...

    def fit(self, Z: np.ndarray[Any, Any], **params: Any) -> HierarchicalSegmenter: ...


class InProcessEngine:
    """Features over the driver and scikit-learn in this process (the default)."""

    name = "in-process"

    def feature_table(self, graph: Graph, as_of: datetime | None) -> FeatureTable:
        return build_feature_table(graph, as_of=as_of)

    def fit(self, Z: np.ndarray[Any, Any], **params: Any) -> HierarchicalSegmenter:
        return HierarchicalSegmenter(**params).fit(Z)


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
    persona_ids: list[str]
    agreement: dict[str, Any]
    stability: float
    """Mean adjusted Rand index of resampled refits against the run (NaN when not measured)."""
    segment_stability: list[float]
    """Per leaf segment: mean best Jaccard index with the refits' segments."""
    clear_structure: bool
    structure_note: str
    topic_separation: TopicSeparation | None = None
    """Whether the personas differ by what people talk about (runs with topics only)."""
    topic_weight: float | None = None
    """The weight the topic shares had in distances (runs with topics only)."""
    topic_weight_choice: str = ""
    """How "auto" chose it: each weight tried with its k's stability under resampling."""


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
    algorithm: str = "agglomerative",
    features: Sequence[str] = DEFAULT_SELECTION,
    distance_threshold: float | None = None,
    connectivity: int | None = None,
    match_threshold: float = 1.5,
    runs_dir: Path | None = None,
    on_progress: Callable[[str], None] | None = None,
    abandoned_after: timedelta = ABANDONED_AFTER,
    as_of: datetime | None = None,
    engine: SegmentationEngine | None = None,
    topic_weight: float | str | None = None,
) -> RunResult:
    """Segment every user and record the run; earlier runs stay as history.

    Leaf segments are matched to the previous run's personas (``match_threshold`` in z units),
    so persona ids stay stable; the run records its agreement with the previous one, its
    stability under resampling, and whether the population has a clear structure at all.
    Recency is measured against ``as_of`` (default: the data's latest activity), stored on the
    run: the same data and settings give the same segments and personas whenever run.
    The run is written in bounded transactions and becomes visible in one step when complete
    (``publish.py``); a run that fails is removed and recorded as a ``:FailedRun``. With
    ``runs_dir``, the fitted preparation pipeline and model are saved in ``runs_dir/<run id>/``
    with the default pictures (dendrogram, choice of k, elbow); `personas plot` draws the rest.
    ``engine`` reads the features and fits the segmenter (default: ``InProcessEngine``; the
    Spark one is in spark_engine.py). When the table has topics, they weigh ``topic_weight``
    (default: the setting; "auto": the segmenter chooses the smallest weight whose personas
    are stable, ``HierarchicalSegmenter``) against the other features together, and the run
    records the weight and whether its personas differ by what people talk about
    (``topic_separation``).
    """
    engine = engine or InProcessEngine()
    if topic_weight is None:
        from graph.settings import Settings

        topic_weight = Settings().topic_weight
    note = on_progress or (lambda msg: log.info(msg))
    swept = sweep(graph, abandoned_after)
    if swept.discarded:
        note(f"removed {len(swept.discarded)} abandoned run(s): {', '.join(swept.discarded)}")
    if as_of is not None:
        latest = latest_activity(graph)
        if as_of < latest:
            # The table holds every stored event, so users seen after as_of would have a
            # negative recency: a time before the data's end is not a view of the past.
            raise InvalidInput(
                f"as_of {as_of.isoformat()} is before the latest activity in the graph "
                f"({latest.isoformat()}); recency is measured from a time at or after it")
    note("reading features from the graph")
    full = engine.feature_table(graph, as_of)
    table = full.select(select(full.names, features))
    if len(table.user_ids) < 3:
        raise InvalidInput(f"need at least 3 users to segment, found {len(table.user_ids)}")
    previous_rows = graph.rows(q.PREVIOUS_RUN_PERSONAS)
    warnings = feature_warnings(table)
    # Topics are prepared at weight 1; the segmenter scales them by the weight it uses.
    prep = preparation(table.names)
    Z = prep.fit_transform(table.X)
    outliers = prep.named_steps["clip"].n_outliers_
    # Names, persona matching and the upper levels read plain z-scores (what "differs clearly"
    # means in the phrase books), whatever weights the distances used.
    plain = make_preparation(table.names, log_scaled(table.names))
    Zn = plain.fit_transform(table.X)
    note(f"clustering {Z.shape[0]} users on {Z.shape[1]} features")
    previous_k = len(previous_rows) or None
    model = engine.fit(Z, n_clusters=n_clusters, k_max=k_max, algorithm=algorithm,
                       distance_threshold=distance_threshold, connectivity=connectivity,
                       preferred_k=previous_k, topic_columns=topic_columns(table.names),
                       topic_weight=topic_weight)
    # The space the segmenter measured distances in (topics at the weight it used).
    Zw = Z * model.feature_scale_
    if table.topics:
        note(f"topic weight {model.topic_weight_:g}"
             + (f" (chosen: {weight_summary(model.weight_choice_)})"
                if model.weight_choice_ else " (set)"))
    if not model.clear_structure_:
        warnings.append(model.structure_note_)
    for warning in warnings:
        log.warning("segmentation: %s", warning)
    centers_z = np.vstack([Zn[model.labels_ == c].mean(axis=0)
                           for c in range(model.n_clusters_)])
    names = name_segments(centers_z, table.names,
                          share_led=share_led(model.cluster_centers_, Zw.mean(axis=0), table.names))
    raw_centers = np.vstack([table.X[model.labels_ == c].mean(axis=0)
                             for c in range(model.n_clusters_)])
    previous = [PreviousPersona(r["persona_id"], r["name"], r["description"],
                                dict(zip(r["features"], r["raw_center"], strict=True)))
                for r in previous_rows if r["raw_center"] is not None]
    previous_z = (plain.transform(align_centers(previous, table.names, table.X.mean(axis=0)))
                  if previous else np.zeros((0, Zn.shape[1])))
    matches = match_personas(centers_z, [(n.name, n.description) for n in names],
                             previous, previous_z, match_threshold)
    agreement = _agreement_with_previous(graph, previous_rows, table.user_ids, model.labels_,
                                         matches)
    # Each member's distance to the centre of its own leaf (its tree label, not the nearest).
    distances = np.take_along_axis(model.transform(Z), model.labels_[:, None], axis=1)[:, 0]
    ari = planted_agreement(table, model.labels_)
    separation = topic_separation(table, model.labels_, names) if table.topics else None
    run_id = f"run-{table.snapshot_at:%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:6]}"
    sizes = np.bincount(model.labels_, minlength=model.n_clusters_).tolist()
    run_props = {
        "id": run_id,
        "algorithm": (f"agglomerative-{model.linkage}" if model.algorithm_ == "agglomerative"
                      else model.algorithm_),
        "scalable_path": bool(model.scalable_),
        "engine": engine.name,
        "params": json.dumps(model.get_params()), "features": table.names,
        "n_users": len(table.user_ids), "k": model.n_clusters_,
        "k_reason": model.k_reason_, "silhouette": model.silhouette_,
        "silhouette_by_k": json.dumps(model.scores_),
        "selection_by_k": json.dumps(model.selection_),
        "topics": [f"{t.label}: {', '.join(term for term, _ in t.terms[:8])}"
                   for t in table.topics],
        "topics_json": json.dumps([t.to_dict() for t in table.topics]),
        "topic_weight": model.topic_weight_ if table.topics else None,
        "topic_weight_choice": (json.dumps({str(w): c for w, c in model.weight_choice_.items()})
                                if model.weight_choice_ else None),
        "topic_separation": json.dumps(separation.to_dict()) if separation else None,
        "stability_ari": model.stability_,
        "stability_by_k": json.dumps(model.stability_by_k_),
        "clear_structure": model.clear_structure_,
        "warnings": warnings,
        "outliers_clipped": outliers,
        "snapshot_at": table.snapshot_at,
        "as_of": table.as_of,
        "levels": model.level_ks_,
        "code_version": code_version(),
        "planted_ari": ari,
        "match_threshold": match_threshold,
        **agreement,
    }

    def seg_props(level: int, label: str, n: SegmentName, size: int,
                  center: list[float]) -> dict[str, Any]:
        return {"level": level, "label": label, "description": n.description,
                "why": json.dumps(n.why), "size": size, "center": center}

    # The median member distance lets the API turn a user's distance into a confidence.
    medians = [float(np.median(distances[model.labels_ == c])) for c in range(model.n_clusters_)]
    leaves = [{"id": f"{run_id}-L0-{c}",
               "props": {**seg_props(0, matches[c].name, names[c], sizes[c],
                                     centers_z[c].tolist()),
                         "raw_center": raw_centers[c].tolist(),
                         "median_distance": medians[c],
                         "stability": float(model.segment_stability_[c])}}
              for c in range(model.n_clusters_)]
    parents, links = upper_levels(run_id, model, Zw, table.names, seg_props, Zn)
    personas = [{"segment_id": f"{run_id}-L0-{c}", "persona_id": matches[c].persona_id,
                 "name": matches[c].name, "description": matches[c].description}
                for c in range(model.n_clusters_)]
    at = table.snapshot_at.isoformat()
    members = [{"user_id": uid, "segment_id": f"{run_id}-L0-{int(label)}",
                "distance": float(dist)}
               for uid, label, dist in zip(table.user_ids, model.labels_, distances, strict=True)]

    note("finding similar users and similar items for recommendations")
    # One read of every interaction, as columns, for all three (``interactions``).
    interactions = read_interactions(graph)
    note(f"read {len(interactions.user):,} interactions of {interactions.n_users:,} users")
    similar = list(similar_users_of(interactions))
    note(f"similar users found for {len(similar):,} users")
    neighbours = item_neighbours_of(interactions)
    note(f"item neighbours found for {len(neighbours):,} items")
    # How much each of the two weighs per request, learned on this data (``blend``).
    blend = tune_blend(interactions)
    del interactions
    run_props.update(blend.run_props())
    note(f"recommendation blend: item {blend.item}, similar users {blend.similar} "
         f"(validation NDCG@10 {blend.validation_ndcg} over {blend.validation_users} users)")
    note(f"writing run {run_id}: {model.n_clusters_} segments, {len(members)} members")
    pending = PendingRun(graph, run_id)
    try:
        pending.begin(run_props)
        pending.segments(leaves + parents, links)
        pending.members(members, lambda done, total: note(f"memberships {done:,}/{total:,}"))
        # What the recommender reads instead of traversing per request: each segment's
        # favourites (``FAVOURITE``), each user's similar users (``SIMILAR_TO``) and each
        # item's neighbours (``SIMILAR_ITEM``); the last two carry the run id, and only the
        # latest published run's are read.
        note("writing segment favourites")
        pending.favourites(TYPICAL_MEMBERS, FAVOURITES)
        note("writing each persona's top categories and items")
        pending.tops(PERSONA_TOPS)
        note(f"writing similar users ({len(similar):,} users)")
        write_similar_users(graph, run_id, similar)
        note(f"writing item neighbours ({len(neighbours):,} items)")
        write_item_neighbours(graph, run_id, neighbours)
        note("publishing the run")
        pending.publish(personas)
    except BaseException as exc:
        try:
            pending.discard(f"{type(exc).__name__}: {exc}")
        except Exception:  # the sweep before the next run takes it apart instead
            log.exception("segmentation: run %s could not be removed now", run_id)
        raise
    note("writing persona history")
    pending.write_history(at)
    note("dropping earlier runs' similar users and item neighbours")
    drop_similar_users_except(graph, run_id)
    drop_item_neighbours_except(graph, run_id)
    plots: list[Path] = []
    if runs_dir is not None:
        from graph.segments.artifacts import RunArtifacts, save
        from graph.segments.plots import DEFAULT_KINDS, render

        artifacts = RunArtifacts.build(run_id, prep, model, table.names,
                                       [m.name for m in matches], Zw)
        folder = save(artifacts, runs_dir)
        plots = [render(kind, artifacts, folder / f"{kind}.png") for kind in DEFAULT_KINDS]
    return RunResult(run_id, len(table.user_ids), model.n_clusters_, model.silhouette_,
                     model.k_reason_, names, sizes, model.labels_.tolist(), table.user_ids, ari,
                     plots, [m.persona_id for m in matches], agreement, model.stability_,
                     model.segment_stability_.tolist(), model.clear_structure_,
                     model.structure_note_, separation,
                     model.topic_weight_ if table.topics else None,
                     weight_summary(model.weight_choice_))


def topic_columns(names: Sequence[str]) -> list[int]:
    """The columns of the topic shares, the family whose weight the segmenter chooses."""
    return [j for j, name in enumerate(names) if name.startswith(TOPIC_PREFIX)]


def weight_summary(choice: dict[float, dict[str, Any]]) -> str:
    """The topic weights tried, in words: each one's k and its resampled ks and agreement."""
    return "; ".join(
        f"{w:g}: k={c['k']}, resamples k {','.join(map(str, c['resample_ks']))}, ARI "
        f"{c['resample_ari']:.2f}{' stable' if c['stable'] else ''}" for w, c in choice.items())


def preparation(names: Sequence[str], topic_weight: float = 1.0) -> Pipeline:
    """The preparation a run fits on its feature table. Without topics, every feature is
    z-scored. With topics, the topic shares are one compositional family weighing
    ``topic_weight`` against every other feature together: on a real chat corpus, activity
    (sessions, tenure, messages per session) split users more sharply than ten z-scored topic
    columns, so the stable personas were activity bands (docs/performance.md). A run prepares
    them at weight 1 and lets the segmenter scale them (``HierarchicalSegmenter.topic_weight``,
    the same distances as preparing them at that weight)."""
    topics = tuple(n for n in names if n.startswith(TOPIC_PREFIX))
    families = [Family("topics", topics, topic_weight, compositional=True)] if topics else []
    return make_preparation(names, log_scaled(names), families=families)


def share_led(centers: np.ndarray[Any, Any], middle: np.ndarray[Any, Any],
              names: Sequence[str]) -> list[bool]:
    """Per segment (``centers`` in the prepared space the segmenter saw), whether its topic
    shares take it further from the population's centre than all its other features do: the
    topics made the segment, so it is named from them."""
    topics = np.array([n.startswith(TOPIC_PREFIX) for n in names])
    if not topics.any():
        return [False] * len(centers)
    away = (centers - middle) ** 2
    return [bool(row[topics].sum() >= row[~topics].sum()) for row in away]


def upper_levels(
    run_id: str,
    model: HierarchicalSegmenter,
    Z: np.ndarray[Any, Any],
    feature_names: list[str],
    seg_props: Callable[..., dict[str, Any]],
    Zn: np.ndarray[Any, Any] | None = None,
) -> tuple[list[dict[str, Any]], list[dict[str, str]]]:
    """Segments of every level above the leaves, named from their centres, and the CHILD_OF
    links from each level to the next (the top level is one root holding every user). ``Z``
    is the space the segmenter saw, ``Zn`` plain z-scores (default ``Z``) for the names and
    the stored centres."""
    segments: list[dict[str, Any]] = []
    links: list[dict[str, str]] = []
    plain = Z if Zn is None else Zn
    for level in range(1, len(model.level_ks_)):
        k, labels = model.level_ks_[level], model.level_labels_[level]
        centers = np.vstack([plain[labels == c].mean(axis=0) for c in range(k)])
        sizes = np.bincount(labels, minlength=k).tolist()
        if k == 1:
            root = SegmentName("All Users", "Every segmented user.", [])
            level_names = [root]
        else:
            prepared = np.vstack([Z[labels == c].mean(axis=0) for c in range(k)])
            level_names = name_segments(centers, feature_names,
                                        share_led=share_led(prepared, Z.mean(axis=0),
                                                            feature_names))
        for c in range(k):
            segments.append({"id": f"{run_id}-L{level}-{c}",
                             "props": seg_props(level, level_names[c].name, level_names[c],
                                                sizes[c], centers[c].tolist())})
        below = model.level_labels_[level - 1]
        for child in range(model.level_ks_[level - 1]):
            parent = int(labels[below == child][0])
            links.append({"child": f"{run_id}-L{level - 1}-{child}",
                          "parent": f"{run_id}-L{level}-{parent}"})
    return segments, links


def feature_warnings(table: FeatureTable, max_missing: float = 0.3) -> list[str]:
    """Features that cannot help: constant ones, and ones missing for many users."""
    out = []
    for j, name in enumerate(table.names):
        column = table.X[:, j]
        missing = float(np.isnan(column).mean())
        if missing > max_missing:
            out.append(f"feature {name} is missing for {missing:.0%} of users")
        elif np.nanstd(column) == 0:
            out.append(f"feature {name} has no variance")
    return out


def _agreement_with_previous(
    graph: Graph,
    previous_rows: list[dict[str, Any]],
    user_ids: list[str],
    labels: np.ndarray[Any, Any],
    matches: list[PersonaMatch],
) -> dict[str, Any]:
    """ARI with the previous run over the users in both, and how many changed persona."""
    if not previous_rows:
        return {"previous_run_id": None, "ari_vs_previous": None, "users_moved": None,
                "new_personas": len(matches)}
    run_id = previous_rows[0]["run_id"]
    persona_of_segment = {r["segment_id"]: r["persona_id"] for r in previous_rows}
    before = {r["user_id"]: r["segment_id"] for r in graph.rows(q.RUN_MEMBERS, run_id=run_id)}
    common = [(before[u], int(label)) for u, label in zip(user_ids, labels, strict=True)
              if u in before]
    moved = sum(1 for seg, label in common
                if persona_of_segment.get(seg) != matches[label].persona_id)
    ari = (float(adjusted_rand_score([s for s, _ in common], [lab for _, lab in common]))
           if common else None)
    return {"previous_run_id": run_id, "ari_vs_previous": ari, "users_moved": moved,
            "new_personas": sum(m.is_new for m in matches)}
