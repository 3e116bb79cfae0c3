"""File import: read, validate, batch, write, dead-letter (behind `personas ingest`)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from graph.events import Event
from graph.ingest.deadletter import DeadLetterFile, DeadLetterStore
from graph.ingest.reader import Parsed, read_events
from graph.ingest.runtime import bulk_load_runtime
from graph.ingest.tally import Tally
from graph.ingest.writer import EventWriter, Plan, WriteResult


def default_dead_letter_path(path: Path) -> Path:
    return path.with_name(path.name + ".deadletter.jsonl")


def ingest_file(
    writer: EventWriter,
    path: Path,
    *,
    batch_size: int,
    max_line_bytes: int,
    dead_letter: Path | None = None,
    on_progress: Callable[[int], None] | None = None,
) -> Tally:
    """Load one JSONL/CSV file; every malformed record goes to the dead-letter file with its
    reason, and to the graph as a ``DeadLetter`` node (PII scrubbed, see ``deadletter``).

    Parsing, preparing and planning the next batch (``EventWriter.prepare``,
    ``EventWriter.plan``) overlaps with writing the previous one (one writer thread, so batches
    commit in file order); a batch is planned on top of the one in flight. While it runs, the
    interpreter is tuned for it (``bulk_load_runtime``: GIL switch interval, garbage
    collector). ``on_progress`` is called with the number of records handled.
    """
    dl = DeadLetterFile(dead_letter or default_dead_letter_path(path), str(path),
                        writer.pseudonymizer, DeadLetterStore(writer.graph))
    tally = Tally()

    def batches() -> Iterator[list[Event]]:
        batch: list[Event] = []
        for record in read_events(path, max_line_bytes):
            tally.records += 1
            if isinstance(record, Parsed):
                batch.append(record.event)
                if len(batch) >= batch_size:
                    yield batch
                    batch = []
            else:
                dl.write(record.line, record.reason, record.raw)
                if on_progress:
                    on_progress(1)
        if batch:
            yield batch

    def settle(future: Future[WriteResult], plan: Plan) -> WriteResult:
        result = future.result()
        tally.add(result.tally())
        if on_progress:
            on_progress(plan.batch.size)
        return result

    try:
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="ingest-writer") as pool, \
                bulk_load_runtime():
            in_flight: tuple[Future[WriteResult], Plan] | None = None
            try:
                for batch in batches():
                    # Worked out here, while the previous batch is being written: the writer's
                    # thread is the one Neo4j waits on.
                    prepared = writer.prepare(batch)
                    plan = writer.plan(prepared, after=in_flight[1] if in_flight else None)
                    # The previous batch must have committed before the next is submitted, so
                    # a failure stops the load at a batch boundary.
                    if in_flight is not None:
                        previous, in_flight = in_flight, None
                        if not settle(*previous).as_planned:
                            # The plan built on what that batch did not do (it merged users,
                            # or was worked out again); nothing is in flight now.
                            plan = writer.plan(prepared)
                    in_flight = (pool.submit(writer.write, plan), plan)
            finally:
                # Also when reading or preparing failed: what was written is counted, or its
                # error raised.
                if in_flight is not None:
                    settle(*in_flight)
    finally:
        dl.close()  # the rejects seen so far reach the graph's dead-letter index too
    tally.rejected = dl.count
    tally.dead_letter = dl.path if dl.count else None
    return tally
