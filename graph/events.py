"""The versioned event envelope every source is normalized into before it reaches the graph."""

from __future__ import annotations

import re
import unicodedata
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from functools import lru_cache
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
    model_validator,
)

from graph.privacy import DIRECT_IDENTIFIER_ATTRIBUTES, EMAIL_RE, IDENTIFIER_KINDS, blank
from graph.times import to_utc

SCHEMA_VERSION: Literal[1] = 1
KNOWN_KINDS = frozenset(IDENTIFIER_KINDS)

MAX_KEY_CHARS = 200
"""Longest id or identifier value an event may carry (a longer one is never stored)."""
BLANK_MESSAGE = "has only invisible characters (spaces, zero-width or format characters)"


def _visible(value: str) -> str:
    # Printable ASCII, stripped and not empty, shows something: the common case, at C speed.
    if (value.isascii() and value.isprintable()) or not blank(value):
        return value
    raise ValueError(BLANK_MESSAGE)


Key = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1,
                                       max_length=MAX_KEY_CHARS), AfterValidator(_visible)]
"""An id or an identifier's value: 1 to 200 characters once stripped, at least one of them
visible (a zero-width space alone had made a user, a category, an item of its own)."""


def _not_an_email(value: str) -> str:
    if "@" in value and EMAIL_RE.search(value):
        raise ValueError("holds an email address: ids are stored as they are, so a person's "
                         "identifiers go under `user`, where they are pseudonymized")
    return value


Id = Annotated[Key, AfterValidator(_not_an_email)]
"""The id or name of a thing (an event, session, item, order, category, place), stored as it is:
never one holding an email address, which would be a person's identifier kept in plaintext
(``user`` and ``device`` carry identifiers, and those are pseudonymized)."""
CountryCode = Annotated[str, StringConstraints(min_length=2, max_length=2, to_upper=True)]
ShortText = Annotated[str, StringConstraints(strip_whitespace=True, max_length=4000)]
Money = Annotated[Decimal, Field(max_digits=14, decimal_places=2)]

AGE_BANDS = ("under-18", "18-24", "25-34", "35-44", "45-54", "55-64", "65+")
"""Every age band, youngest first (``Profile.age_band``)."""
AgeBand = Literal["under-18", "18-24", "25-34", "35-44", "45-54", "55-64", "65+"]

ATTRIBUTE_PREFIX = "attr_"
"""Declared profile attributes are stored on the user as ``attr_<name>``."""
ATTRIBUTE_NAME = re.compile(r"[a-z][a-z0-9_]{0,39}")
"""A declared attribute's name: lower-case snake case, a letter first, at most 40 characters."""
MAX_ATTRIBUTES = 20
"""At most this many declared attributes in one event's profile (or one CRM mapping)."""
MAX_USER_ATTRIBUTES = 64
"""A user holds at most this many declared attributes: names beyond it are not stored, so that
a source inventing names cannot grow a user node without bound."""
MAX_ATTRIBUTE_CHARS = 200
"""A declared attribute's value: 1 to 200 characters."""
AttributeValue = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1,
                                                  max_length=MAX_ATTRIBUTE_CHARS)]


def check_attribute_name(name: str) -> str:
    """``name`` if it may name a declared profile attribute; ValueError saying why not."""
    if not isinstance(name, str) or not ATTRIBUTE_NAME.fullmatch(name):
        raise ValueError(f"attribute name {str(name)[:50]!r} must be lower-case letters, digits "
                         "and underscores, starting with a letter, at most 40 characters")
    if name in DIRECT_IDENTIFIER_ATTRIBUTES:
        raise ValueError(f"attribute {name!r} would name a person: identifiers go under `user` "
                         "(where they are hashed), an age as `age_band`; other personal data "
                         "is not kept")
    return name


class EventType(StrEnum):
    PAGE_VIEW = "page_view"
    SEARCH = "search"
    ADD_TO_CART = "add_to_cart"
    PURCHASE = "purchase"
    CHAT_MESSAGE = "chat_message"
    FEEDBACK = "feedback"


@lru_cache(maxsize=4096)
def normalize_category(name: str) -> str:
    """Categories compare case- and space-insensitively: ``' Home  Garden'`` -> ``home garden``,
    and whatever Unicode form they come in: composed or decomposed letters and fullwidth forms
    are one (NFKC), invisible format characters (zero-width spaces, direction overrides: a
    ``\u202ebooks`` shown as ``skoob``) are dropped; each had made a category of its own. A
    name with nothing visible (``graph.privacy.blank``) is the empty string: callers refuse it
    (the event model refuses such a name before it gets here).

    Cached: a catalogue names few categories, and every event of an ingest names one."""
    if blank(name):
        return ""
    if not name.isascii():
        visible = "".join(c for c in name if unicodedata.category(c) != "Cf")
        name = unicodedata.normalize("NFKC", visible)
    return " ".join(name.split()).lower()  # split() takes the runs of whitespace \s+ does


class Location(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: Id
    city: Id | None = None
    country: CountryCode | None = None
    lat: float | None = Field(default=None, ge=-90, le=90)
    lon: float | None = Field(default=None, ge=-180, le=180)


class Profile(BaseModel):
    """Demographic bands, location and declared attributes a source may attach to any event."""

    model_config = ConfigDict(extra="forbid")

    age_band: AgeBand | None = None
    gender: Literal["female", "male", "nonbinary", "undisclosed"] | None = None
    locale: Annotated[str, StringConstraints(pattern=r"^[a-z]{2}(-[A-Z]{2})?$")] | None = None
    location: Location | None = None
    # Only the demo generator sets this: the behaviour group it planted, for evaluation.
    demo_group: Id | None = None
    attributes: dict[str, AttributeValue] | None = None
    """Declared attributes (``occupation``, ``postal_code``...): name -> text. Stored on the user
    as ``attr_<name>``, after the PII policy of ``Pseudonymizer.attribute_value``."""

    @field_validator("attributes")
    @classmethod
    def _attributes(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        if value is None:
            return None
        if len(value) > MAX_ATTRIBUTES:
            raise ValueError(f"at most {MAX_ATTRIBUTES} attributes, got {len(value)}")
        for name in value:
            check_attribute_name(name)
        return value


class Device(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: Key
    kind: Literal["desktop", "mobile", "tablet", "app", "voice"] | None = None


class Properties(BaseModel):
    """Type-specific payload; which fields are required depends on the event type."""

    model_config = ConfigDict(extra="forbid")

    item_id: Id | None = None
    item_name: ShortText | None = None
    category: Id | None = None
    brand: Id | None = None
    price: Money | None = None
    amount: Money | None = None
    quantity: int = Field(default=1, ge=1, le=10_000)
    discount: float = Field(default=0.0, ge=0, le=1)
    order_id: Id | None = None
    query: ShortText | None = None
    text: ShortText | None = None
    intent: Id | None = None
    rating: int | None = Field(default=None, ge=1, le=5)
    duration_s: float | None = Field(default=None, ge=0, le=86_400)
    channel: Id | None = None

    @field_validator("price", "amount")
    @classmethod
    def _non_negative(cls, value: Decimal | None) -> Decimal | None:
        if value is not None and value < 0:
            raise ValueError("an amount must not be negative")
        return value.quantize(Decimal("0.01")) if value is not None else None

    def line_total(self) -> Decimal | None:
        """What the line came to: ``amount`` when given, else ``price`` x ``quantity``."""
        if self.amount is not None:
            return self.amount
        return self.price * self.quantity if self.price is not None else None

    @field_validator("category")
    @classmethod
    def _category(cls, value: str | None) -> str | None:
        return normalize_category(value) if value is not None else None


REQUIRED: dict[EventType, tuple[str, ...]] = {
    EventType.PAGE_VIEW: (),
    EventType.SEARCH: ("query",),
    EventType.ADD_TO_CART: ("item_id",),
    EventType.PURCHASE: ("item_id", "price"),
    EventType.CHAT_MESSAGE: ("text",),
    EventType.FEEDBACK: ("rating",),
}
"""Properties each type needs (or their ``INSTEAD`` alternatives)."""
INSTEAD = {"price": "amount"}
"""A property that may stand in for a required one: a purchase's line total for its unit
price."""


class Event(BaseModel):
    """One interaction from any source. Identifiers are plaintext here, hashed before storage."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    schema_version: Literal[1] = SCHEMA_VERSION
    event_id: Id
    type: EventType
    source: Id = "unknown"
    occurred_at: datetime
    user: dict[str, Key]
    session_id: Id | None = None
    device: Device | None = None
    profile: Profile | None = None
    properties: Properties = Field(default_factory=Properties)

    @field_validator("occurred_at")
    @classmethod
    def _utc(cls, value: datetime) -> datetime:
        return to_utc(value)

    @field_validator("user")
    @classmethod
    def _identifiers(cls, value: dict[str, str]) -> dict[str, str]:
        if not value:
            raise ValueError("at least one user identifier is required")
        if value.keys() <= KNOWN_KINDS:
            return value
        unknown = sorted(set(value) - set(IDENTIFIER_KINDS))
        if unknown:
            raise ValueError(
                f"unknown identifier kind(s) {unknown}; expected some of {list(IDENTIFIER_KINDS)}"
            )
        return value

    @model_validator(mode="after")
    def _required_properties(self) -> Event:
        if not REQUIRED[self.type]:  # a page view (most events) needs none
            return self
        missing = [f for f in REQUIRED[self.type] if getattr(self.properties, f) is None
                   and (f not in INSTEAD or getattr(self.properties, INSTEAD[f]) is None)]
        if missing:
            instead = "".join(f" (or {INSTEAD[f]!r} instead of {f!r})" for f in missing
                              if f in INSTEAD)
            raise ValueError(f"{self.type.value} event needs properties {missing}{instead}")
        return self

    def identifiers(self) -> list[tuple[str, str]]:
        """(kind, value) pairs, most authoritative kind first."""
        return [(kind, self.user[kind]) for kind in IDENTIFIER_KINDS if kind in self.user]


def describe_validation_error(errors: list[Any]) -> str:
    """A one-line reason from pydantic's error list, naming the field."""
    parts = []
    for err in errors[:3]:
        where = ".".join(str(p) for p in err.get("loc", ())) or "record"
        msg = str(err.get("msg", "invalid")).removeprefix("Value error, ")
        parts.append(f"{where}: {msg}")
    return "; ".join(parts)
