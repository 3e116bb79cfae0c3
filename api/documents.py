"""GraphQL documents on their way in: the size limit, one parse and one validation per distinct
document, and the JSON decoding of requests.

Chatbots send the same few documents with new variables; parsing and validating them again was
a large share of the API's CPU per request (docs/performance.md). The validation rules (depth and
aliases; cost is checked per request with its variables, ``api.limits``) depend on the document
alone, so a cached verdict is the one a new check would give. Each schema (each app) keeps its
own cache, bounded by the total size of the documents it holds, not by their number: a stream of
large distinct documents only evicts.
"""

from __future__ import annotations

import functools
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import orjson
from cross_web import HTTPException as TransportRefusal
from graphql import DocumentNode, GraphQLError, OperationDefinitionNode, parse
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from strawberry.extensions import SchemaExtension
from strawberry.fastapi import GraphQLRouter
from strawberry.subscriptions.protocols.graphql_transport_ws.handlers import (
    BaseGraphQLTransportWSHandler,
)
from strawberry.types.unset import UNSET

from graph import strictjson
from graph.errors import InvalidInput

CACHE_BYTES = 2_000_000
"""Total size of the documents one app keeps parsed and validated (their trees take some tens
of times more memory than their text)."""


@dataclass
class Entry:
    document: DocumentNode
    errors: list[GraphQLError] | None = None
    """The validation verdict, once there is one."""


class DocumentCache:
    """Least recently used documents, by text, within ``budget`` bytes of text in all."""

    def __init__(self, budget: int = CACHE_BYTES) -> None:
        self.budget = budget
        self.size = 0
        self._entries: OrderedDict[str, Entry] = OrderedDict()

    def get(self, query: str) -> Entry | None:
        entry = self._entries.get(query)
        if entry is not None:
            self._entries.move_to_end(query)
        return entry

    def put(self, query: str, entry: Entry) -> None:
        weight = len(query)
        if weight > self.budget or query in self._entries:
            return
        while self.size + weight > self.budget:
            evicted, _ = self._entries.popitem(last=False)
            self.size -= len(evicted)
        self._entries[query] = entry
        self.size += weight


def too_long(size: int, limit: int) -> GraphQLError:
    return GraphQLError(f"the document has {size} bytes, over the limit of {limit} "
                        "(PERSONAS_API_MAX_DOCUMENT_BYTES)", extensions={"code": "LIMIT_EXCEEDED"})


def unnamed_operation(document: DocumentNode | None, name: str | None) -> GraphQLError | None:
    """The request error of a document of several operations sent without the name of the one
    to run (the GraphQL spec's; strawberry ran the first), or None."""
    if name is not None or document is None:
        return None
    operations = sum(isinstance(d, OperationDefinitionNode) for d in document.definitions)
    if operations < 2:
        return None
    return GraphQLError(f"the document has {operations} operations: name the one to run "
                        "(operationName)", extensions={"code": "BAD_USER_INPUT"})


STAND_IN = parse("query { __typename }")
"""What a refused document is replaced with: an operation every transport allows."""


class CachedDocuments(SchemaExtension):
    """Refuses a document over ``max_bytes`` before parsing it, then answers parse and validation
    from ``cache`` when it can. A document that does not parse is left to strawberry's own parse
    step, which reports it as a request error like any other (with its code: the token limit is
    LIMIT_EXCEEDED)."""

    def __init__(self, cache: DocumentCache, max_bytes: int) -> None:
        super().__init__()
        self.cache = cache
        self.max_bytes = max_bytes
        self.refused: GraphQLError | None = None

    def on_parse(self) -> Iterator[None]:
        execution = self.execution_context
        query = execution.query
        if query is not None and execution.graphql_document is None:
            # Characters first: cheap, and never more than the bytes.
            if len(query) > self.max_bytes or len(query.encode()) > self.max_bytes:
                # Not raised here: over HTTP strawberry reported it, but on a WebSocket the
                # subscription just completed without a word. A stand-in document skips the
                # parse, and validation reports the refusal (``on_validate``) on every transport.
                self.refused = too_long(len(query.encode()), self.max_bytes)
                execution.graphql_document = STAND_IN
                yield
                return
            entry = self.cache.get(query)
            if entry is None:
                try:
                    entry = Entry(parse(query, **execution.parse_options))
                except GraphQLError:
                    entry = None
                else:
                    self.cache.put(query, entry)
            if entry is not None:
                execution.graphql_document = entry.document
        yield

    def on_validate(self) -> Iterator[None]:
        execution = self.execution_context
        # What the request named: the public ``operation_name`` falls back to the first
        # operation's name, which is the behaviour refused here.
        unnamed = unnamed_operation(execution.graphql_document,
                                    execution._provided_operation_name)
        if self.refused is not None or unnamed is not None:
            # Validation then runs no rule; the refusal is the request's, never cached.
            execution.pre_execution_errors = [e for e in (self.refused, unnamed) if e][:1]
            yield
            return
        entry = self.cache.get(execution.query) if execution.query is not None else None
        if entry is not None and entry.errors is not None:
            execution.pre_execution_errors = entry.errors
        yield
        if entry is not None and entry.errors is None \
                and execution.pre_execution_errors is not None:
            entry.errors = execution.pre_execution_errors


def document_extensions(max_bytes: int) -> list[Callable[[], SchemaExtension]]:
    """Extension factories (strawberry makes one extension per request) sharing one cache."""
    return [functools.partial(CachedDocuments, DocumentCache(), max_bytes)]


_OPTIONAL_OBJECT = (dict, type(None))
_SUBSCRIBE_FIELDS: dict[str, tuple[type, ...]] = {
    "query": (str,), "variables": _OPTIONAL_OBJECT, "operationName": (str, type(None)),
    "extensions": _OPTIONAL_OBJECT}


MAX_OPERATION_ID_CHARS = 128
"""The longest operation `id` a graphql-transport-ws message may carry. Ids are the client's
handles (counters, UUIDs); every answer echoes its id, so a 100 kB id was sent back whole with
every `next` message of the operation."""


def transport_message_problem(message: object) -> str | None:
    """Why a graphql-transport-ws message (parsed JSON) cannot be read, or None. strawberry
    indexes a message without checking its shape: an array, an `id` that is not a string or a
    `payload` that is not an object raised inside it (a traceback logged per message, the
    connection dropped without a close code)."""
    if not isinstance(message, dict):
        return "a message must be a JSON object"
    kind = message.get("type")
    if not isinstance(kind, str):
        return "a message needs a string `type`"
    payload = message.get("payload")
    if kind in ("subscribe", "complete") and not isinstance(message.get("id"), str):
        return f"a `{kind}` message needs a string `id`"
    operation = message.get("id")
    if isinstance(operation, str) and len(operation) > MAX_OPERATION_ID_CHARS:
        return f"`id` is longer than {MAX_OPERATION_ID_CHARS} characters"
    if kind != "subscribe":
        return None if isinstance(payload, _OPTIONAL_OBJECT) else "`payload` must be an object"
    if not isinstance(payload, dict):
        return "a `subscribe` message needs an object `payload`"
    for name, types in _SUBSCRIBE_FIELDS.items():
        if not isinstance(payload.get(name), types):
            return f"`payload.{name}` has the wrong type"
    return None


class CheckedTransportWS(BaseGraphQLTransportWSHandler[Any, Any]):
    """strawberry's graphql-transport-ws handler with each message's shape checked first: a
    message it cannot read closes the connection with 4400 and the reason, as the protocol
    says, whatever its shape."""

    async def handle_message(self, message: Any) -> None:
        problem = transport_message_problem(message)
        if problem is not None:
            await self.handle_invalid_message(problem)
            return
        await super().handle_message(message)


class JsonRouter(GraphQLRouter[Any, Any]):
    """strawberry's router with request JSON (HTTP bodies, WebSocket messages) decoded by
    orjson: nesting beyond its depth limit or a number beyond a double is a decoding error,
    where the standard library answered 500 (RecursionError, ValueError on 5,000 digits).
    Found by the fuzz tests: a body that is JSON but not an object is refused too.

    HTTP answers are encoded by orjson too (the standard library's encoder was a visible share
    of the API's CPU per chatbot request; docs/performance.md). WebSocket messages keep
    strawberry's text encoding: graphql-transport-ws sends text frames, not bytes."""

    graphql_transport_ws_handler_class = CheckedTransportWS

    async def run(self, request: Any, context: Any = UNSET, root_value: Any = UNSET) -> Any:
        # strawberry answers its own refusals over HTTP (batching, a content type, an unknown
        # operation name, a method) in plain text; as the app's HTTPException they are answered
        # in the API's JSON error shape with a code (api.app.http_refusal).
        try:
            return await super().run(request, context, root_value)
        except TransportRefusal as exc:
            if not isinstance(request, Request):
                raise
            raise HTTPException(exc.status_code, exc.reason) from None

    def create_response(self, response_data: Any, sub_response: Response) -> Response:
        try:
            body: str | bytes = orjson.dumps(response_data)
        except TypeError:  # what orjson refuses (an integer past 64 bits, a key not a string)
            body = self.encode_json(response_data)
        response = Response(body, media_type="application/json",
                            status_code=sub_response.status_code or 200)
        response.headers.raw.extend(sub_response.headers.raw)
        return response

    def decode_json(self, data: str | bytes) -> object:
        return strictjson.loads(data)  # a repeated key ({"query": .., "query": ..}) refused

    def parse_json(self, data: str | bytes) -> Any:
        try:
            value = self.decode_json(data)
        except strictjson.JSONDecodeError as exc:
            raise InvalidInput(f"the body is not valid JSON: {exc}") from None
        # strawberry reads fields of an object (or of each in a batch): any other JSON value
        # crashed it (AttributeError, a 500).
        if not isinstance(value, dict | list):
            raise InvalidInput('the body must be a JSON object {"query": ..., "variables": ...}')
        return value
