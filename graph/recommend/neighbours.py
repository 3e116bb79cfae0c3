"""Similar users, computed with each segmentation run and read by the recommender.

A user's similar users are the users who bought any of the user's ``RECENT`` most recently carted
or bought items, the ``PEERS`` with the most such items in common (their overlap), ties by id.
At request time that traversal expanded every interaction of those items, a cost that grew with
their popularity (about 60% of a recommendation's work on the demo graph); the run writes them
as ``(:User)-[:SIMILAR_TO {overlap, run_id}]->(:User)`` instead. What the similar users bought is
still read at request time; who they are is as of the run. A user without them (new since the
run; merged, unmerged or without personalization consent) gets them found at request time
(graph/recommend/queries.py).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np
from scipy import sparse

from graph.db import Graph, chunks
from graph.recommend import queries as q

RECENT = 10
PEERS = 50
BLOCK = 1000  # users whose overlaps are computed at once (bounds the memory)
SIMILAR_BATCH = 500  # users (each with up to PEERS edges) per write transaction


def _newest_first(seen: list[tuple[Any, str, int]]) -> None:
    """In place: the newest first, ties by item id, as the request-time traversal orders them
    (``ORDER BY last_at DESC, id``, where a missing time sorts first)."""
    seen.sort(key=lambda t: t[1])
    seen.sort(key=lambda t: (t[0] is None, t[0] if t[0] is not None else 0), reverse=True)


def similar_users(rows: Iterable[dict[str, Any]], recent: int = RECENT,
                  peers: int = PEERS) -> Iterator[dict[str, Any]]:
    """``rows``: a user's carted or bought items, ``{user_id, item_id, last_at, bought}`` and
    optionally ``personal`` (``last_at`` comparable: a datetime or a number). Yields ``{user_id,
    peers: [{user_id, overlap}]}``, best first, for every user with at least one similar user,
    except those whose ``personal`` is false (no personalization consent): they are left out,
    though their purchases still make others similar, as at request time."""
    users: dict[str, int] = {}
    items: dict[str, int] = {}
    touched: dict[int, list[tuple[Any, str, int]]] = defaultdict(list)
    impersonal: set[int] = set()
    bought_rows, bought_cols = [], []
    for r in rows:
        u = users.setdefault(r["user_id"], len(users))
        i = items.setdefault(r["item_id"], len(items))
        touched[u].append((r["last_at"], r["item_id"], i))
        if not r.get("personal", True):
            impersonal.add(u)
        if r["bought"]:
            bought_rows.append(u)
            bought_cols.append(i)
    if not bought_rows:
        return
    shape = (len(users), len(items))
    recent_rows, recent_cols = [], []
    for u, seen in touched.items():
        if u in impersonal:
            continue
        _newest_first(seen)
        for _, _, i in seen[:recent]:
            recent_rows.append(u)
            recent_cols.append(i)
    R = sparse.csr_matrix((np.ones(len(recent_rows)), (recent_rows, recent_cols)), shape=shape)
    B = sparse.csr_matrix((np.ones(len(bought_rows)), (bought_rows, bought_cols)), shape=shape)
    ids = list(users)
    rank = np.argsort(np.argsort(np.array(ids)))  # each user's place in id order
    BT = B.T.tocsc()
    for start in range(0, len(ids), BLOCK):
        overlap = (R[start:start + BLOCK] @ BT).tocsr()
        for row in range(overlap.shape[0]):
            u = start + row
            lo, hi = overlap.indptr[row], overlap.indptr[row + 1]
            others, counts = overlap.indices[lo:hi], overlap.data[lo:hi]
            keep = others != u
            others, counts = others[keep], counts[keep]
            if not len(others):
                continue
            best = np.lexsort((rank[others], -counts))[:peers]
            yield {"user_id": ids[u], "peers": [{"user_id": ids[others[j]],
                                                 "overlap": int(counts[j])} for j in best]}


def find_similar_users(graph: Graph) -> list[dict[str, Any]]:
    """Every user's similar users in the graph as it is now (read before the run's write
    transaction, so that no lock is held while they are computed)."""
    return list(similar_users(graph.rows(q.CARTED_OR_BOUGHT)))


def write_similar_users(graph: Graph, run_id: str, found: list[dict[str, Any]]) -> None:
    """``SIMILAR_TO {run_id}`` for ``found`` (``find_similar_users``), a transaction per chunk.
    Other runs' edges stay until ``drop_similar_users_except``: the recommender reads only the
    latest published run's."""
    for rows in chunks(found, SIMILAR_BATCH):
        graph.execute(q.WRITE_SIMILAR_USERS, run_id=run_id, rows=rows)


def drop_similar_users_except(graph: Graph, run_id: str) -> None:
    """Every other run's ``SIMILAR_TO``, deleted in bounded transactions."""
    graph.auto_commit(q.DROP_SIMILAR_USERS_EXCEPT, run_id=run_id)
