"""What every command shares: the console, clean failures, settings, progress, the graph."""

from __future__ import annotations

import errno
import functools
import logging
import os
import stat
import unicodedata
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import typer
from neo4j.exceptions import AuthError, Neo4jError, ServiceUnavailable
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)

from graph import migrate as migrations
from graph.db import Graph, open_graph
from graph.errors import InvalidInput, PersonaError
from graph.settings import Settings

console = Console(stderr=True, soft_wrap=True)
log = logging.getLogger("personas")
F = TypeVar("F", bound=Callable[..., Any])


def plain(value: object) -> str:
    """Text from outside the command (ids and names that events, writers or files chose, an
    error naming such a value, a provider's answer) as the console may show it: rich's markup
    escaped and control characters written as escapes (``\\x1b``). Printed as it was, a
    location id `x[/bold]` ended the command with rich's MarkupError, and an escape sequence
    in an event's source drove the operator's terminal (its title, a cleared screen)."""
    text = str(value)
    if not text.isprintable():
        text = "".join(f"\\x{ord(c):02x}" if unicodedata.category(c) == "Cc"
                       and c not in "\n\t" else c for c in text)
    return escape(text)


def fails_cleanly(func: F) -> F:
    """Turn expected failures into one clear message and a non-zero exit, without a traceback."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except PersonaError as exc:
            console.print(f"[red]error ({exc.code}):[/red] {plain(exc)}")
            raise typer.Exit(2) from None
        except ServiceUnavailable as exc:
            console.print(f"[red]error:[/red] Neo4j is not reachable ({plain(exc)}). "
                          "Start it with `personas neo4j start` or set PERSONAS_NEO4J_URI.")
            raise typer.Exit(3) from None
        except AuthError as exc:
            console.print(f"[red]error:[/red] Neo4j refused the credentials: {plain(exc.message)}")
            raise typer.Exit(3) from None
        except Neo4jError as exc:
            console.print(f"[red]error:[/red] Neo4j: {plain(exc.message)}")
            raise typer.Exit(3) from None

    return wrapper  # type: ignore[return-value]


def settings() -> Settings:
    return Settings()


def write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path``, readable and writable by its owner only whatever the file
    was before (an existing file kept its mode: an export was left readable by all). A
    symbolic link is not followed (another user's link in a shared folder would have the file
    written where it points), and only a regular file is written: ``InvalidInput`` says why
    not, as for a directory or a path that cannot be opened."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK, 0o600)
    except OSError as exc:
        why = ("it is a symbolic link: give the file itself" if exc.errno == errno.ELOOP
               else exc.strerror)
        raise InvalidInput(f"cannot write {path}: {why}") from None
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise InvalidInput(f"cannot write {path}: not a regular file")
        os.fchmod(fd, 0o600)
        out.truncate(0)
        out.write(text)


def demo_unless_keyed(cfg: Settings) -> Settings:
    """`personas up` and `personas demo-data` run in demo mode when no pseudonymization key is
    set: the public demo key is then allowed, for this process and the API it starts."""
    if not cfg.demo_mode or cfg.demo:
        return cfg
    os.environ["PERSONAS_DEMO"] = "true"  # the API factory reads settings from the environment
    console.print("[yellow]demo mode[/yellow]: no PERSONAS_PSEUDONYM_KEY or "
                  "PERSONAS_PSEUDONYM_KEY_FILE set, so identifiers are hashed with the public "
                  "demo key")
    return cfg.model_copy(update={"demo": True})


@contextmanager
def progress_bar(description: str, total: int | None) -> Iterator[Callable[[int], None]]:
    with Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
                  MofNCompleteColumn(), TimeElapsedColumn(), console=console,
                  transient=False) as bar:
        task = bar.add_task(description, total=total)
        yield lambda n: bar.advance(task, n)


@contextmanager
def migrated_graph(cfg: Settings) -> Iterator[Graph]:
    """The graph, once its schema is known to be current (``migrate.require_current``)."""
    with open_graph(cfg) as graph:
        migrations.require_current(graph, cfg.migrations_dir)
        yield graph


def count_lines(path: Path) -> int:
    with path.open("rb") as handle:
        return sum(buf.count(b"\n") for buf in iter(lambda: handle.read(1 << 20), b""))


def require_file(file: Path) -> None:
    if not file.is_file():
        what = "not a regular file" if file.exists() else "no such file"
        console.print(f"[red]error:[/red] {file}: {what}")
        raise typer.Exit(2)


def report_refusals(erased: int, rejected: int, dead_letter: Path | None) -> None:
    """After a file load: records refused for erased users, then rejects (exit 1)."""
    if erased:
        console.print(f"{erased} record(s) refused: they name users erased after their time")
    if rejected:
        console.print(f"[yellow]{rejected} record(s) rejected[/yellow]; "
                      f"reasons in {dead_letter}")
        raise typer.Exit(1)
