"""`personas neo4j` and `personas kafka`: the local servers for development and tests."""

from __future__ import annotations

import typer

from personas.cli.common import console, fails_cleanly, settings
from personas.local import neo4j_server

neo4j_app = typer.Typer(help="Provision and run the local Neo4j server.", no_args_is_help=True)


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


@kafka_app.command("start")
@fails_cleanly
def kafka_start() -> None:
    """Fetch Kafka once (Maven Central), configure it, start it on 127.0.0.1 and wait for it."""
    from personas.local import kafka_server

    status = kafka_server.start(settings(), echo=lambda m: console.print(m))
    console.print(f"[green]Kafka is up[/green] at {status.bootstrap}")


@kafka_app.command("stop")
@fails_cleanly
def kafka_stop() -> None:
    """Stop the local Kafka broker (SIGTERM, then SIGKILL if it does not stop in time)."""
    from personas.local import kafka_server

    console.print("Kafka stopped." if kafka_server.stop(settings()) else "Kafka was not running.")


@kafka_app.command("status")
@fails_cleanly
def kafka_status() -> None:
    """Say whether the local broker runs and answers; exit 1 when it does not answer."""
    from personas.local import kafka_server

    status = kafka_server.status(settings())
    state = "answering" if status.answering else ("running, not answering" if status.running
                                                  else "stopped")
    print(f"kafka: {state}  pid={status.pid}  bootstrap={status.bootstrap}  home={status.home}")
    if not status.answering:
        raise typer.Exit(1)
