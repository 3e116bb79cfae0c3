"""Benchmark: a population end to end. Events generated for ``--users`` users (about 11 each:
at the default million users, over ten million interactions), loaded with the bulk import
(`personas import --bulk`, as a user runs it), segmented, then the chatbot query served at 100
requests a second.

The events are written as ``--files`` JSONL files (a history arrives as many files; the import
reads them in parallel). Users fall into five planted behaviour groups, each with favourite
categories, over a catalogue of 20,000 items.

Segmentation runs in its own process, the way `personas segment` runs it (the same settings and
``run_segmentation``), with its progress messages timed: ``features_s`` (reading the feature
table from the graph), ``cluster_s`` (clustering and naming), ``similar_s`` (similar users and
items), ``write_s`` (writing the run); its peak RSS is that process's. The API (`personas serve`,
one worker) is then loaded open-loop at 100 requests a second (``bench.api``).

Ends with one line ``RESULT import_events_per_s=… features_s=… cluster_s=… write_s=…
segment_total_s=… peak_rss_mb=… api_p99_ms=…``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from pathlib import Path
from typing import Any

from bench.api import MILESTONE_RPS, WARM_RPS, graphql_call, open_loop, percentile, wait_until_up
from bench.common import bench_settings
from bench.http_load import KeepAliveClient
from graph.db import open_graph, wipe
from graph.settings import Settings
from personas.local import neo4j_server
from personas.local.jvm import process_cpu_seconds

KEY = "bench-scale-key"
PORT = int(os.environ.get("PERSONAS_BENCH_API_PORT", "8766"))
GROUPS = {
    "bargain_hunters": ("fashion", "home", "toys"),
    "tech_fans": ("electronics", "gaming", "software"),
    "bookworms": ("books", "music", "stationery"),
    "athletes": ("sports", "outdoor", "health"),
    "foodies": ("grocery", "kitchen", "wine"),
}
CATEGORIES = sorted({c for cats in GROUPS.values() for c in cats} | {"garden", "beauty", "pets"})
ITEMS = 20_000
CITIES = (("berlin", "Berlin", "DE"), ("london", "London", "GB"), ("paris", "Paris", "FR"),
          ("madrid", "Madrid", "ES"), ("rome", "Rome", "IT"))
AGE_BANDS = ("18-24", "25-34", "35-44", "45-54", "55-64")


def catalogue(rng: random.Random) -> dict[str, list[tuple[str, str, str, float]]]:
    """Items per category: (id, name, brand, price)."""
    per = ITEMS // len(CATEGORIES)
    return {c: [(f"{c[:3]}-{i:05d}", f"{c} item {i}", f"brand-{c[:3]}-{i % 7}",
                 round(rng.uniform(3, 400), 2)) for i in range(per)] for c in CATEGORIES}


def write_events(folder: Path, users: int, files: int, seed: int = 7) -> tuple[list[Path], int]:
    """The population's events as ``files`` JSONL files (users split between them)."""
    rng = random.Random(seed)
    items = catalogue(rng)
    now = datetime(2026, 12, 1, tzinfo=UTC)
    paths = [folder / f"history-{i:02d}.jsonl" for i in range(files)]
    handles = [p.open("w", encoding="utf-8") for p in paths]
    count = 0
    dumps = json.dumps
    try:
        for index in range(users):
            out = handles[index % files]
            group = list(GROUPS)[index % len(GROUPS)]
            favourites = GROUPS[group]
            user = {"cookie": f"ck-{index:07d}"}
            if rng.random() < 0.6:
                user["email"] = f"user{index:07d}@example.com"
            city = CITIES[rng.randrange(len(CITIES))]
            profile = {"age_band": rng.choice(AGE_BANDS), "demo_group": group,
                       "location": {"id": city[0], "city": city[1], "country": city[2]}}
            device = {"id": f"dev-{index:07d}", "kind": rng.choice(("desktop", "mobile", "app"))}
            head = (f'"user":{dumps(user)},"device":{dumps(device)},"source":"web"')
            start = now - timedelta(days=rng.uniform(1, 300))
            n_events = rng.randint(6, 16)
            session = f"s-{index:07d}-0"
            for k in range(n_events):
                t = start + timedelta(minutes=7 * k)
                if k and k % 6 == 0:
                    session = f"s-{index:07d}-{k // 6}"
                cat = rng.choice(favourites) if rng.random() < 0.8 else rng.choice(CATEGORIES)
                item_id, name, brand, price = rng.choice(items[cat])
                roll = rng.random()
                props: dict[str, Any]
                if roll < 0.70:
                    kind, props = "page_view", {"item_id": item_id, "item_name": name,
                                                "category": cat, "brand": brand,
                                                "price": f"{price:.2f}"}
                elif roll < 0.82:
                    kind, props = "add_to_cart", {"item_id": item_id, "category": cat,
                                                  "price": f"{price:.2f}"}
                elif roll < 0.89:
                    kind, props = "purchase", {"item_id": item_id, "category": cat,
                                               "price": f"{price:.2f}",
                                               "order_id": f"o-{index}-{k}"}
                elif roll < 0.97:
                    kind, props = "search", {"query": f"{cat} deals", "category": cat}
                else:
                    kind, props = "feedback", {"item_id": item_id, "category": cat,
                                               "rating": rng.randint(1, 5)}
                extra = f',"profile":{dumps(profile)}' if k == 0 else ""
                out.write(f'{{"event_id":"e-{index:07d}-{k:02d}","type":"{kind}",'
                          f'"occurred_at":"{t.isoformat()}",{head},"session_id":"{session}",'
                          f'"properties":{dumps(props)}{extra}}}\n')
                count += 1
    finally:
        for h in handles:
            h.close()
    return paths, count


def cpu_seconds() -> float:
    """CPU time of the children waited for so far (their own children included)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_child(args: list[str], env: dict[str, str], *, show_progress: bool = False,
              ) -> tuple[str, str, float, float]:
    """Run a command; its stdout, stderr (shown as it comes with ``show_progress``), seconds
    and peak RSS (MB, its own)."""
    start = time.perf_counter()
    proc = subprocess.Popen(args, env=env, stdout=subprocess.PIPE,
                            stderr=None if show_progress else subprocess.PIPE, text=True)
    out, err = proc.communicate()
    seconds = time.perf_counter() - start
    # The children's peak RSS: the one just waited for is the largest so far when it is.
    rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    if proc.returncode not in (0,):
        raise SystemExit(f"{' '.join(args[:3])} exited {proc.returncode}:\n"
                         f"{(err or '')[-3000:]}")
    return out, err or "", seconds, rss


def segment_phases() -> None:
    """In a child process: what `personas segment` runs, with its progress messages timed;
    prints one JSON line."""
    from graph.segments.run import run_segmentation
    from personas.cli.common import migrated_graph

    cfg = Settings()
    server_pid = neo4j_server.status(cfg).pid
    # Per message: wall, this process's CPU and the Neo4j server's (from /proc), so that the
    # phases compare on a shared machine.
    marks: list[tuple[str, float, float, float]] = [
        ("start", time.perf_counter(), time.process_time(), process_cpu_seconds(server_pid))]

    def note(message: str) -> None:
        marks.append((message, time.perf_counter(), time.process_time(),
                      process_cpu_seconds(server_pid)))
        print(f"  {message}", file=sys.stderr, flush=True)

    with migrated_graph(cfg) as graph:
        result = run_segmentation(graph, runs_dir=cfg.resolved_runs_dir,
                                  features=cfg.segment_features, on_progress=note)
    marks.append(("end", time.perf_counter(), time.process_time(), process_cpu_seconds(server_pid)))

    def at(prefix: str, column: int = 1) -> float:
        return next(float(mark[column]) for mark in marks if mark[0].startswith(prefix))

    def cpu(start: str, stop: str) -> list[float]:
        return [round(at(stop, c) - at(start, c), 1) for c in (2, 3)]

    print(json.dumps({
        "features_s": at("clustering") - at("reading features"),
        "cluster_s": at("finding similar") - at("clustering"),
        "similar_s": at("writing run") - at("finding similar"),
        "write_s": at("end") - at("writing run"),
        "segment_total_s": at("end") - at("start"),
        "segments": result.n_segments, "users": result.n_users,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        # Every progress message with the seconds until the next one: where the time goes.
        "phases": [[a[0], round(b[1] - a[1], 1)] for a, b in pairwise(marks)],
        # The same with [own CPU s, Neo4j CPU s] (Neo4j's 0 when it is not a local server).
        "cpu_phases": [[a[0], round(b[2] - a[2], 1), round(b[3] - a[3], 1)]
                       for a, b in pairwise(marks)],
        "cpu": {"features": cpu("reading features", "clustering"),
                "cluster": cpu("clustering", "finding similar"),
                "similar": cpu("finding similar", "writing run"),
                "write": cpu("writing run", "end"), "total": cpu("start", "end")},
    }))


def env_for(settings: Settings) -> dict[str, str]:
    """The CLI on the bench instance as a server it runs itself (the bulk import stops and
    starts it)."""
    env = {k: v for k, v in os.environ.items() if k != "PERSONAS_NEO4J_URI"}
    return {**env, "PERSONAS_NEO4J_INSTANCE": settings.neo4j_instance,
            "PERSONAS_NEO4J_BOLT_PORT": str(settings.neo4j_bolt_port),
            "PERSONAS_NEO4J_HTTP_PORT": str(settings.neo4j_http_port),
            "PERSONAS_NEO4J_PASSWORD": settings.neo4j_password.get_secret_value(),
            "PERSONAS_PSEUDONYM_KEY": KEY, "PERSONAS_SEGMENT_EVERY_HOURS": "0",
            "PERSONAS_API_HOST": "127.0.0.1"}


def serve_and_measure(env: dict[str, str], settings: Settings, seconds: float,
                      warm_seconds: float) -> dict[str, float]:
    exe = str(Path(sys.executable).parent / "personas")
    key = subprocess.run([exe, "apikey", "create", "--role", "reader", "--name", "bench-scale"],
                         env=env, check=True, capture_output=True, text=True).stdout.strip()
    with open_graph(settings) as graph:
        users = [r["id"] for r in graph.rows(
            "MATCH (u:User) WITH u SKIP 1000 LIMIT 5000 RETURN u.id AS id")]
    server = subprocess.Popen([exe, "serve", "--port", str(PORT)], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{PORT}"
    try:
        wait_until_up(base, server, timeout=180)

        async def load() -> dict[str, float]:
            client = KeepAliveClient("127.0.0.1", PORT, {"Authorization": f"Bearer {key}"})
            try:
                call = graphql_call(client)
                await open_loop(WARM_RPS, warm_seconds, users, call)
                lat, errors, achieved = await open_loop(MILESTONE_RPS, seconds, users, call)
            finally:
                await client.close()
            return {"p50": percentile(lat, 50), "p99": percentile(lat, 99), "rps": achieved,
                    "errors": errors}
        return asyncio.run(load())
    finally:
        server.terminate()
        server.wait(timeout=30)


def bulk_import(args: argparse.Namespace, settings: Settings, env: dict[str, str]) -> float:
    """Generate the population's events and bulk-import them; returns events per second."""
    exe = str(Path(sys.executable).parent / "personas")
    with tempfile.TemporaryDirectory(prefix="bench-scale-") as tmp:
        folder = args.folder or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        t = time.perf_counter()
        paths, events = write_events(folder, args.users, args.files)
        print(f"generated {events:,} events for {args.users:,} users in "
              f"{time.perf_counter() - t:.0f} s", flush=True)
        with open_graph(settings) as graph:
            wipe(graph)  # the bulk import replaces an empty database
        cpu = cpu_seconds()
        _, err, import_s, import_rss = run_child(
            [exe, "import", "--bulk", "--workers", str(args.workers), *map(str, paths)], env)
        cpu = cpu_seconds() - cpu
        print(err.strip()[-1500:], flush=True)
    # On a shared machine the wall time says more about the neighbours than about the import:
    # the CPU time it used (the Neo4j server's restart and index builds not included) is
    # printed beside it.
    print(f"bulk import: {import_s:.0f} s, {events / import_s:,.0f} events/s, "
          f"{cpu:.0f} CPU s ({events / cpu:,.0f} events per CPU second), "
          f"peak RSS {import_rss:.0f} MB", flush=True)
    return events / import_s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--users", type=int, default=1_000_000)
    parser.add_argument("--files", type=int, default=8)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=30.0,
                        help="Seconds of API load at 100 requests a second; 0 stops after "
                        "segmentation.")
    parser.add_argument("--warm-seconds", type=float, default=30.0)
    parser.add_argument("--import-only", action="store_true",
                        help="Stop after the bulk import (no segmentation, no API load).")
    parser.add_argument("--folder", type=Path, default=None,
                        help="Keep the generated events here (default: a temporary folder).")
    parser.add_argument("--reuse", action="store_true",
                        help="Segment and serve the population the last run imported (the "
                        "bench instance as it was left); no generation or import.")
    parser.add_argument("--segment-phases", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.segment_phases:
        segment_phases()
        return

    settings = bench_settings()
    env = env_for(settings)
    started = not neo4j_server.status(settings).answering
    if started:
        neo4j_server.start(settings, echo=print)
    import_rate = 0.0
    if not args.reuse:
        import_rate = bulk_import(args, settings, env)
    if args.import_only:
        print(f"RESULT import_events_per_s={import_rate:.0f}")
        if started:
            neo4j_server.stop(settings)
        return
    out, err, _, _ = run_child([sys.executable, "-m", "bench.scale", "--segment-phases"], env,
                               show_progress=True)
    seg: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    print(f"segmentation: {json.dumps(seg)}", flush=True)
    if args.seconds <= 0:  # segmentation only
        print(f"RESULT import_events_per_s={import_rate:.0f} "
              f"features_s={seg['features_s']:.1f} cluster_s={seg['cluster_s']:.1f} "
              f"similar_s={seg['similar_s']:.1f} write_s={seg['write_s']:.1f} "
              f"segment_total_s={seg['segment_total_s']:.1f} "
              f"peak_rss_mb={seg['peak_rss_mb']:.0f} cpu={json.dumps(seg['cpu'])}")
        if started:
            neo4j_server.stop(settings)
        return
    api = serve_and_measure(env, settings, args.seconds, args.warm_seconds)
    print(f"API at {MILESTONE_RPS} req/s: p50 {api['p50']:.1f} ms, p99 {api['p99']:.1f} ms, "
          f"{api['rps']:.0f} req/s achieved, {int(api['errors'])} errors", flush=True)
    print(f"RESULT import_events_per_s={import_rate:.0f} "
          f"features_s={seg['features_s']:.1f} cluster_s={seg['cluster_s']:.1f} "
          f"similar_s={seg['similar_s']:.1f} write_s={seg['write_s']:.1f} "
          f"segment_total_s={seg['segment_total_s']:.1f} "
          f"peak_rss_mb={seg['peak_rss_mb']:.0f} api_p99_ms={api['p99']:.1f}")
    if started:
        neo4j_server.stop(settings)


if __name__ == "__main__":
    main()
