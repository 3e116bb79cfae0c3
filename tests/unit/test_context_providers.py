"""Context providers without a database: Open-Meteo answers replayed from tests/data/open_meteo,
the offline file's validation, the observation models and the backoff schedule."""

from __future__ import annotations

import json
import logging
import random
import threading
import urllib.parse
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from graph.backoff import Backoff
from graph.errors import InvalidInput, InvalidRecords, Upstream
from graph.events import Location
from graph.situation.models import CONDITIONS, LocalEvent, WeatherObservation, parse_situation
from graph.situation.providers import (
    WMO_CONDITIONS,
    HttpResponse,
    OfflineProvider,
    OpenMeteoProvider,
    load_situation_file,
    urllib_transport,
)
from personas import demo

RECORDED = Path(__file__).resolve().parent.parent / "data" / "open_meteo"
EXAMPLE = Path(__file__).resolve().parent.parent.parent / "docs" / "context.example.json"
BERLIN = Location(id="berlin", city="Berlin", country="DE", lat=52.52, lon=13.40)
# Every code Open-Meteo documents for weather_code.
OPEN_METEO_CODES = (0, 1, 2, 3, 45, 48, 51, 53, 55, 56, 57, 61, 63, 65, 66, 67, 71, 73, 75, 77,
                    80, 81, 82, 85, 86, 95, 96, 99)


def recorded(name: str) -> HttpResponse:
    path = next(RECORDED.glob(f"{name}.*"))
    return HttpResponse(int(path.suffixes[0].lstrip(".")), path.read_bytes())


class Replay:
    """A transport answering with one recorded response, remembering what it was asked."""

    def __init__(self, name: str) -> None:
        self.response = recorded(name)
        self.calls: list[tuple[str, float]] = []

    def __call__(self, url: str, timeout: float) -> HttpResponse:
        self.calls.append((url, timeout))
        return self.response


def test_open_meteo_answer_becomes_an_observation() -> None:
    replay = Replay("berlin_rain")
    provider = OpenMeteoProvider("https://api.open-meteo.com/v1/forecast", 7.5, replay)
    [obs] = provider.fetch_weather(BERLIN)
    assert obs == WeatherObservation(
        id="open-meteo-berlin-20261128T1430Z", location_id="berlin",
        at=datetime(2026, 11, 28, 14, 30, tzinfo=UTC), temp_c=4.3, condition="rain",
        source="open-meteo")
    assert obs.valid_until is None  # the writer applies PERSONAS_WEATHER_VALID_HOURS
    [(url, timeout)] = replay.calls
    parts = urllib.parse.urlsplit(url)
    assert (parts.scheme, parts.netloc, parts.path) == ("https", "api.open-meteo.com",
                                                        "/v1/forecast")
    assert urllib.parse.parse_qs(parts.query) == {
        "latitude": ["52.52"], "longitude": ["13.4"],
        "current": ["temperature_2m,weather_code"], "timezone": ["GMT"]}
    assert timeout == 7.5
    assert provider.fetch_local_events(BERLIN, timedelta(days=14)) == []


@pytest.mark.parametrize(("name", "condition", "temp", "at"), [
    ("madrid_clear", "clear", 16.2, datetime(2026, 11, 28, 14, 30, tzinfo=UTC)),
    # Asked in local time (UTC+1): 15:30 there is 14:30 UTC.
    ("vienna_local_time", "snow", -0.8, datetime(2026, 11, 28, 14, 30, tzinfo=UTC)),
])
def test_recorded_answers_map_condition_temperature_and_utc_time(
        name: str, condition: str, temp: float, at: datetime) -> None:
    [obs] = OpenMeteoProvider(transport=Replay(name)).fetch_weather(BERLIN)
    assert (obs.condition, obs.temp_c, obs.at) == (condition, temp, at)
    assert obs.at.utcoffset() == timedelta(0)


@pytest.mark.parametrize(("name", "message"), [
    ("bad_latitude", "HTTP 400: Latitude must be in range of -90 to 90°. Given: 100.0."),
    ("rate_limited", "HTTP 429: Daily API request limit exceeded"),
    ("bad_gateway", "HTTP 502"),
    ("unknown_code", "unknown WMO weather code 42"),
    ("fahrenheit", "temperature in '°F', expected °C"),
])
def test_error_answers_are_clear_upstream_errors(name: str, message: str) -> None:
    with pytest.raises(Upstream) as caught:
        OpenMeteoProvider(transport=Replay(name)).fetch_weather(BERLIN)
    assert message in str(caught.value)
    assert "location berlin" in str(caught.value)
    assert caught.value.code == "UPSTREAM"


def test_answers_without_current_values_are_refused() -> None:
    body = json.dumps({"latitude": 52.52, "longitude": 13.42, "utc_offset_seconds": 0,
                       "current": {"time": "2026-11-28T14:30", "temperature_2m": 4.0}})
    provider = OpenMeteoProvider(transport=lambda url, timeout: HttpResponse(200, body.encode()))
    with pytest.raises(Upstream, match="lacks current time, temperature_2m and weather_code"):
        provider.fetch_weather(BERLIN)
    not_json = OpenMeteoProvider(transport=lambda url, timeout: HttpResponse(200, b"<html>"))
    with pytest.raises(Upstream, match="not JSON"):
        not_json.fetch_weather(BERLIN)


def test_location_without_coordinates_is_skipped_with_a_log_line(
        caplog: pytest.LogCaptureFixture) -> None:
    replay = Replay("berlin_rain")
    caplog.set_level(logging.INFO, logger="graph.situation.providers")
    assert OpenMeteoProvider(transport=replay).fetch_weather(Location(id="atlantis")) == []
    assert replay.calls == []
    assert "location atlantis has no lat/lon; skipped" in caplog.text


def test_every_open_meteo_code_maps_to_a_known_condition() -> None:
    assert set(WMO_CONDITIONS) == set(OPEN_METEO_CODES)
    assert set(WMO_CONDITIONS.values()) == set(CONDITIONS)
    assert (WMO_CONDITIONS[0], WMO_CONDITIONS[3], WMO_CONDITIONS[45], WMO_CONDITIONS[55],
            WMO_CONDITIONS[75], WMO_CONDITIONS[95]) == ("clear", "cloudy", "fog", "rain",
                                                        "snow", "rain")
    assert set(demo.CONDITIONS) == set(CONDITIONS)


@pytest.fixture
def server() -> Iterator[str]:
    """A local HTTP server replaying the recordings by path (/bad_latitude -> 400 + body)."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - the standard library's name
            response = recorded(self.path.strip("/").split("?")[0])
            self.send_response(response.status)
            self.end_headers()
            self.wfile.write(response.body)

        def log_message(self, *args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def test_urllib_transport_returns_every_status_and_fails_clearly_without_answer(
        server: str) -> None:
    ok = urllib_transport(f"{server}/berlin_rain?latitude=1", 5.0)
    assert ok.status == 200 and json.loads(ok.body)["current"]["weather_code"] == 61
    bad = urllib_transport(f"{server}/bad_latitude", 5.0)
    assert bad.status == 400 and json.loads(bad.body)["error"] is True
    provider = OpenMeteoProvider(f"{server}/bad_latitude", 5.0)
    with pytest.raises(Upstream, match="HTTP 400: Latitude must be in range"):
        provider.fetch_weather(BERLIN)
    with pytest.raises(Upstream, match="no answer from 127.0.0.1:9"):
        urllib_transport("http://127.0.0.1:9/v1/forecast", 2.0)


def write(tmp_path: Path, data: object) -> Path:
    path = tmp_path / "context.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


GOOD_WEATHER = {"id": "wx-1", "location_id": "berlin", "at": "2026-11-28T12:00:00+01:00",
                "temp_c": 3.5, "condition": "rain", "source": "test"}
GOOD_EVENT = {"id": "ev-1", "location_id": "berlin", "name": "Berlin concert",
              "starts_at": "2026-12-03T19:00:00Z", "ends_at": "2026-12-03T23:00:00Z"}


def test_offline_file_errors_name_each_bad_record(tmp_path: Path) -> None:
    path = write(tmp_path, {"weather": [
        GOOD_WEATHER,
        {**GOOD_WEATHER, "id": "wx-2", "temp_c": 75},
        {**GOOD_WEATHER, "id": "wx-3", "at": "2026-11-28T12:00:00"},
        {**GOOD_WEATHER, "id": "wx-4", "condition": "hail"},
        {**GOOD_WEATHER, "id": "wx-5", "valid_until": "2026-11-28T10:00:00Z"},
        {**GOOD_WEATHER, "id": " "},
        {**GOOD_WEATHER, "temp_c": 4.0},
    ], "local_events": [GOOD_EVENT, {**GOOD_EVENT, "id": "ev-2", "ends_at": "2026-12-01T00:00Z"},
                        "not a record"]})
    with pytest.raises(InvalidRecords) as caught:
        load_situation_file(path)
    problems = dict(caught.value.problems)
    assert problems == {
        "weather[1] (id 'wx-2')": "temp_c: Input should be less than or equal to 60",
        "weather[2] (id 'wx-3')": "at: time has no timezone offset (use e.g. "
                                  "2026-11-28T10:00:00Z)",
        "weather[3] (id 'wx-4')": "condition: Input should be 'clear', 'cloudy', 'rain', "
                                  "'snow' or 'fog'",
        "weather[4] (id 'wx-5')": "record: valid_until must be after at",
        "weather[5]": "id: String should have at least 1 character",
        "weather[6] (id 'wx-1')": "id 'wx-1' repeats weather[0] (id 'wx-1') with other values",
        "local_events[1] (id 'ev-2')": "record: ends_at is before starts_at",
        "local_events[2]": "a record must be a JSON object",
    }
    assert caught.value.code == "BAD_USER_INPUT"
    message = str(caught.value)
    assert message.startswith(f"{path}: 8 bad record(s), nothing written: weather[1] (id 'wx-2')")


@pytest.mark.parametrize(("content", "message"), [
    ("{not json", "not valid JSON (line 1, column 2"),
    ("[]", "expected a JSON object with locations, weather, local_events"),
    ('{"weather": [], "forecasts": []}', "unknown key(s) ['forecasts']"),
    ('{"weather": {}}', "weather must be a list"),
    ('{"schema_version": 2}', "schema_version must be 1"),
])
def test_offline_file_shape_errors(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "context.json"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(InvalidInput) as caught:
        load_situation_file(path)
    assert str(caught.value).startswith(f"{path}: ") and message in str(caught.value)


def test_missing_file_and_batch_limit(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="no such file"):
        load_situation_file(tmp_path / "absent.json")
    with pytest.raises(InvalidInput, match="3 records; at most 2 in one batch"):
        parse_situation({"weather": [GOOD_WEATHER] * 3}, origin="body", max_records=2)


def test_example_file_and_offline_provider() -> None:
    batch = load_situation_file(EXAMPLE)
    assert (len(batch.locations), len(batch.weather), len(batch.local_events)) == (6, 6, 4)
    now = datetime(2026, 12, 1, tzinfo=UTC)
    provider = OfflineProvider(batch, clock=lambda: now)
    [weather] = provider.fetch_weather(BERLIN)
    assert (weather.id, weather.condition, weather.temp_c) == (
        "example-berlin-2026112812", "rain", 3.5)
    # The market runs from 30 November: under way, so still served; within a week of 1
    # December nothing else in Berlin.
    assert [e.id for e in provider.fetch_local_events(BERLIN, timedelta(days=7))] == [
        "example-berlin-christmas-market"]
    paris = Location(id="paris")
    assert [e.id for e in provider.fetch_local_events(paris, timedelta(days=7))] == [
        "example-paris-concert"]
    assert provider.fetch_local_events(paris, timedelta(days=1)) == []
    later = OfflineProvider(batch, clock=lambda: datetime(2026, 12, 4, tzinfo=UTC))
    assert later.fetch_local_events(paris, timedelta(days=30)) == []
    assert provider.fetch_weather(Location(id="atlantis")) == []


def test_models_store_utc_and_mask_contact_details() -> None:
    obs = WeatherObservation.model_validate(GOOD_WEATHER)
    assert obs.at == datetime(2026, 11, 28, 11, tzinfo=UTC) and obs.at.tzinfo is UTC
    assert obs.window_end(24) == datetime(2026, 11, 29, 11, tzinfo=UTC)
    explicit = WeatherObservation.model_validate(
        {**GOOD_WEATHER, "valid_until": "2026-11-28T14:00:00Z"})
    assert explicit.window_end(24) == datetime(2026, 11, 28, 14, tzinfo=UTC)
    with pytest.raises(ValueError, match="at most 7 days after at"):
        WeatherObservation.model_validate({**GOOD_WEATHER, "valid_until": "2026-12-28T00:00Z"})
    with pytest.raises(ValueError, match="temp_c"):
        WeatherObservation.model_validate({**GOOD_WEATHER, "temp_c": float("nan")})
    event = LocalEvent.model_validate(
        {**GOOD_EVENT, "name": "Gig, tickets: jane@example.com or +49 151 2345 6789"})
    assert event.name == "Gig, tickets: [email] or [phone]"
    assert LocalEvent.model_validate({**GOOD_EVENT, "name": "Berlin Marathon 2026"}).name == \
        "Berlin Marathon 2026"


def test_backoff_schedule() -> None:
    backoff = Backoff(base_seconds=60, factor=2, max_seconds=600)
    assert [backoff.delay(n) for n in range(1, 7)] == [60, 120, 240, 480, 600, 600]
    assert backoff.delay(5000) == 600  # no overflow after a long outage
    jittered = Backoff(60, 2, 600, jitter=0.1)
    rng = random.Random(7)
    delays = [jittered.delay(2, rng) for _ in range(200)]
    assert all(108 <= d <= 132 for d in delays) and len(set(delays)) > 100
    for bad in ({"base_seconds": 0}, {"factor": 0.5}, {"max_seconds": 10}, {"jitter": 1.0}):
        with pytest.raises(ValueError, match="backoff needs"):
            Backoff(**bad)


def test_a_context_file_is_read_only_up_to_its_limit(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """The file was read whole before anything was checked: a symlink to /dev/zero grew the
    process until the kernel killed it. Now at most the limit is read, then refused; a
    directory or a file that is not UTF-8 is refused with the reason."""
    import graph.situation.providers as providers

    monkeypatch.setattr(providers, "MAX_FILE_BYTES", 1000)
    big = tmp_path / "big.json"
    big.write_text(json.dumps({"weather": [GOOD_WEATHER] * 20}), encoding="utf-8")
    with pytest.raises(InvalidInput, match="over 1000 bytes"):
        load_situation_file(big)
    zero = tmp_path / "zero.json"
    zero.symlink_to("/dev/zero")
    with pytest.raises(InvalidInput, match="over 1000 bytes"):
        load_situation_file(zero)
    with pytest.raises(InvalidInput, match="cannot read it"):
        load_situation_file(tmp_path)
    latin = tmp_path / "latin.json"
    latin.write_bytes(b'{"weather": [], "x": "\xe9"}')
    with pytest.raises(InvalidInput, match="cannot read it"):
        load_situation_file(latin)
