"""`personas serve` on a free port over a demo graph, for tests that reach the API as users do
(the MCP client, a headless browser)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from neo4j import Driver

from graph.auth import Role, create_key
from graph.db import Graph
from graph.segments.run import RunResult, run_segmentation
from graph.settings import Settings
from tests.helpers import PERSONAS, empty_graph, load_demo
from tests.integration.test_api_served import free_port, serving


@dataclass(frozen=True)
class World:
    base: str
    graph: Graph
    keys: dict[str, str]
    """A key of each role, by role name."""
    run: RunResult
    """The latest segmentation run."""
    env: dict[str, str]
    """The environment the server runs with (for other `personas` commands)."""


def server_env(settings: Settings) -> dict[str, str]:
    env = {**os.environ,
           "PERSONAS_NEO4J_URI": settings.bolt_uri,
           "PERSONAS_NEO4J_PASSWORD": settings.neo4j_password.get_secret_value(),
           "PERSONAS_PSEUDONYM_KEY": settings.pseudonym_key.get_secret_value(),
           "PERSONAS_RUNS_DIR": str(settings.resolved_runs_dir)}
    env.pop("PERSONAS_DEMO", None)
    return env


@contextmanager
def served_demo(driver: Driver, settings: Settings, folder: Path, *, users: int,
                runs: int = 1) -> Iterator[World]:
    """A demo graph of ``users`` (seed 42) segmented ``runs`` times, a key per role, and the
    API serving it; stopped on exit."""
    graph = empty_graph(driver, settings)
    load_demo(graph, folder, users, seed=42, key=settings.pseudonym_key.get_secret_value())
    for _ in range(runs):
        run = run_segmentation(graph, runs_dir=settings.resolved_runs_dir)
    keys = {role.value: create_key(graph, role, f"{role.value} served").key for role in Role}
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = server_env(settings)
    log = folder / "serve.log"
    with serving([PERSONAS, "serve", "--host", "127.0.0.1", "--port", str(port)], env, base, log):
        yield World(base, graph, keys, run, env)
