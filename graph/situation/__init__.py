"""A user's situation: the weather observations and local events at their location (what the
schema and the CLI call external "context"), linked to locations.

``models`` says what an observation is, ``store`` writes batches (the one write path of the
demo, files, providers and the webhook), ``providers`` fetch them (an offline file, Open-Meteo)
and ``poller`` fetches every known location on a schedule, with per-location backoff.
"""

from __future__ import annotations

from graph.situation.models import (
    CONDITIONS,
    LocalEvent,
    SituationBatch,
    WeatherObservation,
    parse_situation,
)
from graph.situation.store import (
    SituationCounts,
    upsert_local_events,
    upsert_weather,
    write_situation,
)

__all__ = ["CONDITIONS", "SituationBatch", "SituationCounts", "LocalEvent", "WeatherObservation",
           "parse_situation", "upsert_local_events", "upsert_weather", "write_situation"]
