"""Names and descriptions for segments, from the features where a segment differs most."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

# (feature, direction) -> (persona phrase, weight). Direction +1: the segment is well above
# average. Weights favour the classic retail personas over generic or category-only phrases
# when a segment stands out on several features.
PHRASES: dict[tuple[str, int], tuple[str, float]] = {
    ("purchase_frequency", 1): ("Frequent Shoppers", 1.3),
    ("avg_discount", 1): ("Bargain Hunters", 1.3),
    ("peak_month_share", 1): ("Seasonal Buyers", 1.3),
    ("tenure_days", -1): ("New Visitors", 1.3),
    ("session_count", -1): ("New Visitors", 1.2),
    ("avg_order_value", 1): ("Big-Ticket Buyers", 1.0),
    ("avg_order_value", -1): ("Small-Basket Buyers", 0.8),
    ("recency_days", 1): ("Lapsed Customers", 0.9),
    ("cart_abandonment", 1): ("Cart Abandoners", 1.0),
    ("views_per_session", 1): ("Window Shoppers", 1.0),
    ("session_count", 1): ("Loyal Regulars", 0.9),
    ("item_pagerank", 1): ("Catalogue Explorers", 0.8),
    ("avg_session_minutes", 1): ("Long-Session Browsers", 0.8),
}
CATEGORY_WEIGHT = 0.6
WORDING: dict[str, tuple[str, str]] = {
    "purchase_frequency": ("buy often", "rarely buy"),
    "avg_order_value": ("spend a lot per order", "spend little per order"),
    "avg_discount": ("buy at a discount", "pay full price"),
    "recency_days": ("have not been seen for a while", "were active recently"),
    "tenure_days": ("have been customers for long", "are new"),
    "session_count": ("visit often", "visit rarely"),
    "avg_session_minutes": ("stay long per visit", "make short visits"),
    "views_per_session": ("browse many pages per visit", "view few pages per visit"),
    "cart_abandonment": ("often leave carts behind", "complete their carts"),
    "peak_month_share": ("buy in one season", "buy all year"),
    "item_pagerank": ("are central in the item graph", "touch few popular items"),
}


@dataclass(frozen=True)
class SegmentName:
    name: str
    description: str
    why: list[tuple[str, float]]


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def _phrase(feature: str, z: float) -> tuple[str, float] | None:
    """The persona phrase a feature's deviation suggests, with its strength."""
    sign = 1 if z > 0 else -1
    if feature.startswith("share:"):
        if sign < 0:
            return None
        return f"{feature.removeprefix('share:').title()} Fans", abs(z) * CATEGORY_WEIGHT
    entry = PHRASES.get((feature, sign))
    return (entry[0], abs(z) * entry[1]) if entry else None


def _wording(feature: str, z: float) -> str:
    if feature.startswith("share:"):
        category = feature.removeprefix("share:")
        return f"{'favour' if z > 0 else 'seldom choose'} {category}"
    high, low = WORDING.get(feature, (f"have high {feature}", f"have low {feature}"))
    return high if z > 0 else low


def name_segments(
    centers_z: NDArray[np.float64], feature_names: Sequence[str], top: int = 3
) -> list[SegmentName]:
    """One distinct name per segment, from its centre in z-scores (features x segments).

    Each segment takes its strongest phrase (deviation x phrase weight); when two segments would
    share a name, the one that differs less on it takes its next phrase.
    """
    k = centers_z.shape[0]
    ranked: list[list[tuple[str, float]]] = []
    for c in range(k):
        order = np.argsort(-np.abs(centers_z[c]))
        ranked.append([(feature_names[i], float(centers_z[c, i])) for i in order])
    candidates = [
        sorted((p for f, z in r if (p := _phrase(f, z))), key=lambda c: -c[1]) for r in ranked
    ]
    chosen: dict[int, str] = {}
    taken: dict[str, tuple[int, float]] = {}
    pointer = [0] * k
    pending = list(range(k))
    while pending:
        c = pending.pop(0)
        while pointer[c] < len(candidates[c]):
            phrase, strength = candidates[c][pointer[c]]
            pointer[c] += 1
            holder = taken.get(phrase)
            if holder is None:
                taken[phrase], chosen[c] = (c, strength), phrase
                break
            if strength > holder[1]:
                taken[phrase], chosen[c] = (c, strength), phrase
                del chosen[holder[0]]
                pending.append(holder[0])
                break
        else:
            chosen[c] = f"Segment {c + 1}"
    names = []
    for c in range(k):
        why = [(f, round(z, 3)) for f, z in ranked[c][:top]]
        description = "Users who " + ", ".join(_wording(f, z) for f, z in why) + "."
        names.append(SegmentName(chosen[c], description, why))
    return names
