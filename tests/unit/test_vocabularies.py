"""Phrase books: every shipped book loads and names segments; bad books are clear errors."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from graph.errors import ConfigurationError, InvalidInput
from graph.segments.naming import distinct_terms, name_segments
from graph.segments.vocabularies import SHIPPED, load_vocabulary, parse_vocabulary
from graph.settings import Settings

FEATURES = ["purchase_frequency", "avg_discount", "tenure_days", "session_count",
            "views_per_session", "item_pagerank", "question_share", "night_share",
            "share:horror", "share:comedy", "topic:refund-order-late", "topic:parcel-courier-track"]
# Six segments, each standing out on something different (features x segments, in z-scores).
CENTRES = np.array([
    [2.0, 0, 0, 0.5, 0, 0, 0, 0, 0, 0, 0, 0],       # buy often
    [0, 0, -1.8, -1.5, 0, 0, 0, 0, 0, 0, 0, 0],     # new
    [0, 0, 0, 0, 1.9, 0, 0.2, 0, 0, 0, 0, 0],       # many pages per visit
    [0, 0, 0, 0.4, 0, 0, 0, 0, 2.2, -0.5, 0, 0],    # horror
    [0, 0, 0, 0, 0, 0, 1.0, 0.3, 0, 0, 2.4, -0.6],  # refunds
    [0, 0, 0, 0, 0, 1.6, 0, 1.7, 0, 0, -0.6, 0.2],  # central, at night
])


@pytest.mark.parametrize("book", SHIPPED)
def test_every_shipped_book_names_distinct_segments(book: str) -> None:
    vocabulary = load_vocabulary(book)
    assert vocabulary.name == book
    names = name_segments(CENTRES, FEATURES, vocabulary=vocabulary)
    assert len({n.name for n in names}) == len(names) == 6
    assert not any(n.name.startswith("Segment ") for n in names), names
    for n in names:
        assert n.description.startswith("Users who ") and n.description.endswith(".")
        assert len(n.why) == 3
    # The share-dominated segments are named from their category and topic, in every book.
    assert "Horror" in names[3].name and "Refund & Order" in names[4].name, names
    # Same centres, same names.
    assert name_segments(CENTRES, FEATURES, vocabulary=book) == names


def test_books_speak_their_domain() -> None:
    def named(book: str) -> list[str]:
        return [n.name for n in name_segments(CENTRES, FEATURES, vocabulary=book)]

    assert named("retail")[:3] == ["Frequent Shoppers", "New Visitors", "Window Shoppers"]
    assert named("media")[2] == "Binge Watchers"
    assert named("media")[3] == "Horror Fans"
    assert named("travel")[0] == "Frequent Travellers"
    assert named("support")[4] == "Refund & Order Enquirers"
    description = name_segments(CENTRES, FEATURES, vocabulary="support")[4].description
    assert description.startswith("Users who talk about refund, order, late, ask many questions")


def test_a_share_dominated_segment_is_named_from_its_category() -> None:
    features = ["purchase_frequency", "session_count", "share:toys"]
    # Toys stand out most, with some frequent buying: the category names the segment, although
    # "Frequent Shoppers" (1.0 x 1.3) outweighs "Toys Fans" (1.6 x 0.6) in the retail book.
    centres = np.array([[1.0, 0.2, 1.6], [-1.0, -0.2, -1.6]])
    names = name_segments(centres, features, vocabulary="retail")
    assert names[0].name == "Toys Fans"
    assert names[0].description == "Users who favour toys, buy often, visit often."
    # A close call goes to the weighted phrase: 1.2 is less than 1.25 x 1.0.
    close = np.array([[1.0, 0.2, 1.2], [-1.0, -0.2, -1.2]])
    assert name_segments(close, features, vocabulary="retail")[0].name == "Frequent Shoppers"
    # A category's low share never names a segment.
    assert name_segments(centres, features, vocabulary="retail")[1].name != "Toys Fans"


LAPSED = {"retail": "Lapsed One-Time Buyers", "media": "Lapsed One-Time Viewers",
          "support": "Past One-Time Contacts", "travel": "Lapsed One-Time Travellers"}
NEW = {"retail": "New Visitors", "media": "Newcomers", "support": "New Customers",
       "travel": "First-Time Planners"}


@pytest.mark.parametrize("book", SHIPPED)
def test_short_tenure_is_new_only_when_recent(book: str) -> None:
    # CDNOW's one-off 1997 buyers: short tenure, few sessions, and a long absence. They are
    # lapsed, not new; the same short tenure seen recently is new.
    features = ["tenure_days", "session_count", "recency_days", "purchase_frequency"]
    lapsed = np.array([[-1.2, -0.9, 1.1, 0.0], [1.2, 0.9, -1.1, 0.0]])
    names = name_segments(lapsed, features, vocabulary=book)
    assert names[0].name == LAPSED[book], names
    recent = np.array([[-1.2, -0.9, -0.8, 0.0], [1.2, 0.9, 0.8, 0.0]])
    assert name_segments(recent, features, vocabulary=book)[0].name == NEW[book]
    # Both kinds in one population: distinct names, the same on every call.
    both = np.vstack([lapsed[0], recent[0], [0.3, 0.2, -0.1, 1.8]])
    named = [n.name for n in name_segments(both, features, vocabulary=book)]
    assert named[:2] == [LAPSED[book], NEW[book]] and len(set(named)) == 3
    assert [n.name for n in name_segments(both, features, vocabulary=book)] == named


ONE_ORDER_FEATURES = ["purchase_frequency", "avg_order_value", "recency_days", "tenure_days",
                      "session_count", "peak_month_share", "item_pagerank"]
# The centres (z-scores) measured on CDNOW's 5,000-customer sample at k=4: one order each
# (tenure 0, one session, every purchase in one month, so orders per month and the busiest
# month's share are high only trivially), loyal repeat buyers, heavy buyers, frequent buyers.
ONE_ORDER_CENTRES = np.array([
    [0.32, -0.1, 0.6, -0.94, -0.77, 0.88, -0.55],
    [-1.08, 0.1, -0.74, 1.12, 0.63, -0.96, 0.3],
    [0.3, 0.76, -1.66, 1.24, 2.4, -1.5, 2.78],
    [1.73, 0.0, 0.52, 0.1, 0.2, -0.2, 0.1],
])
SEASON_OR_FREQUENCY = ("Seasonal", "Season", "Frequent")


@pytest.mark.parametrize("book", SHIPPED)
def test_one_order_buyers_are_one_time_not_seasonal_or_frequent(book: str) -> None:
    names = name_segments(ONE_ORDER_CENTRES, ONE_ORDER_FEATURES, vocabulary=book)
    assert names[0].name == LAPSED[book], names
    assert not any(word in names[0].description for word in ("one season", "often", "new"))
    # Frequency with a real tenure still names the frequent buyers.
    assert "Frequent" in names[3].name, names
    # Seen recently, the same one-order users are new, still neither seasonal nor frequent.
    recent = ONE_ORDER_CENTRES.copy()
    recent[0, 2] = -0.6
    first = name_segments(recent, ONE_ORDER_FEATURES, vocabulary=book)[0]
    assert first.name == NEW[book], first
    assert not any(word in first.name for word in SEASON_OR_FREQUENCY)


def test_the_default_book_comes_from_the_settings(monkeypatch: pytest.MonkeyPatch,
                                                  tmp_path: Path) -> None:
    centres = np.array([[0.0, 1.9, 0.0], [0.0, -1.9, 0.0]])
    features = ["purchase_frequency", "views_per_session", "session_count"]
    assert name_segments(centres, features)[0].name == "Window Shoppers"
    monkeypatch.setenv("PERSONAS_PERSONA_VOCABULARY", "media")
    assert name_segments(centres, features)[0].name == "Binge Watchers"
    own = _retail()
    own["name"] = "garden centre"
    own["features"]["views_per_session"]["high"]["phrase"] = "Plant Browsers"
    path = tmp_path / "garden.yaml"
    path.write_text(yaml.safe_dump(own), encoding="utf-8")
    monkeypatch.setenv("PERSONAS_PERSONA_VOCABULARY", str(path))
    assert name_segments(centres, features)[0].name == "Plant Browsers"


def _book_text(name: str) -> str:
    from graph.segments.vocabularies import HERE

    return (HERE / f"{name}.yaml").read_text(encoding="utf-8")


def _retail() -> dict[str, Any]:
    data = yaml.safe_load(_book_text("retail"))
    assert isinstance(data, dict)
    return data


@pytest.mark.parametrize(("change", "message"), [
    (lambda b: b["features"].update({"purchse_frequency": {"high": {"phrase": "X"}}}),
     "features: unknown feature 'purchse_frequency'"),
    (lambda b: b["features"]["avg_discount"]["high"].update({"wieght": 2}),
     "features.avg_discount.high.wieght: unknown key"),
    (lambda b: b["features"]["avg_discount"]["high"].update({"weight": -1}),
     "features.avg_discount.high.weight: Input should be greater than 0"),
    (lambda b: b["category"].update({"phrase": "Fans"}),
     "category.phrase: 'Fans' must contain {category}"),
    (lambda b: b["topic"].update({"phrase": "{subject} Talkers"}),
     "topic.phrase: unknown placeholder {subject}"),
    (lambda b: b.pop("topic"), "topic: Field required"),
    (lambda b: b.update({"dominance": 0.5}), "dominance: Input should be greater than or equal"),
    (lambda b: b["category"].update({"high": "favour {category"}), "not a valid template"),
    (lambda b: b["combinations"][0]["when"].update({"tenure": "low"}),
     "combinations.0.when: unknown feature 'tenure'"),
    (lambda b: b["combinations"][0].update({"when": {"tenure_days": "low"}}),
     "combinations.0.when: Dictionary should have at least 2 items"),
    (lambda b: b["features"]["tenure_days"]["low"].update({"unless": {"recency": "high"}}),
     "features.tenure_days.low.unless: unknown feature 'recency'"),
])
def test_bad_books_name_the_problem(tmp_path: Path, change: Callable[[dict[str, Any]], object],
                                   message: str) -> None:
    book = _retail()
    change(book)
    path = tmp_path / "book.yaml"
    path.write_text(yaml.safe_dump(book), encoding="utf-8")
    with pytest.raises(InvalidInput, match=str(path)) as caught:
        load_vocabulary(str(path))
    assert message in str(caught.value)


def test_unreadable_books_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="no shipped phrase book 'sports'; choose from media, "
                                           "retail, support, travel"):
        load_vocabulary("sports")
    with pytest.raises(InvalidInput, match="no such phrase book file"):
        load_vocabulary(str(tmp_path / "missing.yaml"))
    broken = tmp_path / "broken.yaml"
    broken.write_text("name: [unclosed\n", encoding="utf-8")
    with pytest.raises(InvalidInput, match="not valid YAML"):
        load_vocabulary(str(broken))
    listed = tmp_path / "list.yaml"
    listed.write_text("- a\n- b\n", encoding="utf-8")
    with pytest.raises(InvalidInput, match="a phrase book is a mapping"):
        load_vocabulary(str(listed))
    # The setting is checked when the settings are made, not after a clustering.
    with pytest.raises(ConfigurationError, match="PERSONAS_PERSONA_VOCABULARY: .*no such"):
        Settings(persona_vocabulary=str(tmp_path / "missing.yaml"))


@settings(max_examples=200, deadline=None)
@given(st.recursive(
    st.none() | st.booleans() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4)
    | st.dictionaries(st.sampled_from(["name", "features", "category", "topic", "phrase",
                                       "weight", "high", "low", "wording", "dominance",
                                       "avg_discount", "x"]), inner, max_size=5),
    max_leaves=20))
def test_any_parsed_yaml_is_a_book_or_a_clear_error(data: object) -> None:
    try:
        book = parse_vocabulary(data, "book.yaml")
    except InvalidInput as exc:
        assert str(exc).startswith("book.yaml: ")
    else:
        assert book.name and book.category.phrase and book.topic.phrase


def test_a_topic_is_not_named_twice_by_a_plural_and_its_singular() -> None:
    # Real chat topics came out as "classes-class-school" and "movies-movie-marvel".
    features = ["session_count", "topic:classes-class-school", "topic:movies-movie-marvel"]
    centres = np.array([[0.1, 2.0, -0.5], [-0.1, -0.5, 2.0]])
    names = name_segments(centres, features, vocabulary="support")
    assert [n.name for n in names] == ["Classes & School Enquirers", "Movies & Marvel Enquirers"]
    assert names[0].description.startswith("Users who talk about classes, school")
    assert distinct_terms(["box", "boxes", "class", "classes", "glass"]) == ["box", "class",
                                                                               "glass"]
