"""Plausible times: every timestamp a source sends is checked here before it is stored.

A time must carry its offset, convert to UTC, and fall between 1970 and a bound in the future
that depends on what it dates (an event happened at most a day ahead of our clock; a local
event or a forecast may lie years ahead). Anything else is a ``ValueError`` naming the problem:
the parsers turn it into a validation error (a dead letter, a 400), never a crash. Converting
year 1 with a positive offset, or epoch seconds of 1e20, raises ``OverflowError`` or
``OSError`` in the standard library; those are caught here too.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
MAX_FUTURE_SKEW = timedelta(days=1)
"""How far ahead of our clock the time of something that happened may be (clock drift)."""
FAR_FUTURE = timedelta(days=3653)
"""How far ahead a scheduled or forecast time may be."""


def to_utc(value: datetime, *, ahead: timedelta = MAX_FUTURE_SKEW) -> datetime:
    """``value`` in UTC, if it has an offset and lies between 1970 and ``ahead`` from now."""
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError("time has no timezone offset (use e.g. 2026-11-28T10:00:00Z)")
    try:
        at = value.astimezone(UTC)
    except (OverflowError, ValueError):
        raise ValueError("time is out of range (before 1970)") from None
    if at < EARLIEST:
        raise ValueError("time is before 1970-01-01, not a plausible time")
    if at > datetime.now(UTC) + ahead:
        raise ValueError("time is more than a day in the future" if ahead == MAX_FUTURE_SKEW
                         else f"time is more than {ahead.days} days in the future")
    return at


def plausible_date(value: date, *, ahead: timedelta = MAX_FUTURE_SKEW) -> date:
    """``value`` if its first moment (midnight UTC) passes ``to_utc``'s bounds: a date of
    something that happened (a sign-up) lies between 1970-01-01 and a day ahead of today. A
    CRM sent `9999-12-31` and it was stored."""
    try:
        to_utc(datetime(value.year, value.month, value.day, tzinfo=UTC), ahead=ahead)
    except ValueError as exc:
        raise ValueError(str(exc).replace("time is", "date is", 1)) from None
    return value


READ_EARLIEST = datetime(1000, 1, 1, tzinfo=UTC)
READ_LATEST = datetime(9000, 1, 1, tzinfo=UTC)
"""Bounds of a time that only filters or positions a read (``asOf``, ``since``): far wider
than anything stored, yet a window of centuries can be subtracted from or added to it."""
MAX_OFFSET = timedelta(hours=18)
"""The widest offset Neo4j accepts (Java's ``ZoneOffset``); Python allows up to 24 hours."""


def representable(value: datetime) -> datetime:
    """``value`` unchanged if its offset is one Neo4j accepts and it falls between
    READ_EARLIEST and READ_LATEST; a naive time is left to the caller, who asks for an offset.

    For times that only filter or position a read, where any such time is a fair question.
    Beyond them the driver raised (``9999-12-31T23:59:59-14:00`` is year 10000 in UTC), Neo4j
    refused the message and dropped the connection (an offset of ``+23:59``), or a resolver's
    window arithmetic overflowed (``0001-01-01T00:00:00Z`` minus days)."""
    offset = value.utcoffset() if value.tzinfo is not None else None
    if offset is None:
        return value
    if abs(offset) > MAX_OFFSET:
        raise ValueError("time has an offset beyond ±18:00")
    try:
        at = value.astimezone(UTC)
    except (OverflowError, ValueError):
        at = None
    if at is None or not READ_EARLIEST <= at < READ_LATEST:
        raise ValueError("time is out of range (years 1000 to 8999 in UTC)")
    return value


def from_epoch(seconds: float) -> datetime:
    """Epoch seconds as an aware UTC time; NaN, infinities and out-of-range values refused."""
    try:
        return datetime.fromtimestamp(seconds, UTC)
    except (OverflowError, OSError, ValueError):
        raise ValueError("epoch seconds out of range") from None


def epoch_ms(at: datetime) -> int:
    """A checked time as epoch milliseconds, the form times travel to Neo4j in: the driver packs
    ``datetime`` objects about ten times slower than integers (the statements make DateTime
    values of them)."""
    return int(at.timestamp() * 1000)


def from_cypher_text(text: str) -> datetime:
    """A Neo4j ``DateTime`` a statement returned as text (``toString``) as the driver's
    ``to_native`` gives it: the same instant, offset and microseconds (finer digits cut off, as
    the driver cuts them). A zone id after the offset (``+01:00[Europe/Paris]``) is dropped: the
    offset already fixes the instant and what ``isoformat`` prints. The driver turns each
    temporal value it receives into Python in pure Python, many times the CPU of this parse;
    the chatbot's statement returns its times this way (docs/performance.md)."""
    return datetime.fromisoformat(text.split("[", 1)[0])
