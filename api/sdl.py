"""The GraphQL schema as SDL text, and the copy kept in the repository (`api/schema.graphql`).

The copy lets reviewers and client developers read the API without running it; `personas schema`
rewrites it from the code and `personas schema --check` (and a unit test) fail when it drifts.
"""

from __future__ import annotations

from pathlib import Path

from strawberry.printer import print_schema

from api.schema import build_schema

SDL_PATH = Path(__file__).resolve().with_name("schema.graphql")
"""Where the repository keeps the SDL: `api/schema.graphql`."""

REGENERATE = "personas schema"
"""The command that rewrites the SDL file from the code."""


def render_sdl() -> str:
    """The schema's SDL as the code defines it, ending with a newline."""
    return print_schema(build_schema()) + "\n"
