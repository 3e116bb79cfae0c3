"""``$now`` travels as ISO 8601 text (``engine.now_param``) and becomes a datetime in the Cypher:
the same instant as the datetime it came from, to the microsecond, so that every comparison with
a stored time keeps its edges (the weather's observation time and validity, an event's start,
the recommendations' weather window and event horizon)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from graph.db import Graph
from graph.profile import queries as q
from graph.profile.users import situation_window
from graph.recommend.engine import CONTEXT_BOOSTS, as_utc, now_param, recommend
from graph.settings import Settings

T = datetime(2026, 12, 7, 12, 0, 0, 123457, tzinfo=UTC)
US = timedelta(microseconds=1)
WINDOW = timedelta(hours=CONTEXT_BOOSTS["weather_valid_hours"])

# A user in Berlin, fog observed there at T (valid for an hour), a trade fair starting at T, and
# a book: the user's preferred category, which both the fog and the fair favour.
SETUP = """
CREATE (u:User {id: 'me'})-[:LOCATED_IN {at: $t}]->(l:Location {id: 'loc', city: 'Berlin'})
CREATE (:WeatherObservation {id: 'w', location_id: 'loc', at: $t, condition: 'fog',
                             temp_c: 10.0, valid_until: $t + duration({hours: 1})})
       -[:OBSERVED_AT]->(l)
CREATE (:LocalEvent {id: 'e', location_id: 'loc', name: 'Berlin trade fair', starts_at: $t})
       -[:HELD_IN]->(l)
CREATE (c:Category {name: 'books'})
CREATE (u)-[:PREFERS {source: 'inferred', weight: 0.5}]->(c)
CREATE (:Item {id: 'i1', name: 'A book', category: 'books'})-[:IN_CATEGORY]->(c)
"""


def test_now_param_is_the_utc_instant_to_the_microsecond() -> None:
    assert now_param(T) == "2026-12-07T12:00:00.123457+00:00"
    assert now_param(T.replace(microsecond=0)) == "2026-12-07T12:00:00.000000+00:00"
    shifted = T.astimezone(timezone(timedelta(hours=-5)))
    assert now_param(shifted) == now_param(T)
    assert now_param(T.replace(tzinfo=None)) == now_param(T)  # naive counts as UTC
    assert datetime.fromisoformat(now_param(None)) <= as_utc(None)


def test_situation_keeps_its_edges_at_the_microsecond(graph: Graph, settings: Settings) -> None:
    graph.execute(SETUP, t=T)

    def at(now: datetime) -> tuple[str | None, list[str]]:
        [row] = graph.rows(q.SITUATION, id="me", **situation_window(now, settings, 5))
        weather = row["weather"]
        return (weather["id"] if weather else None), [e["id"] for e in row["events"]]

    assert at(T - US) == (None, ["e"])  # observed after now; the fair starts after now
    assert at(T) == ("w", ["e"])  # observed at now (<=); the fair starts at now (>=)
    assert at(T + US) == ("w", [])  # the fair has started
    assert at(T + timedelta(hours=1) - US) == ("w", [])
    assert at(T + timedelta(hours=1)) == (None, [])  # valid until now, exclusive


def test_recommendation_context_keeps_its_edges_at_the_microsecond(graph: Graph) -> None:
    graph.execute(SETUP, t=T)
    fog, fair = "fog in Berlin today", "Berlin trade fair on 2026-12-07"

    def reasons(now: datetime) -> set[str]:
        [rec] = recommend(graph, "me", 5, now)
        return {fog, fair} & set(rec.reasons)

    assert reasons(T - US) == {fair}  # observed after now
    assert reasons(T) == {fog, fair}
    assert reasons(T + US) == {fog}  # the fair has started
    assert reasons(T + WINDOW) == {fog}  # observed exactly the window before now (<=)
    assert reasons(T + WINDOW + US) == set()
    horizon = timedelta(days=CONTEXT_BOOSTS["event_horizon_days"])
    assert reasons(T - horizon + US) == {fair}
    assert reasons(T - horizon) == set()  # starts exactly the horizon after now (<)
