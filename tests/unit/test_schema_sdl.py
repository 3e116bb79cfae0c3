"""The GraphQL SDL kept in the repository (api/schema.graphql) matches the code, and
`personas schema --check` catches a file that does not."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from api.sdl import SDL_PATH, render_sdl
from tests.helpers import PERSONAS


def personas(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([PERSONAS, *args], capture_output=True, text=True, timeout=120,
                          check=False)


def test_repository_sdl_matches_the_code(repo_root: Path) -> None:
    path = repo_root / "api" / "schema.graphql"
    assert path == SDL_PATH
    assert path.is_file(), "api/schema.graphql is missing: run `personas schema` to write it"
    assert path.read_text(encoding="utf-8") == render_sdl(), (
        "api/schema.graphql differs from the GraphQL schema in the code: "
        "run `personas schema` to regenerate it (and commit the result)")


def test_check_fails_on_a_modified_copy(tmp_path: Path) -> None:
    copy = tmp_path / "schema.graphql"
    written = personas("schema", "--path", str(copy))
    assert written.returncode == 0, written.stderr
    assert copy.read_text(encoding="utf-8") == render_sdl()
    unchanged = personas("schema", "--check", "--path", str(copy))
    assert unchanged.returncode == 0, unchanged.stderr
    assert "up to date" in unchanged.stderr

    copy.write_text(copy.read_text(encoding="utf-8").replace("name: String!", "name: String"),
                    encoding="utf-8")
    drifted = personas("schema", "--check", "--path", str(copy))
    assert drifted.returncode == 1
    assert "differs from the schema in the code" in drifted.stderr
    assert f"run `personas schema --path {copy}`" in drifted.stderr
    assert "+  name: String!" in drifted.stderr  # the diff shows what the code says

    copy.unlink()
    missing = personas("schema", "--check", "--path", str(copy))
    assert missing.returncode == 1 and "is missing" in missing.stderr
    assert not copy.exists()  # --check never writes


def test_cli_start_does_not_load_the_web_layer() -> None:
    code = ("import sys, personas.cli; "
            "print(sorted(m for m in ('api.schema', 'strawberry', 'fastapi') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120, check=True)
    assert out.stdout.strip() == "[]"
