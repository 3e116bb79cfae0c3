"""Batch parameters (``graph.db.Rows``): printed as their size, sent like any list."""

from __future__ import annotations

import io

from neo4j._codec.packstream.v1 import Packer  # the packer the driver sends parameters with

from graph.db import Rows, chunks


def packed(value: object) -> bytes:
    out = io.BytesIO()
    Packer(out).pack(value)
    return out.getvalue()


def test_rows_print_as_their_size_and_pack_as_lists() -> None:
    rows = [{"id": "u1", "n": 1, "tags": ["a"]}, {"id": "u2", "n": 2.5, "tags": []}]
    assert repr({"rows": Rows(rows)}) == "{'rows': <2 rows>}"
    assert packed({"rows": Rows(rows)}) == packed({"rows": rows})
    assert Rows(iter(rows)) == rows


def test_chunks_cover_the_rows_in_order_in_batches_of_at_most_size() -> None:
    rows = [{"n": i} for i in range(7)]
    batches = list(chunks(rows, size=3))
    assert [len(b) for b in batches] == [3, 3, 1]
    assert all(isinstance(b, Rows) for b in batches)
    assert [r for b in batches for r in b] == rows
    assert list(chunks([], size=3)) == []
