from __future__ import annotations

import json
import subprocess
from collections import Counter
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest

from graph.db import Graph
from graph.ingest.files import ingest_file
from graph.ingest.writer import EventWriter
from graph.privacy import Pseudonymizer
from graph.segments.assign import SegmentAssigner
from graph.segments.run import run_segmentation
from personas.demo import DemoPopulation
from tests.helpers import PERSONAS, load_demo

pytestmark = pytest.mark.integration

EXPECTED_NAMES = {
    "frequent_shoppers": "Frequent Shoppers",
    "bargain_hunters": "Bargain Hunters",
    "seasonal_buyers": "Seasonal Buyers",
    "new_visitors": "New Visitors",
}


def test_segmentation_recovers_planted_groups(graph: Graph, tmp_path: Path) -> None:
    load_demo(graph, tmp_path, users=240, seed=5)
    result = run_segmentation(graph)
    assert result.planted_ari is not None and result.planted_ari >= 0.8, result.k_reason
    assert result.n_segments == 4

    # Every user is in exactly one leaf segment of the run, and it is written to the graph.
    rows = graph.rows(
        "MATCH (u:User)-[m:IN_SEGMENT {run_id: $run}]->(s:Segment)-[:EMBODIES]->(p:Persona) "
        "RETURN u.id AS user, u.demo_group AS planted, s.level AS level, p.name AS persona",
        run=result.run_id)
    assert len(rows) == 240 == len({r["user"] for r in rows})
    assert {r["level"] for r in rows} == {0}
    # Each planted group lands mostly in the segment whose persona is named for it.
    for group, name in EXPECTED_NAMES.items():
        personas = Counter(r["persona"] for r in rows if r["planted"] == group)
        top, n = personas.most_common(1)[0]
        assert top == name and n >= 0.8 * sum(personas.values()), (group, personas)

    run = graph.rows("MATCH (r:SegmentationRun {id: $run})-[:PRODUCED]->(s:Segment) "
                     "RETURN r.k AS k, r.algorithm AS algo, size(r.features) AS nf, "
                     "count(s) AS segments", run=result.run_id)[0]
    assert run["k"] == 4 and run["algo"] == "agglomerative-ward" and run["nf"] >= 12
    # Levels from the 4 leaves up to one root: every segment below the root has one parent on
    # the next level, and each parent's size is the sum of its children's.
    levels = graph.rows("MATCH (s:Segment {run_id: $run}) RETURN s.level AS level, "
                        "count(*) AS n, sum(s.size) AS users ORDER BY level", run=result.run_id)
    counts = [lv["n"] for lv in levels]
    assert counts[0] == 4 and counts[-1] == 1 and counts == sorted(counts, reverse=True)
    assert len(set(counts)) == len(counts) and all(lv["users"] == 240 for lv in levels)
    nesting = graph.rows(
        "MATCH (child:Segment {run_id: $run})-[:CHILD_OF]->(p:Segment) "
        "WHERE p.level = child.level + 1 "
        "RETURN p.id AS parent, p.size AS size, sum(child.size) AS children", run=result.run_id)
    assert len(nesting) == sum(counts[1:]) and all(r["size"] == r["children"] for r in nesting)
    orphans = graph.rows("MATCH (s:Segment {run_id: $run}) WHERE s.level < $top AND "
                         "NOT (s)-[:CHILD_OF]->() RETURN count(s) AS n", run=result.run_id,
                         top=len(counts) - 1)
    assert orphans == [{"n": 0}]
    assert run["segments"] == sum(counts)


def test_rerun_keeps_persona_ids_and_history(graph: Graph, tmp_path: Path) -> None:
    load_demo(graph, tmp_path, users=120, seed=8)
    first = run_segmentation(graph)
    second = run_segmentation(graph)
    assert second.persona_ids == first.persona_ids
    assert second.agreement == {"previous_run_id": first.run_id, "ari_vs_previous": 1.0,
                                "users_moved": 0, "new_personas": 0}
    assert graph.rows("MATCH (p:Persona) RETURN count(p) AS n")[0]["n"] == first.n_segments
    run = graph.rows("MATCH (r:SegmentationRun {id: $id}) RETURN r.ari_vs_previous AS ari, "
                     "r.users_moved AS moved", id=second.run_id)
    assert run == [{"ari": 1.0, "moved": 0}]
    # One open persona-history entry per user, unchanged by the second run.
    history = graph.rows("MATCH (u:User)-[h:HAD_PERSONA]->() RETURN u.id AS u, "
                         "h.valid_to IS NULL AS open, h.run_id AS run")
    assert len(history) == 120 and all(h["open"] and h["run"] == first.run_id for h in history)
    # Same data, same run, whenever it runs: recency is measured against the data's latest
    # activity, stored on the run, never against the clock of the moment.
    assert second.labels == first.labels and second.user_ids == first.user_ids
    assert [n.name for n in second.names] == [n.name for n in first.names]
    assert second.stability == first.stability and second.k_reason == first.k_reason
    as_of = graph.rows("MATCH (r:SegmentationRun) RETURN collect(DISTINCT r.as_of) AS at, "
                       "COLLECT { MATCH (u:User) RETURN max(u.last_seen) } AS seen")[0]
    assert as_of["at"] == as_of["seen"]


def persona_by_group(graph: Graph, run_id: str) -> dict[str, Counter[str]]:
    rows = graph.rows("MATCH (u:User)-[:IN_SEGMENT {run_id: $run}]->(:Segment)-[:EMBODIES]->"
                      "(p:Persona) RETURN u.id AS user, u.demo_group AS group, p.id AS persona",
                      run=run_id)
    out: dict[str, Counter[str]] = {}
    for r in rows:
        out.setdefault(r["group"], Counter())[r["persona"]] += 1
    return out


def test_new_users_of_known_groups_keep_personas(graph: Graph, tmp_path: Path) -> None:
    load_demo(graph, tmp_path, users=200, seed=21)
    first = run_segmentation(graph)
    persona_of_group = {g: c.most_common(1)[0][0]
                        for g, c in persona_by_group(graph, first.run_id).items()}
    load_demo(graph, tmp_path, users=20, seed=22)  # 10% more, same four groups
    second = run_segmentation(graph)
    assert sorted(second.persona_ids) == sorted(first.persona_ids)
    assert second.agreement["new_personas"] == 0
    newcomers = graph.rows(
        "MATCH (u:User)-[:IN_SEGMENT {run_id: $run}]->(:Segment)-[:EMBODIES]->(p:Persona) "
        "WHERE u.id IN $ids RETURN u.demo_group AS group, p.id AS persona",
        run=second.run_id,
        ids=[uid for uid in second.user_ids if uid not in set(first.user_ids)])
    assert len(newcomers) == 20
    correct = sum(r["persona"] == persona_of_group[r["group"]] for r in newcomers)
    assert correct >= 18, newcomers


def test_newcomers_are_assigned_at_ingest_between_runs(graph: Graph, tmp_path: Path) -> None:
    runs_dir = tmp_path / "runs"
    assigner = SegmentAssigner(graph, runs_dir)
    load_demo(graph, tmp_path, users=200, seed=21, assigner=assigner)  # no run yet: no-op
    assert graph.rows("MATCH ()-[m:IN_SEGMENT]->() RETURN count(m) AS n") == [{"n": 0}]
    assert not assigner.preload()
    first = run_segmentation(graph, runs_dir=runs_dir)
    # A consumer loads the run's model when it starts, not in its first batch with a newcomer.
    assert assigner.preload()
    persona_of_group = {g: c.most_common(1)[0][0]
                        for g, c in persona_by_group(graph, first.run_id).items()}
    load_demo(graph, tmp_path, users=20, seed=22, assigner=assigner)
    rows = graph.rows(
        "MATCH (u:User)-[m:IN_SEGMENT {run_id: $run}]->(s:Segment)-[:EMBODIES]->(p:Persona) "
        "WHERE m.assigned_by = 'ingest' "
        "OPTIONAL MATCH (u)-[h:HAD_PERSONA]->(p) WHERE h.valid_to IS NULL "
        "RETURN u.demo_group AS group, p.id AS persona, s.level AS level, "
        "m.distance AS distance, count(h) AS open_history", run=first.run_id)
    assert len(rows) == 20
    assert all(r["level"] == 0 and r["distance"] >= 0 and r["open_history"] == 1 for r in rows)
    assert sum(r["persona"] == persona_of_group[r["group"]] for r in rows) >= 18, rows
    # The same events again assign nobody twice; run members keep their run assignment.
    load_demo(graph, tmp_path, users=20, seed=22, assigner=assigner)
    counts = graph.rows("MATCH (u:User)-[m:IN_SEGMENT {run_id: $run}]->() "
                        "RETURN m.assigned_by AS by, count(m) AS n, count(DISTINCT u) AS users "
                        "ORDER BY by", run=first.run_id)
    assert counts == [{"by": "ingest", "n": 20, "users": 20}, {"by": "run", "n": 200, "users": 200}]


def test_assignment_waits_when_the_run_has_no_saved_model(graph: Graph, tmp_path: Path) -> None:
    load_demo(graph, tmp_path, users=40, seed=23)
    run_segmentation(graph)  # no runs_dir: nothing saved to assign with
    assigner = SegmentAssigner(graph, tmp_path / "runs")
    assert not assigner.preload()
    load_demo(graph, tmp_path, users=5, seed=24, assigner=assigner)
    assert graph.rows("MATCH ()-[m:IN_SEGMENT {assigned_by: 'ingest'}]->() "
                      "RETURN count(m) AS n") == [{"n": 0}]


def test_one_new_group_creates_exactly_one_persona(graph: Graph, tmp_path: Path) -> None:
    known = ("frequent_shoppers", "bargain_hunters", "seasonal_buyers")
    path = tmp_path / "known.jsonl"
    DemoPopulation(150, seed=31, groups=known).write_events(path)
    ingest_file(EventWriter(graph, Pseudonymizer("k")), path, batch_size=2000,
                max_line_bytes=1_000_000)
    first = run_segmentation(graph)
    assert first.n_segments == 3
    path = tmp_path / "new.jsonl"
    DemoPopulation(50, seed=32, groups=("new_visitors",)).write_events(path)
    ingest_file(EventWriter(graph, Pseudonymizer("k")), path, batch_size=2000,
                max_line_bytes=1_000_000)
    second = run_segmentation(graph)
    assert second.n_segments == 4
    assert second.agreement["new_personas"] == 1
    assert set(first.persona_ids) < set(second.persona_ids)
    assert graph.rows("MATCH (p:Persona) RETURN count(p) AS n")[0]["n"] == 4


def test_every_feature_family_is_computed(graph: Graph, tmp_path: Path) -> None:
    from graph.features.table import build_feature_table

    load_demo(graph, tmp_path, users=60, seed=41)
    table = build_feature_table(graph)
    assert len(table.user_ids) == 60
    for name in ("mobile_share", "app_share", "bad_weather_share", "age_years",
                 "explicit_preference", "item_degree"):
        column = table.column(name)
        known = column[~np.isnan(column)]
        assert len(known) > 0, name
    assert ((table.column("mobile_share") >= 0) & (table.column("mobile_share") <= 1)).all()
    # Channel mix: the demo's app users browse in the app channel, the others on the web.
    assert 0 < (table.column("app_share") > 0).sum() < 60
    assert (table.column("app_share") <= table.column("mobile_share") + 1e-9).all()
    assert (table.column("item_degree") >= 1).all()
    weather_share = table.column("bad_weather_share")
    assert np.nanmin(weather_share) >= 0 and np.nanmax(weather_share) <= 1
    ages = table.column("age_years")
    assert set(ages[~np.isnan(ages)]) <= {21.0, 29.5, 39.5, 49.5, 59.5, 70.0}
    result = run_segmentation(graph, features=["behaviour", "context", "device", "demographics",
                                               "preferences"], connectivity=10)
    run = graph.rows("MATCH (r:SegmentationRun {id: $id}) RETURN r.features AS f, "
                     "r.params AS params", id=result.run_id)
    assert json.loads(run[0]["params"])["connectivity"] == 10
    assert "bad_weather_share" in run[0]["f"] and "age_years" in run[0]["f"]
    # Structure: the spectral embedding places users of the same items together, so users of
    # the same planted group are closer to their group's mean than to other groups'.
    spectral = np.column_stack([table.column("spectral_1"), table.column("spectral_2")])
    assert np.isfinite(spectral).all() and np.abs(spectral).max() <= 1.0 + 1e-9
    groups = sorted({g for g in table.planted if g is not None})
    planted = np.array(table.planted)
    means = np.vstack([spectral[planted == g].mean(axis=0) for g in groups])
    nearest = np.argmin(((spectral[:, None, :] - means[None]) ** 2).sum(axis=2), axis=1)
    assert (np.array(groups)[nearest] == planted).mean() >= 0.7
    # The same graph gives the same embedding (fixed start vector, fixed orientation), and the
    # same table whenever it is read: recency is measured against the latest activity in the
    # data, not the clock, so the most recent user has recency 0.
    again = build_feature_table(graph)
    assert np.allclose(again.column("spectral_1"), table.column("spectral_1"))
    assert again.as_of == table.as_of and again.snapshot_at > table.snapshot_at
    assert np.array_equal(again.X, table.X, equal_nan=True)
    assert table.column("recency_days").min() == 0.0
    later = build_feature_table(graph, as_of=table.as_of + timedelta(days=30))
    assert np.allclose(later.column("recency_days"), table.column("recency_days") + 30)


def test_segment_as_of_through_the_cli(graph: Graph, tmp_path: Path,
                                       cli_env: dict[str, str]) -> None:
    load_demo(graph, tmp_path, users=60, seed=3)
    latest = graph.rows("MATCH (u:User) RETURN max(u.last_seen) AS at")[0]["at"].to_native()

    def segment(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([PERSONAS, "segment", *args], env=cli_env, capture_output=True,
                              text=True)

    for bad, said in (("yesterday", "expected an ISO 8601 time"),
                      ("2026-11-28T10:00:00", "no timezone offset"),
                      ((latest - timedelta(days=1)).isoformat(), "before the latest activity")):
        out = segment("--as-of", bad)
        message = " ".join((out.stdout + out.stderr).split())
        assert out.returncode == 2 and "BAD_USER_INPUT" in message and said in message, out
    assert not graph.rows("MATCH (r:SegmentationRun) RETURN r")
    at = latest + timedelta(hours=1)
    ok = segment("--as-of", at.isoformat())
    assert ok.returncode == 0, ok.stdout + ok.stderr
    runs = graph.rows("MATCH (r:SegmentationRun) RETURN r.as_of AS as_of")
    assert [r["as_of"].to_native() for r in runs] == [at]
