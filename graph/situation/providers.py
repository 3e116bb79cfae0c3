"""Where situations come from: a provider answers, for one location, its weather and its local
events. Two ship: ``OfflineProvider`` (a JSON file; the default, for the demo and tests) and
``OpenMeteoProvider`` (current weather from Open-Meteo over HTTP, no key needed).
"""

from __future__ import annotations

import logging
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

from pydantic import ValidationError

from graph import strictjson
from graph.errors import InvalidInput, Upstream
from graph.events import Location, describe_validation_error
from graph.ingest.reader import InvalidJson, load_json
from graph.settings import Settings
from graph.situation.models import LocalEvent, SituationBatch, WeatherObservation, parse_situation

log = logging.getLogger(__name__)
Clock = Callable[[], datetime]
MAX_RESPONSE_BYTES = 1_000_000


def utcnow() -> datetime:
    return datetime.now(UTC)


class SituationProvider(Protocol):
    """What the poller needs from a source of context."""

    name: str

    def fetch_weather(self, location: Location) -> list[WeatherObservation]:
        """The location's current weather (observations with ``at``, and ``valid_until`` when
        the source says how long they hold). Raises ``Upstream`` when the source fails."""
        ...

    def fetch_local_events(self, location: Location,
                           horizon: timedelta) -> list[LocalEvent]:
        """Local events at the location from now until ``horizon`` ahead."""
        ...


MAX_FILE_BYTES = 50_000_000
"""The largest context file `personas context load` reads (it is parsed whole)."""


def load_situation_file(path: Path) -> SituationBatch:
    """Read and validate an offline context file; an unreadable file, bad JSON or any bad
    record raises ``InvalidInput`` naming the file (and each bad record)."""
    try:
        with path.open("rb") as handle:  # at most the limit: /dev/zero was read for ever
            raw = handle.read(MAX_FILE_BYTES + 1)
        if len(raw) > MAX_FILE_BYTES:
            raise InvalidInput(f"{path}: over {MAX_FILE_BYTES} bytes")
        text = raw.decode("utf-8")
    except FileNotFoundError:
        raise InvalidInput(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidInput(f"{path}: cannot read it ({exc})") from None
    try:
        data = strictjson.loads(text)  # as load_json: deep nesting is an error, not a crash
    except strictjson.JSONDecodeError as exc:
        raise InvalidInput(f"{path}: not valid JSON (line {exc.lineno}, column {exc.colno}: "
                           f"{exc.msg})") from None
    return parse_situation(data, origin=str(path))


class OfflineProvider:
    """Serves what a context file holds: each location's observations, and the local events
    that have not ended and start within the horizon."""

    name = "offline"

    def __init__(self, batch: SituationBatch, clock: Clock = utcnow) -> None:
        self.batch = batch
        self.clock = clock

    @classmethod
    def from_file(cls, path: Path, clock: Clock = utcnow) -> OfflineProvider:
        return cls(load_situation_file(path), clock)

    def fetch_weather(self, location: Location) -> list[WeatherObservation]:
        return [w for w in self.batch.weather if w.location_id == location.id]

    def fetch_local_events(self, location: Location,
                           horizon: timedelta) -> list[LocalEvent]:
        now = self.clock()
        return [e for e in self.batch.local_events
                if e.location_id == location.id and (e.ends_at or e.starts_at) >= now
                and e.starts_at < now + horizon]


@dataclass(frozen=True)
class HttpResponse:
    status: int
    body: bytes


Transport = Callable[[str, float], HttpResponse]
"""GET ``url`` with a timeout in seconds; answers with any HTTP status, raises ``Upstream``
only when no answer came (unreachable, timed out). Tests pass one replaying recordings."""


def urllib_transport(url: str, timeout: float) -> HttpResponse:
    """The standard library's HTTP client."""
    request = urllib.request.Request(url, headers={"Accept": "application/json",
                                                   "User-Agent": "persona-graph"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return HttpResponse(response.status, response.read(MAX_RESPONSE_BYTES))
    except urllib.error.HTTPError as exc:
        return HttpResponse(exc.code, exc.read(MAX_RESPONSE_BYTES))
    except (urllib.error.URLError, TimeoutError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        host = urllib.parse.urlsplit(url).netloc
        raise Upstream(f"no answer from {host}: {reason}") from None


# Open-Meteo's WMO weather interpretation codes, mapped to the graph's conditions. Drizzle,
# freezing rain, showers and thunderstorms count as rain; snow grains and snow showers as snow.
WMO_CONDITIONS: dict[int, str] = {
    0: "clear", 1: "clear", 2: "cloudy", 3: "cloudy", 45: "fog", 48: "fog",
    **dict.fromkeys((51, 53, 55, 56, 57, 61, 63, 65, 66, 67, 80, 81, 82, 95, 96, 99), "rain"),
    **dict.fromkeys((71, 73, 75, 77, 85, 86), "snow"),
}
OPEN_METEO_URL = "https://api.open-meteo.com/v1/forecast"
CURRENT_FIELDS = "temperature_2m,weather_code"


class OpenMeteoProvider:
    """Current weather from Open-Meteo's forecast API for locations with lat/lon (others are
    skipped with a log line). It has no local events: it answers none."""

    name = "open-meteo"

    def __init__(self, url: str = OPEN_METEO_URL, timeout: float = 10.0,
                 transport: Transport = urllib_transport) -> None:
        self.url = url
        self.timeout = timeout
        self.transport = transport

    def request_url(self, location: Location) -> str:
        query = urllib.parse.urlencode({"latitude": location.lat, "longitude": location.lon,
                                        "current": CURRENT_FIELDS, "timezone": "GMT"})
        return f"{self.url}?{query}"

    def fetch_weather(self, location: Location) -> list[WeatherObservation]:
        if location.lat is None or location.lon is None:
            log.info("open-meteo: location %s has no lat/lon; skipped", location.id)
            return []
        response = self.transport(self.request_url(location), self.timeout)
        return [parse_current(location.id, response)]

    def fetch_local_events(self, location: Location,  # noqa: ARG002 - the protocol's signature
                           horizon: timedelta) -> list[LocalEvent]:  # noqa: ARG002
        return []


def _reason(body: bytes) -> str | None:
    try:
        data = load_json(body)
    except InvalidJson:
        return None
    reason = data.get("reason") if isinstance(data, dict) else None
    return str(reason)[:300] if reason else None


def parse_current(location_id: str, response: HttpResponse) -> WeatherObservation:
    """One observation from an Open-Meteo answer with ``current=temperature_2m,weather_code``;
    an error answer, or one without what was asked, raises ``Upstream`` with the reason."""
    where = f"open-meteo, location {location_id}"
    if response.status != 200:
        reason = _reason(response.body)
        raise Upstream(f"{where}: HTTP {response.status}" + (f": {reason}" if reason else ""))
    try:
        data: Any = load_json(response.body)
    except InvalidJson:
        raise Upstream(f"{where}: the answer is not JSON") from None
    if not isinstance(data, dict) or data.get("error"):
        raise Upstream(f"{where}: error answer: {_reason(response.body) or 'no reason given'}")
    current, units = data.get("current"), data.get("current_units") or {}
    if not isinstance(current, dict) or not {"time", "temperature_2m",
                                             "weather_code"} <= current.keys():
        raise Upstream(f"{where}: the answer lacks current time, temperature_2m and "
                       "weather_code")
    if units.get("temperature_2m", "°C") != "°C":
        raise Upstream(f"{where}: temperature in {units['temperature_2m']!r}, expected °C")
    code = current["weather_code"]
    condition = WMO_CONDITIONS.get(code) if isinstance(code, int) else None
    if condition is None:
        raise Upstream(f"{where}: unknown WMO weather code {code!r}")
    try:
        local = datetime.fromisoformat(str(current["time"]))
        offset = timedelta(seconds=int(data.get("utc_offset_seconds", 0)))
        at = (local.replace(tzinfo=UTC) - offset) if local.tzinfo is None \
            else local.astimezone(UTC)
        return WeatherObservation(
            id=f"open-meteo-{location_id}-{at:%Y%m%dT%H%MZ}", location_id=location_id, at=at,
            temp_c=current["temperature_2m"], condition=condition, source="open-meteo")
    except ValidationError as exc:
        raise Upstream(f"{where}: unusable values: "
                       f"{describe_validation_error(exc.errors())}") from None
    except (TypeError, ValueError) as exc:
        raise Upstream(f"{where}: unusable time {current['time']!r} ({exc})") from None


def build_provider(settings: Settings, *, transport: Transport = urllib_transport,
                   clock: Clock = utcnow) -> SituationProvider:
    """The provider PERSONAS_CONTEXT_PROVIDER names (the offline one reads its file here)."""
    if settings.context_provider == "open-meteo":
        return OpenMeteoProvider(settings.open_meteo_url, settings.context_http_timeout_seconds,
                                 transport)
    return OfflineProvider.from_file(settings.context_file, clock)
