"""Reads of the catalogue: items and their categories."""

from __future__ import annotations

from graph.db import Reader
from graph.profile import queries as q
from graph.profile.model import CategoryCount, Item, Page, page


async def items(reader: Reader, *, category: str | None, after: str,
                size: int) -> Page[Item]:
    """Items in id order after ``after``, optionally of one category."""
    rows = await reader.rows(q.ITEMS_PAGE, after=after, limit=size + 1, category=category)
    return page(rows, size, lambda r: str(r["id"]), Item.from_row)


async def item(reader: Reader, item_id: str) -> Item | None:
    rows = await reader.rows(q.ITEM, id=item_id)
    return Item.from_row(rows[0]) if rows else None


async def categories(reader: Reader) -> list[CategoryCount]:
    """Every category, by name, with its number of items."""
    return [CategoryCount(name=r["name"], items=r["items"])
            for r in await reader.rows(q.CATEGORIES)]

