"""The `personas` command line: local Neo4j, migrations, ingestion, demo data, segmentation, API.

The whole command tree is assembled here, in the order `personas --help` lists it; each module of
this package holds the commands of one concern.
"""

from __future__ import annotations

import typer

from graph.logs import configure_logging
from graph.settings import Settings
from personas.cli import (
    apikeys,
    identity,
    ingest,
    mcp,
    pages,
    privacy,
    schema,
    segments,
    serve,
    services,
    situation,
)

app = typer.Typer(help="persona-graph: a graph-based persona store for chatbots, on Neo4j.",
                  no_args_is_help=True, pretty_exceptions_enable=False)
app.command("consume")(ingest.consume_cmd)
app.command("produce")(ingest.produce_cmd)
app.command("migrate")(schema.migrate_cmd)
app.command("ingest")(ingest.ingest_cmd)
app.command("import")(ingest.import_cmd)
app.command("demo-data")(ingest.demo_data_cmd)
app.command("segment")(segments.segment_cmd)
app.command("scheduler")(segments.scheduler_cmd)
app.command("plot")(segments.plot_cmd)
app.command("schema")(schema.schema_cmd)
app.command("serve")(serve.serve_cmd)
app.command("up")(serve.up_cmd)
app.command("mcp")(mcp.mcp_cmd)
app.add_typer(services.neo4j_app, name="neo4j")
app.add_typer(services.kafka_app, name="kafka")
app.add_typer(ingest.crm_app, name="crm")
app.add_typer(apikeys.apikey_app, name="apikey")
app.add_typer(situation.situation_app, name="context")
app.add_typer(privacy.privacy_app, name="privacy")
app.add_typer(identity.identity_app, name="identity")
app.add_typer(pages.pages_app, name="pages")


def main() -> None:
    try:
        log_format = Settings().log_format
    except Exception:  # noqa: BLE001 - any bad setting is reported by the command itself
        log_format = "text"
    configure_logging(log_format)
    app()
