"""Streaming ingestion from Kafka (behind `personas consume`).

A consumer-group member with auto-commit off: it polls a batch, validates every message with the
file reader's envelope validation, writes the valid events through the shared writer in one
Neo4j transaction, and commits the batch's offsets synchronously only after that transaction
committed. A crash between the two re-delivers the batch, and the writer, idempotent on
``event_id``, skips what is already stored: at-least-once delivery, each event once in the graph.

Malformed messages go to the dead-letter topic, PII-scrubbed, keyed by a stable dead-letter id,
with the reason and their source topic, partition and offset in headers; the dead letters are
flushed before the offsets move. While one batch is written (on one writer thread, so batches
commit in order), the next fills, and goes to the writer as soon as it is free: a batch closes
when the writer is free, not at a size or after a fixed wait, so it is as large as the rate
makes it (at most ``batch_max``). A batch without dead letters records its offsets for reads
(``graph.consistency``) in its own transaction, and the next batch goes to the writer before
the Kafka commit of the one just written.

When the next batch is full before the writer is free (a backlog), it is worked out ahead on
the polling thread as the file import does (``EventWriter.plan`` on top of the batch in
flight): the writer's transaction then only sends the batch statement and the offsets.
"""

from __future__ import annotations

import json
import logging
import re
import signal
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import (
    TIMESTAMP_NOT_AVAILABLE,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

from graph.backoff import Backoff
from graph.consistency import offsets_statement, record_offsets
from graph.db import Graph, Statement
from graph.errors import EnvironmentProblem, InvalidInput
from graph.events import Event
from graph.ingest.deadletter import DeadLetter, DeadLetterStore, make_dead_letter
from graph.ingest.metrics import IngestMetrics
from graph.ingest.pipeline import build_writer
from graph.ingest.reader import InvalidJson, Parsed, load_json, validate
from graph.ingest.runtime import bulk_load_runtime
from graph.ingest.tally import Tally
from graph.ingest.writer import EventWriter, Plan, WriteResult
from graph.privacy import Pseudonymizer
from graph.settings import Settings

log = logging.getLogger(__name__)
# librdkafka logs every refused connection; a probe of a closed port is not an error.
_PROBE_LOG = logging.getLogger(f"{__name__}.probe")
_PROBE_LOG.setLevel(logging.CRITICAL)

SOURCE = "kafka"
BATCH_WAIT_S = 0.1
"""How long an idle consumer waits for a first message before it looks at its stop flag,
idle time and lag again."""
LINGER_S = 0.005
"""How long a batch started by an idle writer's first message waits for more: a few events
together cost about what one does."""
IN_FLIGHT_POLL_S = 0.005
"""How long a poll waits while a batch is being written (the writer's end is checked between)."""
COMMIT_RETRY_S = 120.0
"""How long a written batch's offset commit is retried while the group coordinator is away."""
COMMIT_BACKOFF = Backoff(base_seconds=0.1, factor=2.0, max_seconds=2.0)
TRANSIENT_COMMIT_ERRORS = frozenset({
    KafkaError._WAIT_COORD, KafkaError._TRANSPORT, KafkaError._TIMED_OUT,
    KafkaError._ALL_BROKERS_DOWN, KafkaError.COORDINATOR_NOT_AVAILABLE,
    KafkaError.NOT_COORDINATOR, KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
    KafkaError.REQUEST_TIMED_OUT})
MEMBERSHIP_LOST_ERRORS = frozenset({
    KafkaError.UNKNOWN_MEMBER_ID, KafkaError.ILLEGAL_GENERATION,
    KafkaError.REBALANCE_IN_PROGRESS, KafkaError.FENCED_INSTANCE_ID})
LAG_EVERY_S = 1.0
SESSION_TIMEOUT_MS = 10_000
FETCH_WAIT_MS = 100
TOPIC_RE = re.compile(r"^[A-Za-z0-9._-]{1,249}$")


def check_topic(name: str) -> str:
    if not TOPIC_RE.fullmatch(name) or name in (".", ".."):
        raise InvalidInput(f"{name!r} is not a valid Kafka topic name (letters, digits, '.', "
                           "'_', '-'; at most 249)")
    return name


@dataclass(frozen=True)
class Rejected:
    code: str
    """A reject code of ``graph.ingest.metrics.REJECT_CODES``."""
    reason: str


def parse_message(value: bytes | None, offset: int, max_bytes: int) -> Event | Rejected:
    """A message value as an event, or why not (the file reader's envelope validation)."""
    if value is None:
        return Rejected("malformed", "empty message (no value)")
    if len(value) > max_bytes:
        return Rejected("too_large", f"record is {len(value)} bytes, over the limit of {max_bytes}")
    try:
        text = value.decode("utf-8")
    except UnicodeDecodeError as exc:
        return Rejected("malformed", f"not UTF-8: {exc.reason} at byte {exc.start}")
    try:
        data = load_json(text)
    except InvalidJson as exc:
        return Rejected("malformed", str(exc))
    if not isinstance(data, dict):
        return Rejected("malformed", "record is not a JSON object")
    record = validate(offset, data, text)
    if isinstance(record, Parsed):
        return record.event
    return Rejected("invalid", record.reason)


@dataclass(frozen=True)
class BatchReport:
    """What one committed batch did; ``freshness_s`` holds, per valid message, the time from
    its Kafka timestamp to its commit in the graph: the transaction that recorded its offsets
    for reads (``graph.consistency``), after which a read-your-writes read sees it."""

    messages: int
    events: int
    written: int
    duplicates: int
    dead_letters: int
    write_seconds: float
    """From handing the batch to the writer to its transaction's commit."""
    freshness_s: tuple[float, ...]
    lag: int | None
    fill_seconds: float = 0.0
    """From reading the batch's first message to handing the batch to the writer."""
    commit_seconds: float = 0.0
    """After its transaction: dead letters, offsets recorded for reads (when not in the
    transaction) and the Kafka commit, which only says where a restart resumes."""
    kafka_after_seconds: float = 0.0
    """From its commit in the graph to the Kafka commit of its offsets."""
    planned: bool = False
    """Worked out on the polling thread before it went to the writer (a full batch), and
    written as planned."""


@dataclass
class _Batch:
    messages: int
    events: list[Event]
    offsets: dict[tuple[str, int], int]
    """Next offset to commit per (topic, partition)."""
    timestamps_ms: list[int]
    dead_letters: int
    future: Future[WriteResult] | None = None
    first_read: float = 0.0
    started: float = 0.0
    letters: list[DeadLetter] = field(default_factory=list)
    offsets_in_transaction: bool = False
    stored: float = 0.0
    """``time.perf_counter()`` when the writer's thread saw the batch's transaction commit."""
    plan: Plan | None = None
    """Worked out ahead (``EventWriter.plan``) on top of the batch in flight, while it was
    written; only a full batch is."""

    @classmethod
    def empty(cls) -> _Batch:
        return cls(0, [], {}, [], 0)

    def done(self) -> bool:
        return self.future is None or self.future.done()


class StreamConsumer:
    """Consumes one topic into the graph until stopped, out of messages or idle.

    Consumer calls (poll, commit, offsets) all happen on the calling thread; the Neo4j write
    of a batch runs on a worker thread, overlapped with parsing the next batch, and its
    newcomers' segment assignment on another, overlapped with the next write.
    """

    def __init__(
        self,
        writer: EventWriter,
        settings: Settings,
        metrics: IngestMetrics,
        *,
        topic: str,
        dead_letter_topic: str,
        group: str,
        batch_max: int,
        on_batch: Callable[[BatchReport], None] | None = None,
    ) -> None:
        self.writer = writer
        self.settings = settings
        self.metrics = metrics
        self.topic = check_topic(topic)
        self.dead_letter_topic = check_topic(dead_letter_topic)
        if self.topic == self.dead_letter_topic:
            raise InvalidInput("the dead-letter topic must differ from the consumed topic")
        self.group = group
        self.batch_max = batch_max
        self.on_batch = on_batch
        self.pseudonymizer: Pseudonymizer = writer.pseudonymizer
        self.summary = Tally()
        self._in_flight: _Batch | None = None
        self._pending = _Batch.empty()
        self._pool: ThreadPoolExecutor | None = None
        self._assigning: ThreadPoolExecutor | None = None
        self._consumer: Consumer | None = None
        self._dlq: Producer | None = None
        self._dlq_errors: list[str] = []
        self._last_lag = 0.0
        self._assigned = False
        self._closing = False

    # -- the loop ---------------------------------------------------------------------------

    def run(self, stop: threading.Event, *, max_messages: int | None = None,
            idle_exit: float | None = None) -> Tally:
        """Consume until ``stop`` is set, ``max_messages`` were read, or nothing arrived for
        ``idle_exit`` seconds; whatever was read is always written and committed first."""
        bootstrap = self.settings.kafka_bootstrap_servers
        self._consumer = Consumer({
            "bootstrap.servers": bootstrap,
            "group.id": self.group,
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "enable.partition.eof": False,
            "client.id": "personas-consume",
            # A consumer killed without leaving the group holds its partitions until its
            # session expires; 10 s (librdkafka: 45 s) lets a restarted one resume soon.
            "session.timeout.ms": SESSION_TIMEOUT_MS,
            # How long the broker holds a fetch when there is nothing new (librdkafka: 500 ms).
            "fetch.wait.max.ms": FETCH_WAIT_MS,
        }, logger=log)
        self._dlq = Producer({"bootstrap.servers": bootstrap, "acks": "all",
                              "enable.idempotence": True, "linger.ms": 5,
                              "client.id": "personas-dead-letters"}, logger=log)
        self._consumer.subscribe([self.topic], on_assign=self._on_assign,
                                 on_revoke=self._on_revoke, on_lost=self._on_lost)
        last_message = time.monotonic()
        try:
            # Tuned as for a file load (bulk_load_runtime): the writer's thread, woken by Neo4j's
            # answer, waited for the GIL held by this one parsing the next batch.
            # Newcomers are assigned to segments on a thread of their own, in batch order: on the
            # writer's, the next batch's write waited for each assignment (a read at least).
            with ThreadPoolExecutor(max_workers=1, thread_name_prefix="stream-writer") as pool, \
                    ThreadPoolExecutor(max_workers=1,
                                       thread_name_prefix="stream-assign") as assigning, \
                    bulk_load_runtime():
                self._pool, self._assigning = pool, assigning
                while not stop.is_set():
                    room = self.batch_max - self._pending.messages
                    if max_messages is not None:
                        room = min(room, max_messages - self.summary.records)
                    got = 0
                    if room > 0:
                        got = self._prepare(self._poll(room))
                    elif self._in_flight is not None:
                        # The next batch is full: work it out while the writer is busy, then
                        # wait for the writer.
                        self._plan_ahead()
                        self._settle()
                    if self._in_flight is not None and self._in_flight.done():
                        self._settle()
                    if self._in_flight is None and self._pending.messages:
                        self._submit()
                    if got:
                        last_message = time.monotonic()
                    elif self._in_flight is None and not self._pending.messages:
                        if max_messages is not None and self.summary.records >= max_messages:
                            break
                        # Idle time counts only while partitions are ours: before the group
                        # has assigned them, there is no telling whether anything is left.
                        if not self._assigned:
                            last_message = time.monotonic()
                        elif (idle_exit is not None
                              and time.monotonic() - last_message >= idle_exit):
                            log.info("nothing to read for %.1fs; exiting", idle_exit)
                            break
                    if time.monotonic() - self._last_lag >= LAG_EVERY_S:
                        self.refresh_lag()
                self._drain()
                self.refresh_lag()
        finally:
            self._pool = self._assigning = None
            self._closing = True  # the lag gauges keep their last values
            self._consumer.close()
            self._dlq.flush(10)
        return self.summary

    def _poll(self, room: int) -> list[Message]:
        """The next messages, at most ``room``. While a batch is being written: whatever comes
        within a short wait (the writer's end is checked between). With the writer free and
        messages waiting: only those already here, so the batch goes at once. Idle: the first
        message to arrive (up to ``BATCH_WAIT_S``), and those following it within
        ``LINGER_S``."""
        assert self._consumer is not None
        if self._in_flight is not None:
            return self._consumer.consume(num_messages=room, timeout=IN_FLIGHT_POLL_S)
        if self._pending.messages:
            return self._consumer.consume(num_messages=room, timeout=0)
        first = self._consumer.consume(num_messages=1, timeout=BATCH_WAIT_S)
        if not first or room == 1:
            return first
        return first + self._consumer.consume(num_messages=room - 1, timeout=LINGER_S)

    def _drain(self) -> None:
        """Write and commit everything read: the batch in flight, then the one being filled."""
        while self._in_flight is not None or self._pending.messages:
            if self._in_flight is None:
                self._submit()
            self._settle()

    def _prepare(self, messages: Sequence[Message]) -> int:
        """Validate messages into the batch being filled (dead-lettering the malformed);
        returns how many there were."""
        batch = self._pending
        before = batch.messages
        if messages and not before:
            batch.first_read = time.perf_counter()
        for msg in messages:
            error = msg.error()
            if error is not None:
                if error.fatal():
                    raise KafkaException(error)
                log.warning("consumer error: %s", error)
                continue
            topic, partition, offset = msg.topic(), msg.partition(), msg.offset()
            assert topic is not None and partition is not None and offset is not None
            batch.messages += 1
            batch.offsets[(topic, partition)] = offset + 1
            parsed = parse_message(msg.value(), offset, self.settings.max_line_bytes)
            if isinstance(parsed, Event):
                batch.events.append(parsed)
                kind, ts = msg.timestamp()
                if kind != TIMESTAMP_NOT_AVAILABLE:
                    batch.timestamps_ms.append(ts)
            else:
                batch.letters.append(self._dead_letter(msg, parsed))
                batch.dead_letters += 1
                self.summary.rejected_by_code[parsed.code] = (
                    self.summary.rejected_by_code.get(parsed.code, 0) + 1)
                self.metrics.reject(SOURCE, parsed.code)
        got = batch.messages - before
        self.metrics.received.labels(SOURCE).inc(got)
        self.summary.records += got
        return got

    def _plan_ahead(self) -> None:
        """Work out the batch being filled (it is full) on top of the one in flight, as the
        file import does: its look-ups and rows are then done by the time the writer is free,
        whose transaction only sends the batch statement. Only on top of a batch that was
        itself planned (its events and identifier links are known before it commits)."""
        batch, in_flight = self._pending, self._in_flight
        if (in_flight is None or in_flight.plan is None or batch.plan is not None
                or not batch.events):
            return
        batch.plan = self.writer.plan(self.writer.prepare(batch.events), after=in_flight.plan)

    def _submit(self) -> None:
        """Hand the batch being filled to the writer thread; a new one starts filling. A full
        batch that could not be planned ahead is planned here (the first of a backlog), so
        the next ones can be."""
        assert self._pool is not None and self._in_flight is None
        batch, self._pending = self._pending, _Batch.empty()
        if batch.plan is None and batch.events and batch.messages >= self.batch_max:
            batch.plan = self.writer.plan(self.writer.prepare(batch.events))
        batch.started = time.perf_counter()
        if batch.events:
            # Dead letters must be flushed and stored before the offsets move, so a batch
            # with any records its offsets after them, in a transaction of its own.
            then = None if batch.letters else offsets_statement(self.group, batch.offsets)
            batch.offsets_in_transaction = then is not None
            work: Sequence[Event] | Plan = batch.plan or batch.events
            future = self._pool.submit(self._write, batch, work, then)
            batch.future = future
            # Once the batch is stored (the assignment is derived from its events), while its
            # offsets are committed and the next batch is written. A write that failed raises
            # in ``_settle``, so this task ignores it.
            assert self._assigning is not None
            self._assigning.submit(self._assign_newcomers, future)
        self._in_flight = batch

    def _write(self, batch: _Batch, work: Sequence[Event] | Plan,
               then: Statement | None) -> WriteResult:
        """The batch's transaction, on the writer's thread, which notes when it committed (the
        polling thread sees it up to a poll later)."""
        result = self.writer.write(work, source=SOURCE, then=then, assign=False)
        batch.stored = time.perf_counter()
        return result

    def _assign_newcomers(self, written: Future[WriteResult]) -> None:
        if written.exception() is None:
            self.writer.assign_newcomers(written.result().user_ids)

    def _settle(self) -> None:
        """Wait for the batch in flight: its transaction, its dead letters, then its offsets.
        Once its transaction committed, the batch being filled (if any) goes to the writer,
        unless this one has dead letters still to store."""
        batch, self._in_flight = self._in_flight, None
        if batch is None:
            return
        result = batch.future.result() if batch.future is not None else WriteResult(0, 0)
        written = batch.stored or time.perf_counter()
        write_seconds = written - batch.started
        if self._pending.plan is not None and (batch.plan is None or not result.as_planned):
            # Planned on what this batch did not do (it merged users, or was worked out
            # again): the next one is worked out inside its transaction.
            self._pending.plan = None
        if not batch.letters and self._pending.messages and self._pool is not None:
            self._submit()  # its Neo4j work overlaps this batch's Kafka commit
        self._flush_dead_letters()
        if batch.letters:  # in the graph too, so that they are exported and erased with users
            DeadLetterStore(self.writer.graph).record(batch.letters)
        if not batch.offsets_in_transaction:
            # After the batch's transaction: a read with a Kafka token waits for this
            # (graph.consistency); dead letters and duplicates count as applied too.
            record_offsets(self.writer.graph, self.group, batch.offsets)
            written = time.perf_counter()
        # In the graph (and readable with the batch's Kafka token) from here, on the wall clock
        # the Kafka timestamps use.
        visible_ms = (time.time() - (time.perf_counter() - written)) * 1000
        self._commit(batch.offsets)
        kafka_after_seconds = time.perf_counter() - written
        commit_seconds = time.perf_counter() - batch.started - write_seconds
        freshness = tuple(max(0.0, (visible_ms - ts) / 1000) for ts in batch.timestamps_ms)
        histogram = self.metrics.freshness.labels(SOURCE)
        for seconds in freshness:
            histogram.observe(seconds)
        s = self.summary
        s.batches += 1
        s.add(result.tally())
        s.rejected += batch.dead_letters
        lag = None
        if time.monotonic() - self._last_lag >= LAG_EVERY_S:
            lag = self.refresh_lag()
        log.info("batch %d committed: messages=%d written=%d duplicates=%d dead_letters=%d "
                 "write_ms=%.0f total_messages=%d lag=%s", s.batches, batch.messages,
                 result.written, result.duplicates, batch.dead_letters, write_seconds * 1000,
                 s.records, "-" if lag is None else lag,
                 extra={"batch": s.batches, "messages": batch.messages,
                        "written": result.written, "duplicates": result.duplicates,
                        "dead_letters": batch.dead_letters,
                        "write_ms": round(write_seconds * 1000, 1), "lag": lag})
        if self.on_batch is not None:
            self.on_batch(BatchReport(batch.messages, len(batch.events), result.written,
                                      result.duplicates, batch.dead_letters, write_seconds,
                                      freshness, lag,
                                      fill_seconds=batch.started - batch.first_read,
                                      commit_seconds=commit_seconds,
                                      kafka_after_seconds=kafka_after_seconds,
                                      planned=batch.plan is not None and result.as_planned))

    # -- dead letters -----------------------------------------------------------------------

    def _dead_letter(self, msg: Message, rejected: Rejected) -> DeadLetter:
        """Send a malformed message, scrubbed, to the dead-letter topic (flushed before the
        batch's offsets are committed)."""
        topic, partition, offset = msg.topic(), msg.partition(), msg.offset()
        assert topic is not None and partition is not None and offset is not None
        raw = (msg.value() or b"").decode("utf-8", "replace")
        # The id is derived from the source position and record: a re-read message gets the
        # same one.
        letter = make_dead_letter(self.pseudonymizer, source=f"{SOURCE}:{topic}",
                                  reason=rejected.reason, raw=raw,
                                  position=f"{partition}/{offset}")
        record = {
            "dead_letter_id": letter.id,
            "source": SOURCE,
            "topic": topic,
            "partition": partition,
            "offset": offset,
            "code": rejected.code,
            "reason": letter.reason,
            "record": letter.record,
            "truncated": letter.truncated,
            "identifiers": list(letter.identifiers),
            "rejected_at": letter.at.isoformat(),
        }
        headers: list[tuple[str, str | bytes | None]] = [
            ("reason", letter.reason.encode()), ("code", rejected.code.encode()),
            ("source_topic", topic.encode()), ("source_partition", str(partition).encode()),
            ("source_offset", str(offset).encode())]
        assert self._dlq is not None
        payload = json.dumps(record).encode()
        while True:
            try:
                self._dlq.produce(self.dead_letter_topic, payload, letter.id.encode(),
                                  headers=headers, on_delivery=self._delivered)
                break
            except BufferError:
                self._dlq.poll(0.1)
        self._dlq.poll(0)
        self.metrics.dead_letters.labels(SOURCE).inc()
        log.warning("dead letter %s: %s[%d]@%d %s: %s", letter.id, topic, partition, offset,
                    rejected.code, letter.reason)
        return letter

    def _commit(self, offsets: Mapping[tuple[str, int], int]) -> None:
        """Commit a written batch's offsets, waiting out a broker or coordinator that is away
        for a while (a broker restart): the batch is in the graph, and failing here would stop
        the consumer for no fault of the data. Other errors, or one lasting past
        ``COMMIT_RETRY_S``, raise (the batch is read again after a restart, idempotently)."""
        assert self._consumer is not None
        partitions = [TopicPartition(t, p, o) for (t, p), o in offsets.items()]
        deadline = time.monotonic() + COMMIT_RETRY_S
        failures = 0
        while True:
            try:
                self._consumer.commit(offsets=partitions, asynchronous=False)
                return
            except KafkaException as exc:
                error = exc.args[0] if exc.args else None
                transient = isinstance(error, KafkaError) and (
                    error.retriable() or error.code() in TRANSIENT_COMMIT_ERRORS)
                if isinstance(error, KafkaError) and error.code() in MEMBERSHIP_LOST_ERRORS:
                    # The group moved on (session expired, a rebalance): the partitions'
                    # next owner reads the batch again, and the writer counts it as
                    # duplicates.
                    log.warning("offsets not committed (%s): the batch will be read again",
                                error)
                    return
                if not transient or time.monotonic() >= deadline:
                    raise
                failures += 1
                log.warning("offset commit failed (%s); retrying", error)
                time.sleep(COMMIT_BACKOFF.delay(failures))

    def _delivered(self, err: KafkaError | None, _msg: Message) -> None:
        if err is not None:
            self._dlq_errors.append(str(err))

    def _flush_dead_letters(self) -> None:
        assert self._dlq is not None
        remaining = self._dlq.flush(30)
        if remaining or self._dlq_errors:
            problem = self._dlq_errors[:3] or [f"{remaining} still queued after 30s"]
            raise EnvironmentProblem(
                f"dead letters could not be written to {self.dead_letter_topic}: {problem}; "
                "offsets not committed (the batch will be read again)")

    # -- rebalancing and lag ----------------------------------------------------------------

    def _on_assign(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        log.info("assigned %s", ", ".join(f"{p.topic}[{p.partition}]" for p in partitions))
        self._last_lag = 0.0  # report the new partitions' lag at the next chance
        self._assigned = self._assigned or bool(partitions)

    def _on_revoke(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # Write and commit everything read while the partitions are still ours, so the next
        # owner starts after it (it would skip it as duplicates anyway).
        if self._pool is not None:
            self._drain()
        if not self._closing:
            for p in partitions:
                with suppress(KeyError):
                    self.metrics.consumer_lag.remove(p.topic, str(p.partition))
            self._assigned = False  # the eager protocol revokes all; an assignment follows
        log.info("revoked %s", ", ".join(f"{p.topic}[{p.partition}]" for p in partitions))

    def _on_lost(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # The partitions are already someone else's: committing would fail. The batch in flight
        # is stored (or not) all the same; its next reader skips what is stored.
        batch, self._in_flight = self._in_flight, None
        if batch is not None and batch.future is not None:
            batch.future.result()
        self._pending = _Batch.empty()
        for p in partitions:
            with suppress(KeyError):
                self.metrics.consumer_lag.remove(p.topic, str(p.partition))
        self._assigned = False
        log.warning("lost %s (session expired); their uncommitted messages will be read again",
                    ", ".join(f"{p.topic}[{p.partition}]" for p in partitions))

    def refresh_lag(self) -> int:
        """Set the lag gauge of every assigned partition (high watermark minus position, or
        minus the committed offset before the first fetch); returns the total."""
        assert self._consumer is not None
        self._last_lag = time.monotonic()
        assigned = self._consumer.assignment()
        if not assigned:
            return 0
        positions = self._consumer.position(assigned)
        unknown = [TopicPartition(p.topic, p.partition) for p in positions if p.offset < 0]
        committed = {}
        if unknown:
            committed = {(p.topic, p.partition): p.offset
                         for p in self._consumer.committed(unknown, timeout=10)}
        total = 0
        for p in positions:
            tp = TopicPartition(p.topic, p.partition)
            # The high watermark comes with every fetch response; asking the broker instead
            # queues behind the fetch long-poll on the same connection (up to its wait time).
            low, high = self._consumer.get_watermark_offsets(tp, cached=True)
            position = p.offset if p.offset >= 0 else committed.get((p.topic, p.partition), -1)
            if high < 0 or position < 0:
                low, high = self._consumer.get_watermark_offsets(tp, timeout=10)
            lag = max(0, high - (position if position >= 0 else low))
            self.metrics.consumer_lag.labels(p.topic, str(p.partition)).set(lag)
            total += lag
        return total


# -- set-up -------------------------------------------------------------------------------------


def broker_answers(bootstrap: str, timeout_s: float = 3.0) -> bool:
    """Whether a broker at ``bootstrap`` answers a metadata request within the timeout."""
    admin = AdminClient({"bootstrap.servers": bootstrap,
                         "socket.connection.setup.timeout.ms": max(1000, int(timeout_s * 1000))},
                        logger=_PROBE_LOG)
    try:
        metadata = admin.list_topics(timeout=timeout_s)
    except KafkaException:
        return False
    return bool(metadata.brokers)


def require_kafka(settings: Settings) -> None:
    """Fail with a clear message when no broker answers at the configured bootstrap servers."""
    if not broker_answers(settings.kafka_bootstrap_servers, timeout_s=5.0):
        hint = ("Start it with `personas kafka start`" if settings.kafka_provisions_locally
                else "Check PERSONAS_KAFKA_BOOTSTRAP")
        raise EnvironmentProblem(
            f"Kafka is not reachable at {settings.kafka_bootstrap_servers}. {hint}.")


def ensure_topics(settings: Settings, topics: Sequence[str]) -> list[str]:
    """Create the topics that do not exist yet (``kafka_partitions`` partitions each, the
    broker's default replication); returns those created."""
    for name in topics:
        check_topic(name)
    admin = AdminClient({"bootstrap.servers": settings.kafka_bootstrap_servers}, logger=log)
    existing = set(admin.list_topics(timeout=10).topics)
    missing = [t for t in dict.fromkeys(topics) if t not in existing]
    if not missing:
        return []
    futures = admin.create_topics(
        [NewTopic(t, num_partitions=settings.kafka_partitions, replication_factor=-1)
         for t in missing], operation_timeout=30)
    created = []
    for name, future in futures.items():
        try:
            future.result()
            created.append(name)
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise EnvironmentProblem(f"could not create Kafka topic {name}: {exc}") from exc
    return created


@contextmanager
def metrics_server(metrics: IngestMetrics, host: str, port: int) -> Iterator[int | None]:
    """Serve the metrics for Prometheus on ``host:port`` while the block runs (port 0: off)."""
    if port == 0:
        yield None
        return
    from prometheus_client import start_http_server

    try:
        server, thread = start_http_server(port, addr=host, registry=metrics.registry)
    except OSError as exc:
        raise EnvironmentProblem(
            f"cannot serve consumer metrics on {host}:{port} ({exc}); set "
            "PERSONAS_CONSUMER_METRICS_PORT to a free port, or 0 to turn them off") from exc
    try:
        yield server.server_port
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def stop_on_signals(stop: threading.Event) -> None:
    """SIGTERM and SIGINT set ``stop``: the batch in flight finishes and commits first."""
    def handler(signum: int, _frame: Any) -> None:
        log.info("%s received; finishing the batch in flight", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


def consume(
    graph: Graph,
    settings: Settings,
    *,
    stop: threading.Event,
    topic: str | None = None,
    dead_letter_topic: str | None = None,
    group: str | None = None,
    batch_max: int | None = None,
    max_messages: int | None = None,
    idle_exit: float | None = None,
    metrics: IngestMetrics | None = None,
    on_batch: Callable[[BatchReport], None] | None = None,
) -> Tally:
    """Consume the events topic into the graph (settings give every default): checks the
    broker, creates missing topics, serves metrics on ``consumer_metrics_port``, then runs
    :class:`StreamConsumer` until stopped, ``max_messages`` read, or ``idle_exit`` seconds idle."""
    topic = check_topic(topic or settings.kafka_topic)
    dead_letter_topic = check_topic(dead_letter_topic or settings.kafka_dead_letter_topic)
    if max_messages is not None and max_messages < 1:
        raise InvalidInput("max_messages must be at least 1")
    if idle_exit is not None and idle_exit < 0:
        raise InvalidInput("idle_exit must not be negative")
    require_kafka(settings)
    ensure_topics(settings, [topic, dead_letter_topic])
    metrics = metrics or IngestMetrics()
    writer = build_writer(graph, settings, metrics)
    writer.prepare_assignment()
    consumer = StreamConsumer(writer, settings, metrics, topic=topic,
                              dead_letter_topic=dead_letter_topic,
                              group=group or settings.kafka_group,
                              batch_max=batch_max or settings.kafka_batch_max, on_batch=on_batch)
    with metrics_server(metrics, settings.consumer_metrics_host,
                        settings.consumer_metrics_port) as port:
        if port is not None:
            log.info("metrics on http://%s:%d/metrics", settings.consumer_metrics_host, port)
        log.info("consuming %s as group %s from %s", topic, consumer.group,
                 settings.kafka_bootstrap_servers)
        try:
            return consumer.run(stop, max_messages=max_messages, idle_exit=idle_exit)
        except KafkaException as exc:
            # Offsets of the batch that failed were not committed: it is read again next time.
            raise EnvironmentProblem(f"Kafka: {exc.args[0]}") from exc
