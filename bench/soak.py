"""Soak: a mixed load for a set time against the service as it runs, counting what survives.

On the bench Neo4j and a Kafka of the benchmark's own (bench.common, bench.stream), with a demo
population, one segmentation run and keys made through the `personas` CLI, this starts
`personas serve` on a free port and `personas consume` on a fresh topic, then:

1. baseline: the chatbot query alone, at the soak's read rate, for ``--baseline-seconds``;
2. the soak, for ``--minutes``, all at once:
   - stream ingestion: demo events (a population of their own) replayed into Kafka at
     ``--kafka-rate`` and written by `personas consume`, with poison messages among them (a
     year-1 timestamp, an epoch of 1e20, text that is not JSON) that must be dead-lettered;
   - `POST /v1/events` batches with a writer key at ``--http-batches`` a second;
   - the chatbot query at ``--read-rate`` (open loop: latency from each request's due time);
   - `personas segment` at a third and two thirds of the time;
   - abusive requests at ``--abuse-rate``: a body over the limit, a query too deep, nested
     fragments, a cost bomb through variables, JSON nested 100k deep, a huge cursor, made-up
     and malformed keys, bad timestamps over HTTP;
3. the consumer drains, and every event id Kafka or the API acknowledged is looked up in the
   graph: lost (absent) or duplicated (more than one Interaction).

The server's resident memory is sampled every few seconds: its growth is the mean of the last
minute minus the mean of the first minute of the soak. 5xx answers are counted by the server
(`/metrics`, scraped from this host) and by the clients. Ends with a `BASELINE` line and one
`RESULT` line: ``RESULT minutes=… events=… requests=… errors_5xx=… lost=… duplicated=…
rss_growth_mb=… p99_ms=… baseline_p99_ms=…``.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson

from bench.api import CHATBOT_QUERY, open_loop, percentile, personas_cli, wait_until_up
from bench.common import bench_graph
from bench.http_load import KeepAliveClient
from bench.stream import bench_kafka, stream_bench_settings, topics
from graph.db import Graph, wipe
from graph.ingest import stream
from graph.ingest.replay import replay_file
from graph.settings import Settings
from personas.demo import DemoPopulation

PERSONAS = str(Path(sys.executable).parent / "personas")
PSEUDONYM_KEY = "bench-soak-key"
STREAM_SEED = 101
HTTP_SEED = 102
POISON_EVERY = 500
"""One poison message among this many stream messages."""
RSS_EVERY_S = 5.0
DRAIN_TIMEOUT_S = 300.0
LOOKUP_CHUNK = 10_000

PRESENT = """
UNWIND $ids AS id
OPTIONAL MATCH (i:Interaction {event_id: id})
WITH id, count(i) AS n
RETURN sum(CASE WHEN n = 0 THEN 1 ELSE 0 END) AS lost,
       sum(CASE WHEN n > 1 THEN 1 ELSE 0 END) AS duplicated
"""
STREAM_WRITTEN = ("MATCH (i:Interaction) WHERE i.event_id STARTS WITH $prefix "
                  "RETURN count(i) AS n")
DEAD_LETTERS = "MATCH (d:DeadLetter) WHERE d.source STARTS WITH $source RETURN count(d) AS n"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rss_mb(pid: int) -> float:
    """Resident memory of a process, from /proc (Linux)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


def poison(n: int) -> bytes:
    """Messages that must be dead-lettered, never written, never stop the consumer."""
    kind = n % 3
    if kind == 0:
        return json.dumps({"schema_version": 1, "event_id": f"poison-{n}", "type": "page_view",
                           "source": "web", "occurred_at": "0001-01-01T00:00:00+01:00",
                           "user": {"cookie": f"ck-poison-{n}"}}).encode()
    if kind == 1:
        return json.dumps({"schema_version": 1, "event_id": f"poison-{n}", "type": "page_view",
                           "source": "web", "occurred_at": 1e20,
                           "user": {"cookie": f"ck-poison-{n}"}}).encode()
    return b"{not json " + b"x" * 200


def write_stream(path: Path, events: int) -> tuple[list[str], int]:
    """The stream's file: ``events`` demo events with poison messages among them. Returns the
    ids of the valid events and the number of poison messages."""
    ids: list[str] = []
    poisoned = 0
    population = DemoPopulation(max(1, events // 100), STREAM_SEED).events()
    with path.open("wb") as handle:
        for event in population:
            if len(ids) == events:
                break
            handle.write(orjson.dumps(event) + b"\n")
            ids.append(event["event_id"])
            if len(ids) % POISON_EVERY == 0:
                handle.write(poison(poisoned) + b"\n")
                poisoned += 1
    return ids, poisoned


@dataclass
class Tally:
    """What the clients saw."""

    statuses: collections.Counter[int] = field(default_factory=collections.Counter)
    by_kind: dict[str, collections.Counter[int]] = field(
        default_factory=lambda: collections.defaultdict(collections.Counter))
    transport_errors: int = 0
    """Connections that broke (counted as status 0), the oversized bodies' excepted."""
    http_acked: list[str] = field(default_factory=list)

    def count(self, kind: str, status: int) -> None:
        self.statuses[status] += 1
        self.by_kind[kind][status] += 1

    @property
    def requests(self) -> int:
        return sum(self.statuses.values())

    @property
    def errors_5xx(self) -> int:
        return sum(n for s, n in self.statuses.items() if s >= 500)


def nested_fragments(levels: int) -> str:
    parts = ["query { ...F0 }"]
    for i in range(levels):
        nxt = f"...F{i + 1} ...F{i + 1}" if i + 1 < levels else "__typename"
        parts.append(f"fragment F{i} on Query {{ {nxt} }}")
    return " ".join(parts)


def abuses(limit: int, keys: dict[str, str], user: str) -> list[tuple[str, dict[str, Any]]]:
    """Hostile or clumsy requests, each with what ``httpx`` sends."""
    reader = {"Authorization": f"Bearer {keys['reader']}"}
    writer = {"Authorization": f"Bearer {keys['writer']}"}
    deep = "query { user(id: \"" + user + "\") { " + "similarUsers { user { " * 12 + "id" \
        + " } }" * 12 + " } }"
    cost = ("query($n: Int) { users(first: $n) { edges { node { sessions(first: $n) { "
            "interactions(first: $n) { type } } } } } }")
    bad_times = {"events": [
        {"event_id": "abuse-y1", "type": "page_view", "source": "web",
         "occurred_at": "0001-01-01T00:00:00+01:00", "user": {"cookie": "ck-abuse"}},
        {"event_id": "abuse-e20", "type": "page_view", "source": "web", "occurred_at": 1e20,
         "user": {"cookie": "ck-abuse"}}]}
    return [
        ("oversized", {"method": "POST", "url": "/graphql", "content": b"x" * (limit + 1024),
                       "headers": {"content-type": "application/json"}}),
        ("deep", {"method": "POST", "url": "/graphql", "json": {"query": deep},
                  "headers": reader}),
        ("fragments", {"method": "POST", "url": "/graphql",
                       "json": {"query": nested_fragments(17)}}),
        ("cost", {"method": "POST", "url": "/graphql",
                  "json": {"query": cost, "variables": {"n": 100}}, "headers": reader}),
        ("nested_json", {"method": "POST", "url": "/graphql",
                         "content": b"[" * 100_000 + b"]" * 100_000,
                         "headers": {"content-type": "application/json", **reader}}),
        ("cursor", {"method": "POST", "url": "/graphql", "headers": reader, "json": {
            "query": "query($c: String) { users(after: $c) { edges { cursor } } }",
            "variables": {"c": "9" * 5000}}}),
        ("made_up_key", {"method": "POST", "url": "/graphql",
                         "json": {"query": "{ categories { name } }"},
                         "headers": {"Authorization": "Bearer pg_0badc0de_" + "x" * 32}}),
        ("malformed_key", {"method": "POST", "url": "/v1/events", "json": {"events": []},
                           "headers": {"X-API-Key": "'; DROP TABLE keys; --" * 20}}),
        ("bad_timestamps", {"method": "POST", "url": "/v1/events", "json": bad_times,
                            "headers": writer}),
    ]


async def paced(rate: float, until: float,
                act: Callable[[int], Coroutine[Any, Any, None]]) -> None:
    """``act(i)`` started at ``rate`` a second until ``until`` (monotonic), without waiting
    for one to finish before the next is due."""
    start = time.monotonic()
    tasks: set[asyncio.Task[None]] = set()
    i = 0
    while True:
        due = start + i / rate
        if due >= until:
            break
        delay = due - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        task = asyncio.create_task(act(i))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
        i += 1
    await asyncio.gather(*tasks)


async def abuse_load(base: str, rate: float, until: float, kinds: list[tuple[str, Any]],
                     tally: Tally) -> None:
    async with httpx.AsyncClient(base_url=base, timeout=60) as client:
        async def one(i: int) -> None:
            kind, request = kinds[i % len(kinds)]
            try:
                response = await client.request(**request)
            except httpx.TransportError:
                # A body over the limit is refused before it is read, and the connection
                # closed: the client may see that instead of the 413 (status 0 here).
                tally.transport_errors += kind != "oversized"
                tally.count(kind, 0)
                return
            tally.count(kind, response.status_code)
        await paced(rate, until, one)


async def http_ingest(base: str, key: str, rate: float, until: float, tally: Tally) -> None:
    """``POST /v1/events`` batches of 10 events of a population of their own; the ids the API
    answered `accepted` for are the ones that must be in the graph."""
    population = DemoPopulation(100_000, HTTP_SEED).events()
    async with httpx.AsyncClient(base_url=base, timeout=60,
                                 headers={"Authorization": f"Bearer {key}"}) as client:
        async def one(_: int) -> None:
            batch = [next(population) for _ in range(10)]
            try:
                response = await client.post("/v1/events", content=orjson.dumps(
                    {"events": batch}), headers={"content-type": "application/json"})
            except httpx.TransportError:
                tally.transport_errors += 1
                tally.count("http_ingest", 0)
                return
            tally.count("http_ingest", response.status_code)
            if response.status_code == 200:
                for result in response.json()["results"]:
                    if result["status"] == "accepted":
                        tally.http_acked.append(result["event_id"])
        await paced(rate, until, one)


def read_call(client: KeepAliveClient, tally: Tally) -> Callable[[str], Awaitable[None]]:
    prepared: dict[str, bytes] = {}

    async def call(user: str) -> None:
        request = prepared.get(user)
        if request is None:
            request = prepared[user] = client.request_bytes("/graphql", orjson.dumps(
                {"query": CHATBOT_QUERY, "variables": {"id": user}}))
        try:
            response = await client.send(request)
        except Exception:
            tally.count("read", 0)  # no answer within the client's timeout, or a broken one
            raise
        tally.count("read", response.status)
        if response.status != 200 or orjson.loads(response.body).get("errors"):
            raise RuntimeError(response.body[:200].decode(errors="replace"))
    return call


@contextmanager
def process(args: list[str], env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("wb") as out:
        proc = subprocess.Popen(args, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class Sampler:
    """Resident memory of some processes every ``RSS_EVERY_S``, in a thread."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = pids
        self.samples: dict[str, list[tuple[float, float]]] = {name: [] for name in pids}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            now = time.monotonic()
            for name, pid in self.pids.items():
                with suppress(OSError, RuntimeError):
                    self.samples[name].append((now, rss_mb(pid)))
            self._stop.wait(RSS_EVERY_S)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()

    def growth(self, name: str, start: float, end: float, window: float = 60.0) -> float:
        """Mean of the last ``window`` seconds before ``end`` minus that of the first after
        ``start``."""
        inside = [(t, v) for t, v in self.samples[name] if start <= t <= end]
        first = [v for t, v in inside if t < start + window] or [inside[0][1]]
        last = [v for t, v in inside if t > end - window] or [inside[-1][1]]
        return statistics.fmean(last) - statistics.fmean(first)


def server_5xx(base: str) -> int:
    text = httpx.get(f"{base}/metrics", timeout=30).text
    total = 0
    for line in text.splitlines():
        if line.startswith("personas_http_requests_total{") and 'status="5' in line:
            total += int(float(line.rsplit(" ", 1)[1]))
    return total


def drain(graph: Graph, expected: int) -> int:
    """Wait until the consumer has written the stream's ``expected`` events, or stops making
    progress; the number written."""
    prefix = f"demo-{STREAM_SEED}-"
    deadline = time.monotonic() + DRAIN_TIMEOUT_S
    written, last_change = -1, time.monotonic()
    while time.monotonic() < deadline:
        now = graph.rows(STREAM_WRITTEN, prefix=prefix)[0]["n"]
        if now >= expected:
            return int(now)
        if now != written:
            written, last_change = now, time.monotonic()
        elif time.monotonic() - last_change > 60:
            break
        time.sleep(2)
    return int(written)


def missing(graph: Graph, ids: list[str]) -> tuple[int, int]:
    lost = duplicated = 0
    for start in range(0, len(ids), LOOKUP_CHUNK):
        [row] = graph.rows(PRESENT, ids=ids[start:start + LOOKUP_CHUNK])
        lost += row["lost"]
        duplicated += row["duplicated"]
    return lost, duplicated


async def mixed_load(base: str, keys: dict[str, str], users: list[str], args: argparse.Namespace,
                     limit: int, env: dict[str, str], tally: Tally,
                     segment_log: Path) -> tuple[list[float], int]:
    """The soak's HTTP side and its segmentation runs; returns read latencies and errors."""
    seconds = args.minutes * 60
    until = time.monotonic() + seconds
    client = KeepAliveClient("127.0.0.1", int(base.rsplit(":", 1)[1]),
                             {"Authorization": f"Bearer {keys['reader']}"})

    async def segmentations() -> None:
        for fraction in (1 / 3, 2 / 3):
            await asyncio.sleep(max(0.0, until - seconds * (1 - fraction) - time.monotonic()))
            t0 = time.monotonic()
            with segment_log.open("ab") as out:
                proc = await asyncio.create_subprocess_exec(PERSONAS, "segment", env=env,
                                                            stdout=out, stderr=out)
                code = await proc.wait()
            print(f"  segmentation run at {fraction:.0%}: exit {code}, "
                  f"{time.monotonic() - t0:.0f}s", flush=True)
            if code != 0:
                tally.count("segment", 599)  # counted as a failure of the mix

    try:
        _, _, (latencies, errors, achieved) = await asyncio.gather(
            segmentations(),
            asyncio.gather(abuse_load(base, args.abuse_rate, until, abuses(
                limit, keys, users[0]), tally),
                http_ingest(base, keys["writer"], args.http_batches, until, tally)),
            open_loop(args.read_rate, seconds, users, read_call(client, tally)))
    finally:
        await client.close()
    print(f"  reads: {len(latencies)} answered at {achieved:.1f}/s, {errors} failed")
    return latencies, errors


async def baseline(port: int, key: str, users: list[str],
                   args: argparse.Namespace) -> tuple[list[float], int]:
    """The chatbot query alone at the soak's read rate, after a short warm-up."""
    client = KeepAliveClient("127.0.0.1", port, {"Authorization": f"Bearer {key}"})
    try:
        call = read_call(client, Tally())
        await open_loop(args.read_rate, min(10.0, args.baseline_seconds), users, call)
        latencies, errors, _ = await open_loop(args.read_rate, args.baseline_seconds, users,
                                               call)
    finally:
        await client.close()
    return latencies, errors


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=3.0)
    parser.add_argument("--users", type=int, default=500, help="Demo users loaded first.")
    parser.add_argument("--kafka-rate", type=float, default=100.0)
    parser.add_argument("--read-rate", type=int, default=20)
    parser.add_argument("--http-batches", type=float, default=1.0,
                        help="POST /v1/events batches (10 events) a second.")
    parser.add_argument("--abuse-rate", type=float, default=2.0)
    parser.add_argument("--baseline-seconds", type=float, default=30.0)
    parser.add_argument("--logs", type=Path, default=None,
                        help="Where the server's, consumer's and runs' logs go (default: a new "
                        "temporary folder, kept and named at the end).")
    args = parser.parse_args()
    logs: Path = args.logs or Path(tempfile.mkdtemp(prefix="soak-logs-"))
    logs.mkdir(parents=True, exist_ok=True)
    settings: Settings = stream_bench_settings()
    limit = settings.api_max_body_bytes

    with tempfile.TemporaryDirectory() as tmp, bench_kafka(settings), \
            bench_graph(settings) as graph:
        folder = Path(tmp)
        wipe(graph)
        env = {**os.environ, "PERSONAS_NEO4J_URI": settings.bolt_uri,
               "PERSONAS_NEO4J_PASSWORD": settings.neo4j_password.get_secret_value(),
               "PERSONAS_PSEUDONYM_KEY": PSEUDONYM_KEY,
               "PERSONAS_NEO4J_INSTANCE": settings.neo4j_instance,
               "PERSONAS_KAFKA_BOOTSTRAP": settings.kafka_bootstrap_servers,
               "PERSONAS_CONSUMER_METRICS_PORT": "0", "PERSONAS_SEGMENT_EVERY_HOURS": "0",
               "PERSONAS_RUNS_DIR": str(folder / "runs"), "PERSONAS_API_HOST": "127.0.0.1"}
        env.pop("PERSONAS_DEMO", None)
        env.pop("PERSONAS_METRICS_TOKEN", None)  # scraped from this host
        t0 = time.monotonic()
        personas_cli(env, "demo-data", "--users", str(args.users))
        personas_cli(env, "segment")
        keys = {role: personas_cli(env, "apikey", "create", "--role", role,
                                   "--name", f"soak-{role}").strip()
                for role in ("reader", "writer")}
        users = [r["id"] for r in graph.rows("MATCH (u:User) RETURN u.id AS id ORDER BY id")]
        print(f"loaded {args.users} demo users and segmented them in "
              f"{time.monotonic() - t0:.0f}s", flush=True)

        events = int(args.kafka_rate * args.minutes * 60)
        stream_path = folder / "stream.jsonl"
        stream_ids, poisoned = write_stream(stream_path, events)
        topic, dlq, group = topics()
        stream.ensure_topics(settings, [topic, dlq])
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        tally = Tally()
        with process([PERSONAS, "serve", "--port", str(port)], env, logs / "serve.log") \
                as server, process([PERSONAS, "consume", "--topic", topic,
                                    "--dead-letter-topic", dlq, "--group", group], env,
                                   logs / "consume.log") as consumer, \
                Sampler({"api": server.pid, "consumer": consumer.pid}) as sampler:
            wait_until_up(base, server)
            base_lat, base_errors = asyncio.run(baseline(port, keys["reader"], users, args))
            baseline_p99 = percentile(base_lat, 99)
            baseline_rss = rss_mb(server.pid)
            print(f"baseline: the chatbot query alone at {args.read_rate}/s for "
                  f"{args.baseline_seconds:.0f}s: p50 {percentile(base_lat, 50):.1f} ms, "
                  f"p99 {baseline_p99:.1f} ms, {base_errors} errors; API RSS "
                  f"{baseline_rss:.0f} MB", flush=True)

            print(f"soak: {args.minutes:g} min; Kafka {args.kafka_rate:g} events/s "
                  f"({events} events, {poisoned} poison), reads {args.read_rate}/s, "
                  f"POST /v1/events {args.http_batches:g}×10/s, abuse {args.abuse_rate:g}/s",
                  flush=True)
            soak_start = time.monotonic()
            produced: dict[str, Any] = {}
            producer = threading.Thread(target=lambda: produced.update(summary=replay_file(
                settings, stream_path, topic=topic, rate=args.kafka_rate)), name="producer")
            producer.start()
            latencies, read_errors = asyncio.run(mixed_load(
                base, keys, users, args, limit, env, tally, logs / "segment.log"))
            soak_end = time.monotonic()
            producer.join()
            summary = produced["summary"]
            written = drain(graph, len(stream_ids))
            print(f"  Kafka: {summary.sent} sent ({summary.failed} failed), "
                  f"{written} of {len(stream_ids)} written "
                  f"{time.monotonic() - soak_end:.0f}s after the soak ended", flush=True)
            errors_server = server_5xx(base)
            alive = {"api": server.poll() is None, "consumer": consumer.poll() is None}

        api_growth = sampler.growth("api", soak_start, soak_end)
        consumer_growth = sampler.growth("consumer", soak_start, soak_end)
        acked = stream_ids + tally.http_acked
        lost, duplicated = missing(graph, acked)
        letters = graph.rows(DEAD_LETTERS, source=f"{stream.SOURCE}:")[0]["n"]
        wipe(graph)

    p99 = percentile(latencies, 99) if latencies else float("nan")
    for kind, counts in sorted(tally.by_kind.items()):
        print(f"  {kind:>15}: " + ", ".join(f"{s}×{n}" for s, n in sorted(counts.items())))
    print(f"  dead letters from Kafka: {letters} (poison sent: {poisoned}); processes alive "
          f"at the end: {alive}; consumer RSS growth {consumer_growth:+.0f} MB")
    print(f"  5xx: {errors_server} counted by the server, {tally.errors_5xx} seen by clients; "
          f"{tally.transport_errors} transport errors; {read_errors} reads failed")
    print(f"  logs: {logs}")
    print(f"BASELINE p99_ms={baseline_p99:.1f} rss_mb={baseline_rss:.0f} "
          f"read_rate={args.read_rate}")
    print(f"RESULT minutes={args.minutes:g} events={len(acked)} requests={tally.requests} "
          f"errors_5xx={max(errors_server, tally.errors_5xx)} lost={lost} "
          f"duplicated={duplicated} rss_growth_mb={api_growth:.1f} p99_ms={p99:.1f} "
          f"baseline_p99_ms={baseline_p99:.1f}")


if __name__ == "__main__":
    main()
