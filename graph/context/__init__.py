"""External context: weather observations and local events, linked to locations.

``models`` says what an observation is, ``store`` writes batches (the one write path of the
demo, files, providers and the webhook), ``providers`` fetch them (an offline file, Open-Meteo)
and ``poller`` fetches every known location on a schedule, with per-location backoff.
"""

from __future__ import annotations

from graph.context.models import (
    CONDITIONS,
    ContextBatch,
    LocalEvent,
    WeatherObservation,
    parse_context,
)
from graph.context.store import (
    ContextCounts,
    upsert_local_events,
    upsert_weather,
    write_context,
)

__all__ = ["CONDITIONS", "ContextBatch", "ContextCounts", "LocalEvent", "WeatherObservation",
           "parse_context", "upsert_local_events", "upsert_weather", "write_context"]
