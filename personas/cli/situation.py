"""`personas context`: external context (weather, local events) per location."""

from __future__ import annotations

import logging
import signal
import threading
from pathlib import Path
from typing import Annotated

import typer

from graph import situation
from personas.cli.common import console, fails_cleanly, migrated_graph, plain, settings

situation_app = typer.Typer(help="External context: weather and local events per location.",
                            no_args_is_help=True)


@situation_app.command("load")
@fails_cleanly
def situation_load(
    file: Annotated[Path, typer.Argument(
        help="A context file (JSON; format in docs/ingestion.md).")],
) -> None:
    """Load a context file once (all or nothing: a bad record names itself, nothing is written)."""
    from graph.situation.providers import load_situation_file

    cfg = settings()
    batch = load_situation_file(file)  # validated before connecting
    with migrated_graph(cfg) as graph:
        counts = situation.write_situation(graph, batch, valid_hours=cfg.weather_valid_hours)
    console.print(f"locations: {counts.locations}  weather: {counts.weather} "
                  f"({counts.new_weather} new)  local events: {counts.local_events} "
                  f"({counts.new_local_events} new)")


@situation_app.command("poll")
@fails_cleanly
def situation_poll(
    once: Annotated[bool, typer.Option("--once", help="One round over every known location, "
                                       "then exit (1 if any location failed).")] = False,
) -> None:
    """Fetch weather and local events for every known location, every
    PERSONAS_CONTEXT_POLL_MINUTES, from PERSONAS_CONTEXT_PROVIDER; failing locations back off."""
    from graph.situation.poller import build_poller
    from graph.situation.providers import build_provider

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
                console.print(f"[red]{plain(failure.location_id)}[/red]: {plain(failure.error)}")
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
