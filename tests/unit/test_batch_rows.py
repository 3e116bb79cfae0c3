"""Batch parameters (``graph.db.Rows``): printed as their size, sent like any list."""

from __future__ import annotations

import io

from neo4j._codec.packstream.v1 import Packer  # the packer the driver sends parameters with

from graph.db import Rows


def packed(value: object) -> bytes:
    out = io.BytesIO()
    Packer(out).pack(value)
    return out.getvalue()


def test_rows_print_as_their_size_and_pack_as_lists() -> None:
    rows = [{"id": "u1", "n": 1, "tags": ["a"]}, {"id": "u2", "n": 2.5, "tags": []}]
    assert repr({"rows": Rows(rows)}) == "{'rows': <2 rows>}"
    assert packed({"rows": Rows(rows)}) == packed({"rows": rows})
    assert Rows(iter(rows)) == rows
