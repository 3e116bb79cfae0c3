"""The API maps the read model (``graph.profile``) to GraphQL and holds no Cypher of its own."""

from __future__ import annotations

import ast
import re
from pathlib import Path

API = Path(__file__).resolve().parents[2] / "api"
CYPHER = re.compile(r"\b(OPTIONAL\s+)?MATCH\s*\(|\bMERGE\s*\(|\bUNWIND\s+\$|\bRETURN\s+\w+\s*\.")


def api_modules() -> list[Path]:
    return sorted(API.rglob("*.py"))


def test_the_api_holds_no_cypher() -> None:
    found = [f"{path.relative_to(API.parent)}:{n}"
             for path in api_modules()
             for n, line in enumerate(path.read_text().splitlines(), 1) if CYPHER.search(line)]
    assert not found, found


def test_the_api_imports_no_queries_module() -> None:
    """Statements are run by the read model's functions, never picked by a resolver."""
    imported = [f"{path.relative_to(API.parent)}: {node.module}"
                for path in api_modules()
                for node in ast.walk(ast.parse(path.read_text()))
                if isinstance(node, ast.ImportFrom) and node.module
                and (node.module.endswith(".queries")
                     or any(a.name == "queries" for a in node.names))]
    assert not imported, imported


def test_the_check_sees_cypher() -> None:
    assert CYPHER.search("MATCH (u:User {id: $id}) RETURN u.id AS id")
    assert CYPHER.search("  OPTIONAL MATCH (u)-[:LOCATED_IN]->(l)")
    assert CYPHER.search("UNWIND $rows AS row")
    assert not CYPHER.search("A match of the request's key, returned as is.")
