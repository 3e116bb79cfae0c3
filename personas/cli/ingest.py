"""Getting data in: event files, the Kafka stream, CRM records and the demo population."""

from __future__ import annotations

import contextlib
import logging
import tempfile
import threading
import time
from pathlib import Path
from typing import Annotated

import typer

from graph import situation
from graph.db import Graph, open_graph
from graph.ingest.files import ingest_file
from graph.ingest.pipeline import build_writer
from graph.ingest.tally import Tally
from graph.settings import Settings
from personas.cli.apikeys import ensure_demo_api_key
from personas.cli.common import (
    console,
    count_lines,
    demo_unless_keyed,
    fails_cleanly,
    log,
    migrated_graph,
    progress_bar,
    report_refusals,
    require_file,
    settings,
)
from personas.demo import DemoPopulation


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


def _ingest(graph: Graph, cfg: Settings, path: Path, dead_letter: Path | None,
            batch_size: int) -> Tally:
    writer = build_writer(graph, cfg)
    with progress_bar(f"ingesting {path.name}", count_lines(path)) as advance:
        return ingest_file(writer, path, batch_size=batch_size,
                           max_line_bytes=cfg.max_line_bytes, dead_letter=dead_letter,
                           on_progress=advance)


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


@fails_cleanly
def import_cmd(
    files: Annotated[list[Path], typer.Argument(
        help="Event files (.jsonl, .csv), loaded in this order.")],
    bulk: Annotated[bool, typer.Option(
        "--bulk", help="Into an empty database with neo4j-admin: the database is stopped, "
        "replaced and restarted, then migrated.")] = False,
    csv_dir: Annotated[Path | None, typer.Option(
        help="--bulk: keep the import's CSV files here (default: a temporary folder). "
        "Required for a server this command does not run (PERSONAS_NEO4J_URI set): it then "
        "writes them and prints the neo4j-admin command to run there.")] = None,
    workers: Annotated[int, typer.Option(
        min=1, max=64, help="--bulk: files read and validated at once (processes).")] = 2,
    batch_size: Annotated[int | None, typer.Option(
        min=1, max=50_000, help="Events per transaction (without --bulk).")] = None,
) -> None:
    """Load an event history. Without --bulk, each file as `personas ingest` loads it; with
    --bulk, all of them at once into an empty database, then the transactional path carries
    on. Malformed records go to FILE.deadletter.jsonl and the exit is 1."""
    cfg = settings()
    cfg.require_pseudonym_key()
    for file in files:
        require_file(file)
    if not bulk:
        rejected, erased, last = 0, 0, None
        with migrated_graph(cfg) as graph:
            for file in files:
                summary = _ingest(graph, cfg, file, None, batch_size or cfg.batch_size)
                console.print(f"{file.name}: records: {summary.records}  written: "
                              f"{summary.written}  duplicates: {summary.duplicates}  "
                              f"rejected: {summary.rejected}")
                rejected += summary.rejected
                erased += summary.erased
                last = summary.dead_letter or last
        report_refusals(erased, rejected, last)
        return
    _bulk_import(cfg, files, csv_dir, workers)


def _bulk_import(cfg: Settings, files: list[Path], csv_dir: Path | None, workers: int) -> None:
    from graph import migrate as migrations
    from graph.ingest import bulk
    from personas.local.neo4j_server import Neo4jServer

    if not cfg.provisions_locally and csv_dir is None:
        console.print("[red]error:[/red] a server this command does not run "
                      "(PERSONAS_NEO4J_URI) needs --csv-dir: the files are written there for "
                      "its neo4j-admin")
        raise typer.Exit(2)
    with open_graph(cfg) as graph:
        bulk.require_empty(graph)  # before hours of work, and again before replacing it
    with contextlib.ExitStack() as stack:
        folder = csv_dir or Path(stack.enter_context(tempfile.TemporaryDirectory(
            prefix="personas-bulk-")))
        start = time.perf_counter()
        plan = bulk.plan_import(files, cfg.pseudonymizer(), folder,
                                max_line_bytes=cfg.max_line_bytes, workers=workers,
                                echo=console.print)
        console.print(f"events: {plan.events}  duplicates: {plan.duplicates}  rejected: "
                      f"{plan.rejected}  users: {plan.count('User')}  "
                      f"(computed in {time.perf_counter() - start:.1f} s)")
        if not cfg.provisions_locally:
            console.print("Stop the database, run this with that server's neo4j-admin, start "
                          "it, then run `personas migrate`:")
            print(plan.command(cfg.neo4j_database))  # noqa: T201 - the command, to copy
            return
        with open_graph(cfg) as graph:
            bulk.require_empty(graph)
        server = Neo4jServer(cfg)
        with plan.phase("admin_import_s"):
            server.stop()
            try:
                report = server.import_full(cfg.neo4j_database, *plan.arguments())
            except Exception:
                server.start(console.print)  # as it was: the import refuses before writing
                raise
        log.info("neo4j-admin: %s", report[-2000:])
    with plan.phase("restart_migrate_s", server.cpu_seconds):
        server.start(console.print)
        with open_graph(cfg) as graph:
            # Only this code's writers wrote it: the schema, no backfills (``migrate``).
            migrations.migrate(graph, cfg.migrations_dir, fresh=True)
            graph.execute(bulk.EMPTY_IDENTIFIERS)
            graph.auto_commit(bulk.AWAIT_INDEXES, seconds=bulk.INDEX_WAIT_S)
    total = time.perf_counter() - start
    console.print(
        f"imported {plan.events} events ({plan.count('Interaction')} interactions, "
        f"{plan.count('User')} users) in {total:.1f} s: {plan.report()}")
    report_refusals(0, plan.rejected, plan.dead_letter_paths[-1] if plan.dead_letter_paths
                    else None)


crm_app = typer.Typer(help="Import customer records from a CRM.", no_args_is_help=True)


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
              out: Path | None) -> Tally:
    population = DemoPopulation(users, seed)
    with tempfile.TemporaryDirectory() as tmp:
        path = out or Path(tmp) / "demo-events.jsonl"
        n = population.write_events(path)
        console.print(f"generated {n} events for {users} users in {path if out else 'a temp file'}")
        summary = _ingest(graph, cfg, path, None, cfg.batch_size)
    weather, local_events = population.context()
    batch = situation.parse_situation({"weather": weather, "local_events": local_events},
                                      origin="demo context")
    situation.write_situation(graph, batch, valid_hours=cfg.weather_valid_hours)
    console.print(f"context: {len(weather)} weather observations, "
                  f"{len(local_events)} local events")
    return summary


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
