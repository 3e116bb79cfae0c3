from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from graph.aggregates import decayed
from graph.db import Graph
from graph.events import Event
from graph.ingest.files import ingest_file
from graph.ingest.writer import EventWriter
from graph.migrate import split_statements
from graph.privacy import Pseudonymizer
from graph.recommend.queries import POPULAR
from personas.demo import DemoPopulation
from tests.helpers import PERSONAS, graph_counts

pytestmark = pytest.mark.integration


def good_event(event_id: str, **overrides: Any) -> dict[str, Any]:
    event: dict[str, Any] = {
        "event_id": event_id, "type": "purchase", "source": "web",
        "occurred_at": "2026-11-01T10:00:00+01:00",
        "user": {"cookie": "ck-1", "email": "Jane.Doe@Example.com"},
        "session_id": "s-1",
        "properties": {"item_id": "sku-1", "category": " Home  Garden ", "price": "19.99",
                       "quantity": 2},
    }
    event.update(overrides)
    return event


@pytest.fixture
def demo_file(tmp_path: Path) -> Path:
    path = tmp_path / "demo.jsonl"
    DemoPopulation(60, seed=3).write_events(path)
    return path


def test_same_file_twice_changes_nothing(graph: Graph, demo_file: Path, cli_env) -> None:
    first = subprocess.run([PERSONAS, "ingest", str(demo_file)], env=cli_env,
                           capture_output=True, text=True)
    assert first.returncode == 0, first.stderr
    counts = graph_counts(graph)
    aggregates = graph.rows(
        "MATCH (u:User) RETURN sum(u.events) AS events, sum(u.spend) AS spend, "
        "sum(u.purchases) AS purchases")
    prefs = graph.rows("MATCH ()-[p:PREFERS]->() RETURN sum(p.score) AS s, sum(p.weight) AS w")
    n_lines = sum(1 for _ in demo_file.open())
    assert counts["node:Interaction"] == n_lines
    assert aggregates[0]["events"] == n_lines

    second = subprocess.run([PERSONAS, "ingest", str(demo_file)], env=cli_env,
                            capture_output=True, text=True)
    assert second.returncode == 0, second.stderr
    assert f"written: 0  duplicates: {n_lines}" in second.stderr
    assert graph_counts(graph) == counts
    assert graph.rows(
        "MATCH (u:User) RETURN sum(u.events) AS events, sum(u.spend) AS spend, "
        "sum(u.purchases) AS purchases") == aggregates
    assert graph.rows(
        "MATCH ()-[p:PREFERS]->() RETURN sum(p.score) AS s, sum(p.weight) AS w") == prefs


def test_aggregates_and_preferences_follow_events(graph: Graph, settings) -> None:
    writer = EventWriter(graph, Pseudonymizer("k"))
    events = [
        good_event("e1"),
        good_event("e2", type="page_view", occurred_at="2026-11-02T09:00:00Z",
                   properties={"item_id": "sku-1", "category": "home garden"}),
        good_event("e3", type="add_to_cart", occurred_at="2026-11-02T09:01:00Z",
                   properties={"item_id": "sku-2", "category": "Books", "price": "5"}),
        good_event("e4", type="feedback", occurred_at="2026-11-02T09:02:00Z",
                   properties={"category": "books", "rating": 5}),
    ]
    result = writer.write([Event.model_validate(e) for e in events])
    assert (result.written, result.duplicates) == (4, 0)
    user = graph.rows("MATCH (u:User) RETURN u.events AS events, u.purchases AS purchases, "
                      "u.spend AS spend, u.carts AS carts, toString(u.first_seen) AS first")
    assert user == [{"events": 4, "purchases": 1, "spend": 39.98, "carts": 1,
                     "first": "2026-11-01T09:00:00Z"}]
    interacted = graph.rows(
        "MATCH (:User)-[r:INTERACTED]->(i:Item) RETURN i.id AS item, r.views AS views, "
        "r.carts AS carts, r.purchases AS purchases, r.spend AS spend ORDER BY item")
    assert interacted == [
        {"item": "sku-1", "views": 1, "carts": 0, "purchases": 2, "spend": 39.98},
        {"item": "sku-2", "views": 0, "carts": 1, "purchases": 0, "spend": 0.0},
    ]
    prefs = graph.rows("MATCH (:User)-[p:PREFERS]->(c:Category) RETURN c.name AS c, "
                       "p.source AS source, p.weight AS w ORDER BY c, source")
    # home garden: purchase 5 then, a day later, view 1; books: cart 3 + feedback 2 a minute
    # apart; every score decayed to the latest event (feedback, 09:02 on the 2nd).
    minute, day = 60_000, 86_400_000
    garden = decayed(decayed(5, day) + 1, 2 * minute)
    books = decayed(3, minute) + 2
    assert 5.0 < books + garden < 11.0  # decay makes a day-old purchase count a bit less
    assert prefs == [
        {"c": "books", "source": "explicit", "w": 1.0},
        {"c": "books", "source": "inferred", "w": pytest.approx(books / (books + garden))},
        {"c": "home garden", "source": "inferred", "w": pytest.approx(garden / (books + garden))},
    ]
    # The same user throughout, known by two hashed identifiers and no plaintext.
    idents = graph.rows("MATCH (i:Identifier)-[:IDENTIFIES]->(u:User) "
                        "RETURN i.kind AS kind, i.hash AS hash, u.id AS uid ORDER BY kind")
    assert [r["kind"] for r in idents] == ["cookie", "email"]
    assert len({r["uid"] for r in idents}) == 1
    assert all(len(r["hash"]) == 64 for r in idents)


def test_pii_never_reaches_the_graph(graph: Graph) -> None:
    writer = EventWriter(graph, Pseudonymizer("k"))
    chat = good_event("c1", type="chat_message", properties={
        "text": "Call me on +44 20 7946 0958 or write to jane.doe@example.com please"})
    writer.write([Event.model_validate(good_event("p1")), Event.model_validate(chat)])
    dump = json.dumps(graph.rows("MATCH (n) RETURN properties(n) AS p"), default=str).lower()
    for secret in ("jane.doe@example.com", "7946 0958", "7946", "+442079460958"):
        assert secret not in dump
    text = graph.rows("MATCH (i:Interaction {event_id: 'c1'}) RETURN i.text AS t")[0]["t"]
    assert text.startswith("Call me on [phone:") and "[email:" in text


BAD_LINES = {
    "invalid JSON": '{"event_id": "bad-json", "type": ',
    "event_id": json.dumps({k: v for k, v in good_event("x").items() if k != "event_id"}),
    "type: Input should be": json.dumps(good_event("bad-type", type="teleport")),
    "occurred_at": json.dumps(good_event("bad-time", occurred_at="yesterday-ish")),
    "amount must not be negative": json.dumps(good_event(
        "bad-amount", properties={"item_id": "sku-1", "price": "-5.00"})),
    "over the limit": json.dumps(good_event(
        "huge", properties={"item_id": "s", "price": "1", "item_name": "x" * 10_000_000})),
    "timezone": json.dumps(good_event("naive-time", occurred_at="2026-11-01T10:00:00")),
}


def test_malformed_records_go_to_dead_letters(graph: Graph, tmp_path: Path, cli_env) -> None:
    path = tmp_path / "mixed.jsonl"
    lines = [json.dumps(good_event("ok-1"))]
    expected: dict[int, str] = {}
    for reason, line in BAD_LINES.items():
        lines.append(line)
        expected[len(lines)] = reason
    lines.append(json.dumps(good_event("ok-2", occurred_at="2026-11-03T10:00:00Z")))
    path.write_text("\n".join(lines) + "\n")
    dead = tmp_path / "dead.jsonl"

    proc = subprocess.run([PERSONAS, "ingest", str(path), "--dead-letter", str(dead)],
                          env=cli_env, capture_output=True, text=True)
    assert proc.returncode == 1
    assert f"rejected: {len(BAD_LINES)}" in proc.stderr

    letters = [json.loads(line) for line in dead.read_text().splitlines()]
    assert {d["line"]: d for d in letters}.keys() == expected.keys()
    for d in letters:
        assert expected[d["line"]] in d["reason"], d
        assert len(d["record"]) <= 2000
        assert "jane.doe@example.com" not in d["record"].lower()
    ids = {r["id"] for r in graph.rows("MATCH (i:Interaction) RETURN i.event_id AS id")}
    assert ids == {"ok-1", "ok-2"}


def test_csv_file(graph: Graph, tmp_path: Path, settings) -> None:
    path = tmp_path / "events.csv"
    path.write_text(
        "event_id,type,occurred_at,user_cookie,user_email,session_id,item_id,category,price,"
        "city,location_id,country\n"
        "c-1,purchase,2026-11-01T10:00:00Z,ck-9,a@b.example,s-9,sku-9,Toys,10.50,Paris,paris,fr\n"
        "c-2,page_view,2026-11-01T10:05:00Z,ck-9,,s-9,sku-8,Toys,,,,\n"
        "c-3,purchase,not-a-time,ck-9,,s-9,sku-8,Toys,3,,,\n"
    )
    writer = EventWriter(graph, Pseudonymizer("k"))
    summary = ingest_file(writer, path, batch_size=10, max_line_bytes=10_000)
    assert (summary.records, summary.written, summary.rejected) == (3, 2, 1)
    letters = [json.loads(x) for x in summary.dead_letter.read_text().splitlines()]
    assert letters[0]["line"] == 4 and "occurred_at" in letters[0]["reason"]
    loc = graph.rows("MATCH (:User)-[:LOCATED_IN]->(l:Location) RETURN l.id AS id, "
                     "l.city AS city, l.country AS country")
    assert loc == [{"id": "paris", "city": "Paris", "country": "FR"}]


def test_missing_file_is_a_clear_error(cli_env, tmp_path: Path) -> None:
    proc = subprocess.run([PERSONAS, "ingest", str(tmp_path / "nope.jsonl")], env=cli_env,
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert "no such file" in proc.stderr


@pytest.mark.parametrize("command", [["ingest"], ["import"], ["import", "--bulk"]])
def test_a_path_that_is_not_a_regular_file_says_so(cli_env, tmp_path: Path,
                                                   command: list[str]) -> None:
    """A directory, a FIFO or a device: refused, exit 2, naming what it is (the message said
    "no such file" of a directory that is there)."""
    fifo = tmp_path / "events.jsonl"
    os.mkfifo(fifo)
    for path in (tmp_path, fifo, Path("/dev/zero")):
        proc = subprocess.run([PERSONAS, *command, str(path)], env=cli_env,
                              capture_output=True, text=True, timeout=120)
        assert proc.returncode == 2, (path, proc.stderr)
        assert "not a regular file" in proc.stderr, (path, proc.stderr)


def test_a_late_event_does_not_overwrite_a_newer_profile(graph: Graph) -> None:
    """Profiles (demographics, location) are last-write-wins by event time, across batches."""
    pz = Pseudonymizer("k")
    writer = EventWriter(graph, pz)
    user = {"cookie": "ck-late"}

    def profiled(event_id: str, at: str, age_band: str, city: str) -> Event:
        return Event.model_validate({
            "event_id": event_id, "type": "page_view", "source": "web", "occurred_at": at,
            "user": user, "profile": {"age_band": age_band, "location": {
                "id": city.lower(), "city": city, "country": "GB"}}})

    def profile() -> tuple[str, str]:
        [row] = graph.rows("MATCH (u:User {id: $id})-[:LOCATED_IN]->(l:Location) "
                           "RETURN u.age_band AS age, l.city AS city",
                           id=pz.user_id("cookie", "ck-late"))
        return row["age"], row["city"]

    writer.write([profiled("p2", "2026-10-02T10:00:00Z", "25-34", "London")])
    writer.write([profiled("p1", "2026-10-01T10:00:00Z", "35-44", "Leeds")])  # late
    assert profile() == ("25-34", "London")
    # Within one batch too, the newest event wins whatever the order of arrival.
    writer.write([profiled("p4", "2026-10-04T10:00:00Z", "45-54", "York"),
                  profiled("p3", "2026-10-03T10:00:00Z", "55-64", "Bath")])
    assert profile() == ("45-54", "York")
    # Each field and the location keep their own latest value: a newer event without a location
    # keeps the older one's, and a batch's older field does not win over what is stored.
    newer = Event.model_validate({
        "event_id": "p5", "type": "page_view", "source": "web",
        "occurred_at": "2026-10-05T10:00:00Z", "user": user, "profile": {"gender": "female"}})
    older = profiled("p0", "2026-09-30T10:00:00Z", "18-24", "Hull")
    writer.write([older, newer])
    assert profile() == ("45-54", "York")
    [row] = graph.rows("MATCH (u:User {id: $id}) RETURN u.gender AS g, "
                       "u.profile_updated_at.epochMillis AS at",
                       id=pz.user_id("cookie", "ck-late"))
    assert row == {"g": "female", "at": 1_791_194_400_000}  # 2026-10-05T10:00:00Z
    assert graph.rows("MATCH (u:User)-[:PERFORMED]->(i) RETURN count(i) AS n") == [{"n": 6}]


def test_an_item_keeps_its_list_price_through_discounted_sales(graph: Graph) -> None:
    """An item's price is the last undiscounted price seen; a discounted sale records what
    was paid on the interaction only."""
    writer = EventWriter(graph, Pseudonymizer("k"))

    def write(*events: dict[str, Any]) -> None:
        writer.write([Event.model_validate(e) for e in events])

    def item() -> dict[str, Any]:
        [row] = graph.rows("MATCH (i:Item {id: 'sku-1'}) RETURN i.name AS name, i.price AS price")
        return row

    sale = {"item_id": "sku-1", "item_name": "Lamp", "price": "15.99", "discount": 0.2}
    write(good_event("p1"), good_event("p2", occurred_at="2026-11-02T10:00:00Z", properties=sale))
    assert item() == {"name": "Lamp", "price": 19.99}
    assert graph.rows("MATCH (i:Interaction {event_id: 'p2'}) RETURN i.price AS p, "
                      "i.discount AS d") == [{"p": 15.99, "d": 0.2}]
    write(good_event("p3", occurred_at="2026-11-03T10:00:00Z",
                     properties={"item_id": "sku-1", "price": "21.50"}))
    assert item() == {"name": "Lamp", "price": 21.5}


ITEM_CATEGORIES = """
MATCH (it:Item)
RETURN it.id AS id, it.category AS category,
       COLLECT { MATCH (it)-[:IN_CATEGORY]->(c:Category) RETURN c.name ORDER BY c.name } AS edges
ORDER BY id
"""


def test_an_item_moves_to_the_latest_category_named(graph: Graph) -> None:
    """An item is in one category, the latest an event names: its `category` (what the
    recommendation reads) and its one IN_CATEGORY edge move together, in one statement; an
    event naming no category leaves both as they are."""
    writer = EventWriter(graph, Pseudonymizer("k"))

    def bought(event_id: str, day: int, **properties: Any) -> None:
        writer.write([Event.model_validate(good_event(
            event_id, occurred_at=f"2026-11-0{day}T10:00:00Z",
            properties={"item_id": "sku-1", "price": "9.5", **properties}))])

    bought("c1", 1, category="Garden")
    assert graph.rows(ITEM_CATEGORIES) == [
        {"id": "sku-1", "category": "garden", "edges": ["garden"]}]
    bought("c2", 2, category="Books")
    assert graph.rows(ITEM_CATEGORIES) == [
        {"id": "sku-1", "category": "books", "edges": ["books"]}]
    bought("c3", 3)
    bought("c4", 4, category="Books")
    assert graph.rows(ITEM_CATEGORIES) == [
        {"id": "sku-1", "category": "books", "edges": ["books"]}]
    assert {r["name"] for r in graph.rows("MATCH (c:Category) RETURN c.name AS name")} == {
        "garden", "books"}  # the category itself stays
    # The recommendation's reads take the property: the best-sellers name the new category.
    popular = graph.rows(POPULAR, personal=False, user_id="", first=5)
    assert [(r["item_id"], r["category"]) for r in popular] == [("sku-1", "books")]


def test_the_migration_gives_items_their_category(graph: Graph, settings) -> None:
    """Items written before 0019 get the category their edge names; one that the writer of
    then left in two categories (it added an edge when the category changed) keeps one, the
    property naming it. A second run changes nothing."""
    writer = EventWriter(graph, Pseudonymizer("k"))
    writer.write([Event.model_validate(good_event(
        f"m{n}", properties={"item_id": f"sku-{n}", "price": "9.5", "category": category}))
        for n, category in enumerate(["Garden", "Books", "Toys"])])
    graph.execute("MATCH (it:Item) REMOVE it.category")
    graph.execute("MATCH (it:Item {id: 'sku-1'}), (c:Category {name: 'garden'}) "
                  "CREATE (it)-[:IN_CATEGORY]->(c)")
    migration = next(settings.migrations_dir.glob("0019_*.cypher"))
    for statement in split_statements(migration.read_text()):
        graph.auto_commit(statement)  # type: ignore[arg-type]
    rows = graph.rows(ITEM_CATEGORIES)
    assert rows[0] == {"id": "sku-0", "category": "garden", "edges": ["garden"]}
    assert rows[1]["category"] in {"books", "garden"}
    assert rows[1]["edges"] == [rows[1]["category"]]
    assert rows[2] == {"id": "sku-2", "category": "toys", "edges": ["toys"]}
    again = graph.auto_commit(split_statements(migration.read_text())[-1])  # type: ignore[arg-type]
    assert again.counters.properties_set == 0
    assert again.counters.relationships_deleted == 0


def test_a_location_takes_new_and_changed_values(graph: Graph) -> None:
    """Locations are written only when a value differs (``UPSERT_LOCATIONS``): a value added
    or changed later still lands, and the same values again leave them as they are."""
    writer = EventWriter(graph, Pseudonymizer("k"))

    def located(event_id: str, day: int, **location: Any) -> None:
        writer.write([Event.model_validate(good_event(
            event_id, occurred_at=f"2026-11-0{day}T10:00:00Z",
            profile={"location": {"id": "berlin", **location}}))])

    def location() -> list[dict[str, Any]]:
        return graph.rows("MATCH (:User)-[:LOCATED_IN]->(l:Location) RETURN properties(l) AS l")

    located("l1", 1, city="Berlin")
    assert location() == [{"l": {"id": "berlin", "city": "Berlin"}}]
    located("l2", 2, city="Berlin", lat=52.52)
    assert location() == [{"l": {"id": "berlin", "city": "Berlin", "lat": 52.52}}]
    located("l3", 3, city="Berlin-Mitte")
    located("l4", 4, city="Berlin-Mitte")
    assert location() == [{"l": {"id": "berlin", "city": "Berlin-Mitte", "lat": 52.52}}]
