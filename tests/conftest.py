"""Shared fixtures. Integration tests run against a real Neo4j: a separate local instance
("test", Bolt 7688) started here when needed and stopped afterwards, or the server named by
PERSONAS_NEO4J_URI (which the tests wipe: never point it at data you want to keep)."""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from neo4j import Driver

from graph.db import Graph, create_driver
from graph.migrate import missing_owner_ids
from graph.settings import Settings
from personas.local import neo4j_server
from tests.helpers import METRICS_TOKEN, empty_graph

TEST_BOLT_PORT = int(os.environ.get("PERSONAS_TEST_BOLT_PORT", "7688"))
TEST_HTTP_PORT = int(os.environ.get("PERSONAS_TEST_HTTP_PORT", "7475"))
# A second checkout can run its suite beside this one on its own instance and ports.
TEST_INSTANCE = os.environ.get("PERSONAS_TEST_INSTANCE", "test")
TEST_KAFKA_PORT = int(os.environ.get("PERSONAS_TEST_KAFKA_PORT", "9192"))
TEST_KAFKA_CONTROLLER_PORT = int(os.environ.get("PERSONAS_TEST_KAFKA_CONTROLLER_PORT", "9193"))


@pytest.fixture(scope="session")
def settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return Settings(
        runs_dir=tmp_path_factory.mktemp("runs"),
        neo4j_instance=TEST_INSTANCE,
        neo4j_bolt_port=TEST_BOLT_PORT,
        neo4j_http_port=TEST_HTTP_PORT,
        neo4j_heap="1g",
        neo4j_pagecache="256m",
        pseudonym_key="test-pseudonym-key",
        # Set, as outside demo mode it must be (the local server's initial password).
        neo4j_password=Settings.model_fields["neo4j_password"].default,
        kafka_instance=TEST_INSTANCE,
        kafka_port=TEST_KAFKA_PORT,
        kafka_controller_port=TEST_KAFKA_CONTROLLER_PORT,
        kafka_heap="256m",
        consumer_metrics_port=0,
        metrics_token=METRICS_TOKEN,
    )


class Starting:
    """A local server started, when not answering, on a thread of its own: the session's
    first tests (the unit tests, which need no server) run while its JVM comes up."""

    def __init__(self, name: str, answering: Callable[[], bool], start: Callable[[], object]):
        self.started = False
        self.claimed = False
        self.error: BaseException | None = None
        self._answering, self._start = answering, start
        self._thread = threading.Thread(target=self._run, name=f"start-{name}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            if not self._answering():
                self._start()
                self.started = True
        except BaseException as exc:  # raised again by wait(), in the fixture that needs it
            self.error = exc

    def wait(self) -> bool:
        """Whether this session started the server (so must stop it); the start's error."""
        self.claimed = True
        self._thread.join()
        if self.error is not None:
            raise self.error
        return self.started

    def unclaimed_and_started(self) -> bool:
        """Whether this session started the server but no fixture took it over."""
        self._thread.join()
        return not self.claimed and self.started


@pytest.fixture(scope="session", autouse=True)
def servers_starting(request: pytest.FixtureRequest,
                     settings: Settings) -> Iterator[dict[str, Starting]]:
    """The Neo4j and Kafka test servers the session's tests will need, starting from the
    session's first test on (``neo4j_running`` and ``kafka_running`` wait for them, and stop
    them after). One that no test came to use (the session stopped early) is stopped here."""
    needed = {name for item in request.session.items
              for name in getattr(item, "fixturenames", ())}
    starting = {server: start_server(server, settings) for server in ("neo4j", "kafka")
                if f"{server}_running" in needed}
    yield starting
    for server, start in starting.items():
        if start.unclaimed_and_started():
            server_module(server).stop(settings)


def server_module(server: str) -> Any:
    from personas.local import kafka_server

    return neo4j_server if server == "neo4j" else kafka_server


def start_server(server: str, settings: Settings) -> Starting:
    module = server_module(server)
    return Starting(server, lambda: module.status(settings).answering,
                    lambda: module.start(settings))


@pytest.fixture(scope="session")
def neo4j_running(settings: Settings,
                  servers_starting: dict[str, Starting]) -> Iterator[Settings]:
    started = (servers_starting.get("neo4j") or start_server("neo4j", settings)).wait()
    yield settings
    if started:
        neo4j_server.stop(settings)


@pytest.fixture(scope="session")
def kafka_running(settings: Settings,
                  servers_starting: dict[str, Starting]) -> Iterator[Settings]:
    """The test Kafka (instance named like the Neo4j test instance, ports from
    PERSONAS_TEST_KAFKA_PORT / _CONTROLLER_PORT), started when not answering, stopped after."""
    from personas.local import kafka_server

    started = (servers_starting.get("kafka") or start_server("kafka", settings)).wait()
    yield settings
    if started:
        kafka_server.stop(settings)


@pytest.fixture(scope="session")
def driver(neo4j_running: Settings) -> Iterator[Driver]:
    drv = create_driver(neo4j_running)
    yield drv
    drv.close()


@pytest.fixture
def graph(driver: Driver, settings: Settings) -> Iterator[Graph]:
    """An empty, migrated database. After the test, every interaction, aggregate, segment
    membership, persona period and session link left in it carries its owner's id (what the
    writers write, and the per-user index reads need: a row written by hand without it is
    invisible to them, and a test of a bounded read on it would prove nothing)."""
    graph = empty_graph(driver, settings)
    yield graph
    missing = {kind: n for kind, n in missing_owner_ids(graph).items() if n}
    assert missing == {}, ("rows without their owner's id (write them through the writers, "
                           f"or with `user_id`): {missing}")


@pytest.fixture
def cli_env(neo4j_running: Settings) -> dict[str, str]:
    """Environment for running the `personas` CLI against the test server."""
    s = neo4j_running
    return {
        **os.environ,
        "PERSONAS_NEO4J_URI": s.bolt_uri,
        "PERSONAS_NEO4J_PASSWORD": s.neo4j_password.get_secret_value(),
        "PERSONAS_PSEUDONYM_KEY": s.pseudonym_key.get_secret_value(),
        "PERSONAS_NEO4J_INSTANCE": s.neo4j_instance,
    }


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return Path(__file__).resolve().parent.parent



@pytest.fixture(scope="session", autouse=True)
def session_log(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Every log record of the test process at INFO and above, in one file, for the final
    plaintext-PII sweep (tests/pii.py)."""
    path = tmp_path_factory.getbasetemp() / "session.log"
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
    root = logging.getLogger()
    previous = root.level
    root.addHandler(handler)
    root.setLevel(min(previous, logging.INFO))
    try:
        yield path
    finally:
        root.removeHandler(handler)
        root.setLevel(previous)
        handler.close()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked `last` (the suite-wide sweeps) run after everything else. Tests marked
    `faults` (Neo4j and Kafka killed and restarted: minutes each, and a restart that fails on a
    loaded machine takes every later test with it) run only by `make test-faults`
    (``PERSONAS_TEST_FAULTS=1``), so that `make test` stays within its time budget."""
    if os.environ.get("PERSONAS_TEST_FAULTS") != "1":
        faults = [item for item in items if item.get_closest_marker("faults") is not None]
        if faults:
            config.hook.pytest_deselected(items=faults)
            items[:] = [item for item in items if item.get_closest_marker("faults") is None]
    # Tests marked `spark` need the `spark` extra and start Spark JVMs: `make test-spark`
    # (PERSONAS_TEST_SPARK=1) installs the one and runs them.
    if os.environ.get("PERSONAS_TEST_SPARK") != "1":
        spark = [item for item in items if item.get_closest_marker("spark") is not None]
        if spark:
            config.hook.pytest_deselected(items=spark)
            items[:] = [item for item in items if item.get_closest_marker("spark") is None]
    # `bulk` (the bulk import stops, replaces and restarts Neo4j: minutes) likewise runs only
    # by `make test-bulk` (PERSONAS_TEST_BULK=1).
    if os.environ.get("PERSONAS_TEST_BULK") != "1":
        bulk = [item for item in items if item.get_closest_marker("bulk") is not None]
        if bulk:
            config.hook.pytest_deselected(items=bulk)
            items[:] = [item for item in items if item.get_closest_marker("bulk") is None]
    # The unit tests first, while the servers the integration tests need start
    # (`servers_starting`); the sweeps marked `last` after everything.
    items.sort(key=lambda item: (item.get_closest_marker("last") is not None,
                                 item.get_closest_marker("integration") is not None))
