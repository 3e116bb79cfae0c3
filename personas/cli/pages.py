"""`personas pages`: the browser assets of the API's pages (GraphiQL), fetched once from the
npm registry into the cache folder, like Neo4j's jars."""

from __future__ import annotations

import typer

from graph.errors import Unavailable
from graph.settings import Settings
from personas.cli.common import console, fails_cleanly, settings
from personas.local.web_assets import ensure_web_assets

pages_app = typer.Typer(help="The API's pages: GraphiQL's assets (served without a CDN).",
                        no_args_is_help=True)


@pages_app.command("fetch")
@fails_cleanly
def fetch_cmd() -> None:
    """Fetch GraphiQL's pinned npm packages once (checked by SHA-256) into the cache folder."""
    root = ensure_web_assets(settings(), echo=lambda m: console.print(m))
    console.print(f"GraphiQL's assets are in {root}")


def provision_pages(cfg: Settings) -> None:
    """Before serving: fetch the assets if missing. Offline, the API still serves; GraphiQL's
    page then says how to fetch them."""
    try:
        ensure_web_assets(cfg, echo=lambda m: console.print(m))
    except Unavailable as exc:
        console.print(f"[yellow]GraphiQL's assets are missing[/yellow]: {exc}")
