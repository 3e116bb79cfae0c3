"""Only ``graph.db`` opens sessions and transactions, so that every read is a READ
transaction and every write a WRITE one (routed to a cluster's secondaries and leader), each
sharing the driver's bookmarks (docs/operations.md). Code elsewhere goes through ``Graph``,
``read_rows`` or a ``Reader``."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
OPENS = re.compile(r"\.(session|execute_query|execute_read|execute_write|begin_transaction)\(")
ALLOWED = {
    "graph/db.py",
    # The local server's start-up probe, on a driver of its own before anything runs.
    "personas/local/neo4j_server.py",
}


def test_only_graph_db_opens_sessions() -> None:
    found = [f"{path.relative_to(ROOT)}:{n}"
             for package in ("graph", "api", "personas")
             for path in sorted((ROOT / package).rglob("*.py"))
             if str(path.relative_to(ROOT)) not in ALLOWED
             for n, line in enumerate(path.read_text().splitlines(), 1) if OPENS.search(line)]
    assert not found, found


def test_the_check_sees_a_session() -> None:
    assert OPENS.search("with graph.driver.session(database=graph.database) as session:")
    assert OPENS.search("await driver.execute_query(QUERY)")
    assert OPENS.search("session.execute_read(work)")
    assert not OPENS.search("a session of the API (sessions.py)")
