"""Text features on a chat-only population: topics separate users by what they talk about."""

from __future__ import annotations

import json
import random
import re
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pytest
from sklearn.metrics import adjusted_rand_score

from graph.db import Graph
from graph.events import Event
from graph.features.registry import DEFAULT_SELECTION, log_scaled, select
from graph.features.table import build_feature_table, features_of_users
from graph.features.text import CONVERSATION, HOURS, TEXT_BEHAVIOUR, TextOptions
from graph.ingest.writer import EventWriter
from graph.privacy import Pseudonymizer
from graph.segments.engine import HierarchicalSegmenter, make_preparation
from graph.segments.naming import name_segments

pytestmark = pytest.mark.integration

PRODUCTS = ("speaker", "camera", "router", "thermostat", "headphones", "watch")
SUBJECTS: dict[str, tuple[str, ...]] = {
    "billing": (
        "I was charged twice for my {p}, can I get a refund?",
        "When will the refund for the {p} arrive?",
        "My invoice shows the wrong amount",
        "Please cancel the subscription and refund the payment",
        "Why is there an extra fee on my bill?",
        "The card payment failed but the money left my account",
        "I need a copy of the invoice for the {p}",
        "Can you refund the overcharge on my credit card?",
    ),
    "shipping": (
        "Where is my parcel? The tracking has not moved",
        "The delivery of my {p} is late",
        "The courier left the package at the wrong address",
        "Can I change the delivery address for the {p}?",
        "The tracking number does not work",
        "When will the shipment with the {p} arrive?",
        "The box arrived damaged in transit",
        "Is express shipping available to my postcode?",
    ),
    "setup": (
        "How do I connect the {p} to the wifi?",
        "The app does not find my {p} during setup",
        "Which firmware version should I install on the {p}?",
        "The {p} will not pair with my phone over bluetooth",
        "How do I reset the {p} to factory settings?",
        "The setup wizard freezes at step three",
        "Where do I find the installation manual?",
        "The device keeps disconnecting after the firmware update",
    ),
}
SMALL_TALK = ("Hi there", "Hello, I have a question", "Thanks for your help", "Ok great",
              "Thank you so much", "Yes please", "Have a nice day", "One moment please")


def chat_population(users: int, seed: int, now: datetime) -> Iterator[dict[str, Any]]:
    """Chat-only users in as many groups as SUBJECTS, alike in everything but what they write
    about: the same number of sessions and messages, the same hours, the same small talk."""
    rng = random.Random(seed)
    groups = tuple(SUBJECTS)
    event_no = 0
    for index in range(users):
        group = groups[index % len(groups)]
        handle = f"chat-{seed}-{index:04d}"
        first = True
        for s in range(rng.randint(3, 6)):
            t = now - timedelta(days=rng.uniform(1, 60), hours=rng.uniform(0, 12))
            for _ in range(rng.randint(2, 5)):
                if rng.random() < 0.65:
                    text = rng.choice(SUBJECTS[group]).format(p=rng.choice(PRODUCTS))
                else:
                    text = rng.choice(SMALL_TALK)
                t += timedelta(seconds=rng.randint(20, 300))
                event_no += 1
                event: dict[str, Any] = {
                    "schema_version": 1, "event_id": f"chat-{seed}-{event_no:07d}",
                    "type": "chat_message", "source": "chat", "occurred_at": t.isoformat(),
                    "user": {"chat_handle": handle}, "session_id": f"{handle}-s{s}",
                    "properties": {"text": text, "channel": "chat"},
                }
                if first:
                    event["profile"] = {"demo_group": group}
                    first = False
                yield event


def load_chat(graph: Graph, users: int = 150, seed: int = 3) -> None:
    # Midnight, so the hours of the messages (conversation features) are the same every day.
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    events = [Event.model_validate(e) for e in chat_population(users, seed, today)]
    writer = EventWriter(graph, Pseudonymizer("k"))
    for start in range(0, len(events), 2000):
        writer.write(events[start:start + 2000])


def group_words(group: str) -> set[str]:
    """Words only the group's subject uses."""
    def words(texts: tuple[str, ...]) -> set[str]:
        return {w for t in texts for w in re.findall(r"[a-z]+", t.lower())}

    others = set().union(*(words(v) for k, v in SUBJECTS.items() if k != group))
    return words(SUBJECTS[group]) - others


def test_topics_separate_a_chat_only_population(graph: Graph) -> None:
    load_chat(graph)
    table = build_feature_table(graph, text=TextOptions())
    assert table.text is not None and table.text.used, table.text
    topics = [n for n in table.names if n.startswith("topic:")]
    assert len(topics) == len(table.topics) >= 3
    assert [t.feature for t in table.topics] == topics
    # Topic shares are proportions; every user wrote, so every user has them.
    shares = np.column_stack([table.column(n) for n in topics])
    assert np.isfinite(shares).all() and np.allclose(shares.sum(axis=1), 1.0)
    for topic in table.topics:
        assert len(topic.terms) >= 3 and all(w > 0 for _, w in topic.terms)
        assert not {t for t, _ in topic.terms} & {"hi", "thanks", "ok", "email"}

    # The default selection takes the text families, and they separate the planted groups.
    chosen = table.select(select(table.names, DEFAULT_SELECTION))
    assert set(CONVERSATION) <= set(chosen.names) and set(topics) <= set(chosen.names)
    assert not set(HOURS) & set(chosen.names)
    prep = make_preparation(chosen.names, log_scaled(chosen.names))
    Z = prep.fit_transform(chosen.X)
    model = HierarchicalSegmenter().fit(Z)
    ari = adjusted_rand_score(chosen.planted, model.labels_)
    assert model.n_clusters_ == 3 and ari >= 0.9, (model.n_clusters_, ari, model.k_reason_)

    # Named from what they talk about, with the support phrase book.
    names = name_segments(model.cluster_centers_, chosen.names, vocabulary="support")
    planted = np.array(chosen.planted)
    for c, name in enumerate(names):
        group = Counter(planted[model.labels_ == c]).most_common(1)[0][0]
        assert name.name.endswith(" Enquirers"), names
        words = {w.lower() for w in name.name.removesuffix(" Enquirers").split(" & ")}
        assert words <= group_words(group), (group, name)
        assert "talk about" in name.description


def test_conversation_features_measure_the_messages(graph: Graph) -> None:
    now = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    texts = [("Where is my parcel?", 3), ("thanks", 3), ("How do I reset it", 9),
             ("The parcel came", 14)]
    events = [Event.model_validate({
        "schema_version": 1, "event_id": f"c-{i}", "type": "chat_message", "source": "chat",
        "occurred_at": (now - timedelta(days=1, hours=-hour)).isoformat(),
        "user": {"chat_handle": "asker"}, "session_id": "s-1" if i < 2 else "s-2",
        "properties": {"text": text}}) for i, (text, hour) in enumerate(texts)]
    events.append(Event.model_validate({
        "schema_version": 1, "event_id": "q-1", "type": "search", "source": "web",
        "occurred_at": (now - timedelta(days=1, hours=-20)).isoformat(),
        "user": {"chat_handle": "asker"}, "properties": {"query": "parcel tracking"}}))
    EventWriter(graph, Pseudonymizer("k")).write(events)
    table = build_feature_table(graph, text=TextOptions(mode="on"))
    assert table.text is not None and table.text.used
    assert table.text.reason.startswith("1 of 1 users (100%) wrote at least 3 messages or "
                                        "searches, 5 in all: too little text")
    assert "text features are on" in table.text.reason
    row = {n: table.column(n)[0] for n in TEXT_BEHAVIOUR}
    assert row["messages_per_session"] == 2.0
    assert row["message_length"] == pytest.approx(np.mean([len(t) for t, _ in texts]))
    assert row["question_share"] == 0.5  # a question mark, and "How do I ..."
    assert (row["night_share"], row["morning_share"], row["afternoon_share"],
            row["evening_share"]) == (0.4, 0.2, 0.2, 0.2)
    # One user's text is too little to learn topics from: no topic columns, and the reason.
    assert table.topics == [] and "no topics" in table.text.reason
    # By default one user's five texts are too little; "off" never reads text.
    for mode, words in (("auto", "too little text (needs 50% of users"),
                        ("off", "text features are off")):
        plain = build_feature_table(graph, text=TextOptions(mode=mode))  # type: ignore[arg-type]
        assert plain.text is not None and not plain.text.used and words in plain.text.reason
        assert not set(TEXT_BEHAVIOUR) & set(plain.names) and plain.topics == []
    # A newcomer's conversation features come from the same texts, in one round trip.
    again = features_of_users(graph, table.user_ids, list(TEXT_BEHAVIOUR))
    assert np.allclose(again.X, table.select(list(TEXT_BEHAVIOUR)).X)


def test_a_run_on_a_chat_only_population_uses_topics_by_default(
        graph: Graph, monkeypatch: pytest.MonkeyPatch) -> None:
    from graph.segments.run import run_segmentation

    load_chat(graph, users=150, seed=2)
    monkeypatch.setenv("PERSONAS_PERSONA_VOCABULARY", "support")
    result = run_segmentation(graph)
    assert result.n_segments == 3 and result.planted_ari is not None
    assert result.planted_ari >= 0.9, result.k_reason
    assert all(n.name.endswith(" Enquirers") for n in result.names), result.names
    run = graph.rows("MATCH (r:SegmentationRun {id: $id}) RETURN r.features AS f",
                     id=result.run_id)[0]
    assert "question_share" in run["f"] and any(f.startswith("topic:") for f in run["f"])


def test_a_run_stores_its_topics_and_newcomers_are_placed_by_what_they_write(
        graph: Graph, tmp_path: Any) -> None:
    from graph.segments.assign import SegmentAssigner
    from graph.segments.run import run_segmentation

    load_chat(graph, users=150, seed=4)
    result = run_segmentation(graph, runs_dir=tmp_path)
    run = graph.rows("MATCH (r:SegmentationRun {id: $id}) "
                     "RETURN r.topics AS topics, r.topics_json AS json", id=result.run_id)[0]
    assert run["topics"] and all(": " in t for t in run["topics"])
    assert len(run["topics"]) == len(json.loads(run["json"]))
    # Where each planted group landed in the run.
    home = {}
    for group in SUBJECTS:
        members = graph.rows(
            "MATCH (u:User {demo_group: $g})-[:IN_SEGMENT {run_id: $run}]->(s) "
            "RETURN s.id AS s, count(*) AS n ORDER BY n DESC LIMIT 1",
            g=group, run=result.run_id)
        home[group] = members[0]["s"]
    # Newcomers of each group, after the run: the assigner reads the run's topics and projects
    # their messages on them.
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    newcomers = [Event.model_validate(e) for e in chat_population(30, 99, today)]
    EventWriter(graph, Pseudonymizer("k")).write(newcomers)
    ids = [r["id"] for r in graph.rows(
        "MATCH (u:User) WHERE NOT EXISTS { (u)-[:IN_SEGMENT]->() } RETURN u.id AS id")]
    assert len(ids) == 30
    assert SegmentAssigner(graph, tmp_path).assign(ids) == 30
    placed = graph.rows("MATCH (u:User)-[m:IN_SEGMENT {assigned_by: 'ingest'}]->(s) "
                        "RETURN u.demo_group AS g, s.id AS s")
    right = sum(home[r["g"]] == r["s"] for r in placed)
    assert right >= 27, (right, placed)


def mixed_activity_population(users: int, seed: int, now: datetime) -> Iterator[dict[str, Any]]:
    """Two groups who write about different subjects, each half brief contacts (one short
    conversation) and half regulars (about ten longer conversations over two months): the
    activity bands cut across the subjects, as in a real chat corpus, and split users more
    sharply than what they talk about."""
    rng = random.Random(seed)
    event_no = 0
    for index in range(users):
        group = ("billing", "shipping")[index % 2]
        regular = (index // 2) % 2 == 0
        handle = f"mixed-{seed}-{index:04d}"
        sessions = rng.randint(8, 12) if regular else 1
        for s in range(sessions):
            t = now - timedelta(days=rng.uniform(1, 60) if regular else rng.uniform(1, 3))
            for m in range(rng.randint(5, 8) if regular else 3):
                text = (rng.choice(SUBJECTS[group]).format(p=rng.choice(PRODUCTS))
                        if rng.random() < 0.65 else rng.choice(SMALL_TALK))
                t += timedelta(seconds=rng.randint(20, 300))
                event_no += 1
                event: dict[str, Any] = {
                    "schema_version": 1, "event_id": f"mixed-{seed}-{event_no:07d}",
                    "type": "chat_message", "source": "chat", "occurred_at": t.isoformat(),
                    "user": {"chat_handle": handle}, "session_id": f"{handle}-s{s}",
                    "properties": {"text": text, "channel": "chat"},
                }
                if s == 0 and m == 0:
                    event["profile"] = {"demo_group": group}
                yield event


def test_personas_differ_by_subject_when_activity_cuts_across_it(
        graph: Graph, monkeypatch: pytest.MonkeyPatch) -> None:
    from graph.segments.run import run_segmentation

    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    events = [Event.model_validate(e) for e in mixed_activity_population(120, 7, today)]
    EventWriter(graph, Pseudonymizer("k")).write(events)
    monkeypatch.setenv("PERSONAS_PERSONA_VOCABULARY", "support")
    result = run_segmentation(graph)
    planted = dict(graph.rows("MATCH (u:User) RETURN collect([u.id, u.demo_group]) AS p")[0]["p"])
    groups = np.array([planted[u] for u in result.user_ids])
    labels = np.array(result.labels)
    # Every persona holds one subject's users, whatever their activity.
    for c in range(result.n_segments):
        top = Counter(groups[labels == c]).most_common(1)[0]
        assert top[1] >= 0.9 * (labels == c).sum(), (c, Counter(groups[labels == c]))
    assert adjusted_rand_score(groups, labels) >= 0.9 or result.n_segments > 2
    # Named from what they talk about (a second persona of one subject may take an activity
    # phrase, names being unique), and measured as differing by it.
    assert len({n.name for n in result.names}) == result.n_segments
    named_from: set[str] = set()
    for c, name in enumerate(result.names):
        group = Counter(groups[labels == c]).most_common(1)[0][0]
        if name.name.endswith(" Enquirers"):
            words = {w.lower() for w in name.name.removesuffix(" Enquirers").split(" & ")}
            assert words <= group_words(group), (group, name)
            named_from.add(group)
    assert named_from == {"billing", "shipping"}, result.names
    separation = result.topic_separation
    assert separation is not None and separation.differ_by_topic, separation
    assert separation.distinct == result.n_segments
    run = graph.rows("MATCH (r:SegmentationRun {id: $id}) RETURN r.topic_separation AS s, "
                     "r.topic_weight AS w", id=result.run_id)[0]
    assert json.loads(run["s"])["differ_by_topic"] is True and run["w"] == 1.0
    # The same data again: the same personas, under the same ids.
    again = run_segmentation(graph)
    assert again.persona_ids == result.persona_ids and again.labels == result.labels
    assert again.agreement["new_personas"] == 0
