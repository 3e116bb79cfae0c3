"""OpenTelemetry traces of API requests, off unless ``PERSONAS_OTEL_TRACES`` is set.

Setting it installs a tracer provider for the process. FastAPI then traces each request itself
(a server span named by the route template, continuing the caller's W3C ``traceparent``, with
its dependencies and endpoint beneath), the GraphQL operation is named on it
(``api.metrics.CypherRoundTrips``), and every Neo4j transaction the request runs is a client
span below (``graph.db.traced``, with the Cypher text; values travel as parameters and are never
recorded). Off, no provider is installed, FastAPI's and the operation's spans are
OpenTelemetry's no-ops and ``graph.db`` opens none.
"""

from __future__ import annotations

import logging

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SimpleSpanProcessor,
)

from graph.db import trace_transactions
from graph.settings import Settings

log = logging.getLogger(__name__)


def span_processor(settings: Settings) -> SpanProcessor | None:
    """Where spans go for ``settings.otel_traces`` (None: off)."""
    if settings.otel_traces == "console":
        return SimpleSpanProcessor(ConsoleSpanExporter())
    if settings.otel_traces == "otlp":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        return BatchSpanProcessor(OTLPSpanExporter())
    return None


def install_tracing(settings: Settings) -> TracerProvider | None:
    """Install the process's tracer provider when the settings ask for traces; returns it.
    OpenTelemetry keeps the first provider a process sets (a second app in the same process
    traces into the first one's); the SDK flushes it at exit."""
    processor = span_processor(settings)
    if processor is None:
        return None
    provider = TracerProvider(resource=Resource.create({"service.name":
                                                        settings.otel_service_name}))
    provider.add_span_processor(processor)
    trace.set_tracer_provider(provider)
    trace_transactions()
    log.info("OpenTelemetry traces on (%s)", settings.otel_traces)
    return provider
