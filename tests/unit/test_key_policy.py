"""The pseudonymization key policy: where the key comes from, and who refuses to run without."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from graph.errors import ConfigurationError
from graph.settings import DEMO_PSEUDONYM_KEY, Settings
from tests.helpers import PERSONAS

KEY_VARIABLES = ("PERSONAS_PSEUDONYM_KEY", "PERSONAS_PSEUDONYM_KEY_FILE", "PERSONAS_DEMO")


@pytest.fixture(autouse=True)
def no_key_in_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in KEY_VARIABLES:
        monkeypatch.delenv(name, raising=False)


def test_key_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PERSONAS_PSEUDONYM_KEY", "a-real-key-from-the-vault")
    settings = Settings()
    assert settings.pseudonym_key.get_secret_value() == "a-real-key-from-the-vault"
    assert not settings.demo_mode
    settings.require_pseudonym_key()


def test_key_from_a_secret_file_loses_one_trailing_newline(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    secret = tmp_path / "key"
    secret.write_text("s3cret key \n")
    monkeypatch.setenv("PERSONAS_PSEUDONYM_KEY_FILE", str(secret))
    settings = Settings()
    assert settings.pseudonym_key.get_secret_value() == "s3cret key "
    assert not settings.demo_mode
    settings.require_pseudonym_key()
    secret.write_text("windows-key\r\n")
    assert Settings().pseudonym_key.get_secret_value() == "windows-key"


@pytest.mark.parametrize("content", ["", "\n", "   \n"])
def test_an_empty_secret_file_is_refused(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                         content: str) -> None:
    secret = tmp_path / "key"
    secret.write_text(content)
    monkeypatch.setenv("PERSONAS_PSEUDONYM_KEY_FILE", str(secret))
    with pytest.raises(ConfigurationError, match="PERSONAS_PSEUDONYM_KEY_FILE .* is empty"):
        Settings()


def test_an_unreadable_secret_file_is_refused(monkeypatch: pytest.MonkeyPatch,
                                              tmp_path: Path) -> None:
    monkeypatch.setenv("PERSONAS_PSEUDONYM_KEY_FILE", str(tmp_path / "missing"))
    with pytest.raises(ConfigurationError, match="cannot be read") as caught:
        Settings()
    assert caught.value.code == "CONFIGURATION"
    monkeypatch.setenv("PERSONAS_PSEUDONYM_KEY_FILE", str(tmp_path))  # a folder
    with pytest.raises(ConfigurationError, match="cannot be read"):
        Settings()


def test_key_and_key_file_together_are_refused(monkeypatch: pytest.MonkeyPatch,
                                               tmp_path: Path) -> None:
    secret = tmp_path / "key"
    secret.write_text("from-file")
    monkeypatch.setenv("PERSONAS_PSEUDONYM_KEY_FILE", str(secret))
    monkeypatch.setenv("PERSONAS_PSEUDONYM_KEY", "from-env")
    with pytest.raises(ConfigurationError, match="set one"):
        Settings()


def test_without_a_key_only_demo_mode_may_run(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = Settings()
    assert settings.demo_mode and not settings.demo
    with pytest.raises(ConfigurationError) as caught:
        settings.require_pseudonym_key()
    message = str(caught.value)
    assert "PERSONAS_PSEUDONYM_KEY " in message and "PERSONAS_PSEUDONYM_KEY_FILE" in message
    assert "PERSONAS_DEMO" in message
    # The public key given explicitly is no key either.
    monkeypatch.setenv("PERSONAS_PSEUDONYM_KEY", DEMO_PSEUDONYM_KEY)
    with pytest.raises(ConfigurationError):
        Settings().require_pseudonym_key()
    monkeypatch.setenv("PERSONAS_DEMO", "true")
    demo = Settings()
    assert demo.demo and demo.demo_mode
    demo.require_pseudonym_key()
    monkeypatch.setenv("PERSONAS_DEMO", "false")
    assert not Settings().demo


def test_a_real_key_is_never_demo_mode(monkeypatch: pytest.MonkeyPatch) -> None:
    """With PERSONAS_DEMO on and a key of one's own, the key wins: no demo API key is made."""
    monkeypatch.setenv("PERSONAS_DEMO", "true")
    monkeypatch.setenv("PERSONAS_PSEUDONYM_KEY", "own-key-0123456789")
    assert not Settings().demo_mode


def test_up_and_demo_data_turn_demo_mode_on_only_without_a_key(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from personas.cli.common import demo_unless_keyed

    monkeypatch.setenv("PERSONAS_DEMO", "false")  # restored afterwards, whatever the CLI sets
    keyed = Settings(pseudonym_key="own-key-0123456789")
    assert demo_unless_keyed(keyed) is keyed
    assert os.environ["PERSONAS_DEMO"] == "false"
    demo = demo_unless_keyed(Settings())
    assert demo.demo and os.environ["PERSONAS_DEMO"] == "true"
    demo.require_pseudonym_key()


def test_the_api_factory_refuses_without_a_key() -> None:
    from api.app import create_app

    with pytest.raises(ConfigurationError, match="PERSONAS_PSEUDONYM_KEY_FILE"):
        create_app(Settings())
    create_app(Settings(demo=True))
    create_app(Settings(pseudonym_key="own-key-0123456789", neo4j_password="own-password"))


def unkeyed_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in KEY_VARIABLES}
    # Nothing may be reached: the refusal must come before any connection.
    env["PERSONAS_NEO4J_URI"] = "bolt://127.0.0.1:1"
    return env


@pytest.mark.parametrize("command", [["serve", "--port", "1"], ["ingest", "{file}"],
                                     ["import", "--bulk", "{file}"],
                                     ["crm", "import", "{file}", "--mapping", "{file}"]])
def test_entry_points_refuse_to_start_without_a_key(tmp_path: Path, command: list[str]) -> None:
    events = tmp_path / "events.jsonl"
    events.write_text("{}\n")
    args = [a.replace("{file}", str(events)) for a in command]
    proc = subprocess.run([PERSONAS, *args], env=unkeyed_env(), capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert "error (CONFIGURATION)" in proc.stderr
    assert "PERSONAS_PSEUDONYM_KEY or PERSONAS_PSEUDONYM_KEY_FILE" in proc.stderr


def test_serve_reports_an_empty_key_file(tmp_path: Path) -> None:
    secret = tmp_path / "key"
    secret.write_text("")
    env = {**unkeyed_env(), "PERSONAS_PSEUDONYM_KEY_FILE": str(secret)}
    proc = subprocess.run([PERSONAS, "serve", "--port", "1"], env=env, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 2 and "is empty" in proc.stderr, proc.stderr
