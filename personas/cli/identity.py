"""`personas identity`: merges of users, their undoing and history."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from personas.cli.common import console, fails_cleanly, migrated_graph, plain, settings

identity_app = typer.Typer(help="Identity resolution: merge users, undo merges, list them.",
                           no_args_is_help=True)


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
    console.print(f"merged {plain(merged)} into {plain(survivor)} ({merge_id})")


@identity_app.command("unmerge")
@fails_cleanly
def identity_unmerge_cmd(
    merge_id: Annotated[str, typer.Argument(metavar="MERGE_ID", help="As printed by merge.")],
) -> None:
    """Undo a merge: both users get back what they had; their aggregates are rebuilt."""
    from graph.identity import unmerge

    with migrated_graph(settings()) as graph:
        survivor, merged = unmerge(graph, merge_id)
    console.print(f"unmerged {plain(merge_id)}: {plain(merged)} is separate from "
                  f"{plain(survivor)} again")


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
        console.print(f"no merges for {plain(user)}")
        return
    table = Table("merge", "at (UTC)", "survivor", "merged", "source", "reason", "undone (UTC)")
    for m in history:
        table.add_row(plain(m["id"]), f"{m['at']:%Y-%m-%d %H:%M:%S}", plain(m["survivor_id"]),
                      plain(m["merged_id"]), plain(m["source"]), plain(m["reason"]),
                      f"{m['undone_at']:%Y-%m-%d %H:%M:%S}" if m["undone_at"] else "")
    Console(width=200).print(table)
