"""A realistic demo population with planted behaviour groups, as event files plus context.

Each user belongs to one planted group (recorded as ``demo_group`` on the user's profile) whose
behaviour differs in the ways the segmentation features can see: how often they buy, how much,
how recently, how they browse and abandon carts, and which categories they favour.
"""

from __future__ import annotations

import itertools
import json
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

GROUPS = ("frequent_shoppers", "bargain_hunters", "seasonal_buyers", "new_visitors")

CATEGORIES: dict[str, tuple[float, float]] = {
    "electronics": (60, 900),
    "fashion": (15, 180),
    "home & garden": (10, 300),
    "toys": (10, 120),
    "books": (8, 40),
    "beauty": (6, 90),
    "sports": (15, 250),
    "grocery": (2, 30),
}
GROUP_CATEGORIES: dict[str, tuple[str, ...]] = {
    "frequent_shoppers": ("grocery", "beauty", "fashion", "books"),
    "bargain_hunters": ("fashion", "home & garden", "sports"),
    "seasonal_buyers": ("toys", "electronics"),
    "new_visitors": tuple(CATEGORIES),
}
CITIES = (
    ("berlin", "Berlin", "DE", 52.52, 13.40),
    ("paris", "Paris", "FR", 48.86, 2.35),
    ("london", "London", "GB", 51.51, -0.13),
    ("madrid", "Madrid", "ES", 40.42, -3.70),
    ("amsterdam", "Amsterdam", "NL", 52.37, 4.90),
    ("vienna", "Vienna", "AT", 48.21, 16.37),
)
CONDITIONS = ("clear", "cloudy", "rain", "snow", "fog")
EVENT_KINDS = ("concert", "market", "football match", "festival", "trade fair")
CHAT_LINES = {
    "order_status": "Where is my order? You can reach me at {email}.",
    "product_question": "Does this {category} item come in other sizes?",
    "deal_hunting": "Are there any discounts on {category} this week?",
    "gift_ideas": "I need gift ideas in {category} for the holidays.",
    "greeting": "Hi, just looking around.",
}
GROUP_INTENTS = {
    "frequent_shoppers": ("order_status", "product_question"),
    "bargain_hunters": ("deal_hunting",),
    "seasonal_buyers": ("gift_ideas",),
    "new_visitors": ("greeting",),
}
AGE_BANDS = ("18-24", "25-34", "35-44", "45-54", "55-64", "65+")


@dataclass(frozen=True)
class Behaviour:
    sessions: tuple[int, int]
    views_per_session: tuple[int, int]
    cart_prob: float
    buy_given_cart: float
    price_quantile: tuple[float, float]
    discount: tuple[float, float]
    days_back: tuple[int, int]
    chat_prob: float


BEHAVIOUR = {
    "frequent_shoppers": Behaviour((14, 24), (3, 6), 0.7, 0.9, (0.35, 0.7), (0.0, 0.05),
                                   (0, 120), 0.15),
    "bargain_hunters": Behaviour((8, 14), (9, 16), 0.5, 0.7, (0.0, 0.12), (0.3, 0.6),
                                 (0, 180), 0.2),
    "seasonal_buyers": Behaviour((3, 5), (3, 6), 0.9, 0.85, (0.6, 0.95), (0.0, 0.1),
                                 (300, 345), 0.3),
    "new_visitors": Behaviour((1, 2), (1, 4), 0.0, 0.0, (0.0, 1.0), (0.0, 0.0), (0, 10), 0.1),
}


def _catalogue(rng: random.Random) -> dict[str, list[dict[str, Any]]]:
    items: dict[str, list[dict[str, Any]]] = {}
    for cat, (lo, hi) in CATEGORIES.items():
        slug = cat.replace(" & ", "-").replace(" ", "-")
        prices = sorted(round(rng.uniform(lo, hi), 2) for _ in range(30))
        items[cat] = [{"id": f"{slug}-{i:03d}", "name": f"{cat.title()} item {i}",
                       "price": p, "brand": f"brand-{rng.randint(1, 12)}"}
                      for i, p in enumerate(prices)]
    return items


class DemoPopulation:
    """Generates the demo events for ``users`` users, reproducibly from ``seed``."""

    def __init__(self, users: int, seed: int, as_of: datetime | None = None,
                 groups: Sequence[str] = GROUPS) -> None:
        unknown = set(groups) - set(GROUPS)
        if unknown or not groups:
            raise ValueError(f"groups must be a non-empty subset of {GROUPS}, got {groups}")
        self.users = users
        self.seed = seed
        self.groups = tuple(groups)
        now = as_of or datetime.now(UTC)
        self.as_of = now.replace(hour=0, minute=0, second=0, microsecond=0)

    def planted_group(self, index: int) -> str:
        return self.groups[index % len(self.groups)]

    def events(self) -> Iterator[dict[str, Any]]:
        rng = random.Random(self.seed)
        catalogue = _catalogue(rng)
        ids = itertools.count(1)
        for index in range(self.users):
            group = self.planted_group(index)
            b = BEHAVIOUR[group]
            uid = f"{self.seed}-{index:06d}"
            city = CITIES[rng.randrange(len(CITIES))]
            user: dict[str, str] = {"cookie": f"ck-{uid}"}
            if group != "new_visitors" or rng.random() < 0.2:
                user["email"] = f"user{uid}@example.com"
            if rng.random() < 0.3:
                user["phone"] = f"+49 151 {self.seed % 1000:03d} {index:07d}"
            if group == "frequent_shoppers":
                user["crm_id"] = f"crm-{uid}"
            profile = {
                "age_band": rng.choice(AGE_BANDS), "gender": rng.choice(
                    ("female", "male", "nonbinary", "undisclosed")),
                "locale": "en-GB" if city[2] == "GB" else f"{city[2].lower()}-{city[2]}",
                "location": {"id": city[0], "city": city[1], "country": city[2],
                             "lat": city[3], "lon": city[4]},
                "demo_group": group,
            }
            device = {"id": f"dev-{uid}",
                      "kind": rng.choice(("desktop", "mobile", "mobile", "app"))}
            favourites = GROUP_CATEGORIES[group]
            n_sessions = rng.randint(*b.sessions)
            starts = sorted(
                self.as_of - timedelta(days=rng.uniform(*b.days_back),
                                       seconds=rng.randint(3600, 80_000))
                for _ in range(n_sessions)
            )
            for s_index, start in enumerate(starts):
                session_id = f"s-{uid}-{s_index}"
                t = start
                cart: list[tuple[str, dict[str, Any]]] = []
                first = True

                def emit(kind: str, props: dict[str, Any], at: datetime,
                         session_id: str = session_id, user: dict[str, str] = user,
                         device: dict[str, str] = device) -> dict[str, Any]:
                    return {
                        "schema_version": 1, "event_id": f"demo-{self.seed}-{next(ids):09d}",
                        "type": kind, "source": "app" if device["kind"] == "app" else "web",
                        "occurred_at": at.isoformat(),
                        "user": user, "session_id": session_id, "device": device,
                        "properties": props,
                    }


                for _ in range(rng.randint(*b.views_per_session)):
                    cat = rng.choice(favourites) if rng.random() < 0.85 else rng.choice(
                        tuple(CATEGORIES))
                    items = catalogue[cat]
                    lo, hi = b.price_quantile
                    item = items[min(len(items) - 1,
                                     int(rng.uniform(lo, hi) * len(items)))]
                    props = {"item_id": item["id"], "item_name": item["name"],
                             "category": cat, "brand": item["brand"],
                             "price": str(item["price"]), "duration_s": rng.randint(5, 240)}
                    if group == "bargain_hunters" and rng.random() < 0.3:
                        t += timedelta(seconds=rng.randint(5, 60))
                        yield emit("search", {"query": f"{cat} sale"}, t)
                    t += timedelta(seconds=rng.randint(20, 240))
                    event = emit("page_view", props, t)
                    if first:
                        event["profile"] = profile
                        first = False
                    yield event
                    if rng.random() < b.cart_prob / 2:
                        t += timedelta(seconds=rng.randint(10, 120))
                        cart_props = {k: props[k] for k in ("item_id", "category", "price")}
                        yield emit("add_to_cart", cart_props, t)
                        cart.append((cat, item))
                for cat, item in cart:
                    if rng.random() < b.buy_given_cart:
                        t += timedelta(seconds=rng.randint(30, 300))
                        discount = round(rng.uniform(*b.discount), 2)
                        price = round(item["price"] * (1 - discount), 2)
                        yield emit("purchase", {"item_id": item["id"], "category": cat,
                                                "price": str(price), "discount": discount,
                                                "order_id": f"o-{session_id}"}, t)
                if rng.random() < b.chat_prob:
                    intent = rng.choice(GROUP_INTENTS[group])
                    text = CHAT_LINES[intent].format(
                        email=user.get("email", "nobody@example.com"),
                        category=rng.choice(favourites))
                    t += timedelta(seconds=rng.randint(10, 90))
                    yield emit("chat_message", {"text": text, "intent": intent}, t)
                if rng.random() < 0.1:
                    t += timedelta(seconds=rng.randint(10, 90))
                    yield emit("feedback", {"category": rng.choice(favourites),
                                            "rating": rng.randint(3, 5)}, t)

    def context(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """Daily weather for the last 30 days and upcoming local events, per demo city."""
        rng = random.Random(self.seed + 1)
        weather, local_events = [], []
        for city_id, city, _country, lat, _lon in CITIES:
            base = 22 - abs(lat - 40) * 0.6
            for day in range(30, -1, -1):
                at = self.as_of - timedelta(days=day) + timedelta(hours=12)
                weather.append({
                    "id": f"wx-{city_id}-{at:%Y%m%d%H}", "location_id": city_id, "at": at,
                    "temp_c": round(base + rng.gauss(0, 4), 1),
                    "condition": rng.choice(CONDITIONS), "source": "demo",
                })
            for n in range(3):
                starts = self.as_of + timedelta(days=rng.randint(1, 21), hours=19)
                local_events.append({
                    "id": f"ev-{city_id}-{self.seed}-{n}", "location_id": city_id,
                    "name": f"{city} {rng.choice(EVENT_KINDS)}", "starts_at": starts,
                    "ends_at": starts + timedelta(hours=4), "source": "demo",
                })
        return weather, local_events

    def write_events(self, path: Path) -> int:
        """Write the events as JSON Lines; returns how many."""
        count = 0
        with path.open("w", encoding="utf-8") as handle:
            for event in self.events():
                handle.write(json.dumps(event, separators=(",", ":")) + "\n")
                count += 1
        return count
