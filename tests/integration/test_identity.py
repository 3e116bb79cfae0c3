"""Identity resolution against the real Neo4j: merges move everything and rebuild aggregates as
if the events had been one user's from the start; unmerges restore both users exactly, also
along chains; events linking two users' identifiers merge them at ingest."""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import Sequence
from typing import Any

import pytest

from graph.db import AsyncGraph, Graph, create_async_driver
from graph.errors import Conflict, InvalidInput, NotFound
from graph.events import Event
from graph.identity import (
    merge_users,
    merge_users_async,
    merges_of,
    merges_of_async,
    resolve_user,
    unmerge,
    unmerge_async,
)
from graph.ingest.writer import EventWriter
from graph.privacy import Pseudonymizer
from tests.helpers import PERSONAS, graph_counts

pytestmark = pytest.mark.integration

PZ = Pseudonymizer("k")
A_IDS = {"crm_id": "crm-A"}
B_IDS = {"cookie": "ck-B"}
C_IDS = {"email": "carol@example.com"}
A = PZ.user_id("crm_id", "crm-A")
B = PZ.user_id("cookie", "ck-B")
C = PZ.user_id("email", "carol@example.com")
PROVENANCE = {"merges", "via_merge", "stash_merges", "stash_weights", "stash_updated_at",
              "merge_stack"}


def ev(event_id: str, user: dict[str, str], at: str, type_: str = "page_view",
       **extra: Any) -> Event:
    body: dict[str, Any] = {"event_id": event_id, "type": type_, "source": "web",
                            "occurred_at": at, "user": user, **extra}
    return Event.model_validate(body)


def a_events(user: dict[str, str] = A_IDS) -> list[Event]:
    return [
        ev("a1", user, "2026-10-01T10:00:00Z", "purchase", session_id="sA",
           device={"id": "dev-shared", "kind": "mobile"},
           profile={"age_band": "25-34", "locale": "en-GB",
                    "location": {"id": "london", "city": "London", "country": "GB"}},
           properties={"item_id": "sku-1", "category": "Books", "price": "12.50",
                       "quantity": 2}),
        ev("a2", user, "2026-10-01T10:05:00Z", session_id="sA",
           properties={"item_id": "sku-2", "category": "Toys"}),
        ev("a3", user, "2026-10-02T09:00:00Z", "feedback", session_id="sA",
           properties={"category": "books", "rating": 5}),
    ]


def b_events(user: dict[str, str] = B_IDS) -> list[Event]:
    return [
        ev("b1", user, "2026-10-03T08:00:00Z", session_id="sB",
           device={"id": "dev-shared", "kind": "mobile"},
           profile={"gender": "female", "locale": "fr-FR",
                    "location": {"id": "paris", "city": "Paris", "country": "FR"}},
           properties={"item_id": "sku-1", "category": "books"}),
        ev("b2", user, "2026-10-03T08:02:00Z", "add_to_cart", session_id="sB",
           device={"id": "dev-b", "kind": "desktop"},
           properties={"item_id": "sku-3", "category": "Games", "price": "30"}),
        ev("b3", user, "2026-10-03T08:03:00Z", "feedback", session_id="sB",
           properties={"category": "books", "rating": 1}),
        ev("b4", user, "2026-10-03T08:04:00Z", "search", session_id="sB",
           properties={"query": "lego", "category": "toys"}),
        ev("b5", user, "2026-10-03T08:05:00Z", "feedback",
           properties={"category": "toys", "rating": 4}),
    ]


def c_events(user: dict[str, str] = C_IDS) -> list[Event]:
    return [
        ev("c1", user, "2026-09-20T12:00:00Z", "purchase", session_id="sC",
           device={"id": "dev-c", "kind": "tablet"},
           profile={"age_band": "45-54"},
           properties={"item_id": "sku-3", "category": "games", "price": "30",
                       "quantity": 1}),
        ev("c2", user, "2026-09-21T12:00:00Z", "feedback",
           properties={"category": "books", "rating": 3}),
    ]


def write(graph: Graph, *batches: Sequence[Event]) -> EventWriter:
    writer = EventWriter(graph, PZ)
    for batch in batches:
        writer.write(list(batch))
    return writer


def _norm(value: Any) -> Any:
    if isinstance(value, float):
        return round(value, 6)
    if isinstance(value, list):
        return tuple(_norm(v) for v in value)
    if hasattr(value, "iso_format"):
        return value.iso_format()
    return value


def snapshot(graph: Graph, uid: str, *, provenance: bool = True,
             created: bool = True) -> dict[str, Any]:
    """Everything about one user (live or tombstone): labels, properties, and every
    relationship with its direction, the other end's key and its properties. Without
    ``provenance``, the merge marks and tombstone links are left out."""
    skip = set() if provenance else set(PROVENANCE)
    if not created:
        skip.add("created_at")
    rows = graph.rows("MATCH (u:User|MergedUser {id: $id}) "
                      "RETURN labels(u) AS labels, properties(u) AS props", id=uid)
    assert len(rows) == 1, (uid, rows)
    rels = graph.rows(
        "MATCH (u:User|MergedUser {id: $id})-[r]-(x) "
        "RETURN type(r) AS type, startNode(r) = u AS out, labels(x)[0] AS label, "
        "coalesce(x.id, x.event_id, x.name, x.kind + ':' + x.hash) AS key, "
        "properties(r) AS props", id=uid)
    return {
        "labels": sorted(rows[0]["labels"]),
        "props": {k: _norm(v) for k, v in rows[0]["props"].items() if k not in skip},
        "rels": sorted(
            (r["type"], r["out"], r["label"], r["key"],
             tuple(sorted((k, _norm(v)) for k, v in r["props"].items() if k not in skip)))
            for r in rels if provenance or r["type"] != "MERGED_INTO"),
    }


def counts_without_merges(graph: Graph) -> dict[str, int]:
    return {k: v for k, v in graph_counts(graph).items() if k != "node:Merge"}


def live_users(graph: Graph) -> list[str]:
    return [r["id"] for r in graph.rows("MATCH (u:User) RETURN u.id AS id ORDER BY id")]


def test_merge_equals_loading_the_events_as_one_user(graph: Graph, driver, settings) -> None:
    write(graph, a_events(), b_events())
    assert live_users(graph) == sorted([A, B])
    merge_id = merge_users(graph, A, B, source="test", reason="same person")
    merged = snapshot(graph, A, provenance=False, created=False)
    assert live_users(graph) == [A]
    tomb = snapshot(graph, B)
    assert tomb["labels"] == ["MergedUser"]
    # The tombstone keeps only what is copied or describes it (and points at the survivor).
    assert {r[0] for r in tomb["rels"]} <= {"USES", "HAD_SESSION", "LOCATED_IN", "PREFERS",
                                            "MERGED_INTO", "IN_SEGMENT", "HAD_PERSONA"}
    assert ("MERGED_INTO", True, "User", A) in {r[:4] for r in tomb["rels"]}
    assert all(("source", "explicit") in r[4] for r in tomb["rels"] if r[0] == "PREFERS")
    assert resolve_user(graph, B) == A
    history = merges_of(graph, B)
    assert [(m["id"], m["survivor_id"], m["merged_id"], m["active"]) for m in history] == [
        (merge_id, A, B, True)]
    assert history[0]["moved"] == {"IDENTIFIES": 1, "PERFORMED": 5}
    assert history[0]["copied"] == {"PREFERS": 1, "PREFERS overwritten": 1, "USES": 1,
                                    "HAD_SESSION": 1, "LOCATED_IN": 1}

    # The same events loaded from scratch as one user, B's events naming A's CRM id too (the
    # test database is wiped: `graph` and `fresh` are the same database).
    from tests.helpers import empty_graph

    fresh = empty_graph(driver, settings)
    write(fresh, a_events(), b_events({**A_IDS, **B_IDS}))
    assert live_users(fresh) == [A]
    assert merged == snapshot(fresh, A, provenance=False, created=False)
    # The figures themselves, for the record: 8 events, spend 25.00, books explicit -1.
    user = merged["props"]
    assert (user["events"], user["purchases"], user["carts"], user["feedbacks"],
            user["spend"]) == (8, 1, 1, 3, 25.0)
    assert user["locale"] == "fr-FR" and user["age_band"] == "25-34"
    prefs = {(r[3], dict(r[4])["source"]): dict(r[4])["weight"]
             for r in merged["rels"] if r[0] == "PREFERS"}
    assert prefs[("books", "explicit")] == -1.0
    assert prefs[("toys", "explicit")] == 0.5
    located = [r[3] for r in merged["rels"] if r[0] == "LOCATED_IN"]
    assert located == ["paris"]


def with_segments(graph: Graph) -> None:
    """Segment memberships and persona history for A and B, as a run would leave them."""
    graph.execute("""
        CREATE (r:SegmentationRun {id: 'run-1'})
        CREATE (s1:Segment {id: 'run-1-L0-0', run_id: 'run-1', level: 0})
        CREATE (s2:Segment {id: 'run-1-L0-1', run_id: 'run-1', level: 0})
        CREATE (p1:Persona {id: 'persona-1'}), (p2:Persona {id: 'persona-2'})
        WITH s1, s2, p1, p2
        MATCH (a:User {id: $a}), (b:User {id: $b})
        CREATE (a)-[:IN_SEGMENT {run_id: 'run-1', distance: 0.5, user_id: a.id}]->(s1)
        CREATE (b)-[:IN_SEGMENT {run_id: 'run-1', distance: 1.5, user_id: b.id}]->(s2)
        CREATE (a)-[:HAD_PERSONA {run_id: 'run-1', valid_from: datetime(), user_id: a.id}]->(p1)
        CREATE (b)-[:HAD_PERSONA {run_id: 'run-1', valid_from: datetime(), user_id: b.id}]->(p2)
    """, a=A, b=B)


def test_unmerge_restores_both_users_exactly(graph: Graph) -> None:
    write(graph, a_events(), b_events())
    with_segments(graph)
    graph.execute("MATCH (a:User {id: $a}), (b:User {id: $b}) "
                  "SET a.consent_analytics = true, b.consent_analytics = false", a=A, b=B)
    before = {u: snapshot(graph, u) for u in (A, B)}
    counts = graph_counts(graph)
    merge_id = merge_users(graph, A, B, source="test", reason="same person")
    assert snapshot(graph, A) != before[A]
    # A withdrawal of consent on either side holds for the merged user.
    assert graph.rows("MATCH (u:User {id: $a}) RETURN u.consent_analytics AS c", a=A) == [
        {"c": False}]
    assert unmerge(graph, merge_id) == (A, B)
    assert {u: snapshot(graph, u) for u in (A, B)} == before
    assert counts_without_merges(graph) == counts
    assert graph.rows("MATCH (g:Merge) RETURN g.id AS id, g.undone_at IS NOT NULL AS undone") == [
        {"id": merge_id, "undone": True}]
    # Undoing again changes nothing; merging again is a new merge, undone the same way.
    assert unmerge(graph, merge_id) == (A, B)
    assert {u: snapshot(graph, u) for u in (A, B)} == before
    again = merge_users(graph, B, A, source="test", reason="the other way round")
    assert again != merge_id and live_users(graph) == [B]
    unmerge(graph, again)
    assert {u: snapshot(graph, u) for u in (A, B)} == before
    assert [m["active"] for m in merges_of(graph, A)] == [False, False]


def test_a_merge_on_the_async_driver_does_what_it_does_on_the_sync_one(
        graph: Graph, settings) -> None:
    """The API runs the same transaction work as the CLI, on its async driver: merging and
    undoing there leaves the graph as merging and undoing on the sync driver does."""
    write(graph, a_events(), b_events())
    before = {u: snapshot(graph, u) for u in (A, B)}

    async def merge_and_undo() -> tuple[dict[str, Any], list[dict[str, Any]], tuple[str, str]]:
        driver = create_async_driver(settings)
        try:
            agraph = AsyncGraph(driver, settings.neo4j_database)
            merge_id = await merge_users_async(agraph, A, B, source="test", reason="async")
            merged = snapshot(graph, A, provenance=False, created=False)
            history = await merges_of_async(agraph, B)
            assert [m["id"] for m in history] == [merge_id]
            return merged, history, await unmerge_async(agraph, merge_id)
        finally:
            await driver.close()

    merged_async, history_async, undone = asyncio.run(merge_and_undo())
    assert undone == (A, B)
    assert {u: snapshot(graph, u) for u in (A, B)} == before
    merge_id = merge_users(graph, A, B, source="test", reason="sync")
    assert snapshot(graph, A, provenance=False, created=False) == merged_async
    [history_sync] = [m for m in merges_of(graph, B) if m["id"] == merge_id]
    assert (history_sync["moved"], history_sync["copied"]) == (
        history_async[0]["moved"], history_async[0]["copied"])


def test_events_after_a_merge_stay_with_the_survivor(graph: Graph) -> None:
    writer = write(graph, a_events(), b_events())
    original_b = snapshot(graph, B)
    merge_id = merge_users(graph, A, B, source="test", reason="same person")
    # The survivor is seen later on B's second device (a copy so far) and buys something.
    writer.write([ev("a9", A_IDS, "2026-10-06T10:00:00Z", "purchase",
                     device={"id": "dev-b", "kind": "desktop"},
                     properties={"item_id": "sku-9", "category": "books", "price": "3.00"})])
    unmerge(graph, merge_id)
    assert snapshot(graph, B) == original_b
    survivor = snapshot(graph, A)
    devices = sorted(r[3] for r in survivor["rels"] if r[0] == "USES")
    assert devices == sorted([PZ.device_id("dev-shared"), PZ.device_id("dev-b")])
    assert survivor["props"]["events"] == 4 and survivor["props"]["spend"] == 28.0
    assert not any(k in PROVENANCE for r in survivor["rels"] for k, _ in r[4])


def test_remerging_is_a_noop(graph: Graph) -> None:
    write(graph, a_events(), b_events(), c_events())
    first = merge_users(graph, A, B, source="test", reason="one")
    counts, snap = graph_counts(graph), snapshot(graph, A)
    assert merge_users(graph, A, B, source="test", reason="again") == first
    assert merge_users(graph, B, A, source="test", reason="reversed") == first
    assert graph_counts(graph) == counts and snapshot(graph, A) == snap
    # A tombstone id stands for its survivor: C is merged into A, not into the tombstone.
    second = merge_users(graph, B, C, source="test", reason="via the old id")
    assert live_users(graph) == [A]
    assert graph.rows("MATCH (g:Merge {id: $id}) RETURN g.survivor_id AS s, g.merged_id AS m",
                      id=second) == [{"s": A, "m": C}]


def three_users(graph: Graph) -> dict[str, dict[str, Any]]:
    write(graph, a_events(), b_events(), c_events())
    return {u: snapshot(graph, u) for u in (A, B, C)}


def test_chain_undone_in_reverse_order(graph: Graph) -> None:
    original = three_users(graph)
    counts = graph_counts(graph)
    m1 = merge_users(graph, A, B, source="test", reason="A+B")    # A+B -> A
    after_m1 = {u: snapshot(graph, u) for u in (A, B, C)}
    m2 = merge_users(graph, C, A, source="test", reason="A+C")    # A+C -> C
    assert live_users(graph) == [C]
    assert resolve_user(graph, B) == C
    assert graph.rows("MATCH (u:User {id: $c}) RETURN u.events AS n", c=C) == [{"n": 10}]
    assert [m["id"] for m in merges_of(graph, C)] == [m1, m2]

    assert unmerge(graph, m2) == (C, A)
    assert {u: snapshot(graph, u) for u in (A, B, C)} == after_m1
    assert unmerge(graph, m1) == (A, B)
    assert {u: snapshot(graph, u) for u in (A, B, C)} == original
    assert counts_without_merges(graph) == counts


def test_chain_undone_out_of_order_is_a_conflict(graph: Graph) -> None:
    original = three_users(graph)
    m1 = merge_users(graph, A, B, source="test", reason="A+B")    # A+B -> A
    m2 = merge_users(graph, C, A, source="test", reason="A+C")    # A+C -> C
    state = {u: snapshot(graph, u) for u in (A, B, C)}
    with pytest.raises(Conflict, match=m2):
        unmerge(graph, m1)
    assert {u: snapshot(graph, u) for u in (A, B, C)} == state   # nothing half-done
    unmerge(graph, m2)
    unmerge(graph, m1)
    assert {u: snapshot(graph, u) for u in (A, B, C)} == original


def test_merges_into_one_user_are_undone_latest_first(graph: Graph) -> None:
    original = three_users(graph)
    m1 = merge_users(graph, A, B, source="test", reason="A+B")
    m2 = merge_users(graph, A, C, source="test", reason="A+C")
    with pytest.raises(Conflict, match=m2):
        unmerge(graph, m1)
    unmerge(graph, m2)
    unmerge(graph, m1)
    assert {u: snapshot(graph, u) for u in (A, B, C)} == original


def test_an_event_linking_two_users_merges_them_at_ingest(graph: Graph, driver,
                                                          settings) -> None:
    writer = write(graph, b_events(), c_events())
    assert live_users(graph) == sorted([B, C])
    link = ev("link-1", {**B_IDS, **C_IDS}, "2026-10-04T10:00:00Z", source="chat",
              session_id="sL", properties={"item_id": "sku-1", "category": "books"})
    result = writer.write([link])
    # The email outranks the cookie: C survives, and the batch reports the survivor.
    assert result.written == 1 and result.user_ids == (C,)
    assert live_users(graph) == [C]
    [merge] = merges_of(graph, C)
    assert (merge["survivor_id"], merge["merged_id"], merge["source"]) == (C, B, "chat")
    assert "link-1" in merge["reason"]
    survivor = snapshot(graph, C, provenance=False, created=False)
    assert survivor["props"]["events"] == 8

    # Loading the same events again changes nothing.
    counts = graph_counts(graph)
    again = writer.write(b_events() + c_events() + [link])
    assert (again.written, again.duplicates) == (0, 8)
    assert graph_counts(graph) == counts
    assert snapshot(graph, C, provenance=False, created=False) == survivor

    # One batch holding all of it resolves to the same user, with the same aggregates.
    from tests.helpers import empty_graph

    fresh = empty_graph(driver, settings)
    write(fresh, [*b_events(), *c_events(), link])
    assert live_users(fresh) == [C]
    assert snapshot(fresh, C, provenance=False, created=False) == survivor
    assert [(m["survivor_id"], m["merged_id"]) for m in merges_of(fresh, C)] == [(C, B)]


def test_one_event_linking_three_users_merges_all(graph: Graph) -> None:
    writer = write(graph, a_events(), b_events(), c_events())
    writer.write([ev("link-3", {**A_IDS, **B_IDS, **C_IDS}, "2026-10-05T10:00:00Z")])
    assert live_users(graph) == [A]   # the CRM id outranks the email and the cookie
    assert sorted(m["merged_id"] for m in merges_of(graph, A)) == sorted([B, C])
    assert graph.rows("MATCH (u:User {id: $a}) RETURN u.events AS n", a=A) == [{"n": 11}]


def test_between_equal_identifiers_the_user_seen_first_survives(graph: Graph) -> None:
    # Both users are known by an email; the linking event names the later one's email (found
    # first, so the event is written to it) and the earlier one's cookie.
    later = {"email": "late@example.com"}
    earlier = {"email": "early@example.com", "cookie": "ck-early"}
    writer = write(graph, [ev("l1", later, "2026-10-02T10:00:00Z")],
                   [ev("e1", earlier, "2026-10-01T10:00:00Z")])
    writer.write([ev("x1", {**later, "cookie": "ck-early"}, "2026-10-03T10:00:00Z")])
    assert live_users(graph) == [PZ.user_id("email", "early@example.com")]


def test_errors(graph: Graph) -> None:
    write(graph, a_events(), b_events())
    counts = graph_counts(graph)
    with pytest.raises(NotFound, match="u_nobody"):
        merge_users(graph, A, "u_nobody", source="test", reason="x")
    with pytest.raises(InvalidInput, match="itself"):
        merge_users(graph, A, A, source="test", reason="x")
    with pytest.raises(InvalidInput, match="reason"):
        merge_users(graph, A, B, source="test", reason="  ")
    with pytest.raises(NotFound, match="merge-nope"):
        unmerge(graph, "merge-nope")
    with pytest.raises(NotFound):
        merges_of(graph, "u_nobody")
    assert graph_counts(graph) == counts
    # Contact details in a reason never reach the graph.
    merge_id = merge_users(graph, A, B, source="test",
                           reason="customer jane.doe@example.com called from +49 151 1234567")
    [row] = graph.rows("MATCH (g:Merge {id: $id}) RETURN g.reason AS reason", id=merge_id)
    assert row["reason"] == "customer [email] called from [phone]"


def test_cli(graph: Graph, cli_env) -> None:
    write(graph, a_events(), b_events())
    done = subprocess.run([PERSONAS, "identity", "merge", A, B, "--reason", "support ticket 17"],
                          env=cli_env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    merge_id = done.stdout.strip()
    assert merge_id.startswith("merge-") and live_users(graph) == [A]
    listed = subprocess.run([PERSONAS, "identity", "merges", B], env=cli_env,
                            capture_output=True, text=True)
    assert listed.returncode == 0, listed.stderr
    assert merge_id in listed.stdout and "support ticket 17" in listed.stdout
    undone = subprocess.run([PERSONAS, "identity", "unmerge", merge_id], env=cli_env,
                            capture_output=True, text=True)
    assert undone.returncode == 0, undone.stderr
    assert live_users(graph) == sorted([A, B])
    bad = subprocess.run([PERSONAS, "identity", "merge", A, A], env=cli_env,
                         capture_output=True, text=True)
    assert bad.returncode == 2 and "BAD_USER_INPUT" in bad.stderr
    missing = subprocess.run([PERSONAS, "identity", "unmerge", "merge-nope"], env=cli_env,
                             capture_output=True, text=True)
    assert missing.returncode == 2 and "NOT_FOUND" in missing.stderr


HOSTILE_TEXT = "x[/bold] [link=https://evil.example]here[/link] \x1b]0;pwned\x07\x1b[2J"
"""Rich markup that does not close (MarkupError), a link, and terminal escape sequences (a
window title, a cleared screen)."""


def test_the_cli_shows_text_from_outside_as_text(graph: Graph, cli_env) -> None:
    """A merge's source and reason, ids in error messages: text other people chose, printed
    through rich. A tag that does not close ended `identity merges` (and any error naming such
    an id) with rich's MarkupError and a traceback; escape sequences reached the terminal."""
    write(graph, a_events(), b_events())
    merge_users(graph, A, B, source=HOSTILE_TEXT, reason=HOSTILE_TEXT)
    runs = [subprocess.run([PERSONAS, "identity", "merges", B], env=cli_env,
                           capture_output=True, text=True),
            subprocess.run([PERSONAS, "identity", "unmerge", "merge-" + HOSTILE_TEXT],
                           env=cli_env, capture_output=True, text=True)]
    assert [run.returncode for run in runs] == [0, 2], [run.stderr[-500:] for run in runs]
    for run in runs:
        out = run.stdout + run.stderr
        assert "Traceback" not in out and "\x1b" not in out and "\x07" not in out
        assert "[/bold]" in out and "\\x1b]0;pwned" in out.replace("\n", "")


def test_an_identifier_linked_by_two_concurrent_writers_merges_their_users(
        graph: Graph, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two writers (the consumer and the API, say) each see a cookie as new and link it to a
    user of their own: the one committing second finds the cookie taken and merges."""
    cookie = {"cookie": "ck-shared"}
    writer = EventWriter(graph, PZ)
    params = EventWriter._params
    raced: list[bool] = []

    def racing_params(self: EventWriter, *args: Any) -> Any:
        # Between this transaction's look-up of the cookie and its MERGE, another writer (its
        # own session and transaction) links the cookie to user C and commits.
        if not raced:
            raced.append(True)
            other = EventWriter(graph, PZ)
            assert other.write([ev("c1", {**C_IDS, **cookie}, "2026-10-05T10:00:00Z")]).written == 1
        return params(self, *args)

    monkeypatch.setattr(EventWriter, "_params", racing_params)
    result = writer.write([ev("a1", {**A_IDS, **cookie}, "2026-10-05T10:01:00Z")])
    assert raced and result.written == 1
    owners = graph.rows("MATCH (:Identifier {kind: 'cookie', hash: $h})-[:IDENTIFIES]->(u:User) "
                        "RETURN u.id AS id", h=PZ.digest("cookie", "ck-shared"))
    assert owners == [{"id": A}]  # a CRM id outranks an email: A survives
    assert result.user_ids == (A,)
    assert resolve_user(graph, C) == A
    assert graph.rows("MATCH (:User {id: $id})-[:PERFORMED]->(i) RETURN i.event_id AS e "
                      "ORDER BY e", id=A) == [{"e": "a1"}, {"e": "c1"}]
    # The merge is reversible like any other: the cookie goes back to the user it was first
    # linked to.
    [merge] = merges_of(graph, A)
    assert unmerge(graph, merge["id"]) == (A, C)
    assert graph.rows("MATCH (:Identifier {kind: 'cookie', hash: $h})-[:IDENTIFIES]->(u:User) "
                      "RETURN u.id AS id", h=PZ.digest("cookie", "ck-shared")) == [{"id": C}]
