"""Routes of the pages: GraphiQL's locally served assets, and the persona explorer.

The explorer's HTML and script hold no data and load without a key; everything they show comes
from GraphQL and the run pictures with the analyst key the person pastes in (kept for the
browser tab only), and ``/v1/explorer/session`` admits only analyst and admin keys, so the
page opens for them alone."""

from __future__ import annotations

from importlib import resources
from typing import Annotated

from fastapi import APIRouter, Depends
from fastapi.responses import FileResponse, HTMLResponse, Response

from api.auth import requires
from api.deps import SettingsDep
from api.pages.assets import MISSING_PAGE, assets_dir, graphiql_html, missing, served_files
from graph.auth import ANALYSTS, Principal
from graph.errors import NotFound

router = APIRouter()
EXPLORER_FILES = {"explorer.js": "text/javascript", "explorer.css": "text/css"}
IMMUTABLE = {"Cache-Control": "public, max-age=31536000, immutable"}
"""The packages' paths carry their version: a file under one never changes."""
PAGE_HEADERS = {"Content-Security-Policy": "default-src 'self'; img-src 'self' blob: data:; "
                "style-src 'self' 'unsafe-inline'; script-src 'self' 'unsafe-inline'",
                "X-Content-Type-Options": "nosniff"}


def _page_file(name: str) -> str:
    return resources.files("api.pages").joinpath(name).read_text(encoding="utf-8")


def render_graphiql(settings: SettingsDep) -> HTMLResponse:
    """GraphiQL on this API's own copy of its scripts; a page saying how to provision them
    when they are not there (instead of a page that never loads)."""
    absent = missing(assets_dir(settings))
    if absent:
        return HTMLResponse(MISSING_PAGE.format(missing=", ".join(absent)), 503)
    return HTMLResponse(graphiql_html())


@router.get("/static/npm/{path:path}", include_in_schema=False)
async def npm_file(path: str, settings: SettingsDep) -> FileResponse:
    """One file of a pinned npm package GraphiQL loads (only those files)."""
    found = served_files(assets_dir(settings)).get(path)
    if found is None or not found.is_file():
        raise NotFound(f"no asset {path!r}")
    return FileResponse(found, headers=IMMUTABLE)


@router.get("/explorer", include_in_schema=False)
async def explorer() -> HTMLResponse:
    """The persona explorer (analyst keys): runs, persona cards, hierarchy, pictures, drift,
    a user's persona history."""
    return HTMLResponse(_page_file("explorer.html"), headers=PAGE_HEADERS)


@router.get("/explorer/{name}", include_in_schema=False)
async def explorer_file(name: str) -> Response:
    media_type = EXPLORER_FILES.get(name)
    if media_type is None:
        raise NotFound(f"no explorer file {name!r}")
    return Response(_page_file(name), media_type=media_type)


@router.get("/v1/explorer/session")
async def explorer_session(
    principal: Annotated[Principal, Depends(requires(ANALYSTS))],
) -> dict[str, str]:
    """Who the explorer's key is: only analyst and admin keys get an answer (401/403 else)."""
    return {"key_id": principal.id, "role": principal.role.value}
