"""The bulk import's fast path: JSON Lines records validated and prepared as columns (Polars)
instead of one ``Event`` at a time.

It accepts only records it can prove the event model (``graph.events``) accepts, and gives them
the values ``EventWriter.prepare`` would: every field of a known key and of the JSON type the
model reads without coercion, values inside the model's bounds with nothing for pydantic to strip,
times in the strict ISO 8601 form with an offset, amounts as plain decimals of at most two
places. Every other record (an unknown key, a number as a string, a time in another form, a
declared attribute, anything invalid) is left to the per-event path (``read_jsonl_lines`` and
``EventWriter.prepare``), which accepts or rejects it with the reason a ``personas ingest`` gives:
the fast path decides nothing the event model would decide otherwise, it only skips the model for
records that need none of its judgement.

Hashing (identifiers, device ids) and PII scrubbing (free text) run once per distinct value with
the pseudonymizer's own functions.
"""

from __future__ import annotations

import gc
import re
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from functools import partial
from itertools import chain, repeat
from typing import Any

import numpy as np
import orjson
import polars as pl

from graph.events import (
    AGE_BANDS,
    INSTEAD,
    MAX_KEY_CHARS,
    REQUIRED,
    SCHEMA_VERSION,
    Device,
    Event,
    EventType,
    Location,
    Profile,
    Properties,
    normalize_category,
)
from graph.privacy import IDENTIFIER_KINDS, Pseudonymizer
from graph.strictjson import may_repeat_a_key
from graph.times import EARLIEST, MAX_FUTURE_SKEW

EVENT_KEYS = frozenset(Event.model_fields)
PROPERTY_KEYS = frozenset(Properties.model_fields)
DEVICE_KEYS = frozenset(Device.model_fields)
# Declared attributes go to the per-event path: their names and values have rules of their own.
PROFILE_KEYS = frozenset(Profile.model_fields) - {"attributes"}
LOCATION_KEYS = frozenset(Location.model_fields)
KINDS = frozenset(IDENTIFIER_KINDS)
STR_PROPS = ("item_id", "item_name", "category", "brand", "order_id", "query", "text", "intent",
             "channel")
PROFILE_FIELDS = ("age_band", "gender", "locale", "demo_group")
"""The profile's own fields, in the model's order (``Profile.model_dump``)."""
# What str.strip() removes at either end: such a value is left to the model, which strips it.
EDGE_SPACE = r"^[\s\x1c-\x1f]|[\s\x1c-\x1f]$"
SHOWN = r"[!-~]"
"""A printable ASCII character, not a space: a value holding one shows something."""
TIME = r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,6})?(Z|[+-]\d{2}:\d{2})$"
TIME_FORMAT = "%Y-%m-%dT%H:%M:%S%.f%:z"
MONEY = r"^(0|[1-9]\d{0,11})(\.\d{1,2})?$"
EXACT_CENTS = 2**53
"""A line total in cents at most this is exact as a double, as the model's Decimal is."""
GENDERS = ("female", "male", "nonbinary", "undisclosed")
DEVICE_KINDS = ("desktop", "mobile", "tablet", "app", "voice")
LOCALE = r"^[a-z]{2}(-[A-Z]{2})?$"
RAW_SCHEMA: dict[str, Any] = {
    "line": pl.Int64, "event_id": pl.String, "type": pl.String, "source": pl.String,
    "occurred_at": pl.String, "session_id": pl.String, "schema_version": pl.Int64,
    **{f"id_{k}": pl.String for k in IDENTIFIER_KINDS},
    "device_raw": pl.String, "device_kind": pl.String, "has_device": pl.Boolean,
    "has_profile": pl.Boolean, **{f"profile_{k}": pl.String for k in PROFILE_FIELDS},
    "has_location": pl.Boolean, "loc_id": pl.String, "city": pl.String, "country": pl.String,
    "lat": pl.Float64, "lon": pl.Float64,
    **{k: pl.String for k in STR_PROPS},
    "price_raw": pl.String, "amount_raw": pl.String, "quantity": pl.Int64,
    "discount": pl.Float64, "rating": pl.Int64, "duration_s": pl.Float64,
}
EMPTY: dict[str, Any] = {}
STR_ONLY: frozenset[type] = frozenset({str})
DICT_ONLY: frozenset[type] = frozenset({dict})


def _shape_ok(d: Any) -> bool:
    """Every key known at every level, and the nested parts of the types the model reads."""
    if type(d) is not dict or not d.keys() <= EVENT_KEYS:
        return False
    user, p = d.get("user"), d.get("properties", EMPTY)
    dev, prof = d.get("device"), d.get("profile")
    loc = prof.get("location") if type(prof) is dict else None
    return bool(type(user) is dict and user and user.keys() <= KINDS
                and set(map(type, user.values())) == STR_ONLY
                and type(p) is dict and p.keys() <= PROPERTY_KEYS
                and (dev is None or (type(dev) is dict and dev.keys() <= DEVICE_KEYS))
                and (prof is None or (type(prof) is dict and prof.keys() <= PROFILE_KEYS))
                and (loc is None or (type(loc) is dict and loc.keys() <= LOCATION_KEYS)))


def _shapes_ok(ds: list[Any]) -> bool:
    """Whether ``_shape_ok`` holds for every record, checked a level at a time with loops that
    run in C (``map``, ``chain``): a block of well-formed records costs a fraction of checking
    them one by one."""
    def known(parts: list[Any], keys: frozenset[str]) -> bool:
        return (set(map(type, parts)) <= DICT_ONLY
                and keys.issuperset(chain.from_iterable(map(dict.keys, parts))))

    get = dict.get
    if not ds or set(map(type, ds)) != DICT_ONLY or not known(ds, EVENT_KEYS):
        return False
    users: list[Any] = list(map(get, ds, repeat("user")))
    if not (known(users, KINDS) and all(users)
            and set(map(type, chain.from_iterable(map(dict.values, users)))) == STR_ONLY):
        return False
    profiles = [x for x in map(get, ds, repeat("profile")) if x is not None]
    if not known(profiles, PROFILE_KEYS):
        return False
    return (known(list(map(get, ds, repeat("properties"), repeat(EMPTY))), PROPERTY_KEYS)
            and known([x for x in map(get, ds, repeat("device")) if x is not None], DEVICE_KEYS)
            and known([x for x in map(get, profiles, repeat("location")) if x is not None],
                      LOCATION_KEYS))


STR_KEYS = ("event_id", "type", "source", "occurred_at", "session_id", "id", "kind",
            *PROFILE_FIELDS, "city", "country", *STR_PROPS)
"""The fields the model reads as strings, at whichever level (``_shape_ok`` checks each level's
keys; ``id`` is both the device's and the location's)."""
INT_KEYS = ("schema_version", "quantity", "rating")
NUMBER_KEYS = ("lat", "lon", "discount", "duration_s")
MONEY_KEYS = ("price", "amount")
"""Decimals, taken as JSON strings or integers."""
DEFAULTED_KEYS = ("source", "schema_version", "quantity", "discount")
"""Fields with a default: absent they take it, an explicit null is the model's to judge."""


def _keys(names: Sequence[str]) -> str:
    return '[{,]"(?:' + "|".join(map(re.escape, names)) + ')":'


MISTYPED = "|".join([
    _keys(STR_KEYS) + '[^"n]',  # a number, boolean, object or list where a string is read
    _keys(DEFAULTED_KEYS) + "n",
    _keys(INT_KEYS + NUMBER_KEYS) + "[^-0-9n]",
    _keys(INT_KEYS + MONEY_KEYS) + "-?[0-9]+[.eE]",  # a float where an integer is read
    _keys(INT_KEYS + NUMBER_KEYS + MONEY_KEYS) + "-?[0-9]{19}",  # an integer past Int64
    _keys(MONEY_KEYS) + '[^-0-9"n]',
])
"""A value of a JSON type the model would coerce or refuse, found in the record as orjson writes
it again: no spaces, each key once, every quote inside a string escaped, so ``{"`` or ``,"``
then ``name":`` is always a key and the next character tells the value's type. Polars, which
builds the columns, would coerce such a value silently (a number to a string, a boolean to an
integer) or refuse the whole block (an integer past 64 bits)."""
JSON_SCHEMA: dict[str, Any] = {
    "event_id": pl.String, "type": pl.String, "source": pl.String, "occurred_at": pl.String,
    "session_id": pl.String, "schema_version": pl.Int64,
    "user": pl.Struct({k: pl.String for k in IDENTIFIER_KINDS}),
    "device": pl.Struct({"id": pl.String, "kind": pl.String}),
    "profile": pl.Struct({**{k: pl.String for k in PROFILE_FIELDS}, "location": pl.Struct({
        "id": pl.String, "city": pl.String, "country": pl.String, "lat": pl.Float64,
        "lon": pl.Float64})}),
    "properties": pl.Struct({**{k: pl.String for k in STR_PROPS}, "price": pl.String,
                             "amount": pl.String, "quantity": pl.Int64, "discount": pl.Float64,
                             "rating": pl.Int64, "duration_s": pl.Float64}),
}
"""The records' known fields as Polars builds them (integer amounts as their decimal text)."""


def flatten(lines: Sequence[tuple[int, bytes]], max_bytes: int,
            ) -> tuple[pl.DataFrame, list[tuple[int, bytes]]]:
    """The records whose shape and types the fast path knows, as raw columns (``RAW_SCHEMA``),
    and the lines left to the per-event path, in order. Blank lines are neither (the reader
    skips them).

    orjson parses each record as the per-event path does (no NaN, integers of at most 64 bits),
    its keys are checked level by level, and the record written again as orjson's canonical
    JSON, whose text ``MISTYPED`` checks for values of another type than the model reads (one
    regular expression over the block); a record that may repeat a key (its text and that
    JSON differ in colons, ``graph.strictjson``) is left to the per-event path, which refuses
    it. Polars then builds the
    columns from the records that passed (taking each field apart in Python was most of the
    staging's cost)."""
    numbers, records, slow = _parsed(lines, max_bytes)
    canonical = list(map(orjson.dumps, records))
    mistyped = pl.Series(canonical, dtype=pl.Binary).cast(pl.String).str.contains(MISTYPED)
    by_line = dict(lines)
    repeats = list(map(may_repeat_a_key, (by_line[n] for n in numbers), canonical))
    if any(repeats):
        mistyped = mistyped | pl.Series(repeats, dtype=pl.Boolean)
    if mistyped.any():
        kept = [(n, d) for n, d, bad in zip(numbers, records, mistyped, strict=True) if not bad]
        slow = sorted(slow + [(n, by_line[n]) for n, bad in zip(numbers, mistyped, strict=True)
                              if bad])
        numbers, records = [n for n, _ in kept], [d for _, d in kept]
    if not records:
        return pl.DataFrame(schema=RAW_SCHEMA), slow
    # strict=False: an integer amount is read as its decimal text.
    nested = pl.from_dicts(records, schema=JSON_SCHEMA, strict=False)
    user, device, profile, props = (pl.col(c) for c in ("user", "device", "profile",
                                                         "properties"))
    location = profile.struct.field("location")
    frame = nested.with_columns(line=pl.Series(numbers, dtype=pl.Int64)).select(
        "line", "event_id", "type", pl.col("source").fill_null("unknown"), "occurred_at",
        "session_id", pl.col("schema_version").fill_null(SCHEMA_VERSION),
        *(user.struct.field(k).alias(f"id_{k}") for k in IDENTIFIER_KINDS),
        device.struct.field("id").alias("device_raw"),
        device.struct.field("kind").alias("device_kind"),
        device.is_not_null().alias("has_device"), profile.is_not_null().alias("has_profile"),
        *(profile.struct.field(k).alias(f"profile_{k}") for k in PROFILE_FIELDS),
        location.is_not_null().fill_null(False).alias("has_location"),
        location.struct.field("id").alias("loc_id"),
        *(location.struct.field(k) for k in ("city", "country", "lat", "lon")),
        *(props.struct.field(k) for k in STR_PROPS),
        props.struct.field("price").alias("price_raw"),
        props.struct.field("amount").alias("amount_raw"),
        props.struct.field("quantity").fill_null(1),
        props.struct.field("discount").fill_null(0.0),
        *(props.struct.field(k) for k in ("rating", "duration_s")))
    return frame, slow


def _parsed(lines: Sequence[tuple[int, bytes]], max_bytes: int,
            ) -> tuple[list[int], list[Any], list[tuple[int, bytes]]]:
    """The lines' line numbers and records of a known shape, and the lines left to the
    per-event path. The whole block at once when every line is such a record (as nearly
    always), else line by line."""
    with _collector_paused():
        raws = [raw for _, raw in lines]
        if raws and max(map(len, raws)) <= max_bytes:
            try:
                records = list(map(orjson.loads, raws))
            except orjson.JSONDecodeError:
                records = []
            if _shapes_ok(records):
                return [n for n, _ in lines], records, []
        slow: list[tuple[int, bytes]] = []
        numbers: list[int] = []
        records = []
        loads = orjson.loads
        for number, raw in lines:
            if len(raw) > max_bytes:
                slow.append((number, raw))
                continue
            try:
                d = loads(raw)
            except orjson.JSONDecodeError:
                if raw.strip():
                    slow.append((number, raw))
                continue
            if _shape_ok(d):
                numbers.append(number)
                records.append(d)
            else:
                slow.append((number, raw))
    return numbers, records, slow


@contextmanager
def _collector_paused() -> Iterator[None]:
    """Python's cyclic garbage collector off while a block's records are parsed: each record's
    dicts are new containers, and the collections they set off cost as much as the parsing
    (none of them is a cycle)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _key(name: str, *, required: bool = False, identifier: bool = False) -> pl.Expr:
    """A ``graph.events.Key`` the model takes as it is: 1 to 200 characters, nothing to strip,
    a printable ASCII character among them (so surely not blank: values without one are left
    to the model's ``graph.privacy.blank``). Not an ``identifier`` (a ``graph.events.Id``):
    without an "@" too, so that the model judges any that might hold an email address."""
    col = pl.col(name)
    ok = (col.str.len_chars().is_between(1, MAX_KEY_CHARS) & ~col.str.contains(EDGE_SPACE)
          & col.str.contains(SHOWN))
    if not identifier:
        ok = ok & ~col.str.contains("@", literal=True)
    return (col.is_not_null() & ok) if required else (col.is_null() | ok)


def _short_text(name: str) -> pl.Expr:
    col = pl.col(name)
    return col.is_null() | ((col.str.len_chars() <= 4000) & ~col.str.contains(EDGE_SPACE))


def _within(name: str, low: float, high: float) -> pl.Expr:
    return pl.col(name).is_null() | pl.col(name).is_between(low, high)


def _cents(name: str) -> pl.Expr:
    """A checked decimal amount in whole cents."""
    parts = pl.col(name).str.split_exact(".", 1)
    whole = parts.struct.field("field_0").cast(pl.Int64)
    fraction = parts.struct.field("field_1").fill_null("").str.pad_end(2, "0")
    return whole * 100 + fraction.cast(pl.Int64, strict=False).fill_null(0)


def _decimal(cents: pl.Expr) -> pl.Expr:
    """Whole cents as the double nearest the decimal, as ``float(Decimal)`` gives it: parsed from
    its text (Polars divides a column by a constant as a multiplication by its inverse, which
    misses the nearest double by one bit for some amounts)."""
    text = ((cents // 100).cast(pl.String) + "."
            + (cents % 100).cast(pl.String).str.pad_start(2, "0"))
    return text.cast(pl.Float64)


def _epoch_ms(us: pl.Series) -> pl.Series:
    """Epoch microseconds as ``graph.times.epoch_ms`` gives milliseconds: float seconds times a
    thousand, truncated. With numpy, whose division by a constant is a division (see
    ``_decimal``): a millisecond off changes an event's time and every aggregate over it."""
    seconds = us.cast(pl.Float64).to_numpy() / 1e6
    return pl.Series((seconds * 1000.0).astype(np.int64))


def _required(kind: EventType) -> pl.Expr:
    """The properties the type needs are there (``Event._required_properties``)."""
    ok = pl.lit(True)
    for name in REQUIRED[kind]:
        column = {"price": "price_raw"}.get(name, name)
        present = pl.col(column).is_not_null()
        if name in INSTEAD:
            present = present | pl.col(f"{INSTEAD[name]}_raw").is_not_null()
        ok = ok & present
    return (pl.col("type") != kind.value) | ok


def accepted() -> pl.Expr:
    """What the event model accepts of the raw columns, as one mask."""
    money = [pl.col(c).is_null() | pl.col(c).str.contains(MONEY)
             for c in ("price_raw", "amount_raw")]
    located = ~pl.col("has_location") | (
        _key("loc_id", required=True) & _key("city")
        & (pl.col("country").is_null() | pl.col("country").str.contains(r"^[A-Za-z]{2}$"))
        & _within("lat", -90, 90) & _within("lon", -180, 180))
    checks = [
        _key("event_id", required=True),
        pl.col("type").is_in([t.value for t in EventType]),
        _key("source", required=True),
        pl.col("occurred_at").str.contains(TIME).fill_null(False),
        _key("session_id"), pl.col("schema_version") == SCHEMA_VERSION,
        *(_key(f"id_{k}", identifier=True) for k in IDENTIFIER_KINDS),
        ~pl.col("has_device") | _key("device_raw", required=True, identifier=True),
        pl.col("device_kind").is_null() | pl.col("device_kind").is_in(DEVICE_KINDS),
        pl.col("profile_age_band").is_null() | pl.col("profile_age_band").is_in(AGE_BANDS),
        pl.col("profile_gender").is_null() | pl.col("profile_gender").is_in(GENDERS),
        pl.col("profile_locale").is_null() | pl.col("profile_locale").str.contains(LOCALE),
        _key("profile_demo_group"), located,
        *(_key(k) for k in ("item_id", "category", "brand", "order_id", "intent", "channel")),
        *(_short_text(k) for k in ("item_name", "query", "text")), *money,
        _within("quantity", 1, 10_000), _within("discount", 0, 1), _within("rating", 1, 5),
        _within("duration_s", 0, 86_400),
        *(_required(kind) for kind in EventType),
    ]
    mask = pl.lit(True)
    for check in checks:
        mask = mask & check.fill_null(False)
    return mask


def _mapped(column: str, function: Callable[[str], str], frame: pl.DataFrame) -> pl.Expr:
    """``column`` through ``function``, called once per distinct value."""
    distinct = frame.get_column(column).drop_nulls().unique().to_list()
    return pl.col(column).replace_strict({v: function(v) for v in distinct},
                                         default=None, return_dtype=pl.String)


def prepare(raw: pl.DataFrame, pseudonymizer: Pseudonymizer,
            ) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    """The accepted records as the bulk import's staged columns (events, profiles, locations),
    and the lines of the rest, for the model to judge (anything outside the checks above, times
    out of range, line totals too large to be exact)."""
    ok = accepted()
    rejected = raw.filter(~ok).select("line")
    raw = raw.filter(ok)
    now = datetime.now(UTC) + MAX_FUTURE_SKEW
    at = pl.col("occurred_at").str.replace(r"Z$", "+00:00").str.to_datetime(
        TIME_FORMAT, time_unit="us", strict=False)
    raw = raw.with_columns(
        at_us=at.dt.epoch("us"),
        price_cents=_cents("price_raw"), amount_cents=_cents("amount_raw"))
    total_cents = pl.coalesce(pl.col("amount_cents"), pl.col("price_cents") * pl.col("quantity"))
    in_range = (pl.col("at_us").is_not_null()
                & (pl.col("at_us") >= int(EARLIEST.timestamp() * 1_000_000))
                & (pl.col("at_us") <= int(now.timestamp() * 1_000_000))
                & (total_cents.is_null() | (total_cents < EXACT_CENTS))).fill_null(False)
    judged = pl.concat([rejected, raw.filter(~in_range).select("line")])
    raw = raw.filter(in_range)
    digests: dict[str, pl.Expr] = {}
    for kind in IDENTIFIER_KINDS:
        column = f"id_{kind}"
        digests[kind] = _mapped(column, partial(pseudonymizer.digest, kind), raw)
    hashed = raw.with_columns(**{f"h_{k}": e for k, e in digests.items()})
    pairs = pl.concat_str([pl.lit(f"{k}:") + pl.col(f"h_{k}") for k in IDENTIFIER_KINDS],
                          separator="|", ignore_nulls=True)
    new_uid = pl.coalesce([pl.lit("u_") + pl.col(f"h_{k}").str.slice(0, 20)
                           for k in IDENTIFIER_KINDS])
    has_total = total_cents.is_not_null()
    price = _decimal(pl.col("price_cents"))
    at_ms = pl.col("at_us").map_batches(_epoch_ms, return_dtype=pl.Int64)
    discount = pl.col("discount").cast(pl.Float64)
    events = hashed.select(
        "line", at_ms.alias("at"), pairs.alias("pairs"), new_uid.alias("new_uid"),
        "session_id", pl.coalesce("channel", "source").alias("session_channel"),
        "device_kind", "item_name",
        pl.when(pl.col("price_raw").is_not_null() & (discount == 0)).then(price)
        .alias("item_price"), "has_profile",
        "event_id", "type", "source", "item_id",
        _mapped("category", normalize_category, hashed).alias("category"),
        "brand", "order_id", "intent", "rating", "duration_s", "channel",
        pl.when(has_total).then(price).alias("price"),
        pl.when(has_total).then(pl.col("quantity")).alias("quantity"),
        _decimal(total_cents).alias("amount"),
        pl.when(discount != 0).then(discount).alias("discount"),
        _mapped("text", pseudonymizer.scrub_text, hashed).alias("text"),
        _mapped("query", pseudonymizer.scrub_text, hashed).alias("query"),
        _mapped("device_raw", pseudonymizer.device_id, hashed).alias("device_id"),
    )
    with_profile = raw.filter(pl.col("has_profile"))
    profiles = pl.concat([
        with_profile.filter(pl.col(f"profile_{k}").is_not_null()).select(
            "line", pl.lit(k).alias("key"), pl.col(f"profile_{k}").alias("value"))
        for k in PROFILE_FIELDS]).sort("line", maintain_order=True)
    locations = raw.filter(pl.col("has_location")).select(
        "line", "loc_id", "city", pl.col("country").str.to_uppercase(), "lat", "lon")
    return events, profiles, locations, judged
