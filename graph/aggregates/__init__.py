"""A user's aggregates (counters, first/last seen, spend, ``INTERACTED`` per item, inferred
``PREFERS``): their rules (``rules.py``) and Cypher (``queries.py``), owned here for both who
adds to them (the event writer, ``graph/ingest``) and who rebuilds them (identity resolution,
``graph/identity``)."""

from graph.aggregates.rules import (
    COUNTER,
    DECAY_PER_MS,
    INTEREST_SCORE,
    PREFERENCE_HALF_LIFE_DAYS,
    decayed,
    fold_pruned,
    recompute_aggregates,
    recompute_aggregates_tx,
)

__all__ = [
    "COUNTER",
    "DECAY_PER_MS",
    "INTEREST_SCORE",
    "PREFERENCE_HALF_LIFE_DAYS",
    "decayed",
    "fold_pruned",
    "recompute_aggregates",
    "recompute_aggregates_tx",
]
