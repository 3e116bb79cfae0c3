"""Neo4j's work for the chatbot query, and a check that a rewrite of the recommendation
statement recommends exactly what an earlier revision did.

Runs against the bench instance's data as ``bench.api`` leaves it (a demo population and its
segmentation run: run ``bench.api`` once). Two measures, neither of which
depends on how busy the machine is:

- ``hits``: the mean db hits (PROFILE) of ``USER_PROFILE`` with every chatbot part, over
  ``--users`` users spread evenly over the population; ``--by-operator`` adds where they go.
- ``cpu``: with ``--against`` and ``--cpu-rounds``, Neo4j's CPU per chatbot query (``/proc``),
  this checkout's statement and the revision's alternated round by round on the same users.
  Unlike db hits it depends on the machine's load, hence the alternation.
- ``same``: ``RECOMMEND`` of this checkout and of the git revision ``--against`` (its
  ``graph/recommend/queries.py``) for ``--users`` users, at ``--first`` 5 and 50: the same item
  ids in the same order, scores within 1e-9, the same names, categories and reasons.

Ends with one line ``RESULT db_hits=… db_hits_p50=… db_hits_p99=… db_hits_max=… users=…`` (the
mean, then the spread over the users), and ``against_db_hits=… same=… differing=…`` with
``--against``,
``neo4j_cpu_ms=… against_neo4j_cpu_ms=…`` with ``--cpu-rounds``).
"""

from __future__ import annotations

import argparse
import collections
import math
import os
import subprocess
from datetime import UTC, datetime
from typing import Any, LiteralString, cast

from rich.console import Console

from bench.api import cpu_seconds
from bench.common import bench_graph, bench_settings
from graph.db import Graph
from graph.profile import queries as profile_queries
from graph.profile.prefetch import CHATBOT, profile_params
from graph.recommend import queries as q
from graph.recommend.engine import recommend_params
from personas.local import neo4j_server

NOW = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)
"""One fixed ``$now`` for every statement compared (the demo's weather and events are near it)."""
console = Console(soft_wrap=True)


def spread(graph: Graph, n: int) -> list[str]:
    """``n`` user ids spread evenly over the population in id order."""
    users = [r["id"] for r in graph.rows("MATCH (u:User) RETURN u.id AS id ORDER BY id")]
    step = max(1, len(users) // n)
    return users[::step][:n]


def profiled(graph: Graph, query: LiteralString, params: dict[str, Any],
             by_operator: collections.Counter[tuple[str, str]]) -> int:
    """One PROFILE run's db hits; each operator's are added to ``by_operator``."""
    def walk(plan: dict[str, Any]) -> int:
        hits = int(plan.get("dbHits", 0))
        details = str(plan.get("args", {}).get("Details", "")).replace("\n", " ")
        by_operator[(plan["operatorType"].split("@")[0], details[:110])] += hits
        return hits + sum(walk(child) for child in plan.get("children", []))

    with graph.driver.session(database=graph.database) as session:
        result = session.run("PROFILE " + query, params)
        result.consume()
        profile = result.consume().profile
    assert profile is not None
    return walk(profile)


def chatbot_params(*, against: bool = False) -> dict[str, Any]:
    """The chatbot statement's parameters at ``NOW``. A revision's statement (``against``) gets
    ``$now`` as a datetime, as revisions before ``engine.now_param`` took it; this checkout's
    ``datetime($now)`` reads either, so both run on the same instant."""
    params = profile_params(CHATBOT, bench_settings(), NOW)
    return {**params, "now": NOW} if against else params


def db_hits(graph: Graph, users: list[str], statement: LiteralString, *,
            show: int, against: bool = False) -> list[int]:
    """Each user's db hits of ``statement``; the ``show`` dearest operators printed."""
    params = chatbot_params(against=against)
    graph.rows(statement, id=users[0], **params)  # planned once
    by_operator: collections.Counter[tuple[str, str]] = collections.Counter()
    hits = [profiled(graph, statement, {"id": uid, **params}, by_operator) for uid in users]
    for (operator, details), total in by_operator.most_common(show):
        console.print(f"{total / len(users):8.0f}  {operator:24s} {details}", markup=False,
                      highlight=False)
    return hits


def spread_of(hits: list[int]) -> str:
    """The per-user spread of db hits: a Neo4j CPU burst that a few dear users would explain
    shows as a p99 or max far above the median."""
    ordered = sorted(hits)

    def at(percent: int) -> int:
        return ordered[min(len(ordered) - 1, percent * len(ordered) // 100)]
    return f"db_hits_p50={at(50)} db_hits_p99={at(99)} db_hits_max={ordered[-1]}"


def statements_at(revision: str) -> tuple[LiteralString, LiteralString]:
    """``RECOMMEND`` as the git revision ``revision`` wrote it, and this checkout's
    ``USER_PROFILE`` with that revision's recommendation part."""
    source = subprocess.run(["git", "show", f"{revision}:graph/recommend/queries.py"],
                            check=True, capture_output=True, text=True).stdout
    namespace: dict[str, Any] = {}
    exec(compile(source, f"{revision}:graph/recommend/queries.py", "exec"), namespace)
    assert q.RECOMMEND_FOR_USER in profile_queries.USER_PROFILE
    return (cast(LiteralString, namespace["RECOMMEND"]),
            cast(LiteralString, profile_queries.USER_PROFILE.replace(
                q.RECOMMEND_FOR_USER, namespace["RECOMMEND_FOR_USER"])))


def neo4j_cpu(graph: Graph, users: list[str], statements: dict[str, LiteralString],
              rounds: int) -> dict[str, float]:
    """Neo4j's CPU ms per query of each statement, alternated round by round."""
    pid = neo4j_server.status(bench_settings()).pid
    params = {name: chatbot_params(against=name == "against") for name in statements}
    spent = dict.fromkeys(statements, 0.0)
    with graph.driver.session(database=graph.database) as session:
        for name, statement in statements.items():  # planned, and the pages they read cached
            for uid in users:
                session.run(statement, id=uid, **params[name]).consume()
        for _ in range(rounds):
            for name, statement in statements.items():
                before = cpu_seconds(pid)
                for uid in users:
                    session.run(statement, id=uid, **params[name]).consume()
                spent[name] += cpu_seconds(pid) - before
    return {name: 1000 * total / rounds / len(users) for name, total in spent.items()}


def differences(old: list[dict[str, Any]], new: list[dict[str, Any]]) -> list[str]:
    if [r["item_id"] for r in old] != [r["item_id"] for r in new]:
        return [f"items {[r['item_id'] for r in old]} != {[r['item_id'] for r in new]}"]
    found = []
    for a, b in zip(old, new, strict=True):
        if not math.isclose(a["score"], b["score"], rel_tol=0, abs_tol=1e-9):
            found.append(f"{a['item_id']}: score {a['score']!r} != {b['score']!r}")
        for key in ("name", "category", "reasons"):
            if a[key] != b[key]:
                found.append(f"{a['item_id']}: {key} {a[key]!r} != {b[key]!r}")
    return found


def same(graph: Graph, users: list[str], revision: str) -> tuple[int, int]:
    """(users compared, users whose lists differ), at 5 and at 50 recommendations."""
    old = statements_at(revision)[0]
    differing = 0
    for uid in users:
        found = []
        for first in (5, 50):
            params = recommend_params(uid, first, NOW)
            found += differences(graph.rows(old, **{**params, "now": NOW}),
                                 graph.rows(q.RECOMMEND, **params))
        if found:
            differing += 1
            console.print(f"{uid}: {found[:3]}", markup=False)
    return len(users), differing


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--users", type=int, default=100)
    parser.add_argument("--against", help="a git revision whose RECOMMEND must agree")
    parser.add_argument("--cpu-rounds", type=int, default=0,
                        help="rounds of Neo4j CPU per query, alternated with --against's")
    parser.add_argument("--by-operator", type=int, default=0, metavar="N",
                        help="print the N operators with the most db hits")
    args = parser.parse_args()
    with bench_graph(bench_settings()) as graph:
        users = spread(graph, args.users)
        hits = db_hits(graph, users, profile_queries.USER_PROFILE, show=args.by_operator)
        line = (f"RESULT db_hits={sum(hits) / len(hits):.0f} {spread_of(hits)} "
                f"users={len(users)}")
        if args.against:  # the same graph state: a bench.api run adds events
            against = db_hits(graph, users, statements_at(args.against)[1], show=0,
                              against=True)
            line += f" against_db_hits={sum(against) / len(against):.0f}"
        if args.against:
            compared, differing = same(graph, users, args.against)
            line += f" same={compared - differing} differing={differing}"
        if args.against and args.cpu_rounds:
            cpu = neo4j_cpu(graph, users, {"this": profile_queries.USER_PROFILE,
                                           "against": statements_at(args.against)[1]},
                            args.cpu_rounds)
            line += (f" neo4j_cpu_ms={cpu['this']:.2f} against_neo4j_cpu_ms={cpu['against']:.2f}"
                     f" load={os.getloadavg()[0]:.1f}")
    print(line)


if __name__ == "__main__":
    main()
