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

from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from functools import partial
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
from graph.times import EARLIEST, MAX_FUTURE_SKEW

NONE = type(None)
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
STR_OR_NONE: frozenset[type] = frozenset({str, NONE})
INT_OR_NONE: frozenset[type] = frozenset({int, NONE})
NUMBER_OR_NONE: frozenset[type] = frozenset({int, float, NONE})
# What str.strip() removes at either end: such a value is left to the model, which strips it.
EDGE_SPACE = r"^[\s\x1c-\x1f]|[\s\x1c-\x1f]$"
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
INT_ONLY: frozenset[type] = frozenset({int})
NUMBER: frozenset[type] = frozenset({int, float})
MONEY_TYPES: frozenset[type] = frozenset({str, int, NONE})


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


def _typed(values: list[Any], allowed: frozenset[type], bad: list[bool]) -> list[Any]:
    """``values`` with those of another type than ``allowed`` marked in ``bad`` (and blanked):
    one pass in C when every value has an allowed type, as nearly always."""
    if set(map(type, values)) <= allowed:
        return values
    out = []
    for i, v in enumerate(values):
        if type(v) in allowed:
            out.append(v)
        else:
            bad[i] = True
            out.append(None)
    return out


def flatten(lines: Sequence[tuple[int, bytes]], max_bytes: int,
            ) -> tuple[pl.DataFrame, list[tuple[int, bytes]]]:
    """The records whose shape the fast path knows, as raw columns (``RAW_SCHEMA``; ``typed``
    false where a value is of a type the model would coerce or refuse), and the lines left to
    the per-event path. Blank lines are neither (the reader skips them).

    Column by column (one comprehension each) rather than record by record: a loop appending
    each record's values cost most of the staging."""
    slow: list[tuple[int, bytes]] = []
    numbers: list[int] = []
    ds: list[Any] = []
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
            ds.append(d)
        else:
            slow.append((number, raw))
    bad = [False] * len(ds)
    props = [d.get("properties", EMPTY) for d in ds]
    devs = [d.get("device") for d in ds]
    profs = [d.get("profile") for d in ds]
    locs = [p.get("location") if p is not None else None for p in profs]
    users = [d["user"] for d in ds]

    def top(key: str, allowed: frozenset[type] = STR_OR_NONE, default: Any = None) -> list[Any]:
        return _typed([d.get(key, default) for d in ds], allowed, bad)

    def part(parts: list[Any], key: str, allowed: frozenset[type] = STR_OR_NONE,
             default: Any = None) -> list[Any]:
        return _typed([x.get(key, default) if x is not None else None for x in parts],
                      allowed, bad)

    def money(key: str) -> list[Any]:
        values = part(props, key, MONEY_TYPES)
        return [str(v) if type(v) is int else v for v in values]

    cols: dict[str, list[Any]] = {
        "line": numbers, "event_id": top("event_id"), "type": top("type"),
        "source": top("source", STR_ONLY, "unknown"), "occurred_at": top("occurred_at"),
        "session_id": top("session_id"),
        "schema_version": top("schema_version", INT_ONLY, SCHEMA_VERSION),
        **{f"id_{k}": [u.get(k) for u in users] for k in IDENTIFIER_KINDS},
        "device_raw": part(devs, "id"), "device_kind": part(devs, "kind"),
        "has_device": [x is not None for x in devs], "has_profile": [x is not None for x in profs],
        **{f"profile_{k}": part(profs, k) for k in PROFILE_FIELDS},
        "has_location": [x is not None for x in locs], "loc_id": part(locs, "id"),
        "city": part(locs, "city"), "country": part(locs, "country"),
        "lat": part(locs, "lat", NUMBER_OR_NONE), "lon": part(locs, "lon", NUMBER_OR_NONE),
        **{k: part(props, k) for k in STR_PROPS},
        "price_raw": money("price"), "amount_raw": money("amount"),
        "quantity": part(props, "quantity", INT_ONLY, 1),
        "discount": part(props, "discount", NUMBER, 0.0),
        "rating": part(props, "rating", INT_OR_NONE),
        "duration_s": part(props, "duration_s", NUMBER_OR_NONE),
        "typed": bad,
    }
    frame = pl.DataFrame(cols, schema={**RAW_SCHEMA, "typed": pl.Boolean}, strict=False)
    return frame.with_columns(~pl.col("typed")), slow


def _key(name: str, *, required: bool = False) -> pl.Expr:
    """A ``graph.events.Key`` the model takes as it is: 1 to 200 characters, nothing to strip."""
    col = pl.col(name)
    ok = col.str.len_chars().is_between(1, MAX_KEY_CHARS) & ~col.str.contains(EDGE_SPACE)
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
        pl.col("typed"), _key("event_id", required=True),
        pl.col("type").is_in([t.value for t in EventType]),
        _key("source", required=True),
        pl.col("occurred_at").str.contains(TIME).fill_null(False),
        _key("session_id"), pl.col("schema_version") == SCHEMA_VERSION,
        *(_key(f"id_{k}") for k in IDENTIFIER_KINDS),
        ~pl.col("has_device") | _key("device_raw", required=True),
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
