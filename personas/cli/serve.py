"""Serving the API, alone (`serve`) or with everything it needs (`up`)."""

from __future__ import annotations

import logging
import signal
import sys
import threading
from typing import Annotated

import typer

from graph import migrate as migrations
from graph.db import open_graph
from graph.ingest.queries import USER_COUNT
from personas.cli.apikeys import ensure_demo_api_key
from personas.cli.common import console, demo_unless_keyed, fails_cleanly, settings
from personas.cli.ingest import load_demo
from personas.cli.pages import provision_pages
from personas.cli.segments import scheduler_loop, segment
from personas.local import neo4j_server


def serve_api(host: str, port: int) -> None:
    """Run the API with uvicorn. Its app factory reads the settings from the environment, where
    ``demo_unless_keyed`` may have turned demo mode on for this process."""
    import uvicorn

    from api.serving import header_deadline_protocol

    # With JSON logs, uvicorn's own loggers go through the root handler too (no config of its
    # own), so every line of the service is JSON.
    json_logs = settings().log_format == "json"
    provision_pages(settings())
    logging.getLogger().setLevel(logging.INFO)  # one access line per request (api.metrics)
    # The app logs each request itself (api.access, with its latency); uvicorn's own access
    # line would be a second line per request.
    # A WebSocket message (a subscription's document and variables) is bounded like a body;
    # request headers by a deadline and a size uvicorn does not have (api.serving).
    uvicorn.run("api.app:create_served_app", factory=True, host=host, port=port, log_level="info",
                access_log=False, ws_max_size=settings().api_max_body_bytes,
                http=header_deadline_protocol(settings().api_header_timeout_s,
                                              settings().api_max_header_bytes),
                log_config=None if json_logs else uvicorn.config.LOGGING_CONFIG)


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
