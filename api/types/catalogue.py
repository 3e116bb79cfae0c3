"""The catalogue: items and their categories."""

from __future__ import annotations

from typing import Any

import strawberry

from api import queries as q
from api.context import Context
from api.types.connection import Connection, decode_cursor, paginate


@strawberry.type(description="Something users view, cart and buy.")
class Item:
    id: strawberry.ID
    name: str | None
    price: float | None
    category: str | None
    brand: str | None
    buyers: int = strawberry.field(description="Users who bought it at least once.")

    @classmethod
    def from_record(cls, r: dict[str, Any]) -> Item:
        return cls(id=strawberry.ID(r["id"]), name=r["name"], price=r["price"],
                   category=r["category"], brand=r["brand"], buyers=r["buyers"])


def item_page(rows: list[dict[str, Any]], size: int) -> Connection[Item]:
    return paginate(rows, size, "item", key=lambda r: str(r["id"]), node=Item.from_record)


async def items_of(context: Context, category: str | None, first: int,
                   after: str | None) -> Connection[Item]:
    size = context.page(first)
    rows = await context.rows(q.ITEMS_PAGE, after=decode_cursor("item", after), limit=size + 1,
                              category=category)
    return item_page(rows, size)


@strawberry.type
class Category:
    name: str
    item_count: int = strawberry.field(description="Items in the category.")

    @strawberry.field(description="The category's items in id order.")
    async def items(self, info: strawberry.Info[Context, None], first: int = 20,
                    after: str | None = None) -> Connection[Item]:
        return await items_of(info.context, self.name, first, after)
