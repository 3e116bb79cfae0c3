"""Whether a run's personas differ by what people talk about, measured.

For each persona, its signature topic is the topic whose share is most above the rest of the
users (effect size: difference of means over the pooled standard deviation). The persona is
topic-distinct when that effect is at least ``MIN_EFFECT`` (a medium effect in Cohen's terms)
and a one-sided Mann-Whitney test of its members' shares against the rest's is significant at
``ALPHA``, Bonferroni-corrected for every persona and topic tested. The personas differ by what
people talk about when at least two of them are topic-distinct with different signature topics:
then knowing a user's persona says something about their subject that an activity band cannot.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray
from scipy.stats import kruskal, mannwhitneyu

from graph.features.registry import TOPIC_PREFIX
from graph.features.table import FeatureTable
from graph.segments.naming import SegmentName

MIN_EFFECT = 0.5
ALPHA = 0.001


@dataclass(frozen=True)
class PersonaTopic:
    """One persona's signature topic, how far its share stands out, and whether a topic is
    among the features that name and describe it."""

    signature: str
    share: float
    """Mean share of the signature topic among the persona's members."""
    effect: float
    p_value: float
    distinct: bool
    topic_in_why: bool


@dataclass(frozen=True)
class TopicSeparation:
    personas: list[PersonaTopic]
    kruskal_p: float
    """Smallest Kruskal-Wallis p-value over topics: do the personas' shares differ at all."""

    @property
    def distinct(self) -> int:
        return sum(p.distinct for p in self.personas)

    @property
    def signatures(self) -> int:
        """Different signature topics among the topic-distinct personas."""
        return len({p.signature for p in self.personas if p.distinct})

    @property
    def in_why(self) -> int:
        return sum(p.topic_in_why for p in self.personas)

    @property
    def differ_by_topic(self) -> bool:
        return self.signatures >= 2

    def to_dict(self) -> dict[str, Any]:
        return {"differ_by_topic": self.differ_by_topic, "distinct": self.distinct,
                "signatures": self.signatures, "topic_in_why": self.in_why,
                "kruskal_p": self.kruskal_p,
                "personas": [{"signature": p.signature, "share": round(p.share, 4),
                              "effect": round(p.effect, 3), "p_value": p.p_value,
                              "distinct": p.distinct, "topic_in_why": p.topic_in_why}
                             for p in self.personas]}


def topic_separation(table: FeatureTable, labels: NDArray[np.int64],
                     names: Sequence[SegmentName]) -> TopicSeparation | None:
    """The measure above for ``labels`` (leaf segments 0..k-1) over the table's topic shares;
    None when the table has no topics. Users without shares are left out."""
    columns = [i for i, n in enumerate(table.names) if n.startswith(TOPIC_PREFIX)]
    if not columns:
        return None
    shares = table.X[:, columns]
    known = np.isfinite(shares).all(axis=1)
    shares, labels = shares[known], np.asarray(labels)[known]
    topics = [table.names[i].removeprefix(TOPIC_PREFIX) for i in columns]
    k = len(names)
    tests = max(1, k * len(columns))
    groups = [shares[labels == c] for c in range(k) if (labels == c).any()]
    kruskal_p = 1.0
    if len(groups) > 1:
        for j in range(len(columns)):
            if np.ptp(shares[:, j]) > 0:
                kruskal_p = min(kruskal_p, float(kruskal(*(g[:, j] for g in groups)).pvalue))
    out = []
    for c in range(k):
        inside, rest = shares[labels == c], shares[labels != c]
        why_topic = any(f.startswith(TOPIC_PREFIX) and z > 0 for f, z in names[c].why)
        if len(inside) < 2 or len(rest) < 2:
            out.append(PersonaTopic(topics[0], float("nan"), 0.0, 1.0, False, why_topic))
            continue
        pooled = np.sqrt((inside.var(axis=0, ddof=1) + rest.var(axis=0, ddof=1)) / 2)
        diff = inside.mean(axis=0) - rest.mean(axis=0)
        effect = np.where(pooled > 0, diff / np.where(pooled > 0, pooled, 1.0), 0.0)
        j = int(np.argmax(effect))
        p = float(mannwhitneyu(inside[:, j], rest[:, j], alternative="greater").pvalue)
        distinct = bool(effect[j] >= MIN_EFFECT and p * tests < ALPHA)
        out.append(PersonaTopic(topics[j], float(inside[:, j].mean()), float(effect[j]), p,
                                distinct, why_topic))
    return TopicSeparation(out, kruskal_p)
