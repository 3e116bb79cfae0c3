"""What a request asks of the one user it names (`user`, `userByIdentifier`), read from the
request before that user is fetched, so that the user and all of it come back in one Cypher round
trip (``graph.profile.prefetch``) instead of one per field.

Lists of users keep the per-field path: DataLoaders for persona, segments and preferences
(`api/loaders.py`, batched across users), one query per user for the rest.
"""

from __future__ import annotations

from typing import Any

import strawberry
from graphql import (
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    InlineFragmentNode,
    IntValueNode,
    SelectionSetNode,
    VariableNode,
)

from graph.profile.prefetch import (
    EVENTS_FIRST,
    PREFERENCES_FIRST,
    RECOMMENDATIONS_FIRST,
    Wanted,
)
from graph.recommend.engine import MAX_FIRST


def _first_fields(selection_set: SelectionSetNode | None,
                  fragments: dict[str, FragmentDefinitionNode],
                  found: dict[str, FieldNode]) -> None:
    for sel in selection_set.selections if selection_set else ():
        if isinstance(sel, FieldNode):
            # The first selection of a field is fetched ahead; an alias of it with other
            # arguments goes through its resolver.
            found.setdefault(sel.name.value, sel)
        elif isinstance(sel, InlineFragmentNode):
            _first_fields(sel.selection_set, fragments, found)
        elif isinstance(sel, FragmentSpreadNode) and sel.name.value in fragments:
            _first_fields(fragments[sel.name.value].selection_set, fragments, found)


def wanted(info: strawberry.Info[Any, Any], max_page: int) -> Wanted:
    """What the current field's selection (a User) asks for, with its arguments.

    It reads graphql-core's syntax tree, first level only: strawberry's
    ``info.selected_fields`` converts the whole tree, every argument included, a visible share
    of the API's CPU at 100 requests/s (docs/performance.md). A field under
    ``@skip``/``@include`` is fetched ahead all the same (wasted, never wrong)."""
    raw = info._raw_info  # noqa: SLF001 - see above
    # strawberry's executor passes the coerced dict, graphql-core's its VariableValues.
    values: Any = raw.variable_values
    variables: dict[str, Any] = getattr(values, "coerced", values)
    fields: dict[str, FieldNode] = {}
    for node in raw.field_nodes:
        _first_fields(node.selection_set, raw.fragments, fields)

    def size(name: str, argument: str, default: int, most: int = max_page) -> int | None:
        if name not in fields:
            return None
        value: Any = default
        for arg in fields[name].arguments or ():
            if arg.name.value == argument:
                value = (variables.get(arg.value.name.value)
                         if isinstance(arg.value, VariableNode)
                         else int(arg.value.value) if isinstance(arg.value, IntValueNode)
                         else None)
        return value if isinstance(value, int) and 1 <= value <= most else None

    return Wanted(persona="persona" in fields or "membership" in fields,
                  preferences=size("preferences", "first", PREFERENCES_FIRST),
                  events=size("context", "firstEvents", EVENTS_FIRST),
                  recommendations=size("recommendations", "first", RECOMMENDATIONS_FIRST,
                                       min(max_page, MAX_FIRST)))
