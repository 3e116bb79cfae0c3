"""The layer rules in pyproject.toml ([tool.importlinter]) hold, and a violation fails the suite.

`lint-imports` runs in `make lint` too; here it runs so that CI fails on a broken contract. The
core must not name the outer layers even by string (an import string for uvicorn, say), which
import-linter cannot see: a scan covers that.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")
# "api.app:create_app", 'personas.cli' ...: a module of an outer layer named in a string.
OUTER_MODULE_STRING = re.compile(r"""["'](?:api|personas)(?:\.\w+)+(?::\w+)?["']""")


def lint_imports(root: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(root)}
    return subprocess.run([str(LINT_IMPORTS), "--no-cache"], cwd=root, env=env,
                          capture_output=True, text=True, timeout=120, check=False)


def test_every_import_contract_is_kept() -> None:
    out = lint_imports(ROOT)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "0 broken" in out.stdout


def lint_with_import(tmp_path: Path, module: str, imported: str
                     ) -> subprocess.CompletedProcess[str]:
    """``lint-imports`` on a copy of the code where ``module`` (a path under the root) imports
    ``imported``."""
    for package in ("graph", "api", "personas"):
        shutil.copytree(ROOT / package, tmp_path / package,
                        ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    path = tmp_path / module
    path.write_text(path.read_text(encoding="utf-8") + f"\nimport {imported}  # noqa\n",
                    encoding="utf-8")
    return lint_imports(tmp_path)


def test_a_core_module_importing_the_web_layer_breaks_the_contracts(tmp_path: Path) -> None:
    out = lint_with_import(tmp_path, "graph/events.py", "api.sdl")
    assert out.returncode == 1, out.stdout + out.stderr
    assert "graph.events -> api.sdl" in out.stdout
    assert "BROKEN" in out.stdout


def test_identity_importing_ingestion_breaks_the_contracts(tmp_path: Path) -> None:
    """The ingest <-> identity loop once ran through the aggregate rules; it stays broken."""
    out = lint_with_import(tmp_path, "graph/aggregates/rules.py", "graph.ingest.writer")
    assert out.returncode == 1, out.stdout + out.stderr
    assert "graph.aggregates.rules -> graph.ingest.writer" in out.stdout
    assert "never import it BROKEN" in " ".join(out.stdout.split())


def test_the_core_names_no_outer_module_even_by_string() -> None:
    offenders = [f"{path.relative_to(ROOT)}:{n}: {line.strip()}"
                 for path in sorted((ROOT / "graph").rglob("*.py"))
                 for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
                 if OUTER_MODULE_STRING.search(line)]
    assert offenders == []
