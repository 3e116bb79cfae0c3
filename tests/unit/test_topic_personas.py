"""Personas of a text-rich population differ by what people talk about: the topic family's
weight in the preparation, the naming from topics, and the measure of separation."""

from __future__ import annotations

import random

import numpy as np
import pytest
from sklearn.metrics import adjusted_rand_score

from graph.features.registry import log_scaled
from graph.features.table import FeatureTable
from graph.features.text import TopicModel
from graph.segments.engine import Family, HierarchicalSegmenter, make_preparation
from graph.segments.naming import name_segments
from graph.segments.run import preparation, share_led
from graph.segments.separation import topic_separation

GENERIC = ("people time think day week friends weekend work home life music game night summer "
           "family today morning world city story fun")
SUBJECTS = {
    "space": "rocket planet orbit telescope astronaut moon galaxy mars launch nasa",
    "cooking": "recipe oven flour butter garlic pasta sauce onion bake dough",
}
BEHAVIOUR = ["session_count", "tenure_days", "messages_per_session", "message_length",
             "question_share"]


def chat_table(users: int = 160, seed: int = 1) -> tuple[FeatureTable, list[str], np.ndarray]:
    """Two subjects, each half regulars (8-30 conversations over months) and half brief
    contacts (one or two): as in a real chat corpus, most words are small talk (85%), and
    activity differs far more sharply between the bands than the subjects' words do."""
    rng = random.Random(seed)
    docs, rows, groups, regular = [], [], [], []
    for i in range(users):
        group = ("space", "cooking")[i % 2]
        often = (i // 2) % 2 == 0
        sessions = rng.randint(8, 30) if often else rng.randint(1, 2)
        words = [rng.choice(SUBJECTS[group].split()) if rng.random() < 0.15
                 else rng.choice(GENERIC.split())
                 for _ in range(min(sessions * 10, 60) * 6)]
        docs.append(" ".join(words))
        rows.append([sessions, rng.uniform(20, 60) if often else rng.uniform(0, 2),
                     rng.uniform(8, 14), rng.uniform(20, 60), rng.uniform(0.2, 0.4)])
        groups.append(group)
        regular.append(often)
    model = TopicModel().fit(docs)
    names = BEHAVIOUR + [t.feature for t in model.topics_]
    X = np.column_stack([np.array(rows), model.transform(docs)])
    table = FeatureTable([f"u{i}" for i in range(users)], names, X, dict.fromkeys(names, ""),
                         topics=model.topics_)
    return table, groups, np.array(regular, dtype=np.int64)


@pytest.fixture(scope="module")
def chat() -> tuple[FeatureTable, list[str], np.ndarray]:
    return chat_table()


def test_topic_family_makes_personas_of_subjects_not_activity_bands(
        chat: tuple[FeatureTable, list[str], np.ndarray]) -> None:
    table, groups, regular = chat
    plain = HierarchicalSegmenter().fit(
        make_preparation(table.names, log_scaled(table.names)).fit_transform(table.X))
    # Every feature z-scored on its own: the activity bands split the subjects.
    assert adjusted_rand_score(groups, plain.labels_) < 0.6, plain.k_reason_
    Z = preparation(table.names).fit_transform(table.X)
    model = HierarchicalSegmenter().fit(Z)
    assert model.n_clusters_ == 2 and adjusted_rand_score(groups, model.labels_) >= 0.95
    assert model.stability_ >= 0.9
    # The topics made these segments, so they are named from them, in the subjects' words.
    led = share_led(model.cluster_centers_, Z.mean(axis=0), table.names)
    assert led == [True, True]
    Zn = make_preparation(table.names, log_scaled(table.names)).fit_transform(table.X)
    centres = np.vstack([Zn[model.labels_ == c].mean(axis=0) for c in range(2)])
    names = name_segments(centres, table.names, vocabulary="support", share_led=led)
    for c, name in enumerate(names):
        group = groups[int(np.flatnonzero(model.labels_ == c)[0])]
        words = {w.lower() for w in name.name.removesuffix(" Enquirers").split(" & ")}
        assert name.name.endswith(" Enquirers") and words <= set(SUBJECTS[group].split()), name


def test_separation_tells_topic_personas_from_activity_bands(
        chat: tuple[FeatureTable, list[str], np.ndarray]) -> None:
    table, groups, regular = chat
    by_subject = np.array([g == "space" for g in groups], dtype=np.int64)
    unnamed = [name_segments(np.zeros((2, len(table.names))), table.names)[0]] * 2
    subjects = topic_separation(table, by_subject, unnamed)
    assert subjects is not None and subjects.differ_by_topic
    assert subjects.distinct == 2 and subjects.signatures == 2 and subjects.kruskal_p < 1e-6
    bands = topic_separation(table, regular, unnamed)
    assert bands is not None and not bands.differ_by_topic, bands
    assert subjects.to_dict()["personas"][0]["distinct"] is True
    no_topics = table.select(BEHAVIOUR)
    assert topic_separation(no_topics, by_subject, unnamed) is None


def test_family_scaler_weighs_each_family_as_given() -> None:
    rng = np.random.default_rng(0)
    shares = rng.dirichlet([1, 1, 1], size=200)
    X = np.column_stack([rng.normal(0, 5, (200, 6)), shares])
    names = [f"b{i}" for i in range(6)] + ["topic:a", "topic:b", "topic:c"]
    prep = make_preparation(names, [], clip=None, families=[
        Family("topics", ("topic:a", "topic:b", "topic:c"), 2.0, compositional=True)])
    Z = prep.fit_transform(X)
    spread = lambda cols: float(np.sqrt((Z[:, cols] ** 2).sum(axis=1).mean()))  # noqa: E731
    assert spread(slice(0, 6)) == pytest.approx(1.0) and spread(slice(6, 9)) == pytest.approx(2.0)
    # Shares keep their proportions: centred and scaled alike, not z-scored one by one.
    ratio = Z[:, 6:].std(axis=0) / shares.std(axis=0)
    assert np.allclose(ratio, ratio[0])
