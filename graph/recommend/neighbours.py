"""Similar users, computed with each segmentation run and read by the recommender.

A user's similar users are the users who bought (or liked) any of the user's
``limits.RECENT_ITEMS`` most recently carted, bought or liked items, the ``limits.PEERS`` with
the most such items in common (their
overlap), ties by id. An item rated 2 or lower is neither the user's nor a peer's evidence, and
an item more than ``limits.MAX_ITEM_USERS`` users interacted with is no evidence at all (see
``limits``: an item everyone bought makes everyone similar, which says nothing and costs a users
x users matrix). At request time that traversal expanded every interaction of those items, a
cost that grew with their popularity; the run writes them as
``(:User)-[:SIMILAR_TO {overlap, run_id}]->(:User)`` instead. What the similar users bought is
still read at request time; who they are is as of the run. A user without them (new since the
run; merged, unmerged or without personalization consent) gets them found at request time, by
the same rule (graph/recommend/queries.py).

The run calls ``find_similar_users`` (reads only), ``write_similar_users`` (its own bounded
transactions, while the run is unpublished: readers read only the latest published run's edges)
and, once the run is published, ``drop_similar_users_except``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, LiteralString

import numpy as np
from numpy.typing import NDArray
from scipy import sparse

from graph.db import Graph, Rows, Statement, Work
from graph.recommend import queries as q
from graph.recommend.interactions import Interactions, Ints, newest_first, read_interactions
from graph.recommend.limits import MAX_ITEM_USERS, PEERS, RECENT_ITEMS

BLOCK = 1000  # users whose overlaps are computed at once (bounds the memory) ...
OVERLAP_BUDGET = 2_000_000  # ... and the overlaps a block may hold at most, whatever the users
EDGES_PER_TRANSACTION = 10_000  # SIMILAR_TO written per write transaction

Progress = Callable[[int, int], None]


def blocks(cost: np.ndarray[Any, Any], most: int, budget: float) -> Iterator[tuple[int, int]]:
    """Consecutive ``[start, stop)`` ranges of at most ``most`` rows whose summed ``cost`` stays
    within ``budget`` (a single row over budget is a block of its own)."""
    start, total = 0, 0
    for row, c in enumerate(cost.tolist()):
        if row > start and (row - start >= most or total + c > budget):
            yield start, row
            start, total = row, 0
        total += c
    if start < len(cost):
        yield start, len(cost)


def similar_users(rows: Iterable[dict[str, Any]], recent: int = RECENT_ITEMS, peers: int = PEERS,
                  max_item_users: int = MAX_ITEM_USERS) -> Iterator[dict[str, Any]]:
    """``rows``: a user's carted, bought or liked items, ``{user_id, item_id, last_at,
    bought}`` (``bought``: bought or liked, which makes the user a peer of those who had it
    recently) and optionally ``personal`` and ``item_users`` (``last_at`` comparable: a
    datetime or a number). ``similar_users_of`` of those rows."""
    carted = Interactions.from_rows(
        {**r, "carts": 1, "purchases": 1 if r["bought"] else 0, "rating": None,
         "item_users": r.get("item_users", 0)} for r in rows)
    return similar_users_of(carted, recent=recent, peers=peers, max_item_users=max_item_users)


def similar_users_of(ix: Interactions, recent: int = RECENT_ITEMS, peers: int = PEERS,
                     max_item_users: int = MAX_ITEM_USERS,
                     only: Iterable[int] | None = None) -> Iterator[dict[str, Any]]:
    """Yields ``{user_id, peers: [{user_id, overlap}]}``, best first, in user id order, for
    every user of ``ix`` (or of its user indices ``only``) with at least one similar user,
    except those without personalization consent: they are left out, though their purchases
    still make others similar, as at request time. Only the carted, bought or liked rows count
    (``Interactions.carted``); items whose ``item_users`` exceed ``max_item_users`` are skipped
    before the user's ``recent`` newest are taken, as the request-time traversal does.

    Memory stays bounded whatever the data: a block of users holds at most ``BLOCK`` users and,
    unless one user alone exceeds it, ``OVERLAP_BUDGET`` overlaps (each user's at most
    ``recent`` x ``max_item_users``).
    """
    evidence = np.flatnonzero(ix.carted() & (ix.item_users[ix.item] <= max_item_users))
    bought = evidence[ix.bought()[evidence]]
    if not len(bought):
        return
    shape = (ix.n_users, ix.n_items)
    mine = ix.personal[ix.user[evidence]]
    if only is not None:
        wanted = np.zeros(ix.n_users, dtype=bool)
        wanted[np.fromiter(only, dtype=np.int64)] = True
        mine &= wanted[ix.user[evidence]]
    ordered, place = newest_first(ix, evidence[mine], missing_first=True)
    recent_rows = ordered[place < recent]
    R = sparse.csr_matrix((np.ones(len(recent_rows)), (ix.user[recent_rows],
                                                       ix.item[recent_rows])), shape=shape)
    B = sparse.csr_matrix((np.ones(len(bought)), (ix.user[bought], ix.item[bought])),
                          shape=shape)
    users = np.flatnonzero(np.diff(R.indptr) > 0)
    R = R[users]
    rank = ix.user_rank
    ids = ix.user_ids
    BT = B.T.tocsc()
    # An upper bound of each user's overlaps: the buyers of each of the user's recent items.
    cost = np.asarray(R @ np.asarray(B.sum(axis=0)).ravel()).ravel()
    for start, stop in blocks(cost, BLOCK, OVERLAP_BUDGET):
        overlap = (R[start:stop] @ BT).tocsr()
        row = users[start + np.repeat(np.arange(overlap.shape[0]), np.diff(overlap.indptr))]
        user, other, count = top_per_row(row, overlap.indices, overlap.data, rank, peers)
        other_ids, counts = [ids[o] for o in other.tolist()], count.astype(np.int64).tolist()
        for lo, hi in row_groups(user):
            yield {"user_id": ids[user[lo]], "peers": [
                {"user_id": other_ids[j], "overlap": counts[j]} for j in range(lo, hi)]}


def top_per_row(row: NDArray[Any], col: NDArray[Any], score: NDArray[Any], rank: Ints,
                top: int) -> tuple[NDArray[Any], NDArray[Any], NDArray[Any]]:
    """Of the entries ``(row, col, score)`` (a row and a column index the same thing: a user
    and a user, an item and an item), each row's ``top`` of positive ``score`` with ``col``
    not the row itself, best first, ties by ``rank[col]``; ordered by row. One sort of all
    the entries instead of one per row."""
    keep = (col != row) & (score > 0)
    row, col, score = row[keep], col[keep], score[keep]
    order = np.lexsort((rank[col], -score, row))
    row, col, score = row[order], col[order], score[order]
    starts = run_starts(row)
    place = np.arange(len(row)) - np.repeat(starts, np.diff(np.r_[starts, len(row)]))
    first = place < top
    return row[first], col[first], score[first]


def run_starts(row: NDArray[Any]) -> NDArray[Any]:
    """Where each run of equal values in ``row`` (sorted) starts."""
    return np.flatnonzero(np.r_[True, row[1:] != row[:-1]]) if len(row) else np.zeros(0, int)


def row_groups(row: NDArray[Any]) -> Iterator[tuple[int, int]]:
    """``[start, stop)`` of each run of equal values in ``row`` (sorted)."""
    starts = run_starts(row).tolist()
    yield from zip(starts, [*starts[1:], len(row)], strict=True)


def find_similar_users(graph: Graph) -> list[dict[str, Any]]:
    """Every user's similar users in the graph as it is now (reads only, so that no lock is
    held while they are computed)."""
    return list(similar_users_of(read_interactions(graph)))


def edge_chunks(found: Sequence[dict[str, Any]], key: str,
                per_transaction: int = EDGES_PER_TRANSACTION) -> Iterator[Rows]:
    """``found`` rows (each with a list under ``key``) in consecutive chunks of about
    ``per_transaction`` list entries: one write transaction's worth of relationships."""
    chunk: list[dict[str, Any]] = []
    edges = 0
    for row in found:
        chunk.append(row)
        edges += len(row[key])
        if edges >= per_transaction:
            yield Rows(chunk)
            chunk, edges = [], 0
    if chunk:
        yield Rows(chunk)


def write_similar_users(graph: Graph, run_id: str, found: Sequence[dict[str, Any]],
                        on_progress: Progress | None = None) -> int:
    """``SIMILAR_TO {overlap, run_id}`` for ``found`` (``find_similar_users``), one write
    transaction per chunk of about ``EDGES_PER_TRANSACTION`` edges (bounded transaction
    memory whatever the population). Other runs' edges stay (``drop_similar_users_except``
    removes them once this run is published); a chunk written again (a retried transaction,
    the same rows again) replaces the run's edges of its users, never doubles them.
    ``on_progress(users done, users)`` after each chunk. Returns the edges written."""
    return write_run_edges(graph, found, "peers", RunEdges(
        q.RUN_EDGES_OF_FIRST_USER, q.DELETE_RUN_SIMILAR_USERS_OF, q.CREATE_SIMILAR_USERS),
        run_id=run_id, on_progress=on_progress)


@dataclass(frozen=True)
class RunEdges:
    """The statements that write a run's edges of a chunk of rows (``write_run_edges``)."""

    first: LiteralString
    """The run's edges of the chunk's first row (returns ``edges``)."""
    delete: LiteralString
    """Delete the run's edges of the chunk's rows."""
    create: LiteralString
    """Create the chunk's edges (returns ``edges``)."""


def write_run_edges(graph: Graph, found: Sequence[dict[str, Any]], key: str,
                    statements: RunEdges, run_id: str,
                    on_progress: Progress | None = None) -> int:
    """Write a run's edges of ``found`` (rows with a list under ``key``) a chunk at a time
    (``edge_chunks``: a row's edges all in one chunk), each chunk in one transaction that
    creates them, after deleting the run's edges of the chunk's rows when its first row has
    some (a retry: the chunk's earlier transaction committed). Returns the edges written."""
    def work(rows: Rows) -> Work[int]:
        params = {"run_id": run_id, "rows": rows}
        done = yield Statement(statements.first, params)
        if done and done[0]["edges"]:
            yield Statement(statements.delete, params)
        created = yield Statement(statements.create, params)
        return int(created[0]["edges"]) if created else 0

    written = done = 0
    for rows in edge_chunks(found, key):
        written += graph.write_work(partial(work, rows))
        done += len(rows)
        if on_progress is not None:
            on_progress(done, len(found))
    return written


def drop_similar_users_except(graph: Graph, run_id: str) -> int:
    """Delete every ``SIMILAR_TO`` not of ``run_id`` (earlier runs', tombstones'), found by
    the run id index (the run's own are not read), in transactions of 10,000; returns how
    many. Running it again deletes nothing more."""
    return deleted_in_batches(graph, (q.DROP_SIMILAR_USERS_BELOW, q.DROP_SIMILAR_USERS_ABOVE),
                              run_id=run_id)


def deleted_in_batches(graph: Graph, queries: Sequence[Any], **params: Any) -> int:
    """Run ``CALL { DELETE } IN TRANSACTIONS`` statements (auto-commit, as they must be) one
    after the other and return the relationships they deleted."""
    return sum(int(graph.auto_commit(query, **params).counters.relationships_deleted)
               for query in queries)
