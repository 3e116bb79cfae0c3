"""Property-based tests over every parser outside the API: the event envelope, the Kafka message
parser, the JSONL and CSV file readers, the CRM mapping, records and webhook bodies, and
context documents. Whatever arrives, each gives a result or a clear refusal with a reason
(an error of the domain tree, a reject with its text), never an unexpected exception; every
reject makes a storable dead letter. Bounded examples: a few seconds in the suite."""

from __future__ import annotations

import copy
import io
import json
import re
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from graph.crm.mapping import CrmRecord, load_mapping, parse_mapping, parse_record
from graph.crm.webhook import decode_records
from graph.errors import InvalidInput, LimitExceeded
from graph.events import Event
from graph.ingest.deadletter import MAX_RAW_CHARS, make_dead_letter
from graph.ingest.metrics import REJECT_CODES
from graph.ingest.reader import Parsed, Reject, read_csv, read_jsonl, validate
from graph.ingest.stream import Rejected, parse_message
from graph.privacy import Pseudonymizer
from graph.situation.models import SituationBatch, parse_situation

P = Pseudonymizer("k")
EXAMPLES = settings(max_examples=60, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
MAPPING = load_mapping(Path(__file__).resolve().parents[2] / "docs" / "crm-mapping.example.yaml")
UNANTICIPATED = re.compile(r"invalid record \(\w+\)$")
"""The reader's last resort for an exception no validator anticipated: never to be seen."""

BASE_EVENTS: list[dict[str, Any]] = [
    {"schema_version": 1, "event_id": "e-1", "type": "page_view", "source": "web",
     "occurred_at": "2026-08-11T12:39:53+00:00", "user": {"cookie": "ck-1", "email": "a@b.co"},
     "session_id": "s-1", "device": {"id": "dev-1", "kind": "mobile"},
     "properties": {"item_id": "i-14", "category": "sports", "price": "109.42",
                    "duration_s": 237},
     "profile": {"age_band": "25-34", "locale": "at-AT",
                 "location": {"id": "vienna", "city": "Vienna", "country": "AT", "lat": 48.2,
                              "lon": 16.37}}},
    {"schema_version": 1, "event_id": "e-2", "type": "purchase", "source": "web",
     "occurred_at": "2026-08-11T12:51:53Z", "user": {"crm_id": "crm-1"},
     "properties": {"item_id": "b-16", "category": "beauty", "price": "53.63",
                    "discount": 0.03, "order_id": "o-1", "quantity": 2}},
    {"schema_version": 1, "event_id": "e-3", "type": "feedback", "source": "web",
     "occurred_at": "2026-08-30T20:38:26Z", "user": {"phone": "+49 151 0010000001"},
     "properties": {"category": "grocery", "rating": 5}},
    {"schema_version": 1, "event_id": "e-4", "type": "chat_message", "source": "app",
     "occurred_at": "2026-09-25T10:16:54Z", "user": {"chat_handle": "@x"},
     "properties": {"text": "Where is my order?", "intent": "order_status"}},
]

SCALARS = (st.none() | st.booleans() | st.integers(-2**70, 2**70)
           | st.floats(allow_nan=False) | st.text(max_size=30)
           | st.sampled_from(["", " ", "0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59Z",
                              "2026-13-01T00:00:00Z", "1e400", "-1", "NaN", "Infinity",
                              "jöhn@exämple.de", "(808) 782-1557", "\u0000", "🙂" * 50]))
JSON = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=4)
                    | st.dictionaries(st.text(max_size=10), inner, max_size=4), max_leaves=12)


def _paths(value: Any, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    found = [prefix] if prefix else []
    if isinstance(value, dict):
        for key, inner in value.items():
            found += _paths(inner, (*prefix, key))
    return found


@st.composite
def envelopes(draw: st.DrawFn) -> Any:
    """A real-looking envelope with some of its values (at any depth) replaced, removed or
    added: close enough to valid that validation goes deep."""
    data = copy.deepcopy(draw(st.sampled_from(BASE_EVENTS)))
    for _ in range(draw(st.integers(1, 4))):
        paths = _paths(data)
        path = draw(st.sampled_from(paths))
        parent = data
        for key in path[:-1]:
            parent = parent[key]
        action = draw(st.sampled_from(["replace", "delete", "add"]))
        if action == "delete":
            parent.pop(path[-1], None)
        elif action == "add" and isinstance(parent.get(path[-1]), dict):
            parent[path[-1]][draw(st.text(max_size=12))] = draw(JSON)
        else:
            parent[path[-1]] = draw(JSON)
        if not isinstance(data, dict):
            break
    return data


def check_record(record: Parsed | Reject) -> None:
    if isinstance(record, Parsed):
        assert isinstance(record.event, Event)
        return
    assert record.reason.strip(), record
    assert not UNANTICIPATED.search(record.reason), record.reason
    letter = make_dead_letter(P, source="f.jsonl", reason=record.reason, raw=record.raw)
    assert len(letter.record) <= MAX_RAW_CHARS
    (letter.record + letter.reason).encode()  # storable


@EXAMPLES
@given(envelopes())
def test_an_envelope_validates_or_is_rejected_with_a_reason(data: Any) -> None:
    check_record(validate(1, data, json.dumps(data, default=str)))


@EXAMPLES
@given(st.one_of(st.none(), st.binary(max_size=300),
                 envelopes().map(lambda d: json.dumps(d).encode()),
                 JSON.map(lambda d: json.dumps(d).encode())))
def test_a_kafka_message_is_an_event_or_a_coded_reject(value: bytes | None) -> None:
    result = parse_message(value, 7, 1_000)
    if isinstance(result, Rejected):
        assert result.code in REJECT_CODES and result.reason.strip()
        assert not UNANTICIPATED.search(result.reason), result.reason
    else:
        assert isinstance(result, Event)


LINES = st.one_of(envelopes().map(json.dumps), JSON.map(json.dumps), st.text(max_size=80),
                  st.just("[" * 5000), st.just('{"a":' * 2000))


@EXAMPLES
@given(st.lists(LINES, max_size=6), st.binary(max_size=40))
def test_a_jsonl_file_reads_to_events_and_rejects(lines: list[str], junk: bytes) -> None:
    body = "\n".join(lines).encode("utf-8", "surrogatepass") + b"\n" + junk
    records = list(read_jsonl(io.BytesIO(body), 4_000))
    for record in records:
        check_record(record)


CSV_COLUMNS = ["event_id", "type", "occurred_at", "user_email", "user_cookie", "category",
               "price", "rating", "attr_tier", "device_id", "age_band", "lat"]


@EXAMPLES
@given(st.lists(st.sampled_from(CSV_COLUMNS), min_size=1, max_size=8, unique=True),
       st.lists(st.lists(st.text(max_size=25), max_size=9), max_size=5), st.binary(max_size=30))
def test_a_csv_file_reads_to_events_and_rejects(header: list[str], rows: list[list[str]],
                                                junk: bytes) -> None:
    def cell(text: str) -> str:
        return '"' + text.replace('"', '""') + '"'
    body = "\n".join([",".join(header), *(",".join(cell(c) for c in r) for r in rows)])
    data = body.encode("utf-8", "surrogatepass") + b"\n" + junk
    for record in read_csv(io.BytesIO(data), 2_000):
        check_record(record)


@EXAMPLES
@given(st.dictionaries(st.sampled_from([*MAPPING.columns, MAPPING.timestamp, "notes", "zz"]),
                       JSON, max_size=10))
def test_a_crm_record_parses_or_names_the_column_at_fault(data: dict[str, Any]) -> None:
    try:
        record = parse_record(MAPPING, data, P)
    except InvalidInput as exc:
        assert str(exc).strip()
        return
    assert isinstance(record, CrmRecord) and record.identifiers


@EXAMPLES
@given(JSON)
def test_a_crm_mapping_loads_or_says_why(data: Any) -> None:
    try:
        parse_mapping(data)
    except InvalidInput as exc:
        assert str(exc).strip()


@EXAMPLES
@given(st.one_of(st.binary(max_size=200), JSON.map(lambda d: json.dumps(d).encode()),
                 st.just(b"[" * 5_000), st.just(b'{"a":' * 3_000)))
def test_a_webhook_body_decodes_or_is_refused(body: bytes) -> None:
    try:
        records = decode_records(body, 5)
    except (InvalidInput, LimitExceeded) as exc:
        assert str(exc).strip()
        return
    assert isinstance(records, list) and len(records) <= 5


SECTION_RECORDS = {
    "locations": {"id": "vienna", "city": "Vienna", "country": "AT", "lat": 48.2, "lon": 16.4},
    "weather": {"id": "w1", "location_id": "vienna", "observed_at": "2026-11-28T10:00:00Z",
                "temp_c": 4.5, "condition": "rain"},
    "local_events": {"id": "ev1", "location_id": "vienna", "name": "Market",
                     "starts_at": "2026-11-28T10:00:00Z"},
}


@st.composite
def context_documents(draw: st.DrawFn) -> Any:
    doc: dict[str, Any] = {}
    for section, base in SECTION_RECORDS.items():
        records = []
        for _ in range(draw(st.integers(0, 3))):
            record = dict(base)
            for key in draw(st.lists(st.sampled_from([*base, "extra"]), max_size=3)):
                record[key] = draw(JSON)
            records.append(record)
        if records or draw(st.booleans()):
            doc[section] = records
    return draw(st.one_of(st.just(doc), JSON))


@EXAMPLES
@given(context_documents())
def test_a_context_document_parses_whole_or_names_each_bad_record(data: Any) -> None:
    try:
        batch = parse_situation(data, origin="doc", max_records=20)
    except InvalidInput as exc:
        assert str(exc).strip()
        return
    assert isinstance(batch, SituationBatch)
