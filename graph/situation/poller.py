"""Scheduled polling: every known location's weather and local events, fetched from the provider
every interval and written; a location whose fetch fails is retried with exponential backoff,
and never holds up the others.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta

from pydantic import ValidationError

from graph.backoff import Backoff
from graph.db import Graph
from graph.errors import PersonaError
from graph.events import Location, describe_validation_error
from graph.settings import Settings
from graph.situation import queries as q
from graph.situation.models import SituationBatch
from graph.situation.providers import SituationProvider
from graph.situation.store import write_situation

log = logging.getLogger(__name__)
MIN_SLEEP_SECONDS = 1.0


@dataclass
class LocationState:
    next_due: float = 0.0
    """Clock time at which the location is fetched next."""
    failures: int = 0
    """Failures in a row (0 after a success)."""
    last_error: str | None = None


@dataclass(frozen=True)
class LocationResult:
    location_id: str
    ok: bool
    weather: int = 0
    local_events: int = 0
    error: str | None = None
    retry_in: float | None = None
    """After a failure: seconds until the next attempt."""


@dataclass(frozen=True)
class PollReport:
    results: list[LocationResult] = field(default_factory=list)
    not_due: int = 0
    """Known locations skipped because their next fetch (interval or backoff) is later."""

    @property
    def failed(self) -> list[LocationResult]:
        return [r for r in self.results if not r.ok]


class SituationPoller:
    """Polls every known location (read from the graph at each round) with ``provider``.

    ``clock`` gives monotonic seconds; tests pass a fake one and call ``poll_due`` directly,
    or ``run`` with a fake ``sleep``.
    """

    def __init__(self, graph: Graph, provider: SituationProvider, *, interval_seconds: float,
                 backoff: Backoff, valid_hours: float, horizon: timedelta,
                 clock: Callable[[], float] = time.monotonic,
                 rng: random.Random | None = None) -> None:
        self.graph = graph
        self.provider = provider
        self.interval_seconds = interval_seconds
        self.backoff = backoff
        self.valid_hours = valid_hours
        self.horizon = horizon
        self.clock = clock
        self.rng = rng or random.Random()
        self.states: dict[str, LocationState] = {}

    def known_locations(self) -> list[Location]:
        """Every Location in the graph; one whose stored values do not validate is skipped with
        a log line."""
        locations = []
        for row in self.graph.rows(q.KNOWN_LOCATIONS):
            values = {k: v for k, v in row["location"].items() if v is not None}
            try:
                locations.append(Location.model_validate(values))
            except ValidationError as exc:
                log.warning("context poll: location %r skipped: %s", values.get("id"),
                            describe_validation_error(exc.errors()))
        return locations

    def poll_due(self) -> PollReport:
        """Fetch and write every known location that is due (all of them the first time)."""
        locations = self.known_locations()
        now = self.clock()
        due = [loc for loc in locations
               if self.states.setdefault(loc.id, LocationState()).next_due <= now]
        results = []
        for n, location in enumerate(due, 1):
            result = self.poll_location(location)
            results.append(result)
            if result.ok:
                log.info("context poll %d/%d: %s: %d weather, %d local events", n, len(due),
                         location.id, result.weather, result.local_events)
            else:
                log.warning("context poll %d/%d: %s failed (%s); failure %d in a row, retry in "
                            "%.0f s", n, len(due), location.id, result.error,
                            self.states[location.id].failures, result.retry_in or 0)
        return PollReport(results, len(locations) - len(due))

    def poll_location(self, location: Location) -> LocationResult:
        """One location: fetch, write in one transaction, and schedule the next fetch (the
        interval after a success, the backoff delay after a failure)."""
        state = self.states.setdefault(location.id, LocationState())
        try:
            weather = self.provider.fetch_weather(location)
            events = self.provider.fetch_local_events(location, self.horizon)
            counts = write_situation(self.graph, SituationBatch(weather=tuple(weather),
                                                                local_events=tuple(events)),
                                     valid_hours=self.valid_hours)
        except Exception as exc:  # noqa: BLE001 - one location's failure must not stop the rest
            if not isinstance(exc, PersonaError):
                log.exception("context poll: unexpected error at location %s", location.id)
            state.failures += 1
            state.last_error = f"{type(exc).__name__}: {exc}"
            retry_in = self.backoff.delay(state.failures, self.rng)
            state.next_due = self.clock() + retry_in
            return LocationResult(location.id, False, error=state.last_error, retry_in=retry_in)
        state.failures, state.last_error = 0, None
        state.next_due = self.clock() + self.interval_seconds
        return LocationResult(location.id, True, counts.weather, counts.local_events)

    def seconds_until_due(self) -> float:
        """How long to sleep until the next location is due (at most one interval, so that
        new locations are picked up)."""
        now = self.clock()
        waits = [s.next_due - now for s in self.states.values()]
        return max(MIN_SLEEP_SECONDS, min([self.interval_seconds, *waits]))

    def run(self, stop: threading.Event, sleep: Callable[[float], bool] | None = None) -> None:
        """Poll until ``stop`` is set. ``sleep(seconds)`` waits and returns True to stop (by
        default ``stop.wait``, so a signal handler setting ``stop`` ends the loop at once)."""
        wait = sleep or stop.wait
        while not stop.is_set():
            self.poll_due()
            if wait(self.seconds_until_due()):
                break


def build_poller(graph: Graph, provider: SituationProvider, settings: Settings) -> SituationPoller:
    """A poller configured from the settings (interval, backoff, validity, horizon)."""
    backoff = Backoff(settings.context_backoff_base_seconds, settings.context_backoff_factor,
                      max(settings.context_backoff_max_seconds,
                          settings.context_backoff_base_seconds),
                      settings.context_backoff_jitter)
    return SituationPoller(graph, provider, interval_seconds=settings.context_poll_minutes * 60,
                           backoff=backoff, valid_hours=settings.weather_valid_hours,
                           horizon=timedelta(days=settings.event_horizon_days))
