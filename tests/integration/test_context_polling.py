"""External context against the real graph: the poller over known locations (schedule,
per-location backoff, recovery), the file loader and CLI, the webhook, and the current context
the API serves (the latest observation within its validity window)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from fastapi.testclient import TestClient

from api import situation_routes
from api.app import create_app
from graph.auth import Role, create_key
from graph.backoff import Backoff
from graph.db import Graph
from graph.events import Event
from graph.ingest.writer import EventWriter
from graph.privacy import Pseudonymizer
from graph.settings import Settings
from graph.situation import parse_situation, write_situation
from graph.situation.poller import SituationPoller
from graph.situation.providers import HttpResponse, OfflineProvider, OpenMeteoProvider
from tests.helpers import PERSONAS, graph_counts, scrape

pytestmark = pytest.mark.integration

RECORDED = Path(__file__).resolve().parent.parent / "data" / "open_meteo"
EXAMPLE = Path(__file__).resolve().parent.parent.parent / "docs" / "context.example.json"
LOCATIONS = [
    {"id": "berlin", "city": "Berlin", "country": "DE", "lat": 52.52, "lon": 13.40},
    {"id": "paris", "city": "Paris", "country": "FR", "lat": 48.86, "lon": 2.35},
    {"id": "madrid", "city": "Madrid", "country": "ES", "lat": 40.42, "lon": -3.70},
    {"id": "atlantis"},  # no coordinates: Open-Meteo cannot serve it
]
T0 = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)


class FakeClock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


class OpenMeteoReplay:
    """Open-Meteo as recorded, with the answer's time following the fake clock (one new
    observation per fetch) and chosen locations failing (by latitude) while they are in
    ``failing``: an HTTP 502 as recorded, or any exception."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.body = json.loads((RECORDED / "berlin_rain.200.json").read_bytes())
        self.bad_gateway = (RECORDED / "bad_gateway.502.html").read_bytes()
        self.failing: dict[float, Exception | None] = {}
        self.calls: list[tuple[float, float]] = []

    def __call__(self, url: str, timeout: float) -> HttpResponse:
        lat = float(parse_qs(urlsplit(url).query)["latitude"][0])
        self.calls.append((self.clock.t, lat))
        if lat in self.failing:
            error = self.failing[lat]
            if error is not None:
                raise error
            return HttpResponse(502, self.bad_gateway)
        at = T0 + timedelta(seconds=self.clock.t)
        body = {**self.body, "latitude": lat,
                "current": {**self.body["current"], "time": f"{at:%Y-%m-%dT%H:%M}"}}
        return HttpResponse(200, json.dumps(body).encode())

    def attempts(self, lat: float) -> list[float]:
        return [t for t, la in self.calls if la == lat]


def with_locations(graph: Graph) -> Graph:
    write_situation(graph, parse_situation({"locations": LOCATIONS}, origin="test"))
    return graph


def weather_by_location(graph: Graph) -> dict[str, list[str]]:
    rows = graph.rows("MATCH (w:WeatherObservation)-[:OBSERVED_AT]->(l:Location) "
                      "RETURN l.id AS loc, w.id AS obs ORDER BY w.at")
    out: dict[str, list[str]] = {}
    for r in rows:
        out.setdefault(r["loc"], []).append(r["obs"])
    return out


def poller(graph: Graph, provider: Any, clock: FakeClock) -> SituationPoller:
    return SituationPoller(graph, provider, interval_seconds=100,
                           backoff=Backoff(base_seconds=10, factor=2, max_seconds=40, jitter=0),
                           valid_hours=24, horizon=timedelta(days=14), clock=clock)


def test_poller_writes_every_known_location(graph: Graph,
                                            caplog: pytest.LogCaptureFixture) -> None:
    with_locations(graph)
    clock = FakeClock()
    replay = OpenMeteoReplay(clock)
    caplog.set_level("INFO", logger="graph.situation")
    report = poller(graph, OpenMeteoProvider(transport=replay), clock).poll_due()
    assert [(r.location_id, r.ok, r.weather) for r in report.results] == [
        ("atlantis", True, 0), ("berlin", True, 1), ("madrid", True, 1), ("paris", True, 1)]
    assert weather_by_location(graph) == {
        loc: [f"open-meteo-{loc}-20261128T1200Z"] for loc in ("berlin", "madrid", "paris")}
    row = graph.rows("MATCH (w:WeatherObservation {id: $id}) RETURN w.condition AS c, "
                     "w.temp_c AS t, w.source AS s, w.at AS at, w.valid_until AS until",
                     id="open-meteo-paris-20261128T1200Z")[0]
    assert (row["c"], row["t"], row["s"]) == ("rain", 4.3, "open-meteo")
    assert row["at"].to_native() == T0
    assert row["until"].to_native() == T0 + timedelta(hours=24)
    assert "location atlantis has no lat/lon; skipped" in caplog.text
    assert "context poll 4/4: paris: 1 weather, 0 local events" in caplog.text


def test_failing_location_backs_off_while_the_others_keep_updating(graph: Graph) -> None:
    with_locations(graph)
    clock = FakeClock()
    replay = OpenMeteoReplay(clock)
    replay.failing = {48.86: None, 40.42: RuntimeError("connection reset by a bug")}
    p = poller(graph, OpenMeteoProvider(transport=replay), clock)
    sleeps: list[float] = []
    recovered_at: list[float] = []

    def sleep(seconds: float) -> bool:
        sleeps.append(seconds)
        clock.t += seconds
        if clock.t >= 105 and 48.86 in replay.failing:  # Paris comes back after t=105
            del replay.failing[48.86]
            recovered_at.append(clock.t)
        return clock.t >= 300

    p.run(threading.Event(), sleep)
    # Paris (HTTP 502) and Madrid (an unexpected error) retry after 10, 20, 40, 40 s (the
    # maximum); Berlin keeps its 100 s interval throughout.
    assert replay.attempts(48.86) == [0, 10, 30, 70, 110, 210]
    assert replay.attempts(40.42) == [0, 10, 30, 70, 110, 150, 190, 230, 270]
    assert replay.attempts(52.52) == [0, 100, 200]
    assert sleeps == [10, 20, 40, 30, 10, 40, 40, 10, 10, 20, 40, 30]
    assert recovered_at == [110]
    # Once it answers again, Paris is back on the interval (the backoff was reset).
    assert p.states["paris"].failures == 0 and p.states["paris"].next_due == 310
    assert p.states["madrid"].failures == 9
    assert p.states["madrid"].last_error == "RuntimeError: connection reset by a bug"
    weather = weather_by_location(graph)
    assert weather["berlin"] == [f"open-meteo-berlin-{T0 + timedelta(seconds=s):%Y%m%dT%H%MZ}"
                                 for s in (0, 100, 200)]
    assert len(weather["paris"]) == 2 and "madrid" not in weather


def test_recovery_resets_the_backoff(graph: Graph) -> None:
    with_locations(graph)
    clock = FakeClock()
    replay = OpenMeteoReplay(clock)
    p = poller(graph, OpenMeteoProvider(transport=replay), clock)
    retries = []
    for t, fails in ((0, True), (10, True), (30, False), (130, True), (140, True)):
        clock.t = t
        replay.failing = {48.86: None} if fails else {}
        [paris] = [r for r in p.poll_due().results if r.location_id == "paris"]
        assert paris.ok is not fails
        retries.append(paris.retry_in)
    assert retries == [10, 20, None, 10, 20]


def test_offline_provider_polls_file_context_for_known_locations(graph: Graph) -> None:
    with_locations(graph)
    batch = parse_situation(json.loads(EXAMPLE.read_text()), origin="example")
    provider = OfflineProvider(batch, clock=lambda: datetime(2026, 11, 29, tzinfo=UTC))
    report = poller(graph, provider, FakeClock()).poll_due()
    assert {r.location_id: (r.weather, r.local_events) for r in report.results} == {
        "atlantis": (0, 0), "berlin": (1, 1), "madrid": (1, 1), "paris": (1, 1)}
    # London and the others are in the file but not in the graph: not polled.
    assert set(weather_by_location(graph)) == {"berlin", "madrid", "paris"}
    events = graph.rows("MATCH (e:LocalEvent)-[:HELD_IN]->(l) RETURN l.id AS l, e.name AS n "
                        "ORDER BY l")
    assert events == [{"l": "berlin", "n": "Berlin Christmas market"},
                      {"l": "madrid", "n": "Madrid football match"},
                      {"l": "paris", "n": "Paris concert"}]


def run_cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([PERSONAS, "context", *args], env=env, capture_output=True,
                          text=True, timeout=120)


def test_load_file_is_idempotent_and_all_or_nothing(graph: Graph, cli_env: dict[str, str],
                                                     tmp_path: Path) -> None:
    first = run_cli(cli_env, "load", str(EXAMPLE))
    assert first.returncode == 0, first.stderr
    assert "locations: 6  weather: 6 (6 new)  local events: 4 (4 new)" in first.stderr
    counts = graph_counts(graph)
    assert counts["node:WeatherObservation"] == 6 and counts["rel:OBSERVED_AT"] == 6
    london = graph.rows("MATCH (l:Location {id: 'london'})<-[:OBSERVED_AT]-(w) RETURN l.city AS "
                        "city, l.lat AS lat, w.valid_until AS until")[0]
    assert (london["city"], london["lat"]) == ("London", 51.51)
    assert london["until"].to_native() == datetime(2026, 11, 28, 18, tzinfo=UTC)
    again = run_cli(cli_env, "load", str(EXAMPLE))
    assert again.returncode == 0, again.stderr
    assert "weather: 6 (0 new)  local events: 4 (0 new)" in again.stderr
    assert graph_counts(graph) == counts

    data = json.loads(EXAMPLE.read_text())
    data["weather"].append({**data["weather"][0], "id": "new-one"})
    data["weather"].append({**data["weather"][0], "id": "broken", "condition": "sunny"})
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(data))
    refused = run_cli(cli_env, "load", str(bad))
    assert refused.returncode == 2
    assert "error (BAD_USER_INPUT)" in refused.stderr
    assert "1 bad record(s), nothing written: weather[7] (id 'broken'): condition" in \
        " ".join(refused.stderr.split())
    assert graph_counts(graph) == counts
    missing = run_cli(cli_env, "load", str(tmp_path / "absent.json"))
    assert missing.returncode == 2 and "no such file" in missing.stderr


def test_poll_once_and_sigterm(graph: Graph, cli_env: dict[str, str]) -> None:
    with_locations(graph)
    env = {**cli_env, "PERSONAS_CONTEXT_PROVIDER": "offline",
           "PERSONAS_CONTEXT_FILE": str(EXAMPLE)}
    once = run_cli(env, "poll", "--once")
    assert once.returncode == 0, once.stderr
    assert "offline: 4 location(s) updated, 0 failed" in once.stderr
    assert set(weather_by_location(graph)) == {"berlin", "madrid", "paris"}

    broken = run_cli({**env, "PERSONAS_CONTEXT_FILE": "/nonexistent/context.json"},
                     "poll", "--once")
    assert broken.returncode == 2 and "no such file" in broken.stderr

    loop = subprocess.Popen([PERSONAS, "context", "poll"], env=env, stderr=subprocess.PIPE,
                            text=True)
    try:
        deadline = time.monotonic() + 60
        seen = ""
        assert loop.stderr is not None
        while "context poll 4/4" not in seen and time.monotonic() < deadline:
            seen += loop.stderr.readline()
        assert "polling offline every 30 min; Ctrl-C stops" in seen
        assert "context poll 4/4" in seen
        loop.send_signal(signal.SIGTERM)
        assert loop.wait(timeout=20) == 0
    finally:
        if loop.poll() is None:
            os.kill(loop.pid, signal.SIGKILL)


@pytest.fixture
def api(graph: Graph, settings: Settings) -> Iterator[tuple[TestClient, dict[str, str]]]:
    keys = {role.value: create_key(graph, role, f"{role.value} context test").key
            for role in Role}
    with TestClient(create_app(settings)) as client:
        yield client, keys


def auth(keys: dict[str, str], role: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {keys[role]}"} if role in keys else {}


PUSH: dict[str, Any] = {
    "locations": [{"id": "berlin", "city": "Berlin", "country": "de", "lat": 52.52,
                   "lon": 13.4}],
    "weather": [{"id": "push-berlin-1", "location_id": "berlin", "at": "2026-11-28T12:00:00Z",
                 "temp_c": 2.5, "condition": "snow", "source": "push"}],
    "local_events": [{"id": "push-ev-1", "location_id": "berlin", "name": "Berlin concert",
                      "starts_at": "2026-12-03T19:00:00Z"}],
}


def test_webhook_writes_pushed_context(graph: Graph,
                                       api: tuple[TestClient, dict[str, str]]) -> None:
    client, keys = api
    response = client.post("/v1/webhooks/context", json=PUSH, headers=auth(keys, "writer"))
    assert response.status_code == 200, response.text
    assert response.json() == {"locations": 1, "weather": 1, "local_events": 1,
                               "new_weather": 1, "new_local_events": 1}
    row = graph.rows("MATCH (w:WeatherObservation)-[:OBSERVED_AT]->(l:Location)"
                     "<-[:HELD_IN]-(e:LocalEvent) RETURN l.country AS country, "
                     "w.condition AS c, e.name AS n")
    assert row == [{"country": "DE", "c": "snow", "n": "Berlin concert"}]
    counts = graph_counts(graph)
    again = client.post("/v1/webhooks/context", json=PUSH, headers=auth(keys, "admin"))
    assert again.status_code == 200
    assert again.json()["new_weather"] == 0 and again.json()["new_local_events"] == 0
    assert graph_counts(graph) == counts
    metrics = scrape(client)
    assert 'personas_events_accepted_total{source="context"} 2.0' in metrics
    assert 'personas_events_duplicate_total{source="context"} 2.0' in metrics


def test_webhook_refuses_bad_records_and_writes_nothing(
        graph: Graph, api: tuple[TestClient, dict[str, str]],
        monkeypatch: pytest.MonkeyPatch) -> None:
    client, keys = api
    before = graph_counts(graph)
    bad = {**PUSH, "weather": [*PUSH["weather"],
                               {**PUSH["weather"][0], "id": "push-2", "temp_c": -120},
                               {**PUSH["weather"][0], "id": "push-3", "at": "yesterday"}]}
    response = client.post("/v1/webhooks/context", json=bad, headers=auth(keys, "writer"))
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "BAD_USER_INPUT"
    assert [r["record"] for r in error["records"]] == ["weather[1] (id 'push-2')",
                                                       "weather[2] (id 'push-3')"]
    assert error["records"][0]["reason"] == "temp_c: Input should be greater than or equal to -90"
    assert error["records"][1]["reason"].startswith("at: Input should be a valid datetime")
    assert graph_counts(graph) == before
    malformed = client.post("/v1/webhooks/context", content=b'{"weather": [',
                            headers={**auth(keys, "writer"), "content-type": "application/json"})
    assert malformed.status_code == 400
    assert malformed.json()["error"]["code"] == "BAD_USER_INPUT"
    assert "not valid JSON" in malformed.json()["error"]["message"]
    shape = client.post("/v1/webhooks/context", json=[PUSH], headers=auth(keys, "writer"))
    assert shape.status_code == 400 and "expected a JSON object" in shape.text
    monkeypatch.setattr(situation_routes, "MAX_PUSH_RECORDS", 2)
    big = client.post("/v1/webhooks/context", json=PUSH, headers=auth(keys, "writer"))
    assert big.status_code == 400
    assert big.json()["error"]["message"] == "body: 3 records; at most 2 in one batch"
    assert graph_counts(graph) == before


@pytest.mark.parametrize(("role", "status", "code"), [
    ("reader", 403, "FORBIDDEN"), ("analyst", 403, "FORBIDDEN"),
    ("none", 401, "UNAUTHENTICATED")])
def test_webhook_needs_a_writer_or_admin_key(graph: Graph, api: tuple[TestClient, dict[str, str]],
                                             role: str, status: int, code: str) -> None:
    client, keys = api
    response = client.post("/v1/webhooks/context", json=PUSH, headers=auth(keys, role))
    assert response.status_code == status
    assert response.json()["error"]["code"] == code
    assert graph.rows("MATCH (w:WeatherObservation) RETURN count(w) AS n")[0]["n"] == 0


CURRENT = """query($id: ID!, $at: DateTime) { user(id: $id, asOf: $at) { context {
  location { id } currentWeather { at condition tempC } } } }"""


def test_current_context_is_the_latest_observation_within_its_window(
        graph: Graph, settings: Settings, api: tuple[TestClient, dict[str, str]]) -> None:
    client, keys = api
    writer = EventWriter(graph, Pseudonymizer(settings.pseudonym_key.get_secret_value()))
    writer.write([Event.model_validate({
        "event_id": "ctx-1", "type": "page_view", "occurred_at": "2026-11-01T10:00:00Z",
        "user": {"cookie": "ck-context"},
        "profile": {"location": {"id": "berlin", "city": "Berlin", "country": "DE"}}})])
    user_id = graph.rows("MATCH (u:User) RETURN u.id AS id")[0]["id"]
    now = datetime(2026, 11, 20, 12, tzinfo=UTC)

    def observation(oid: str, hours_ago: float, condition: str,
                    valid_for: float | None = None) -> dict[str, Any]:
        at = now - timedelta(hours=hours_ago)
        row: dict[str, Any] = {"id": oid, "location_id": "berlin", "at": at.isoformat(),
                               "temp_c": 5.0, "condition": condition}
        if valid_for is not None:
            row["valid_until"] = (at + timedelta(hours=valid_for)).isoformat()
        return row

    def current(at: datetime) -> dict[str, Any] | None:
        response = client.post("/graphql", json={"query": CURRENT, "variables": {
            "id": user_id, "at": at.isoformat()}}, headers=auth(keys, "reader"))
        assert response.status_code == 200 and "errors" not in response.json(), response.text
        weather: dict[str, Any] | None = response.json()["data"]["user"]["context"][
            "currentWeather"]
        return weather

    # Expired by the default window (24 h), and expired by the provider's own valid_until.
    write_situation(graph, parse_situation({"weather": [
        observation("old", 30, "snow"), observation("short", 1, "fog", valid_for=0.5)]},
        origin="test"), valid_hours=settings.weather_valid_hours)
    assert current(now) is None
    write_situation(graph, parse_situation({"weather": [
        observation("earlier", 5, "rain"), observation("latest", 2, "clear"),
        observation("future", -1, "cloudy")]}, origin="test"),
        valid_hours=settings.weather_valid_hours)
    weather = current(now)
    assert weather is not None and weather["condition"] == "clear"
    assert datetime.fromisoformat(weather["at"]) == now - timedelta(hours=2)
    # 21.5 hours on, "latest" still holds but "future" (observed an hour after now) is newer;
    # 25.5 hours on, every one of them has expired.
    later = current(now + timedelta(hours=21, minutes=30))
    assert later is not None and later["condition"] == "cloudy"
    assert current(now + timedelta(hours=25, minutes=30)) is None
    # A provider may declare a longer validity, up to 7 days.
    write_situation(graph, parse_situation({"weather": [observation("long", 2, "fog",
                                                                    valid_for=72)]},
                                           origin="test"))
    held = current(now + timedelta(hours=48))
    assert held is not None and held["condition"] == "fog"
