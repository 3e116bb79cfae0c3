from __future__ import annotations

import pytest

from graph.errors import InvalidInput
from graph.features.registry import DEFAULT_SELECTION, describe, log_scaled, select

TABLE = ["purchase_frequency", "avg_discount", "mobile_share", "age_years", "bad_weather_share",
         "explicit_preference", "share:toys", "share:books", "item_pagerank", "spectral_1",
         "spectral_2"]


def test_default_selection() -> None:
    assert select(TABLE, DEFAULT_SELECTION) == [
        "purchase_frequency", "avg_discount", "share:toys", "share:books", "item_pagerank"]
    assert select(TABLE, ["structure"]) == ["item_pagerank", "spectral_1", "spectral_2"]
    assert select(TABLE + ["item_degree"], ["structure"])[-1] == "item_degree"


def test_families_and_names_mix() -> None:
    assert select(TABLE, ["context", "age_years", "share:books"]) == [
        "age_years", "bad_weather_share", "share:books"]
    assert select(TABLE, ["preferences"]) == ["explicit_preference", "share:toys", "share:books"]


def test_bad_selections_are_clear_errors() -> None:
    with pytest.raises(InvalidInput, match="unknown feature or family 'colour'"):
        select(TABLE, ["colour"])
    with pytest.raises(InvalidInput, match="'share:garden' is not in the feature table"):
        select(TABLE, ["share:garden", "behaviour"])
    with pytest.raises(InvalidInput, match="fewer than 2 features"):
        select(TABLE, ["device"])


def test_descriptions_and_log_scale() -> None:
    assert describe("share:toys").family == "preferences"
    assert log_scaled(TABLE) == ["purchase_frequency", "item_pagerank"]
    with pytest.raises(InvalidInput):
        describe("nope")


TEXT_TABLE = TABLE + ["messages_per_session", "question_share", "topic:refund-order-late",
                      "topic:parcel-courier-track"]


def test_text_families() -> None:
    # The default selection takes the text families when the table has them, and only then.
    assert select(TEXT_TABLE, DEFAULT_SELECTION)[-4:] == [
        "messages_per_session", "question_share", "topic:refund-order-late",
        "topic:parcel-courier-track"]
    assert select(TEXT_TABLE, ["topic:*"]) == ["topic:refund-order-late",
                                               "topic:parcel-courier-track"]
    assert select(TEXT_TABLE, ["topics", "question_share"]) == [
        "question_share", "topic:refund-order-late", "topic:parcel-courier-track"]
    assert select(TEXT_TABLE, ["conversation"]) == ["messages_per_session", "question_share"]
    with pytest.raises(InvalidInput, match="'topic:billing' is not in the feature table"):
        select(TEXT_TABLE, ["topic:billing", "behaviour"])
    feature = describe("topic:refund-order-late")
    assert feature.family == "topics"
    assert feature.description.endswith("top terms are refund, order, late")
    assert log_scaled(TEXT_TABLE)[-1] == "messages_per_session"
