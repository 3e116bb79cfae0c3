"""The item and similar-user weights a run learns on a validation split of its own data."""

from __future__ import annotations

import random
from typing import Any

import pytest

from graph.recommend.blend import GRID, MIN_VALIDATION_USERS, tune_blend
from graph.recommend.engine import WEIGHTS
from graph.recommend.interactions import Interactions

Rows = list[dict[str, Any]]


def chain_shop(seed: int, users: int = 120, items: int = 80) -> Rows:
    """Each user goes through consecutive items of a ring (a series watched in order, one
    noisy pick in seven): the next item follows from the user's newest ones, whoever else
    watched them."""
    rng = random.Random(seed)
    rows: dict[tuple[str, str], dict[str, Any]] = {}
    for u in range(users):
        start = rng.randrange(items)
        for k in range(rng.randint(8, 16)):
            item = (start + k) % items if rng.random() >= 0.15 else rng.randrange(items)
            rows[(f"u{u:03d}", f"i{item:03d}")] = {
                "user_id": f"u{u:03d}", "item_id": f"i{item:03d}", "views": 0, "carts": 0,
                "purchases": 1, "rating": None, "last_at": float(k)}
    return list(rows.values())


def basket_shop(seed: int, users: int = 150, groups: int = 5, pool: int = 12) -> Rows:
    """Five groups of shoppers, each buying five of its group's twelve items, each viewed and
    carted before it is bought: what the user has in the cart, bought by like-minded users,
    is the next purchase."""
    rng = random.Random(seed)
    return [{"user_id": f"u{u:03d}", "item_id": f"g{u % groups}-{item:02d}", "views": 1,
             "carts": 1, "purchases": 1, "rating": None, "last_at": float(k)}
            for u in range(users) for k, item in enumerate(rng.sample(range(pool), 5))]


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_shop_watched_in_sequence_weighs_the_item_neighbours_most(seed: int) -> None:
    rows = chain_shop(seed)
    blend = tune_blend(Interactions.from_rows(rows))
    assert (blend.item, blend.similar) in GRID
    assert blend.item >= 2 * blend.similar, blend
    assert blend.validation_users == 120
    assert blend.validation_hit is not None and blend.validation_hit > 0.5


@pytest.mark.parametrize("seed", [1, 2])
def test_a_shop_of_like_minded_groups_weighs_similar_users_most(seed: int) -> None:
    rows = basket_shop(seed)
    blend = tune_blend(Interactions.from_rows(rows))
    assert blend.similar >= 4 * blend.item, blend


def test_the_held_out_purchases_are_not_seen_when_validating() -> None:
    """Were the held-out purchases left in, every target would be excluded as bought and
    nothing could hit; were its later items left in, the ring's next item would be a seed."""
    rows = chain_shop(1)
    blend = tune_blend(Interactions.from_rows(rows))
    assert blend.validation_hit is not None and blend.validation_ndcg is not None
    assert 0.5 < blend.validation_hit <= 1.0 and 0 < blend.validation_ndcg < blend.validation_hit


def test_too_few_users_to_validate_on_keep_the_defaults() -> None:
    rows = [r for r in chain_shop(1) if r["user_id"] < f"u{MIN_VALIDATION_USERS - 1:03d}"]
    blend = tune_blend(Interactions.from_rows(rows))
    assert (blend.item, blend.similar) == (WEIGHTS["item"], WEIGHTS["similar"])
    assert blend.validation_hit is None
    # A catalogue of one item: nothing to validate on, nothing to fail on.
    one = [{"user_id": f"u{n}", "item_id": "only", "views": 0, "carts": 0, "purchases": 1,
            "rating": None, "last_at": 1.0} for n in range(500)]
    assert tune_blend(Interactions.from_rows(one)).validation_users == 0


def test_the_validation_sample_is_bounded_and_fixed() -> None:
    rows = chain_shop(2)
    a = tune_blend(Interactions.from_rows(rows), most_users=60)
    assert a.validation_users == 60
    assert tune_blend(Interactions.from_rows(rows), most_users=60) == a
    assert a.run_props()["rec_item_weight"] == a.item
