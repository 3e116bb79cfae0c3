"""The CRM field mapping (YAML) and its validation, record parsing and redaction, and the
webhook's signature checks: pure logic, no database."""

from __future__ import annotations

import contextlib
import json
import re
import time
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from graph.crm.mapping import (
    TARGETS,
    ColumnType,
    convert,
    load_mapping,
    parse_mapping,
    parse_record,
    redact,
    target_of,
)
from graph.crm.webhook import decode_records, delivery_id, signature, verify
from graph.errors import InvalidInput, LimitExceeded, Unauthenticated
from graph.privacy import IDENTIFIER_KINDS, Pseudonymizer

EXAMPLE = Path(__file__).resolve().parents[2] / "docs" / "crm-mapping.example.yaml"
PSEUDO = Pseudonymizer("unit-key")


def mapping(**columns: Any) -> Any:
    cols = {"cid": {"target": "crm_id"}, **columns}
    return parse_mapping({"source": "crm", "timestamp": "updated_at", "columns": cols})


def record(**values: Any) -> dict[str, Any]:
    return {"cid": "C-1", "updated_at": "2026-11-01T10:00:00+01:00", **values}


def test_the_example_mapping_loads_and_covers_every_kind_of_target() -> None:
    m = load_mapping(EXAMPLE)
    assert m.source == "acme-crm" and m.timestamp == "updated_at"
    targets = {c.target for c in m.columns.values()}
    assert {"crm_id", "email", "phone", "first_name", "last_name", "age_band", "tier",
            "lifetime_value", "location_id", "marketing_opt_in", "signup_date"} <= targets
    assert all(target_of(t) is not None for t in targets)
    assert {t for t in targets if t not in TARGETS} == {"attr_occupation", "attr_postal_code"}
    assert {c.type for c in m.columns.values()} == {t.value for t in ColumnType} - {"datetime"}
    assert m.ignore == ["notes"]


@pytest.mark.parametrize(("columns", "expected"), [
    ({"fav": {"target": "favourite_colour"}}, "column 'fav': unknown target 'favourite_colour'"),
    ({"ltv": {"target": "lifetime_value", "type": "money"}},
     "column 'ltv': unknown type 'money'; expected one of string, int, decimal"),
    ({"pts": {"target": "loyalty_points", "type": "string"}},
     "column 'pts': target 'loyalty_points' cannot hold type 'string'; use int"),
    ({"tier": {"target": "tier", "type": "enum"}}, "column 'tier': type 'enum' needs a list"),
    ({"age": {"target": "age_band", "type": "enum", "values": ["18-24", "teen"]}},
     "column 'age': enum value 'teen' does not fit target 'age_band'"),
    ({"tier": {"target": "tier", "values": ["a"]}},
     "column 'tier': `values` only goes with type 'enum'"),
    ({"mail": {"target": "email"}, "mail2": {"target": "email"}},
     "column 'mail2': target 'email' is already fed by column 'mail'"),
    ({"tier": {"tagret": "tier"}}, "columns.tier.tagret: unknown key"),
    ({"updated_at": {"target": "tier"}}, "column 'updated_at' is the timestamp column"),
])
def test_mapping_errors_name_the_column(columns: dict[str, Any], expected: str) -> None:
    with pytest.raises(InvalidInput) as err:
        mapping(**columns)
    assert expected in str(err.value)


def test_a_mapping_needs_an_identifier_a_source_and_known_keys() -> None:
    with pytest.raises(InvalidInput, match="no column maps to an identifier"):
        parse_mapping({"source": "crm", "timestamp": "t", "columns": {"x": {"target": "tier"}}})
    with pytest.raises(InvalidInput, match="source"):
        parse_mapping({"timestamp": "t", "columns": {"x": {"target": "crm_id"}}})
    with pytest.raises(InvalidInput, match="colums: unknown key"):
        parse_mapping({"source": "c", "timestamp": "t", "colums": {}, "columns": {
            "x": {"target": "crm_id"}}})
    with pytest.raises(InvalidInput, match="expected a mapping"):
        parse_mapping(["not", "a", "mapping"])
    with pytest.raises(InvalidInput, match="column 'notes' is both ignored and mapped"):
        parse_mapping({"source": "c", "timestamp": "t", "ignore": ["notes"],
                       "columns": {"x": {"target": "crm_id"}, "notes": {"target": "tier"}}})


def test_mapping_files_that_cannot_be_read(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="no such mapping file"):
        load_mapping(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("source: [unclosed\n")
    with pytest.raises(InvalidInput, match="not valid YAML"):
        load_mapping(bad)


def test_a_record_is_parsed_typed_and_pseudonymized() -> None:
    m = load_mapping(EXAMPLE)
    rec = parse_record(m, {
        "customer_no": "C-1", "email": " Jane.Doe@Example.com", "first_name": "Jane",
        "updated_at": "2026-11-01T10:00:00+01:00", "tier": "gold", "lifetime_value": "12.345",
        "points": "40", "newsletter": "Yes", "member_since": "2020-01-02", "country": "gb",
        "age_group": "25-34", "mobile": "", "notes": "VIP, call Jane",
    }, PSEUDO)
    assert rec.at == datetime(2026, 11, 1, 9, 0, tzinfo=UTC)
    assert rec.identifiers == [("crm_id", PSEUDO.digest("crm_id", "C-1")),
                               ("email", PSEUDO.digest("email", "jane.doe@example.com"))]
    assert rec.new_user_id == PSEUDO.user_id("crm_id", "C-1")
    assert rec.fields == {"first_name": PSEUDO.digest("first_name", "Jane"), "tier": "gold",
                          "lifetime_value": 12.35, "loyalty_points": 40,
                          "marketing_opt_in": True, "signup_date": date(2020, 1, 2),
                          "country": "GB", "age_band": "25-34"}
    assert "Jane" not in json.dumps(rec.fields, default=str)


@pytest.mark.parametrize(("values", "expected"), [
    ({"extra": "x"}, "unknown column(s) ['extra']: not in the mapping"),
    ({"updated_at": ""}, "column 'updated_at': the record's timestamp is missing"),
    ({"updated_at": "2026-11-01T10:00:00"}, "column 'updated_at': time has no timezone offset"),
    ({"updated_at": "2999-01-01T00:00:00Z"}, "more than a day in the future"),
    ({"pts": "many"}, "column 'pts' (loyalty_points, int): 'many' expected an integer"),
    ({"pts": "-3"}, "column 'pts' (loyalty_points, int): '-3' must not be negative"),
    ({"tier": "diamond"}, "column 'tier' (tier, enum): 'diamond' not one of ['gold']"),
    ({"age": "teen"}, "column 'age' (age_band, string): 'teen' Input should be"),
    ({"cid": ""}, "the record has no identifier value (in columns ['cid'])"),
])
def test_record_errors_name_the_column(values: dict[str, Any], expected: str) -> None:
    m = mapping(pts={"target": "loyalty_points", "type": "int"},
                tier={"target": "tier", "type": "enum", "values": ["gold"]},
                age={"target": "age_band"})
    with pytest.raises(InvalidInput) as err:
        parse_record(m, record(**values), PSEUDO)
    assert expected in str(err.value)


def test_errors_never_echo_identifier_or_name_values() -> None:
    m = mapping(mail={"target": "email"}, given={"target": "first_name"})
    secret_name = "Bartholomew" * 60
    with pytest.raises(InvalidInput) as err:
        parse_record(m, record(given=secret_name), PSEUDO)
    assert "column 'given' (first_name, string): longer than 500" in str(err.value)
    assert "Bartholomew" not in str(err.value)
    with pytest.raises(InvalidInput) as err:
        parse_record(m, record(mail=["jane@example.com"]), PSEUDO)
    assert str(err.value) == "column 'mail' (email, string): expected text"


@pytest.mark.parametrize(("ctype", "value", "expected"), [
    (ColumnType.BOOL, "no", False), (ColumnType.BOOL, "1", True), (ColumnType.BOOL, True, True),
    (ColumnType.INT, 7, 7), (ColumnType.INT, " 12 ", 12), (ColumnType.DECIMAL, 3, 3.0),
    (ColumnType.DECIMAL, "0.005", 0.01), (ColumnType.STRING, 42, "42"),
    (ColumnType.DATE, "2026-02-03", date(2026, 2, 3)),
    (ColumnType.DATETIME, "2026-02-03T04:05:06Z", datetime(2026, 2, 3, 4, 5, 6, tzinfo=UTC)),
])
def test_conversions(ctype: ColumnType, value: Any, expected: Any) -> None:
    assert convert(ctype, value) == expected


@pytest.mark.parametrize(("ctype", "value"), [
    (ColumnType.BOOL, "maybe"), (ColumnType.INT, True), (ColumnType.INT, "1.5"),
    (ColumnType.DECIMAL, "abc"), (ColumnType.DECIMAL, "NaN"), (ColumnType.DATE, "03/02/2026"),
    (ColumnType.STRING, {"a": 1}),
])
def test_bad_conversions(ctype: ColumnType, value: Any) -> None:
    with pytest.raises(ValueError, match="expected"):
        convert(ctype, value)


@given(st.dates())
def test_a_date_is_plausible_or_refused(day: date) -> None:
    """A CRM date (`signup_date`) falls within the bounds an event's time has: 1970 to a day
    ahead. `9999-12-31` was stored as it came."""
    today = datetime.now(UTC).date()
    text = day.isoformat()
    if date(1970, 1, 1) <= day <= today:
        assert convert(ColumnType.DATE, text) == day
    elif day < date(1970, 1, 1) or day > date.fromordinal(today.toordinal() + 2):
        with pytest.raises(ValueError, match="date is"):
            convert(ColumnType.DATE, text)


@pytest.mark.parametrize("value", ["\u200b", "\ufeff\u200d", "\u2063", "\u3164", "\x00"])
@pytest.mark.parametrize("column", ["customer_no", "email", "tier"])
def test_a_value_of_invisible_characters_is_refused_naming_its_column(value: str,
                                                                     column: str) -> None:
    """Such a value had been stored (an identifier that looks empty hashed as a user's), where
    an empty cell is skipped."""
    m = load_mapping(EXAMPLE)
    data = {"customer_no": "C-1", "updated_at": "2026-11-01T10:00:00Z", column: value}
    with pytest.raises(InvalidInput) as err:
        parse_record(m, data, PSEUDO)
    assert str(err.value).startswith(f"column {column!r}")
    assert "invisible characters" in str(err.value)


def test_redaction_keeps_no_identifier_name_or_unmapped_value() -> None:
    m = mapping(mail={"target": "email"}, given={"target": "first_name"},
                tier={"target": "tier"})
    out = redact(m, record(mail="jane@example.com", given="Jane", tier="gold",
                           diary="Jane rang from 0207 123 4567"), PSEUDO)
    text = json.dumps(out)
    for plain in ("jane@example.com", "Jane", "0207", "C-1"):
        assert plain not in text
    assert out["tier"] == "gold" and out["updated_at"] == "2026-11-01T10:00:00+01:00"
    assert out["given"] == f"[first_name:{PSEUDO.digest('first_name', 'Jane')[:10]}]"
    assert out["diary"] == "[not imported]"


def test_every_identifier_kind_is_a_target() -> None:
    assert all(TARGETS[k].kind == "identifier" and TARGETS[k].sensitive
               for k in IDENTIFIER_KINDS)


# ---- webhook signatures ---------------------------------------------------------------------

SECRET = "whsec-test"
BODY = b'[{"cid": "C-1"}]'


def test_a_good_signature_passes_and_returns_the_timestamp() -> None:
    now = int(time.time())
    signed = signature(SECRET, now, BODY)
    assert signed.startswith("sha256=") and len(signed) == 7 + 64
    assert verify(SECRET, str(now), signed, BODY, tolerance=300) == now
    assert verify(SECRET, str(now), signed.upper().replace("SHA256=", "sha256="), BODY,
                  tolerance=300) == now
    assert delivery_id(signed) != signed.removeprefix("sha256=")


@pytest.mark.parametrize(("ts_offset", "mutate", "message"), [
    (0, lambda s, b: (None, b), "unsigned delivery"),
    (0, lambda s, b: (s, b + b" "), "bad signature"),
    (0, lambda s, b: ("sha256=" + "0" * 64, b), "bad signature"),
    (-301, lambda s, b: (s, b), "more than 300 s"),
    (400, lambda s, b: (s, b), "more than 300 s"),
])
def test_bad_deliveries_are_refused(ts_offset: int, mutate: Any, message: str) -> None:
    ts = int(time.time()) + ts_offset
    signed, body = mutate(signature(SECRET, ts, BODY), BODY)
    with pytest.raises(Unauthenticated, match=message):
        verify(SECRET, str(ts), signed, body, tolerance=300)


@pytest.mark.parametrize(("offset", "accepted"), [
    (-300, True), (300, True), (-301, False), (301, False)])
def test_the_time_window_edges(offset: int, accepted: bool) -> None:
    now = 1_800_000_000
    ts = now + offset
    signed = signature(SECRET, ts, BODY)
    if accepted:
        assert verify(SECRET, str(ts), signed, BODY, tolerance=300, now=now) == ts
    else:
        with pytest.raises(Unauthenticated, match="more than 300 s"):
            verify(SECRET, str(ts), signed, BODY, tolerance=300, now=now)


def test_signature_under_another_secret_or_timestamp_is_refused() -> None:
    ts = int(time.time())
    with pytest.raises(Unauthenticated, match="bad signature"):
        verify(SECRET, str(ts), signature("other", ts, BODY), BODY, tolerance=300)
    with pytest.raises(Unauthenticated, match="bad signature"):
        verify(SECRET, str(ts), signature(SECRET, ts - 1, BODY), BODY, tolerance=300)
    with pytest.raises(Unauthenticated, match="epoch seconds"):
        verify(SECRET, "yesterday", signature(SECRET, ts, BODY), BODY, tolerance=300)


def test_delivery_bodies() -> None:
    assert decode_records(b'{"cid": "C-1"}', 10) == [{"cid": "C-1"}]
    assert decode_records(BODY, 10) == [{"cid": "C-1"}]
    with pytest.raises(InvalidInput, match="malformed JSON"):
        decode_records(b"{nope", 10)
    with pytest.raises(InvalidInput, match="JSON object"):
        decode_records(b'"text"', 10)
    with pytest.raises(LimitExceeded, match="3 records in one delivery, over the limit of 2"):
        decode_records(b"[{}, {}, {}]", 2)


def test_the_readme_documents_the_mapping_and_the_signature() -> None:
    """The ingestion guide's mapping example parses, and its signing example signs as the
    webhook verifies (same headers, same message)."""
    text = (EXAMPLE.parent / "ingestion.md").read_text(encoding="utf-8")
    section = text.split("## CRM import and webhook", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```yaml\n(.*?)```", section, re.S)
    assert block is not None
    m = parse_mapping(yaml.safe_load(block.group(1)))
    assert {c.target for c in m.columns.values()} >= {"crm_id", "email", "tier"}
    for name in ("X-Personas-Timestamp", "X-Personas-Signature", "PERSONAS_CRM_WEBHOOK_SECRET"):
        assert name in section
    code = re.search(r"```python\n(.*?)```", section, re.S)
    assert code is not None
    # Run the example's signing lines (not the request) and compare with the webhook's check.
    lines = code.group(1).split("request = ")[0]
    scope: dict[str, Any] = {}
    exec(lines, scope)
    assert verify(scope["secret"].decode(), scope["ts"], f"sha256={scope['sig']}",
                  scope["body"], tolerance=300) == int(scope["ts"])


@given(st.one_of(st.floats(), st.integers(), st.decimals().map(str),
                 st.from_regex(r"-?\d{1,3}e[+-]?\d{1,4}", fullmatch=True),
                 st.text(max_size=30)))
def test_any_value_of_a_column_converts_or_is_a_value_error(value: Any) -> None:
    """A conversion failure is a ValueError (the record is refused with its column named),
    never anything else: `lifetimeValue: -1e308` raised decimal.InvalidOperation while
    rounding to cents, and `upsertUser` answered INTERNAL_SERVER_ERROR (the CRM webhook and
    file import ran the same code)."""
    for ctype in ColumnType:
        with contextlib.suppress(ValueError):
            convert(ctype, value, ["a", "b"])
