"""The consent policy holds on open streams (issue 19, role leaks through subscriptions): a
chatbot key's `personaChanged` tells nothing of a user who withdrew personalization consent,
as `User.persona` answers null for them, while an analyst key (exempt) still sees the change."""

from __future__ import annotations

import time
from typing import Any

import pytest
from fastapi.testclient import TestClient
from neo4j import Driver

from api.app import create_app
from graph.auth import Role, create_key
from graph.profile import queries
from graph.segments.run import run_segmentation
from graph.settings import Settings
from graph.subjects.consent import set_consent
from tests.helpers import empty_graph, load_demo
from tests.integration.test_api_chatbot import polls_counted, receive, subscribe

pytestmark = pytest.mark.integration

CHANGES = ("subscription($u: ID!) { personaChanged(userId: $u) { userId persona { id } "
           "previous { id } } }")


def test_a_chatbot_stream_tells_nothing_of_a_user_without_consent(
        driver: Driver, settings: Settings, tmp_path: Any,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """One user of each of 4 personas withdraws personalization consent, then a k=2 run
    retires at least two personas: the analyst's streams get the changes, the reader's none,
    though each reader stream polled three times after the analyst's last change arrived."""
    graph = empty_graph(driver, settings)
    load_demo(graph, tmp_path, 40, seed=42, key=settings.pseudonym_key.get_secret_value())
    run_segmentation(graph, n_clusters=4)
    watched = [r["user"] for r in graph.rows(
        "MATCH (u:User)-[h:HAD_PERSONA]->(p:Persona) WHERE h.valid_to IS NULL "
        "WITH p, min(u.id) AS user RETURN user ORDER BY user")]
    assert len(watched) == 4
    for user in watched:
        set_consent(graph, user, "personalization", False, source="test")
    reader = create_key(graph, Role.READER, "stream reader").key
    analyst = create_key(graph, Role.ANALYST, "stream analyst").key
    fast = settings.model_copy(update={"api_subscription_poll_seconds": 0.2,
                                       "api_key_rate_per_second": 0.0})
    polls = polls_counted(monkeypatch)
    with TestClient(create_app(fast)) as client, \
            client.websocket_connect("/graphql", subprotocols=["graphql-transport-ws"],
                                     headers={"Authorization": f"Bearer {reader}"}) as chatbot, \
            client.websocket_connect("/graphql", subprotocols=["graphql-transport-ws"],
                                     headers={"Authorization": f"Bearer {analyst}"}) as analysis:
        for ws in (chatbot, analysis):
            ws.send_json({"type": "connection_init"})
            assert ws.receive_json()["type"] == "connection_ack"
            for user in watched:
                subscribe(ws, user, CHANGES, u=user)
        deadline = time.monotonic() + 60
        while any(polls[(queries.CURRENT_PERSONA_PERIOD, user)] < 3 for user in watched):
            assert time.monotonic() < deadline, polls
            time.sleep(0.05)
        run_segmentation(graph, n_clusters=2)
        changed: dict[str, Any] = {}
        while len(changed) < 2:
            msg = receive(analysis)
            assert msg["type"] == "next", msg
            changed[msg["id"]] = msg["payload"]["data"]["personaChanged"]
        # The analyst's streams poll beside the reader's: three more polls of theirs each.
        seen = {user: polls[(queries.CURRENT_PERSONA_PERIOD, user)] for user in watched}
        deadline = time.monotonic() + 60
        while any(polls[(queries.CURRENT_PERSONA_PERIOD, user)] < seen[user] + 3
                  for user in watched):
            assert time.monotonic() < deadline, polls
            time.sleep(0.05)
        chatbot.send_json({"type": "ping"})
        answer = receive(chatbot)
    assert answer["type"] == "pong", answer  # no `next` before it
    assert all(change["previous"]["id"] != change["persona"]["id"]
               for change in changed.values())
