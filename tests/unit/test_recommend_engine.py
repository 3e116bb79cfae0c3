from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from graph.errors import InvalidInput
from graph.recommend import queries as q
from graph.recommend.engine import (
    CONTEXT_BOOSTS,
    WEIGHTS,
    as_utc,
    check_first,
    recommend_params,
)
from graph.recommend.evaluation import (
    hit_at,
    ndcg_at,
    percentile,
    rank_of,
    split_last_purchase,
)


@pytest.mark.parametrize("first", [1, 10, 100])
def test_first_within_bounds(first: int) -> None:
    assert check_first(first) == first


@pytest.mark.parametrize("first", [0, -5, 101])
def test_first_out_of_bounds(first: int) -> None:
    with pytest.raises(InvalidInput, match="between 1 and 100"):
        check_first(first)


def test_now_travels_as_a_utc_datetime() -> None:
    at = datetime(2026, 11, 28, 12, 0, 0, 250_000, tzinfo=UTC)
    assert as_utc(at) == at and as_utc(at).tzinfo is UTC
    shifted = as_utc(at.astimezone(timezone(timedelta(hours=2))))
    assert shifted == at and shifted.hour == 12 and shifted.tzinfo is UTC
    assert as_utc(at.replace(tzinfo=None)) == at  # naive counts as UTC
    before = datetime.now(UTC)
    assert before <= as_utc(None) <= datetime.now(UTC)


def test_params_cover_every_parameter_the_cypher_uses() -> None:
    params = recommend_params("u_1", 5)
    used = set(re.findall(r"\$(\w+)", q.RECOMMEND))
    assert used == set(params)
    assert set(re.findall(r"\$weights\.(\w+)", q.RECOMMEND)) <= set(WEIGHTS)
    context_keys = set(re.findall(r"\$context\.(\w+)", q.RECOMMEND))
    assert context_keys <= set(CONTEXT_BOOSTS)
    assert {"weather", "cold", "warm", "event_kinds"} <= context_keys
    with pytest.raises(InvalidInput):
        recommend_params("u_1", 0)


def test_context_table_names_lower_case_kinds_and_categories() -> None:
    # Categories are stored normalized (lower case) and event kinds are matched in lower case.
    tables = [*CONTEXT_BOOSTS["weather"].values(), CONTEXT_BOOSTS["cold"],
              CONTEXT_BOOSTS["warm"], *CONTEXT_BOOSTS["event_kinds"].values()]
    assert all(c == c.lower().strip() for cats in tables for c in cats)
    assert all(k == k.lower() for k in CONTEXT_BOOSTS["event_kinds"])


def event(n: int, user: str, kind: str, at: str, item: str | None = None) -> dict[str, object]:
    props = {"item_id": item, "price": "1.00"} if item else {}
    return {"event_id": f"e{n}", "type": kind, "occurred_at": at, "user": {"cookie": user},
            "properties": props}


def test_split_holds_out_the_last_purchase_and_everything_after_it() -> None:
    events = [
        event(1, "a", "page_view", "2026-11-01T10:00:00Z", "x"),
        event(2, "a", "purchase", "2026-11-01T10:05:00Z", "x"),
        event(3, "b", "page_view", "2026-11-01T10:06:00Z", "y"),
        # Out of file order: a's last purchase is e5, though e4 comes later in the file.
        event(4, "a", "page_view", "2026-11-03T09:00:00Z", "z"),
        event(5, "a", "purchase", "2026-11-02T12:00:00+02:00", "y"),
        event(6, "a", "add_to_cart", "2026-11-02T10:00:00Z", "y"),  # same instant as e5
        event(7, "a", "add_to_cart", "2026-11-02T09:59:59Z", "y"),
    ]
    events[0]["profile"] = {"demo_group": "g1"}
    kept, held = split_last_purchase(events)
    assert [e["event_id"] for e in kept] == ["e1", "e2", "e3", "e7"]
    (key, h), = held.items()
    assert key == (("cookie", "a"),)
    assert (h.item_id, h.at, h.group, h.user) == (
        "y", datetime(2026, 11, 2, 10, tzinfo=UTC), "g1", {"cookie": "a"})


def test_users_without_purchases_are_kept_whole() -> None:
    events = [event(1, "b", "page_view", "2026-11-01T10:00:00Z", "x")]
    assert split_last_purchase(events) == (events, {})


def test_ranking_metrics() -> None:
    ranked = ["a", "b", "c"]
    assert [rank_of(i, ranked) for i in ("a", "c", "z")] == [1, 3, None]
    assert hit_at(1, 10) == hit_at(10, 10) == 1.0
    assert hit_at(11, 10) == hit_at(None, 10) == 0.0
    assert ndcg_at(1, 10) == 1.0
    assert ndcg_at(3, 10) == pytest.approx(0.5)
    assert ndcg_at(11, 10) == ndcg_at(None, 10) == 0.0


def test_percentile_interpolates() -> None:
    values = [4.0, 1.0, 3.0, 2.0, 5.0]
    assert percentile(values, 50) == 3.0
    assert percentile(values, 0) == 1.0 and percentile(values, 100) == 5.0
    assert percentile(values, 99) == pytest.approx(4.96)
    assert percentile([7.0], 99) == 7.0
    with pytest.raises(ValueError):
        percentile([], 50)


def test_similar_users_match_a_brute_force_count(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each user's peers: who bought the most of the user's `recent` newest carted or bought
    items, ties by id; computed in blocks of users (a small block, so several are used)."""
    import random

    from graph.recommend import neighbours

    monkeypatch.setattr(neighbours, "BLOCK", 7)
    rng = random.Random(4)
    rows: list[dict[str, Any]] = []
    for u in range(40):
        for i in rng.sample(range(30), rng.randint(1, 12)):
            rows.append({"user_id": f"u{u:02d}", "item_id": f"i{i:02d}",
                         "last_at": rng.randint(0, 5), "bought": rng.random() < 0.6})
    got = {r["user_id"]: r["peers"] for r in neighbours.similar_users(rows, recent=4, peers=5)}

    bought: dict[str, set[str]] = {}
    for r in rows:
        if r["bought"]:
            bought.setdefault(r["user_id"], set()).add(r["item_id"])
    users = sorted({r["user_id"] for r in rows})
    expected = {}
    for u in users:
        mine = sorted((r for r in rows if r["user_id"] == u),
                      key=lambda r: (-r["last_at"], r["item_id"]))[:4]
        recent = {r["item_id"] for r in mine}
        overlaps = [(len(recent & bought.get(v, set())), v) for v in users if v != u]
        best = sorted((o for o in overlaps if o[0] > 0), key=lambda o: (-o[0], o[1]))[:5]
        if best:
            expected[u] = [{"user_id": v, "overlap": n} for n, v in best]
    assert got == expected
    assert any(len(p) == 5 for p in got.values())
