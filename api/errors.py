"""Error translation at the GraphQL edge: every error carries a code; unexpected ones are masked."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

from graphql import GraphQLError
from neo4j.exceptions import (
    ConnectionAcquisitionTimeoutError,
    ServiceUnavailable,
    SessionExpired,
    TransientError,
)
from strawberry.extensions import SchemaExtension

from api.limits import TOKENS_MESSAGE
from graph.errors import PersonaError
from graph.privacy import mask_contacts

log = logging.getLogger(__name__)
MASKED_MESSAGE = "Unexpected error; it has been logged."
UNAVAILABLE_ERRORS = (ServiceUnavailable, SessionExpired, TransientError,
                      ConnectionAcquisitionTimeoutError)
"""Database failures that outlasted the driver's retries: Neo4j is down or restarting, or every
pooled connection stayed busy past the driver's wait (overload). The caller should retry later
(503 ``UNAVAILABLE``), not read them as a bug of ours."""
UNAVAILABLE_MESSAGE = "The database is unavailable; retry later."


def _translate(error: GraphQLError) -> GraphQLError:
    original = error.original_error
    if original is None:
        # Parse and validation errors: the query itself is at fault (limit rules set their own
        # code; the parser's token limit cannot, so it is recognised by its message).
        code = (error.extensions or {}).get("code", "GRAPHQL_VALIDATION_FAILED")
        if TOKENS_MESSAGE in error.message:
            code = "LIMIT_EXCEEDED"
        return GraphQLError(error.message, error.nodes, error.source, error.positions,
                            error.path, None, {**(error.extensions or {}), "code": code})
    if isinstance(original, UNAVAILABLE_ERRORS):
        log.warning("database unavailable at %s: %s", error.path, type(original).__name__)
        return GraphQLError(UNAVAILABLE_MESSAGE, error.nodes, error.source, error.positions,
                            error.path, None, {"code": "UNAVAILABLE"})
    if error.path is None and not isinstance(original, PersonaError):
        # Raised while reading the request's values (a variable or literal the scalar cannot
        # parse, e.g. a malformed DateTime), before any resolver ran: the caller's input.
        return GraphQLError(error.message, error.nodes, error.source, error.positions,
                            error.path, None, {"code": "BAD_USER_INPUT"})
    if isinstance(original, PersonaError):
        return GraphQLError(str(original), error.nodes, error.source, error.positions,
                            error.path, None, {"code": original.code})
    log.error("unexpected error at %s", error.path, exc_info=original)
    return GraphQLError(MASKED_MESSAGE, error.nodes, error.source, error.positions, error.path,
                        None, {"code": "INTERNAL_SERVER_ERROR"})


def log_errors(errors: list[GraphQLError]) -> None:
    """What strawberry would log for each error, minus the request document: a document may
    carry PII in literals (`userByIdentifier(value: "jane@example.com")`). Errors the caller
    caused are INFO with their code and path; unexpected ones are logged by ``_translate``."""
    for error in errors:
        original = error.original_error
        if isinstance(original, PersonaError):
            log.info("request refused: %s at %s: %s", original.code,
                     ".".join(str(p) for p in error.path or ()) or "-",
                     mask_contacts(str(original)))
        elif original is None:
            log.info("request refused: %s", mask_contacts(error.message))


class ErrorCodes(SchemaExtension):
    """Adds ``extensions.code`` to every error and hides internals (stack traces, Cypher)."""

    def on_operation(self) -> Iterator[None]:
        yield
        result = self.execution_context.result
        if result is not None and result.errors:
            result.errors = [_translate(e) for e in result.errors]

    def on_stream_result(self, result: Any) -> Iterator[None]:
        # Subscriptions: each result (a refusal before the stream starts included) goes out
        # over graphql-transport-ws without passing `on_operation`'s result.
        errors = getattr(result, "errors", None)
        if errors and all(isinstance(e, GraphQLError) for e in errors):
            result.errors = [_translate(e) for e in errors]
        yield

