"""The code version recorded with every segmentation run."""

from __future__ import annotations

import subprocess
from functools import cache
from importlib.metadata import PackageNotFoundError, version

from graph.settings import REPO_ROOT


@cache
def code_version() -> str:
    """Package version, plus the git commit when running from a checkout."""
    try:
        base = version("persona-graph")
    except PackageNotFoundError:
        base = "unknown"
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO_ROOT,
                                capture_output=True, text=True, timeout=5, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return base
    sha = commit.stdout.strip()
    return f"{base}+{sha}" if commit.returncode == 0 and sha else base
