"""Applying CRM records to the graph: users found (or created, or merged) by their identifiers,
profile fields written with last-write-wins by the record's source timestamp and provenance per
field (``(:User)-[:HAS_FIELD]->(:ProfileField)``). Used by ``personas crm import`` (files) and by
the CRM webhook (one delivery at a time)."""

from __future__ import annotations

import csv
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from neo4j import ManagedTransaction

from graph.crm import queries as q
from graph.crm.mapping import (
    TARGETS,
    CrmRecord,
    FieldMapping,
    dead_letter_raw,
    parse_record,
    target_of,
)
from graph.db import Graph
from graph.errors import InvalidInput
from graph.identity.resolution import (
    UserResolution,
    contested_links,
    link_identifiers,
    merge_owners_tx,
    resolve_identifiers,
)
from graph.ingest.deadletter import DeadLetterFile, DeadLetterStore
from graph.ingest.metrics import IngestMetrics
from graph.ingest.reader import InvalidJson, csv_text, detect_format, load_json, not_utf8
from graph.ingest.tally import Tally
from graph.privacy import Pseudonymizer
from graph.times import epoch_ms

log = logging.getLogger(__name__)
METRICS_SOURCE = "crm"
MERGE_REASON = "a CRM record names identifiers of both users"


@dataclass(frozen=True)
class Delivery:
    """A webhook delivery, recorded in the transaction that applies it (replay protection)."""

    id: str
    signed_at: int
    """The delivery's signed timestamp (epoch seconds)."""


@dataclass
class ApplyResult(Tally):
    """What one transaction of CRM records did: its counts (``users_created``,
    ``fields_updated``, ``fields_kept``, ``merges``), and per record what it changed."""

    updated_by_record: list[list[str]] = field(default_factory=list)
    """Per record (in input order), the names of the fields it changed."""
    refused: list[int] = field(default_factory=list)
    """Records (input positions) not applied: they name a user erased after their time."""


def apply_records(graph: Graph, records: Sequence[CrmRecord], *, source: str, via: str,
                  delivery: Delivery | None = None,
                  prune_deliveries_after: int | None = None) -> ApplyResult:
    """Write parsed records in one managed transaction (retried whole on transient errors).

    With ``delivery``, the delivery is recorded in the same transaction; a delivery recorded
    before makes it fail with ``neo4j.exceptions.ConstraintError`` and nothing is written.
    """
    return graph.write(lambda tx: _apply_tx(tx, records, source, via, delivery,
                                            prune_deliveries_after))


def _apply_tx(tx: ManagedTransaction, records: Sequence[CrmRecord], source: str, via: str,
              delivery: Delivery | None, prune_after: int | None) -> ApplyResult:
    result = ApplyResult(records=len(records), updated_by_record=[[] for _ in records])
    if delivery is not None:
        tx.run(q.RECORD_DELIVERY, id=delivery.id, source=source, signed_at=delivery.signed_at,
               records=len(records)).consume()
        if prune_after is not None:
            tx.run(q.PRUNE_DELIVERIES, keep_seconds=prune_after).consume()
    if not records:
        return result
    pairs = sorted({p for r in records for p in r.identifiers})
    # Looked up through this module's name, so that a test can race another writer against it.
    resolved = resolve_identifiers(tx, pairs)
    # As for events (graph/ingest/writer.py): an erased user is not brought back by a record
    # from before the erasure.
    refused = {i for i, rec in enumerate(records)
               if resolved.erased_since(rec.identifiers, rec.at)}
    result.refused = sorted(refused)
    merged_into: set[str] = set()

    def merge(uid: str, other: str) -> str:
        """Merge two stored users by identifier authority, now; returns the survivor."""
        survivor = merge_owners_tx(tx, [uid, other], source=source, reason=MERGE_REASON)
        merged_into.difference_update((uid, other))
        merged_into.add(survivor)
        result.merges += 1
        return survivor

    # A user minted for an earlier record of this batch folds into a stored user a later record
    # names with it; two stored users are merged inside this transaction.
    resolution = UserResolution.of(resolved.owners, fold_minted=True, merge_now=merge)
    user_of: list[str] = [""] * len(records)
    order = sorted((i for i in range(len(records)) if i not in refused),
                   key=lambda i: records[i].at)
    for i in order:
        rec = records[i]
        user_of[i], _ = resolution.assign(rec.identifiers, epoch_ms(rec.at),
                                          rec.new_user_id)
    find = resolution.find
    links, fresh = resolution.settle()
    if fresh:
        tx.run(q.ENSURE_USERS, rows=[{"id": u, "at": at} for u, at in fresh.items()]).consume()
    touched = sorted({find(user_of[i]) for i in order})
    tx.run(q.LOCK_USERS, ids=touched).consume()
    link_identifiers(tx, links)
    # An identifier a concurrent writer (the consumer, another delivery) linked to another
    # user since the look-up above: that user and this record's are one, merged like above.
    for link, owners in contested_links(tx, links):
        for owner_id in owners:
            uid, theirs = find(link["user_id"]), find(owner_id)
            if theirs != uid:
                resolution.merged(uid, theirs, merge(uid, theirs))

    # The newest value of each (user, field) in this batch; an equally old one does not replace
    # the first (as in the graph, only a strictly newer record wins).
    newest: dict[tuple[str, str], tuple[int, Any]] = {}
    values = 0
    for i in order:
        rec, uid = records[i], find(user_of[i])
        for name, value in rec.fields.items():
            values += 1
            key = (uid, name)
            if key not in newest or rec.at > records[newest[key][0]].at:
                newest[key] = (i, value)
    rows = []
    location_rows = []
    for (uid, name), (i, value) in newest.items():
        target = target_of(name)
        hashed = target is not None and target.kind == "pii"
        mirror: dict[str, Any] = {name: value} if _mirrored(name) else {}
        rows.append({"ref": i, "user_id": uid, "name": name, "value": value, "hashed": hashed,
                     "source": source, "via": via, "at": epoch_ms(records[i].at),
                     "mirror": mirror})
        if name == "location_id":
            place: dict[str, Any] = {"id": value}
            place.update((k, records[i].fields[k]) for k in ("city", "country")
                         if k in records[i].fields)
            location_rows.append({"user_id": uid, "at": epoch_ms(records[i].at),
                                  "location": place})

    if rows:
        for row in tx.run(q.UPSERT_FIELDS, rows=rows):
            result.updated_by_record[row["ref"]].append(row["name"])
            result.fields_updated += 1
    result.fields_kept = values - result.fields_updated
    if location_rows:
        tx.run(q.LINK_LOCATIONS, rows=location_rows).consume()
    if merged_into:
        mirrors = [
            {"user_id": row["user_id"], "mirror": {row["name"]: row["value"]}}
            for row in tx.run(q.NEWEST_FIELDS, ids=sorted(merged_into))
            if _mirrored(row["name"])
        ]
        if mirrors:
            tx.run(q.MIRROR_FIELDS, rows=mirrors).consume()
    # A user new in this batch that a contested link merged into another writer's is not one.
    result.users_created = sum(1 for u in fresh if find(u) == u)
    return result


def _mirrored(name: str) -> bool:
    """Whether a field's winning value is also set on the user: plain fields (``tier``...) and
    declared attributes (``attr_<name>``, the property events write too)."""
    target = target_of(name)
    return target is not None and target.kind in ("field", "attribute")


# ---------------------------------------------------------------------------------------------
# Files


@dataclass(frozen=True)
class _Row:
    line: int
    data: Any
    error: str | None = None
    raw: str = ""


def _jsonl_rows(stream: BinaryIO, max_bytes: int) -> Iterator[_Row]:
    for number, line in enumerate(stream, start=1):
        if len(line) > max_bytes:
            yield _Row(number, None, f"record is {len(line)} bytes, over the limit of {max_bytes}")
            continue
        try:
            text = line.decode("utf-8").strip().removeprefix("\ufeff")
        except UnicodeDecodeError as exc:  # refused, as an event's line (graph.ingest.reader)
            yield _Row(number, None, f"not UTF-8: {exc.reason} at byte {exc.start}")
            continue
        if not text:
            continue
        try:
            yield _Row(number, load_json(text))
        except InvalidJson as exc:
            yield _Row(number, None, str(exc))


def _csv_rows(stream: BinaryIO, mapping: FieldMapping, max_bytes: int, name: str
              ) -> Iterator[_Row]:
    text = csv_text(stream)
    csv.field_size_limit(max_bytes)
    reader = csv.DictReader(text)
    header = reader.fieldnames or []
    check_header(mapping, header, name)
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            yield _Row(reader.line_num, None, f"invalid CSV: {exc}")
            continue
        refused = not_utf8(row)
        if refused is not None:
            yield _Row(reader.line_num, None, refused)
            continue
        if None in row:
            yield _Row(reader.line_num, None, "row has more cells than the header")
            continue
        yield _Row(reader.line_num, {k: v for k, v in row.items() if v not in (None, "")})


def check_header(mapping: FieldMapping, header: Sequence[str], name: str) -> None:
    """A CSV header against the mapping: unknown columns, a missing timestamp column or no
    identifier column stop the import before anything is written."""
    if not header:
        raise InvalidInput(f"{name}: the CSV file has no header row")
    unknown = mapping.unknown_columns(header)
    if unknown:
        raise InvalidInput(f"{name}: column(s) {unknown} are not in the mapping (map them, or "
                           "list them under `ignore`)")
    if mapping.timestamp not in header:
        raise InvalidInput(f"{name}: the timestamp column {mapping.timestamp!r} is missing")
    if not any(mapping.columns[c].target in TARGETS
               and TARGETS[mapping.columns[c].target].kind == "identifier"
               for c in header if c in mapping.columns):
        raise InvalidInput(f"{name}: no column of the file maps to an identifier")


def import_file(graph: Graph, pseudonymizer: Pseudonymizer, mapping: FieldMapping, path: Path,
                *, batch_size: int, max_line_bytes: int, dead_letter: Path | None = None,
                on_progress: Callable[[int], None] | None = None,
                metrics: IngestMetrics | None = None) -> Tally:
    """Import a CSV or JSONL file of CRM records, ``batch_size`` records per transaction.

    A problem with the file as a whole (type, header) raises ``InvalidInput`` before anything
    is written; a bad record goes to the dead-letter file (``FILE.deadletter.jsonl`` by default)
    with its line and reason, identifiers and names pseudonymized, while the rest load.
    """
    fmt = detect_format(path)
    if not path.is_file():
        raise InvalidInput(f"{path}: no such file")
    dl = DeadLetterFile(dead_letter or path.with_name(path.name + ".deadletter.jsonl"),
                        str(path), pseudonymizer, DeadLetterStore(graph))
    totals = Tally()

    def flush(batch: list[CrmRecord]) -> None:
        start = time.perf_counter()
        done = apply_records(graph, batch, source=mapping.source, via="import")
        if metrics is not None:
            metrics.batch(METRICS_SOURCE, time.perf_counter() - start,
                          len(batch) - len(done.refused), 0)
            if done.refused:
                metrics.reject(METRICS_SOURCE, "erased", len(done.refused))
        totals.add(Tally(written=len(batch) - len(done.refused), erased=len(done.refused),
                         users_created=done.users_created, fields_updated=done.fields_updated,
                         fields_kept=done.fields_kept, merges=done.merges))
        if on_progress:
            on_progress(len(batch))

    try:
        with path.open("rb") as stream:
            rows = (_jsonl_rows(stream, max_line_bytes) if fmt == "jsonl"
                    else _csv_rows(stream, mapping, max_line_bytes, path.name))
            batch: list[CrmRecord] = []
            for row in rows:
                totals.records += 1
                if metrics is not None:
                    metrics.received.labels(METRICS_SOURCE).inc()
                reason = row.error
                code = "malformed"
                if reason is None:
                    try:
                        batch.append(parse_record(mapping, row.data, pseudonymizer))
                    except InvalidInput as exc:
                        reason, code = str(exc), "invalid"
                if reason is not None:
                    raw = dead_letter_raw(mapping, row.data, pseudonymizer) \
                        if row.data is not None else ""
                    dl.write(row.line, reason, raw)
                    if metrics is not None:
                        metrics.reject(METRICS_SOURCE, code)
                        metrics.dead_letters.labels(METRICS_SOURCE).inc()
                    if on_progress:
                        on_progress(1)
                    continue
                if len(batch) >= batch_size:
                    flush(batch)
                    batch = []
            if batch:
                flush(batch)
    finally:
        dl.close()  # the rejects seen so far reach the graph's dead letters too
    totals.rejected = dl.count
    totals.dead_letter = dl.path if dl.count else None
    return totals
