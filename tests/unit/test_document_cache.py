"""The parse and validation cache is bounded by the bytes of the documents it holds, so that
many large distinct documents cannot grow the API's memory."""

from __future__ import annotations

import asyncio

import pytest
from graphql import parse
from strawberry.types import ExecutionResult

from api.documents import DocumentCache, Entry
from api.schema import build_schema
from graph.settings import Settings


def document(i: int, padding: int) -> str:
    return f"query Q{i} {{ __typename }} # " + "x" * padding


def test_the_cache_keeps_its_byte_budget_and_drops_the_least_recently_used() -> None:
    cache = DocumentCache(budget=10_000)
    texts = [document(i, 2_000) for i in range(20)]
    for text in texts:
        cache.put(text, Entry(parse(text)))
        assert cache.size <= 10_000
    kept = [t for t in texts if cache.get(t) is not None]
    assert kept == texts[-len(kept):] and 1 < len(kept) < 6
    assert cache.size == sum(len(t) for t in kept)
    # A use makes an entry the most recent: the next eviction takes another.
    cache.get(kept[0])
    newest = document(99, 2_000)
    cache.put(newest, Entry(parse(newest)))
    assert cache.get(kept[0]) is not None and cache.get(kept[1]) is None


def test_a_document_over_the_whole_budget_is_not_kept() -> None:
    cache = DocumentCache(budget=1_000)
    small = document(1, 10)
    cache.put(small, Entry(parse(small)))
    huge = document(2, 5_000)
    cache.put(huge, Entry(parse(huge)))
    assert cache.get(huge) is None and cache.get(small) is not None


def test_several_operations_and_no_operation_name_is_a_request_error(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """strawberry ran the first operation of such a document; the GraphQL spec makes it an
    error. Naming one runs it; a document of one operation needs no name."""
    monkeypatch.setenv("PERSONAS_DEMO", "true")
    schema = build_schema(Settings())
    two = "query A { __typename } query B { __typename }"

    async def run(query: str, name: str | None = None) -> ExecutionResult:
        return await schema.execute(query, operation_name=name)

    refused = asyncio.run(run(two))
    assert refused.data is None and refused.errors
    assert refused.errors[0].extensions == {"code": "BAD_USER_INPUT"}
    assert "operationName" in refused.errors[0].message
    named = asyncio.run(run(two, "B"))
    assert named.errors is None and named.data == {"__typename": "Query"}
    assert asyncio.run(run("{ __typename }")).data == {"__typename": "Query"}
    # The verdict is not cached with the document: the same text named again still runs.
    assert asyncio.run(run(two, "A")).errors is None
    assert asyncio.run(run(two)).errors
