"""Reads of the catalogue: items and their categories."""

from __future__ import annotations

from graph.db import Reader
from graph.profile import queries as q
from graph.profile.model import FILTERED_PAGE_SCAN, CategoryCount, Item, Page, scanned_page


async def items(reader: Reader, *, category: str | None, after: str,
                size: int) -> Page[Item]:
    """Items in id order after ``after``, optionally of one category. A page of one category
    examines at most ``FILTERED_PAGE_SCAN`` items: it may hold fewer than ``size`` and still have
    more, going on after the last examined."""
    scan = max(size + 1, FILTERED_PAGE_SCAN) if category is not None else size + 1
    rows = await reader.rows(q.ITEMS_PAGE, after=after, limit=size + 1, scan=scan,
                             category=category)
    return scanned_page(rows, size, scan, lambda r: str(r["id"]), Item.from_row)


async def item(reader: Reader, item_id: str) -> Item | None:
    rows = await reader.rows(q.ITEM, id=item_id)
    return Item.from_row(rows[0]) if rows else None


async def categories(reader: Reader) -> list[CategoryCount]:
    """Every category, by name, with its number of items."""
    return [CategoryCount(name=r["name"], items=r["items"])
            for r in await reader.rows(q.CATEGORIES)]

