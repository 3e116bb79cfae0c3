"""Event files as other tools write them: a UTF-8 byte order mark first (Excel's "CSV UTF-8",
Windows editors), CRLF line ends. Each reads to the same events as the plain file (issue 19:
the BOM made the JSONL file's first record a reject, and every row of a CSV file, whose first
column became ``\\ufeffevent_id``)."""

from __future__ import annotations

import io
import json
from typing import Any

import pytest

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
