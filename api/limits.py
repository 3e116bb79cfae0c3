"""Request limits checked before anything runs: selection depth, aliases, cost and tokens, the
byte limit on every request body, and the request rate of callers without a live key.

Every violation is a GraphQL error with code LIMIT_EXCEEDED (413 for a body). Depth and aliases
depend on the document alone and are validation rules (so their verdict is cached with the
document). Cost counts each field once, times the page size of every list field around it, as
the request really gives it: a literal ``first``, a variable's value (or its default), or the
field's own default when ``first`` is left out. It needs the variables, so it is checked per
request, just before execution. Every walk visits each fragment once (its measure is memoized),
so checking is linear in the document however often fragments spread each other.
"""

from __future__ import annotations

import asyncio
import functools
import math
import weakref
from collections.abc import Awaitable, Callable, Hashable, Iterator
from dataclasses import dataclass
from typing import Any

import orjson
from graphql import (
    DocumentNode,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLError,
    GraphQLField,
    GraphQLInterfaceType,
    GraphQLNamedType,
    GraphQLObjectType,
    GraphQLSchema,
    InlineFragmentNode,
    IntValueNode,
    ListValueNode,
    NullValueNode,
    OperationDefinitionNode,
    OperationType,
    SelectionSetNode,
    ValidationContext,
    ValidationRule,
    VariableNode,
    get_named_type,
    get_operation_ast,
)
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from strawberry.extensions import AddValidationRules, MaxTokensLimiter, SchemaExtension

from api.auth import PrincipalCache, TokenBuckets, credentials
from graph.settings import Settings

PAGE_ARGUMENTS = ("first", "firstEvents")
TOKENS_MESSAGE = "Document contains more than"  # graphql-core's parser, on max_tokens


def limit_error(what: str, limit: int, node: Any = None) -> GraphQLError:
    return GraphQLError(f"{what} is over the limit of {limit}", node,
                        extensions={"code": "LIMIT_EXCEEDED"})


INTROSPECTION_FIELDS = frozenset({"__schema", "__type"})
INTROSPECTION_MAX_DEPTH = 20
"""Introspection is measured on its own: GraphiQL's schema query nests `ofType` 15 deep, over
PERSONAS_API_MAX_DEPTH, while what it returns is bounded by the schema, not by the data."""
INTROSPECTION_MAX_SCHEMAS = 1
INTROSPECTION_MAX_TYPES = 10
"""Introspection is answered without a key and costs nothing in the cost rule, but each
`__schema` answer is the whole schema (32 kB, 16 ms of CPU): twenty aliases of it in one 2.8 kB
request cost 0.32 s of CPU and answered 647 kB, within the address's rate of keyless
requests. One `__schema` is what GraphiQL and code generators send."""


@dataclass(frozen=True)
class Shape:
    depth: int
    """Deepest level below the selection set (introspection fields left out)."""
    aliases: int
    introspection: int = 0
    """Deepest level below an introspection field."""
    schemas: int = 0
    """How many times `__schema` is selected (aliases and fragments spread again count)."""
    types: int = 0
    """How many times `__type` is selected."""


class _ShapeWalk:
    """Depth and aliases of selection sets; each fragment is measured once."""

    def __init__(self, validation: ValidationContext) -> None:
        self.validation = validation
        self.fragments: dict[str, Shape] = {}

    def walk(self, selections: SelectionSetNode | None) -> Shape:
        if selections is None:
            return Shape(0, 0)
        depth = aliases = introspection = schemas = types = 0
        for node in selections.selections:
            if isinstance(node, FieldNode):
                inner = self.walk(node.selection_set)
                name = node.name.value
                if name in INTROSPECTION_FIELDS:
                    introspection = max(introspection, 1 + max(inner.depth, inner.introspection))
                    schemas += name == "__schema"
                    types += name == "__type"
                else:
                    depth = max(depth, 1 + inner.depth)
                    introspection = max(introspection, inner.introspection)
                aliases += inner.aliases + (node.alias is not None)
                schemas, types = schemas + inner.schemas, types + inner.types
                continue
            if isinstance(node, InlineFragmentNode):
                inner = self.walk(node.selection_set)
            elif isinstance(node, FragmentSpreadNode):
                inner = self.fragment(node.name.value)
            else:
                continue
            depth, aliases = max(depth, inner.depth), aliases + inner.aliases
            introspection = max(introspection, inner.introspection)
            schemas, types = schemas + inner.schemas, types + inner.types
        return Shape(depth, aliases, introspection, schemas, types)

    def fragment(self, name: str) -> Shape:
        known = self.fragments.get(name)
        if known is not None:
            return known
        # A cycle (reported by graphql's own rule) counts nothing on its way round.
        self.fragments[name] = Shape(0, 0)
        definition = self.validation.get_fragment(name)
        shape = self.walk(definition.selection_set) if definition is not None else Shape(0, 0)
        self.fragments[name] = shape
        return shape


def shape_rule(settings: Settings) -> type[ValidationRule]:
    class QueryShape(ValidationRule):
        def enter_operation_definition(self, node: OperationDefinitionNode,
                                       *_: Any) -> None:
            shape = _ShapeWalk(self.context).walk(node.selection_set)
            for what, value, limit in (("depth", shape.depth, settings.api_max_depth),
                                       ("aliases", shape.aliases, settings.api_max_aliases),
                                       ("introspection depth", shape.introspection,
                                        INTROSPECTION_MAX_DEPTH),
                                       ("`__schema` selections", shape.schemas,
                                        INTROSPECTION_MAX_SCHEMAS),
                                       ("`__type` selections", shape.types,
                                        INTROSPECTION_MAX_TYPES)):
                if value > limit:
                    self.report_error(limit_error(f"query {what} {value}", limit, node))

    return QueryShape


def field_of(parent: GraphQLNamedType | None, name: str) -> GraphQLField | None:
    """The definition of field ``name`` of ``parent`` (None for unknown fields: validation
    reports them)."""
    if isinstance(parent, GraphQLObjectType | GraphQLInterfaceType):
        field: GraphQLField | None = parent.fields.get(name)
        return field
    return None


class _CostWalk:
    """Cost of an operation with the request's variables; numbers are capped just over the
    limit, so a document built to overflow stays cheap to measure."""

    def __init__(self, schema: GraphQLSchema, fragments: dict[str, FragmentDefinitionNode],
                 variables: dict[str, Any], cap: int) -> None:
        self.schema = schema
        self.fragments = fragments
        self.variables = variables
        self.cap = cap
        self.memo: dict[str, int] = {}

    def page(self, node: FieldNode, parent: GraphQLNamedType | None) -> int:
        """The page size a list field is asked for; 1 for any other field."""
        definition = field_of(parent, node.name.value)
        given = {a.name.value: a.value for a in node.arguments or ()}
        for name in PAGE_ARGUMENTS:
            value: Any = None
            if name in given:
                literal = given[name]
                if isinstance(literal, IntValueNode):
                    value = int(literal.value)
                elif isinstance(literal, VariableNode):
                    value = self.variables.get(literal.name.value)
            elif definition is not None and name in definition.args:
                value = definition.args[name].default_value
            else:
                continue
            if isinstance(value, int) and not isinstance(value, bool):
                return min(max(1, value), self.cap)
            # Not an integer: execution refuses it; count the field's default meanwhile.
            default = definition.args[name].default_value if definition is not None \
                and name in definition.args else None
            return min(max(1, default), self.cap) if isinstance(default, int) else 1
        return 1

    def walk(self, selections: SelectionSetNode | None, parent: GraphQLNamedType | None) -> int:
        if selections is None:
            return 0
        cost = 0
        for node in selections.selections:
            if isinstance(node, FieldNode):
                field = field_of(parent, node.name.value)
                field_type = get_named_type(field.type) if field is not None else None
                inner = self.walk(node.selection_set, field_type)
                cost += 1 + self.page(node, parent) * inner
            elif isinstance(node, InlineFragmentNode):
                condition = node.type_condition
                scope = self.schema.get_type(condition.name.value) if condition else parent
                cost += self.walk(node.selection_set, scope)
            elif isinstance(node, FragmentSpreadNode):
                cost += self.fragment(node.name.value)
            if cost > self.cap:
                return self.cap
        return cost

    def fragment(self, name: str) -> int:
        if name in self.memo:
            return self.memo[name]
        self.memo[name] = 0  # a cycle counts nothing on its way round
        definition = self.fragments.get(name)
        cost = 0
        if definition is not None:
            cost = self.walk(definition.selection_set,
                             self.schema.get_type(definition.type_condition.name.value))
        self.memo[name] = cost
        return cost


def operation_cost(schema: GraphQLSchema, document: Any, operation_name: str | None,
                   variables: dict[str, Any] | None, cap: int) -> int:
    """What the operation of ``document`` costs with these variables (at most ``cap``)."""
    operation = get_operation_ast(document, operation_name)
    if operation is None:
        return 0
    values = dict(variables or {})
    for definition in operation.variable_definitions or ():
        name = definition.variable.name.value
        if name not in values and isinstance(definition.default_value, IntValueNode):
            values[name] = int(definition.default_value.value)
    fragments = {d.name.value: d for d in document.definitions
                 if isinstance(d, FragmentDefinitionNode)}
    root = schema.get_root_type(operation.operation)
    return _CostWalk(schema, fragments, values, cap).walk(operation.selection_set, root)


class CostCache:
    """Costs already measured, by document (the parsed one ``api.documents`` keeps) and the
    operation and integer variables they were measured with: the only variables a cost
    depends on (any other value in a page argument counts as the field's default). Chatbots
    send the same documents with new ids; measuring each again was a visible share of the
    API's CPU per request (docs/performance.md). A document keeps at most ``PER_DOCUMENT``
    costs, and none once it is dropped from the document cache."""

    PER_DOCUMENT = 64

    def __init__(self) -> None:
        # By the document's identity: a parsed document hashes (and compares) its whole tree.
        self._costs: dict[int, tuple[weakref.ref[DocumentNode], dict[Hashable, int]]] = {}

    def _known(self, document: DocumentNode) -> dict[Hashable, int]:
        key = id(document)
        found = self._costs.get(key)
        if found is not None and found[0]() is document:
            return found[1]
        known: dict[Hashable, int] = {}
        self._costs[key] = (weakref.ref(document, lambda _: self._costs.pop(key, None)), known)
        return known

    def cost(self, schema: GraphQLSchema, document: DocumentNode, operation_name: str | None,
             variables: dict[str, Any] | None, cap: int) -> int:
        """``operation_cost``, measured once per document, operation and integer variables."""
        key = (operation_name, tuple(sorted((name, value) for name, value
                                            in (variables or {}).items() if type(value) is int)))
        known = self._known(document)
        cost = known.get(key)
        if cost is None:
            cost = operation_cost(schema, document, operation_name, variables, cap)
            if len(known) >= self.PER_DOCUMENT:
                known.clear()
            known[key] = cost
        return cost


BATCH_FIELD = "ingestEvents"
"""The mutation whose list of events is bounded per request, not per field."""


def batch_events(document: DocumentNode, operation_name: str | None,
                 variables: dict[str, Any] | None) -> int:
    """How many events the operation's ``ingestEvents`` fields carry together, aliases and
    fragments included, as literals or variables (or their defaults); 0 for a query.

    Each field was held to PERSONAS_API_MAX_BATCH_EVENTS on its own, so twenty aliases of one
    field, all given the same variable of a thousand events, wrote twenty thousand events for
    one request (one token of the key's rate, one body within its limit)."""
    operation = get_operation_ast(document, operation_name)
    if operation is None or operation.operation is not OperationType.MUTATION:
        return 0
    values = dict(variables or {})
    defaults = {d.variable.name.value: d.default_value
                for d in operation.variable_definitions or () if d.default_value is not None}
    fragments = {d.name.value: d for d in document.definitions
                 if isinstance(d, FragmentDefinitionNode)}

    def size(value: Any) -> int:
        if isinstance(value, VariableNode):
            name = value.name.value
            if name in values:
                given = values[name]
                return len(given) if isinstance(given, list) else int(given is not None)
            return size(defaults.get(name))
        if isinstance(value, ListValueNode):
            return len(value.values)
        return int(value is not None and not isinstance(value, NullValueNode))

    def walk(selections: SelectionSetNode, spread: frozenset[str]) -> int:
        total = 0
        for node in selections.selections:
            if isinstance(node, FieldNode) and node.name.value == BATCH_FIELD:
                total += sum(size(a.value) for a in node.arguments or ()
                             if a.name.value == "events")
            elif isinstance(node, InlineFragmentNode):
                total += walk(node.selection_set, spread)
            elif isinstance(node, FragmentSpreadNode) and node.name.value not in spread:
                definition = fragments.get(node.name.value)
                if definition is not None:
                    total += walk(definition.selection_set, spread | {node.name.value})
        return total

    return walk(operation.selection_set, frozenset())


class CostLimit(SchemaExtension):
    """Refuses an operation whose cost, with its variables, is over PERSONAS_API_MAX_COST, and
    a mutation writing more events in all than PERSONAS_API_MAX_BATCH_EVENTS
    (``batch_events``): before anything runs, so nothing is half written."""

    def __init__(self, limit: int, costs: CostCache | None = None,
                 max_batch_events: int | None = None) -> None:
        super().__init__()
        self.limit = limit
        self.costs = costs or CostCache()
        self.max_batch_events = max_batch_events

    def on_execute(self) -> Iterator[None]:
        execution = self.execution_context
        if execution.graphql_document is not None:
            cost = self.costs.cost(execution.schema._schema, execution.graphql_document,
                                   execution.operation_name, execution.variables, self.limit + 1)
            if cost > self.limit:
                # A GraphQLError raised here reaches the client as it is, code included.
                raise limit_error("query cost (PERSONAS_API_MAX_COST)", self.limit)
            if self.max_batch_events is not None:
                events = batch_events(execution.graphql_document, execution.operation_name,
                                      execution.variables)
                if events > self.max_batch_events:
                    raise limit_error(f"{events} events in the request's `{BATCH_FIELD}` "
                                      "fields together (PERSONAS_API_MAX_BATCH_EVENTS)",
                                      self.max_batch_events)
        yield


def limit_extensions(settings: Settings) -> list[Callable[[], SchemaExtension]]:
    """Extension factories: strawberry makes one extension per request."""
    return [functools.partial(AddValidationRules, [shape_rule(settings)]),
            functools.partial(MaxTokensLimiter, max_token_count=settings.api_max_tokens),
            functools.partial(CostLimit, settings.api_max_cost, CostCache(),
                              settings.api_max_batch_events)]


def body_refusal(limit: int, size: int | None) -> Message:
    said = f"request body of {size} bytes" if size is not None else "request body"
    return {"type": "http.response.body", "body": orjson.dumps({"error": {
        "code": "LIMIT_EXCEEDED",
        "message": f"{said} is over the limit of {limit} bytes (PERSONAS_API_MAX_BODY_BYTES)"}})}


class BodyLimit:
    """ASGI middleware: every request body, on every route, is read within ``limit`` bytes
    before the app (authentication, parsing) sees any of it: by its Content-Length, or while a
    chunked body streams in. Over the limit: 413 LIMIT_EXCEEDED, and ``on_refused(path)``.
    A body that has not arrived whole within ``timeout_s`` (PERSONAS_API_BODY_TIMEOUT_S) is
    408 TIMEOUT: without it a client sending a byte now and then held its connection (and the
    request's memory) for as long as it liked."""

    def __init__(self, app: ASGIApp, limit: int,
                 on_refused: Callable[[str], None] | None = None,
                 timeout_s: float | None = None) -> None:
        self.app = app
        self.limit = limit
        self.on_refused = on_refused
        self.timeout_s = timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.limit:
            await self.refuse(scope, send, int(declared))
            return
        chunks: list[bytes] = []
        size = 0
        loop = asyncio.get_running_loop()
        deadline = None if self.timeout_s is None else loop.time() + self.timeout_s
        while True:
            if deadline is None:
                message = await receive()
            else:
                try:
                    message = await asyncio.wait_for(receive(), max(deadline - loop.time(), 0))
                except TimeoutError:
                    await self.too_slow(send)
                    return
            if message["type"] != "http.request":
                return  # the client went away
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.limit:
                await self.refuse(scope, send, None)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        await self.app(scope, replay(b"".join(chunks), receive), send)

    async def too_slow(self, send: Send) -> None:
        body = orjson.dumps({"error": {
            "code": "TIMEOUT", "message": f"the request body did not arrive within "
            f"{self.timeout_s:g} s (PERSONAS_API_BODY_TIMEOUT_S)"}})
        await send({"type": "http.response.start", "status": 408,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(body)).encode()),
                                (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})

    async def refuse(self, scope: Scope, send: Send, size: int | None) -> None:
        if self.on_refused is not None:
            self.on_refused(scope["path"])
        body = body_refusal(self.limit, size)
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(body["body"])).encode()),
                                (b"connection", b"close")]})
        await send(body)


def replay(body: bytes, receive: Receive) -> Callable[[], Awaitable[Message]]:
    """A receive that gives the buffered body once, then waits on the real one (for the
    disconnect)."""
    sent = False

    async def again() -> Message:
        nonlocal sent
        if sent:
            return await receive()
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return again


def rate_refusal(retry_after: float) -> tuple[list[tuple[bytes, bytes]], bytes]:
    body = orjson.dumps({"error": {
        "code": "RATE_LIMITED",
        "message": "too many requests without a valid API key from this address "
                   "(PERSONAS_API_ADDRESS_RATE_PER_SECOND); retry later"}})
    return [(b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"retry-after", str(max(1, math.ceil(retry_after))).encode())], body


CREDENTIAL_HEADERS = (b"authorization", b"x-api-key")
SINGLE_HEADERS = (*CREDENTIAL_HEADERS, b"content-type")
"""Headers a request may send once only: readers disagree on which of several counts."""
UTF8_CHARSETS = frozenset({"utf-8", "utf8", "us-ascii"})
"""Declared charsets of a body read as UTF-8 (ASCII is UTF-8)."""


@dataclass(frozen=True)
class HeaderRefusal:
    status: int
    code: str
    message: str


def declared_charsets(content_type: str) -> list[str]:
    """The ``charset`` parameters of a Content-Type value, lower-cased and unquoted."""
    found = []
    for parameter in content_type.split(";")[1:]:
        name, _, value = parameter.partition("=")
        if name.strip().lower() == "charset":
            found.append(value.strip().strip('"').strip().lower())
    return found


def header_refusal(scope: Scope, max_bytes: int) -> HeaderRefusal | None:
    """Why a request's headers are refused before anything reads them, or None; checked by the
    app itself, whatever server runs it (``personas serve`` bounds header size and time below
    the app already: ``api.serving``).

    - the request line and headers over ``max_bytes`` (PERSONAS_API_MAX_HEADER_BYTES): 431;
    - `Authorization`, `X-API-Key` or `Content-Type` sent more than once: 400. Readers of
      headers disagree on which one counts (FastAPI took the first credential, the MCP gate
      and the limits here the last: two keys authenticated as one and were rate-limited or
      checked as the other, and a proxy may look at either): such a request means two
      things, and is refused, as a repeated JSON key is;
    - a body declared in a charset other than UTF-8 (`charset=latin-1`, `utf-16`, an unknown
      one): 415. JSON is UTF-8 (RFC 8259) and every route reads it so; a Latin-1 body that
      happened to be valid UTF-8 would have been misread in silence.

    A media type in capitals (`APPLICATION/JSON`: media types are case-insensitive, RFC 9110)
    is written in lower case in the scope, for readers that compare it as written
    (strawberry)."""
    headers = scope["headers"]
    size = len(scope.get("raw_path") or scope["path"]) + len(scope.get("query_string", b""))
    # One pass, names as ASGI gives them (lower case): this runs before every request.
    seen: list[bytes] = []
    at = -1
    for index, (name, value) in enumerate(headers):
        size += len(name) + len(value) + 4
        if name in SINGLE_HEADERS:
            seen.append(name)
            at = index if name == b"content-type" else at
    if size > max_bytes:
        return HeaderRefusal(431, "LIMIT_EXCEEDED", f"the request line and headers pass "
                             f"{max_bytes} bytes (PERSONAS_API_MAX_HEADER_BYTES)")
    if len(seen) > len(set(seen)):
        repeated = [name.decode() for name in SINGLE_HEADERS if seen.count(name) > 1]
        shown = " or ".join(f"`{name}`" for name in repeated)
        return HeaderRefusal(400, "BAD_USER_INPUT", f"send one {shown} header, not several")
    if at < 0:
        return None
    content_type = headers[at][1].decode("latin-1")
    if "=" in content_type:
        for charset in declared_charsets(content_type):
            if charset not in UTF8_CHARSETS:
                return HeaderRefusal(415, "UNSUPPORTED_MEDIA_TYPE", f"the body is declared as "
                                     f"charset {charset[:40]!r}: send it as UTF-8 (JSON is "
                                     "UTF-8, RFC 8259)")
    media, semicolon, parameters = content_type.partition(";")
    if media != media.lower():
        scope["headers"] = [*headers[:at], (b"content-type",
                            (media.lower() + semicolon + parameters).encode("latin-1")),
                            *headers[at + 1:]]
    return None


async def refuse_headers(scope: Scope, send: Send, refusal: HeaderRefusal) -> None:
    if scope["type"] == "websocket":
        await send({"type": "websocket.close", "code": 1008, "reason": refusal.message})
        return
    body = orjson.dumps({"error": {"code": refusal.code, "message": refusal.message}})
    await send({"type": "http.response.start", "status": refusal.status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


class AddressLimit:
    """ASGI middleware: a request (or WebSocket handshake) that presents no key this process
    knows to be live (none, a wrong or made-up one, one not resolved yet) takes a token from
    its client address's bucket before anything else runs, the key look-up in Neo4j and the
    body read included: over the rate, 429 RATE_LIMITED with Retry-After (a handshake is
    refused, HTTP 403). Requests with a live key are limited per key (``api.auth.KeyLimits``),
    so many clients behind one address are not starved by one of them without a key.

    Before that, every request's headers pass ``header_refusal`` (size, repeated credentials
    and Content-Type, a charset other than UTF-8), whatever server runs the app.

    The address is the one uvicorn gives: the peer, or the X-Forwarded-For of a proxy it
    trusts (FORWARDED_ALLOW_IPS); docs/security.md."""

    def __init__(self, app: ASGIApp, buckets: TokenBuckets, *, max_header_bytes: int) -> None:
        self.app = app
        self.buckets = buckets
        self.max_header_bytes = max_header_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            refusal = header_refusal(scope, self.max_header_bytes)
            if refusal is not None:
                await refuse_headers(scope, send, refusal)
                return
        if scope["type"] not in ("http", "websocket") or self.buckets.rate <= 0:
            await self.app(scope, receive, send)
            return
        principals: PrincipalCache | None = getattr(scope["app"].state, "principals", None)
        headers = dict(scope["headers"])
        key = credentials(headers.get(b"authorization", b"").decode("latin-1"),
                          headers.get(b"x-api-key", b"").decode("latin-1"))
        if key is not None and principals is not None and principals.known(key):
            await self.app(scope, receive, send)
            return
        client = scope.get("client")
        wait = self.buckets.take(client[0] if client else "")
        if wait is None:
            await self.app(scope, receive, send)
        elif scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008,
                        "reason": "too many requests without a valid API key"})
        else:
            response_headers, body = rate_refusal(wait)
            await send({"type": "http.response.start", "status": 429,
                        "headers": response_headers})
            await send({"type": "http.response.body", "body": body})
