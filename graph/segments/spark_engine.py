"""The Spark engine of `personas segment --engine spark`: the heavy parts of a run on Spark.

Two parts of a run grow with the population: reading it and summarizing it. Here the user rows
and the user-item edges are read with the Neo4j Connector for Apache Spark, running the same
Cypher as the in-process read (``graph/features/queries.py``: ``SPARK_USER_ROWS`` is
``USER_PAGE``'s body over every user, in partitions the connector slices), and the users are
summarized into micro-clusters by Spark MLlib's k-means. Everything else is the in-process code:
the feature arithmetic (``graph/features/table.py``), the preparation pipeline, size-weighted
Ward on the micro-cluster centres, the choice of k and its stability, naming, persona matching,
and the run written back in bounded transactions (``run.py``, ``publish.py``).

pyspark is the optional ``spark`` extra: this module imports it only when a Spark engine is
built, so a run fitted here can be loaded (``artifacts.py``) where Spark is not installed.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from neo4j.time import Date
from numpy.typing import ArrayLike

from graph.db import Graph
from graph.errors import EnvironmentProblem, InvalidInput
from graph.features import queries as q
from graph.features.table import FeatureTable, build_feature_table
from graph.segments.engine import FloatArray, HierarchicalSegmenter, IntArray
from graph.settings import Settings

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

log = logging.getLogger(__name__)

CONNECTOR = "org.neo4j.spark.DataSource"
# No square brackets (a pip extra's usual spelling): the CLI prints messages as rich markup.
EXTRA_HELP = ("install the `spark` extra: `uv sync --extra spark` in a checkout (`make "
              "test-spark` does it), or persona-graph's `spark` extra with pip")
# Columns of SPARK_USER_ROWS that hold numbers. The connector infers a column's type from the
# first rows it samples, and a column that is null in all of them arrives as text.
NUMBERS = ("events", "page_views", "carts", "purchases", "spend", "chat_messages", "sessions",
           "avg_session_s", "mobile_sessions", "app_sessions", "chat_sessions",
           "explicit_preference", "orders", "avg_discount")
SAMPLE_ROWS = 200


def require_pyspark() -> None:
    """A clear EnvironmentProblem unless a Spark 3 pyspark is installed (the connector's jar
    is built for Spark 3 and Scala 2.12, which pyspark 3.x ships)."""
    try:
        import pyspark
    except ImportError:
        raise EnvironmentProblem(
            f"the Spark engine needs pyspark, which is not installed: {EXTRA_HELP}"
        ) from None
    major = pyspark.__version__.split(".")[0]
    if major != "3":
        raise EnvironmentProblem(
            f"the Spark engine needs pyspark 3.x (the Neo4j connector is built for Spark 3); "
            f"found {pyspark.__version__}: {EXTRA_HELP}")


@contextmanager
def spark_session(settings: Settings, jars: Sequence[Path]) -> Iterator[SparkSession]:
    """A Spark session on ``PERSONAS_SPARK_MASTER`` with the connector's jars, ended on exit:
    the session stopped and, for a local master, its JVM too, so no Spark process outlives
    the run."""
    require_pyspark()
    from pyspark import SparkContext
    from pyspark.sql import SparkSession

    spark = (SparkSession.builder.master(settings.spark_master)
             .appName("persona-graph segmentation")
             .config("spark.jars", ",".join(str(j) for j in jars))
             .config("spark.driver.memory", settings.spark_driver_memory)
             .config("spark.ui.enabled", "false")
             .config("spark.sql.session.timeZone", "UTC")
             .config("spark.sql.shuffle.partitions", "8")
             .getOrCreate())
    spark.sparkContext.setLogLevel("ERROR")
    try:
        yield spark
    finally:
        spark.stop()
        gateway = SparkContext._gateway
        if gateway is not None:
            proc = getattr(gateway, "proc", None)
            gateway.shutdown()
            SparkContext._gateway = None
            SparkContext._jvm = None
            if proc is not None:
                # The gateway JVM exits when its standard input closes.
                proc.stdin.close()
                try:
                    proc.wait(timeout=30)
                except Exception:  # noqa: BLE001 - a JVM that will not end is killed
                    proc.kill()


def _number(value: Any) -> float | int | None:
    if value is None or isinstance(value, int | float):
        return value
    return float(value)


def _epoch_ns(value: Any) -> int:
    # Nanoseconds since the epoch (``_USER_FEATURES``); a column the connector sampled only
    # nulls of arrives as text.
    return int(value)


def _date(value: Any) -> Date:
    return Date.from_native(value if isinstance(value, date) else date.fromisoformat(str(value)))


def bolt_shaped(row: dict[str, Any]) -> dict[str, Any]:
    """A ``SPARK_USER_ROWS`` row as ``USER_PAGE`` gives it over Bolt: Neo4j dates, numbers
    as numbers (first and last seen in nanoseconds since the epoch), and the split lists
    zipped back into [category, count] and [day, count] pairs, so ``feature_rows`` reads both
    alike."""
    out = {k: v for k, v in row.items()
           if k not in ("category_names", "category_ns", "days", "day_ns")}
    for name in NUMBERS:
        out[name] = _number(row[name])
    out["first_seen_ns"] = _epoch_ns(row["first_seen_ns"])
    out["last_seen_ns"] = _epoch_ns(row["last_seen_ns"])
    out["purchase_months"] = [int(m) for m in row["purchase_months"] or ()]
    out["locations"] = list(row["locations"] or ())
    out["category_counts"] = [[name, int(n)] for name, n in
                              zip(row["category_names"] or (), row["category_ns"] or (),
                                  strict=True)]
    out["day_counts"] = [[_date(d), int(n)] for d, n in
                         zip(row["days"] or (), row["day_ns"] or (), strict=True)]
    return out


class ConnectorSource:
    """The feature table's two big reads through the Neo4j Connector for Apache Spark
    (``FeatureSource``): the rows are streamed to this process a partition at a time."""

    def __init__(self, spark: SparkSession, settings: Settings) -> None:
        self.spark = spark
        self.settings = settings

    def read(self, query: str, count: str) -> DataFrame:
        s = self.settings
        return (self.spark.read.format(CONNECTOR)
                .option("url", s.bolt_uri)
                .option("authentication.type", "basic")
                .option("authentication.basic.username", s.neo4j_user)
                .option("authentication.basic.password", s.neo4j_password.get_secret_value())
                .option("database", s.neo4j_database)
                .option("query", query)
                .option("query.count", count)
                .option("partitions", str(s.spark_read_partitions))
                .option("schema.flatten.limit", str(SAMPLE_ROWS))
                .load())

    def _rows(self, query: str, count: str) -> Iterator[dict[str, Any]]:
        from py4j.protocol import Py4JJavaError
        from pyspark.errors import PySparkException

        try:
            for row in self.read(query, count).toLocalIterator():
                yield row.asDict()
        except (Py4JJavaError, PySparkException) as exc:
            # A JVM stack trace says little to the person running the command; its first
            # line names the cause (refused credentials, unreachable server...).
            first = next((line for line in str(exc).splitlines() if line.strip()), "")
            raise EnvironmentProblem(
                f"Spark could not read from Neo4j at {self.settings.bolt_uri}: {first.strip()}"
            ) from exc

    def user_pages(self, graph: Graph, page_size: int) -> Iterator[list[dict[str, Any]]]:  # noqa: ARG002 - FeatureSource
        page: list[dict[str, Any]] = []
        for row in self._rows(q.SPARK_USER_ROWS, q.SPARK_USER_COUNT):
            page.append(bolt_shaped(row))
            if len(page) == page_size:
                yield page
                page = []
        if page:
            yield page

    def user_item_edges(self, graph: Graph) -> Iterable[dict[str, Any]]:  # noqa: ARG002 - FeatureSource
        for row in self._rows(q.SPARK_USER_ITEM_EDGES, q.SPARK_USER_ITEM_EDGE_COUNT):
            yield {**row, "weight": _number(row["weight"])}


def spark_kmeans(spark: SparkSession, X: FloatArray, m: int, seed: int,
                 max_iter: int = 30) -> tuple[IntArray, FloatArray]:
    """Spark MLlib k-means (k-means|| start) of the rows of ``X`` into at most ``m`` clusters:
    each row's cluster, and the centres (fewer than ``m`` when ``X`` has fewer distinct
    rows)."""
    from pyspark.ml.clustering import KMeans
    from pyspark.ml.linalg import Vectors

    frame = spark.createDataFrame([(i, Vectors.dense(row)) for i, row in enumerate(X.tolist())],
                                  ["id", "features"]).cache()
    try:
        model = KMeans(k=m, seed=seed, maxIter=max_iter, featuresCol="features").fit(frame)
        labels = np.zeros(X.shape[0], dtype=np.int64)
        for r in model.transform(frame).select("id", "prediction").toLocalIterator():
            labels[r["id"]] = r["prediction"]
        centers = np.asarray(model.clusterCenters(), dtype=np.float64)
    finally:
        frame.unpersist()
    return labels, centers


class SparkSegmenter(HierarchicalSegmenter):
    """``HierarchicalSegmenter`` on its micro-cluster path, with the micro-clusters of the
    users found by Spark MLlib's k-means when ``fit`` is given a Spark session.

    The refits that measure stability run on resamples of at most ``stability_sample`` users,
    and are clones without the session: they micro-cluster in process, as the in-process engine
    does at scale.
    """

    def fit(self, X: ArrayLike, y: Any = None,  # noqa: ARG002 - sklearn API
            spark: SparkSession | None = None) -> SparkSegmenter:
        self._spark = spark
        try:
            super().fit(X)
        finally:
            self._spark = None  # a fitted model is pickled with the run; a session is not
        return self

    def _micro_clusters(self, X: FloatArray, m: int) -> tuple[IntArray, FloatArray]:
        spark = getattr(self, "_spark", None)
        if spark is None:
            return super()._micro_clusters(X, m)
        return spark_kmeans(spark, X, m, self.random_state)


class SparkEngine:
    """``SegmentationEngine`` on a Spark session (``spark_session``)."""

    name = "spark"

    def __init__(self, spark: SparkSession, settings: Settings) -> None:
        self.spark = spark
        self.settings = settings

    def feature_table(self, graph: Graph, as_of: datetime | None) -> FeatureTable:
        return build_feature_table(graph, as_of=as_of,
                                   source=ConnectorSource(self.spark, self.settings))

    def fit(self, Z: np.ndarray[Any, Any], **params: Any) -> HierarchicalSegmenter:
        check_spark_options(params.get("algorithm", "agglomerative"), params.get("connectivity"))
        model = SparkSegmenter(max_exact=0, n_micro=self.settings.spark_micro_clusters,
                               **params)
        return model.fit(Z, spark=self.spark)


def check_spark_options(algorithm: str, connectivity: int | None) -> None:
    """The Spark engine builds the Ward tree on micro-clusters; options that need every user
    in one process are refused up front."""
    if algorithm != "agglomerative":
        raise InvalidInput(f"--engine spark clusters with Ward on Spark micro-clusters; "
                           f"--algorithm {algorithm} runs only in process (--engine in-process)")
    if connectivity is not None:
        raise InvalidInput("--connectivity needs every user's neighbours in one process; "
                           "use --engine in-process")
