"""The bulk import's plan, without a database: what it computes and what it refuses (the graph
itself is compared with the transactional path's in tests/integration/test_bulk_import.py)."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from graph.aggregates.rules import decayed
from graph.ingest import bulk
from graph.privacy import Pseudonymizer

PSEUDONYMIZER = Pseudonymizer("k")


def event(event_id: str, at: str, user: dict[str, str], **props: Any) -> str:
    return json.dumps({"event_id": event_id, "type": props.pop("type", "page_view"),
                       "occurred_at": f"2026-11-{at}Z", "user": user, "properties": props})


def plan(tmp_path: Path, *lines: str, workers: int = 1) -> bulk.BulkPlan:
    path = tmp_path / "h.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return bulk.plan_import([path], PSEUDONYMIZER, tmp_path / "csv", max_line_bytes=1 << 16,
                            workers=workers)


def rows(tmp_path: Path, name: str) -> list[dict[str, str]]:
    with (tmp_path / "csv" / f"{name}.csv").open() as handle:
        return list(csv.DictReader(handle))


def test_an_event_naming_two_users_is_refused_before_anything_is_written(
        tmp_path: Path) -> None:
    with pytest.raises(bulk.IdentityConflict, match="event e3 names identifiers of 2 users"):
        plan(tmp_path, event("e1", "01T10:00:00", {"cookie": "a"}),
             event("e2", "01T11:00:00", {"email": "b@example.com"}),
             event("e3", "01T12:00:00", {"cookie": "a", "email": "b@example.com"}))
    assert not (tmp_path / "csv").exists()


def test_users_are_resolved_in_file_order_and_duplicates_dropped(tmp_path: Path) -> None:
    result = plan(tmp_path,
                  event("e1", "02T10:00:00", {"cookie": "a"}, category="books"),
                  event("e2", "01T10:00:00", {"cookie": "a", "email": "b@example.com"},
                        category="books", type="search", query="q"),
                  event("e1", "03T10:00:00", {"cookie": "z"}),
                  event("e3", "04T10:00:00", {"email": "B@example.com"}, category="toys"),
                  "{broken")
    assert (result.events, result.duplicates, result.rejected) == (3, 1, 1)
    users = rows(tmp_path, "User")
    assert [u["id"] for u in users] == [PSEUDONYMIZER.user_id("cookie", "a")]
    assert users[0]["events:long"] == "3" and users[0]["searches:long"] == "1"
    assert users[0]["first_seen:datetime"] == "2026-11-01T10:00:00.000Z"
    identifiers = rows(tmp_path, "Identifier")
    assert {i["kind"] for i in identifiers} == {"cookie", "email"}
    categories = {c[":ID(Category)"]: c["name"] for c in rows(tmp_path, "Category")}
    prefs = {categories[p[":END_ID(Category)"]]: p for p in rows(tmp_path, "PREFERS")}
    day = 86_400_000
    books = 1.0 + decayed(0.5, day)  # the view a day after the search
    assert float(prefs["books"]["score:double"]) == pytest.approx(books, rel=1e-12)
    toys_weight = 1.0 / (1.0 + decayed(books, 2 * day))
    assert float(prefs["toys"]["weight:double"]) == pytest.approx(toys_weight, rel=1e-12)
    letters = rows(tmp_path, "DeadLetter")
    assert [d["reason"] for d in letters] == [
        "invalid JSON: unexpected character, expected a string key at column 2"]


STAMPS = {"created_at:datetime", "recorded_at:datetime"}


def test_files_staged_in_parallel_give_the_same_plan(tmp_path: Path) -> None:
    lines = [event(f"e{i}", f"0{1 + i % 5}T10:00:00", {"cookie": f"c{i % 7}"},
                   category=f"cat{i % 3}") for i in range(200)]
    first, second = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    first.write_text("\n".join(lines[:120]) + "\n")
    second.write_text("\n".join(lines[80:]) + "\n")  # 40 duplicates
    one = bulk.plan_import([first, second], PSEUDONYMIZER, tmp_path / "one",
                           max_line_bytes=1 << 16, workers=1)
    two = bulk.plan_import([first, second], PSEUDONYMIZER, tmp_path / "two",
                           max_line_bytes=1 << 16, workers=2)
    assert (one.events, one.duplicates) == (two.events, two.duplicates) == (200, 40)
    for f in one.files:
        with f.path.open() as a, (tmp_path / "two" / f.path.name).open() as b:
            # created_at, recorded_at: when each plan was made
            ours, theirs = ([{k: v for k, v in row.items() if k not in STAMPS}
                             for row in csv.DictReader(h)] for h in (a, b))
            assert ours == theirs, f.name


def test_only_files_with_line_breaks_are_read_as_multiline(tmp_path: Path) -> None:
    result = plan(tmp_path, event("e1", "01T10:00:00", {"cookie": "a"}, type="search",
                                  query="red\nshoes"),
                  event("e2", "01T11:00:00", {"cookie": "a"}, type="search",
                        query="blue\r\nshoes"),
                  event("e3", "01T12:00:00", {"cookie": "a"}, item_id="i1", item_name="plain"))
    multiline = {f.name for f in result.files if f.multiline}
    assert multiline == {"Interaction"}
    interactions = tmp_path / "csv" / "Interaction.csv"
    assert result.multiline_arguments() == [
        "--multiline-fields-format=v2", f"--multiline-fields={interactions}"]
    assert "--multiline-fields=true" not in result.arguments()
    text = interactions.read_bytes()
    assert b'"red\nshoes"' in text and b'"blue\r\nshoes"' in text


def test_a_history_without_line_breaks_is_read_single_line(tmp_path: Path) -> None:
    result = plan(tmp_path, event("e1", "01T10:00:00", {"cookie": "a"}, category="books"),
                  "{broken")
    assert not any(f.multiline for f in result.files)
    assert not [a for a in result.arguments() if a.startswith("--multiline")]


def test_nodes_are_numbered_and_relationships_name_them_by_number(tmp_path: Path) -> None:
    plan(tmp_path, event("e1", "01T10:00:00", {"cookie": "a"}, item_id="i1", category="books"),
         event("e2", "01T11:00:00", {"cookie": "b"}, item_id="i2", category="toys"))
    assert "--id-type=integer" in bulk.BulkPlan().arguments()
    users = {u[":ID(User)"]: u["id"] for u in rows(tmp_path, "User")}
    items = {i[":ID(Item)"]: i["id"] for i in rows(tmp_path, "Item")}
    assert sorted(users) == sorted(items) == ["0", "1"]  # numbers, each label from 0
    pairs = {(users[r[":START_ID(User)"]], items[r[":END_ID(Item)"]])
             for r in rows(tmp_path, "INTERACTED")}
    assert pairs == {(PSEUDONYMIZER.user_id("cookie", "a"), "i1"),
                     (PSEUDONYMIZER.user_id("cookie", "b"), "i2")}
    # An id with no property name is not stored: only its number is written.
    assert set(rows(tmp_path, "Interaction")[0]) >= {":ID(Interaction)", "event_id"}
    assert "pos" not in rows(tmp_path, "Interaction")[0]


def test_a_node_named_twice_or_a_missing_end_stops_before_neo4j_admin() -> None:
    users = pl.DataFrame({"id:ID(User)": ["u1", "u2"]})
    items = pl.DataFrame({"id:ID(Item)": ["i1"]})
    edges = pl.DataFrame({":START_ID(User)": ["u1", "u2"], ":END_ID(Item)": ["i1", "i9"]})
    with pytest.raises(bulk.BrokenGraph, match="INTERACTED: 1 relationship"):
        bulk.number_nodes({"User": users, "Item": items, "INTERACTED": edges})
    twice = pl.DataFrame({"id:ID(User)": ["u1", "u1"]})
    with pytest.raises(bulk.BrokenGraph, match="User: a node id appears twice"):
        bulk.number_nodes({"User": twice, "Item": items, "INTERACTED": edges})
    ok = bulk.number_nodes({"User": users, "Item": items, "INTERACTED": edges.head(1)})
    assert ok["INTERACTED"].rows() == [(0, 0)]
    assert ok["User"].rows() == [(0, "u1"), (1, "u2")]
