"""Privacy operations against the real Neo4j: erasure, export, consent, retention, dead letters
in the graph, and the `personas privacy` commands."""

from __future__ import annotations

import dataclasses
import json
import stat
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from graph.db import Graph
from graph.errors import InvalidInput, NotFound
from graph.features.table import build_feature_table
from graph.ingest.batch import ERASED_REASON, ingest_records
from graph.ingest.files import ingest_file
from graph.ingest.writer import EventWriter
from graph.privacy import Pseudonymizer
from graph.segments.run import run_segmentation
from graph.settings import Settings
from graph.subjects import (
    consent_history,
    consents_of,
    export_user,
    forget_user,
    prune_interactions,
    set_consent,
)
from tests.helpers import PERSONAS, graph_counts, load_demo

pytestmark = pytest.mark.integration

NOW = datetime.now(UTC).replace(microsecond=0)
JANE_EMAIL = "Jane.Doe@Example.com"
JANE_PHONE = "+44 20 7946 0958"
SHARED_LABELS = ("Item", "Category", "Brand", "Location", "Segment", "Persona",
                 "SegmentationRun", "WeatherObservation", "LocalEvent")
PLAINTEXT = ("jane.doe@example.com", "7946 0958", "ck-jane", "dev-jane", "dev-shared",
             "bob@example.com", "ck-bob")


def at(days: float) -> str:
    return (NOW - timedelta(days=days)).isoformat()


def event(event_id: str, type_: str, days: float, user: dict[str, str], **fields: Any
          ) -> dict[str, Any]:
    return {"event_id": event_id, "type": type_, "source": "web", "occurred_at": at(days),
            "user": user, **fields}


def world_lines() -> list[str]:
    """Jane: an old page view, a purchase, a chat naming her email and phone, a feedback; Bob:
    an old and a new event on the same item and a device Jane used too; one reject each."""
    jane = {"cookie": "ck-jane", "email": JANE_EMAIL}
    events = [
        event("j-1", "page_view", 400, jane, session_id="s-1",
              device={"id": "dev-jane", "kind": "mobile"},
              profile={"age_band": "25-34",
                       "location": {"id": "london", "city": "London", "country": "GB"}},
              properties={"item_id": "sku-1", "category": "Books"}),
        event("j-2", "purchase", 10, {"cookie": "ck-jane"}, session_id="s-2",
              device={"id": "dev-shared", "kind": "desktop"},
              properties={"item_id": "sku-1", "category": "Books", "price": "12.50"}),
        event("j-3", "chat_message", 5, {"cookie": "ck-jane", "phone": JANE_PHONE},
              session_id="s-2",
              properties={"text": f"mail me at {JANE_EMAIL} or call {JANE_PHONE}"}),
        event("j-4", "feedback", 3, {"cookie": "ck-jane"},
              properties={"rating": 5, "category": "Books"}),
        event("b-1", "purchase", 2, {"cookie": "ck-bob", "email": "bob@example.com"},
              session_id="s-3", device={"id": "dev-shared", "kind": "desktop"},
              properties={"item_id": "sku-1", "category": "Books", "price": "12.50"}),
        event("b-2", "page_view", 500, {"cookie": "ck-bob"}, session_id="s-4",
              properties={"item_id": "sku-2", "category": "Toys"}),
    ]
    rejects = [
        {"event_id": "bad-j", "type": "purchase", "occurred_at": "yesterday",
         "user": {"email": JANE_EMAIL}, "name": "Jane Doe"},
        {"event_id": "bad-b", "type": "purchase", "occurred_at": "yesterday",
         "user": {"cookie": "ck-bob"}},
    ]
    return [json.dumps(e) for e in events + rejects]


def ingest_world(graph: Graph, folder: Path, key: str) -> tuple[str, str]:
    """The world above ingested; returns the ids of Jane and Bob."""
    path = folder / "world.jsonl"
    path.write_text("\n".join(world_lines()) + "\n")
    summary = ingest_file(EventWriter(graph, Pseudonymizer(key)), path, batch_size=100,
                          max_line_bytes=100_000)
    assert (summary.written, summary.rejected) == (6, 2), summary
    p = Pseudonymizer(key)
    return p.user_id("email", JANE_EMAIL), p.user_id("email", "bob@example.com")


@pytest.fixture
def key(settings: Settings) -> str:
    return settings.pseudonym_key.get_secret_value()


@pytest.fixture
def segmented(graph: Graph, tmp_path: Path, key: str) -> tuple[Graph, str, str]:
    """Demo users, Jane and Bob, a segmentation run and consent records for Jane."""
    load_demo(graph, tmp_path, users=60, seed=11, key=key, with_context=False)
    jane, bob = ingest_world(graph, tmp_path, key)
    run_segmentation(graph, n_clusters=3, runs_dir=tmp_path / "runs")
    set_consent(graph, jane, "personalization", False, source="test", at=NOW)
    return graph, jane, bob


def jane_secrets(key: str) -> list[str]:
    """Jane's identifier hashes (and the 10-character tokens made of them) and her id."""
    p = Pseudonymizer(key)
    hashes = [p.digest("email", JANE_EMAIL), p.digest("phone", JANE_PHONE),
              p.digest("cookie", "ck-jane")]
    return [p.user_id("email", JANE_EMAIL), *hashes, *(h[:10] for h in hashes),
            p.device_id("dev-jane")]


def everything_stored(graph: Graph) -> str:
    """All properties in the graph but the erasure suppression list (checked on its own)."""
    nodes = graph.rows("MATCH (n) WHERE NOT n:ErasedIdentifier "
                       "RETURN labels(n) AS l, properties(n) AS p")
    rels = graph.rows("MATCH ()-[r]->() RETURN type(r) AS t, properties(r) AS p")
    return json.dumps([nodes, rels], default=str)


def test_forget_removes_everything_derived_and_keeps_shared_nodes(
        segmented: tuple[Graph, str, str], key: str) -> None:
    graph, jane, bob = segmented
    assert graph.rows("MATCH (:User {id: $id})-[m:IN_SEGMENT]->() RETURN count(m) AS n",
                      id=jane) == [{"n": 1}]
    bob_before = graph.rows("MATCH (u:User {id: $id}) RETURN properties(u) AS p", id=bob)
    # Nodes of kinds erasure has no rule for: one only Jane links to goes, a shared one stays.
    graph.execute("MATCH (j:User {id: $jane}), (b:User {id: $bob}) "
                  "CREATE (j)-[:HAS_FIELD]->(:ProfileField {name: 'tier', value: 'gold'}), "
                  "(j)-[:IN_HOUSEHOLD]->(:Household {id: 'h-1'})<-[:IN_HOUSEHOLD]-(b)",
                  jane=jane, bob=bob)
    before = graph_counts(graph)
    # Jane among others' similar users (she keeps none of her own: no personalization consent).
    similar = graph.rows("MATCH (:User {id: $id})-[s:SIMILAR_TO]-() RETURN count(s) AS n",
                         id=jane)[0]["n"]
    stored = everything_stored(graph)
    assert all(s in stored for s in jane_secrets(key)[:4])  # the check below can fail

    report = forget_user(graph, jane)

    after = graph_counts(graph)
    for label in SHARED_LABELS:
        assert after.get(f"node:{label}") == before.get(f"node:{label}"), label
    assert after["node:User"] == before["node:User"] - 1
    assert after["node:Interaction"] == before["node:Interaction"] - 4
    assert after["node:Identifier"] == before["node:Identifier"] - 3
    assert after["node:Session"] == before["node:Session"] - 2
    assert after["node:Device"] == before["node:Device"] - 1  # dev-shared stays, Bob uses it
    assert after["node:DeadLetter"] == before["node:DeadLetter"] - 1
    assert "node:Consent" not in after and "node:ProfileField" not in after
    assert after["node:Household"] == 1
    assert after["node:Erasure"] == 1
    p = Pseudonymizer(key)
    assert sorted(r["key"] for r in graph.rows("MATCH (e:ErasedIdentifier) RETURN e.key AS key")
                  ) == sorted(f"{kind}:{p.digest(kind, value)}" for kind, value in (
                      ("email", JANE_EMAIL), ("phone", JANE_PHONE), ("cookie", "ck-jane")))
    assert after["rel:IN_SEGMENT"] == before["rel:IN_SEGMENT"] - 1
    assert after["rel:HAD_PERSONA"] == before["rel:HAD_PERSONA"] - 1
    assert report.counts == {
        "users": 1, "interactions": 4, "sessions": 2, "identifiers": 3, "devices": 1,
        "consents": 1, "dead_letters": 1, "merges": 0, "other_nodes": 1, "segment_memberships": 1,
        "persona_history": 1, "preferences": 2, "interacted": 1, "locations": 1,
        **({"similar_users": similar} if similar else {})}
    assert after.get("rel:SIMILAR_TO", 0) == before.get("rel:SIMILAR_TO", 0) - similar
    stored = everything_stored(graph)
    leaks = [s for s in jane_secrets(key) if s in stored]
    assert leaks == []
    # Bob, who shared an item and a device with Jane, is untouched.
    assert graph.rows("MATCH (u:User {id: $id}) RETURN properties(u) AS p", id=bob) == bob_before
    assert graph.rows("MATCH (:User {id: $id})-[:USES]->(d:Device) RETURN count(d) AS n",
                      id=bob) == [{"n": 1}]
    bob_letters = graph.rows("MATCH (d:DeadLetter) RETURN d.identifiers AS ids")
    assert [r["ids"][0].split(":")[0] for r in bob_letters] == ["cookie"]

    again = forget_user(graph, jane)
    assert again.already_erased and again.erasure_id == report.erasure_id
    assert graph_counts(graph) == after


def test_a_replay_cannot_bring_an_erased_user_back(graph: Graph, tmp_path: Path,
                                                   key: str) -> None:
    jane, bob = ingest_world(graph, tmp_path, key)
    forget_user(graph, jane)
    after_forget = graph_counts(graph)
    writer = EventWriter(graph, Pseudonymizer(key))

    # The same file again: Jane's four events are refused, Bob's are duplicates; nothing changes.
    summary = ingest_file(writer, tmp_path / "world.jsonl", batch_size=100,
                          max_line_bytes=100_000, dead_letter=tmp_path / "again.jsonl")
    assert (summary.written, summary.duplicates, summary.erased) == (0, 2, 4), summary
    assert graph.rows("MATCH (u:User {id: $id}) RETURN u.id AS id", id=jane) == []
    # bad-j's dead letter names Jane, so the graph does not keep it again; bad-b's is there.
    assert graph_counts(graph) == after_forget
    letters = [json.loads(line) for line in (tmp_path / "again.jsonl").read_text().splitlines()]
    assert [d["line"] for d in letters] == [7, 8]  # the refused events are no dead letters

    # Through the HTTP/GraphQL path, per record; an event after the erasure is a new start.
    later = {"cookie": "ck-jane"}
    records = [event("j-2", "purchase", 10, later,
                     properties={"item_id": "sku-1", "category": "Books", "price": "12.50"}),
               {**event("j-new", "page_view", 0, later), "occurred_at":
                datetime.now(UTC).isoformat()}]
    results = ingest_records(writer, records, source="http")
    assert [(r.event_id, r.status) for r in results] == [("j-2", "rejected"),
                                                         ("j-new", "accepted")]
    assert results[0].reason == ERASED_REASON
    rows = graph.rows("MATCH (u:User)-[:PERFORMED]->(i:Interaction) "
                      "WHERE i.event_id STARTS WITH 'j-' RETURN u.id AS u, i.event_id AS e")
    assert rows == [{"u": Pseudonymizer(key).user_id("cookie", "ck-jane"), "e": "j-new"}]

    # CRM records (import, webhook, upsertUser) follow the same rule.
    from graph.crm.importer import apply_records
    from graph.crm.mapping import direct_mapping, parse_record

    def crm_record(days: float) -> Any:
        return parse_record(direct_mapping("crm"), {"email": JANE_EMAIL, "tier": "gold",
                                                    "at": at(days)}, Pseudonymizer(key))

    emails = "MATCH (i:Identifier {kind: 'email'}) RETURN count(i) AS n"
    before = graph.rows(emails)
    done = apply_records(graph, [crm_record(30)], source="crm", via="import")
    assert (done.refused, done.users_created, done.fields_updated) == ([0], 0, 0)
    assert graph.rows(emails) == before
    later_record = dataclasses.replace(crm_record(0), at=datetime.now(UTC))
    done = apply_records(graph, [later_record], source="crm", via="import")
    assert (done.refused, done.users_created) == ([], 1)
    with pytest.raises(NotFound):
        forget_user(graph, "u_nobody")


def test_export_holds_everything_as_json_without_plaintext(
        segmented: tuple[Graph, str, str], key: str) -> None:
    graph, jane, bob = segmented
    data = export_user(graph, jane)
    text = json.dumps(data)
    assert json.loads(text) == data
    assert data["user_id"] == jane
    assert data["profile"]["events"] == 4 and data["profile"]["age_band"] == "25-34"
    assert data["location"]["city"] == "London"
    p = Pseudonymizer(key)
    assert sorted((i["kind"], i["hash"]) for i in data["identifiers"]) == sorted([
        ("cookie", p.digest("cookie", "ck-jane")), ("email", p.digest("email", JANE_EMAIL)),
        ("phone", p.digest("phone", JANE_PHONE))])
    assert [i["event_id"] for i in data["interactions"]] == ["j-1", "j-2", "j-3", "j-4"]
    assert {s["id"] for s in data["sessions"]} == {"s-1", "s-2"}
    assert {(r["category"], r["source"]) for r in data["preferences"]} == {
        ("books", "inferred"), ("books", "explicit")}
    assert [(a["item_id"], a["aggregate"]["purchases"]) for a in data["aggregates"]] == [
        ("sku-1", 1)]
    assert len(data["segments"]) == 1 and data["segments"][0]["persona"]
    assert len(data["persona_history"]) == 1
    # Without personalization consent no similar users are kept for Jane; Bob has some.
    assert data["similar_users"] == []
    run_id = graph.rows("MATCH (r:SegmentationRun) RETURN r.id AS id")[0]["id"]
    peers = graph.rows("MATCH (:User {id: $id})-[s:SIMILAR_TO]->(p:User) RETURN p.id AS id",
                       id=bob)
    bob_data = export_user(graph, bob)
    assert peers and bob_data["similar_users"] == [{"run_id": run_id, "users": len(peers)}]
    assert not any(p["id"] in json.dumps(bob_data) for p in peers)  # who they are is theirs
    assert data["consents"]["current"] == {"personalization": False, "analytics": True}
    assert [(c["purpose"], c["granted"]) for c in data["consents"]["history"]] == [
        ("personalization", False)]
    assert len(data["dead_letters"]) == 1
    assert data["dead_letters"][0]["identifiers"] == [f"email:{p.digest('email', JANE_EMAIL)}"]
    assert len(data["devices"]) == 2 and data["other"] == []
    lowered = text.lower()
    assert [s for s in (*PLAINTEXT, "jane doe") if s in lowered] == []
    with pytest.raises(NotFound):
        export_user(graph, "u_nobody")


def test_consent_is_stored_with_history_and_honoured(graph: Graph, tmp_path: Path,
                                                     key: str) -> None:
    load_demo(graph, tmp_path, users=20, seed=5, key=key, with_context=False)
    jane, bob = ingest_world(graph, tmp_path, key)
    assert consents_of(graph, [jane, bob, "u_nobody"]) == {
        jane: {"personalization": True, "analytics": True},
        bob: {"personalization": True, "analytics": True}}

    # Newest answer wins, whatever the order it arrives in; the same change twice is one.
    set_consent(graph, jane, "personalization", False, source="crm", at=NOW)
    current = set_consent(graph, jane, "personalization", True, source="web",
                          at=NOW - timedelta(days=1))
    assert current == {"personalization": False, "analytics": True}
    set_consent(graph, jane, "personalization", False, source="crm", at=NOW)
    history = consent_history(graph, jane)
    assert [(h["granted"], h["source"]) for h in history] == [(True, "web"), (False, "crm")]
    assert history[1]["at"].to_native() == NOW
    assert graph.rows("MATCH (u:User {id: $id}) RETURN u.consent_personalization AS p",
                      id=jane) == [{"p": False}]

    # Analytics: a segment membership and an open persona entry to withdraw from.
    graph.execute("MATCH (u:User {id: $id}) "
                  "CREATE (u)-[:IN_SEGMENT {run_id: 'r-1', user_id: u.id}]->"
                  "(:Segment {id: 'r-1-L0-0'}), "
                  "(u)-[:HAD_PERSONA {valid_from: datetime() - duration('P1D'), user_id: u.id}]->"
                  "(:Persona {id: 'p-1'})", id=jane)
    table = build_feature_table(graph)
    assert jane in table.user_ids and bob in table.user_ids
    set_consent(graph, jane, "analytics", False, source="api")
    assert consents_of(graph, [jane])[jane] == {"personalization": False, "analytics": False}
    table = build_feature_table(graph)
    assert jane not in table.user_ids and bob in table.user_ids
    assert len(table.user_ids) == 21
    assert graph.rows("MATCH (:User {id: $id})-[m:IN_SEGMENT]->() RETURN count(m) AS n",
                      id=jane) == [{"n": 0}]
    assert graph.rows("MATCH (:User {id: $id})-[h:HAD_PERSONA]->() "
                      "RETURN h.valid_to IS NOT NULL AS closed", id=jane) == [{"closed": True}]

    with pytest.raises(NotFound):
        set_consent(graph, "u_nobody", "analytics", True, source="test")
    with pytest.raises(InvalidInput, match="marketing"):
        set_consent(graph, jane, "marketing", True, source="test")
    with pytest.raises(InvalidInput, match="time zone"):
        set_consent(graph, jane, "analytics", True, source="test", at=datetime(2026, 1, 1))


def test_retention_prunes_only_old_raw_interactions(graph: Graph, tmp_path: Path,
                                                    key: str) -> None:
    jane, bob = ingest_world(graph, tmp_path, key)
    aggregates = """
    MATCH (u:User) OPTIONAL MATCH (u)-[r:INTERACTED|PREFERS]->(x)
    WITH u, r, x ORDER BY type(r), coalesce(x.id, x.name), r.source
    RETURN u.id AS id, properties(u) AS user, collect([type(r), properties(r)]) AS rels
    ORDER BY id
    """
    before = graph.rows(aggregates)
    assert prune_interactions(graph, timedelta(days=365)) == 2
    assert sorted(r["id"] for r in graph.rows("MATCH (i:Interaction) RETURN i.event_id AS id")
                  ) == ["b-1", "j-2", "j-3", "j-4"]
    assert sorted(r["id"] for r in graph.rows("MATCH (s:Session) RETURN s.id AS id")) == [
        "s-2", "s-3"]
    assert graph.rows(aggregates) == before
    assert graph.rows("MATCH (d:DeadLetter) RETURN count(d) AS n") == [{"n": 2}]
    assert prune_interactions(graph, timedelta(days=365)) == 0
    assert prune_interactions(graph, timedelta(days=1), batch_size=1) == 4
    with pytest.raises(InvalidInput):
        prune_interactions(graph, timedelta(0))
    assert {jane, bob} == {r["id"] for r in graph.rows("MATCH (u:User) RETURN u.id AS id")}


def test_dead_letters_are_indexed_in_the_graph_once(graph: Graph, tmp_path: Path,
                                                    key: str) -> None:
    ingest_world(graph, tmp_path, key)
    letters = graph.rows("MATCH (d:DeadLetter) RETURN properties(d) AS d ORDER BY d.position")
    assert [d["d"]["position"] for d in letters] == ["line 7", "line 8"]
    jane = letters[0]["d"]
    p = Pseudonymizer(key)
    assert jane["identifiers"] == [f"email:{p.digest('email', JANE_EMAIL)}"]
    assert "occurred_at" in jane["reason"] and jane["source"].endswith("world.jsonl")
    assert "[name:" in jane["record"] and "jane" not in jane["record"].lower()
    in_file = [json.loads(x) for x in (tmp_path / "world.jsonl.deadletter.jsonl").read_text()
               .splitlines()]
    assert [x["id"] for x in in_file] == [d["d"]["id"] for d in letters]
    (tmp_path / "world.jsonl.deadletter.jsonl").unlink()
    ingest_world_again = ingest_file(EventWriter(graph, Pseudonymizer(key)),
                                     tmp_path / "world.jsonl", batch_size=100,
                                     max_line_bytes=100_000)
    assert ingest_world_again.rejected == 2
    assert graph.rows("MATCH (d:DeadLetter) RETURN count(d) AS n") == [{"n": 2}]


def run_cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([PERSONAS, "privacy", *args], env=env, capture_output=True,
                          text=True, timeout=120)


def test_privacy_commands(graph: Graph, tmp_path: Path, key: str,
                          cli_env: dict[str, str]) -> None:
    jane, _ = ingest_world(graph, tmp_path, key)

    consent = run_cli(cli_env, "consent", jane, "analytics", "no")
    assert consent.returncode == 0, consent.stderr
    assert "analytics withdrawn" in consent.stderr
    assert run_cli(cli_env, "consent", jane, "marketing", "yes").returncode == 2

    out = tmp_path / "jane.json"
    export = run_cli(cli_env, "export", jane, "--out", str(out))
    assert export.returncode == 0, export.stderr
    data = json.loads(out.read_text())
    assert data["user_id"] == jane and data["consents"]["current"]["analytics"] is False
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    stdout = run_cli(cli_env, "export", jane)
    assert json.loads(stdout.stdout)["user_id"] == jane

    prune = run_cli(cli_env, "prune", "--older-than-days", "365")
    assert prune.returncode == 0 and "pruned 2 interactions" in prune.stderr

    unconfirmed = run_cli(cli_env, "forget", jane)
    assert unconfirmed.returncode == 2 and "--yes" in unconfirmed.stderr
    forget = run_cli(cli_env, "forget", jane, "--yes")
    assert forget.returncode == 0 and "erased user" in forget.stderr, forget.stderr
    assert graph.rows("MATCH (u:User {id: $id}) RETURN u", id=jane) == []
    again = run_cli(cli_env, "forget", jane, "--yes")
    assert again.returncode == 0 and "already erased" in again.stderr

    for args in (("forget", "u_nobody", "--yes"), ("export", "u_nobody")):
        unknown = run_cli(cli_env, *args)
        assert unknown.returncode == 2 and "NOT_FOUND" in unknown.stderr, args


def test_an_export_file_is_private_whatever_was_there(graph: Graph, tmp_path: Path, key: str,
                                                      cli_env: dict[str, str]) -> None:
    """`privacy export --out` promised a file its owner alone can read, yet an existing file
    kept its mode (0644: the export readable by all), a symbolic link was followed (a link
    planted in a shared folder sent the personal data where it pointed), and a directory
    ended in a traceback."""
    jane, _ = ingest_world(graph, tmp_path, key)
    existing = tmp_path / "existing.json"
    existing.write_text("x" * 100_000)
    existing.chmod(0o644)
    done = run_cli(cli_env, "export", jane, "--out", str(existing))
    assert done.returncode == 0, done.stderr
    assert stat.S_IMODE(existing.stat().st_mode) == 0o600
    assert json.loads(existing.read_text())["user_id"] == jane  # nothing left of the old text
    target = tmp_path / "elsewhere.txt"
    target.write_text("kept")
    link = tmp_path / "link.json"
    link.symlink_to(target)
    for path, reason in ((link, "symbolic link"), (tmp_path, "Is a directory")):
        refused = run_cli(cli_env, "export", jane, "--out", str(path))
        assert refused.returncode == 2, refused.stderr
        assert reason in refused.stderr and "Traceback" not in refused.stderr
    assert target.read_text() == "kept"


def test_forgetting_a_survivor_erases_the_users_merged_into_it(graph: Graph, tmp_path: Path,
                                                               key: str) -> None:
    from graph.errors import Conflict
    from graph.identity import merge_users

    jane, bob = ingest_world(graph, tmp_path, key)
    merge_users(graph, jane, bob, source="test", reason="same person")
    data = export_user(graph, jane)
    assert data["merged_users"] == [bob] and len(data["merges"]) == 1
    assert len(data["dead_letters"]) == 2  # Bob's identifiers are Jane's now
    for call in (export_user, forget_user):
        with pytest.raises(Conflict, match=jane):
            call(graph, bob)

    report = forget_user(graph, jane)
    assert (report.counts["users"], report.counts["merges"]) == (2, 1)
    assert report.counts["interactions"] == 6 and report.counts["dead_letters"] == 2
    counts = graph_counts(graph)
    kinds = {k for k in counts if k.startswith("node:")}
    assert kinds == {"node:Item", "node:Category", "node:Location", "node:Erasure",
                     "node:ErasedIdentifier", "node:Migration"}, counts
    assert counts["node:ErasedIdentifier"] == 5  # Jane's three identifiers and Bob's two
    stored = everything_stored(graph)
    assert jane not in stored and bob not in stored
