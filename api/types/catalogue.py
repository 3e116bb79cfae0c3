"""The catalogue: items and their categories."""

from __future__ import annotations

import strawberry

from api.request import RequestContext
from api.types.connection import Connection, connection, decode_cursor
from graph.profile import catalogue, model


@strawberry.type(description="Something users view, cart and buy.")
class Item:
    id: strawberry.ID
    name: str | None
    price: float | None
    category: str | None
    brand: str | None
    buyers: int = strawberry.field(description="Users who bought it at least once.")

    @classmethod
    def from_model(cls, r: model.Item) -> Item:
        return cls(id=strawberry.ID(r.id), name=r.name, price=r.price, category=r.category,
                   brand=r.brand, buyers=r.buyers)


async def items_of(context: RequestContext, category: str | None, first: int,
                   after: str | None) -> Connection[Item]:
    size = context.page(first)
    found = await catalogue.items(context.reader, category=category,
                                  after=decode_cursor("item", after), size=size)
    return connection(found, "item", Item.from_model)


@strawberry.type
class Category:
    name: str
    item_count: int = strawberry.field(description="Items in the category.")

    @strawberry.field(description="The category's items in id order.")
    async def items(self, info: strawberry.Info[RequestContext, None], first: int = 20,
                    after: str | None = None) -> Connection[Item]:
        return await items_of(info.context, self.name, first, after)
