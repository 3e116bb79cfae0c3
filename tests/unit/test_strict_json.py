"""`graph.strictjson.loads`: orjson's parse, with an object that repeats a key refused.

Checked against an oracle (the standard library's parser with a hook that sees every pair),
over generated values written every way JSON allows: compact, indented, every character
escaped, keys that differ only in their escapes."""

from __future__ import annotations

import json
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from graph import strictjson

KEYS = st.text(alphabet=st.sampled_from(['a', 'b', ':', '"', '\\', ' ', 'é', '\x01', '{']),
               max_size=3)
SCALARS = st.none() | st.booleans() | st.integers(-2**63, 2**63 - 1) \
    | st.floats(allow_nan=False, allow_infinity=False) | KEYS
VALUES = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=4)
                      | st.dictionaries(KEYS, inner, max_size=4), max_leaves=20)


def repeats(text: str) -> bool:
    """The oracle: whether any object in ``text`` names a key twice."""
    found = False

    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        nonlocal found
        found = found or len({k for k, _ in items}) != len(items)
        return dict(items)

    json.loads(text, object_pairs_hook=pairs)
    return found


def written(value: Any, style: int, repeat_in: int | None = None,
            extra: Any = None) -> str:
    """``value`` as JSON text in one of three styles (compact, spaced, every non-ASCII
    character escaped); with ``repeat_in``, the object of that index (in the writing order)
    gets its first key once more, before its members, with the value ``extra``."""
    ascii_only = style == 2
    comma, colon = (", ", " : ") if style == 1 else (",", ":")
    seen = -1

    def scalar(v: Any) -> str:
        return json.dumps(v, ensure_ascii=ascii_only)

    def write(v: Any) -> str:
        nonlocal seen
        if isinstance(v, list):
            return "[" + comma.join(write(x) for x in v) + "]"
        if isinstance(v, dict):
            seen += 1
            index = seen
            members = [scalar(k) + colon + write(x) for k, x in v.items()]
            if index == repeat_in and v:
                members.insert(0, scalar(next(iter(v))) + colon + scalar(extra))
            return "{" + comma.join(members) + "}"
        return scalar(v)

    return write(value)


def objects_in(value: Any) -> int:
    if isinstance(value, list):
        return sum(map(objects_in, value))
    if isinstance(value, dict):
        return 1 + sum(map(objects_in, value.values()))
    return 0


@settings(max_examples=300, deadline=None)
@given(VALUES, st.integers(0, 2))
def test_text_without_repeated_keys_parses_as_orjson_does(value: Any, style: int) -> None:
    text = written(value, style)
    assert strictjson.loads(text) == orjson.loads(text)
    assert strictjson.loads(text.encode()) == orjson.loads(text)


@settings(max_examples=300, deadline=None)
@given(VALUES, st.integers(0, 2), st.data())
def test_a_key_repeated_anywhere_is_refused_and_named(value: Any, style: int,
                                                      data: st.DataObject) -> None:
    """A member named again in its object, at any depth, with the same value or another:
    refused, with the key named, exactly when the oracle sees a repeat."""
    count = objects_in(value)
    which = data.draw(st.integers(0, count - 1)) if count else None
    text = written(value, style, which, data.draw(SCALARS))
    repeated = which is not None and objects_with_keys(value)[which]  # not an empty object
    assert repeats(text) == repeated
    if repeated:
        with pytest.raises(strictjson.JSONDecodeError, match="repeated in one object"):
            strictjson.loads(text)
    else:
        assert strictjson.loads(text) == orjson.loads(text)


def objects_with_keys(value: Any) -> list[bool]:
    if isinstance(value, list):
        return [b for x in value for b in objects_with_keys(x)]
    if isinstance(value, dict):
        return [bool(value)] + [b for x in value.values() for b in objects_with_keys(x)]
    return []


@pytest.mark.parametrize(("text", "key"), [
    ('{"query": "{ a }", "query": "{ b }"}', "query"),
    ('{"variables": {"id": "u-1", "id": "u-2"}}', "id"),
    ('[{"a": 1}, {"b": {"c": ":", "c": 2}}]', "c"),
    ('{"\\u0061": 1, "a": 2}', "a"),  # the same key, one written escaped
    ('{"a": "\\u003a", "b": 1, "b": 2}', "b"),  # a colon no count of colons sees
    ('{"q": "\\"x\\": 1", "q": 2}', "q"),  # a quoted colon inside a string
])
def test_repeats_that_escapes_could_hide(text: str, key: str) -> None:
    with pytest.raises(strictjson.JSONDecodeError, match=f'key "{key}" repeated'):
        strictjson.loads(text)


def test_deep_text_is_walked_without_recursion() -> None:
    deep = '{"a": ' * 1000 + '{"k": 1, "k": 2}' + "}" * 1000
    with pytest.raises(strictjson.JSONDecodeError):
        strictjson.loads(deep)  # beyond orjson's depth limit, as before
    ok = "[" * 500 + '{"k": 1, "k": 2}' + "]" * 500
    with pytest.raises(strictjson.JSONDecodeError, match='key "k" repeated'):
        strictjson.loads(ok)


def test_same_keys_in_sibling_objects_are_not_repeats() -> None:
    assert strictjson.loads('[{"a": 1}, {"a": 2}, {"x": {"a": 3}, "a": 4}]') == [
        {"a": 1}, {"a": 2}, {"x": {"a": 3}, "a": 4}]
