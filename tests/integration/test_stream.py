"""Streaming ingestion from Kafka into Neo4j: exactly the valid distinct events in the graph,
malformed messages in the dead-letter topic, no loss or duplication across a kill -9, clean
SIGTERM, and the lag metric. Against the real test Kafka and Neo4j."""

from __future__ import annotations

import itertools
import json
import re
import signal
import socket
import subprocess
import threading
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from graph import db
from graph.db import Graph, wipe
from graph.ingest import stream
from graph.ingest.deadletter import scrub_record
from graph.ingest.files import ingest_file
from graph.ingest.metrics import IngestMetrics
from graph.ingest.pipeline import build_writer
from graph.ingest.replay import replay_file
from graph.ingest.writer import EventWriter
from graph.privacy import Pseudonymizer
from graph.segments.run import run_segmentation
from graph.settings import Settings
from personas.demo import DemoPopulation
from tests.helpers import PERSONAS, load_demo

pytestmark = pytest.mark.integration

USER_COUNTERS = ("events", "page_views", "searches", "carts", "purchases", "chat_messages",
                 "feedbacks")


def names(prefix: str) -> tuple[str, str, str]:
    """A topic, dead-letter topic and group of this test's own."""
    tag = uuid.uuid4().hex[:8]
    return f"{prefix}-{tag}", f"{prefix}-{tag}-dlq", f"{prefix}-group-{tag}"


@pytest.fixture
def kafka(kafka_running: Settings) -> Settings:
    return kafka_running


@pytest.fixture
def env(kafka: Settings, cli_env: dict[str, str]) -> dict[str, str]:
    return {**cli_env, "PERSONAS_KAFKA_BOOTSTRAP": kafka.kafka_bootstrap_servers,
            "PERSONAS_CONSUMER_METRICS_PORT": "0"}


def demo_lines(users: int, seed: int) -> list[str]:
    return [json.dumps(e, separators=(",", ":")) for e in DemoPopulation(users, seed).events()]


def produce(settings: Settings, folder: Path, topic: str, lines: list[str]) -> None:
    path = folder / f"{topic}.jsonl"
    path.write_text("".join(line + "\n" for line in lines))
    stream.ensure_topics(settings, [topic])
    summary = replay_file(settings, path, topic=topic, rate=0)
    assert summary.sent == len(lines) and summary.failed == 0


def read_all(settings: Settings, topic: str, expected: int, timeout: float = 30.0) -> list[Any]:
    """Every message of ``topic`` (waiting until ``expected`` arrived or the timeout)."""
    consumer = Consumer({"bootstrap.servers": settings.kafka_bootstrap_servers,
                         "group.id": f"reader-{uuid.uuid4().hex[:8]}",
                         "auto.offset.reset": "earliest", "enable.auto.commit": False})
    consumer.subscribe([topic])
    out: list[Any] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and len(out) < expected:
        out.extend(m for m in consumer.consume(100, timeout=0.5) if m.error() is None)
    # A little longer, so that messages beyond the expected ones would be seen too.
    out.extend(m for m in consumer.consume(100, timeout=1.0) if m.error() is None)
    consumer.close()
    return out


def interactions(graph: Graph) -> int:
    return int(graph.rows("MATCH (i:Interaction) RETURN count(i) AS n")[0]["n"])


def reference_load(graph: Graph, kafka: Settings, tmp_path: Path,
                   lines: list[str]) -> dict[str, Any]:
    """The reference a streamed run is compared with: the same events through one clean file
    load, snapshot, then the graph wiped for the stream."""
    path = tmp_path / "events.jsonl"
    path.write_text("".join(line + "\n" for line in lines))
    ingest_file(build_writer(graph, kafka), path, batch_size=500, max_line_bytes=1_000_000)
    reference = snapshot(graph)
    assert len(reference["interactions"]) == len(lines)
    wipe(graph)
    return reference


def snapshot(graph: Graph) -> dict[str, Any]:
    """Per-user counters, session event counts and interaction ids: what a load must equal."""
    users = graph.rows(
        "MATCH (u:User) RETURN u.id AS id, [k IN $keys | u[k]] AS counters, "
        "round(u.spend, 2) AS spend ORDER BY id", keys=list(USER_COUNTERS))
    sessions = graph.rows("MATCH (s:Session) RETURN s.id AS id, s.events AS n ORDER BY id")
    ids = graph.rows("MATCH (i:Interaction) RETURN i.event_id AS id ORDER BY id")
    return {"users": users, "sessions": sessions, "interactions": [r["id"] for r in ids]}


def committed_total(settings: Settings, group: str, topic: str) -> int:
    consumer = Consumer({"bootstrap.servers": settings.kafka_bootstrap_servers,
                         "group.id": group, "enable.auto.commit": False})
    meta = consumer.list_topics(topic, timeout=10).topics[topic]
    parts = [TopicPartition(topic, p) for p in meta.partitions]
    committed = consumer.committed(parts, timeout=10)
    consumer.close()
    return sum(max(0, p.offset) for p in committed)


def consume_cmd(topic: str, dlq: str, group: str, *extra: str) -> list[str]:
    return [PERSONAS, "consume", "--topic", topic, "--dead-letter-topic", dlq, "--group", group,
            *extra]


def wait_for(condition: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def test_valid_events_once_and_malformed_to_dead_letters(graph: Graph, kafka: Settings,
                                                         tmp_path: Path) -> None:
    topic, dlq, group = names("valid")
    valid = demo_lines(3, seed=5)[:60]
    no_id = json.loads(valid[0])
    del no_id["event_id"]
    no_offset = json.loads(valid[1])
    no_offset["event_id"] = "bad-ts"
    no_offset["occurred_at"] = "2026-11-01T10:00:00"
    # Once poison pills: year 1 overflowed in validation and stopped the consumer, again after
    # every restart.
    year_one = {**json.loads(valid[2]), "event_id": "year-1",
                "occurred_at": "0001-01-01T00:00:00+01:00"}
    epoch_huge = {**json.loads(valid[3]), "event_id": "epoch-1e20", "occurred_at": 1e20}
    malformed = {
        "{not json, write to jane.doe@example.com": "invalid JSON",
        json.dumps(no_id): "event_id: Field required",
        json.dumps(no_offset): "occurred_at: time has no timezone offset",
        "[1, 2]": "record is not a JSON object",
        json.dumps(year_one): "occurred_at: time is out of range",
        json.dumps(epoch_huge): "occurred_at: Input should be a valid datetime",
    }
    lines = valid[:30] + list(malformed)[:2] + valid[30:] + valid[10:15] + list(malformed)[2:]
    produce(kafka, tmp_path, topic, lines)

    metrics = IngestMetrics()
    summary = stream.consume(graph, kafka, stop=threading.Event(), topic=topic,
                             dead_letter_topic=dlq, group=group, batch_max=20,
                             max_messages=len(lines), idle_exit=30, metrics=metrics)

    assert summary.messages == len(lines)
    assert (summary.written, summary.duplicates, summary.dead_letters) == (60, 5, 6)
    assert interactions(graph) == 60
    stored = {r["id"] for r in graph.rows("MATCH (i:Interaction) RETURN i.event_id AS id")}
    assert stored == {json.loads(line)["event_id"] for line in valid}
    assert metrics.registry.get_sample_value(
        "personas_events_rejected_total", {"source": "kafka", "reason": "malformed"}) == 2
    assert metrics.registry.get_sample_value(
        "personas_events_rejected_total", {"source": "kafka", "reason": "invalid"}) == 4
    assert committed_total(kafka, group, topic) == len(lines)
    # Recorded for reads too (graph.consistency): in the batch's own transaction, or after
    # the dead letters of a batch that has some.
    recorded = graph.rows("MATCH (o:StreamOffset {group: $group, topic: $topic}) "
                          "RETURN sum(o.next) AS n", group=group, topic=topic)
    assert recorded == [{"n": len(lines)}]

    letters = read_all(kafka, dlq, expected=6)
    assert len(letters) == 6
    by_record: dict[str, dict[str, str]] = {}
    offsets = set()
    ids: set[str] = set()
    for msg in letters:
        headers = {k: v.decode() for k, v in msg.headers()}
        payload = json.loads(msg.value())
        assert headers["source_topic"] == topic
        offsets.add((int(headers["source_partition"]), int(headers["source_offset"])))
        assert msg.key().decode() == payload["dead_letter_id"]
        assert headers["reason"] == payload["reason"] and headers["code"] == payload["code"]
        assert (payload["partition"], payload["offset"]) == (
            int(headers["source_partition"]), int(headers["source_offset"]))
        by_record[payload["record"]] = headers
        ids.add(payload["dead_letter_id"])
        # No identifier or email of the malformed records in plaintext.
        for secret in (b"@example.com", b"ck-5-", b"crm-5-"):
            assert secret not in msg.value(), (secret, msg.value())
    assert len(offsets) == 6
    pseudonymizer = Pseudonymizer(kafka.pseudonym_key.get_secret_value())

    def scrub(raw: str) -> str:
        return scrub_record(pseudonymizer, raw)

    assert {scrub(record) for record in malformed} == set(by_record)
    for record, reason in malformed.items():
        assert reason in by_record[scrub(record)]["reason"], (record, by_record[scrub(record)])
    assert "[email:" in scrub("{not json, write to jane.doe@example.com")
    assert by_record[scrub("[1, 2]")]["code"] == "malformed"
    assert by_record[scrub(json.dumps(no_id))]["code"] == "invalid"
    # The same dead letters are in the graph (erased with their users), once each.
    stored_letters = graph.rows("MATCH (d:DeadLetter) RETURN d.id AS id, d.source AS source")
    assert {r["id"] for r in stored_letters} == ids and len(stored_letters) == 6
    assert {r["source"] for r in stored_letters} == {f"kafka:{topic}"}


def test_kill_9_mid_stream_loses_and_duplicates_nothing(
    graph: Graph, kafka: Settings, env: dict[str, str], tmp_path: Path,
) -> None:
    lines = demo_lines(20, seed=3)
    total = len(lines)
    reference = reference_load(graph, kafka, tmp_path, lines)

    topic, dlq, group = names("kill")
    produce(kafka, tmp_path, topic, lines)
    log = tmp_path / "first.log"
    with log.open("w") as err:
        first = subprocess.Popen(consume_cmd(topic, dlq, group, "--batch-max", "10"), env=env,
                                 stdout=subprocess.DEVNULL, stderr=err)
    try:
        wait_for(lambda: interactions(graph) >= total // 6 or first.poll() is not None, 120,
                 "the first batches")
        assert first.poll() is None, log.read_text()[-3000:]
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait(30)
    partial = interactions(graph)
    assert 0 < partial < total, (partial, total)
    committed = committed_total(kafka, group, topic)
    assert committed < total

    # At least once: the restarted consumer reads everything after the committed offsets
    # (some of it already written), and stops there.
    second = subprocess.run(consume_cmd(topic, dlq, group, "--batch-max", "200",
                                        "--max-messages", str(total - committed),
                                        "--idle-exit", "60"),
                            env=env, capture_output=True, text=True, timeout=300)
    assert second.returncode == 0, second.stderr[-3000:]
    assert snapshot(graph) == reference
    assert committed_total(kafka, group, topic) == total


def test_a_backlog_is_planned_ahead_and_loads_as_one_file(graph: Graph, kafka: Settings,
                                                          tmp_path: Path) -> None:
    """Full batches of a backlog are worked out on the polling thread while the batch before
    them is written (``EventWriter.plan``); after a batch that merged users the next is worked
    out in its transaction. The graph equals one file load's, every offset is committed and
    recorded for reads."""
    lines = demo_lines(20, seed=3)
    # After both users' events (lines 808-840 and 1313-1319): the link merges them.
    link = {**json.loads(lines[1400]), "event_id": "link-6-11",
            "user": {"cookie": "ck-3-000011", "email": "user3-000006@example.com"}}
    lines.insert(1400, json.dumps(link))
    reference = reference_load(graph, kafka, tmp_path, lines)
    assert len(reference["users"]) == 19  # the link merged two users

    topic, dlq, group = names("backlog")
    # One partition: the link is read after both users' events, as it was written.
    stream.ensure_topics(kafka.model_copy(update={"kafka_partitions": 1}), [topic])
    produce(kafka, tmp_path, topic, lines)
    reports: list[stream.BatchReport] = []
    summary = stream.consume(graph, kafka, stop=threading.Event(), topic=topic,
                             dead_letter_topic=dlq, group=group, batch_max=40,
                             max_messages=len(lines), idle_exit=30, on_batch=reports.append)

    assert (summary.written, summary.duplicates) == (len(lines), 0)
    assert snapshot(graph) == reference
    planned = [r.planned for r in reports]
    # All but the merging batch (the one after it is planned when the writer takes it), and
    # perhaps one that met the writer free before it was full.
    assert len(planned) - 2 <= sum(planned) < len(planned), [
        n for n, p in enumerate(planned) if not p]
    assert committed_total(kafka, group, topic) == len(lines)
    recorded = graph.rows("MATCH (o:StreamOffset {group: $group, topic: $topic}) "
                          "RETURN sum(o.next) AS n", group=group, topic=topic)
    assert recorded == [{"n": len(lines)}]


def test_sigterm_finishes_the_batch_and_commits(
    graph: Graph, kafka: Settings, env: dict[str, str], tmp_path: Path,
) -> None:
    lines = demo_lines(30, seed=8)  # far more than are read before the signal lands
    topic, dlq, group = names("term")
    produce(kafka, tmp_path, topic, lines)
    proc = subprocess.Popen(consume_cmd(topic, dlq, group, "--batch-max", "10"), env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: interactions(graph) >= 100, 120, "the first batches")
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err[-3000:]
    assert "SIGTERM received" in err
    stored = interactions(graph)
    assert 100 <= stored < len(lines)
    # Every message read was written and its offset committed, nothing beyond.
    assert committed_total(kafka, group, topic) == stored


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_lag_is_reported_and_reaches_zero(graph: Graph, kafka: Settings,
                                          tmp_path: Path) -> None:
    lines = demo_lines(2, seed=9)[:50]
    topic, dlq, group = names("lag")
    produce(kafka, tmp_path, topic, lines)
    metrics = IngestMetrics()

    def lag() -> float:
        return sum(s.value for m in metrics.registry.collect() if m.name == "personas_consumer_lag"
                   for s in m.samples if s.labels["topic"] == topic)

    stream.consume(graph, kafka, stop=threading.Event(), topic=topic, dead_letter_topic=dlq,
                   group=group, batch_max=10, max_messages=20, metrics=metrics)
    assert lag() == 30

    port = free_port()
    scraped: list[str] = []

    def scrape(_report: stream.BatchReport) -> None:
        if not scraped:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
                scraped.append(r.read().decode())

    served = kafka.model_copy(update={"consumer_metrics_port": port})
    summary = stream.consume(graph, served, stop=threading.Event(), topic=topic,
                             dead_letter_topic=dlq, group=group, batch_max=10, max_messages=30,
                             idle_exit=30, metrics=metrics, on_batch=scrape)
    assert summary.messages == 30
    assert lag() == 0
    assert interactions(graph) == 50
    lag_lines = [line for line in scraped[0].splitlines()
                 if line.startswith("personas_consumer_lag{") and f'topic="{topic}"' in line]
    assert len(lag_lines) == 3  # one per partition
    assert 'personas_events_received_total{source="kafka"}' in scraped[0]
    count = metrics.registry.get_sample_value("personas_event_freshness_seconds_count",
                                              {"source": "kafka"})
    assert count == 50


class StampingWriter(EventWriter):
    """The shared writer, noting the wall time each batch's transaction returned."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.stored: list[float] = []

    def write(self, *args: Any, **kwargs: Any) -> Any:
        result = super().write(*args, **kwargs)
        self.stored.append(time.time())
        return result


class SlowCommitConsumer(stream.StreamConsumer):
    """A consumer whose Kafka commits each take half a second longer (a slow coordinator)."""

    def _commit(self, offsets: Any) -> None:
        time.sleep(0.5)
        super()._commit(offsets)


def test_freshness_ends_at_the_commit_in_the_graph(graph: Graph, kafka: Settings,
                                                   tmp_path: Path) -> None:
    """An event is fresh once its batch's transaction (which records its offsets for reads)
    committed: the Kafka commit after it, which only says where a restart resumes, is not in
    the freshness metric, and the batch report gives it apart."""
    lines = demo_lines(2, seed=5)[:30]
    topic, dlq, group = names("fresh")
    produce(kafka, tmp_path, topic, lines)
    stamps = [m.timestamp()[1] / 1000 for m in read_all(kafka, topic, len(lines))]
    assert len(stamps) == len(lines) and max(stamps) - min(stamps) < 0.3
    writer = StampingWriter(graph, Pseudonymizer(kafka.pseudonym_key.get_secret_value()))
    reports: list[stream.BatchReport] = []
    metrics = IngestMetrics()
    consumer = SlowCommitConsumer(writer, kafka, metrics, topic=topic, dead_letter_topic=dlq,
                                  group=group, batch_max=10, on_batch=reports.append)
    summary = consumer.run(threading.Event(), max_messages=len(lines))

    assert summary.written == len(lines) and len(reports) == len(writer.stored) >= 3
    for report, stored in zip(reports, writer.stored, strict=True):
        assert report.kafka_after_seconds >= 0.5
        # Each event's freshness ends when its batch was stored (give or take the thread
        # switch), not half a second later at the Kafka commit.
        assert max(report.freshness_s) <= stored - min(stamps) + 0.05
        assert min(report.freshness_s) >= stored - max(stamps) - 0.05
    observed = metrics.registry.get_sample_value("personas_event_freshness_seconds_sum",
                                                 {"source": "kafka"})
    assert observed == pytest.approx(sum(sum(r.freshness_s) for r in reports))


def test_a_batch_transaction_runs_only_statements_that_keep_their_plans(
        graph: Graph, kafka: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every statement of a stream batch's transaction starts with ``CYPHER replan=skip``: the
    graph's statistics move all the time under ingestion, and a statement found stale is
    planned again inside the transaction that runs it, holding that batch and the ones behind
    it."""
    lines = demo_lines(3, seed=4)[:40]
    topic, dlq, group = names("plans")
    produce(kafka, tmp_path, topic, lines)
    seen: list[str] = []
    real_run_work = db.run_work

    class Recording:
        def __init__(self, tx: Any) -> None:
            self.tx = tx

        def run(self, query: str, params: Any) -> Any:
            seen.append(query)
            return self.tx.run(query, params)

    monkeypatch.setattr(db, "run_work", lambda tx, work: real_run_work(Recording(tx), work))
    summary = stream.consume(graph, kafka, stop=threading.Event(), topic=topic,
                             dead_letter_topic=dlq, group=group, batch_max=10,
                             max_messages=len(lines), metrics=IngestMetrics())

    assert summary.written == len(lines)
    assert any("StreamOffset" in query for query in seen)
    assert [q for q in seen if not q.lstrip().startswith("CYPHER replan=skip")] == []


class WaitingAssigner:
    """Segment assignment that holds its first call until ``release`` is set (at most a
    minute), recording the users of each call."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.calls: list[tuple[str, ...]] = []
        self.released_in_time: bool | None = None

    def assign(self, user_ids: Any) -> int:
        if self.released_in_time is None:
            self.released_in_time = self.release.wait(60)
        self.calls.append(tuple(user_ids))
        return 0

    def preload(self) -> bool:
        return False


def test_a_slow_segment_assignment_does_not_hold_the_next_batches(
        graph: Graph, kafka: Settings, tmp_path: Path) -> None:
    """Newcomers are assigned after their batch is stored, on a thread of their own: the
    batches after it are written and committed meanwhile, and every batch's users are still
    given to the assignment before the consumer returns."""
    lines = demo_lines(3, seed=7)[:60]
    topic, dlq, group = names("assign")
    produce(kafka, tmp_path, topic, lines)
    assigner = WaitingAssigner()
    writer = EventWriter(graph, Pseudonymizer(kafka.pseudonym_key.get_secret_value()),
                         assigner)

    def on_batch(_report: stream.BatchReport) -> None:
        if interactions(graph) == len(lines):
            assigner.release.set()  # every batch stored while the first assignment waited

    consumer = stream.StreamConsumer(writer, kafka, IngestMetrics(), topic=topic,
                                     dead_letter_topic=dlq, group=group, batch_max=10,
                                     on_batch=on_batch)
    summary = consumer.run(threading.Event(), max_messages=len(lines))

    assert summary.written == len(lines) and summary.batches >= 6
    assert assigner.released_in_time is True
    assert len(assigner.calls) == summary.batches
    users = {r["id"] for r in graph.rows("MATCH (u:User) RETURN u.id AS id")}
    assert set(itertools.chain.from_iterable(assigner.calls)) == users


def test_a_model_that_cannot_be_prepared_does_not_stop_consuming(
        graph: Graph, kafka: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    """Preparing segment assignment at start (a broken model file, say) may fail; the events
    are still consumed, as a failed assignment after a batch never stopped them either."""
    from graph.segments.assign import SegmentAssigner

    def broken(_self: SegmentAssigner) -> bool:
        raise OSError("model file truncated")

    monkeypatch.setattr(SegmentAssigner, "preload", broken)
    lines = demo_lines(2, seed=10)[:20]
    topic, dlq, group = names("preload")
    produce(kafka, tmp_path, topic, lines)
    wipe(graph)
    summary = stream.consume(graph, kafka, stop=threading.Event(), topic=topic,
                             dead_letter_topic=dlq, group=group, max_messages=20)
    assert summary.written == 20
    assert interactions(graph) == 20
    assert "could not prepare segment assignment" in caplog.text


def test_newcomers_through_kafka_are_assigned_to_segments(graph: Graph, kafka: Settings,
                                                          tmp_path: Path) -> None:
    """The consumer assigns a batch's newcomers after handing its result over (while its
    offsets are committed): they are assigned all the same, each once."""
    runs_dir = tmp_path / "runs"
    load_demo(graph, tmp_path, users=40, seed=21)
    run = run_segmentation(graph, runs_dir=runs_dir)
    topic, dlq, group = names("assign")
    lines = demo_lines(5, seed=22)
    produce(kafka, tmp_path, topic, lines)
    summary = stream.consume(graph, kafka.model_copy(update={"runs_dir": runs_dir}),
                             stop=threading.Event(), topic=topic, dead_letter_topic=dlq,
                             group=group, batch_max=100, max_messages=len(lines), idle_exit=30)
    assert summary.written == len(lines)
    assigned = graph.rows(
        "MATCH (u:User)-[m:IN_SEGMENT {run_id: $run}]->() WHERE m.assigned_by = 'ingest' "
        "RETURN count(m) AS n, count(DISTINCT u) AS users", run=run.run_id)
    assert assigned == [{"n": 5, "users": 5}]


def test_unreachable_broker_is_a_clear_error(env: dict[str, str]) -> None:
    bad = {**env, "PERSONAS_KAFKA_BOOTSTRAP": f"127.0.0.1:{free_port()}"}
    proc = subprocess.run([PERSONAS, "consume", "--idle-exit", "1"], env=bad,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "Kafka is not reachable" in proc.stderr and "PERSONAS_KAFKA_BOOTSTRAP" in proc.stderr


def test_bad_topic_name_is_refused(env: dict[str, str]) -> None:
    proc = subprocess.run([PERSONAS, "consume", "--topic", "no spaces/allowed"], env=env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "not a valid Kafka topic name" in proc.stderr


def test_produce_keys_are_pseudonymous(kafka: Settings, tmp_path: Path) -> None:
    lines = demo_lines(2, seed=12)[:20] + ["{broken"]
    topic, _dlq, _group = names("keys")
    produce(kafka, tmp_path, topic, lines)
    messages = read_all(kafka, topic, expected=len(lines))
    assert len(messages) == len(lines)
    keyed = [m for m in messages if m.key() is not None]
    assert len(keyed) == 20 and all(m.key().startswith(b"u_") for m in keyed)
    assert not any(b"@" in m.key() or b"ck-" in m.key() for m in keyed)
    # One user's events share a key, hence a partition, in their order.
    by_key: dict[bytes, set[int]] = {}
    for m in keyed:
        by_key.setdefault(m.key(), set()).add(m.partition())
    assert all(len(parts) == 1 for parts in by_key.values())


def test_a_paced_replay_sends_each_message_when_it_is_stamped(kafka: Settings,
                                                             tmp_path: Path) -> None:
    """`personas produce --rate`: a message reaches the broker right after the producer
    stamps it, from the start. The idempotent producer's set-up (its producer id, 0.5-1 s from
    a broker that was just started, less from a warm one) is waited for on the first message,
    instead of late-sending what followed. Against the previous replayer this failed when the
    producer id was slow to come (messages 1,075-985 ms late), not when it came quickly."""
    topic, _dlq, group = names("paced")
    stream.ensure_topics(kafka, [topic])
    reader = Consumer({"bootstrap.servers": kafka.kafka_bootstrap_servers, "group.id": group,
                       "auto.offset.reset": "earliest", "enable.auto.commit": False,
                       "fetch.wait.max.ms": 10})
    reader.subscribe([topic])
    wait_for(lambda: reader.consume(1, timeout=0.1) == [] and bool(reader.assignment()), 30,
             "the reader's partitions")
    path = tmp_path / "paced.jsonl"
    lines = demo_lines(1, seed=13)[:40]
    path.write_text("".join(line + "\n" for line in lines))
    failures: list[BaseException] = []

    def replay() -> None:
        try:
            replay_file(kafka, path, topic=topic, rate=100.0)
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            failures.append(exc)

    replaying = threading.Thread(target=replay)
    replaying.start()
    late_ms: list[float] = []
    stamped_ms: list[int] = []
    deadline = time.monotonic() + 30
    while len(late_ms) < len(lines) and time.monotonic() < deadline:
        m = reader.poll(0.01)
        if m is not None and m.error() is None:
            late_ms.append(time.time() * 1000 - m.timestamp()[1])
            stamped_ms.append(m.timestamp()[1])
    replaying.join(30)
    reader.close()
    assert not replaying.is_alive() and not failures, failures
    assert len(late_ms) == len(lines)
    # The first waited for the producer's set-up; the rest arrive as they are stamped, and are
    # stamped at the pace asked for (39 gaps of 10 ms).
    assert max(late_ms[1:]) < 250, late_ms[:10]
    assert max(stamped_ms) - min(stamped_ms) >= 300


def written_by(log: Path) -> int:
    """Events a `personas consume` process wrote, from its batch log lines."""
    return sum(int(n) for n in re.findall(r"batch \d+ committed: .*? written=(\d+)",
                                          log.read_text()))


class PhasedProducer(threading.Thread):
    """Sends lines keyed as `personas produce` keys them: the first ``burst`` at once, then a
    trickle (``trickle_per_s``) until ``go`` is set, then the next ``burst`` at once, and so
    on; the last phase sends the rest. The trickle keeps messages arriving while the group
    rebalances, however long a consumer takes to start."""

    def __init__(self, settings: Settings, topic: str, lines: list[str], bursts: list[int],
                 trickle_per_s: float = 25.0) -> None:
        super().__init__(daemon=True)
        self.settings, self.topic, self.lines, self.bursts = settings, topic, lines, bursts
        self.trickle_s = 1 / trickle_per_s
        self.gates = [threading.Event() for _ in bursts]
        self.sent = 0
        self.failures: list[BaseException] = []

    def run(self) -> None:
        try:
            from graph.ingest.replay import message_key

            producer = Producer({"bootstrap.servers": self.settings.kafka_bootstrap_servers,
                                 "acks": "all", "enable.idempotence": True, "linger.ms": 5})
            pseudonymizer = self.settings.pseudonymizer()

            def send() -> None:
                line = self.lines[self.sent].encode()
                producer.produce(self.topic, line,
                                 message_key(line, pseudonymizer, self.settings.max_line_bytes))
                producer.poll(0)
                self.sent += 1

            for burst, gate in zip(self.bursts, self.gates, strict=True):
                for _ in range(min(burst, len(self.lines) - self.sent)):
                    send()
                producer.flush(30)
                while not gate.is_set() and self.sent < len(self.lines):
                    send()
                    producer.flush(30)
                    gate.wait(self.trickle_s)
            while self.sent < len(self.lines):
                send()
            assert producer.flush(60) == 0
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            self.failures.append(exc)


def test_consumers_join_and_leave_mid_stream_losing_and_duplicating_nothing(
    graph: Graph, kafka: Settings, env: dict[str, str], tmp_path: Path,
) -> None:
    """Two `personas consume` processes of one group share a 3-partition topic while it is
    being produced: the second joins mid-stream (the group rebalances, the first gives up
    partitions), then the first leaves (SIGTERM; the second takes them all). Every event is in
    the graph once, counted once in the aggregates, and written by exactly one consumer."""
    # The demo's users one after another, interleaved (each user's events in their order), so
    # that every phase of the stream reaches every partition.
    by_user: dict[str, list[str]] = {}
    for line in demo_lines(12, seed=14):
        by_user.setdefault(json.dumps(json.loads(line)["user"]), []).append(line)
    lines = [line for group in itertools.zip_longest(*by_user.values()) for line in group
             if line is not None]
    total = len(lines)
    reference = reference_load(graph, kafka, tmp_path, lines)

    topic, dlq, group = names("rebalance")
    stream.ensure_topics(kafka, [topic])
    assert kafka.kafka_partitions >= 2
    # A first third, a trickle until the second consumer has its partitions, a second third,
    # a trickle until the first consumer has left, then the rest.
    producing = PhasedProducer(kafka, topic, lines, [total // 3, total // 3, 0])
    logs = [tmp_path / "first.log", tmp_path / "second.log"]
    procs: list[subprocess.Popen[bytes]] = []

    def start(log: Path) -> subprocess.Popen[bytes]:
        with log.open("w") as err:
            proc = subprocess.Popen(consume_cmd(topic, dlq, group, "--batch-max", "50"),
                                    env=env, stdout=subprocess.DEVNULL, stderr=err)
        procs.append(proc)
        return proc

    try:
        first = start(logs[0])
        producing.start()
        wait_for(lambda: interactions(graph) >= total // 5, 60, "the first consumer's batches")
        second = start(logs[1])
        wait_for(lambda: "revoked" in logs[0].read_text()
                 and "assigned" in logs[1].read_text(), 60, "the rebalance as the second joins")
        producing.gates[0].set()
        wait_for(lambda: written_by(logs[1]) > 0 and producing.sent >= 2 * (total // 3), 60,
                 "the second consumer's first batch")
        first.send_signal(signal.SIGTERM)
        assert first.wait(60) == 0, logs[0].read_text()[-3000:]
        producing.gates[1].set()
        producing.join(60)
        assert not producing.is_alive() and not producing.failures, producing.failures
        wait_for(lambda: interactions(graph) >= total, 60, "every event")
        second.send_signal(signal.SIGTERM)
        assert second.wait(60) == 0, logs[1].read_text()[-3000:]
    finally:
        for gate in producing.gates:
            gate.set()
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    first_log, second_log = (log.read_text() for log in logs)
    assert "SIGTERM received" in first_log
    # The second took every partition once the first had left.
    assert second_log.count("assigned") >= 2, second_log[-3000:]
    last_assigned = [line for line in second_log.splitlines() if " assigned " in line][-1]
    assert all(f"{topic}[{p}]" in last_assigned for p in range(kafka.kafka_partitions)), \
        last_assigned
    counts = graph.rows("MATCH (i:Interaction) RETURN i.event_id AS id, count(*) AS n")
    assert len(counts) == total and all(r["n"] == 1 for r in counts)
    assert snapshot(graph) == reference
    written = [written_by(log) for log in logs]
    assert all(n > 0 for n in written) and sum(written) == total, written
    assert committed_total(kafka, group, topic) == total
