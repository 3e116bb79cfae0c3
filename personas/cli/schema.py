"""Schemas: the graph's migrations and the GraphQL SDL file."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from graph import migrate as migrations
from graph.db import open_graph
from personas.cli.common import console, fails_cleanly, settings


@fails_cleanly
def migrate_cmd(
    status: Annotated[bool, typer.Option("--status", help="List applied and pending.")] = False,
    check: Annotated[bool, typer.Option(
        "--check", help="Only check the data: count the interactions, aggregates, segment "
                        "memberships, persona periods and session links without their owner's "
                        "id (invisible to the per-user reads); exit 1 if any.")] = False,
) -> None:
    """Apply pending schema migrations (constraints, indexes) in order."""
    cfg = settings()
    with open_graph(cfg) as graph:
        if check:
            missing = migrations.missing_owner_ids(graph)
            for kind, n in missing.items():
                console.print(f"{kind.replace('_', ' ')} without their owner's id: {n}")
            if any(missing.values()):
                raise typer.Exit(1)
            return
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
