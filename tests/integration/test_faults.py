"""Faults, injected: Neo4j killed with SIGKILL in the middle of a file import, a stream batch
and a segmentation run, then restarted; the Kafka broker killed and restarted under
``personas consume``. Afterwards nothing is lost or duplicated (the graph equals a clean load of
the same events) and no half-written run is visible. While Neo4j is down the API answers 503
``UNAVAILABLE`` and ``/readyz`` says why; it recovers by itself. One restart per scenario: a
restart is most of each test's time."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest
from confluent_kafka import KafkaException
from fastapi.testclient import TestClient

from api.app import create_app
from graph.auth import Role, create_key
from graph.db import Graph, wipe
from graph.ingest.files import ingest_file
from graph.ingest.pipeline import build_writer
from graph.segments import publish
from graph.settings import Settings
from personas.local import kafka_server, neo4j_server
from tests.helpers import PERSONAS, load_demo
from tests.integration.test_stream import (
    committed_total,
    consume_cmd,
    demo_lines,
    interactions,
    names,
    produce,
    snapshot,
)

pytestmark = [pytest.mark.integration, pytest.mark.faults]

PUBLISHED_RUNS = "MATCH (r:SegmentationRun) RETURN r.id AS id"
PENDING = "MATCH (r:PendingRun) RETURN r.id AS id"
LEFTOVERS = """
RETURN COUNT { (:PendingRun) } AS runs, COUNT { (:PendingSegment) } AS segments
"""
SEGMENTS_QUERY = {"query": "{ segments { id size } }"}


def wait_for(condition: Callable[[], bool], timeout: float, what: str,
             every: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(every)
    raise AssertionError(f"timed out waiting for {what}")


def gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(") ")[-1][:1]
    except OSError:
        return True
    return state == "Z"


def kill_9(pid: int | None, what: str) -> None:
    assert pid is not None, f"{what} is not running"
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: gone(pid), 30, f"{what} to die")


def kill_neo4j(settings: Settings) -> None:
    kill_9(neo4j_server.status(settings).pid, "Neo4j")


def wait_exit(proc: subprocess.Popen[bytes], timeout: float) -> int:
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)
        raise


def committed(settings: Settings, group: str, topic: str) -> int | None:
    """The group's committed offsets, or None while the restarted broker cannot say yet."""
    try:
        return committed_total(settings, group, topic)
    except KafkaException:
        return None


def reference(graph: Graph, settings: Settings, tmp_path: Path,
              lines: list[str]) -> tuple[Path, dict[str, object]]:
    """The events as a file, and the graph a clean load of it gives (then wiped)."""
    path = tmp_path / "events.jsonl"
    path.write_text("".join(line + "\n" for line in lines))
    ingest_file(build_writer(graph, settings), path, batch_size=500, max_line_bytes=1_000_000)
    expected = snapshot(graph)
    assert len(expected["interactions"]) == len(lines)  # type: ignore[arg-type]
    wipe(graph)
    return path, expected


def test_neo4j_killed_mid_file_import(graph: Graph, settings: Settings,
                                      cli_env: dict[str, str], tmp_path: Path) -> None:
    lines = demo_lines(40, seed=11)
    path, expected = reference(graph, settings, tmp_path, lines)
    log = tmp_path / "ingest.log"
    with log.open("w") as err:
        first = subprocess.Popen([PERSONAS, "ingest", str(path), "--batch-size", "25"],
                                 env=cli_env, stdout=subprocess.DEVNULL, stderr=err)
    try:
        wait_for(lambda: interactions(graph) >= len(lines) // 5 or first.poll() is not None,
                 120, "the first batches")
        assert first.poll() is None, log.read_text()[-2000:]
        kill_neo4j(settings)
    finally:
        neo4j_server.start(settings)
    # The import either failed with a clear error or, back within the driver's retry time,
    # carried on; either way, loading the file again completes it.
    code = wait_exit(first, 120)
    assert code == 0 or "Traceback" not in log.read_text(), log.read_text()[-2000:]
    partial = interactions(graph)
    assert 0 < partial <= len(lines)
    again = subprocess.run([PERSONAS, "ingest", str(path)], env=cli_env, capture_output=True,
                           text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-2000:]
    assert snapshot(graph) == expected


def test_neo4j_killed_mid_stream_batch(graph: Graph, kafka_running: Settings,
                                       cli_env: dict[str, str], tmp_path: Path) -> None:
    settings = kafka_running
    env = {**cli_env, "PERSONAS_KAFKA_BOOTSTRAP": settings.kafka_bootstrap_servers,
           "PERSONAS_CONSUMER_METRICS_PORT": "0"}
    lines = demo_lines(30, seed=12)
    total = len(lines)
    _, expected = reference(graph, settings, tmp_path, lines)
    topic, dlq, group = names("neo4j-kill")
    produce(settings, tmp_path, topic, lines)
    log = tmp_path / "consume.log"
    with log.open("w") as err:
        first = subprocess.Popen(consume_cmd(topic, dlq, group, "--batch-max", "10",
                                             "--max-messages", str(total)),
                                 env=env, stdout=subprocess.DEVNULL, stderr=err)
    try:
        wait_for(lambda: interactions(graph) >= total // 5 or first.poll() is not None, 120,
                 "the first batches")
        assert first.poll() is None, log.read_text()[-2000:]
        kill_neo4j(settings)
    finally:
        neo4j_server.start(settings)
    wait_exit(first, 180)
    left = total - committed_total(settings, group, topic)
    if left:  # the consumer gave up while Neo4j was away: a restart reads the rest
        second = subprocess.run(consume_cmd(topic, dlq, group, "--max-messages", str(left),
                                            "--idle-exit", "30"),
                                env=env, capture_output=True, text=True, timeout=300)
        assert second.returncode == 0, second.stderr[-2000:]
    assert snapshot(graph) == expected
    assert committed_total(settings, group, topic) == total


def test_kafka_broker_restarted_under_consume(graph: Graph, kafka_running: Settings,
                                              cli_env: dict[str, str], tmp_path: Path) -> None:
    settings = kafka_running
    env = {**cli_env, "PERSONAS_KAFKA_BOOTSTRAP": settings.kafka_bootstrap_servers,
           "PERSONAS_CONSUMER_METRICS_PORT": "0"}
    lines = demo_lines(30, seed=13)
    total = len(lines)
    _, expected = reference(graph, settings, tmp_path, lines)
    topic, dlq, group = names("broker-kill")
    produce(settings, tmp_path, topic, lines)
    log = tmp_path / "consume.log"
    with log.open("w") as err:
        consumer = subprocess.Popen(consume_cmd(topic, dlq, group, "--batch-max", "10"),
                                    env=env, stdout=subprocess.DEVNULL, stderr=err)
    try:
        wait_for(lambda: interactions(graph) >= total // 5 or consumer.poll() is not None,
                 120, "the first batches")
        assert consumer.poll() is None, log.read_text()[-2000:]
        kill_9(kafka_server.status(settings).pid, "the Kafka broker")
    finally:
        kafka_server.start(settings)
    # The same consumer, never restarted, reconnects and reads to the end (a count of
    # messages cannot say when: batches in flight at the kill are delivered again).
    try:
        wait_for(lambda: committed(settings, group, topic) == total
                 or consumer.poll() is not None, 240, "every offset committed", every=1)
    finally:
        consumer.send_signal(signal.SIGTERM)
    assert wait_exit(consumer, 60) == 0, log.read_text()[-2000:]
    assert snapshot(graph) == expected
    assert committed_total(settings, group, topic) == total


def test_neo4j_killed_mid_segmentation_and_the_api_meanwhile(
        graph: Graph, settings: Settings, cli_env: dict[str, str], tmp_path: Path) -> None:
    users = 250
    load_demo(graph, tmp_path, users=users, seed=14, key="test-pseudonym-key")
    keys = {role: create_key(graph, role, f"{role.value} faults").key
            for role in (Role.READER, Role.ANALYST)}
    reader = {"Authorization": f"Bearer {keys[Role.READER]}"}
    analyst = {"Authorization": f"Bearer {keys[Role.ANALYST]}"}
    env = {**cli_env, "PERSONAS_RUNS_DIR": str(tmp_path / "runs")}
    log = tmp_path / "segment.log"
    # The reader's key must still be cached when Neo4j goes down (the GraphQL layer answers
    # then); waiting for the pending run can outlast the default 30 s on a loaded machine.
    cached = settings.model_copy(update={"api_key_cache_seconds": 3600.0})
    with TestClient(create_app(cached)) as client:
        assert client.post("/graphql", json=SEGMENTS_QUERY, headers=reader).status_code == 200
        with log.open("w") as err:
            run = subprocess.Popen([PERSONAS, "segment"], env=env, stdout=subprocess.DEVNULL,
                                   stderr=err)
        try:
            wait_for(lambda: bool(graph.rows(PENDING)) or run.poll() is not None, 180,
                     "a pending run", every=0.02)
            assert run.poll() is None, log.read_text()[-2000:]
            pending = graph.rows(PENDING)[0]["id"]
            kill_neo4j(settings)
            # Down: every route answers 503 UNAVAILABLE as JSON, never a 500.
            answer = client.post("/graphql", json=SEGMENTS_QUERY, headers=reader)  # key cached
            assert answer.status_code == 503, answer.text
            assert [e["extensions"]["code"] for e in answer.json()["errors"]] == ["UNAVAILABLE"]
            answer = client.get("/runs/r/plots/tree.png", headers=analyst)  # key not cached
            assert answer.status_code == 503, answer.text
            assert answer.json()["error"]["code"] == "UNAVAILABLE"
            assert answer.headers["Retry-After"]
            ready = client.get("/readyz")
            assert ready.status_code == 503
            assert ready.json()["status"] == "unavailable" and ready.json()["reason"]
            # The run dies with its database once the driver's retries give up. (Restarted
            # sooner, Neo4j would let a run that was computing carry on and publish whole.)
            assert wait_exit(run, 180) != 0
        finally:
            neo4j_server.start(settings)
        # Back: the same app, untouched, recovers by itself.
        wait_for(lambda: client.get("/readyz").status_code == 200, 60, "ready again", every=1)
        answer = client.post("/graphql", json=SEGMENTS_QUERY, headers=reader)
        assert answer.status_code == 200 and answer.json()["data"] == {"segments": []}
    # Nothing of the run is visible: it is still pending, and readers see no run at all.
    assert graph.rows(PUBLISHED_RUNS) == []
    assert [r["id"] for r in graph.rows(PENDING)] == [pending]

    # The sweep before the next run takes it apart, and keeps it as a failed run.
    swept = publish.sweep(graph, timedelta(0))
    assert swept.discarded == [pending]
    assert graph.rows(LEFTOVERS)[0] == {"runs": 0, "segments": 0}
    assert graph.rows("MATCH ()-[m:IN_SEGMENT {run_id: $run}]->() RETURN count(m) AS n",
                      run=pending)[0]["n"] == 0
    failed = graph.rows("MATCH (r:FailedRun) RETURN r.id AS id, r.error AS error")
    assert [f["id"] for f in failed] == [pending] and failed[0]["error"].startswith("abandoned")
    assert graph.rows(PUBLISHED_RUNS) == []
