"""Replaying a JSON Lines file into the events topic at a steady rate (behind `personas produce`).

Each message is one line as it is. Its key is the pseudonymous id of the event's most
authoritative user identifier (never the plaintext), so one user's events land in one partition
and keep their order. Lines that do not validate are sent as they are (keyless), which is how
malformed messages are fed to a consumer, unless ``skip_invalid``.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from confluent_kafka import KafkaError, Message, Producer

from graph.errors import EnvironmentProblem, InvalidInput
from graph.ingest.reader import Parsed, validate
from graph.ingest.stream import check_topic, ensure_topics, require_kafka
from graph.privacy import Pseudonymizer
from graph.settings import Settings

log = logging.getLogger(__name__)

PROGRESS_EVERY = 500


@dataclass(frozen=True)
class ReplaySummary:
    lines: int
    sent: int
    invalid: int
    skipped: int
    failed: int
    seconds: float


def message_key(line: bytes, pseudonymizer: Pseudonymizer, max_bytes: int) -> bytes | None:
    """The partition key of a line: its user's pseudonymous id, or None when it is not a
    valid event."""
    if len(line) > max_bytes:
        return None
    try:
        data = json.loads(line)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None
    record = validate(0, data, "")
    if not isinstance(record, Parsed):
        return None
    kind, value = record.event.identifiers()[0]
    return pseudonymizer.user_id(kind, value).encode()


def replay_file(
    settings: Settings,
    path: Path,
    *,
    topic: str | None = None,
    rate: float | None = None,
    skip_invalid: bool = False,
    on_progress: Callable[[int], None] | None = None,
) -> ReplaySummary:
    """Send every non-blank line of ``path`` to ``topic`` (created when missing) at ``rate``
    messages a second (None or 0: as fast as the broker takes them); waits until all are
    acknowledged. ``on_progress`` is called with the number of lines handled."""
    topic = check_topic(topic or settings.kafka_topic)
    if rate is not None and rate < 0:
        raise InvalidInput("the rate must not be negative")
    if not path.is_file():
        raise InvalidInput(f"{path}: no such file")
    require_kafka(settings)
    ensure_topics(settings, [topic])
    pseudonymizer = settings.pseudonymizer()
    errors: list[str] = []

    def delivered(err: KafkaError | None, _msg: Message) -> None:
        if err is not None:
            errors.append(str(err))

    producer = Producer({"bootstrap.servers": settings.kafka_bootstrap_servers,
                         "acks": "all", "enable.idempotence": True, "linger.ms": 5,
                         "client.id": "personas-produce"}, logger=log)
    lines = sent = invalid = skipped = 0
    pending = 0
    started = t0 = time.monotonic()
    with path.open("rb") as handle:
        for raw in handle:
            line = raw.rstrip(b"\r\n")
            if not line.strip():
                continue
            lines += 1
            key = message_key(line, pseudonymizer, settings.max_line_bytes)
            pending += 1
            if on_progress is not None and pending >= PROGRESS_EVERY:
                on_progress(pending)
                pending = 0
            if key is None:
                invalid += 1
                if skip_invalid:
                    skipped += 1
                    continue
            if rate:
                delay = t0 + sent / rate - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
            while True:
                try:
                    producer.produce(topic, line, key, on_delivery=delivered)
                    break
                except BufferError:
                    producer.poll(0.05)
            producer.poll(0)
            sent += 1
            if rate and sent == 1:
                # The idempotent producer sends nothing until the broker gave it a producer id
                # (about half a second). The pace starts once the first message is acknowledged,
                # so that this set-up is not a burst of messages made late before they left.
                if producer.flush(30):
                    log.warning("the first message is still unacknowledged after 30s; "
                                "replaying at the rate anyway")
                t0 = time.monotonic() - 1 / rate
    remaining = producer.flush(60)
    if on_progress is not None and pending:
        on_progress(pending)
    if remaining:
        raise EnvironmentProblem(f"{remaining} message(s) still unacknowledged after 60s")
    if errors:
        log.warning("%d message(s) failed: %s", len(errors), errors[:3])
    return ReplaySummary(lines, sent - len(errors), invalid, skipped, len(errors),
                         time.monotonic() - started)
