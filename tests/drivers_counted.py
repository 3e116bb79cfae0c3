"""`personas` with each Neo4j driver the process creates written down, one line per driver
("sync" or "async") in the file named by the first argument; the rest are the command's
arguments. The served API's test counts its drivers this way (``test_one_driver``): the
process runs the very entry point users start, only with the two driver factories wrapped."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import neo4j

from personas.cli import main


def counted(factory: Callable[..., Any], kind: str, log: Path) -> Callable[..., Any]:
    def make(*args: Any, **kwargs: Any) -> Any:
        with log.open("a") as out:
            out.write(f"{kind}\n")
        return factory(*args, **kwargs)
    return make


if __name__ == "__main__":
    log = Path(sys.argv.pop(1))
    # Patched on the classes: graph.db looks `driver` up on them at each call.
    neo4j.GraphDatabase.driver = counted(  # type: ignore[method-assign]
        neo4j.GraphDatabase.driver, "sync", log)
    neo4j.AsyncGraphDatabase.driver = counted(  # type: ignore[method-assign]
        neo4j.AsyncGraphDatabase.driver, "async", log)
    sys.argv[0] = "personas"
    main()
