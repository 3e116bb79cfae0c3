"""Introspection is measured apart from data queries: GraphiQL's schema query (deeper than
PERSONAS_API_MAX_DEPTH) passes, while data queries keep their depth limit and an introspection
query built to go deeper than any schema needs is refused."""

from __future__ import annotations

from graphql import get_introspection_query, parse, validate

from api.limits import INTROSPECTION_MAX_DEPTH, shape_rule
from api.schema import build_schema
from graph.settings import Settings

SETTINGS = Settings()
SCHEMA = build_schema(SETTINGS)._schema


def refusals(document: str) -> list[str]:
    return [e.message for e in validate(SCHEMA, parse(document), [shape_rule(SETTINGS)])
            if (e.extensions or {}).get("code") == "LIMIT_EXCEEDED"]


def test_graphiqls_introspection_query_passes() -> None:
    query = get_introspection_query(descriptions=True, specified_by_url=True,
                                    directive_is_repeatable=True, schema_description=True,
                                    input_value_deprecation=True)
    assert refusals(query) == []


def nested_type_refs(levels: int) -> str:
    inner = "name"
    for _ in range(levels):
        inner = f"ofType {{ {inner} }}"
    return f"{{ __type(name: \"User\") {{ fields {{ type {{ {inner} }} }} }} }}"


def test_introspection_has_its_own_depth_limit() -> None:
    assert refusals(nested_type_refs(INTROSPECTION_MAX_DEPTH - 4)) == []
    [refused] = refusals(nested_type_refs(INTROSPECTION_MAX_DEPTH))
    assert "introspection depth" in refused


def test_data_queries_keep_their_depth_limit() -> None:
    deep = "{ users { edges { node { " + "sessions { edges { node { " * 3 + "id" \
        + " } } }" * 3 + " } } } }"
    [refused] = refusals(deep)
    assert refused.startswith("query depth") and str(SETTINGS.api_max_depth) in refused


SCHEMA_FIELDS = "{ types { name fields { name type { name ofType { name } } } } }"


def test_the_schema_is_selected_once_per_operation() -> None:
    """Twenty aliases of `__schema` answered the whole schema twenty times (647 kB, 0.32 s of
    CPU) to a request without a key. Aliases, inline fragments and fragments spread again all
    count; `__type` is bounded apart (GraphiQL's own query selects `__schema` once)."""
    twice = [
        f"{{ a: __schema {SCHEMA_FIELDS} b: __schema {SCHEMA_FIELDS} }}",
        f"{{ __schema {SCHEMA_FIELDS} ... on Query {{ x: __schema {SCHEMA_FIELDS} }} }}",
        f"{{ ...F a: user(id: \"u\") {{ id }} ...G }} fragment F on Query {{ __schema "
        f"{SCHEMA_FIELDS} }} fragment G on Query {{ ...F }}",
    ]
    for document in twice:
        [refused] = refusals(document)
        assert refused.startswith("query `__schema` selections 2"), refused
    types = " ".join(f't{i}: __type(name: "User") {{ name }}' for i in range(11))
    [refused] = refusals(f"{{ {types} }}")
    assert refused.startswith("query `__type` selections 11")
    assert refusals(f"{{ __schema {SCHEMA_FIELDS} __type(name: \"User\") {{ name }} }}") == []
