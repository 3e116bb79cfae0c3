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
