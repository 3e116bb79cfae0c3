"""The local Kafka the project provisions: reuse of a running broker, and the status command."""

from __future__ import annotations

import os
import subprocess
import time

import pytest

from graph.settings import Settings
from personas.local import kafka_server
from tests.helpers import PERSONAS

pytestmark = pytest.mark.integration


def test_second_start_reuses_the_running_broker(kafka_running: Settings) -> None:
    before = kafka_server.status(kafka_running)
    assert before.answering
    t0 = time.monotonic()
    after = kafka_server.start(kafka_running)
    assert after.answering and after.pid == before.pid
    assert time.monotonic() - t0 < 60  # the same pid proves the reuse; this, no long wait


def test_status_cli(kafka_running: Settings) -> None:
    env = {**os.environ, "PERSONAS_KAFKA_PORT": str(kafka_running.kafka_port),
           "PERSONAS_KAFKA_INSTANCE": kafka_running.kafka_instance,
           "PERSONAS_CACHE_DIR": str(kafka_running.cache_dir)}
    env.pop("PERSONAS_KAFKA_BOOTSTRAP", None)
    proc = subprocess.run([PERSONAS, "kafka", "status"], env=env, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0 and "kafka: answering" in proc.stdout
    closed = {**env, "PERSONAS_KAFKA_PORT": "1", "PERSONAS_KAFKA_INSTANCE": "never-started"}
    proc = subprocess.run([PERSONAS, "kafka", "status"], env=closed, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 1 and "kafka: stopped" in proc.stdout
