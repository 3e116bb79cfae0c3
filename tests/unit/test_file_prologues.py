"""Event files as other tools write them: a UTF-8 byte order mark first (Excel's "CSV UTF-8",
Windows editors), CRLF line ends. Each reads to the same events as the plain file (issue 19:
the BOM made the JSONL file's first record a reject, and every row of a CSV file, whose first
column became ``\\ufeffevent_id``)."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest

from graph.crm.importer import _csv_rows, _jsonl_rows
from graph.crm.mapping import load_mapping
from graph.ingest.reader import Parsed, Record, Reject, read_csv, read_jsonl

BOM = b"\xef\xbb\xbf"
EVENTS = [{"event_id": f"e-{i}", "type": "page_view", "source": "web",
           "occurred_at": f"2026-11-0{i}T10:00:00Z", "user": {"cookie": f"ck-{i}"},
           "properties": {"item_id": f"sku-{i}", "category": "books"}} for i in range(1, 4)]
CSV_HEADER = "event_id,type,source,occurred_at,user_cookie,item_id,category"
CSV_ROWS = [f"e-{i},page_view,web,2026-11-0{i}T10:00:00Z,ck-{i},sku-{i},books"
            for i in range(1, 4)]


def events(records: list[Record]) -> list[Any]:
    assert all(isinstance(r, Parsed) for r in records), records
    return [r.event.event_id for r in records if isinstance(r, Parsed)]


@pytest.mark.parametrize("prologue", [b"", BOM], ids=["plain", "bom"])
@pytest.mark.parametrize("end", [b"\n", b"\r\n"], ids=["lf", "crlf"])
def test_a_jsonl_file_with_a_bom_or_crlf_reads_whole(prologue: bytes, end: bytes) -> None:
    body = prologue + end.join(json.dumps(e).encode() for e in EVENTS) + end
    assert events(list(read_jsonl(io.BytesIO(body), 1_000_000))) == ["e-1", "e-2", "e-3"]


@pytest.mark.parametrize("prologue", [b"", BOM], ids=["plain", "bom"])
@pytest.mark.parametrize("end", [b"\n", b"\r\n"], ids=["lf", "crlf"])
def test_a_csv_file_with_a_bom_or_crlf_reads_whole(prologue: bytes, end: bytes) -> None:
    body = prologue + end.join(line.encode() for line in [CSV_HEADER, *CSV_ROWS]) + end
    assert events(list(read_csv(io.BytesIO(body), 1_000_000))) == ["e-1", "e-2", "e-3"]


def test_a_jsonl_line_in_another_encoding_is_a_reject_not_replaced_text() -> None:
    """A Latin-1 line among UTF-8 ones is refused with the reason a Kafka message gets; the
    lines around it read as they are (before, its "ö" became U+FFFD and was stored so)."""
    latin = json.dumps({**EVENTS[1], "properties": {"item_id": "sku-2", "category": "böoks"}},
                       ensure_ascii=False).encode("latin-1")
    body = b"\n".join([json.dumps(EVENTS[0]).encode(), latin, json.dumps(EVENTS[2]).encode()])
    records = list(read_jsonl(io.BytesIO(body), 1_000_000))
    assert [type(r).__name__ for r in records] == ["Parsed", "Reject", "Parsed"]
    reject = records[1]
    assert isinstance(reject, Reject) and reject.line == 2
    assert reject.reason.startswith("not UTF-8: invalid start byte at byte ")


def test_a_csv_row_in_another_encoding_is_a_reject_not_replaced_text() -> None:
    """As a JSONL line: the Latin-1 row is refused with its line number, the rows around it
    read as they are (before, its "ö" became U+FFFD and a category "b\ufffdoks" was stored)."""
    rows = [CSV_ROWS[0].encode(), CSV_ROWS[1].replace("books", "böoks").encode("latin-1"),
            CSV_ROWS[2].encode()]
    body = b"\n".join([CSV_HEADER.encode(), *rows]) + b"\n"
    records = list(read_csv(io.BytesIO(body), 1_000_000))
    assert [type(r).__name__ for r in records] == ["Parsed", "Reject", "Parsed"]
    reject = records[1]
    assert isinstance(reject, Reject) and reject.line == 3
    assert reject.reason.startswith("not UTF-8")


def test_crm_rows_in_another_encoding_are_refused_and_a_bom_is_read() -> None:
    """The CRM import's readers refuse such a line or row with the same reason, and read a file
    that starts with a byte order mark."""
    mapping = load_mapping(Path(__file__).parents[2] / "docs" / "crm-mapping.example.yaml")
    header = "customer_no,city,updated_at"
    good = "C-1,Berlin,2026-11-03T09:30:00+01:00"
    bad = "C-2,Köln,2026-11-03T09:30:00+01:00".encode("latin-1")
    csv_body = BOM + b"\n".join([header.encode(), good.encode(), bad]) + b"\n"
    csv_rows = list(_csv_rows(io.BytesIO(csv_body), mapping, 1_000_000, "crm.csv"))
    assert [r.error is None for r in csv_rows] == [True, False]
    assert csv_rows[0].data["customer_no"] == "C-1"
    assert str(csv_rows[1].error).startswith("not UTF-8")
    line = {"customer_no": "C-3", "city": "Köln", "updated_at": "2026-11-03T09:30:00+01:00"}
    jsonl_body = b"\n".join([BOM + json.dumps(line).encode(),
                             json.dumps(line, ensure_ascii=False).encode("latin-1")])
    jsonl_rows = list(_jsonl_rows(io.BytesIO(jsonl_body), 1_000_000))
    assert jsonl_rows[0].error is None and jsonl_rows[0].data["city"] == "Köln"
    assert str(jsonl_rows[1].error).startswith("not UTF-8")
