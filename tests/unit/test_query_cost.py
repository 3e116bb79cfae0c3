"""The cost rule counts what a request really asks for (literal, variable or default page
sizes) and measures each fragment once, however often it is spread."""

from __future__ import annotations

import multiprocessing
from typing import Any

import pytest
from graphql import parse

from api import limits
from api.limits import operation_cost
from api.schema import build_schema

SCHEMA = build_schema()._schema
CAP = 5001
NESTED = ("query($n: Int!) { users(first: $n) { edges { node { sessions(first: $n) { edges { "
          "node { interactions(first: $n) { edges { node { eventId } } } } } } } } } }")


def cost(document: str, variables: dict[str, Any] | None = None, cap: int = CAP) -> int:
    return operation_cost(SCHEMA, parse(document), None, variables, cap)


def test_an_omitted_first_counts_the_fields_default() -> None:
    # users(first: Int! = 20): users 1 + 20 x (edges 1 + node 1 + id 1)
    assert cost("{ users { edges { node { id } } } }") == 1 + 20 * 3
    assert cost("{ users(first: 2) { edges { node { id } } } }") == 1 + 2 * 3


def test_first_as_a_variable_counts_its_value() -> None:
    assert cost(NESTED, {"n": 100}) == CAP  # 100 x 100 x 100 leaves: capped just over
    small = cost(NESTED, {"n": 2})
    assert small < 100
    # A variable left out takes its declared default.
    with_default = NESTED.replace("$n: Int!", "$n: Int = 100")
    assert cost(with_default, {}) == CAP
    assert cost(with_default, {"n": 2}) == small


def test_a_first_that_is_not_an_integer_counts_the_default() -> None:
    assert cost("query($n: Int) { users(first: $n) { edges { node { id } } } }",
                {"n": "many"}) == 1 + 20 * 3


def fragment_chain(n: int) -> str:
    """n fragments, each spreading the next twice: 2**n paths to the last one."""
    fragments = [f"fragment F{i} on Query {{ ...F{i + 1} ...F{i + 1} }}" for i in range(n)]
    fragments.append(f"fragment F{n} on Query {{ categories {{ name }} }}")
    return "query { ...F0 }\n" + "\n".join(fragments)


def test_fragments_are_measured_once_each() -> None:
    assert cost(fragment_chain(17), cap=10**9) == 2**17 * 2
    # 2**400 paths: only a rule that measures each fragment once ever answers. No timing
    # figure (the machine's load is not the rule's): the generous bound only ends a hang.
    pool = multiprocessing.get_context("fork").Pool(1)
    try:
        assert pool.apply_async(cost, (fragment_chain(400),)).get(timeout=60) == CAP
    finally:
        pool.terminate()


def test_a_documents_cost_is_measured_once_per_integer_variables(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Requests that repeat a document with new ids reuse its measure; another page size (or
    another document) is measured anew, and gives what measuring it alone gives."""
    measured: list[dict[str, Any] | None] = []

    def counting(*args: Any) -> int:
        measured.append(args[3])
        return operation_cost(*args)

    monkeypatch.setattr(limits, "operation_cost", counting)
    costs = limits.CostCache()
    query = ("query($id: ID!, $n: Int!) { user(id: $id) { id "
             "preferences(first: $n) { category } } }")
    document = parse(query)
    first = [costs.cost(SCHEMA, document, None, {"id": f"u{i}", "n": 2}, CAP) for i in range(5)]
    assert first == [cost(query, {"id": "u0", "n": 2})] * 5 and len(measured) == 1
    assert costs.cost(SCHEMA, document, None, {"id": "u9", "n": 40}, CAP) == cost(
        query, {"id": "u9", "n": 40}) != first[0]
    assert costs.cost(SCHEMA, parse(query), None, {"id": "u0", "n": 2}, CAP) == first[0]
    assert len(measured) == 3
