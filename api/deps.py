"""The app's injected dependencies: settings, the drivers' owners and the shared services, read
from the running app's state (set up by its lifespan in ``api.app``)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends
from neo4j import AsyncDriver
from starlette.requests import HTTPConnection

from api.segmentation import SegmentationRunner
from graph.ingest.writer import EventWriter
from graph.settings import Settings


# Dependencies take the connection, not the request, so GraphQL subscriptions (WebSocket) get
# the same context as queries. They are coroutines although they only read the app's state:
# FastAPI runs a plain function dependency in its threadpool, a thread handoff per dependency
# per request.
async def get_settings(request: HTTPConnection) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


async def get_driver(request: HTTPConnection) -> AsyncDriver:
    driver: AsyncDriver = request.app.state.driver
    return driver


DriverDep = Annotated[AsyncDriver, Depends(get_driver)]
SettingsDep = Annotated[Settings, Depends(get_settings)]


async def get_segmentation(request: HTTPConnection) -> SegmentationRunner:
    runner: SegmentationRunner = request.app.state.segmentation
    return runner


SegmentationDep = Annotated[SegmentationRunner, Depends(get_segmentation)]


async def get_writer(request: HTTPConnection) -> EventWriter:
    """The app's event writer: synchronous code on the app's one driver (``LoopGraph``), to call
    from a worker thread (a threadpool route, ``asyncio.to_thread``)."""
    writer: EventWriter = request.app.state.writer
    return writer


WriterDep = Annotated[EventWriter, Depends(get_writer)]
