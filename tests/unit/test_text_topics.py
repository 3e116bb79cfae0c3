"""The topic model and conversation features, on text made here."""

from __future__ import annotations

import random

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from graph.errors import InvalidInput
from graph.features.registry import describe
from graph.features.text import (
    TextRule,
    TopicModel,
    choose_n_topics,
    conversation_row,
    is_question,
    project_topics,
    topic_agreement,
)

SUBJECTS = {
    "billing": "refund invoice payment charged card fee bill subscription overcharge credit",
    "shipping": "parcel delivery courier tracking package address shipment postcode express",
    "cooking": "recipe oven flour butter garlic pasta sauce onion simmer bake",
}


def documents(n: int, seed: int) -> tuple[list[str], list[str]]:
    rng = random.Random(seed)
    docs, groups = [], []
    for i in range(n):
        group = list(SUBJECTS)[i % 3]
        words = SUBJECTS[group].split()
        texts = [" ".join(rng.sample(words, 4)) + " thanks, hi there!" for _ in range(6)]
        texts.append("my email is [email:3fa9c0b1d2], don't call [phone:0a1b2c3d4e]")
        docs.append("\n".join(texts))
        groups.append(group)
    return docs, groups


def test_topics_are_learned_reproducibly_and_named_by_their_terms() -> None:
    docs, groups = documents(90, seed=1)
    model = TopicModel(n_topics=3).fit(docs)
    assert len(model.topics_) == 3
    for topic in model.topics_:
        words = {t for t, _ in topic.terms}
        # One subject per topic; no filler and no pseudonym tokens in any topic.
        assert sum(bool(words & set(v.split())) for v in SUBJECTS.values()) == 1, topic
        assert not words & {"thanks", "hi", "email", "phone", "don", "dont", "3fa9c0b1d2"}
        assert topic.label == "-".join(t for t, _ in topic.terms[:3])
        assert topic.feature == f"topic:{topic.label}"
        assert describe(topic.feature).family == "topics"
        assert 0 < sum(w for _, w in topic.terms) <= 1 + 1e-9
    assert [t.prevalence for t in model.topics_] == sorted(
        (t.prevalence for t in model.topics_), reverse=True)
    shares = model.transform(docs)
    assert np.allclose(shares.sum(axis=1), 1.0)
    # Each user's main topic is their subject's.
    main = shares.argmax(axis=1)
    assert all(len({g for g, m in zip(groups, main, strict=True) if m == t}) == 1
               for t in set(main))
    again = TopicModel(n_topics=3).fit(docs)
    assert again.topics_ == model.topics_ and np.allclose(again.transform(docs), shares)
    assert model.topics_[0].to_dict()["feature"] == model.topics_[0].feature
    # A document with no known term has no shares (missing, imputed later), not zeros.
    assert np.isnan(model.transform(["zzz qqq", ""])).all()
    # The top terms alone place a new document on the same topic as the model does.
    projected = project_topics(docs[:9], model.topics_)
    assert (projected.argmax(axis=1) == main[:9]).all()


def test_too_little_text_is_a_clear_error() -> None:
    with pytest.raises(InvalidInput, match="too little text to learn topics"):
        TopicModel().fit(["hello there", "thanks", ""])
    with pytest.raises(InvalidInput, match="too little text to learn topics"):
        TopicModel().fit(["refund please", "refund now"])


@settings(max_examples=60, deadline=None)
@given(st.lists(st.text(max_size=80), max_size=30))
def test_any_text_gives_topics_or_a_clear_error(docs: list[str]) -> None:
    try:
        model = TopicModel(n_topics=3).fit(docs)
    except InvalidInput as exc:
        assert "too little text" in str(exc)
    else:
        shares = model.transform(docs)
        assert shares.shape == (len(docs), len(model.topics_))
        known = ~np.isnan(shares).any(axis=1)
        assert np.allclose(shares[known].sum(axis=1), 1.0)


def test_number_of_topics_is_the_one_resamples_agree_on() -> None:
    # Three subjects: three topics reappear in every resample of the writers; with more, the
    # extra topics are arbitrary cuts of a subject and change between resamples.
    docs, groups = documents(90, seed=5)
    model = TopicModel().fit(docs)
    assert len(model.topics_) == 3, model.agreement_by_n_
    scores = model.agreement_by_n_
    assert scores[3] == max(scores.values()) and scores[3] > scores[6] + 0.1, scores
    main = model.transform(docs).argmax(axis=1)
    assert all(len({g for g, m in zip(groups, main, strict=True) if m == t}) == 1
               for t in set(main))
    X = model.vectorizer_.transform(docs)
    assert choose_n_topics(X, range(3, 7))[0] == 3


def test_topic_agreement_pairs_topics_by_their_top_terms() -> None:
    a = np.array([[5.0, 4, 3, 0, 0, 0], [0, 0, 0, 3, 4, 5]])
    assert topic_agreement(a, a[::-1], top=3) == 1.0
    half = np.array([[5.0, 4, 0, 3, 0, 0], [0, 0, 3, 0, 4, 5]])
    assert topic_agreement(a, half, top=3) == pytest.approx(0.5)


def test_questions() -> None:
    assert is_question("Where is my parcel?")
    assert is_question("how do i reset it")
    assert is_question("Can't log in")
    assert not is_question("The parcel came, thanks")
    assert not is_question("Have a nice day")
    assert not is_question("")
    assert not is_question("12 34")


def test_conversation_row() -> None:
    texts = [
        {"type": "chat_message", "text": "Where is it?", "hour": 2, "session": "a"},
        {"type": "chat_message", "text": "ok", "hour": 23, "session": "a"},
        {"type": "chat_message", "text": "hello", "hour": 13, "session": None},
        {"type": "search", "text": "parcel", "hour": 8, "session": "a"},
    ]
    row = conversation_row(texts)
    assert row["messages_per_session"] == 1.5  # 3 messages, session "a" and one without
    assert row["message_length"] == pytest.approx((12 + 2 + 5) / 3)
    assert row["question_share"] == pytest.approx(1 / 3)
    assert [row[k] for k in ("night_share", "morning_share", "afternoon_share",
                             "evening_share")] == [0.25, 0.25, 0.25, 0.25]
    searches_only = conversation_row([texts[3]])
    assert searches_only["messages_per_session"] == 0.0
    assert np.isnan(searches_only["message_length"]) and searches_only["morning_share"] == 1.0
    assert all(np.isnan(v) for k, v in conversation_row([]).items()
               if k != "messages_per_session")


def test_text_rule() -> None:
    rule = TextRule()
    assert rule.verdict(100, 50, 200)[0]
    assert not rule.verdict(100, 49, 5000)[0]
    assert not rule.verdict(100, 90, 199)[0]
    assert not rule.verdict(0, 0, 0)[0]
    assert rule.verdict(240, 91, 2835)[1] == (
        "91 of 240 users (38%) wrote at least 3 messages or searches, 2835 in all: too little "
        "text (needs 50% of users and 200 texts)")
