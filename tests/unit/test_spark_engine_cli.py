"""`personas segment --engine spark` without the `spark` extra, and the connector's rows put in
the driver's shape; neither needs Spark or Neo4j."""

from __future__ import annotations

import subprocess
import sys
from datetime import date

import pytest

from graph.errors import InvalidInput
from graph.segments.spark_engine import bolt_shaped
from personas.local.spark import check_engine

# The console script's entry point, in a process where `import pyspark` fails as it does when
# the extra is not installed (a None entry in sys.modules makes the import raise ImportError).
WITHOUT_PYSPARK = ("import sys; sys.modules['pyspark'] = None; "
                   "from personas.cli import main; sys.argv = ['personas'] + sys.argv[1:]; "
                   "main()")


def test_spark_engine_without_the_extra_fails_clearly() -> None:
    proc = subprocess.run([sys.executable, "-c", WITHOUT_PYSPARK, "segment", "--engine",
                           "spark"], capture_output=True, text=True, timeout=120, check=False,
                          env={"PERSONAS_NEO4J_URI": "bolt://127.0.0.1:1", "COLUMNS": "200",
                               "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 2, proc.stdout + proc.stderr
    out = " ".join(proc.stderr.split())
    assert "error (ENVIRONMENT): the Spark engine needs pyspark, which is not installed" in out
    assert "uv sync --extra spark" in out and "persona-graph's `spark` extra" in out
    assert "Traceback" not in proc.stderr


def test_unknown_engine_and_unsupported_options_are_refused() -> None:
    with pytest.raises(InvalidInput, match="unknown engine 'dask'"):
        check_engine("dask", "agglomerative", None)
    check_engine("in-process", "kmeans", 5)  # the in-process engine takes every option


def test_connector_rows_take_the_drivers_shape() -> None:
    row = {"user_id": "u1", "first_seen_ns": 1_767_323_045_000_000_000,
           "last_seen_ns": "1770091506000000000", "events": 7, "page_views": None,
           "carts": "2", "purchases": 1, "spend": 10.5, "chat_messages": 0,
           "age_band": "25-34", "demo_group": None, "sessions": 3, "avg_session_s": None,
           "mobile_sessions": 1, "app_sessions": 0, "chat_sessions": 0,
           "explicit_preference": "0.5", "locations": ["l1"], "orders": 1,
           "avg_discount": None, "purchase_months": ["3", 4],
           "category_names": ["books", "toys"], "category_ns": [2, 5],
           "days": [date(2026, 1, 2), "2026-01-03"], "day_ns": [1, 6]}
    out = bolt_shaped(row)
    assert out["first_seen_ns"] == 1_767_323_045_000_000_000
    assert out["last_seen_ns"] == 1_770_091_506_000_000_000
    assert out["carts"] == 2.0 and out["explicit_preference"] == 0.5
    assert out["page_views"] is None and out["avg_discount"] is None
    assert out["purchase_months"] == [3, 4]
    assert out["category_counts"] == [["books", 2], ["toys", 5]]
    assert [(d.to_native(), n) for d, n in out["day_counts"]] == [
        (date(2026, 1, 2), 1), (date(2026, 1, 3), 6)]
    assert not {"category_names", "category_ns", "days", "day_ns"} & set(out)
