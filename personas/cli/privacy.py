"""`personas privacy`: a user's data exported or erased, consent, retention."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Annotated

import typer

from personas.cli.common import (
    console,
    fails_cleanly,
    migrated_graph,
    settings,
    write_private,
)

privacy_app = typer.Typer(help="Privacy: export or erase a user's data, record consent, prune "
                          "old raw interactions.", no_args_is_help=True)


UserArg = Annotated[str, typer.Argument(metavar="USER", help="The user's id (u_...).")]
ANSWERS = {"yes": True, "y": True, "true": True, "grant": True, "granted": True,
           "no": False, "n": False, "false": False, "withdraw": False, "withdrawn": False}


@privacy_app.command("export")
@fails_cleanly
def privacy_export(
    user: UserArg,
    out: Annotated[Path | None, typer.Option(
        help="Write the JSON to this file, readable by its owner only (default: stdout).")
    ] = None,
) -> None:
    """Everything held on a user, as JSON (identifiers as keyed hashes: no plaintext is kept)."""
    import json

    from graph.subjects import export_user

    with migrated_graph(settings()) as graph:
        data = export_user(graph, user)
    text = json.dumps(data, indent=2, ensure_ascii=False) + "\n"
    if out is None:
        print(text, end="")
        return
    write_private(out, text)
    console.print(f"wrote {out}: {len(data['interactions'])} interactions, "
                  f"{len(data['identifiers'])} identifiers")


@privacy_app.command("forget")
@fails_cleanly
def privacy_forget(
    user: UserArg,
    yes: Annotated[bool, typer.Option("--yes", help="Confirm; an erasure cannot be undone.")
                   ] = False,
) -> None:
    """Erase a user and everything derived from them (shared catalogue and segments stay)."""
    from graph.subjects import forget_user

    if not yes:
        console.print("[red]error:[/red] erasing a user cannot be undone; confirm with --yes")
        raise typer.Exit(2)
    with migrated_graph(settings()) as graph:
        report = forget_user(graph, user, source="cli")
    if report.already_erased:
        console.print(f"user {user} was already erased (erasure {report.erasure_id})")
        return
    counts = "  ".join(f"{k}: {v}" for k, v in report.counts.items())
    console.print(f"erased user {user} (erasure {report.erasure_id})\n{counts}")


@privacy_app.command("consent")
@fails_cleanly
def privacy_consent(
    user: UserArg,
    purpose: Annotated[str, typer.Argument(help="personalization or analytics.")],
    answer: Annotated[str, typer.Argument(metavar="yes|no", help="Granted (yes) or not (no).")],
    source: Annotated[str, typer.Option(help="Who recorded the answer (provenance).")] = "cli",
) -> None:
    """Record a user's consent for a purpose (kept with its history; the newest answer wins)."""
    from graph.subjects import parse_purpose, set_consent

    parsed = parse_purpose(purpose)  # before connecting, so a typo fails at once
    if answer.strip().lower() not in ANSWERS:
        console.print(f"[red]error:[/red] answer {answer!r}: say yes or no")
        raise typer.Exit(2)
    with migrated_graph(settings()) as graph:
        current = set_consent(graph, user, parsed, ANSWERS[answer.strip().lower()],
                              source=source)
    console.print(f"consents of {user}: " + ", ".join(
        f"{p} {'granted' if ok else 'withdrawn'}" for p, ok in current.items()))


@privacy_app.command("prune")
@fails_cleanly
def privacy_prune(
    older_than_days: Annotated[int | None, typer.Option(
        min=1, help="Age in days (default: PERSONAS_RETENTION_DAYS).")] = None,
) -> None:
    """Delete raw interactions older than the retention age; counters and aggregates stay."""
    from graph.subjects import prune_interactions

    cfg = settings()
    days = older_than_days or cfg.retention_days
    if days <= 0:
        console.print("retention is off (PERSONAS_RETENTION_DAYS=0): nothing pruned")
        return
    with migrated_graph(cfg) as graph:
        pruned = prune_interactions(graph, timedelta(days=days))
    console.print(f"pruned {pruned} interactions older than {days} days")
