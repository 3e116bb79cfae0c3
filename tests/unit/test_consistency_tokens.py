"""Consistency tokens (graph.consistency): what a write hands out decodes to what it named, and
anything else a caller sends is refused with BAD_USER_INPUT, never another error."""

from __future__ import annotations

import base64
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from graph import consistency
from graph.consistency import KafkaPosition, Token, bookmark_token, decode, kafka_token
from graph.errors import InvalidInput


def test_a_bookmark_token_round_trips_and_is_url_safe() -> None:
    token = bookmark_token({"FB:kcwQabc/+==", "FB:kcwQdef"})
    assert token.startswith("v1.")
    assert set(token[3:]) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
                                 "0123456789-_")
    assert decode(token) == Token(bookmarks=("FB:kcwQabc/+==", "FB:kcwQdef"))


def test_a_kafka_token_round_trips() -> None:
    assert decode(kafka_token("persona-events", 2, 41)) == Token(
        kafka=KafkaPosition("persona-events", 2, 41))


def raw(payload: object) -> str:
    return "v1." + base64.urlsafe_b64encode(json.dumps(payload).encode()).decode().rstrip("=")


@pytest.mark.parametrize("token", [
    "", "v1", "v1.", "v2." + kafka_token("t", 0, 1)[3:], "v1.!!!", "v1.e30",  # {}
    raw([]), raw({"b": "x"}), raw({"b": [1]}), raw({"b": ["has space"]}),
    raw({"b": ["x"] * 17}), raw({"k": ["t", 0]}), raw({"k": ["bad topic", 0, 1]}),
    raw({"k": ["t", -1, 1]}), raw({"k": ["t", 0, True]}), raw({"k": ["t", 0, 1.5]}),
    raw({"k": ["..", 0, 1]}), raw({"k": ["t", 0, 2**63]}), raw({"b": [], "k": ["t", 0, 1]}),
    "v1." + "A" * consistency.MAX_TOKEN_CHARS,
])
def test_malformed_tokens_are_bad_user_input(token: str) -> None:
    with pytest.raises(InvalidInput) as refused:
        decode(token)
    assert refused.value.code == "BAD_USER_INPUT"
    assert "`after` is not a consistency token" in str(refused.value)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=3), inner,
                                                                 max_size=3),
    max_leaves=12)


@settings(max_examples=150, deadline=None)
@given(st.one_of(st.text(max_size=200), json_values.map(raw),
                 st.dictionaries(st.sampled_from(["b", "k"]), json_values,
                                 min_size=1, max_size=1).map(raw)))
def test_any_token_decodes_or_is_refused_as_bad_input(token: str) -> None:
    try:
        decoded = decode(token)
    except InvalidInput:
        return
    # One kind of position or the other, never both.
    assert decoded.kafka is None or not decoded.bookmarks
