from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from graph.db import Graph
from graph.errors import Conflict
from graph.migrate import migrate, missing_owner_ids, status
from graph.segments.run import run_segmentation
from tests.helpers import PERSONAS, load_demo

pytestmark = pytest.mark.integration

DROP_ALL_SCHEMA_NAMES = "SHOW CONSTRAINTS YIELD name RETURN name"
DROP_ALL_INDEX_NAMES = (
    "SHOW INDEXES YIELD name, owningConstraint WHERE owningConstraint IS NULL RETURN name"
)


def reset_schema(graph: Graph) -> None:
    """Drop every constraint and index (names come from SHOW, checked before use)."""
    import re

    for query, kind in ((DROP_ALL_SCHEMA_NAMES, "CONSTRAINT"), (DROP_ALL_INDEX_NAMES, "INDEX")):
        for row in graph.rows(query):
            name = row["name"]
            assert re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name), name
            if name.startswith("index_") and kind == "INDEX":
                continue  # token lookup indexes stay
            graph.auto_commit(f"DROP {kind} {name} IF EXISTS")  # type: ignore[arg-type]
    graph.execute("MATCH (m:Migration) DETACH DELETE m")


@pytest.fixture
def fresh(graph: Graph, tmp_path: Path, settings) -> tuple[Graph, Path]:
    reset_schema(graph)
    folder = tmp_path / "migrations"
    shutil.copytree(settings.migrations_dir, folder)
    yield graph, folder
    reset_schema(graph)
    migrate(graph, settings.migrations_dir)


def versions(folder: Path) -> list[int]:
    """The versions of the migrations in ``folder`` (the numbers of their file names)."""
    return sorted(int(p.name[:4]) for p in folder.glob("[0-9][0-9][0-9][0-9]_*.cypher"))


def constraint_names(graph: Graph) -> set[str]:
    return {r["name"] for r in graph.rows("SHOW CONSTRAINTS YIELD name RETURN name")}


def test_apply_then_rerun_is_a_noop(fresh: tuple[Graph, Path]) -> None:
    graph, folder = fresh
    assert all(not s.applied for s in status(graph, folder))
    shipped = versions(folder)
    assert shipped[:3] == [1, 2, 3]
    applied = migrate(graph, folder)
    assert [m.version for m in applied] == shipped
    assert {"user_id", "interaction_event_id", "identifier_kind_hash", "api_key_id",
            "api_key_hash", "webhook_delivery_id", "dead_letter_id", "consent_id",
            "erasure_id"} <= constraint_names(graph)
    recorded = graph.rows("MATCH (m:Migration) RETURN m.version AS v, m.checksum AS c ORDER BY v")
    assert [r["v"] for r in recorded] == shipped
    assert all(len(r["c"]) == 64 for r in recorded)
    before = graph.rows("MATCH (m:Migration) RETURN m.version AS v, toString(m.applied_at) AS at")
    assert migrate(graph, folder) == []
    after = graph.rows("MATCH (m:Migration) RETURN m.version AS v, toString(m.applied_at) AS at")
    assert before == after
    assert all(s.applied for s in status(graph, folder))


SCHEMA_OF = """
SHOW INDEXES YIELD name, type, entityType, labelsOrTypes, properties, owningConstraint
RETURN name, type, entityType, labelsOrTypes, properties, owningConstraint ORDER BY name
"""
CONSTRAINTS_OF = """
SHOW CONSTRAINTS YIELD name, type, labelsOrTypes, properties
RETURN name, type, labelsOrTypes, properties ORDER BY name
"""


def test_a_fresh_database_gets_the_whole_schema_and_no_backfill(
        fresh: tuple[Graph, Path]) -> None:
    """What the bulk import runs on the database it wrote: the schema of every migration (the
    same indexes and constraints as applying them one by one), each migration recorded, and
    no data statement (the backfill of 0015 would give this interaction its owner's id)."""
    graph, folder = fresh
    migrate(graph, folder)
    indexes, constraints = graph.rows(SCHEMA_OF), graph.rows(CONSTRAINTS_OF)
    reset_schema(graph)
    graph.execute("CREATE (:User {id: 'u-1'})-[:PERFORMED]->(:Interaction {event_id: 'e-1'})")
    applied = migrate(graph, folder, fresh=True)
    assert [m.version for m in applied] == versions(folder)
    assert graph.rows(SCHEMA_OF) == indexes
    assert graph.rows(CONSTRAINTS_OF) == constraints
    graph.auto_commit("CALL db.awaitIndexes(300)")
    assert {r["state"] for r in graph.rows("SHOW INDEXES YIELD state RETURN state")} == {"ONLINE"}
    assert graph.rows("MATCH (i:Interaction {event_id: 'e-1'}) RETURN i.user_id AS owner") == [
        {"owner": None}]
    assert migrate(graph, folder) == []
    assert all(s.applied for s in status(graph, folder))


def test_new_migration_is_pending_then_applied(fresh: tuple[Graph, Path]) -> None:
    graph, folder = fresh
    migrate(graph, folder)
    shipped = versions(folder)
    (folder / "9001_extra.cypher").write_text(
        "CREATE INDEX test_extra IF NOT EXISTS FOR (n:Item) ON (n.name);\n")
    states = status(graph, folder)
    assert [(s.migration.version, s.applied) for s in states] == [
        *((v, True) for v in shipped), (9001, False)]
    assert [m.version for m in migrate(graph, folder)] == [9001]
    names = {r["name"] for r in graph.rows("SHOW INDEXES YIELD name RETURN name")}
    assert "test_extra" in names


def test_edited_applied_migration_is_refused(fresh: tuple[Graph, Path]) -> None:
    graph, folder = fresh
    migrate(graph, folder)
    path = folder / "0002_indexes.cypher"
    path.write_text(path.read_text() + "\n// edited\n")
    (folder / "9001_extra.cypher").write_text(
        "CREATE INDEX test_extra2 IF NOT EXISTS FOR (n:Item) ON (n.price);\n")
    with pytest.raises(Conflict, match="0002_indexes.cypher was edited"):
        migrate(graph, folder)
    # Nothing after the refusal was applied.
    names = {r["name"] for r in graph.rows("SHOW INDEXES YIELD name RETURN name")}
    assert "test_extra2" not in names


def test_cli_status_and_refusal_exit_code(fresh: tuple[Graph, Path], cli_env, tmp_path) -> None:
    graph, folder = fresh
    env = {**cli_env, "PERSONAS_MIGRATIONS_DIR": str(folder)}
    out = subprocess.run([PERSONAS, "migrate", "--status"], env=env, capture_output=True,
                         text=True, check=True)
    assert "pending" in out.stdout and "0001" in out.stdout
    subprocess.run([PERSONAS, "migrate"], env=env, check=True, capture_output=True)
    out = subprocess.run([PERSONAS, "migrate", "--status"], env=env, capture_output=True,
                         text=True, check=True)
    assert "pending" not in out.stdout and out.stdout.count("applied") >= 2
    (folder / "0001_constraints.cypher").write_text("// changed\n")
    bad = subprocess.run([PERSONAS, "migrate"], env=env, capture_output=True, text=True)
    assert bad.returncode == 2
    assert "was edited after it was applied" in bad.stderr


def test_commands_refuse_a_database_whose_schema_is_behind(
        graph: Graph, settings, cli_env, tmp_path: Path) -> None:
    """Ingesting into a database without its constraints and indexes would crawl (every lookup a
    label scan) and keep nothing unique: the CLI names what is pending and writes nothing."""
    folder = tmp_path / "migrations"
    shutil.copytree(settings.migrations_dir, folder)
    (folder / "9002_later.cypher").write_text(
        "CREATE INDEX test_later IF NOT EXISTS FOR (n:Item) ON (n.price);\n")
    events = tmp_path / "events.jsonl"
    events.write_text('{"event_id": "e-behind-1", "type": "page_view", "source": "web", '
                      '"occurred_at": "2026-11-01T10:00:00Z", '
                      '"user": {"cookie": "c-behind"}, "properties": {}}\n')
    env = {**cli_env, "PERSONAS_MIGRATIONS_DIR": str(folder)}
    for args in (["ingest", str(events)], ["demo-data", "--users", "5"], ["segment"]):
        out = subprocess.run([PERSONAS, *args], env=env, capture_output=True, text=True)
        assert out.returncode == 2, (args, out.stdout, out.stderr)
        said = " ".join((out.stdout + out.stderr).split())
        assert "SCHEMA_BEHIND" in said and "1 migration(s) pending (9002_later.cypher)" in said
        assert "personas migrate" in said
    assert not graph.rows("MATCH (i:Interaction {event_id: 'e-behind-1'}) RETURN i")
    # With the shipped migrations only, the same file loads.
    ok = subprocess.run([PERSONAS, "ingest", str(events)], env=cli_env, capture_output=True,
                        text=True)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert graph.rows("MATCH (i:Interaction {event_id: 'e-behind-1'}) RETURN i")
    graph.execute("MATCH (i:Interaction {event_id: 'e-behind-1'}) DETACH DELETE i")


# One row of each kind without its owner's id, as a test or a script might write by hand.
UNOWNED = """
CREATE (u:User {id: 'by-hand'}), (it:Item {id: 'by-hand-item'}), (s:Segment {id: 'by-hand-s'}),
       (p:Persona {id: 'by-hand-p'}), (x:Session {id: 'by-hand-x', started_at: datetime()})
CREATE (u)-[:PERFORMED]->(:Interaction {event_id: 'by-hand-e', at: datetime()})
CREATE (u)-[:INTERACTED {purchases: 1}]->(it)
CREATE (u)-[:IN_SEGMENT {run_id: 'r'}]->(s)
CREATE (u)-[:HAD_PERSONA {run_id: 'r', valid_from: datetime()}]->(p)
CREATE (u)-[:HAD_SESSION]->(x)
"""


def test_check_counts_rows_without_their_owner_ids(graph: Graph, cli_env,
                                                  tmp_path: Path) -> None:
    """`personas migrate --check` counts the rows the per-user index reads cannot see (none
    on what the writers wrote) and exits 1 while there are any."""
    load_demo(graph, tmp_path, users=20, seed=3, with_context=False)
    run_segmentation(graph)
    assert set(missing_owner_ids(graph).values()) == {0}
    ok = subprocess.run([PERSONAS, "migrate", "--check"], env=cli_env, capture_output=True,
                        text=True)
    assert ok.returncode == 0 and "interactions without their owner's id: 0" in ok.stderr
    graph.execute(UNOWNED)
    assert missing_owner_ids(graph) == {"interactions": 1, "aggregates": 1, "memberships": 1,
                                        "persona_periods": 1, "session_links": 1}
    bad = subprocess.run([PERSONAS, "migrate", "--check"], env=cli_env, capture_output=True,
                         text=True)
    assert bad.returncode == 1, bad.stderr
    assert "persona periods without their owner's id: 1" in bad.stderr
    graph.execute("MATCH (n) WHERE n.id STARTS WITH 'by-hand' OR n.event_id = 'by-hand-e' "
                  "DETACH DELETE n")
    assert set(missing_owner_ids(graph).values()) == {0}
