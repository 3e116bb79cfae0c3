"""Hostile messages through the real broker, not by calling the parser: values binary, empty,
null (tombstones), huge (past the consumer's record limit and past librdkafka's fetch size),
keys and headers of every shape, batches under each compression codec, a key repeated in a
record, and a burst of poison between valid events. The consumer writes every valid event
once, dead-letters every other message with its reason, commits every offset and stays up."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

from graph.db import Graph
from graph.ingest import stream
from graph.ingest.metrics import IngestMetrics
from graph.settings import Settings
from tests.integration.test_stream import (
    committed_total,
    demo_lines,
    interactions,
    names,
    read_all,
)

pytestmark = pytest.mark.integration

MAX_LINE_BYTES = 20_000
"""The consumer's record limit for this test (PERSONAS_MAX_LINE_BYTES)."""
BIG_BYTES = 3_000_000
"""Past librdkafka's default fetch size per partition (1 MB) and the broker's default message
size (the topic allows it)."""


def create_topic(settings: Settings, topic: str) -> None:
    admin = AdminClient({"bootstrap.servers": settings.kafka_bootstrap_servers})
    futures = admin.create_topics([NewTopic(topic, num_partitions=2, replication_factor=-1,
                                            config={"max.message.bytes": str(4 * BIG_BYTES)})])
    for future in futures.values():
        future.result(30)


def test_hostile_messages_through_the_broker(graph: Graph, kafka_running: Settings,
                                             tmp_path: Path) -> None:
    settings = kafka_running.model_copy(update={"max_line_bytes": MAX_LINE_BYTES})
    topic, dlq, group = names("hostile")
    create_topic(settings, topic)
    stream.ensure_topics(settings, [dlq])
    valid = demo_lines(3, seed=11)[:80]
    first = json.loads(valid[0])
    repeated = json.dumps(first)[:-1] + ', "event_id": "other-id"}'
    poison: list[tuple[bytes | None, str]] = [
        (None, "empty message (no value)"),
        (b"", "invalid JSON"),
        (b"\x00\xff\xfe binary \x80", "not UTF-8"),
        (b"\xef\xbb\xbf" + valid[1].encode(), "invalid JSON"),  # a BOM before the record
        ('{"event_id": "\ud800"}'.encode("utf-8", "surrogatepass"), "not UTF-8"),
        (b"[" * 100_000, "too_large"),
        (b"[" * 5_000 + b"]" * 5_000, "invalid JSON"),
        (b'{"a": ' + b"1" * 5_000 + b"}", "invalid JSON"),
        (repeated.encode(), 'key "event_id" repeated in one object'),
        (b"x" * BIG_BYTES, "too_large"),
        (b"null", "record is not a JSON object"),
        (b'"just a string"', "record is not a JSON object"),
        # Identifiers, ids and categories that show nothing: each had been stored as given.
        *((json.dumps({**first, "event_id": f"blank-{n}", **change}).encode(),
           "invisible characters") for n, change in enumerate([
               {"user": {"email": "\u200b\u200c"}}, {"user": {"cookie": "\ufeff"}},
               {"session_id": "\u3164"}, {"event_id": "\u2060\u3000"},
               {"properties": {**first["properties"], "category": "\u202e"}}])),
    ]
    poison_burst = [(b"{" + str(i).encode(), "invalid JSON") for i in range(300)]
    keys: list[bytes | None] = [None, b"", b"\x00\xff", "ключ".encode(), b"k" * 100_000]
    headers: list[list[tuple[str, bytes | None]] | None] = [
        None, [], [("h", None)], [("", b"")], [("bin", b"\x00\xff" * 1000)],
        [("dup", b"1"), ("dup", b"2")], [("reason", b"forged"), ("code", b"forged")],
    ]
    # Valid events and poison interleaved, each with some key and headers, under each codec.
    codecs = ["none", "gzip", "snappy", "lz4", "zstd"]
    sent: list[tuple[bytes | None, str | None]] = []
    plan: list[tuple[bytes | None, str | None]] = (
        [(v.encode(), None) for v in valid[:20]] + [(p, why) for p, why in poison[:6]]
        + [(p, why) for p, why in poison_burst] + [(v.encode(), None) for v in valid[20:60]]
        + [(p, why) for p, why in poison[6:]] + [(v.encode(), None) for v in valid[60:]]
        + [(v.encode(), None) for v in valid[5:10]])  # five again: duplicates
    chunk = -(-len(plan) // len(codecs))
    for n, codec in enumerate(codecs):
        producer = Producer({"bootstrap.servers": settings.kafka_bootstrap_servers,
                             "compression.type": codec, "linger.ms": 50,
                             "message.max.bytes": 4 * BIG_BYTES})
        for i, (value, why) in enumerate(plan[n * chunk:(n + 1) * chunk]):
            producer.produce(topic, value, key=keys[i % len(keys)],
                             headers=headers[i % len(headers)])
            sent.append((value, why))
        assert producer.flush(60) == 0
    poisoned = [why for _, why in sent if why is not None]

    metrics = IngestMetrics()
    summary = stream.consume(graph, settings, stop=threading.Event(), topic=topic,
                             dead_letter_topic=dlq, group=group, batch_max=50,
                             max_messages=len(sent), idle_exit=30, metrics=metrics)

    assert summary.messages == len(sent)
    assert (summary.written, summary.duplicates, summary.dead_letters) == (
        80, 5, len(poisoned))
    stored = {r["id"] for r in graph.rows("MATCH (i:Interaction) RETURN i.event_id AS id")}
    assert stored == {json.loads(v)["event_id"] for v in valid}
    assert interactions(graph) == 80
    assert committed_total(settings, group, topic) == len(sent)

    letters = read_all(settings, dlq, expected=len(poisoned), timeout=60)
    assert len(letters) == len(poisoned)
    reasons = sorted(dict(m.headers())["reason"].decode() for m in letters)
    codes = sorted(dict(m.headers())["code"].decode() for m in letters)
    for why in set(poisoned):
        expected = poisoned.count(why)
        if why == "too_large":
            assert codes.count("too_large") == expected
        else:
            assert sum(why in r for r in reasons) >= expected, (why, reasons[:20])
    assert all(json.loads(m.value())["topic"] == topic for m in letters)
    # The forged `reason` and `code` headers of the source messages are not carried over.
    assert "forged" not in reasons and "forged" not in codes
