"""The per-user feature table: behaviour, preferences, graph structure and (when the population
has enough text) conversation and topics, read in batches."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from functools import partial
from typing import Any, Protocol

import networkx as nx
import numpy as np
from neo4j import ManagedTransaction
from numpy.typing import NDArray
from scipy import sparse
from scipy.sparse.linalg import LinearOperator, svds

from graph.db import Graph
from graph.features import queries as q
from graph.features.registry import CATEGORY_PREFIX, TOPIC_PREFIX, describe
from graph.features.text import (
    TEXT_BEHAVIOUR,
    TextOptions,
    TextStats,
    Topic,
    conversation_row,
    document,
    project_topics,
    text_features,
    texts_of_users,
)

log = logging.getLogger(__name__)

AGE_YEARS = {"under-18": 15.0, "18-24": 21.0, "25-34": 29.5, "35-44": 39.5, "45-54": 49.5,
             "55-64": 59.5, "65+": 70.0}
# Columns computed per user from the page query, in table order (category shares follow, then
# the structural features, then the text features when used).
ROW_FEATURES = ("purchase_frequency", "avg_order_value", "avg_discount", "recency_days",
                "tenure_days", "session_count", "avg_session_minutes", "views_per_session",
                "cart_abandonment", "peak_month_share", "mobile_share", "app_share", "chat_share",
                "explicit_preference", "category_focus",
                "age_years", "bad_weather_share")
STRUCTURAL = ("item_pagerank", "item_degree", "spectral_1", "spectral_2")
EDGE_PAGE_USERS = 10_000
"""Users whose user-item edges are read in one round trip (``USER_ITEM_EDGE_PAGE``)."""


@dataclass
class FeatureTable:
    """Users as rows, named features as columns, plus what the table was built from."""

    user_ids: list[str]
    names: list[str]
    X: NDArray[np.float64]
    descriptions: dict[str, str]
    planted: list[str | None] = field(default_factory=list)
    snapshot_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    """When the table was read (wall clock)."""
    as_of: datetime = field(default_factory=lambda: datetime.now(UTC))
    """The reference time recency is measured against: a property of the data (the latest
    activity, ``latest_activity``) or of the run (given), never the clock."""
    topics: list[Topic] = field(default_factory=list)
    """The topics learned from the users' text, one per ``topic:<label>`` column, most
    prevalent first (``Topic.to_dict`` for JSON)."""
    text: TextStats | None = None
    """How much text the population has, and whether the text families were used."""

    def column(self, name: str) -> NDArray[np.float64]:
        return self.X[:, self.names.index(name)]

    def select(self, names: list[str]) -> FeatureTable:
        """The same users with only the named columns (and only the topics among them)."""
        idx = [self.names.index(n) for n in names]
        return FeatureTable(self.user_ids, list(names), self.X[:, idx],
                            {n: self.descriptions[n] for n in names}, self.planted,
                            self.snapshot_at, self.as_of,
                            [t for t in self.topics if t.feature in names], self.text)


class FeatureSource(Protocol):
    """Where the two reads that grow with the population come from: every user's feature row
    (``USER_PAGE``'s columns, in pages) and the user-item edges (``USER_ITEM_EDGES``'s)."""

    def user_pages(self, graph: Graph, page_size: int) -> Iterator[list[dict[str, Any]]]: ...

    def user_item_edges(self, graph: Graph) -> Iterable[dict[str, Any]]: ...


class BoltSource:
    """The default source: pages of users over the driver, keyset-paged on the user id."""

    def user_pages(self, graph: Graph, page_size: int) -> Iterator[list[dict[str, Any]]]:
        after = ""
        while page := graph.read(partial(_user_page, after=after, limit=page_size),
                                 query=q.USER_PAGE):
            yield page
            after = page[-1]["user_id"]

    def user_item_edges(self, graph: Graph) -> Iterable[dict[str, Any]]:
        after = ""
        while page := graph.read(partial(_edge_page, after=after, limit=EDGE_PAGE_USERS),
                                 query=q.USER_ITEM_EDGE_PAGE):
            for user_id, edges in page:
                for item_id, weight in edges:
                    yield {"user_id": user_id, "item_id": item_id, "weight": weight}
            after = page[-1][0]


def _user_page(tx: ManagedTransaction, after: str, limit: int) -> list[dict[str, Any]]:
    """A page of users' feature rows as dicts of the records' values as they come: the
    driver's ``data()`` walks every nested list of every row to copy it (a third of the
    read's client CPU), and these rows hold no nodes or relationships it would convert."""
    result = tx.run(q.USER_PAGE, after=after, limit=limit)
    keys = result.keys()
    return [dict(zip(keys, values, strict=True)) for values in result.values()]


def _edge_page(tx: ManagedTransaction, after: str, limit: int) -> list[list[Any]]:
    """A page of users' edges as plain lists (``values``: no dict per record)."""
    return tx.run(q.USER_ITEM_EDGE_PAGE, after=after, limit=limit).values()


def _days(delta_s: float) -> float:
    return max(0.0, delta_s / 86_400)


def latest_activity(graph: Graph) -> datetime:
    """The latest time any segmented user was seen: the data's own "now" (the clock when the
    graph holds no user)."""
    at = graph.rows(q.LATEST_ACTIVITY)[0]["at"]
    return datetime.now(UTC) if at is None else at.to_native().astimezone(UTC)


EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
NS = 1_000_000_000


def epoch_ns(at: datetime) -> int:
    """``at`` (timezone-aware) in nanoseconds since the epoch, exactly."""
    return (at - EPOCH) // timedelta(microseconds=1) * 1000


def behaviour_row(row: dict[str, Any], as_of_ns: int) -> dict[str, float]:
    """The behaviour features of a ``USER_PAGE`` row as of ``as_of_ns`` (``epoch_ns``).
    Seconds are the exact quotient of whole nanoseconds (as ``timedelta.total_seconds``)."""
    first, last = row["first_seen_ns"], row["last_seen_ns"]
    tenure = _days((last - first) / NS)
    sessions = row["sessions"] or 0
    orders = row["orders"] or 0
    carts = row["carts"] or 0
    months = Counter(row["purchase_months"])
    return {
        "purchase_frequency": orders / max(1.0, tenure / 30.0),
        "avg_order_value": (row["spend"] or 0.0) / orders if orders else 0.0,
        "avg_discount": row["avg_discount"] or 0.0,
        "recency_days": _days((as_of_ns - last) / NS),
        "tenure_days": tenure,
        "session_count": float(sessions),
        "avg_session_minutes": (row["avg_session_s"] or 0.0) / 60.0,
        "views_per_session": (row["page_views"] or 0) / sessions if sessions else 0.0,
        "cart_abandonment": max(0.0, 1.0 - (row["purchases"] or 0) / carts) if carts else 0.0,
        "peak_month_share": max(months.values()) / sum(months.values()) if months else 0.0,
        "mobile_share": (row["mobile_sessions"] or 0) / sessions if sessions else 0.0,
        "app_share": (row["app_sessions"] or 0) / sessions if sessions else 0.0,
        "chat_share": (row["chat_sessions"] or 0) / sessions if sessions else 0.0,
        "explicit_preference": nan_if_none(row["explicit_preference"]),
        "category_focus": _focus(row["category_counts"]),
        "age_years": AGE_YEARS.get(row["age_band"] or "", float("nan")),
        "bad_weather_share": ((row["bad_weather_events"] or 0) / row["weather_known_events"]
                              if row["weather_known_events"] else float("nan")),
    }


def _focus(category_counts: list[list[Any]]) -> float:
    counts = [n for _, n in category_counts]
    return max(counts) / sum(counts) if counts and sum(counts) else float("nan")


def nan_if_none(value: float | None) -> float:
    return float("nan") if value is None else float(value)


def structural_features(
    graph: Graph, user_ids: list[str], edges: Iterable[dict[str, Any]] | None = None,
) -> dict[str, NDArray[np.float64]]:
    """Graph-structure features from the weighted user–item interaction graph: PageRank,
    degree, and a two-dimensional spectral embedding of the users. ``edges`` are
    ``USER_ITEM_EDGES`` rows, read from ``graph`` when not given.

    The graph is held as one sparse user x item matrix (a few arrays whatever the population),
    not as a networkx graph: at a million users that held ten million edges as Python objects,
    several gigabytes, and its PageRank spent minutes building its own matrix from them. The
    results are networkx's (``nx.pagerank``'s power iteration, the same bipartite matrix)."""
    row_of = {uid: row for row, uid in enumerate(user_ids)}
    item_of: dict[str, int] = {}
    rows: list[int] = []
    cols: list[int] = []
    weights: list[float] = []
    for r in graph.rows(q.USER_ITEM_EDGES) if edges is None else edges:
        row = row_of.get(r["user_id"])
        if row is None or r["item_id"] is None:
            continue
        rows.append(row)
        cols.append(item_of.setdefault(r["item_id"], len(item_of)))
        weights.append(float(r["weight"] or 0) + 1.0)
    out = {name: np.zeros(len(user_ids)) for name in STRUCTURAL}
    if not rows:
        return out
    # One edge per user and item, the last one read (as networkx's add_edge keeps it).
    coo = sparse.coo_matrix((np.asarray(weights), (np.asarray(rows), np.asarray(cols))),
                            shape=(len(user_ids), len(item_of)))
    key = coo.row.astype(np.int64) * len(item_of) + coo.col
    _, last = np.unique(key[::-1], return_index=True)
    keep = len(key) - 1 - last
    A = sparse.csr_matrix((coo.data[keep], (coo.row[keep], coo.col[keep])), shape=coo.shape)
    has_edges = np.diff(A.indptr) > 0
    out["item_pagerank"] = _spread(bipartite_pagerank(A[has_edges]), has_edges)
    out["item_degree"] = np.diff(A.indptr).astype(np.float64)
    names = sorted(item_of)
    order = np.array([item_of[name] for name in names])
    embedding = _spectral(A[has_edges][:, order], int(has_edges.sum()))
    full = np.full((len(user_ids), 2), np.nan)
    full[has_edges] = embedding
    out["spectral_1"], out["spectral_2"] = full[:, 0], full[:, 1]
    return out


def _spread(values: NDArray[np.float64], mask: NDArray[np.bool_]) -> NDArray[np.float64]:
    out = np.zeros(len(mask))
    out[mask] = values
    return out


def bipartite_pagerank(A: sparse.csr_matrix, alpha: float = 0.85, tol: float = 1.0e-6,
                       max_iter: int = 100) -> NDArray[np.float64]:
    """Each user's (row's) PageRank in the undirected weighted graph of users and items whose
    biadjacency matrix is ``A`` (every row and column with an edge), times the number of
    nodes: ``nx.pagerank``'s power iteration, without the square matrix."""
    du = np.asarray(A.sum(axis=1)).ravel()
    di = np.asarray(A.sum(axis=0)).ravel()
    n = A.shape[0] + A.shape[1]
    At = A.T.tocsr()
    xu = np.repeat(1.0 / n, A.shape[0])
    xi = np.repeat(1.0 / n, A.shape[1])
    for _ in range(max_iter):
        nu = alpha * (A @ (xi / di)) + (1 - alpha) / n
        ni = alpha * (At @ (xu / du)) + (1 - alpha) / n
        err = np.absolute(nu - xu).sum() + np.absolute(ni - xi).sum()
        xu, xi = nu, ni
        if err < n * tol:
            return xu * n
    raise nx.PowerIterationFailedConvergence(max_iter)


def spectral_embedding(g: nx.Graph, user_ids: list[str], dims: int = 2) -> NDArray[np.float64]:
    """Users placed by the leading non-trivial singular vectors of the degree-normalized
    user–item matrix (bipartite spectral co-clustering): users who interact with the same items
    land close together. Users outside the graph get NaN (imputed later)."""
    users = [("u", uid) for uid in user_ids if ("u", uid) in g]
    items = sorted(node for node in g if node[0] == "i")
    result = np.full((len(user_ids), dims), np.nan)
    if len(users) <= dims + 1 or len(items) <= dims + 1:
        return result
    A = nx.bipartite.biadjacency_matrix(g, row_order=users, column_order=items,
                                        weight="weight").astype(np.float64)
    vectors = _spectral(sparse.csr_matrix(A), len(users), dims)
    index = {uid: row for row, (_, uid) in enumerate(users)}
    for i, uid in enumerate(user_ids):
        if uid in index:
            result[i] = vectors[index[uid]]
    return result


def _spectral(A: sparse.csr_matrix, n_users: int, dims: int = 2) -> NDArray[np.float64]:
    """``spectral_embedding`` of the users (rows) of a biadjacency matrix whose every row has
    an edge, its items (columns) in id order."""
    if n_users <= dims + 1 or A.shape[1] <= dims + 1:
        return np.full((n_users, dims), np.nan)
    du = np.asarray(A.sum(axis=1)).ravel()
    di = np.asarray(A.sum(axis=0)).ravel()
    B = sparse.csr_matrix(sparse.diags(1 / np.sqrt(du)) @ A @ sparse.diags(1 / np.sqrt(di)))
    # The leading singular pair (value 1) only restates the degrees; it is projected out
    # so the vectors found carry structure.
    u0 = np.sqrt(du) / np.linalg.norm(np.sqrt(du))
    v0 = np.sqrt(di) / np.linalg.norm(np.sqrt(di))
    deflated = LinearOperator(
        B.shape, dtype=np.float64,
        matvec=lambda x: B @ np.ravel(x) - u0 * (v0 @ np.ravel(x)),
        rmatvec=lambda y: B.T @ np.ravel(y) - v0 * (u0 @ np.ravel(y)),
    )
    # A fixed start vector makes the result the same on the same graph.
    start = np.ones(min(B.shape)) / np.sqrt(min(B.shape))
    U, values, Vt = svds(deflated, k=dims, v0=start)
    order = np.argsort(-values)
    vectors = U[:, order] / np.sqrt(du)[:, None]
    # Singular vectors have no inherent sign; orient each so the most-used item scores
    # positive, which keeps the axes (and the persona centres) comparable between runs.
    top_item = int(np.argmax(di))
    signs = np.sign(Vt[order, top_item])
    signs[signs == 0] = 1.0
    vectors = vectors * signs
    return np.asarray(vectors / (np.abs(vectors).max(axis=0) + 1e-12))


WeatherDays = dict[str, tuple[set[date], set[date]]]
"""Per location: the days with a weather observation, and the days of bad weather."""


def weather_days(graph: Graph, location_ids: list[str] | None = None) -> WeatherDays:
    """What ``bad_weather_share`` needs of the weather, read once: every location's, or those
    of ``location_ids``."""
    return {r["location_id"]: ({d.to_native() for d in r["known"]},
                               {d.to_native() for d in r["bad"]})
            for r in graph.rows(q.WEATHER_DAYS, ids=location_ids)}


def weather_counts(row: dict[str, Any], weather: WeatherDays) -> tuple[int, int]:
    """The user's interactions on days with a weather observation at their location, and on
    days of bad weather there."""
    known: set[date] = set()
    bad: set[date] = set()
    for location in row["locations"] or ():
        k, b = weather.get(location, (set(), set()))
        known |= k
        bad |= b
    if not known:
        return 0, 0
    on_known = on_bad = 0
    for day, n in row["day_counts"] or ():
        native = day.to_native()
        if native in known:
            on_known += n
        if native in bad:
            on_bad += n
    return on_known, on_bad


def feature_rows(
    page: list[dict[str, Any]], categories: list[str], as_of: datetime,
    weather: WeatherDays | None = None,
) -> tuple[list[list[float]], list[str], list[str | None]]:
    """Feature values (ROW_FEATURES, then one share per category) of users read with
    ``USER_PAGE`` or ``USERS_BY_ID``; also their ids and planted demo groups."""
    rows: list[list[float]] = []
    as_of_ns = epoch_ns(as_of)
    for row in page:
        row["weather_known_events"], row["bad_weather_events"] = weather_counts(
            row, weather or {})
        values = behaviour_row(row, as_of_ns)
        counts = dict(row["category_counts"])
        total = sum(counts.values())
        shares = [counts.get(c, 0) / total if total else 0.0 for c in categories]
        rows.append([values[n] for n in ROW_FEATURES] + shares)
    return rows, [r["user_id"] for r in page], [r["demo_group"] for r in page]


def build_feature_table(
    graph: Graph,
    *,
    page_size: int = 2000,
    as_of: datetime | None = None,
    on_progress: Callable[[int], None] | None = None,
    text: TextOptions | None = None,
    source: FeatureSource | None = None,
) -> FeatureTable:
    """Read every user's features: one Cypher round trip per page of users, never per user.

    Recency is measured against ``as_of``, by default the data's latest activity
    (``latest_activity``), so reading the same data twice gives the same table. ``text`` says
    whether to add conversation and topic columns (default: from the settings,
    ``PERSONAS_TEXT_FEATURES`` and ``PERSONAS_TEXT_TOPICS``; see graph/features/text.py).
    ``source`` says where the user rows and user-item edges come from (default: ``BoltSource``;
    the Spark engine reads the same Cypher with the Neo4j Connector for Apache Spark)."""
    source = source or BoltSource()
    snapshot_at = datetime.now(UTC)
    as_of = as_of or latest_activity(graph)
    text = text or TextOptions.from_settings()
    categories = [r["name"] for r in graph.rows(q.CATEGORIES)]
    names = list(ROW_FEATURES) + [f"{CATEGORY_PREFIX}{c}" for c in categories]
    user_ids: list[str] = []
    planted: list[str | None] = []
    # A page's rows become an array at once: a million users' rows as Python lists of floats
    # held most of a gigabyte until the table was built.
    blocks: list[NDArray[np.float64]] = [np.zeros((0, len(names)))]
    weather = weather_days(graph)
    for page in source.user_pages(graph, page_size):
        values, ids, groups = feature_rows(page, categories, as_of, weather)
        blocks.append(np.array(values, dtype=np.float64).reshape(len(values), len(names)))
        user_ids += ids
        planted += groups
        if on_progress:
            on_progress(len(page))
    X = np.vstack(blocks)
    del blocks
    structural = structural_features(graph, user_ids, source.user_item_edges(graph))
    for name in STRUCTURAL:
        X = np.column_stack([X, structural[name]])
        names.append(name)
    texts = text_features(graph, user_ids, text, page_size=page_size)
    X = np.column_stack([X, texts.X])
    names += texts.names
    descriptions = {n: describe(n).description for n in names}
    log.info("feature table: %d users x %d features", X.shape[0], X.shape[1])
    return FeatureTable(user_ids, names, X, descriptions, planted, snapshot_at, as_of,
                        texts.topics, texts.stats)


def features_of_users(
    graph: Graph, user_ids: list[str], names: list[str], as_of: datetime | None = None,
    topics: list[Topic] | None = None,
) -> FeatureTable:
    """The named features of a few users, e.g. newcomers between runs, in one round trip (two
    when conversation or topic features are named).

    Graph-structure features need the whole graph, so they are missing here (the run's
    preparation pipeline imputes them); categories the names do not list are ignored. Topic
    shares are projected on the run's ``topics`` (their top terms, ``project_topics``), and
    missing without them. Recency is measured against ``as_of``: the run's reference time when
    assigning to a run (a user seen since then counts as seen at it), else the data's latest
    activity.
    """
    snapshot_at = datetime.now(UTC)
    as_of = as_of or latest_activity(graph)
    categories = [n.removeprefix(CATEGORY_PREFIX) for n in names
                  if n.startswith(CATEGORY_PREFIX)]
    page = graph.rows(q.USERS_BY_ID, ids=user_ids)
    weather = weather_days(graph, sorted({loc for r in page for loc in r["locations"] or ()}))
    values, ids, groups = feature_rows(page, categories, as_of, weather)
    computed = list(ROW_FEATURES) + [f"{CATEGORY_PREFIX}{c}" for c in categories]
    X = np.full((len(ids), len(names)), np.nan)
    for j, name in enumerate(names):
        if name in computed:
            X[:, j] = [v[computed.index(name)] for v in values]
    known = {t.feature: i for i, t in enumerate(topics or [])}
    wants_text = any(n in TEXT_BEHAVIOUR or n in known for n in names)
    if wants_text and ids:
        texts = texts_of_users(graph, ids)
        per_user = [texts.get(uid, []) for uid in ids]
        rows = [conversation_row(t) for t in per_user]
        shares = (project_topics([document(t) for t in per_user], topics)
                  if topics else np.zeros((len(ids), 0)))
        for j, name in enumerate(names):
            if name in TEXT_BEHAVIOUR:
                X[:, j] = [r[name] for r in rows]
            elif name.startswith(TOPIC_PREFIX) and name in known:
                X[:, j] = shares[:, known[name]]
    return FeatureTable(ids, list(names), X, {n: describe(n).description for n in names},
                        groups, snapshot_at, as_of, [t for t in topics or [] if t.feature in names])
