"""The `personas` command line: local Neo4j, migrations, ingestion, demo data, segmentation, API."""

from __future__ import annotations

import functools
import logging
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


@contextmanager
def progress_bar(description: str, total: int | None) -> Iterator[Callable[[int], None]]:
    with Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
                  MofNCompleteColumn(), TimeElapsedColumn(), console=console,
                  transient=False) as bar:
        task = bar.add_task(description, total=total)
        yield lambda n: bar.advance(task, n)


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
    if not file.is_file():
        console.print(f"[red]error:[/red] {file}: no such file")
        raise typer.Exit(2)
    with open_graph(cfg) as graph:
        summary = _ingest(graph, cfg, file, dead_letter, batch_size or cfg.batch_size)
    console.print(f"records: {summary.records}  written: {summary.written}  "
                  f"duplicates: {summary.duplicates}  rejected: {summary.rejected}")
    if summary.rejected:
        console.print(f"[yellow]{summary.rejected} record(s) rejected[/yellow]; "
                      f"reasons in {summary.dead_letter}")
        raise typer.Exit(1)


def load_demo(graph: Graph, cfg: Settings, users: int, seed: int,
              out: Path | None) -> IngestSummary:
    population = DemoPopulation(users, seed)
    with tempfile.TemporaryDirectory() as tmp:
        path = out or Path(tmp) / "demo-events.jsonl"
        n = population.write_events(path)
        console.print(f"generated {n} events for {users} users in {path if out else 'a temp file'}")
        summary = _ingest(graph, cfg, path, None, cfg.batch_size)
    weather, local_events = population.context()
    context.upsert_weather(graph, weather)
    context.upsert_local_events(graph, local_events)
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
    cfg = settings()
    if not load:
        if out is None:
            console.print("[red]error:[/red] --no-load needs --out")
            raise typer.Exit(2)
        n = DemoPopulation(users, seed).write_events(out)
        console.print(f"wrote {n} events to {out}")
        return
    with open_graph(cfg) as graph:
        summary = load_demo(graph, cfg, users, seed, out)
        ensure_demo_api_key(graph, cfg)
    console.print(f"written: {summary.written}  duplicates: {summary.duplicates}")


def print_run(result: RunResult) -> None:
    table = Table("segment", "persona", "users", "why", title=f"run {result.run_id}")
    for c, name in enumerate(result.names):
        why = ", ".join(f"{f} {z:+.2f}" for f, z in name.why)
        table.add_row(str(c), name.name, str(result.sizes[c]), why)
    Console().print(table)
    console.print(f"{result.k_reason}; silhouette {result.silhouette:.3f}")
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
    with open_graph(cfg) as graph:
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

    with open_graph(cfg) as graph:
        def run() -> None:
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
        with open_graph(cfg) as graph:
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

    uvicorn.run("api.app:create_app", factory=True, host=host, port=port, log_level="info")


@app.command("serve")
@fails_cleanly
def serve_cmd(
    host: Annotated[str | None, typer.Option(help="Bind address.")] = None,
    port: Annotated[int | None, typer.Option(help="Port.")] = None,
) -> None:
    """Serve the GraphQL API (GraphiQL at /graphql)."""
    cfg = settings()
    serve_api(host or cfg.api_host, port or cfg.api_port)


@app.command("up")
@fails_cleanly
def up_cmd(
    users: Annotated[int, typer.Option(min=10, help="Demo users when the graph is empty.")] = 2000,
    serve: Annotated[bool, typer.Option(help="Serve the API after preparing.")] = True,
) -> None:
    """Everything: local Neo4j, schema, demo data if empty, segmentation, the API."""
    cfg = settings()
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
    with open_graph(settings()) as graph:
        created = create_key(graph, parsed, name)
    print(created.key)
    console.print(f"created API key {created.info.id} ({created.info.name}, role "
                  f"{created.info.role.value}). Store it now: only its hash is kept, so it "
                  "cannot be shown again.")


@apikey_app.command("list")
@fails_cleanly
def apikey_list() -> None:
    """List API keys: id, name, role, when created and revoked (never the key or its hash)."""
    with open_graph(settings()) as graph:
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
    with open_graph(cfg) as graph:
        revocation = revoke_key(graph, key_id)
    at = revocation.revoked_at.isoformat(timespec="seconds")
    if revocation.already:
        console.print(f"API key {key_id} was already revoked (at {at})")
    else:
        console.print(f"revoked API key {key_id}; a running API may accept it for up to "
                      f"{cfg.api_key_cache_seconds:g} s more (PERSONAS_API_KEY_CACHE_SECONDS)")


def main() -> None:
    logging.basicConfig(level=logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")
    app()


if __name__ == "__main__":
    main()
