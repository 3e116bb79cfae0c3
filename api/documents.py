"""Each distinct GraphQL document is parsed and validated once per app.

Chatbots send the same few documents with new variables; parsing and validating them again cost
about 3 ms of the API's CPU per request (docs/performance.md). The request limits are part of
validation and depend on the document alone (a variable `first` counts as the default page), so
a cached verdict is the one a new check would give. Each app keeps its own verdicts: the cache
key holds the schema and the limit rule built from that app's settings. Both caches are bounded;
a stream of distinct documents only evicts.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator

from graphql import GraphQLError
from strawberry.extensions import ParserCache, SchemaExtension, ValidationCache

CACHE_SIZE = 512


class CachedParse(ParserCache):
    """strawberry's ``ParserCache``, except for a document that does not parse: that one is left
    to strawberry's own parse step, which reports it as a request error like any other (with
    its code: the token limit is LIMIT_EXCEEDED). ``ParserCache`` lets the error escape from
    the extension hook instead, past the extensions that add the codes."""

    def on_parse(self) -> Iterator[None]:
        context = self.execution_context
        with contextlib.suppress(GraphQLError):
            context.graphql_document = self.cached_parse_document(context.query,
                                                                  **context.parse_options)
        yield


def document_caches() -> list[Callable[[], SchemaExtension]]:
    """Extension factories: strawberry makes one extension per request (the caches themselves
    live in strawberry's module, keyed by size)."""
    return [functools.partial(CachedParse, maxsize=CACHE_SIZE),
            functools.partial(ValidationCache, maxsize=CACHE_SIZE)]
