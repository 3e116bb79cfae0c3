"""What real data needs the envelope to say: line totals, an under-18 band, declared profile
attributes (events, CSV columns, CRM mappings), and that any JSON object is either an event or a
clear validation error."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from graph.crm.mapping import parse_mapping, parse_record, redact, target_of
from graph.errors import InvalidInput
from graph.events import AGE_BANDS, MAX_ATTRIBUTES, Event, Properties, describe_validation_error
from graph.ingest.reader import Parsed, Reject, csv_row_to_envelope, validate
from graph.privacy import Pseudonymizer, coarsen_postal_code

PSEUDO = Pseudonymizer("k")


def base(**kw: Any) -> dict[str, Any]:
    e: dict[str, Any] = {"event_id": "e1", "type": "page_view",
                         "occurred_at": "2026-11-01T12:00:00+02:00", "user": {"cookie": "c"}}
    e.update(kw)
    return e


def reason(data: dict[str, Any]) -> str:
    with pytest.raises(ValidationError) as caught:
        Event.model_validate(data)
    return describe_validation_error(caught.value.errors())


# ---- line totals -----------------------------------------------------------------------------

def test_a_purchase_may_give_its_line_total_instead_of_a_unit_price() -> None:
    e = Event.model_validate(base(type="purchase", properties={
        "item_id": "i", "amount": "26.1", "quantity": 4}))
    assert e.properties.amount == Decimal("26.10") and e.properties.price is None
    assert e.properties.line_total() == Decimal("26.10")


def test_the_line_total_wins_over_price_times_quantity() -> None:
    # 4 x 6.53 = 26.12, but the till said 26.10 (a rounding, a multi-buy): the total is the fact.
    both = Properties(item_id="i", price=Decimal("6.53"), quantity=4, amount=Decimal("26.10"))
    assert both.line_total() == Decimal("26.10")
    assert Properties(item_id="i", price=Decimal("6.53"), quantity=4).line_total() == \
        Decimal("26.12")
    assert Properties(item_id="i").line_total() is None


@pytest.mark.parametrize(("props", "expected"), [
    ({"item_id": "i"},
     "purchase event needs properties ['price'] (or 'amount' instead of 'price')"),
    ({"item_id": "i", "amount": "-0.01"}, "properties.amount: an amount must not be negative"),
    ({"item_id": "i", "amount": "1.005"}, "properties.amount: Decimal input should have no more "
                                          "than 2 decimal places"),
    ({"item_id": "i", "amount": "NaN"}, "properties.amount"),
    ({"item_id": "i", "amount": "1e20"}, "properties.amount"),
])
def test_bad_line_totals_are_refused_with_the_reason(props: dict[str, Any], expected: str) -> None:
    assert expected in reason(base(type="purchase", properties=props))


# ---- age bands -------------------------------------------------------------------------------

def test_under_18_is_a_band() -> None:
    assert AGE_BANDS[0] == "under-18"
    e = Event.model_validate(base(profile={"age_band": "under-18"}))
    assert e.profile is not None and e.profile.age_band == "under-18"
    assert "profile.age_band" in reason(base(profile={"age_band": "0-17"}))


def test_a_crm_mapping_may_name_the_under_18_band() -> None:
    mapping = parse_mapping({"source": "crm", "timestamp": "at", "columns": {
        "id": {"target": "crm_id"},
        "age": {"target": "age_band", "type": "enum", "values": ["under-18", "18-24"]}}})
    record = parse_record(mapping, {"id": "C-1", "age": "under-18",
                                    "at": "2026-11-01T10:00:00Z"}, PSEUDO)
    assert record.fields == {"age_band": "under-18"}


# ---- declared attributes -------------------------------------------------------------------

def test_declared_attributes_are_validated_names_with_short_text_values() -> None:
    e = Event.model_validate(base(profile={"attributes": {
        "occupation": " nurse ", "postal_code": "SW1A 1AA", "household_2": "4"}}))
    assert e.profile is not None
    assert e.profile.attributes == {"occupation": "nurse", "postal_code": "SW1A 1AA",
                                    "household_2": "4"}


@pytest.mark.parametrize(("attributes", "expected"), [
    ({"Occupation": "x"}, "attribute name 'Occupation' must be lower-case letters"),
    ({"2nd_job": "x"}, "must be lower-case letters, digits and underscores, starting with a"),
    ({"a" * 41: "x"}, "at most 40 characters"),
    ({"job title": "x"}, "must be lower-case letters"),
    ({"occupation; DROP": "x"}, "must be lower-case letters"),
    ({"email": "x"}, "attribute 'email' would name a person"),
    ({"date_of_birth": "2001-02-03"}, "attribute 'date_of_birth' would name a person"),
    ({"occupation": ""}, "profile.attributes.occupation: String should have at least 1 char"),
    ({"occupation": "x" * 201}, "at most 200 characters"),
    ({"occupation": 7}, "profile.attributes.occupation: Input should be a valid string"),
    ({f"a{n}": "x" for n in range(MAX_ATTRIBUTES + 1)}, "at most 20 attributes, got 21"),
])
def test_bad_attributes_are_refused_with_the_reason(attributes: dict[str, Any],
                                                    expected: str) -> None:
    assert expected in reason(base(profile={"attributes": attributes}))


def test_csv_attr_columns_become_declared_attributes() -> None:
    data = csv_row_to_envelope({"event_id": "e1", "type": "purchase",
                                "occurred_at": "2026-11-01T10:00:00Z", "user_cookie": "c",
                                "attr_occupation": "teacher", "attr_postal_code": "",
                                "item_id": "i", "amount": "26.10", "quantity": "4"})
    assert data["profile"] == {"attributes": {"occupation": "teacher"}}
    parsed = validate(2, data, "")
    assert isinstance(parsed, Parsed)
    assert parsed.event.properties.amount == Decimal("26.10")


@pytest.mark.parametrize(("code", "kept"), [
    ("SW1A 1AA", "SW1A"), ("sw1a1aa", "SW1A"), ("M1 1AE", "M1"), ("EC1A 1BB", "EC1A"),
    ("94107", "941"), ("94107-1234", "941"), ("K1A 0B1", "K1A"), ("10115", "101"), ("12", "12"),
])
def test_postal_codes_are_kept_coarsened(code: str, kept: str) -> None:
    assert coarsen_postal_code(code) == kept
    assert PSEUDO.attribute_value("postal_code", code) == kept
    assert PSEUDO.attribute_value("zip", code) == kept


def test_other_attribute_values_have_contact_details_pseudonymized() -> None:
    value = PSEUDO.attribute_value("occupation", "nurse, ask jane@example.com")
    assert value.startswith("nurse, ask [email:") and "jane" not in value
    assert PSEUDO.attribute_value("occupation", "nurse") == "nurse"


def test_a_crm_mapping_feeds_declared_attributes_through_the_same_policy() -> None:
    mapping = parse_mapping({"source": "crm", "timestamp": "at", "columns": {
        "id": {"target": "crm_id"}, "job": {"target": "attr_occupation"},
        "zip": {"target": "attr_postal_code"}}})
    record = parse_record(mapping, {"id": "C-1", "job": "Nurse", "zip": "SW1A 1AA",
                                    "at": "2026-11-01T10:00:00Z"}, PSEUDO)
    assert record.fields == {"attr_occupation": "Nurse", "attr_postal_code": "SW1A"}
    target = target_of("attr_occupation")
    assert target is not None and target.kind == "attribute" and not target.sensitive
    # A dead letter keeps the value as it would be stored, never the full postal code.
    out = redact(mapping, {"id": "C-1", "zip": "SW1A 1AA", "at": "x"}, PSEUDO)
    assert out["zip"] == "SW1A" and out["id"].startswith("[crm_id:")


@pytest.mark.parametrize(("columns", "expected"), [
    ({"job": {"target": "attr_Job"}}, "column 'job': target 'attr_Job': attribute name 'Job'"),
    ({"mail": {"target": "attr_email"}}, "column 'mail': target 'attr_email': attribute 'email' "
                                         "would name a person"),
    ({"job": {"target": "attr_occupation", "type": "int"}},
     "target 'attr_occupation' cannot hold type 'int'; use enum or string"),
    ({f"c{n}": {"target": f"attr_a{n}"} for n in range(MAX_ATTRIBUTES + 1)},
     "21 columns feed declared attributes; at most 20"),
])
def test_bad_attribute_mappings_are_refused(columns: dict[str, Any], expected: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        parse_mapping({"source": "crm", "timestamp": "at",
                       "columns": {"id": {"target": "crm_id"}, **columns}})
    assert expected in str(caught.value)


def test_a_crm_attribute_value_over_the_limit_is_refused() -> None:
    mapping = parse_mapping({"source": "crm", "timestamp": "at", "columns": {
        "id": {"target": "crm_id"}, "job": {"target": "attr_occupation"}}})
    with pytest.raises(InvalidInput, match="column 'job' .*longer than 200 characters"):
        parse_record(mapping, {"id": "C-1", "job": "x" * 201, "at": "2026-11-01T10:00:00Z"},
                     PSEUDO)


# ---- any JSON object: an event or a clear validation error ------------------------------------

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=30),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=12)
SCALARS = (st.none() | st.booleans() | st.integers(-10, 10**15)
           | st.floats(allow_nan=False, allow_infinity=False)
           | st.sampled_from(["", " ", "1", "-1", "12.50", "1.005", "1e99", "NaN", "x" * 250,
                              "under-18", "purchase", "feedback", "2026-11-01T10:00:00Z",
                              "2026-11-01T10:00:00", "occupation", "SW1A 1AA"])
           | st.text(max_size=12))
PROPERTY_NAMES = st.sampled_from(["item_id", "category", "price", "amount", "quantity",
                                  "discount", "rating", "text", "query", "brand", "bogus"])
ATTRIBUTE_NAMES = st.sampled_from(["occupation", "postal_code", "email", "Bad", "", "a" * 41,
                                   "x1"]) | st.text(max_size=8)
NEAR_EVENTS = st.fixed_dictionaries(
    {"event_id": SCALARS, "type": st.sampled_from(["purchase", "feedback", "page_view", "chat"]),
     "occurred_at": st.sampled_from(["2026-11-01T10:00:00Z", "2026-11-01T10:00:00", "x", 5]),
     "user": st.dictionaries(st.sampled_from(["cookie", "email", "passport"]), SCALARS,
                             max_size=2)},
    optional={
        "session_id": SCALARS,
        "profile": st.fixed_dictionaries({}, optional={
            "age_band": SCALARS,
            "attributes": st.dictionaries(ATTRIBUTE_NAMES, SCALARS, max_size=3) | JSON}),
        "properties": st.dictionaries(PROPERTY_NAMES, SCALARS, max_size=6) | JSON,
    })


def _event_or_validation_error(data: dict[str, Any]) -> None:
    try:
        Event.model_validate(data)
    except ValidationError as exc:
        assert describe_validation_error(exc.errors())
    record = validate(1, data, "")
    assert isinstance(record, Parsed | Reject)


@given(st.dictionaries(st.text(max_size=15), JSON, max_size=8))
@settings(max_examples=150, deadline=None)
def test_any_json_object_is_an_event_or_a_validation_error(data: dict[str, Any]) -> None:
    _event_or_validation_error(data)


@given(NEAR_EVENTS)
@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_any_near_event_is_an_event_or_a_validation_error(data: dict[str, Any]) -> None:
    _event_or_validation_error(data)
