"""The file path's Python side, stage by stage, without Neo4j: CPU µs an event.

The stages the reading thread of ``graph.ingest.files.ingest_file`` runs for each batch while
the previous one is written: reading a line and parsing it (``orjson``), validating it into an
``Event``, ``EventWriter.prepare`` (de-duplication, hashing, each event's own row) and the
plan's rows (``EventWriter._plan`` with nothing found in the graph: every user minted). The
look-up transaction of ``EventWriter.plan`` is Neo4j's and is not counted. CPU time of the
process (``time.process_time``) under the load's interpreter settings (``bulk_load_runtime``),
over ``--rounds`` passes of the same file; the best pass counts (the machine is shared).

To compare two versions of the code, run this file with ``PYTHONPATH`` pointing at an export of
the other one (``git archive``) in turn with the working tree. Run by ``make
bench-ingest-python``; figures in docs/performance.md.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from graph.events import Event
from graph.identity.resolution import Resolved
from graph.ingest.reader import Parsed, load_json, validate
from graph.ingest.runtime import bulk_load_runtime
from graph.ingest.writer import EventWriter
from graph.privacy import Pseudonymizer
from personas.demo import DemoPopulation

EVENTS_PER_USER = 107
BATCH = 2000


def _batches(lines: list[bytes]) -> Iterator[list[bytes]]:
    for start in range(0, len(lines), BATCH):
        yield lines[start:start + BATCH]


def one_pass(lines: list[bytes], writer: EventWriter) -> dict[str, float]:
    """CPU seconds of each stage over ``lines``, a batch at a time."""
    clock = time.process_time
    spent = dict.fromkeys(("parse", "validate", "prepare", "plan"), 0.0)
    nothing = Resolved({}, {})
    for block in _batches(lines):
        t0 = clock()
        data: list[Any] = [load_json(line) for line in block]
        t1 = clock()
        events: list[Event] = []
        for number, record in enumerate(data):
            parsed = validate(number, record, "")
            assert isinstance(parsed, Parsed), parsed
            events.append(parsed.event)
        t2 = clock()
        prepared = writer.prepare(events)
        t3 = clock()
        writer._plan(prepared, set(), nothing)
        t4 = clock()
        for stage, seconds in zip(spent, (t1 - t0, t2 - t1, t3 - t2, t4 - t3), strict=True):
            spent[stage] += seconds
    return spent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    writer = EventWriter(None, Pseudonymizer("bench-key"))  # type: ignore[arg-type]  # no graph
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "events.jsonl"
        n = DemoPopulation(max(1, args.events // EVENTS_PER_USER), seed=11).write_events(path)
        lines = path.read_bytes().splitlines()
    best: dict[str, float] = {}
    with bulk_load_runtime():
        for run in range(1, args.rounds + 1):
            spent = one_pass(lines, writer)
            per_event = {k: v / n * 1e6 for k, v in spent.items()}
            print(f"pass {run}: " + ", ".join(f"{k} {v:.1f}" for k, v in per_event.items())
                  + f", total {sum(per_event.values()):.1f} µs/event", flush=True)
            best = {k: min(best.get(k, v), v) for k, v in per_event.items()}
    print("RESULT " + " ".join(f"{k}_us={v:.1f}" for k, v in best.items())
          + f" total_us={sum(best.values()):.1f} events={n}")


if __name__ == "__main__":
    main()
