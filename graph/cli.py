"""The `personas` command line: local Neo4j, migrations, ingestion, demo data, segmentation, API."""

from __future__ import annotations

import functools
import logging
import os
import signal
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer
from neo4j.exceptions import AuthError, Neo4jError, ServiceUnavailable
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from graph import context
from graph import migrate as migrations
from graph.auth import create_key, ensure_demo_key, list_keys, parse_role, revoke_key
from graph.db import Graph, open_graph
from graph.demo import DemoPopulation
from graph.errors import PersonaError
from graph.ingest.files import IngestSummary, ingest_file
from graph.ingest.pipeline import build_writer
from graph.ingest.queries import USER_COUNT
from graph.local import neo4j_server
from graph.logs import configure_logging
from graph.settings import Settings

if TYPE_CHECKING:
    from graph.segments.run import RunResult

app = typer.Typer(help="persona-graph: a graph-based persona store for chatbots, on Neo4j.",
                  no_args_is_help=True, pretty_exceptions_enable=False)
neo4j_app = typer.Typer(help="Provision and run the local Neo4j server.", no_args_is_help=True)
app.add_typer(neo4j_app, name="neo4j")
console = Console(stderr=True, soft_wrap=True)
log = logging.getLogger("personas")
F = TypeVar("F", bound=Callable[..., Any])


def fails_cleanly(func: F) -> F:
    """Turn expected failures into one clear message and a non-zero exit, without a traceback."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except PersonaError as exc:
            console.print(f"[red]error ({exc.code}):[/red] {exc}")
            raise typer.Exit(2) from None
        except ServiceUnavailable as exc:
            console.print(f"[red]error:[/red] Neo4j is not reachable ({exc}). "
                          "Start it with `personas neo4j start` or set PERSONAS_NEO4J_URI.")
            raise typer.Exit(3) from None
        except AuthError as exc:
            console.print(f"[red]error:[/red] Neo4j refused the credentials: {exc.message}")
            raise typer.Exit(3) from None
        except Neo4jError as exc:
            console.print(f"[red]error:[/red] Neo4j: {exc.message}")
            raise typer.Exit(3) from None

    return wrapper  # type: ignore[return-value]


def settings() -> Settings:
    return Settings()


def demo_unless_keyed(cfg: Settings) -> Settings:
    """`personas up` and `personas demo-data` run in demo mode when no pseudonymization key is
    set: the public demo key is then allowed, for this process and the API it starts."""
    if not cfg.demo_mode or cfg.demo:
        return cfg
    os.environ["PERSONAS_DEMO"] = "true"  # the API factory reads settings from the environment
    console.print("[yellow]demo mode[/yellow]: no PERSONAS_PSEUDONYM_KEY or "
                  "PERSONAS_PSEUDONYM_KEY_FILE set, so identifiers are hashed with the public "
                  "demo key")
    return cfg.model_copy(update={"demo": True})


@contextmanager
def progress_bar(description: str, total: int | None) -> Iterator[Callable[[int], None]]:
    with Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
                  MofNCompleteColumn(), TimeElapsedColumn(), console=console,
                  transient=False) as bar:
        task = bar.add_task(description, total=total)
        yield lambda n: bar.advance(task, n)


@contextmanager
def migrated_graph(cfg: Settings) -> Iterator[Graph]:
    """The graph, once its schema is known to be current (``migrate.require_current``)."""
    with open_graph(cfg) as graph:
        migrations.require_current(graph, cfg.migrations_dir)
        yield graph


def count_lines(path: Path) -> int:
    with path.open("rb") as handle:
        return sum(buf.count(b"\n") for buf in iter(lambda: handle.read(1 << 20), b""))


@neo4j_app.command("start")
@fails_cleanly
def neo4j_start() -> None:
    """Fetch Neo4j once (Maven Central), configure it, start it on 127.0.0.1 and wait for it."""
    status = neo4j_server.start(settings(), echo=lambda m: console.print(m))
    console.print(f"[green]Neo4j is up[/green] at {status.bolt_uri} "
                  f"(Browser: {status.browser_url})")


@neo4j_app.command("stop")
@fails_cleanly
def neo4j_stop() -> None:
    """Stop the local Neo4j server."""
    if neo4j_server.stop(settings()):
        console.print("Neo4j stopped.")
    else:
        console.print("Neo4j was not running.")


@neo4j_app.command("status")
@fails_cleanly
def neo4j_status() -> None:
    """Say whether the local server runs and answers; exit 1 when it does not answer."""
    status = neo4j_server.status(settings())
    state = "answering" if status.answering else ("running, not answering" if status.running
                                                  else "stopped")
    print(f"neo4j: {state}  pid={status.pid}  bolt={status.bolt_uri}  "
          f"browser={status.browser_url}  home={status.home}")
    if not status.answering:
        raise typer.Exit(1)


kafka_app = typer.Typer(help="Provision and run the local Kafka broker (KRaft, one node).",
                        no_args_is_help=True)
app.add_typer(kafka_app, name="kafka")


@kafka_app.command("start")
@fails_cleanly
def kafka_start() -> None:
    """Fetch Kafka once (Maven Central), configure it, start it on 127.0.0.1 and wait for it."""
    from graph.local import kafka_server

    status = kafka_server.start(settings(), echo=lambda m: console.print(m))
    console.print(f"[green]Kafka is up[/green] at {status.bootstrap}")


@kafka_app.command("stop")
@fails_cleanly
def kafka_stop() -> None:
    """Stop the local Kafka broker (SIGTERM, then SIGKILL if it does not stop in time)."""
    from graph.local import kafka_server

    console.print("Kafka stopped." if kafka_server.stop(settings()) else "Kafka was not running.")


@kafka_app.command("status")
@fails_cleanly
def kafka_status() -> None:
    """Say whether the local broker runs and answers; exit 1 when it does not answer."""
    from graph.local import kafka_server

    status = kafka_server.status(settings())
    state = "answering" if status.answering else ("running, not answering" if status.running
                                                  else "stopped")
    print(f"kafka: {state}  pid={status.pid}  bootstrap={status.bootstrap}  home={status.home}")
    if not status.answering:
        raise typer.Exit(1)


@app.command("consume")
@fails_cleanly
def consume_cmd(
    topic: Annotated[str | None, typer.Option(help="Topic (default: PERSONAS_KAFKA_TOPIC).")
                     ] = None,
    dead_letter_topic: Annotated[str | None, typer.Option(
        help="Dead-letter topic (default: PERSONAS_KAFKA_DEAD_LETTER_TOPIC).")] = None,
    group: Annotated[str | None, typer.Option(help="Consumer group (default: "
                                              "PERSONAS_KAFKA_GROUP).")] = None,
    batch_max: Annotated[int | None, typer.Option(
        min=1, max=50_000, help="Messages per transaction (default: PERSONAS_KAFKA_BATCH_MAX).")
    ] = None,
    max_messages: Annotated[int | None, typer.Option(
        min=1, help="Exit after reading this many messages.")] = None,
    idle_exit: Annotated[float | None, typer.Option(
        min=0, help="Exit after this many seconds with nothing to read.")] = None,
) -> None:
    """Consume events from Kafka into the graph; offsets are committed after each batch is
    stored. SIGTERM/Ctrl-C finish the batch in flight and exit 0."""
    from graph.ingest import stream

    cfg = settings()
    cfg.require_pseudonym_key()
    logging.getLogger().setLevel(logging.INFO)  # a long-running job reports what it does
    stop = threading.Event()
    stream.stop_on_signals(stop)
    with migrated_graph(cfg) as graph:
        summary = stream.consume(graph, cfg, stop=stop, topic=topic,
                                 dead_letter_topic=dead_letter_topic, group=group,
                                 batch_max=batch_max, max_messages=max_messages,
                                 idle_exit=idle_exit)
    console.print(f"messages: {summary.messages}  written: {summary.written}  duplicates: "
                  f"{summary.duplicates}  dead letters: {summary.dead_letters}  "
                  f"batches: {summary.batches}")
    report_refusals(summary.erased, 0, None)  # the consumer dead-letters its rejects


@app.command("produce")
@fails_cleanly
def produce_cmd(
    file: Annotated[Path, typer.Argument(help="Events as JSON Lines, one message a line.")],
    rate: Annotated[float, typer.Option(min=0, help="Messages a second (0: as fast as "
                                        "possible).")] = 100.0,
    topic: Annotated[str | None, typer.Option(help="Topic (default: PERSONAS_KAFKA_TOPIC).")
                     ] = None,
    skip_invalid: Annotated[bool, typer.Option(
        "--skip-invalid", help="Do not send lines that are not valid events.")] = False,
) -> None:
    """Replay a JSONL file into the events topic at a steady rate, keyed by pseudonymous user."""
    from graph.ingest.replay import replay_file
    from graph.ingest.stream import require_kafka

    cfg = settings()
    cfg.require_pseudonym_key()
    require_file(file)
    require_kafka(cfg)  # before the progress bar appears
    with progress_bar(f"producing {file.name}", count_lines(file)) as advance:
        summary = replay_file(cfg, file, topic=topic, rate=rate, skip_invalid=skip_invalid,
                              on_progress=advance)
    console.print(f"lines: {summary.lines}  sent: {summary.sent}  invalid: {summary.invalid}  "
                  f"skipped: {summary.skipped}  failed: {summary.failed}  "
                  f"({summary.sent / max(summary.seconds, 1e-9):,.0f}/s)")
    if summary.failed:
        raise typer.Exit(1)


@app.command("migrate")
@fails_cleanly
def migrate_cmd(
    status: Annotated[bool, typer.Option("--status", help="List applied and pending.")] = False,
) -> None:
    """Apply pending schema migrations (constraints, indexes) in order."""
    cfg = settings()
    with open_graph(cfg) as graph:
        if status:
            table = Table("version", "name", "state", "applied at")
            for st in migrations.status(graph, cfg.migrations_dir):
                table.add_row(f"{st.migration.version:04d}", st.migration.name,
                              "applied" if st.applied else "pending", st.applied_at or "")
            Console().print(table)
            return
        done = migrations.migrate(graph, cfg.migrations_dir)
    if done:
        for m in done:
            console.print(f"applied {m.path.name}")
    else:
        console.print("schema is up to date")


def require_file(file: Path) -> None:
    if not file.is_file():
        console.print(f"[red]error:[/red] {file}: no such file")
        raise typer.Exit(2)


def report_refusals(erased: int, rejected: int, dead_letter: Path | None) -> None:
    """After a file load: records refused for erased users, then rejects (exit 1)."""
    if erased:
        console.print(f"{erased} record(s) refused: they name users erased after their time")
    if rejected:
        console.print(f"[yellow]{rejected} record(s) rejected[/yellow]; "
                      f"reasons in {dead_letter}")
        raise typer.Exit(1)


def _ingest(graph: Graph, cfg: Settings, path: Path, dead_letter: Path | None,
            batch_size: int) -> IngestSummary:
    writer = build_writer(graph, cfg)
    with progress_bar(f"ingesting {path.name}", count_lines(path)) as advance:
        return ingest_file(writer, path, batch_size=batch_size,
                           max_line_bytes=cfg.max_line_bytes, dead_letter=dead_letter,
                           on_progress=advance)


@app.command("ingest")
@fails_cleanly
def ingest_cmd(
    file: Annotated[Path, typer.Argument(help="Events as JSON Lines (.jsonl) or CSV (.csv).")],
    dead_letter: Annotated[Path | None, typer.Option(
        help="Where rejected records go (default: FILE.deadletter.jsonl).")] = None,
    batch_size: Annotated[int | None, typer.Option(min=1, max=50_000,
                                                   help="Events per transaction.")] = None,
) -> None:
    """Load an event file; malformed records go to the dead-letter file and the exit is 1."""
    cfg = settings()
    cfg.require_pseudonym_key()
    require_file(file)
    with migrated_graph(cfg) as graph:
        summary = _ingest(graph, cfg, file, dead_letter, batch_size or cfg.batch_size)
    console.print(f"records: {summary.records}  written: {summary.written}  "
                  f"duplicates: {summary.duplicates}  rejected: {summary.rejected}")
    report_refusals(summary.erased, summary.rejected, summary.dead_letter)


crm_app = typer.Typer(help="Import customer records from a CRM.", no_args_is_help=True)
app.add_typer(crm_app, name="crm")


@crm_app.command("import")
@fails_cleanly
def crm_import_cmd(
    file: Annotated[Path, typer.Argument(help="CRM records as CSV (.csv) or JSON Lines.")],
    mapping: Annotated[Path, typer.Option(help="The YAML field mapping.")],
    dead_letter: Annotated[Path | None, typer.Option(
        help="Where rejected records go (default: FILE.deadletter.jsonl).")] = None,
    batch_size: Annotated[int | None, typer.Option(min=1, max=50_000,
                                                   help="Records per transaction.")] = None,
) -> None:
    """Upsert customer records through a field mapping: newer values win, per field."""
    from graph.crm.importer import import_file
    from graph.crm.mapping import load_mapping

    cfg = settings()
    cfg.require_pseudonym_key()  # names and identifiers are hashed with it
    parsed = load_mapping(mapping)  # before connecting: a bad mapping writes nothing
    require_file(file)
    total = count_lines(file) - (1 if file.suffix.lower() == ".csv" else 0)  # CSV header
    with migrated_graph(cfg) as graph, progress_bar(f"importing {file.name}", total) as advance:
        summary = import_file(graph, cfg.pseudonymizer(),
                              parsed, file, batch_size=batch_size or cfg.batch_size,
                              max_line_bytes=cfg.max_line_bytes, dead_letter=dead_letter,
                              on_progress=advance)
    console.print(f"records: {summary.records}  applied: {summary.applied}  "
                  f"rejected: {summary.rejected}  new users: {summary.users_created}  "
                  f"fields updated: {summary.fields_updated}  "
                  f"fields kept (stored value as new or newer): {summary.fields_kept}  "
                  f"merges: {summary.merges}")
    report_refusals(summary.erased, summary.rejected, summary.dead_letter)


def load_demo(graph: Graph, cfg: Settings, users: int, seed: int,
              out: Path | None) -> IngestSummary:
    population = DemoPopulation(users, seed)
    with tempfile.TemporaryDirectory() as tmp:
        path = out or Path(tmp) / "demo-events.jsonl"
        n = population.write_events(path)
        console.print(f"generated {n} events for {users} users in {path if out else 'a temp file'}")
        summary = _ingest(graph, cfg, path, None, cfg.batch_size)
    weather, local_events = population.context()
    batch = context.parse_context({"weather": weather, "local_events": local_events},
                                  origin="demo context")
    context.write_context(graph, batch, valid_hours=cfg.weather_valid_hours)
    console.print(f"context: {len(weather)} weather observations, "
                  f"{len(local_events)} local events")
    return summary


@app.command("demo-data")
@fails_cleanly
def demo_data_cmd(
    users: Annotated[int, typer.Option(min=1, max=1_000_000, help="How many users.")] = 2000,
    seed: Annotated[int, typer.Option(help="Random seed (same seed, same data).")] = 42,
    out: Annotated[Path | None, typer.Option(help="Also keep the events in this file.")] = None,
    load: Annotated[bool, typer.Option(help="Load into Neo4j (else only write --out).")] = True,
) -> None:
    """Generate a demo population with planted behaviour groups, and load it."""
    cfg = demo_unless_keyed(settings())
    if not load:
        if out is None:
            console.print("[red]error:[/red] --no-load needs --out")
            raise typer.Exit(2)
        n = DemoPopulation(users, seed).write_events(out)
        console.print(f"wrote {n} events to {out}")
        return
    with migrated_graph(cfg) as graph:
        summary = load_demo(graph, cfg, users, seed, out)
        ensure_demo_api_key(graph, cfg)
    console.print(f"written: {summary.written}  duplicates: {summary.duplicates}")


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


@app.command("segment")
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
) -> None:
    """Cluster users from graph features into named segments and write the run to the graph."""
    # scikit-learn takes seconds to import; only the commands that cluster pay for it.
    from graph.segments.engine import check_algorithm

    check_algorithm(algorithm)  # before any work, so a typo fails at once
    cfg = settings()
    with migrated_graph(cfg) as graph:
        segment(graph, cfg, n_clusters=k, algorithm=algorithm,
                features=features.split(",") if features else cfg.segment_features,
                distance_threshold=distance_threshold, connectivity=connectivity)


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


@app.command("scheduler")
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


@app.command("plot")
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


@app.command("schema")
def schema_cmd(
    check: Annotated[bool, typer.Option(
        "--check", help="Only compare: exit 1 when the file differs from the code.")] = False,
    path: Annotated[Path | None, typer.Option(
        help="The SDL file (default: api/schema.graphql).")] = None,
) -> None:
    """Write the GraphQL schema (SDL) to api/schema.graphql, or check that it is up to date."""
    import difflib

    # The web layer (strawberry) loads only for this command, not at every start of the CLI.
    from api.sdl import REGENERATE, SDL_PATH, render_sdl

    target = path or SDL_PATH
    sdl = render_sdl()
    current = target.read_text(encoding="utf-8") if target.is_file() else None
    if not check:
        if current == sdl:
            console.print(f"{target} is up to date")
        else:
            target.write_text(sdl, encoding="utf-8", newline="\n")
            console.print(f"wrote {target}")
        return
    if current == sdl:
        console.print(f"{target} is up to date")
        return
    command = REGENERATE if path is None else f"{REGENERATE} --path {target}"
    state = "is missing" if current is None else "differs from the schema in the code"
    console.print(f"[red]error:[/red] {target} {state}; run `{command}` to regenerate it")
    if current is not None:
        diff = list(difflib.unified_diff(current.splitlines(), sdl.splitlines(),
                                         f"{target} (file)", "schema in the code", lineterm=""))
        for line in diff[:60]:
            console.print(line, markup=False, highlight=False)
        if len(diff) > 60:
            console.print(f"... {len(diff) - 60} more diff lines", markup=False)
    raise typer.Exit(1)


def serve_api(host: str, port: int) -> None:
    """Run the API with uvicorn; it builds the app from the environment's settings (the
    graph package never imports the web layer)."""
    import uvicorn

    # With JSON logs, uvicorn's own loggers go through the root handler too (no config of its
    # own), so every line of the service is JSON.
    json_logs = settings().log_format == "json"
    logging.getLogger().setLevel(logging.INFO)  # one access line per request (api.metrics)
    # The app logs each request itself (api.access, with its latency); uvicorn's own access
    # line would be a second line per request.
    # A WebSocket message (a subscription's document and variables) is bounded like a body.
    uvicorn.run("api.app:create_served_app", factory=True, host=host, port=port, log_level="info",
                access_log=False, ws_max_size=settings().api_max_body_bytes,
                log_config=None if json_logs else uvicorn.config.LOGGING_CONFIG)


@app.command("serve")
@fails_cleanly
def serve_cmd(
    host: Annotated[str | None, typer.Option(help="Bind address.")] = None,
    port: Annotated[int | None, typer.Option(help="Port.")] = None,
) -> None:
    """Serve the GraphQL API (GraphiQL at /graphql)."""
    cfg = settings()
    cfg.require_pseudonym_key()
    cfg.require_neo4j_password()
    serve_api(host or cfg.api_host, port or cfg.api_port)


@app.command("up")
@fails_cleanly
def up_cmd(
    users: Annotated[int, typer.Option(min=10, help="Demo users when the graph is empty.")] = 2000,
    serve: Annotated[bool, typer.Option(help="Serve the API after preparing.")] = True,
) -> None:
    """Everything: local Neo4j, schema, demo data if empty, segmentation, the API."""
    cfg = demo_unless_keyed(settings())
    cfg.require_pseudonym_key()
    started_here = False
    if cfg.provisions_locally and not neo4j_server.status(cfg).answering:
        neo4j_server.start(cfg, echo=lambda m: console.print(m))
        started_here = True
    try:
        with open_graph(cfg) as graph:
            for m in migrations.migrate(graph, cfg.migrations_dir):
                console.print(f"applied {m.path.name}")
            users_now = graph.rows(USER_COUNT)[0]["n"]
            if users_now == 0:
                load_demo(graph, cfg, users, 42, None)
            else:
                console.print(f"graph holds {users_now} users; not loading demo data")
            ensure_demo_api_key(graph, cfg)
            segment(graph, cfg, features=cfg.segment_features)
        browser = f"http://127.0.0.1:{cfg.neo4j_http_port}/browser/"
        console.print(f"\n[bold]GraphQL[/bold]: http://{cfg.api_host}:{cfg.api_port}/graphql\n"
                      f"[bold]Neo4j Browser[/bold]: {browser} "
                      f"(user {cfg.neo4j_user}, password from PERSONAS_NEO4J_PASSWORD)\n")
        if serve:
            signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
            stop = threading.Event()
            if cfg.segment_every_hours > 0:
                threading.Thread(target=scheduler_loop, args=(cfg, stop), daemon=True,
                                 name="segmentation-scheduler").start()
            try:
                serve_api(cfg.api_host, cfg.api_port)
            finally:
                stop.set()
    finally:
        if started_here and serve:
            console.print("stopping the Neo4j this command started...")
            neo4j_server.stop(cfg)


apikey_app = typer.Typer(help="Create, list and revoke the API keys of the GraphQL API.",
                         no_args_is_help=True)
app.add_typer(apikey_app, name="apikey")


def ensure_demo_api_key(graph: Graph, cfg: Settings) -> None:
    """In demo mode, make sure the README's reader key exists and say so; else say how to make
    a key (the public demo key must never open real data)."""
    state = ensure_demo_key(graph, cfg)
    if state is None:
        console.print("API keys: create one with "
                      "`personas apikey create --role reader --name NAME`")
    elif state.usable:
        console.print(f"demo API key (role reader, as in the README): "
                      f"Authorization: Bearer {state.key}")
    else:
        console.print("[yellow]the demo API key was revoked[/yellow]; create a key with "
                      "`personas apikey create --role reader --name NAME`")


@apikey_app.command("create")
@fails_cleanly
def apikey_create(
    role: Annotated[str, typer.Option(
        help="reader (chatbots), writer (ingestion), analyst (read all) or admin (all).")],
    name: Annotated[str, typer.Option(help="Who uses the key; shown in `personas apikey list`.")],
) -> None:
    """Create an API key and print it (on stdout, alone). It is shown this once only."""
    parsed = parse_role(role)  # before connecting, so a typo fails at once
    with migrated_graph(settings()) as graph:
        created = create_key(graph, parsed, name)
    print(created.key)
    console.print(f"created API key {created.info.id} ({created.info.name}, role "
                  f"{created.info.role.value}). Store it now: only its hash is kept, so it "
                  "cannot be shown again.")


@apikey_app.command("list")
@fails_cleanly
def apikey_list() -> None:
    """List API keys: id, name, role, when created and revoked (never the key or its hash)."""
    with migrated_graph(settings()) as graph:
        keys = list_keys(graph)
    if not keys:
        console.print("no API keys; create one with `personas apikey create`")
        return
    table = Table("id", "name", "role", "created (UTC)", "revoked (UTC)")
    for column in (0, 2, 3, 4):
        table.columns[column].no_wrap = True  # only names may wrap on a narrow terminal
    for k in keys:
        table.add_row(k.id, k.name, k.role.value, f"{k.created_at:%Y-%m-%d %H:%M:%S}",
                      f"{k.revoked_at:%Y-%m-%d %H:%M:%S}" if k.revoked_at else "")
    Console().print(table)


@apikey_app.command("revoke")
@fails_cleanly
def apikey_revoke(
    key_id: Annotated[str, typer.Argument(metavar="ID",
                                          help="The key's id, as `personas apikey list` shows.")],
) -> None:
    """Revoke an API key for good."""
    cfg = settings()
    with migrated_graph(cfg) as graph:
        revocation = revoke_key(graph, key_id)
    at = revocation.revoked_at.isoformat(timespec="seconds")
    if revocation.already:
        console.print(f"API key {key_id} was already revoked (at {at})")
    else:
        console.print(f"revoked API key {key_id}; a running API may accept it for up to "
                      f"{cfg.api_key_cache_seconds:g} s more (PERSONAS_API_KEY_CACHE_SECONDS)")


context_app = typer.Typer(help="External context: weather and local events per location.",
                          no_args_is_help=True)
app.add_typer(context_app, name="context")


@context_app.command("load")
@fails_cleanly
def context_load(
    file: Annotated[Path, typer.Argument(help="A context file (JSON; format in the README).")],
) -> None:
    """Load a context file once (all or nothing: a bad record names itself, nothing is written)."""
    from graph.context.providers import load_context_file

    cfg = settings()
    batch = load_context_file(file)  # validated before connecting
    with migrated_graph(cfg) as graph:
        counts = context.write_context(graph, batch, valid_hours=cfg.weather_valid_hours)
    console.print(f"locations: {counts.locations}  weather: {counts.weather} "
                  f"({counts.new_weather} new)  local events: {counts.local_events} "
                  f"({counts.new_local_events} new)")


@context_app.command("poll")
@fails_cleanly
def context_poll(
    once: Annotated[bool, typer.Option("--once", help="One round over every known location, "
                                       "then exit (1 if any location failed).")] = False,
) -> None:
    """Fetch weather and local events for every known location, every
    PERSONAS_CONTEXT_POLL_MINUTES, from PERSONAS_CONTEXT_PROVIDER; failing locations back off."""
    from graph.context.poller import build_poller
    from graph.context.providers import build_provider

    cfg = settings()
    provider = build_provider(cfg)
    logging.getLogger().setLevel(logging.INFO)  # a long-running job reports what it does
    with migrated_graph(cfg) as graph:
        poller = build_poller(graph, provider, cfg)
        if once:
            report = poller.poll_due()
            ok = len(report.results) - len(report.failed)
            console.print(f"{provider.name}: {ok} location(s) updated, "
                          f"{len(report.failed)} failed")
            for failure in report.failed:
                console.print(f"[red]{failure.location_id}[/red]: {failure.error}")
            if report.failed:
                raise typer.Exit(1)
            return
        stop = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        console.print(f"polling {provider.name} every {cfg.context_poll_minutes:g} min; "
                      "Ctrl-C stops")
        try:
            poller.run(stop)
        except KeyboardInterrupt:
            stop.set()


privacy_app = typer.Typer(help="Privacy: export or erase a user's data, record consent, prune "
                          "old raw interactions.", no_args_is_help=True)
app.add_typer(privacy_app, name="privacy")
UserArg = Annotated[str, typer.Argument(metavar="USER", help="The user's id (u_...).")]
ANSWERS = {"yes": True, "y": True, "true": True, "grant": True, "granted": True,
           "no": False, "n": False, "false": False, "withdraw": False, "withdrawn": False}


@privacy_app.command("export")
@fails_cleanly
def privacy_export(
    user: UserArg,
    out: Annotated[Path | None, typer.Option(
        help="Write the JSON to this file, readable by its owner only (default: stdout).")
    ] = None,
) -> None:
    """Everything held on a user, as JSON (identifiers as keyed hashes: no plaintext is kept)."""
    import json

    from graph.subjects import export_user

    with migrated_graph(settings()) as graph:
        data = export_user(graph, user)
    text = json.dumps(data, indent=2, ensure_ascii=False) + "\n"
    if out is None:
        print(text, end="")
        return
    out.touch(mode=0o600)
    out.write_text(text, encoding="utf-8")
    console.print(f"wrote {out}: {len(data['interactions'])} interactions, "
                  f"{len(data['identifiers'])} identifiers")


@privacy_app.command("forget")
@fails_cleanly
def privacy_forget(
    user: UserArg,
    yes: Annotated[bool, typer.Option("--yes", help="Confirm; an erasure cannot be undone.")
                   ] = False,
) -> None:
    """Erase a user and everything derived from them (shared catalogue and segments stay)."""
    from graph.subjects import forget_user

    if not yes:
        console.print("[red]error:[/red] erasing a user cannot be undone; confirm with --yes")
        raise typer.Exit(2)
    with migrated_graph(settings()) as graph:
        report = forget_user(graph, user, source="cli")
    if report.already_erased:
        console.print(f"user {user} was already erased (erasure {report.erasure_id})")
        return
    counts = "  ".join(f"{k}: {v}" for k, v in report.counts.items())
    console.print(f"erased user {user} (erasure {report.erasure_id})\n{counts}")


@privacy_app.command("consent")
@fails_cleanly
def privacy_consent(
    user: UserArg,
    purpose: Annotated[str, typer.Argument(help="personalization or analytics.")],
    answer: Annotated[str, typer.Argument(metavar="yes|no", help="Granted (yes) or not (no).")],
    source: Annotated[str, typer.Option(help="Who recorded the answer (provenance).")] = "cli",
) -> None:
    """Record a user's consent for a purpose (kept with its history; the newest answer wins)."""
    from graph.subjects import parse_purpose, set_consent

    parsed = parse_purpose(purpose)  # before connecting, so a typo fails at once
    if answer.strip().lower() not in ANSWERS:
        console.print(f"[red]error:[/red] answer {answer!r}: say yes or no")
        raise typer.Exit(2)
    with migrated_graph(settings()) as graph:
        current = set_consent(graph, user, parsed, ANSWERS[answer.strip().lower()],
                              source=source)
    console.print(f"consents of {user}: " + ", ".join(
        f"{p} {'granted' if ok else 'withdrawn'}" for p, ok in current.items()))


@privacy_app.command("prune")
@fails_cleanly
def privacy_prune(
    older_than_days: Annotated[int | None, typer.Option(
        min=1, help="Age in days (default: PERSONAS_RETENTION_DAYS).")] = None,
) -> None:
    """Delete raw interactions older than the retention age; counters and aggregates stay."""
    from graph.subjects import prune_interactions

    cfg = settings()
    days = older_than_days or cfg.retention_days
    if days <= 0:
        console.print("retention is off (PERSONAS_RETENTION_DAYS=0): nothing pruned")
        return
    with migrated_graph(cfg) as graph:
        pruned = prune_interactions(graph, timedelta(days=days))
    console.print(f"pruned {pruned} interactions older than {days} days")


identity_app = typer.Typer(help="Identity resolution: merge users, undo merges, list them.",
                           no_args_is_help=True)
app.add_typer(identity_app, name="identity")


@identity_app.command("merge")
@fails_cleanly
def identity_merge_cmd(
    survivor: Annotated[str, typer.Argument(help="The user id that stays.")],
    merged: Annotated[str, typer.Argument(help="The user id merged into SURVIVOR.")],
    reason: Annotated[str, typer.Option(help="Why, recorded with the merge.")] = "manual merge",
) -> None:
    """Merge user MERGED into SURVIVOR; prints the merge id (for `personas identity unmerge`)."""
    from graph.identity import merge_users

    with migrated_graph(settings()) as graph:
        merge_id = merge_users(graph, survivor, merged, source="cli", reason=reason)
    print(merge_id)
    console.print(f"merged {merged} into {survivor} ({merge_id})")


@identity_app.command("unmerge")
@fails_cleanly
def identity_unmerge_cmd(
    merge_id: Annotated[str, typer.Argument(metavar="MERGE_ID", help="As printed by merge.")],
) -> None:
    """Undo a merge: both users get back what they had; their aggregates are rebuilt."""
    from graph.identity import unmerge

    with migrated_graph(settings()) as graph:
        survivor, merged = unmerge(graph, merge_id)
    console.print(f"unmerged {merge_id}: {merged} is separate from {survivor} again")


@identity_app.command("merges")
@fails_cleanly
def identity_merges_cmd(
    user: Annotated[str, typer.Argument(help="A user id (a merged user's old id works too).")],
) -> None:
    """The merge history of a user and of the users merged into it."""
    from graph.identity import merges_of

    with migrated_graph(settings()) as graph:
        history = merges_of(graph, user)
    if not history:
        console.print(f"no merges for {user}")
        return
    table = Table("merge", "at (UTC)", "survivor", "merged", "source", "reason", "undone (UTC)")
    for m in history:
        table.add_row(m["id"], f"{m['at']:%Y-%m-%d %H:%M:%S}", m["survivor_id"], m["merged_id"],
                      m["source"], m["reason"],
                      f"{m['undone_at']:%Y-%m-%d %H:%M:%S}" if m["undone_at"] else "")
    Console(width=200).print(table)


def main() -> None:
    try:
        log_format = Settings().log_format
    except Exception:  # noqa: BLE001 - any bad setting is reported by the command itself
        log_format = "text"
    configure_logging(log_format)
    app()


if __name__ == "__main__":
    main()
