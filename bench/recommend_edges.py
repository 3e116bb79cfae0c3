"""Benchmark: writing a run's similar users and item neighbours, and reading them back.

A synthetic shop (fixed seed): ``--users`` users, each buying a few of ``--items`` items drawn
from a skewed distribution, plus one item every user bought (a super-node), each purchase
written as the event writer writes its aggregate (with its owner's id and mark, migration
0016). The similar users (``SIMILAR_TO``) and item neighbours (``SIMILAR_ITEM``) are computed
as a run computes them and written twice, as two runs, so that the second run's writes find a
first run's edges in the ``run_id`` relationship indexes (migration 0012), as they would on a
live server. Then one user's recommendation read is timed. Ends with one ``RESULT`` line.

Runs against the instance the environment names (``PERSONAS_NEO4J_*``), whose database it wipes.
"""

from __future__ import annotations

import argparse
import random
import time

from graph.db import Graph, create_driver, wipe
from graph.migrate import migrate
from graph.recommend.engine import recommend
from graph.recommend.items import find_item_neighbours, write_item_neighbours
from graph.recommend.neighbours import find_similar_users, write_similar_users
from graph.settings import Settings

SHOP = """
UNWIND $items AS id CREATE (:Item {id: id, name: id})
WITH count(*) AS created
UNWIND $users AS u
CREATE (user:User {id: u.id})
WITH user, u
UNWIND u.items AS item_id
MATCH (it:Item {id: item_id})
CREATE (user)-[:INTERACTED {user_id: u.id, purchases: 1, bought_or_liked: true,
                            last_at: datetime() - duration({days: u.age})}]->(it)
"""


def load(graph: Graph, users: int, items: int, seed: int) -> None:
    """Wipe the database and create the synthetic shop in batches of 1,000 users."""
    rng = random.Random(seed)
    wipe(graph)
    item_ids = [f"i{n:05d}" for n in range(items)]
    weights = [1.0 / (n + 1) for n in range(1, items)]  # skewed: a few items are bought a lot
    rows = [{"id": f"u{n:06d}", "age": rng.randint(0, 365),
             "items": sorted({item_ids[0], *rng.choices(item_ids[1:], weights, k=8)})}
            for n in range(users)]
    for start in range(0, users, 1000):
        graph.execute(SHOP, items=item_ids if start == 0 else [],
                      users=rows[start:start + 1000])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--users", type=int, default=3000)
    parser.add_argument("--items", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    settings = Settings()
    driver = create_driver(settings)
    try:
        graph = Graph(driver, settings.neo4j_database)
        migrate(graph, settings.migrations_dir)
        load(graph, args.users, args.items, args.seed)
        peers = find_similar_users(graph)
        neighbours = find_item_neighbours(graph)
        timings: dict[str, float] = {}
        for run_id in ("run-1", "run-2"):
            t0 = time.perf_counter()
            similar = write_similar_users(graph, run_id, peers)
            timings[f"similar_{run_id}"] = time.perf_counter() - t0
            t0 = time.perf_counter()
            items = write_item_neighbours(graph, run_id, neighbours)
            timings[f"items_{run_id}"] = time.perf_counter() - t0
            print(f"{run_id}: {similar} SIMILAR_TO in {timings[f'similar_{run_id}']:.1f}s, "
                  f"{items} SIMILAR_ITEM in {timings[f'items_{run_id}']:.1f}s")
            t0 = time.perf_counter()
            again = write_similar_users(graph, run_id, peers[:100])
            print(f"  a retried chunk of 100 users: {again} edges in "
                  f"{time.perf_counter() - t0:.2f}s")
        graph.execute("CREATE (:SegmentationRun {id: 'run-2', created_at: datetime()})")
        user = peers[0]["user_id"]
        recommend(graph, user)  # plan cached
        latencies = []
        for row in peers[:200]:
            t0 = time.perf_counter()
            recommend(graph, row["user_id"])
            latencies.append((time.perf_counter() - t0) * 1000)
        latencies.sort()
        p50, p99 = latencies[len(latencies) // 2], latencies[int(len(latencies) * 0.99)]
        print(f"recommend over {len(latencies)} users: p50 {p50:.1f} ms, p99 {p99:.1f} ms")
        print(f"RESULT users={args.users} similar_to={similar} similar_item={items} "
              f"write_similar_s={timings['similar_run-2']:.1f} "
              f"write_items_s={timings['items_run-2']:.1f} recommend_p50_ms={p50:.1f} "
              f"recommend_p99_ms={p99:.1f}")
    finally:
        driver.close()


if __name__ == "__main__":
    main()
