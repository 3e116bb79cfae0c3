"""Request limits checked before anything runs: selection depth, aliases, cost and tokens.

Every violation is a GraphQL error with code LIMIT_EXCEEDED. Cost counts each field once, times
the ``first`` argument of every list field around it (a variable or missing ``first`` counts as
the list's default of 10), so a wide fan-out of nested lists is refused however it is spelled.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from graphql import (
    FieldNode,
    FragmentSpreadNode,
    GraphQLError,
    InlineFragmentNode,
    IntValueNode,
    OperationDefinitionNode,
    SelectionSetNode,
    ValidationContext,
    ValidationRule,
)
from strawberry.extensions import AddValidationRules, MaxTokensLimiter, SchemaExtension

from graph.settings import Settings

DEFAULT_PAGE = 10
TOKENS_MESSAGE = "Document contains more than"  # graphql-core's parser, on max_tokens


def _first(field: FieldNode) -> int:
    for arg in field.arguments or ():
        if arg.name.value in ("first", "firstEvents") and isinstance(arg.value, IntValueNode):
            return max(1, int(arg.value.value))
    return DEFAULT_PAGE if any(a.name.value.startswith("first")
                               for a in field.arguments or ()) else 1


class _Measure:
    def __init__(self, context: ValidationContext) -> None:
        self.context = context
        self.aliases = 0

    def walk(self, selections: SelectionSetNode | None, depth: int,
             seen: frozenset[str]) -> tuple[int, int]:
        """(deepest level, cost) of a selection set; fragments are followed once per path."""
        if selections is None:
            return depth, 0
        deepest, cost = depth, 0
        for node in selections.selections:
            if isinstance(node, FieldNode):
                if node.alias is not None:
                    self.aliases += 1
                d, inner = self.walk(node.selection_set, depth + 1, seen)
                deepest = max(deepest, d)
                cost += 1 + _first(node) * inner
            elif isinstance(node, InlineFragmentNode):
                d, inner = self.walk(node.selection_set, depth, seen)
                deepest, cost = max(deepest, d), cost + inner
            elif isinstance(node, FragmentSpreadNode) and node.name.value not in seen:
                fragment = self.context.get_fragment(node.name.value)
                if fragment is not None:
                    d, inner = self.walk(fragment.selection_set, depth,
                                         seen | {node.name.value})
                    deepest, cost = max(deepest, d), cost + inner
        return deepest, cost


def limit_rule(settings: Settings) -> type[ValidationRule]:
    class QueryLimits(ValidationRule):
        def enter_operation_definition(self, node: OperationDefinitionNode,
                                       *_: Any) -> None:
            measure = _Measure(self.context)
            depth, cost = measure.walk(node.selection_set, 0, frozenset())
            for what, value, limit in (("depth", depth, settings.api_max_depth),
                                       ("aliases", measure.aliases, settings.api_max_aliases),
                                       ("cost", cost, settings.api_max_cost)):
                if value > limit:
                    self.report_error(GraphQLError(
                        f"query {what} {value} is over the limit of {limit}", node,
                        extensions={"code": "LIMIT_EXCEEDED"}))

    return QueryLimits


def limit_extensions(settings: Settings) -> list[Callable[[], SchemaExtension]]:
    """Extension factories: strawberry makes one extension per request."""
    return [functools.partial(AddValidationRules, [limit_rule(settings)]),
            functools.partial(MaxTokensLimiter, max_token_count=settings.api_max_tokens)]
