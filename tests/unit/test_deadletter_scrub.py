"""Dead letters carry no plaintext PII, and name the pseudonyms of the identifiers they hold."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

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


COOKIE = 'ck-"q'  # an escaped quote inside the value


def test_a_record_cut_at_the_size_limit_keeps_no_identifier() -> None:
    """A line over the size limit reaches the dead letter cut, so it is not JSON any more: its
    identifier values are still found, pseudonymized, and name the letter's erasure keys."""
    whole = json.dumps({"event_id": "big", "user": {"crm_id": "CRM-991", "cookie": COOKIE},
                        "device": {"id": "dev-77", "kind": "mobile"},
                        "properties": {"text": "x" * 5000}})
    cut = whole[:1500]
    record = scrub_record(P, cut)
    for secret in ("CRM-991", "ck-", "dev-77"):
        assert secret not in record, (secret, record)
    assert f"[crm_id:{P.digest('crm_id', 'CRM-991')[:10]}]" in record
    letter = make_dead_letter(P, source="f.jsonl", reason="too big", raw=cut)
    assert letter.identifiers == tuple(sorted((
        f"cookie:{P.digest('cookie', COOKIE)}", f"crm_id:{P.digest('crm_id', 'CRM-991')}",
        f"device_id:{P.digest('device_id', 'dev-77')}")))


def test_device_ids_are_identifiers_in_parsed_records() -> None:
    raw = json.dumps({"event_id": "d", "user": {"cookie": "c"},
                      "device": {"id": "dev-secret", "kind": "app"}})
    record = scrub_record(P, raw)
    assert "dev-secret" not in record
    token = f"[device_id:{P.digest('device_id', 'dev-secret')[:10]}]"
    assert json.loads(record)["device"]["id"] == token
    assert f"device_id:{P.digest('device_id', 'dev-secret')}" in make_dead_letter(
        P, source="s", reason="r", raw=raw).identifiers


def test_a_long_csv_row_is_scrubbed_whole() -> None:
    """CSV rejects reach the dead letter as the whole row's JSON, however long, so its
    identifier columns are found."""
    import io

    from graph.ingest.reader import read_csv

    row = "event_id,type,user_crm_id,user_chat_handle,query\n" \
          f"e1,search,CRM-5531,@handle_zed,{'q' * 3000}\n" \
          "e2,search,CRM-7,,\n"
    rejects = [r for r in read_csv(io.BytesIO(row.encode()), 1_000_000)
               if hasattr(r, "reason")]
    assert len(rejects) == 2  # no occurred_at
    letter = make_dead_letter(P, source="f.csv", reason=rejects[0].reason, raw=rejects[0].raw)
    assert "CRM-5531" not in letter.record and "handle_zed" not in letter.record
    assert f"crm_id:{P.digest('crm_id', 'CRM-5531')}" in letter.identifiers


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=3000))
def test_any_text_scrubs_quickly_and_never_keeps_a_quoted_identifier(text: str) -> None:
    raw = text + '"crm_id": "SECRET-ID-42"' + text
    record = scrub_record(P, raw)
    assert "SECRET-ID-42" not in record[: len(record)]
