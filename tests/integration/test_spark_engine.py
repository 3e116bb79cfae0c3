"""The Spark engine (`personas segment --engine spark`) against the in-process one, on the demo,
with Spark on local[2]. Run by `make test-spark`, which installs the `spark` extra."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest
from pydantic import SecretStr
from sklearn.metrics import adjusted_rand_score

from graph.db import Graph
from graph.errors import EnvironmentProblem
from graph.features.table import build_feature_table
from graph.segments.run import run_segmentation
from graph.settings import Settings
from personas.local.spark import connector_jars
from tests.helpers import PERSONAS, load_demo

pytestmark = [pytest.mark.integration, pytest.mark.spark]

SPARK_ENV = {"PERSONAS_SPARK_MASTER": "local[2]", "PERSONAS_SPARK_DRIVER_MEMORY": "1g",
             # Fewer micro-clusters than users, so the Ward tree really is built on centres.
             "PERSONAS_SPARK_MICRO_CLUSTERS": "60"}


def spark_settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"spark_master": "local[2]", "spark_driver_memory": "1g",
                                       "spark_micro_clusters": 60})


def test_connector_reads_the_same_feature_table(graph: Graph, settings: Settings,
                                                tmp_path: Path) -> None:
    """The user rows and user-item edges read through the connector give the very table the
    driver's pages give; Spark's k-means micro-clusters cover every user."""
    from graph.segments.spark_engine import ConnectorSource, spark_kmeans, spark_session

    load_demo(graph, tmp_path, users=120, seed=8)
    # Two slices, so the connector's partitioned read is what is compared.
    cfg = spark_settings(settings).model_copy(update={"spark_read_partitions": 2})
    bolt = build_feature_table(graph)
    with spark_session(cfg, connector_jars(cfg)) as spark:
        table = build_feature_table(graph, as_of=bolt.as_of,
                                    source=ConnectorSource(spark, cfg))
        labels, centers = spark_kmeans(spark, np.nan_to_num(bolt.X), 10, seed=0)
        # A read Neo4j refuses ends in one clear error, not a JVM stack trace.
        wrong = cfg.model_copy(update={"neo4j_password": SecretStr("not-the-password")})
        with pytest.raises(EnvironmentProblem, match="Spark could not read from Neo4j at "
                                                     "bolt://127.0.0.1:[0-9]+: .+"):
            build_feature_table(graph, as_of=bolt.as_of, source=ConnectorSource(spark, wrong))
    assert table.user_ids == bolt.user_ids and table.names == bolt.names
    assert table.planted == bolt.planted
    np.testing.assert_allclose(table.X, bolt.X, rtol=1e-9, atol=1e-9, equal_nan=True)
    assert centers.shape == (10, bolt.X.shape[1])
    assert labels.shape == (120,) and set(labels.tolist()) == set(range(10))
    # The session's JVM ended with the block.
    from pyspark import SparkContext

    assert SparkContext._gateway is None


def test_spark_engine_finds_the_in_process_personas(graph: Graph, settings: Settings,
                                                    cli_env: dict[str, str],
                                                    tmp_path: Path) -> None:
    load_demo(graph, tmp_path, users=240, seed=5)
    local = run_segmentation(graph)
    proc = subprocess.run(
        [PERSONAS, "segment", "--engine", "spark"],
        env={**cli_env, **SPARK_ENV, "PERSONAS_RUNS_DIR": str(tmp_path / "runs"),
             "PERSONAS_CACHE_DIR": str(settings.cache_dir)},
        capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    run = graph.rows("MATCH (r:SegmentationRun) WHERE r.id <> $local "
                     "RETURN r.id AS id, r.engine AS engine, r.scalable_path AS scalable, "
                     "r.new_personas AS new, r.k AS k", local=local.run_id)
    assert len(run) == 1
    assert run[0]["engine"] == "spark" and run[0]["scalable"] is True
    rows = graph.rows("MATCH (u:User)-[m:IN_SEGMENT {run_id: $run}]->(s:Segment)"
                      "-[:EMBODIES]->(p:Persona) RETURN u.id AS user, s.id AS segment, "
                      "p.id AS persona", run=run[0]["id"])
    by_user = {r["user"]: r for r in rows}
    assert sorted(by_user) == sorted(local.user_ids)
    spark_segments = [by_user[u]["segment"] for u in local.user_ids]
    assert adjusted_rand_score(local.labels, spark_segments) >= 0.95
    # The same personas: the Spark run matched every segment to an in-process persona, and
    # (nearly) every user keeps the persona id the in-process run gave them.
    assert run[0]["new"] == 0 and run[0]["k"] == local.n_segments
    assert {r["persona"] for r in rows} == set(local.persona_ids)
    same = sum(by_user[u]["persona"] == local.persona_ids[label]
               for u, label in zip(local.user_ids, local.labels, strict=True))
    assert same >= 0.95 * len(local.user_ids)
