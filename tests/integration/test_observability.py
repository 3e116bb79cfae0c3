"""Operations you can see: the Grafana dashboard and the Prometheus scrape config in the repo
(deploy/, compose.yaml) ask only for metrics that the served processes expose.

No Docker here: compose.yaml and the dashboard are parsed, and every metric a panel queries
is looked up, with the labels it groups or filters by, in what `personas serve`'s /metrics and
the consumer's metrics port expose after some traffic (GraphQL, HTTP events, a segmentation
run, Kafka messages valid and malformed).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from api.metrics import RUN_MEASURES
from graph.auth import Role, create_key
from graph.db import Graph
from graph.ingest import stream
from graph.ingest.metrics import IngestMetrics
from graph.segments.run import run_segmentation
from graph.settings import Settings
from tests.helpers import PERSONAS, load_demo
from tests.integration.test_api_served import free_port, stop, wait_healthy
from tests.integration.test_stream import demo_lines, names, produce

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "persona-graph.json"
SUFFIXES = {"histogram": ("_bucket", "_count", "_sum"), "counter": ("_total",), "gauge": ("",)}
PROMQL_WORDS = {"by", "without", "le", "on", "ignoring"}


def compose() -> dict[str, Any]:
    return dict(yaml.safe_load((ROOT / "compose.yaml").read_text()))


def dashboard() -> dict[str, Any]:
    return dict(json.loads(DASHBOARD.read_text()))


def queries() -> list[tuple[str, str]]:
    """(panel title, PromQL) of every panel."""
    return [(p["title"], t["expr"]) for p in dashboard()["panels"] if p["type"] != "row"
            for t in p["targets"]]


def test_compose_runs_prometheus_and_grafana_on_the_repos_files() -> None:
    services = compose()["services"]
    for name in ("prometheus", "grafana"):
        for volume in services[name]["volumes"]:
            source = volume.split(":")[0]
            if source.startswith("./"):
                assert (ROOT / source).exists(), (name, source)
    config = yaml.safe_load((ROOT / "deploy/prometheus/prometheus.yml").read_text())
    targets = {job["job_name"]: job["static_configs"][0]["targets"]
               for job in config["scrape_configs"]}
    # Each target is a compose service, on the port that service serves its metrics on.
    api_port = services["api"]["ports"][0].rsplit(":", 1)[1]
    consumer = services["consumer"]
    consumer_port = consumer["environment"]["PERSONAS_CONSUMER_METRICS_PORT"]
    assert targets == {"persona-graph-api": [f"api:{api_port}"],
                       "persona-graph-consumer": [f"consumer:{consumer_port}"]}
    assert consumer["environment"]["PERSONAS_CONSUMER_METRICS_HOST"] == "0.0.0.0"
    datasources = yaml.safe_load(
        (ROOT / "deploy/grafana/provisioning/datasources/prometheus.yml").read_text())
    uid = datasources["datasources"][0]["uid"]
    assert datasources["datasources"][0]["url"] == "http://prometheus:9090"
    panels = [p for p in dashboard()["panels"] if p["type"] != "row"]
    assert len(panels) >= 10
    assert all(p["datasource"]["uid"] == uid and p["targets"] for p in panels)
    # What issue 22 asks the dashboard to show, each in a panel of its own.
    titles = " | ".join(p["title"].lower() for p in panels)
    for topic in ("ingest rate", "lag", "dead letters", "reason", "freshness",
                  "latency by operation", "segmentation runs", "stability"):
        assert topic in titles, topic


def exposed(text: str) -> dict[str, tuple[str, set[str], set[str]]]:
    """Families in a /metrics page: name -> (type, label names, values of ``measure``)."""
    out: dict[str, tuple[str, set[str], set[str]]] = {}
    for family in text_string_to_metric_families(text):
        labels = {k for s in family.samples for k in s.labels if k not in ("le",)}
        measures = {s.labels["measure"] for s in family.samples if "measure" in s.labels}
        kind, old_labels, old_measures = out.get(family.name, (family.type, set(), set()))
        out[family.name] = (kind, old_labels | labels, old_measures | measures)
    return out


@pytest.fixture
def scraped(graph: Graph, settings: Settings, kafka_running: Settings,
            tmp_path: Path) -> Iterator[str]:
    """The API's /metrics (served by `personas serve`) and the consumer's, after traffic."""
    load_demo(graph, tmp_path, 20, seed=21, key=settings.pseudonym_key.get_secret_value())
    run_segmentation(graph, runs_dir=settings.resolved_runs_dir)
    reader = create_key(graph, Role.READER, "metrics reader").key
    writer = create_key(graph, Role.WRITER, "metrics writer").key
    user_id = graph.rows("MATCH (u:User) RETURN u.id AS id LIMIT 1")[0]["id"]

    # Kafka: a few events and one malformed message, scraped while the consumer runs.
    topic, dlq, group = names("metrics")
    produce(kafka_running, tmp_path, topic, demo_lines(1, seed=22)[:10] + ["{broken"])
    port = free_port()
    consumer_pages: list[str] = []

    def scrape(_report: stream.BatchReport) -> None:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
            consumer_pages.append(r.read().decode())

    stream.consume(graph, kafka_running.model_copy(update={"consumer_metrics_port": port}),
                   stop=threading.Event(), topic=topic, dead_letter_topic=dlq, group=group,
                   max_messages=11, idle_exit=30, metrics=IngestMetrics(), on_batch=scrape)
    assert consumer_pages

    api_port = free_port()
    base = f"http://127.0.0.1:{api_port}"
    env = {**os.environ, "PERSONAS_NEO4J_URI": settings.bolt_uri,
           "PERSONAS_NEO4J_PASSWORD": settings.neo4j_password.get_secret_value(),
           "PERSONAS_PSEUDONYM_KEY": settings.pseudonym_key.get_secret_value(),
           "PERSONAS_RUNS_DIR": str(settings.resolved_runs_dir)}
    env.pop("PERSONAS_DEMO", None)
    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([PERSONAS, "serve", "--host", "127.0.0.1", "--port",
                                 str(api_port)], env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_healthy(proc, base, log)
        ask = httpx.post(f"{base}/graphql", headers={"Authorization": f"Bearer {reader}"},
                         json={"query": "query($id: ID!) { user(id: $id) { id } }",
                               "variables": {"id": user_id}}, timeout=30)
        assert ask.status_code == 200, ask.text
        event = {"event_id": "metrics-1", "type": "purchase", "source": "web",
                 "occurred_at": "2026-11-01T10:00:00+01:00", "user": {"cookie": "ck-metrics"},
                 "properties": {"item_id": "sku-metrics", "category": "Books", "price": "9.50"}}
        sent = httpx.post(f"{base}/v1/events", json={"events": [event, {"type": "nonsense"}]},
                          headers={"Authorization": f"Bearer {writer}"}, timeout=30)
        assert sent.status_code in (200, 207), sent.text
        page = httpx.get(f"{base}/metrics", timeout=30)
        assert page.status_code == 200
        yield page.text + "\n" + consumer_pages[-1]
    finally:
        stop(proc)


def test_every_panel_queries_metrics_the_served_processes_expose(scraped: str) -> None:
    families = exposed(scraped)
    checked = set()
    for title, expr in queries():
        grouped = {label.strip() for group in re.findall(r"by \(([^)]*)\)", expr)
                   for label in group.split(",")} - PROMQL_WORDS
        filtered = set(re.findall(r"\{(\w+)=", expr))
        for metric in re.findall(r"\bpersonas_\w+", expr):
            family = next((f for f, (kind, _, _) in families.items()
                           for suffix in SUFFIXES[kind] if metric == f + suffix), None)
            assert family is not None, f"{title}: {metric} is not exposed"
            _, labels, measures = families[family]
            assert grouped | filtered <= labels, (title, metric, grouped | filtered, labels)
            for wanted in re.findall(r'measure=~"([^"]+)"', expr):
                names_ = set(wanted.split("|"))
                assert names_ <= set(RUN_MEASURES), names_
                # Agreement with the run before needs one; every other measure is there now.
                assert names_ - {"ari_vs_previous", "users_moved"} <= measures, (
                    title, names_, measures)
            checked.add(family)
    # The operation label names the GraphQL operation the client ran.
    assert 'operation="query user"' in scraped
    assert len(checked) >= 12, checked
