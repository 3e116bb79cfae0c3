"""API keys in the real graph: create, resolve, revoke, the demo key, and `personas apikey`."""

from __future__ import annotations

import subprocess

import pytest
from pydantic import SecretStr

from graph import auth
from graph.auth import DEMO_API_KEY, DEMO_KEY_ID, Principal, Role
from graph.db import Graph
from graph.errors import InvalidInput, NotFound
from graph.settings import Settings
from tests.helpers import PERSONAS

pytestmark = pytest.mark.integration
DEMO_PSEUDONYM_KEY = Settings().pseudonym_key.get_secret_value()


def demo_settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"pseudonym_key": SecretStr(DEMO_PSEUDONYM_KEY)})


def stored_keys(graph: Graph) -> list[dict[str, object]]:
    return graph.rows("MATCH (k:ApiKey) RETURN properties(k) AS props ORDER BY k.id")


def test_create_resolve_revoke(graph: Graph) -> None:
    created = auth.create_key(graph, Role.ANALYST, "  notebook  ")
    assert created.info.role is Role.ANALYST and created.info.name == "notebook"
    assert created.key.startswith(f"pg_{created.info.id}_")
    assert auth.resolve_key(graph, created.key) == Principal(created.info.id, "notebook",
                                                             Role.ANALYST)

    # Only the hash is stored: no property holds the key or its secret part.
    [row] = stored_keys(graph)
    props = row["props"]
    assert isinstance(props, dict)
    assert set(props) == {"id", "name", "role", "hash", "created_at"}
    assert props["hash"] == auth.hash_key(created.key)
    secret = created.key.split("_", 2)[2]
    assert not any(secret in str(value) for value in props.values())

    # A near miss resolves to nobody.
    assert auth.resolve_key(graph, created.key[:-1] + ("A" if created.key[-1] != "A" else "B")) \
        is None
    assert auth.resolve_key(graph, "not a key") is None

    revocation = auth.revoke_key(graph, created.info.id)
    assert not revocation.already
    assert auth.resolve_key(graph, created.key) is None
    again = auth.revoke_key(graph, created.info.id)
    assert again.already and again.revoked_at == revocation.revoked_at
    [listed] = auth.list_keys(graph)
    assert listed.id == created.info.id and listed.revoked_at == revocation.revoked_at
    with pytest.raises(NotFound):
        auth.revoke_key(graph, "ffffffff")


def test_keys_are_independent(graph: Graph) -> None:
    reader = auth.create_key(graph, "reader", "bot")
    admin = auth.create_key(graph, "admin", "ops")
    assert reader.info.id != admin.info.id and reader.key != admin.key
    auth.revoke_key(graph, reader.info.id)
    assert auth.resolve_key(graph, reader.key) is None
    resolved = auth.resolve_key(graph, admin.key)
    assert resolved is not None and resolved.role is Role.ADMIN
    assert [k.role for k in auth.list_keys(graph)] == [Role.READER, Role.ADMIN]


def test_bad_role_or_name_is_refused_and_nothing_is_stored(graph: Graph) -> None:
    with pytest.raises(InvalidInput, match="unknown role 'root'"):
        auth.create_key(graph, "root", "x")
    with pytest.raises(InvalidInput, match="name"):
        auth.create_key(graph, Role.READER, "   ")
    assert stored_keys(graph) == []


def test_demo_key_exists_only_in_demo_mode_and_is_idempotent(graph: Graph,
                                                             settings: Settings) -> None:
    assert not settings.demo_mode
    assert auth.ensure_demo_key(graph, settings) is None
    assert stored_keys(graph) == []

    demo = demo_settings(settings)
    assert demo.demo_mode
    first = auth.ensure_demo_key(graph, demo)
    second = auth.ensure_demo_key(graph, demo)
    assert first == second and first is not None and first.usable and first.key == DEMO_API_KEY
    assert len(stored_keys(graph)) == 1
    assert auth.resolve_key(graph, DEMO_API_KEY) == Principal(DEMO_KEY_ID, auth.DEMO_KEY_NAME,
                                                              Role.READER)

    # A revoked demo key stays revoked.
    auth.revoke_key(graph, DEMO_KEY_ID)
    after = auth.ensure_demo_key(graph, demo)
    assert after is not None and not after.usable
    assert auth.resolve_key(graph, DEMO_API_KEY) is None


def run(cli_env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([PERSONAS, "apikey", *args], env=cli_env, capture_output=True,
                          text=True, timeout=120)


def test_cli_create_list_revoke(graph: Graph, cli_env: dict[str, str]) -> None:
    created = run(cli_env, "create", "--role", "writer", "--name", "ingest job")
    assert created.returncode == 0, created.stderr
    key = created.stdout.strip()
    assert auth.looks_like_key(key), created.stdout
    assert "cannot be shown again" in created.stderr
    principal = auth.resolve_key(graph, key)
    assert principal is not None and principal.role is Role.WRITER
    assert principal.name == "ingest job"

    listed = run(cli_env, "list")
    assert listed.returncode == 0, listed.stderr
    assert principal.id in listed.stdout and "ingest job" in listed.stdout
    assert "writer" in listed.stdout
    # Neither the key, its secret nor its hash is ever listed.
    assert key.split("_", 2)[2] not in listed.stdout
    assert auth.hash_key(key) not in listed.stdout

    revoked = run(cli_env, "revoke", principal.id)
    assert revoked.returncode == 0, revoked.stderr
    assert f"revoked API key {principal.id}" in revoked.stderr
    assert auth.resolve_key(graph, key) is None
    [info] = auth.list_keys(graph)
    assert info.revoked_at is not None
    listed = run(cli_env, "list")
    row = next(line for line in listed.stdout.splitlines() if principal.id in line)
    assert f"{info.created_at:%Y-%m-%d %H:%M:%S}" in row
    assert f"{info.revoked_at:%Y-%m-%d %H:%M:%S}" in row


def test_cli_bad_role_and_unknown_id_fail_cleanly(graph: Graph, cli_env: dict[str, str]) -> None:
    bad = run(cli_env, "create", "--role", "superuser", "--name", "x")
    assert bad.returncode == 2
    assert "BAD_USER_INPUT" in bad.stderr and "reader, writer, analyst, admin" in bad.stderr
    assert "Traceback" not in bad.stderr and bad.stdout == ""
    assert stored_keys(graph) == []

    missing = run(cli_env, "create", "--role", "reader")
    assert missing.returncode == 2 and "--name" in missing.stderr

    unknown = run(cli_env, "revoke", "ffffffff")
    assert unknown.returncode == 2 and "NOT_FOUND" in unknown.stderr


def test_demo_data_makes_the_demo_key_in_demo_mode_only(graph: Graph,
                                                        cli_env: dict[str, str]) -> None:
    own_key = subprocess.run([PERSONAS, "demo-data", "--users", "12"], env=cli_env,
                             capture_output=True, text=True, timeout=300)
    assert own_key.returncode == 0, own_key.stderr
    assert stored_keys(graph) == []
    assert "personas apikey create" in own_key.stderr

    demo_env = {**cli_env, "PERSONAS_PSEUDONYM_KEY": DEMO_PSEUDONYM_KEY}
    for _ in range(2):
        demo = subprocess.run([PERSONAS, "demo-data", "--users", "12"], env=demo_env,
                              capture_output=True, text=True, timeout=300)
        assert demo.returncode == 0, demo.stderr
        assert DEMO_API_KEY in demo.stderr
    assert len(stored_keys(graph)) == 1
    principal = auth.resolve_key(graph, DEMO_API_KEY)
    assert principal is not None and principal.role is Role.READER
