"""The declarative CRM field mapping (YAML) and the parsing of one CRM record through it.

A mapping names the CRM (``source``, recorded as provenance), the column holding each record's
last-modified time (``timestamp``), and for every column its ``target`` and ``type``:

```yaml
source: acme-crm
timestamp: updated_at
columns:
  customer_no: {target: crm_id, type: string}
  email: {target: email}
  tier: {target: tier, type: enum, values: [bronze, silver, gold]}
  ltv: {target: lifetime_value, type: decimal}
  job: {target: attr_occupation}
  zip: {target: attr_postal_code}
ignore: [notes]
```

Besides the fixed targets (``TARGETS``), a column may feed a declared profile attribute,
``attr_<name>`` (``target_of``): text, stored on the user as ``attr_<name>`` (as events'
``profile.attributes`` are) after the PII policy of ``Pseudonymizer.attribute_value`` (a postal
code coarsened). Names follow ``graph.events.check_attribute_name``; at most ``MAX_ATTRIBUTES``
a mapping.

Everything that can be checked without data is checked when the mapping loads (unknown target,
unknown type, a type the target cannot hold, enum values the target refuses); any problem is an
``InvalidInput`` naming the column, raised before anything is written.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from graph.errors import InvalidInput
from graph.events import (
    ATTRIBUTE_PREFIX,
    BLANK_MESSAGE,
    MAX_ATTRIBUTE_CHARS,
    MAX_ATTRIBUTES,
    Profile,
    check_attribute_name,
    describe_validation_error,
)
from graph.privacy import IDENTIFIER_KINDS, Pseudonymizer, blank
from graph.times import from_epoch, plausible_date, to_utc

MAX_MAPPING_BYTES = 1_000_000
MAX_TEXT = 500


class ColumnType(StrEnum):
    STRING = "string"
    INT = "int"
    DECIMAL = "decimal"
    DATE = "date"
    DATETIME = "datetime"
    BOOL = "bool"
    ENUM = "enum"


TargetKind = Literal["identifier", "field", "pii", "location", "attribute"]


def _profile_check(name: str) -> Callable[[Any], Any]:
    """Values of the profile fields events carry too are held to the event envelope's rules."""

    def check(value: Any) -> Any:
        try:
            Profile.model_validate({name: value})
        except ValidationError as exc:
            raise ValueError(describe_validation_error(exc.errors()).split(": ", 1)[-1]) from None
        return value

    return check


def _country(value: Any) -> Any:
    if not re.fullmatch(r"[A-Za-z]{2}", str(value)):
        raise ValueError("expected a two-letter ISO 3166 country code")
    return str(value).upper()


def _non_negative(value: Any) -> Any:
    if value < 0:
        raise ValueError("must not be negative")
    return value


@dataclass(frozen=True)
class Target:
    """Where a column's values go and which column types may feed it."""

    name: str
    kind: TargetKind
    types: frozenset[ColumnType]
    check: Callable[[Any], Any] | None = None
    description: str = ""

    @property
    def sensitive(self) -> bool:
        """Identifiers and names: their values are never stored, logged or echoed in plaintext."""
        return self.kind in ("identifier", "pii")


TEXT = frozenset({ColumnType.STRING, ColumnType.ENUM})
_TARGET_LIST = [
    *(Target(kind, "identifier", frozenset({ColumnType.STRING, ColumnType.INT}),
             description=f"identifier `{kind}` (stored as a keyed HMAC)")
      for kind in IDENTIFIER_KINDS),
    Target("age_band", "field", TEXT, _profile_check("age_band"), "under-18, 18-24 ... 65+"),
    Target("gender", "field", TEXT, _profile_check("gender"),
           "female, male, nonbinary, undisclosed"),
    Target("locale", "field", TEXT, _profile_check("locale"), "e.g. en-GB"),
    Target("location_id", "location", TEXT, description="links the user to (:Location {id})"),
    Target("city", "location", TEXT, description="city of the user's location"),
    Target("country", "location", TEXT, _country, "ISO 3166 alpha-2"),
    Target("first_name", "pii", TEXT, description="stored only as a keyed HMAC"),
    Target("last_name", "pii", TEXT, description="stored only as a keyed HMAC"),
    Target("tier", "field", TEXT, description="loyalty or marketing tier"),
    Target("lifetime_value", "field", frozenset({ColumnType.DECIMAL, ColumnType.INT}),
           _non_negative, "customer lifetime value (non-negative)"),
    Target("loyalty_points", "field", frozenset({ColumnType.INT}), _non_negative,
           "loyalty points balance"),
    Target("marketing_opt_in", "field", frozenset({ColumnType.BOOL}),
           description="consent to marketing"),
    Target("signup_date", "field", frozenset({ColumnType.DATE}),
           description="when the customer signed up"),
]
TARGETS: dict[str, Target] = {t.name: t for t in _TARGET_LIST}
"""Every fixed target a mapping may name (declared attributes besides: ``target_of``)."""


def _attribute_length(value: Any) -> Any:
    if len(str(value)) > MAX_ATTRIBUTE_CHARS:
        raise ValueError(f"longer than {MAX_ATTRIBUTE_CHARS} characters")
    return value


@functools.cache
def _attribute_target(name: str) -> Target:
    return Target(name, "attribute", TEXT, _attribute_length,
                  "a declared profile attribute, stored on the user under this name")


def attribute_problem(target: str) -> str | None:
    """Why ``attr_<name>`` cannot name a declared attribute, or None if it can."""
    try:
        check_attribute_name(target.removeprefix(ATTRIBUTE_PREFIX))
    except ValueError as exc:
        return str(exc)
    return None


def target_of(name: str) -> Target | None:
    """The target ``name`` names: a fixed one (``TARGETS``) or a declared attribute
    ``attr_<name>``; None for neither."""
    target = TARGETS.get(name)
    if target is not None or not isinstance(name, str) or not name.startswith(ATTRIBUTE_PREFIX):
        return target
    return _attribute_target(name) if attribute_problem(name) is None else None


class Column(BaseModel):
    model_config = ConfigDict(extra="forbid")

    target: str
    type: str = ColumnType.STRING.value
    values: list[str] | None = None
    """The allowed values of an ``enum`` column."""


class FieldMapping(BaseModel):
    """A validated mapping file. Use ``load_mapping`` or ``parse_mapping`` to build one."""

    model_config = ConfigDict(extra="forbid")

    source: str = Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_.:-]+$")
    timestamp: str = Field(min_length=1)
    columns: dict[str, Column]
    ignore: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _check(self) -> FieldMapping:
        problems: list[str] = []
        seen: dict[str, str] = {}
        attributes = 0
        for name, col in self.columns.items():
            target = target_of(col.target)
            if target is None and col.target.startswith(ATTRIBUTE_PREFIX):
                problems.append(f"column {name!r}: target {col.target!r}: "
                                f"{attribute_problem(col.target)}")
                continue
            if target is None:
                problems.append(f"column {name!r}: unknown target {col.target!r}; expected one "
                                f"of {', '.join(TARGETS)}, or attr_<name> for a declared "
                                "attribute")
                continue
            if target.kind == "attribute":
                attributes += 1
            if col.target in seen:
                problems.append(f"column {name!r}: target {col.target!r} is already fed by "
                                f"column {seen[col.target]!r}")
            seen[col.target] = name
            if col.type not in ColumnType.__members__.values():
                problems.append(f"column {name!r}: unknown type {col.type!r}; expected one of "
                                f"{', '.join(t.value for t in ColumnType)}")
                continue
            ctype = ColumnType(col.type)
            if ctype not in target.types:
                problems.append(f"column {name!r}: target {col.target!r} cannot hold type "
                                f"{col.type!r}; use {' or '.join(sorted(target.types))}")
            if ctype is ColumnType.ENUM:
                if not col.values:
                    problems.append(f"column {name!r}: type 'enum' needs a list of `values`")
                elif target.check is not None:
                    for value in col.values:
                        try:
                            target.check(value)
                        except ValueError as exc:
                            problems.append(f"column {name!r}: enum value {value!r} does not "
                                            f"fit target {col.target!r} ({exc})")
            elif col.values is not None:
                problems.append(f"column {name!r}: `values` only goes with type 'enum'")
        if self.timestamp in self.columns:
            problems.append(f"column {self.timestamp!r} is the timestamp column; it needs no "
                            "entry under `columns`")
        for name in self.ignore:
            if name in self.columns or name == self.timestamp:
                problems.append(f"column {name!r} is both ignored and mapped")
        if attributes > MAX_ATTRIBUTES:
            problems.append(f"{attributes} columns feed declared attributes; at most "
                            f"{MAX_ATTRIBUTES}")
        if not any(TARGETS[c.target].kind == "identifier" for c in self.columns.values()
                   if c.target in TARGETS):
            problems.append("no column maps to an identifier "
                            f"({', '.join(IDENTIFIER_KINDS)}); records could not find their user")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def column_type(self, name: str) -> ColumnType:
        return ColumnType(self.columns[name].type)

    def known_columns(self) -> set[str]:
        return {*self.columns, self.timestamp, *self.ignore}

    def unknown_columns(self, names: Any) -> list[str]:
        known = self.known_columns()
        return sorted(str(n) for n in names if n not in known)


def parse_mapping(data: Any, *, origin: str = "mapping") -> FieldMapping:
    """A mapping from decoded YAML/JSON; ``InvalidInput`` naming the problem otherwise."""
    if not isinstance(data, dict):
        raise InvalidInput(f"{origin}: expected a mapping with source, timestamp and columns")
    try:
        return FieldMapping.model_validate(data)
    except ValidationError as exc:
        raise InvalidInput(f"{origin}: {_mapping_errors(exc)}") from None


def _mapping_errors(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err.get("loc", ()))
        msg = str(err.get("msg", "invalid")).removeprefix("Value error, ")
        if err.get("type") == "extra_forbidden":
            msg = "unknown key (check its spelling)"
        parts.append(f"{loc}: {msg}" if loc else msg)
    return "; ".join(parts)


def load_mapping(path: Path) -> FieldMapping:
    """Read and validate a mapping file."""
    if not path.is_file():
        raise InvalidInput(f"{path}: no such mapping file")
    with path.open("rb") as handle:  # at most the limit, whatever the file's size
        text = handle.read(MAX_MAPPING_BYTES + 1)
    if len(text) > MAX_MAPPING_BYTES:
        raise InvalidInput(f"{path}: mapping file over {MAX_MAPPING_BYTES} bytes")
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise InvalidInput(f"{path}: not valid YAML ({exc})") from None
    return parse_mapping(data, origin=str(path))


# ---------------------------------------------------------------------------------------------
# Records


@dataclass
class CrmRecord:
    """One CRM record, parsed and pseudonymized: nothing in it is plaintext PII."""

    at: datetime
    identifiers: list[tuple[str, str]]
    """(kind, HMAC) pairs, most authoritative kind first."""
    new_user_id: str
    """The id a new user gets when none of the identifiers is known."""
    fields: dict[str, Any] = field(default_factory=dict)
    """Target name -> value (names of people as HMACs)."""


_TRUE = {"true", "1", "yes", "y", "t"}
_FALSE = {"false", "0", "no", "n", "f"}


def _empty(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def convert(ctype: ColumnType, value: Any, values: list[str] | None = None) -> Any:
    """A CSV cell or JSON value as the column's type; ValueError says why not (without the
    value, which the caller adds when it is not sensitive)."""
    if ctype in (ColumnType.STRING, ColumnType.ENUM):
        if isinstance(value, bool) or not isinstance(value, str | int):
            raise ValueError("expected text")
        text = str(value).strip()
        if blank(text):  # empty cells are skipped before; this one only looks empty
            raise ValueError(BLANK_MESSAGE)
        if len(text) > MAX_TEXT:
            raise ValueError(f"longer than {MAX_TEXT} characters")
        if ctype is ColumnType.ENUM and text not in (values or []):
            raise ValueError(f"not one of {values}")
        return text
    if ctype is ColumnType.INT:
        if isinstance(value, bool):
            raise ValueError("expected an integer")
        if isinstance(value, int):
            return value
        if isinstance(value, str) and re.fullmatch(r"\s*[+-]?\d{1,18}\s*", value):
            return int(value)
        raise ValueError("expected an integer")
    if ctype is ColumnType.DECIMAL:
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            raise ValueError("expected a decimal number")
        try:
            number = Decimal(str(value).strip())
        except InvalidOperation:
            raise ValueError("expected a decimal number") from None
        if not number.is_finite():
            raise ValueError("expected a finite decimal number")
        try:
            cents = number.quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)
        except InvalidOperation:  # past the context's 28 digits (-1e308 answered 500)
            raise ValueError("a decimal number out of range") from None
        return float(cents)
    if ctype is ColumnType.BOOL:
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
        raise ValueError("expected true or false")
    if ctype is ColumnType.DATE:
        if not isinstance(value, str):
            raise ValueError("expected a date (YYYY-MM-DD)")
        try:
            day = date.fromisoformat(value.strip())
        except ValueError:
            raise ValueError("expected a date (YYYY-MM-DD)") from None
        return plausible_date(day)
    if ctype is ColumnType.DATETIME:
        return parse_timestamp(value)
    raise ValueError(f"unsupported type {ctype}")  # pragma: no cover - the enum is exhaustive


def parse_timestamp(value: Any) -> datetime:
    """An ISO 8601 time with an offset (or epoch seconds), in UTC, at most a day ahead."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        at = from_epoch(value)
    elif isinstance(value, str):
        try:
            at = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError:
            raise ValueError("expected an ISO 8601 time, e.g. 2026-11-28T10:00:00Z") from None
        if at.tzinfo is None or at.utcoffset() is None:
            raise ValueError("time has no timezone offset (use e.g. 2026-11-28T10:00:00Z)")
    else:
        raise ValueError("expected an ISO 8601 time")
    return to_utc(at)


def parse_record(mapping: FieldMapping, data: Any, pseudonymizer: Pseudonymizer) -> CrmRecord:
    """One record (column -> value) through the mapping. ``InvalidInput`` names the column at
    fault; the values of identifier and name columns are never part of a message."""
    if not isinstance(data, dict):
        raise InvalidInput("record is not a JSON object")
    unknown = mapping.unknown_columns(data)
    if unknown:
        raise InvalidInput(f"unknown column(s) {unknown}: not in the mapping (map them, or list "
                           "them under `ignore`)")
    raw_at = data.get(mapping.timestamp)
    if _empty(raw_at):
        raise InvalidInput(f"column {mapping.timestamp!r}: the record's timestamp is missing")
    try:
        at = parse_timestamp(raw_at)
    except ValueError as exc:
        raise InvalidInput(f"column {mapping.timestamp!r}: {exc}") from None
    plain_ids: dict[str, str] = {}
    fields: dict[str, Any] = {}
    for name, col in mapping.columns.items():
        value = data.get(name)
        if _empty(value):
            continue
        target = _target(col.target)
        try:
            converted = convert(ColumnType(col.type), value, col.values)
            if target.check is not None:
                converted = target.check(converted)
        except ValueError as exc:
            shown = "" if target.sensitive else f" {_short(value)!r}"
            raise InvalidInput(f"column {name!r} ({col.target}, {col.type}):{shown} {exc}"
                               ) from None
        if target.kind == "identifier":
            plain_ids[col.target] = str(converted)
        elif target.kind == "pii":
            fields[col.target] = pseudonymizer.digest(col.target, str(converted))
        elif target.kind == "attribute":
            fields[col.target] = pseudonymizer.attribute_value(
                col.target.removeprefix(ATTRIBUTE_PREFIX), str(converted))
        else:
            fields[col.target] = converted
    if not plain_ids:
        id_columns = sorted(n for n, c in mapping.columns.items()
                            if TARGETS[c.target].kind == "identifier")
        raise InvalidInput(f"the record has no identifier value (in columns {id_columns})")
    ordered = [(k, plain_ids[k]) for k in IDENTIFIER_KINDS if k in plain_ids]
    first_kind, first_value = ordered[0]
    return CrmRecord(
        at=at,
        identifiers=[(k, pseudonymizer.digest(k, v)) for k, v in ordered],
        new_user_id=pseudonymizer.user_id(first_kind, first_value),
        fields=fields,
    )


def _target(name: str) -> Target:
    """The target of a column of a validated mapping (which names only existing ones)."""
    target = target_of(name)
    if target is None:  # pragma: no cover - FieldMapping refuses unknown targets
        raise InvalidInput(f"unknown target {name!r}")
    return target


def _short(value: Any) -> str:
    text = str(value)
    return text if len(text) <= 60 else text[:57] + "..."


def redact(mapping: FieldMapping, data: Any, pseudonymizer: Pseudonymizer) -> dict[str, Any]:
    """A record fit for a dead letter: identifier and name values become pseudonym tokens, and
    the values of columns the mapping does not know (which might hold anything) are dropped."""
    if not isinstance(data, dict):
        return {"record": "[not a JSON object]"}
    out: dict[str, Any] = {}
    for name, value in data.items():
        col = mapping.columns.get(name) if isinstance(name, str) else None
        target = target_of(col.target) if col is not None else None
        if target is not None and target.kind == "attribute" and isinstance(value, str | int) \
                and not isinstance(value, bool):
            # As it would be stored: a postal code coarsened, contact details pseudonymized.
            out[str(name)] = pseudonymizer.attribute_value(
                target.name.removeprefix(ATTRIBUTE_PREFIX), str(value)[:MAX_TEXT])
        elif name == mapping.timestamp or (target is not None and target.kind != "attribute"
                                           and not target.sensitive):
            out[str(name)] = value if isinstance(value, str | int | float | bool) else str(value)
        elif col is not None and target is not None and target.kind != "attribute" \
                and not _empty(value):
            token = pseudonymizer.digest(col.target, str(value))[:10]
            out[str(name)] = f"[{col.target}:{token}]"
        else:
            out[str(name)] = "[not imported]"
    return out


def dead_letter_raw(mapping: FieldMapping, data: Any, pseudonymizer: Pseudonymizer) -> str:
    """The raw text a dead letter is made from: the redacted record, plus its identifier values
    under ``user``, which ``graph.ingest.deadletter`` turns into pseudonym tokens and into the
    ``kind:hash`` keys by which a user's dead letters are found (export, erasure)."""
    out: dict[str, Any] = redact(mapping, data, pseudonymizer)
    if isinstance(data, dict) and "user" not in data:
        ids = {}
        for name, col in mapping.columns.items():
            target = target_of(col.target)
            value = data.get(name)
            if target is not None and target.kind == "identifier" and isinstance(value, str | int) \
                    and not isinstance(value, bool) and not _empty(value):
                ids[col.target] = str(value).strip()
        if ids:
            out["user"] = ids
    return json.dumps(out, default=str)


def _natural_type(target: Target) -> ColumnType:
    for preferred in (ColumnType.STRING, ColumnType.DECIMAL, ColumnType.INT, ColumnType.BOOL,
                      ColumnType.DATE):
        if preferred in target.types:
            return preferred
    return sorted(target.types)[0]


@functools.cache
def direct_mapping(source: str) -> FieldMapping:
    """A mapping whose columns are the targets themselves (``email``, ``tier``, ...) with
    timestamp ``at``: how the API's `upsertUser` feeds records through the CRM path."""
    return parse_mapping({
        "source": source, "timestamp": "at",
        "columns": {name: {"target": name, "type": _natural_type(t).value}
                    for name, t in TARGETS.items()},
    }, origin=f"{source} mapping")
