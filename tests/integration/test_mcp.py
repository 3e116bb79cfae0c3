"""The MCP server as agent frameworks reach it, driven by the official SDK's own client: over
streamable HTTP against `personas serve` on a free port, and over stdio spawning
`personas mcp`. Keys, roles, consent and argument errors behave as in GraphQL."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import httpx2
import pytest
from mcp import Client, MCPError, StdioServerParameters
from mcp.client.streamable_http import streamable_http_client
from mcp.types import CallToolResult, TextContent
from neo4j import Driver

from graph.profile.chat import NO_CONSENT
from graph.settings import Settings
from graph.subjects.consent import set_consent
from tests.helpers import PERSONAS
from tests.integration.served import World, served_demo

pytestmark = pytest.mark.integration

USERS = 40
EMAIL = "user42-000000@example.com"  # the demo's first user (seed 42, index 0)
TOOLS = {"find_user", "persona", "chat_context", "recommend", "record_event", "set_preference"}


@pytest.fixture(scope="module")
def world(driver: Driver, settings: Settings,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    with served_demo(driver, settings, tmp_path_factory.mktemp("mcp"), users=USERS) as served:
        set_consent(served.graph, withdrawn(served), "personalization", False, source="test")
        yield served


def withdrawn(world: World) -> str:
    """The user who withdrew personalization consent."""
    return world.run.user_ids[-1]


@asynccontextmanager
async def over_http(world: World, key: str | None) -> AsyncIterator[Client]:
    headers = {"Authorization": f"Bearer {key}"} if key is not None else None
    async with httpx2.AsyncClient(headers=headers, timeout=60) as http, \
            Client(streamable_http_client(f"{world.base}/mcp", http_client=http)) as client:
        yield client


@asynccontextmanager
async def over_stdio(world: World, key: str) -> AsyncIterator[Client]:
    params = StdioServerParameters(command=PERSONAS, args=["mcp"],
                                   env={**world.env, "PERSONAS_MCP_KEY": key})
    async with Client(params) as client:
        yield client


def payload(result: CallToolResult) -> dict[str, Any]:
    assert not result.is_error, result.content
    if result.structured_content is not None:
        return dict(result.structured_content)
    [content] = result.content
    assert isinstance(content, TextContent)
    return dict(json.loads(content.text))


def error_text(result: CallToolResult) -> str:
    assert result.is_error, result
    return " ".join(c.text for c in result.content if isinstance(c, TextContent))


async def chatbot_round(client: Client, withdrawn_id: str) -> None:
    """What a chatbot does through the tools, checked tool by tool."""
    tools = {t.name: t for t in (await client.list_tools()).tools}
    assert set(tools) == TOOLS
    for tool in tools.values():
        assert tool.description and len(tool.description) > 80, tool.name
        assert tool.input_schema["type"] == "object", tool.name
    assert set(tools["find_user"].input_schema["properties"]["kind"]["enum"]) >= {"email",
                                                                                    "phone"}
    found = payload(await client.call_tool("find_user", {"kind": "email", "value": EMAIL}))
    user_id = found["user_id"]
    assert user_id.startswith("u_") and found["personalized"] is True and found["persona"]
    persona = payload(await client.call_tool("persona", {"user_id": user_id}))["persona"]
    assert persona["name"] == found["persona"] and persona["why"]
    assert 0 <= persona["confidence"] <= 1
    context = payload(await client.call_tool("chat_context",
                                             {"user_id": user_id, "max_tokens": 80}))
    assert context["personalized"] and f"Persona: {persona['name']}" in context["text"]
    assert context["tokens"] <= 80
    assert "\n".join(line["text"] for line in context["lines"]) == context["text"]
    assert context["lines"][0]["sources"][0]["kind"] == "segmentation_run"
    recs = payload(await client.call_tool("recommend", {"user_id": user_id, "first": 3}))
    assert 1 <= len(recs["items"]) <= 3 and all(i["reasons"] for i in recs["items"])
    supposed = payload(await client.call_tool("recommend", {
        "user_id": user_id, "first": 30, "what_if": {"weather": "rain"}}))["items"]
    rainy = [i for i in supposed if i["category"] in {"home & garden", "books", "electronics"}]
    assert rainy and all(any(r.startswith("if it were rain in ") for r in i["reasons"])
                         for i in rainy)
    # A user who withdrew personalization consent: no profile for a chatbot.
    hidden = payload(await client.call_tool("persona", {"user_id": withdrawn_id}))
    assert hidden == {"user_id": withdrawn_id, "personalized": False, "persona": None,
                      "pending": False}
    bare = payload(await client.call_tool("chat_context", {"user_id": withdrawn_id}))
    assert bare["text"] == NO_CONSENT and bare["personalized"] is False


def test_tools_over_http_for_a_reader(world: World) -> None:
    async def run() -> None:
        async with over_http(world, world.keys["reader"]) as client:
            await chatbot_round(client, withdrawn(world))
            # A reader may not write: refused with the code, nothing stored.
            event = {"event_id": "mcp-refused", "type": "page_view", "source": "web",
                     "occurred_at": "2026-11-01T10:00:00Z", "user": {"cookie": "ck-mcp"},
                     "properties": {"category": "Books"}}
            refused = await client.call_tool("record_event", {"event": event})
            assert "FORBIDDEN" in error_text(refused)
            denied = await client.call_tool("set_preference", {"user_id": withdrawn(world),
                                                               "category": "books",
                                                               "weight": 1})
            assert "FORBIDDEN" in error_text(denied)

    asyncio.run(run())
    assert not world.graph.rows("MATCH (i:Interaction {event_id: 'mcp-refused'}) RETURN i")


def test_writes_over_http_are_read_back(world: World) -> None:
    event = {"event_id": "mcp-written-1", "type": "search", "source": "chat",
             "occurred_at": "2026-11-01T10:00:00Z", "user": {"email": EMAIL},
             "properties": {"query": "rain jacket"}}

    async def run() -> tuple[dict[str, Any], ...]:
        async with over_http(world, world.keys["writer"]) as writer:
            first = payload(await writer.call_tool("record_event", {"event": event}))
            again = payload(await writer.call_tool("record_event", {"event": event}))
            bad = payload(await writer.call_tool("record_event",
                                                 {"event": {"event_id": "x", "type": "nope"}}))
            async with over_http(world, world.keys["reader"]) as reader:
                user_id = payload(await reader.call_tool(
                    "find_user", {"kind": "email", "value": EMAIL}))["user_id"]
            stated = payload(await writer.call_tool(
                "set_preference", {"user_id": user_id, "category": "Garden Tools",
                                   "weight": -0.5, "at": "2026-11-02T09:00:00+01:00"}))
            return first, again, bad, stated

    first, again, bad, stated = asyncio.run(run())
    assert first.pop("consistency_token").startswith("v1.")
    assert first == {"event_id": "mcp-written-1", "status": "accepted", "reason": None}
    assert again["status"] == "duplicate"
    assert bad["status"] == "rejected" and bad["reason"]
    assert stated["category"] == "garden tools" and stated["weight"] == -0.5
    assert stated["source"] == "explicit"
    assert world.graph.rows("MATCH (i:Interaction {event_id: 'mcp-written-1'}) "
                            "RETURN i.query AS q")  # stored, through the event writer


def test_bad_arguments_are_clear_errors(world: World) -> None:
    async def run() -> list[str]:
        async with over_http(world, world.keys["analyst"]) as client:
            calls = [("find_user", {"kind": "passport", "value": "x"}),
                     ("find_user", {"kind": "email"}),
                     ("find_user", {"kind": "email", "value": "nobody@example.com"}),
                     ("persona", {"user_id": "u_nobody"}),
                     ("chat_context", {"user_id": "u_nobody", "max_tokens": 5}),
                     ("chat_context", {"user_id": "u_x", "as_of": "2026-10-01T00:00:00"}),
                     ("recommend", {"user_id": "u_x", "first": 1000}),
                     ("recommend", {"user_id": "u_x", "first": "many"}),
                     ("recommend", {"user_id": "u_x", "what_if": {"weather": "hail"}}),
                     ("no_such_tool", {}),
                     ("find_user", {"kind": ["email"] * 5_000, "value": {"x": "y" * 5_000}}),
                     ("t" * 5_000, {})]
            texts = [error_text(await client.call_tool(name, args)) for name, args in calls]
            # The server is still answering after all of them.
            assert payload(await client.call_tool("find_user", {"kind": "email",
                                                                 "value": EMAIL}))
            return texts

    texts = asyncio.run(run())
    # The API's shape (code, then each argument and why), not pydantic's text, which repeated
    # the caller's values whole and linked to pydantic's site.
    assert texts[0].startswith("BAD_USER_INPUT: `kind`: Input should be 'crm_id'"), texts[0]
    assert texts[1] == "BAD_USER_INPUT: `value`: Field required"
    assert all("pydantic" not in text and "input_value" not in text for text in texts)
    # Every error starts with its code, the tools' own refusals too (the SDK put "Error
    # executing tool <name>: " before theirs).
    assert all(re.match(r"[A-Z_]+: ", text) for text in texts), texts
    assert "NOT_FOUND" in texts[2] and "nobody@example.com" not in texts[2]
    assert "NOT_FOUND" in texts[3]
    assert "max_tokens" in texts[4]
    assert "BAD_USER_INPUT" in texts[5] and "time zone" in texts[5]
    assert "first" in texts[6]
    assert texts[7].startswith("BAD_USER_INPUT: `first`: Input should be a valid integer")
    assert texts[8].startswith("BAD_USER_INPUT: `what_if.weather`: Input should be 'clear'")
    assert texts[9].startswith("NOT_FOUND: no tool named 'no_such_tool'; the tools are ")
    assert texts[10].startswith("BAD_USER_INPUT: `kind`: ") and len(texts[10]) < 300
    assert texts[11].startswith("NOT_FOUND: no tool named 'ttt") and len(texts[11]) < 300


def test_http_without_a_live_key_is_refused(world: World) -> None:
    for key in (None, "pg_00000000_not-a-real-key-at-all"):
        response = httpx2.post(f"{world.base}/mcp", json={"jsonrpc": "2.0", "id": 1,
                                                         "method": "tools/list"},
                               headers={"Authorization": f"Bearer {key}"} if key else {})
        assert response.status_code == 401, response.text
        assert response.json()["error"]["code"] == "UNAUTHENTICATED"

    async def connect() -> None:
        async with over_http(world, "pg_00000000_not-a-real-key-at-all") as client:
            await client.list_tools()

    # The SDK's client gives up at the first request, before any tool runs.
    with pytest.raises(ExceptionGroup) as refused:
        asyncio.run(connect())
    assert refused.group_contains(MCPError)


def test_tools_over_stdio(world: World) -> None:
    async def run() -> None:
        async with over_stdio(world, world.keys["reader"]) as client:
            await chatbot_round(client, withdrawn(world))
            refused = await client.call_tool("record_event", {"event": {}})
            assert "FORBIDDEN" in error_text(refused)

    asyncio.run(run())


def test_stdio_with_a_bad_key_exits_with_the_reason(world: World) -> None:
    done = subprocess.run([PERSONAS, "mcp"], env={**world.env,
                                                  "PERSONAS_MCP_KEY": "pg_00000000_wrong-key"},
                          input=b"", capture_output=True, timeout=120)
    assert done.returncode == 2
    assert b"UNAUTHENTICATED" in done.stderr and done.stdout == b""


MAX_LINE = Settings.model_fields["api_max_body_bytes"].default
"""Over stdio, a line is bounded by the body limit, as a request to `/mcp` is."""
INITIALIZE = {"jsonrpc": "2.0", "id": 0, "method": "initialize",
              "params": {"protocolVersion": "2025-06-18", "capabilities": {},
                         "clientInfo": {"name": "raw", "version": "1"}}}
FIND = ('"method": "tools/call", "params": {"name": "find_user", "arguments": '
        '{"kind": "email", "value": "a@b.c"}}')
REFUSED_MESSAGES = {
    # Each meant one thing to a proxy or an audit log and another to the `mcp` library
    # (pydantic keeps the last of a repeated key), or was read as a number.
    "an id repeated": '{"jsonrpc": "2.0", "id": 1, "id": 2, ' + FIND + "}",
    "a tool named twice": ('{"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": '
                           '{"name": "find_user", "name": "persona", "arguments": '
                           '{"kind": "email", "value": "a@b.c"}}}'),
    "an argument repeated": ('{"jsonrpc": "2.0", "id": 4, "method": "tools/call", "params": '
                             '{"name": "recommend", "arguments": {"user_id": "u_x", '
                             '"first": 1, "first": 100}}}'),
    "NaN": ('{"jsonrpc": "2.0", "id": 5, "method": "tools/call", "params": {"name": '
            '"recommend", "arguments": {"user_id": "u_x", "first": NaN}}}'),
    "1e400": ('{"jsonrpc": "2.0", "id": 6, "method": "tools/call", "params": {"name": '
              '"recommend", "arguments": {"user_id": "u_x", "first": 1e400}}}'),
    "not JSON": "{not json",
    "a 100 kB id": '{"jsonrpc": "2.0", "id": "%s", "method": "ping"}' % ("i" * 100_000),
    "a batch": '[{"jsonrpc": "2.0", "id": 10, "method": "ping"}]',
}
INVALID = {"a 100 kB id", "a batch"}
"""Refused as invalid requests (-32600); the others are parse errors (-32700)."""


@pytest.mark.parametrize("what", sorted(REFUSED_MESSAGES))
def test_messages_other_parsers_would_read_otherwise_are_refused_over_http(
        world: World, what: str) -> None:
    """Over `/mcp`: 400 and a JSON-RPC parse error naming the reason; no tool runs."""
    response = httpx2.post(f"{world.base}/mcp", content=REFUSED_MESSAGES[what].encode(),
                           headers={"Authorization": f"Bearer {world.keys['reader']}",
                                    "Content-Type": "application/json",
                                    "Accept": "application/json, text/event-stream"},
                           timeout=60)
    assert response.status_code == 400, (what, response.text[:300])
    answer = response.json()
    assert answer["id"] is None, answer
    assert answer["error"]["code"] == (-32600 if what in INVALID else -32700), answer
    assert "result" not in answer and len(response.content) < 1000


def test_messages_other_parsers_would_read_otherwise_are_refused_over_stdio(
        world: World) -> None:
    """Over `personas mcp`: each refused line answered with an error (the library answered
    nothing to a line it could not read, a batch included, and read the others its own way), a line
    that is not UTF-8 and one over the size limit too; the session goes on."""
    lines = [json.dumps(INITIALIZE).encode(),
             b'{"jsonrpc": "2.0", "method": "notifications/initialized"}',
             *(REFUSED_MESSAGES[what].encode() for what in sorted(REFUSED_MESSAGES)),
             b'{"jsonrpc": "2.0", "id": 7, "method": "ping", "x": "\xff\xfe"}',
             b'{"jsonrpc": "2.0", "id": 8, "method": "ping", "pad": "' + b"x" * MAX_LINE + b'"}',
             b'{"jsonrpc": "2.0", "id": 9, "method": "ping"}']
    done = subprocess.run([PERSONAS, "mcp"],
                          env={**world.env, "PERSONAS_MCP_KEY": world.keys["reader"]},
                          input=b"\n".join(lines) + b"\n", capture_output=True, timeout=120)
    answers = [json.loads(line) for line in done.stdout.splitlines()]
    assert answers[0]["id"] == 0 and "result" in answers[0]
    refusals = answers[1:-1]
    assert len(refusals) == len(REFUSED_MESSAGES) + 2, answers[1:]
    assert all(a["id"] is None and a["error"]["code"] in (-32600, -32700)
               for a in refusals), refusals
    assert answers[-1] == {"jsonrpc": "2.0", "id": 9, "result": {}}


def test_no_stream_is_held_open_by_a_get(world: World) -> None:
    """The endpoint is stateless and sends nothing unasked: a GET with a key opened an event
    stream that carried nothing and stayed open (a key could hold any number, outside the cap
    on its streams). GET and DELETE are 405 naming POST, at once."""
    for method in ("GET", "DELETE"):
        response = httpx2.request(method, f"{world.base}/mcp", timeout=10,
                                  headers={"Authorization": f"Bearer {world.keys['reader']}",
                                           "Accept": "text/event-stream"})
        assert response.status_code == 405, (method, response.text[:200])
        assert response.headers["allow"] == "POST"
