"""API keys and roles without a database: key format, role parsing and checks, credentials from
headers, and the API's principal cache (its loader is a plain function here)."""

from __future__ import annotations

import asyncio

import pytest

from api.auth import PrincipalCache, credentials
from api.segmentation import check_options
from graph import auth
from graph.auth import ADMINS, ANALYSTS, PERSONA_READERS, Principal, Role
from graph.errors import Forbidden, InvalidInput, Unauthenticated
from graph.features.registry import check_selection
from graph.settings import Settings


def test_new_keys_have_the_documented_shape_and_are_distinct() -> None:
    pairs = [auth.new_key() for _ in range(50)]
    for key_id, key in pairs:
        prefix, kid, secret = key.split("_", 2)
        assert prefix == "pg" and kid == key_id
        assert len(key_id) == 8 and int(key_id, 16) >= 0
        assert len(secret) == 32  # token_urlsafe(24): 24 bytes in base64url
        assert auth.looks_like_key(key)
    assert len({key for _, key in pairs}) == 50


def test_the_hash_is_sha256_of_the_whole_key() -> None:
    digest = auth.hash_key("pg_0123abcd_secret-part")
    assert len(digest) == 64 and digest != auth.hash_key("pg_0123abcd_secret-parT")


def test_the_demo_key_is_well_formed_but_cannot_be_generated() -> None:
    assert auth.looks_like_key(auth.DEMO_API_KEY)
    assert auth.DEMO_API_KEY.split("_", 2)[1] == auth.DEMO_KEY_ID
    with pytest.raises(ValueError, match="invalid literal"):
        int(auth.DEMO_KEY_ID, 16)  # generated ids are hex: no clash possible


@pytest.mark.parametrize("garbage", ["", "pg_", "secret", "pg_XYZ_1234567890",
                                     "pg_0123abcd_short", "Bearer pg_0123abcd_abcdefghijkl",
                                     "pg_0123abcd_" + "a" * 200])
def test_malformed_keys_are_not_keys(garbage: str) -> None:
    assert not auth.looks_like_key(garbage)


def test_roles_parse_case_insensitively_and_unknown_ones_are_bad_input() -> None:
    assert auth.parse_role(" Admin ") is Role.ADMIN
    with pytest.raises(InvalidInput, match="choose from reader, writer, analyst, admin") as err:
        auth.parse_role("root")
    assert err.value.code == "BAD_USER_INPUT"


def test_role_sets_match_the_documented_matrix() -> None:
    assert {Role.READER, Role.ANALYST, Role.ADMIN} == PERSONA_READERS
    assert {Role.ANALYST, Role.ADMIN} == ANALYSTS
    assert {Role.ADMIN} == ADMINS
    assert all(Role.WRITER not in roles for roles in (PERSONA_READERS, ANALYSTS, ADMINS))


def test_require_role_tells_missing_credentials_from_a_wrong_role() -> None:
    reader = Principal("0123abcd", "bot", Role.READER)
    assert auth.require_role(reader, PERSONA_READERS) is reader
    with pytest.raises(Unauthenticated) as missing:
        auth.require_role(None, PERSONA_READERS)
    assert missing.value.code == "UNAUTHENTICATED"
    with pytest.raises(Forbidden, match="role reader; this needs one of: analyst, admin") as wrong:
        auth.require_role(reader, ANALYSTS)
    assert wrong.value.code == "FORBIDDEN"


@pytest.mark.parametrize(("authorization", "x_api_key", "expected"), [
    ("Bearer pg_a", None, "pg_a"),
    ("bearer   pg_a  ", None, "pg_a"),
    (None, " pg_b ", "pg_b"),
    ("Bearer pg_a", "pg_b", "pg_a"),
    ("Basic dXNlcjpwdw==", "pg_b", "pg_b"),
    ("Basic dXNlcjpwdw==", None, None),
    ("Bearer ", None, None),
    (None, "", None),
    (None, None, None),
])
def test_credentials_come_from_bearer_first_then_x_api_key(
        authorization: str | None, x_api_key: str | None, expected: str | None) -> None:
    assert credentials(authorization, x_api_key) == expected


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Loader:
    """Answers from a dict of hash -> principal, counting calls (the graph's role in the API)."""

    def __init__(self, principals: dict[str, Principal]) -> None:
        self.principals = principals
        self.calls = 0

    async def __call__(self, digest: str) -> Principal | None:
        self.calls += 1
        return self.principals.get(digest)


KEY = "pg_0123abcd_" + "s" * 32
PRINCIPAL = Principal("0123abcd", "bot", Role.READER)


def test_cache_answers_within_ttl_and_a_revocation_shows_after_it() -> None:
    clock, loader = FakeClock(), Loader({auth.hash_key(KEY): PRINCIPAL})
    cache = PrincipalCache(loader, ttl=30, clock=clock)
    assert asyncio.run(cache.resolve(KEY)) == PRINCIPAL
    del loader.principals[auth.hash_key(KEY)]  # revoked in the graph
    clock.now += 29.9
    assert asyncio.run(cache.resolve(KEY)) == PRINCIPAL and loader.calls == 1
    clock.now += 0.2
    assert asyncio.run(cache.resolve(KEY)) is None and loader.calls == 2


def test_cache_remembers_unknown_keys_and_never_loads_malformed_ones() -> None:
    clock, loader = FakeClock(), Loader({})
    cache = PrincipalCache(loader, ttl=30, clock=clock)
    assert asyncio.run(cache.resolve(KEY)) is None
    assert asyncio.run(cache.resolve(KEY)) is None
    assert asyncio.run(cache.resolve("not-a-key")) is None
    assert loader.calls == 1


def test_cache_with_zero_ttl_asks_every_time() -> None:
    loader = Loader({auth.hash_key(KEY): PRINCIPAL})
    cache = PrincipalCache(loader, ttl=0)
    for _ in range(3):
        assert asyncio.run(cache.resolve(KEY)) == PRINCIPAL
    assert loader.calls == 3


def test_cache_is_bounded_and_drops_the_oldest_answer() -> None:
    clock, loader = FakeClock(), Loader({})
    cache = PrincipalCache(loader, ttl=30, clock=clock, max_entries=3)
    keys = [f"pg_0000000{i}_" + "s" * 32 for i in range(5)]
    for key in keys:
        asyncio.run(cache.resolve(key))
    assert len(cache._entries) == 3
    loader.calls = 0
    asyncio.run(cache.resolve(keys[-1]))
    asyncio.run(cache.resolve(keys[0]))
    assert loader.calls == 1  # the newest was still cached, the oldest was dropped


def test_segmentation_options_are_checked_before_any_work() -> None:
    settings = Settings(segment_features=["behaviour", "share:*"])
    options = check_options(settings, None, None, None, None)
    assert options.algorithm == "agglomerative" and options.features == ["behaviour", "share:*"]
    assert check_selection([" behaviour", "share:Books", "recency_days"]) == [
        "behaviour", "share:Books", "recency_days"]
    for bad in ({"k": 1}, {"k": 101}, {"algorithm": "nope"}, {"features": ["nope"]},
                {"features": []}, {"distance_threshold": -1.0}):
        args = {"k": None, "algorithm": None, "features": None, "distance_threshold": None,
                **bad}
        with pytest.raises(InvalidInput):
            check_options(settings, **args)  # type: ignore[arg-type]
