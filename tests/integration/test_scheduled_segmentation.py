from __future__ import annotations

import signal
import subprocess
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from graph.db import Graph
from graph.segments.run import run_segmentation
from graph.segments.schedule import SegmentationScheduler, last_run_at
from tests.helpers import PERSONAS, load_demo

pytestmark = pytest.mark.integration
RUNS = "MATCH (r:SegmentationRun) RETURN count(r) AS n"


def test_runs_when_the_latest_run_is_older_than_the_interval(graph: Graph,
                                                             tmp_path: Path) -> None:
    load_demo(graph, tmp_path, users=40, seed=3, with_context=False)
    scheduler = SegmentationScheduler(timedelta(hours=1), lambda: run_segmentation(graph),
                                      lambda: last_run_at(graph))
    now = datetime.now(UTC)
    assert scheduler.tick(now) is True  # no run yet
    first = last_run_at(graph)
    assert first is not None and abs((first - now).total_seconds()) < 60
    assert scheduler.tick(now + timedelta(minutes=30)) is False
    assert graph.rows(RUNS) == [{"n": 1}]
    assert scheduler.tick(first + timedelta(hours=1, seconds=1)) is True
    assert graph.rows(RUNS) == [{"n": 2}]


def test_scheduler_command_runs_and_stops_on_sigterm(graph: Graph, tmp_path: Path,
                                                     cli_env: dict[str, str]) -> None:
    load_demo(graph, tmp_path, users=40, seed=3, with_context=False)
    env = {**cli_env, "PERSONAS_RUNS_DIR": str(tmp_path / "runs")}
    proc = subprocess.Popen([PERSONAS, "scheduler"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while graph.rows(RUNS) != [{"n": 1}] and time.monotonic() < deadline:
            time.sleep(1)
        assert graph.rows(RUNS) == [{"n": 1}]
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert "scheduled run run-" in err
    off = subprocess.run([PERSONAS, "scheduler"], env={**env, "PERSONAS_SEGMENT_EVERY_HOURS": "0"},
                         capture_output=True, text=True, timeout=60)
    assert off.returncode == 2 and "the schedule is off" in off.stderr
