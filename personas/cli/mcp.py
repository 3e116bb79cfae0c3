"""`personas mcp`: the MCP server over stdio, for an agent framework that starts it as a
subprocess (the same tools are served over HTTP at /mcp by `personas serve`)."""

from __future__ import annotations

import asyncio
from typing import Annotated

import typer

from personas.cli.common import fails_cleanly, settings


@fails_cleanly
def mcp_cmd(
    key: Annotated[str, typer.Option(
        envvar="PERSONAS_MCP_KEY", show_default=False,
        help="The API key the tools act as (its role decides what they may do).")],
) -> None:
    """Serve the MCP tools (find_user, persona, chat_context, recommend, record_event,
    set_preference) over stdin/stdout. Logs go to stderr: stdout is the protocol's."""
    # Imported here: the other commands start without loading the web layer.
    from api.mcp_server import serve_stdio

    cfg = settings()
    cfg.require_pseudonym_key()
    cfg.require_neo4j_password()
    asyncio.run(serve_stdio(cfg, key))
