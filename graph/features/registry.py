"""The feature registry: every per-user feature by name, with its family and meaning.

A segmentation run uses the features named in configuration, by feature or by family
(``PERSONAS_SEGMENT_FEATURES``, ``personas segment --features``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from graph.errors import InvalidInput

CATEGORY_PREFIX = "share:"
TOPIC_PREFIX = "topic:"


@dataclass(frozen=True)
class Feature:
    name: str
    family: str
    description: str
    log_scale: bool = False
    """Heavy-tailed features are compared on a log scale."""


FEATURES: tuple[Feature, ...] = (
    Feature("purchase_frequency", "behaviour", "orders per 30 days of tenure", True),
    Feature("avg_order_value", "behaviour", "spend per order", True),
    Feature("avg_discount", "behaviour", "mean discount on purchases (0-1)"),
    Feature("recency_days", "behaviour", "days since the user was last seen", True),
    Feature("tenure_days", "behaviour", "days between first and last activity", True),
    Feature("session_count", "behaviour", "number of sessions", True),
    Feature("avg_session_minutes", "behaviour", "mean session duration", True),
    Feature("views_per_session", "behaviour", "page views per session", True),
    Feature("cart_abandonment", "behaviour",
            "share of cart additions not followed by a purchase"),
    Feature("peak_month_share", "behaviour",
            "share of purchases in the user's busiest calendar month"),
    Feature("mobile_share", "device", "share of sessions on a mobile device or app"),
    Feature("app_share", "device", "share of sessions in the app channel"),
    Feature("chat_share", "device", "share of sessions in the chat channel"),
    Feature("explicit_preference", "preferences",
            "mean explicit preference weight (-1 dislike .. 1 like); missing when none"),
    Feature("category_focus", "preferences",
            "share of interactions in the user's most frequent category; missing when none"),
    Feature("age_years", "demographics", "middle of the user's age band; missing when unknown"),
    Feature("bad_weather_share", "context",
            "share of activity on days of rain, snow or below 5 °C at the user's location, "
            "among days with a weather observation; missing when none"),
    Feature("item_pagerank", "structure",
            "PageRank of the user in the weighted user–item graph (networkx), x n", True),
    Feature("item_degree", "structure", "distinct items the user interacted with", True),
    Feature("spectral_1", "structure",
            "first axis of the users' spectral embedding in the user–item graph: users of the "
            "same items lie close"),
    Feature("spectral_2", "structure", "second axis of the spectral embedding"),
    # From the user's latest chat messages and searches (graph/features/text.py).
    Feature("messages_per_session", "conversation",
            "chat messages per session that has any; 0 when the user sent none", True),
    Feature("message_length", "conversation",
            "mean characters per chat message; missing when none", True),
    Feature("question_share", "conversation",
            "share of chat messages that ask a question; missing when none"),
    Feature("night_share", "hours",
            "share of messages and searches sent 00-06 h UTC; missing when none"),
    Feature("morning_share", "hours",
            "share of messages and searches sent 06-12 h UTC; missing when none"),
    Feature("afternoon_share", "hours",
            "share of messages and searches sent 12-18 h UTC; missing when none"),
    Feature("evening_share", "hours",
            "share of messages and searches sent 18-24 h UTC; missing when none"),
)
REGISTRY: dict[str, Feature] = {f.name: f for f in FEATURES}
FAMILIES = ("behaviour", "preferences", "device", "demographics", "context", "structure",
            "conversation", "hours", "topics")
# The spectral axes are left out by default: they are re-derived on every run and rotate when
# the population changes, which would break the matching of segments to earlier personas.
# Name them (or the "structure" family) for exploratory runs. The text families only have
# columns when the population has enough text (graph/features/text.py, TextRule), so naming
# them here uses them exactly then. The hour-of-day profile ("hours") is left out by default:
# its hours are UTC, so it tells time zones apart as much as habits, and its four shares
# outvoted the topics on a real chat corpus (docs/personas.md).
DEFAULT_SELECTION = ("behaviour", "share:*", "item_pagerank", "topics", "conversation")


def topic_terms(name: str) -> list[str]:
    """The top terms a topic feature is named by (``topic:refund-order-late``)."""
    return [t for t in name.removeprefix(TOPIC_PREFIX).split("-") if t]


def describe(name: str) -> Feature:
    if name.startswith(CATEGORY_PREFIX):
        category = name.removeprefix(CATEGORY_PREFIX)
        return Feature(name, "preferences", f"share of interactions in category {category}")
    if name.startswith(TOPIC_PREFIX):
        terms = ", ".join(topic_terms(name))
        return Feature(name, "topics", "share of the user's messages and searches on the topic "
                       f"whose top terms are {terms}")
    try:
        return REGISTRY[name]
    except KeyError:
        raise InvalidInput(f"unknown feature {name!r}") from None


def check_selection(selection: Iterable[str]) -> list[str]:
    """The selection's entries, each a family, a feature name, ``share:*``,
    ``share:<category>``, ``topic:*`` or ``topic:<label>``; anything else is InvalidInput
    naming what is allowed. Whether a named category or topic exists is only known from the
    feature table (see ``select``)."""
    entries = [e.strip() for e in selection if e.strip()]
    if not entries:
        raise InvalidInput("the feature selection must name at least one family or feature")
    for entry in entries:
        share = any(entry.startswith(p) and len(entry) > len(p)
                    for p in (CATEGORY_PREFIX, TOPIC_PREFIX))
        if not (entry in FAMILIES or entry in REGISTRY or share):
            raise InvalidInput(
                f"unknown feature or family {entry!r}; families: {', '.join(FAMILIES)}; "
                f"features: {', '.join(REGISTRY)}; or {CATEGORY_PREFIX}<category>, "
                f"{TOPIC_PREFIX}<label>"
            )
    return entries


def select(available: Sequence[str], selection: Iterable[str]) -> list[str]:
    """The available columns the selection names, in table order. Each selection entry is a
    family, a feature name, ``share:*`` for every category share or ``topic:*`` for every
    topic. A family or wildcard with no column in the table selects nothing (the text families
    have columns only when the population has enough text)."""
    entries = check_selection(selection)
    wanted: set[str] = set()
    for entry in entries:
        if entry in FAMILIES:
            wanted |= {n for n in available if describe(n).family == entry}
        elif entry in (CATEGORY_PREFIX + "*", TOPIC_PREFIX + "*"):
            wanted |= {n for n in available if n.startswith(entry[:-1])}
        else:
            if entry not in available:
                raise InvalidInput(f"feature {entry!r} is not in the feature table")
            wanted.add(entry)
    chosen = [n for n in available if n in wanted]
    if len(chosen) < 2:
        raise InvalidInput(f"the selection {entries} leaves fewer than 2 features")
    return chosen


def log_scaled(names: Iterable[str]) -> list[str]:
    return [n for n in names if describe(n).log_scale]
