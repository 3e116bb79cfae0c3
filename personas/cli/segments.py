"""Segmentation: a run now, runs on a schedule, and pictures of a run."""

from __future__ import annotations

import logging
import signal
import threading
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from graph.db import Graph
from graph.errors import InvalidInput
from graph.settings import Settings
from personas.cli.common import console, fails_cleanly, log, migrated_graph, settings

if TYPE_CHECKING:
    from graph.segments.run import RunResult

def print_run(result: RunResult) -> None:
    table = Table("segment", "persona", "users", "stability", "why",
                  title=f"run {result.run_id}")
    for c, name in enumerate(result.names):
        why = ", ".join(f"{f} {z:+.2f}" for f, z in name.why)
        stability = result.segment_stability[c]
        table.add_row(str(c), name.name, str(result.sizes[c]),
                      "-" if stability != stability else f"{stability:.2f}", why)
    Console().print(table)
    console.print(f"{result.k_reason}; silhouette {result.silhouette:.3f}; "
                  f"stability (resample ARI) {result.stability:.3f}")
    if not result.clear_structure:
        console.print(f"[yellow]warning:[/yellow] {result.structure_note}")
    if result.planted_ari is not None:
        console.print(f"agreement with the demo's planted groups (ARI): {result.planted_ari:.3f}")
    for path in result.plots:
        console.print(f"picture: {path}")


@fails_cleanly
def segment_cmd(
    k: Annotated[int | None, typer.Option(
        min=2, max=100, help="Number of leaf segments (default: automatic).")] = None,
    algorithm: Annotated[str, typer.Option(
        help="agglomerative, kmeans, minibatch-kmeans, birch, dbscan or hdbscan.")
    ] = "agglomerative",
    features: Annotated[str | None, typer.Option(
        help="Comma-separated families or feature names (default: PERSONAS_SEGMENT_FEATURES).")
    ] = None,
    distance_threshold: Annotated[float | None, typer.Option(
        min=0.0, help="Cut the dendrogram at this merge distance instead of choosing k.")
    ] = None,
    connectivity: Annotated[int | None, typer.Option(
        min=2, help="Agglomerative merges only among each user's N nearest neighbours.")
    ] = None,
    engine: Annotated[str, typer.Option(
        help="in-process (scikit-learn here) or spark (features read with the Neo4j Connector "
        "for Apache Spark, micro-clusters by Spark MLlib on PERSONAS_SPARK_MASTER; needs the "
        "`spark` extra).")] = "in-process",
    as_of: Annotated[str | None, typer.Option(
        "--as-of", metavar="TIME",
        help="Measure recency against this ISO 8601 time with an offset "
             "(e.g. 2026-11-28T10:00:00Z), not before the data's latest activity "
             "(default: that latest activity).")
    ] = None,
) -> None:
    """Cluster users from graph features into named segments and write the run to the graph."""
    # scikit-learn takes seconds to import; only the commands that cluster pay for it.
    from graph.segments.engine import check_algorithm
    from personas.local.spark import check_engine, open_engine

    check_algorithm(algorithm)  # before any work, so a typo fails at once
    check_engine(engine, algorithm, connectivity)
    at = parse_as_of(as_of) if as_of is not None else None
    cfg = settings()
    with migrated_graph(cfg) as graph, open_engine(engine, cfg, console.print) as chosen:
        segment(graph, cfg, n_clusters=k, algorithm=algorithm,
                features=features.split(",") if features else cfg.segment_features,
                distance_threshold=distance_threshold, connectivity=connectivity,
                engine=chosen, as_of=at)


def parse_as_of(value: str) -> datetime:
    """``--as-of``: an ISO 8601 time with an offset, in UTC, at most a day ahead."""
    from graph.crm.mapping import parse_timestamp

    try:
        return parse_timestamp(value)
    except ValueError as exc:
        raise InvalidInput(f"--as-of {value!r}: {exc}") from None


def segment(graph: Graph, cfg: Settings, **options: Any) -> None:
    """One segmentation run with a spinner, then its table; artifacts go to the runs folder."""
    from graph.segments.run import run_segmentation

    with console.status("segmenting...") as status:
        result = run_segmentation(graph, runs_dir=cfg.resolved_runs_dir,
                                  on_progress=lambda m: status.update(m), **options)
    print_run(result)


def scheduler_loop(cfg: Settings, stop: threading.Event) -> None:
    """Re-segment whenever the latest run is older than PERSONAS_SEGMENT_EVERY_HOURS."""
    from graph.segments.run import run_segmentation
    from graph.segments.schedule import SegmentationScheduler, last_run_at

    with migrated_graph(cfg) as graph:
        def run() -> None:
            if cfg.retention_days > 0:  # retention first, so the run sees what is kept
                from graph.subjects import prune_interactions

                pruned = prune_interactions(graph, timedelta(days=cfg.retention_days))
                log.info("retention: pruned %d interactions older than %d days", pruned,
                         cfg.retention_days)
            result = run_segmentation(graph, runs_dir=cfg.resolved_runs_dir,
                                      features=cfg.segment_features)
            log.info("scheduled run %s: %d users in %d segments", result.run_id,
                     result.n_users, result.n_segments)

        SegmentationScheduler(timedelta(hours=cfg.segment_every_hours), run,
                              lambda: last_run_at(graph)).run_forever(stop)


@fails_cleanly
def scheduler_cmd() -> None:
    """Keep segmentations fresh: a new run whenever the latest is older than the interval."""
    cfg = settings()
    if cfg.segment_every_hours <= 0:
        console.print("[red]error:[/red] the schedule is off (PERSONAS_SEGMENT_EVERY_HOURS=0)")
        raise typer.Exit(2)
    logging.getLogger().setLevel(logging.INFO)  # a long-running job reports what it does
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    console.print(f"re-segmenting every {cfg.segment_every_hours:g} h; Ctrl-C stops")
    try:
        scheduler_loop(cfg, stop)
    except KeyboardInterrupt:
        stop.set()


@fails_cleanly
def plot_cmd(
    run: Annotated[str, typer.Argument(help="Run id, or `latest`.")],
    kind: Annotated[str, typer.Argument(
        help="dendrogram, k-choice, elbow, silhouette, pca, tsne or profile.")],
    out: Annotated[Path | None, typer.Option(
        help="PNG to write (default: the run's folder, KIND.png).")] = None,
) -> None:
    """Draw a picture of a segmentation run as a PNG."""
    from graph.segments.artifacts import load, run_dir
    from graph.segments.plots import check_kind, render
    from graph.segments.queries import LATEST_RUN

    check_kind(kind)
    cfg = settings()
    if run == "latest":
        with migrated_graph(cfg) as graph:
            rows = graph.rows(LATEST_RUN)
        if not rows:
            console.print("[red]error:[/red] no segmentation run yet; run `personas segment`")
            raise typer.Exit(2)
        run = rows[0]["id"]
    artifacts = load(cfg.resolved_runs_dir, run)
    path = render(kind, artifacts, out or run_dir(cfg.resolved_runs_dir, run) / f"{kind}.png")
    print(path)
