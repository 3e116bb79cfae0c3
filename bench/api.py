"""Benchmark: the chatbot query through the GraphQL API at fixed request rates, beside the same
data fetched with plain Cypher through the driver.

The bench instance gets a demo population, its context and one segmentation run (through the
`personas` CLI, as a user would), and a reader key. The API runs as its own process
(`personas serve`, one uvicorn worker); this process is the load generator. Load is open-loop:
request i is due at ``start + i / rate`` and its latency is counted from that moment, so a
slow server cannot hide its queueing by slowing the client down (no coordinated omission).

Each rate runs for ``--seconds``; the same users are then fetched at the milestone rate with
the same Cypher the API runs, through the async driver. Then read-your-writes: for
``--seconds``, events are posted (``POST /v1/events``, ``WRITE_RPS`` a second) while the chatbot
query runs at the milestone rate, half of the requests with ``after:`` the token of the latest
write, half without, so that both halves meet the same load. Ends with one line
``RESULT p50_ms=… p99_ms=… rps=… cypher_p99_ms=… max_rps_p99_under_100ms=… after_p99_ms=…
plain_p99_ms=… after_added_p99_ms=… after_pending=… api_cpu_ms=… neo4j_cpu_ms=…
api_full_gc_per_1k=… cypher_neo4j_cpu_ms=… load=… ryw_writes=… ryw_api_cpu_ms=…
ryw_neo4j_cpu_ms=… ryw_load=… replans_served=… replans=… neo4j_pauses=… max_in_flight=…
client_lag_ms=… healthz_max_ms=…``,
where p50/p99 and rps are those of the milestone rate (100 requests/s). Each phase runs under
a ``Probe`` (requests in flight, this process's own lag, the API's /healthz, CPU, the API's
full collections, Neo4j's replans and JVM pauses from its debug.log, second by second): the
milestone and plain Cypher phases print it when their p99 passes ``STALL_MS``, and the keys
after ``replans_served`` (the replans Neo4j logged while the API served) are the milestone
phase's. Each rate, and the
read-your-writes phase, also reports the CPU the API process and Neo4j spent per request (a
rate, also the API's full garbage collections per 1,000 requests, from its /metrics), and the
machine's load average: latency depends on what else shares the cores, the work per
request does not. ``--only-ryw`` runs the read-your-writes phase alone after the warm-up (its
``RESULT`` line then holds the ``after_*``, ``plain_p99_ms`` and ``ryw_*`` keys only), and
``--personas`` serves another checkout's code, to compare two versions on the same data.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import random
import re
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import orjson
from neo4j import AsyncDriver
from rich.console import Console
from rich.table import Table

from bench.common import bench_graph, bench_settings
from bench.http_load import KeepAliveClient
from graph.db import create_async_driver, read_rows, wipe
from graph.profile import queries as q
from graph.profile.prefetch import CHATBOT, profile_params
from graph.settings import Settings
from personas.local import neo4j_server
from personas.local.jvm import process_cpu_seconds

CHATBOT_QUERY = """
query Chatbot($id: ID!, $after: String) {
  user(id: $id, after: $after) {
    id
    pending
    persona { name confidence }
    preferences(first: 5) { category weight source }
    context {
      location { city }
      currentWeather { condition tempC }
      upcomingEvents { name startsAt }
    }
    recommendations(first: 5) { itemId name reasons }
  }
}"""
HAS_RUN = "MATCH (:SegmentationRun) RETURN true LIMIT 1"
MILESTONE_RPS = 100
WRITE_RPS = 20
"""Writes a second during the read-your-writes phase (each read with `after:` waits for the
latest)."""
WARM_RPS = 15
PORT = int(os.environ.get("PERSONAS_BENCH_API_PORT", "8765"))
"""The served API's port; set it apart when two benchmarks run side by side."""
KEY = "bench-api-key"
STALL_MS = 50.0
"""A phase whose p99 passes this (the milestone's target) prints its timeline, second by
second (``Probe``)."""
PROBE_S = 0.2
"""How often the probes of a phase look (requests in flight, this process's lag, the API's
/healthz)."""
console = Console()


def percentile(values: list[float], p: float) -> float:
    """The p-th percentile; NaN for a phase in which no request succeeded (the RESULT line says
    so rather than the bench crashing)."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


cpu_seconds = process_cpu_seconds
"""CPU seconds a process (the API, Neo4j) has used so far: per request, what each spends
whatever else shares the cores, where latency does not."""


JIT_THREAD = re.compile(r"^C[12] CompilerThre")
"""The JVM's JIT compiler threads as /proc names them (``C2 CompilerThread0`` cut to 15)."""


def jit_cpu_seconds(pid: int | None) -> float:
    """CPU time a JVM's JIT compiler threads have used so far (0 for no process): a fresh
    Neo4j spends as much on compiling its code as on the queries for its first thousand
    chatbot queries, and a C2 compilation is a burst of Neo4j CPU that is neither a GC pause
    nor a replan."""
    if pid is None:
        return 0.0
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            if not JIT_THREAD.match((task / "comm").read_text()):
                continue
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:  # the thread ended meanwhile
            continue
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


FULL_GCS = re.compile(rb'^python_gc_collections_total\{generation="2"\} (\S+)$', re.MULTILINE)


def full_collections(base: str) -> float:
    """The served API's full garbage collections so far (its /metrics, which answers clients on
    this host). Each stops its event loop; per 1,000 requests, they say what made the tail at 100
    requests/s whatever else shares the cores (docs/performance.md). NaN when /metrics does
    not answer in time (its first read plans a statement of its own; on a loaded machine that
    passed 10 s twice on 2026-12-07 and ended the run): the phase's count is then unknown."""
    try:
        body = httpx.get(f"{base}/metrics", timeout=10).content
    except httpx.HTTPError:
        return float("nan")
    match = FULL_GCS.search(body)
    return float(match.group(1)) if match else float("nan")


NEO4J_EVENT = re.compile(
    r"^(\S+ \S+)\+0000 .*?(?:Discarded stale query from the query cache after (\d+) seconds\. "
    r"Reason: (\w+)|Detected VM stop-the-world pause: \{pauseTime=(\d+), gcTime=(\d+))",
    re.MULTILINE)


@dataclass(frozen=True)
class Neo4jEvent:
    at: float
    """Epoch seconds."""
    kind: str
    """``replan`` or ``pause``."""
    detail: str


class Neo4jLog:
    """Neo4j's debug.log from the moment this is made: each plan its query cache discarded as
    stale (a replan, with the statistic that moved; Community has no query log or metrics, and
    logs every such discard) and each stop-the-world pause of its JVM (the server's pause
    monitor; a machine that stops every process shows there too, with no GC time)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = path.stat().st_size if path.exists() else 0

    def events(self) -> list[Neo4jEvent]:
        if not self.path.exists():
            return []
        with self.path.open("rb") as log:
            log.seek(self.offset)
            text = log.read().decode(errors="replace")
        events = []
        for m in NEO4J_EVENT.finditer(text):
            at = datetime.strptime(m[1], "%Y-%m-%d %H:%M:%S.%f").replace(tzinfo=UTC).timestamp()
            events.append(Neo4jEvent(at, "replan", f"{m[3]}, plan {m[2]} s old") if m[2] else
                          Neo4jEvent(at, "pause", f"{m[4]} ms, GC {m[5]} ms"))
        return events


def neo4j_log(settings: Settings) -> Neo4jLog:
    return Neo4jLog(settings.local_instance_dir / "logs" / "debug.log")


@dataclass
class Probe:
    """One phase second by second, to attribute a stall to its cause: each request by its due
    second; every ``PROBE_S`` the requests in flight, the lag of this process's event loop (the
    load generator falling behind), the CPU the API and Neo4j have used, and the round trip of
    the API's ``/healthz`` (slow when the API's event loop stops: a collection, a blocking
    call, no CPU; not when its requests wait on Neo4j); each second the API's full collections
    (its /metrics) and the CPU of Neo4j's JIT compiler threads; and Neo4j's replans and pauses
    (``Neo4jLog``)."""

    start: float = 0.0
    wall: float = 0.0
    in_flight: int = 0
    requests: list[tuple[float, float]] = field(default_factory=list)
    """(due, ms from due; NaN for an error), due in seconds from the start."""
    calls: list[tuple[float, float, float, str]] = field(default_factory=list)
    """Each request's due, sent and done times (``time.perf_counter``: the system's monotonic
    clock, the one another process's ``perf_counter`` reads too) and its user."""
    samples: list[tuple[float, int, float, float, float]] = field(default_factory=list)
    """(seconds from the start, requests in flight, this loop's lag in ms, API CPU s, Neo4j CPU
    s so far)."""
    health: list[tuple[float, float]] = field(default_factory=list)
    """(sent, round trip ms; NaN for an error)."""
    collections: list[tuple[float, float]] = field(default_factory=list)
    """(seconds from the start, the API's full collections so far)."""
    jit: list[tuple[float, float]] = field(default_factory=list)
    """(seconds from the start, CPU s Neo4j's JIT compiler threads have used so far)."""
    events: list[Neo4jEvent] = field(default_factory=list)

    def begin(self) -> None:
        self.start, self.wall = time.perf_counter(), time.time()

    def rows(self) -> list[dict[str, float | str]]:
        """One row a second: its requests' p50/p99/max (by due time) and errors, the most in
        flight, this process's longest lag, the slowest /healthz, each process's CPU (per cent
        of a core), the part of Neo4j's that its JIT compiler took, the API's full collections
        in it, and Neo4j's events."""
        rows: list[dict[str, float | str]] = []
        n = max((int(due) for due, _ in self.requests), default=-1) + 1
        for second in range(n):
            def within(at: float, s: int = second) -> bool:
                return s <= at < s + 1
            lat = [ms for due, ms in self.requests if within(due)]
            ok = [ms for ms in lat if not math.isnan(ms)]
            cpu = _between(self.samples, second)
            gcs = _between(self.collections, second)
            jit = _between(self.jit, second)
            rows.append({
                "second": second, "requests": len(lat), "errors": len(lat) - len(ok),
                "p50": percentile(ok, 50) if ok else math.nan,
                "p99": percentile(ok, 99) if ok else math.nan,
                "max": max(ok, default=math.nan),
                "in_flight": max((x[1] for x in self.samples if within(x[0])), default=0),
                "lag": max((x[2] for x in self.samples if within(x[0])), default=math.nan),
                "healthz": max((ms for at, ms in self.health if within(at)), default=math.nan),
                "api_cpu": _rate(cpu, 3) * 100, "neo4j_cpu": _rate(cpu, 4) * 100,
                "neo4j_jit": _rate(jit, 1) * 100,
                "full_gcs": gcs[1][1] - gcs[0][1] if gcs else math.nan,
                "neo4j": "; ".join(f"{e.kind} {e.detail}" for e in self.events
                                   if within(e.at - self.wall)),
            })
        return rows

    def summary(self) -> dict[str, float]:
        """The phase's figures for the RESULT line."""
        return {"replans": sum(e.kind == "replan" for e in self.events),
                "neo4j_pauses": sum(e.kind == "pause" for e in self.events),
                "max_in_flight": max((x[1] for x in self.samples), default=0),
                "client_lag_ms": max((x[2] for x in self.samples), default=math.nan),
                "healthz_max_ms": max((ms for _, ms in self.health if not math.isnan(ms)),
                                      default=math.nan)}


Sample = tuple[float, ...]


def _between(samples: Sequence[Sample], second: int) -> tuple[Sample, Sample] | None:
    """The last samples taken by the start and by the end of ``second`` (None without both)."""
    first = [x for x in samples if x[0] <= second]
    last = [x for x in samples if x[0] <= second + 1]
    return (first[-1], last[-1]) if first and last and last[-1][0] > first[-1][0] else None


def _rate(pair: tuple[Sample, Sample] | None, column: int) -> float:
    """Per second of the column between two samples: CPU seconds a second, a share of a core."""
    if pair is None:
        return math.nan
    return (pair[1][column] - pair[0][column]) / (pair[1][0] - pair[0][0])


def metrics_full_collections(body: bytes) -> float:
    match = FULL_GCS.search(body)
    return float(match.group(1)) if match else math.nan


async def watch(probe: Probe, client: KeepAliveClient, pids: tuple[int | None, int | None],
                stop: asyncio.Event) -> None:
    """Fill ``probe`` until ``stop`` (see ``Probe``)."""
    api_pid, neo4j_pid = pids
    health, metrics = client.get_bytes("/healthz"), client.get_bytes("/metrics")

    async def each_second() -> None:
        while not stop.is_set():
            sent = time.perf_counter()
            probe.jit.append((sent - probe.start, jit_cpu_seconds(neo4j_pid)))
            try:
                gcs = metrics_full_collections((await client.send(metrics)).body)
                probe.collections.append((sent - probe.start, gcs))
            except (TimeoutError, ConnectionError, asyncio.IncompleteReadError, RuntimeError):
                pass
            await asyncio.sleep(max(0.0, 1.0 - (time.perf_counter() - sent)))

    async def lag() -> None:
        def sample(now: float, lag_ms: float) -> None:
            probe.samples.append((now - probe.start, probe.in_flight, lag_ms,
                                  cpu_seconds(api_pid), cpu_seconds(neo4j_pid)))
        sample(time.perf_counter(), 0.0)
        while not stop.is_set():
            before = time.perf_counter()
            await asyncio.sleep(PROBE_S)
            now = time.perf_counter()
            sample(now, (now - before - PROBE_S) * 1000)

    async def healthz() -> None:
        while not stop.is_set():
            sent = time.perf_counter()
            try:
                await client.send(health)
                ms = (time.perf_counter() - sent) * 1000
            except (TimeoutError, ConnectionError, asyncio.IncompleteReadError, RuntimeError):
                ms = math.nan
            probe.health.append((sent - probe.start, ms))
            await asyncio.sleep(max(0.0, PROBE_S - (time.perf_counter() - sent)))

    await asyncio.gather(each_second(), lag(), healthz())


async def probed(rate: int, seconds: float, users: list[str],
                 call: Callable[[str], Awaitable[None]], base: str, key: str,
                 pids: tuple[int | None, int | None], log: Neo4jLog,
                 ) -> tuple[list[float], int, float, Probe]:
    """``open_loop`` with a ``Probe`` watching it."""
    url = urlsplit(base)
    client = KeepAliveClient(url.hostname or "127.0.0.1", url.port or 80,
                             {"Authorization": f"Bearer {key}"})
    probe, stop = Probe(), asyncio.Event()
    probe.begin()
    watcher = asyncio.create_task(watch(probe, client, pids, stop))
    try:
        lat, errors, achieved = await open_loop(rate, seconds, users, call, probe)
    finally:
        stop.set()
        await watcher
        await client.close()
    probe.events = [e for e in log.events()
                    if probe.wall <= e.at <= probe.wall + time.perf_counter() - probe.start]
    return lat, errors, achieved, probe


def write_calls(folder: Path | None, phase: str, probe: Probe) -> None:
    """Each request of a phase, one line each (``Probe.calls``), in ``folder/phase.csv``: to
    line them up with what the API or Neo4j recorded on the same clock."""
    if folder is None:
        return
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / f"{phase}.csv").open("w") as out:
        out.write("due,sent,done,user\n")
        out.writelines(f"{due:.6f},{sent:.6f},{done:.6f},{user}\n"
                       for due, sent, done, user in sorted(probe.calls))


def show_timeline(title: str, probe: Probe) -> None:
    """The probe's rows as plain lines (a table would be cut to the width of a pipe)."""
    console.print(title)
    print("   s  req  err  p50 ms  p99 ms  max ms  in flight  own lag ms  healthz ms  "
          "API CPU %  Neo4j CPU %  of it JIT %  API full GCs  Neo4j")
    for r in probe.rows():
        print(f"{r['second']:>4} {r['requests']:>4} {r['errors']:>4} {r['p50']:>7.1f} "
              f"{r['p99']:>7.1f} {r['max']:>7.1f} {r['in_flight']:>10} {r['lag']:>11.0f} "
              f"{r['healthz']:>11.0f} {r['api_cpu']:>10.0f} {r['neo4j_cpu']:>12.0f} "
              f"{r['neo4j_jit']:>12.0f} {r['full_gcs']:>13.0f}  {r['neo4j']}")


def personas_cli(env: dict[str, str], *args: str) -> str:
    exe = str(Path(sys.executable).parent / "personas")
    done = subprocess.run([exe, *args], env=env, check=True, capture_output=True, text=True)
    return done.stdout


async def open_loop(rate: int, seconds: float, users: list[str],
                    call: Callable[[str], Awaitable[None]], probe: Probe | None = None,
                    ) -> tuple[list[float], int, float]:
    """Latencies (ms, from each request's due time), errors, and the achieved rate; each
    request also in ``probe``, if given."""
    n = int(rate * seconds)
    latencies: list[float] = []
    errors = 0
    rng = random.Random(rate)

    async def one(due: float, user: str) -> None:
        nonlocal errors
        sent = time.perf_counter()
        if probe is not None:
            probe.in_flight += 1
        try:
            await call(user)
        except Exception:  # noqa: BLE001 - counted, and reported beside the latencies
            errors += 1
            if probe is not None:
                probe.requests.append((due - start, math.nan))
            return
        finally:
            if probe is not None:
                probe.in_flight -= 1
        done = time.perf_counter()
        latencies.append((done - due) * 1000)
        if probe is not None:
            probe.requests.append((due - start, latencies[-1]))
            probe.calls.append((due, sent, done, user))

    start = probe.start if probe is not None else time.perf_counter()
    tasks = []
    for i in range(n):
        due = start + i / rate
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(due, rng.choice(users))))
    await asyncio.gather(*tasks)
    elapsed = time.perf_counter() - start
    return latencies, errors, n / elapsed


def graphql_call(client: KeepAliveClient) -> Callable[[str], Awaitable[None]]:
    prepared: dict[str, bytes] = {}

    async def call(user: str) -> None:
        request = prepared.get(user)
        if request is None:
            request = prepared[user] = client.request_bytes("/graphql", orjson.dumps(
                {"query": CHATBOT_QUERY, "variables": {"id": user}}))
        response = await client.send(request)
        body = orjson.loads(response.body)
        if response.status != 200 or body.get("errors") or not body["data"]["user"]:
            raise RuntimeError(str(body)[:200])
    return call


def after_call(client: KeepAliveClient, token: list[str],
               pending: list[int]) -> Callable[[str], Awaitable[None]]:
    """The chatbot query with ``after:`` the latest write's token (``token[0]``); a read
    answered ``pending`` is counted in ``pending[0]``."""
    async def call(user: str) -> None:
        response = await client.send(client.request_bytes("/graphql", orjson.dumps(
            {"query": CHATBOT_QUERY, "variables": {"id": user, "after": token[0]}})))
        body = orjson.loads(response.body)
        if response.status != 200 or body.get("errors") or not body["data"]["user"]:
            raise RuntimeError(str(body)[:200])
        pending[0] += body["data"]["user"]["pending"]
    return call


async def read_your_writes(base: str, key: str, writer_key: str, users: list[str],
                           seconds: float, rate: int = MILESTONE_RPS,
                           pids: tuple[int | None, int | None] = (None, None),
                           ) -> dict[str, float]:
    """p50/p99 of the chatbot query with and without ``after:`` in the same run, while
    events are written (module docstring), and the CPU the API and Neo4j (``pids``) spent
    in the phase per request (reads and writes together)."""
    url = urlsplit(base)
    host, port = url.hostname or "127.0.0.1", url.port or 80
    reads = KeepAliveClient(host, port, {"Authorization": f"Bearer {key}"})
    writes = KeepAliveClient(host, port, {"Authorization": f"Bearer {writer_key}"})
    token: list[str] = []
    pending = [0]
    stop = asyncio.Event()

    async def write(n: int) -> None:
        event = {"event_id": f"bench-ryw-{time.time_ns()}-{n}", "type": "page_view",
                 "source": "web", "occurred_at": datetime.now(UTC).isoformat(),
                 "user": {"email": f"bench-writer-{n % 10}@example.com"},
                 "properties": {"item_id": "bench-item", "category": "books"}}
        response = await writes.send(writes.request_bytes(
            "/v1/events", orjson.dumps({"events": [event]})))
        if response.status != 200:
            raise RuntimeError(response.body[:200].decode(errors="replace"))
        token[:] = [orjson.loads(response.body)["consistency"]["token"]]

    write_errors = [0]

    async def writing() -> int:
        n = 0
        start = time.perf_counter()
        while not stop.is_set():
            try:
                await write(n)
            except (RuntimeError, TimeoutError, ConnectionError, asyncio.IncompleteReadError):
                # Counted like the reads' errors: on a loaded machine a write can time out,
                # and the phase's reads still say what they measured.
                write_errors[0] += 1
            n += 1
            await asyncio.sleep(max(0.0, start + n / WRITE_RPS - time.perf_counter()))
        return n

    api_pid, neo4j_pid = pids
    api_cpu, neo4j_cpu = cpu_seconds(api_pid), cpu_seconds(neo4j_pid)
    try:
        await write(0)
        writer = asyncio.create_task(writing())
        half = rate // 2
        (plain, plain_errors, _), (after, after_errors, _) = await asyncio.gather(
            open_loop(half, seconds, users, graphql_call(reads)),
            open_loop(half, seconds, users, after_call(reads, token, pending)))
        stop.set()
        written = await writer
    finally:
        await reads.close()
        await writes.close()
    requests = len(plain) + len(after) + plain_errors + after_errors + written + 1
    result = {"plain_p50": percentile(plain, 50), "plain_p99": percentile(plain, 99),
              "after_p50": percentile(after, 50), "after_p99": percentile(after, 99),
              "pending": pending[0], "errors": plain_errors + after_errors,
              "writes": written, "write_errors": write_errors[0],
              "api_cpu": (cpu_seconds(api_pid) - api_cpu) * 1000 / requests,
              "neo4j_cpu": (cpu_seconds(neo4j_pid) - neo4j_cpu) * 1000 / requests,
              "load": os.getloadavg()[0]}
    console.print(f"read-your-writes at {rate} req/s and {WRITE_RPS} writes/s: "
                  f"without after p50 {result['plain_p50']:.1f} / p99 "
                  f"{result['plain_p99']:.1f} ms; with after p50 {result['after_p50']:.1f} / "
                  f"p99 {result['after_p99']:.1f} ms; {pending[0]} pending, "
                  f"{result['errors']} errors; {written} writes, {write_errors[0]} failed; "
                  f"CPU per request: API {result['api_cpu']:.1f} ms, Neo4j "
                  f"{result['neo4j_cpu']:.1f} ms; load {result['load']:.1f}")
    return result


def cypher_call(driver: AsyncDriver, settings: Settings) -> Callable[[str], Awaitable[None]]:
    """The chatbot's data with the API's own Cypher, straight through the driver: the one
    query the API runs for it (the user with persona, preferences, situation and
    recommendations)."""
    async def call(user: str) -> None:
        rows = await read_rows(driver, settings.neo4j_database, q.USER_PROFILE,
                               {"id": user, **profile_params(CHATBOT, settings, datetime.now(UTC))})
        if not rows:
            raise RuntimeError(f"no user {user}")
    return call


def wait_until_up(base: str, proc: subprocess.Popen[bytes], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the API exited with code {proc.returncode}")
        try:
            if httpx.get(f"{base}/readyz", timeout=1.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise SystemExit("the API did not become ready")


async def warm_up(base: str, key: str, users: list[str], seconds: float) -> None:
    """The chatbot query at ``WARM_RPS`` for ``seconds``: connections, query plans, and above
    all the JVM's JIT (a fresh Neo4j spends about 3 ms of CPU on `RETURN 1`, warm under 1 ms)."""
    url = urlsplit(base)
    client = KeepAliveClient(url.hostname or "127.0.0.1", url.port or 80,
                             {"Authorization": f"Bearer {key}"})
    try:
        await open_loop(WARM_RPS, seconds, users, graphql_call(client))
    finally:
        await client.close()


async def measure(base: str, key: str, users: list[str], rates: list[int], seconds: float,
                  warm_seconds: float, settings: Settings,
                  pids: tuple[int | None, int | None], timelines: bool = False,
                  requests_out: Path | None = None,
                  ) -> tuple[dict[int, dict[str, float]], dict[str, float]]:
    """Latencies at each rate, and CPU ms per request of the API and of Neo4j (``pids``);
    the timeline (``Probe``) of the milestone rate and of plain Cypher when their p99 is over
    ``STALL_MS``, of every phase with ``timelines``; each request's times in
    ``requests_out`` (``write_calls``), if given."""
    api_pid, neo4j_pid = pids
    results: dict[int, dict[str, float]] = {}
    await warm_up(base, key, users, warm_seconds)
    url = urlsplit(base)
    client = KeepAliveClient(url.hostname or "127.0.0.1", url.port or 80,
                             {"Authorization": f"Bearer {key}"})
    try:
        call = graphql_call(client)
        for rate in rates:
            api_cpu, neo4j_cpu = cpu_seconds(api_pid), cpu_seconds(neo4j_pid)
            neo4j_jit = jit_cpu_seconds(neo4j_pid)
            full_gcs = await asyncio.to_thread(full_collections, base)
            lat, errors, achieved, probe = await probed(rate, seconds, users, call, base, key,
                                                        pids, neo4j_log(settings))
            n = int(rate * seconds)
            full_gcs = await asyncio.to_thread(full_collections, base) - full_gcs
            results[rate] = {"p50": percentile(lat, 50), "p99": percentile(lat, 99),
                             "rps": achieved, "errors": errors,
                             "api_cpu": (cpu_seconds(api_pid) - api_cpu) * 1000 / n,
                             "neo4j_cpu": (cpu_seconds(neo4j_pid) - neo4j_cpu) * 1000 / n,
                             "neo4j_jit": (jit_cpu_seconds(neo4j_pid) - neo4j_jit) * 1000 / n,
                             "full_gcs": full_gcs * 1000 / n,
                             "load": os.getloadavg()[0], **probe.summary()}
            console.print(f"graphql {rate:>4} req/s: p50 {results[rate]['p50']:.1f} ms, "
                          f"p99 {results[rate]['p99']:.1f} ms, {errors} errors; CPU per "
                          f"request: API {results[rate]['api_cpu']:.1f} ms, Neo4j "
                          f"{results[rate]['neo4j_cpu']:.1f} ms (its JIT "
                          f"{results[rate]['neo4j_jit']:.1f}); API full collections per "
                          f"1,000 requests {results[rate]['full_gcs']:.1f}; load "
                          f"{results[rate]['load']:.1f}; Neo4j replans "
                          f"{results[rate]['replans']:.0f}, pauses "
                          f"{results[rate]['neo4j_pauses']:.0f}")
            write_calls(requests_out, f"graphql-{rate}", probe)
            if timelines or (results[rate]["p99"] > STALL_MS and rate == MILESTONE_RPS):
                show_timeline(f"graphql {rate} req/s, second by second", probe)
            if results[rate]["p99"] > 1000 and rate >= MILESTONE_RPS:
                break  # far past saturation: higher rates only queue longer
    finally:
        await client.close()
    driver = create_async_driver(settings)
    try:
        call = cypher_call(driver, settings)
        await open_loop(WARM_RPS, warm_seconds / 3, users, call)
        neo4j_cpu = cpu_seconds(neo4j_pid)
        lat, errors, achieved, probe = await probed(MILESTONE_RPS, seconds, users, call, base,
                                                    key, pids, neo4j_log(settings))
        neo4j_cpu = (cpu_seconds(neo4j_pid) - neo4j_cpu) * 1000 / int(MILESTONE_RPS * seconds)
    finally:
        await driver.close()
    cypher = {"p50": percentile(lat, 50), "p99": percentile(lat, 99), "rps": achieved,
              "errors": errors, "neo4j_cpu": neo4j_cpu}
    console.print(f"cypher  {MILESTONE_RPS:>4} req/s: p50 {cypher['p50']:.1f} ms, "
                  f"p99 {cypher['p99']:.1f} ms, {errors} errors; Neo4j CPU per request "
                  f"{neo4j_cpu:.1f} ms; load {os.getloadavg()[0]:.1f}; Neo4j replans "
                  f"{probe.summary()['replans']:.0f}")
    write_calls(requests_out, f"cypher-{MILESTONE_RPS}", probe)
    if timelines or cypher["p99"] > STALL_MS:
        show_timeline(f"cypher {MILESTONE_RPS} req/s, second by second", probe)
    return results, cypher


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--users", type=int, default=2000)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--warm-seconds", type=float, default=60.0)
    parser.add_argument("--rates", default="10,20,30,50,70,100,150")
    parser.add_argument("--ryw-rps", type=int, default=MILESTONE_RPS,
                        help="Reads a second in the read-your-writes phase (half with after:)")
    parser.add_argument("--reuse-data", action="store_true",
                        help="Keep the demo population and segmentation run a previous run of "
                        "this bench left in the bench instance (load them only if it holds "
                        "none): to compare two versions of the API on the same data")
    parser.add_argument("--only-ryw", action="store_true",
                        help="Warm up, then run the read-your-writes phase alone (no rates, no "
                        "plain Cypher); the RESULT line then holds that phase's figures only")
    parser.add_argument("--timelines", action="store_true",
                        help="Print every phase second by second (requests, in flight, this "
                        "process's lag, the API's /healthz, CPU, collections, Neo4j's replans "
                        "and pauses), not only a slow milestone or plain Cypher phase")
    parser.add_argument("--requests-out", type=Path,
                        help="A folder for each phase's requests, one line each (due, sent and "
                        "done on the system's monotonic clock, the user): to line them up with "
                        "what the API or Neo4j recorded")
    parser.add_argument("--personas", type=Path,
                        default=Path(sys.executable).parent / "personas",
                        help="The `personas` executable that serves the API (another "
                        "checkout's, to compare two versions on the same data)")
    args = parser.parse_args()
    rates = sorted({int(r) for r in args.rates.split(",")} | {MILESTONE_RPS})

    settings = bench_settings()
    with bench_graph(settings) as graph:
        reuse = args.reuse_data and bool(graph.rows(HAS_RUN))
        if not reuse:
            wipe(graph)
        env = {**os.environ, "PERSONAS_NEO4J_URI": settings.bolt_uri,
               "PERSONAS_NEO4J_PASSWORD": settings.neo4j_password.get_secret_value(),
               "PERSONAS_PSEUDONYM_KEY": KEY, "PERSONAS_NEO4J_INSTANCE": "bench",
               "PERSONAS_SEGMENT_EVERY_HOURS": "0"}
        t0 = time.perf_counter()
        if not reuse:
            personas_cli(env, "demo-data", "--users", str(args.users))
            personas_cli(env, "segment")
        key = personas_cli(env, "apikey", "create", "--role", "reader",
                           "--name", "bench-api").strip()
        writer_key = personas_cli(env, "apikey", "create", "--role", "writer",
                                  "--name", "bench-api-writer").strip()
        users = [r["id"] for r in graph.rows("MATCH (u:User) RETURN u.id AS id ORDER BY id")]
        console.print(f"reused the {len(users)} demo users and their run" if reuse else
                      f"loaded {args.users} demo users and segmented them in "
                      f"{time.perf_counter() - t0:.0f}s")
        base = f"http://127.0.0.1:{PORT}"
        server = subprocess.Popen(
            [str(args.personas), "serve", "--port", str(PORT)],
            env={**env, "PERSONAS_API_HOST": "127.0.0.1"},
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        pids = (server.pid, neo4j_server.status(settings).pid)
        served = neo4j_log(settings)
        try:
            wait_until_up(base, server)
            if args.only_ryw:
                asyncio.run(warm_up(base, key, users, args.warm_seconds))
            else:
                results, cypher = asyncio.run(
                    measure(base, key, users, rates, args.seconds, args.warm_seconds,
                            settings, pids, args.timelines, args.requests_out))
            ryw = asyncio.run(read_your_writes(base, key, writer_key, users, args.seconds,
                                               args.ryw_rps, pids))
        finally:
            server.terminate()
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:  # a loaded machine: do not leave it serving
                server.kill()
                server.wait(timeout=30)
        replans = [e for e in served.events() if e.kind == "replan"]
        for event in replans:
            console.print(f"Neo4j replan while serving at "
                          f"{datetime.fromtimestamp(event.at, UTC):%H:%M:%S}: {event.detail}")

    ryw_result = (f"after_p99_ms={ryw['after_p99']:.1f} plain_p99_ms={ryw['plain_p99']:.1f} "
                  f"after_added_p99_ms={ryw['after_p99'] - ryw['plain_p99']:.1f} "
                  f"after_pending={int(ryw['pending'])}")
    ryw_cpu = (f"ryw_writes={int(ryw['writes'])} ryw_api_cpu_ms={ryw['api_cpu']:.1f} "
               f"ryw_neo4j_cpu_ms={ryw['neo4j_cpu']:.1f} ryw_load={ryw['load']:.1f} "
               f"replans_served={len(replans)}")
    if args.only_ryw:
        print(f"RESULT {ryw_result} {ryw_cpu}")
        return

    table = Table(title=f"chatbot query, {args.users} users, {args.seconds:.0f} s per rate")
    for col in ("target req/s", "achieved", "p50 ms", "p99 ms", "errors", "API CPU ms/req",
                "Neo4j CPU ms/req", "API full GCs/1k req", "load"):
        table.add_column(col, justify="right")
    for rate, r in results.items():
        table.add_row(str(rate), f"{r['rps']:.0f}", f"{r['p50']:.1f}", f"{r['p99']:.1f}",
                      str(int(r["errors"])), f"{r['api_cpu']:.1f}", f"{r['neo4j_cpu']:.1f}",
                      f"{r['full_gcs']:.1f}", f"{r['load']:.1f}")
    console.print(table)
    milestone = results[MILESTONE_RPS]
    under = [rate for rate, r in results.items() if r["p99"] < 100 and not r["errors"]]
    console.print(f"milestone: p99 {milestone['p99']:.1f} ms at {MILESTONE_RPS} req/s "
                  f"(target ≤ 50 ms); plain Cypher p99 {cypher['p99']:.1f} ms")
    console.print(f"read-your-writes: p99 with after {ryw['after_p99']:.1f} ms, without "
                  f"{ryw['plain_p99']:.1f} ms (added {ryw['after_p99'] - ryw['plain_p99']:.1f} "
                  f"ms), {int(ryw['pending'])} pending of {args.ryw_rps // 2 * args.seconds:.0f}")
    print(f"RESULT p50_ms={milestone['p50']:.1f} p99_ms={milestone['p99']:.1f} "
          f"rps={milestone['rps']:.0f} cypher_p99_ms={cypher['p99']:.1f} "
          f"max_rps_p99_under_100ms={max(under) if under else 0} "
          f"{ryw_result} api_cpu_ms={milestone['api_cpu']:.1f} "
          f"neo4j_cpu_ms={milestone['neo4j_cpu']:.1f} "
          f"neo4j_jit_cpu_ms={milestone['neo4j_jit']:.1f} "
          f"api_full_gc_per_1k={milestone['full_gcs']:.1f} "
          f"cypher_neo4j_cpu_ms={cypher['neo4j_cpu']:.1f} "
          f"load={milestone['load']:.1f} {ryw_cpu} replans={milestone['replans']:.0f} "
          f"neo4j_pauses={milestone['neo4j_pauses']:.0f} "
          f"max_in_flight={milestone['max_in_flight']:.0f} "
          f"client_lag_ms={milestone['client_lag_ms']:.0f} "
          f"healthz_max_ms={milestone['healthz_max_ms']:.0f}")


if __name__ == "__main__":
    main()
