"""The one way a process builds its event writer: pseudonymizer from the settings' key, newcomer
assignment to segments, and the process's ingest metrics."""

from __future__ import annotations

from graph.db import Graph
from graph.ingest.metrics import IngestMetrics
from graph.ingest.writer import EventWriter
from graph.segments.assign import SegmentAssigner
from graph.settings import Settings


def build_writer(graph: Graph, settings: Settings,
                 metrics: IngestMetrics | None = None) -> EventWriter:
    return EventWriter(graph, settings.pseudonymizer(),
                       SegmentAssigner(graph, settings.resolved_runs_dir), metrics)
