"""Counterfactual context: recommendations ranked as if the weather or a local event were
different. Only the context term moves: items whose category neither the real nor the supposed
situation favours keep their score and reasons; the others gain or lose exactly the context
weight per rule, with reasons that say the situation is supposed."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from graph import situation
from graph.auth import Role, create_key
from graph.db import Graph
from graph.errors import InvalidInput
from graph.recommend.engine import CONTEXT_BOOSTS, WEIGHTS, Recommendation, WhatIf, recommend
from graph.settings import Settings
from personas.demo import DemoPopulation
from tests.helpers import load_demo
from tests.integration.test_recommend import SEED, USERS, frequent_shopper

pytestmark = pytest.mark.integration

SUPPOSED = "if it were "


def by_item(recs: list[Recommendation]) -> dict[str, Recommendation]:
    return {r.item_id: r for r in recs}


def test_what_if_moves_only_context_dependent_items(graph: Graph, tmp_path: Path,
                                                    settings: Settings) -> None:
    load_demo(graph, tmp_path, users=USERS, seed=SEED)
    uid = frequent_shopper(graph)
    location = graph.rows("MATCH (:User {id: $uid})-[:LOCATED_IN]->(l:Location) "
                          "RETURN l.id AS id, l.city AS city", uid=uid)[0]
    now = DemoPopulation(USERS, SEED).as_of + timedelta(days=3)
    situation.upsert_weather(graph, [{
        "id": "wx-what-if", "location_id": location["id"], "at": now - timedelta(hours=1),
        "temp_c": 12.0, "condition": "rain", "source": "test"}])
    real = by_item(recommend(graph, uid, first=100, now=now))
    sunny = by_item(recommend(graph, uid, first=100, now=now,
                              what_if=WhatIf(condition="clear", temp_c=25.0)))
    rainy = set(CONTEXT_BOOSTS["weather"]["rain"])
    sunny_categories = set(CONTEXT_BOOSTS["weather"]["clear"]) | set(CONTEXT_BOOSTS["warm"])
    city = location["city"]

    moved = still = 0
    for item_id in real.keys() & sunny.keys():
        before, after = real[item_id], sunny[item_id]
        lost = before.category in rainy
        gained = 2 if before.category in sunny_categories else 0  # clear, and warm
        assert after.score == pytest.approx(before.score + WEIGHTS["context"] * (gained - lost))
        kept = [r for r in before.reasons if r != f"rain in {city} today"]
        assert after.reasons[:len(kept)] == kept  # graph and event reasons untouched
        supposed = after.reasons[len(kept):]
        assert supposed == ([f"{SUPPOSED}clear in {city}", f"{SUPPOSED}warm in {city}"]
                            if gained else [])
        if lost or gained:
            moved += 1
        else:
            still += 1
    assert moved and still  # both kinds of item were there to compare
    assert list(real)[:10] != list(sunny)[:10]  # and the ranking did change

    # A supposed event replaces the real upcoming ones; the real weather still counts.
    match = by_item(recommend(graph, uid, first=100, now=now,
                              what_if=WhatIf(local_event=f"{city} football match")))
    sports = [r for r in match.values() if r.category in CONTEXT_BOOSTS["event_kinds"][
        "football match"]]
    assert sports and all(f"if there were {city} football match nearby" in r.reasons
                          for r in sports)
    real_events = {reason for r in real.values() for reason in r.reasons
                   if " on 20" in reason}  # "<event name> on <date>"
    assert not real_events & {reason for r in match.values() for reason in r.reasons}
    assert all(f"rain in {city} today" in match[i].reasons for i in match
               if match[i].category in rainy)

    with pytest.raises(InvalidInput, match="unknown weather"):
        WhatIf(condition="hail")
    with pytest.raises(InvalidInput, match="localEvent"):
        WhatIf(local_event="  ")

    # The same through GraphQL, as a chatbot asks it.
    key = create_key(graph, Role.READER, "what-if").key
    query = """query($id: ID!, $w: WhatIf) { user(id: $id) {
      real: recommendations(first: 100) { itemId score reasons }
      supposed: recommendations(first: 100, whatIf: $w) { itemId score reasons } } }"""
    with TestClient(create_app(settings)) as client:
        def ask(what_if: dict[str, object]) -> dict[str, object]:
            response = client.post("/graphql", headers={"Authorization": f"Bearer {key}"},
                                   json={"query": query, "variables": {"id": uid,
                                                                       "w": what_if}})
            body: dict[str, object] = response.json()
            return body

        answer = ask({"weather": "snow", "tempC": -4})
        data = answer["data"]
        assert isinstance(data, dict)
        supposed_reasons = [r for rec in data["user"]["supposed"] for r in rec["reasons"]]
        assert f"{SUPPOSED}snow in {city}" in supposed_reasons
        assert f"{SUPPOSED}cold in {city}" in supposed_reasons
        refused = ask({"weather": "hail"})
        errors = refused["errors"]
        assert isinstance(errors, list)
        assert errors[0]["extensions"]["code"] == "BAD_USER_INPUT"
        assert "hail" in errors[0]["message"]
