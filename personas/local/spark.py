"""The Neo4j Connector for Apache Spark, fetched from Maven Central into the cache once (like
the Neo4j jars, ``jvm.fetch_with_maven``), for `personas segment --engine spark`."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from graph.errors import InvalidInput
from graph.settings import Settings
from personas.local.jvm import Echo, fetch_with_maven, require_java

if TYPE_CHECKING:
    from graph.segments.run import SegmentationEngine

log = logging.getLogger(__name__)

POM_FILE = Path(__file__).with_name("spark-pom.xml")


def connector_jars(settings: Settings, echo: Echo = log.info) -> list[Path]:
    """The connector's jars, resolved into CACHE_DIR/spark-connector-VERSION once."""
    require_java("Spark")
    version = settings.spark_connector_version
    pom = POM_FILE.read_text().replace("@CONNECTOR_VERSION@", version)
    folder = fetch_with_maven(pom, settings.cache_dir / f"spark-connector-{version}",
                              f"the Neo4j Connector for Apache Spark {version}", echo)
    return sorted(folder.glob("*.jar"))


ENGINES = ("in-process", "spark")


def check_engine(name: str, algorithm: str, connectivity: int | None) -> None:
    """Refuse an unknown engine, a missing pyspark or options Spark cannot run, before any
    work."""
    if name not in ENGINES:
        raise InvalidInput(f"unknown engine {name!r}; choose from {', '.join(ENGINES)}")
    if name == "spark":
        from graph.segments.spark_engine import check_spark_options, require_pyspark

        require_pyspark()
        check_spark_options(algorithm, connectivity)


@contextmanager
def open_engine(name: str, settings: Settings,
                echo: Echo = log.info) -> Iterator[SegmentationEngine | None]:
    """The engine of a run: None for the in-process default, else a Spark engine on a session
    that ends (JVM included, for a local master) when the block does."""
    if name != "spark":
        yield None
        return
    from graph.segments.spark_engine import SparkEngine, spark_session

    jars = connector_jars(settings, echo)
    with spark_session(settings, jars) as spark:
        yield SparkEngine(spark, settings)
