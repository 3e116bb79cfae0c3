"""What every GraphQL request pays before its resolvers run: the dependencies FastAPI solves
for the route, and the encoding of the answer (docs/performance.md, API CPU per request)."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute
from pydantic import SecretStr
from starlette.responses import Response

from api.app import Router, create_app
from api.schema import build_schema
from graph.settings import Settings


def graphql_routes(app: FastAPI) -> list[APIRoute]:
    """The GraphQL router's HTTP routes (GET and POST), however FastAPI nests included
    routers."""
    found = []
    for route in app.routes:
        router = getattr(route, "original_router", None)
        if isinstance(router, Router):
            found += [r for r in router.routes if isinstance(r, APIRoute)]
    return found


def calls(dependant: Dependant) -> list[str]:
    names = []
    for sub in dependant.dependencies:
        names.append(getattr(sub.call, "__name__", repr(sub.call)))
        names += calls(sub)
    return names


def test_a_graphql_request_solves_only_the_callers_dependencies() -> None:
    """The app's shared services come from its state inside ``get_context``; as dependencies
    of their own, FastAPI solved four more per request (driver, settings, segmentation,
    writer), a visible share of the CPU of a chatbot request."""
    settings = Settings(pseudonym_key=SecretStr("k" * 40), neo4j_password=SecretStr("x" * 12))
    routes = graphql_routes(create_app(settings))
    assert {m for r in routes for m in r.methods or ()} == {"GET", "POST"}
    for route in routes:
        solved = calls(route.dependant)
        assert "get_context" in solved and "get_principal" in solved
        assert not {"get_driver", "get_settings", "get_segmentation", "get_writer"} \
            & set(solved), solved


def test_answers_are_utf8_json_and_what_orjson_refuses_still_encodes() -> None:
    router = Router(build_schema(Settings()))
    answer: dict[str, Any] = {"data": {"user": {"city": "Zürich"}}}
    response = router.create_response(answer, Response())
    assert response.body == '{"data":{"user":{"city":"Zürich"}}}'.encode()
    assert response.media_type == "application/json" and response.status_code == 200
    # A JSON scalar (exportUser) may hold what orjson does not encode: the standard library does.
    large = {"data": {"exportUser": {"n": 2**70, 3: "three"}}}
    response = router.create_response(large, Response())
    assert response.body == b'{"data":{"exportUser":{"n":1180591620717411303424,"3":"three"}}}'
