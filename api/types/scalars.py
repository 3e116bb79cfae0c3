"""Scalars whose parsing the API narrows: every ``DateTime`` argument and variable, whatever
field takes it, is a time the driver can send (``graph.times.representable``); a time beyond
that is ``BAD_USER_INPUT`` (a literal: ``GRAPHQL_VALIDATION_FAILED``), never an unexpected
error in the resolver that sends it. Same name and description as strawberry's own, so the
SDL does not change."""

from __future__ import annotations

from datetime import datetime

import strawberry
from strawberry.exceptions import StrawberryInputCoercionError
from strawberry.schema.types.base_scalars import DateTimeDefinition
from strawberry.types.scalar import ScalarDefinition

from graph.times import representable

MAX_TIME_CHARS = 64
"""Longer than any ISO 8601 time with fractions and an offset."""


def parse_datetime(value: object) -> datetime:
    """strawberry's own parsing (ISO 8601), then the range check."""
    if isinstance(value, str) and len(value) > MAX_TIME_CHARS:
        raise StrawberryInputCoercionError(
            f"Value cannot represent a DateTime: {len(value)} characters, longer than any "
            "ISO 8601 time")
    parsed = DateTimeDefinition.parse_value(value)  # type: ignore[misc]
    assert isinstance(parsed, datetime)
    try:
        return representable(parsed)
    except ValueError as exc:
        raise StrawberryInputCoercionError(
            f"Value cannot represent a DateTime: {value!r}: {exc}") from None


DATETIME: ScalarDefinition = strawberry.scalar(
    name="DateTime", description="Date with time (isoformat)",
    serialize=datetime.isoformat, parse_value=parse_datetime)

SCALAR_OVERRIDES: dict[object, ScalarDefinition] = {datetime: DATETIME}
"""For ``strawberry.Schema(scalar_overrides=...)``."""
