"""`personas apikey`: the API keys of the GraphQL API."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from graph.auth import create_key, ensure_demo_key, list_keys, parse_role, revoke_key
from graph.db import Graph
from graph.settings import Settings
from personas.cli.common import console, fails_cleanly, migrated_graph, plain, settings

apikey_app = typer.Typer(help="Create, list and revoke the API keys of the GraphQL API.",
                         no_args_is_help=True)


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
    console.print(f"created API key {created.info.id} ({plain(created.info.name)}, role "
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
        table.add_row(k.id, plain(k.name), k.role.value, f"{k.created_at:%Y-%m-%d %H:%M:%S}",
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
