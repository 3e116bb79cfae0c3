from __future__ import annotations

import subprocess
import time

import pytest
from neo4j import Driver

from graph.settings import Settings
from personas.local import neo4j_server
from tests.helpers import PERSONAS

pytestmark = pytest.mark.integration


def test_second_start_reuses_the_running_server(neo4j_running: Settings) -> None:
    before = neo4j_server.status(neo4j_running)
    assert before.answering and before.pid is not None
    t0 = time.monotonic()
    after = neo4j_server.start(neo4j_running)
    assert after.pid == before.pid
    assert time.monotonic() - t0 < 60  # the same pid proves the reuse; this, no long wait


def test_browser_is_served(neo4j_running: Settings) -> None:
    import urllib.request

    url = f"http://127.0.0.1:{neo4j_running.neo4j_http_port}/browser/"
    with urllib.request.urlopen(url, timeout=10) as response:
        body = response.read().decode()
    assert response.status == 200 and "<html" in body.lower()


def test_status_cli(neo4j_running: Settings, cli_env) -> None:
    env = {**cli_env, "PERSONAS_NEO4J_BOLT_PORT": str(neo4j_running.neo4j_bolt_port)}
    env.pop("PERSONAS_NEO4J_URI")
    proc = subprocess.run([PERSONAS, "neo4j", "status"], env=env, capture_output=True, text=True)
    assert proc.returncode == 0 and "answering" in proc.stdout


def test_existing_server_uri_provisions_nothing(neo4j_running: Settings) -> None:
    external = neo4j_running.model_copy(update={
        "neo4j_uri": neo4j_running.bolt_uri, "neo4j_instance": "must-not-exist"})
    status = neo4j_server.start(external)
    assert status.answering
    assert not external.local_instance_dir.exists()
    assert neo4j_server.stop(external) is False


def test_stale_pid_file_is_handled(neo4j_running: Settings, driver: Driver) -> None:
    """Stop, leave a PID file naming a live process that is not Neo4j (after a crash the
    pid may be reused, or left as a zombie, which Neo4j's own launcher takes for a running
    server), and start again."""
    assert neo4j_server.stop(neo4j_running)
    assert not neo4j_server.status(neo4j_running).answering
    other = subprocess.Popen(["sleep", "300"])
    try:
        pid_file = neo4j_running.local_instance_dir / "run" / "neo4j.pid"
        pid_file.write_text(f"{other.pid}\n")
        assert neo4j_server.status(neo4j_running).pid is None
        status = neo4j_server.start(neo4j_running)
        assert status.answering and status.pid not in (None, other.pid)
        assert other.poll() is None  # not Neo4j, so left alone
    finally:
        other.kill()
        other.wait()
    # The suite's shared driver still pools connections to the stopped server: a retried
    # query meets them, and the driver drops them, before a test that does not retry does.
    assert driver.execute_query("RETURN 1 AS n", database_=neo4j_running.neo4j_database
                                ).records[0]["n"] == 1
