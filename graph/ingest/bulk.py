"""Bulk history import: an event history worked out in Python, written as CSV for
``neo4j-admin database import full`` into an empty database (behind ``personas import --bulk``).

Each file is read and validated by the transactional path's own reader (``read_events``), and
each event made ready by its writer's ``EventWriter.prepare`` (identifiers hashed, PII scrubbed,
the device's id pseudonymized), so rejects carry the same reasons and interactions the same
properties. Files are staged in parallel, one process each. What the writer's batches add up to
(users' counters, sessions, items, ``INTERACTED``, decayed inferred and explicit preferences,
identifiers) is then computed over the whole history at once with Polars, and each node label and
relationship type written to one CSV file with a typed header.

The transactional path's rules, applied to the whole history:

- an event id seen again is a duplicate (the first in file order wins);
- users are resolved in file order: an event whose identifiers are all new makes a user named
  after its most authoritative identifier; a later event naming one of them is that user's, and
  links its other identifiers to them. An event naming identifiers of two users would make the
  writer merge them (``graph/identity``): the bulk import refuses such a history
  (``IdentityConflict``) before anything is stopped, and the transactional import loads it;
- values that are last-write-wins (profile fields, an item's name and price, a user's location,
  ratings, explicit preferences) are taken from the latest event by time, file order breaking
  ties: what the writer does for a history whose files are in time order. Per session the
  channel and device kind are the first event's;
- inferred preference scores are the sum of each event's interest decayed to the latest event of
  the user and category, and their weights each category's share after decaying every score to
  the user's latest (the closed form of the writer's incremental decay; equal to rounding).
"""

from __future__ import annotations

import multiprocessing
import re
import resource
import shlex
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import islice
from pathlib import Path
from typing import Any, cast

import polars as pl

from graph.aggregates.rules import COUNTER, DECAY_PER_MS, INTEREST_SCORE
from graph.db import Graph
from graph.errors import InvalidInput
from graph.events import ATTRIBUTE_PREFIX, MAX_USER_ATTRIBUTES, Event, EventType
from graph.ingest import columnar
from graph.ingest.deadletter import DeadLetter, DeadLetterFile, DeadLetterStore
from graph.ingest.files import default_dead_letter_path
from graph.ingest.reader import Parsed, Record, detect_format, read_events, read_jsonl_lines
from graph.ingest.writer import EventWriter
from graph.privacy import Pseudonymizer

PREPARE_CHUNK = 5_000
"""Events handed to ``EventWriter.prepare`` at a time."""
LINE_BLOCK = 200_000
"""Lines of a JSON Lines file validated as columns at a time (``columnar``): bounds the
staging's memory whatever the file's size."""
INTERACTION_PROPERTIES: dict[str, str] = {
    "event_id": "string", "type": "string", "source": "string", "item_id": "string",
    "category": "string", "brand": "string", "order_id": "string", "intent": "string",
    "rating": "long", "duration_s": "double", "channel": "string", "price": "double",
    "quantity": "long", "amount": "double", "discount": "double", "text": "string",
    "query": "string", "device_id": "string",
}
"""Every property ``EventWriter.prepare`` may give an Interaction, with its import type."""
_POLARS_TYPES: dict[str, Any] = {"string": pl.String, "long": pl.Int64, "double": pl.Float64}
DATETIME_FORMAT = "%Y-%m-%dT%H:%M:%S%.3fZ"
EMPTY_DATABASE = "RETURN EXISTS { MATCH (n) WHERE NOT n:Migration } AS held"
AWAIT_INDEXES = "CALL db.awaitIndexes($seconds)"
INDEX_WAIT_S = 3_600
"""The migrations' indexes are populated over the imported graph before the transactional path
carries on: its look-ups need them."""
# neo4j-admin imports an empty list as no property; the writer stores dead letters naming no
# identifier with an empty list.
EMPTY_IDENTIFIERS = "MATCH (d:DeadLetter) WHERE d.identifiers IS NULL SET d.identifiers = []"
ARRAY_DELIMITER = ";"
PAIRS = "|"
"""Between an event's ``kind:hash`` identifier pairs while staging (one string, not a list:
a list per event cost more than validating it)."""
"""Between the elements of a list property in the CSV files (dead letters' identifiers: hex
pseudonyms, which never hold it)."""


class IdentityConflict(InvalidInput):
    """The history names identifiers of two users in one event: those users would be merged."""


@dataclass(frozen=True)
class StagedFile:
    """One file read, validated and prepared: its events as columns, its rejects stored."""

    path: Path
    records: int
    parsed: int
    """Valid records, duplicates included (``events`` holds each event id once)."""
    events: pl.DataFrame
    profiles: pl.DataFrame
    locations: pl.DataFrame
    dead_letters: pl.DataFrame
    dead_letter_path: Path | None


@dataclass(frozen=True)
class ImportFile:
    """One CSV file for ``neo4j-admin``: ``--nodes=<label>=<path>`` or
    ``--relationships=<type>=<path>``."""

    kind: str
    """``nodes`` or ``relationships``."""
    name: str
    path: Path
    rows: int
    multiline: bool = False
    """Whether a value in it holds a line break (only such files are parsed as multi-line:
    ``neo4j-admin`` reads the others in parallel chunks)."""

    def argument(self) -> str:
        return f"--{self.kind}={self.name}={self.path}"


@dataclass
class BulkPlan:
    """What the import will write, and the files that hold it."""

    records: int = 0
    events: int = 0
    duplicates: int = 0
    rejected: int = 0
    dead_letter_paths: list[Path] = field(default_factory=list)
    files: list[ImportFile] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    """Wall seconds per phase (``stage_s``, ``compute_s``, ...)."""
    cpu: dict[str, float] = field(default_factory=dict)
    """CPU seconds per phase: this process's threads and the children it waited for in it
    (staging workers, ``neo4j-admin``), and any other process's given to ``phase``."""

    @contextmanager
    def phase(self, name: str, other: Callable[[], float] | None = None) -> Iterator[None]:
        """Time the block as ``name``: wall seconds, and CPU seconds (``other``: CPU seconds
        so far of a process this one does not wait for, such as a Neo4j server)."""
        before = (time.perf_counter(), process_cpu(), other() if other else 0.0)
        yield
        self.timings[name] = time.perf_counter() - before[0]
        self.cpu[name] = (process_cpu() - before[1]
                          + ((other() - before[2]) if other else 0.0))

    def report(self) -> str:
        """The phases as ``name=wall s (cpu CPU s)``."""
        return "  ".join(f"{k}={v:.1f} ({self.cpu.get(k, 0.0):.1f} CPU s)"
                         for k, v in self.timings.items())

    def count(self, name: str) -> int:
        return sum(f.rows for f in self.files if f.name == name)

    def arguments(self) -> list[str]:
        """``neo4j-admin database import full`` options, to follow the database's name (an
        option taking several files would take a name after it for one more)."""
        # The report of bad entries goes beside the files, not into the working directory.
        report = self.files[0].path.with_name("import.report") if self.files else None
        return ["--overwrite-destination=true", *self.multiline_arguments(),
                *([f"--report-file={report}"] if report else []),
                f"--array-delimiter={ARRAY_DELIMITER}", "--id-type=integer",
                *(f.argument() for f in self.files)]

    def multiline_arguments(self) -> list[str]:
        """The files whose values hold line breaks, named as multi-line (``v2``); none named,
        every file is read as single-line CSV, which ``neo4j-admin`` splits between its
        threads (``--multiline-fields=true`` reads every file in one thread). A path that
        holds the list's comma makes it ``true`` for all."""
        paths = [str(f.path) for f in self.files if f.multiline]
        if not paths:
            return []
        if any("," in p for p in paths):
            return ["--multiline-fields=true"]
        return ["--multiline-fields-format=v2", f"--multiline-fields={','.join(paths)}"]

    def command(self, database: str) -> str:
        """The command an operator runs with their own Neo4j's ``neo4j-admin``."""
        return shlex.join(["neo4j-admin", "database", "import", "full", database,
                           *self.arguments()])


def process_cpu() -> float:
    """CPU seconds of this process (all its threads) and of the children it has waited for."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def require_empty(graph: Graph) -> None:
    """Refuse a database holding anything but migration records: the import replaces it."""
    if graph.rows(EMPTY_DATABASE)[0]["held"]:
        raise InvalidInput(
            "the bulk import needs an empty database (it replaces the database whole); this "
            "one holds data. Load into it with `personas ingest`, or wipe it first.")


class _Collected(DeadLetterStore):
    """Keeps the dead letters of a staged file for the import instead of writing them."""

    def __init__(self) -> None:  # no graph: nothing is written here
        self.batch_size = 1_000
        self.letters: list[DeadLetter] = []

    def record(self, letters: Sequence[DeadLetter]) -> int:
        self.letters.extend(letters)
        return len(letters)


def stage_file(index: int, path: Path, pseudonymizer: Pseudonymizer, max_line_bytes: int,
               dead_letter: Path | None = None, *, fast: bool = True) -> StagedFile:
    """Read, validate and prepare one file (runs in a worker process). Rejects go to the
    dead-letter file as with ``personas ingest`` (named after the file unless given), and come
    back as rows for ``DeadLetter`` nodes. JSON Lines records go through ``columnar`` first
    (``fast``), which leaves the per-event path only what it cannot prove valid."""
    # prepare() needs no graph: it hashes and scrubs.
    writer = EventWriter(cast(Graph, None), pseudonymizer)
    store = _Collected()
    dl = DeadLetterFile(dead_letter or default_dead_letter_path(path), str(path), pseudonymizer,
                        store)
    schemas: dict[str, dict[str, Any]] = {
        "events": {"line": pl.Int64, "at": pl.Int64, "pairs": pl.String,
                   "new_uid": pl.String, "session_id": pl.String, "session_channel": pl.String,
                   "device_kind": pl.String, "item_name": pl.String, "item_price": pl.Float64,
                   "has_profile": pl.Boolean,
                   **{k: _POLARS_TYPES[t] for k, t in INTERACTION_PROPERTIES.items()}},
        "profiles": {"line": pl.Int64, "key": pl.String, "value": pl.String},
        "locations": {"line": pl.Int64, "loc_id": pl.String, "city": pl.String,
                      "country": pl.String, "lat": pl.Float64, "lon": pl.Float64},
    }
    # Columns are built a chunk at a time and kept as frames: Python lists of a whole file's
    # values would hold gigabytes.
    frames: dict[str, list[pl.DataFrame]] = {name: [] for name in schemas}
    events: list[tuple[Any, ...]] = []
    profiles: dict[str, list[Any]] = {name: [] for name in schemas["profiles"]}
    locations: dict[str, list[Any]] = {name: [] for name in schemas["locations"]}
    records = parsed = 0
    chunk: list[tuple[int, Event]] = []

    def flush() -> None:
        # prepare() keeps the first of a chunk's duplicates, as the whole history is
        # de-duplicated later (in file order).
        prepared = writer.prepare([e for _, e in chunk])
        seen: set[str] = set()
        for line, e in chunk:
            if e.event_id in seen:
                continue
            seen.add(e.event_id)
            row = prepared.rows[e.event_id]
            p = e.properties
            kind, value = e.identifiers()[0]
            props = row.props
            events.append((
                line, row.at, PAIRS.join(f"{k}:{h}" for k, h in prepared.hashed[e.event_id]),
                pseudonymizer.user_id(kind, value), e.session_id, p.channel or e.source,
                e.device.kind if e.device else None, p.item_name,
                float(p.price) if p.price is not None and not p.discount else None,
                e.profile is not None, *[props.get(key) for key in INTERACTION_PROPERTIES]))
            if e.profile is not None:
                fields = e.profile.model_dump(exclude_none=True,
                                              exclude={"location", "attributes"})
                for name, attr in (e.profile.attributes or {}).items():
                    fields[ATTRIBUTE_PREFIX + name] = pseudonymizer.attribute_value(name, attr)
                for key, val in fields.items():
                    profiles["line"].append(line)
                    profiles["key"].append(key)
                    profiles["value"].append(val)
                loc = e.profile.location
                if loc is not None:
                    for key, val in (("line", line), ("loc_id", loc.id), ("city", loc.city),
                                     ("country", loc.country), ("lat", loc.lat),
                                     ("lon", loc.lon)):
                        locations[key].append(val)
        chunk.clear()
        frames["events"].append(pl.DataFrame(events, schema=schemas["events"], orient="row"))
        events.clear()
        for name, values in (("profiles", profiles), ("locations", locations)):
            frames[name].append(pl.DataFrame(values, schema=schemas[name]))
            for column in values.values():
                column.clear()

    def per_event(found: Iterable[Record]) -> None:
        nonlocal records, parsed
        for record in found:
            records += 1
            if isinstance(record, Parsed):
                parsed += 1
                chunk.append((record.line, record.event))
                if len(chunk) >= PREPARE_CHUNK:
                    flush()
            else:
                dl.write(record.line, record.reason, record.raw)
        flush()

    try:
        if not fast or detect_format(path) != "jsonl":
            per_event(read_events(path, max_line_bytes))
        else:
            for block in _line_blocks(path):
                raw, slow = columnar.flatten(block, max_line_bytes)
                events_, profiles_, locations_, judged = columnar.prepare(raw, pseudonymizer)
                for name, frame in (("events", events_), ("profiles", profiles_),
                                    ("locations", locations_)):
                    frames[name].append(frame.select(
                        pl.col(c).cast(t) for c, t in schemas[name].items()))
                records += events_.height
                parsed += events_.height
                if judged.height:
                    again = set(judged.get_column("line").to_list())
                    slow = sorted(slow + [(n, b) for n, b in block if n in again])
                per_event(read_jsonl_lines(slow, max_line_bytes))
    finally:
        dl.close()
    file = pl.lit(index, pl.Int64).alias("file")
    tables = {name: pl.concat(parts).with_columns(file) if parts
              else pl.DataFrame(schema=schemas[name]).with_columns(file)
              for name, parts in frames.items()}
    letters = pl.DataFrame(
        [d.as_row() for d in store.letters],
        schema={"id": pl.String, "source": pl.String, "position": pl.String,
                "reason": pl.String, "record": pl.String, "identifiers": pl.List(pl.String),
                "truncated": pl.Boolean, "at": pl.Int64}, orient="row")
    return StagedFile(
        path, records, parsed, tables["events"], tables["profiles"], tables["locations"],
        letters, dl.path if dl.count else None)


def _line_blocks(path: Path) -> Iterator[list[tuple[int, bytes]]]:
    """A file's numbered lines, ``LINE_BLOCK`` at a time (read and numbered in C)."""
    if not path.is_file():
        raise InvalidInput(f"{path}: no such file")
    with path.open("rb") as stream:
        first = 1
        while raws := list(islice(stream, LINE_BLOCK)):
            yield list(zip(range(first, first + len(raws)), raws, strict=True))
            first += len(raws)


def stage_files(paths: Sequence[Path], pseudonymizer: Pseudonymizer, max_line_bytes: int, *,
                workers: int, dead_letter: Path | None = None) -> list[StagedFile]:
    """``stage_file`` for each path, in ``workers`` processes (1: in this one)."""
    if dead_letter is not None and len(paths) > 1:
        raise InvalidInput("one dead-letter path for several files: leave it out, each file's "
                           "rejects then go beside it")
    if workers <= 1 or len(paths) == 1:
        return [stage_file(i, p, pseudonymizer, max_line_bytes, dead_letter)
                for i, p in enumerate(paths)]
    # Spawned, not forked: a fork of a process whose Polars (or driver) threads hold a lock
    # copies the lock held and the child waits for ever (seen in the suite: a staging worker
    # forked after earlier Polars work never started).
    with ProcessPoolExecutor(max_workers=workers,
                             mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = [pool.submit(stage_file, i, p, pseudonymizer, max_line_bytes)
                   for i, p in enumerate(paths)]
        return [f.result() for f in futures]


def resolve_users(events: pl.DataFrame) -> tuple[pl.Series, pl.DataFrame]:
    """Each event's user and the identifier links, in file order as the writer resolves them
    (``EventWriter._resolve_users``); ``IdentityConflict`` for an event naming two users.

    A loop over the events, not a columnar expression: who an identifier names depends on every
    event before it. Returns the user id per event and the links (kind:hash, user, at).
    """
    owner: dict[str, str] = {}
    users: list[str] = []
    link_pair: list[str] = []
    link_user: list[str] = []
    link_at: list[int] = []
    for joined, new_uid, at, event_id in zip(events["pairs"].to_list(),
                                            events["new_uid"].to_list(),
                                            events["at"].to_list(),
                                            events["event_id"].to_list(), strict=True):
        pairs = joined.split(PAIRS)
        owners = {owner[p] for p in pairs if p in owner}
        if len(owners) > 1:
            raise IdentityConflict(
                f"event {event_id} names identifiers of {len(owners)} users seen before it: "
                "the transactional import merges them (personas ingest); the bulk import "
                "does not")
        uid = owners.pop() if owners else new_uid
        users.append(uid)
        for p in pairs:
            if p not in owner:
                owner[p] = uid
                link_pair.append(p)
                link_user.append(uid)
                link_at.append(at)
    return (pl.Series("user_id", users, pl.String),
            pl.DataFrame({"pair": link_pair, "user_id": link_user, "at": link_at},
                         schema={"pair": pl.String, "user_id": pl.String, "at": pl.Int64}))


def _ms(column: str) -> pl.Expr:
    """An epoch-millisecond column as the import's datetime text (UTC)."""
    return pl.from_epoch(pl.col(column), time_unit="ms").dt.strftime(DATETIME_FORMAT)


def _last(column: str) -> pl.Expr:
    """The last non-null value of a group sorted by (at, pos)."""
    return pl.col(column).drop_nulls().last()


def build_tables(staged: Sequence[StagedFile]) -> tuple[dict[str, pl.DataFrame], int, int]:
    """The graph's nodes and relationships as tables (name -> frame with typed CSV headers),
    with the number of unique events and of duplicates."""
    events = pl.concat([s.events for s in staged]).sort(["file", "line"])
    total = sum(s.parsed for s in staged)
    events = events.unique(subset=["event_id"], keep="first", maintain_order=True)
    events = events.with_row_index("pos").with_columns(pl.col("pos").cast(pl.Int64))
    user_ids, links = resolve_users(events)
    ev = events.with_columns(user_id=user_ids).drop("pairs", "new_uid").sort(["at", "pos"])
    keys = ev.select("file", "line", "pos", "at", "user_id")

    tables: dict[str, pl.DataFrame] = {}
    purchase = pl.col("type") == EventType.PURCHASE.value
    counters = [
        (pl.col("type") == t.value).sum().cast(pl.Int64).alias(name) for t, name in COUNTER.items()]
    users = ev.group_by("user_id", maintain_order=True).agg(
        pl.col("at").min().alias("first_seen"), pl.col("at").max().alias("last_seen"),
        pl.len().cast(pl.Int64).alias("events"), *counters,
        pl.col("amount").filter(purchase).sum().cast(pl.Float64).alias("spend"),
        pl.col("at").filter(pl.col("has_profile")).max().alias("profile_updated_at"))
    profile = _profiles(staged, keys)
    users = users.join(profile, on="user_id", how="left")
    now = datetime.now(UTC).strftime(DATETIME_FORMAT.replace("%.3f", ".000"))
    tables["User"] = users.with_columns(
        _ms("first_seen"), _ms("last_seen"), _ms("profile_updated_at"),
        created_at=pl.lit(now)).rename({
            "user_id": "id:ID(User)", "first_seen": "first_seen:datetime",
            "last_seen": "last_seen:datetime", "events": "events:long",
            **{name: f"{name}:long" for name in COUNTER.values()},
            "spend": "spend:double", "profile_updated_at": "profile_updated_at:datetime",
            "created_at": "created_at:datetime"})

    kind_hash = pl.col("pair").str.split_exact(":", 1)
    ids = links.with_columns(kind_hash.struct.field("field_0").alias("kind"),
                             kind_hash.struct.field("field_1").alias("hash"))
    tables["Identifier"] = ids.select(
        pl.col("pair").alias(":ID(Identifier)"), "kind", "hash",
        _ms("at").alias("first_seen:datetime"))
    tables["IDENTIFIES"] = ids.select(pl.col("pair").alias(":START_ID(Identifier)"),
                                      pl.col("user_id").alias(":END_ID(User)"))

    _locations(staged, keys, tables)
    devices = ev.filter(pl.col("device_id").is_not_null())
    tables["Device"] = devices.group_by("device_id", maintain_order=True).agg(
        _last("device_kind")).select(
        pl.col("device_id").alias("id:ID(Device)"), pl.col("device_kind").alias("kind"))
    tables["USES"] = devices.select("user_id", "device_id").unique(maintain_order=True).select(
        pl.col("user_id").alias(":START_ID(User)"), pl.col("device_id").alias(":END_ID(Device)"))

    tables["Category"] = ev.select(pl.col("category").drop_nulls().unique().sort()).select(
        pl.col("category").alias("name:ID(Category)"))
    tables["Brand"] = ev.select(pl.col("brand").drop_nulls().unique().sort()).select(
        pl.col("brand").alias("name:ID(Brand)"))
    with_item = ev.filter(pl.col("item_id").is_not_null())
    items = with_item.group_by("item_id", maintain_order=True).agg(
        _last("item_name"), _last("item_price"), _last("category"), _last("brand"))
    tables["Item"] = items.select(pl.col("item_id").alias("id:ID(Item)"),
                                  pl.col("item_name").alias("name"),
                                  pl.col("item_price").alias("price:double"),
                                  pl.col("category"))  # as UPSERT_ITEMS: with its edge
    tables["IN_CATEGORY"] = items.filter(pl.col("category").is_not_null()).select(
        pl.col("item_id").alias(":START_ID(Item)"), pl.col("category").alias(":END_ID(Category)"))
    tables["OF_BRAND"] = items.filter(pl.col("brand").is_not_null()).select(
        pl.col("item_id").alias(":START_ID(Item)"), pl.col("brand").alias(":END_ID(Brand)"))

    in_session = ev.filter(pl.col("session_id").is_not_null())
    tables["Session"] = in_session.group_by("session_id", maintain_order=True).agg(
        pl.col("at").min().alias("started_at"), pl.col("at").max().alias("ended_at"),
        pl.len().cast(pl.Int64).alias("events"), pl.col("session_channel").first(),
        pl.col("device_kind").first()).select(
        pl.col("session_id").alias("id:ID(Session)"), _ms("started_at").alias(
            "started_at:datetime"), _ms("ended_at").alias("ended_at:datetime"),
        pl.col("events").alias("events:long"), pl.col("session_channel").alias("channel"),
        pl.col("device_kind"))
    starts = in_session.group_by("session_id").agg(pl.col("at").min().alias("started_at"))
    tables["HAD_SESSION"] = in_session.select("user_id", "session_id").unique(
        maintain_order=True).join(starts, on="session_id", how="left",
                                  maintain_order="left").select(
        pl.col("user_id").alias(":START_ID(User)"),
        pl.col("session_id").alias(":END_ID(Session)"),
        pl.col("user_id"), _ms("started_at").alias("started_at:datetime"))

    node = pl.col("pos").cast(pl.String)
    tables["Interaction"] = ev.select(
        node.alias(":ID(Interaction)"),
        *(pl.col(k).alias(k if t == "string" else f"{k}:{t}")
          for k, t in INTERACTION_PROPERTIES.items()),
        _ms("at").alias("at:datetime"),
        pl.lit(now).alias("recorded_at:datetime"),  # as the transactional path's datetime()
        pl.col("user_id"), pl.col("session_id"))  # as CREATE_INTERACTIONS: index keys
    tables["PERFORMED"] = ev.select(pl.col("user_id").alias(":START_ID(User)"),
                                    node.alias(":END_ID(Interaction)"))
    tables["IN_SESSION"] = in_session.select(node.alias(":START_ID(Interaction)"),
                                             pl.col("session_id").alias(":END_ID(Session)"))
    tables["ON_ITEM"] = with_item.select(node.alias(":START_ID(Interaction)"),
                                         pl.col("item_id").alias(":END_ID(Item)"))
    tables["ABOUT"] = ev.filter(pl.col("item_id").is_null() & pl.col("category").is_not_null()
                                ).select(node.alias(":START_ID(Interaction)"),
                                         pl.col("category").alias(":END_ID(Category)"))

    _interacted(with_item, tables)
    _preferences(ev, tables)
    letters = pl.concat([s.dead_letters for s in staged]).unique(
        subset=["id"], keep="first", maintain_order=True)
    tables["DeadLetter"] = letters.select(
        pl.col("id").alias("id:ID(DeadLetter)"), "source", "position", "reason", "record",
        pl.col("identifiers").list.join(ARRAY_DELIMITER).alias("identifiers:string[]"),
        pl.col("truncated").alias("truncated:boolean"), _ms("at").alias("at:datetime"))
    return tables, events.height, total - events.height


def _profiles(staged: Sequence[StagedFile], keys: pl.DataFrame) -> pl.DataFrame:
    """Per user, each profile field's latest value; declared attributes bounded to the first
    ``MAX_USER_ATTRIBUTES`` names the user held (as ``UPSERT_USERS`` keeps them)."""
    rows = pl.concat([s.profiles for s in staged]).join(keys, on=["file", "line"], how="inner")
    latest = rows.sort(["at", "pos"]).group_by(["user_id", "key"], maintain_order=True).agg(
        pl.col("value").last(), pl.col("pos").first().alias("first_pos"),
        pl.col("at").first().alias("first_at"))
    is_attr = pl.col("key").str.starts_with(ATTRIBUTE_PREFIX)
    kept = pl.concat([
        latest.filter(~is_attr),
        latest.filter(is_attr).sort(["first_at", "first_pos"]).filter(
            pl.int_range(pl.len()).over("user_id") < MAX_USER_ATTRIBUTES)])
    if kept.is_empty():
        return pl.DataFrame(schema={"user_id": pl.String})
    return kept.pivot(on="key", index="user_id", values="value")


def _locations(staged: Sequence[StagedFile], keys: pl.DataFrame,
               tables: dict[str, pl.DataFrame]) -> None:
    rows = pl.concat([s.locations for s in staged]).join(keys, on=["file", "line"], how="inner"
                                                          ).sort(["at", "pos"])
    tables["Location"] = rows.group_by("loc_id", maintain_order=True).agg(
        _last("city"), _last("country"), _last("lat"), _last("lon")).select(
        pl.col("loc_id").alias("id:ID(Location)"), "city", "country",
        pl.col("lat").alias("lat:double"), pl.col("lon").alias("lon:double"))
    tables["LOCATED_IN"] = rows.group_by("user_id", maintain_order=True).agg(
        pl.col("loc_id").last(), pl.col("at").last()).select(
        pl.col("user_id").alias(":START_ID(User)"), pl.col("loc_id").alias(":END_ID(Location)"),
        _ms("at").alias("at:datetime"))


def _interacted(with_item: pl.DataFrame, tables: dict[str, pl.DataFrame]) -> None:
    """``INTERACTED`` per user and item (``UPDATE_INTERACTED``): the latest rating stands, with
    its user's id and whether it was bought or liked; and the items' buyer, unit and user
    counters."""
    kind = pl.col("type")
    purchase = kind == EventType.PURCHASE.value
    rated = (kind == EventType.FEEDBACK.value) & pl.col("rating").is_not_null()
    agg = with_item.group_by(["user_id", "item_id"], maintain_order=True).agg(
        (kind == EventType.PAGE_VIEW.value).sum().cast(pl.Int64).alias("views"),
        (kind == EventType.ADD_TO_CART.value).sum().cast(pl.Int64).alias("carts"),
        pl.col("quantity").filter(purchase).sum().cast(pl.Int64).alias("purchases"),
        pl.col("amount").filter(purchase).fill_null(0.0).sum().cast(pl.Float64).alias("spend"),
        pl.col("at").min().alias("first_at"), pl.col("at").max().alias("last_at"),
        pl.col("rating").filter(rated).last().alias("rating"),
        pl.col("at").filter(rated).last().alias("rated_at"))
    tables["INTERACTED"] = agg.select(
        pl.col("user_id").alias(":START_ID(User)"), pl.col("item_id").alias(":END_ID(Item)"),
        pl.col("views").alias("views:long"), pl.col("carts").alias("carts:long"),
        pl.col("purchases").alias("purchases:long"), pl.col("spend").alias("spend:double"),
        _ms("first_at").alias("first_at:datetime"), _ms("last_at").alias("last_at:datetime"),
        pl.col("rating").alias("rating:long"), _ms("rated_at").alias("rated_at:datetime"),
        pl.col("user_id"),
        (((pl.col("purchases") > 0) | (pl.col("rating").fill_null(0) >= 4))
         & (pl.col("rating").fill_null(3) > 2)).alias("bought_or_liked:boolean"))
    # Each item's buyers and units (UPDATE_INTERACTED's counters): none before a purchase.
    counters = agg.filter(pl.col("purchases") > 0).group_by("item_id").agg(
        pl.len().cast(pl.Int64).alias("buyers:long"),
        pl.col("purchases").sum().cast(pl.Int64).alias("units:long"))
    tables["Item"] = tables["Item"].join(
        counters.rename({"item_id": "id:ID(Item)"}), on="id:ID(Item)", how="left",
        maintain_order="left")
    # And its users (who interacted with it at all): none before the first.
    users = agg.group_by("item_id").agg(pl.len().cast(pl.Int64).alias("users:long"))
    tables["Item"] = tables["Item"].join(
        users.rename({"item_id": "id:ID(Item)"}), on="id:ID(Item)", how="left",
        maintain_order="left")


def _preferences(ev: pl.DataFrame, tables: dict[str, pl.DataFrame]) -> None:
    """Inferred ``PREFERS`` (decayed scores, normalized weights) and explicit ones (feedback
    naming a category and no item; the latest stands)."""
    interest = pl.col("type").replace_strict({t.value: s for t, s in INTEREST_SCORE.items()},
                                             return_dtype=pl.Float64)
    cat = ev.filter(pl.col("category").is_not_null())
    latest = pl.col("at").max().over(["user_id", "category"])
    inferred = cat.with_columns(
        contrib=interest * (-(DECAY_PER_MS) * (latest - pl.col("at")).cast(pl.Float64)).exp()
    ).group_by(["user_id", "category"], maintain_order=True).agg(
        pl.col("contrib").sum().alias("score"), pl.col("at").max().alias("updated_at"))
    ref = pl.col("updated_at").max().over("user_id")
    now = pl.col("score") * (-(DECAY_PER_MS) * (ref - pl.col("updated_at")).cast(pl.Float64)).exp()
    total = now.sum().over("user_id")
    inferred = inferred.with_columns(
        weight=pl.when(total > 0).then(now / total).otherwise(0.0))
    explicit = cat.filter((pl.col("type") == EventType.FEEDBACK.value)
                          & pl.col("rating").is_not_null() & pl.col("item_id").is_null()
                          ).group_by(["user_id", "category"], maintain_order=True).agg(
        pl.col("rating").last(), pl.col("at").last().alias("updated_at"))
    ends = (pl.col("user_id").alias(":START_ID(User)"),
            pl.col("category").alias(":END_ID(Category)"))
    tables["PREFERS"] = pl.concat([
        inferred.select(*ends, pl.lit("inferred").alias("source"),
                        pl.col("score").alias("score:double"),
                        _ms("updated_at").alias("updated_at:datetime"),
                        pl.col("weight").alias("weight:double")),
        explicit.select(*ends, pl.lit("explicit").alias("source"),
                        pl.lit(None, pl.Float64).alias("score:double"),
                        _ms("updated_at").alias("updated_at:datetime"),
                        ((pl.col("rating") - 3) / 2.0).alias("weight:double")),
    ])


NODE_ID = re.compile(r"^(?P<property>\w*):ID\((?P<group>\w+)\)$")
"""A node table's id column (``id:ID(User)``; no property name: the id is not stored)."""
END_ID = re.compile(r"^:(?:START|END)_ID\((?P<group>\w+)\)$")


class BrokenGraph(ValueError):
    """The computed tables name a node twice, or a relationship names a node none holds: a
    fault of this module, stopped before ``neo4j-admin`` runs."""


def number_nodes(tables: dict[str, pl.DataFrame]) -> dict[str, pl.DataFrame]:
    """The tables with every node's import id a number (its row) and the relationships' ends
    named by it, for ``--id-type=integer``: ``neo4j-admin`` then maps numbers, not strings
    (hashes of up to 70 characters), to the nodes it writes. A node's id property, when it has
    one, stays as it was (``id:ID(User)`` becomes ``id`` beside ``:ID(User)``)."""
    numbered: dict[str, pl.DataFrame] = {}
    keys: dict[str, pl.DataFrame] = {}
    for name, frame in tables.items():
        if name.isupper():
            continue
        column, match = next((c, m) for c in frame.columns if (m := NODE_ID.match(c)))
        group = match["group"]
        number = pl.int_range(pl.len(), dtype=pl.Int64)
        key = frame.select(pl.col(column).alias("key"), number.alias("number"))
        if key.get_column("key").is_duplicated().any():
            raise BrokenGraph(f"{name}: a node id appears twice")
        keys[group] = key
        rest = ([pl.col(column).alias(match["property"])] if match["property"] else [])
        numbered[name] = frame.select(number.alias(f":ID({group})"), *rest,
                                      pl.exclude(column))
    for name, frame in tables.items():
        if not name.isupper():
            continue
        for column in frame.columns:
            if not (end := END_ID.match(column)):
                continue
            ends = frame.join(keys[end["group"]], left_on=column, right_on="key", how="left",
                              maintain_order="left").get_column("number")
            if ends.null_count():
                raise BrokenGraph(f"{name}: {ends.null_count()} relationship(s) name a "
                                  f"{end['group']} node no table holds")
            frame = frame.with_columns(ends.alias(column))
        numbered[name] = frame
    return numbered


def write_files(tables: dict[str, pl.DataFrame], folder: Path) -> list[ImportFile]:
    """One CSV file per table (header line first); empty tables are left out."""
    folder.mkdir(parents=True, exist_ok=True)
    files = []
    for name, frame in tables.items():
        if frame.is_empty():
            continue
        path = folder / f"{name}.csv"
        frame.write_csv(path)
        # Relationship types are upper case, labels capitalized words.
        files.append(ImportFile("relationships" if name.isupper() else "nodes", name, path,
                                frame.height, _has_line_breaks(frame)))
    return files


def _has_line_breaks(frame: pl.DataFrame) -> bool:
    """Whether a string value of the frame holds a line feed or a carriage return (either
    ends a CSV line unless the file is read as multi-line)."""
    strings = frame.select(pl.col(pl.String).str.contains("[\r\n]").any())
    return any(strings.row(0)) if strings.width else False


def plan_import(paths: Sequence[Path], pseudonymizer: Pseudonymizer, folder: Path, *,
                max_line_bytes: int, workers: int, dead_letter: Path | None = None,
                echo: Callable[[str], None] | None = None) -> BulkPlan:
    """Stage the files, compute the graph and write the import's CSV files into ``folder``.
    Nothing touches the database: a history the bulk import refuses stops here."""
    plan = BulkPlan()
    with plan.phase("stage_s"):
        staged = stage_files(paths, pseudonymizer, max_line_bytes, workers=workers,
                             dead_letter=dead_letter)
    plan.records = sum(s.records for s in staged)
    plan.rejected = sum(s.dead_letters.height for s in staged)
    plan.dead_letter_paths = [s.dead_letter_path for s in staged if s.dead_letter_path]
    if echo:
        echo(f"read {plan.records} records from {len(paths)} file(s) "
             f"in {plan.timings['stage_s']:.1f} s")
    with plan.phase("compute_s"):
        tables, plan.events, plan.duplicates = build_tables(staged)
        del staged
    with plan.phase("write_csv_s"):
        plan.files = write_files(number_nodes(tables), folder)
    return plan
