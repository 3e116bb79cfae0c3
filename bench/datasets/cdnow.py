"""CDNOW: every CD purchase of 23,570 customers of an online music store, Jan 1997 - Jun 1998
(Fader & Hardie), as bundled in ``lifetimes`` 0.11.3 (``lifetimes/datasets/CDNOW_master.txt``).

Each row is one customer's purchase on one day: ``customer_id date number_of_cds dollar_value``,
whitespace separated, a header line first. The store sold one product line and the log names
no title, so every row is a purchase of one catalogue item ("cdnow-cd") with the day's CD count
as quantity and the dollar value as the line total (``amount``): a unit price would drift
wherever the total is not a multiple of the count.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from bench.datasets import Wheel
from graph.errors import InvalidInput

WHEEL = Wheel("lifetimes", "0.11.3", "Lifetimes-0.11.3-py3-none-any.whl",
              "261e3dc89977c2b60767ca6728aaa29d429de0c814635070a749c36555895da8")
MEMBER = "lifetimes/datasets/CDNOW_master.txt"
SOURCE = "cdnow"
ITEM_ID = "cdnow-cd"
CATEGORY = "music cds"


def events(lines: Iterable[str]) -> Iterator[dict[str, Any]]:
    """Envelope dicts from the lines of ``CDNOW_master.txt`` (the header line is skipped); a
    malformed row raises ``InvalidInput`` naming its line."""
    for number, line in enumerate(lines, start=1):
        fields = line.split()
        if not fields or fields[0] == "customer_id":
            continue
        try:
            customer, day, cds, dollars = fields
            at = datetime.strptime(day, "%Y%m%d").replace(hour=12, tzinfo=UTC)
            quantity = int(cds)
            amount = Decimal(dollars)
        except (ValueError, InvalidOperation):
            raise InvalidInput(f"CDNOW line {number}: expected 'customer_id YYYYMMDD "
                               f"number_of_cds dollar_value', got {line.strip()!r}") from None
        customer = customer.lstrip("0") or "0"
        yield {
            "event_id": f"{SOURCE}-{number}",
            "type": "purchase",
            "source": SOURCE,
            # CDNOW records the day only: noon UTC keeps every purchase on its own date.
            "occurred_at": at.isoformat(),
            "user": {"crm_id": f"{SOURCE}-{customer}"},
            "session_id": f"{SOURCE}-{customer}-{day}",
            "properties": {"item_id": ITEM_ID, "item_name": "CD", "category": CATEGORY,
                           "quantity": quantity, "amount": str(amount),
                           "order_id": f"{SOURCE}-{customer}-{day}-{number}"},
        }
