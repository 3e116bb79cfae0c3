"""The per-user feature table: behaviour, preferences and graph structure, read in batches."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import networkx as nx
import numpy as np
from numpy.typing import NDArray

from graph.db import Graph
from graph.features import queries as q
from graph.features.registry import CATEGORY_PREFIX, describe

log = logging.getLogger(__name__)

AGE_YEARS = {"18-24": 21.0, "25-34": 29.5, "35-44": 39.5, "45-54": 49.5, "55-64": 59.5,
             "65+": 70.0}
# Columns computed per user from the page query, in table order (category shares follow, then
# the structural features).
ROW_FEATURES = ("purchase_frequency", "avg_order_value", "avg_discount", "recency_days",
                "tenure_days", "session_count", "avg_session_minutes", "views_per_session",
                "cart_abandonment", "peak_month_share", "mobile_share", "explicit_preference",
                "age_years", "bad_weather_share")
STRUCTURAL = ("item_pagerank",)


@dataclass
class FeatureTable:
    """Users as rows, named features as columns, plus what the table was built from."""

    user_ids: list[str]
    names: list[str]
    X: NDArray[np.float64]
    descriptions: dict[str, str]
    planted: list[str | None] = field(default_factory=list)
    snapshot_at: datetime = field(default_factory=lambda: datetime.now(UTC))

    def column(self, name: str) -> NDArray[np.float64]:
        return self.X[:, self.names.index(name)]

    def select(self, names: list[str]) -> FeatureTable:
        """The same users with only the named columns."""
        idx = [self.names.index(n) for n in names]
        return FeatureTable(self.user_ids, list(names), self.X[:, idx],
                            {n: self.descriptions[n] for n in names}, self.planted,
                            self.snapshot_at)


def _days(delta_s: float) -> float:
    return max(0.0, delta_s / 86_400)


def behaviour_row(row: dict[str, Any], now: datetime) -> dict[str, float]:
    first = row["first_seen"].to_native()
    last = row["last_seen"].to_native()
    tenure = _days((last - first).total_seconds())
    sessions = row["sessions"] or 0
    orders = row["orders"] or 0
    carts = row["carts"] or 0
    months = Counter(row["purchase_months"])
    return {
        "purchase_frequency": orders / max(1.0, tenure / 30.0),
        "avg_order_value": (row["spend"] or 0.0) / orders if orders else 0.0,
        "avg_discount": row["avg_discount"] or 0.0,
        "recency_days": _days((now - last).total_seconds()),
        "tenure_days": tenure,
        "session_count": float(sessions),
        "avg_session_minutes": (row["avg_session_s"] or 0.0) / 60.0,
        "views_per_session": (row["page_views"] or 0) / sessions if sessions else 0.0,
        "cart_abandonment": max(0.0, 1.0 - (row["purchases"] or 0) / carts) if carts else 0.0,
        "peak_month_share": max(months.values()) / sum(months.values()) if months else 0.0,
        "mobile_share": (row["mobile_sessions"] or 0) / sessions if sessions else 0.0,
        "explicit_preference": nan_if_none(row["explicit_preference"]),
        "age_years": AGE_YEARS.get(row["age_band"] or "", float("nan")),
        "bad_weather_share": ((row["bad_weather_events"] or 0) / row["weather_known_events"]
                              if row["weather_known_events"] else float("nan")),
    }


def nan_if_none(value: float | None) -> float:
    return float("nan") if value is None else float(value)


def structural_features(graph: Graph, user_ids: list[str]) -> dict[str, NDArray[np.float64]]:
    """PageRank on the user–item interaction graph, computed with networkx."""
    g = nx.Graph()
    for r in graph.rows(q.USER_ITEM_EDGES):
        g.add_edge(("u", r["user_id"]), ("i", r["item_id"]), weight=float(r["weight"] or 0) + 1.0)
    if g.number_of_edges() == 0:
        return {"item_pagerank": np.zeros(len(user_ids))}
    rank = nx.pagerank(g, weight="weight")
    n = g.number_of_nodes()
    return {"item_pagerank": np.array([rank.get(("u", uid), 0.0) * n for uid in user_ids])}


def build_feature_table(
    graph: Graph,
    *,
    page_size: int = 2000,
    now: datetime | None = None,
    on_progress: Callable[[int], None] | None = None,
) -> FeatureTable:
    """Read every user's features: one Cypher round trip per page of users, never per user."""
    now = now or datetime.now(UTC)
    categories = [r["name"] for r in graph.rows(q.CATEGORIES)]
    names = list(ROW_FEATURES) + [f"{CATEGORY_PREFIX}{c}" for c in categories]
    user_ids: list[str] = []
    planted: list[str | None] = []
    rows: list[list[float]] = []
    after = ""
    while True:
        page = graph.rows(q.USER_PAGE, after=after, limit=page_size)
        if not page:
            break
        for row in page:
            values = behaviour_row(row, now)
            counts = {c: n for c, n in row["category_counts"] if c is not None}
            total = sum(counts.values())
            shares = [counts.get(c, 0) / total if total else 0.0 for c in categories]
            rows.append([values[n] for n in ROW_FEATURES] + shares)
            user_ids.append(row["user_id"])
            planted.append(row["demo_group"])
        after = page[-1]["user_id"]
        if on_progress:
            on_progress(len(page))
    X = np.array(rows, dtype=np.float64).reshape(len(rows), len(names))
    structural = structural_features(graph, user_ids)
    for name in STRUCTURAL:
        X = np.column_stack([X, structural[name]])
        names.append(name)
    descriptions = {n: describe(n).description for n in names}
    log.info("feature table: %d users x %d features", X.shape[0], X.shape[1])
    return FeatureTable(user_ids, names, X, descriptions, planted, now)
