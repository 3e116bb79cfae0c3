"""Reading event files (JSON Lines, CSV) into validated events or rejects, with line numbers."""

from __future__ import annotations

import csv
import io
import json
import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from pydantic import ValidationError

from graph import strictjson
from graph.errors import InvalidInput
from graph.events import ATTRIBUTE_PREFIX, Event, describe_validation_error
from graph.ingest.deadletter import SCRUB_CHARS
from graph.privacy import IDENTIFIER_KINDS

log = logging.getLogger(__name__)

ENVELOPE_COLUMNS = ("schema_version", "event_id", "type", "source", "occurred_at", "session_id")
PROFILE_COLUMNS = ("age_band", "gender", "locale", "demo_group")
LOCATION_COLUMNS = {"location_id": "id", "city": "city", "country": "country",
                    "lat": "lat", "lon": "lon"}


@dataclass(frozen=True)
class Reject:
    line: int
    reason: str
    raw: str


@dataclass(frozen=True)
class Parsed:
    line: int
    event: Event


Record = Parsed | Reject


def detect_format(path: Path) -> str:
    """The format of an input file, by its suffix, for every file source (events, CRM records):
    JSON Lines (``.jsonl``, ``.ndjson``, ``.json``) or CSV."""
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".ndjson", ".json"):
        return "jsonl"
    if suffix == ".csv":
        return "csv"
    raise InvalidInput(f"{path.name}: unknown file type {suffix!r}; use .jsonl, .ndjson or .csv")


class InvalidJson(ValueError):
    """A record that is not JSON; the message is the reject reason."""


def load_json(text: str | bytes) -> Any:
    """One record's JSON, for every line- or message-based source (files, Kafka, CRM).

    orjson rather than the standard library: with validation, parsing was the largest Python
    cost per streamed event, and orjson takes little more than half the time
    (``docs/performance.md``). It also refuses ``NaN`` and ``Infinity``, which are not JSON,
    and an object that repeats a key (``graph.strictjson``).
    """
    try:
        return strictjson.loads(text)
    except strictjson.JSONDecodeError as exc:
        raise InvalidJson(f"invalid JSON: {exc.msg} at column {exc.colno}") from None


def validate(line: int, data: Any, raw: str) -> Record:
    if not isinstance(data, dict):
        return Reject(line, "record is not a JSON object", raw)
    try:
        return Parsed(line, Event.model_validate(data))
    except ValidationError as exc:
        return Reject(line, describe_validation_error(exc.errors()), raw)
    except Exception as exc:  # noqa: BLE001 - one bad record must not stop a file or a stream
        # A value no validator anticipated (what OverflowError on year 1 was): a reject with
        # its kind of failure, never a crash that would make the record a poison pill.
        log.warning("record %s failed validation unexpectedly: %s", line, type(exc).__name__)
        return Reject(line, f"invalid record ({type(exc).__name__})", raw)


def read_jsonl(stream: BinaryIO, max_bytes: int) -> Iterator[Record]:
    return read_jsonl_lines(enumerate(stream, start=1), max_bytes)


def read_jsonl_lines(lines: Iterable[tuple[int, bytes]], max_bytes: int) -> Iterator[Record]:
    """``read_jsonl`` of numbered lines (the bulk import's records its fast path left)."""
    for number, line in lines:
        if len(line) > max_bytes:
            yield Reject(number, f"record is {len(line)} bytes, over the limit of {max_bytes}",
                         line[:SCRUB_CHARS].decode("utf-8", "replace"))
            continue
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError as exc:
            # As a Kafka message (graph.ingest.stream): a line in another encoding is refused,
            # not stored with its letters replaced by U+FFFD (a category "b\ufffdoks").
            yield Reject(number, f"not UTF-8: {exc.reason} at byte {exc.start}",
                         line[:SCRUB_CHARS].decode("utf-8", "replace"))
            continue
        # A byte order mark (a file's first line, or a file's that was appended) is not JSON.
        text = text.strip().removeprefix("\ufeff")
        if not text:
            continue
        try:
            data = load_json(text)
        except InvalidJson as exc:
            yield Reject(number, str(exc), text)
            continue
        yield validate(number, data, text)


def csv_row_to_envelope(row: dict[str, str]) -> dict[str, Any]:
    """Flat CSV columns to the envelope: ``user_<kind>`` identifiers, profile and device columns,
    ``attr_<name>`` declared profile attributes, and every other column a property. Empty cells
    are absent values."""
    data: dict[str, Any] = {}
    user: dict[str, str] = {}
    profile: dict[str, Any] = {}
    location: dict[str, Any] = {}
    device: dict[str, Any] = {}
    attributes: dict[str, Any] = {}
    props: dict[str, Any] = {}
    for column, value in row.items():
        if column is None or value is None or value == "":
            continue
        if column in ENVELOPE_COLUMNS:
            data[column] = value
        elif column.startswith("user_") and column[5:] in IDENTIFIER_KINDS:
            user[column[5:]] = value
        elif column in PROFILE_COLUMNS:
            profile[column] = value
        elif column in LOCATION_COLUMNS:
            location[LOCATION_COLUMNS[column]] = value
        elif column in ("device_id", "device_kind"):
            device[column.removeprefix("device_")] = value
        elif column.startswith(ATTRIBUTE_PREFIX):
            attributes[column.removeprefix(ATTRIBUTE_PREFIX)] = value
        else:
            props[column] = value
    data["user"] = user
    if location:
        profile["location"] = location
    if attributes:
        profile["attributes"] = attributes
    if profile:
        data["profile"] = profile
    if device:
        data["device"] = device
    data["properties"] = props
    return data


def csv_text(stream: BinaryIO) -> io.TextIOWrapper:
    """A CSV file's text. utf-8-sig: a byte order mark (Excel's "CSV UTF-8") would prefix the
    first column's name. Bytes that are not UTF-8 are kept as lone surrogates, so that
    ``not_utf8`` refuses the row holding them, as a JSONL line or a Kafka message is refused,
    rather than it being stored with its letters replaced by U+FFFD."""
    return io.TextIOWrapper(stream, encoding="utf-8-sig", errors="surrogateescape", newline="")


def not_utf8(row: dict[Any, Any]) -> str | None:
    """The reason to refuse a row of ``csv_text`` whose header or cells held bytes that are not
    UTF-8, or None."""
    cells = [c for pair in row.items() for c in pair if isinstance(c, str)]
    try:
        "\x00".join(cells).encode("utf-8")
    except UnicodeEncodeError:
        return "not UTF-8: a cell (or the header) holds bytes in another encoding"
    return None


def read_csv(stream: BinaryIO, max_bytes: int) -> Iterator[Record]:
    text = csv_text(stream)
    csv.field_size_limit(max_bytes)
    reader = csv.DictReader(text)
    while True:
        line = reader.line_num + 1
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            yield Reject(line, f"invalid CSV: {exc}", "")
            continue
        raw = json.dumps(row)  # whole: cut JSON could not be parsed to find its identifiers
        refused = not_utf8(row)
        if refused is not None:
            yield Reject(reader.line_num, refused, raw)
            continue
        if None in row:
            yield Reject(reader.line_num, "row has more cells than the header", raw)
            continue
        yield validate(reader.line_num, csv_row_to_envelope(row), raw)


def read_events(path: Path, max_bytes: int) -> Iterator[Record]:
    """Every record of the file in order, each either a validated event or a reject."""
    fmt = detect_format(path)
    if not path.is_file():
        raise InvalidInput(f"{path}: no such file")
    with path.open("rb") as stream:
        if fmt == "jsonl":
            yield from read_jsonl(stream, max_bytes)
        else:
            yield from read_csv(stream, max_bytes)
