"""Similar users and item neighbours as the run computes them, super-nodes included."""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from scipy import sparse

from graph.errors import InvalidInput
from graph.recommend import items, neighbours
from graph.recommend.baselines import EASE
from graph.recommend.items import interaction_weight, item_neighbours
from graph.recommend.limits import MAX_ITEM_USERS
from graph.recommend.neighbours import blocks, edge_chunks, similar_users


def star(users: int, extra: int = 0, seed: int = 0) -> list[dict[str, Any]]:
    """``users`` users who all bought the one item "star" (the newest thing each did), and each
    up to ``extra`` of 20 ordinary items earlier."""
    rng = random.Random(seed)
    rows = []
    for u in range(users):
        uid = f"u{u:05d}"
        rows.append({"user_id": uid, "item_id": "star", "last_at": 100, "bought": True,
                     "item_users": users})
        for i in rng.sample(range(20), rng.randint(0, extra)):
            rows.append({"user_id": uid, "item_id": f"i{i:02d}", "last_at": rng.randint(0, 50),
                         "bought": True, "item_users": 0})  # filled in below
    counts: dict[str, int] = {}
    for r in rows:
        counts[r["item_id"]] = counts.get(r["item_id"], 0) + 1
    for r in rows:
        r["item_users"] = counts[r["item_id"]]
    return rows


def test_an_item_every_user_bought_makes_nobody_similar() -> None:
    rows = star(MAX_ITEM_USERS + 1)
    assert list(similar_users(rows)) == []
    # Below the cap, the same item makes everyone everyone's peer (50 at most each).
    small = star(60)
    found = list(similar_users(small))
    assert len(found) == 60 and all(len(f["peers"]) == 50 for f in found)
    assert all(p["overlap"] == 1 for f in found for p in f["peers"])


def test_beyond_the_cap_peers_come_from_the_other_items_only() -> None:
    """The super-node is skipped before the user's newest items are taken (it is every user's
    newest here), so peers are who shares the ordinary items: the same as if it did not exist."""
    rows = star(MAX_ITEM_USERS + 200, extra=3, seed=2)
    got = {f["user_id"]: f["peers"] for f in similar_users(rows)}
    without = {f["user_id"]: f["peers"]
               for f in similar_users([r for r in rows if r["item_id"] != "star"])}
    assert got == without
    assert len(got) == len({r["user_id"] for r in rows if r["item_id"] != "star"}) > 800
    assert all(p["overlap"] <= 3 for peers in got.values() for p in peers)


def test_blocks_bound_the_overlaps_held_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    rows = star(300, extra=4, seed=3)
    whole = list(similar_users(rows, max_item_users=10_000))
    seen: list[tuple[int, int]] = []
    real = neighbours.blocks

    def spy(cost: np.ndarray[Any, Any], most: int, budget: float) -> Iterator[tuple[int, int]]:
        for start, stop in real(cost, most, budget):
            assert stop - start == 1 or cost[start:stop].sum() <= budget
            seen.append((start, stop))
            yield start, stop

    monkeypatch.setattr(neighbours, "OVERLAP_BUDGET", 2000)
    monkeypatch.setattr(neighbours, "blocks", spy)
    assert list(similar_users(rows, max_item_users=10_000)) == whole
    assert len(seen) > 10  # 300 users x (1 + 4 items) x up to 300 buyers: many blocks


def test_blocks_split_by_count_and_budget() -> None:
    cost = np.array([5, 5, 5, 20, 1, 1, 1, 1])
    assert list(blocks(cost, most=3, budget=10)) == [(0, 2), (2, 3), (3, 4), (4, 7), (7, 8)]
    assert list(blocks(np.array([]), most=3, budget=10)) == []


def test_edge_chunks_hold_about_the_asked_edges() -> None:
    found = [{"id": n, "peers": list(range(n % 7))} for n in range(100)]
    chunks = list(edge_chunks(found, "peers", per_transaction=20))
    assert [row for chunk in chunks for row in chunk] == found
    assert all(sum(len(r["peers"]) for r in chunk) < 20 + 7 for chunk in chunks)
    assert all(sum(len(r["peers"]) for r in chunk) >= 20 for chunk in chunks[:-1])


@pytest.mark.parametrize(("row", "weight"), [
    ({"purchases": 2, "carts": 1, "views": 5}, 1.0),
    ({"purchases": 0, "carts": 1, "views": 5}, 0.5),
    ({"purchases": 0, "carts": 0, "views": 3}, 0.2),
    ({"views": None, "carts": None, "purchases": None}, 0.0),
    ({"rating": 5}, 1.0),
    ({"rating": 4, "views": 1}, 1.0),
    ({"rating": 3, "views": 1}, 0.5),
    ({"rating": 2, "purchases": 1}, 0.0),  # bought and disliked: no evidence of taste
    ({"rating": 1}, 0.0),
])
def test_interaction_weights(row: dict[str, Any], weight: float) -> None:
    assert interaction_weight(row) == weight


def random_interactions(seed: int, users: int = 60, n_items: int = 25) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    rows = []
    for u in range(users):
        for i in rng.sample(range(n_items), rng.randint(1, 8)):
            kind = rng.choice(("view", "cart", "purchase", "rating"))
            rows.append({"user_id": f"u{u:03d}", "item_id": f"i{i:03d}",
                         "views": int(kind == "view"), "carts": int(kind == "cart"),
                         "purchases": int(kind == "purchase"),
                         "rating": rng.randint(1, 5) if kind == "rating" else None,
                         "last_at": rng.randint(0, 1000)})
    return rows


def brute_force_neighbours(rows: list[dict[str, Any]], top: int) -> dict[str, list[Any]]:
    vectors: dict[str, dict[str, float]] = {}
    for r in rows:
        w = interaction_weight(r)
        if w > 0:
            vectors.setdefault(r["item_id"], {})[r["user_id"]] = w
    out = {}
    for i, vi in vectors.items():
        sims = []
        for j, vj in vectors.items():
            if i == j:
                continue
            dot = sum(w * vj.get(u, 0.0) for u, w in vi.items())
            if dot > 0:
                norm = (sum(w * w for w in vi.values()) * sum(w * w for w in vj.values())) ** .5
                sims.append((-dot / norm, j))
        if sims:
            out[i] = [(j, -s) for s, j in sorted(sims)[:top]]
    return out


def test_item_neighbours_are_eases_strongest_positive_weights() -> None:
    """Within ``model_items``, each item's neighbours are its row of EASE's weights (the
    baseline's own fit, on the same weighted matrix): the ``top`` largest positive ones."""
    rows = random_interactions(5)
    users = sorted({r["user_id"] for r in rows})
    ids = sorted({r["item_id"] for r in rows if interaction_weight(r) > 0})
    X = np.zeros((len(users), len(ids)))
    for r in rows:
        if interaction_weight(r) > 0:
            X[users.index(r["user_id"]), ids.index(r["item_id"])] = interaction_weight(r)
    B = EASE(items.EASE_L2).fit(sparse.csr_matrix(X)).weights_
    got = {r["item_id"]: r["neighbours"] for r in item_neighbours(rows, top=4)}
    assert got.keys() <= set(ids) and len(got) > len(ids) // 2
    for i, item in enumerate(ids):
        expected = sorted((-B[i, j], ids[j]) for j in range(len(ids)) if B[i, j] > 0)[:4]
        found = got.get(item, [])
        assert [n["item_id"] for n in found] == [j for _, j in expected], item
        assert [n["score"] for n in found] == pytest.approx([-w for w, _ in expected]), item


def test_beyond_model_items_neighbours_are_the_top_cosine_items(
        monkeypatch: pytest.MonkeyPatch) -> None:
    rows = random_interactions(5)
    expected = brute_force_neighbours(rows, top=4)
    for budget in (items.PAIR_BUDGET, 30):  # in one block, and in many
        monkeypatch.setattr(items, "PAIR_BUDGET", budget)
        got = {r["item_id"]: [(n["item_id"], n["score"]) for n in r["neighbours"]]
               for r in item_neighbours(rows, top=4, model_items=10)}
        assert got.keys() == expected.keys()
        for item, ranked in expected.items():
            assert [j for j, _ in got[item]] == [j for j, _ in ranked], item
            assert [s for _, s in got[item]] == pytest.approx([s for _, s in ranked])
            assert all(0 < s <= 1 for _, s in got[item])


def test_item_neighbours_take_each_users_newest_items_only() -> None:
    """A user with many items adds pairs by the square of them: only their newest count."""
    rows = [{"user_id": "bot", "item_id": f"i{i:03d}", "purchases": 1, "last_at": i}
            for i in range(300)]
    rows += [{"user_id": "a", "item_id": "i000", "purchases": 1, "last_at": 1},
             {"user_id": "a", "item_id": "i001", "purchases": 1, "last_at": 1}]
    got = {r["item_id"]: r["neighbours"] for r in item_neighbours(rows, max_user_items=10)}
    # The bot's 10 newest items are each other's neighbours; its older ones only through "a".
    assert {n["item_id"] for n in got["i299"]} == {f"i{i:03d}" for i in range(290, 299)}
    assert [n["item_id"] for n in got["i000"]] == ["i001"]
    assert "i150" not in got


def test_an_item_everyone_bought_costs_one_column() -> None:
    rows = [{"user_id": f"u{u}", "item_id": "star", "purchases": 1, "last_at": 0}
            for u in range(5000)]
    assert item_neighbours(rows) == []
    rows.append({"user_id": "u1", "item_id": "other", "purchases": 1, "last_at": 0})
    got = {r["item_id"]: r["neighbours"] for r in item_neighbours(rows)}
    assert [n["item_id"] for n in got["other"]] == ["star"]
    cosine = {r["item_id"]: r["neighbours"] for r in item_neighbours(rows, model_items=1)}
    assert cosine["other"][0]["score"] == pytest.approx(1 / 5000 ** .5)


def test_item_neighbours_refuse_a_top_below_one() -> None:
    with pytest.raises(InvalidInput, match="top"):
        item_neighbours([], top=0)
