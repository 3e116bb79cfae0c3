"""bench-api's probe of a phase: what it reads from Neo4j's debug.log (replans and JVM pauses,
from the moment it starts reading) and how it lays a phase out second by second, so that a
stall is put down to its cause (docs/performance.md)."""

from __future__ import annotations

import math
import os
from datetime import UTC, datetime
from pathlib import Path

from bench.api import (
    JIT_THREAD,
    Neo4jEvent,
    Neo4jLog,
    Probe,
    full_collections,
    jit_cpu_seconds,
    percentile,
)

# Lines as Neo4j 5.26 writes them (from a bench instance's debug.log).
BEFORE = (
    "2026-12-07 13:01:21.398+0000 INFO  [o.n.c.i.c.CypherQueryCaches] [neo4j/64439a30] "
    "Discarded stale query from the query cache after 15 seconds. Reason: "
    "IndexPropertyExistsSelectivity(IndexDescriptor(Range,Node(LabelId(13)),"
    "List(PropertyKeyId(29)),Set(),NONE,DoNotGetValue,None,false)) changed from 0.1 to 0.0, "
    "which is a divergence of 1.0 which is greater than threshold 0.7488. Query id: 570.\n")
REPLAN = (
    "2026-12-07 13:05:18.607+0000 INFO  [o.n.c.i.c.CypherQueryCaches] [neo4j/64439a30] "
    "Discarded stale query from the query cache after 241 seconds. Reason: "
    "IndexSelectivity(IndexDescriptor(Range,Node(LabelId(15)),List(PropertyKeyId(17)),Set(),"
    "NONE,DoNotGetValue,None,false)) changed from 0.0 to 0.5, which is a divergence of 1.0 "
    "which is greater than threshold 0.7077. Query id: 12333.\n")
PAUSE = ("2026-12-07 14:17:51.483+0000 WARN  [o.n.k.i.c.VmPauseMonitorComponent] Detected VM "
         "stop-the-world pause: {pauseTime=434, gcTime=0, gcCount=0}\n")
OTHER = ("2026-12-07 13:05:39.794+0000 INFO  [o.n.g.f.DatabaseManagementServiceFactory] "
         "Shutdown started\n")


def at(text: str) -> float:
    return datetime.strptime(text, "%Y-%m-%d %H:%M:%S.%f").replace(tzinfo=UTC).timestamp()


def test_the_log_gives_replans_and_pauses_written_after_it_starts_reading(
        tmp_path: Path) -> None:
    path = tmp_path / "debug.log"
    path.write_text(BEFORE)
    log = Neo4jLog(path)
    with path.open("a") as out:
        out.write(REPLAN + OTHER + PAUSE)
    events = log.events()
    assert [(e.kind, e.at) for e in events] == [
        ("replan", at("2026-12-07 13:05:18.607")), ("pause", at("2026-12-07 14:17:51.483"))]
    assert events[0].detail == "IndexSelectivity, plan 241 s old"
    assert events[1].detail == "434 ms, GC 0 ms"


def test_a_missing_log_gives_no_events(tmp_path: Path) -> None:
    assert Neo4jLog(tmp_path / "absent.log").events() == []


def test_a_stall_shows_in_its_second_with_what_happened_then() -> None:
    probe = Probe(wall=1000.0)
    # 10 requests a second for 4 s; those due in second 2 waited about a second.
    probe.requests = [(s + i / 10, 900.0 - i * 50 if s == 2 else 10.0 + i)
                      for s in range(4) for i in range(10)]
    probe.requests[5] = (0.5, math.nan)  # one error in second 0
    # (seconds, in flight, lag ms, API CPU s, Neo4j CPU s so far) every 0.2 s: the API used
    # a fifth of a core, but the whole of one in second 2; Neo4j three tenths, one tenth then.
    def used(t: float, usual: float, in_second_2: float) -> float:
        return usual * t + (in_second_2 - usual) * min(max(t - 2, 0.0), 1.0)

    probe.samples = [(t, 12 if 2 <= t < 3 else 1, 300.0 if 2 <= t < 3 else 1.0,
                      10 + used(t, 0.2, 1.0), 20 + used(t, 0.3, 0.1))
                     for t in (k / 5 for k in range(21))]
    probe.health = [(s + 0.5, 800.0 if s == 2 else 2.0) for s in range(4)]
    probe.collections = [(float(s), 7.0 if s < 3 else 8.0) for s in range(5)]
    # Neo4j's JIT compiler: idle but in second 2, where it took 0.4 s of CPU.
    probe.jit = [(float(s), 5.0 if s < 3 else 5.4) for s in range(5)]
    # A replan 2.5 s into the phase.
    probe.events = [Neo4jEvent(1002.5, "replan", "IndexSelectivity, plan 241 s old")]
    rows = probe.rows()
    assert [row["requests"] for row in rows] == [10, 10, 10, 10]
    assert [row["errors"] for row in rows] == [1, 0, 0, 0]
    stall = rows[2]
    assert stall["p99"] == 900.0 and stall["max"] == 900.0
    assert stall["in_flight"] == 12 and stall["lag"] == 300.0 and stall["healthz"] == 800.0
    assert math.isclose(float(stall["api_cpu"]), 100.0)
    assert math.isclose(float(stall["neo4j_cpu"]), 10.0)
    assert stall["full_gcs"] == 1.0 and rows[1]["full_gcs"] == 0.0
    assert math.isclose(float(stall["neo4j_jit"]), 40.0) and rows[1]["neo4j_jit"] == 0.0
    assert math.isclose(float(rows[1]["api_cpu"]), 20.0)
    assert stall["neo4j"] == "replan IndexSelectivity, plan 241 s old"
    assert all(row["neo4j"] == "" for i, row in enumerate(rows) if i != 2)
    assert rows[0]["p99"] == 19.0 and rows[0]["healthz"] == 2.0
    summary = probe.summary()
    assert summary == {"replans": 1, "neo4j_pauses": 0, "max_in_flight": 12,
                       "client_lag_ms": 300.0, "healthz_max_ms": 800.0}


def test_the_jit_compiler_threads_are_told_from_the_jvms_others() -> None:
    # /proc names threads with their first 15 characters.
    assert JIT_THREAD.match("C2 CompilerThre\n") and JIT_THREAD.match("C1 CompilerThre")
    assert not any(JIT_THREAD.match(name) for name in (
        "GC Thread#0", "neo4j.BoltWorke", "VM Thread", "G1 Conc#0", "Sweeper thread"))
    assert jit_cpu_seconds(None) == 0.0
    assert jit_cpu_seconds(os.getpid()) == 0.0  # a Python process has no JIT threads


def test_an_api_that_does_not_answer_leaves_the_count_unknown() -> None:
    # Nothing listens on port 9 of this host: the phase goes on, its collections unknown.
    assert math.isnan(full_collections("http://127.0.0.1:9"))


def test_a_phase_without_one_answer_has_no_percentile_rather_than_a_crash() -> None:
    assert math.isnan(percentile([], 99))
    assert percentile([3.0, 1.0, 2.0], 50) == 2.0
