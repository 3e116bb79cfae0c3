"""CRM import (`personas crm import`) and the signed CRM webhook against the real graph: fields
and provenance, last write wins by source timestamp, identity, mapping and record errors, dead
letters, signatures, replays, and no plaintext PII anywhere in the graph."""

from __future__ import annotations

import csv
import json
import re
import subprocess
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from api.app import create_app
from graph.crm import importer
from graph.crm.importer import import_file
from graph.crm.mapping import FieldMapping, load_mapping, parse_mapping
from graph.crm.webhook import apply_delivery, signature
from graph.db import Graph
from graph.errors import Conflict
from graph.events import Event
from graph.ingest.tally import Tally
from graph.ingest.writer import EventWriter
from graph.privacy import Pseudonymizer
from graph.settings import Settings
from tests.helpers import PERSONAS, graph_counts, scrape

pytestmark = pytest.mark.integration

EXAMPLE = Path(__file__).resolve().parents[2] / "docs" / "crm-mapping.example.yaml"
HEADER = ["customer_no", "email", "mobile", "first_name", "last_name", "age_group", "gender",
          "language", "store", "city", "country", "tier", "lifetime_value", "points",
          "newsletter", "member_since", "notes", "updated_at"]
JANE = {"customer_no": "C-1", "email": "Jane.Doe@Example.com", "mobile": "+44 7700 900123",
        "first_name": "Jane", "last_name": "Doe", "age_group": "25-34", "gender": "female",
        "language": "en-GB", "store": "london", "city": "London", "country": "gb",
        "tier": "gold", "lifetime_value": "1234.50", "points": "120", "newsletter": "yes",
        "member_since": "2020-01-02", "notes": "prefers calls to Jane Doe on +44 7700 900123",
        "updated_at": "2026-11-01T10:00:00Z"}
BOB = {"customer_no": "C-2", "email": "bob.smith@example.org", "first_name": "Bobby",
       "last_name": "Smithers", "age_group": "35-44", "tier": "silver", "lifetime_value": "99.99",
       "store": "berlin", "city": "Berlin", "country": "DE", "updated_at": "2026-11-01T11:00:00Z"}
PLAINTEXT = ("jane.doe@example.com", "7700 900123", "447700900123", "jane", "doe", "bobby",
             "smithers", "bob.smith@example.org", "c-1", "c-2")
SECRET = "whsec-test-secret"


def write_csv(path: Path, rows: list[dict[str, str]], header: list[str] = HEADER) -> Path:
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=header)
        writer.writeheader()
        writer.writerows(rows)
    return path


def write_jsonl(path: Path, rows: list[Any]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def pseudonymizer(settings: Settings) -> Pseudonymizer:
    return Pseudonymizer(settings.pseudonym_key.get_secret_value())


def run_import(graph: Graph, settings: Settings, path: Path,
               mapping: FieldMapping | None = None) -> Tally:
    return import_file(graph, pseudonymizer(settings), mapping or load_mapping(EXAMPLE), path,
                       batch_size=100, max_line_bytes=100_000)


def fields(graph: Graph, user_id: str) -> dict[str, dict[str, Any]]:
    rows = graph.rows(
        "MATCH (:User {id: $id})-[:HAS_FIELD]->(f:ProfileField) RETURN f.name AS name, "
        "f.value AS value, f.source AS source, f.via AS via, f.hashed AS hashed, "
        "toString(f.updated_at) AS updated_at", id=user_id)
    return {r.pop("name"): r for r in rows}


def user_of(graph: Graph, settings: Settings, kind: str, value: str) -> str | None:
    rows = graph.rows("MATCH (:Identifier {kind: $kind, hash: $hash})-[:IDENTIFIES]->(u:User) "
                      "RETURN u.id AS id",
                      kind=kind, hash=pseudonymizer(settings).digest(kind, value))
    return rows[0]["id"] if rows else None


def all_strings(graph: Graph) -> list[str]:
    """Every string (and string in a list) stored on any node or relationship."""
    rows = graph.rows("""
        MATCH (n) UNWIND keys(n) AS k RETURN n[k] AS v
        UNION ALL
        MATCH ()-[r]->() UNWIND keys(r) AS k RETURN r[k] AS v""")
    out: list[str] = []
    for row in rows:
        values = row["v"] if isinstance(row["v"], list) else [row["v"]]
        out.extend(v for v in values if isinstance(v, str))
    return out


def assert_no_plaintext_pii(graph: Graph) -> None:
    strings = [s.lower() for s in all_strings(graph)]
    assert strings, "the graph holds no strings at all"
    leaks = [(p, s) for p in PLAINTEXT for s in strings if p in s]
    assert not leaks, leaks


# ---- file import ----------------------------------------------------------------------------

def test_cli_import_writes_fields_with_provenance(graph: Graph, settings: Settings,
                                                   tmp_path: Path, cli_env: dict[str, str]
                                                   ) -> None:
    path = write_csv(tmp_path / "crm.csv", [JANE, BOB])
    out = subprocess.run([PERSONAS, "crm", "import", str(path), "--mapping", str(EXAMPLE)],
                         env=cli_env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "records: 2  applied: 2  rejected: 0  new users: 2" in out.stderr
    assert "importing crm.csv" in out.stderr  # the progress bar

    jane = user_of(graph, settings, "email", "jane.doe@example.com")
    assert jane is not None and jane == user_of(graph, settings, "crm_id", "C-1")
    assert jane == user_of(graph, settings, "phone", "+447700900123")
    assert jane == pseudonymizer(settings).user_id("crm_id", "C-1")
    got = fields(graph, jane)
    assert set(got) == {"first_name", "last_name", "age_band", "gender", "locale", "location_id",
                        "city", "country", "tier", "lifetime_value", "loyalty_points",
                        "marketing_opt_in", "signup_date"}
    assert all(f["source"] == "acme-crm" and f["via"] == "import"
               and f["updated_at"] == "2026-11-01T10:00:00Z" for f in got.values())
    assert got["first_name"] == {**got["first_name"], "hashed": True,
                                 "value": pseudonymizer(settings).digest("first_name", "Jane")}
    assert got["tier"]["value"] == "gold" and got["tier"]["hashed"] is False
    assert got["lifetime_value"]["value"] == 1234.5
    assert got["country"]["value"] == "GB"
    [user] = graph.rows(
        "MATCH (u:User {id: $id})-[:LOCATED_IN]->(l:Location) RETURN u.tier AS tier, "
        "u.age_band AS age_band, u.gender AS gender, u.locale AS locale, "
        "u.lifetime_value AS ltv, u.loyalty_points AS points, u.marketing_opt_in AS opt_in, "
        "toString(u.signup_date) AS since, u.first_name AS first_name, u.events AS events, "
        "l.id AS location, l.city AS city, l.country AS country", id=jane)
    # The fields the rest of the graph reads sit on the user too; names only as ProfileFields.
    assert user == {"tier": "gold", "age_band": "25-34", "gender": "female", "locale": "en-GB",
                    "ltv": 1234.5, "points": 120, "opt_in": True, "since": "2020-01-02",
                    "first_name": None, "events": 0, "location": "london", "city": "London",
                    "country": "GB"}
    # Loading the same file again changes nothing: each value is as old as the stored one.
    counts = graph_counts(graph)
    again = subprocess.run([PERSONAS, "crm", "import", str(path), "--mapping", str(EXAMPLE)],
                           env=cli_env, capture_output=True, text=True)
    assert again.returncode == 0, again.stderr
    assert "new users: 0  fields updated: 0" in again.stderr
    assert graph_counts(graph) == counts
    assert fields(graph, jane) == got
    assert_no_plaintext_pii(graph)


def test_last_write_wins_per_field_by_source_timestamp(graph: Graph, settings: Settings,
                                                       tmp_path: Path) -> None:
    newer = {"customer_no": "C-1", "tier": "gold", "lifetime_value": "500",
             "updated_at": "2026-11-02T00:00:00Z"}
    first = run_import(graph, settings, write_csv(tmp_path / "a.csv", [newer]))
    assert (first.users_created, first.fields_updated, first.fields_kept) == (1, 2, 0)
    uid = pseudonymizer(settings).user_id("crm_id", "C-1")
    before = fields(graph, uid)

    # An older record changes nothing it carries, but a field nobody set yet is written.
    older = {"customer_no": "C-1", "tier": "bronze", "lifetime_value": "5", "points": "7",
             "updated_at": "2026-11-01T00:00:00Z"}
    second = run_import(graph, settings, write_csv(tmp_path / "b.csv", [older]))
    assert (second.fields_updated, second.fields_kept) == (1, 2)
    after = fields(graph, uid)
    assert after["tier"] == before["tier"] and after["lifetime_value"] == before["lifetime_value"]
    assert after["loyalty_points"]["value"] == 7
    assert after["loyalty_points"]["updated_at"] == "2026-11-01T00:00:00Z"
    [user] = graph.rows("MATCH (u:User {id: $id}) RETURN u.tier AS tier, u.lifetime_value AS v",
                        id=uid)
    assert user == {"tier": "gold", "v": 500.0}

    # A newer record from another CRM wins, and its source and time are recorded per field.
    other = parse_mapping({"source": "other-crm", "timestamp": "modified",
                           "columns": {"id": {"target": "crm_id"},
                                       "level": {"target": "tier"}}})
    third = run_import(graph, settings, write_jsonl(tmp_path / "c.jsonl", [
        {"id": "C-1", "level": "platinum", "modified": "2026-11-03T09:30:00+01:00"},
        {"id": "C-1", "level": "silver", "modified": "2026-11-03T08:00:00+01:00"},
    ]), other)
    assert (third.fields_updated, third.fields_kept, third.users_created) == (1, 1, 0)
    latest = fields(graph, uid)
    assert latest["tier"] == {"value": "platinum", "source": "other-crm", "via": "import",
                              "hashed": False, "updated_at": "2026-11-03T08:30:00Z"}
    assert latest["lifetime_value"] == before["lifetime_value"]
    assert graph.rows("MATCH (u:User {id: $id}) RETURN u.tier AS t", id=uid) == [
        {"t": "platinum"}]
    # Equal timestamps: the stored value stays (only a strictly newer record wins).
    tie = run_import(graph, settings, write_jsonl(tmp_path / "d.jsonl", [
        {"id": "C-1", "level": "bronze", "modified": "2026-11-03T08:30:00Z"}]), other)
    assert (tie.fields_updated, tie.fields_kept) == (0, 1)
    assert fields(graph, uid)["tier"]["value"] == "platinum"


def test_a_location_follows_the_newest_location_id(graph: Graph, settings: Settings,
                                                   tmp_path: Path) -> None:
    run_import(graph, settings, write_csv(tmp_path / "a.csv", [
        {"customer_no": "C-1", "store": "paris", "city": "Paris", "country": "FR",
         "updated_at": "2026-11-05T00:00:00Z"}]))
    run_import(graph, settings, write_csv(tmp_path / "b.csv", [
        {"customer_no": "C-1", "store": "rome", "city": "Rome", "country": "IT",
         "updated_at": "2026-11-01T00:00:00Z"}]))
    uid = pseudonymizer(settings).user_id("crm_id", "C-1")
    located = "MATCH (:User {id: $id})-[:LOCATED_IN]->(l:Location) RETURN l.id AS id"
    assert graph.rows(located, id=uid) == [{"id": "paris"}]
    run_import(graph, settings, write_csv(tmp_path / "c.csv", [
        {"customer_no": "C-1", "store": "vienna", "updated_at": "2026-11-06T00:00:00Z"}]))
    assert graph.rows(located, id=uid) == [{"id": "vienna"}]


def test_records_find_users_by_any_identifier(graph: Graph, settings: Settings,
                                              tmp_path: Path) -> None:
    # A user known from events (cookie and email), before the CRM knew them.
    writer = EventWriter(graph, pseudonymizer(settings))
    events = tmp_path / "events.jsonl"
    write_jsonl(events, [{"event_id": "ev-1", "type": "page_view",
                          "occurred_at": "2026-10-01T10:00:00Z",
                          "user": {"cookie": "ck-9", "email": "Bob.Smith@example.org"}}])
    from graph.ingest.files import ingest_file
    ingest_file(writer, events, batch_size=10, max_line_bytes=100_000)
    known = user_of(graph, settings, "cookie", "ck-9")
    assert known is not None

    # In one file: a record with a new CRM id only, then one naming that CRM id and the known
    # email. The user the first record would create is folded into the known user.
    summary = run_import(graph, settings, write_jsonl(tmp_path / "crm.jsonl", [
        {"customer_no": "C-2", "tier": "silver", "updated_at": "2026-11-01T00:00:00Z"},
        {"customer_no": "C-2", "email": "bob.smith@example.org", "points": "3",
         "updated_at": "2026-11-02T00:00:00Z"},
    ]))
    assert summary.users_created == 0 and summary.rejected == 0
    assert user_of(graph, settings, "crm_id", "C-2") == known
    assert set(fields(graph, known)) == {"tier", "loyalty_points"}
    [user] = graph.rows("MATCH (u:User {id: $id}) RETURN u.events AS events, u.tier AS tier",
                        id=known)
    assert user == {"events": 1, "tier": "silver"}
    assert graph.rows("MATCH (u:User) RETURN count(u) AS n") == [{"n": 1}]
    # Later events of the user still resolve and count (the CRM kept the writer's counters).
    write_jsonl(events, [{"event_id": "ev-2", "type": "page_view",
                          "occurred_at": "2026-11-10T10:00:00Z", "user": {"crm_id": "C-2"}}])
    ingest_file(writer, events, batch_size=10, max_line_bytes=100_000)
    assert graph.rows("MATCH (u:User {id: $id}) RETURN u.events AS n", id=known) == [{"n": 2}]
    assert_no_plaintext_pii(graph)


def test_a_record_naming_two_stored_users_merges_them(graph: Graph, settings: Settings,
                                                     tmp_path: Path) -> None:
    run_import(graph, settings, write_jsonl(tmp_path / "a.jsonl", [
        {"customer_no": "C-1", "tier": "gold", "updated_at": "2026-11-01T00:00:00Z"},
        {"customer_no": "C-2", "email": "bob.smith@example.org", "points": "5", "tier": "bronze",
         "updated_at": "2026-11-01T12:00:00Z"}]))
    ids = {pseudonymizer(settings).user_id("crm_id", c) for c in ("C-1", "C-2")}
    summary = run_import(graph, settings, write_jsonl(tmp_path / "b.jsonl", [
        {"customer_no": "C-1", "email": "bob.smith@example.org", "newsletter": "true",
         "updated_at": "2026-11-02T00:00:00Z"}]))
    assert summary.merges == 1 and summary.users_created == 0
    [live] = graph.rows("MATCH (u:User) RETURN u.id AS id, u.tier AS tier, "
                        "u.loyalty_points AS points, u.marketing_opt_in AS opt_in")
    [tombstone] = graph.rows("MATCH (t:MergedUser)-[:MERGED_INTO]->(:User) RETURN t.id AS id")
    assert {live["id"], tombstone["id"]} == ids
    # Every identifier now names the survivor, which holds the fields of both, and the user
    # node shows the newest value of each.
    for kind, value in (("crm_id", "C-1"), ("crm_id", "C-2"),
                        ("email", "bob.smith@example.org")):
        assert user_of(graph, settings, kind, value) == live["id"]
    assert (live["tier"], live["points"], live["opt_in"]) == ("bronze", 5, True)
    [merge] = graph.rows("MATCH (m:Merge) RETURN m.source AS source, m.reason AS reason")
    assert merge == {"source": "acme-crm",
                     "reason": "a CRM record names identifiers of both users"}
    # A later, older tier changes nothing: it must be newer than both merged tier fields.
    kept = run_import(graph, settings, write_jsonl(tmp_path / "c.jsonl", [
        {"customer_no": "C-2", "tier": "silver", "updated_at": "2026-11-01T06:00:00Z"}]))
    assert (kept.fields_updated, kept.fields_kept) == (0, 1)
    newer = run_import(graph, settings, write_jsonl(tmp_path / "d.jsonl", [
        {"customer_no": "C-2", "tier": "platinum", "updated_at": "2026-11-03T00:00:00Z"}]))
    assert newer.fields_updated == 1
    assert graph.rows("MATCH (u:User)-[:HAS_FIELD]->(f:ProfileField {name: 'tier'}) "
                      "RETURN collect(DISTINCT f.value) AS v, u.tier AS t") == [
        {"v": ["platinum"], "t": "platinum"}]


def race_on_resolve(monkeypatch: pytest.MonkeyPatch,
                    other_writer: Callable[[], None]) -> list[bool]:
    """Run ``other_writer`` (its own transaction, committed) right after the import's first
    look-up of identifiers, while that import's transaction is open; returns a flag list that
    is non-empty once it ran."""
    resolve = importer.resolve_identifiers
    raced: list[bool] = []

    def racing_resolve(tx: Any, pairs: Any) -> Any:
        found = resolve(tx, pairs)
        if not raced:
            raced.append(True)
            other_writer()
        return found

    monkeypatch.setattr(importer, "resolve_identifiers", racing_resolve)
    return raced


def test_an_identifier_linked_concurrently_by_an_event_merges_the_users(
        graph: Graph, settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The consumer links a new email to a user of its own between the import's look-up of
    that email and its link: the import finds the email taken and merges the two users."""
    pz = pseudonymizer(settings)

    def consumer() -> None:
        event = Event.model_validate({
            "event_id": "web-1", "type": "page_view", "source": "web",
            "occurred_at": "2026-10-30T10:00:00Z",
            "user": {"cookie": "ck-9", "email": "bob.smith@example.org"}})
        assert EventWriter(graph, pz).write([event]).written == 1

    raced = race_on_resolve(monkeypatch, consumer)
    summary = run_import(graph, settings, write_jsonl(tmp_path / "a.jsonl", [
        {"customer_no": "C-2", "email": "bob.smith@example.org", "tier": "silver",
         "updated_at": "2026-11-01T11:00:00Z"}]))
    assert raced and summary.merges == 1 and summary.records == 1
    crm_user = pz.user_id("crm_id", "C-2")  # a CRM id outranks a cookie: this user survives
    for kind, value in (("crm_id", "C-2"), ("email", "bob.smith@example.org"),
                        ("cookie", "ck-9")):
        assert user_of(graph, settings, kind, value) == crm_user
    assert graph.rows("MATCH (u:User) RETURN u.id AS id, u.tier AS tier") == [
        {"id": crm_user, "tier": "silver"}]
    assert fields(graph, crm_user)["tier"]["value"] == "silver"
    assert graph.rows("MATCH (:User {id: $id})-[:PERFORMED]->(i) RETURN i.event_id AS e",
                      id=crm_user) == [{"e": "web-1"}]
    [merge] = graph.rows("MATCH (m:Merge) RETURN m.source AS source, m.reason AS reason")
    assert merge == {"source": "acme-crm", "reason": importer.MERGE_REASON}


def test_a_concurrent_record_whose_user_outranks_this_one_keeps_the_fields(
        graph: Graph, settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Another delivery links the same new email to its own customer, seen earlier: that user
    survives the merge, and this record's fields land on it."""
    pz = pseudonymizer(settings)

    def other_delivery() -> None:
        other = run_import(graph, settings, write_jsonl(tmp_path / "other.jsonl", [
            {"customer_no": "C-9", "email": "bob.smith@example.org", "points": "7",
             "updated_at": "2026-10-01T00:00:00Z"}]))
        assert other.users_created == 1

    raced = race_on_resolve(monkeypatch, other_delivery)
    summary = run_import(graph, settings, write_jsonl(tmp_path / "a.jsonl", [
        {"customer_no": "C-2", "email": "bob.smith@example.org", "tier": "silver",
         "updated_at": "2026-11-01T11:00:00Z"}]))
    assert raced and summary.merges == 1 and summary.users_created == 0
    survivor = pz.user_id("crm_id", "C-9")  # same authority; the earlier first_seen wins
    for kind, value in (("crm_id", "C-2"), ("crm_id", "C-9"),
                        ("email", "bob.smith@example.org")):
        assert user_of(graph, settings, kind, value) == survivor
    assert graph.rows("MATCH (u:User) RETURN u.id AS id, u.tier AS tier, "
                      "u.loyalty_points AS points") == [
        {"id": survivor, "tier": "silver", "points": 7}]
    assert {n: f["value"] for n, f in fields(graph, survivor).items()
            if n in ("tier", "loyalty_points")} == {"tier": "silver", "loyalty_points": 7}


def test_mapping_errors_stop_the_import_and_name_the_problem(
        graph: Graph, tmp_path: Path, cli_env: dict[str, str]) -> None:
    data = write_csv(tmp_path / "crm.csv", [JANE])
    before = graph_counts(graph)
    bad_type = tmp_path / "bad-type.yaml"
    bad_type.write_text("source: s\ntimestamp: updated_at\ncolumns:\n"
                        "  customer_no: {target: crm_id}\n  ltv: {target: lifetime_value, "
                        "type: money}\n  fav: {target: favourite}\n")
    out = subprocess.run([PERSONAS, "crm", "import", str(data), "--mapping", str(bad_type)],
                         env=cli_env, capture_output=True, text=True)
    assert out.returncode == 2
    assert "column 'ltv': unknown type 'money'" in out.stderr
    assert "column 'fav': unknown target 'favourite'" in out.stderr
    # A file column the mapping does not know stops the import too, before any write.
    narrow = tmp_path / "narrow.yaml"
    narrow.write_text("source: s\ntimestamp: updated_at\ncolumns:\n"
                      "  customer_no: {target: crm_id}\n  email: {target: email}\n")
    out = subprocess.run([PERSONAS, "crm", "import", str(data), "--mapping", str(narrow)],
                         env=cli_env, capture_output=True, text=True)
    assert out.returncode == 2
    assert "crm.csv: column(s) ['age_group', 'city'," in out.stderr
    assert "are not in the mapping" in out.stderr
    missing = subprocess.run([PERSONAS, "crm", "import", str(data), "--mapping",
                              str(tmp_path / "nope.yaml")], env=cli_env, capture_output=True,
                             text=True)
    assert missing.returncode == 2 and "no such mapping file" in missing.stderr
    assert graph_counts(graph) == before


def test_bad_records_go_to_the_dead_letter_file_and_the_rest_load(
        graph: Graph, settings: Settings, tmp_path: Path, cli_env: dict[str, str]) -> None:
    bad_tier = {**JANE, "tier": "diamond"}
    no_time = {**BOB, "customer_no": "C-3", "updated_at": ""}
    path = write_csv(tmp_path / "crm.csv", [bad_tier, BOB, no_time])
    out = subprocess.run([PERSONAS, "crm", "import", str(path), "--mapping", str(EXAMPLE)],
                         env=cli_env, capture_output=True, text=True)
    assert out.returncode == 1, out.stderr
    assert "records: 3  applied: 1  rejected: 2" in out.stderr
    dead = tmp_path / "crm.csv.deadletter.jsonl"
    assert f"reasons in {dead}" in out.stderr
    letters = [json.loads(line) for line in dead.read_text().splitlines()]
    assert [(d["line"], d["reason"]) for d in letters] == [
        (2, "column 'tier' (tier, enum): 'diamond' not one of "
            "['bronze', 'silver', 'gold', 'platinum']"),
        (4, "column 'updated_at': the record's timestamp is missing")]
    text = dead.read_text().lower()
    for plain in PLAINTEXT:
        assert plain not in text, plain
    assert user_of(graph, settings, "crm_id", "C-2") is not None
    assert user_of(graph, settings, "crm_id", "C-1") is None
    # The rejects are dead letters in the graph too, found by their identifiers' pseudonyms
    # (so that a user's export and erasure reach them).
    [letter] = graph.rows("MATCH (d:DeadLetter {position: 'line 2'}) "
                          "RETURN d.identifiers AS ids, d.record AS record")
    p = pseudonymizer(settings)
    assert set(letter["ids"]) == {f"crm_id:{p.digest('crm_id', 'C-1')}",
                                  f"email:{p.digest('email', 'jane.doe@example.com')}",
                                  f"phone:{p.digest('phone', '+44 7700 900123')}"}
    stored = json.loads(letter["record"])
    assert re.fullmatch(r"\[email:[0-9a-f]{10}\]", stored["email"])
    assert stored["tier"] == "diamond" and stored["notes"] == "[not imported]"
    assert_no_plaintext_pii(graph)


def test_jsonl_records_with_unknown_columns_are_rejected_by_name(
        graph: Graph, settings: Settings, tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "crm.jsonl", [
        {"customer_no": "C-1", "tier": "gold", "updated_at": "2026-11-01T00:00:00Z",
         "middle_name": "Secretia"},
        "not a record",
        {"customer_no": "C-2", "tier": "gold", "updated_at": "2026-11-01T00:00:00Z"},
    ])
    with path.open("a") as handle:
        handle.write("{broken\n")
    summary = run_import(graph, settings, path)
    assert (summary.records, summary.applied, summary.rejected) == (4, 1, 3)
    letters = [json.loads(line) for line in summary.dead_letter.read_text().splitlines()]  # type: ignore[union-attr]
    assert [d["line"] for d in letters] == [1, 2, 4]
    assert "unknown column(s) ['middle_name']" in letters[0]["reason"]
    assert "Secretia" not in summary.dead_letter.read_text()  # type: ignore[union-attr]
    assert letters[1]["reason"] == "record is not a JSON object"
    assert letters[2]["reason"].startswith("invalid JSON")


# ---- webhook --------------------------------------------------------------------------------

@pytest.fixture
def hook_settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"crm_mapping_file": EXAMPLE,
                                       "crm_webhook_secret": SecretStr(SECRET)})


@pytest.fixture
def hook(graph: Graph, hook_settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(hook_settings)) as client:
        yield client


def signed(body: bytes, at: int | None = None, secret: str = SECRET) -> dict[str, str]:
    ts = int(time.time()) if at is None else at
    return {"X-Personas-Timestamp": str(ts),
            "X-Personas-Signature": signature(secret, ts, body),
            "content-type": "application/json"}


def deliveries(graph: Graph) -> int:
    return int(graph.rows("MATCH (d:WebhookDelivery) RETURN count(d) AS n")[0]["n"])


def test_a_signed_delivery_is_applied(graph: Graph, settings: Settings,
                                      hook: TestClient) -> None:
    body = json.dumps([
        {"customer_no": "C-1", "email": "jane.doe@example.com", "first_name": "Jane",
         "tier": "gold", "updated_at": "2026-11-01T10:00:00Z"},
        {"customer_no": "C-2", "tier": "diamond", "updated_at": "2026-11-01T10:00:00Z"},
    ]).encode()
    response = hook.post("/v1/webhooks/crm", content=body, headers=signed(body))
    assert response.status_code == 200, response.text
    out = response.json()
    assert (out["accepted"], out["rejected"]) == (1, 1)
    assert out["results"][0] == {"index": 0, "status": "accepted", "reason": None,
                                 "fields_updated": ["first_name", "tier"], "fields_kept": []}
    assert out["results"][1]["status"] == "rejected"
    assert "'diamond' not one of" in out["results"][1]["reason"]
    uid = user_of(graph, settings, "email", "jane.doe@example.com")
    assert uid is not None
    got = fields(graph, uid)
    assert got["tier"] == {"value": "gold", "source": "acme-crm", "via": "webhook",
                           "hashed": False, "updated_at": "2026-11-01T10:00:00Z"}
    assert deliveries(graph) == 1
    [letter] = graph.rows("MATCH (d:DeadLetter) RETURN d.source AS source, d.reason AS r")
    assert letter["source"] == "webhook:acme-crm" and "diamond" in letter["r"]

    # An older single record (a JSON object) changes nothing and says so.
    older = json.dumps({"customer_no": "C-1", "tier": "bronze",
                        "updated_at": "2026-10-01T10:00:00Z"}).encode()
    response = hook.post("/v1/webhooks/crm", content=older, headers=signed(older))
    assert response.status_code == 200, response.text
    assert response.json()["results"][0]["fields_kept"] == ["tier"]
    assert fields(graph, uid)["tier"]["value"] == "gold"
    assert "crm" in scrape(hook)
    assert_no_plaintext_pii(graph)


def test_replayed_deliveries_are_refused(graph: Graph, hook: TestClient) -> None:
    body = json.dumps({"customer_no": "C-1", "tier": "gold",
                       "updated_at": "2026-11-01T10:00:00Z"}).encode()
    signed_at = int(time.time())
    headers = signed(body, signed_at)
    assert hook.post("/v1/webhooks/crm", content=body, headers=headers).status_code == 200
    counts = graph_counts(graph)
    replay = hook.post("/v1/webhooks/crm", content=body, headers=headers)
    assert replay.status_code == 409, replay.text
    assert replay.json()["error"]["code"] == "CONFLICT"
    assert "replayed" in replay.json()["error"]["message"]
    assert graph_counts(graph) == counts
    # The same records signed anew (another timestamp) are a new delivery.
    again = hook.post("/v1/webhooks/crm", content=body, headers=signed(body, signed_at - 1))
    assert again.status_code == 200


def test_a_concurrent_replay_is_caught_by_the_constraint(graph: Graph,
                                                         settings: Settings) -> None:
    """Two processes that both passed the early check: the second commit fails whole."""
    mapping = load_mapping(EXAMPLE)
    body = b'{"customer_no": "C-1"}'
    sig = signature(SECRET, 1, body)
    record = [{"customer_no": "C-1", "tier": "gold", "updated_at": "2026-11-01T10:00:00Z"}]
    apply_delivery(graph, pseudonymizer(settings), mapping, record, signed=sig, signed_at=1,
                   tolerance=300)
    counts = graph_counts(graph)
    later = [{"customer_no": "C-1", "tier": "silver", "updated_at": "2026-11-09T10:00:00Z"}]
    with pytest.raises(Conflict, match="replayed"):
        apply_delivery(graph, pseudonymizer(settings), mapping, later, signed=sig,
                       signed_at=1, tolerance=300)
    assert graph_counts(graph) == counts
    uid = pseudonymizer(settings).user_id("crm_id", "C-1")
    assert fields(graph, uid)["tier"]["value"] == "gold"


@pytest.mark.parametrize("case", ["unsigned", "no timestamp", "bad signature", "wrong secret",
                                  "stale", "future", "tampered"])
def test_unsigned_badly_signed_or_stale_deliveries_are_401(graph: Graph, hook: TestClient,
                                                          case: str) -> None:
    body = json.dumps({"customer_no": "C-1", "tier": "gold",
                       "updated_at": "2026-11-01T10:00:00Z"}).encode()
    now = int(time.time())
    headers = {
        "unsigned": {"content-type": "application/json"},
        "no timestamp": {k: v for k, v in signed(body).items() if k != "X-Personas-Timestamp"},
        "bad signature": {**signed(body), "X-Personas-Signature": "sha256=" + "ab" * 32},
        "wrong secret": signed(body, secret="not-the-secret"),
        # A minute past the 300 s window either way: the exact edges are unit-tested with a
        # fixed clock, since here the server reads its clock a moment after the test does.
        "stale": signed(body, now - 360),
        "future": signed(body, now + 360),
        "tampered": signed(body),
    }[case]
    sent = body.replace(b"gold", b"plat") if case == "tampered" else body
    response = hook.post("/v1/webhooks/crm", content=sent, headers=headers)
    assert response.status_code == 401, response.text
    assert response.json()["error"]["code"] == "UNAUTHENTICATED"
    assert graph.rows("MATCH (n) WHERE NOT n:Migration RETURN count(n) AS n") == [{"n": 0}]


def test_the_webhook_needs_a_secret_and_a_mapping(graph: Graph, settings: Settings,
                                                  tmp_path: Path) -> None:
    body = b'{"customer_no": "C-1", "updated_at": "2026-11-01T10:00:00Z"}'
    bad_mapping = tmp_path / "bad.yaml"
    bad_mapping.write_text("source: s\ntimestamp: t\ncolumns: {x: {target: nowhere}}\n")
    cases = [
        ({"crm_mapping_file": EXAMPLE}, "PERSONAS_CRM_WEBHOOK_SECRET"),
        ({"crm_webhook_secret": SecretStr(SECRET)}, "PERSONAS_CRM_MAPPING_FILE"),
        ({"crm_webhook_secret": SecretStr(SECRET), "crm_mapping_file": bad_mapping},
         "unknown target 'nowhere'"),
    ]
    for update, message in cases:
        with TestClient(create_app(settings.model_copy(update=update))) as client:
            response = client.post("/v1/webhooks/crm", content=body, headers=signed(body))
        assert response.status_code == 503, response.text
        assert response.json()["error"]["code"] == "UNAVAILABLE"
        assert message in response.json()["error"]["message"]
    assert deliveries(graph) == 0


def test_bodies_and_limits(graph: Graph, hook_settings: Settings) -> None:
    small = hook_settings.model_copy(update={"api_max_batch_events": 2,
                                             "api_max_body_bytes": 4096})
    with TestClient(create_app(small)) as client:
        three = json.dumps([{"customer_no": f"C-{n}", "updated_at": "2026-11-01T10:00:00Z"}
                            for n in range(3)]).encode()
        too_many = client.post("/v1/webhooks/crm", content=three, headers=signed(three))
        big = b"[" + b" " * 5000 + b"]"
        too_big = client.post("/v1/webhooks/crm", content=big, headers=signed(big))
        junk = b"{not json"
        malformed = client.post("/v1/webhooks/crm", content=junk, headers=signed(junk))
    assert too_many.status_code == 413 and too_big.status_code == 413
    assert too_many.json()["error"]["code"] == "LIMIT_EXCEEDED"
    assert malformed.status_code == 400
    assert malformed.json()["error"]["code"] == "BAD_USER_INPUT"
    assert deliveries(graph) == 0


def test_old_deliveries_are_pruned(graph: Graph, hook: TestClient) -> None:
    graph.execute("CREATE (:WebhookDelivery {id: 'old', received_at: datetime() - "
                  "duration('PT2H')}), (:WebhookDelivery {id: 'recent', "
                  "received_at: datetime() - duration('PT1M')})")
    body = b'{"customer_no": "C-1", "updated_at": "2026-11-01T10:00:00Z"}'
    assert hook.post("/v1/webhooks/crm", content=body, headers=signed(body)).status_code == 200
    ids = {r["id"] for r in graph.rows("MATCH (d:WebhookDelivery) RETURN d.id AS id")}
    assert "old" not in ids and "recent" in ids and len(ids) == 2
    stamp = graph.rows("MATCH (d:WebhookDelivery) WHERE d.id <> 'recent' "
                       "RETURN d.signed_at AS at")[0]["at"].to_native()
    assert abs((datetime.now(UTC) - stamp).total_seconds()) < 60
