"""Dead letters carry no plaintext PII, and name the pseudonyms of the identifiers they hold."""

from __future__ import annotations

import json

from graph.ingest.deadletter import MAX_RAW_CHARS, make_dead_letter, scrub_record
from graph.privacy import Pseudonymizer

P = Pseudonymizer("unit-key")


def test_json_record_loses_identifiers_names_and_pii_in_text() -> None:
    raw = json.dumps({
        "event_id": "e-1", "type": "chat_message",
        "user": {"email": "Jane.Doe@Example.com", "cookie": "ck-jane", "crm_id": "CRM-77"},
        "first_name": "Jane", "last_name": "Doe",
        "properties": {"text": "reach me on +44 20 7946 0958 or jane@work.example"},
    })
    record = scrub_record(P, raw)
    for secret in ("Jane", "Doe", "ck-jane", "CRM-77", "7946", "jane@work"):
        assert secret not in record, secret
    data = json.loads(record)
    assert data["user"]["email"] == f"[email:{P.digest('email', 'jane.doe@example.com')[:10]}]"
    assert data["first_name"].startswith("[name:") and data["event_id"] == "e-1"


def test_csv_columns_and_plain_text_are_scrubbed() -> None:
    csv_row = json.dumps({"event_id": "c-1", "user_phone": "+49 30 1234567", "name": "Max"})
    assert "1234567" not in scrub_record(P, csv_row) and "Max" not in scrub_record(P, csv_row)
    assert scrub_record(P, "broken {json jane@x.example") == (
        f"broken {{json [email:{P.digest('email', 'jane@x.example')[:10]}]")


def test_scrubbing_comes_before_truncation() -> None:
    """An email across the size limit must not be cut in half and left readable."""
    raw = "x" * (MAX_RAW_CHARS - 5) + " jane.doe@example.com"
    record = scrub_record(P, raw)
    assert len(record) == MAX_RAW_CHARS and "jane" not in record


def test_identifiers_are_the_graph_hashes_and_ids_are_stable() -> None:
    raw = json.dumps({"user": {"email": "A@B.example", "cookie": "ck", "shoe_size": "42",
                               "phone": ""}, "user_crm_id": "C-1"})
    letter = make_dead_letter(P, source="f.jsonl", reason="bad", raw=raw, position="line 3")
    assert letter.identifiers == tuple(sorted((
        f"cookie:{P.digest('cookie', 'ck')}", f"crm_id:{P.digest('crm_id', 'C-1')}",
        f"email:{P.digest('email', 'a@b.example')}")))
    again = make_dead_letter(P, source="f.jsonl", reason="bad", raw=raw, position="line 3")
    elsewhere = make_dead_letter(P, source="f.jsonl", reason="bad", raw=raw, position="line 4")
    assert again.id == letter.id != elsewhere.id
    assert make_dead_letter(P, source="s", reason="r", raw="[1, 2]").identifiers == ()
