"""Versioned schema migrations: numbered ``.cypher`` files applied once and recorded in the graph.

Neo4j refuses schema changes and data writes in one transaction, so each statement of a migration
runs in its own transaction and the record of the migration is written last. Statements must
therefore be re-runnable (``IF NOT EXISTS``), which makes a migration interrupted half-way safe to
apply again.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from graph.db import Graph
from graph.errors import Conflict, InvalidInput, SchemaBehind

FILE_PATTERN = re.compile(r"^(\d{4})_([a-z0-9_]+)\.cypher$")

BOOTSTRAP = (
    "CREATE CONSTRAINT migration_version IF NOT EXISTS "
    "FOR (m:Migration) REQUIRE m.version IS UNIQUE"
)
APPLIED = (
    "MATCH (m:Migration) RETURN m.version AS version, m.name AS name, "
    "m.checksum AS checksum, m.applied_at AS applied_at ORDER BY m.version"
)
RECORD = (
    "MERGE (m:Migration {version: $version}) "
    "SET m.name = $name, m.checksum = $checksum, m.applied_at = datetime()"
)

# Rows the per-user index reads cannot see, per kind: each must carry its owner's id (and an
# interaction its session's, an aggregate its mark, a session link its start), as the writers
# and the backfills of migrations 0015-0017 give them. A row written otherwise (by hand, or by a
# writer that forgot them) is invisible to the bounded reads (graph/profile/queries.py).
MISSING_OWNER_IDS = """
CALL () {
  MATCH (u:User)-[:PERFORMED]->(i:Interaction)
  OPTIONAL MATCH (i)-[:IN_SESSION]->(s:Session)
  WITH i, u, s WHERE i.user_id IS NULL OR i.user_id <> u.id
                     OR (s IS NOT NULL AND coalesce(i.session_id, '') <> s.id)
  RETURN count(i) AS interactions
}
CALL () {
  MATCH (u:User)-[r:INTERACTED]->(:Item)
  WHERE r.user_id IS NULL OR r.user_id <> u.id OR r.bought_or_liked IS NULL
  RETURN count(r) AS aggregates
}
CALL () {
  MATCH (u:User)-[m:IN_SEGMENT]->()
  WHERE m.user_id IS NULL OR m.user_id <> u.id
  RETURN count(m) AS memberships
}
CALL () {
  MATCH (u:User)-[h:HAD_PERSONA]->()
  WHERE h.user_id IS NULL OR h.user_id <> u.id
  RETURN count(h) AS persona_periods
}
CALL () {
  MATCH (u:User)-[h:HAD_SESSION]->(s:Session)
  WHERE h.user_id IS NULL OR h.user_id <> u.id OR h.started_at IS NULL
     OR h.started_at <> s.started_at
  RETURN count(h) AS session_links
}
RETURN interactions, aggregates, memberships, persona_periods, session_links
"""


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    path: Path
    checksum: str

    @property
    def statements(self) -> list[str]:
        return split_statements(self.path.read_text())


@dataclass(frozen=True)
class MigrationState:
    migration: Migration
    applied: bool
    applied_at: str | None


def split_statements(text: str) -> list[str]:
    """Split a migration file into statements: ``;`` ends one, ``//`` lines are comments."""
    lines = [line for line in text.splitlines() if not line.strip().startswith("//")]
    return [stmt.strip() for stmt in "\n".join(lines).split(";") if stmt.strip()]


def discover(folder: Path) -> list[Migration]:
    """All migrations in ``folder``, ordered by version; a misnamed .cypher file is an error."""
    if not folder.is_dir():
        raise InvalidInput(f"Migrations folder {folder} does not exist.")
    found: list[Migration] = []
    for path in sorted(folder.glob("*.cypher")):
        match = FILE_PATTERN.match(path.name)
        if not match:
            raise InvalidInput(
                f"Migration file {path.name} is not named NNNN_lowercase_name.cypher."
            )
        checksum = hashlib.sha256(path.read_bytes()).hexdigest()
        found.append(Migration(int(match.group(1)), match.group(2), path, checksum))
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise InvalidInput(f"Two migrations in {folder} share a version number.")
    return found


def _applied(graph: Graph) -> dict[int, dict[str, Any]]:
    # Read only (a database never migrated has no Migration nodes yet), so that a user with
    # read rights alone can still ask; `migrate` creates the bootstrap constraint itself.
    return {row["version"]: row for row in graph.rows(APPLIED)}


def status(graph: Graph, folder: Path) -> list[MigrationState]:
    applied = _applied(graph)
    states = []
    for migration in discover(folder):
        row = applied.get(migration.version)
        states.append(MigrationState(migration, row is not None,
                                     str(row["applied_at"]) if row else None))
    return states


SCHEMA_STATEMENT = re.compile(r"^\s*(CREATE|DROP)\s+(INDEX|CONSTRAINT)\b", re.IGNORECASE)
"""A statement that changes the schema (an index or a constraint); every other statement of a
migration changes data: it brings a graph written by older code up to date."""


def is_schema(statement: str) -> bool:
    return SCHEMA_STATEMENT.match(statement) is not None


def migrate(graph: Graph, folder: Path, *, fresh: bool = False) -> list[Migration]:
    """Apply pending migrations in order; refuse if an applied one was edited since.

    ``fresh`` is for a database this code's bulk import has just written (graph/ingest/bulk.py),
    which holds nothing written by older code: only the schema statements run (indexes and
    constraints), and the data statements, backfills of graphs written by older code, do not:
    each is a scan of its whole kind that finds nothing to do there (about half of Neo4j's CPU
    in migrating a bulk-imported graph, docs/performance.md). The caller waits for the index
    populations (``db.awaitIndexes``)."""
    graph.auto_commit(BOOTSTRAP)
    applied = _applied(graph)
    migrations = discover(folder)
    for migration in migrations:
        row = applied.get(migration.version)
        if row is not None and row["checksum"] != migration.checksum:
            raise Conflict(
                f"Migration {migration.path.name} was edited after it was applied "
                f"(recorded checksum {row['checksum'][:12]}, file now {migration.checksum[:12]}). "
                "Add a new migration instead of editing an applied one."
            )
    done = []
    for migration in migrations:
        if migration.version in applied:
            continue
        for statement in migration.statements:
            if fresh and not is_schema(statement):
                continue
            # Migration files are trusted project source, not user input.
            graph.auto_commit(statement)
        graph.execute(RECORD, version=migration.version, name=migration.name,
                      checksum=migration.checksum)
        done.append(migration)
    return done


def pending(graph: Graph, folder: Path) -> list[Migration]:
    return [s.migration for s in status(graph, folder) if not s.applied]


def latest_version(folder: Path) -> int | None:
    """The newest migration this code ships, or None without a migrations folder (a package
    installed outside a checkout: there is nothing to compare with)."""
    if not folder.is_dir():
        return None
    return max((m.version for m in discover(folder)), default=None)


def require_current(graph: Graph, folder: Path) -> None:
    """Refuse a database whose schema is behind this code's migrations (nothing to check
    without a migrations folder). Without their constraints and indexes every lookup by id
    scans a label (a 2,000-user demo load ran for over 15 minutes without finishing, against
    under 2 with them), and nothing keeps ids unique."""
    if not folder.is_dir():
        return
    waiting = pending(graph, folder)
    if waiting:
        names = ", ".join(m.path.name for m in waiting[:3]) + (", ..." if len(waiting) > 3 else "")
        raise SchemaBehind(f"the database schema is behind: {len(waiting)} migration(s) pending "
                           f"({names}). Run `personas migrate` first.")


def missing_owner_ids(graph: Graph) -> dict[str, int]:
    """How many interactions, aggregates, segment memberships, persona periods and session
    links lack their owner's id (or hold another's, or lack what else their index holds):
    rows the per-user index reads do not see. All zero on a graph only the writers wrote."""
    [row] = graph.rows(MISSING_OWNER_IDS)
    return {kind: int(n) for kind, n in row.items()}
